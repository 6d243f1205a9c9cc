DROP INDEX stock_movements_unapplied;
DROP TABLE reservations;
