-- One replica at a time carries out an event: it claims the event under a lease, by the
-- database's clock (ms), and the claim names it. A claim whose lease ran out, or whose
-- replica stopped beating its heart, may be taken by another.
ALTER TABLE webhook_events ADD COLUMN lease_until BIGINT;
ALTER TABLE webhook_events ADD COLUMN claimed_by TEXT;
-- The landing page, the admin timeline and the account lookup find a session's events.
CREATE INDEX webhook_events_session ON webhook_events (session_id);
-- Processed events are pruned after EVENT_RETENTION.
CREATE INDEX webhook_events_processed ON webhook_events (processed_at)
    WHERE processed_at IS NOT NULL;
