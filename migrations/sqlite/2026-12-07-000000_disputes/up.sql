-- Disputes and the merchant's systems told of what changes. SQLite cannot change a CHECK
-- or UNIQUE constraint, so the sessions (`disputed`), the effects (two more kinds, the
-- status `held`, a notice's `subject` and `body`), the shipments (`held`) and the refunds
-- (kind `dispute`) are rebuilt, as in 2026-12-06-000000_refunds. Every step copies named
-- columns or creates only what is missing, so running this again after a crash before
-- diesel recorded it gives the same schema.
PRAGMA foreign_keys = OFF;
BEGIN;

CREATE TABLE checkout_sessions_new (
    id TEXT PRIMARY KEY NOT NULL,
    -- `disputed`: a dispute is open; access is suspended and an unsent shipment held.
    status TEXT NOT NULL
        CHECK (status IN ('fulfilled', 'awaiting_payment', 'payment_failed', 'expired',
            'refunded', 'partially_refunded', 'disputed')),
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
    amount_refunded BIGINT NOT NULL DEFAULT 0
);
INSERT INTO checkout_sessions_new (id, status, livemode, currency, amount_total,
    customer_email, fulfilled_at, created_at, updated_at, shipping_address, account,
    payment_intent, amount_refunded)
SELECT id, status, livemode, currency, amount_total, customer_email, fulfilled_at,
    created_at, updated_at, shipping_address, account, payment_intent, amount_refunded
FROM checkout_sessions;
DROP TABLE checkout_sessions;
ALTER TABLE checkout_sessions_new RENAME TO checkout_sessions;
CREATE INDEX checkout_sessions_payment_intent ON checkout_sessions (payment_intent)
    WHERE payment_intent IS NOT NULL;

CREATE TABLE effects_new (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    session_id TEXT NOT NULL REFERENCES checkout_sessions (id),
    -- `shipment_cancel`: asking the warehouse to cancel a shipment it may have accepted;
    -- `access_notice`: telling ACCESS_WEBHOOK_URL of grants given, taken back, suspended
    -- or restored, one row per notice.
    kind TEXT NOT NULL
        CHECK (kind IN ('receipt', 'payment_failed_email', 'inventory', 'shipment',
            'refund_email', 'shipment_cancel', 'access_notice')),
    -- `held`: not carried out while a dispute is open; pending again when it is won.
    status TEXT NOT NULL
        CHECK (status IN ('pending', 'done', 'dead', 'cancelled', 'held')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    lease_until BIGINT,
    lease BIGINT NOT NULL DEFAULT 0,
    -- What tells one notice of a session from another ('' for the other kinds).
    subject TEXT NOT NULL DEFAULT '',
    -- A notice's JSON, as it is sent on every attempt.
    body TEXT,
    UNIQUE (session_id, kind, subject)
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
    -- `held`: a dispute is open; the warehouse is not told until it is won.
    status TEXT NOT NULL
        CHECK (status IN ('pending', 'submitted', 'awaiting_manual_handling', 'failed',
            'cancelled', 'held')),
    items TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
INSERT INTO shipments_new (session_id, status, items, created_at, updated_at)
SELECT session_id, status, items, created_at, updated_at FROM shipments;
DROP TABLE shipments;
ALTER TABLE shipments_new RENAME TO shipments;

CREATE TABLE access_grants_new (
    session_id TEXT NOT NULL REFERENCES checkout_sessions (id),
    sku TEXT NOT NULL,
    name TEXT NOT NULL,
    url TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT,
    -- When an open dispute suspended the grant; NULL while it is not suspended.
    suspended_at BIGINT,
    PRIMARY KEY (session_id, sku)
);
INSERT INTO access_grants_new (session_id, sku, name, url, created_at, revoked_at)
SELECT session_id, sku, name, url, created_at, revoked_at FROM access_grants;
DROP TABLE access_grants;
ALTER TABLE access_grants_new RENAME TO access_grants;

-- Disputes (dp_…) are stored with the refunds, by the payment intent they name.
CREATE TABLE refunds_new (
    id TEXT PRIMARY KEY NOT NULL,
    payment_intent TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('refund', 'charge', 'dispute')),
    amount BIGINT NOT NULL,
    status TEXT NOT NULL,
    items TEXT,
    event_created BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
INSERT INTO refunds_new (id, payment_intent, kind, amount, status, items, event_created,
    created_at, updated_at)
SELECT id, payment_intent, kind, amount, status, items, event_created, created_at,
    updated_at
FROM refunds;
DROP TABLE refunds;
ALTER TABLE refunds_new RENAME TO refunds;
CREATE INDEX refunds_payment_intent ON refunds (payment_intent);

-- Secrets a database keeps for all its replicas: `access` signs download links when
-- ACCESS_SIGNING_SECRET is not set.
CREATE TABLE IF NOT EXISTS secrets (
    name TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
COMMIT;
PRAGMA foreign_keys = ON;
