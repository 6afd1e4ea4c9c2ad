//! Exporting the log as NDJSON and verifying the export without a database.

use std::io::Cursor;
use std::process::Command;

use keyledger_events::verify::{self, Finding, Head, Report};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{NewLicense, TestApp, Validate, problem, spawn_app};

/// A short history of every kind: issues, a validation with awkward metadata, a revoke.
async fn history(app: &TestApp) {
    let mut issued = Vec::new();
    for owner in ["acme", "globex", "initech"] {
        issued.push(app.issue_license_with(NewLicense::new(owner, "pro")).await);
    }
    let awkward = json!({"n": 1e300, "s": "a\nb", "u": "ünï"});
    app.licenses()
        .validate(&Validate {
            metadata: Some(awkward),
            ..Validate::key(&issued[0].key)
        })
        .await;
    app.revoke(issued[1].license_id, "refund").await;
}

async fn export(app: &TestApp, query: &str) -> String {
    let response = app.log().try_export(query).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/x-ndjson"
    );
    response.text().await.unwrap()
}

fn check(text: &str, expect_head: Option<&Head>) -> Report {
    verify::verify_export(
        Cursor::new(text.as_bytes()),
        verify::Chain::new(expect_head),
    )
    .unwrap()
}

fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::to_owned).collect()
}

fn joined(lines: &[String]) -> String {
    lines.iter().map(|line| format!("{line}\n")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_verifies_offline_and_any_edit_cut_or_gap_is_named() {
    let app = spawn_app().await;
    history(&app).await;
    let head = app.head().await;
    let text = export(&app, "").await;

    let report = check(&text, None);
    assert_eq!(report.finding, None, "an untouched export verifies");
    // Request records keep arriving, so the head may have moved on before the export started.
    assert!(
        report.events >= head,
        "the export holds every event up to the head: {} of {head}",
        report.events
    );
    let full_head = report.head.clone().unwrap();
    assert_eq!(full_head.position, report.events);

    // One character of one event's data changed: that event is named.
    let mut edited = lines(&text);
    let at = edited
        .iter()
        .position(|line| line.contains("globex"))
        .unwrap();
    edited[at] = edited[at].replacen("globex", "glebex", 1);
    let position = serde_json::from_str::<Value>(&edited[at]).unwrap()["position"]
        .as_i64()
        .unwrap();
    assert_eq!(
        check(&joined(&edited), None).finding,
        Some(Finding::Altered { position })
    );

    // The newest events cut off: only the auditor's head can tell.
    let all = lines(&text);
    let cut = joined(&all[..all.len() - 2]);
    assert_eq!(check(&cut, None).finding, None);
    assert_eq!(
        check(&cut, Some(&full_head)).finding,
        Some(Finding::HeadMismatch {
            expected: full_head.clone(),
            found: None
        })
    );
    assert_eq!(check(&text, Some(&full_head)).finding, None);

    // An event taken out of the middle.
    let mut gap = all.clone();
    gap.remove(1);
    assert_eq!(
        check(&joined(&gap), None).finding,
        Some(Finding::Missing {
            expected: 2,
            found: 3
        })
    );

    // A line that is not an event is named by its number.
    let mut garbled = all.clone();
    garbled[2] = "{\"position\": 3".to_owned();
    assert!(matches!(
        check(&joined(&garbled), None).finding,
        Some(Finding::Malformed { line: 3, .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_of_a_range_holds_exactly_that_range_and_a_backwards_range_is_refused() {
    let app = spawn_app().await;
    history(&app).await;
    let text = export(&app, "?after=2&until=4").await;
    let positions: Vec<i64> = text
        .lines()
        .map(|line| {
            serde_json::from_str::<Value>(line).unwrap()["position"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(positions, [3, 4]);

    let body = problem(app.log().try_export("?after=4&until=2").await, 400).await;
    assert_eq!(body["code"], "VAL_INVALID_PARAMETER");
    let body = problem(app.log().try_export("?after=-1").await, 400).await;
    assert_eq!(body["code"], "VAL_INVALID_PARAMETER");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_exports_the_log_and_verifies_the_file_without_a_database() {
    let app = spawn_app().await;
    history(&app).await;
    let file = std::env::temp_dir().join(format!("keyledger-export-{}.ndjson", Uuid::new_v4()));
    let file_arg = file.to_str().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_keyledger"))
        .args(["export", "--out", file_arg])
        .env("DATABASE_URL", &app.database.url)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = std::fs::read_to_string(&file).unwrap();
    let last = check(&text, None).head.unwrap().position;
    // A range that ends before it starts is refused, as over HTTP.
    let backwards = Command::new(env!("CARGO_BIN_EXE_keyledger"))
        .args(["export", "--out", file_arg, "--after", "4", "--until", "2"])
        .env("DATABASE_URL", &app.database.url)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(!backwards.status.success());
    assert!(String::from_utf8_lossy(&backwards.stderr).contains("--until must not be before"));
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        text,
        "the file is untouched"
    );
    assert_eq!(
        text,
        export(&app, &format!("?until={last}")).await,
        "the CLI writes what the API serves"
    );

    // No database: the URL points at a server that does not exist.
    let verify = |expect_head: Option<String>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_keyledger"));
        command
            .args(["verify", "--file", file_arg])
            .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
            .env("RUST_LOG", "warn");
        if let Some(head) = expect_head {
            command.args(["--expect-head", &head]);
        }
        command.output().unwrap()
    };
    let output = verify(None);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.starts_with("ok: "), "{stdout}");

    let head = check(&text, None).head.unwrap();
    let later = Head {
        position: head.position + 1,
        hash: head.hash.clone(),
    };
    let output = verify(Some(later.to_string()));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(!output.status.success(), "{stdout}");
    assert!(stdout.contains("cut off"), "{stdout}");
    let _ = std::fs::remove_file(&file);
}
