//! The campaign's channel table: which channels were already pushed, in 8 bytes
//! per channel. A key is 58 bits of a SipHash of the channel URI; the low 6 bits
//! hold the state (pending, or the final [`OutcomeKind`]). At a million
//! channels the table is about 19 MB; two URIs collide with a probability of
//! about n²/2⁵⁹ (2·10⁻⁶ at a million), in which case the second device is
//! reported as sharing the first one's push.
//!
//! The table is split into [`TABLE_SHARDS`] hash sets by the key's top bits, so
//! a resize copies 1/64 of it: one big set would hold its old and new arrays at
//! once when it doubles (28 MB instead of 19 MB at a million channels), which
//! was most of a campaign's peak memory.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};

use crate::wns::OutcomeKind;

const STATE_BITS: u32 = 6;
const STATE_MASK: u64 = (1 << STATE_BITS) - 1;
const PENDING: u64 = STATE_MASK;

#[derive(Clone, Copy)]
struct Entry(u64);

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.0 >> STATE_BITS == other.0 >> STATE_BITS
    }
}
impl Eq for Entry {}
impl Hash for Entry {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0 >> STATE_BITS);
    }
}

/// A channel's state in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelState {
    /// Never seen.
    New,
    /// A push for it is queued or in flight.
    Pending,
    /// Its push ended with this outcome.
    Done(OutcomeKind),
}

/// The 58-bit key of a channel URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChannelKey(u64);

impl ChannelKey {
    /// Hashes a channel URI (exact bytes; no normalisation).
    pub fn of(uri: &str) -> Self {
        // SipHasher::new() has fixed keys, so keys are stable across runs (resume).
        #[allow(deprecated)]
        let mut h = std::hash::SipHasher::new();
        uri.hash(&mut h);
        ChannelKey(h.finish() & !STATE_MASK)
    }
}

/// How many independent hash sets the table is split into.
pub const TABLE_SHARDS: usize = 64;

type Set = HashSet<Entry, std::hash::BuildHasherDefault<PassThrough>>;

/// Channels seen in this campaign and their state.
pub struct ChannelTable {
    sets: Box<[Set]>,
    len: usize,
}

impl Default for ChannelTable {
    fn default() -> Self {
        ChannelTable {
            sets: (0..TABLE_SHARDS).map(|_| Set::default()).collect(),
            len: 0,
        }
    }
}

/// The keys are already hashes; pass them through.
#[derive(Default)]
pub struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        // Spread the bits: the table reads both the high bits (control bytes)
        // and the low bits (bucket index) of the hash.
        self.0 = v.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

impl ChannelTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes room for `total` channels in all (those already in the table
    /// count), so that the sets do not double (and hold their old and new
    /// arrays together) while the campaign runs. Each set gets its share plus
    /// 1/16 for an uneven spread.
    pub fn reserve_total(&mut self, total: usize) {
        let per_set = total / self.sets.len();
        let per_set = per_set + per_set / 16;
        for set in self.sets.iter_mut() {
            // `reserve` counts from the set's length.
            set.reserve(per_set.saturating_sub(set.len()));
        }
    }

    fn shard(&self, key: ChannelKey) -> usize {
        (key.0 >> (64 - TABLE_SHARDS.trailing_zeros())) as usize % self.sets.len()
    }

    /// The state of a channel.
    pub fn state(&self, key: ChannelKey) -> ChannelState {
        match self.sets[self.shard(key)].get(&Entry(key.0)) {
            None => ChannelState::New,
            Some(e) if e.0 & STATE_MASK == PENDING => ChannelState::Pending,
            Some(e) => ChannelState::Done(OutcomeKind::ALL[(e.0 & STATE_MASK) as usize]),
        }
    }

    /// Records a channel's state.
    pub fn set(&mut self, key: ChannelKey, state: ChannelState) {
        let i = self.shard(key);
        let bits = match state {
            ChannelState::New => {
                if self.sets[i].remove(&Entry(key.0)) {
                    self.len -= 1;
                }
                return;
            }
            ChannelState::Pending => PENDING,
            ChannelState::Done(k) => k.index() as u64,
        };
        if self.sets[i].replace(Entry(key.0 | bits)).is_none() {
            self.len += 1;
        }
    }

    /// Channels in the table.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_reserved_table_does_not_grow_while_it_fills() {
        let n = 200_000;
        let key = |i: usize| ChannelKey::of(&format!("https://db5p.notify.windows.com/?token={i}"));
        // Fresh, and resumed with a quarter of the channels already in it.
        for already in [0, n / 4] {
            let mut t = ChannelTable::new();
            for i in 0..already {
                t.set(key(i), ChannelState::Pending);
            }
            t.reserve_total(n);
            let caps: Vec<usize> = t.sets.iter().map(|s| s.capacity()).collect();
            for i in already..n {
                t.set(key(i), ChannelState::Pending);
            }
            assert_eq!(t.len(), n);
            let after: Vec<usize> = t.sets.iter().map(|s| s.capacity()).collect();
            assert_eq!(caps, after, "no set had to grow ({already} already in)");
        }
    }

    use super::*;

    #[test]
    fn states_round_trip() {
        const _: () = assert!(OutcomeKind::ALL.len() < PENDING as usize);
        let mut t = ChannelTable::new();
        let a = ChannelKey::of("https://a.notify.windows.com/?token=1");
        let b = ChannelKey::of("https://a.notify.windows.com/?token=2");
        assert_ne!(a, b);
        assert_eq!(t.state(a), ChannelState::New);
        t.set(a, ChannelState::Pending);
        assert_eq!(t.state(a), ChannelState::Pending);
        assert_eq!(t.state(b), ChannelState::New);
        for k in OutcomeKind::ALL {
            t.set(a, ChannelState::Done(k));
            assert_eq!(t.state(a), ChannelState::Done(k));
        }
        assert_eq!(t.len(), 1);
        assert_eq!(ChannelKey::of("x"), ChannelKey::of("x"));
        t.set(a, ChannelState::New);
        assert_eq!(t.len(), 0);
        assert!(t.is_empty());
    }

    #[test]
    fn many_channels_spread_over_the_shards() {
        let mut t = ChannelTable::new();
        for i in 0..20_000 {
            let k = ChannelKey::of(&format!("https://a.notify.windows.com/?token={i}"));
            assert_eq!(t.state(k), ChannelState::New);
            t.set(k, ChannelState::Pending);
            t.set(k, ChannelState::Done(OutcomeKind::Received));
        }
        assert_eq!(t.len(), 20_000);
        assert!(t.sets.iter().all(|s| !s.is_empty()));
        let k = ChannelKey::of("https://a.notify.windows.com/?token=7");
        assert_eq!(t.state(k), ChannelState::Done(OutcomeKind::Received));
    }
}
