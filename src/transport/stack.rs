//! Which protocol code carries a connection: the project's own codecs
//! ([`super::http2`], [`super::http1`]) or the ecosystem's crates (the `h2`
//! crate for HTTP/2, hyper's client connection for HTTP/1.1).
//!
//! The pool holds an [`H2Handle`] per HTTP/2 slot and an [`H1Handle`] per
//! keep-alive connection and never looks inside them, so the choice is made
//! here and only here ([`HttpStack`], `[transport] stack` in the config file,
//! `--stack` on `bench`). Both stacks get the same pool (slots, round-robin,
//! keep-alive queue), the same TLS (rustls through hyper-rustls), the same
//! limits (answer body at most `max_response_body`, header blocks at most
//! 64 KiB, no server push) and the same resend rule for requests a server did
//! not act on. So a benchmark of one against the other measures the protocol
//! code and nothing else; docs/ARCHITECTURE.md records the decision and its
//! figures.
//!
//! The crates' side, in short:
//! - HTTP/2: `h2::client` over the TLS stream, its connection future on a task
//!   of its own (which holds the connection's guards). A request refused with
//!   `REFUSED_STREAM`, above the last stream id of a server's GOAWAY (h2 gives
//!   only those streams the GOAWAY's error), or never sent because the
//!   connection had closed or its stream ids had run out (even when another
//!   request took the last id between h2's `ready` and `send_request`) is
//!   handed back as unprocessed, like the own client does. A connection
//!   counts as closed from its first GOAWAY or IO error, or once its stream
//!   ids run out, not only once its task ends: h2 refuses new streams from
//!   then on, while the streams already open may run for a long time yet.
//! - HTTP/1.1: `hyper::client::conn::http1` (origin-form target, `Host` from
//!   the URI), its connection future on a task of its own. A connection is
//!   kept after an answer by the own codec's rule (not `Connection: close`,
//!   framed by length or chunks), not by whether hyper's task has closed it
//!   yet. A reused connection that the server had closed shows up as a
//!   canceled request or an incomplete message before the head, which the
//!   pool sends once more on a fresh connection, as with the own codec.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::http1::{Http1Conn, Http1Error};
use super::http2::{self, Http2Conn};
use super::TransportErrorKind;

/// Which code speaks HTTP on the push path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpStack {
    /// The project's own HTTP/2 and HTTP/1.1 codecs (default; see
    /// docs/ARCHITECTURE.md for why).
    #[default]
    Own,
    /// The `h2` crate for HTTP/2 and hyper's client connection for HTTP/1.1.
    Crates,
}

impl HttpStack {
    /// The name used in the config file, on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpStack::Own => "own",
            HttpStack::Crates => "crates",
        }
    }
}

/// The own client's limits and windows, announced by the crates' too.
use super::http2::conn::{CONN_WINDOW, MAX_HEADER_BLOCK, STREAM_WINDOW};

/// One HTTP/2 connection, whichever code speaks it.
pub(crate) enum H2Handle {
    /// The project's own client.
    Own(Http2Conn),
    /// The `h2` crate.
    Crates(CratesH2),
}

impl H2Handle {
    /// The connection takes no new requests.
    pub(crate) fn is_closed(&self) -> bool {
        match self {
            H2Handle::Own(c) => c.is_closed(),
            H2Handle::Crates(c) => c.closed.load(Ordering::Acquire),
        }
    }

    /// Sends `req` (absolute `https` URI) and reads the whole answer.
    pub(crate) async fn send(
        &self,
        req: Request<Bytes>,
    ) -> Result<Response<Bytes>, http2::Failure> {
        match self {
            H2Handle::Own(c) => c.send(req).await,
            H2Handle::Crates(c) => c.send(req).await,
        }
    }
}

/// An HTTP/2 connection spoken by the `h2` crate.
pub(crate) struct CratesH2 {
    send: h2::client::SendRequest<Bytes>,
    closed: Arc<AtomicBool>,
    max_body: usize,
}

impl CratesH2 {
    /// Runs the h2 handshake on `io` and spawns the connection's task, which
    /// holds `guard` for as long as the connection lives.
    pub(crate) async fn start(
        io: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
        max_body: usize,
        guard: impl Send + 'static,
    ) -> Result<CratesH2, http2::Failure> {
        Self::start_with(h2_builder(), io, max_body, guard).await
    }

    /// [`CratesH2::start`] with a builder of the caller's (the tests start
    /// at the end of the stream-id space).
    async fn start_with<S, G>(
        builder: h2::client::Builder,
        io: S,
        max_body: usize,
        guard: G,
    ) -> Result<CratesH2, http2::Failure>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        G: Send + 'static,
    {
        let (send, conn) = builder
            .handshake::<_, Bytes>(io)
            .await
            .map_err(|e| failure(&e, "HTTP/2 handshake"))?;
        let closed = Arc::new(AtomicBool::new(false));
        let flag = closed.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let _ = conn.await;
            flag.store(true, Ordering::Release);
        });
        Ok(CratesH2 {
            send,
            closed,
            max_body,
        })
    }

    async fn send(&self, req: Request<Bytes>) -> Result<Response<Bytes>, http2::Failure> {
        match self.send.clone().ready().await {
            Ok(sender) => self.send_on(sender, req).await,
            Err(e) => Err(self.unsent(req, &e)),
        }
    }

    /// The connection takes no new streams (after a GOAWAY, even a graceful
    /// one whose open streams still run, once it failed, or once its stream
    /// ids ran out): the pool must open another rather than resend on this
    /// one.
    fn unsent(&self, req: Request<Bytes>, e: &h2::Error) -> http2::Failure {
        self.closed.store(true, Ordering::Release);
        http2::Failure {
            kind: TransportErrorKind::Broken,
            message: format!("the connection closed before the request was sent: {e}"),
            unprocessed: Some(Box::new(req)),
        }
    }

    /// [`CratesH2::send`] once h2 said the connection can take a stream.
    async fn send_on(
        &self,
        mut sender: h2::client::SendRequest<Bytes>,
        req: Request<Bytes>,
    ) -> Result<Response<Bytes>, http2::Failure> {
        // h2 takes the head by value; the request is kept whole so that one
        // the server did not act on can be handed back for a resend.
        let mut head = Request::new(());
        *head.method_mut() = req.method().clone();
        *head.uri_mut() = req.uri().clone();
        *head.headers_mut() = h2_fields(req.headers());
        let body = req.body().clone();
        let (answer, mut stream) = match sender.send_request(head, body.is_empty()) {
            Ok(x) => x,
            // Neither IO nor the server's: h2 refused it itself. Either the
            // request (a header HTTP/2 forbids), as any connection would, or
            // this connection, whose stream ids ran out after `ready` (another
            // request took the last one in between). `poll_ready` tells which:
            // it fails at once on a connection with no id left. (A bad
            // request that took the last id comes back too, and fails as it
            // should on the fresh connection the pool sends it on.)
            Err(e) if !e.is_io() && e.reason().is_none() => {
                let ready = std::future::poll_fn(|cx| Poll::Ready(sender.poll_ready(cx))).await;
                if let Poll::Ready(Err(_)) = ready {
                    return Err(self.unsent(req, &e));
                }
                return Err(failure(&e, "the request cannot be sent over HTTP/2"));
            }
            Err(e) => return Err(self.unsent(req, &e)),
        };
        if !body.is_empty() {
            // h2 queues the data until the server's windows allow it. It
            // fails only once the stream has ended: the server answered
            // without reading the body (nginx's `return 200`) or reset the
            // stream, and the answer below says which.
            let _ = stream.send_data(body, true);
        }
        let answer = match answer.await {
            Ok(a) => a,
            Err(e) => return Err(self.classify(req, &e)),
        };
        let (parts, mut recv) = answer.into_parts();
        let mut first: Option<Bytes> = None;
        let mut rest = BytesMut::new();
        let mut len = 0usize;
        while let Some(chunk) = recv.data().await {
            let chunk = chunk.map_err(|e| {
                self.note_closed(&e);
                failure(&e, "reading the answer body")
            })?;
            let _ = recv.flow_control().release_capacity(chunk.len());
            len += chunk.len();
            if len > self.max_body {
                return Err(http2::Failure {
                    kind: TransportErrorKind::Protocol,
                    message: format!("answer body longer than {} bytes", self.max_body),
                    unprocessed: None,
                });
            }
            match &first {
                None if rest.is_empty() => first = Some(chunk),
                _ => {
                    if let Some(f) = first.take() {
                        rest.extend_from_slice(&f);
                    }
                    rest.extend_from_slice(&chunk);
                }
            }
        }
        let body = first.unwrap_or_else(|| rest.freeze());
        Ok(Response::from_parts(parts, body))
    }

    /// After a GOAWAY or an IO error the connection takes no new streams.
    fn note_closed(&self, e: &h2::Error) {
        if e.is_go_away() || e.is_io() {
            self.closed.store(true, Ordering::Release);
        }
    }

    /// A failed exchange; `req` back when the server cannot have acted on it.
    fn classify(&self, req: Request<Bytes>, e: &h2::Error) -> http2::Failure {
        self.note_closed(e);
        // h2 fails a stream with the server's GOAWAY only when the stream is
        // above the GOAWAY's last stream id (RFC 9113 §6.8: not processed,
        // whatever the error code); streams at or below it that the closing
        // connection cuts fail with an IO error instead.
        let above_goaway = e.is_go_away() && e.is_remote();
        let refused = e.is_remote() && e.reason() == Some(h2::Reason::REFUSED_STREAM);
        if refused || above_goaway {
            let mut f = failure(e, "the server did not act on the request");
            f.unprocessed = Some(Box::new(req));
            return f;
        }
        failure(e, "HTTP/2 exchange")
    }
}

/// The `h2` client as the crates' stack configures it: the own client's
/// windows and header limit, no server push.
fn h2_builder() -> h2::client::Builder {
    let mut b = h2::client::Builder::new();
    b.enable_push(false)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONN_WINDOW)
        .max_header_list_size(MAX_HEADER_BLOCK as u32);
    b
}

/// The request's fields as HTTP/2 sends them, by the own client's rule
/// (`hpack::skip`): without `host` (the URI's authority is `:authority`),
/// connection-specific fields and a `te` other than `trailers` (RFC 9113
/// §8.2.2), which h2 would refuse to send.
fn h2_fields(fields: &http::HeaderMap) -> http::HeaderMap {
    let mut out = http::HeaderMap::with_capacity(fields.len());
    for (name, value) in fields {
        if !super::http2::hpack::skip(name, value.as_bytes()) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

fn failure(e: &h2::Error, what: &str) -> http2::Failure {
    let kind = if e.is_io() {
        match e.get_io() {
            Some(io) if super::is_tls_error(io) => TransportErrorKind::Tls,
            _ => TransportErrorKind::Broken,
        }
    } else {
        TransportErrorKind::Protocol
    };
    http2::Failure {
        kind,
        message: format!("{what}: {e}"),
        unprocessed: None,
    }
}

/// One HTTP/1.1 keep-alive connection, whichever code speaks it.
pub(crate) enum H1Handle<S> {
    /// The project's own codec, driven inside the request's future.
    Own(Http1Conn<S>),
    /// hyper's client connection.
    Crates(CratesH1),
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> H1Handle<S> {
    /// Exchanges completed on this connection.
    pub(crate) fn exchanges(&self) -> u64 {
        match self {
            H1Handle::Own(c) => c.exchanges(),
            H1Handle::Crates(c) => c.exchanges,
        }
    }

    /// Can carry another request, as far as is known without reading.
    pub(crate) fn is_reusable(&self) -> bool {
        match self {
            H1Handle::Own(c) => c.is_reusable(),
            H1Handle::Crates(c) => c.reusable && !c.send.is_closed(),
        }
    }

    /// Can carry another request, checked against a close by the server.
    pub(crate) fn is_open(&mut self) -> bool {
        match self {
            H1Handle::Own(c) => c.is_open(),
            // hyper's connection task notices a close as it happens.
            H1Handle::Crates(c) => c.reusable && !c.send.is_closed(),
        }
    }

    /// Sends `req` and reads the whole answer (body at most `max_body`).
    pub(crate) async fn send(
        &mut self,
        req: &Request<Bytes>,
        max_body: usize,
    ) -> Result<Response<Bytes>, Http1Error> {
        match self {
            H1Handle::Own(c) => c.send(req, max_body).await,
            H1Handle::Crates(c) => c.send(req, max_body).await,
        }
    }
}

/// An HTTP/1.1 connection spoken by hyper.
pub(crate) struct CratesH1 {
    send: hyper::client::conn::http1::SendRequest<http_body_util::Full<Bytes>>,
    exchanges: u64,
    /// The last answer left the connection open by its own words. hyper's
    /// task closes its end after an answer that did not, but only once it
    /// runs: until then `is_closed` still says open.
    reusable: bool,
}

impl CratesH1 {
    /// Runs hyper's HTTP/1.1 handshake on `io` and spawns the connection's task.
    pub(crate) async fn start<S>(io: S) -> Result<CratesH1, Http1Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (send, conn) = hyper::client::conn::http1::Builder::new()
            .max_buf_size(super::http1::MAX_HEAD.max(8192))
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| hyper_error(&e, "HTTP/1.1 handshake", true))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(CratesH1 {
            send,
            exchanges: 0,
            reusable: true,
        })
    }

    async fn send(
        &mut self,
        req: &Request<Bytes>,
        max_body: usize,
    ) -> Result<Response<Bytes>, Http1Error> {
        // Until the answer is complete, a failure leaves the connection unusable.
        self.reusable = false;
        self.send
            .ready()
            .await
            .map_err(|e| hyper_error(&e, "waiting for the connection", true))?;
        let uri = req.uri();
        let mut out = Request::new(http_body_util::Full::new(req.body().clone()));
        *out.method_mut() = req.method().clone();
        *out.uri_mut() = match uri.path_and_query() {
            Some(pq) => http::Uri::from(pq.clone()),
            None => http::Uri::from_static("/"),
        };
        *out.headers_mut() = req.headers().clone();
        if !out.headers().contains_key(http::header::HOST) {
            let host = match (uri.host(), uri.port_u16()) {
                (Some(h), Some(p)) if p != 443 => format!("{h}:{p}"),
                (Some(h), _) => h.to_string(),
                (None, _) => return Err(Http1Error::Request("the URI has no host".into())),
            };
            let value = http::HeaderValue::try_from(host)
                .map_err(|e| Http1Error::Request(format!("Host header: {e}")))?;
            out.headers_mut().insert(http::header::HOST, value);
        }
        let answer = self.send.send_request(out).await.map_err(|e| {
            // Canceled (never written) or closed before the head: the mark
            // of a keep-alive the server had already ended.
            let unanswered = e.is_canceled() || e.is_incomplete_message();
            hyper_error(&e, "HTTP/1.1 exchange", unanswered)
        })?;
        let (parts, body) = answer.into_parts();
        let body = http_body_util::Limited::new(body, max_body)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    return Http1Error::Protocol(format!(
                        "answer body longer than {max_body} bytes"
                    ));
                }
                match e.downcast_ref::<hyper::Error>() {
                    Some(h) => hyper_error(h, "reading the answer body", false),
                    None => Http1Error::Io {
                        message: format!("reading the answer body: {e}"),
                        tls: false,
                        unanswered: false,
                    },
                }
            })?
            .to_bytes();
        self.reusable = keeps_alive(&parts);
        self.exchanges += 1;
        Ok(Response::from_parts(parts, body))
    }
}

/// The answer leaves its connection open, by the own codec's rule
/// (`http1::ConnectionTokens`, `http1::body_framing`): no `Connection:
/// close`, `keep-alive` if it is HTTP/1.0, and a body framed by length or
/// chunks rather than by the close.
fn keeps_alive(parts: &http::response::Parts) -> bool {
    use super::http1;
    use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
    let mut tokens = http1::ConnectionTokens::default();
    for value in parts.headers.get_all(CONNECTION) {
        tokens.add(value.as_bytes());
    }
    let te_chunked = parts
        .headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .next_back()
        .map(|v| http1::last_coding_is_chunked(v.as_bytes()));
    // hyper has checked the length; only whether there is one matters here.
    let length = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| http1::content_length_list(v.as_bytes()));
    let framing = http1::body_framing(parts.status, te_chunked, length);
    tokens.keep_alive(parts.version == http::Version::HTTP_10, framing)
}

fn hyper_error(e: &hyper::Error, what: &str, unanswered: bool) -> Http1Error {
    if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
        return Http1Error::Protocol(format!("{what}: {e}"));
    }
    let mut tls = false;
    let mut malformed = false;
    // hyper's own words are general ("error reading a body from connection"):
    // the IO error under them says what happened.
    let mut cause = String::new();
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if cause.is_empty() {
                cause = format!(": {io}");
            }
            if super::is_tls_error(io) {
                tls = true;
            } else {
                // hyper's body decoder (a bad chunk size, a chunk without its
                // CRLF) reports the server's framing errors as these.
                use std::io::ErrorKind::{InvalidData, InvalidInput};
                malformed |= matches!(io.kind(), InvalidData | InvalidInput);
            }
        }
        src = s.source();
    }
    if malformed && !tls {
        return Http1Error::Protocol(format!("{what}: {e}{cause}"));
    }
    Http1Error::Io {
        message: format!("{what}: {e}{cause}"),
        tls,
        unanswered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push() -> Request<Bytes> {
        let mut r = Request::new(Bytes::from_static(b"wake"));
        *r.method_mut() = http::Method::POST;
        *r.uri_mut() = http::Uri::from_static("https://db5p.notify.windows.com/?token=abc");
        r
    }

    /// An `h2` server on the other end of an in-memory pipe that answers
    /// every request 200.
    fn server() -> tokio::io::DuplexStream {
        let (client, server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            let Ok(mut conn) = h2::server::handshake(server).await else {
                return;
            };
            while let Some(Ok((_req, mut respond))) = conn.accept().await {
                let answer = Response::builder().status(200).body(()).unwrap();
                let _ = respond.send_response(answer, true);
            }
        });
        client
    }

    /// Three requests pass h2's `ready` on a connection with two stream ids
    /// left (as concurrent tasks can): the third, refused by h2 for want of
    /// an id, comes back unprocessed and the connection counts as closed,
    /// so the pool sends it on a fresh one (it used to fail the wake as a
    /// request HTTP/2 cannot carry).
    #[tokio::test]
    async fn the_request_that_finds_the_ids_used_up_comes_back_unprocessed() {
        const LAST: u32 = (1 << 31) - 1;
        let mut builder = h2_builder();
        builder.initial_stream_id(LAST - 2);
        let c = CratesH2::start_with(builder, server(), 1024, ())
            .await
            .unwrap();
        let mut ready = Vec::new();
        for _ in 0..3 {
            ready.push(c.send.clone().ready().await.unwrap());
        }
        let [a, b, late] = <[_; 3]>::try_from(ready).ok().unwrap();
        let (a, b, late) = tokio::join!(
            c.send_on(a, push()),
            c.send_on(b, push()),
            c.send_on(late, push())
        );
        assert_eq!(a.unwrap().status(), 200);
        assert_eq!(b.unwrap().status(), 200, "the last id is used");
        let f = late.unwrap_err();
        assert!(f.unprocessed.is_some(), "never sent: {}", f.message);
        assert!(c.closed.load(Ordering::Acquire));
        // And through `send`, which h2's `ready` refuses at once now.
        let f = c.send(push()).await.unwrap_err();
        assert!(f.unprocessed.is_some(), "{}", f.message);
    }
}
