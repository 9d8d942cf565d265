//! HTTP/1.1 on one keep-alive connection, driven by the request's own future.
//!
//! The pool hands a connection to one request at a time, so there is nothing to
//! multiplex: the request writes its bytes, reads the answer and gives the
//! connection back. No task per connection, no channel per request (hyper's
//! client dispatcher cost about 40% of the instructions per wake; see
//! docs/BENCHMARKS.md).
//!
//! The protocol core is sans IO: [`encode_request`] writes the request head,
//! [`parse_head`] reads a response head (with `httparse`) and decides how the
//! body is framed, [`decode_chunked`] undoes chunked coding. [`Http1Conn`] is
//! the thin IO layer over a TLS stream.
//!
//! Invariants: a request is written whole (absolute URI turned into origin
//! form, `Host` from the authority, `Content-Length` from the body, never
//! chunked); an answer's head is at most [`MAX_HEAD`] bytes and its body at most
//! the transport's limit; a connection is reused only when the answer was
//! complete, framed by length or chunks, not `Connection: close`, and nothing
//! followed it; an idle connection is checked for a close before reuse.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};

use super::literal_cache::LiteralCache;

/// Largest response head (status line and headers) read, in bytes.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// Most response headers read.
const MAX_HEADERS: usize = 100;

/// How an HTTP/1.1 exchange failed.
#[derive(Debug)]
pub(crate) enum Http1Error {
    /// The request cannot be written as HTTP/1.1 (a bad header value).
    Request(String),
    /// Reading or writing failed, or the server closed the connection early.
    Io {
        /// What happened.
        message: String,
        /// The underlying error was a TLS error.
        tls: bool,
        /// The request could not be written, or the server closed the
        /// connection cleanly before any byte of an answer: on a reused
        /// connection, the mark of a keep-alive the server had already ended.
        unanswered: bool,
    },
    /// The answer is not valid HTTP/1.1 (or breaks a limit).
    Protocol(String),
}

/// How an answer's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFraming {
    /// No body (204, 304).
    None,
    /// `Content-Length` bytes.
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the server closes the connection.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug)]
pub(crate) struct Head {
    /// Bytes of the head, including the blank line.
    pub(crate) len: usize,
    /// Status, version and headers.
    pub(crate) response: Response<()>,
    /// How the body follows.
    pub(crate) framing: BodyFraming,
    /// The server keeps the connection open after this answer.
    pub(crate) keep_alive: bool,
}

/// Appends the request head and body to `out`. The URI must be absolute (its
/// authority becomes `Host` when the request has none) or origin-form with a
/// `Host` header.
pub(crate) fn encode_request(req: &Request<Bytes>, out: &mut Vec<u8>) -> Result<(), Http1Error> {
    let uri = req.uri();
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        uri.path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .as_bytes(),
    );
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let h = req.headers();
    if !h.contains_key(http::header::HOST) {
        let Some(authority) = uri.authority() else {
            return Err(Http1Error::Request(format!(
                "{uri}: no authority and no Host header"
            )));
        };
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(authority.as_str().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in h {
        if name == http::header::TRANSFER_ENCODING || name == http::header::CONTENT_LENGTH {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let body = req.body();
    // A known length always (never chunked); none for a bodiless GET.
    if !body.is_empty() || req.method() == http::Method::POST {
        out.extend_from_slice(b"content-length: ");
        let mut digits = [0u8; 20];
        out.extend_from_slice(crate::util::decimal(body.len() as u64, &mut digits));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    Ok(())
}

/// Recently seen response header names and values of one connection, so a
/// server that repeats them (every server does) costs no validation or
/// allocation per answer.
pub(crate) struct HeaderCache {
    names: LiteralCache<HeaderName>,
    values: LiteralCache<HeaderValue>,
}

impl HeaderCache {
    /// An empty cache.
    pub(crate) fn new() -> Self {
        HeaderCache {
            names: LiteralCache::new(),
            values: LiteralCache::new(),
        }
    }

    fn name(&mut self, raw: &str) -> Result<HeaderName, Http1Error> {
        if let Some((name, _)) = self.names.get(false, raw.as_bytes()) {
            return Ok(name);
        }
        let name = HeaderName::from_bytes(raw.as_bytes())
            .map_err(|_| Http1Error::Protocol(format!("bad header name {raw:?}")))?;
        self.names.put(false, raw.as_bytes(), raw.len(), &name);
        Ok(name)
    }

    fn value(&mut self, name: &str, raw: &[u8]) -> Result<HeaderValue, Http1Error> {
        if let Some((value, _)) = self.values.get(false, raw) {
            return Ok(value);
        }
        let value = HeaderValue::from_bytes(raw)
            .map_err(|_| Http1Error::Protocol(format!("bad value of header {name}")))?;
        self.values.put(false, raw, raw.len(), &value);
        Ok(value)
    }
}

/// Parses a response head from the start of `buf`: `Ok(None)` when more bytes
/// are needed. Informational (1xx) answers are skipped. Names and values come
/// from (and go into) `cache`.
pub(crate) fn parse_head(buf: &[u8], cache: &mut HeaderCache) -> Result<Option<Head>, Http1Error> {
    let mut start = 0;
    loop {
        let mut headers =
            [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut r = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut r,
            &buf[start..],
            &mut headers,
        );
        let len = match parsed {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                if buf.len() > MAX_HEAD {
                    return Err(Http1Error::Protocol(format!(
                        "response head longer than {MAX_HEAD} bytes"
                    )));
                }
                return Ok(None);
            }
            Err(e) => {
                return Err(Http1Error::Protocol(format!(
                    "malformed response head: {e}"
                )))
            }
        };
        let code = r.code.unwrap_or(0);
        let status = StatusCode::from_u16(code)
            .map_err(|_| Http1Error::Protocol(format!("bad status code {code}")))?;
        if status.is_informational() {
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(Http1Error::Protocol(
                    "101 Switching Protocols to a request that asked for no upgrade".into(),
                ));
            }
            start += len;
            continue;
        }
        let http10 = r.version == Some(0);
        let mut map = HeaderMap::with_capacity(r.headers.len());
        let mut length: Option<usize> = None;
        // Some(last coding is chunked) once a Transfer-Encoding is seen.
        let mut te_chunked: Option<bool> = None;
        let mut tokens = ConnectionTokens::default();
        for h in r.headers.iter() {
            let name = cache.name(h.name)?;
            let value = cache.value(h.name, h.value)?;
            if name == http::header::CONTENT_LENGTH {
                let n = content_length_list(h.value)
                    .ok_or_else(|| Http1Error::Protocol("bad Content-Length".into()))?;
                if length.is_some_and(|l| l != n) {
                    return Err(Http1Error::Protocol("conflicting Content-Length".into()));
                }
                length = Some(n);
            } else if name == http::header::TRANSFER_ENCODING {
                te_chunked = Some(last_coding_is_chunked(h.value));
            } else if name == http::header::CONNECTION {
                tokens.add(h.value);
            }
            map.append(name, value);
        }
        if http10 && te_chunked.is_some() {
            // RFC 9112 §6.1: the framing is faulty, whatever else the head
            // says (hyper refuses it too).
            return Err(Http1Error::Protocol(
                "an HTTP/1.0 answer with Transfer-Encoding (faulty framing)".into(),
            ));
        }
        let framing = body_framing(status, te_chunked, length);
        let mut response = Response::new(());
        *response.status_mut() = status;
        *response.version_mut() = if http10 {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        *response.headers_mut() = map;
        return Ok(Some(Head {
            len: start + len,
            response,
            framing,
            keep_alive: tokens.keep_alive(http10, framing),
        }));
    }
}

/// Decodes a whole chunked body from the start of `buf` into `out`: `Ok(None)`
/// when more bytes are needed, else the bytes consumed (trailers included,
/// and dropped). `max` bounds the decoded body.
pub(crate) fn decode_chunked(
    buf: &[u8],
    out: &mut BytesMut,
    max: usize,
) -> Result<Option<usize>, Http1Error> {
    out.clear();
    let bad = |what: &str| Http1Error::Protocol(format!("malformed chunked body: {what}"));
    let mut pos = 0;
    loop {
        let Some(eol) = find_crlf(&buf[pos..]) else {
            if buf.len() - pos > 1024 {
                return Err(bad("chunk-size line longer than 1024 bytes"));
            }
            return Ok(None);
        };
        let line = &buf[pos..pos + eol];
        let size_text = line.split(|b| *b == b';').next().unwrap_or(&[]);
        // 1*HEXDIG (RFC 9112 §7.1), with whitespace before a chunk
        // extension tolerated; `from_str_radix` alone would take a sign.
        let size_text = size_text.trim_ascii();
        if size_text.is_empty() || !size_text.iter().all(u8::is_ascii_hexdigit) {
            return Err(bad("chunk size is not hex"));
        }
        let size = std::str::from_utf8(size_text)
            .ok()
            .and_then(|t| usize::from_str_radix(t, 16).ok())
            .ok_or_else(|| bad("chunk size too large"))?;
        pos += eol + 2;
        if size == 0 {
            // Trailers: header lines until an empty line.
            loop {
                let Some(eol) = find_crlf(&buf[pos..]) else {
                    if buf.len() - pos > MAX_HEAD {
                        return Err(bad("trailers longer than the head limit"));
                    }
                    return Ok(None);
                };
                pos += eol + 2;
                if eol == 0 {
                    return Ok(Some(pos));
                }
            }
        }
        if out.len().saturating_add(size) > max {
            return Err(Http1Error::Protocol(format!(
                "body longer than {max} bytes"
            )));
        }
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&buf[pos..pos + size]);
        pos += size;
        if &buf[pos..pos + 2] != b"\r\n" {
            return Err(bad("chunk not followed by CRLF"));
        }
        pos += 2;
    }
}

/// How an answer's body follows its head (RFC 9112 §6.3): none for 204 and
/// 304; by chunks when a `Transfer-Encoding` ends with `chunked`, to the
/// close when it ends with another coding (Transfer-Encoding wins over
/// Content-Length); by its length; else to the close.
pub(crate) fn body_framing(
    status: StatusCode,
    te_chunked: Option<bool>,
    length: Option<usize>,
) -> BodyFraming {
    if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return BodyFraming::None;
    }
    match (te_chunked, length) {
        (Some(true), _) => BodyFraming::Chunked,
        (Some(false), _) | (None, None) => BodyFraming::UntilClose,
        (None, Some(n)) => BodyFraming::Length(n),
    }
}

/// Whether a `Transfer-Encoding` value's last coding is `chunked` (it must
/// be last; a body with another last coding runs to the close).
pub(crate) fn last_coding_is_chunked(value: &[u8]) -> bool {
    value
        .rsplit(|b| *b == b',')
        .next()
        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// The `close` and `keep-alive` tokens of an answer's `Connection` fields.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ConnectionTokens {
    close: bool,
    keep_alive: bool,
}

impl ConnectionTokens {
    /// Takes in one `Connection` field value.
    pub(crate) fn add(&mut self, value: &[u8]) {
        for token in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
            self.close |= token.eq_ignore_ascii_case(b"close");
            self.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
        }
    }

    /// The connection stays open after the answer: no `close` (which wins
    /// over `keep-alive`), `keep-alive` if the answer is HTTP/1.0, and a
    /// body that does not run to the close.
    pub(crate) fn keep_alive(self, http10: bool, framing: BodyFraming) -> bool {
        !self.close && (!http10 || self.keep_alive) && framing != BodyFraming::UntilClose
    }
}

/// An HTTP/1.1 `Content-Length` field value: one length, or a
/// comma-separated list of the same length (RFC 9112 §6.3 lets a recipient
/// take `42, 42` as 42), each by [`crate::transport::content_length_value`];
/// anything else is invalid framing.
pub(crate) fn content_length_list(v: &[u8]) -> Option<usize> {
    let mut len = None;
    for item in v.split(|b| *b == b',') {
        let item = item.trim_ascii();
        let n = crate::transport::content_length_value(item)?;
        if len.is_some_and(|l| l != n) {
            return None;
        }
        len = Some(n);
    }
    usize::try_from(len?).ok()
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

/// One keep-alive connection: the stream and its read and write buffers.
pub(crate) struct Http1Conn<S> {
    io: S,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    /// False once the connection must not carry another request.
    reusable: bool,
    /// Exchanges completed on this connection.
    exchanges: u64,
    /// Header names and values this server sent recently.
    headers: HeaderCache,
}

impl<S: AsyncRead + tokio::io::AsyncWrite + Unpin> Http1Conn<S> {
    /// Wraps a connected (TLS) stream.
    pub(crate) fn new(io: S) -> Self {
        Http1Conn {
            io,
            rbuf: BytesMut::with_capacity(8 * 1024),
            wbuf: Vec::with_capacity(1024),
            reusable: true,
            exchanges: 0,
            headers: HeaderCache::new(),
        }
    }

    /// Exchanges completed on this connection (0: fresh).
    pub(crate) fn exchanges(&self) -> u64 {
        self.exchanges
    }

    /// The last answer left the connection reusable (does not look at the socket).
    pub(crate) fn is_reusable(&self) -> bool {
        self.reusable
    }

    /// True when the connection can carry a request: the last answer left it
    /// reusable and the server has not closed it (or sent stray bytes) since.
    /// Never waits.
    pub(crate) fn is_open(&mut self) -> bool {
        if !self.reusable {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut probe = [0u8; 1];
        let mut rb = ReadBuf::new(&mut probe);
        match Pin::new(&mut self.io).poll_read(&mut cx, &mut rb) {
            Poll::Pending => true,
            // Closed (EOF), failed, or bytes nobody asked for.
            Poll::Ready(_) => {
                self.reusable = false;
                false
            }
        }
    }

    /// Sends `req` and reads the whole answer (body at most `max_body` bytes).
    /// Afterwards [`Http1Conn::is_open`] tells whether the connection can be
    /// reused.
    pub(crate) async fn send(
        &mut self,
        req: &Request<Bytes>,
        max_body: usize,
    ) -> Result<Response<Bytes>, Http1Error> {
        // Until the answer is complete, a failure leaves the connection unusable.
        self.reusable = false;
        self.wbuf.clear();
        encode_request(req, &mut self.wbuf)?;
        // Not written: the server cannot have acted on it.
        let unsent = |e| io_error("writing the request", e, true);
        self.io.write_all(&self.wbuf).await.map_err(unsent)?;
        self.io.flush().await.map_err(unsent)?;
        if self.wbuf.capacity() > 64 * 1024 {
            self.wbuf = Vec::with_capacity(1024);
        }
        self.rbuf.clear();
        let head = loop {
            // Nothing to parse before the first read.
            if !self.rbuf.is_empty() {
                if let Some(head) = parse_head(&self.rbuf, &mut self.headers)? {
                    break head;
                }
            }
            if self.read_more().await? == 0 {
                let unanswered = self.rbuf.is_empty();
                return Err(Http1Error::Io {
                    message: if unanswered {
                        "the server closed the connection without an answer".into()
                    } else {
                        "the server closed the connection in the middle of the answer head".into()
                    },
                    tls: false,
                    unanswered,
                });
            }
        };
        self.rbuf.advance(head.len);
        let body = match head.framing {
            BodyFraming::None => Bytes::new(),
            BodyFraming::Length(n) => {
                if n > max_body {
                    return Err(Http1Error::Protocol(format!(
                        "body longer than {max_body} bytes (Content-Length {n})"
                    )));
                }
                while self.rbuf.len() < n {
                    if self.read_more().await? == 0 {
                        return Err(closed_in_body());
                    }
                }
                self.rbuf.split_to(n).freeze()
            }
            BodyFraming::Chunked => {
                let mut out = BytesMut::new();
                loop {
                    if let Some(used) = decode_chunked(&self.rbuf, &mut out, max_body)? {
                        self.rbuf.advance(used);
                        break out.freeze();
                    }
                    if self.rbuf.len() > max_body.saturating_mul(2) + MAX_HEAD {
                        return Err(Http1Error::Protocol(format!(
                            "chunked body longer than {max_body} bytes"
                        )));
                    }
                    if self.read_more().await? == 0 {
                        return Err(closed_in_body());
                    }
                }
            }
            BodyFraming::UntilClose => loop {
                // Checked before each read: the bytes that came with the head
                // count too.
                if self.rbuf.len() > max_body {
                    return Err(Http1Error::Protocol(format!(
                        "body longer than {max_body} bytes"
                    )));
                }
                if self.read_more().await? == 0 {
                    break self.rbuf.split().freeze();
                }
            },
        };
        // Reusable only when the answer ended exactly at its framing.
        self.reusable = head.keep_alive && self.rbuf.is_empty();
        self.exchanges += 1;
        let (parts, ()) = head.response.into_parts();
        Ok(Response::from_parts(parts, body))
    }

    async fn read_more(&mut self) -> Result<usize, Http1Error> {
        if self.rbuf.capacity() - self.rbuf.len() < 4096 {
            self.rbuf.reserve(8 * 1024);
        }
        self.io
            .read_buf(&mut self.rbuf)
            .await
            .map_err(|e| io_error("reading the answer", e, false))
    }
}

fn closed_in_body() -> Http1Error {
    Http1Error::Io {
        message: "the server closed the connection in the middle of the answer body".into(),
        tls: false,
        unanswered: false,
    }
}

fn io_error(doing: &str, e: std::io::Error, unanswered: bool) -> Http1Error {
    let tls = super::is_tls_error(&e);
    Http1Error::Io {
        message: format!("{doing}: {e}"),
        tls,
        unanswered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Head {
        parse_head(text.as_bytes(), &mut HeaderCache::new())
            .unwrap()
            .unwrap()
    }

    #[test]
    fn request_is_origin_form_with_host_and_length() {
        let mut req = Request::new(Bytes::from_static(b"wake"));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = "https://db5p.notify.windows.com/?token=AwY%2b"
            .parse()
            .unwrap();
        req.headers_mut()
            .insert("x-wns-type", HeaderValue::from_static("wns/raw"));
        req.headers_mut()
            .insert("content-length", HeaderValue::from_static("999"));
        let mut out = Vec::new();
        encode_request(&req, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /?token=AwY%2b HTTP/1.1\r\nhost: db5p.notify.windows.com\r\n\
             x-wns-type: wns/raw\r\ncontent-length: 4\r\n\r\nwake"
        );
    }

    #[test]
    fn request_without_authority_or_host_is_refused() {
        let mut req = Request::new(Bytes::new());
        *req.uri_mut() = "/x".parse().unwrap();
        assert!(matches!(
            encode_request(&req, &mut Vec::new()),
            Err(Http1Error::Request(_))
        ));
    }

    #[test]
    fn heads_and_framing() {
        let h = head("HTTP/1.1 200 OK\r\nX-WNS-Status: received\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(h.response.status(), 200);
        assert_eq!(h.response.headers()["x-wns-status"], "received");
        assert_eq!(h.framing, BodyFraming::Length(0));
        assert!(h.keep_alive);

        let h = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 5\r\n\r\n",
        );
        assert_eq!(h.framing, BodyFraming::Chunked);
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
        assert_eq!(h.framing, BodyFraming::UntilClose);
        assert!(!h.keep_alive);
        let h = head("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(h.framing, BodyFraming::UntilClose);
        let h = head("HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n");
        assert_eq!(h.framing, BodyFraming::None);
        let h = head("HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
        assert!(!h.keep_alive);
        let h = head("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert!(!h.keep_alive);
        let h = head("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n");
        assert!(h.keep_alive);
        // `close` wins, in any order (the crates' stack's rule too).
        let h =
            head("HTTP/1.0 200 OK\r\nConnection: close, keep-alive\r\nContent-Length: 0\r\n\r\n");
        assert!(!h.keep_alive);
        // HTTP/1.0 with Transfer-Encoding: faulty framing (RFC 9112 §6.1).
        let mut cache = HeaderCache::new();
        let faulty =
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(
            parse_head(faulty.as_bytes(), &mut cache),
            Err(Http1Error::Protocol(_))
        ));
    }

    #[test]
    fn content_length_is_digits_or_a_list_of_one_length() {
        let framing = |v: &str| {
            parse_head(
                format!("HTTP/1.1 200 OK\r\nContent-Length: {v}\r\n\r\n").as_bytes(),
                &mut HeaderCache::new(),
            )
            .map(|h| h.map(|h| h.framing))
        };
        assert_eq!(framing("5").unwrap(), Some(BodyFraming::Length(5)));
        // RFC 9112 §6.3: a list of one repeated length is that length.
        assert_eq!(framing("5, 5").unwrap(), Some(BodyFraming::Length(5)));
        assert_eq!(framing("5,5 ,5").unwrap(), Some(BodyFraming::Length(5)));
        // Only digits: `str::parse` took a sign, which is not a length.
        for bad in [
            "+5",
            "-5",
            "5, 6",
            "5,",
            ",5",
            "0x5",
            "5 5",
            "10000000000000000000",
        ] {
            assert!(framing(bad).is_err(), "{bad:?} was taken as a length");
        }
    }

    #[test]
    fn a_shared_header_cache_gives_each_head_its_own_fields() {
        let mut cache = HeaderCache::new();
        let a = "HTTP/1.1 200 OK\r\nX-WNS-Status: received\r\nX-WNS-Msg-ID: 1\r\nContent-Length: 0\r\n\r\n";
        let b = "HTTP/1.1 200 OK\r\nx-wns-status: dropped\r\nX-WNS-Msg-ID: 22\r\nContent-Length: 0\r\n\r\n";
        for _ in 0..3 {
            for (text, status, id) in [(a, "received", "1"), (b, "dropped", "22")] {
                let h = parse_head(text.as_bytes(), &mut cache).unwrap().unwrap();
                let got = h.response.headers();
                assert_eq!(got["x-wns-status"], status);
                assert_eq!(got["x-wns-msg-id"], id);
                assert_eq!(got.len(), 3);
            }
        }
        // A control octet in a value is an error (httparse's), cache or not.
        let bad = "HTTP/1.1 200 OK\r\nX-WNS-Status: re\x01ceived\r\n\r\n";
        assert!(parse_head(bad.as_bytes(), &mut cache).is_err());
    }

    #[test]
    fn informational_answers_are_skipped() {
        let text = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\nHTTP/1.1 410 Gone\r\nContent-Length: 0\r\n\r\n";
        let h = head(text);
        assert_eq!(h.response.status(), 410);
        assert_eq!(h.len, text.len());
        assert!(parse_head(
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            &mut HeaderCache::new()
        )
        .is_err());
    }

    #[test]
    fn partial_bad_and_oversized_heads() {
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\nX-A: b\r\n", &mut HeaderCache::new())
                .unwrap()
                .is_none()
        );
        assert!(parse_head(b"", &mut HeaderCache::new()).unwrap().is_none());
        assert!(parse_head(b"HTTX/1.1 200 OK\r\n\r\n", &mut HeaderCache::new()).is_err());
        assert!(parse_head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            &mut HeaderCache::new()
        )
        .is_err());
        assert!(parse_head(
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            &mut HeaderCache::new()
        )
        .is_err());
        let mut big = b"HTTP/1.1 200 OK\r\n".to_vec();
        while big.len() <= MAX_HEAD {
            big.extend_from_slice(
                b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
            );
        }
        assert!(
            parse_head(&big, &mut HeaderCache::new()).is_err(),
            "an endless head is an error"
        );
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        assert!(parse_head(
            format!("HTTP/1.1 200 OK\r\n{many}\r\n").as_bytes(),
            &mut HeaderCache::new()
        )
        .is_err());
    }

    #[test]
    fn chunked_bodies() {
        let mut out = BytesMut::new();
        let body = b"4\r\nwake\r\n5;ext=1\r\n, hi!\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        assert_eq!(
            decode_chunked(body, &mut out, 100).unwrap(),
            Some(body.len() - 4)
        );
        assert_eq!(&out[..], b"wake, hi!");
        for cut in 0..body.len() - 4 {
            assert_eq!(
                decode_chunked(&body[..cut], &mut out, 100).unwrap(),
                None,
                "cut {cut}"
            );
        }
        assert!(
            decode_chunked(b"4\r\nwake\r\n0\r\n\r\n", &mut out, 3).is_err(),
            "over the limit"
        );
        assert!(decode_chunked(b"zz\r\n", &mut out, 100).is_err());
        // 1*HEXDIG: no sign, no empty size; a size past usize is an error.
        assert!(decode_chunked(b"+4\r\nwake\r\n0\r\n\r\n", &mut out, 100).is_err());
        assert!(decode_chunked(b"\r\n", &mut out, 100).is_err());
        assert!(decode_chunked(b"fffffffffffffffff\r\n", &mut out, 100).is_err());
        assert_eq!(
            decode_chunked(b"4 ;x\r\nwake\r\n0\r\n\r\n", &mut out, 100).unwrap(),
            Some(17),
            "whitespace before an extension"
        );
        assert!(decode_chunked(b"4\r\nwakeXY0\r\n\r\n", &mut out, 100).is_err());
        assert!(
            decode_chunked(&[b'1'; 2000], &mut out, 100).is_err(),
            "endless size line"
        );
    }

    #[tokio::test]
    async fn exchanges_over_a_stream_and_reuse() {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let mut conn = Http1Conn::new(client);
        let mut req = Request::new(Bytes::from_static(b"wake"));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = "https://a.notify.windows.com/?t=1".parse().unwrap();
        let srv = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            for answer in [
                &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"[..],
                &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"[..],
                &b"HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"[..],
            ] {
                let n = server.read(&mut buf).await.unwrap();
                got.push(String::from_utf8_lossy(&buf[..n]).to_string());
                server.write_all(answer).await.unwrap();
            }
            got
        });
        let r = conn.send(&req, 1024).await.unwrap();
        assert_eq!(r.body().as_ref(), b"ok");
        assert!(conn.is_open());
        let r = conn.send(&req, 1024).await.unwrap();
        assert_eq!(r.body().as_ref(), b"hi");
        assert!(conn.is_open());
        let r = conn.send(&req, 1024).await.unwrap();
        assert_eq!(r.status(), 404);
        assert!(!conn.is_open(), "Connection: close");
        let got = srv.await.unwrap();
        assert!(got
            .iter()
            .all(|g| g.starts_with("POST /?t=1 HTTP/1.1\r\nhost: a.notify.windows.com\r\n")));
    }

    #[tokio::test]
    async fn a_closed_idle_connection_is_not_reused_and_an_early_close_is_an_io_error() {
        let (client, server) = tokio::io::duplex(1024);
        let mut conn = Http1Conn::new(client);
        assert!(conn.is_open());
        drop(server);
        assert!(!conn.is_open());

        let (client, mut server) = tokio::io::duplex(1024);
        let mut conn = Http1Conn::new(client);
        let mut req = Request::new(Bytes::from_static(b"wake"));
        *req.uri_mut() = "https://a.notify.windows.com/".parse().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let _ = server.read(&mut buf).await;
            let _ = server
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
                .await;
        });
        assert!(matches!(
            conn.send(&req, 1024).await,
            Err(Http1Error::Io {
                unanswered: false,
                ..
            })
        ));
        assert!(!conn.is_open());
    }
}
