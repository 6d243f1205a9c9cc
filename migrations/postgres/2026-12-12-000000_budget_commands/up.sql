-- Commands that call Stripe (`fulfilld reconcile`, `sessions refund`, …) beat their heart
-- here too while they run, so that they take a share of STRIPE_MAX_RPS; they never lead
-- and are not serving replicas.
ALTER TABLE replicas ADD COLUMN serves BOOLEAN NOT NULL DEFAULT TRUE;
