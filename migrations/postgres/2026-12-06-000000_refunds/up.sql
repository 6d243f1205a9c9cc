-- A refund names the payment intent it returns money from, never the Checkout Session:
-- the session's payment intent is recorded with it, and refunds are stored by it.
ALTER TABLE checkout_sessions ADD COLUMN payment_intent TEXT;
-- The total refunded so far, in minor units, as the session's refunds add up.
ALTER TABLE checkout_sessions ADD COLUMN amount_refunded BIGINT NOT NULL DEFAULT 0;
CREATE INDEX checkout_sessions_payment_intent ON checkout_sessions (payment_intent)
    WHERE payment_intent IS NOT NULL;
ALTER TABLE checkout_sessions DROP CONSTRAINT checkout_sessions_status_known;
ALTER TABLE checkout_sessions ADD CONSTRAINT checkout_sessions_status_known
    CHECK (status IN ('fulfilled', 'awaiting_payment', 'payment_failed', 'expired',
        'refunded', 'partially_refunded'));
ALTER TABLE effects DROP CONSTRAINT effects_kind_known;
ALTER TABLE effects ADD CONSTRAINT effects_kind_known
    CHECK (kind IN ('receipt', 'payment_failed_email', 'inventory', 'shipment',
        'refund_email'));
-- `cancelled`: never carried out, because the order was refunded in full first.
ALTER TABLE effects DROP CONSTRAINT effects_status_known;
ALTER TABLE effects ADD CONSTRAINT effects_status_known
    CHECK (status IN ('pending', 'done', 'dead', 'cancelled'));
-- `cancelled`: the order was refunded in full before the warehouse was told.
ALTER TABLE shipments DROP CONSTRAINT shipments_status_known;
ALTER TABLE shipments ADD CONSTRAINT shipments_status_known
    CHECK (status IN ('pending', 'submitted', 'awaiting_manual_handling', 'failed',
        'cancelled'));

-- When a full refund put the stock back (the goods had not left); NULL otherwise.
ALTER TABLE stock_movements ADD COLUMN returned_at BIGINT;
-- When a grant stopped giving access (a refund); NULL while it gives access.
ALTER TABLE access_grants ADD COLUMN revoked_at BIGINT;

-- Every refund Stripe told of, once each, stored whether or not its session is recorded
-- yet. `id` is the refund's (re_…); a `charge.refunded` event, which on older API versions
-- is the only news of a refund, is stored under its charge's id (ch_…) with the charge's
-- whole refunded amount, so the two kinds of news are never added together.
CREATE TABLE refunds (
    id TEXT PRIMARY KEY NOT NULL,
    payment_intent TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('refund', 'charge')),
    amount BIGINT NOT NULL,
    status TEXT NOT NULL,
    -- `metadata.items` as the refund gave it ("SKU:QTY,…"), if it named items.
    items TEXT,
    -- The `created` time of the newest event applied (seconds): an older event that
    -- arrives late changes nothing.
    event_created BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX refunds_payment_intent ON refunds (payment_intent);
-- Payment intents Stripe lists no Checkout Session for: refunds of payments taken some
-- other way, which need not be asked about again.
CREATE TABLE foreign_payment_intents (
    payment_intent TEXT PRIMARY KEY NOT NULL,
    checked_at BIGINT NOT NULL
);
