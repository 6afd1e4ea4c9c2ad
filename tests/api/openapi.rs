//! The OpenAPI description: it describes every route the service serves and no other, the
//! service serves it, and what it promises about a route holds for the real answers.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

fn described(doc: &Value) -> BTreeSet<String> {
    let mut routes = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "patch", "delete", "put"].contains(&method.as_str()) {
                routes.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    routes
}

async fn served_document(app: &TestApp) -> Value {
    let response = reqwest::get(app.url("/openapi.json")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    response.json().await.unwrap()
}

#[tokio::test]
async fn the_description_names_every_route_the_service_serves_and_no_other() {
    let app = spawn_app().await;
    let doc = served_document(&app).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let served: BTreeSet<String> = app.routes.iter().map(|r| r.to_string()).collect();
    let described = described(&doc);
    let undescribed: Vec<&String> = served.difference(&described).collect();
    assert!(
        undescribed.is_empty(),
        "routes the OpenAPI description does not describe: {undescribed:?}"
    );
    let unserved: Vec<&String> = described.difference(&served).collect();
    assert!(
        unserved.is_empty(),
        "the description names routes the service does not serve: {unserved:?}"
    );
}

#[tokio::test]
async fn the_cli_prints_the_document_the_service_serves() {
    let app = spawn_app().await;
    let served = served_document(&app).await;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_keyledger"))
        .arg("openapi")
        .output()
        .unwrap();
    assert!(output.status.success());
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(printed, served);
}

#[tokio::test]
async fn every_operation_has_a_unique_id_security_and_problem_answers() {
    let app = spawn_app().await;
    let doc = served_document(&app).await;
    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let route = format!("{} {path}", method.to_uppercase());
            let id = operation["operationId"].as_str().unwrap().to_owned();
            assert!(ids.insert(id.clone()), "{route}: operation id {id} twice");
            assert!(
                operation["security"].is_array(),
                "{route} does not say who may call it"
            );
            let responses = operation["responses"].as_object().unwrap();
            assert!(
                responses
                    .keys()
                    .any(|s| s.starts_with('2') || s.starts_with('3')),
                "{route} has no success answer (or redirect)"
            );
            for status in ["429", "503"] {
                let problem = &responses[status]["content"]["application/problem+json"];
                assert!(
                    problem["schema"]["allOf"][0]["$ref"] == "#/components/schemas/Problem",
                    "{route} {status} is not a problem: {problem}"
                );
                assert!(
                    responses[status]["headers"]["Retry-After"].is_object(),
                    "{route} {status} does not announce Retry-After"
                );
            }
        }
    }
}

#[tokio::test]
async fn refused_unknown_fields_are_closed_in_the_schema_and_codes_are_narrowed() {
    let app = spawn_app().await;
    let doc = served_document(&app).await;
    let issue = &doc["components"]["schemas"]["IssueRequest"];
    assert_eq!(issue["additionalProperties"], json!(false));
    assert_eq!(issue["properties"]["owner"]["maxLength"], json!(256));
    let revoke = &doc["paths"]["/v1/licenses/{id}/revoke"]["post"];
    let conflict = &revoke["responses"]["409"]["content"]["application/problem+json"]["schema"];
    let codes: BTreeSet<&str> = conflict["allOf"][1]["properties"]["code"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(codes.contains("BIZ_LICENSE_REVOKED"), "{codes:?}");
    assert!(codes.contains("BIZ_IDEMPOTENCY_IN_FLIGHT"), "{codes:?}");
    // Following the issue route's link to the revoke route works with the id it names.
    let link = &doc["paths"]["/v1/licenses"]["post"]["responses"]["201"]["links"]["post_v1_licenses_id_revoke"];
    assert_eq!(link["operationId"], "post_v1_licenses_id_revoke");
    assert_eq!(link["parameters"]["id"], "$response.body#/license_id");
    assert_eq!(revoke["operationId"], "post_v1_licenses_id_revoke");
}

#[tokio::test]
async fn the_hub_renders_the_reference_from_the_description() {
    let app = spawn_app().await;
    let response = reqwest::get(app.url("/admin/api")).await.unwrap();
    assert_eq!(response.status(), 200);
    let page = response.text().await.unwrap();
    for expected in [
        "API reference",
        r#"id="post_v1_licenses_id_revoke""#,
        "/v1/licenses/{id}/revoke",
        "BIZ_LICENSE_REVOKED",
        r#"href="/openapi.json""#,
        r#"id="schema-IssueRequest""#,
    ] {
        assert!(page.contains(expected), "the page lacks {expected}");
    }
}

/// A fuzzer finding: a consistency position no command has handed out waited out the whole
/// consistency timeout and answered 503; it is refused at once instead.
#[tokio::test]
async fn a_consistency_position_past_the_head_is_refused_at_once() {
    let app = spawn_app().await;
    let license = app.issue_license().await;
    let started = std::time::Instant::now();
    let response = app
        .api()
        .at(9_223_372_036_854_775_806)
        .licenses()
        .try_get(license.license_id)
        .await;
    let problem = crate::helpers::problem(response, 400).await;
    assert_eq!(problem["code"], "VAL_INVALID_PARAMETER");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "refused only after {:?}",
        started.elapsed()
    );
    // A position that was handed out still reads.
    let response = app
        .api()
        .at(license.position)
        .licenses()
        .try_get(license.license_id)
        .await;
    assert_eq!(response.status(), 200);
}

/// A contract finding: the login form's query string was read by a plain extractor, whose
/// refusal was a text/plain 400 instead of a problem.
#[tokio::test]
async fn an_unreadable_login_query_is_a_problem() {
    let app = spawn_app().await;
    let response = reqwest::get(app.url("/admin/login?next=/admin&next=/admin/events"))
        .await
        .unwrap();
    assert_eq!(
        crate::helpers::problem(response, 400).await["code"],
        "VAL_INVALID_PARAMETER"
    );
}
