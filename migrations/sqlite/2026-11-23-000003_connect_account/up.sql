-- Stripe Connect: the connected account (`acct_…`) an event came from and a session
-- belongs to; NULL for the platform's own. Every Stripe call about the session sends it
-- as `Stripe-Account`.
ALTER TABLE checkout_sessions ADD COLUMN account TEXT;
ALTER TABLE webhook_events ADD COLUMN account TEXT;
