-- The event log keeps the exact JSON text that the hash chain covers.
--
-- `jsonb` rewrites what it stores (numbers become PostgreSQL numerics: 1e19 comes back as a
-- 20-digit integer, -0.0 as 0.0, 1.7976931348623157e308 as a 309-digit integer), so a hash over
-- JSON written by the service could not be recomputed from what was stored. `json` keeps the
-- text byte for byte. `hash_rule` says how an event's hash covers its JSON:
--   1: the canonical JSON of the parsed value (events written before this migration, whose
--      text below is jsonb's rendering, not the bytes that were hashed);
--   2: the stored text itself (every event written from now on).
ALTER TABLE events ADD COLUMN hash_rule smallint NOT NULL DEFAULT 1 CHECK (hash_rule IN (1, 2));
ALTER TABLE events ALTER COLUMN hash_rule DROP DEFAULT;
ALTER TABLE events
    ALTER COLUMN data TYPE json USING data::json,
    ALTER COLUMN metadata TYPE json USING metadata::json;

-- Client metadata in the read tables comes back exactly as it was sent, too.
ALTER TABLE licenses ALTER COLUMN metadata TYPE json USING metadata::json;
ALTER TABLE license_usage ALTER COLUMN metadata TYPE json USING metadata::json;
ALTER TABLE sessions ALTER COLUMN metadata TYPE json USING metadata::json;
ALTER TABLE installations ALTER COLUMN metadata TYPE json USING metadata::json;

-- A projection that fails says why, where every node's /health can read it.
ALTER TABLE checkpoints
    ADD COLUMN last_error    text,
    ADD COLUMN last_error_at timestamptz,
    ADD COLUMN failing_since timestamptz;

-- Events a projection could not apply after retries: set aside so that one event cannot stop
-- the projection for good. Cleared when the projection is rebuilt.
CREATE TABLE projection_parked (
    projection  text        NOT NULL,
    position    bigint      NOT NULL,
    event_id    uuid        NOT NULL,
    event_type  text        NOT NULL,
    error       text        NOT NULL,
    parked_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, position)
);
