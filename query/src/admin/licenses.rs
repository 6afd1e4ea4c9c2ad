//! `/admin/licenses`: search, issue (the key shown once), and a license's page with its usage,
//! installations, history and actions.

use axum::extract::State;
use chrono::{DateTime, Utc};
use keyledger_api::{ApiError, AppPath, AppQuery, Permission};
use keyledger_events::license::{LicenseStatus, license_stream};
use keyledger_projections::license::{installations, licenses, usage};
use maud::{Markup, html};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use super::{Section, Viewer, expiry, layout, pretty_stored, status_class, time};
use crate::QueryState;
use crate::events::read_stream;
use crate::license::get::require;
use crate::license::history::active_installations;
use crate::license::search::{Filter, search};

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// The owner, exactly but in any case (blank: any).
    pub owner: Option<String>,
    /// `active`, `suspended` or `revoked`; anything else shows every status.
    pub status: Option<String>,
    /// `free`, `basic`, `pro` or `enterprise`; anything else shows every tier.
    pub tier: Option<String>,
    /// The next page's cursor, from the page's link; one not from this page shows the first.
    pub cursor: Option<String>,
}

const PAGE: i64 = 25;

/// The licenses page: search, and the form to issue one.
#[utoipa::path(
    get,
    path = "/admin/licenses",
    tag = "admin hub",
    params(ListParams),
    responses(
        (status = 200, description = "The page.", content_type = "text/html", body = String),
        (status = 303, description = "No credentials: to the login page, which comes back here after the login.", headers(("Location" = String, description = "`/admin/login`, with `next` naming this page."))),
    ),
)]
pub async fn list(
    State(state): State<QueryState>,
    viewer: Viewer,
    AppQuery(params): AppQuery<ListParams>,
) -> Result<Markup, ApiError> {
    let blank = |v: &Option<String>| {
        v.as_deref()
            .filter(|s| !s.trim().is_empty())
            .map(str::to_owned)
    };
    let owner = blank(&params.owner);
    let status = blank(&params.status).and_then(|s| LicenseStatus::parse(&s));
    let tier = blank(&params.tier).filter(|t| keyledger_events::license::Tier::parse(t).is_some());
    let after = params.cursor.as_deref().and_then(crate::cursor::decode);
    let client = state.client().await?;
    let items = search(
        &client,
        &Filter {
            owner: owner.as_deref(),
            status,
            tier: tier.as_deref(),
            expires_before: None,
            after,
            limit: PAGE,
        },
    )
    .await
    .map_err(ApiError::from)?;
    let next = (items.len() as i64 == PAGE)
        .then(|| items.last().map(crate::license::search::encode_cursor))
        .flatten();
    let next_href = next.map(|cursor| {
        let status = status.map(|s| s.as_str().to_owned());
        let mut query = url_query(&[("owner", &owner), ("status", &status), ("tier", &tier)]);
        query.push_str(&format!("&cursor={cursor}"));
        format!("/admin/licenses?{query}")
    });
    let selected = |current: &Option<String>, value: &str| current.as_deref() == Some(value);
    Ok(layout(
        &viewer,
        "Licenses",
        Section::Licenses,
        html! {
            @if viewer.may(Permission::LicensesWrite) {
            h2 { "Issue a license" }
            form.issue #issue-form {
                label { "Owner" input name="owner" required maxlength="256" autocomplete="off"; }
                label { "Tier"
                    select name="tier" {
                        @for t in ["free", "basic", "pro", "enterprise"] { option value=(t) { (t) } }
                    }
                }
                label { "Valid days" input name="valid_days" type="number" min="1" max="36500" value="365"; }
                label.check { input name="perpetual" type="checkbox" value="true"; "Perpetual (never expires)" }
                button type="submit" { "Issue license" }
            }
            div #issue-error role="alert" hidden {}
            section #issued hidden aria-live="polite" {
                div.notice.warn {
                    p { strong { "Copy this key now." } " It is shown once and stored nowhere; only its hash is kept." }
                    div.keybox {
                        label for="issued-key" { "License key" }
                        input #issued-key readonly;
                        button #copy-key type="button" { "Copy key" }
                        span #copy-status aria-live="polite" {}
                    }
                    p { "Open the license: " a #issued-link href="#" {} }
                }
            }
            }
            h2 { "Find licenses" }
            form.filters method="get" action="/admin/licenses" {
                label { "Owner" input name="owner" value=[owner.as_deref()] placeholder="exact, any case"; }
                label { "Status"
                    select name="status" {
                        option value="" { "any" }
                        @for s in LicenseStatus::ALL {
                            option value=(s.as_str()) selected[status == Some(s)] { (s.as_str()) }
                        }
                    }
                }
                label { "Tier"
                    select name="tier" {
                        option value="" { "any" }
                        @for t in ["free", "basic", "pro", "enterprise"] {
                            option value=(t) selected[selected(&tier, t)] { (t) }
                        }
                    }
                }
                button type="submit" { "Search" }
            }
            div.table-wrap {
                table #licenses {
                    thead { tr { th { "Key" } th { "Owner" } th { "Tier" } th { "Status" } th { "Expires" } th { "Issued" } } }
                    tbody {
                        @for l in &items {
                            tr {
                                td { a href={ "/admin/licenses/" (l.license_id) } { (l.key_prefix) "…" } }
                                td.wrap { (l.owner) }
                                td { (l.tier) }
                                td { span class=(status_class(l.status.as_str())) { (l.status.as_str()) } }
                                td { (expiry(l.expires_at)) }
                                td { (time(l.issued_at)) }
                            }
                        }
                        @if items.is_empty() { tr { td colspan="6" { "No license matches." } } }
                    }
                }
            }
            div.pager {
                @if after.is_some() { a href="/admin/licenses" { "First page" } }
                @if let Some(href) = next_href { a href=(href) { "Next page" } }
            }
        },
    ))
}

fn url_query(pairs: &[(&str, &Option<String>)]) -> String {
    pairs
        .iter()
        .filter_map(|(name, value)| value.as_deref().map(|v| format!("{name}={}", urlencode(v))))
        .collect::<Vec<_>>()
        .join("&")
}

pub(super) fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DetailParams {
    /// Wait until the page's projections have applied this position (after an action).
    pub at: Option<i64>,
    /// Show the license as it stood at this instant (RFC 3339), folded from its events.
    /// An empty value (the form submitted blank) shows the present.
    #[serde(default, deserialize_with = "empty_as_none")]
    #[param(value_type = Option<String>, example = "2026-11-30T12:00:00Z")]
    pub as_of: Option<DateTime<Utc>>,
}

fn empty_as_none<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<DateTime<Utc>>, D::Error> {
    let text: Option<String> = Option::deserialize(deserializer)?;
    match text.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => DateTime::parse_from_rfc3339(text)
            .map(|at| Some(at.with_timezone(&Utc)))
            .map_err(|_| {
                serde::de::Error::custom("must be an RFC 3339 time, e.g. 2026-11-30T12:00:00Z")
            }),
    }
}

/// A license's page: its facts, usage, installations, history and actions.
#[utoipa::path(
    get,
    path = "/admin/licenses/{id}",
    tag = "admin hub",
    params(("id" = Uuid, Path, description = "The license's id."), DetailParams),
    responses(
        (status = 200, description = "The page.", content_type = "text/html", body = String),
        (status = 303, description = "No credentials: to the login page, which comes back here after the login.", headers(("Location" = String, description = "`/admin/login`, with `next` naming this page."))),
        (status = 404, description = "`RES_LICENSE_NOT_FOUND`: no license has this id (or had it at `as_of`)."),
        (status = 503, description = "`SYS_CONSISTENCY_TIMEOUT`: the read tables did not apply `at` (or the license) in time."),
    ),
)]
pub async fn detail(
    State(state): State<QueryState>,
    viewer: Viewer,
    AppPath(license_id): AppPath<Uuid>,
    AppQuery(params): AppQuery<DetailParams>,
) -> Result<Markup, ApiError> {
    let projections = [licenses::NAME, usage::NAME, installations::NAME];
    state.consistent(&projections, params.at).await?;
    let license = match params.as_of {
        Some(as_of) => {
            let client = state.client().await?;
            crate::license::as_of::at(&client, license_id, as_of)
                .await?
                .ok_or_else(|| {
                    ApiError::not_found(
                        keyledger_api::Code::ResLicenseNotFound,
                        format!("no license had this id at {}", as_of.to_rfc3339()),
                    )
                })?
        }
        None => require(&state, license_id, &projections).await?,
    };
    let client = state.client().await?;
    // As of an instant, usage and history stop there too (the usage page's newest 50 first).
    let until = params.as_of.unwrap_or(DateTime::<Utc>::MAX_UTC);
    let mut usage = crate::license::usage::page(&client, license_id, i64::MAX, 50)
        .await
        .map_err(ApiError::from)?;
    usage.retain(|u| u.validated_at <= until);
    let ttl =
        chrono::Duration::from_std(state.heartbeat_ttl).unwrap_or(chrono::Duration::minutes(10));
    let machines = active_installations(&client, license_id, (state.clock)() - ttl)
        .await
        .map_err(ApiError::from)?;
    let mut history = read_stream(&client, &license_stream(license_id), 0, 200)
        .await
        .map_err(ApiError::from)?;
    history.retain(|e| e.recorded_at <= until);
    let id = license_id.to_string();
    // A past state offers no action: actions change the present.
    let revoked = license.status == LicenseStatus::Revoked || params.as_of.is_some();
    Ok(layout(
        &viewer,
        &format!("License {}…", license.key_prefix),
        Section::Licenses,
        html! {
            form.filters #as-of-form method="get" {
                label { "As of (UTC, RFC 3339)"
                    input name="as_of" placeholder="2026-11-30T12:00:00Z" autocomplete="off"
                        value=(params.as_of.map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)).unwrap_or_default());
                }
                button.secondary type="submit" { "Show" }
                @if params.as_of.is_some() { a href=(format!("/admin/licenses/{id}")) { "Now" } }
            }
            @if let Some(as_of) = params.as_of {
                p #as-of-note.notice.warn { "The license as it stood at " (time(as_of)) ", folded from its events up to then." }
            }
            dl.facts {
                dt { "License id" } dd { code { (license.license_id) } }
                dt { "Owner" } dd { (license.owner) }
                dt { "Tier" } dd { (license.tier) }
                dt { "Status" } dd #license-status { span class=(status_class(license.status.as_str())) { (license.status.as_str()) } }
                dt { "Expires" } dd #license-expires { (expiry(license.expires_at)) }
                dt { "Issued" } dd { (time(license.issued_at)) }
                @if let Some(reason) = &license.suspend_reason { dt { "Suspended because" } dd { (reason) } }
                @if let Some(reason) = &license.revoke_reason { dt { "Revoked because" } dd { (reason) } }
                @if !license.entitlements.is_empty() { dt { "Own entitlements" } dd { (license.entitlements.join(", ")) } }
            }
            @if !revoked && viewer.may(Permission::LicensesWrite) {
                div.actions {
                    @if license.status == LicenseStatus::Suspended {
                        button.secondary type="button" data-action="reinstate" data-license=(id) data-title="Reinstate the license" { "Reinstate" }
                    } @else {
                        button.secondary type="button" data-action="suspend" data-license=(id) data-title="Suspend the license" { "Suspend" }
                    }
                    // A perpetual license never expires: there is nothing to renew.
                    @if license.expires_at.is_some() {
                        button.secondary type="button" data-action="renew" data-license=(id) data-title="Renew the license" { "Renew" }
                    }
                    button.danger type="button" data-action="revoke" data-license=(id) data-title="Revoke the license (final)" { "Revoke" }
                }
            }
            @if viewer.may(Permission::LicensesWrite) {
            dialog #action-dialog aria-labelledby="action-title" {
                form method="dialog" {
                    h2 #action-title {}
                    label #action-reason-label { "Reason" input name="reason" maxlength="1000"; }
                    label #action-days-label hidden { "Valid days" input name="valid_days" type="number" min="1" max="36500" value="365"; }
                    div #action-error role="alert" hidden {}
                    div.actions {
                        button type="submit" { "Confirm" }
                        button.secondary #action-cancel type="button" { "Cancel" }
                    }
                }
            }
            }
            h2 { "Usage" }
            div.table-wrap {
                table #usage {
                    thead { tr { th { "When" } th { "Result" } th { "Feature" } } }
                    tbody {
                        @for u in &usage {
                            tr { td { (time(u.validated_at)) } td { (u.code) } td { (u.feature.as_deref().unwrap_or("")) } }
                        }
                        @if usage.is_empty() { tr { td colspan="3" { "No validation yet." } } }
                    }
                }
            }
            h2 { "Installations" @if params.as_of.is_some() { " (now)" } }
            div.table-wrap {
                table #installations {
                    thead { tr { th { "Installation" } th { "Host" } th { "Activated" } th { "Last seen" } th { "Alive" } } }
                    tbody {
                        @for m in &machines {
                            tr {
                                td { (m.installation_id) } td { (m.hostname.as_deref().unwrap_or("")) }
                                td { (time(m.activated_at)) } td { (m.last_seen.map(time).unwrap_or_default()) }
                                td { @if m.alive { "yes" } @else { "no" } }
                            }
                        }
                        @if machines.is_empty() { tr { td colspan="5" { "No active installation." } } }
                    }
                }
            }
            h2 { "History" }
            div.table-wrap {
                table #history {
                    thead { tr { th { "Position" } th { "Event" } th { "When" } th { "By" } th { "Data" } } }
                    tbody {
                        @for e in &history {
                            tr {
                                td { (e.position) } td { (e.event_type) } td { (time(e.recorded_at)) }
                                td { (e.actor().unwrap_or_default()) }
                                td.wrap { details { summary { "JSON" } pre { (pretty_stored(&e.data)) } } }
                            }
                        }
                    }
                }
            }
        },
    ))
}
