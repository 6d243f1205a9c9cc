CREATE TABLE checkout_sessions (
    id TEXT PRIMARY KEY NOT NULL,
    status TEXT NOT NULL,
    livemode BOOLEAN NOT NULL,
    currency TEXT,
    amount_total BIGINT,
    customer_email TEXT,
    fulfilled_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE line_items (
    session_id TEXT NOT NULL REFERENCES checkout_sessions (id),
    line_number INTEGER NOT NULL,
    id TEXT NOT NULL,
    price_id TEXT,
    product_id TEXT,
    description TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    currency TEXT NOT NULL,
    unit_amount BIGINT,
    amount_subtotal BIGINT NOT NULL,
    amount_total BIGINT NOT NULL,
    PRIMARY KEY (session_id, line_number)
);

CREATE TABLE webhook_events (
    id TEXT PRIMARY KEY NOT NULL,
    event_type TEXT NOT NULL,
    session_id TEXT NOT NULL,
    livemode BOOLEAN NOT NULL,
    payload TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    processed_at BIGINT
);

CREATE INDEX webhook_events_unprocessed ON webhook_events (received_at)
    WHERE processed_at IS NULL;

CREATE TABLE effects (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    session_id TEXT NOT NULL REFERENCES checkout_sessions (id),
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (session_id, kind)
);

CREATE INDEX effects_due ON effects (next_attempt_at) WHERE status = 'pending';
