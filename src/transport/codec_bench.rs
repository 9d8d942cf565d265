//! The transport's sans-IO codecs, for `benches/`.
//!
//! Not part of the API: public only so that the benches can reach it, hidden
//! from the docs, and free to change with the codecs. Each type here holds the state one connection would (the HTTP/1.1
//! header cache, the HPACK encoder and decoder), so a bench measures the
//! steady state a long-lived connection sees.

use bytes::{Bytes, BytesMut};
use http::Request;

use super::http1::{self, HeaderCache};
use super::http2::hpack::{Decoder, Encoder};

/// HTTP/1.1 answer heads parsed as one connection parses them.
pub struct Http1Heads {
    cache: HeaderCache,
}

impl Default for Http1Heads {
    fn default() -> Self {
        Http1Heads {
            cache: HeaderCache::new(),
        }
    }
}

impl Http1Heads {
    /// Parses the head at the start of `buf`: its length and its header
    /// count, or `None` when it is incomplete or invalid.
    pub fn parse(&mut self, buf: &[u8]) -> Option<(usize, usize)> {
        let head = http1::parse_head(buf, &mut self.cache).ok()??;
        Some((head.len, head.response.headers().len()))
    }
}

/// Appends `req` as HTTP/1.1 (head and body) to `out`; false when it cannot
/// be written (no authority and no `Host`, say).
pub fn http1_encode(req: &Request<Bytes>, out: &mut Vec<u8>) -> bool {
    http1::encode_request(req, out).is_ok()
}

/// One connection's HPACK contexts: the encoder for our requests and the
/// decoder for the server's answers.
pub struct Hpack {
    enc: Encoder,
    dec: Decoder,
}

impl Default for Hpack {
    fn default() -> Self {
        Hpack {
            enc: Encoder::new(),
            dec: Decoder::new(4096),
        }
    }
}

impl Hpack {
    /// Appends the header block of `req` (absolute URI) to `dst`.
    pub fn encode_request(&mut self, req: &Request<Bytes>, dst: &mut BytesMut) {
        self.enc.encode_request_of(req, dst);
    }

    /// Decodes one answer's header block: its header count, or `None` for a
    /// compression error or a malformed answer.
    pub fn decode(&mut self, block: &[u8]) -> Option<usize> {
        let head = self.dec.decode(block, 64 * 1024).ok()?;
        if head.malformed.is_some() {
            return None;
        }
        Some(head.headers.len())
    }
}

/// The header block nginx sends with a WNS-style answer: `:status 200`
/// indexed, then `server`, `date`, `content-type`, `content-length` and the
/// three `x-wns-*` fields, each a literal without indexing with a
/// Huffman-coded name and value (nginx never uses the dynamic table).
pub fn nginx_like_answer_block() -> Vec<u8> {
    let fields: [(&str, &str); 7] = [
        ("server", "nginx/1.22.1"),
        ("date", "Tue, 01 Dec 2026 03:37:54 GMT"),
        ("content-type", "text/plain"),
        ("content-length", "0"),
        ("x-wns-status", "received"),
        ("x-wns-notificationstatus", "received"),
        ("x-wns-msg-id", "1A2B3C4D5E6F7081"),
    ];
    let mut block = vec![0x88];
    for (name, value) in fields {
        block.push(0x00);
        for s in [name, value] {
            let mut h = Vec::new();
            super::http2::huffman::encode(s.as_bytes(), &mut h);
            // Every string here is shorter than 127 octets: a one-byte length.
            block.push(0x80 | h.len() as u8);
            block.extend_from_slice(&h);
        }
    }
    block
}

/// Plays `server` (any bytes) as the server side of one HTTP/2 client
/// connection with three pushes in flight, as the connection's driver would:
/// the bytes arrive in reads whose size the first byte picks, every answer is
/// polled after each read, and the client's output is drained. For the
/// `h2_client` fuzz target; it panics only when an invariant breaks:
/// - what the client writes stays within a constant and twice what it read
///   (acknowledgements of PING and SETTINGS, window updates, resets), so a
///   server cannot make it write without end;
/// - when the bytes end (EOF), every exchange still waiting ends.
pub fn http2_client_against(server: &[u8]) {
    use super::http2::conn::{Config, Connection};
    let Some((&first, rest)) = server.split_first() else {
        return;
    };
    let read = usize::from(first % 64) * 37 + 1;
    let mut c = Connection::new(Config { max_body: 4096 });
    let mut req = Request::new(Bytes::from_static(b"wake"));
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = http::Uri::from_static("https://db5p.notify.windows.com/?token=fuzz");
    let keys: Vec<usize> = (0..3).filter_map(|_| c.submit(req.clone()).ok()).collect();
    let waker = std::task::Waker::noop();
    let mut out = BytesMut::new();
    c.take_output(&mut out);
    let mut written = 0usize;
    let mut rbuf = BytesMut::new();
    let mut done = vec![false; keys.len()];
    for chunk in rest.chunks(read) {
        rbuf.extend_from_slice(chunk);
        c.recv(&mut rbuf);
        out.clear();
        c.take_output(&mut out);
        written += out.len();
        for (k, d) in keys.iter().zip(done.iter_mut()) {
            if !*d && c.poll_response(*k, waker).is_ready() {
                *d = true;
            }
        }
        if c.is_finished() {
            break;
        }
    }
    assert!(
        written <= 2 * rest.len() + 64 * 1024,
        "wrote {written} bytes for {} read",
        rest.len()
    );
    // The server's bytes end: the driver sees EOF and fails the connection,
    // which must end every exchange still waiting.
    c.fail(
        super::TransportErrorKind::Broken,
        "the server closed the connection",
    );
    for (k, d) in keys.iter().zip(done.iter_mut()) {
        if !*d {
            assert!(
                c.poll_response(*k, waker).is_ready(),
                "a failed connection left an exchange waiting"
            );
        }
    }
}
