//! A small cache of recently decoded header literals, shared by both protocols.
//!
//! Servers send the same few header names and values in every answer: nginx
//! sends each HTTP/2 response field as a Huffman-coded literal and never indexes
//! it, and every HTTP/1.1 head repeats `Server`, `Content-Type` and the
//! `X-WNS-*` fields. Decoding, validating and allocating each of them again cost
//! thousands of instructions per wake; a hit here is a hash, a compare and a
//! reference-count increment.
//!
//! Invariants: bounded ([`CACHE_SLOTS`] entries of at most [`CACHE_MAX_RAW`]
//! octets each); a hit compares the octets in full, so a collision only costs a
//! miss and never yields another string's item.

/// Sets of each [`LiteralCache`] (the top bits of a hash pick one).
const CACHE_SETS: usize = 32;
/// Entries in each set; the least recently used one gives way.
const CACHE_WAYS: usize = 2;
/// Entries of each [`LiteralCache`].
const CACHE_SLOTS: usize = CACHE_SETS * CACHE_WAYS;
/// Longest literal (as sent) a [`LiteralCache`] keeps.
const CACHE_MAX_RAW: usize = 64;

/// Recently decoded literals, keyed by their octets as sent: a server that sends the same
/// names and values as literals in every answer (nginx never indexes response fields) costs one
/// Huffman decode, validation and allocation per distinct string instead of one per field.
/// Two-way set-associative and bounded ([`CACHE_SLOTS`] entries of at most [`CACHE_MAX_RAW`]
/// octets): the eight-odd fields of an answer fit even when two share a set (direct-mapped, a
/// shared slot made both miss on every answer); a hit compares the octets in full.
pub(crate) struct LiteralCache<T> {
    /// `CACHE_SETS` sets of `CACHE_WAYS` entries, most recently used first in each.
    slots: Vec<Option<Cached<T>>>,
}

/// One cached literal.
struct Cached<T> {
    /// The octets as sent.
    raw: Box<[u8]>,
    /// They were Huffman-coded.
    huffman: bool,
    /// Length of the decoded string (for table sizes).
    len: usize,
    /// The decoded, classified string.
    item: T,
}

impl<T: Clone> LiteralCache<T> {
    /// An empty cache (its slots are allocated on the first `put`).
    pub(crate) fn new() -> Self {
        Self { slots: Vec::new() }
    }

    /// The first slot of the set for these octets.
    fn set(huffman: bool, raw: &[u8]) -> usize {
        // Up to eight octets as a word: one load when there are eight (a
        // partial copy into a stack array stalled store forwarding).
        let word = |b: &[u8]| match b.first_chunk::<8>() {
            Some(w) => u64::from_le_bytes(*w),
            None => b.iter().rev().fold(0u64, |w, &x| (w << 8) | u64::from(x)),
        };
        let head = word(raw);
        let tail = word(&raw[raw.len().saturating_sub(8)..]);
        let h = (head ^ tail.rotate_left(29) ^ (raw.len() as u64) ^ u64::from(huffman))
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        ((h >> 59) as usize % CACHE_SETS) * CACHE_WAYS
    }

    /// The decoded string and its length for these octets, if cached (and
    /// marks the entry most recently used).
    pub(crate) fn get(&mut self, huffman: bool, raw: &[u8]) -> Option<(T, usize)> {
        let first = Self::set(huffman, raw);
        let ways = self.slots.get_mut(first..first + CACHE_WAYS)?;
        let hit = ways.iter().position(|c| {
            c.as_ref()
                .is_some_and(|c| c.huffman == huffman && *c.raw == *raw)
        })?;
        ways[..=hit].rotate_right(1);
        let c = ways[0].as_ref()?;
        Some((c.item.clone(), c.len))
    }

    /// Remembers a decoded string (short ones only), in place of the least
    /// recently used entry of its set.
    pub(crate) fn put(&mut self, huffman: bool, raw: &[u8], len: usize, item: &T) {
        if raw.len() > CACHE_MAX_RAW {
            return;
        }
        if self.slots.is_empty() {
            self.slots.resize_with(CACHE_SLOTS, || None);
        }
        let first = Self::set(huffman, raw);
        if let Some(ways) = self.slots.get_mut(first..first + CACHE_WAYS) {
            ways.rotate_right(1);
            ways[0] = Some(Cached {
                raw: raw.into(),
                huffman,
                len,
                item: item.clone(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distinct keys that share one set.
    fn same_set(n: usize) -> Vec<Vec<u8>> {
        let want = LiteralCache::<u32>::set(false, b"k0");
        let keys: Vec<Vec<u8>> = (0..100_000)
            .map(|i| format!("k{i}").into_bytes())
            .filter(|k| LiteralCache::<u32>::set(false, k) == want)
            .take(n)
            .collect();
        assert_eq!(keys.len(), n);
        keys
    }

    #[test]
    fn two_keys_of_one_set_both_stay_and_the_least_recent_gives_way() {
        let k = same_set(3);
        let mut c = LiteralCache::new();
        c.put(false, &k[0], 1, &10u32);
        c.put(false, &k[1], 1, &11u32);
        assert_eq!(c.get(false, &k[1]), Some((11, 1)));
        // A hit makes k[0] the most recently used, although k[1] came later:
        assert_eq!(c.get(false, &k[0]), Some((10, 1)));
        // so k[1] gives way to k[2].
        c.put(false, &k[2], 1, &12u32);
        assert_eq!(c.get(false, &k[1]), None);
        assert_eq!(c.get(false, &k[0]), Some((10, 1)));
        assert_eq!(c.get(false, &k[2]), Some((12, 1)));
    }

    #[test]
    fn hits_match_the_octets_and_the_coding_exactly() {
        // Keys that land in the set of the entry, so the comparison decides.
        let k = same_set(2);
        let mut c = LiteralCache::new();
        c.put(false, &k[0], 2, &1u32);
        assert_eq!(c.get(false, &k[1]), None, "other octets, same set");
        // The coding is part of the key (and of the hash, so it picks another set).
        assert_eq!(c.get(true, &k[0]), None, "Huffman flag differs");
        assert_eq!(c.get(false, &k[0]), Some((1, 2)));
        let long = [b'a'; CACHE_MAX_RAW + 1];
        c.put(false, &long, long.len(), &3u32);
        assert_eq!(c.get(false, &long), None, "too long to keep");
    }
}
