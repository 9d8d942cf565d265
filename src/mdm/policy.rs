//! The channel lifecycle as pure decisions: the per-device [`ChannelRecord`],
//! how sessions and push outcomes update it, and the [`Policy`] that says
//! whether to push a device ([`PushDecision`]), whether to set the PFN again at
//! its next session ([`ResetReason`]) and what is due ([`DueEntry`]).
//!
//! Following the MDM push document: a channel lives 30 days; a channel that
//! answered 410, or is older than 30 days, is not pushed and its PFN is set
//! again at the next sync; a channel nearing 30 days gets an early PFN reset; a
//! new ChannelURI read in a session replaces the old one and clears the flags;
//! push does not replace polling, so a device far behind its poll schedule is
//! reported. Nothing here reads the clock: `now` is always a parameter.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::parse::{ChannelReport, PushStatus};
use crate::wns::channel::ChannelUri;
use crate::wns::outcome::OutcomeKind;

const DAY_SECS: u64 = 86_400;
/// How long a WNS channel lives (30 days).
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(30 * DAY_SECS);
/// Default margin before 30 days in which the PFN is set again early (5 days).
pub const DEFAULT_EARLY_RESET_MARGIN: Duration = Duration::from_secs(5 * DAY_SECS);
/// Poll interval assumed when a device's is unknown: the CSP's 24-hour fallback schedule.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(DAY_SECS);
/// A device is overdue after this many poll intervals without a session.
pub const DEFAULT_POLL_OVERDUE_FACTOR: u32 = 3;

/// Seconds since the Unix epoch (0 for earlier times).
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The time `secs` seconds after the Unix epoch.
pub fn from_unix_secs(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// A short human form of a number of seconds: `45s`, `12m`, `5h 3m`, `31d 4h`.
pub fn short_duration(secs: u64) -> String {
    let (d, h, m) = (secs / DAY_SECS, secs % DAY_SECS / 3600, secs % 3600 / 60);
    if d > 0 && h > 0 {
        format!("{d}d {h}h")
    } else if d > 0 {
        format!("{d}d")
    } else if h > 0 && m > 0 {
        format!("{h}h {m}m")
    } else if h > 0 {
        format!("{h}h")
    } else if m > 0 {
        format!("{m}m")
    } else {
        format!("{secs}s")
    }
}

/// What the server knows about one device's push channel. Times are Unix seconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChannelRecord {
    /// The device.
    pub device_id: String,
    /// The current channel URI (always a validated WNS URI).
    #[serde(default)]
    pub channel_uri: Option<String>,
    /// When *this* channel was first seen (a lower bound of its age).
    #[serde(default)]
    pub first_seen: Option<u64>,
    /// The last management session whose reply was recorded.
    #[serde(default)]
    pub last_session_at: Option<u64>,
    /// The last push outcome for this channel.
    #[serde(default)]
    pub last_outcome: Option<OutcomeKind>,
    /// When that outcome happened.
    #[serde(default)]
    pub last_outcome_at: Option<u64>,
    /// The PFN must be set again at the next sync (410, or a Push/Status of 1, 3, 4 or 5).
    #[serde(default)]
    pub pfn_reset_needed: bool,
    /// The last `Push/Status` the device reported.
    #[serde(default)]
    pub push_status: Option<PushStatus>,
    /// The last `Push/PFN` the device reported.
    #[serde(default)]
    pub pfn: Option<String>,
    /// The device's steady poll interval, when its Poll nodes were read.
    #[serde(default)]
    pub expected_poll_interval_secs: Option<u64>,
}

/// What recording a session did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionChange {
    /// A new channel replaced the old one (flags cleared).
    NewChannel,
    /// The same channel as before.
    SameChannel,
    /// The reply carried no ChannelURI (not read, or null).
    NoChannel,
    /// The reply carried a ChannelURI that is not a WNS channel; it was not stored.
    RefusedChannel,
    /// The session is older than one already recorded; nothing changed.
    Stale,
}

/// What recording a push outcome did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeChange {
    /// Recorded for the current channel (or for a device with no channel).
    Applied,
    /// The device had no channel; the pushed one was adopted.
    AdoptedChannel,
    /// The outcome is for another channel than the current one; ignored.
    OtherChannel,
    /// The device reported no channel in a later session; ignored.
    Stale,
}

impl ChannelRecord {
    /// An empty record for a device.
    pub fn new(device_id: impl Into<String>) -> Self {
        ChannelRecord {
            device_id: device_id.into(),
            ..ChannelRecord::default()
        }
    }

    /// Records a management session's reply taken at `at`.
    pub fn apply_session(&mut self, report: &ChannelReport, at: SystemTime) -> SessionChange {
        let change = self.apply_session_parts(
            report.channel_uri.as_deref(),
            report.push_status,
            unix_secs(at),
        );
        if change != SessionChange::Stale {
            if let Some(pfn) = &report.pfn {
                self.pfn = Some(pfn.clone());
            }
            if let Some(i) = report.poll.steady_interval() {
                self.expected_poll_interval_secs = Some(i.as_secs());
            }
        }
        change
    }

    /// [`ChannelRecord::apply_session`] on its parts, in Unix seconds
    /// (allocates only when the channel changes).
    pub fn apply_session_parts(
        &mut self,
        channel_uri: Option<&str>,
        push_status: Option<PushStatus>,
        at: u64,
    ) -> SessionChange {
        if self.last_session_at.is_some_and(|last| at < last) {
            return SessionChange::Stale;
        }
        self.last_session_at = Some(at);
        if self.first_seen.is_some_and(|first| at < first) {
            // Older than the first sighting of the current channel (say, from a
            // campaign report): the session happened, but its channel is stale.
            return SessionChange::Stale;
        }
        let mut change = SessionChange::NoChannel;
        if let Some(uri) = channel_uri {
            if self.channel_uri.as_deref() == Some(uri) {
                change = SessionChange::SameChannel;
                self.first_seen.get_or_insert(at);
            } else if ChannelUri::parse(uri).is_err() {
                change = SessionChange::RefusedChannel;
            } else {
                self.channel_uri = Some(uri.to_string());
                self.first_seen = Some(at);
                self.pfn_reset_needed = false;
                self.last_outcome = None;
                self.last_outcome_at = None;
                change = SessionChange::NewChannel;
            }
        }
        if let Some(status) = push_status {
            self.push_status = Some(status);
            if status.needs_pfn_reset() {
                self.pfn_reset_needed = true;
            }
        }
        change
    }

    /// Records the outcome of a push to `channel_uri` at `at`.
    ///
    /// An outcome for another channel than the current one is ignored; a device
    /// with no channel adopts a valid pushed one (first seen at `at`). A 410
    /// marks the PFN for a reset whatever the order of outcomes.
    pub fn apply_outcome<'a>(
        &mut self,
        channel_uri: impl Into<Option<&'a str>>,
        kind: OutcomeKind,
        at: SystemTime,
    ) -> OutcomeChange {
        self.apply_outcome_parts(channel_uri.into(), kind, unix_secs(at))
    }

    /// [`ChannelRecord::apply_outcome`] in Unix seconds.
    pub fn apply_outcome_parts(
        &mut self,
        channel_uri: Option<&str>,
        kind: OutcomeKind,
        at: u64,
    ) -> OutcomeChange {
        let mut change = OutcomeChange::Applied;
        match (channel_uri, self.channel_uri.as_deref()) {
            (Some(pushed), Some(current)) if pushed == current => {}
            (_, Some(_)) => return OutcomeChange::OtherChannel,
            (Some(pushed), None) if ChannelUri::parse(pushed).is_ok() => {
                if self.last_session_at.is_some_and(|s| s > at) {
                    return OutcomeChange::Stale;
                }
                self.channel_uri = Some(pushed.to_string());
                self.first_seen = Some(at);
                change = OutcomeChange::AdoptedChannel;
            }
            // No channel, and the pushed URI is missing or not a WNS channel.
            (_, None) => {}
        }
        if kind == OutcomeKind::ChannelExpired {
            self.pfn_reset_needed = true;
        }
        if self.last_outcome_at.is_none_or(|t| at >= t) {
            self.last_outcome = Some(kind);
            self.last_outcome_at = Some(at);
        }
        change
    }

    /// How old the current channel is at `now` (by its first sighting).
    pub fn channel_age(&self, now: SystemTime) -> Option<Duration> {
        self.age_secs(unix_secs(now)).map(Duration::from_secs)
    }

    fn age_secs(&self, now: u64) -> Option<u64> {
        self.channel_uri.as_ref()?;
        self.first_seen.map(|f| now.saturating_sub(f))
    }
}

/// Why a device is not pushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// No channel is known.
    NoChannel,
    /// The channel answered 410.
    ChannelExpired,
    /// The channel is older than the channel lifetime.
    ChannelTooOld,
    /// The channel answered 404.
    ChannelInvalid,
    /// The channel answered 403: the PFN and the credentials belong to different apps.
    ChannelAppMismatch,
    /// WNS answered 410 "domain blocked".
    DomainBlocked,
    /// The pushed URI was refused as not a WNS channel.
    InvalidChannelRecord,
    /// The device reported a Push/Status that needs the PFN set again.
    PfnResetPending,
}

impl SkipReason {
    /// One sentence for people.
    pub fn describe(self) -> &'static str {
        match self {
            SkipReason::NoChannel => "no channel URI is known",
            SkipReason::ChannelExpired => "the channel answered 410 (expired)",
            SkipReason::ChannelTooOld => "the channel is older than 30 days",
            SkipReason::ChannelInvalid => "the channel answered 404 (unknown to WNS)",
            SkipReason::ChannelAppMismatch => {
                "the channel answered 403: the PFN and the WNS credentials belong to different apps"
            }
            SkipReason::DomainBlocked => "WNS blocked this sender (410 domain blocked)",
            SkipReason::InvalidChannelRecord => "the pushed channel URI is not a WNS channel",
            SkipReason::PfnResetPending => {
                "the device reported a Push/Status that needs the PFN set again"
            }
        }
    }
}

/// Whether to push a device now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PushDecision {
    /// Push the stored channel.
    Push,
    /// Do not push; the poll schedule (or the next session's PFN reset) takes over.
    Skip(SkipReason),
}

impl PushDecision {
    /// True for [`PushDecision::Push`].
    pub fn is_push(self) -> bool {
        self == PushDecision::Push
    }
}

/// Why the PFN should be set again at the device's next session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResetReason {
    /// The channel answered 410.
    ChannelExpired,
    /// The device reported a Push/Status of 1, 3, 4 or 5.
    DeviceStatus,
    /// The channel is older than the lifetime.
    ChannelTooOld,
    /// The channel is within the early-reset margin of the lifetime.
    NearingExpiry,
    /// No channel is known.
    NoChannel,
}

/// What is due for a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DueCategory {
    /// 410 or older than 30 days: do not push; set the PFN again at the next sync.
    ResetPfnDead,
    /// Within the margin of 30 days: set the PFN again early.
    EarlyPfnReset,
    /// 404 or not a WNS URI: read ChannelURI again.
    InvalidChannel,
    /// 403: PFN and credentials do not match.
    PfnMismatch,
    /// WNS blocked the sender.
    PushBlocked,
    /// No channel known.
    NoChannel,
    /// The device reported a Push/Status failure that a PFN reset does not fix (2, 6, 8).
    PushError,
    /// The device missed its poll schedule by a wide margin.
    PollOverdue,
}

impl DueCategory {
    /// A stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            DueCategory::ResetPfnDead => "reset_pfn_dead",
            DueCategory::EarlyPfnReset => "early_pfn_reset",
            DueCategory::InvalidChannel => "invalid_channel",
            DueCategory::PfnMismatch => "pfn_mismatch",
            DueCategory::PushBlocked => "push_blocked",
            DueCategory::NoChannel => "no_channel",
            DueCategory::PushError => "push_error",
            DueCategory::PollOverdue => "poll_overdue",
        }
    }

    /// What the MDM server should do.
    pub fn action(self) -> &'static str {
        match self {
            DueCategory::ResetPfnDead => {
                "do not push; set Push/PFN again at the next sync, then read Push/ChannelURI"
            }
            DueCategory::EarlyPfnReset => {
                "set Push/PFN again at the next sync, before the channel reaches 30 days"
            }
            DueCategory::InvalidChannel => {
                "do not push; read Push/ChannelURI at the next session (set Push/PFN again if unchanged)"
            }
            DueCategory::PfnMismatch => {
                "do not push; the PFN on the device and the WNS credentials belong to different apps"
            }
            DueCategory::PushBlocked => "WNS blocked this sender: stop pushing for this PFN",
            DueCategory::NoChannel => {
                "no channel known: set Push/PFN and read Push/ChannelURI at the next session"
            }
            DueCategory::PushError => "the device reported a Push/Status failure: check the device",
            DueCategory::PollOverdue => {
                "missed its poll schedule (push does not replace polling): check the device"
            }
        }
    }
}

/// One thing due for one device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DueEntry {
    /// The device.
    pub device_id: String,
    /// What is due.
    pub category: DueCategory,
    /// The current channel.
    pub channel_uri: Option<String>,
    /// Its age at `now`, in seconds.
    pub channel_age_secs: Option<u64>,
    /// Why, for people.
    pub detail: String,
}

/// Why a [`Policy`] is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The early-reset margin is not shorter than the channel lifetime.
    #[error("the early PFN reset margin ({margin}) must be shorter than the channel lifetime ({lifetime})")]
    MarginTooLarge {
        /// The margin, formatted.
        margin: String,
        /// The lifetime, formatted.
        lifetime: String,
    },
    /// A zero duration or factor.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
}

/// The decisions' parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// How long a channel lives (30 days).
    pub channel_lifetime: Duration,
    /// Set the PFN again this long before the lifetime runs out.
    pub early_reset_margin: Duration,
    /// Poll interval assumed when the device's is unknown.
    pub default_poll_interval: Duration,
    /// Overdue after this many poll intervals without a session.
    pub poll_overdue_factor: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            channel_lifetime: CHANNEL_LIFETIME,
            early_reset_margin: DEFAULT_EARLY_RESET_MARGIN,
            default_poll_interval: DEFAULT_POLL_INTERVAL,
            poll_overdue_factor: DEFAULT_POLL_OVERDUE_FACTOR,
        }
    }
}

impl Policy {
    /// Checks the parameters.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.channel_lifetime.is_zero() {
            return Err(PolicyError::Zero("the channel lifetime"));
        }
        if self.default_poll_interval.is_zero() {
            return Err(PolicyError::Zero("the poll interval"));
        }
        if self.poll_overdue_factor == 0 {
            return Err(PolicyError::Zero("the poll overdue factor"));
        }
        if self.early_reset_margin >= self.channel_lifetime {
            return Err(PolicyError::MarginTooLarge {
                margin: short_duration(self.early_reset_margin.as_secs()),
                lifetime: short_duration(self.channel_lifetime.as_secs()),
            });
        }
        Ok(())
    }

    /// Whether a campaign should push this device now.
    pub fn should_push(&self, rec: &ChannelRecord, now: SystemTime) -> PushDecision {
        self.should_push_at(rec, unix_secs(now))
    }

    /// [`Policy::should_push`] in Unix seconds (no allocation).
    pub fn should_push_at(&self, rec: &ChannelRecord, now: u64) -> PushDecision {
        use PushDecision::Skip;
        if rec.channel_uri.is_none() {
            return Skip(match rec.last_outcome {
                Some(OutcomeKind::InvalidChannel) => SkipReason::InvalidChannelRecord,
                _ => SkipReason::NoChannel,
            });
        }
        match rec.last_outcome {
            Some(OutcomeKind::ChannelExpired) => return Skip(SkipReason::ChannelExpired),
            Some(OutcomeKind::ChannelInvalid) => return Skip(SkipReason::ChannelInvalid),
            Some(OutcomeKind::ChannelAppMismatch) => return Skip(SkipReason::ChannelAppMismatch),
            Some(OutcomeKind::DomainBlocked) => return Skip(SkipReason::DomainBlocked),
            Some(OutcomeKind::InvalidChannel) => return Skip(SkipReason::InvalidChannelRecord),
            _ => {}
        }
        if rec.pfn_reset_needed {
            return Skip(SkipReason::PfnResetPending);
        }
        if rec
            .age_secs(now)
            .is_some_and(|age| age >= self.channel_lifetime.as_secs())
        {
            return Skip(SkipReason::ChannelTooOld);
        }
        PushDecision::Push
    }

    /// Whether to set the PFN again at the device's next session, and why.
    pub fn pfn_reset_reason(&self, rec: &ChannelRecord, now: SystemTime) -> Option<ResetReason> {
        self.pfn_reset_reason_at(rec, unix_secs(now))
    }

    /// [`Policy::pfn_reset_reason`] in Unix seconds.
    pub fn pfn_reset_reason_at(&self, rec: &ChannelRecord, now: u64) -> Option<ResetReason> {
        if rec.channel_uri.is_none() {
            return Some(ResetReason::NoChannel);
        }
        if rec.last_outcome == Some(OutcomeKind::ChannelExpired) {
            return Some(ResetReason::ChannelExpired);
        }
        if rec.pfn_reset_needed {
            return Some(ResetReason::DeviceStatus);
        }
        let age = rec.age_secs(now)?;
        let lifetime = self.channel_lifetime.as_secs();
        if age >= lifetime {
            Some(ResetReason::ChannelTooOld)
        } else if age >= lifetime.saturating_sub(self.early_reset_margin.as_secs()) {
            Some(ResetReason::NearingExpiry)
        } else {
            None
        }
    }

    /// Everything due for one device at `now` (possibly several categories).
    pub fn due(&self, rec: &ChannelRecord, now: SystemTime) -> Vec<DueEntry> {
        let now = unix_secs(now);
        let age = rec.age_secs(now);
        let mut out = Vec::new();
        let mut add = |category, detail: String| {
            out.push(DueEntry {
                device_id: rec.device_id.clone(),
                category,
                channel_uri: rec.channel_uri.clone(),
                channel_age_secs: age,
                detail,
            })
        };
        let age_text = || age.map_or_else(|| "unknown".to_string(), short_duration);
        match self.should_push_at(rec, now) {
            PushDecision::Skip(reason) => {
                let category = match reason {
                    SkipReason::ChannelExpired
                    | SkipReason::ChannelTooOld
                    | SkipReason::PfnResetPending => DueCategory::ResetPfnDead,
                    SkipReason::ChannelInvalid | SkipReason::InvalidChannelRecord => {
                        DueCategory::InvalidChannel
                    }
                    SkipReason::ChannelAppMismatch => DueCategory::PfnMismatch,
                    SkipReason::DomainBlocked => DueCategory::PushBlocked,
                    SkipReason::NoChannel => DueCategory::NoChannel,
                };
                let mut detail = reason.describe().to_string();
                if reason == SkipReason::PfnResetPending {
                    if let Some(s) = rec.push_status {
                        detail = format!("the device reported Push/Status {s}");
                    }
                }
                if rec.channel_uri.is_some() {
                    detail.push_str(&format!("; channel age {}", age_text()));
                }
                add(category, detail);
            }
            PushDecision::Push => {
                if self.pfn_reset_reason_at(rec, now) == Some(ResetReason::NearingExpiry) {
                    let left = self
                        .channel_lifetime
                        .as_secs()
                        .saturating_sub(age.unwrap_or(0));
                    add(
                        DueCategory::EarlyPfnReset,
                        format!(
                            "channel age {}; {} left of 30 days",
                            age_text(),
                            short_duration(left)
                        ),
                    );
                }
            }
        }
        if let Some(s) = rec.push_status {
            if matches!(
                s,
                PushStatus::DeviceAuthentication
                    | PushStatus::ChannelUriRevokeFailed
                    | PushStatus::UnknownOrNotOnSku
            ) {
                add(
                    DueCategory::PushError,
                    format!("the device reported Push/Status {s}"),
                );
            }
        }
        if let Some(last) = rec.last_session_at {
            let interval = rec
                .expected_poll_interval_secs
                .filter(|&i| i > 0)
                .unwrap_or(self.default_poll_interval.as_secs());
            let since = now.saturating_sub(last);
            if since > interval.saturating_mul(u64::from(self.poll_overdue_factor)) {
                add(
                    DueCategory::PollOverdue,
                    format!(
                        "last session {} ago; expected every {}",
                        short_duration(since),
                        short_duration(interval)
                    ),
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000;
    const A: &str = "https://db5p.notify.windows.com/?token=A";
    const B: &str = "https://db5p.notify.windows.com/?token=B";

    fn at(secs: u64) -> SystemTime {
        from_unix_secs(secs)
    }

    fn report(uri: Option<&str>, status: Option<PushStatus>) -> ChannelReport {
        ChannelReport {
            channel_uri: uri.map(str::to_string),
            push_status: status,
            ..ChannelReport::default()
        }
    }

    fn cats(p: &Policy, r: &ChannelRecord, now: u64) -> Vec<DueCategory> {
        p.due(r, at(now)).into_iter().map(|e| e.category).collect()
    }

    #[test]
    fn new_channel_replaces_and_clears() {
        let p = Policy::default();
        let mut r = ChannelRecord::new("d1");
        assert_eq!(
            r.apply_session(&report(Some(A), Some(PushStatus::Success)), at(T0)),
            SessionChange::NewChannel
        );
        assert_eq!(r.first_seen, Some(T0));
        assert_eq!(
            r.apply_outcome(A, OutcomeKind::ChannelExpired, at(T0 + 10)),
            OutcomeChange::Applied
        );
        assert!(r.pfn_reset_needed);
        assert_eq!(
            p.should_push(&r, at(T0 + 20)),
            PushDecision::Skip(SkipReason::ChannelExpired)
        );
        assert_eq!(
            p.pfn_reset_reason(&r, at(T0 + 20)),
            Some(ResetReason::ChannelExpired)
        );
        // Same channel read again: still dead.
        assert_eq!(
            r.apply_session(&report(Some(A), Some(PushStatus::Success)), at(T0 + 30)),
            SessionChange::SameChannel
        );
        assert!(!p.should_push(&r, at(T0 + 40)).is_push());
        // A new channel clears everything.
        assert_eq!(
            r.apply_session(&report(Some(B), None), at(T0 + 50)),
            SessionChange::NewChannel
        );
        assert!(!r.pfn_reset_needed);
        assert_eq!(r.last_outcome, None);
        assert_eq!(r.first_seen, Some(T0 + 50));
        assert!(p.should_push(&r, at(T0 + 60)).is_push());
        // An old outcome for the old channel is ignored now.
        assert_eq!(
            r.apply_outcome(A, OutcomeKind::ChannelExpired, at(T0 + 70)),
            OutcomeChange::OtherChannel
        );
        assert!(p.should_push(&r, at(T0 + 80)).is_push());
    }

    #[test]
    fn age_boundaries() {
        let p = Policy::default();
        let mut r = ChannelRecord::new("d");
        r.apply_session(&report(Some(A), None), at(T0));
        let life = CHANNEL_LIFETIME.as_secs();
        let margin = DEFAULT_EARLY_RESET_MARGIN.as_secs();
        assert!(p.should_push(&r, at(T0 + life - 1)).is_push());
        assert_eq!(
            p.should_push(&r, at(T0 + life)),
            PushDecision::Skip(SkipReason::ChannelTooOld)
        );
        assert_eq!(p.pfn_reset_reason(&r, at(T0 + life - margin - 1)), None);
        assert_eq!(
            p.pfn_reset_reason(&r, at(T0 + life - margin)),
            Some(ResetReason::NearingExpiry)
        );
        assert_eq!(
            p.pfn_reset_reason(&r, at(T0 + life)),
            Some(ResetReason::ChannelTooOld)
        );
        // (A large overdue factor keeps the poll check out of these.)
        let q = Policy {
            poll_overdue_factor: 100,
            ..p
        };
        assert!(cats(&q, &r, T0 + life - margin - 1).is_empty());
        assert_eq!(
            cats(&q, &r, T0 + life - margin),
            [DueCategory::EarlyPfnReset]
        );
        // Past 30 days and, with no session for 3+ days, overdue as well.
        assert_eq!(
            cats(&p, &r, T0 + life),
            [DueCategory::ResetPfnDead, DueCategory::PollOverdue]
        );
        let wide = Policy {
            early_reset_margin: Duration::from_secs(10 * DAY_SECS),
            ..p
        };
        assert_eq!(
            wide.pfn_reset_reason(&r, at(T0 + 20 * DAY_SECS)),
            Some(ResetReason::NearingExpiry)
        );
    }

    #[test]
    fn poll_overdue_uses_device_interval() {
        let p = Policy::default();
        let mut r = ChannelRecord::new("d");
        r.apply_session(&report(Some(A), None), at(T0));
        assert!(!cats(&p, &r, T0 + 3 * DAY_SECS).contains(&DueCategory::PollOverdue));
        assert!(cats(&p, &r, T0 + 3 * DAY_SECS + 1).contains(&DueCategory::PollOverdue));
        r.expected_poll_interval_secs = Some(8 * 3600);
        assert!(cats(&p, &r, T0 + DAY_SECS + 1).contains(&DueCategory::PollOverdue));
        let no_session = ChannelRecord::new("x");
        assert_eq!(cats(&p, &no_session, T0), [DueCategory::NoChannel]);
    }

    #[test]
    fn device_status_flags() {
        let p = Policy::default();
        for (code, pending) in [
            (0, false),
            (1, true),
            (2, false),
            (3, true),
            (4, true),
            (5, true),
            (6, false),
            (7, false),
            (8, false),
        ] {
            let mut r = ChannelRecord::new("d");
            let s = PushStatus::from_code(code).unwrap();
            r.apply_session(&report(Some(A), Some(s)), at(T0));
            assert_eq!(r.pfn_reset_needed, pending, "{code}");
            assert_eq!(!p.should_push(&r, at(T0 + 1)).is_push(), pending, "{code}");
            let c = cats(&p, &r, T0 + 1);
            assert_eq!(
                c.contains(&DueCategory::PushError),
                matches!(code, 2 | 6 | 8),
                "{code}: {c:?}"
            );
        }
        let mut r = ChannelRecord::new("d");
        r.apply_session(
            &report(Some(A), Some(PushStatus::UnknownOrNotOnSku)),
            at(T0),
        );
        let e = p.due(&r, at(T0)).pop().unwrap();
        assert!(
            e.detail.contains("Unknown error") && e.detail.contains("not available on the SKU"),
            "{}",
            e.detail
        );
    }

    #[test]
    fn outcome_rules() {
        let p = Policy::default();
        // Adopting from a report when nothing is known.
        let mut r = ChannelRecord::new("d");
        assert_eq!(
            r.apply_outcome(A, OutcomeKind::Received, at(T0)),
            OutcomeChange::AdoptedChannel
        );
        assert_eq!(r.channel_uri.as_deref(), Some(A));
        assert_eq!(r.first_seen, Some(T0));
        // An out-of-order older Received does not hide a later 410.
        r.apply_outcome(A, OutcomeKind::ChannelExpired, at(T0 + 100));
        r.apply_outcome(A, OutcomeKind::Received, at(T0 + 50));
        assert_eq!(r.last_outcome, Some(OutcomeKind::ChannelExpired));
        assert!(r.pfn_reset_needed);
        // 404, 403, domain blocked.
        for (kind, reason, cat) in [
            (
                OutcomeKind::ChannelInvalid,
                SkipReason::ChannelInvalid,
                DueCategory::InvalidChannel,
            ),
            (
                OutcomeKind::ChannelAppMismatch,
                SkipReason::ChannelAppMismatch,
                DueCategory::PfnMismatch,
            ),
            (
                OutcomeKind::DomainBlocked,
                SkipReason::DomainBlocked,
                DueCategory::PushBlocked,
            ),
        ] {
            let mut r = ChannelRecord::new("d");
            r.apply_session(&report(Some(A), None), at(T0));
            r.apply_outcome(A, kind, at(T0 + 1));
            assert_eq!(p.should_push(&r, at(T0 + 2)), PushDecision::Skip(reason));
            assert_eq!(cats(&p, &r, T0 + 2), [cat]);
        }
        // Retryable or harmless outcomes keep the channel pushable.
        for kind in [
            OutcomeKind::Received,
            OutcomeKind::Throttled,
            OutcomeKind::Dropped,
            OutcomeKind::Unauthorized,
        ] {
            let mut r = ChannelRecord::new("d");
            r.apply_session(&report(Some(A), None), at(T0));
            r.apply_outcome(A, kind, at(T0 + 1));
            assert!(p.should_push(&r, at(T0 + 2)).is_push(), "{kind}");
        }
        // An invalid_channel row with a non-WNS URI is recorded but never adopted.
        let mut r = ChannelRecord::new("d");
        assert_eq!(
            r.apply_outcome("https://evil.test/?t", OutcomeKind::InvalidChannel, at(T0)),
            OutcomeChange::Applied
        );
        assert_eq!(r.channel_uri, None);
        assert_eq!(
            p.should_push(&r, at(T0)),
            PushDecision::Skip(SkipReason::InvalidChannelRecord)
        );
        // A push older than a session that saw no channel does not resurrect it.
        let mut r = ChannelRecord::new("d");
        r.apply_session(&report(None, Some(PushStatus::NoChannelUri)), at(T0 + 10));
        assert_eq!(
            r.apply_outcome(A, OutcomeKind::Received, at(T0)),
            OutcomeChange::Stale
        );
    }

    #[test]
    fn stale_sessions_and_refused_uris() {
        let mut r = ChannelRecord::new("d");
        r.apply_session(&report(Some(A), None), at(T0 + 100));
        assert_eq!(
            r.apply_session(&report(Some(B), None), at(T0)),
            SessionChange::Stale
        );
        assert_eq!(r.channel_uri.as_deref(), Some(A));
        // A session older than the current channel's first sighting (a channel
        // adopted from a later campaign report) does not replace it.
        let mut adopted = ChannelRecord::new("d");
        adopted.apply_outcome(A, OutcomeKind::Received, at(T0 + 100));
        assert_eq!(
            adopted.apply_session(&report(Some(B), None), at(T0)),
            SessionChange::Stale
        );
        assert_eq!(adopted.channel_uri.as_deref(), Some(A));
        assert_eq!(adopted.last_session_at, Some(T0));
        assert_eq!(
            r.apply_session_parts(Some("http://x.notify.windows.com/"), None, T0 + 200),
            SessionChange::RefusedChannel
        );
        assert_eq!(r.channel_uri.as_deref(), Some(A));
    }

    #[test]
    fn policy_validation() {
        Policy::default().validate().unwrap();
        let bad = Policy {
            early_reset_margin: CHANNEL_LIFETIME,
            ..Policy::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(PolicyError::MarginTooLarge { .. })
        ));
        let bad = Policy {
            poll_overdue_factor: 0,
            ..Policy::default()
        };
        assert!(bad.validate().is_err());
        assert_eq!(short_duration(45), "45s");
        assert_eq!(short_duration(3 * 3600 + 120), "3h 2m");
        assert_eq!(short_duration(31 * DAY_SECS + 4 * 3600), "31d 4h");
        assert_eq!(short_duration(DAY_SECS), "1d");
        assert_eq!(short_duration(3600), "1h");
    }
}
