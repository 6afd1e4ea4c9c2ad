//! `keyledger import-legacy`: brings the licenses of the SQLite-backed service this one
//! replaces into the event log, hashing the plaintext keys on the way in.
//!
//! Rules (also in the README):
//! - Every row is accounted for: each license and installation row is imported, already present
//!   (from an earlier run), or skipped; the three counts add up to the rows read. A row that
//!   cannot be imported stops the run before anything is written, naming the row, unless
//!   `--skip-invalid` is given: then it is skipped, named and counted.
//! - Each legacy license becomes `LicenseImported` (tier `--tier`, default `basic`; the legacy
//!   service had no tiers), followed by its installations and, if the legacy status is
//!   `revoked`, `LicenseRevoked`. Event and license ids are derived from the legacy row ids
//!   (UUIDv5), so a second run appends nothing.
//! - Dates: `YYYY-MM-DD HH:MM:SS`, `YYYY-MM-DDTHH:MM:SS` (UTC) and `YYYY-MM-DD`. An expiry
//!   given as a bare date lasts through that day (expires at the next midnight UTC). A license
//!   with no expiry date is perpetual. A license the legacy service marked `expired` whose date
//!   is still ahead, or that has no date, expires at the import.
//! - Installations point at an email, not a license; emails match whatever their case. With
//!   one license for the email, that license gets them. With several, an installation goes to
//!   the newest non-revoked license created at or before its activation; failing that, to the
//!   newest license of the email. Each installation's `last_seen` becomes a heartbeat. A row
//!   repeating an installation its license already has is counted as already present.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

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
    AppendRequest, EventPayload, EventStore, ExpectedVersion, Metadata, NewEvent, StoreError,
};
use rusqlite::types::ValueRef;
use uuid::Uuid;

use crate::cli::with_store;
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
    /// Skip (and count) rows that cannot be imported instead of stopping the run.
    #[arg(long)]
    pub skip_invalid: bool,
}

fn parse_tier(text: &str) -> Result<Tier, String> {
    Tier::parse(text).ok_or_else(|| "one of free, basic, pro, enterprise".to_owned())
}

/// What an import does besides reading rows.
#[derive(Debug, Clone, Copy)]
pub struct ImportOptions {
    pub tier: Tier,
    pub skip_invalid: bool,
}

/// Names the ids derived from legacy rows.
const NAMESPACE: Uuid = Uuid::from_u128(0x6b65_796c_6564_6765_722d_6c65_6761_6379);

fn derived(name: &str) -> Uuid {
    Uuid::new_v5(&NAMESPACE, name.as_bytes())
}

/// A row of the legacy `licenses` table. Columns are read whatever SQLite stored in them; the
/// planner decides what is usable.
#[derive(Debug, Clone)]
pub struct LegacyLicense {
    pub id: i64,
    pub email: Option<String>,
    pub key: Option<String>,
    pub expiry: Option<String>,
    pub created_at: Option<String>,
    pub status: Option<String>,
}

/// A row of the legacy `installations` table.
#[derive(Debug, Clone)]
pub struct LegacyInstallation {
    pub id: i64,
    pub email: Option<String>,
    pub installation_id: Option<String>,
    pub activated_at: Option<String>,
    pub last_seen: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct LegacyRows {
    pub licenses: Vec<LegacyLicense>,
    pub installations: Vec<LegacyInstallation>,
}

/// A column as text: numbers are written out, NULL is `None`; a blob or text that is not
/// UTF-8 is marked unreadable so that the row is named rather than the read failing.
fn text(value: ValueRef<'_>) -> Option<String> {
    match value {
        ValueRef::Null => None,
        ValueRef::Integer(n) => Some(n.to_string()),
        ValueRef::Real(x) => Some(x.to_string()),
        ValueRef::Text(bytes) => Some(
            std::str::from_utf8(bytes)
                .map(str::to_owned)
                .unwrap_or_else(|_| UNREADABLE.to_owned()),
        ),
        ValueRef::Blob(_) => Some(UNREADABLE.to_owned()),
    }
}

/// Stands for a value that is not text; it parses as nothing.
const UNREADABLE: &str = "\u{fffd}";

/// Reads every row of both legacy tables.
pub fn read_sqlite(path: &Path) -> anyhow::Result<LegacyRows> {
    let connection =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("Failed to open {}", path.display()))?;
    let mut statement = connection
        .prepare(
            "SELECT id, email, license_key, expiry_date, created_at, status \
             FROM licenses ORDER BY id",
        )
        .context("Failed to read the licenses table")?;
    let licenses = statement
        .query_map([], |row| {
            Ok(LegacyLicense {
                id: row.get(0)?,
                email: text(row.get_ref(1)?),
                key: text(row.get_ref(2)?),
                expiry: text(row.get_ref(3)?),
                created_at: text(row.get_ref(4)?),
                status: text(row.get_ref(5)?),
            })
        })?
        .collect::<Result<Vec<_>, _>>()
        .context("Failed to read the licenses table")?;
    let mut statement = connection
        .prepare(
            "SELECT id, email, installation_id, activated_at, last_seen \
             FROM installations ORDER BY id",
        )
        .context("Failed to read the installations table")?;
    let installations = statement
        .query_map([], |row| {
            Ok(LegacyInstallation {
                id: row.get(0)?,
                email: text(row.get_ref(1)?),
                installation_id: text(row.get_ref(2)?),
                activated_at: text(row.get_ref(3)?),
                last_seen: text(row.get_ref(4)?),
            })
        })?
        .collect::<Result<Vec<_>, _>>()
        .context("Failed to read the installations table")?;
    Ok(LegacyRows {
        licenses,
        installations,
    })
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

/// Which legacy table a row is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Licenses,
    Installations,
}

impl Table {
    fn as_str(self) -> &'static str {
        match self {
            Table::Licenses => "licenses",
            Table::Installations => "installations",
        }
    }
}

/// A row that cannot be imported, and why. Never holds a license key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRow {
    pub table: Table,
    pub id: i64,
    pub reason: String,
}

impl fmt::Display for InvalidRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} row {}: {}",
            self.table.as_str(),
            self.id,
            self.reason
        )
    }
}

/// A value quoted in a reason: keys redacted, cut to 40 characters.
fn quoted(value: &str) -> String {
    let value: String = value.chars().take(40).collect();
    format!("{:?}", keyledger_api::redact_text(&value))
}

fn unreadable(column: &str, value: &str) -> String {
    format!("unreadable {column} {}", quoted(value))
}

/// The rows that stopped the run (without `--skip-invalid`).
#[derive(Debug)]
pub struct InvalidRows(pub Vec<InvalidRow>);

impl fmt::Display for InvalidRows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 20;
        writeln!(
            f,
            "{} legacy rows cannot be imported; nothing was written. Fix them, or run again \
             with --skip-invalid to import the rest and skip these:",
            self.0.len()
        )?;
        for row in self.0.iter().take(SHOWN) {
            writeln!(f, "  {row}")?;
        }
        if self.0.len() > SHOWN {
            writeln!(f, "  … and {} more", self.0.len() - SHOWN)?;
        }
        Ok(())
    }
}

impl std::error::Error for InvalidRows {}

/// Imported, already present and skipped rows of one table; they add up to `read`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub read: usize,
    pub imported: usize,
    pub already_present: usize,
    pub skipped: usize,
}

impl Counts {
    fn add(self, other: Counts) -> Counts {
        Counts {
            read: self.read + other.read,
            imported: self.imported + other.imported,
            already_present: self.already_present + other.already_present,
            skipped: self.skipped + other.skipped,
        }
    }
}

/// What a run did (or, dry, would do).
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub dry_run: bool,
    pub licenses: Counts,
    pub installations: Counts,
    pub events_appended: usize,
    /// The rows skipped under `--skip-invalid`, named.
    pub skipped: Vec<InvalidRow>,
}

impl Summary {
    /// Both tables together.
    pub fn rows(&self) -> Counts {
        self.licenses.add(self.installations)
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.dry_run {
            "would import"
        } else {
            "imported"
        };
        let rows = self.rows();
        writeln!(
            f,
            "read {} rows: {} licenses and {} installations",
            rows.read, self.licenses.read, self.installations.read
        )?;
        for (name, counts) in [
            ("licenses", self.licenses),
            ("installations", self.installations),
        ] {
            writeln!(
                f,
                "{name}: {verb} {}, already present {}, skipped {}",
                counts.imported, counts.already_present, counts.skipped
            )?;
        }
        writeln!(
            f,
            "rows: {verb} {} + already present {} + skipped {} = read {}",
            rows.imported, rows.already_present, rows.skipped, rows.read
        )?;
        if self.dry_run {
            writeln!(
                f,
                "{} new events (a dry run reads no database: rows already imported count as new)",
                self.events_appended
            )?;
        } else {
            writeln!(f, "appended {} new events", self.events_appended)?;
        }
        for row in &self.skipped {
            writeln!(f, "skipped {row}")?;
        }
        Ok(())
    }
}

/// One legacy license, ready to append.
#[derive(Debug, PartialEq)]
struct Planned {
    license_id: Uuid,
    legacy_id: i64,
    events: Vec<NewEvent>,
    heartbeats: Vec<NewEvent>,
    /// Installation rows activated on it.
    installations: usize,
    /// Installation rows repeating one of those: already present once the license is.
    repeated: usize,
}

#[derive(Debug, PartialEq)]
struct Plan {
    licenses: Vec<Planned>,
    invalid: Vec<InvalidRow>,
    licenses_read: usize,
    installations_read: usize,
    /// Installation rows among `invalid`.
    installations_invalid: usize,
}

/// An owner as the API accepts one: trimmed, 1 to 256 characters, no control characters.
fn owner(email: Option<&str>) -> Result<String, String> {
    let email = email.map(str::trim).unwrap_or_default();
    if email.is_empty() {
        return Err("no email".into());
    }
    if email.chars().count() > 256 || email.chars().any(char::is_control) {
        return Err("email longer than 256 characters or with control characters".into());
    }
    Ok(email.to_owned())
}

/// A legacy row's status, in any case. There, `expired` is a status; here it is a date: the
/// row's end, or the import's time when the row says expired but its end is still ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LegacyStatus {
    Active,
    Expired,
    Revoked,
}

impl LegacyStatus {
    fn parse(text: &str) -> Option<LegacyStatus> {
        match text.trim().to_ascii_lowercase().as_str() {
            "active" => Some(LegacyStatus::Active),
            "expired" => Some(LegacyStatus::Expired),
            "revoked" => Some(LegacyStatus::Revoked),
            _ => None,
        }
    }
}

/// Emails match whatever their case.
fn email_key(email: &str) -> String {
    email.trim().to_lowercase()
}

fn license_row(
    row: &LegacyLicense,
    tier: Tier,
    now: DateTime<Utc>,
    keys: &mut HashMap<String, i64>,
) -> Result<(LicenseImported, Option<LicenseRevoked>), String> {
    let key = row
        .key
        .as_deref()
        .map(str::trim)
        .and_then(LicenseKey::parse)
        .ok_or(
            "license_key missing or of an unknown shape (expected XXXXX-XXXXX-XXXXX-XXXXX-XXXXX)",
        )?;
    let owner = owner(row.email.as_deref())?;
    let created = row.created_at.as_deref().unwrap_or_default();
    let created_at = parse_time(created, false).ok_or_else(|| unreadable("created_at", created))?;
    let mut expires_at = match row.expiry.as_deref() {
        None => None,
        Some(text) => Some(parse_time(text, true).ok_or_else(|| unreadable("expiry_date", text))?),
    };
    let status_text = row.status.as_deref().unwrap_or_default();
    let Some(status) = LegacyStatus::parse(status_text) else {
        return Err(format!(
            "unknown status {} (expected active, expired or revoked)",
            quoted(status_text)
        ));
    };
    if status == LegacyStatus::Expired && expires_at.is_none_or(|at| at > now) {
        expires_at = Some(now);
    }
    let hash = key.hash();
    if let Some(first) = keys.get(&hash) {
        return Err(format!("the same license key as licenses row {first}"));
    }
    keys.insert(hash.clone(), row.id);
    let license_id = derived(&format!("license:{}", row.id));
    let imported = LicenseImported {
        license_id,
        key_hash: hash,
        key_prefix: key.display_prefix(),
        owner,
        tier,
        issued_at: created_at,
        expires_at,
        legacy_id: row.id,
    };
    let revoked = (status == LegacyStatus::Revoked).then(|| LicenseRevoked {
        license_id,
        reason: "revoked in the legacy service".into(),
        revoked_at: now,
    });
    Ok((imported, revoked))
}

/// An installation row's own fields, checked.
struct CheckedInstallation<'a> {
    row: &'a LegacyInstallation,
    installation_id: String,
    activated_at: DateTime<Utc>,
    last_seen: Option<DateTime<Utc>>,
}

fn installation_row(row: &LegacyInstallation) -> Result<CheckedInstallation<'_>, String> {
    let id = row
        .installation_id
        .as_deref()
        .map(str::trim)
        .unwrap_or_default();
    if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            "installation_id missing, longer than 128 characters or not visible ASCII".into(),
        );
    }
    let activated = row.activated_at.as_deref().unwrap_or_default();
    let activated_at =
        parse_time(activated, false).ok_or_else(|| unreadable("activated_at", activated))?;
    let last_seen = match row.last_seen.as_deref() {
        None => None,
        Some(text) => Some(parse_time(text, false).ok_or_else(|| unreadable("last_seen", text))?),
    };
    Ok(CheckedInstallation {
        row,
        installation_id: id.to_owned(),
        activated_at,
        last_seen,
    })
}

fn plan(rows: &LegacyRows, tier: Tier, now: DateTime<Utc>) -> Plan {
    let now = keyledger_events::chain::to_micros(now);
    let mut invalid = Vec::new();
    // The licenses each email can receive installations on.
    struct Candidate {
        index: usize,
        created_at: DateTime<Utc>,
        revoked: bool,
    }
    let mut by_email: HashMap<String, Vec<Candidate>> = HashMap::new();
    let mut keys = HashMap::new();
    let mut commands: Vec<Option<(LicenseImported, Option<LicenseRevoked>)>> = Vec::new();
    for (index, row) in rows.licenses.iter().enumerate() {
        match license_row(row, tier, now, &mut keys) {
            Ok((imported, revoked)) => {
                by_email
                    .entry(email_key(&imported.owner))
                    .or_default()
                    .push(Candidate {
                        index,
                        created_at: imported.issued_at,
                        revoked: revoked.is_some(),
                    });
                commands.push(Some((imported, revoked)));
            }
            Err(reason) => {
                invalid.push(InvalidRow {
                    table: Table::Licenses,
                    id: row.id,
                    reason,
                });
                commands.push(None);
            }
        }
    }

    let mut installations_invalid = 0;
    let mut attached: Vec<Vec<CheckedInstallation<'_>>> =
        (0..rows.licenses.len()).map(|_| Vec::new()).collect();
    for row in &rows.installations {
        let chosen = installation_row(row).and_then(|checked| {
            let email = row.email.as_deref().unwrap_or_default();
            let candidates = by_email.get(&email_key(email)).ok_or_else(|| {
                if email.trim().is_empty() {
                    "no email".to_owned()
                } else {
                    "no importable license has its email (in any case)".to_owned()
                }
            })?;
            let candidate = candidates
                .iter()
                .filter(|c| !c.revoked && c.created_at <= checked.activated_at)
                .max_by_key(|c| c.created_at)
                .or_else(|| candidates.iter().max_by_key(|c| c.created_at))
                .ok_or("no importable license has its email (in any case)")?;
            Ok((candidate.index, checked))
        });
        match chosen {
            Ok((index, checked)) => attached[index].push(checked),
            Err(reason) => {
                installations_invalid += 1;
                invalid.push(InvalidRow {
                    table: Table::Installations,
                    id: row.id,
                    reason,
                });
            }
        }
    }

    let mut planned = Vec::new();
    for (command, installations) in commands.into_iter().zip(attached) {
        let Some((imported, revoked)) = command else {
            continue;
        };
        let license_id = imported.license_id;
        let mut activations = Vec::new();
        let mut heartbeats = Vec::new();
        let mut seen = HashSet::new();
        let mut repeated = 0;
        for installation in installations {
            if seen.insert(installation.installation_id.clone()) {
                activations.push(InstallationActivated {
                    license_id,
                    installation_id: installation.installation_id.clone(),
                    hostname: None,
                    metadata: serde_json::json!({"legacy_installation_id": installation.row.id}),
                    at: installation.activated_at,
                });
            } else {
                repeated += 1;
            }
            if let Some(last_seen) = installation.last_seen {
                let event = HeartbeatEvent::InstallationHeartbeat(InstallationHeartbeat {
                    license_id,
                    installation_id: installation.installation_id,
                    at: last_seen,
                });
                heartbeats.push(
                    event.to_new_event(derived(&format!("heartbeat:{}", installation.row.id))),
                );
            }
        }
        let count = activations.len();
        let legacy_id = imported.legacy_id;
        let command = LicenseCommand::Import {
            imported,
            installations: activations,
            revoked,
        };
        let events = match License::Absent.decide(&command) {
            Ok(events) => events,
            Err(error) => {
                invalid.push(InvalidRow {
                    table: Table::Licenses,
                    id: legacy_id,
                    reason: format!("refused by the license rules: {error:?}"),
                });
                continue;
            }
        };
        let events = events
            .iter()
            .enumerate()
            .map(|(n, e)| e.to_new_event(derived(&format!("license:{legacy_id}:event:{n}"))))
            .collect();
        planned.push(Planned {
            license_id,
            legacy_id,
            events,
            heartbeats,
            installations: count,
            repeated,
        });
    }
    Plan {
        licenses: planned,
        invalid,
        licenses_read: rows.licenses.len(),
        installations_read: rows.installations.len(),
        installations_invalid,
    }
}

/// Why an import stopped.
#[derive(Debug)]
pub enum ImportError {
    /// Rows that cannot be imported, without `--skip-invalid`: nothing was written.
    Invalid(InvalidRows),
    /// The event log refused or failed an append.
    Store { legacy_id: i64, source: StoreError },
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImportError::Invalid(rows) => rows.fmt(f),
            ImportError::Store { legacy_id, .. } => {
                write!(f, "Failed to import legacy license {legacy_id}")
            }
        }
    }
}

impl std::error::Error for ImportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ImportError::Invalid(_) => None,
            ImportError::Store { source, .. } => Some(source),
        }
    }
}

/// Imports `rows` through `store` (or, with `store` = `None`, counts what a run would do).
/// Rows that cannot be imported stop it before anything is written, unless
/// `options.skip_invalid`.
pub async fn import_rows(
    store: Option<&dyn EventStore>,
    rows: &LegacyRows,
    options: ImportOptions,
    now: DateTime<Utc>,
) -> Result<Summary, ImportError> {
    let plan = plan(rows, options.tier, now);
    if !plan.invalid.is_empty() && !options.skip_invalid {
        return Err(ImportError::Invalid(InvalidRows(plan.invalid)));
    }
    let licenses_invalid = plan.invalid.len() - plan.installations_invalid;
    let mut summary = Summary {
        dry_run: store.is_none(),
        licenses: Counts {
            read: plan.licenses_read,
            skipped: licenses_invalid,
            ..Counts::default()
        },
        installations: Counts {
            read: plan.installations_read,
            skipped: plan.installations_invalid,
            ..Counts::default()
        },
        events_appended: 0,
        skipped: plan.invalid,
    };
    let Some(store) = store else {
        for license in &plan.licenses {
            summary.licenses.imported += 1;
            summary.installations.imported += license.installations;
            summary.installations.already_present += license.repeated;
            summary.events_appended += license.events.len() + license.heartbeats.len();
        }
        return Ok(summary);
    };
    let run = format!("import-legacy-{}", Uuid::new_v4());
    let metadata = Metadata {
        correlation_id: Some(run.clone()),
        // The job run caused it.
        causation_id: Some(run),
        actor: Some("import-legacy".into()),
        idempotency_key: None,
    };
    for license in plan.licenses {
        let count = license.events.len();
        let legacy_id = license.legacy_id;
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
                summary.licenses.imported += 1;
                summary.installations.imported += license.installations;
                summary.events_appended += count;
            }
            Err(StoreError::Conflict { .. }) => {
                summary.licenses.already_present += 1;
                summary.installations.already_present += license.installations;
            }
            Err(source) => return Err(ImportError::Store { legacy_id, source }),
        }
        summary.installations.already_present += license.repeated;
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
                Err(source) => return Err(ImportError::Store { legacy_id, source }),
            }
        }
    }
    Ok(summary)
}

/// Reads the legacy database at `sqlite` and imports it into the event log at `database_url`
/// (created and migrated if needed).
pub async fn import_file(
    database_url: &str,
    sqlite: &Path,
    options: ImportOptions,
) -> anyhow::Result<Summary> {
    let rows = read(sqlite).await?;
    let now = Utc::now();
    if !options.skip_invalid {
        // Name the rows that cannot be imported before touching the database at all.
        import_rows(None, &rows, options, now).await?;
    }
    with_store(database_url, 4, async |store| {
        Ok(import_rows(Some(store), &rows, options, now).await?)
    })
    .await
}

async fn read(sqlite: &Path) -> anyhow::Result<LegacyRows> {
    let path = sqlite.to_owned();
    tokio::task::spawn_blocking(move || read_sqlite(&path))
        .await
        .context("The SQLite reader failed")?
}

pub async fn run(args: ImportArgs) -> anyhow::Result<()> {
    let options = ImportOptions {
        tier: args.tier,
        skip_invalid: args.skip_invalid,
    };
    let summary = if args.dry_run {
        let rows = read(&args.sqlite).await?;
        import_rows(None, &rows, options, Utc::now()).await?
    } else {
        import_file(&args.database.database_url, &args.sqlite, options).await?
    };
    print!("{summary}");
    Ok(())
}

#[cfg(test)]
mod plan_tests;

#[cfg(test)]
mod tests {
    use super::*;

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

    fn license(
        id: i64,
        email: &str,
        key: &str,
        expiry: Option<&str>,
        status: &str,
    ) -> LegacyLicense {
        LegacyLicense {
            id,
            email: Some(email.into()),
            key: Some(key.into()),
            expiry: expiry.map(Into::into),
            created_at: Some("2025-01-01 00:00:00".into()),
            status: Some(status.into()),
        }
    }

    fn now() -> DateTime<Utc> {
        parse_time("2026-01-01 00:00:00", false).unwrap()
    }

    #[tokio::test]
    async fn a_row_without_an_expiry_date_becomes_a_perpetual_license() {
        let rows = LegacyRows {
            licenses: vec![
                license(
                    1,
                    "a@example.org",
                    "AAAAA-AAAAA-AAAAA-AAAAA-AAAAA",
                    None,
                    "active",
                ),
                // Marked expired without a date: it expires at the import.
                license(
                    2,
                    "b@example.org",
                    "BBBBB-BBBBB-BBBBB-BBBBB-BBBBB",
                    None,
                    "expired",
                ),
            ],
            installations: vec![],
        };
        let plan = plan(&rows, Tier::Basic, now());
        let expiries: Vec<Option<serde_json::Value>> = plan
            .licenses
            .iter()
            .map(|p| p.events[0].data.get("expires_at").cloned())
            .collect();
        assert_eq!(expiries[0], Some(serde_json::Value::Null));
        assert_eq!(expiries[1], Some(serde_json::json!("2026-01-01T00:00:00Z")));
    }

    #[tokio::test]
    async fn an_invalid_row_is_named_without_its_key() {
        let key = "CCCCC-CCCCC-CCCCC-CCCCC-CCCCC";
        let mut bad = license(7, "c@example.org", key, Some("31/12/2026"), "active");
        bad.created_at = Some("2025-01-01".into());
        let rows = LegacyRows {
            licenses: vec![bad],
            installations: vec![],
        };
        let options = ImportOptions {
            tier: Tier::Basic,
            skip_invalid: false,
        };
        let Err(ImportError::Invalid(invalid)) = import_rows(None, &rows, options, now()).await
        else {
            panic!("the row is invalid");
        };
        let text = invalid.to_string();
        assert!(
            text.contains("licenses row 7: unreadable expiry_date \"31/12/2026\""),
            "{text}"
        );
        assert!(!text.contains(key));
    }
}
