-- The request viewer's table (a projection of ApiRequestRecorded events; pruned after
-- REQUEST_LOG_RETENTION, while the event log keeps every record).
CREATE TABLE api_requests (
    record_id     uuid             PRIMARY KEY,
    request_id    text             NOT NULL,
    service       text             NOT NULL,
    method        text             NOT NULL,
    route         text,
    path          text             NOT NULL,
    query         text,
    caller        text,
    status        integer          NOT NULL,
    duration_ms   double precision NOT NULL,
    request_body  text,
    response_body text,
    at            timestamptz      NOT NULL,
    position      bigint           NOT NULL
);
CREATE INDEX api_requests_at_idx ON api_requests (at DESC, record_id DESC);
CREATE INDEX api_requests_status_idx ON api_requests (status, at DESC);
CREATE INDEX api_requests_service_idx ON api_requests (service, at DESC);

-- The events a request caused: their correlation id is the request id.
CREATE INDEX events_correlation_idx ON events ((metadata ->> 'correlation_id'));
