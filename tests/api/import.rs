//! `keyledger import-legacy` on legacy SQLite databases the tests build themselves, with the
//! legacy service's schema: perpetual (NULL expiry) rows, emails in differing case,
//! installations, and rows that cannot be imported.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use keyledger::tools::import::{ImportError, ImportOptions, Summary, import_file};
use keyledger_events::license::Tier;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::helpers::{License, LicensePage, TestDatabase, Validate, expect, problem, spawn_app_on};

/// A legacy database, as the legacy service created it, in a file removed on drop.
struct LegacyDb {
    path: PathBuf,
    connection: rusqlite::Connection,
}

/// The legacy service's schema, as its databases hold it.
const LEGACY_SCHEMA: &str = "
CREATE TABLE licenses (id INTEGER PRIMARY KEY AUTOINCREMENT, email TEXT NOT NULL, license_key TEXT NOT NULL UNIQUE,
  expiry_date TEXT, created_at TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'active');
CREATE TABLE installations (id INTEGER PRIMARY KEY AUTOINCREMENT, email TEXT NOT NULL, installation_id TEXT NOT NULL,
  activated_at TEXT NOT NULL, last_seen TEXT);
CREATE INDEX idx_licenses_email ON licenses(email);
CREATE INDEX idx_installations_email ON installations(email);
CREATE INDEX idx_installations_id ON installations(installation_id);
";

impl LegacyDb {
    fn new() -> LegacyDb {
        let path = std::env::temp_dir().join(format!("keyledger-legacy-{}.db", Uuid::new_v4()));
        let connection = rusqlite::Connection::open(&path).unwrap();
        connection.execute_batch(LEGACY_SCHEMA).unwrap();
        LegacyDb { path, connection }
    }

    /// Adds a license row; returns its id.
    fn license(
        &self,
        email: &str,
        key: &str,
        expiry: Option<&str>,
        created_at: &str,
        status: &str,
    ) -> i64 {
        self.connection
            .execute(
                "INSERT INTO licenses (email, license_key, expiry_date, created_at, status) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![email, key, expiry, created_at, status],
            )
            .unwrap();
        self.connection.last_insert_rowid()
    }

    /// Adds an installation row; returns its id.
    fn installation(
        &self,
        email: &str,
        installation_id: &str,
        activated_at: &str,
        last_seen: Option<&str>,
    ) -> i64 {
        self.connection
            .execute(
                "INSERT INTO installations (email, installation_id, activated_at, last_seen) \
                 VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![email, installation_id, activated_at, last_seen],
            )
            .unwrap();
        self.connection.last_insert_rowid()
    }
}

impl Drop for LegacyDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A legacy key (`XXXXX-XXXXX-XXXXX-XXXXX-XXXXX`) derived from `seed`.
fn legacy_key(seed: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let digest = Sha256::digest(seed.as_bytes());
    let chars: Vec<char> = digest
        .iter()
        .take(25)
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect();
    chars
        .chunks(5)
        .map(|group| group.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

/// Runs the `keyledger import-legacy` binary on `legacy` into `database`.
fn run_import(database: &TestDatabase, legacy: &LegacyDb, extra: &[&str]) -> Output {
    let mut args = vec!["import-legacy", "--sqlite", legacy.path.to_str().unwrap()];
    args.extend_from_slice(extra);
    Command::new(env!("CARGO_BIN_EXE_keyledger"))
        .args(&args)
        .env("DATABASE_URL", &database.url)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

/// The import's summary, after checking that it succeeded.
fn import(database: &TestDatabase, legacy: &LegacyDb, extra: &[&str]) -> String {
    let output = run_import(database, legacy, extra);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The summary's `rows:` line as (imported, already present, skipped, read); asserts that the
/// first three add up to the last.
fn row_counts(summary: &str) -> (usize, usize, usize, usize) {
    let line = summary
        .lines()
        .find(|l| l.starts_with("rows: "))
        .unwrap_or_else(|| panic!("no rows line in {summary}"));
    let numbers: Vec<usize> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    let [imported, present, skipped, read] = numbers[..] else {
        panic!("unexpected rows line: {line}");
    };
    assert_eq!(imported + present + skipped, read, "{line}");
    (imported, present, skipped, read)
}

/// A legacy database like the legacy service's: several licenses per email, emails whose case
/// differs between a license and its installations, licenses without an expiry date, and each
/// legacy status.
/// Returns the database and each license row's key, in row order.
fn sample() -> (LegacyDb, Vec<String>) {
    let legacy = LegacyDb::new();
    let mut keys = Vec::new();
    let rows: [(&str, Option<&str>, &str, &str); 8] = [
        (
            "user0@example.org",
            Some("2099-06-08T05:00:00"),
            "2025-06-08 05:00:00",
            "active",
        ),
        (
            "user0@example.org",
            Some("2025-06-03T22:00:00"),
            "2025-05-04 22:00:00",
            "active",
        ),
        ("User1@Example.com", None, "2025-04-22 06:00:00", "active"),
        (
            "user2@example.io",
            Some("2099-04-22"),
            "2025-04-22 06:00:00",
            "revoked",
        ),
        (
            "user3@example.io",
            Some("2025-07-07"),
            "2025-06-07 11:00:00",
            "expired",
        ),
        ("user4@example.io", None, "2025-03-07 08:00:00", "revoked"),
        ("USER5@EXAMPLE.ORG", None, "2025-08-01 23:00:00", "active"),
        (
            "user6@example.com",
            Some("2099-01-01"),
            "2025-01-01",
            "Active",
        ),
    ];
    for (n, (email, expiry, created_at, status)) in rows.into_iter().enumerate() {
        let key = legacy_key(&format!("sample-{n}"));
        legacy.license(email, &key, expiry, created_at, status);
        keys.push(key);
    }
    for (email, id, at, seen) in [
        (
            "user0@example.org",
            "ae97ba94-d0ed-a82f",
            "2025-06-09T12:00:00",
            Some("2025-07-03T20:00:00"),
        ),
        (
            "USER0@example.org",
            "301850c5-a38f-d547",
            "2025-05-10T04:00:00",
            None,
        ),
        (
            "user1@example.com",
            "72fdf202-2a96-fb1a",
            "2025-06-11T16:00:00",
            Some("2025-07-18T20:00:00"),
        ),
        (
            "user5@Example.org",
            "6472f1a3-8f2c-6ec8",
            "2025-09-01T15:00:00",
            Some("2025-10-08T22:00:00"),
        ),
        (
            "user5@example.org",
            "fa529ba3-fe3b-fada",
            "2025-09-02 06:00:00",
            Some("2025-10-04 04:00:00"),
        ),
    ] {
        legacy.installation(email, id, at, seen);
    }
    (legacy, keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importing_twice_appends_once_and_legacy_keys_keep_working() {
    let database = TestDatabase::create().await;
    let (legacy, keys) = sample();

    let dry = import(&database, &legacy, &["--dry-run"]);
    assert!(
        dry.contains("read 13 rows: 8 licenses and 5 installations"),
        "{dry}"
    );
    assert_eq!(row_counts(&dry), (13, 0, 0, 13), "{dry}");

    let first = import(&database, &legacy, &[]);
    assert!(
        first.contains("licenses: imported 8, already present 0, skipped 0"),
        "{first}"
    );
    assert!(
        first.contains("installations: imported 5, already present 0, skipped 0"),
        "{first}"
    );
    assert_eq!(row_counts(&first), (13, 0, 0, 13), "{first}");

    let second = import(&database, &legacy, &[]);
    assert!(second.contains("appended 0 new events"), "{second}");
    assert_eq!(row_counts(&second), (0, 13, 0, 13), "{second}");

    let app = spawn_app_on(database, |_| {}).await;
    let active = &keys[0];
    let validation = app.validate(active).await;
    assert_eq!(validation.code, "VALID", "{validation:?}");
    assert_eq!(validation.tier.as_deref(), Some("basic"));
    let revoked = &keys[3];
    assert_eq!(app.validate(revoked).await.code, "REVOKED");
    let expired = &keys[4];
    assert_eq!(app.validate(expired).await.code, "EXPIRED");

    // Imported licenses are searchable, carry their legacy id, and never their key.
    let head = app.head().await;
    let page = app
        .api()
        .at(head)
        .licenses()
        .try_search("?owner=USER0@example.org")
        .await
        .text()
        .await
        .unwrap();
    assert!(!page.contains(active.as_str()));
    let page: LicensePage = serde_json::from_str(&page).unwrap();
    assert_eq!(page.items.len(), 2, "{page:?}");
    assert!(page.items.iter().all(|l| l.legacy_id.is_some()));
    let client = app.pool.get().await.unwrap();
    let plaintext: i64 = client
        .query_one(
            "SELECT count(*) FROM events WHERE data::text LIKE '%' || $1 || '%'",
            &[active],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(plaintext, 0, "the log holds only the key's hash");
}

/// The license of a legacy key, looked up as support staff do.
async fn license_of(app: &crate::helpers::TestApp, key: &str) -> License {
    let head = app.head().await;
    let response = app.api().at(head).licenses().try_by_key_header(key).await;
    expect(response, 200, "finding a license by key").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_license_without_an_expiry_date_is_imported_as_perpetual() {
    let database = TestDatabase::create().await;
    let legacy = LegacyDb::new();
    let active = legacy_key("perpetual-active");
    let revoked = legacy_key("perpetual-revoked");
    let expired = legacy_key("perpetual-expired");
    legacy.license(
        "ann@example.org",
        &active,
        None,
        "2020-01-01 00:00:00",
        "active",
    );
    legacy.license(
        "bob@example.org",
        &revoked,
        None,
        "2020-01-01 00:00:00",
        "revoked",
    );
    legacy.license(
        "cy@example.org",
        &expired,
        None,
        "2020-01-01 00:00:00",
        "expired",
    );

    let summary = import(&database, &legacy, &[]);
    assert_eq!(row_counts(&summary), (3, 0, 0, 3), "{summary}");

    let app = spawn_app_on(database, |_| {}).await;
    // Far in the future, the license is still valid and still has no end.
    app.clock.advance(chrono::Duration::days(365 * 150));
    let validation: Value = app
        .licenses()
        .try_validate(&Validate::key(&active))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(validation["code"], "VALID", "{validation}");
    assert_eq!(validation["expires_at"], Value::Null, "{validation}");
    let license = license_of(&app, &active).await;
    assert_eq!(license.expires_at, None, "{license:?}");
    // Its legacy status still counts.
    assert_eq!(app.validate(&revoked).await.code, "REVOKED");
    // Marked expired without a date: it expired at the import.
    assert_eq!(app.validate(&expired).await.code, "EXPIRED");

    let renewed = app.licenses().try_renew(license.license_id, 30).await;
    let body = problem(renewed, 409).await;
    assert_eq!(body["code"], "BIZ_LICENSE_PERPETUAL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installations_find_their_license_whatever_the_case_of_the_email() {
    let database = TestDatabase::create().await;
    let legacy = LegacyDb::new();
    let key = legacy_key("mixed-case");
    legacy.license(
        "Dana.Smith@Example.COM",
        &key,
        Some("2099-01-01"),
        "2025-01-01 00:00:00",
        "active",
    );
    legacy.installation(
        "dana.smith@example.com",
        "m-lower",
        "2025-02-01T00:00:00",
        None,
    );
    legacy.installation(
        "DANA.SMITH@EXAMPLE.COM",
        "m-upper",
        "2025-02-02T00:00:00",
        None,
    );
    legacy.installation(" dana.SMITH@example.com ", "m-spaced", "2025-02-03", None);

    let summary = import(&database, &legacy, &[]);
    assert!(
        summary.contains("installations: imported 3, already present 0, skipped 0"),
        "{summary}"
    );

    // Installations last heard from in 2025 are dead under the default heartbeat TTL, and the
    // heartbeat job would free them whenever its first run beats the read below.
    let app = spawn_app_on(database, |args| {
        args.heartbeat_ttl = Duration::from_secs(50 * 365 * 24 * 3600);
    })
    .await;
    let license = license_of(&app, &key).await;
    let page = app
        .api()
        .at(app.head().await)
        .licenses()
        .installations(license.license_id)
        .await;
    let mut ids: Vec<&str> = page
        .items
        .iter()
        .map(|i| i.installation_id.as_str())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["m-lower", "m-spaced", "m-upper"], "{page:?}");
}

/// A legacy database with one good license and rows that cannot be imported.
fn with_bad_rows() -> (LegacyDb, String, String) {
    let legacy = LegacyDb::new();
    let good = legacy_key("good");
    let bad = legacy_key("bad");
    legacy.license(
        "ann@example.org",
        &good,
        None,
        "2025-01-01 00:00:00",
        "active",
    );
    legacy.license(
        "bob@example.org",
        &bad,
        Some("31/12/2026"),
        "2025-01-01 00:00:00",
        "active",
    );
    legacy.installation("ann@example.org", "m1", "2025-02-01T00:00:00", None);
    legacy.installation(
        "ann@example.org",
        "m1",
        "2025-02-05T00:00:00",
        Some("2025-03-01"),
    );
    legacy.installation("nobody@example.org", "m2", "2025-02-01T00:00:00", None);
    (legacy, good, bad)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_that_cannot_be_imported_fails_the_run_naming_the_row_and_writes_nothing() {
    let database = TestDatabase::create().await;
    let (legacy, _, bad) = with_bad_rows();

    for extra in [&[][..], &["--dry-run"][..]] {
        let output = run_import(&database, &legacy, extra);
        assert!(!output.status.success(), "{extra:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("licenses row 2: unreadable expiry_date \"31/12/2026\""),
            "{stderr}"
        );
        assert!(
            stderr.contains("installations row 3: no importable license has its email"),
            "{stderr}"
        );
        assert!(stderr.contains("--skip-invalid"), "{stderr}");
        assert!(!stderr.contains(&bad), "a key never appears in the output");
    }
    let client = database.pool().get().await.unwrap();
    let events: i64 = client
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(events, 0, "a failed run writes nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_invalid_imports_the_rest_and_counts_each_skipped_row() {
    let database = TestDatabase::create().await;
    let (legacy, good, bad) = with_bad_rows();

    let first = import(&database, &legacy, &["--skip-invalid"]);
    assert!(
        first.contains("licenses: imported 1, already present 0, skipped 1"),
        "{first}"
    );
    // The second row of installation m1 repeats the first: already present on its license.
    assert!(
        first.contains("installations: imported 1, already present 1, skipped 1"),
        "{first}"
    );
    assert!(
        first.contains("skipped licenses row 2: unreadable expiry_date"),
        "{first}"
    );
    assert!(first.contains("skipped installations row 3"), "{first}");
    assert!(!first.contains(&bad), "a key never appears in the output");
    assert_eq!(row_counts(&first), (2, 1, 2, 5), "{first}");

    let second = import(&database, &legacy, &["--skip-invalid"]);
    assert_eq!(row_counts(&second), (0, 3, 2, 5), "{second}");
    assert!(second.contains("appended 0 new events"), "{second}");

    let app = spawn_app_on(database, |_| {}).await;
    assert_eq!(app.validate(&good).await.code, "VALID");
    assert_eq!(app.validate(&bad).await.code, "NOT_FOUND");
}

/// One generated legacy license row, and whether the generator made it unusable.
#[derive(Debug, Clone)]
struct GeneratedLicense {
    email: String,
    expiry: Option<String>,
    created_at: String,
    status: String,
    invalid: bool,
}

#[derive(Debug, Clone)]
struct GeneratedInstallation {
    email: String,
    activated_at: String,
    last_seen: Option<String>,
    invalid: bool,
}

/// An email of a small set (so that licenses share them), each letter in either case.
fn email() -> impl Strategy<Value = String> {
    let names = prop::sample::select(vec!["ann", "bob", "zoë", "ÅSA", "o'neil", "x.y+z"]);
    let domains = prop::sample::select(vec!["example.org", "Example.COM", "müller.de"]);
    (names, domains, prop::collection::vec(any::<bool>(), 24)).prop_map(|(name, domain, upper)| {
        format!("{name}@{domain}")
            .chars()
            .zip(upper.iter().cycle())
            .map(|(c, up)| {
                if *up {
                    c.to_uppercase().collect::<String>()
                } else {
                    c.to_lowercase().collect()
                }
            })
            .collect()
    })
}

/// A point in time in one of the legacy formats.
fn legacy_time() -> impl Strategy<Value = String> {
    (2015i32..2035, 1u32..=12, 1u32..=28, 0u32..24, 0..3).prop_map(
        |(year, month, day, hour, format)| match format {
            0 => format!("{year:04}-{month:02}-{day:02} {hour:02}:00:00"),
            1 => format!("{year:04}-{month:02}-{day:02}T{hour:02}:00:00"),
            _ => format!("{year:04}-{month:02}-{day:02}"),
        },
    )
}

fn license_row() -> impl Strategy<Value = GeneratedLicense> {
    let status = prop::sample::select(vec!["active", "expired", "revoked", "Active", " revoked"]);
    (
        email(),
        prop::option::of(legacy_time()),
        legacy_time(),
        status,
        // About one row in six cannot be imported, in one of four ways.
        prop::option::weighted(0.17, 0..4),
    )
        .prop_map(|(email, expiry, created_at, status, broken)| {
            let mut row = GeneratedLicense {
                email,
                expiry,
                created_at,
                status: status.to_owned(),
                invalid: broken.is_some(),
            };
            match broken {
                Some(0) => row.expiry = Some("31/12/2026".into()),
                Some(1) => row.created_at = "yesterday".into(),
                Some(2) => row.status = "lapsed".into(),
                Some(_) => row.email = "  ".into(),
                None => {}
            }
            row
        })
}

fn installation_row() -> impl Strategy<Value = GeneratedInstallation> {
    (
        email(),
        legacy_time(),
        prop::option::of(legacy_time()),
        prop::option::weighted(0.12, any::<bool>()),
    )
        .prop_map(|(email, activated_at, last_seen, broken)| {
            let mut row = GeneratedInstallation {
                email,
                activated_at,
                last_seen,
                invalid: broken.is_some(),
            };
            match broken {
                Some(true) => row.activated_at = "soon".into(),
                Some(false) => row.last_seen = Some("2025-13-45".into()),
                None => {}
            }
            row
        })
}

/// What the import must report for generated rows: (licenses, installations) skipped, and
/// the licenses that must come out perpetual.
fn expected(
    licenses: &[GeneratedLicense],
    installations: &[GeneratedInstallation],
) -> (usize, usize, usize) {
    let importable: std::collections::HashSet<String> = licenses
        .iter()
        .filter(|l| !l.invalid)
        .map(|l| l.email.trim().to_lowercase())
        .collect();
    let licenses_skipped = licenses.iter().filter(|l| l.invalid).count();
    let installations_skipped = installations
        .iter()
        .filter(|i| i.invalid || !importable.contains(&i.email.trim().to_lowercase()))
        .count();
    let perpetual = licenses
        .iter()
        .filter(|l| !l.invalid && l.expiry.is_none() && l.status.trim() != "expired")
        .count();
    (licenses_skipped, installations_skipped, perpetual)
}

fn counts(summary: &Summary) -> (usize, usize, usize, usize) {
    let rows = summary.rows();
    (rows.imported, rows.already_present, rows.skipped, rows.read)
}

async fn check_generated_import(
    licenses: Vec<GeneratedLicense>,
    installations: Vec<GeneratedInstallation>,
) {
    let database = TestDatabase::create().await;
    let legacy = LegacyDb::new();
    for (n, row) in licenses.iter().enumerate() {
        let key = legacy_key(&format!("generated-{n}"));
        legacy.license(
            &row.email,
            &key,
            row.expiry.as_deref(),
            &row.created_at,
            &row.status,
        );
    }
    for (n, row) in installations.iter().enumerate() {
        legacy.installation(
            &row.email,
            &format!("installation-{n}"),
            &row.activated_at,
            row.last_seen.as_deref(),
        );
    }
    let (licenses_skipped, installations_skipped, perpetual) = expected(&licenses, &installations);
    let skipped = licenses_skipped + installations_skipped;
    let read = licenses.len() + installations.len();
    let options = |skip_invalid| ImportOptions {
        tier: Tier::Basic,
        skip_invalid,
    };

    // Without --skip-invalid, any unusable row stops the run and each is named.
    if skipped > 0 {
        let error = import_file(&database.url, &legacy.path, options(false))
            .await
            .unwrap_err();
        let Some(ImportError::Invalid(rows)) = error.downcast_ref::<ImportError>() else {
            panic!("unexpected failure: {error:#}");
        };
        assert_eq!(rows.0.len(), skipped, "{rows}");
    }

    let first = import_file(&database.url, &legacy.path, options(true))
        .await
        .unwrap();
    assert_eq!(
        counts(&first),
        (read - skipped, 0, skipped, read),
        "{first}"
    );
    assert_eq!(first.licenses.skipped, licenses_skipped, "{first}");
    assert_eq!(
        first.installations.skipped, installations_skipped,
        "{first}"
    );
    assert_eq!(first.skipped.len(), skipped, "{first}");

    let second = import_file(&database.url, &legacy.path, options(true))
        .await
        .unwrap();
    assert_eq!(
        counts(&second),
        (0, read - skipped, skipped, read),
        "{second}"
    );
    assert_eq!(second.events_appended, 0, "{second}");

    let client = database.pool().get().await.unwrap();
    let row = client
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE expires_at IS NULL) FROM license_validation",
            &[],
        )
        .await
        .unwrap();
    let (imported, without_end): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(imported as usize, licenses.len() - licenses_skipped);
    assert_eq!(
        without_end as usize, perpetual,
        "NULL expiry dates are perpetual"
    );
}

#[test]
fn every_generated_legacy_row_is_imported_or_counted_as_skipped() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut runner = TestRunner::new(Config {
        cases: 10,
        max_shrink_iters: 50,
        failure_persistence: None,
        ..Config::default()
    });
    let rows = (
        prop::collection::vec(license_row(), 0..12),
        prop::collection::vec(installation_row(), 0..16),
    );
    runner
        .run(&rows, |(licenses, installations)| {
            runtime.block_on(check_generated_import(licenses, installations));
            Ok(())
        })
        .unwrap();
}
