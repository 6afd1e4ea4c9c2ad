-- Idempotency-Key records: command-side state, written in the append transaction of the
-- command they belong to. Not a projection (replay leaves it alone).
CREATE TABLE idempotency_keys (
    scope                 text        NOT NULL,
    key                   text        NOT NULL,
    fingerprint           text        NOT NULL,
    status                text        NOT NULL CHECK (status IN ('in_flight', 'completed')),
    -- The claim of the request running the command; a request that outlives `locked_until`
    -- can be taken over by a retry.
    token                 uuid        NOT NULL,
    locked_until          timestamptz NOT NULL,
    response_status       integer,
    response_content_type text,
    response_body         bytea,
    created_at            timestamptz NOT NULL DEFAULT now(),
    expires_at            timestamptz NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_expires_at_idx ON idempotency_keys (expires_at);

-- Read tables of the session slice (projections).
CREATE TABLE sessions (
    session_id uuid        PRIMARY KEY,
    agent_role text        NOT NULL,
    task_id    uuid,
    status     text        NOT NULL,
    metadata   jsonb       NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    position   bigint      NOT NULL
);
CREATE INDEX sessions_created_idx ON sessions (created_at DESC, session_id DESC);
CREATE INDEX sessions_status_created_idx ON sessions (status, created_at DESC, session_id DESC);
CREATE INDEX sessions_role_created_idx ON sessions (agent_role, created_at DESC, session_id DESC);

CREATE TABLE session_transitions (
    session_id  uuid        NOT NULL,
    position    bigint      NOT NULL,
    from_status text        NOT NULL,
    to_status   text        NOT NULL,
    at          timestamptz NOT NULL,
    reason      text,
    actor       text,
    PRIMARY KEY (session_id, position)
);
