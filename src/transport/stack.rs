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
//!   `REFUSED_STREAM`, dropped by a graceful GOAWAY (`NO_ERROR`), or never sent
//!   because the connection had closed is handed back as unprocessed, like the
//!   own client does. A GOAWAY with an error code is not (h2 does not say which
//!   side of its last stream id a request was), so the crates' stack resends
//!   less after such a GOAWAY than the own one.
//! - HTTP/1.1: `hyper::client::conn::http1` (origin-form target, `Host` from
//!   the URI), its connection future on a task of its own. A reused connection
//!   that the server had closed shows up as a canceled request or an
//!   incomplete message before the head, which the pool sends once more on a
//!   fresh connection, as with the own codec.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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

/// The largest header list accepted from a server (as the own client's
/// `MAX_HEADER_BLOCK`).
const MAX_HEADER_LIST: u32 = 64 * 1024;
/// Stream and connection receive windows (as the own client announces).
const STREAM_WINDOW: u32 = 1 << 20;
const CONN_WINDOW: u32 = 4 << 20;

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
    pub(crate) async fn start<S, G>(
        io: S,
        max_body: usize,
        guard: G,
    ) -> Result<CratesH2, http2::Failure>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        G: Send + 'static,
    {
        let (send, conn) = h2::client::Builder::new()
            .enable_push(false)
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONN_WINDOW)
            .max_header_list_size(MAX_HEADER_LIST)
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
        let unsent = |req: Request<Bytes>, e: &h2::Error| http2::Failure {
            kind: TransportErrorKind::Broken,
            message: format!("the connection closed before the request was sent: {e}"),
            unprocessed: Some(Box::new(req)),
        };
        let mut sender = match self.send.clone().ready().await {
            Ok(s) => s,
            Err(e) => return Err(unsent(req, &e)),
        };
        // h2 takes the head by value; the request is kept whole so that one
        // the server did not act on can be handed back for a resend.
        let mut head = Request::new(());
        *head.method_mut() = req.method().clone();
        *head.uri_mut() = req.uri().clone();
        *head.headers_mut() = req.headers().clone();
        let body = req.body().clone();
        let (answer, mut stream) = match sender.send_request(head, body.is_empty()) {
            Ok(x) => x,
            Err(e) => return Err(unsent(req, &e)),
        };
        if !body.is_empty() {
            // h2 queues the data until the server's windows allow it.
            if let Err(e) = stream.send_data(body, true) {
                return Err(classify(req, &e));
            }
        }
        let answer = match answer.await {
            Ok(a) => a,
            Err(e) => return Err(classify(req, &e)),
        };
        let (parts, mut recv) = answer.into_parts();
        let mut first: Option<Bytes> = None;
        let mut rest = BytesMut::new();
        let mut len = 0usize;
        while let Some(chunk) = recv.data().await {
            let chunk = chunk.map_err(|e| failure(&e, "reading the answer body"))?;
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
}

/// A failed exchange; `req` back when the server cannot have acted on it.
fn classify(req: Request<Bytes>, e: &h2::Error) -> http2::Failure {
    let graceful_goaway = e.is_go_away() && e.reason() == Some(h2::Reason::NO_ERROR);
    if e.reason() == Some(h2::Reason::REFUSED_STREAM) || graceful_goaway {
        let mut f = failure(e, "the server did not act on the request");
        f.unprocessed = Some(Box::new(req));
        return f;
    }
    failure(e, "HTTP/2 exchange")
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
            H1Handle::Crates(c) => !c.send.is_closed(),
        }
    }

    /// Can carry another request, checked against a close by the server.
    pub(crate) fn is_open(&mut self) -> bool {
        match self {
            H1Handle::Own(c) => c.is_open(),
            // hyper's connection task notices a close as it happens.
            H1Handle::Crates(c) => !c.send.is_closed(),
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
        Ok(CratesH1 { send, exchanges: 0 })
    }

    async fn send(
        &mut self,
        req: &Request<Bytes>,
        max_body: usize,
    ) -> Result<Response<Bytes>, Http1Error> {
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
                    Http1Error::Protocol(format!("answer body longer than {max_body} bytes"))
                } else {
                    Http1Error::Io {
                        message: format!("reading the answer body: {e}"),
                        tls: false,
                        unanswered: false,
                    }
                }
            })?
            .to_bytes();
        self.exchanges += 1;
        Ok(Response::from_parts(parts, body))
    }
}

fn hyper_error(e: &hyper::Error, what: &str, unanswered: bool) -> Http1Error {
    if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
        return Http1Error::Protocol(format!("{what}: {e}"));
    }
    let mut tls = false;
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            tls |= super::is_tls_error(io);
        }
        src = s.source();
    }
    Http1Error::Io {
        message: format!("{what}: {e}"),
        tls,
        unanswered,
    }
}
