ALTER TABLE checkout_sessions ADD COLUMN shipping_address TEXT;

-- Held while a process carries the effect out; another process may take it only after.
ALTER TABLE effects ADD COLUMN lease_until BIGINT;

CREATE INDEX effects_dead ON effects (updated_at) WHERE status = 'dead';

CREATE TABLE inventory (
    sku TEXT PRIMARY KEY NOT NULL,
    stock BIGINT NOT NULL,
    oversold BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at BIGINT NOT NULL
);

CREATE TABLE stock_movements (
    session_id TEXT NOT NULL REFERENCES checkout_sessions (id),
    sku TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    applied_at BIGINT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (session_id, sku)
);

CREATE TABLE access_grants (
    session_id TEXT NOT NULL REFERENCES checkout_sessions (id),
    sku TEXT NOT NULL,
    name TEXT NOT NULL,
    url TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (session_id, sku)
);

CREATE TABLE shipments (
    session_id TEXT PRIMARY KEY NOT NULL REFERENCES checkout_sessions (id),
    status TEXT NOT NULL,
    items TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
