-- An Idempotency-Key record keeps its response as one opaque value written by the command
-- side (status line, content type and body); the event log's writer stores it in the append
-- transaction without reading it. Records completed before this migration are carried over.
ALTER TABLE idempotency_keys ADD COLUMN response bytea;
UPDATE idempotency_keys
   SET response = convert_to(response_status::text || ' ' || response_content_type || E'\n', 'UTF8')
                  || response_body
 WHERE response_status IS NOT NULL;
ALTER TABLE idempotency_keys
    DROP COLUMN response_status,
    DROP COLUMN response_content_type,
    DROP COLUMN response_body;
