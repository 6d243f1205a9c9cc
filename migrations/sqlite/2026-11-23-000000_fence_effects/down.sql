-- The CHECK constraints stay (they hold for every row the engine writes); the fencing
-- token goes.
ALTER TABLE effects DROP COLUMN lease;
