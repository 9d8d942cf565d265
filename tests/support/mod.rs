//! Test client for the emulator: real TLS (trusting only the emulator's CA,
//! SNI set to a WNS host name) over HTTP/1.1 or HTTP/2, on 127.0.0.1 only.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// HTTP version the client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    H1,
    H2,
}

pub const BOTH: [Proto; 2] = [Proto::H1, Proto::H2];
pub const WNS_HOST: &str = "db5.notify.windows.com";

/// A response, fully read.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("json body")
    }
}

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

/// A client bound to one emulator; reconnects when its connection closes.
pub struct Client {
    addr: SocketAddr,
    proto: Proto,
    tls: TlsConnector,
    sni: String,
    sender: Mutex<Option<Sender>>,
}

/// rustls client config trusting only `ca_pem`, with ALPN `alpn`.
pub fn tls_config(ca_pem: &str, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut cfg =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

/// TLS-connects to `addr` with the given SNI.
pub async fn tls_connect(
    addr: SocketAddr,
    cfg: Arc<ClientConfig>,
    sni: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    TlsConnector::from(cfg).connect(name, tcp).await
}

impl Client {
    pub fn new(addr: SocketAddr, ca_pem: &str, proto: Proto) -> Self {
        Self::with_sni(addr, ca_pem, proto, WNS_HOST)
    }

    pub fn with_sni(addr: SocketAddr, ca_pem: &str, proto: Proto, sni: &str) -> Self {
        let alpn: &[&[u8]] = match proto {
            Proto::H1 => &[b"http/1.1"],
            Proto::H2 => &[b"h2"],
        };
        Self {
            addr,
            proto,
            tls: TlsConnector::from(tls_config(ca_pem, alpn)),
            sni: sni.to_owned(),
            sender: Mutex::new(None),
        }
    }

    async fn connect(&self) -> Sender {
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let name = ServerName::try_from(self.sni.clone()).unwrap();
        let tls = self.tls.connect(name, tcp).await.unwrap();
        let io = TokioIo::new(tls);
        match self.proto {
            Proto::H1 => {
                let (s, conn) = http1::handshake(io).await.unwrap();
                tokio::spawn(conn);
                Sender::H1(s)
            }
            Proto::H2 => {
                let (s, conn) = http2::handshake(TokioExecutor::new(), io).await.unwrap();
                tokio::spawn(conn);
                Sender::H2(s)
            }
        }
    }

    /// Sends one request; `path_and_query` like `/?token=x`.
    pub async fn send(
        &self,
        method: Method,
        host: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Resp {
        let body: Bytes = body.into();
        let uri = match self.proto {
            Proto::H1 => path_and_query.to_owned(),
            Proto::H2 => format!("https://{host}{path_and_query}"),
        };
        let mut b = Request::builder().method(method).uri(uri);
        if self.proto == Proto::H1 {
            b = b.header("host", host);
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(body)).unwrap();

        let mut slot = self.sender.lock().await;
        let ready = match slot.as_mut() {
            Some(Sender::H1(s)) => s.ready().await.is_ok(),
            Some(Sender::H2(s)) => s.ready().await.is_ok(),
            None => false,
        };
        if !ready {
            *slot = Some(self.connect().await);
        }
        let fut = match slot.as_mut().unwrap() {
            Sender::H1(s) => {
                let f = s.send_request(req);
                // HTTP/1.1: keep the slot locked until the response is in.
                let resp = f.await.unwrap();
                drop(slot);
                return read(resp).await;
            }
            Sender::H2(s) => {
                let mut s = s.clone();
                drop(slot);
                async move { s.send_request(req).await }
            }
        };
        read(fut.await.unwrap()).await
    }

    /// A WNS push with the mandatory headers plus `extra`.
    pub async fn push(
        &self,
        bearer: &str,
        channel: &str,
        extra: &[(&str, &str)],
        payload: &[u8],
    ) -> Resp {
        let auth = format!("Bearer {bearer}");
        let mut headers = vec![
            ("authorization", auth.as_str()),
            ("x-wns-type", "wns/raw"),
            ("content-type", "application/octet-stream"),
        ];
        headers.extend_from_slice(extra);
        let path = format!("/?token={channel}");
        self.send(
            Method::POST,
            WNS_HOST,
            &path,
            &headers,
            Bytes::copy_from_slice(payload),
        )
        .await
    }

    /// Legacy token request.
    pub async fn legacy_token(&self, client_id: &str, secret: &str, scope: &str) -> Resp {
        let body = form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", secret),
            ("scope", scope),
        ]);
        self.send(
            Method::POST,
            "login.live.com",
            "/accesstoken.srf",
            &[("content-type", "application/x-www-form-urlencoded")],
            body,
        )
        .await
    }

    /// Entra token request.
    pub async fn entra_token(&self, tenant: &str, client_id: &str, secret: &str) -> Resp {
        let body = form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", secret),
            ("scope", "https://wns.windows.com/.default"),
        ]);
        self.send(
            Method::POST,
            "login.microsoftonline.com",
            &format!("/{tenant}/oauth2/v2.0/token"),
            &[("content-type", "application/x-www-form-urlencoded")],
            body,
        )
        .await
    }

    /// A fresh legacy access token for `client_id`.
    pub async fn token(&self, client_id: &str) -> String {
        let r = self
            .legacy_token(client_id, "secret", "notify.windows.com")
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        r.json()["access_token"].as_str().unwrap().to_owned()
    }
}

pub fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

async fn read(resp: http::Response<hyper::body::Incoming>) -> Resp {
    let (parts, body) = resp.into_parts();
    let body = tokio::time::timeout(Duration::from_secs(30), body.collect())
        .await
        .expect("body timeout")
        .expect("body")
        .to_bytes();
    Resp {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}
