ALTER TABLE replicas DROP COLUMN serves;
