//! Perpetual licenses through the HTTP API: issued with `"perpetual": true`, they never expire,
//! refuse renewal, stay out of `expires_before` searches, and a tier's policy may forbid them.

use serde_json::{Value, json};

use crate::helpers::{TestApp, policy_file, problem, spawn_app, spawn_app_with};

async fn issue_perpetual(app: &TestApp, tier: &str) -> Value {
    app.issue_license_with(json!({"owner": "acme", "tier": tier, "perpetual": true}))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_perpetual_license_never_expires() {
    let app = spawn_app().await;
    let issued = issue_perpetual(&app, "pro").await;
    assert_eq!(issued["expires_at"], Value::Null, "{issued}");
    assert!(
        issued.as_object().unwrap().contains_key("expires_at"),
        "{issued}"
    );
    let key = issued["key"].as_str().unwrap();
    let id = issued["license_id"].as_str().unwrap();

    // Two hundred years on, it is still valid.
    app.clock.advance(chrono::Duration::days(365 * 200));
    let validation = app.validate(key).await;
    assert_eq!(validation["code"], "VALID", "{validation}");
    assert_eq!(validation["expires_at"], Value::Null, "{validation}");
    assert!(validation.as_object().unwrap().contains_key("expires_at"));

    let position = issued["position"].as_i64().unwrap();
    let license: Value = app
        .get_at(&format!("/v1/licenses/{id}"), position)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(license["expires_at"], Value::Null, "{license}");

    // Lifecycle answers say so too.
    let suspended: Value = app
        .post(
            &format!("/v1/licenses/{id}/suspend"),
            &json!({"reason": "unpaid"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(suspended["status"], "suspended");
    assert_eq!(suspended["expires_at"], Value::Null, "{suspended}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_perpetual_license_with_an_end_is_refused_naming_the_field() {
    let app = spawn_app().await;
    for (extra, field) in [
        (json!({"valid_days": 30}), "valid_days"),
        (json!({"expires_at": "2099-01-01T00:00:00Z"}), "expires_at"),
    ] {
        let mut body = json!({"owner": "acme", "tier": "pro", "perpetual": true});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let response = app.post("/v1/licenses", &body).await;
        let problem = problem(response, 422).await;
        assert_eq!(problem["code"], "VAL_INVALID_FIELD", "{problem}");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{field}:")),
            "{problem}"
        );
    }
    // `"perpetual": false` is an ordinary license.
    let dated = app
        .issue_license_with(
            json!({"owner": "acme", "tier": "pro", "perpetual": false, "valid_days": 3}),
        )
        .await;
    assert!(dated["expires_at"].is_string(), "{dated}");
    assert_eq!(
        app.event_count().await,
        1,
        "only the dated license was written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewing_a_perpetual_license_is_a_conflict_with_its_own_code() {
    let app = spawn_app().await;
    let issued = issue_perpetual(&app, "basic").await;
    let id = issued["license_id"].as_str().unwrap();
    let response = app
        .post(
            &format!("/v1/licenses/{id}/renew"),
            &json!({"valid_days": 30}),
        )
        .await;
    let problem = problem(response, 409).await;
    assert_eq!(problem["code"], "BIZ_LICENSE_PERPETUAL", "{problem}");
    assert_eq!(
        app.events_of_type(&format!("license-{id}"), "LicenseRenewed")
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searching_by_expiry_never_finds_a_perpetual_license_and_the_admin_hub_says_never() {
    let app = spawn_app().await;
    let perpetual = issue_perpetual(&app, "enterprise").await;
    let dated = app
        .issue_license_with(json!({"owner": "acme", "tier": "pro", "valid_days": 30}))
        .await;
    let head = app.head().await;

    let page: Value = app
        .get_at("/v1/licenses?expires_before=2999-01-01T00:00:00Z", head)
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["license_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [dated["license_id"].as_str().unwrap()], "{page}");

    let all: Value = app
        .get_at("/v1/licenses?owner=acme", head)
        .await
        .json()
        .await
        .unwrap();
    let listed = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["license_id"] == perpetual["license_id"])
        .unwrap();
    assert_eq!(listed["expires_at"], Value::Null, "{listed}");

    let id = perpetual["license_id"].as_str().unwrap();
    let page = app
        .get(&format!("/admin/licenses/{id}?at={head}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(r#"<dd id="license-expires">never</dd>"#),
        "{page}"
    );
    assert!(
        !page.contains(r#"data-action="renew""#),
        "no renewal is offered"
    );
    let list = app.get("/admin/licenses").await.text().await.unwrap();
    assert!(list.contains("<td>never</td>"), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_whose_policy_forbids_perpetual_licenses_refuses_to_issue_one() {
    // The built-in policy forbids them on the free tier.
    let app = spawn_app().await;
    let response = app
        .post(
            "/v1/licenses",
            &json!({"owner": "acme", "tier": "free", "perpetual": true}),
        )
        .await;
    let refused = problem(response, 422).await;
    assert_eq!(refused["code"], "BIZ_PERPETUAL_NOT_ALLOWED", "{refused}");
    assert_eq!(refused["tier"], "free");
    assert_eq!(app.event_count().await, 0, "nothing is written");

    // Any tier can be set so in the policy file.
    let policy = policy_file(|text| {
        text.replacen(
            "validations_per_day = 1000000\n",
            "validations_per_day = 1000000\nallow_perpetual = false\n",
            1,
        )
    });
    let app = spawn_app_with(|args| args.policy_file = Some(policy)).await;
    let response = app
        .post(
            "/v1/licenses",
            &json!({"owner": "acme", "tier": "pro", "perpetual": true}),
        )
        .await;
    assert_eq!(
        problem(response, 422).await["code"],
        "BIZ_PERPETUAL_NOT_ALLOWED"
    );
    issue_perpetual(&app, "enterprise").await;
}
