-- Sandbox mode: the simulated Stripe's API key, made once per database, so that the
-- serving process's simulator accepts only it and the CLI's commands can use it too.
CREATE TABLE sandbox_keys (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    api_key TEXT NOT NULL
);
