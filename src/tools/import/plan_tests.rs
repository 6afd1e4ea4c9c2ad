//! `plan`'s rules, one example each, and properties over arbitrary rows.

use keyledger_events::EventPayload;
use keyledger_events::license::LicenseEvent;
use proptest::prelude::*;

use super::*;

const KEY_A: &str = "AAAAA-AAAAA-AAAAA-AAAAA-AAAAA";
const KEY_B: &str = "BBBBB-BBBBB-BBBBB-BBBBB-BBBBB";

fn at(text: &str) -> DateTime<Utc> {
    parse_time(text, false).unwrap()
}

fn now() -> DateTime<Utc> {
    at("2026-01-01 00:00:00")
}

fn license(id: i64, key: &str, expiry: Option<&str>, status: &str) -> LegacyLicense {
    LegacyLicense {
        id,
        email: Some("a@example.org".into()),
        key: Some(key.into()),
        expiry: expiry.map(Into::into),
        created_at: Some("2025-01-01 00:00:00".into()),
        status: Some(status.into()),
    }
}

fn installation(id: i64, email: &str, last_seen: Option<&str>) -> LegacyInstallation {
    LegacyInstallation {
        id,
        email: Some(email.into()),
        installation_id: Some(format!("host-{id}")),
        activated_at: Some("2025-02-01 00:00:00".into()),
        last_seen: last_seen.map(Into::into),
    }
}

fn license_id(legacy_id: i64) -> Uuid {
    derived(&format!("license:{legacy_id}"))
}

/// `LicenseImported` of a row made by [`license`] with `key`.
fn imported(legacy_id: i64, key: &str, expires_at: Option<DateTime<Utc>>) -> LicenseEvent {
    let key = LicenseKey::parse(key).unwrap();
    LicenseEvent::LicenseImported(LicenseImported {
        license_id: license_id(legacy_id),
        key_hash: key.hash(),
        key_prefix: key.display_prefix(),
        owner: "a@example.org".into(),
        tier: Tier::Basic,
        issued_at: at("2025-01-01 00:00:00"),
        expires_at,
        legacy_id,
    })
}

fn revoked(legacy_id: i64) -> LicenseEvent {
    LicenseEvent::LicenseRevoked(LicenseRevoked {
        license_id: license_id(legacy_id),
        reason: "revoked in the legacy service".into(),
        revoked_at: now(),
    })
}

/// The plan of one license row and its installations.
fn planned(legacy_id: i64, events: Vec<LicenseEvent>) -> Planned {
    Planned {
        license_id: license_id(legacy_id),
        legacy_id,
        events: events
            .iter()
            .enumerate()
            .map(|(n, e)| e.to_new_event(derived(&format!("license:{legacy_id}:event:{n}"))))
            .collect(),
        heartbeats: vec![],
        installations: 0,
        repeated: 0,
    }
}

fn refused(table: Table, id: i64, reason: &str) -> InvalidRow {
    InvalidRow {
        table,
        id,
        reason: reason.into(),
    }
}

fn licenses_only(licenses: Vec<LegacyLicense>) -> LegacyRows {
    LegacyRows {
        licenses,
        installations: vec![],
    }
}

/// A license row's events, or the reason it is refused.
type Outcome = Result<Vec<LicenseEvent>, &'static str>;

#[test]
fn each_license_row_is_planned_by_its_status_and_dates_or_refused_with_its_reason() {
    let shape = "license_key missing or of an unknown shape (expected \
                 XXXXX-XXXXX-XXXXX-XXXXX-XXXXX)";
    let mut no_key = license(1, KEY_A, None, "active");
    no_key.key = None;
    let mut no_email = license(1, KEY_A, None, "active");
    no_email.email = None;
    let mut blank_email = license(1, KEY_A, None, "active");
    blank_email.email = Some("  ".into());
    let mut bad_created = license(1, KEY_A, None, "active");
    bad_created.created_at = Some("yesterday".into());
    let mut no_created = license(1, KEY_A, None, "active");
    no_created.created_at = None;
    let cases: Vec<(&str, LegacyLicense, Outcome)> = vec![
        (
            "active, a bare date: lasts through that day",
            license(1, KEY_A, Some("2026-06-30"), "active"),
            Ok(vec![imported(1, KEY_A, Some(at("2026-07-01 00:00:00")))]),
        ),
        (
            "active, a date and time",
            license(1, KEY_A, Some("2026-06-30T12:30:00"), "active"),
            Ok(vec![imported(1, KEY_A, Some(at("2026-06-30 12:30:00")))]),
        ),
        (
            "active, no expiry: perpetual",
            license(1, KEY_A, None, "active"),
            Ok(vec![imported(1, KEY_A, None)]),
        ),
        (
            "status in another case, with spaces",
            license(1, KEY_A, None, " Active "),
            Ok(vec![imported(1, KEY_A, None)]),
        ),
        (
            "expired, a past date: kept",
            license(1, KEY_A, Some("2025-06-30"), "expired"),
            Ok(vec![imported(1, KEY_A, Some(at("2025-07-01 00:00:00")))]),
        ),
        (
            "expired, a date still ahead: expires at the import",
            license(1, KEY_A, Some("2026-06-30"), "expired"),
            Ok(vec![imported(1, KEY_A, Some(now()))]),
        ),
        (
            "expired, no expiry: expires at the import",
            license(1, KEY_A, None, "expired"),
            Ok(vec![imported(1, KEY_A, Some(now()))]),
        ),
        (
            "revoked: imported, then revoked at the import",
            license(1, KEY_A, Some("2026-06-30"), "revoked"),
            Ok(vec![
                imported(1, KEY_A, Some(at("2026-07-01 00:00:00"))),
                revoked(1),
            ]),
        ),
        (
            "revoked, no expiry",
            license(1, KEY_A, None, "revoked"),
            Ok(vec![imported(1, KEY_A, None), revoked(1)]),
        ),
        (
            "an unknown status",
            license(1, KEY_A, None, "suspended"),
            Err("unknown status \"suspended\" (expected active, expired or revoked)"),
        ),
        ("no key", no_key, Err(shape)),
        (
            "a key of another shape",
            license(1, "AAAAA-AAAAA", None, "active"),
            Err(shape),
        ),
        ("no email", no_email, Err("no email")),
        ("a blank email", blank_email, Err("no email")),
        (
            "an unreadable creation date",
            bad_created,
            Err("unreadable created_at \"yesterday\""),
        ),
        (
            "no creation date",
            no_created,
            Err("unreadable created_at \"\""),
        ),
        (
            "an unreadable expiry date",
            license(1, KEY_A, Some("31/12/2026"), "active"),
            Err("unreadable expiry_date \"31/12/2026\""),
        ),
    ];
    for (case, row, expected) in cases {
        let (licenses, invalid) = match expected {
            Ok(events) => (vec![planned(1, events)], vec![]),
            Err(reason) => (vec![], vec![refused(Table::Licenses, 1, reason)]),
        };
        assert_eq!(
            plan(&licenses_only(vec![row]), Tier::Basic, now()),
            Plan {
                licenses,
                invalid,
                licenses_read: 1,
                installations_read: 0,
                installations_invalid: 0,
            },
            "{case}"
        );
    }
}

#[test]
fn a_key_seen_before_is_refused_naming_the_first_row() {
    let rows = licenses_only(vec![
        license(1, KEY_A, None, "active"),
        license(2, KEY_A, None, "active"),
    ]);
    assert_eq!(
        plan(&rows, Tier::Basic, now()),
        Plan {
            licenses: vec![planned(1, vec![imported(1, KEY_A, None)])],
            invalid: vec![refused(
                Table::Licenses,
                2,
                "the same license key as licenses row 1"
            )],
            licenses_read: 2,
            installations_read: 0,
            installations_invalid: 0,
        }
    );
}

#[test]
fn installations_follow_their_email_and_last_seen_becomes_a_heartbeat() {
    let rows = LegacyRows {
        licenses: vec![license(1, KEY_A, None, "active")],
        installations: vec![
            installation(10, "A@Example.org", Some("2025-03-01 08:00:00")),
            // The same installation again: already present once the first is.
            installation(10, "a@example.org", None),
            installation(11, "nobody@example.org", None),
        ],
    };
    let mut expected = planned(
        1,
        vec![
            imported(1, KEY_A, None),
            LicenseEvent::InstallationActivated(InstallationActivated {
                license_id: license_id(1),
                installation_id: "host-10".into(),
                hostname: None,
                metadata: serde_json::json!({"legacy_installation_id": 10}),
                at: at("2025-02-01 00:00:00"),
            }),
        ],
    );
    expected.heartbeats = vec![
        HeartbeatEvent::InstallationHeartbeat(InstallationHeartbeat {
            license_id: license_id(1),
            installation_id: "host-10".into(),
            at: at("2025-03-01 08:00:00"),
        })
        .to_new_event(derived("heartbeat:10")),
    ];
    expected.installations = 1;
    expected.repeated = 1;
    assert_eq!(
        plan(&rows, Tier::Basic, now()),
        Plan {
            licenses: vec![expected],
            invalid: vec![refused(
                Table::Installations,
                11,
                "no importable license has its email (in any case)"
            )],
            licenses_read: 1,
            installations_read: 3,
            installations_invalid: 1,
        }
    );
}

/// Text that is sometimes what a column should hold and sometimes anything at all.
fn column(usable: Vec<&'static str>) -> impl Strategy<Value = Option<String>> {
    prop::option::weighted(
        0.9,
        prop_oneof![
            3 => prop::sample::select(usable).prop_map(str::to_owned),
            1 => any::<String>(),
        ],
    )
}

fn legacy_rows() -> impl Strategy<Value = LegacyRows> {
    let emails = || {
        column(vec![
            "a@example.org",
            "A@EXAMPLE.ORG",
            "b@example.org",
            " ",
            "",
        ])
    };
    let times = || {
        column(vec![
            "2025-01-01 00:00:00",
            "2026-06-30",
            "2024-02-29T10:00:00",
            "2027-01-01T00:00:00Z",
            "31/12/2026",
        ])
    };
    let license = (
        emails(),
        column(vec![
            KEY_A,
            KEY_B,
            " AAAAA-AAAAA-AAAAA-AAAAA-AAAAA ",
            "short",
        ]),
        times(),
        times(),
        column(vec![
            "active",
            "expired",
            "revoked",
            "Revoked ",
            "suspended",
        ]),
    );
    let installation = (
        emails(),
        column(vec!["host-1", "host-2", "", "has space"]),
        times(),
        times(),
    );
    (
        prop::collection::vec(license, 0..8),
        prop::collection::vec(installation, 0..10),
    )
        .prop_map(|(licenses, installations)| LegacyRows {
            licenses: licenses
                .into_iter()
                .zip(1..)
                .map(
                    |((email, key, expiry, created_at, status), id)| LegacyLicense {
                        id,
                        email,
                        key,
                        expiry,
                        created_at,
                        status,
                    },
                )
                .collect(),
            installations: installations
                .into_iter()
                .zip(1..)
                .map(
                    |((email, installation_id, activated_at, last_seen), id)| LegacyInstallation {
                        id,
                        email,
                        installation_id,
                        activated_at,
                        last_seen,
                    },
                )
                .collect(),
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever the rows hold, `plan` answers (it does not panic), every row is planned or
    /// refused, and every planned license starts with its one `LicenseImported`, then its
    /// installations, then at most a `LicenseRevoked`.
    #[test]
    fn every_row_is_planned_or_refused_and_each_license_starts_with_its_import(
        rows in legacy_rows()
    ) {
        let plan = plan(&rows, Tier::Basic, now());
        let licenses_refused = plan.invalid.len() - plan.installations_invalid;
        prop_assert_eq!(plan.licenses.len() + licenses_refused, rows.licenses.len());
        let installations: usize =
            plan.licenses.iter().map(|l| l.installations + l.repeated).sum();
        prop_assert_eq!(
            installations + plan.installations_invalid,
            rows.installations.len()
        );
        for license in &plan.licenses {
            let types: Vec<&str> = license.events.iter().map(|e| e.event_type).collect();
            prop_assert_eq!(types.first(), Some(&"LicenseImported"));
            prop_assert_eq!(types.iter().filter(|t| **t == "LicenseImported").count(), 1);
            let activated = types.iter().filter(|t| **t == "InstallationActivated").count();
            prop_assert_eq!(activated, license.installations);
            prop_assert!(types[1..=activated].iter().all(|t| *t == "InstallationActivated"));
            let rest = &types[activated + 1..];
            prop_assert!(rest.is_empty() || rest == ["LicenseRevoked"]);
        }
        for row in &plan.invalid {
            prop_assert!(!row.reason.contains(KEY_A) && !row.reason.contains(KEY_B), "{}", row);
        }
    }
}
