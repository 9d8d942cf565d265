//! Small helpers shared across modules: serde for durations, decimal digits
//! without the formatting machinery, a warning said at most once per interval.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// `n` in decimal, written into the end of `buf` (20 bytes hold any `u64`);
/// returns the digits. For hot paths where `format!` would cost more than
/// the work around it.
pub(crate) fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// Serde for a `Duration` written as whole milliseconds.
pub mod duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Writes milliseconds.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis().min(u64::MAX as u128) as u64)
    }

    /// Reads milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// A warning said at most once per interval: a burst of the same failure (a
/// stream without a leader fails every publish for seconds) is one line with
/// a count, not thousands. (Used by the NATS consumer and budget only.)
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
pub(crate) struct WarnEvery {
    interval: Duration,
    last: parking_lot::Mutex<Option<std::time::Instant>>,
    suppressed: AtomicU64,
}

#[cfg_attr(not(feature = "nats"), allow(dead_code))]
impl WarnEvery {
    pub(crate) fn new(interval: Duration) -> Self {
        WarnEvery {
            interval,
            last: parking_lot::Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when this one should be said, `n` being how many were kept
    /// quiet since the last one said.
    pub(crate) fn check(&self) -> Option<u64> {
        let now = std::time::Instant::now();
        let mut last = self.last.lock();
        if last.is_some_and(|t| now.duration_since(t) < self.interval) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}
