//! The validation view: what validation needs to know about every license, in memory.
//!
//! Each process loads it at start from the inline `license_validation` and
//! `license_daily_usage` tables (exact as of a snapshot, since the writer maintains them in the
//! append transaction) and then follows the log: the writer brings it to the head under the
//! append lock before it judges a batch's validations (see `keyledger_events::head_view`), and
//! applies its own batches after they commit; between validations [`ValidationView::follow`]
//! keeps it near the head. A key the view does not know is looked up by
//! [`ValidationView::catch_up`], which reads the log's tail without the lock; concurrent misses
//! share one read.
//!
//! Layout: the licenses sit in one vector; two hash maps index it by key hash (32 bytes) and
//! by license id. [`ValidationView::memory_bytes`] estimates what it takes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use chrono::{DateTime, NaiveDate, Utc};
use deadpool_postgres::{GenericClient, Pool};
use futures::TryStreamExt;
use keyledger_events::license::{LicenseEvent, LicenseStatus, Tier, UsageEvent, ValidationCode};
use keyledger_events::{Envelope, EventPayload, HeadView};
use uuid::Uuid;

use super::validation::EVENT_TYPES;

/// What validation needs to know about one license.
#[derive(Debug, Clone, PartialEq)]
pub struct License {
    pub license_id: Uuid,
    pub tier: Tier,
    pub status: LicenseStatus,
    /// `None`: perpetual.
    pub expires_at: Option<DateTime<Utc>>,
    /// The license's own entitlements (the tier's come from the policy).
    pub entitlements: Box<[Box<str>]>,
    /// Active installation ids.
    pub installations: Vec<Box<str>>,
    /// The last UTC day with a VALID validation, and how many it had.
    valid_day: Option<NaiveDate>,
    valid: u32,
}

impl License {
    /// A license as issued: active, no installations, no validations yet.
    pub fn new(
        license_id: Uuid,
        tier: Tier,
        expires_at: Option<DateTime<Utc>>,
        entitlements: Vec<String>,
    ) -> License {
        License {
            license_id,
            tier,
            status: LicenseStatus::Active,
            expires_at,
            entitlements: entitlements.into_iter().map(Into::into).collect(),
            installations: Vec::new(),
            valid_day: None,
            valid: 0,
        }
    }

    /// VALID validations on `day` (committed ones).
    pub fn valid_on(&self, day: NaiveDate) -> u32 {
        if self.valid_day == Some(day) {
            self.valid
        } else {
            0
        }
    }

    fn count_valid(&mut self, day: NaiveDate) {
        match self.valid_day {
            Some(current) if current == day => self.valid = self.valid.saturating_add(1),
            Some(current) if current > day => {}
            _ => {
                self.valid_day = Some(day);
                self.valid = 1;
            }
        }
    }
}

#[derive(Default)]
struct Inner {
    /// Every event of the view's types up to here is applied.
    position: i64,
    licenses: Vec<License>,
    by_key: HashMap<[u8; 32], u32>,
    by_id: HashMap<Uuid, u32>,
    /// VALID verdicts of the batch being decided, per license index (not yet committed).
    tentative: HashMap<u32, u32>,
}

#[derive(Default)]
pub struct ValidationView {
    inner: RwLock<Inner>,
    /// One tail read at a time; misses that arrive while one runs wait for the next.
    refresh: tokio::sync::Mutex<()>,
    /// Tail reads started so far.
    refreshes: AtomicU64,
}

/// SHA-256 of a key, from the lowercase hex the log stores.
pub fn digest_from_hex(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut digest = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        digest[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(digest)
}

impl ValidationView {
    /// Loads the view from the inline tables, in one snapshot, with the head it reflects.
    pub async fn load(pool: &Pool) -> Result<Arc<ValidationView>, ViewError> {
        let mut client = pool
            .get()
            .await
            .map_err(|e| ViewError::Unavailable(e.to_string()))?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let head: i64 = tx
            .query_one("SELECT coalesce(max(position), 0) FROM events", &[])
            .await?
            .try_get(0)?;
        let mut inner = Inner {
            position: head,
            ..Inner::default()
        };
        let count: i64 = tx
            .query_one("SELECT count(*) FROM license_validation", &[])
            .await?
            .try_get(0)?;
        let count = usize::try_from(count).unwrap_or(0);
        inner.licenses.reserve_exact(count);
        inner.by_key.reserve(count);
        inner.by_id.reserve(count);
        // Each license's latest day with VALID validations (a clock behind the wall clock
        // still finds its day).
        let rows = tx
            .query_raw(
                "SELECT v.key_hash, v.license_id, v.tier, v.status, v.expires_at, \
                        v.entitlements, v.installations, d.day, d.valid \
                 FROM license_validation v \
                 LEFT JOIN LATERAL (SELECT day, valid FROM license_daily_usage u \
                                    WHERE u.license_id = v.license_id \
                                    ORDER BY day DESC LIMIT 1) d ON true",
                std::iter::empty::<&(dyn tokio_postgres::types::ToSql + Sync)>(),
            )
            .await?;
        futures::pin_mut!(rows);
        while let Some(row) = rows.try_next().await? {
            let key_hash: String = row.try_get(0)?;
            let tier: String = row.try_get(2)?;
            let status: String = row.try_get(3)?;
            let entitlements: Vec<String> = row.try_get(5)?;
            let installations: Vec<String> = row.try_get(6)?;
            let valid: Option<i64> = row.try_get(8)?;
            let (Some(digest), Some(tier), Some(status)) = (
                digest_from_hex(&key_hash),
                Tier::parse(&tier),
                LicenseStatus::parse(&status),
            ) else {
                tracing::error!(
                    license.id = %row.try_get::<_, Uuid>(1)?,
                    "license_validation holds a row the validation view cannot read; skipped"
                );
                continue;
            };
            inner.insert(
                digest,
                License {
                    license_id: row.try_get(1)?,
                    tier,
                    status,
                    expires_at: row.try_get(4)?,
                    entitlements: entitlements.into_iter().map(Into::into).collect(),
                    installations: installations.into_iter().map(Into::into).collect(),
                    valid_day: row.try_get(7)?,
                    valid: valid.map_or(0, |v| u32::try_from(v).unwrap_or(u32::MAX)),
                },
            );
        }
        tx.commit().await?;
        metrics::gauge!("keyledger_validation_view_licenses").set(inner.licenses.len() as f64);
        tracing::info!(
            licenses = inner.licenses.len(),
            position = head,
            "validation view loaded"
        );
        Ok(Arc::new(ValidationView {
            inner: RwLock::new(inner),
            ..ValidationView::default()
        }))
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The license whose key has this SHA-256, as far as the view knows.
    pub fn license_id(&self, key_digest: &[u8; 32]) -> Option<Uuid> {
        let inner = self.read();
        let index = *inner.by_key.get(key_digest)?;
        inner.licenses.get(index as usize).map(|l| l.license_id)
    }

    /// The license as the view has it (a copy).
    pub fn license(&self, license_id: Uuid) -> Option<License> {
        let inner = self.read();
        let index = *inner.by_id.get(&license_id)?;
        inner.licenses.get(index as usize).cloned()
    }

    /// Licenses in the view.
    pub fn len(&self) -> usize {
        self.read().licenses.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the view takes: the vector, both indexes at their capacity (a control byte per
    /// slot), and the strings on the heap.
    pub fn memory_bytes(&self) -> usize {
        let inner = self.read();
        let strings: usize = inner
            .licenses
            .iter()
            .map(|l| {
                let own = l.entitlements.iter().map(|e| e.len()).sum::<usize>()
                    + l.entitlements.len() * size_of::<Box<str>>();
                let installations = l.installations.iter().map(|i| i.len()).sum::<usize>()
                    + l.installations.capacity() * size_of::<Box<str>>();
                own + installations
            })
            .sum();
        inner.licenses.capacity() * size_of::<License>()
            + inner.by_key.capacity() * (size_of::<([u8; 32], u32)>() + 1)
            + inner.by_id.capacity() * (size_of::<(Uuid, u32)>() + 1)
            + strings
    }

    /// Under the append lock, with the view at the head: hands `judge` the license and its
    /// VALID count on `day`, this batch's earlier VALID verdicts included. A VALID verdict
    /// counts toward the next decision of the batch. `None`: no such license.
    pub fn decide<T>(
        &self,
        license_id: Uuid,
        day: NaiveDate,
        judge: impl FnOnce(&License, u32) -> (ValidationCode, T),
    ) -> Option<(ValidationCode, T)> {
        let mut inner = self.write();
        let index = *inner.by_id.get(&license_id)?;
        let tentative = inner.tentative.get(&index).copied().unwrap_or(0);
        let license = inner.licenses.get(index as usize)?;
        let (code, answer) = judge(license, license.valid_on(day).saturating_add(tentative));
        if code == ValidationCode::Valid {
            *inner.tentative.entry(index).or_default() += 1;
        }
        Some((code, answer))
    }

    /// Reads the log's tail (no lock) and applies what the view has not seen, so that a key
    /// issued on another node is found. Concurrent callers share one read: a caller waits for
    /// a read that started after it was called.
    pub async fn catch_up(&self, pool: &Pool) -> Result<(), ViewError> {
        let seen = self.refreshes.load(Ordering::Acquire);
        let _turn = self.refresh.lock().await;
        if self.refreshes.load(Ordering::Acquire) > seen {
            // A read that started after this call has finished.
            return Ok(());
        }
        self.refreshes.fetch_add(1, Ordering::AcqRel);
        let client = pool
            .get()
            .await
            .map_err(|e| ViewError::Unavailable(e.to_string()))?;
        let from = self.position();
        let (head, events) = read_tail(&client, from).await?;
        self.advance(from, &events, head);
        Ok(())
    }
}

/// At most one tail read per this interval from [`ValidationView::follow`].
const FOLLOW_MIN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);
/// A tail read at least this often, in case a notification was lost.
const FOLLOW_MAX_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

impl ValidationView {
    /// Keeps the view near the head between validations, so that the writer's read under the
    /// append lock stays short even after another node has been busy: it reads the log's tail
    /// when the head this process hears of (its own commits, other nodes' through LISTEN) is
    /// past the view, at most every 50 ms, and at least every second.
    pub async fn follow(self: Arc<Self>, pool: Pool, mut head: tokio::sync::watch::Receiver<i64>) {
        loop {
            let heard = tokio::time::timeout(FOLLOW_MAX_INTERVAL, head.changed()).await;
            let behind = match heard {
                Ok(Ok(())) => *head.borrow_and_update() > self.position(),
                // The notifier is gone: fall back to the periodic read.
                Ok(Err(_)) => {
                    tokio::time::sleep(FOLLOW_MAX_INTERVAL).await;
                    true
                }
                Err(_) => true,
            };
            if behind && let Err(error) = self.catch_up(&pool).await {
                tracing::warn!(error = %error, "the validation view cannot read the log's tail");
            }
            tokio::time::sleep(FOLLOW_MIN_INTERVAL).await;
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error("no database connection: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Database(#[from] tokio_postgres::Error),
}

/// The head, then every event of the view's types after `from` (sent together: the second
/// statement's snapshot is at least as new as the first, and holds a gap-free prefix of the
/// log, since commit order is position order).
async fn read_tail(
    client: &impl GenericClient,
    from: i64,
) -> Result<(i64, Vec<Envelope>), tokio_postgres::Error> {
    let tail_sql = format!(
        "{} WHERE position > $1 AND event_type = ANY($2) ORDER BY position",
        keyledger_events::store::SELECT_ENVELOPE
    );
    let (head, tail) = futures::try_join!(
        client.prepare_cached("SELECT coalesce(max(position), 0) FROM events"),
        client.prepare_cached(&tail_sql),
    )?;
    let types = EVENT_TYPES.to_vec();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&from, &types];
    let (head, rows) =
        futures::try_join!(client.query_one(&head, &[]), client.query(&tail, &params),)?;
    let head: i64 = head.try_get(0)?;
    let mut events = Vec::with_capacity(rows.len());
    for row in &rows {
        match keyledger_events::store::envelope_from_row(row) {
            Ok(event) => events.push(event),
            Err(keyledger_events::ReadError::Database(e)) => return Err(e),
            Err(keyledger_events::ReadError::Unreadable(e)) => {
                tracing::error!(error = %e, "the validation view skips an unreadable event");
            }
        }
    }
    let through = events.last().map_or(head, |e| e.position.max(head));
    Ok((through, events))
}

impl Inner {
    fn insert(&mut self, digest: [u8; 32], license: License) {
        if let Some(&index) = self.by_key.get(&digest) {
            if let Some(slot) = self.licenses.get_mut(index as usize) {
                *slot = license;
            }
            return;
        }
        let Ok(index) = u32::try_from(self.licenses.len()) else {
            tracing::error!("the validation view is full (2^32 licenses)");
            return;
        };
        self.by_id.insert(license.license_id, index);
        self.by_key.insert(digest, index);
        self.licenses.push(license);
    }

    fn license_mut(&mut self, license_id: Uuid) -> Option<&mut License> {
        let index = *self.by_id.get(&license_id)?;
        self.licenses.get_mut(index as usize)
    }

    fn apply(&mut self, envelope: &Envelope) {
        // Most events a node follows are validations: known by their type before any decoding.
        if envelope.event_type == keyledger_events::event_type!(UsageEvent::LicenseValidated) {
            match UsageEvent::decode(envelope) {
                Ok(Some(UsageEvent::LicenseValidated(e))) if e.code == ValidationCode::Valid => {
                    if let Some(license) = self.license_mut(e.license_id) {
                        license.count_valid(e.validated_at.date_naive());
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "the validation view skips an event"),
            }
            return;
        }
        let event = match LicenseEvent::decode(envelope) {
            Ok(Some(event)) => event,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(error = %e, "the validation view skips an event");
                return;
            }
        };
        match event {
            LicenseEvent::LicenseIssued(e) => {
                if let Some(digest) = digest_from_hex(&e.key_hash) {
                    self.insert(
                        digest,
                        License::new(e.license_id, e.tier, e.expires_at, e.entitlements),
                    );
                }
            }
            LicenseEvent::LicenseImported(e) => {
                if let Some(digest) = digest_from_hex(&e.key_hash) {
                    self.insert(
                        digest,
                        License::new(e.license_id, e.tier, e.expires_at, Vec::new()),
                    );
                }
            }
            LicenseEvent::LicenseRevoked(e) => {
                self.set_status(e.license_id, LicenseStatus::Revoked)
            }
            LicenseEvent::LicenseSuspended(e) => {
                self.set_status(e.license_id, LicenseStatus::Suspended)
            }
            LicenseEvent::LicenseReinstated(e) => {
                self.set_status(e.license_id, LicenseStatus::Active)
            }
            LicenseEvent::LicenseRenewed(e) => {
                if let Some(license) = self.license_mut(e.license_id) {
                    license.expires_at = Some(e.expires_at);
                }
            }
            LicenseEvent::LicensePolicyChanged(e) => {
                if let Some(license) = self.license_mut(e.license_id) {
                    license.entitlements = e.entitlements.into_iter().map(Into::into).collect();
                }
            }
            LicenseEvent::InstallationActivated(e) => {
                if let Some(license) = self.license_mut(e.license_id) {
                    license.installations.retain(|i| **i != *e.installation_id);
                    license.installations.push(e.installation_id.into());
                }
            }
            LicenseEvent::InstallationDeactivated(e) => {
                if let Some(license) = self.license_mut(e.license_id) {
                    license.installations.retain(|i| **i != *e.installation_id);
                }
            }
            LicenseEvent::CertificateIssued(_) => {}
        }
    }

    fn set_status(&mut self, license_id: Uuid, status: LicenseStatus) {
        if let Some(license) = self.license_mut(license_id) {
            license.status = status;
        }
    }
}

impl HeadView for ValidationView {
    fn event_types(&self) -> &'static [&'static str] {
        EVENT_TYPES
    }

    fn position(&self) -> i64 {
        self.read().position
    }

    fn advance(&self, from: i64, events: &[Envelope], through: i64) {
        let mut inner = self.write();
        if inner.position < from {
            // Events between the view's position and `from` were never handed over.
            return;
        }
        let before = inner.licenses.len();
        for event in events {
            if event.position > inner.position && event.position <= through {
                inner.apply(event);
            }
        }
        inner.position = inner.position.max(through);
        if inner.licenses.len() != before {
            metrics::gauge!("keyledger_validation_view_licenses").set(inner.licenses.len() as f64);
        }
    }

    fn begin_decisions(&self) {
        self.write().tentative.clear();
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use keyledger_events::license::{LicenseIssued, LicenseRevoked, LicenseValidated};
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    const KEY: [u8; 32] = [7; 32];

    fn at(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, day, 12, 0, 0).unwrap()
    }

    fn envelope(position: i64, event: &impl EventPayload) -> Envelope {
        let new = event.to_new_event(Uuid::new_v4());
        Envelope {
            position,
            event_id: new.event_id,
            stream_id: "license-test".to_owned(),
            version: position,
            event_type: new.event_type.to_owned(),
            schema_version: new.schema_version,
            data: new.data,
            metadata: json!({}),
            recorded_at: at(1),
            hash: Vec::new(),
        }
    }

    fn issued(license_id: Uuid) -> LicenseEvent {
        LicenseEvent::LicenseIssued(LicenseIssued {
            license_id,
            key_hash: KEY.iter().map(|b| format!("{b:02x}")).collect(),
            key_prefix: "lic_7777".to_owned(),
            owner: "acme".to_owned(),
            tier: Tier::Pro,
            issued_at: at(1),
            expires_at: None,
            metadata: json!({}),
            entitlements: vec!["sso".to_owned()],
            max_installations: None,
        })
    }

    fn validated(license_id: Uuid, code: ValidationCode, day: u32) -> UsageEvent {
        UsageEvent::LicenseValidated(LicenseValidated {
            license_id,
            code,
            feature: None,
            installation_id: None,
            metadata: json!({}),
            validated_at: at(day),
        })
    }

    fn view_with_license() -> (ValidationView, Uuid) {
        let view = ValidationView::default();
        let license_id = Uuid::new_v4();
        view.advance(0, &[envelope(1, &issued(license_id))], 1);
        (view, license_id)
    }

    fn day(day: u32) -> NaiveDate {
        at(day).date_naive()
    }

    #[test]
    fn an_issued_license_is_found_by_its_key_and_a_revoke_reaches_it() {
        let (view, license_id) = view_with_license();
        assert_eq!(view.license_id(&KEY), Some(license_id));
        let revoke = LicenseEvent::LicenseRevoked(LicenseRevoked {
            license_id,
            reason: "chargeback".to_owned(),
            revoked_at: at(2),
        });
        view.advance(1, &[envelope(5, &revoke)], 9);
        let license = view.license(license_id).unwrap();
        assert_eq!(license.status, LicenseStatus::Revoked);
        assert_eq!(&*license.entitlements, &["sso".into()]);
        assert_eq!(view.position(), 9);
    }

    #[test]
    fn an_event_handed_over_twice_counts_once() {
        let (view, license_id) = view_with_license();
        let valid = envelope(2, &validated(license_id, ValidationCode::Valid, 3));
        // After the commit (from the writer), then again in a tail read that started earlier.
        view.advance(1, std::slice::from_ref(&valid), 2);
        view.advance(1, std::slice::from_ref(&valid), 2);
        assert_eq!(view.license(license_id).unwrap().valid_on(day(3)), 1);
    }

    #[test]
    fn events_after_a_gap_are_not_applied() {
        let (view, license_id) = view_with_license();
        let valid = envelope(8, &validated(license_id, ValidationCode::Valid, 3));
        // The view is at 1; events in (1, 7] were never handed over.
        view.advance(7, &[valid], 8);
        assert_eq!(view.position(), 1);
        assert_eq!(view.license(license_id).unwrap().valid_on(day(3)), 0);
    }

    #[test]
    fn only_valid_verdicts_count_and_a_new_day_starts_from_zero() {
        let (view, license_id) = view_with_license();
        view.advance(
            1,
            &[
                envelope(2, &validated(license_id, ValidationCode::Valid, 3)),
                envelope(3, &validated(license_id, ValidationCode::QuotaExceeded, 3)),
                envelope(4, &validated(license_id, ValidationCode::Valid, 3)),
                envelope(5, &validated(license_id, ValidationCode::Valid, 4)),
                // A late event of an older day changes nothing.
                envelope(6, &validated(license_id, ValidationCode::Valid, 3)),
            ],
            6,
        );
        let license = view.license(license_id).unwrap();
        assert_eq!((license.valid_on(day(3)), license.valid_on(day(4))), (0, 1));
    }

    #[test]
    fn a_batch_sees_its_own_earlier_valid_verdicts_until_the_next_batch_begins() {
        let (view, license_id) = view_with_license();
        let mut seen = Vec::new();
        view.begin_decisions();
        for _ in 0..3 {
            view.decide(license_id, day(3), |_, count| {
                seen.push(count);
                (ValidationCode::Valid, ())
            });
        }
        view.decide(license_id, day(3), |_, count| {
            seen.push(count);
            (ValidationCode::QuotaExceeded, ())
        });
        // The batch rolled back: the next one starts from the committed count.
        view.begin_decisions();
        view.decide(license_id, day(3), |_, count| {
            seen.push(count);
            (ValidationCode::Valid, ())
        });
        assert_eq!(seen, [0, 1, 2, 3, 0]);
        assert_eq!(
            view.decide(Uuid::new_v4(), day(3), |_, _| (ValidationCode::Valid, ())),
            None
        );
    }

    #[test]
    fn memory_is_counted_per_license() {
        let (view, _) = view_with_license();
        assert!(view.memory_bytes() >= size_of::<License>() + 32);
    }

    proptest! {
        #[test]
        fn a_digest_round_trips_through_its_hex(bytes in proptest::array::uniform32(any::<u8>())) {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            prop_assert_eq!(digest_from_hex(&hex), Some(bytes));
            prop_assert_eq!(digest_from_hex(&hex.to_uppercase()), Some(bytes));
        }

        #[test]
        fn text_that_is_not_64_hex_digits_is_no_digest(text in ".{0,80}") {
            let is_hex = text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit());
            prop_assert_eq!(digest_from_hex(&text).is_some(), is_hex);
        }
    }
}
