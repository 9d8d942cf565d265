//! The transport's sans-IO codecs, for `benches/` and the fuzz targets.
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
    let read = read_size(first);
    let mut c = Connection::new(Config { max_body: 4096 });
    let req = fuzz_push();
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

/// Plays `server` (any bytes) as the server side of one HTTP/1.1 keep-alive
/// connection that carries pushes in turn, through the same `Http1Conn::send`
/// the pool uses. The bytes after the first are the server's answers, one
/// part per request (parts split at [`HTTP1_NEXT_ANSWER`]); a part becomes
/// readable once a request has been written, in reads whose size the first
/// byte picks; between parts the server is silent, after the last it closes.
/// The connection is used again (up to four requests) while it says it can
/// be. For the `h1_client` fuzz target; it panics only when an invariant
/// breaks:
/// - an answer's body is within the limit;
/// - after an error the connection is not offered again.
///
/// A server that goes silent mid-answer leaves the exchange waiting, as a
/// real one would until the request timeout; that ends the run. Returns the
/// answers received.
pub fn http1_client_against(server: &[u8]) -> usize {
    use std::future::Future;
    use std::task::{Context, Poll};
    let Some((&first, rest)) = server.split_first() else {
        return 0;
    };
    let mut parts = Vec::new();
    let mut tail = rest;
    while let Some(at) = tail
        .windows(HTTP1_NEXT_ANSWER.len())
        .position(|w| w == HTTP1_NEXT_ANSWER)
    {
        parts.push(&tail[..at]);
        tail = &tail[at + HTTP1_NEXT_ANSWER.len()..];
    }
    parts.push(tail);
    parts.reverse();
    let mut conn = http1::Http1Conn::new(Scripted {
        parts,
        now: &[],
        read: read_size(first),
    });
    let req = fuzz_push();
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut answers = 0;
    for _ in 0..4 {
        let result = {
            let mut send = std::pin::pin!(conn.send(&req, 4096));
            match send.as_mut().poll(&mut cx) {
                Poll::Ready(r) => r,
                // The server went silent mid-answer.
                Poll::Pending => return answers,
            }
        };
        match result {
            Ok(answer) => {
                assert!(answer.body().len() <= 4096, "body over the limit");
                answers += 1;
            }
            Err(_) => {
                assert!(!conn.is_open(), "a failed connection was offered again");
                return answers;
            }
        }
        if !conn.is_open() {
            return answers;
        }
    }
    answers
}

/// The push the client harnesses send.
fn fuzz_push() -> Request<Bytes> {
    let mut req = Request::new(Bytes::from_static(b"wake"));
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = http::Uri::from_static("https://db5p.notify.windows.com/?token=fuzz");
    req
}

/// The size of the reads a harness hands the client, from the input's first
/// byte: 1 to 2,332 bytes.
fn read_size(first: u8) -> usize {
    usize::from(first % 64) * 37 + 1
}

/// Where [`http1_client_against`] splits the server's bytes into the
/// answers to successive requests.
pub const HTTP1_NEXT_ANSWER: &[u8] = b"\x00NEXT\x00";

/// The server side for [`http1_client_against`]: each write (a request)
/// makes the next part readable, `read` bytes at a time; with the part read
/// it is silent (`Pending`) while parts remain, then closed (EOF).
struct Scripted<'a> {
    /// The parts not yet released, last first.
    parts: Vec<&'a [u8]>,
    /// What is readable now.
    now: &'a [u8],
    read: usize,
}

impl tokio::io::AsyncRead for Scripted<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.now.is_empty() && !self.parts.is_empty() {
            return std::task::Poll::Pending;
        }
        let n = self.read.min(self.now.len()).min(buf.remaining());
        let (now, later) = self.now.split_at(n);
        buf.put_slice(now);
        self.now = later;
        std::task::Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for Scripted<'_> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        // A request: the server answers with its next part, after whatever
        // it had sent unasked.
        if self.now.is_empty() {
            if let Some(next) = self.parts.pop() {
                self.now = next;
            }
        }
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::{http1_client_against, HTTP1_NEXT_ANSWER};

    fn script(read: u8, answers: &[&str]) -> Vec<u8> {
        let mut v = vec![read];
        for (i, a) in answers.iter().enumerate() {
            if i > 0 {
                v.extend_from_slice(HTTP1_NEXT_ANSWER);
            }
            v.extend_from_slice(a.as_bytes());
        }
        v
    }

    const OK: &str = "HTTP/1.1 200 OK\r\nX-WNS-Status: received\r\nContent-Length: 2\r\n\r\nok";

    #[test]
    fn the_http1_harness_follows_the_connection() {
        // Keep-alive answers, in reads of 1 byte and of many: each is read.
        for read in [0u8, 1, 63] {
            assert_eq!(http1_client_against(&script(read, &[OK, OK, OK])), 3);
        }
        let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
        assert_eq!(http1_client_against(&script(5, &[chunked, OK])), 2);
        // `Connection: close` ends it after the first.
        let close = "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(http1_client_against(&script(5, &[close, OK])), 1);
        // Bytes nobody asked for after an answer: not reused.
        assert_eq!(
            http1_client_against(&script(5, &[&format!("{OK}X"), OK])),
            1
        );
        // A bad length is an error; a server silent mid-answer leaves it waiting.
        let signed = "HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok";
        assert_eq!(http1_client_against(&script(5, &[signed])), 0);
        assert_eq!(
            http1_client_against(&script(5, &["HTTP/1.1 200 OK\r\n", OK])),
            0
        );
        assert_eq!(http1_client_against(&[]), 0);
    }
}
