//! Signed license certificates: checked offline with the published keys.

use std::process::Command;

use keyledger_events::audit::{KeySet, verify_certificate};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{NewLicense, TestApp, problem, spawn_app};

async fn published_keys(app: &TestApp) -> KeySet {
    app.anonymous().log().try_keys().await.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_verifies_with_the_published_key_and_not_after_one_byte_changes() {
    let app = spawn_app().await;
    let issued = app
        .issue_license_with(NewLicense::new("acme", "pro").valid_days(90))
        .await;
    let license_id = issued.license_id;
    let key = issued.key.as_str();
    // The license holder asks for a certificate for its installation, with its own key.
    let holder = app.as_license(key).licenses();
    holder.activate(license_id, "host-1").await;
    let body = holder
        .certify(
            license_id,
            &json!({"installation_id": "host-1", "ttl_days": 7}),
        )
        .await;
    let certificate = body.certificate.as_str();

    let keys = published_keys(&app).await;
    let claims = verify_certificate(certificate, &keys).unwrap();
    assert_eq!(claims.license_id, license_id);
    assert_eq!(claims.tier, "pro");
    assert_eq!(claims.installation_id.as_deref(), Some("host-1"));
    assert!(
        claims.entitlements.iter().any(|e| e == "core"),
        "{claims:?}"
    );
    assert_eq!(
        claims.valid_until - claims.issued_at,
        chrono::Duration::days(7)
    );
    assert_eq!(claims.exp, claims.valid_until.timestamp());
    assert_eq!(body.kid, keys.keys[0].kid);
    assert!(
        !certificate.contains(key),
        "the certificate never carries the key"
    );

    // One byte changed anywhere and it no longer verifies.
    for index in [3, certificate.len() / 2, certificate.len() - 5] {
        let mut bytes = certificate.as_bytes().to_vec();
        bytes[index] = if bytes[index] == b'x' { b'y' } else { b'x' };
        let changed = String::from_utf8(bytes).unwrap();
        assert!(
            verify_certificate(&changed, &keys).is_err(),
            "byte {index} changed still verifies"
        );
    }

    // The hand-out is in the license's history.
    let history: Value = app
        .licenses()
        .try_history(license_id, "")
        .await
        .json()
        .await
        .unwrap();
    assert!(
        history.to_string().contains("CertificateIssued"),
        "{history}"
    );

    // The CLI checks it with the keys file.
    let dir = std::env::temp_dir();
    let id = Uuid::new_v4();
    let keys_file = dir.join(format!("keyledger-keys-{id}.json"));
    let certificate_file = dir.join(format!("keyledger-certificate-{id}.jwt"));
    std::fs::write(&keys_file, serde_json::to_vec(&keys).unwrap()).unwrap();
    let run = |file: &std::path::Path| {
        let output = Command::new(env!("CARGO_BIN_EXE_keyledger"))
            .args(["certificate", "verify"])
            .arg(file)
            .arg("--keys")
            .arg(&keys_file)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    std::fs::write(&certificate_file, certificate).unwrap();
    let (ok, out) = run(&certificate_file);
    assert!(ok, "{out}");
    assert!(out.contains(&license_id.to_string()), "{out}");
    std::fs::write(&certificate_file, certificate.replacen('.', "x.", 1)).unwrap();
    let (ok, out) = run(&certificate_file);
    assert!(!ok, "{out}");
    let _ = std::fs::remove_file(keys_file);
    let _ = std::fs::remove_file(certificate_file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_suspended_or_expired_license_gets_no_certificate() {
    let app = spawn_app().await;
    let licenses = app.licenses();
    let certify = |id, body: Value| {
        let licenses = &licenses;
        async move { licenses.try_certify(id, &body).await }
    };

    let revoked_id = app.issue_license().await.license_id;
    app.revoke(revoked_id, "refund").await;
    let body = problem(certify(revoked_id, json!({})).await, 409).await;
    assert_eq!(body["code"], "BIZ_LICENSE_REVOKED");

    let suspended_id = app.issue_license().await.license_id;
    licenses.suspend(suspended_id, "unpaid").await;
    let body = problem(certify(suspended_id, json!({})).await, 409).await;
    assert_eq!(body["code"], "BIZ_LICENSE_SUSPENDED");

    let expiring_id = app
        .issue_license_with(NewLicense::new("acme", "pro").valid_days(1))
        .await
        .license_id;
    // Valid now: a certificate never outlives the license.
    let body = licenses
        .certify(expiring_id, &json!({"ttl_days": 30}))
        .await;
    let keys = published_keys(&app).await;
    let claims = verify_certificate(&body.certificate, &keys).unwrap();
    assert_eq!(Some(claims.valid_until), claims.expires_at);
    app.clock.advance(chrono::Duration::days(2));
    let body = problem(certify(expiring_id, json!({})).await, 409).await;
    assert_eq!(body["code"], "BIZ_LICENSE_EXPIRED");

    // An installation the license does not have, and a validity out of range.
    let body = problem(
        certify(suspended_id, json!({"installation_id": "nowhere"})).await,
        409,
    )
    .await;
    assert_eq!(body["code"], "BIZ_LICENSE_SUSPENDED");
    let active_id = app.issue_license().await.license_id;
    let body = problem(
        certify(active_id, json!({"installation_id": "nowhere"})).await,
        404,
    )
    .await;
    assert_eq!(body["code"], "RES_INSTALLATION_NOT_FOUND");
    for ttl in [0, 366, -1] {
        let body = problem(certify(active_id, json!({"ttl_days": ttl})).await, 422).await;
        assert_eq!(body["code"], "VAL_INVALID_FIELD", "ttl_days {ttl}");
    }
    let body = problem(certify(Uuid::new_v4(), json!({})).await, 404).await;
    assert_eq!(body["code"], "RES_LICENSE_NOT_FOUND");
    let response = certify(active_id, json!({"ttl_days": "thirty"})).await;
    assert!(response.status().is_client_error());
    let body: Value = response.json().await.unwrap();
    assert!(body["code"].as_str().unwrap().starts_with("VAL_"), "{body}");
    let events: Value = licenses
        .try_history(active_id, "")
        .await
        .json()
        .await
        .unwrap();
    assert!(
        !events.to_string().contains("CertificateIssued"),
        "a refused certificate writes nothing"
    );
}
