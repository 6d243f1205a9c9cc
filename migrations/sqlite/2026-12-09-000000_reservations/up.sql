-- Stock held for a Checkout Session fulfilld created, from its creation until it is paid
-- (the hold becomes the session's stock movement), expires or its payment fails (the
-- hold is released). One row per SKU of the session. `id` is fulfilld's own, made before
-- Stripe is asked for the session; `session_id` is set once Stripe has answered.
-- Available stock is `inventory.stock`, less the movements not yet applied, less the
-- holds in state 'held'.
CREATE TABLE reservations (
    id TEXT NOT NULL,
    sku TEXT NOT NULL,
    quantity BIGINT NOT NULL CHECK (quantity > 0),
    session_id TEXT,
    state TEXT NOT NULL DEFAULT 'held' CHECK (state IN ('held', 'taken', 'released')),
    -- The session's `expires_at`, in ms.
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    settled_at BIGINT,
    -- When the sweep may look at this hold again, after Stripe could not settle it.
    next_check_at BIGINT,
    PRIMARY KEY (id, sku)
);
CREATE INDEX reservations_held_sku ON reservations (sku) WHERE state = 'held';
CREATE INDEX reservations_held_due ON reservations (expires_at) WHERE state = 'held';
CREATE INDEX reservations_session ON reservations (session_id);
CREATE INDEX reservations_settled ON reservations (settled_at) WHERE settled_at IS NOT NULL;
CREATE INDEX stock_movements_unapplied ON stock_movements (sku) WHERE applied_at IS NULL;
