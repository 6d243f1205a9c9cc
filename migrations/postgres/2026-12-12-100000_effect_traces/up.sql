-- The trace of the record that enqueued an effect (W3C traceparent), when traces are
-- exported: the effect's attempts continue it.
ALTER TABLE effects ADD COLUMN traceparent TEXT;
