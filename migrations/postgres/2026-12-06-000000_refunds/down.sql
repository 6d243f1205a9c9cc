DROP TABLE foreign_payment_intents;
DROP TABLE refunds;
ALTER TABLE access_grants DROP COLUMN revoked_at;
ALTER TABLE stock_movements DROP COLUMN returned_at;
UPDATE checkout_sessions SET status = 'fulfilled'
    WHERE status IN ('refunded', 'partially_refunded');
ALTER TABLE checkout_sessions DROP CONSTRAINT checkout_sessions_status_known;
ALTER TABLE checkout_sessions ADD CONSTRAINT checkout_sessions_status_known
    CHECK (status IN ('fulfilled', 'awaiting_payment', 'payment_failed', 'expired'));
DELETE FROM effects WHERE kind = 'refund_email';
UPDATE effects SET status = 'dead', last_error = 'cancelled by a refund'
    WHERE status = 'cancelled';
ALTER TABLE effects DROP CONSTRAINT effects_status_known;
ALTER TABLE effects ADD CONSTRAINT effects_status_known
    CHECK (status IN ('pending', 'done', 'dead'));
UPDATE shipments SET status = 'failed' WHERE status = 'cancelled';
ALTER TABLE shipments DROP CONSTRAINT shipments_status_known;
ALTER TABLE shipments ADD CONSTRAINT shipments_status_known
    CHECK (status IN ('pending', 'submitted', 'awaiting_manual_handling', 'failed'));
ALTER TABLE effects DROP CONSTRAINT effects_kind_known;
ALTER TABLE effects ADD CONSTRAINT effects_kind_known
    CHECK (kind IN ('receipt', 'payment_failed_email', 'inventory', 'shipment'));
DROP INDEX checkout_sessions_payment_intent;
ALTER TABLE checkout_sessions DROP COLUMN amount_refunded;
ALTER TABLE checkout_sessions DROP COLUMN payment_intent;
