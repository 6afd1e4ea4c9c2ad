//! `keyledger replay` rebuilds every projection from position 0 into identical read tables,
//! while the service keeps running.

use std::process::Command;

use crate::helpers::{TestApp, spawn_app};

async fn read_tables(app: &TestApp) -> Vec<String> {
    let client = app.pool.get().await.unwrap();
    let mut dumps = Vec::new();
    for (table, order) in [
        ("licenses", "license_id"),
        ("license_usage", "license_id, position"),
        ("license_validation", "key_hash"),
    ] {
        let row = client
            .query_one(
                &format!(
                    "SELECT coalesce(json_agg(t ORDER BY {order}), '[]')::text FROM {table} t"
                ),
                &[],
            )
            .await
            .unwrap();
        dumps.push(row.get(0));
    }
    dumps
}

/// Runs `keyledger replay` on the app's database, which must succeed; what it printed.
fn replay(app: &TestApp) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_keyledger"))
        .arg("replay")
        .env("DATABASE_URL", &app.database.url)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_rebuilds_identical_read_tables_while_the_service_runs() {
    let app = spawn_app().await;
    let mut last = 0;
    for n in 0..15 {
        let issued = app.issue_license().await;
        let key = issued.key.as_str();
        app.validate(key).await;
        last = app.validate(key).await.position.unwrap();
        if n % 3 == 0 {
            last = app.revoke(issued.license_id, "replay test").await.position;
            app.validate(key).await;
        }
    }
    let last = last.max(app.head().await);
    // Wait until both asynchronous projections have applied everything.
    let probe = app.issue_license().await;
    app.api()
        .at(last.max(probe.position))
        .licenses()
        .usage(probe.license_id, "")
        .await;
    let before = read_tables(&app).await;
    assert!(before[1].len() > 100, "usage was projected");

    let printed = replay(&app);
    for name in ["license_validation", "licenses", "license_usage"] {
        assert!(printed.contains(name), "{printed}");
    }

    assert_eq!(read_tables(&app).await, before);

    // The service goes on with the swapped-in tables.
    let after = app.issue_license().await;
    let validation = app.validate(&after.key).await;
    assert_eq!(validation.code, "VALID");
    let usage = app
        .api()
        .at(validation.position.unwrap())
        .licenses()
        .usage(after.license_id, "")
        .await;
    assert_eq!(usage.items.len(), 1);
}

/// `table.index` and `table.constraint` names of every projection's read tables.
async fn index_and_constraint_names(app: &TestApp) -> Vec<String> {
    let tables: Vec<String> = keyledger_projections::inline()
        .iter()
        .chain(keyledger_projections::asynchronous().iter())
        .flat_map(|p| p.tables().iter().map(|t| (*t).to_owned()))
        .collect();
    let client = app.pool.get().await.unwrap();
    client
        .query(
            "SELECT tablename || ' index ' || indexname FROM pg_indexes \
             WHERE schemaname = 'public' AND tablename = ANY($1) \
             UNION ALL \
             SELECT c.relname || ' constraint ' || k.conname \
             FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'public' AND c.relname = ANY($1) \
             ORDER BY 1",
            &[&tables],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuilt_projection_keeps_the_names_of_its_indexes_and_constraints() {
    let app = spawn_app().await;
    let issued = app.issue_license().await;
    app.validate(&issued.key).await;
    let before = index_and_constraint_names(&app).await;
    assert!(
        before
            .iter()
            .any(|n| n == "licenses index licenses_owner_idx"),
        "{before:?}"
    );

    replay(&app);
    assert_eq!(index_and_constraint_names(&app).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_status_names_inline_projections_and_the_lag_of_the_others() {
    let app = spawn_app().await;
    let issued = app.issue_license().await;
    app.validate(&issued.key).await;
    let output = Command::new(env!("CARGO_BIN_EXE_keyledger"))
        .args(["projections", "status"])
        .env("DATABASE_URL", &app.database.url)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(output.status.success());
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    let line = |name: &str| {
        printed
            .lines()
            .find(|line| line.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no line for {name}: {printed}"))
            .to_owned()
    };
    // Applied with every append: never behind, whatever its checkpoint says.
    assert!(line("license_validation").contains("inline"), "{printed}");
    assert!(line("licenses").contains(" lag "), "{printed}");
}
