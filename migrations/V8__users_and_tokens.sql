-- Users and refresh tokens: read tables of the `users` projection, maintained inline (in the
-- append transaction) so a user can log in, and a rotated or revoked refresh token is dead,
-- the moment its event commits. Neither holds a secret: passwords as argon2id PHC strings,
-- refresh tokens as SHA-256 (hex).
CREATE TABLE users (
    user_id       uuid        PRIMARY KEY,
    email         text        NOT NULL,
    role          text        NOT NULL,
    password_hash text        NOT NULL,
    disabled      boolean     NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    position      bigint      NOT NULL,
    CONSTRAINT users_email_key UNIQUE (email)
);

CREATE TABLE refresh_tokens (
    token_hash text        PRIMARY KEY,
    family_id  uuid        NOT NULL,
    user_id    uuid        NOT NULL,
    -- current: the family's live token; rotated: replaced (presenting it again is reuse);
    -- revoked: the family ended.
    state      text        NOT NULL CHECK (state IN ('current', 'rotated', 'revoked')),
    expires_at timestamptz NOT NULL,
    position   bigint      NOT NULL
);
CREATE INDEX refresh_tokens_family_id_idx ON refresh_tokens (family_id);
