//! Host health: a small circuit breaker per channel host.
//!
//! When a host refuses connections or fails the TLS handshake, it is "down" for
//! a short interval that doubles on each further failure (200 ms up to 5 s).
//! While it is down, wakes for it wait (holding no slot and no connection, and
//! without spending an attempt) instead of burning their retry budget against
//! an outage. When the interval ends, one request goes first as a probe; the
//! others wait for its result. Any answer from the host closes the breaker.
//!
//! The common case (no host down) costs one atomic load per request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

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
}

/// Which hosts are down, and until when.
#[derive(Default)]
pub(crate) struct HostHealth {
    any: AtomicBool,
    down: Mutex<HashMap<Box<str>, Down>>,
}

/// What a wake should do about its host.
pub(crate) enum Gate {
    /// Send now (the host is up, or this request is the probe).
    Go,
    /// Wait until then and ask again.
    WaitUntil(Instant),
}

impl HostHealth {
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
        if now < d.until {
            return Gate::WaitUntil(d.until);
        }
        match d.probe_since {
            Some(t) if now.duration_since(t) < PROBE_TIMEOUT => Gate::WaitUntil(now + RECHECK),
            _ => {
                d.probe_since = Some(now);
                Gate::Go
            }
        }
    }

    /// `host` refused a connection or failed TLS.
    pub(crate) fn failed(&self, host: &str) {
        let now = Instant::now();
        let mut down = self.down.lock();
        let d = down
            .entry(host.to_ascii_lowercase().into_boxed_str())
            .or_insert(Down {
                until: now,
                backoff: FIRST / 2,
                probe_since: None,
            });
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
        let h = HostHealth::default();
        assert!(matches!(h.gate("a"), Gate::Go));
        h.failed("A");
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
        h.failed("a");
        let Gate::WaitUntil(t2) = h.gate("a") else {
            panic!("still down")
        };
        assert!(t2 > Instant::now() + FIRST, "the interval doubled");
        h.answered("a");
        assert!(matches!(h.gate("a"), Gate::Go));
    }
}
