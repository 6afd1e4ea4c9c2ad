-- Ending a user's access tokens: `token_generation` counts the events that end them (a
-- password change, a revocation of the user's tokens, disabling). An access token carries the
-- generation it was issued in and is refused once the user's generation has moved past it.
ALTER TABLE users ADD COLUMN token_generation bigint NOT NULL DEFAULT 0;

-- The live refresh tokens of a user, for revoking all their logins at once.
CREATE INDEX refresh_tokens_user_current_idx ON refresh_tokens (user_id) WHERE state = 'current';
