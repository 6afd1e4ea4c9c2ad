//! `keyledger import-legacy` on the legacy service's sample database.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::helpers::{TestDatabase, spawn_app_on};

fn sample() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/legacy/licenses.db")
}

fn import(database: &TestDatabase, extra: &[&str]) -> String {
    let sample = sample();
    let mut args = vec!["import-legacy", "--sqlite", sample.to_str().unwrap()];
    args.extend_from_slice(extra);
    let output = Command::new(env!("CARGO_BIN_EXE_keyledger"))
        .args(&args)
        .env("DATABASE_URL", &database.url)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A legacy key with the given status whose expiry is past `after` (or any, when `None`).
fn legacy_key(status: &str, expiring_after: &str) -> String {
    let connection = rusqlite::Connection::open(sample()).unwrap();
    connection
        .query_row(
            "SELECT license_key FROM licenses WHERE status = ?1 AND substr(expiry_date, 1, 10) > ?2 \
             ORDER BY id LIMIT 1",
            [status, expiring_after],
            |row| row.get(0),
        )
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importing_twice_appends_once_and_legacy_keys_keep_working() {
    let database = TestDatabase::create().await;

    let dry = import(&database, &["--dry-run"]);
    assert!(
        dry.contains("read 60 licenses and 58 installations"),
        "{dry}"
    );
    assert!(
        dry.contains("would import 60 licenses with 58 installations"),
        "{dry}"
    );

    let first = import(&database, &[]);
    assert!(
        first.contains("imported 60 licenses with 58 installations"),
        "{first}"
    );
    let second = import(&database, &[]);
    assert!(second.contains("(0 new events)"), "{second}");
    assert!(
        second.contains("60 licenses were already imported"),
        "{second}"
    );

    let app = spawn_app_on(database, |_| {}).await;
    let active = legacy_key("active", "2027-01-01");
    let validation = app.validate(&active).await;
    assert_eq!(validation["code"], "VALID", "{active}");
    assert_eq!(validation["tier"], "basic");
    let revoked = legacy_key("revoked", "2000-01-01");
    assert_eq!(app.validate(&revoked).await["code"], "REVOKED");

    // Imported licenses are searchable, carry their legacy id, and never their key.
    let head = app.head().await;
    let page: Value = app
        .get_at("/v1/licenses?owner=USER0@example.org", head)
        .await
        .json()
        .await
        .unwrap();
    let items = page["items"].as_array().unwrap();
    assert!(!items.is_empty());
    assert!(items.iter().all(|l| l["legacy_id"].as_i64().is_some()));
    assert!(!page.to_string().contains(&active));
    let client = app.pool.get().await.unwrap();
    let plaintext: i64 = client
        .query_one(
            "SELECT count(*) FROM events WHERE data::text LIKE '%' || $1 || '%'",
            &[&active],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(plaintext, 0, "the log holds only the key's hash");
}
