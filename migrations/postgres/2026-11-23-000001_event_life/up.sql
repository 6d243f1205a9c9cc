-- An event's life: attempts with backoff, the last error, and dead when it cannot be
-- carried out (an operator replays it with `fulfilld events replay`).
ALTER TABLE webhook_events ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE webhook_events ADD COLUMN next_attempt_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE webhook_events ADD COLUMN last_error TEXT;
ALTER TABLE webhook_events ADD COLUMN dead_at BIGINT;

CREATE INDEX webhook_events_waiting ON webhook_events (id)
    WHERE processed_at IS NULL AND dead_at IS NULL;
CREATE INDEX webhook_events_dead ON webhook_events (dead_at) WHERE dead_at IS NOT NULL;
