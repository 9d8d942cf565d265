//! Counters the emulator keeps and the [`EmulatorStats`] snapshot it reports.
//!
//! The hot path (one push) touches only atomics, one per-app mutex (the sliding
//! rate window) and one sharded per-channel mutex (see `channels.rs`); no lock
//! is ever held across an `.await`. Snapshots are assembled on demand.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

/// Width of the sliding window behind [`EmulatorStats::max_rate_per_app`].
pub const RATE_WINDOW: Duration = Duration::from_secs(1);

/// Token-endpoint request counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRequestStats {
    /// Tokens issued by the legacy `/accesstoken.srf` endpoint.
    pub legacy: u64,
    /// Tokens issued by the Entra `/{tenant}/oauth2/v2.0/token` endpoint.
    pub entra: u64,
    /// Token requests answered with an error (either endpoint).
    pub rejected: u64,
}

/// Accepted TLS connections by negotiated HTTP version.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionStats {
    /// HTTP/1.1 connections.
    pub h1: u64,
    /// HTTP/2 connections.
    pub h2: u64,
}

/// A point-in-time snapshot of everything the emulator counted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmulatorStats {
    /// Token-endpoint requests.
    pub token_requests: TokenRequestStats,
    /// Requests to the push endpoint, whatever their outcome.
    pub pushes_total: u64,
    /// Push responses by HTTP status.
    pub by_status: BTreeMap<u16, u64>,
    /// Push responses by channel token, then HTTP status (every push that
    /// carried a `token` query parameter, authorised or not). Empty when the
    /// snapshot was taken with channels left out.
    pub by_channel: BTreeMap<String, BTreeMap<u16, u64>>,
    /// Per app key (`client_id`, or `tenant/client_id` for Entra): the highest
    /// number of pushes presented with that app's tokens in any 1-second window.
    pub max_rate_per_app: BTreeMap<String, u64>,
    /// Per app key: pushes presented with that app's tokens (valid or expired).
    pub pushes_per_app: BTreeMap<String, u64>,
    /// Accepted connections by protocol.
    pub connections: ConnectionStats,
    /// Raw pushes currently held in offline caches (unexpired).
    pub cached_pushes: u64,
}

/// Exact sliding-window counter: timestamps of the pushes in the last
/// [`RATE_WINDOW`], plus the maximum ever held.
#[derive(Debug, Default)]
struct RateWindow {
    recent: VecDeque<Instant>,
    max: u64,
    pushes: u64,
}

impl RateWindow {
    /// Records one push at `now` (callers pass non-decreasing instants).
    fn record(&mut self, now: Instant) {
        while let Some(&front) = self.recent.front() {
            if now.saturating_duration_since(front) >= RATE_WINDOW {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        self.recent.push_back(now);
        self.pushes += 1;
        self.max = self.max.max(self.recent.len() as u64);
    }

    fn reset(&mut self) {
        self.recent = VecDeque::new();
        self.max = 0;
        self.pushes = 0;
    }
}

/// Most arrival times kept per app when they are recorded.
const MAX_ARRIVALS: usize = 1_000_000;

/// Per-app push counters; shared by every token issued to that app.
#[derive(Debug, Default)]
pub(crate) struct AppRate {
    window: Mutex<RateWindow>,
    /// Every push's arrival time (up to [`MAX_ARRIVALS`]), when recorded.
    arrivals: Option<Mutex<Vec<Instant>>>,
}

impl AppRate {
    fn new(record_arrivals: bool) -> Self {
        AppRate {
            window: Mutex::new(RateWindow::default()),
            arrivals: record_arrivals.then(|| Mutex::new(Vec::new())),
        }
    }

    /// Records one push presented with this app's token, timestamped now.
    pub(crate) fn record_push(&self) {
        let mut w = self.window.lock();
        // Take the time under the lock so instants enter the deque in order.
        let now = Instant::now();
        w.record(now);
        drop(w);
        if let Some(a) = &self.arrivals {
            let mut a = a.lock();
            if a.len() < MAX_ARRIVALS {
                a.push(now);
            }
        }
    }

    fn read(&self) -> (u64, u64) {
        let w = self.window.lock();
        (w.pushes, w.max)
    }

    fn reset(&self) {
        self.window.lock().reset();
        if let Some(a) = &self.arrivals {
            a.lock().clear();
        }
    }
}

/// Status codes `0..STATUS_SLOTS` are tracked in the `by_status` array.
const STATUS_SLOTS: usize = 600;

/// All counters except the per-channel ones.
#[derive(Debug)]
pub(crate) struct StatsRecorder {
    token_legacy: AtomicU64,
    token_entra: AtomicU64,
    token_rejected: AtomicU64,
    pushes_total: AtomicU64,
    by_status: Box<[AtomicU64]>,
    conn_h1: AtomicU64,
    conn_h2: AtomicU64,
    apps: RwLock<HashMap<Arc<str>, Arc<AppRate>>>,
    /// Keep every push's arrival time per app (for tests that look at gaps
    /// and per-second counts).
    record_arrivals: bool,
    started: Instant,
}

impl Default for StatsRecorder {
    fn default() -> Self {
        Self::new(false)
    }
}

impl StatsRecorder {
    /// Counters, keeping arrival times per app when `record_arrivals`.
    pub(crate) fn new(record_arrivals: bool) -> Self {
        Self {
            record_arrivals,
            started: Instant::now(),
            token_legacy: AtomicU64::new(0),
            token_entra: AtomicU64::new(0),
            token_rejected: AtomicU64::new(0),
            pushes_total: AtomicU64::new(0),
            by_status: (0..STATUS_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            conn_h1: AtomicU64::new(0),
            conn_h2: AtomicU64::new(0),
            apps: RwLock::new(HashMap::new()),
        }
    }

    /// Arrival times of the pushes presented with `app_key`'s tokens, as
    /// offsets from the emulator's start (empty unless recorded).
    pub(crate) fn arrivals(&self, app_key: &str) -> Vec<Duration> {
        let Some(rate) = self.apps.read().get(app_key).cloned() else {
            return Vec::new();
        };
        let Some(a) = &rate.arrivals else {
            return Vec::new();
        };
        let started = self.started;
        let times: Vec<Duration> = a
            .lock()
            .iter()
            .map(|t| t.saturating_duration_since(started))
            .collect();
        times
    }
}

/// Which token endpoint handled a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokenOutcome {
    /// Legacy endpoint issued a token.
    Legacy,
    /// Entra endpoint issued a token.
    Entra,
    /// Either endpoint refused.
    Rejected,
}

impl StatsRecorder {
    /// Counts one token request.
    pub(crate) fn token_request(&self, outcome: TokenOutcome) {
        let c = match outcome {
            TokenOutcome::Legacy => &self.token_legacy,
            TokenOutcome::Entra => &self.token_entra,
            TokenOutcome::Rejected => &self.token_rejected,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one push answered with `status`.
    pub(crate) fn push(&self, status: u16) {
        self.pushes_total.fetch_add(1, Ordering::Relaxed);
        if let Some(slot) = self.by_status.get(usize::from(status)) {
            slot.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one accepted connection.
    pub(crate) fn connection(&self, h2: bool) {
        let c = if h2 { &self.conn_h2 } else { &self.conn_h1 };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// The shared rate counter for `app_key`, created on first use.
    pub(crate) fn app(&self, app_key: &str) -> (Arc<str>, Arc<AppRate>) {
        if let Some((k, v)) = self.apps.read().get_key_value(app_key) {
            return (k.clone(), v.clone());
        }
        let mut apps = self.apps.write();
        let key: Arc<str> = Arc::from(app_key);
        let record = self.record_arrivals;
        let rate = apps
            .entry(key.clone())
            .or_insert_with(|| Arc::new(AppRate::new(record)))
            .clone();
        (key, rate)
    }

    /// Zeroes every counter (app rate objects stay shared with issued tokens).
    pub(crate) fn reset(&self) {
        for c in [
            &self.token_legacy,
            &self.token_entra,
            &self.token_rejected,
            &self.pushes_total,
            &self.conn_h1,
            &self.conn_h2,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        for slot in self.by_status.iter() {
            slot.store(0, Ordering::Relaxed);
        }
        for rate in self.apps.read().values() {
            rate.reset();
        }
    }

    /// Snapshot of these counters; the caller fills `by_channel` and `cached_pushes`.
    pub(crate) fn snapshot(&self) -> EmulatorStats {
        let by_status = self
            .by_status
            .iter()
            .enumerate()
            .filter_map(|(code, c)| {
                let n = c.load(Ordering::Relaxed);
                let code = u16::try_from(code).ok()?;
                (n > 0).then_some((code, n))
            })
            .collect();
        let mut max_rate_per_app = BTreeMap::new();
        let mut pushes_per_app = BTreeMap::new();
        for (key, rate) in self.apps.read().iter() {
            let (pushes, max) = rate.read();
            if pushes > 0 {
                pushes_per_app.insert(key.to_string(), pushes);
                max_rate_per_app.insert(key.to_string(), max);
            }
        }
        EmulatorStats {
            token_requests: TokenRequestStats {
                legacy: self.token_legacy.load(Ordering::Relaxed),
                entra: self.token_entra.load(Ordering::Relaxed),
                rejected: self.token_rejected.load(Ordering::Relaxed),
            },
            pushes_total: self.pushes_total.load(Ordering::Relaxed),
            by_status,
            by_channel: BTreeMap::new(),
            max_rate_per_app,
            pushes_per_app,
            connections: ConnectionStats {
                h1: self.conn_h1.load(Ordering::Relaxed),
                h2: self.conn_h2.load(Ordering::Relaxed),
            },
            cached_pushes: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_counts_max_in_any_second() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut w = RateWindow::default();
        // 5 pushes in the first 100 ms.
        for i in 0..5 {
            w.record(t0 + ms(i * 20));
        }
        assert_eq!(w.max, 5);
        // 3 more at 900..=980 ms: window [0, 1000) holds 8.
        for i in 0..3 {
            w.record(t0 + ms(900 + i * 40));
        }
        assert_eq!(w.max, 8);
        // At 1010 ms the first push (0 ms) has left, and the one at 20 ms too
        // (>= 1 s is outside): 3 + 3 + 1 = 7 < 8.
        w.record(t0 + ms(1020));
        assert_eq!(w.recent.len(), 7);
        assert_eq!(w.max, 8);
        // Far later: only the new one.
        w.record(t0 + ms(5000));
        assert_eq!(w.recent.len(), 1);
        assert_eq!(w.max, 8);
        assert_eq!(w.pushes, 10);
    }

    #[test]
    fn recorder_snapshot_and_reset() {
        let s = StatsRecorder::default();
        s.push(200);
        s.push(200);
        s.push(410);
        s.token_request(TokenOutcome::Legacy);
        s.token_request(TokenOutcome::Rejected);
        s.connection(true);
        let (key, rate) = s.app("app-1");
        assert_eq!(&*key, "app-1");
        rate.record_push();
        let (_, same) = s.app("app-1");
        assert!(Arc::ptr_eq(&rate, &same));
        let snap = s.snapshot();
        assert_eq!(snap.pushes_total, 3);
        assert_eq!(snap.by_status.get(&200), Some(&2));
        assert_eq!(snap.by_status.get(&410), Some(&1));
        assert_eq!(snap.token_requests.legacy, 1);
        assert_eq!(snap.token_requests.rejected, 1);
        assert_eq!(snap.connections.h2, 1);
        assert_eq!(snap.pushes_per_app.get("app-1"), Some(&1));
        assert_eq!(snap.max_rate_per_app.get("app-1"), Some(&1));
        s.reset();
        assert_eq!(s.snapshot(), EmulatorStats::default());
    }
}
