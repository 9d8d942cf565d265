//! HPACK Huffman code (RFC 7541 Section 5.2 and Appendix B): the canonical code table and a
//! table-driven decoder. The encoder side serves only tests and `codec_bench` (the HPACK encoder
//! sends raw strings).

use super::hpack::HpackError;

// The code table below is copied from the h2 crate (https://github.com/hyperium/h2,
// `src/hpack/huffman/table.rs`), MIT-licensed, Copyright (c) 2017 h2 authors. It is
// RFC 7541 Appendix B without the EOS symbol, which is handled separately.

/// Huffman code of each octet, right-aligned (RFC 7541 Appendix B).
const ENCODE_CODES: [u32; 256] = [
    0x1ff8, 0x7fffd8, 0xfffffe2, 0xfffffe3, 0xfffffe4, 0xfffffe5, 0xfffffe6, 0xfffffe7, 0xfffffe8,
    0xffffea, 0x3ffffffc, 0xfffffe9, 0xfffffea, 0x3ffffffd, 0xfffffeb, 0xfffffec, 0xfffffed,
    0xfffffee, 0xfffffef, 0xffffff0, 0xffffff1, 0xffffff2, 0x3ffffffe, 0xffffff3, 0xffffff4,
    0xffffff5, 0xffffff6, 0xffffff7, 0xffffff8, 0xffffff9, 0xffffffa, 0xffffffb, 0x14, 0x3f8,
    0x3f9, 0xffa, 0x1ff9, 0x15, 0xf8, 0x7fa, 0x3fa, 0x3fb, 0xf9, 0x7fb, 0xfa, 0x16, 0x17, 0x18,
    0x0, 0x1, 0x2, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x5c, 0xfb, 0x7ffc, 0x20, 0xffb,
    0x3fc, 0x1ffa, 0x21, 0x5d, 0x5e, 0x5f, 0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    0x69, 0x6a, 0x6b, 0x6c, 0x6d, 0x6e, 0x6f, 0x70, 0x71, 0x72, 0xfc, 0x73, 0xfd, 0x1ffb, 0x7fff0,
    0x1ffc, 0x3ffc, 0x22, 0x7ffd, 0x3, 0x23, 0x4, 0x24, 0x5, 0x25, 0x26, 0x27, 0x6, 0x74, 0x75,
    0x28, 0x29, 0x2a, 0x7, 0x2b, 0x76, 0x2c, 0x8, 0x9, 0x2d, 0x77, 0x78, 0x79, 0x7a, 0x7b, 0x7ffe,
    0x7fc, 0x3ffd, 0x1ffd, 0xffffffc, 0xfffe6, 0x3fffd2, 0xfffe7, 0xfffe8, 0x3fffd3, 0x3fffd4,
    0x3fffd5, 0x7fffd9, 0x3fffd6, 0x7fffda, 0x7fffdb, 0x7fffdc, 0x7fffdd, 0x7fffde, 0xffffeb,
    0x7fffdf, 0xffffec, 0xffffed, 0x3fffd7, 0x7fffe0, 0xffffee, 0x7fffe1, 0x7fffe2, 0x7fffe3,
    0x7fffe4, 0x1fffdc, 0x3fffd8, 0x7fffe5, 0x3fffd9, 0x7fffe6, 0x7fffe7, 0xffffef, 0x3fffda,
    0x1fffdd, 0xfffe9, 0x3fffdb, 0x3fffdc, 0x7fffe8, 0x7fffe9, 0x1fffde, 0x7fffea, 0x3fffdd,
    0x3fffde, 0xfffff0, 0x1fffdf, 0x3fffdf, 0x7fffeb, 0x7fffec, 0x1fffe0, 0x1fffe1, 0x3fffe0,
    0x1fffe2, 0x7fffed, 0x3fffe1, 0x7fffee, 0x7fffef, 0xfffea, 0x3fffe2, 0x3fffe3, 0x3fffe4,
    0x7ffff0, 0x3fffe5, 0x3fffe6, 0x7ffff1, 0x3ffffe0, 0x3ffffe1, 0xfffeb, 0x7fff1, 0x3fffe7,
    0x7ffff2, 0x3fffe8, 0x1ffffec, 0x3ffffe2, 0x3ffffe3, 0x3ffffe4, 0x7ffffde, 0x7ffffdf,
    0x3ffffe5, 0xfffff1, 0x1ffffed, 0x7fff2, 0x1fffe3, 0x3ffffe6, 0x7ffffe0, 0x7ffffe1, 0x3ffffe7,
    0x7ffffe2, 0xfffff2, 0x1fffe4, 0x1fffe5, 0x3ffffe8, 0x3ffffe9, 0xffffffd, 0x7ffffe3, 0x7ffffe4,
    0x7ffffe5, 0xfffec, 0xfffff3, 0xfffed, 0x1fffe6, 0x3fffe9, 0x1fffe7, 0x1fffe8, 0x7ffff3,
    0x3fffea, 0x3fffeb, 0x1ffffee, 0x1ffffef, 0xfffff4, 0xfffff5, 0x3ffffea, 0x7ffff4, 0x3ffffeb,
    0x7ffffe6, 0x3ffffec, 0x3ffffed, 0x7ffffe7, 0x7ffffe8, 0x7ffffe9, 0x7ffffea, 0x7ffffeb,
    0xffffffe, 0x7ffffec, 0x7ffffed, 0x7ffffee, 0x7ffffef, 0x7fffff0, 0x3ffffee,
];

/// Bit length of each code in `ENCODE_CODES`.
const ENCODE_CODE_LENGTHS: [u8; 256] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
];

/// The EOS symbol: 30 one bits. Never valid inside a string.
const EOS_CODE: u32 = 0x3fff_ffff;
/// Length of the EOS code.
const EOS_LEN: u32 = 30;

// Decoding walks the code tree four bits at a time. States are the 256 internal nodes of the
// tree (0 = root) plus SINK, entered when a nibble completes EOS and never left. Each
// `DECODE_TABLE[state * 16 + nibble]` entry packs:
//   bits 0..9    next state
//   bits 16..24  emitted octet (meaningful when EMIT is set)
//   EMIT         a symbol was completed by this nibble (at most one: the shortest code has 5 bits)
//   ACCEPT       the input may end in the next state (root, or at most 7 one-bits of padding)
const STATE_MASK: u32 = 0x1ff;
const EMIT: u32 = 1 << 24;
const ACCEPT: u32 = 1 << 25;
/// The error state: EOS was decoded.
const SINK: usize = 256;
/// Marks a tree child as a leaf; the low 9 bits are the symbol (256 = EOS).
const LEAF: u16 = 0x8000;

/// The nibble-driven decoder state table, built at compile time from `ENCODE_CODES`.
static DECODE_TABLE: [u32; (SINK + 1) * 16] = build_decode_table();

/// Builds the Huffman tree, then the 4-bit transition table. Runs at compile time only.
const fn build_decode_table() -> [u32; (SINK + 1) * 16] {
    let mut child = [[0u16; 2]; 256];
    let mut depth = [0u8; 256];
    let mut all_ones = [false; 256];
    all_ones[0] = true;
    let mut nodes = 1usize;

    let mut sym = 0usize;
    while sym < 257 {
        let (code, len) = if sym == 256 {
            (EOS_CODE, EOS_LEN)
        } else {
            (ENCODE_CODES[sym], ENCODE_CODE_LENGTHS[sym] as u32)
        };
        let mut cur = 0usize;
        let mut i = len;
        while i > 0 {
            i -= 1;
            let bit = ((code >> i) & 1) as usize;
            if i == 0 {
                child[cur][bit] = LEAF | sym as u16;
            } else {
                if child[cur][bit] == 0 {
                    child[cur][bit] = nodes as u16;
                    depth[nodes] = depth[cur] + 1;
                    all_ones[nodes] = all_ones[cur] && bit == 1;
                    nodes += 1;
                }
                cur = child[cur][bit] as usize;
            }
        }
        sym += 1;
    }
    assert!(
        nodes == 256,
        "the HPACK Huffman tree has 256 internal nodes"
    );

    let mut table = [SINK as u32; (SINK + 1) * 16];
    let mut state = 0usize;
    while state < SINK {
        let mut nibble = 0usize;
        while nibble < 16 {
            let mut cur = state;
            let mut entry = 0u32;
            let mut eos = false;
            let mut b = 4;
            while b > 0 {
                b -= 1;
                let c = child[cur][(nibble >> b) & 1];
                if c & LEAF != 0 {
                    let s = (c & !LEAF) as u32;
                    eos = s == 256;
                    entry |= EMIT | ((s & 0xff) << 16);
                    cur = 0;
                } else {
                    cur = c as usize;
                }
            }
            let accept = cur == 0 || (all_ones[cur] && depth[cur] <= 7);
            if !eos {
                table[state * 16 + nibble] = entry | cur as u32 | if accept { ACCEPT } else { 0 };
            }
            nibble += 1;
        }
        state += 1;
    }
    table
}

/// Decodes a Huffman-coded string into `dst` (replacing its contents).
///
/// Fails if the EOS symbol is decoded, or the padding is longer than 7 bits or not all ones.
pub(crate) fn decode(src: &[u8], dst: &mut Vec<u8>) -> Result<(), HpackError> {
    // Every code is at least 5 bits long, so this bounds the output; each step writes its
    // (possibly unused) symbol slot unconditionally and advances only when a symbol was emitted.
    dst.clear();
    dst.resize(src.len() * 8 / 5 + 1, 0);
    let mut n = 0usize;
    let mut e = ACCEPT;
    let mut step = |nibble: u8, e: &mut u32| {
        let state = (*e & STATE_MASK) as usize;
        *e = DECODE_TABLE[(state << 4) | usize::from(nibble)];
        if let Some(slot) = dst.get_mut(n) {
            *slot = (*e >> 16) as u8;
        }
        n += ((*e & EMIT) >> 24) as usize;
    };
    for &byte in src {
        step(byte >> 4, &mut e);
        step(byte & 0x0f, &mut e);
    }
    if e & ACCEPT != 0 {
        dst.truncate(n);
        Ok(())
    } else if (e & STATE_MASK) as usize == SINK {
        Err(HpackError("Huffman string contains EOS"))
    } else {
        Err(HpackError("invalid Huffman padding"))
    }
}

/// Huffman-encodes `src`, appending to `dst` (tests and `codec_bench` only: the encoder
/// sends raw strings).
pub(crate) fn encode(src: &[u8], dst: &mut Vec<u8>) {
    let mut acc: u64 = 0;
    let mut bits = 0u32;
    for &b in src {
        let len = u32::from(ENCODE_CODE_LENGTHS[b as usize]);
        acc = (acc << len) | u64::from(ENCODE_CODES[b as usize]);
        bits += len;
        while bits >= 8 {
            bits -= 8;
            dst.push((acc >> bits) as u8);
        }
    }
    if bits > 0 {
        // Pad with the most significant bits of EOS (all ones).
        dst.push(((acc << (8 - bits)) as u8) | (0xff >> bits));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(src: &[u8]) -> Result<Vec<u8>, HpackError> {
        let mut out = Vec::new();
        decode(src, &mut out).map(|()| out)
    }

    fn enc(src: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(src, &mut out);
        out
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Every Huffman-coded string of RFC 7541 Appendix C.4 and C.6, with its encoding.
    const RFC_STRINGS: &[(&str, &str)] = &[
        ("www.example.com", "f1e3 c2e5 f23a 6ba0 ab90 f4ff"),
        ("no-cache", "a8eb 1064 9cbf"),
        ("custom-key", "25a8 49e9 5ba9 7d7f"),
        ("custom-value", "25a8 49e9 5bb8 e8b4 bf"),
        ("302", "6402"),
        ("private", "aec3 771a 4b"),
        (
            "Mon, 21 Oct 2013 20:13:21 GMT",
            "d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff",
        ),
        ("https://www.example.com", "9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3"),
        ("307", "640e ff"),
        (
            "Mon, 21 Oct 2013 20:13:22 GMT",
            "d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff",
        ),
        ("gzip", "9bd9 ab"),
        (
            "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
            "94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
        ),
    ];

    #[test]
    fn rfc_strings_round_trip() {
        for (plain, coded) in RFC_STRINGS {
            let coded = hex(coded);
            assert_eq!(enc(plain.as_bytes()), coded, "{plain}");
            assert_eq!(dec(&coded).unwrap(), plain.as_bytes(), "{plain}");
        }
    }

    #[test]
    fn all_octets_round_trip() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(dec(&enc(&all)).unwrap(), all);
        for len in 0..40 {
            let zeros = vec![b'0'; len];
            assert_eq!(dec(&enc(&zeros)).unwrap(), zeros);
        }
        assert_eq!(dec(&[]).unwrap(), b"");
    }

    #[test]
    fn eos_is_an_error() {
        // 30 ones (EOS) followed by two ones of padding.
        assert!(dec(&[0xff, 0xff, 0xff, 0xff]).is_err());
        // 'a' (00011) then EOS then padding.
        let mut v = enc(b"a");
        v.pop();
        let bits: u64 = (0b00011 << 30) | u64::from(EOS_CODE);
        // 35 bits, pad to 40 with ones.
        let bits = (bits << 5) | 0x1f;
        for i in (0..5).rev() {
            v.push((bits >> (i * 8)) as u8);
        }
        assert!(dec(&v).is_err());
    }

    #[test]
    fn bad_padding_is_an_error() {
        // "a" = 00011 + 111 padding = 0x1f: fine.
        assert_eq!(dec(&[0x1f]).unwrap(), b"a");
        // Padding of 8+ bits: a full byte of ones after a complete code.
        assert!(dec(&[0x1f, 0xff]).is_err());
        assert!(dec(&[0xff]).is_err());
        // Padding not all ones: "a" followed by 110.
        assert!(dec(&[0x1e]).is_err());
        assert!(dec(&[0x18]).is_err());
        // Truncated long code (first 8 bits of a 13-bit code).
        assert!(dec(&[0xfe]).is_err());
    }
}
