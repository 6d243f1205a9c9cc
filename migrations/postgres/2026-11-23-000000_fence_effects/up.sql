-- `lease` is the fencing token: each claim takes the next number, and an attempt's writes
-- hold only while the effect still carries the number it was claimed with.
ALTER TABLE effects ADD COLUMN lease BIGINT NOT NULL DEFAULT 0;

ALTER TABLE checkout_sessions ADD CONSTRAINT checkout_sessions_status_known
    CHECK (status IN ('fulfilled', 'awaiting_payment', 'payment_failed', 'expired'));
ALTER TABLE effects ADD CONSTRAINT effects_kind_known
    CHECK (kind IN ('receipt', 'payment_failed_email', 'inventory', 'shipment'));
ALTER TABLE effects ADD CONSTRAINT effects_status_known
    CHECK (status IN ('pending', 'done', 'dead'));
ALTER TABLE shipments ADD CONSTRAINT shipments_status_known
    CHECK (status IN ('pending', 'submitted', 'awaiting_manual_handling', 'failed'));
