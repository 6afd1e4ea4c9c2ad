//! Extractors whose rejections are `ApiError`s, so bad input gets our problem+json.

use std::marker::PhantomData;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{StatusCode, header, request::Parts};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, Code};

/// A JSON body. Malformed JSON is 400 `VAL_MALFORMED_JSON`; valid JSON of the wrong shape
/// (unknown or missing fields, wrong types, unknown enum values) is 422 `VAL_INVALID_BODY`.
pub struct AppJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for AppJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        json_body(request, state, &[]).await.map(AppJson)
    }
}

/// Names the members of a request body that hold JSON the service keeps as text (see
/// [`AppJsonKeepingText`]).
pub trait TextMembers {
    const NAMES: &'static [&'static str];
}

/// A JSON body, like [`AppJson`], in which the members named by `K` hold JSON the service
/// stores as text, as it was sent (the bodies of request records): their values are not
/// refused for numbers a double cannot carry, and reach `T` as a JSON string of their text
/// unless they are a string or `null` already.
pub struct AppJsonKeepingText<T, K>(pub T, pub PhantomData<K>);

impl<T: DeserializeOwned, K: TextMembers, S: Send + Sync> FromRequest<S>
    for AppJsonKeepingText<T, K>
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        json_body(request, state, K::NAMES)
            .await
            .map(|body| AppJsonKeepingText(body, PhantomData))
    }
}

async fn json_body<T: DeserializeOwned, S: Send + Sync>(
    request: Request,
    state: &S,
    text_members: &[&str],
) -> Result<T, ApiError> {
    let is_json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| {
            let v = v.trim();
            v.eq_ignore_ascii_case("application/json")
                || (v.starts_with("application/") && v.ends_with("+json"))
        })
        .unwrap_or(false);
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Code::ValUnsupportedMediaType,
            "send the body as JSON with `Content-Type: application/json`",
        ));
    }
    let bytes = Bytes::from_request(request, state)
        .await
        .map_err(body_rejection)?;
    let bytes = crate::json_check::check_keeping_text(&bytes, text_members).map_err(|found| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            Code::ValUnrepresentable,
            format!("{}: {}", found.path, found.reason),
        )
        .with_member("field", found.path)
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                Code::ValInvalidBody,
                e.to_string(),
            ),
            Category::Syntax | Category::Eof | Category::Io => ApiError::new(
                StatusCode::BAD_REQUEST,
                Code::ValMalformedJson,
                format!("the body is not valid JSON: {e}"),
            ),
        }
    })
}

fn body_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            Code::ValBodyTooLarge,
            "the body is larger than this endpoint accepts",
        )
    } else {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            Code::ValInvalidBody,
            format!("cannot read the body: {rejection}"),
        )
    }
}

/// PostgreSQL's text has no NUL character: a parameter holding one (`%00`) can never match
/// anything stored, and is refused before it reaches a query.
fn refuse_nul(part: &str, raw: &str) -> Result<(), ApiError> {
    if raw
        .as_bytes()
        .windows(3)
        .any(|w| w.eq_ignore_ascii_case(b"%00"))
    {
        Err(ApiError::invalid_parameter(
            part,
            "holds the NUL character (%00), which no stored value contains",
        ))
    } else {
        Ok(())
    }
}

/// A path parameter; a malformed one (e.g. not a uuid) is 400 `VAL_INVALID_PARAMETER`.
pub struct AppPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for AppPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        refuse_nul("the path", parts.uri.path())?;
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| AppPath(p.0))
            .map_err(|e: PathRejection| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    Code::ValInvalidParameter,
                    e.body_text(),
                )
            })
    }
}

/// Query parameters; unknown or malformed ones are 400 `VAL_INVALID_PARAMETER`.
pub struct AppQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for AppQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        refuse_nul("the query string", parts.uri.query().unwrap_or(""))?;
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| AppQuery(q.0))
            .map_err(|e: QueryRejection| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    Code::ValInvalidParameter,
                    e.body_text(),
                )
            })
    }
}

/// `X-Consistency-Position`: the position a query must see (absent = no wait).
pub struct ConsistencyPosition(pub Option<i64>);

pub const CONSISTENCY_HEADER: &str = "x-consistency-position";

impl<S: Send + Sync> FromRequestParts<S> for ConsistencyPosition {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(CONSISTENCY_HEADER) else {
            return Ok(ConsistencyPosition(None));
        };
        value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
            .filter(|p| *p >= 0)
            .map(|p| ConsistencyPosition(Some(p)))
            .ok_or_else(|| {
                ApiError::invalid_parameter(
                    "X-Consistency-Position",
                    "must be a non-negative integer position",
                )
            })
    }
}
