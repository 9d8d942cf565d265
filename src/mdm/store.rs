//! The channel store: one [`ChannelRecord`] per device in an embedded redb
//! file, updated from campaign outcomes and parsed SyncML session replies, and
//! read for campaigns (`Policy::should_push`) and for what is due
//! ([`ChannelStore::due`]).
//!
//! Records are JSON in a `channels` table keyed by device ID (so fields can be
//! added without a migration); a `meta` table holds the schema version. A batch
//! of updates is one transaction: an import either lands whole or not at all.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::parse::ChannelReport;
use super::policy::{ChannelRecord, DueEntry, OutcomeChange, Policy, SessionChange};
use crate::wns::outcome::OutcomeKind;

const CHANNELS: TableDefinition<&str, &str> = TableDefinition::new("channels");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The schema version this build reads and writes.
pub const SCHEMA_VERSION: u64 = 1;
/// Longest accepted device ID, in bytes.
pub const MAX_DEVICE_ID_LEN: usize = 256;
/// The store file used when none is named.
pub const DEFAULT_STORE_PATH: &str = "fleetwake-channels.redb";

/// Why the store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the file.
    #[error("{}: another process has the channel store open", .path.display())]
    Locked {
        /// The store file.
        path: PathBuf,
    },
    /// The file is not a redb file, is damaged, or holds other tables.
    #[error("{}: not a fleetwake channel store: {detail}", .path.display())]
    NotAStore {
        /// The store file.
        path: PathBuf,
        /// What redb or the check found.
        detail: String,
    },
    /// A schema version this build does not read.
    #[error("{}: channel store schema version {found} is not supported (this build reads version {SCHEMA_VERSION})", .path.display())]
    Schema {
        /// The store file.
        path: PathBuf,
        /// The version found.
        found: u64,
    },
    /// Reading or writing failed.
    #[error("{}: cannot read or write the channel store: {detail}", .path.display())]
    Io {
        /// The store file.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
    /// A stored record does not decode.
    #[error("{}: the record of device {device_id:?} is unreadable: {detail}", .path.display())]
    CorruptRecord {
        /// The store file.
        path: PathBuf,
        /// The device.
        device_id: String,
        /// The decode error.
        detail: String,
    },
    /// A device ID is empty, too long or holds control characters.
    #[error("invalid device ID {value:?}: {reason}")]
    InvalidDeviceId {
        /// The value (shortened).
        value: String,
        /// What is wrong.
        reason: &'static str,
    },
}

impl StoreError {
    /// True when the cause is the input (a wrong file, a bad device ID, a locked
    /// store) rather than an I/O failure.
    pub fn is_input_error(&self) -> bool {
        !matches!(self, StoreError::Io { .. })
    }
}

/// Checks a device ID: 1 to 256 bytes, no control characters.
pub fn validate_device_id(id: &str) -> Result<(), StoreError> {
    let bad = |reason| StoreError::InvalidDeviceId {
        value: id.chars().take(80).collect(),
        reason,
    };
    if id.trim().is_empty() {
        return Err(bad("it is empty"));
    }
    if id.len() > MAX_DEVICE_ID_LEN {
        return Err(bad("it is longer than 256 bytes"));
    }
    if id.chars().any(char::is_control) {
        return Err(bad("it holds a control character"));
    }
    Ok(())
}

/// One change to apply to the store.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// A management session's parsed reply.
    Session {
        /// The device.
        device_id: String,
        /// The parsed reply.
        report: ChannelReport,
        /// When the session happened.
        at: SystemTime,
    },
    /// A push outcome from a campaign.
    Outcome {
        /// The device.
        device_id: String,
        /// The channel that was pushed.
        channel_uri: Option<String>,
        /// What happened.
        kind: OutcomeKind,
        /// When.
        at: SystemTime,
    },
}

/// What a batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ApplySummary {
    /// Records created.
    pub created: u64,
    /// Sessions that brought a new channel.
    pub new_channels: u64,
    /// Sessions that confirmed the known channel.
    pub same_channels: u64,
    /// Sessions without a ChannelURI.
    pub sessions_without_channel: u64,
    /// Sessions whose ChannelURI was not a WNS channel.
    pub refused_channels: u64,
    /// Outcomes recorded.
    pub outcomes_applied: u64,
    /// Outcomes that brought the device's first channel.
    pub channels_adopted: u64,
    /// Outcomes for another channel than the current one (ignored).
    pub outcomes_other_channel: u64,
    /// Sessions or outcomes older than what is known (ignored).
    pub stale: u64,
}

impl ApplySummary {
    fn session(&mut self, c: SessionChange) {
        match c {
            SessionChange::NewChannel => self.new_channels += 1,
            SessionChange::SameChannel => self.same_channels += 1,
            SessionChange::NoChannel => self.sessions_without_channel += 1,
            SessionChange::RefusedChannel => self.refused_channels += 1,
            SessionChange::Stale => self.stale += 1,
        }
    }

    fn outcome(&mut self, c: OutcomeChange) {
        match c {
            OutcomeChange::Applied => self.outcomes_applied += 1,
            OutcomeChange::AdoptedChannel => {
                self.outcomes_applied += 1;
                self.channels_adopted += 1
            }
            OutcomeChange::OtherChannel => self.outcomes_other_channel += 1,
            OutcomeChange::Stale => self.stale += 1,
        }
    }
}

/// The channel store (a redb file).
pub struct ChannelStore {
    db: redb::Database,
    path: PathBuf,
}

impl std::fmt::Debug for ChannelStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelStore")
            .field("path", &self.path)
            .finish()
    }
}

impl ChannelStore {
    /// Opens the store at `path`, creating it when the file does not exist or
    /// is empty. The file's integrity is checked on open.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let db = redb::Builder::new()
            .set_cache_size(32 << 20)
            .set_check_integrity_on_open(true)
            .create(&path)
            .map_err(|e| open_error(&path, e))?;
        let store = ChannelStore { db, path };
        store.init()?;
        Ok(store)
    }

    fn init(&self) -> Result<(), StoreError> {
        let io = |e: &dyn std::fmt::Display| self.io(e);
        let tx = self.db.begin_write().map_err(|e| io(&e))?;
        let has_meta = tx
            .list_tables()
            .map_err(|e| io(&e))?
            .any(|t| redb::TableHandle::name(&t) == "meta");
        let others: Vec<String> = tx
            .list_tables()
            .map_err(|e| io(&e))?
            .map(|t| redb::TableHandle::name(&t).to_string())
            .filter(|n| n != "meta" && n != "channels")
            .collect();
        if !has_meta && !others.is_empty() {
            return Err(StoreError::NotAStore {
                path: self.path.clone(),
                detail: format!(
                    "it is a redb database with other tables ({})",
                    others.join(", ")
                ),
            });
        }
        {
            let mut meta = tx.open_table(META).map_err(|e| self.table_error(e))?;
            let found = meta.get("schema").map_err(|e| io(&e))?.map(|v| v.value());
            match found {
                Some(SCHEMA_VERSION) => {}
                Some(found) => {
                    return Err(StoreError::Schema {
                        path: self.path.clone(),
                        found,
                    })
                }
                None => {
                    meta.insert("schema", SCHEMA_VERSION).map_err(|e| io(&e))?;
                }
            }
            tx.open_table(CHANNELS).map_err(|e| self.table_error(e))?;
        }
        tx.commit().map_err(|e| io(&e))
    }

    fn io(&self, e: &dyn std::fmt::Display) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            detail: e.to_string(),
        }
    }

    fn table_error(&self, e: redb::TableError) -> StoreError {
        match e {
            redb::TableError::TableTypeMismatch { .. }
            | redb::TableError::TableIsMultimap(_)
            | redb::TableError::TypeDefinitionChanged { .. } => StoreError::NotAStore {
                path: self.path.clone(),
                detail: e.to_string(),
            },
            other => self.io(&other),
        }
    }

    fn decode(&self, device_id: &str, json: &str) -> Result<ChannelRecord, StoreError> {
        serde_json::from_str(json).map_err(|e| StoreError::CorruptRecord {
            path: self.path.clone(),
            device_id: device_id.to_string(),
            detail: e.to_string(),
        })
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One device's record.
    pub fn get(&self, device_id: &str) -> Result<Option<ChannelRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.io(&e))?;
        let t = tx.open_table(CHANNELS).map_err(|e| self.table_error(e))?;
        let v = t.get(device_id).map_err(|e| self.io(&e))?;
        v.map(|v| self.decode(device_id, v.value())).transpose()
    }

    /// Every record, by device ID (a consistent snapshot).
    pub fn iter(
        &self,
    ) -> Result<impl Iterator<Item = Result<ChannelRecord, StoreError>> + '_, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.io(&e))?;
        let t = tx.open_table(CHANNELS).map_err(|e| self.table_error(e))?;
        let range = t.range::<&str>(..).map_err(|e| self.io(&e))?;
        Ok(range.map(move |item| {
            let (k, v) = item.map_err(|e| self.io(&e))?;
            self.decode(k.value(), v.value())
        }))
    }

    /// How many devices are stored.
    pub fn len(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.io(&e))?;
        let t = tx.open_table(CHANNELS).map_err(|e| self.table_error(e))?;
        redb::ReadableTableMetadata::len(&t).map_err(|e| self.io(&e))
    }

    /// True when no device is stored.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }

    /// Records a session's parsed reply (see [`ChannelRecord::apply_session`]).
    pub fn record_session(
        &self,
        device_id: &str,
        report: &ChannelReport,
        at: SystemTime,
    ) -> Result<SessionChange, StoreError> {
        self.update(device_id, |r| r.apply_session(report, at))
    }

    /// Records a push outcome (see [`ChannelRecord::apply_outcome`]).
    pub fn record_outcome<'a>(
        &self,
        device_id: &str,
        channel_uri: impl Into<Option<&'a str>>,
        kind: OutcomeKind,
        at: SystemTime,
    ) -> Result<OutcomeChange, StoreError> {
        let uri = channel_uri.into();
        self.update(device_id, |r| r.apply_outcome(uri, kind, at))
    }

    fn update<T>(
        &self,
        device_id: &str,
        f: impl FnOnce(&mut ChannelRecord) -> T,
    ) -> Result<T, StoreError> {
        validate_device_id(device_id)?;
        let tx = self.db.begin_write().map_err(|e| self.io(&e))?;
        let out = {
            let mut t = tx.open_table(CHANNELS).map_err(|e| self.table_error(e))?;
            let mut rec = self.load(&t, device_id)?;
            let out = f(&mut rec);
            self.save(&mut t, &rec)?;
            out
        };
        tx.commit().map_err(|e| self.io(&e))?;
        Ok(out)
    }

    fn load(
        &self,
        t: &redb::Table<&str, &str>,
        device_id: &str,
    ) -> Result<ChannelRecord, StoreError> {
        let existing = t.get(device_id).map_err(|e| self.io(&e))?;
        match existing {
            Some(v) => self.decode(device_id, v.value()),
            None => Ok(ChannelRecord::new(device_id)),
        }
    }

    fn save(&self, t: &mut redb::Table<&str, &str>, rec: &ChannelRecord) -> Result<(), StoreError> {
        let json = serde_json::to_string(rec).map_err(|e| self.io(&e))?;
        t.insert(rec.device_id.as_str(), json.as_str())
            .map_err(|e| self.io(&e))?;
        Ok(())
    }

    /// Applies a batch in one transaction: all of it, or (on any error) none.
    pub fn apply(
        &self,
        updates: impl IntoIterator<Item = Update>,
    ) -> Result<ApplySummary, StoreError> {
        let mut sum = ApplySummary::default();
        let tx = self.db.begin_write().map_err(|e| self.io(&e))?;
        {
            let mut t = tx.open_table(CHANNELS).map_err(|e| self.table_error(e))?;
            for u in updates {
                let device_id = match &u {
                    Update::Session { device_id, .. } | Update::Outcome { device_id, .. } => {
                        device_id
                    }
                };
                validate_device_id(device_id)?;
                let exists = t
                    .get(device_id.as_str())
                    .map_err(|e| self.io(&e))?
                    .is_some();
                let mut rec = self.load(&t, device_id)?;
                if !exists {
                    sum.created += 1;
                }
                match &u {
                    Update::Session { report, at, .. } => {
                        sum.session(rec.apply_session(report, *at))
                    }
                    Update::Outcome {
                        channel_uri,
                        kind,
                        at,
                        ..
                    } => sum.outcome(rec.apply_outcome(channel_uri.as_deref(), *kind, *at)),
                }
                self.save(&mut t, &rec)?;
            }
        }
        tx.commit().map_err(|e| self.io(&e))?;
        Ok(sum)
    }

    /// Everything due at `now`, by device ID then category.
    pub fn due(&self, policy: &Policy, now: SystemTime) -> Result<Vec<DueEntry>, StoreError> {
        let mut out = Vec::new();
        for rec in self.iter()? {
            out.extend(policy.due(&rec?, now));
        }
        Ok(out)
    }
}

fn open_error(path: &Path, e: redb::DatabaseError) -> StoreError {
    use redb::{DatabaseError as D, StorageError as S};
    let path = path.to_path_buf();
    match e {
        D::DatabaseAlreadyOpen => StoreError::Locked { path },
        D::Storage(S::Io(io)) if io.kind() == std::io::ErrorKind::InvalidData => {
            StoreError::NotAStore {
                path,
                detail: io.to_string(),
            }
        }
        D::Storage(S::Io(io)) => StoreError::Io {
            path,
            detail: io.to_string(),
        },
        other => StoreError::NotAStore {
            path,
            detail: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mdm::parse::{parse_device_reply, PushStatus};
    use crate::mdm::policy::{from_unix_secs, DueCategory, PushDecision, SkipReason};
    use crate::mdm::test_support::TempDir;

    const T0: u64 = 1_800_000_000;
    const DAY: u64 = 86_400;
    const A: &str = "https://db5p.notify.windows.com/?token=A";
    const B: &str = "https://db5p.notify.windows.com/?token=B";

    fn at(s: u64) -> SystemTime {
        from_unix_secs(s)
    }

    fn report(uri: Option<&str>, status: Option<PushStatus>) -> ChannelReport {
        ChannelReport {
            channel_uri: uri.map(str::to_string),
            push_status: status,
            ..ChannelReport::default()
        }
    }

    #[test]
    fn policy_against_the_store() {
        let dir = TempDir::new("policy");
        let store = ChannelStore::open(dir.join("s.redb")).unwrap();
        let p = Policy::default();
        // fresh: pushed; dead: 410; old: 31 days; nearing: 27 days; silent: no session for 5 days.
        store
            .record_session(
                "fresh",
                &report(Some(A), Some(PushStatus::Success)),
                at(T0 + 29 * DAY),
            )
            .unwrap();
        store
            .record_session("dead", &report(Some(A), None), at(T0 + 29 * DAY))
            .unwrap();
        assert_eq!(
            store
                .record_outcome(
                    "dead",
                    A,
                    OutcomeKind::ChannelExpired,
                    at(T0 + 29 * DAY + 5)
                )
                .unwrap(),
            OutcomeChange::Applied
        );
        store
            .record_session("old", &report(Some(B), None), at(T0))
            .unwrap();
        store
            .record_session("old", &report(Some(B), None), at(T0 + 30 * DAY))
            .unwrap();
        store
            .record_session("nearing", &report(Some(A), None), at(T0 + 3 * DAY))
            .unwrap();
        store
            .record_session("nearing", &report(Some(A), None), at(T0 + 29 * DAY))
            .unwrap();
        store
            .record_session("silent", &report(Some(B), None), at(T0 + 25 * DAY))
            .unwrap();
        store
            .record_outcome("invalid", None, OutcomeKind::InvalidChannel, at(T0))
            .unwrap();
        let now = at(T0 + 31 * DAY);
        let decide = |id: &str| p.should_push(&store.get(id).unwrap().unwrap(), now);
        assert_eq!(decide("fresh"), PushDecision::Push);
        assert_eq!(
            decide("dead"),
            PushDecision::Skip(SkipReason::ChannelExpired)
        );
        assert_eq!(decide("old"), PushDecision::Skip(SkipReason::ChannelTooOld));
        assert_eq!(decide("nearing"), PushDecision::Push);
        assert_eq!(decide("silent"), PushDecision::Push);
        assert_eq!(
            decide("invalid"),
            PushDecision::Skip(SkipReason::InvalidChannelRecord)
        );
        let due: Vec<(String, DueCategory)> = store
            .due(&p, now)
            .unwrap()
            .into_iter()
            .map(|e| (e.device_id, e.category))
            .collect();
        let want = [
            ("dead", DueCategory::ResetPfnDead),
            ("invalid", DueCategory::InvalidChannel),
            ("nearing", DueCategory::EarlyPfnReset),
            ("old", DueCategory::ResetPfnDead),
            ("silent", DueCategory::PollOverdue),
        ];
        let want: Vec<(String, DueCategory)> =
            want.iter().map(|(d, c)| (d.to_string(), *c)).collect();
        assert_eq!(due, want);
        // A new channel read in a session clears the dead one.
        assert_eq!(
            store
                .record_session(
                    "dead",
                    &report(Some(B), Some(PushStatus::Success)),
                    at(T0 + 31 * DAY)
                )
                .unwrap(),
            SessionChange::NewChannel
        );
        assert_eq!(decide("dead"), PushDecision::Push);
        assert_eq!(store.len().unwrap(), 6);
    }

    #[test]
    fn persists_across_reopen_and_batches_are_atomic() {
        let dir = TempDir::new("persist");
        let path = dir.join("s.redb");
        {
            let store = ChannelStore::open(&path).unwrap();
            let sum = store
                .apply([
                    Update::Session {
                        device_id: "d1".into(),
                        report: report(Some(A), None),
                        at: at(T0),
                    },
                    Update::Outcome {
                        device_id: "d2".into(),
                        channel_uri: Some(B.into()),
                        kind: OutcomeKind::Received,
                        at: at(T0),
                    },
                    Update::Outcome {
                        device_id: "d1".into(),
                        channel_uri: Some(B.into()),
                        kind: OutcomeKind::ChannelExpired,
                        at: at(T0),
                    },
                ])
                .unwrap();
            assert_eq!(sum.created, 2);
            assert_eq!(sum.new_channels, 1);
            assert_eq!(sum.channels_adopted, 1);
            assert_eq!(sum.outcomes_other_channel, 1);
            // A bad device ID fails the whole batch.
            let err = store
                .apply([
                    Update::Session {
                        device_id: "d3".into(),
                        report: report(Some(A), None),
                        at: at(T0),
                    },
                    Update::Session {
                        device_id: "bad\nid".into(),
                        report: report(Some(A), None),
                        at: at(T0),
                    },
                ])
                .unwrap_err();
            assert!(matches!(err, StoreError::InvalidDeviceId { .. }), "{err}");
            assert!(store.get("d3").unwrap().is_none());
        }
        let store = ChannelStore::open(&path).unwrap();
        let ids: Vec<String> = store
            .iter()
            .unwrap()
            .map(|r| r.unwrap().device_id)
            .collect();
        assert_eq!(ids, ["d1", "d2"]);
        assert_eq!(
            store.get("d1").unwrap().unwrap().channel_uri.as_deref(),
            Some(A)
        );
    }

    #[test]
    fn syncml_reply_into_store() {
        let dir = TempDir::new("syncml");
        let store = ChannelStore::open(dir.join("s.redb")).unwrap();
        let xml = format!(
            r#"<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr/><SyncBody>
<Results><CmdID>2</CmdID><MsgRef>1</MsgRef><CmdRef>3</CmdRef>
<Item><Source><LocURI>./Vendor/MSFT/DMClient/Provider/MS DM Server/Push/ChannelURI</LocURI></Source><Data>{A}</Data></Item>
<Item><Source><LocURI>./Vendor/MSFT/DMClient/Provider/MS DM Server/Push/Status</LocURI></Source><Data>0</Data></Item>
<Item><Source><LocURI>./Vendor/MSFT/DMClient/Provider/MS DM Server/Poll/IntervalForRemainingScheduledRetries</LocURI></Source><Data>2880</Data></Item>
</Results><Final/></SyncBody></SyncML>"#
        );
        let r = parse_device_reply(&xml).unwrap();
        store.record_session("dev", &r, at(T0)).unwrap();
        let rec = store.get("dev").unwrap().unwrap();
        assert_eq!(rec.channel_uri.as_deref(), Some(A));
        assert_eq!(rec.push_status, Some(PushStatus::Success));
        assert_eq!(rec.expected_poll_interval_secs, Some(2 * DAY));
        // With a 2-day poll, 5 days of silence is not 3 intervals yet; 7 is.
        let p = Policy::default();
        assert!(store.due(&p, at(T0 + 5 * DAY)).unwrap().is_empty());
        assert_eq!(
            store.due(&p, at(T0 + 7 * DAY)).unwrap()[0].category,
            DueCategory::PollOverdue
        );
    }

    #[test]
    fn refuses_other_files() {
        let dir = TempDir::new("other");
        let text = dir.join("text.redb");
        std::fs::write(&text, "this is not a database\n".repeat(100)).unwrap();
        let e = ChannelStore::open(&text).unwrap_err();
        assert!(matches!(e, StoreError::NotAStore { .. }), "{e}");
        assert!(e.is_input_error());
        assert!(e.to_string().contains("text.redb"), "{e}");
        // A redb file with someone else's tables.
        let foreign = dir.join("foreign.redb");
        {
            let db = redb::Database::create(&foreign).unwrap();
            let tx = db.begin_write().unwrap();
            {
                let t: TableDefinition<u64, u64> = TableDefinition::new("other");
                tx.open_table(t).unwrap().insert(1, 2).unwrap();
            }
            tx.commit().unwrap();
        }
        assert!(matches!(
            ChannelStore::open(&foreign).unwrap_err(),
            StoreError::NotAStore { .. }
        ));
        // A directory, and a file in a missing directory.
        assert!(ChannelStore::open(dir.join("missing/x.redb")).is_err());
        // Two opens of one file: the second is refused as locked.
        let p = dir.join("s.redb");
        let _a = ChannelStore::open(&p).unwrap();
        let e = ChannelStore::open(&p).unwrap_err();
        assert!(matches!(e, StoreError::Locked { .. }), "{e}");
    }

    #[test]
    fn device_id_rules() {
        assert!(validate_device_id("d1").is_ok());
        assert!(validate_device_id("").is_err());
        assert!(validate_device_id("  ").is_err());
        assert!(validate_device_id("a\tb").is_err());
        assert!(validate_device_id(&"x".repeat(257)).is_err());
    }
}
