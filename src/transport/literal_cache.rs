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

/// Slots of each [`LiteralCache`].
const CACHE_SLOTS: usize = 32;
/// Longest literal (as sent) a [`LiteralCache`] keeps.
const CACHE_MAX_RAW: usize = 64;

/// Recently decoded literals, keyed by their octets as sent: a server that sends the same
/// names and values as literals in every answer (nginx never indexes response fields) costs one
/// Huffman decode, validation and allocation per distinct string instead of one per field.
/// Direct-mapped and bounded ([`CACHE_SLOTS`] entries of at most [`CACHE_MAX_RAW`] octets); a
/// collision only costs a miss, and a hit compares the octets in full.
pub(crate) struct LiteralCache<T> {
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

    /// The slot for these octets.
    fn slot(huffman: bool, raw: &[u8]) -> usize {
        let word = |b: &[u8]| {
            let mut w = [0u8; 8];
            let n = b.len().min(8);
            w[..n].copy_from_slice(&b[..n]);
            u64::from_le_bytes(w)
        };
        let head = word(raw);
        let tail = word(&raw[raw.len().saturating_sub(8)..]);
        let h = (head ^ tail.rotate_left(29) ^ (raw.len() as u64) ^ u64::from(huffman))
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (h >> 59) as usize % CACHE_SLOTS
    }

    /// The decoded string and its length for these octets, if cached.
    pub(crate) fn get(&self, huffman: bool, raw: &[u8]) -> Option<(T, usize)> {
        let c = self.slots.get(Self::slot(huffman, raw))?.as_ref()?;
        (c.huffman == huffman && *c.raw == *raw).then(|| (c.item.clone(), c.len))
    }

    /// Remembers a decoded string (short ones only).
    pub(crate) fn put(&mut self, huffman: bool, raw: &[u8], len: usize, item: &T) {
        if raw.len() > CACHE_MAX_RAW {
            return;
        }
        if self.slots.is_empty() {
            self.slots.resize_with(CACHE_SLOTS, || None);
        }
        if let Some(slot) = self.slots.get_mut(Self::slot(huffman, raw)) {
            *slot = Some(Cached {
                raw: raw.into(),
                huffman,
                len,
                item: item.clone(),
            });
        }
    }
}
