ALTER TABLE webhook_events DROP COLUMN account;
ALTER TABLE checkout_sessions DROP COLUMN account;
