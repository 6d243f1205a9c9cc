-- Disputes and the merchant's systems told of what changes.
-- `disputed`: a dispute is open; access is suspended and an unsent shipment held.
ALTER TABLE checkout_sessions DROP CONSTRAINT checkout_sessions_status_known;
ALTER TABLE checkout_sessions ADD CONSTRAINT checkout_sessions_status_known
    CHECK (status IN ('fulfilled', 'awaiting_payment', 'payment_failed', 'expired',
        'refunded', 'partially_refunded', 'disputed'));
-- `shipment_cancel`: asking the warehouse to cancel a shipment it may have accepted;
-- `access_notice`: telling ACCESS_WEBHOOK_URL of grants given, taken back, suspended or
-- restored, one row per notice (`subject` tells them apart, `body` is what is sent).
ALTER TABLE effects DROP CONSTRAINT effects_kind_known;
ALTER TABLE effects ADD CONSTRAINT effects_kind_known
    CHECK (kind IN ('receipt', 'payment_failed_email', 'inventory', 'shipment',
        'refund_email', 'shipment_cancel', 'access_notice'));
-- `held`: not carried out while a dispute is open; pending again when it is won.
ALTER TABLE effects DROP CONSTRAINT effects_status_known;
ALTER TABLE effects ADD CONSTRAINT effects_status_known
    CHECK (status IN ('pending', 'done', 'dead', 'cancelled', 'held'));
ALTER TABLE effects ADD COLUMN subject TEXT NOT NULL DEFAULT '';
ALTER TABLE effects ADD COLUMN body TEXT;
ALTER TABLE effects DROP CONSTRAINT effects_session_id_kind_key;
ALTER TABLE effects ADD CONSTRAINT effects_session_id_kind_subject_key
    UNIQUE (session_id, kind, subject);
-- `held`: a dispute is open; the warehouse is not told until it is won.
ALTER TABLE shipments DROP CONSTRAINT shipments_status_known;
ALTER TABLE shipments ADD CONSTRAINT shipments_status_known
    CHECK (status IN ('pending', 'submitted', 'awaiting_manual_handling', 'failed',
        'cancelled', 'held'));
-- When an open dispute suspended the grant; NULL while it is not suspended.
ALTER TABLE access_grants ADD COLUMN suspended_at BIGINT;
-- Disputes (dp_…) are stored with the refunds, by the payment intent they name.
ALTER TABLE refunds DROP CONSTRAINT refunds_kind_check;
ALTER TABLE refunds ADD CONSTRAINT refunds_kind_check
    CHECK (kind IN ('refund', 'charge', 'dispute'));
-- Secrets a database keeps for all its replicas: `access` signs download links when
-- ACCESS_SIGNING_SECRET is not set.
CREATE TABLE secrets (
    name TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
