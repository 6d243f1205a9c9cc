DROP TABLE refunds;
ALTER TABLE access_grants DROP COLUMN revoked_at;
UPDATE checkout_sessions SET status = 'fulfilled'
    WHERE status IN ('refunded', 'partially_refunded');
ALTER TABLE checkout_sessions DROP CONSTRAINT checkout_sessions_status_known;
ALTER TABLE checkout_sessions ADD CONSTRAINT checkout_sessions_status_known
    CHECK (status IN ('fulfilled', 'awaiting_payment', 'payment_failed', 'expired'));
DELETE FROM effects WHERE kind = 'refund_email';
ALTER TABLE effects DROP CONSTRAINT effects_kind_known;
ALTER TABLE effects ADD CONSTRAINT effects_kind_known
    CHECK (kind IN ('receipt', 'payment_failed_email', 'inventory', 'shipment'));
DROP INDEX checkout_sessions_payment_intent;
ALTER TABLE checkout_sessions DROP COLUMN amount_refunded;
ALTER TABLE checkout_sessions DROP COLUMN payment_intent;
