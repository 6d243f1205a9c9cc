-- Serving processes on this database, each beating its heart every second: the replicas
-- alive share STRIPE_MAX_RPS between them. Times are the database's clock, in ms.
CREATE TABLE replicas (
    id TEXT PRIMARY KEY,
    started_at BIGINT NOT NULL,
    seen_at BIGINT NOT NULL
);
