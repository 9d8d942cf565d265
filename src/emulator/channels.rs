//! Per-channel state, keyed by channel token: status counts for the stats,
//! the `flaky-<n>` counter, and the single cached raw push of an offline
//! channel.
//!
//! The table is sharded (one `parking_lot::Mutex` per shard) so concurrent
//! pushes to different channels rarely contend; every operation is a short
//! synchronous critical section.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use parking_lot::Mutex;

/// Number of shards; a power of two.
const SHARDS: usize = 32;

/// A raw push held for an offline device (`X-WNS-Cache-Policy: cache`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedPush {
    /// The raw payload as received.
    pub payload: Bytes,
    /// The `X-WNS-Msg-ID` the emulator answered with.
    pub msg_id: String,
    /// `X-WNS-TTL` of the request, if any.
    pub ttl: Option<Duration>,
    /// `X-WNS-PRIORITY` of the request, if any.
    pub priority: Option<u8>,
    /// Wall-clock time the push was stored.
    pub received_at: SystemTime,
    /// When the push stops being deliverable (`None`: never).
    pub expires_at: Option<Instant>,
}

impl CachedPush {
    /// Whether the push is still deliverable at `now`.
    pub fn is_live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|t| now < t)
    }
}

/// Everything the emulator remembers about one channel.
#[derive(Debug, Default)]
pub(crate) struct ChannelState {
    /// Push responses by status, in first-seen order (few distinct codes).
    statuses: Vec<(u16, u64)>,
    /// Pushes that reached the behaviour stage of a `flaky-<n>` channel.
    pub flaky_seen: u64,
    /// The cached raw push, for offline channels.
    pub cached: Option<CachedPush>,
}

impl ChannelState {
    /// Counts one push answered with `status`.
    pub(crate) fn count(&mut self, status: u16) {
        match self.statuses.iter_mut().find(|(s, _)| *s == status) {
            Some((_, n)) => *n += 1,
            None => self.statuses.push((status, 1)),
        }
    }

    /// Nothing worth keeping: no counts and no behaviour state.
    fn is_idle(&self) -> bool {
        self.statuses.is_empty() && self.flaky_seen == 0 && self.cached.is_none()
    }
}

/// Sharded map from channel token to [`ChannelState`].
#[derive(Debug)]
pub(crate) struct ChannelTable {
    /// The shards, indexed by token hash.
    shards: Box<[Mutex<HashMap<String, ChannelState>>]>,
    /// Hashes tokens to shards.
    hasher: RandomState,
}

impl Default for ChannelTable {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl ChannelTable {
    /// The shard holding `token`.
    fn shard(&self, token: &str) -> &Mutex<HashMap<String, ChannelState>> {
        let idx = (self.hasher.hash_one(token) as usize) & (SHARDS - 1);
        &self.shards[idx]
    }

    /// Runs `f` on the state of `token` (created if new) under its shard lock.
    /// `f` must not block.
    pub(crate) fn with<R>(&self, token: &str, f: impl FnOnce(&mut ChannelState) -> R) -> R {
        let mut shard = self.shard(token).lock();
        if let Some(state) = shard.get_mut(token) {
            return f(state);
        }
        f(shard.entry(token.to_owned()).or_default())
    }

    /// The cached push of `token`, if any and still live at `now`; an
    /// expired one is dropped.
    pub(crate) fn cached(&self, token: &str, now: Instant) -> Option<CachedPush> {
        let mut shard = self.shard(token).lock();
        let state = shard.get_mut(token)?;
        match &state.cached {
            Some(c) if c.is_live(now) => Some(c.clone()),
            Some(_) => {
                state.cached = None;
                None
            }
            None => None,
        }
    }

    /// Count of live cached pushes at `now` (expired ones are dropped).
    pub(crate) fn cached_count(&self, now: Instant) -> u64 {
        let mut n = 0;
        for shard in self.shards.iter() {
            for state in shard.lock().values_mut() {
                match &state.cached {
                    Some(c) if c.is_live(now) => n += 1,
                    Some(_) => state.cached = None,
                    None => {}
                }
            }
        }
        n
    }

    /// Per-channel status counts for channels that saw any push since the
    /// last reset.
    pub(crate) fn status_snapshot(&self) -> BTreeMap<String, BTreeMap<u16, u64>> {
        let mut out = BTreeMap::new();
        for shard in self.shards.iter() {
            for (token, state) in shard.lock().iter() {
                if !state.statuses.is_empty() {
                    out.insert(token.clone(), state.statuses.iter().copied().collect());
                }
            }
        }
        out
    }

    /// Clears the status counts; behaviour state (flaky counters, cached
    /// pushes) is kept.
    pub(crate) fn reset_stats(&self) {
        for shard in self.shards.iter() {
            shard.lock().retain(|_, state| {
                state.statuses.clear();
                !state.is_idle()
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(expires_at: Option<Instant>) -> CachedPush {
        CachedPush {
            payload: Bytes::from_static(b"x"),
            msg_id: "0".repeat(16),
            ttl: None,
            priority: None,
            received_at: SystemTime::now(),
            expires_at,
        }
    }

    #[test]
    fn counts_and_reset_keep_behaviour_state() {
        let t = ChannelTable::default();
        t.with("a", |s| s.count(200));
        t.with("a", |s| s.count(200));
        t.with("a", |s| s.count(503));
        t.with("b", |s| {
            s.count(200);
            s.flaky_seen = 1;
        });
        t.with("c", |s| s.count(410));
        let snap = t.status_snapshot();
        assert_eq!(snap["a"][&200], 2);
        assert_eq!(snap["a"][&503], 1);
        assert_eq!(snap.len(), 3);
        t.reset_stats();
        assert!(t.status_snapshot().is_empty());
        assert_eq!(t.with("b", |s| s.flaky_seen), 1);
    }

    #[test]
    fn cache_expiry() {
        let t = ChannelTable::default();
        let now = Instant::now();
        t.with("live", |s| s.cached = Some(push(None)));
        t.with("dead", |s| s.cached = Some(push(Some(now))));
        assert_eq!(t.cached_count(now), 1);
        assert!(t.cached("live", now).is_some());
        assert!(t.cached("dead", now).is_none());
        assert!(t.cached("unknown", now).is_none());
    }
}
