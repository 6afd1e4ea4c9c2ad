-- API keys: the read table of the `api_keys` projection, maintained inline (in the append
-- transaction) so a key works, and a revoked key is refused, the moment its event commits.
-- The key itself is never stored: only its SHA-256 (hex) and its display prefix.
CREATE TABLE api_keys (
    api_key_id   uuid        PRIMARY KEY,
    name         text        NOT NULL,
    -- `klk_` and the first eight characters of the key body.
    prefix       text        NOT NULL,
    key_hash     text        NOT NULL,
    -- Permission names (`licenses:write`).
    scopes       text[]      NOT NULL,
    created_by   text        NOT NULL,
    created_at   timestamptz NOT NULL,
    revoked_at   timestamptz,
    -- When the key last authenticated a request, at most a minute stale. Written by the
    -- authenticator, not by an event: usage is not history (a rebuild forgets it).
    last_used_at timestamptz,
    position     bigint      NOT NULL,
    CONSTRAINT api_keys_key_hash_key UNIQUE (key_hash)
);
