-- Perpetual licenses: a license issued with `"perpetual": true`, or imported from a legacy row
-- without an expiry date, never expires. Its `expires_at` is NULL in the read tables, as it is
-- `null` in its event. `expires_before` searches (`expires_at < $1`) never match a NULL, and
-- validation answers EXPIRED only for a date in the past.
ALTER TABLE license_validation ALTER COLUMN expires_at DROP NOT NULL;
ALTER TABLE licenses ALTER COLUMN expires_at DROP NOT NULL;
