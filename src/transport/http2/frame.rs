//! HTTP/2 frames (RFC 9113 §4 and §6), sans IO: the 9-byte frame head, the
//! payload layouts a client reads (padding, priority, SETTINGS, PING, GOAWAY,
//! RST_STREAM, WINDOW_UPDATE), and writers for the frames a client sends.
//!
//! Nothing here keeps state; [`super::conn`] decides what a frame means.

use bytes::{BufMut, BytesMut};

/// The client connection preface (RFC 9113 §3.4).
pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Length of a frame head.
pub(crate) const HEAD_LEN: usize = 9;
/// The protocol's default (and our advertised) `SETTINGS_MAX_FRAME_SIZE`.
pub(crate) const DEFAULT_MAX_FRAME: usize = 16_384;
/// Largest flow-control window (2^31 - 1).
pub(crate) const MAX_WINDOW: i64 = (1 << 31) - 1;

/// Frame types.
pub(crate) mod kind {
    /// DATA.
    pub(crate) const DATA: u8 = 0x0;
    /// HEADERS.
    pub(crate) const HEADERS: u8 = 0x1;
    /// PRIORITY (read and ignored).
    pub(crate) const PRIORITY: u8 = 0x2;
    /// RST_STREAM.
    pub(crate) const RST_STREAM: u8 = 0x3;
    /// SETTINGS.
    pub(crate) const SETTINGS: u8 = 0x4;
    /// PUSH_PROMISE (refused: we disable push).
    pub(crate) const PUSH_PROMISE: u8 = 0x5;
    /// PING.
    pub(crate) const PING: u8 = 0x6;
    /// GOAWAY.
    pub(crate) const GOAWAY: u8 = 0x7;
    /// WINDOW_UPDATE.
    pub(crate) const WINDOW_UPDATE: u8 = 0x8;
    /// CONTINUATION.
    pub(crate) const CONTINUATION: u8 = 0x9;
}

/// Frame flags.
pub(crate) mod flag {
    /// END_STREAM (DATA, HEADERS).
    pub(crate) const END_STREAM: u8 = 0x1;
    /// ACK (SETTINGS, PING).
    pub(crate) const ACK: u8 = 0x1;
    /// END_HEADERS (HEADERS, CONTINUATION).
    pub(crate) const END_HEADERS: u8 = 0x4;
    /// PADDED (DATA, HEADERS).
    pub(crate) const PADDED: u8 = 0x8;
    /// PRIORITY (HEADERS).
    pub(crate) const PRIORITY: u8 = 0x20;
}

/// SETTINGS identifiers (RFC 9113 §6.5.2).
pub(crate) mod setting {
    /// SETTINGS_HEADER_TABLE_SIZE.
    pub(crate) const HEADER_TABLE_SIZE: u16 = 0x1;
    /// SETTINGS_ENABLE_PUSH.
    pub(crate) const ENABLE_PUSH: u16 = 0x2;
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    pub(crate) const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    /// SETTINGS_INITIAL_WINDOW_SIZE.
    pub(crate) const INITIAL_WINDOW_SIZE: u16 = 0x4;
    /// SETTINGS_MAX_FRAME_SIZE.
    pub(crate) const MAX_FRAME_SIZE: u16 = 0x5;
    /// SETTINGS_MAX_HEADER_LIST_SIZE.
    pub(crate) const MAX_HEADER_LIST_SIZE: u16 = 0x6;
}

/// Error codes (RFC 9113 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reason(pub(crate) u32);

impl Reason {
    /// Graceful shutdown.
    pub(crate) const NO_ERROR: Reason = Reason(0x0);
    /// Protocol error detected.
    pub(crate) const PROTOCOL_ERROR: Reason = Reason(0x1);
    /// Flow-control limits exceeded.
    pub(crate) const FLOW_CONTROL_ERROR: Reason = Reason(0x3);
    /// Our SETTINGS were not acknowledged in time.
    pub(crate) const SETTINGS_TIMEOUT: Reason = Reason(0x4);
    /// Frame of the wrong size.
    pub(crate) const FRAME_SIZE_ERROR: Reason = Reason(0x6);
    /// The stream was not processed: safe to send again.
    pub(crate) const REFUSED_STREAM: Reason = Reason(0x7);
    /// The stream is no longer needed.
    pub(crate) const CANCEL: Reason = Reason(0x8);
    /// The HPACK context cannot be kept.
    pub(crate) const COMPRESSION_ERROR: Reason = Reason(0x9);
    /// The peer is generating excessive load.
    pub(crate) const ENHANCE_YOUR_CALM: Reason = Reason(0xb);

    /// The code's name, for messages.
    pub(crate) fn name(self) -> &'static str {
        match self.0 {
            0x0 => "NO_ERROR",
            0x1 => "PROTOCOL_ERROR",
            0x2 => "INTERNAL_ERROR",
            0x3 => "FLOW_CONTROL_ERROR",
            0x4 => "SETTINGS_TIMEOUT",
            0x5 => "STREAM_CLOSED",
            0x6 => "FRAME_SIZE_ERROR",
            0x7 => "REFUSED_STREAM",
            0x8 => "CANCEL",
            0x9 => "COMPRESSION_ERROR",
            0xa => "CONNECT_ERROR",
            0xb => "ENHANCE_YOUR_CALM",
            0xc => "INADEQUATE_SECURITY",
            0xd => "HTTP_1_1_REQUIRED",
            _ => "unknown error code",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (0x{:x})", self.name(), self.0)
    }
}

/// A frame head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHead {
    /// Payload length.
    pub(crate) len: usize,
    /// Frame type ([`kind`]).
    pub(crate) kind: u8,
    /// Flags ([`flag`]).
    pub(crate) flags: u8,
    /// Stream identifier (the reserved bit cleared).
    pub(crate) stream: u32,
}

impl FrameHead {
    /// Reads a frame head from the first [`HEAD_LEN`] bytes of `b`, if there are that many.
    pub(crate) fn parse(b: &[u8]) -> Option<FrameHead> {
        let h: &[u8; HEAD_LEN] = b.get(..HEAD_LEN)?.try_into().ok()?;
        Some(FrameHead {
            len: (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]),
            kind: h[3],
            flags: h[4],
            stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
        })
    }

    /// True when `f` is set.
    pub(crate) fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }
}

/// Appends a frame head. `len` must fit in 24 bits (callers never exceed the
/// peer's maximum frame size, itself at most 2^24 - 1).
pub(crate) fn put_head(dst: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    let len = u32::try_from(len).unwrap_or(u32::MAX).min(0x00ff_ffff);
    dst.put_slice(&len.to_be_bytes()[1..]);
    dst.put_u8(kind);
    dst.put_u8(flags);
    dst.put_u32(stream & 0x7fff_ffff);
}

/// The payload without its padding (DATA, HEADERS with PADDED).
pub(crate) fn strip_padding(
    head: &FrameHead,
    payload: &[u8],
) -> Result<(usize, usize), &'static str> {
    if !head.has(flag::PADDED) {
        return Ok((0, payload.len()));
    }
    let Some(&pad) = payload.first() else {
        return Err("PADDED frame without a pad length");
    };
    let pad = usize::from(pad);
    if pad + 1 > payload.len() {
        return Err("padding longer than the frame");
    }
    Ok((1, payload.len() - pad))
}

/// The header block fragment of a HEADERS payload: padding and the priority
/// fields removed. Returns the range within `payload`.
pub(crate) fn headers_fragment(
    head: &FrameHead,
    payload: &[u8],
) -> Result<std::ops::Range<usize>, &'static str> {
    let (mut start, end) = strip_padding(head, payload)?;
    if head.has(flag::PRIORITY) {
        start += 5;
        if start > end {
            return Err("HEADERS too short for its priority fields");
        }
    }
    Ok(start..end)
}

/// The (identifier, value) pairs of a SETTINGS payload.
pub(crate) fn settings(
    payload: &[u8],
) -> Result<impl Iterator<Item = (u16, u32)> + '_, &'static str> {
    if !payload.len().is_multiple_of(6) {
        return Err("SETTINGS length is not a multiple of 6");
    }
    Ok(payload.chunks_exact(6).map(|c| {
        (
            u16::from_be_bytes([c[0], c[1]]),
            u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
        )
    }))
}

/// A 4-byte big-endian field at `at` (RST_STREAM code, WINDOW_UPDATE increment,
/// GOAWAY fields), the reserved bit kept.
pub(crate) fn u32_at(payload: &[u8], at: usize) -> Option<u32> {
    let b: [u8; 4] = payload.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_be_bytes(b))
}

/// Appends a SETTINGS frame with `values`.
pub(crate) fn put_settings(dst: &mut BytesMut, values: &[(u16, u32)]) {
    put_head(dst, values.len() * 6, kind::SETTINGS, 0, 0);
    for &(id, v) in values {
        dst.put_u16(id);
        dst.put_u32(v);
    }
}

/// Appends a SETTINGS acknowledgement.
pub(crate) fn put_settings_ack(dst: &mut BytesMut) {
    put_head(dst, 0, kind::SETTINGS, flag::ACK, 0);
}

/// Appends a WINDOW_UPDATE (`increment` in 1..=2^31-1).
pub(crate) fn put_window_update(dst: &mut BytesMut, stream: u32, increment: u32) {
    put_head(dst, 4, kind::WINDOW_UPDATE, 0, stream);
    dst.put_u32(increment & 0x7fff_ffff);
}

/// Appends a RST_STREAM.
pub(crate) fn put_rst_stream(dst: &mut BytesMut, stream: u32, reason: Reason) {
    put_head(dst, 4, kind::RST_STREAM, 0, stream);
    dst.put_u32(reason.0);
}

/// Appends a PING (or its acknowledgement).
pub(crate) fn put_ping(dst: &mut BytesMut, ack: bool, data: [u8; 8]) {
    put_head(dst, 8, kind::PING, if ack { flag::ACK } else { 0 }, 0);
    dst.put_slice(&data);
}

/// Appends a GOAWAY without debug data.
pub(crate) fn put_goaway(dst: &mut BytesMut, last_stream: u32, reason: Reason) {
    put_head(dst, 8, kind::GOAWAY, 0, 0);
    dst.put_u32(last_stream & 0x7fff_ffff);
    dst.put_u32(reason.0);
}

/// Appends a header block as HEADERS plus as many CONTINUATION frames as
/// `max_frame` requires.
pub(crate) fn put_headers(
    dst: &mut BytesMut,
    stream: u32,
    block: &[u8],
    end_stream: bool,
    max_frame: usize,
) {
    let max_frame = max_frame.max(1);
    let mut chunks = block.chunks(max_frame).peekable();
    let first = chunks.next().unwrap_or(&[]);
    let mut flags = if end_stream { flag::END_STREAM } else { 0 };
    if chunks.peek().is_none() {
        flags |= flag::END_HEADERS;
    }
    put_head(dst, first.len(), kind::HEADERS, flags, stream);
    dst.put_slice(first);
    while let Some(c) = chunks.next() {
        let flags = if chunks.peek().is_none() {
            flag::END_HEADERS
        } else {
            0
        };
        put_head(dst, c.len(), kind::CONTINUATION, flags, stream);
        dst.put_slice(c);
    }
}

/// Appends one DATA frame.
pub(crate) fn put_data(dst: &mut BytesMut, stream: u32, data: &[u8], end_stream: bool) {
    let flags = if end_stream { flag::END_STREAM } else { 0 };
    put_head(dst, data.len(), kind::DATA, flags, stream);
    dst.put_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_round_trip() {
        let mut b = BytesMut::new();
        put_head(&mut b, 0x01_02_03, kind::HEADERS, 0x25, 0x8000_0007);
        assert_eq!(&b[..], &[1, 2, 3, 1, 0x25, 0, 0, 0, 7]);
        let h = FrameHead::parse(&b).unwrap();
        assert_eq!(
            h,
            FrameHead {
                len: 0x01_02_03,
                kind: kind::HEADERS,
                flags: 0x25,
                stream: 7
            }
        );
        assert!(FrameHead::parse(&b[..8]).is_none());
    }

    #[test]
    fn padding_and_priority() {
        let head = |flags| FrameHead {
            len: 0,
            kind: kind::HEADERS,
            flags,
            stream: 1,
        };
        // pad length 2, priority 5 bytes, fragment "ab", 2 padding bytes
        let p = [2u8, 0, 0, 0, 3, 16, b'a', b'b', 0, 0];
        let r = headers_fragment(&head(flag::PADDED | flag::PRIORITY), &p).unwrap();
        assert_eq!(&p[r], b"ab");
        assert!(strip_padding(&head(flag::PADDED), &[5, 1, 2]).is_err());
        assert!(strip_padding(&head(flag::PADDED), &[]).is_err());
        assert!(headers_fragment(&head(flag::PRIORITY), &[1, 2]).is_err());
        assert_eq!(strip_padding(&head(0), &[1, 2, 3]).unwrap(), (0, 3));
    }

    #[test]
    fn headers_split_into_continuations() {
        let mut b = BytesMut::new();
        put_headers(&mut b, 3, b"abcdefg", true, 3);
        let h1 = FrameHead::parse(&b).unwrap();
        assert_eq!(
            (h1.len, h1.kind, h1.flags),
            (3, kind::HEADERS, flag::END_STREAM)
        );
        let h2 = FrameHead::parse(&b[12..]).unwrap();
        assert_eq!((h2.len, h2.kind, h2.flags), (3, kind::CONTINUATION, 0));
        let h3 = FrameHead::parse(&b[24..]).unwrap();
        assert_eq!(
            (h3.len, h3.kind, h3.flags),
            (1, kind::CONTINUATION, flag::END_HEADERS)
        );
        assert_eq!(b.len(), 34);
        let mut one = BytesMut::new();
        put_headers(&mut one, 1, b"ab", false, 16_384);
        assert_eq!(FrameHead::parse(&one).unwrap().flags, flag::END_HEADERS);
    }

    #[test]
    fn settings_payload() {
        let mut b = BytesMut::new();
        put_settings(
            &mut b,
            &[
                (setting::ENABLE_PUSH, 0),
                (setting::INITIAL_WINDOW_SIZE, 1 << 20),
            ],
        );
        let v: Vec<_> = settings(&b[HEAD_LEN..]).unwrap().collect();
        assert_eq!(v, vec![(2, 0), (4, 1 << 20)]);
        assert!(settings(&[0; 5]).is_err());
    }
}
