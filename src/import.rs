//! `keyledger import-legacy`: brings the licenses of the SQLite-backed service this one
//! replaces into the event log, hashing the plaintext keys on the way in.
//!
//! Rules (also in the README):
//! - Each legacy license becomes `LicenseImported` (tier `--tier`, default `basic`; the legacy
//!   service had no tiers), followed by its installations and, if the legacy status is
//!   `revoked`, `LicenseRevoked`. Event and license ids are derived from the legacy row ids
//!   (UUIDv5), so a second run appends nothing.
//! - Dates: `YYYY-MM-DD HH:MM:SS`, `YYYY-MM-DDTHH:MM:SS` (UTC) and `YYYY-MM-DD`. An expiry
//!   given as a bare date lasts through that day (expires at the next midnight UTC). A license
//!   with no expiry date is skipped. A license the legacy service marked `expired` whose date
//!   is still ahead expires at the import.
//! - Installations point at an email, not a license. With one license for the email, that
//!   license gets them. With several, an installation goes to the newest non-revoked license
//!   created at or before its activation; failing that, to the newest license of the email.
//!   Installations of an email without licenses are skipped. Each installation's `last_seen`
//!   becomes a heartbeat.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use clap::Args;
use keyledger_command::execute::Aggregate;
use keyledger_command::license::aggregate::{License, LicenseCommand};
use keyledger_command::license::key::LicenseKey;
use keyledger_events::license::{
    HeartbeatEvent, InstallationActivated, InstallationHeartbeat, LicenseImported, LicenseRevoked,
    Tier, heartbeat_stream, license_stream,
};
use keyledger_events::{
    AppendRequest, EventPayload, EventStore, ExpectedVersion, Metadata, NewEvent, Notifier,
    PgEventStore, StoreError, WriterConfig, db,
};
use uuid::Uuid;

use crate::config::DatabaseArgs;

#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The legacy SQLite database.
    #[arg(long)]
    pub sqlite: PathBuf,
    /// Report what would be imported without writing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Tier given to imported licenses.
    #[arg(long, default_value = "basic", value_parser = parse_tier)]
    pub tier: Tier,
}

fn parse_tier(text: &str) -> Result<Tier, String> {
    Tier::parse(text).ok_or_else(|| "one of free, basic, pro, enterprise".to_owned())
}

/// Names the ids derived from legacy rows.
const NAMESPACE: Uuid = Uuid::from_u128(0x6b65_796c_6564_6765_722d_6c65_6761_6379);

fn derived(name: &str) -> Uuid {
    Uuid::new_v5(&NAMESPACE, name.as_bytes())
}

struct LegacyLicense {
    id: i64,
    email: String,
    key: String,
    expiry: Option<String>,
    created_at: String,
    status: String,
}

struct LegacyInstallation {
    id: i64,
    email: String,
    installation_id: String,
    activated_at: String,
    last_seen: Option<String>,
}

fn read_sqlite(path: &PathBuf) -> anyhow::Result<(Vec<LegacyLicense>, Vec<LegacyInstallation>)> {
    let connection =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("Failed to open {}", path.display()))?;
    let mut statement = connection
        .prepare("SELECT id, email, license_key, expiry_date, created_at, status FROM licenses ORDER BY id")
        .context("Failed to read the licenses table")?;
    let licenses = statement
        .query_map([], |row| {
            Ok(LegacyLicense {
                id: row.get(0)?,
                email: row.get(1)?,
                key: row.get(2)?,
                expiry: row.get(3)?,
                created_at: row.get(4)?,
                status: row.get(5)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()
        .context("Failed to read a license row")?;
    let mut statement = connection
        .prepare("SELECT id, email, installation_id, activated_at, last_seen FROM installations ORDER BY id")
        .context("Failed to read the installations table")?;
    let installations = statement
        .query_map([], |row| {
            Ok(LegacyInstallation {
                id: row.get(0)?,
                email: row.get(1)?,
                installation_id: row.get(2)?,
                activated_at: row.get(3)?,
                last_seen: row.get(4)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()
        .context("Failed to read an installation row")?;
    Ok((licenses, installations))
}

/// A point in time: `YYYY-MM-DD HH:MM:SS`, `YYYY-MM-DDTHH:MM:SS` (UTC) or a bare date
/// (`end_of_day`: the next midnight, else that midnight).
pub fn parse_time(text: &str, end_of_day: bool) -> Option<DateTime<Utc>> {
    let text = text.trim();
    for format in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M:%SZ",
    ] {
        if let Ok(at) = NaiveDateTime::parse_from_str(text, format) {
            return Some(at.and_utc());
        }
    }
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    let date = if end_of_day { date.succ_opt()? } else { date };
    Some(date.and_hms_opt(0, 0, 0)?.and_utc())
}

/// One legacy license, ready to append.
struct Planned {
    license_id: Uuid,
    legacy_id: i64,
    events: Vec<NewEvent>,
    heartbeats: Vec<NewEvent>,
    installations: usize,
}

#[derive(Default)]
struct Summary {
    licenses_read: usize,
    installations_read: usize,
    licenses_imported: usize,
    licenses_already_present: usize,
    installations_imported: usize,
    events_appended: usize,
    skipped: BTreeMap<String, usize>,
}

impl Summary {
    fn skip(&mut self, reason: impl Into<String>) {
        *self.skipped.entry(reason.into()).or_default() += 1;
    }
}

fn plan(
    licenses: &[LegacyLicense],
    installations: &[LegacyInstallation],
    tier: Tier,
    now: DateTime<Utc>,
    summary: &mut Summary,
) -> Vec<Planned> {
    let now = keyledger_events::chain::to_micros(now);
    // The licenses each email can receive installations on.
    struct Candidate {
        index: usize,
        created_at: DateTime<Utc>,
        revoked: bool,
    }
    let mut by_email: HashMap<String, Vec<Candidate>> = HashMap::new();
    let mut commands: Vec<Option<(LicenseImported, Option<LicenseRevoked>)>> = Vec::new();
    for (index, row) in licenses.iter().enumerate() {
        let imported = (|| {
            let key = LicenseKey::parse(row.key.trim()).ok_or("license key of an unknown shape")?;
            let created_at = parse_time(&row.created_at, false).ok_or("unreadable created_at")?;
            let expiry = row.expiry.as_deref().ok_or("no expiry date")?;
            let mut expires_at = parse_time(expiry, true).ok_or("unreadable expiry_date")?;
            let status = row.status.trim().to_ascii_lowercase();
            if !["active", "expired", "revoked"].contains(&status.as_str()) {
                return Err("unknown status");
            }
            if status == "expired" && expires_at > now {
                expires_at = now;
            }
            let license_id = derived(&format!("license:{}", row.id));
            let imported = LicenseImported {
                license_id,
                key_hash: key.hash(),
                key_prefix: key.display_prefix(),
                owner: row.email.trim().to_owned(),
                tier,
                issued_at: created_at,
                expires_at,
                legacy_id: row.id,
            };
            let revoked = (status == "revoked").then(|| LicenseRevoked {
                license_id,
                reason: "revoked in the legacy service".into(),
                revoked_at: now,
            });
            Ok((imported, revoked))
        })();
        match imported {
            Ok((imported, revoked)) => {
                by_email
                    .entry(imported.owner.to_ascii_lowercase())
                    .or_default()
                    .push(Candidate {
                        index,
                        created_at: imported.issued_at,
                        revoked: revoked.is_some(),
                    });
                commands.push(Some((imported, revoked)));
            }
            Err(reason) => {
                summary.skip(format!("license: {reason}"));
                commands.push(None);
            }
        }
    }

    let mut attached: Vec<Vec<&LegacyInstallation>> = vec![Vec::new(); licenses.len()];
    for installation in installations {
        let Some(candidates) = by_email.get(&installation.email.trim().to_ascii_lowercase()) else {
            summary.skip("installation: no license for its email");
            continue;
        };
        let Some(activated_at) = parse_time(&installation.activated_at, false) else {
            summary.skip("installation: unreadable activated_at");
            continue;
        };
        let chosen = candidates
            .iter()
            .filter(|c| !c.revoked && c.created_at <= activated_at)
            .max_by_key(|c| c.created_at)
            .or_else(|| candidates.iter().max_by_key(|c| c.created_at));
        if let Some(candidate) = chosen {
            attached[candidate.index].push(installation);
        }
    }

    let mut planned = Vec::new();
    for (index, command) in commands.into_iter().enumerate() {
        let Some((imported, revoked)) = command else {
            continue;
        };
        let license_id = imported.license_id;
        let mut activations = Vec::new();
        let mut heartbeats = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for installation in &attached[index] {
            let id = installation.installation_id.trim();
            if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_graphic()) {
                summary.skip("installation: unusable installation_id");
                continue;
            }
            if !seen.insert(id.to_owned()) {
                summary.skip("installation: repeated on its license");
                continue;
            }
            let at = parse_time(&installation.activated_at, false).unwrap_or(imported.issued_at);
            activations.push(InstallationActivated {
                license_id,
                installation_id: id.to_owned(),
                hostname: None,
                metadata: serde_json::json!({"legacy_installation_id": installation.id}),
                at,
            });
            if let Some(last_seen) = installation
                .last_seen
                .as_deref()
                .and_then(|t| parse_time(t, false))
            {
                let event = HeartbeatEvent::InstallationHeartbeat(InstallationHeartbeat {
                    license_id,
                    installation_id: id.to_owned(),
                    at: last_seen,
                });
                heartbeats
                    .push(event.to_new_event(derived(&format!("heartbeat:{}", installation.id))));
            }
        }
        let count = activations.len();
        let command = LicenseCommand::Import {
            imported: imported.clone(),
            installations: activations,
            revoked,
        };
        let Ok(events) = License::Absent.decide(&command) else {
            summary.skip("license: refused by the license rules");
            continue;
        };
        let events = events
            .iter()
            .enumerate()
            .map(|(n, e)| {
                e.to_new_event(derived(&format!(
                    "license:{}:event:{n}",
                    imported.legacy_id
                )))
            })
            .collect();
        planned.push(Planned {
            license_id,
            legacy_id: imported.legacy_id,
            events,
            heartbeats,
            installations: count,
        });
    }
    planned
}

pub async fn run(args: ImportArgs) -> anyhow::Result<()> {
    let path = args.sqlite.clone();
    let (licenses, installations) = tokio::task::spawn_blocking(move || read_sqlite(&path))
        .await
        .context("The SQLite reader failed")??;
    let mut summary = Summary {
        licenses_read: licenses.len(),
        installations_read: installations.len(),
        ..Summary::default()
    };
    let planned = plan(
        &licenses,
        &installations,
        args.tier,
        Utc::now(),
        &mut summary,
    );

    if args.dry_run {
        summary.licenses_imported = planned.len();
        summary.installations_imported = planned.iter().map(|p| p.installations).sum();
        summary.events_appended = planned
            .iter()
            .map(|p| p.events.len() + p.heartbeats.len())
            .sum();
        print(&summary, true);
        return Ok(());
    }

    let url = &args.database.database_url;
    db::ensure_database(url).await?;
    db::migrate(url).await?;
    let pool = db::pool(url, 4)?;
    let (store, _writer) = PgEventStore::start(
        pool,
        WriterConfig::default(),
        keyledger_projections::inline(),
        Notifier::default(),
    );
    let run = format!("import-legacy-{}", Uuid::new_v4());
    let metadata = Metadata {
        correlation_id: Some(run.clone()),
        // The job run caused it.
        causation_id: Some(run),
        actor: Some("import-legacy".into()),
        idempotency_key: None,
    };
    for license in planned {
        let count = license.events.len();
        match store
            .append(AppendRequest {
                stream_id: license_stream(license.license_id),
                expected: ExpectedVersion::NoStream,
                events: license.events,
                metadata: metadata.clone(),
                idempotency: None,
            })
            .await
        {
            Ok(_) => {
                summary.licenses_imported += 1;
                summary.installations_imported += license.installations;
                summary.events_appended += count;
            }
            Err(StoreError::Conflict { .. }) => summary.licenses_already_present += 1,
            Err(error) => {
                return Err(anyhow::anyhow!(error)).with_context(|| {
                    format!("Failed to import legacy license {}", license.legacy_id)
                });
            }
        }
        for heartbeat in license.heartbeats {
            match store
                .append(AppendRequest {
                    stream_id: heartbeat_stream(license.license_id),
                    expected: ExpectedVersion::Any,
                    events: vec![heartbeat],
                    metadata: metadata.clone(),
                    idempotency: None,
                })
                .await
            {
                Ok(_) => summary.events_appended += 1,
                Err(StoreError::DuplicateEvent(_)) => {}
                Err(error) => {
                    return Err(anyhow::anyhow!(error)).context("Failed to import a heartbeat");
                }
            }
        }
    }
    print(&summary, false);
    Ok(())
}

fn print(summary: &Summary, dry_run: bool) {
    let verb = if dry_run { "would import" } else { "imported" };
    println!(
        "read {} licenses and {} installations",
        summary.licenses_read, summary.installations_read
    );
    println!(
        "{verb} {} licenses with {} installations ({} new events)",
        summary.licenses_imported, summary.installations_imported, summary.events_appended
    );
    if summary.licenses_already_present > 0 {
        println!(
            "{} licenses were already imported",
            summary.licenses_already_present
        );
    }
    if summary.skipped.is_empty() {
        println!("skipped nothing");
    }
    for (reason, count) in &summary.skipped {
        println!("skipped {count}: {reason}");
    }
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn legacy_dates_read_in_each_of_their_formats() {
        assert_eq!(
            parse_time("2025-06-08 05:00:00", false)
                .unwrap()
                .to_rfc3339(),
            "2025-06-08T05:00:00+00:00"
        );
        assert_eq!(
            parse_time("2026-06-08T05:00:00", true)
                .unwrap()
                .to_rfc3339(),
            "2026-06-08T05:00:00+00:00"
        );
        // A bare expiry date lasts through that day.
        assert_eq!(
            parse_time("2026-04-22", true).unwrap().to_rfc3339(),
            "2026-04-23T00:00:00+00:00"
        );
        assert_eq!(
            parse_time("2026-04-22", false).unwrap().to_rfc3339(),
            "2026-04-22T00:00:00+00:00"
        );
        assert!(parse_time("22/04/2026", true).is_none());
    }
}
