//! WNS (Windows Push Notification Services) emulator: public API,
//! configuration, the TLS accept loop, request routing, the `/_emulator/`
//! admin endpoints and graceful shutdown.
//!
//! One loopback TLS port impersonates both the WNS send endpoint
//! (`https://*.notify.windows.com/?token=...`) and the two token endpoints
//! (`https://login.live.com/accesstoken.srf` and
//! `https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token`). Clients map
//! those host names to [`EmulatorHandle::local_addr`] and trust
//! [`EmulatorHandle::ca_pem`]. Requests are routed by **path**, never by Host:
//!
//! | path | handler |
//! |------|---------|
//! | `/accesstoken.srf` | legacy token endpoint |
//! | `/{tenant}/oauth2/v2.0/token` | Entra token endpoint |
//! | `/_emulator/stats`, `/_emulator/expire-tokens`, `/_emulator/reset` | admin |
//! | anything else | push endpoint (behaviour from the channel token, see [`parse_behavior`]) |
//!
//! ```no_run
//! # async fn demo() -> Result<(), fleetwake::emulator::EmulatorError> {
//! use fleetwake::emulator::EmulatorConfig;
//! let emu = EmulatorConfig::default().start().await?;
//! let _addr = emu.local_addr();
//! let _ca = emu.ca_pem();
//! emu.shutdown().await;
//! # Ok(()) }
//! ```

mod behavior;
mod body;
mod certs;
mod channels;
pub mod demo;
pub mod faults;
pub mod fleet;
mod push;
mod stats;
mod tokens;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

pub use behavior::{parse_behavior, Behavior, MAX_SLOW};
pub use certs::DEFAULT_SANS;
pub use channels::CachedPush;
pub use push::MAX_PAYLOAD;
pub use stats::{ConnectionStats, EmulatorStats, TokenRequestStats, RATE_WINDOW};
pub use tokens::{ENTRA_SCOPE, LEGACY_SCOPE};

use channels::ChannelTable;
use stats::StatsRecorder;
use tokens::{TokenFlow, TokenRegistry};

/// How long [`EmulatorHandle::shutdown`] lets open requests finish before
/// cutting the remaining connections.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Longest time a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest time an HTTP/1.1 client may take to send request headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Response body type of every handler.
pub(crate) type RespBody = Full<Bytes>;

/// Where the server's certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsSource {
    /// Generate a test CA and a leaf signed by it (see [`DEFAULT_SANS`]).
    /// With `out_dir`, also write `ca.pem`, `cert.pem` and `key.pem` there.
    Generate {
        /// Directory to write the PEM files to (created if missing).
        out_dir: Option<PathBuf>,
    },
    /// Serve an existing certificate chain (leaf first) and private key.
    Files {
        /// PEM file holding the certificate chain.
        cert_pem: PathBuf,
        /// PEM file holding the private key (PKCS#8, PKCS#1 or SEC1).
        key_pem: PathBuf,
    },
}

impl Default for TlsSource {
    fn default() -> Self {
        Self::Generate { out_dir: None }
    }
}

/// HTTP versions offered through ALPN.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HttpVersions {
    /// ALPN `h2` and `http/1.1` (clients without ALPN are auto-detected).
    #[default]
    Both,
    /// ALPN `http/1.1` only.
    Http1Only,
    /// ALPN `h2` only.
    Http2Only,
}

/// An app the token endpoints accept.
#[derive(Clone, PartialEq, Eq)]
pub struct EmulatedApp {
    /// OAuth `client_id` (package SID for the legacy flow, app id for Entra).
    pub client_id: String,
    /// OAuth `client_secret`.
    pub client_secret: String,
}

impl EmulatedApp {
    /// An app with these credentials.
    pub fn new(client_id: impl Into<String>, client_secret: impl Into<String>) -> Self {
        Self {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
        }
    }
}

impl std::fmt::Debug for EmulatedApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatedApp")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .finish()
    }
}

/// Emulator settings; [`Default`] gives a loopback server on an ephemeral port.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    /// Address to listen on (default `127.0.0.1:0`).
    pub bind: SocketAddr,
    /// Certificate source (default: generate).
    pub tls: TlsSource,
    /// HTTP versions offered (default: both).
    pub http: HttpVersions,
    /// Lifetime of issued access tokens, reported as `expires_in` (default 86400 s).
    pub token_lifetime: Duration,
    /// The push endpoint treats a token as expired this long before the
    /// lifetime it announced, like a server whose clock runs ahead of the
    /// client's (default zero).
    pub token_expires_early: Duration,
    /// Apps the token endpoints accept. When empty, any `client_id` is
    /// accepted unless its `client_secret` starts with `invalid`.
    pub apps: Vec<EmulatedApp>,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS` (default 100).
    pub h2_max_concurrent_streams: u32,
    /// Extra DNS names (or IPs) for the generated leaf certificate.
    pub extra_sans: Vec<String>,
    /// Keep every push's arrival time per app ([`EmulatorHandle::arrivals`]);
    /// off by default (it costs memory per push).
    pub record_arrivals: bool,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            tls: TlsSource::default(),
            http: HttpVersions::default(),
            token_lifetime: Duration::from_secs(86_400),
            token_expires_early: Duration::ZERO,
            apps: Vec::new(),
            h2_max_concurrent_streams: 100,
            extra_sans: Vec::new(),
            record_arrivals: false,
        }
    }
}

/// Why the emulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// The listening socket could not be bound.
    #[error("cannot bind the emulator to {addr}: {source}")]
    Bind {
        /// The requested address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A certificate or key file could not be read.
    #[error("cannot read TLS file {path}: {source}")]
    FileRead {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A generated PEM file could not be written.
    #[error("cannot write TLS file {path}: {source}")]
    FileWrite {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A certificate or key file holds no usable PEM.
    #[error("bad PEM in {path}: {reason}")]
    PemParse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// Certificate generation failed.
    #[error("cannot generate the test certificates: {0}")]
    CertGen(#[from] rcgen::Error),
    /// rustls refused the certificate, key or protocol settings.
    #[error("TLS configuration rejected: {0}")]
    Tls(#[from] rustls::Error),
}

/// State shared by every connection and the handle.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Counters.
    pub stats: StatsRecorder,
    /// Per-channel state.
    pub channels: ChannelTable,
    /// Issued access tokens.
    pub tokens: TokenRegistry,
    /// Accepted apps (empty: permissive).
    pub apps: Vec<EmulatedApp>,
    /// Lifetime of issued tokens.
    pub token_lifetime: Duration,
    /// How much earlier than announced the push endpoint expires a token.
    pub token_expires_early: Duration,
    /// Push sequence number (debug trace, message ids).
    pub seq: AtomicU64,
    /// Per-process salt mixed into message ids.
    msg_salt: u64,
    /// Injected faults.
    pub faults: faults::FaultController,
}

impl Shared {
    /// A unique 16-hex-digit `X-WNS-Msg-ID` for push number `seq`
    /// (an odd multiplier is a bijection on `u64`, so ids never repeat).
    pub(crate) fn msg_id(&self, seq: u64) -> HeaderValue {
        let id = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ self.msg_salt;
        HeaderValue::try_from(format!("{id:016X}"))
            .unwrap_or(HeaderValue::from_static("0000000000000000"))
    }

    /// Full stats snapshot (`by_channel` only with `include_channels`).
    fn snapshot(&self, include_channels: bool) -> EmulatorStats {
        let mut s = self.stats.snapshot();
        if include_channels {
            s.by_channel = self.channels.status_snapshot();
        }
        s.cached_pushes = self.channels.cached_count(Instant::now());
        s
    }

    /// Zeroes the stats, keeping tokens and behaviour state.
    fn reset_stats(&self) {
        self.stats.reset();
        self.channels.reset_stats();
    }
}

/// The three connection builders (auto-detect, HTTP/1.1-only, HTTP/2-only).
struct Builders {
    /// For connections without ALPN (per [`HttpVersions`]).
    default: auto::Builder<TokioExecutor>,
    /// Protocol `default` is pinned to (`Some(true)` = h2), if any.
    default_h2: Option<bool>,
    /// For ALPN `http/1.1`.
    h1: auto::Builder<TokioExecutor>,
    /// For ALPN `h2`.
    h2: auto::Builder<TokioExecutor>,
}

impl Builders {
    /// Builders with timers, header timeout and the h2 stream limit set.
    fn new(http: HttpVersions, max_streams: u32) -> Self {
        let make = || {
            let mut b = auto::Builder::new(TokioExecutor::new());
            b.http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .keep_alive(true);
            b.http2()
                .timer(TokioTimer::new())
                .max_concurrent_streams(max_streams);
            b
        };
        let (default, default_h2) = match http {
            HttpVersions::Both => (make(), None),
            HttpVersions::Http1Only => (make().http1_only(), Some(false)),
            HttpVersions::Http2Only => (make().http2_only(), Some(true)),
        };
        Self {
            default,
            default_h2,
            h1: make().http1_only(),
            h2: make().http2_only(),
        }
    }
}

impl EmulatorConfig {
    /// Binds, prepares TLS and starts serving in a background task.
    pub async fn start(self) -> Result<EmulatorHandle, EmulatorError> {
        let tls = certs::load(&self.tls, &self.extra_sans)?;
        let ca_pem = tls.ca_pem.clone();
        let server_config = certs::server_config(tls, self.http)?;
        let listener =
            TcpListener::bind(self.bind)
                .await
                .map_err(|source| EmulatorError::Bind {
                    addr: self.bind,
                    source,
                })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| EmulatorError::Bind {
                addr: self.bind,
                source,
            })?;
        let shared = Arc::new(Shared {
            stats: StatsRecorder::new(self.record_arrivals),
            channels: ChannelTable::default(),
            tokens: TokenRegistry::default(),
            apps: self.apps,
            token_lifetime: self.token_lifetime,
            token_expires_early: self.token_expires_early,
            seq: AtomicU64::new(0),
            msg_salt: fastrand::u64(..),
            faults: faults::FaultController::new(),
        });
        let rogue = certs::load(&TlsSource::Generate { out_dir: None }, &self.extra_sans)
            .and_then(|t| certs::server_config(t, self.http))?;
        let builders = Arc::new(Builders::new(self.http, self.h2_max_concurrent_streams));
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(accept_loop(
            listener,
            Acceptors {
                good: TlsAcceptor::from(server_config),
                rogue: TlsAcceptor::from(rogue),
            },
            shared.clone(),
            builders,
            stop_rx,
        ));
        tracing::info!(%local_addr, "WNS emulator listening");
        Ok(EmulatorHandle {
            local_addr,
            ca_pem,
            shared,
            stop: stop_tx,
            task,
        })
    }
}

/// A running emulator. Dropping it without [`shutdown`](Self::shutdown) also
/// stops the server (gracefully, in the background).
pub struct EmulatorHandle {
    local_addr: SocketAddr,
    ca_pem: Option<String>,
    shared: Arc<Shared>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for EmulatorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatorHandle")
            .field("local_addr", &self.local_addr)
            .field("generated_ca", &self.ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

impl EmulatorHandle {
    /// The address the emulator listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// PEM of the generated CA to trust; `None` with [`TlsSource::Files`].
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// A snapshot of the stats, including the per-channel map.
    pub fn stats(&self) -> EmulatorStats {
        self.shared.snapshot(true)
    }

    /// When each push presented with `app_key`'s tokens arrived (the
    /// Package SID, or `tenant/client_id` for Entra), as offsets from the
    /// emulator's start; empty unless [`EmulatorConfig::record_arrivals`].
    pub fn arrivals(&self, app_key: &str) -> Vec<Duration> {
        self.shared.stats.arrivals(app_key)
    }

    /// Makes every token issued so far answer 401 "Token expired"; tokens
    /// issued afterwards are valid.
    pub fn expire_tokens(&self) {
        self.shared.tokens.expire_all();
    }

    /// Every access token issued so far (tests use it to prove tokens never
    /// leak into logs, reports or metrics).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.shared.tokens.all()
    }

    /// Zeroes all stats. Issued tokens, `flaky-<n>` counters and cached pushes
    /// are kept.
    pub fn reset_stats(&self) {
        self.shared.reset_stats();
    }

    /// The cached raw push of `channel_token`, if one is stored and unexpired.
    pub fn cached_push(&self, channel_token: &str) -> Option<CachedPush> {
        self.shared.channels.cached(channel_token, Instant::now())
    }

    /// Replaces the injected faults (phases count from now). See [`faults`].
    pub fn set_faults(&self, plan: faults::FaultPlan) {
        self.shared.faults.set(plan);
    }

    /// The faults in force right now.
    pub fn faults(&self) -> faults::Faults {
        self.shared.faults.current()
    }

    /// Stops accepting connections, lets open requests finish for up to
    /// [`SHUTDOWN_GRACE`], closes what remains, then returns.
    pub async fn shutdown(self) {
        let Self { stop, task, .. } = self;
        let _ = stop.send(());
        if let Err(e) = task.await {
            tracing::warn!(error = %e, "emulator accept loop ended abnormally");
        }
    }
}

/// Accepts connections until `stop` fires (or its sender is dropped), then
/// shuts down gracefully: every connection is told to finish its in-flight
/// requests (HTTP/2 GOAWAY, HTTP/1.1 close after the current response) and
/// given [`SHUTDOWN_GRACE`] before being aborted.
async fn accept_loop(
    listener: TcpListener,
    acceptor: Acceptors,
    shared: Arc<Shared>,
    builders: Arc<Builders>,
    mut stop: oneshot::Receiver<()>,
) {
    let (closing_tx, closing_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let mut tick = tokio::time::interval(faults::TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => shared.faults.tick(),
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    if shared.faults.current().down {
                        // The target is gone: close at once.
                        drop(tcp);
                        continue;
                    }
                    conns.spawn(serve_connection(
                        tcp,
                        peer,
                        acceptor.clone(),
                        shared.clone(),
                        builders.clone(),
                        closing_rx.clone(),
                    ));
                }
                Err(e) => {
                    // E.g. EMFILE: back off briefly rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(done) = conns.join_next(), if !conns.is_empty() => {
                if let Err(e) = done {
                    if e.is_panic() {
                        tracing::error!(error = %e, "connection task panicked");
                    }
                }
            }
        }
    }
    drop(listener);
    tracing::info!(open = conns.len(), "WNS emulator shutting down");
    let _ = closing_tx.send(true);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        tracing::warn!("graceful shutdown timed out; closing remaining connections");
    }
    conns.shutdown().await;
}

/// TLS handshake, protocol selection and HTTP serving for one connection.
async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptors: Acceptors,
    shared: Arc<Shared>,
    builders: Arc<Builders>,
    mut closing: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let mut fault_rx = shared.faults.subscribe();
    let acceptor = if faults::Faults::hit(shared.faults.current().tls_fail_rate) {
        &acceptors.rogue
    } else {
        &acceptors.good
    };
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let (builder, h2) = match tls.get_ref().1.alpn_protocol() {
        Some(b"h2") => (&builders.h2, Some(true)),
        Some(b"http/1.1") => (&builders.h1, Some(false)),
        _ => (&builders.default, builders.default_h2),
    };
    // Without ALPN under `Both` the version is only known at the first request.
    let uncounted = match h2 {
        Some(h2) => {
            shared.stats.connection(h2);
            None
        }
        None => Some(Arc::new(AtomicBool::new(true))),
    };
    let served = Arc::new(AtomicU64::new(0));
    let goaway = Arc::new(tokio::sync::Notify::new());
    let (served_c, goaway_c) = (served.clone(), goaway.clone());
    let svc = service_fn(move |req: Request<Incoming>| {
        let shared = shared.clone();
        let n = served_c.fetch_add(1, Ordering::Relaxed) + 1;
        if shared
            .faults
            .current()
            .goaway_after
            .is_some_and(|limit| n >= limit)
        {
            goaway_c.notify_one();
        }
        if let Some(flag) = &uncounted {
            if flag.swap(false, Ordering::Relaxed) {
                shared
                    .stats
                    .connection(req.version() == http::Version::HTTP_2);
            }
        }
        async move { route(&shared, req).await }
    });
    let conn = builder.serve_connection(TokioIo::new(tls), svc);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = async { closing.wait_for(|c| *c).await.is_ok() } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
        _ = goaway.notified() => {
            // Fault: GOAWAY (h2) or close after the response (h1); open streams finish.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
        _ = async { fault_rx.wait_for(|f| f.down).await.is_ok() } => {
            // Fault: the target disappears; drop the connection mid-flight.
            return;
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with error");
    }
}

/// The TLS acceptors: the real one, and one whose certificate no client trusts
/// (for the `tls_fail_rate` fault).
#[derive(Clone)]
struct Acceptors {
    good: TlsAcceptor,
    rogue: TlsAcceptor,
}

/// A request the emulator answers by resetting the connection (a fault).
#[derive(Debug)]
pub(crate) struct InjectedReset;

impl std::fmt::Display for InjectedReset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("injected connection reset")
    }
}

impl std::error::Error for InjectedReset {}

/// Dispatches by path.
async fn route(
    shared: &Shared,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, InjectedReset> {
    let path = req.uri().path();
    if path == "/accesstoken.srf" || entra_tenant(path).is_some() {
        let f = shared.faults.current();
        if f.token_delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(f.token_delay_ms.min(120_000))).await;
        }
        if f.token_down {
            return Ok(text(
                StatusCode::SERVICE_UNAVAILABLE,
                "application/json",
                "{\"error\":\"temporarily_unavailable\"}".into(),
            ));
        }
    }
    if path == "/accesstoken.srf" {
        return Ok(tokens::handle(shared, req, TokenFlow::Legacy).await);
    }
    if let Some(tenant) = entra_tenant(path) {
        let flow = TokenFlow::Entra {
            tenant: tenant.to_owned(),
        };
        return Ok(tokens::handle(shared, req, flow).await);
    }
    if let Some(rest) = path.strip_prefix("/_emulator/") {
        let rest = rest.to_owned();
        return Ok(admin(shared, &rest, req).await);
    }
    push::handle(shared, req).await
}

/// The `{tenant}` of `/{tenant}/oauth2/v2.0/token`.
fn entra_tenant(path: &str) -> Option<&str> {
    let tenant = path.strip_prefix('/')?.strip_suffix("/oauth2/v2.0/token")?;
    (!tenant.is_empty() && !tenant.contains('/')).then_some(tenant)
}

/// `/_emulator/{stats,expire-tokens,reset,faults}`.
async fn admin(shared: &Shared, what: &str, req: Request<Incoming>) -> Response<RespBody> {
    if what == "faults" {
        return match *req.method() {
            Method::GET => match serde_json::to_string(&shared.faults.current()) {
                Ok(json) => text(StatusCode::OK, "application/json", json),
                Err(e) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    e.to_string(),
                ),
            },
            Method::POST => {
                let body = match body::read_limited(req.into_body(), 64 * 1024).await {
                    body::BodyRead::Complete(b) => b,
                    _ => {
                        return text(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "text/plain",
                            "fault plan over 64 KiB".into(),
                        )
                    }
                };
                match serde_json::from_slice::<faults::FaultPlan>(&body) {
                    Ok(plan) => {
                        shared.faults.set(plan);
                        text(StatusCode::OK, "application/json", "{\"ok\":true}".into())
                    }
                    Err(e) => text(
                        StatusCode::BAD_REQUEST,
                        "text/plain",
                        format!("fault plan: {e}"),
                    ),
                }
            }
            _ => text(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "method not allowed".into(),
            ),
        };
    }
    let method = req.method();
    match (what, method) {
        ("stats", &Method::GET) => {
            let include_channels = !req.uri().query().is_some_and(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .any(|(k, v)| k == "channels" && (v == "false" || v == "0"))
            });
            match serde_json::to_string(&shared.snapshot(include_channels)) {
                Ok(json) => text(StatusCode::OK, "application/json", json),
                Err(e) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    e.to_string(),
                ),
            }
        }
        ("expire-tokens", &Method::POST) => {
            shared.tokens.expire_all();
            text(StatusCode::OK, "application/json", "{\"ok\":true}".into())
        }
        ("reset", &Method::POST) => {
            shared.reset_stats();
            text(StatusCode::OK, "application/json", "{\"ok\":true}".into())
        }
        ("stats", _) | ("expire-tokens", _) | ("reset", _) => {
            let mut r = text(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "method not allowed".into(),
            );
            let allow = if what == "stats" { "GET" } else { "POST" };
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
            r
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "unknown admin endpoint".into(),
        ),
    }
}

/// A plain response with a body and content type.
fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<RespBody> {
    let mut r = Response::new(RespBody::from(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entra_path() {
        assert_eq!(entra_tenant("/common/oauth2/v2.0/token"), Some("common"));
        assert_eq!(
            entra_tenant("/0000-1111/oauth2/v2.0/token"),
            Some("0000-1111")
        );
        assert_eq!(entra_tenant("//oauth2/v2.0/token"), None);
        assert_eq!(entra_tenant("/a/b/oauth2/v2.0/token"), None);
        assert_eq!(entra_tenant("/accesstoken.srf"), None);
    }

    #[test]
    fn app_debug_redacts_secret() {
        let app = EmulatedApp::new("id-1", "s3cr3t");
        let dbg = format!("{app:?}");
        assert!(dbg.contains("id-1") && !dbg.contains("s3cr3t"));
    }

    #[test]
    fn defaults() {
        let c = EmulatorConfig::default();
        assert_eq!(c.bind.to_string(), "127.0.0.1:0");
        assert_eq!(c.token_lifetime, Duration::from_secs(86_400));
        assert_eq!(c.h2_max_concurrent_streams, 100);
        assert_eq!(c.http, HttpVersions::Both);
    }
}
