//! `/admin/requests`: the request viewer. Filters, pages, and rows that expand to the
//! redacted bodies and the events the request caused.

use axum::extract::State;
use keyledger_api::{ApiError, AppQuery};
use maud::{Markup, html};

use super::licenses::urlencode;
use super::{Section, Viewer, layout, time};
use crate::QueryState;
use crate::request::{Filter, RequestParams, next_cursor, search};

/// The request viewer: filters, pages, and each request's bodies and events.
#[utoipa::path(
    get,
    path = "/admin/requests",
    tag = "admin hub",
    params(RequestParams),
    responses(
        (status = 200, description = "The page.", content_type = "text/html", body = String),
        (status = 303, description = "No credentials: to the login page, which comes back here after the login.", headers(("Location" = String, description = "`/admin/login`, with `next` naming this page."))),
        (status = 400, description = "`VAL_INVALID_PARAMETER`: a `status` or `status_class` out of range, a `limit` out of range or a cursor not from this API."),
    ),
)]
pub async fn list(
    State(state): State<QueryState>,
    viewer: Viewer,
    AppQuery(params): AppQuery<RequestParams>,
) -> Result<Markup, ApiError> {
    let shown = [
        ("service", params.service.clone()),
        ("method", params.method.clone()),
        ("status_class", params.status_class.clone()),
        ("route", params.route.clone()),
        ("path_contains", params.path_contains.clone()),
        ("caller", params.caller.clone()),
    ];
    let value = |name: &str| {
        shown
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let query_without_cursor: String = shown
        .iter()
        .filter_map(|(name, v)| {
            v.as_deref()
                .filter(|v| !v.is_empty())
                .map(|v| format!("{name}={}", urlencode(v)))
        })
        .collect::<Vec<_>>()
        .join("&");
    let mut params = params;
    params.limit = Some(params.limit.unwrap_or(50));
    let paged = params.cursor.is_some();
    let filter = Filter::parse(params)?;
    let client = state.client().await?;
    let items = search(&client, &filter).await.map_err(ApiError::from)?;
    let next = next_cursor(&items, filter.limit)
        .map(|cursor| format!("/admin/requests?{query_without_cursor}&cursor={cursor}"));
    let class = value("status_class");
    Ok(layout(
        &viewer,
        "API requests",
        Section::Requests,
        html! {
            form.filters method="get" action="/admin/requests" {
                label { "Service" input name="service" value=(value("service")); }
                label { "Method"
                    select name="method" {
                        option value="" { "any" }
                        @for m in ["GET", "POST", "PATCH", "PUT", "DELETE"] {
                            option value=(m) selected[value("method").eq_ignore_ascii_case(m)] { (m) }
                        }
                    }
                }
                label { "Status"
                    select name="status_class" #status-class {
                        option value="" { "any" }
                        @for c in ["2xx", "3xx", "4xx", "5xx"] {
                            option value=(c) selected[class == c] { (c) }
                        }
                    }
                }
                label { "Route" input name="route" value=(value("route")) placeholder="/v1/licenses/{id}"; }
                label { "Path contains" input name="path_contains" value=(value("path_contains")); }
                label { "Caller" input name="caller" value=(value("caller")); }
                button type="submit" { "Filter" }
            }
            div.table-wrap {
                table #requests {
                    thead { tr {
                        th { "Time" } th { "Service" } th { "Method" } th { "Route" } th { "Caller" }
                        th { "Status" } th { "Duration" } th { span.muted { "Details" } }
                    } }
                    tbody {
                        @for (n, r) in items.iter().enumerate() {
                            @let row_id = format!("request-{n}");
                            tr.request-row data-status=(r.status) {
                                td { (time(r.at)) }
                                td { (r.service) }
                                td { (r.method) }
                                td.wrap { (r.route.as_deref().unwrap_or(&r.path)) }
                                td { (r.caller.as_deref().unwrap_or("")) }
                                td { span class={ "status s" (r.status / 100) } { (r.status) } }
                                td { (format!("{:.1} ms", r.duration_ms)) }
                                td { button.secondary type="button" data-expand=(row_id) aria-expanded="false" aria-controls=(row_id) { "Show" } }
                            }
                            tr.detail-row id=(row_id) hidden {
                                td colspan="8" {
                                    p { "Path " code { (r.path) } @if let Some(q) = &r.query { " ?" code { (q) } } }
                                    p { "Request id " code { (r.request_id) } }
                                    p { "Request body" }
                                    pre { (r.request_body.as_deref().unwrap_or("(none)")) }
                                    p { "Response body" }
                                    pre { (r.response_body.as_deref().unwrap_or("(not captured)")) }
                                    p { a href={ "/admin/events?correlation_id=" (urlencode(&r.request_id)) } { "Events this request caused" } }
                                }
                            }
                        }
                        @if items.is_empty() { tr { td colspan="8" { "No request matches." } } }
                    }
                }
            }
            div.pager {
                @if paged { a href={ "/admin/requests?" (query_without_cursor) } { "Newest" } }
                @if let Some(href) = next { a href=(href) { "Older" } }
            }
        },
    ))
}
