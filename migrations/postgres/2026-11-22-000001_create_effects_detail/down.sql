DROP TABLE shipments;
DROP TABLE access_grants;
DROP TABLE stock_movements;
DROP TABLE inventory;
DROP INDEX effects_dead;
ALTER TABLE effects DROP COLUMN lease_until;
ALTER TABLE checkout_sessions DROP COLUMN shipping_address;
