DROP TABLE sandbox_keys;
