//! `MS-CV` correlation vectors (cV 2.1 base form): a fresh one for every request,
//! so a push can be traced through WNS support.

use std::fmt;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// A correlation vector: 22 base64 characters (128 random bits, the last
/// character from the restricted set `AQgw`) and the extension `.0`.
#[derive(Clone, PartialEq, Eq)]
pub struct CorrelationVector([u8; 24]);

impl CorrelationVector {
    /// A new random vector.
    pub fn new() -> Self {
        let mut out = [0u8; 24];
        let mut bits = fastrand::u128(..);
        for c in out.iter_mut().take(21) {
            *c = ALPHABET[(bits & 63) as usize];
            bits >>= 6;
        }
        // 21 * 6 = 126 bits used; the 22nd character carries the last 2 bits.
        out[21] = b"AQgw"[(bits & 3) as usize];
        out[22] = b'.';
        out[23] = b'0';
        CorrelationVector(out)
    }

    /// The text form, e.g. `tul4NUsfs0Kpwlb4ZnLnXw.0`.
    pub fn as_str(&self) -> &str {
        // Every byte comes from ASCII tables above.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl Default for CorrelationVector {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for CorrelationVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_and_freshness() {
        let a = CorrelationVector::new();
        let b = CorrelationVector::new();
        assert_ne!(a, b);
        let s = a.as_str();
        assert_eq!(s.len(), 24);
        assert!(s.ends_with(".0"));
        assert!(b"AQgw".contains(&s.as_bytes()[21]));
        assert!(s[..22].bytes().all(|c| ALPHABET.contains(&c)));
    }
}
