-- The full license lifecycle: overrides, installations, suspension, renewal, quotas, search.
-- The projections that own these tables are versioned up, so they are rebuilt at start-up.

ALTER TABLE license_validation
    ADD COLUMN entitlements  text[] NOT NULL DEFAULT '{}',
    ADD COLUMN installations text[] NOT NULL DEFAULT '{}';

-- VALID validations per license and UTC day (inline, for quotas).
CREATE TABLE license_daily_usage (
    license_id uuid   NOT NULL,
    day        date   NOT NULL,
    valid      bigint NOT NULL,
    PRIMARY KEY (license_id, day)
);

ALTER TABLE licenses
    ADD COLUMN entitlements      text[]      NOT NULL DEFAULT '{}',
    ADD COLUMN max_installations integer,
    ADD COLUMN suspended_at      timestamptz,
    ADD COLUMN suspend_reason    text,
    ADD COLUMN legacy_id         bigint;
CREATE INDEX licenses_issued_idx ON licenses (issued_at DESC, license_id DESC);
CREATE INDEX licenses_owner_idx ON licenses (lower(owner), issued_at DESC, license_id DESC);
CREATE INDEX licenses_expires_idx ON licenses (expires_at);

ALTER TABLE license_usage ADD COLUMN installation_id text;

CREATE TABLE installations (
    license_id      uuid        NOT NULL,
    installation_id text        NOT NULL,
    hostname        text,
    metadata        jsonb       NOT NULL,
    activated_at    timestamptz NOT NULL,
    last_seen       timestamptz,
    active          boolean     NOT NULL,
    deactivated_at  timestamptz,
    deactivation_reason text,
    position        bigint      NOT NULL,
    PRIMARY KEY (license_id, installation_id)
);
CREATE INDEX installations_alive_idx ON installations ((coalesce(last_seen, activated_at))) WHERE active;
