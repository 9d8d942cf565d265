//! A simulated Windows fleet on a simulated clock, and the two MDM server
//! policies run against it: [`simulate`] with [`ServerPolicy::Guided`] (the
//! MDM push document's guidance) or [`ServerPolicy::Naive`], giving a
//! [`SimReport`].
//!
//! Each device gets a 30-day channel at enrollment, renews it when 15 days are
//! left and opens a management session when the renewal succeeds, retries on
//! the documented 1511 / 1607+ schedule ([`schedule`]), loses its WNS connection
//! under battery saver or Data Sense and its network when offline (the `world` module),
//! and, in a share of the fleet, never renews (the old-build bug). WNS keeps one
//! raw push per channel for an offline device until its TTL; several channels
//! of a device may be valid at once; a push to an expired channel answers 410.
//!
//! Devices do not interact, so each one runs its own event queue (a
//! `BinaryHeap` keyed by simulated second and sequence number) and the devices
//! are shared out over threads; the result depends only on the configuration
//! and seed, never on the thread count.

mod device;
pub mod schedule;
mod world;

use std::time::Duration;

use serde::Serialize;

use crate::mdm::policy::{Policy, CHANNEL_LIFETIME};
use schedule::DAY;

/// A range of durations, drawn uniformly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationRange {
    /// Shortest.
    pub min: Duration,
    /// Longest.
    pub max: Duration,
}

impl DurationRange {
    /// `min..=max` in seconds.
    pub const fn secs(min: u64, max: u64) -> Self {
        DurationRange {
            min: Duration::from_secs(min),
            max: Duration::from_secs(max),
        }
    }
}

impl Serialize for DurationRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("DurationRange", 2)?;
        st.serialize_field("min_secs", &self.min.as_secs())?;
        st.serialize_field("max_secs", &self.max.as_secs())?;
        st.end()
    }
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

/// The simulated fleet and server.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimConfig {
    /// Number of devices.
    pub devices: u32,
    /// Simulated days.
    pub days: u32,
    /// The seed: the same seed and configuration give the same report.
    pub seed: u64,
    /// Share of devices on 1511 retry logic (besides the never-renew ones).
    pub share_1511: f64,
    /// Share of devices with the old-build bug: the channel is never renewed (they run 1511 logic).
    pub share_buggy_never_renews: f64,
    /// Devices enroll uniformly over this period from the start.
    #[serde(rename = "enrollment_spread_secs", serialize_with = "secs")]
    pub enrollment_spread: Duration,
    /// How often the server wants to wake each device.
    #[serde(rename = "push_interval_secs", serialize_with = "secs")]
    pub push_interval: Duration,
    /// The device's steady poll interval.
    #[serde(rename = "poll_interval_secs", serialize_with = "secs")]
    pub poll_interval: Duration,
    /// `X-WNS-TTL` of each push (WNS drops a cached push after this).
    #[serde(rename = "push_ttl_secs", serialize_with = "secs")]
    pub push_ttl: Duration,
    /// A wake counts as reached when its push leads to a session within this time.
    #[serde(rename = "reach_within_secs", serialize_with = "secs")]
    pub reach_within: Duration,
    /// The guided server sets the PFN again this long before 30 days.
    #[serde(rename = "early_reset_margin_secs", serialize_with = "secs")]
    pub early_reset_margin: Duration,
    /// Chance per day of an offline spell (no network).
    pub offline_chance_per_day: f64,
    /// Length of an offline spell.
    pub offline: DurationRange,
    /// Share of devices with one long offline spell (a drawer, a holiday).
    pub share_long_offline: f64,
    /// Length of that spell.
    pub long_offline: DurationRange,
    /// Chance per day of a battery-saver spell (network, but no WNS connection).
    pub battery_saver_chance_per_day: f64,
    /// Length of a battery-saver spell.
    pub battery_saver: DurationRange,
    /// Share of devices that exhaust their Data Sense allowance every month
    /// (no WNS connection from a day in 15–28 of each 30-day cycle until it resets).
    pub share_data_sense: f64,
    /// From a push (or renewal) reaching the device to its session starting.
    pub session_delay: DurationRange,
    /// Worker threads (0: one per core). Does not change the result.
    #[serde(skip)]
    pub threads: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            devices: 10_000,
            days: 60,
            seed: 1,
            share_1511: 0.10,
            share_buggy_never_renews: 0.05,
            enrollment_spread: Duration::from_secs(7 * DAY),
            push_interval: Duration::from_secs(DAY),
            poll_interval: Duration::from_secs(DAY),
            push_ttl: Duration::from_secs(DAY),
            reach_within: Duration::from_secs(3600),
            early_reset_margin: crate::mdm::policy::DEFAULT_EARLY_RESET_MARGIN,
            offline_chance_per_day: 0.5,
            offline: DurationRange::secs(3600, 12 * 3600),
            share_long_offline: 0.05,
            long_offline: DurationRange::secs(5 * DAY, 25 * DAY),
            battery_saver_chance_per_day: 0.15,
            battery_saver: DurationRange::secs(3600, 8 * 3600),
            share_data_sense: 0.03,
            session_delay: DurationRange::secs(10, 120),
            threads: 0,
        }
    }
}

/// Why a [`SimConfig`] is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimConfigError {
    /// A value is out of its range.
    #[error("{field} must be {expected}")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// Its range.
        expected: &'static str,
    },
}

/// Most devices accepted.
pub const MAX_DEVICES: u32 = 10_000_000;
/// Most days accepted.
pub const MAX_DAYS: u32 = 3650;

impl SimConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), SimConfigError> {
        let bad = |field, expected| Err(SimConfigError::OutOfRange { field, expected });
        if self.devices == 0 || self.devices > MAX_DEVICES {
            return bad("devices", "between 1 and 10,000,000");
        }
        if self.days == 0 || self.days > MAX_DAYS {
            return bad("days", "between 1 and 3650");
        }
        for (field, v) in [
            ("share_1511", self.share_1511),
            ("share_buggy_never_renews", self.share_buggy_never_renews),
            ("offline_chance_per_day", self.offline_chance_per_day),
            ("share_long_offline", self.share_long_offline),
            (
                "battery_saver_chance_per_day",
                self.battery_saver_chance_per_day,
            ),
            ("share_data_sense", self.share_data_sense),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return bad(field, "a share between 0 and 1");
            }
        }
        for (field, d) in [
            ("push_interval", self.push_interval),
            ("poll_interval", self.poll_interval),
        ] {
            if d < Duration::from_secs(60) {
                return bad(field, "at least one minute");
            }
        }
        if self.push_ttl.is_zero() {
            return bad("push_ttl", "greater than zero");
        }
        if self.early_reset_margin >= CHANNEL_LIFETIME {
            return bad(
                "early_reset_margin",
                "shorter than the 30-day channel lifetime",
            );
        }
        for (field, r) in [
            ("offline", self.offline),
            ("long_offline", self.long_offline),
            ("battery_saver", self.battery_saver),
            ("session_delay", self.session_delay),
        ] {
            if r.min > r.max {
                return bad(field, "a range with min <= max");
            }
            if r.max > Duration::from_secs(u64::from(MAX_DAYS) * DAY) {
                return bad(field, "a range within 3650 days");
            }
        }
        Ok(())
    }

    /// The policy the guided server uses.
    pub fn guided_policy(&self) -> Policy {
        Policy {
            early_reset_margin: self.early_reset_margin,
            ..Policy::default()
        }
    }
}

/// Which server runs against the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerPolicy {
    /// Reads ChannelURI every session, sets the PFN again after a 410 and before
    /// 30 days, never pushes a dead channel, keeps polling.
    Guided,
    /// Keeps pushing the channel it learned at enrollment; never reads
    /// ChannelURI again nor sets the PFN again (the devices still poll).
    Naive,
}

impl ServerPolicy {
    /// `guided` or `naive`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerPolicy::Guided => "guided",
            ServerPolicy::Naive => "naive",
        }
    }
}

/// The figures of one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimReport {
    /// The server policy.
    pub policy: ServerPolicy,
    /// Devices simulated.
    pub devices: u32,
    /// Days simulated.
    pub days: u32,
    /// The seed.
    pub seed: u64,
    /// Devices running 1511 logic (never-renew ones included).
    pub devices_1511: u64,
    /// Devices with the never-renew bug.
    pub devices_never_renew: u64,
    /// Wakes the server wanted (one per device per push interval after enrollment).
    pub intended_wakes: u64,
    /// Pushes sent to WNS.
    pub pushes_sent: u64,
    /// Wakes not pushed because the channel was known dead (or none was known).
    pub pushes_skipped: u64,
    /// Pushes that hit a dead channel (410).
    pub pushes_410: u64,
    /// `pushes_410 / pushes_sent`.
    pub share_410: f64,
    /// Pushes sent in the last 7 simulated days.
    pub pushes_sent_last_week: u64,
    /// 410s in the last 7 simulated days.
    pub pushes_410_last_week: u64,
    /// `pushes_410_last_week / pushes_sent_last_week`.
    pub share_410_last_week: f64,
    /// Pushes WNS delivered at once (device connected).
    pub delivered_online: u64,
    /// Pushes WNS cached for an offline device.
    pub cached: u64,
    /// Cached pushes delivered when the device came back.
    pub delivered_from_cache: u64,
    /// Cached pushes replaced by a newer one for the same channel.
    pub cache_replaced: u64,
    /// Cached pushes dropped (TTL passed, or the channel expired meanwhile).
    pub cache_dropped: u64,
    /// Share of intended wakes whose push led to a session within `reach_within_secs`.
    pub push_reachability: f64,
    /// Share of intended wakes followed by any session (push, poll, renewal) within that time.
    pub wakes_served_by_any_session: f64,
    /// The window used for both shares.
    pub reach_within_secs: u64,
    /// Sessions started by a push.
    pub push_sessions: u64,
    /// Pushes received while the device could not open a session (Push/Status 7).
    pub push_sessions_failed: u64,
    /// Median time from push to session, in seconds.
    pub latency_p50_secs: Option<u64>,
    /// 95th percentile time from push to session, in seconds.
    pub latency_p95_secs: Option<u64>,
    /// Mean pushes sent to WNS per simulated day.
    pub wns_requests_per_day_mean: f64,
    /// Most pushes sent to WNS in one simulated day.
    pub wns_requests_per_day_peak: u64,
    /// Scheduled poll sessions.
    pub poll_sessions: u64,
    /// Scheduled polls missed for lack of network.
    pub polls_missed: u64,
    /// Sessions opened after a successful channel renewal or PFN reset.
    pub renewal_sessions: u64,
    /// Channels the devices obtained from WNS (enrollment, renewals, PFN resets).
    pub channel_registrations: u64,
    /// Channel requests that failed and were rescheduled.
    pub registration_failures: u64,
    /// Times the server set the PFN again.
    pub pfn_resets: u64,
}

/// Runs one server policy against the fleet.
pub fn simulate(cfg: &SimConfig, policy: ServerPolicy) -> Result<SimReport, SimConfigError> {
    cfg.validate()?;
    let threads = match cfg.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .clamp(1, 64)
    .min(cfg.devices as usize);
    let per = cfg.devices.div_ceil(threads as u32);
    let results: Vec<device::Stats> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads as u32)
            .map(|i| {
                let lo = i * per;
                let hi = ((i + 1) * per).min(cfg.devices);
                s.spawn(move || device::run_range(cfg, policy, lo..hi))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    let mut total = device::Stats::new(cfg.days);
    for r in results {
        total.merge(r);
    }
    Ok(total.report(cfg, policy))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(devices: u32, seed: u64) -> SimConfig {
        SimConfig {
            devices,
            days: 60,
            seed,
            threads: 2,
            ..SimConfig::default()
        }
    }

    #[test]
    fn guided_ends_with_almost_no_410_and_naive_keeps_hitting_them() {
        let cfg = small(3000, 42);
        let g = simulate(&cfg, ServerPolicy::Guided).unwrap();
        let n = simulate(&cfg, ServerPolicy::Naive).unwrap();
        // Direction and bounds.
        assert!(g.share_410 < 0.002, "guided 410 share {}", g.share_410);
        assert!(
            g.share_410_last_week < 0.002,
            "guided last week {}",
            g.share_410_last_week
        );
        assert!(n.share_410 > 0.25, "naive 410 share {}", n.share_410);
        assert!(
            n.share_410_last_week > 0.80,
            "naive last week {}",
            n.share_410_last_week
        );
        assert!(
            n.pushes_410 > 100 * g.pushes_410.max(1),
            "{} vs {}",
            n.pushes_410,
            g.pushes_410
        );
        assert!(
            g.push_reachability > n.push_reachability + 0.2,
            "{} vs {}",
            g.push_reachability,
            n.push_reachability
        );
        assert!(g.push_sessions > n.push_sessions);
        // Guided pays with PFN resets, mostly for the never-renew devices.
        assert!(g.pfn_resets > 0);
        assert_eq!(n.pfn_resets, 0);
        // Both keep polling.
        assert!(g.poll_sessions > 0 && n.poll_sessions > 0);
        // Same fleet for both.
        assert_eq!(g.devices_1511, n.devices_1511);
        assert_eq!(g.intended_wakes, n.intended_wakes);
        // Sanity of the accounting.
        for r in [&g, &n] {
            assert!(r.pushes_sent + r.pushes_skipped <= r.intended_wakes);
            assert!(r.pushes_410 <= r.pushes_sent);
            assert_eq!(r.pushes_sent, r.pushes_410 + r.delivered_online + r.cached);
            assert!(r.latency_p50_secs <= r.latency_p95_secs);
            assert!(r.wakes_served_by_any_session >= r.push_reachability);
            assert!(r.wns_requests_per_day_peak as f64 >= r.wns_requests_per_day_mean);
        }
    }

    #[test]
    fn deterministic_per_seed_and_thread_count() {
        let a = simulate(&small(500, 7), ServerPolicy::Guided).unwrap();
        let b = simulate(
            &SimConfig {
                threads: 1,
                ..small(500, 7)
            },
            ServerPolicy::Guided,
        )
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&b).unwrap()
        );
        let c = simulate(&small(500, 8), ServerPolicy::Guided).unwrap();
        assert_ne!(a, c);
    }

    #[test]
    fn without_the_bug_and_offline_naive_still_expires_after_30_days() {
        let cfg = SimConfig {
            share_buggy_never_renews: 0.0,
            share_1511: 0.0,
            offline_chance_per_day: 0.0,
            share_long_offline: 0.0,
            battery_saver_chance_per_day: 0.0,
            share_data_sense: 0.0,
            ..small(300, 3)
        };
        let g = simulate(&cfg, ServerPolicy::Guided).unwrap();
        let n = simulate(&cfg, ServerPolicy::Naive).unwrap();
        assert_eq!(g.pushes_410, 0);
        assert_eq!(g.pfn_resets, 0);
        assert_eq!(g.cached, 0);
        assert!(
            (g.push_reachability - 1.0).abs() < 0.01,
            "{}",
            g.push_reachability
        );
        assert!(n.share_410_last_week > 0.99);
        // Every device renews at 15 days; 60 days means about 4 channels each.
        assert!(
            g.channel_registrations >= 3 * 300,
            "{}",
            g.channel_registrations
        );
    }

    #[test]
    fn config_validation() {
        assert!(SimConfig::default().validate().is_ok());
        for bad in [
            SimConfig {
                devices: 0,
                ..SimConfig::default()
            },
            SimConfig {
                days: 0,
                ..SimConfig::default()
            },
            SimConfig {
                share_1511: 1.5,
                ..SimConfig::default()
            },
            SimConfig {
                share_data_sense: f64::NAN,
                ..SimConfig::default()
            },
            SimConfig {
                push_interval: Duration::from_secs(1),
                ..SimConfig::default()
            },
            SimConfig {
                early_reset_margin: Duration::from_secs(31 * DAY),
                ..SimConfig::default()
            },
            SimConfig {
                offline: DurationRange::secs(10, 5),
                ..SimConfig::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
            assert!(simulate(&bad, ServerPolicy::Naive).is_err());
        }
    }
}
