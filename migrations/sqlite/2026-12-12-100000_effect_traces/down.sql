ALTER TABLE effects DROP COLUMN traceparent;
