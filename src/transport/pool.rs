//! Connection pools, one per channel host.
//!
//! A connection is TCP from [`TcpConnect`] (resolve overrides, connect timeout)
//! under TLS from hyper-rustls (rustls with ring, SNI = the channel host, our
//! ALPN list). The first request to a host opens one connection and lets ALPN
//! decide:
//! - **HTTP/2**: the host gets `h2_connections_per_host` slots, each holding one
//!   multiplexed connection; requests go round-robin over the slots. One h2
//!   connection stops at the server's `SETTINGS_MAX_CONCURRENT_STREAMS`, so
//!   several are needed to fan out wider (hyper's legacy client keeps only one).
//!   HTTP/2 is spoken by [`super::http2`], a lean client for this exchange
//!   (neither hyper's client nor the `h2` crate: see docs/BENCHMARKS.md). The
//!   caller encodes its request into the connection; one task per connection
//!   reads and writes the socket and sends keep-alive PINGs. A request the
//!   server did not act on (refused stream, above a GOAWAY's last stream, or
//!   never sent) is sent again, on a fresh connection if the slot's closed, at
//!   most [`MAX_UNPROCESSED_RESENDS`] times (a server that closes each
//!   connection after a few requests bounces a deep queue several times).
//! - **HTTP/1.1**: a bounded set of keep-alive connections, each carrying one
//!   request at a time, spoken by [`super::http1`] inside the request's own
//!   future (no connection task). A connection owns a semaphore permit for its
//!   whole life, so there are never more than `h1_connections_per_host` of
//!   them; idle ones wait in a lock-free bounded queue (crossbeam `ArrayQueue`).
//!
//! Invariants: a slot is (re)connected by one task at a time; an idle HTTP/1.1
//! connection is checked (one non-blocking read) before every reuse, and one
//! the server closed or sent bytes on since its last answer is dropped, so
//! stray bytes are never read as the next request's answer; a request whose
//! reused connection turns out closed before any byte of the answer is sent
//! once more on a fresh connection;
//! answers are read to the end (bounded) before a connection goes back to the
//! idle list.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use crossbeam::queue::ArrayQueue;
use http::{Request, Response};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// How many times one HTTP/2 request the server did not act on is sent again
/// before its failure is the wake's (then an attempt, retried by the engine).
/// nginx with `keepalive_requests 7` and one stream at a time bounces the
/// tail of 100 queued requests about 14 times (tests/interop_servers.rs).
pub(crate) const MAX_UNPROCESSED_RESENDS: u32 = 32;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tower_service::Service;

use super::http1::{Http1Conn, Http1Error};
use super::http2::{self, Http2Conn};
use super::resolve::resolve;
use super::stack::{CratesH1, CratesH2, H1Handle, H2Handle, HttpStack};
use super::{HttpPolicy, TransportConfig, TransportError, TransportErrorKind};
use crate::telemetry;

/// A TLS connection as hyper-rustls hands it over.
type TlsIo = tokio_rustls::client::TlsStream<TokioIo<TokioIo<TcpStream>>>;

const UNKNOWN: u8 = 0;
const H1: u8 = 1;
const H2: u8 = 2;

/// A freshly opened connection, as ALPN decided.
enum Conn {
    /// Boxed: a TLS stream is over a kilobyte, and idle connections move in
    /// and out of the idle queue on every request.
    H1(Box<H1Stream>),
    H2(Arc<H2Handle>),
}

/// One open HTTP/1.1 connection and what it counts while it lives.
struct H1Stream {
    conn: H1Handle<TlsIo>,
    _open: telemetry::ConnectionGuard,
    _count: OpenCount,
}

/// Opens TCP + TLS connections (hyper-rustls over [`TcpConnect`]) and runs
/// the HTTP handshake that ALPN chose.
pub(crate) struct Connector {
    /// TLS over our TCP connector; its rustls config carries the ALPN list.
    pub(crate) https: HttpsConnector<TcpConnect>,
    /// The transport's settings (timeouts, pool sizes, resolve overrides).
    pub(crate) cfg: Arc<TransportConfig>,
    /// Connections of this transport that are open right now.
    pub(crate) open: Arc<std::sync::atomic::AtomicUsize>,
}

/// The TCP half of a connection, as a `tower` service for hyper-rustls:
/// resolves the host (resolve overrides first), tries each address within the
/// connect timeout, and turns Nagle off.
#[derive(Clone)]
pub(crate) struct TcpConnect {
    /// The transport's settings.
    pub(crate) cfg: Arc<TransportConfig>,
}

type Connecting = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<TokioIo<TcpStream>, TransportError>> + Send>,
>;

impl tower_service::Service<http::Uri> for TcpConnect {
    type Response = TokioIo<TcpStream>;
    type Error = TransportError;
    type Future = Connecting;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), TransportError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Connecting {
        let cfg = self.cfg.clone();
        Box::pin(async move {
            let host = uri.host().unwrap_or_default();
            let port = uri.port_u16().unwrap_or(443);
            tcp_connect(&cfg, host, port).await.map(TokioIo::new)
        })
    }
}

async fn tcp_connect(
    cfg: &TransportConfig,
    host: &str,
    port: u16,
) -> Result<TcpStream, TransportError> {
    let addrs = tokio::time::timeout(cfg.connect_timeout, resolve(&cfg.resolve, host, port))
        .await
        .map_err(|_| {
            TransportError::new(
                TransportErrorKind::Timeout,
                format!("resolving {host} timed out"),
            )
        })?
        .map_err(|e| {
            TransportError::new(
                TransportErrorKind::Connect,
                format!("resolving {host}: {e}"),
            )
        })?;
    let mut last = None;
    for addr in addrs {
        match tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(e)) => {
                last = Some(TransportError::new(
                    TransportErrorKind::Connect,
                    format!("connect {host} ({addr}): {e}"),
                ))
            }
            Err(_) => {
                last = Some(TransportError::new(
                    TransportErrorKind::Timeout,
                    format!(
                        "connect {host} ({addr}) timed out after {:?}",
                        cfg.connect_timeout
                    ),
                ))
            }
        }
    }
    Err(last.unwrap_or_else(|| {
        TransportError::new(TransportErrorKind::Connect, format!("{host}: no address"))
    }))
}

/// Counts one open connection of a transport while it lives.
struct OpenCount(Arc<std::sync::atomic::AtomicUsize>);

impl OpenCount {
    fn new(c: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
        c.fetch_add(1, Ordering::Relaxed);
        OpenCount(c.clone())
    }
}

impl Drop for OpenCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Connector {
    /// Opens a connection. Boxed: a rare path whose future (resolve, TCP, TLS,
    /// HTTP handshake) would otherwise be part of every request's future.
    fn connect<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Conn, TransportError>> + Send + 'a>,
    > {
        Box::pin(self.connect_inner(host, port))
    }

    async fn connect_inner(&self, host: &str, port: u16) -> Result<Conn, TransportError> {
        let cfg = &self.cfg;
        let uri: http::Uri = format!("https://{host}:{port}/").parse().map_err(|e| {
            TransportError::new(
                TransportErrorKind::Connect,
                format!("{host}:{port} is not a host to connect to: {e}"),
            )
        })?;
        // hyper-rustls: TCP through `TcpConnect` (resolve overrides, connect
        // timeout), then the TLS handshake with SNI = `host` and our ALPN list.
        let mut https = self.https.clone();
        let limit = cfg.connect_timeout + cfg.tls_timeout;
        let connecting = async {
            std::future::poll_fn(|cx| https.poll_ready(cx)).await?;
            https.call(uri).await
        };
        let stream = tokio::time::timeout(limit, connecting)
            .await
            .map_err(|_| {
                TransportError::new(
                    TransportErrorKind::Timeout,
                    format!("connecting to {host} (TCP + TLS handshake) timed out after {limit:?}"),
                )
            })?
            .map_err(|e| TransportError::from_connect(host, e))?;
        let tls = match stream {
            MaybeHttpsStream::Https(io) => io.into_inner(),
            MaybeHttpsStream::Http(_) => {
                return Err(TransportError::new(
                    TransportErrorKind::Tls,
                    format!("{host}: the connection is not TLS"),
                ))
            }
        };
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        if cfg.http == HttpPolicy::Http2Only && !h2 {
            return Err(TransportError::new(
                TransportErrorKind::Protocol,
                format!("{host} did not offer HTTP/2 (http policy is http2)"),
            ));
        }
        let count = OpenCount::new(&self.open);
        if h2 {
            let guards = (telemetry::ConnectionGuard::new("h2"), count);
            let max_body = cfg.max_response_body;
            let conn = match cfg.stack {
                HttpStack::Own => {
                    H2Handle::Own(Http2Conn::start(tls, http2::Config { max_body }, guards))
                }
                HttpStack::Crates => H2Handle::Crates(
                    CratesH2::start(tls, max_body, guards)
                        .await
                        .map_err(|f| h2_error(host, f))?,
                ),
            };
            Ok(Conn::H2(Arc::new(conn)))
        } else {
            let conn = match cfg.stack {
                HttpStack::Own => H1Handle::Own(Http1Conn::new(tls)),
                HttpStack::Crates => {
                    H1Handle::Crates(CratesH1::start(tls).await.map_err(|e| h1_error(host, e))?)
                }
            };
            Ok(Conn::H1(Box::new(H1Stream {
                conn,
                _open: telemetry::ConnectionGuard::new("http1"),
                _count: count,
            })))
        }
    }
}

struct H1Conn {
    stream: Box<H1Stream>,
    _slot: OwnedSemaphorePermit,
}

impl H1Conn {
    /// Can carry a request: reusable after its last answer, and neither
    /// closed by the server nor sent bytes nobody asked for since. Checked
    /// before every reuse, however short the idle: bytes that arrive after
    /// an answer (a second answer from a faulty server, say) would otherwise
    /// be read as the next request's answer, and every answer after it would
    /// belong to the request before (a 410 pinned on the wrong device). The
    /// check is a non-blocking read, at most one system call.
    fn is_open(&mut self) -> bool {
        self.stream.conn.is_open()
    }
}

#[derive(Default)]
struct H2Slot {
    conn: ArcSwapOption<H2Handle>,
    connecting: tokio::sync::Mutex<()>,
}

/// The connections to one `host:port`.
pub(crate) struct HostPool {
    host: Box<str>,
    port: u16,
    proto: AtomicU8,
    probe: tokio::sync::Mutex<()>,
    h2: Box<[H2Slot]>,
    next: AtomicUsize,
    /// Idle keep-alive connections: a lock-free bounded queue (crossbeam);
    /// never fuller than the slots, since each connection holds one.
    h1_idle: ArrayQueue<H1Conn>,
    h1_slots: Arc<Semaphore>,
    h1_returned: Notify,
}

impl HostPool {
    pub(crate) fn new(host: &str, port: u16, cfg: &TransportConfig) -> Self {
        HostPool {
            host: host.into(),
            port,
            proto: AtomicU8::new(UNKNOWN),
            probe: tokio::sync::Mutex::new(()),
            h2: (0..cfg.h2_connections_per_host.max(1))
                .map(|_| H2Slot::default())
                .collect(),
            next: AtomicUsize::new(0),
            h1_idle: ArrayQueue::new(cfg.h1_connections_per_host.max(1)),
            h1_slots: Arc::new(Semaphore::new(cfg.h1_connections_per_host.max(1))),
            h1_returned: Notify::new(),
        }
    }

    /// The host name.
    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    /// The negotiated protocol, once known: `Some("h2")` or `Some("http1")`.
    pub(crate) fn protocol(&self) -> Option<&'static str> {
        match self.proto.load(Ordering::Acquire) {
            H1 => Some("http1"),
            H2 => Some("h2"),
            _ => None,
        }
    }

    /// Sends one request and reads the whole (bounded) answer.
    pub(crate) async fn send(
        &self,
        c: &Connector,
        req: Request<Bytes>,
        max_body: usize,
    ) -> Result<Response<Bytes>, TransportError> {
        if self.proto.load(Ordering::Acquire) == UNKNOWN {
            self.probe(c).await?;
        }
        match self.proto.load(Ordering::Acquire) {
            H2 => self.send_h2(c, req).await,
            _ => self.send_h1(c, req, max_body).await,
        }
    }

    /// Opens the first connection; ALPN decides the host's protocol.
    async fn probe(&self, c: &Connector) -> Result<(), TransportError> {
        let _one = self.probe.lock().await;
        if self.proto.load(Ordering::Acquire) != UNKNOWN {
            return Ok(());
        }
        let slot = self
            .h1_slots
            .clone()
            .acquire_owned()
            .await
            .map_err(closed)?;
        match c.connect(&self.host, self.port).await? {
            Conn::H2(conn) => {
                self.h2[0].conn.store(Some(conn));
                self.proto.store(H2, Ordering::Release);
            }
            Conn::H1(stream) => {
                self.idle(H1Conn {
                    stream,
                    _slot: slot,
                });
                self.proto.store(H1, Ordering::Release);
            }
        }
        Ok(())
    }

    async fn send_h2(
        &self,
        c: &Connector,
        req: Request<Bytes>,
    ) -> Result<Response<Bytes>, TransportError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.h2.len();
        let slot = &self.h2[i];
        let mut req = req;
        let mut resends = 0;
        loop {
            let conn = self.h2_conn(c, slot).await?;
            match conn.send(req).await {
                Ok(r) => return Ok(r),
                // The server did not act on it (a GOAWAY below its stream, a
                // REFUSED_STREAM, a connection that closed before sending
                // it): again, on this slot's connection or, if that one
                // closed, a fresh one. Safe, since nothing was processed, and
                // bounded, since a server may GOAWAY every connection.
                Err(http2::Failure {
                    unprocessed: Some(r),
                    ..
                }) if resends < MAX_UNPROCESSED_RESENDS => {
                    resends += 1;
                    req = *r;
                }
                Err(f) => return Err(h2_error(&self.host, f)),
            }
        }
    }

    /// The slot's connection, (re)connected if it is missing or closed.
    async fn h2_conn(&self, c: &Connector, slot: &H2Slot) -> Result<Arc<H2Handle>, TransportError> {
        match slot.conn.load_full() {
            Some(conn) if !conn.is_closed() => Ok(conn),
            _ => self.connect_slot(c, slot).await,
        }
    }

    /// Replaces a slot's dead connection; one task per slot connects at a time.
    async fn connect_slot(
        &self,
        c: &Connector,
        slot: &H2Slot,
    ) -> Result<Arc<H2Handle>, TransportError> {
        let _one = slot.connecting.lock().await;
        if let Some(conn) = slot.conn.load_full() {
            if !conn.is_closed() {
                return Ok(conn);
            }
        }
        slot.conn.store(None);
        match c.connect(&self.host, self.port).await? {
            Conn::H2(conn) => {
                slot.conn.store(Some(conn.clone()));
                Ok(conn)
            }
            Conn::H1(stream) => {
                // The server stopped offering h2: move the host to HTTP/1.1.
                if let Ok(s) = self.h1_slots.clone().try_acquire_owned() {
                    self.idle(H1Conn { stream, _slot: s });
                }
                self.proto.store(H1, Ordering::Release);
                Err(TransportError::new(
                    TransportErrorKind::Protocol,
                    format!("{} stopped offering HTTP/2", self.host),
                ))
            }
        }
    }

    async fn send_h1(
        &self,
        c: &Connector,
        req: Request<Bytes>,
        max_body: usize,
    ) -> Result<Response<Bytes>, TransportError> {
        let mut conn = self.checkout_h1(c).await?;
        let fresh = conn.stream.conn.exchanges() == 0;
        let resp = match conn.stream.conn.send(&req, max_body).await {
            Ok(r) => r,
            // A reused connection the server had closed (its keep-alive ran
            // out) fails before any byte of the answer: once more on a fresh
            // connection. Anything else is the request's outcome.
            Err(Http1Error::Io {
                unanswered: true, ..
            }) if !fresh => {
                // The fresh connection takes the dead one's slot: queuing for
                // another could wait behind every checkout while idle
                // connections hold all the slots, until the request times out.
                let H1Conn {
                    stream,
                    _slot: slot,
                } = conn;
                drop(stream);
                conn = self.open_h1(c, slot).await?;
                conn.stream
                    .conn
                    .send(&req, max_body)
                    .await
                    .map_err(|e| h1_error(&self.host, e))?
            }
            Err(e) => return Err(h1_error(&self.host, e)),
        };
        if conn.stream.conn.is_reusable() {
            self.idle(conn);
        }
        Ok(resp)
    }

    async fn checkout_h1(&self, c: &Connector) -> Result<H1Conn, TransportError> {
        loop {
            let returned = self.h1_returned.notified();
            tokio::pin!(returned);
            returned.as_mut().enable();
            if let Some(conn) = self.pop_idle() {
                return Ok(conn);
            }
            if let Ok(slot) = self.h1_slots.clone().try_acquire_owned() {
                return self.open_h1(c, slot).await;
            }
            tokio::select! {
                _ = &mut returned => {}
                slot = self.h1_slots.clone().acquire_owned() => {
                    return self.open_h1(c, slot.map_err(closed)?).await;
                }
            }
        }
    }

    async fn open_h1(
        &self,
        c: &Connector,
        slot: OwnedSemaphorePermit,
    ) -> Result<H1Conn, TransportError> {
        match c.connect(&self.host, self.port).await? {
            Conn::H1(stream) => Ok(H1Conn {
                stream,
                _slot: slot,
            }),
            Conn::H2(conn) => {
                // The server now offers h2: move the host over.
                self.h2[0].conn.store(Some(conn));
                self.proto.store(H2, Ordering::Release);
                Err(TransportError::new(
                    TransportErrorKind::Protocol,
                    format!("{} switched to HTTP/2", self.host),
                ))
            }
        }
    }

    fn pop_idle(&self) -> Option<H1Conn> {
        while let Some(mut conn) = self.h1_idle.pop() {
            if conn.is_open() {
                return Some(conn);
            }
            // Closed by the server while idle: dropping it frees its slot.
        }
        None
    }

    /// Puts a live connection back and wakes one waiting checkout.
    fn idle(&self, conn: H1Conn) {
        // Cannot be full (one entry per slot); if it were, dropping the
        // connection would free its slot, which is still correct.
        let _ = self.h1_idle.push(conn);
        self.h1_returned.notify_one();
    }
}

fn closed(_: tokio::sync::AcquireError) -> TransportError {
    TransportError::new(
        TransportErrorKind::Protocol,
        "connection pool closed".to_string(),
    )
}

/// The transport error for a failed HTTP/1.1 exchange.
fn h1_error(host: &str, e: Http1Error) -> TransportError {
    match e {
        Http1Error::Request(m) => TransportError::new(
            TransportErrorKind::Protocol,
            format!("HTTP/1.1 request to {host}: {m}"),
        ),
        Http1Error::Io { message, tls, .. } => TransportError::new(
            if tls {
                TransportErrorKind::Tls
            } else {
                TransportErrorKind::Broken
            },
            format!("HTTP/1.1 exchange with {host}: {message}"),
        ),
        Http1Error::Protocol(m) => TransportError::new(
            TransportErrorKind::Protocol,
            format!("HTTP/1.1 answer from {host}: {m}"),
        ),
    }
}

/// The transport error for a failed HTTP/2 exchange.
fn h2_error(host: &str, f: http2::Failure) -> TransportError {
    TransportError::new(
        f.kind,
        format!("HTTP/2 exchange with {host}: {}", f.message),
    )
}
