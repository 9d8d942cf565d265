//! The transport: sends one finished `http::Request<Bytes>` over rustls and
//! returns the whole answer. It knows nothing of WNS semantics except one rule it
//! enforces itself, as a last line of defence: a request that carries an
//! `Authorization` header only ever goes to `https://*.notify.windows.com`.
//!
//! - [`tls`] holds root store (WebPKI plus extra CAs) and ALPN;
//! - [`resolve`] holds curl-style resolve overrides;
//! - `pool`: per-host HTTP/2 multi-connection and HTTP/1.1 keep-alive pools;
//! - `http1`: HTTP/1.1 on one connection (sans-IO head codec, chunked decoding,
//!   and the exchange driven by the request's own future);
//! - `http2`: HTTP/2 on one connection (sans-IO frames, HPACK and connection
//!   state, and one IO task per connection).
//! - `stack`: which code speaks HTTP on a connection, the own codecs above
//!   or the `h2` crate and hyper ([`HttpStack`]); the pool sees only its handles;
//! - `literal_cache`: recently decoded header names and values, per connection,
//!   for both protocols;
//! - `codec_bench` (public for the benches, hidden from the docs): the sans-IO
//!   codecs with one connection's state.
//!
//! Every wait is bounded: resolve+connect, the TLS handshake, and the request
//! (waiting for a pooled connection, sending, reading the answer) each have a
//! timeout. The number of hosts with pools is capped too.

#[doc(hidden)]
pub mod codec_bench;
mod http1;
mod http2;
mod literal_cache;
mod pool;
pub mod resolve;
mod stack;
pub mod tls;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use parking_lot::RwLock;
use rustls::pki_types::CertificateDer;

pub use resolve::{ResolveOverride, ResolveOverrideError};
pub use stack::HttpStack;
pub use tls::TlsConfigError;

use crate::wns::channel::is_wns_host;
use crate::wns::OutcomeKind;
use pool::{Connector, HostPool};

/// Which HTTP versions to offer in ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpPolicy {
    /// Offer h2 and http/1.1; the server picks (default).
    #[default]
    Auto,
    /// Offer only http/1.1.
    Http1Only,
    /// Offer only h2; a server without it is an error.
    Http2Only,
}

/// Transport settings.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// ALPN policy.
    pub http: HttpPolicy,
    /// Which code speaks HTTP: the project's own codecs (default) or the
    /// `h2` crate and hyper ([`HttpStack`]).
    pub stack: HttpStack,
    /// HTTP/2 connections per host (requests are spread round-robin). Default 4.
    pub h2_connections_per_host: usize,
    /// HTTP/1.1 keep-alive connections per host (one request each at a time). Default 64.
    pub h1_connections_per_host: usize,
    /// Resolve + TCP connect timeout. Default 5 s.
    pub connect_timeout: Duration,
    /// TLS handshake timeout. Default 5 s.
    pub tls_timeout: Duration,
    /// Request timeout: waiting for a connection, sending, and reading the answer. Default 15 s.
    pub request_timeout: Duration,
    /// Request timeout for the token endpoints, which can be slow. Default 30 s.
    pub token_timeout: Duration,
    /// Resolve overrides (test hook, also for users' own emulators).
    pub resolve: Vec<ResolveOverride>,
    /// Extra trusted CA certificates (test hook; also corporate TLS proxies).
    pub extra_ca: Vec<CertificateDer<'static>>,
    /// Trust the public WebPKI roots (default true).
    pub webpki_roots: bool,
    /// Most hosts with a pool at once. Default 1024.
    pub max_hosts: usize,
    /// Largest answer body read, in bytes. Default 64 KiB; at most
    /// [`MAX_RESPONSE_BODY`] (1 MiB), which [`Transport::new`] enforces.
    pub max_response_body: usize,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            http: HttpPolicy::Auto,
            stack: HttpStack::Own,
            h2_connections_per_host: 4,
            h1_connections_per_host: 64,
            connect_timeout: Duration::from_secs(5),
            tls_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(15),
            token_timeout: Duration::from_secs(30),
            resolve: Vec::new(),
            extra_ca: Vec::new(),
            webpki_roots: true,
            max_hosts: 1024,
            max_response_body: 64 * 1024,
        }
    }
}

impl TransportConfig {
    /// Trusts every certificate in a PEM file.
    pub fn add_ca_file(&mut self, path: &std::path::Path) -> Result<(), TlsConfigError> {
        self.extra_ca.extend(tls::load_ca_file(path)?);
        Ok(())
    }

    /// Trusts every certificate in PEM text.
    pub fn add_ca_pem(&mut self, pem: &str) -> Result<(), TlsConfigError> {
        self.extra_ca.extend(tls::load_ca_pem(pem)?);
        Ok(())
    }
}

/// How a request failed below HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportErrorKind {
    /// Resolve or TCP connect failed.
    Connect,
    /// An open connection broke before the answer (reset, closed mid-request).
    Broken,
    /// The TLS handshake failed.
    Tls,
    /// A timeout expired.
    Timeout,
    /// HTTP protocol failure (h2 reset, GOAWAY, malformed answer).
    Protocol,
    /// Refused by the transport's own rules (a token bound for a host outside WNS).
    Refused,
}

/// A failed request, with a message that names the host.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct TransportError {
    /// The class of failure.
    pub kind: TransportErrorKind,
    /// What happened.
    pub message: String,
}

impl TransportError {
    pub(crate) fn new(kind: TransportErrorKind, message: String) -> Self {
        TransportError { kind, message }
    }

    /// A failure of hyper-rustls's connect (our TCP connector's own error, or
    /// the TLS handshake's, wrapped in `io::Error`s).
    fn from_connect(host: &str, e: Box<dyn std::error::Error + Send + Sync>) -> Self {
        let e = match e.downcast::<TransportError>() {
            Ok(t) => return *t,
            Err(e) => e,
        };
        let mut tls = false;
        let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&*e);
        while let Some(s) = src {
            if s.is::<rustls::Error>() {
                tls = true;
                break;
            }
            // `io::Error::source` skips the error it wraps; look inside it too.
            src = match s.downcast_ref::<std::io::Error>() {
                Some(io) => io.get_ref().map(|i| i as _),
                None => s.source(),
            };
        }
        let kind = if tls || e.is::<rustls::pki_types::InvalidDnsNameError>() {
            TransportErrorKind::Tls
        } else {
            TransportErrorKind::Connect
        };
        TransportError::new(kind, format!("TLS handshake with {host}: {e}"))
    }

    /// The outcome this failure maps to.
    pub fn outcome_kind(&self) -> OutcomeKind {
        match self.kind {
            TransportErrorKind::Connect | TransportErrorKind::Broken => OutcomeKind::ConnectError,
            TransportErrorKind::Tls => OutcomeKind::TlsError,
            TransportErrorKind::Timeout => OutcomeKind::Timeout,
            TransportErrorKind::Protocol => OutcomeKind::ProtocolError,
            TransportErrorKind::Refused => OutcomeKind::InvalidChannel,
        }
    }
}

/// One `Content-Length` value: 1 to 19 ASCII digits and nothing else (RFC
/// 9110 §8.6: `1*DIGIT`; no sign, no space, and at most 19 digits so that it
/// fits a `u64`). The one rule both protocols use.
pub(crate) fn content_length_value(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// An IO error of a TLS stream that rustls raised (as opposed to the socket).
pub(crate) fn is_tls_error(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<rustls::Error>())
}

/// The largest [`TransportConfig::max_response_body`]: the HTTP/2 client's
/// stream receive window (1 MiB), which it never credits back, so a longer
/// answer could never arrive.
pub const MAX_RESPONSE_BODY: usize = http2::conn::STREAM_WINDOW as usize;

/// The transport could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TransportBuildError {
    /// TLS setup failed.
    #[error(transparent)]
    Tls(#[from] TlsConfigError),
    /// [`TransportConfig::max_response_body`] is above [`MAX_RESPONSE_BODY`].
    #[error(
        "max_response_body of {0} bytes is above the limit of {MAX_RESPONSE_BODY} bytes \
         (1 MiB, the HTTP/2 stream receive window): a longer answer could never arrive"
    )]
    MaxResponseBody(usize),
}

/// Sends requests over pooled rustls connections. Cheap to clone.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

struct Inner {
    connector: Connector,
    pools: RwLock<HashMap<Box<str>, Arc<HostPool>, foldhash::fast::RandomState>>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("config", &self.inner.connector.cfg)
            .finish()
    }
}

impl Transport {
    /// Builds a transport. No connection is opened until the first request.
    pub fn new(cfg: TransportConfig) -> Result<Self, TransportBuildError> {
        if cfg.max_response_body > MAX_RESPONSE_BODY {
            return Err(TransportBuildError::MaxResponseBody(cfg.max_response_body));
        }
        let cfg = Arc::new(cfg);
        let tcp = pool::TcpConnect { cfg: cfg.clone() };
        let https = tls::https_connector(&cfg.extra_ca, cfg.webpki_roots, cfg.http, tcp)?;
        let connector = Connector {
            https,
            cfg,
            open: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        };
        Ok(Transport {
            inner: Arc::new(Inner {
                connector,
                pools: RwLock::new(HashMap::default()),
            }),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &TransportConfig {
        &self.inner.connector.cfg
    }

    /// Sends one request (absolute `https` URI) and reads the whole answer.
    pub async fn send(&self, req: Request<Bytes>) -> Result<Response<Bytes>, TransportError> {
        let timeout = self.inner.connector.cfg.request_timeout;
        self.send_within(req, timeout).await
    }

    /// [`Transport::send`] with its own request timeout (token endpoints get
    /// [`TransportConfig::token_timeout`]).
    pub async fn send_within(
        &self,
        req: Request<Bytes>,
        timeout: Duration,
    ) -> Result<Response<Bytes>, TransportError> {
        let refused = |m: String| TransportError::new(TransportErrorKind::Refused, m);
        let uri = req.uri();
        if uri.scheme_str() != Some("https") {
            return Err(refused(format!("{uri}: only https is sent")));
        }
        let Some(host) = uri.host() else {
            return Err(refused(format!("{uri}: no host")));
        };
        let port = uri.port_u16().unwrap_or(443);
        if req.headers().contains_key(http::header::AUTHORIZATION)
            && (!is_wns_host(host) || port != 443)
        {
            return Err(refused(format!(
                "a bearer token is only sent to https://*.notify.windows.com, not to {host}:{port}"
            )));
        }
        let pool = self.pool(host, port);
        let cfg = &self.inner.connector.cfg;
        match tokio::time::timeout(
            timeout,
            pool.send(&self.inner.connector, req, cfg.max_response_body),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(TransportError::new(
                TransportErrorKind::Timeout,
                format!("no answer from {} within {timeout:?}", pool.host()),
            )),
        }
    }

    /// Connections open right now (all hosts).
    pub fn open_connections(&self) -> usize {
        self.inner
            .connector
            .open
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The protocol negotiated with `host` (port 443), once a connection was made.
    pub fn protocol_for(&self, host: &str) -> Option<&'static str> {
        let host = host.to_ascii_lowercase();
        self.inner
            .pools
            .read()
            .get(host.as_str())
            .and_then(|p| p.protocol())
    }

    /// The pool for `host:port`. The hot path (a lowercase host on port 443, as
    /// every WNS channel has) looks it up without allocating.
    fn pool(&self, host: &str, port: u16) -> Arc<HostPool> {
        let lower;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = host.to_ascii_lowercase();
            lower.as_str()
        } else {
            host
        };
        let key = pool_key(host, port);
        if let Some(p) = self.inner.pools.read().get(&*key) {
            return p.clone();
        }
        let mut pools = self.inner.pools.write();
        if let Some(p) = pools.get(&*key) {
            return p.clone();
        }
        let cfg = &self.inner.connector.cfg;
        if pools.len() >= cfg.max_hosts {
            // Drop pools nobody is using right now; their connections close.
            pools.retain(|_, p| Arc::strong_count(p) > 1);
            // Still full (every pool busy): evict some anyway so the map stays
            // within the cap. An evicted pool lives on only until the requests
            // holding it finish; later requests for its host get a new pool.
            let excess = (pools.len() + 1).saturating_sub(cfg.max_hosts.max(1));
            let evict: Vec<Box<str>> = pools.keys().take(excess).cloned().collect();
            for k in evict {
                pools.remove(&k);
            }
        }
        let p = Arc::new(HostPool::new(host, port, cfg));
        pools.insert(key.into_owned().into_boxed_str(), p.clone());
        p
    }
}

/// The pool map's key: the lowercase host for port 443, `host:port` otherwise.
fn pool_key(host: &str, port: u16) -> std::borrow::Cow<'_, str> {
    if port == 443 {
        std::borrow::Cow::Borrowed(host)
    } else {
        std::borrow::Cow::Owned(format!("{host}:{port}"))
    }
}

#[cfg(test)]
mod tests {
    use super::{content_length_value, Transport, TransportBuildError, TransportConfig};
    use super::{http2, MAX_RESPONSE_BODY};

    /// The HTTP/2 client never credits a stream's receive window back, so an
    /// answer longer than it would hang (its DATA stops at the window); a
    /// limit above it used to be taken and is now refused.
    #[test]
    fn a_response_body_limit_above_the_stream_window_is_refused() {
        assert_eq!(MAX_RESPONSE_BODY, http2::conn::STREAM_WINDOW as usize);
        let cfg = |max_response_body| TransportConfig {
            max_response_body,
            ..TransportConfig::default()
        };
        assert!(Transport::new(cfg(MAX_RESPONSE_BODY)).is_ok());
        let e = Transport::new(cfg(MAX_RESPONSE_BODY + 1)).unwrap_err();
        assert!(matches!(e, TransportBuildError::MaxResponseBody(n) if n == MAX_RESPONSE_BODY + 1));
        let m = e.to_string();
        assert!(m.contains("max_response_body of 1048577 bytes"), "{m}");
        assert!(m.contains("limit of 1048576 bytes"), "{m}");
    }

    #[test]
    fn content_length_is_digits_only() {
        assert_eq!(content_length_value(b"0"), Some(0));
        assert_eq!(content_length_value(b"0005"), Some(5));
        assert_eq!(
            content_length_value(b"9999999999999999999"),
            Some(9_999_999_999_999_999_999)
        );
        for bad in [
            &b""[..],
            b"+5",
            b"-5",
            b" 5",
            b"5 ",
            b"5,5",
            b"0x5",
            b"1e3",
            b"10000000000000000000",
        ] {
            assert_eq!(
                content_length_value(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
