DROP INDEX webhook_events_processed;
DROP INDEX webhook_events_session;
ALTER TABLE webhook_events DROP COLUMN claimed_by;
ALTER TABLE webhook_events DROP COLUMN lease_until;
