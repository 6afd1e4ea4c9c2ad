//! The stored response of an Idempotency-Key and the replies built from it.
//!
//! A response is kept as one opaque value (the event log's writer stores it with the command's
//! events without reading it): the status code and the content type on a first line, then the
//! body, byte for byte.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// A response as an Idempotency-Key keeps it, replayed byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl StoredResponse {
    /// A JSON response.
    pub fn json(status: StatusCode, body: &impl Serialize) -> StoredResponse {
        StoredResponse {
            status: status.as_u16(),
            content_type: "application/json".into(),
            body: serde_json::to_vec(body).unwrap_or_default(),
        }
    }

    /// `200 application/json\n{…}`.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = format!("{} {}\n", self.status, self.content_type).into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }

    /// The inverse of `encode`; `None` for bytes it did not write.
    pub fn decode(bytes: &[u8]) -> Option<StoredResponse> {
        let end = bytes.iter().position(|&b| b == b'\n')?;
        let line = std::str::from_utf8(&bytes[..end]).ok()?;
        let (status, content_type) = line.split_once(' ')?;
        Some(StoredResponse {
            status: status.parse().ok()?,
            content_type: content_type.to_owned(),
            body: bytes[end + 1..].to_vec(),
        })
    }

    pub fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK);
        let content_type = HeaderValue::from_str(&self.content_type)
            .unwrap_or_else(|_| HeaderValue::from_static("application/json"));
        (status, [(header::CONTENT_TYPE, content_type)], self.body).into_response()
    }

    /// The stored response of an earlier request with the same key and body.
    pub fn into_replay(self) -> Response {
        let mut response = self.into_response();
        response
            .headers_mut()
            .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
        response
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_response_is_kept_as_its_status_line_and_its_body() {
        let stored = StoredResponse::json(StatusCode::CREATED, &serde_json::json!({"a": 1}));
        assert_eq!(stored.encode(), b"201 application/json\n{\"a\":1}".to_vec());
        assert_eq!(StoredResponse::decode(&stored.encode()), Some(stored));
        assert_eq!(StoredResponse::decode(b"no status line"), None);
    }

    proptest! {
        #[test]
        fn any_response_comes_back_byte_for_byte(
            status in 100u16..600,
            content_type in "[a-z]{1,12}/[a-z+.-]{1,20}( ?; ?charset=[a-z0-9-]{1,10})?",
            body in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let stored = StoredResponse { status, content_type, body };
            prop_assert_eq!(StoredResponse::decode(&stored.encode()), Some(stored));
        }
    }
}
