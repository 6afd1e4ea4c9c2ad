//! Perpetual licenses through the HTTP API: issued with `"perpetual": true`, they never expire,
//! refuse renewal, stay out of `expires_before` searches, and a tier's policy may forbid them.

use serde_json::{Value, json};

use crate::helpers::{
    Issued, NewLicense, TestApp, Validate, expect, policy_file, problem, query, spawn_app,
    spawn_app_with,
};

/// Issues a perpetual license to acme; the 201 body as it came (`expires_at` is `null`).
async fn issue_perpetual(app: &TestApp, tier: &str) -> Value {
    let response = app
        .licenses()
        .try_issue(&NewLicense::new("acme", tier).perpetual())
        .await;
    expect(response, 201, "issuing a perpetual license").await
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
    let issued: Issued = serde_json::from_value(issued).unwrap();
    let licenses = app.licenses();

    // Two hundred years on, it is still valid.
    app.clock.advance(chrono::Duration::days(365 * 200));
    let validation: Value = expect(
        licenses.try_validate(&Validate::key(&issued.key)).await,
        200,
        "validating",
    )
    .await;
    assert_eq!(validation["code"], "VALID", "{validation}");
    assert_eq!(validation["expires_at"], Value::Null, "{validation}");
    assert!(validation.as_object().unwrap().contains_key("expires_at"));

    let license = app
        .api()
        .at(issued.position)
        .licenses()
        .get(issued.license_id)
        .await;
    assert_eq!(license.expires_at, None, "{license:?}");

    // Lifecycle answers say so too.
    let suspended: Value = licenses
        .try_suspend(issued.license_id, "unpaid")
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
        let response = app.licenses().try_issue(&body).await;
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
        .issue_license_with(NewLicense {
            perpetual: Some(false),
            ..NewLicense::new("acme", "pro").valid_days(3)
        })
        .await;
    assert!(dated.expires_at.is_some(), "{dated:?}");
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
    let response = app.licenses().try_renew(id, 30).await;
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
        .issue_license_with(NewLicense::new("acme", "pro").valid_days(30))
        .await;
    let head = app.head().await;
    let licenses = app.api().at(head).licenses();

    let page = licenses
        .search(&query(&[(
            "expires_before",
            Some("2999-01-01T00:00:00Z".into()),
        )]))
        .await;
    let ids: Vec<_> = page.items.iter().map(|l| l.license_id).collect();
    assert_eq!(ids, [dated.license_id], "{page:?}");

    let all = licenses.search("?owner=acme").await;
    let listed = all
        .items
        .iter()
        .find(|l| l.license_id.to_string() == perpetual["license_id"])
        .unwrap();
    assert_eq!(listed.expires_at, None, "{listed:?}");

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
        .licenses()
        .try_issue(&NewLicense::new("acme", "free").perpetual())
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
        .licenses()
        .try_issue(&NewLicense::new("acme", "pro").perpetual())
        .await;
    assert_eq!(
        problem(response, 422).await["code"],
        "BIZ_PERPETUAL_NOT_ALLOWED"
    );
    issue_perpetual(&app, "enterprise").await;
}
