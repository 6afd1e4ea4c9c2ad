//! Two service processes on one database: each judges validations against its own in-memory
//! view, and still answers as if there were one.

use serde_json::{Value, json};

use crate::helpers::{ServiceProcess, TestDatabase, admin_client, policy_file};

async fn post(node: &ServiceProcess, path: &str, body: &Value) -> reqwest::Response {
    admin_client()
        .post(format!("{}{path}", node.address))
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn issue(node: &ServiceProcess, tier: &str) -> (String, String) {
    let response = post(
        node,
        "/v1/licenses",
        &json!({"owner": "acme", "tier": tier}),
    )
    .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    (
        body["license_id"].as_str().unwrap().to_owned(),
        body["key"].as_str().unwrap().to_owned(),
    )
}

async fn validate(node: &ServiceProcess, key: &str) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/licenses/validate", node.address))
        .json(&json!({"key": key}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validation_on_one_node_right_after_a_revoke_on_the_other_answers_revoked() {
    let database = TestDatabase::create().await;
    let first = ServiceProcess::start(&database.url, &[]).await;
    let second = ServiceProcess::start(&database.url, &[]).await;
    for round in 0..100 {
        // Issued on the first node, known to the second only through the log.
        let (license_id, key) = issue(&first, "pro").await;
        let before = validate(&second, &key).await;
        assert_eq!(
            before["code"], "VALID",
            "round {round}: a fresh license validates"
        );
        let revoked = post(
            &first,
            &format!("/v1/licenses/{license_id}/revoke"),
            &json!({"reason": "chargeback"}),
        )
        .await;
        assert_eq!(revoked.status(), 200, "round {round}");
        let after = validate(&second, &key).await;
        assert_eq!(
            after["code"], "REVOKED",
            "round {round}: the other node validated a license revoked before the request"
        );
        assert_eq!(after["valid"], false);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_quota_of_25_admits_exactly_25_of_60_concurrent_validations_across_two_nodes() {
    let database = TestDatabase::create().await;
    let policy = policy_file(|text| {
        text.replacen(
            "validations_per_day = 1000\n",
            "validations_per_day = 25\n",
            1,
        )
    });
    let policy = policy.to_str().unwrap().to_owned();
    let env = [("POLICY_FILE", policy.as_str())];
    let first = ServiceProcess::start(&database.url, &env).await;
    let second = ServiceProcess::start(&database.url, &env).await;
    let (_, key) = issue(&first, "free").await;

    let nodes = [first.address.clone(), second.address.clone()];
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..60 {
        let (address, key) = (nodes[i % 2].clone(), key.clone());
        calls.spawn(async move {
            let response = reqwest::Client::new()
                .post(format!("{address}/v1/licenses/validate"))
                .json(&json!({"key": key}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            let body: Value = response.json().await.unwrap();
            body["code"].as_str().unwrap().to_owned()
        });
    }
    let mut codes = Vec::new();
    while let Some(code) = calls.join_next().await {
        codes.push(code.unwrap());
    }
    let valid = codes.iter().filter(|c| *c == "VALID").count();
    let exceeded = codes.iter().filter(|c| *c == "QUOTA_EXCEEDED").count();
    assert_eq!(
        (valid, exceeded),
        (25, 35),
        "a quota of 25 a day admits exactly 25: {codes:?}"
    );
    // Both nodes agree afterwards.
    for node in [&first, &second] {
        assert_eq!(validate(node, &key).await["code"], "QUOTA_EXCEEDED");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_follows_licenses_issued_on_another_without_being_asked() {
    let database = TestDatabase::create().await;
    let first = ServiceProcess::start(&database.url, &[]).await;
    let second = ServiceProcess::start(&database.url, &[]).await;
    for _ in 0..3 {
        issue(&first, "pro").await;
    }
    // No request reaches the second node but its metrics: its view follows the log.
    let metrics = format!("{}/metrics", second.address);
    crate::helpers::eventually(
        std::time::Duration::from_secs(10),
        "the second node's validation view to hold the three licenses",
        || {
            let request = reqwest::get(metrics.clone());
            async move {
                let text = request.await.ok()?.text().await.ok()?;
                text.lines()
                    .any(|line| line == "keyledger_validation_view_licenses 3")
                    .then_some(())
            }
        },
    )
    .await;
}
