//! Host health: a small circuit breaker per channel host.
//!
//! When a host refuses connections or fails the TLS handshake, it is "down" for
//! a short interval that doubles on each further failure (200 ms up to 5 s).
//! While it is down, wakes for it wait (holding no slot and no connection, and
//! without spending an attempt) instead of burning their retry budget against
//! an outage. When the interval ends, one request goes first as a probe; the
//! others wait for its result. Any answer from the host closes the breaker.
//!
//! A host that has refused every connection for the breaker's `open_after`
//! is *open*: the gate says so, with how long and the last error, and the
//! caller chooses (`BreakerPolicy::when_open`) between ending the wake at
//! once (retryable, nothing sent) and waiting as before.
//!
//! The common case (no host down) costs one atomic load per request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::transport::TransportErrorKind;

const FIRST: Duration = Duration::from_millis(200);
const MAX: Duration = Duration::from_secs(5);
/// How long a probe may take before another request may probe instead.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often waiters look again while a probe is out.
const RECHECK: Duration = Duration::from_millis(50);

struct Down {
    until: Instant,
    backoff: Duration,
    probe_since: Option<Instant>,
    /// The first failure since the host last answered.
    since: Instant,
    /// The last failure's class and message (host, address, OS error).
    error: (TransportErrorKind, String),
}

/// Which hosts are down, and until when.
pub(crate) struct HostHealth {
    any: AtomicBool,
    down: Mutex<HashMap<Box<str>, Down>>,
    open_after: Duration,
}

/// What a wake should do about its host.
pub(crate) enum Gate {
    /// Send now (the host is up, or this request is the probe).
    Go,
    /// Wait until then and ask again.
    WaitUntil(Instant),
    /// The host has failed for at least `open_after`: the breaker is open.
    Open(OpenHost),
}

/// An open host breaker.
pub(crate) struct OpenHost {
    /// When to ask again.
    pub(crate) until: Instant,
    /// How long the host has been failing.
    pub(crate) down_for: Duration,
    /// The last failure.
    pub(crate) kind: TransportErrorKind,
    /// Its message.
    pub(crate) message: String,
}

/// A channel host whose breaker is open, as [`Engine::health`](crate::Engine::health) reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDown {
    /// The host.
    pub host: String,
    /// How long it has been failing.
    pub down_for: Duration,
    /// Whether its breaker is open.
    pub breaker_open: bool,
    /// The last failure (host, address, OS error).
    pub error: String,
}

impl HostHealth {
    /// No host down; a breaker opens after `open_after` of failures.
    pub(crate) fn new(open_after: Duration) -> Self {
        HostHealth {
            any: AtomicBool::new(false),
            down: Mutex::new(HashMap::new()),
            open_after,
        }
    }

    /// The hosts that are down now.
    pub(crate) fn snapshot(&self) -> Vec<HostDown> {
        if !self.any.load(Ordering::Acquire) {
            return Vec::new();
        }
        let now = Instant::now();
        self.down
            .lock()
            .iter()
            .map(|(h, d)| {
                let down_for = now.saturating_duration_since(d.since);
                HostDown {
                    host: h.to_string(),
                    down_for,
                    breaker_open: down_for >= self.open_after,
                    error: d.error.1.clone(),
                }
            })
            .collect()
    }

    /// May a request to `host` go now?
    pub(crate) fn gate(&self, host: &str) -> Gate {
        if !self.any.load(Ordering::Acquire) {
            return Gate::Go;
        }
        let now = Instant::now();
        let mut down = self.down.lock();
        let Some(d) = down.get_mut(host.to_ascii_lowercase().as_str()) else {
            return Gate::Go;
        };
        let down_for = now.saturating_duration_since(d.since);
        let wait = |until: Instant| {
            if down_for >= self.open_after {
                Gate::Open(OpenHost {
                    until,
                    down_for,
                    kind: d.error.0,
                    message: d.error.1.clone(),
                })
            } else {
                Gate::WaitUntil(until)
            }
        };
        if now < d.until {
            return wait(d.until);
        }
        match d.probe_since {
            Some(t) if now.duration_since(t) < PROBE_TIMEOUT => wait(now + RECHECK),
            _ => {
                d.probe_since = Some(now);
                Gate::Go
            }
        }
    }

    /// `host` refused a connection or failed TLS, with this error.
    pub(crate) fn failed(&self, host: &str, kind: TransportErrorKind, message: &str) {
        let now = Instant::now();
        let mut down = self.down.lock();
        let d = down
            .entry(host.to_ascii_lowercase().into_boxed_str())
            .or_insert(Down {
                until: now,
                backoff: FIRST / 2,
                probe_since: None,
                since: now,
                error: (kind, String::new()),
            });
        d.error = (kind, message.to_string());
        // Failures of requests sent before the host went down do not extend it.
        if d.probe_since.is_some() || now >= d.until {
            d.backoff = (d.backoff * 2).min(MAX);
            d.until = now + d.backoff;
        }
        d.probe_since = None;
        self.any.store(true, Ordering::Release);
    }

    /// `host` answered: it is up.
    pub(crate) fn answered(&self, host: &str) {
        if !self.any.load(Ordering::Acquire) {
            return;
        }
        let mut down = self.down.lock();
        down.remove(host.to_ascii_lowercase().as_str());
        if down.is_empty() {
            self.any.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_probes_and_closes() {
        let h = HostHealth::new(Duration::from_secs(60));
        assert!(matches!(h.gate("a"), Gate::Go));
        h.failed("A", TransportErrorKind::Connect, "refused");
        let Gate::WaitUntil(t) = h.gate("a") else {
            panic!("down")
        };
        assert!(t > Instant::now() && t <= Instant::now() + FIRST);
        assert!(
            matches!(h.gate("b"), Gate::Go),
            "other hosts are not affected"
        );
        std::thread::sleep(FIRST);
        assert!(matches!(h.gate("a"), Gate::Go), "one probe goes");
        assert!(
            matches!(h.gate("a"), Gate::WaitUntil(_)),
            "the others wait for it"
        );
        h.failed("a", TransportErrorKind::Connect, "refused");
        let Gate::WaitUntil(t2) = h.gate("a") else {
            panic!("still down")
        };
        assert!(t2 > Instant::now() + FIRST, "the interval doubled");
        h.answered("a");
        assert!(matches!(h.gate("a"), Gate::Go));
    }

    #[test]
    fn breaker_opens_after_failing_for_open_after() {
        let h = HostHealth::new(Duration::from_millis(300));
        h.failed(
            "a",
            TransportErrorKind::Connect,
            "connect a (127.0.0.1:9): refused",
        );
        assert!(matches!(h.gate("a"), Gate::WaitUntil(_)), "not yet open");
        std::thread::sleep(Duration::from_millis(320));
        // The interval has ended: one probe goes, and fails again.
        assert!(matches!(h.gate("a"), Gate::Go));
        h.failed(
            "a",
            TransportErrorKind::Connect,
            "connect a (127.0.0.1:9): refused",
        );
        let Gate::Open(open) = h.gate("a") else {
            panic!("open after 300 ms of failures")
        };
        assert!(open.down_for >= Duration::from_millis(300));
        assert!(open.message.contains("127.0.0.1:9"));
        let snap = h.snapshot();
        assert_eq!(snap.len(), 1);
        assert!(snap[0].breaker_open && snap[0].error.contains("refused"));
        h.answered("a");
        assert!(matches!(h.gate("a"), Gate::Go));
        assert!(h.snapshot().is_empty());
    }
}
