DROP INDEX webhook_events_account;
DROP INDEX checkout_sessions_account;
