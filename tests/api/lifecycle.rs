//! The complete license lifecycle: entitlements, quotas, suspension, renewal, installations
//! with heartbeats, search, and the license's history.

use std::time::Duration;

use keyledger_events::{Notifier, PgEventStore, WriterConfig};
use serde_json::json;

use crate::helpers::{
    License, NewLicense, Validate, policy_file, problem, query, spawn_app, spawn_app_with,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn features_are_checked_against_the_tier_and_the_licenses_own_entitlements() {
    let app = spawn_app().await;
    let licenses = app.licenses();
    let issued = app
        .issue_license_with(NewLicense::new("acme", "basic").entitlements(&["sso"]))
        .await;
    let needing = |feature| Validate::key(&issued.key).feature(feature);

    let ok = licenses.validate(&needing("reports")).await;
    assert_eq!(ok.code, "VALID");
    assert_eq!(
        ok.entitlements,
        Some(vec!["core".into(), "reports".into(), "sso".into()])
    );
    assert_eq!(licenses.validate(&needing("sso")).await.code, "VALID");
    let refused = licenses.validate(&needing("export")).await;
    assert_eq!(refused.code, "FEATURE_NOT_ENTITLED");
    assert!(!refused.valid);

    // Overrides later: entitlements replaced (the tier's stay).
    licenses
        .change_policy(issued.license_id, &json!({"entitlements": ["export"]}))
        .await;
    assert_eq!(licenses.validate(&needing("export")).await.code, "VALID");
    assert_eq!(
        licenses.validate(&needing("sso")).await.code,
        "FEATURE_NOT_ENTITLED"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_quota_counts_valid_validations_and_resets_the_next_day() {
    let policy = policy_file(|text| {
        text.replacen(
            "validations_per_day = 1000\n",
            "validations_per_day = 3\n",
            1,
        )
    });
    let app = spawn_app_with(|args| args.policy_file = Some(policy)).await;
    let issued = app
        .issue_license_with(NewLicense::new("acme", "free"))
        .await;
    let key = issued.key.as_str();
    for _ in 0..3 {
        assert_eq!(app.validate(key).await.code, "VALID");
    }
    // Three VALID validations spent the day's quota.
    let over = app.validate(key).await;
    assert_eq!(over.code, "QUOTA_EXCEEDED");
    assert!(!over.valid);

    app.clock.advance(chrono::Duration::days(1));
    assert_eq!(app.validate(key).await.code, "VALID");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_policy_file_stops_start_up_naming_the_line() {
    let policy =
        policy_file(|text| text.replacen("max_installations = 3", "max_installations = three", 1));
    let database = crate::helpers::TestDatabase::create().await;
    let mut args = keyledger::config::ServeArgs::local(&database.url);
    args.policy_file = Some(policy);
    let error =
        match keyledger::app::Application::build(args, keyledger_command::system_clock()).await {
            Ok(_) => panic!("a bad policy must stop start-up"),
            Err(error) => format!("{error:#}"),
        };
    assert!(error.contains("line 17"), "{error}");
    assert!(error.contains("invalid policy file"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspension_is_reversible_and_revocation_is_final() {
    let app = spawn_app().await;
    let licenses = app.licenses();
    let issued = app.issue_license().await;
    let (id, key) = (issued.license_id, issued.key.as_str());

    let suspended = licenses.suspend(id, "unpaid invoice").await;
    assert_eq!(suspended.status, "suspended");
    assert_eq!(app.validate(key).await.code, "SUSPENDED");
    let again = licenses.try_suspend(id, "twice").await;
    assert_eq!(problem(again, 409).await["code"], "BIZ_LICENSE_SUSPENDED");

    licenses.reinstate(id, Some("paid")).await;
    assert_eq!(app.validate(key).await.code, "VALID");
    let not_suspended = licenses.try_reinstate(id, None).await;
    assert_eq!(
        problem(not_suspended, 409).await["code"],
        "BIZ_LICENSE_NOT_SUSPENDED"
    );

    app.revoke(id, "fraud").await;
    let before = app.event_count().await;
    for (action, body) in [
        ("suspend", json!({"reason": "x"})),
        ("reinstate", json!({})),
        ("renew", json!({"valid_days": 30})),
        ("policy", json!({"max_installations": 5})),
        ("revoke", json!({"reason": "x"})),
        ("installations", json!({"installation_id": "m1"})),
    ] {
        let response = licenses.command(id, action, &body).await;
        assert_eq!(
            problem(response, 409).await["code"],
            "BIZ_LICENSE_REVOKED",
            "{action}"
        );
    }
    assert_eq!(app.event_count().await, before);
    assert_eq!(app.validate(key).await.code, "REVOKED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewing_an_expired_license_makes_it_valid_again() {
    let app = spawn_app().await;
    let licenses = app.licenses();
    let issued = app
        .issue_license_with(NewLicense::new("a", "pro").valid_days(10))
        .await;
    let (id, key) = (issued.license_id, issued.key.as_str());
    app.clock.advance(chrono::Duration::days(20));
    assert_eq!(app.validate(key).await.code, "EXPIRED");

    let renewed = licenses.renew(id, 30).await;
    let expires = renewed.expires_at.unwrap();
    let now = (app.clock.clock())();
    // From now (the license had expired), not from the old expiry.
    assert!(
        (expires - now - chrono::Duration::days(30))
            .num_seconds()
            .abs()
            < 60,
        "{expires} vs {now}"
    );
    assert_eq!(app.validate(key).await.code, "VALID");

    let bad = licenses.try_renew(id, 0).await;
    assert_eq!(problem(bad, 422).await["code"], "VAL_INVALID_FIELD");

    // Renewals add up to 100 years from now at the most: the end stays a date clients parse.
    let before = app.event_count().await;
    let too_far = licenses.try_renew(id, 36_500).await;
    let refusal = problem(too_far, 422).await;
    assert_eq!(refusal["code"], "VAL_INVALID_FIELD");
    assert!(
        refusal["detail"]
            .as_str()
            .unwrap()
            .starts_with("valid_days: "),
        "{refusal}"
    );
    assert_eq!(app.event_count().await, before, "nothing written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_parallel_activations_on_a_limit_of_three_take_exactly_three_seats() {
    let app = spawn_app().await;
    let licenses = app.licenses();
    let id = app
        .issue_license_with(NewLicense::new("a", "basic"))
        .await
        .license_id;
    let activations = (0..20).map(|n| {
        let machine = format!("machine-{n}");
        let licenses = &licenses;
        async move { licenses.try_activate(id, &machine).await }
    });
    let responses = futures::future::join_all(activations).await;
    let mut created = 0;
    for response in responses {
        match response.status().as_u16() {
            201 => created += 1,
            409 => {
                let body = problem(response, 409).await;
                assert_eq!(body["code"], "BIZ_TOO_MANY_INSTALLATIONS");
                assert_eq!(body["max_installations"], 3);
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(created, 3);
    assert_eq!(
        app.events_of_type(&format!("license-{id}"), "InstallationActivated")
            .await,
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installations_activate_once_free_their_seat_and_gate_validation() {
    let app = spawn_app().await;
    let licenses = app.licenses();
    let issued = app
        .issue_license_with(NewLicense::new("a", "pro").max_installations(1))
        .await;
    let (id, key) = (issued.license_id, issued.key.as_str());

    let first = licenses
        .try_activate_with(
            id,
            &json!({"installation_id": "laptop", "hostname": "laptop.local"}),
        )
        .await;
    assert_eq!(first.status(), 201);
    let again = licenses.try_activate(id, "laptop").await;
    assert_eq!(again.status(), 200, "activating again is idempotent");
    let full = licenses.try_activate(id, "desktop").await;
    assert_eq!(
        problem(full, 409).await["code"],
        "BIZ_TOO_MANY_INSTALLATIONS"
    );

    let on = |machine| Validate::key(key).installation(machine);
    assert_eq!(licenses.validate(&on("laptop")).await.code, "VALID");
    assert_eq!(
        licenses.validate(&on("desktop")).await.code,
        "INSTALLATION_NOT_ACTIVATED"
    );

    let released = licenses.try_deactivate(id, "laptop").await;
    assert_eq!(released.status(), 200);
    licenses.activate(id, "desktop").await;
    let gone = licenses.try_deactivate(id, "laptop").await;
    assert_eq!(
        problem(gone, 404).await["code"],
        "RES_INSTALLATION_NOT_FOUND"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_an_installation_alive_and_silence_frees_its_seat() {
    let app = spawn_app().await;
    let licenses = app.licenses();
    let id = app
        .issue_license_with(NewLicense::new("a", "basic"))
        .await
        .license_id;
    for machine in ["quiet", "chatty"] {
        licenses.activate(id, machine).await;
    }
    let license_events = app
        .events_of_type(&format!("license-{id}"), "InstallationActivated")
        .await;

    app.clock.advance(chrono::Duration::minutes(8));
    let beat = licenses.heartbeat(id, "chatty").await;
    assert_eq!(
        beat.next_heartbeat_due - beat.last_seen,
        chrono::Duration::minutes(10)
    );
    // Heartbeats do not grow the license's own stream.
    assert_eq!(
        app.events_of_type(&format!("license-{id}"), "InstallationActivated")
            .await,
        license_events
    );
    assert_eq!(
        app.events_of_type(
            &format!("installation_heartbeat-{id}"),
            "InstallationHeartbeat"
        )
        .await,
        1
    );
    let unknown = licenses.try_heartbeat(id, "nobody").await;
    assert_eq!(
        problem(unknown, 404).await["code"],
        "RES_INSTALLATION_NOT_FOUND"
    );

    app.clock.advance(chrono::Duration::minutes(4));
    let listed = app
        .api()
        .at(beat.position)
        .licenses()
        .installations(id)
        .await;
    let alive: Vec<(String, bool)> = listed
        .items
        .into_iter()
        .map(|i| (i.installation_id, i.alive))
        .collect();
    assert_eq!(
        alive,
        [("quiet".to_owned(), false), ("chatty".to_owned(), true)]
    );

    // The job (as another process would run it) frees the silent seat, and only that one.
    let (store, _) = PgEventStore::start(
        app.database.pool(),
        WriterConfig::default(),
        keyledger_projections::inline(),
        None,
        Notifier::default(),
    );
    let freed = keyledger_command::license::installations::deactivate_dead(
        &store,
        &app.pool,
        (app.clock.clock())(),
        Duration::from_secs(600),
    )
    .await
    .unwrap();
    assert_eq!(freed, 1);
    let history = licenses.history(id).await;
    let last = history.events.last().unwrap();
    assert_eq!(last.event_type, "InstallationDeactivated");
    assert_eq!(last.data["installation_id"], "quiet");
    assert_eq!(last.data["reason"], "heartbeat_timeout");
    assert_eq!(last.metadata["actor"], "system");
    let head = app.head().await;
    let listed = app.api().at(head).licenses().installations(id).await;
    assert_eq!(listed.items.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn licenses_are_found_by_owner_status_tier_and_expiry_in_pages() {
    let app = spawn_app().await;
    let mut acme = Vec::new();
    for n in 0..5 {
        let owner = if n % 2 == 0 { "ACME Corp" } else { "acme corp" };
        let tier = if n < 3 { "pro" } else { "free" };
        let issued = app
            .issue_license_with(NewLicense::new(owner, tier).valid_days(10 + n))
            .await;
        acme.push(issued.license_id);
    }
    app.issue_license_with(NewLicense::new("Globex", "pro"))
        .await;
    let position = app.revoke(acme[0], "test").await.position;
    let licenses = app.api().at(position).licenses();
    let found = |params: Vec<(&'static str, Option<String>)>| {
        let licenses = &licenses;
        async move {
            let page = licenses.search(&query(&params)).await;
            let ids: Vec<_> = page.items.iter().map(|i| i.license_id).collect();
            (ids, page.next_cursor)
        }
    };
    let set = |value: &str| Some(value.to_owned());

    let mut newest_first = acme.clone();
    newest_first.reverse();
    assert_eq!(
        found(vec![("owner", set("acme CORP"))]).await.0,
        newest_first,
        "owner matches case-insensitively, newest first"
    );

    let active_pro = vec![
        ("owner", set("acme corp")),
        ("tier", set("pro")),
        ("status", set("active")),
    ];
    assert_eq!(found(active_pro).await.0, [acme[2], acme[1]]);

    let before = ((app.clock.clock())() + chrono::Duration::hours(11 * 24 + 12)).to_rfc3339();
    assert_eq!(
        found(vec![("expires_before", Some(before))]).await.0,
        [acme[1], acme[0]]
    );

    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let (ids, next) = found(vec![("limit", set("2")), ("cursor", cursor)]).await;
        seen.extend(ids);
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 6);

    for bad in [
        "status=expired",
        "tier=gold",
        "cursor=xyz",
        "limit=0",
        "expires_before=soon",
    ] {
        let response = app.licenses().try_search(&format!("?{bad}")).await;
        assert_eq!(
            problem(response, 400).await["code"],
            "VAL_INVALID_PARAMETER",
            "{bad}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn support_finds_a_license_by_key_in_a_header_or_body_and_reads_its_history() {
    let app = spawn_app().await;
    let licenses = app.licenses();
    let issued = app.issue_license().await;
    let (id, key) = (issued.license_id, issued.key.as_str());
    licenses.suspend(id, "chargeback opened").await;
    licenses.reinstate(id, Some("chargeback won")).await;
    licenses.renew(id, 30).await;
    licenses.activate(id, "m1").await;
    let position = app.revoke(id, "end of contract").await.position;

    let by_header = app
        .api()
        .at(position)
        .licenses()
        .try_by_key_header(key)
        .await
        .json::<License>()
        .await
        .unwrap();
    assert_eq!(by_header.license_id, id);
    assert_eq!(by_header.status, "revoked");
    assert_eq!(licenses.by_key(key).await.license_id, id);
    let missing = app.get("/v1/licenses/by-key").await;
    assert_eq!(problem(missing, 400).await["code"], "VAL_INVALID_PARAMETER");

    let history = licenses.history(id).await;
    assert_eq!(
        history.types(),
        [
            "LicenseIssued",
            "LicenseSuspended",
            "LicenseReinstated",
            "LicenseRenewed",
            "InstallationActivated",
            "LicenseRevoked"
        ]
    );
    assert_eq!(history.events[1].data["reason"], "chargeback opened");
    let unknown = licenses.try_history(uuid::Uuid::new_v4(), "").await;
    assert_eq!(problem(unknown, 404).await["code"], "RES_LICENSE_NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lifecycle_input_is_rejected_and_appends_nothing() {
    let app = spawn_app().await;
    let licenses = app.licenses();
    let id = app.issue_license().await.license_id;
    let before = app.event_count().await;
    let cases = [
        ("suspend", json!({}), 422, "VAL_INVALID_BODY"),
        ("suspend", json!({"reason": " "}), 422, "VAL_INVALID_FIELD"),
        ("renew", json!({"valid_days": -1}), 422, "VAL_INVALID_BODY"),
        (
            "renew",
            json!({"valid_days": 40000}),
            422,
            "VAL_INVALID_FIELD",
        ),
        (
            "policy",
            json!({"entitlements": [""]}),
            422,
            "VAL_INVALID_FIELD",
        ),
        (
            "policy",
            json!({"max_installations": 200000}),
            422,
            "VAL_INVALID_FIELD",
        ),
        (
            "installations",
            json!({"installation_id": ""}),
            422,
            "VAL_INVALID_FIELD",
        ),
        (
            "installations",
            json!({"installation_id": "has space"}),
            422,
            "VAL_INVALID_FIELD",
        ),
        (
            "installations",
            json!({"installation_id": "m", "metadata": 3}),
            422,
            "VAL_INVALID_FIELD",
        ),
    ];
    for (action, body, status, code) in cases {
        let response = licenses.command(id, action, &body).await;
        assert_eq!(
            problem(response, status).await["code"],
            code,
            "{action} {body}"
        );
    }
    let unknown = licenses.try_suspend(uuid::Uuid::new_v4(), "x").await;
    assert_eq!(problem(unknown, 404).await["code"], "RES_LICENSE_NOT_FOUND");
    assert_eq!(app.event_count().await, before);
}
