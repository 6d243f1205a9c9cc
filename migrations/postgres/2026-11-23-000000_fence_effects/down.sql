ALTER TABLE shipments DROP CONSTRAINT shipments_status_known;
ALTER TABLE effects DROP CONSTRAINT effects_status_known;
ALTER TABLE effects DROP CONSTRAINT effects_kind_known;
ALTER TABLE checkout_sessions DROP CONSTRAINT checkout_sessions_status_known;
ALTER TABLE effects DROP COLUMN lease;
