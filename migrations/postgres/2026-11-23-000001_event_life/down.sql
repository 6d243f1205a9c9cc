DROP INDEX webhook_events_dead;
DROP INDEX webhook_events_waiting;
ALTER TABLE webhook_events DROP COLUMN dead_at;
ALTER TABLE webhook_events DROP COLUMN last_error;
ALTER TABLE webhook_events DROP COLUMN next_attempt_at;
ALTER TABLE webhook_events DROP COLUMN attempts;
