-- Read tables of the license slice. They are projections of the event log: `keyledger replay`
-- rebuilds them from position 0.

-- Maintained inline, in the append transaction, so a revoke is visible to the next validation.
CREATE TABLE license_validation (
    key_hash   text        PRIMARY KEY,
    license_id uuid        NOT NULL UNIQUE,
    tier       text        NOT NULL,
    status     text        NOT NULL,
    expires_at timestamptz NOT NULL
);

CREATE TABLE licenses (
    license_id    uuid        PRIMARY KEY,
    key_prefix    text        NOT NULL,
    owner         text        NOT NULL,
    tier          text        NOT NULL,
    status        text        NOT NULL,
    metadata      jsonb       NOT NULL,
    issued_at     timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    revoked_at    timestamptz,
    revoke_reason text,
    position      bigint      NOT NULL
);

CREATE TABLE license_usage (
    license_id   uuid        NOT NULL,
    position     bigint      NOT NULL,
    validated_at timestamptz NOT NULL,
    code         text        NOT NULL,
    feature      text,
    metadata     jsonb       NOT NULL,
    PRIMARY KEY (license_id, position)
);
