-- The orders export reads fulfilled sessions in the order they were fulfilled, a page at
-- a time from where the last one ended.
CREATE INDEX checkout_sessions_fulfilled ON checkout_sessions (fulfilled_at, id)
    WHERE fulfilled_at IS NOT NULL;
