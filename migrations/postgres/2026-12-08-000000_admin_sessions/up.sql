-- Operators signed in to /admin: one row per sign-in, so that signing out, or a new
-- ADMIN_TOKEN, ends it on every replica. `id` is the SHA-256 of the cookie's random
-- value (the value itself is never stored); `token` a digest of the ADMIN_TOKEN it was
-- signed in with; `csrf` the random token of its forms.
CREATE TABLE admin_sessions (
    id TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    csrf TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
