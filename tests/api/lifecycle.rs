//! The complete license lifecycle: entitlements, quotas, suspension, renewal, installations
//! with heartbeats, search, and the license's history.

use std::time::Duration;

use keyledger_events::{Notifier, PgEventStore, WriterConfig};
use serde_json::{Value, json};

use crate::helpers::{TestApp, policy_file, problem, spawn_app, spawn_app_with};

async fn validate_with(app: &TestApp, body: Value) -> Value {
    let response = app.post("/v1/licenses/validate", &body).await;
    assert_eq!(response.status(), 200, "{body}");
    response.json().await.unwrap()
}

async fn command(app: &TestApp, id: &str, action: &str, body: Value) -> reqwest::Response {
    app.post(&format!("/v1/licenses/{id}/{action}"), &body)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn features_are_checked_against_the_tier_and_the_licenses_own_entitlements() {
    let app = spawn_app().await;
    let issued = app
        .issue_license_with(json!({"owner": "acme", "tier": "basic", "entitlements": ["sso"]}))
        .await;
    let key = issued["key"].as_str().unwrap();

    let ok = validate_with(&app, json!({"key": key, "feature": "reports"})).await;
    assert_eq!(ok["code"], "VALID");
    assert_eq!(ok["entitlements"], json!(["core", "reports", "sso"]));
    assert_eq!(
        validate_with(&app, json!({"key": key, "feature": "sso"})).await["code"],
        "VALID"
    );
    let refused = validate_with(&app, json!({"key": key, "feature": "export"})).await;
    assert_eq!(refused["code"], "FEATURE_NOT_ENTITLED");
    assert_eq!(refused["valid"], false);

    // Overrides later: entitlements replaced (the tier's stay).
    let id = issued["license_id"].as_str().unwrap();
    let changed = command(&app, id, "policy", json!({"entitlements": ["export"]})).await;
    assert_eq!(changed.status(), 200);
    assert_eq!(
        validate_with(&app, json!({"key": key, "feature": "export"})).await["code"],
        "VALID"
    );
    assert_eq!(
        validate_with(&app, json!({"key": key, "feature": "sso"})).await["code"],
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
        .issue_license_with(json!({"owner": "acme", "tier": "free"}))
        .await;
    let key = issued["key"].as_str().unwrap();
    for _ in 0..3 {
        assert_eq!(app.validate(key).await["code"], "VALID");
    }
    // Three VALID validations spent the day's quota.
    let over = app.validate(key).await;
    assert_eq!(over["code"], "QUOTA_EXCEEDED");
    assert_eq!(over["valid"], false);

    app.clock.advance(chrono::Duration::days(1));
    assert_eq!(app.validate(key).await["code"], "VALID");
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
    let issued = app.issue_license().await;
    let (id, key) = (
        issued["license_id"].as_str().unwrap(),
        issued["key"].as_str().unwrap(),
    );

    let suspended = command(&app, id, "suspend", json!({"reason": "unpaid invoice"})).await;
    assert_eq!(suspended.status(), 200);
    let suspended: Value = suspended.json().await.unwrap();
    assert_eq!(suspended["status"], "suspended");
    assert_eq!(app.validate(key).await["code"], "SUSPENDED");
    let again = command(&app, id, "suspend", json!({"reason": "twice"})).await;
    assert_eq!(problem(again, 409).await["code"], "BIZ_LICENSE_SUSPENDED");

    assert_eq!(
        command(&app, id, "reinstate", json!({"reason": "paid"}))
            .await
            .status(),
        200
    );
    assert_eq!(app.validate(key).await["code"], "VALID");
    let not_suspended = command(&app, id, "reinstate", json!({})).await;
    assert_eq!(
        problem(not_suspended, 409).await["code"],
        "BIZ_LICENSE_NOT_SUSPENDED"
    );

    assert_eq!(app.revoke(id, "fraud").await.status(), 200);
    let before = app.event_count().await;
    for (action, body) in [
        ("suspend", json!({"reason": "x"})),
        ("reinstate", json!({})),
        ("renew", json!({"valid_days": 30})),
        ("policy", json!({"max_installations": 5})),
        ("revoke", json!({"reason": "x"})),
        ("installations", json!({"installation_id": "m1"})),
    ] {
        let response = command(&app, id, action, body).await;
        assert_eq!(
            problem(response, 409).await["code"],
            "BIZ_LICENSE_REVOKED",
            "{action}"
        );
    }
    assert_eq!(app.event_count().await, before);
    assert_eq!(app.validate(key).await["code"], "REVOKED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewing_an_expired_license_makes_it_valid_again() {
    let app = spawn_app().await;
    let issued = app
        .issue_license_with(json!({"owner": "a", "tier": "pro", "valid_days": 10}))
        .await;
    let (id, key) = (
        issued["license_id"].as_str().unwrap(),
        issued["key"].as_str().unwrap(),
    );
    app.clock.advance(chrono::Duration::days(20));
    assert_eq!(app.validate(key).await["code"], "EXPIRED");

    let renewed: Value = command(&app, id, "renew", json!({"valid_days": 30}))
        .await
        .json()
        .await
        .unwrap();
    let expires: chrono::DateTime<chrono::Utc> =
        renewed["expires_at"].as_str().unwrap().parse().unwrap();
    let now = (app.clock.clock())();
    // From now (the license had expired), not from the old expiry.
    assert!(
        (expires - now - chrono::Duration::days(30))
            .num_seconds()
            .abs()
            < 60,
        "{expires} vs {now}"
    );
    assert_eq!(app.validate(key).await["code"], "VALID");

    let bad = command(&app, id, "renew", json!({"valid_days": 0})).await;
    assert_eq!(problem(bad, 422).await["code"], "VAL_INVALID_FIELD");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_parallel_activations_on_a_limit_of_three_take_exactly_three_seats() {
    let app = spawn_app().await;
    let issued = app
        .issue_license_with(json!({"owner": "a", "tier": "basic"}))
        .await;
    let id = issued["license_id"].as_str().unwrap();
    let activations = (0..20).map(|n| {
        command(
            &app,
            id,
            "installations",
            json!({"installation_id": format!("machine-{n}")}),
        )
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
    let issued = app
        .issue_license_with(json!({"owner": "a", "tier": "pro", "max_installations": 1}))
        .await;
    let (id, key) = (
        issued["license_id"].as_str().unwrap(),
        issued["key"].as_str().unwrap(),
    );

    let first = command(
        &app,
        id,
        "installations",
        json!({"installation_id": "laptop", "hostname": "laptop.local"}),
    )
    .await;
    assert_eq!(first.status(), 201);
    let again = command(
        &app,
        id,
        "installations",
        json!({"installation_id": "laptop"}),
    )
    .await;
    assert_eq!(again.status(), 200, "activating again is idempotent");
    let full = command(
        &app,
        id,
        "installations",
        json!({"installation_id": "desktop"}),
    )
    .await;
    assert_eq!(
        problem(full, 409).await["code"],
        "BIZ_TOO_MANY_INSTALLATIONS"
    );

    assert_eq!(
        validate_with(&app, json!({"key": key, "installation_id": "laptop"})).await["code"],
        "VALID"
    );
    assert_eq!(
        validate_with(&app, json!({"key": key, "installation_id": "desktop"})).await["code"],
        "INSTALLATION_NOT_ACTIVATED"
    );

    let released = app
        .http
        .delete(app.url(&format!("/v1/licenses/{id}/installations/laptop")))
        .send()
        .await
        .unwrap();
    assert_eq!(released.status(), 200);
    assert_eq!(
        command(
            &app,
            id,
            "installations",
            json!({"installation_id": "desktop"})
        )
        .await
        .status(),
        201
    );
    let gone = app
        .http
        .delete(app.url(&format!("/v1/licenses/{id}/installations/laptop")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        problem(gone, 404).await["code"],
        "RES_INSTALLATION_NOT_FOUND"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_an_installation_alive_and_silence_frees_its_seat() {
    let app = spawn_app().await;
    let issued = app
        .issue_license_with(json!({"owner": "a", "tier": "basic"}))
        .await;
    let id = issued["license_id"].as_str().unwrap();
    for machine in ["quiet", "chatty"] {
        let response = command(
            &app,
            id,
            "installations",
            json!({"installation_id": machine}),
        )
        .await;
        assert_eq!(response.status(), 201);
    }
    let license_events = app
        .events_of_type(&format!("license-{id}"), "InstallationActivated")
        .await;

    app.clock.advance(chrono::Duration::minutes(8));
    let beat = app
        .post(
            &format!("/v1/licenses/{id}/installations/chatty/heartbeat"),
            &json!({}),
        )
        .await;
    assert_eq!(beat.status(), 200);
    let beat: Value = beat.json().await.unwrap();
    let last_seen: chrono::DateTime<chrono::Utc> =
        beat["last_seen"].as_str().unwrap().parse().unwrap();
    let due: chrono::DateTime<chrono::Utc> = beat["next_heartbeat_due"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(due - last_seen, chrono::Duration::minutes(10));
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
    let unknown = app
        .post(
            &format!("/v1/licenses/{id}/installations/nobody/heartbeat"),
            &json!({}),
        )
        .await;
    assert_eq!(
        problem(unknown, 404).await["code"],
        "RES_INSTALLATION_NOT_FOUND"
    );

    app.clock.advance(chrono::Duration::minutes(4));
    let listed: Value = app
        .get_at(
            &format!("/v1/licenses/{id}/installations"),
            beat["position"].as_i64().unwrap(),
        )
        .await
        .json()
        .await
        .unwrap();
    let alive: Vec<(String, bool)> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["installation_id"].as_str().unwrap().to_owned(),
                i["alive"].as_bool().unwrap(),
            )
        })
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
    let stream: Value = app
        .get(&format!("/v1/licenses/{id}/events"))
        .await
        .json()
        .await
        .unwrap();
    let last = stream["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["event_type"], "InstallationDeactivated");
    assert_eq!(last["data"]["installation_id"], "quiet");
    assert_eq!(last["data"]["reason"], "heartbeat_timeout");
    assert_eq!(last["metadata"]["actor"], "system");
    let head = app.head().await;
    let listed: Value = app
        .get_at(&format!("/v1/licenses/{id}/installations"), head)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn licenses_are_found_by_owner_status_tier_and_expiry_in_pages() {
    let app = spawn_app().await;
    let mut acme = Vec::new();
    for n in 0..5 {
        let owner = if n % 2 == 0 { "ACME Corp" } else { "acme corp" };
        let tier = if n < 3 { "pro" } else { "free" };
        let issued = app
            .issue_license_with(json!({"owner": owner, "tier": tier, "valid_days": 10 + n}))
            .await;
        acme.push(issued["license_id"].as_str().unwrap().to_owned());
    }
    app.issue_license_with(json!({"owner": "Globex", "tier": "pro"}))
        .await;
    let revoked = app.revoke(&acme[0], "test").await;
    let position = revoked.json::<Value>().await.unwrap()["position"]
        .as_i64()
        .unwrap();

    let ids = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["license_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let page: Value = app
        .get_at("/v1/licenses?owner=acme%20CORP", position)
        .await
        .json()
        .await
        .unwrap();
    let mut newest_first = acme.clone();
    newest_first.reverse();
    assert_eq!(
        ids(&page),
        newest_first,
        "owner matches case-insensitively, newest first"
    );

    let page: Value = app
        .get_at(
            "/v1/licenses?owner=acme%20corp&tier=pro&status=active",
            position,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&page), [acme[2].clone(), acme[1].clone()]);

    let before = ((app.clock.clock())() + chrono::Duration::hours(11 * 24 + 12)).to_rfc3339();
    let path = format!("/v1/licenses?expires_before={}", before.replace('+', "%2B"));
    let page: Value = app.get_at(&path, position).await.json().await.unwrap();
    assert_eq!(ids(&page), [acme[1].clone(), acme[0].clone()]);

    let mut seen = Vec::new();
    let mut path = "/v1/licenses?limit=2".to_owned();
    loop {
        let page: Value = app.get_at(&path, position).await.json().await.unwrap();
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/licenses?limit=2&cursor={cursor}"),
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
        let response = app.get(&format!("/v1/licenses?{bad}")).await;
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
    let issued = app.issue_license().await;
    let (id, key) = (
        issued["license_id"].as_str().unwrap(),
        issued["key"].as_str().unwrap(),
    );
    command(&app, id, "suspend", json!({"reason": "chargeback opened"})).await;
    command(&app, id, "reinstate", json!({"reason": "chargeback won"})).await;
    command(&app, id, "renew", json!({"valid_days": 30})).await;
    command(&app, id, "installations", json!({"installation_id": "m1"})).await;
    let revoked: Value = app
        .revoke(id, "end of contract")
        .await
        .json()
        .await
        .unwrap();
    let position = revoked["position"].as_i64().unwrap();

    let by_header: Value = app
        .http
        .get(app.url("/v1/licenses/by-key"))
        .header("x-license-key", key)
        .header("x-consistency-position", position.to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(by_header["license_id"], id);
    assert_eq!(by_header["status"], "revoked");
    let by_body = app.post("/v1/licenses/by-key", &json!({"key": key})).await;
    assert_eq!(by_body.json::<Value>().await.unwrap()["license_id"], id);
    let missing = app
        .http
        .get(app.url("/v1/licenses/by-key"))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(missing, 400).await["code"], "VAL_INVALID_PARAMETER");

    let history: Value = app
        .get(&format!("/v1/licenses/{id}/events"))
        .await
        .json()
        .await
        .unwrap();
    let types: Vec<&str> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "LicenseIssued",
            "LicenseSuspended",
            "LicenseReinstated",
            "LicenseRenewed",
            "InstallationActivated",
            "LicenseRevoked"
        ]
    );
    assert_eq!(history["events"][1]["data"]["reason"], "chargeback opened");
    let unknown = app
        .get(&format!("/v1/licenses/{}/events", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(problem(unknown, 404).await["code"], "RES_LICENSE_NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lifecycle_input_is_rejected_and_appends_nothing() {
    let app = spawn_app().await;
    let issued = app.issue_license().await;
    let id = issued["license_id"].as_str().unwrap();
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
        let response = command(&app, id, action, body.clone()).await;
        assert_eq!(
            problem(response, status).await["code"],
            code,
            "{action} {body}"
        );
    }
    let unknown = command(
        &app,
        &uuid::Uuid::new_v4().to_string(),
        "suspend",
        json!({"reason": "x"}),
    )
    .await;
    assert_eq!(problem(unknown, 404).await["code"], "RES_LICENSE_NOT_FOUND");
    assert_eq!(app.event_count().await, before);
}
