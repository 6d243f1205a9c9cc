-- Reconcile lists the connected accounts active lately: only their rows are read.
CREATE INDEX checkout_sessions_account ON checkout_sessions (account, created_at)
    WHERE account IS NOT NULL;
CREATE INDEX webhook_events_account ON webhook_events (account, received_at)
    WHERE account IS NOT NULL;
