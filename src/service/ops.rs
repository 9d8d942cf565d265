//! Operations plumbing shared by `serve` and `consume`: readiness, the
//! `/healthz`, `/readyz` and `/metrics` answers, JSON responses, and a small
//! bounded HTTP/1.1 + HTTP/2 (h2c) server on hyper.
//!
//! Server bounds: at most `max_connections` connections (accept waits beyond
//! it), request headers within `header_timeout` once the first byte arrived, a
//! connection with no request in progress closed after `idle_timeout` without a
//! byte either way (this includes a client that connects and sends nothing,
//! which the header timeout does not see), and on stop every connection is
//! asked to finish its requests (HTTP/1.1 close, HTTP/2 GOAWAY) and cut after
//! `grace`. When every slot is taken and a new client is accepted, the
//! connection idle the longest (no request in progress, quiet for at least
//! 250 ms) is closed to make room, so that clients that connect and wait cannot
//! starve clients with requests; when every connection is busy, the new one
//! waits for a slot. Body limits and body read timeouts belong to the handlers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

/// The response body of every handler.
pub type Body = Full<Bytes>;

/// A request handler: the request and the peer address in, a response out.
pub type Handler =
    Arc<dyn Fn(Request<Incoming>, SocketAddr) -> BoxFuture<'static, Response<Body>> + Send + Sync>;

/// What `/readyz` reports: ready once the engine is built and, where one is
/// needed, the upstream (NATS) is connected; not ready again while draining.
#[derive(Debug)]
pub struct Readiness {
    engine: std::sync::OnceLock<crate::engine::Engine>,
    upstream: AtomicBool,
    draining: AtomicBool,
}

/// Why `/readyz` says not ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReady {
    /// `draining`, `engine_starting`, `upstream_disconnected` or
    /// `token_endpoint_down`.
    pub status: &'static str,
    /// What failed and where (for `token_endpoint_down`).
    pub reasons: Vec<String>,
    /// When to ask again (for `token_endpoint_down`).
    pub retry_after: Option<std::time::Duration>,
}

impl Readiness {
    /// Not ready yet. With `needs_upstream` false, only the engine counts.
    pub fn new(needs_upstream: bool) -> Arc<Self> {
        Arc::new(Readiness {
            engine: std::sync::OnceLock::new(),
            upstream: AtomicBool::new(!needs_upstream),
            draining: AtomicBool::new(false),
        })
    }
    /// The engine is built; from now on its health counts too.
    pub fn set_engine_ready(&self, engine: &crate::engine::Engine) {
        let _ = self.engine.set(engine.clone());
    }
    /// The upstream connection is up (or down).
    pub fn set_upstream(&self, up: bool) {
        self.upstream.store(up, Ordering::Release);
    }
    /// Draining has started: not ready from now on.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }
    /// True while draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
    /// `Ok` when ready, else why not. Not ready when every tenant's token
    /// breaker is open (nothing could succeed); with some tenants down the
    /// instance stays ready for the others.
    pub fn status(&self) -> Result<(), NotReady> {
        let plain = |status| NotReady {
            status,
            reasons: Vec::new(),
            retry_after: None,
        };
        if self.draining.load(Ordering::Acquire) {
            return Err(plain("draining"));
        }
        let Some(engine) = self.engine.get() else {
            return Err(plain("engine_starting"));
        };
        if !self.upstream.load(Ordering::Acquire) {
            return Err(plain("upstream_disconnected"));
        }
        let health = engine.health();
        if health.all_tenants_down() {
            return Err(NotReady {
                status: "token_endpoint_down",
                reasons: health.open_breakers(),
                retry_after: health
                    .tenants_down
                    .iter()
                    .map(|t| t.outage.retry_after)
                    .min(),
            });
        }
        Ok(())
    }
}

/// `Retry-After` in whole seconds (at least 1) for a wait of `d`.
pub fn retry_after_header(d: std::time::Duration) -> HeaderValue {
    let secs = d.as_millis().div_ceil(1000).max(1);
    HeaderValue::from_str(&secs.to_string()).unwrap_or(HeaderValue::from_static("1"))
}

/// A JSON response.
pub fn json<T: serde::Serialize>(status: StatusCode, body: &T) -> Response<Body> {
    match serde_json::to_vec(body) {
        Ok(v) => with_type(status, "application/json", v.into()),
        Err(_) => with_type(
            StatusCode::INTERNAL_SERVER_ERROR,
            "application/json",
            Bytes::from_static(b"{\"error\":\"cannot encode the response\"}"),
        ),
    }
}

/// A response with a body and a content type.
pub fn with_type(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// `{"error": message}` with `status`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    json(status, &serde_json::json!({ "error": message.into() }))
}

/// `/healthz`: 200 while the process serves at all.
pub fn healthz() -> Response<Body> {
    json(StatusCode::OK, &serde_json::json!({ "status": "ok" }))
}

/// `/readyz`: 200 when ready, 503 with the reason otherwise.
pub fn readyz(r: &Readiness) -> Response<Body> {
    match r.status() {
        Ok(()) => json(StatusCode::OK, &serde_json::json!({ "status": "ready" })),
        Err(why) => {
            let body = if why.reasons.is_empty() {
                serde_json::json!({ "status": why.status })
            } else {
                serde_json::json!({ "status": why.status, "reasons": why.reasons })
            };
            let mut resp = json(StatusCode::SERVICE_UNAVAILABLE, &body);
            if let Some(d) = why.retry_after {
                resp.headers_mut()
                    .insert(http::header::RETRY_AFTER, retry_after_header(d));
            }
            resp
        }
    }
}

/// `/metrics` in the Prometheus text format.
pub fn metrics(handle: Option<&PrometheusHandle>) -> Response<Body> {
    let text = handle.map(PrometheusHandle::render).unwrap_or_default();
    with_type(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        text.into(),
    )
}

/// The handler of a plain operations listener (`[consume] listen`): `/healthz`,
/// `/readyz` and `/metrics`, without authentication (bind it to a private address).
pub fn ops_handler(readiness: Arc<Readiness>, prom: Option<PrometheusHandle>) -> Handler {
    Arc::new(move |req, _peer| {
        let resp = match (req.method(), req.uri().path()) {
            (&http::Method::GET, "/healthz") => healthz(),
            (&http::Method::GET, "/readyz") => readyz(&readiness),
            (&http::Method::GET, "/metrics") => metrics(prom.as_ref()),
            _ => error(StatusCode::NOT_FOUND, "not found"),
        };
        Box::pin(async move { resp })
    })
}

/// Server bounds.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Most open connections.
    pub max_connections: usize,
    /// Time for a client to send the request headers (HTTP/1.1), from their first byte.
    pub header_timeout: Duration,
    /// A connection with no request in progress and no byte read or written
    /// for this long is closed (a client that connects and sends nothing, an
    /// idle keep-alive connection).
    pub idle_timeout: Duration,
    /// Time open requests get to finish after stop.
    pub grace: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: 1024,
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            grace: Duration::from_secs(30),
        }
    }
}

/// A connection's activity: when a byte last moved and how many requests are
/// being answered.
#[derive(Debug)]
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    busy: AtomicUsize,
    /// Told to close because a new client needs the slot.
    evict: tokio::sync::Notify,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
            evict: tokio::sync::Notify::new(),
        })
    }
    /// How long no byte moved, if no request is in progress.
    fn idle_time(&self) -> Option<Duration> {
        if self.busy.load(Ordering::Acquire) != 0 {
            return None;
        }
        Some(
            self.start
                .elapsed()
                .saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed))),
        )
    }
    fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    /// Idle for at least `limit`: no request in progress and no byte moved.
    fn idle_for(&self, limit: Duration) -> bool {
        self.idle_time().is_some_and(|t| t >= limit)
    }
    /// Resolves once the connection has been idle for `limit`.
    async fn idle(&self, limit: Duration) {
        let step = (limit / 4).clamp(Duration::from_millis(20), Duration::from_secs(1));
        while !self.idle_for(limit) {
            tokio::time::sleep(step).await;
        }
    }
}

/// A connection idle this long may be closed to admit a new client when every
/// slot is taken (a fresh connection whose request is on its way is younger).
const EVICT_IDLE_AFTER: Duration = Duration::from_millis(250);

/// The open connections, for eviction.
#[derive(Default)]
struct Registry {
    next: u64,
    open: std::collections::HashMap<u64, Arc<Activity>>,
}

impl Registry {
    fn add(&mut self, a: Arc<Activity>) -> u64 {
        self.next += 1;
        self.open.insert(self.next, a);
        self.next
    }
    /// Tells the connection idle the longest (at least [`EVICT_IDLE_AFTER`]) to
    /// close; false if every connection is busy or fresh.
    fn evict_idlest(&mut self) -> bool {
        let victim = self
            .open
            .iter()
            .filter_map(|(id, a)| Some((*id, a.idle_time()?)))
            .filter(|(_, t)| *t >= EVICT_IDLE_AFTER)
            .max_by_key(|(_, t)| *t)
            .map(|(id, _)| id);
        match victim.and_then(|id| self.open.remove(&id)) {
            Some(a) => {
                a.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Counts a request as in progress until dropped.
struct Busy(Arc<Activity>);

impl Busy {
    fn new(a: &Arc<Activity>) -> Self {
        a.busy.fetch_add(1, Ordering::AcqRel);
        Busy(a.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A socket that records when a byte last moved.
struct Watched<T> {
    io: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Serves `handler` on `listener` until `stop` turns true, then shuts down
/// gracefully within `limits.grace`.
pub fn spawn_server(
    listener: TcpListener,
    handler: Handler,
    limits: ServerLimits,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
        let (closing_tx, closing_rx) = watch::channel(false);
        let mut conns = JoinSet::new();
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(256);
        let builder = Arc::new(builder);
        let registry = Arc::new(parking_lot::Mutex::new(Registry::default()));
        'serve: loop {
            let accepted = tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((tcp, peer)) => {
                    let slot = match slots.clone().try_acquire_owned() {
                        Ok(s) => s,
                        Err(_) => loop {
                            // Full: make room by closing the idlest connection;
                            // look again while every one is busy or fresh.
                            if registry.lock().evict_idlest() {
                                tracing::debug!("closed an idle HTTP connection for a new client");
                            }
                            tokio::select! {
                                _ = stop.wait_for(|s| *s) => break 'serve,
                                s = slots.clone().acquire_owned() => match s {
                                    Ok(s) => break s,
                                    Err(_) => break 'serve,
                                },
                                _ = tokio::time::sleep(EVICT_IDLE_AFTER / 2) => {}
                            }
                        },
                    };
                    let _ = tcp.set_nodelay(true);
                    let handler = handler.clone();
                    let builder = builder.clone();
                    let mut closing = closing_rx.clone();
                    let idle_timeout = limits.idle_timeout;
                    let activity = Activity::new();
                    let id = registry.lock().add(activity.clone());
                    let registry = registry.clone();
                    conns.spawn(async move {
                        let _slot = slot;
                        let counted = activity.clone();
                        let svc = service_fn(move |req: Request<Incoming>| {
                            let busy = Busy::new(&counted);
                            let fut = handler(req, peer);
                            async move {
                                let resp = fut.await;
                                drop(busy);
                                Ok::<_, Infallible>(resp)
                            }
                        });
                        let io = Watched {
                            io: tcp,
                            activity: activity.clone(),
                        };
                        let conn = builder.serve_connection(TokioIo::new(io), svc);
                        tokio::pin!(conn);
                        let r = tokio::select! {
                            r = conn.as_mut() => r,
                            _ = async { closing.wait_for(|c| *c).await.is_ok() } => {
                                conn.as_mut().graceful_shutdown();
                                conn.await
                            }
                            _ = async {
                                tokio::select! {
                                    _ = activity.idle(idle_timeout) => {}
                                    _ = activity.evict.notified() => {}
                                }
                            } => {
                                tracing::debug!(%peer, "closing an idle HTTP connection");
                                conn.as_mut().graceful_shutdown();
                                // An idle connection has nothing to finish; do not wait on it.
                                tokio::time::timeout(Duration::from_secs(1), conn)
                                    .await
                                    .unwrap_or(Ok(()))
                            }
                        };
                        registry.lock().open.remove(&id);
                        if let Err(e) = r {
                            tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            while conns.try_join_next().is_some() {}
        }
        drop(listener);
        let _ = closing_tx.send(true);
        let drain = async { while conns.join_next().await.is_some() {} };
        if tokio::time::timeout(limits.grace, drain).await.is_err() {
            tracing::warn!("HTTP connections still open after the grace period; closing them");
        }
        conns.shutdown().await;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readiness_steps() {
        let engine = crate::engine::Engine::builder()
            .tenant(crate::engine::TenantConfig::new(
                "t",
                crate::wns::Credentials::PackageSid {
                    package_sid: "ms-app://S-1-15-2-1".into(),
                    secret: crate::wns::Secret::new("s"),
                },
            ))
            .build()
            .unwrap();
        let status = |r: &Readiness| r.status().map_err(|e| e.status);
        let r = Readiness::new(true);
        assert_eq!(status(&r), Err("engine_starting"));
        r.set_engine_ready(&engine);
        assert_eq!(status(&r), Err("upstream_disconnected"));
        r.set_upstream(true);
        assert_eq!(status(&r), Ok(()));
        r.set_draining();
        assert_eq!(status(&r), Err("draining"));
        let r = Readiness::new(false);
        r.set_engine_ready(&engine);
        assert_eq!(status(&r), Ok(()));
    }
}
