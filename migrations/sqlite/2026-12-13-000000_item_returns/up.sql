-- The units of physical goods each refund gave back by item (`metadata.items`), once per
-- (refund, SKU), capped at what the session bought. `asked` when the warehouse may have had
-- the shipment and is asked to cancel these units (the stock goes back at its yes); else
-- they were kept from the shipment: back to stock at once, or, before the session's stock
-- was taken, never taken. `returned_at`: when the stock went back (or was taken less);
-- NULL until then. Created only if missing, so running this again gives the same schema.
CREATE TABLE IF NOT EXISTS item_returns (
    refund_id TEXT NOT NULL,
    sku TEXT NOT NULL,
    session_id TEXT NOT NULL REFERENCES checkout_sessions (id),
    quantity BIGINT NOT NULL CHECK (quantity > 0),
    asked BOOLEAN NOT NULL,
    returned_at BIGINT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (refund_id, sku)
);
CREATE INDEX IF NOT EXISTS item_returns_session ON item_returns (session_id);
