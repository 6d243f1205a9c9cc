-- A refund names the payment intent it returns money from, never the Checkout Session:
-- the session's payment intent is recorded with it, and refunds are stored by it.
-- SQLite cannot change a CHECK constraint, so the sessions (two more statuses), the
-- effects (one more kind, one more status) and the shipments (one more status) are
-- rebuilt, as in 2026-11-23-000000_fence_effects, and the stock movements and the grants
-- with them. Every step
-- copies named columns or creates only what is missing, so running this again after a
-- crash before diesel recorded it gives the same schema.
PRAGMA foreign_keys = OFF;
BEGIN;

CREATE TABLE checkout_sessions_new (
    id TEXT PRIMARY KEY NOT NULL,
    status TEXT NOT NULL
        CHECK (status IN ('fulfilled', 'awaiting_payment', 'payment_failed', 'expired',
            'refunded', 'partially_refunded')),
    livemode BOOLEAN NOT NULL,
    currency TEXT,
    amount_total BIGINT,
    customer_email TEXT,
    fulfilled_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    shipping_address TEXT,
    account TEXT,
    payment_intent TEXT,
    -- The total refunded so far, in minor units, as the session's refunds add up.
    amount_refunded BIGINT NOT NULL DEFAULT 0
);
INSERT INTO checkout_sessions_new (id, status, livemode, currency, amount_total,
    customer_email, fulfilled_at, created_at, updated_at, shipping_address, account)
SELECT id, status, livemode, currency, amount_total, customer_email, fulfilled_at,
    created_at, updated_at, shipping_address, account
FROM checkout_sessions;
DROP TABLE checkout_sessions;
ALTER TABLE checkout_sessions_new RENAME TO checkout_sessions;
CREATE INDEX checkout_sessions_payment_intent ON checkout_sessions (payment_intent)
    WHERE payment_intent IS NOT NULL;

CREATE TABLE effects_new (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    session_id TEXT NOT NULL REFERENCES checkout_sessions (id),
    kind TEXT NOT NULL
        CHECK (kind IN ('receipt', 'payment_failed_email', 'inventory', 'shipment',
            'refund_email')),
    -- `cancelled`: never carried out, because the order was refunded in full first.
    status TEXT NOT NULL CHECK (status IN ('pending', 'done', 'dead', 'cancelled')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    lease_until BIGINT,
    lease BIGINT NOT NULL DEFAULT 0,
    UNIQUE (session_id, kind)
);
INSERT INTO effects_new (id, session_id, kind, status, attempts, next_attempt_at,
    last_error, created_at, updated_at, lease_until, lease)
SELECT id, session_id, kind, status, attempts, next_attempt_at, last_error, created_at,
    updated_at, lease_until, lease
FROM effects;
DROP TABLE effects;
ALTER TABLE effects_new RENAME TO effects;
CREATE INDEX effects_due ON effects (next_attempt_at) WHERE status = 'pending';
CREATE INDEX effects_dead ON effects (updated_at) WHERE status = 'dead';

CREATE TABLE shipments_new (
    session_id TEXT PRIMARY KEY NOT NULL REFERENCES checkout_sessions (id),
    -- `cancelled`: the order was refunded in full before the warehouse was told.
    status TEXT NOT NULL
        CHECK (status IN ('pending', 'submitted', 'awaiting_manual_handling', 'failed',
            'cancelled')),
    items TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
INSERT INTO shipments_new (session_id, status, items, created_at, updated_at)
SELECT session_id, status, items, created_at, updated_at FROM shipments;
DROP TABLE shipments;
ALTER TABLE shipments_new RENAME TO shipments;

CREATE TABLE stock_movements_new (
    session_id TEXT NOT NULL REFERENCES checkout_sessions (id),
    sku TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    applied_at BIGINT,
    created_at BIGINT NOT NULL,
    -- When a full refund put the stock back (the goods had not left); NULL otherwise.
    returned_at BIGINT,
    PRIMARY KEY (session_id, sku)
);
INSERT INTO stock_movements_new (session_id, sku, quantity, applied_at, created_at)
SELECT session_id, sku, quantity, applied_at, created_at FROM stock_movements;
DROP TABLE stock_movements;
ALTER TABLE stock_movements_new RENAME TO stock_movements;

CREATE TABLE access_grants_new (
    session_id TEXT NOT NULL REFERENCES checkout_sessions (id),
    sku TEXT NOT NULL,
    name TEXT NOT NULL,
    url TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    -- When the grant stopped giving access (a refund); NULL while it gives access.
    revoked_at BIGINT,
    PRIMARY KEY (session_id, sku)
);
INSERT INTO access_grants_new (session_id, sku, name, url, created_at)
SELECT session_id, sku, name, url, created_at FROM access_grants;
DROP TABLE access_grants;
ALTER TABLE access_grants_new RENAME TO access_grants;

-- Every refund Stripe told of, once each, stored whether or not its session is recorded
-- yet. `id` is the refund's (re_…); a `charge.refunded` event, which on older API versions
-- is the only news of a refund, is stored under its charge's id (ch_…) with the charge's
-- whole refunded amount, so the two kinds of news are never added together.
CREATE TABLE IF NOT EXISTS refunds (
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
CREATE INDEX IF NOT EXISTS refunds_payment_intent ON refunds (payment_intent);

-- Payment intents Stripe lists no Checkout Session for: refunds of payments taken some
-- other way, which need not be asked about again.
CREATE TABLE IF NOT EXISTS foreign_payment_intents (
    payment_intent TEXT PRIMARY KEY NOT NULL,
    checked_at BIGINT NOT NULL
);
COMMIT;
PRAGMA foreign_keys = ON;
