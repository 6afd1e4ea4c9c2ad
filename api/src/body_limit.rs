//! The global request body limit: every route refuses a body larger than the limit with 413
//! problem+json `VAL_BODY_TOO_LARGE` (tower-http's `RequestBodyLimitLayer`), before any handler
//! or the request log buffers it; a few routes (request ingestion) have a larger limit of
//! their own.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower::{Layer, ServiceExt};
use tower_http::limit::RequestBodyLimitLayer;

use crate::error::{ApiError, Code};

/// The largest body of each request.
#[derive(Debug, Clone)]
pub struct BodyLimits {
    default: usize,
    routes: Vec<(Method, String, usize)>,
}

impl BodyLimits {
    pub fn new(default: usize) -> BodyLimits {
        BodyLimits {
            default,
            routes: Vec::new(),
        }
    }

    /// A limit of its own for `method path` (an exact path).
    pub fn route(mut self, method: Method, path: &str, limit: usize) -> BodyLimits {
        self.routes.push((method, path.to_owned(), limit));
        self
    }

    pub fn for_request(&self, method: &Method, path: &str) -> usize {
        self.routes
            .iter()
            .find(|(m, p, _)| m == method && p == path)
            .map_or(self.default, |(_, _, limit)| *limit)
    }
}

fn too_large(limit: usize) -> Response {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        Code::ValBodyTooLarge,
        format!("the body is larger than this endpoint accepts ({limit} bytes)"),
    )
    .into_response()
}

/// The middleware: applies the request's limit; tower-http's bare 413 becomes a problem.
pub async fn limit_bodies(
    State(limits): State<Arc<BodyLimits>>,
    request: Request,
    next: Next,
) -> Response {
    let limit = limits.for_request(request.method(), request.uri().path());
    let inner = tower::service_fn(move |request: Request<_>| {
        let next = next.clone();
        async move { Ok::<_, Infallible>(next.run(request.map(Body::new)).await) }
    });
    let response = match RequestBodyLimitLayer::new(limit)
        .layer(inner)
        .oneshot(request)
        .await
    {
        Ok(response) => response,
        Err(never) => match never {},
    };
    if response.status() != StatusCode::PAYLOAD_TOO_LARGE {
        return response.map(Body::new);
    }
    let ours = response.extensions().get::<Arc<ApiError>>().is_some();
    let mut response = if ours {
        response.map(Body::new)
    } else {
        too_large(limit)
    };
    // The rest of the body is never read, so the connection cannot carry another request:
    // say so, so that clients do not reuse it.
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_of_its_own_has_its_own_limit() {
        let limits = BodyLimits::new(10).route(Method::POST, "/v1/requests", 100);
        assert_eq!(limits.for_request(&Method::POST, "/v1/requests"), 100);
        assert_eq!(limits.for_request(&Method::GET, "/v1/requests"), 10);
        assert_eq!(limits.for_request(&Method::POST, "/v1/requests/x"), 10);
    }
}
