DROP TABLE secrets;
DELETE FROM refunds WHERE kind = 'dispute';
ALTER TABLE refunds DROP CONSTRAINT refunds_kind_check;
ALTER TABLE refunds ADD CONSTRAINT refunds_kind_check CHECK (kind IN ('refund', 'charge'));
ALTER TABLE access_grants DROP COLUMN suspended_at;
UPDATE shipments SET status = 'pending' WHERE status = 'held';
ALTER TABLE shipments DROP CONSTRAINT shipments_status_known;
ALTER TABLE shipments ADD CONSTRAINT shipments_status_known
    CHECK (status IN ('pending', 'submitted', 'awaiting_manual_handling', 'failed',
        'cancelled'));
DELETE FROM effects WHERE kind IN ('shipment_cancel', 'access_notice');
ALTER TABLE effects DROP CONSTRAINT effects_session_id_kind_subject_key;
ALTER TABLE effects ADD CONSTRAINT effects_session_id_kind_key UNIQUE (session_id, kind);
ALTER TABLE effects DROP COLUMN body;
ALTER TABLE effects DROP COLUMN subject;
UPDATE effects SET status = 'pending' WHERE status = 'held';
ALTER TABLE effects DROP CONSTRAINT effects_status_known;
ALTER TABLE effects ADD CONSTRAINT effects_status_known
    CHECK (status IN ('pending', 'done', 'dead', 'cancelled'));
ALTER TABLE effects DROP CONSTRAINT effects_kind_known;
ALTER TABLE effects ADD CONSTRAINT effects_kind_known
    CHECK (kind IN ('receipt', 'payment_failed_email', 'inventory', 'shipment',
        'refund_email'));
UPDATE checkout_sessions SET status = 'fulfilled' WHERE status = 'disputed';
ALTER TABLE checkout_sessions DROP CONSTRAINT checkout_sessions_status_known;
ALTER TABLE checkout_sessions ADD CONSTRAINT checkout_sessions_status_known
    CHECK (status IN ('fulfilled', 'awaiting_payment', 'payment_failed', 'expired',
        'refunded', 'partially_refunded'));
