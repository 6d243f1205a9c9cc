-- SQLite cannot add a CHECK constraint to a table, so three tables are rebuilt (SQLite's
-- documented procedure). Every step copies named columns, so running this again after a
-- crash before diesel recorded it gives the same schema.
PRAGMA foreign_keys = OFF;
BEGIN;

CREATE TABLE checkout_sessions_new (
    id TEXT PRIMARY KEY NOT NULL,
    status TEXT NOT NULL
        CHECK (status IN ('fulfilled', 'awaiting_payment', 'payment_failed', 'expired')),
    livemode BOOLEAN NOT NULL,
    currency TEXT,
    amount_total BIGINT,
    customer_email TEXT,
    fulfilled_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    shipping_address TEXT
);
INSERT INTO checkout_sessions_new (id, status, livemode, currency, amount_total,
    customer_email, fulfilled_at, created_at, updated_at, shipping_address)
SELECT id, status, livemode, currency, amount_total, customer_email, fulfilled_at,
    created_at, updated_at, shipping_address
FROM checkout_sessions;
DROP TABLE checkout_sessions;
ALTER TABLE checkout_sessions_new RENAME TO checkout_sessions;

-- `lease` is the fencing token: each claim takes the next number, and an attempt's
-- writes hold only while the effect still carries the number it was claimed with.
CREATE TABLE effects_new (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    session_id TEXT NOT NULL REFERENCES checkout_sessions (id),
    kind TEXT NOT NULL
        CHECK (kind IN ('receipt', 'payment_failed_email', 'inventory', 'shipment')),
    status TEXT NOT NULL CHECK (status IN ('pending', 'done', 'dead')),
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
    last_error, created_at, updated_at, lease_until)
SELECT id, session_id, kind, status, attempts, next_attempt_at, last_error, created_at,
    updated_at, lease_until
FROM effects;
DROP TABLE effects;
ALTER TABLE effects_new RENAME TO effects;
CREATE INDEX effects_due ON effects (next_attempt_at) WHERE status = 'pending';
CREATE INDEX effects_dead ON effects (updated_at) WHERE status = 'dead';

CREATE TABLE shipments_new (
    session_id TEXT PRIMARY KEY NOT NULL REFERENCES checkout_sessions (id),
    status TEXT NOT NULL
        CHECK (status IN ('pending', 'submitted', 'awaiting_manual_handling', 'failed')),
    items TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
INSERT INTO shipments_new (session_id, status, items, created_at, updated_at)
SELECT session_id, status, items, created_at, updated_at FROM shipments;
DROP TABLE shipments;
ALTER TABLE shipments_new RENAME TO shipments;

COMMIT;
PRAGMA foreign_keys = ON;
