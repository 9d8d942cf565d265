//! Building the raw-push request, sans IO.
//!
//! [`build_push`] turns a [`ChannelUri`], a bearer token, a [`Payload`] and
//! [`PushOptions`] into an `http::Request<Bytes>` with exactly the headers WNS
//! documents for a raw notification. The transport sends it as it is: the body
//! has a known length (so no chunking), and no `Expect` header is ever added.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, Method, Request, Uri};

use super::channel::ChannelUri;
use super::correlation::CorrelationVector;
use super::credentials::Secret;

/// The largest raw payload WNS accepts, in bytes (a bigger one gets 413).
pub const MAX_PAYLOAD: usize = 5000;

/// `X-WNS-Type`.
pub static X_WNS_TYPE: HeaderName = HeaderName::from_static("x-wns-type");
/// `X-WNS-Cache-Policy`.
pub static X_WNS_CACHE_POLICY: HeaderName = HeaderName::from_static("x-wns-cache-policy");
/// `X-WNS-TTL`.
pub static X_WNS_TTL: HeaderName = HeaderName::from_static("x-wns-ttl");
/// `X-WNS-RequestForStatus`.
pub static X_WNS_REQUEST_FOR_STATUS: HeaderName = HeaderName::from_static("x-wns-requestforstatus");
/// `X-WNS-PRIORITY`.
pub static X_WNS_PRIORITY: HeaderName = HeaderName::from_static("x-wns-priority");
/// `MS-CV`.
pub static MS_CV: HeaderName = HeaderName::from_static("ms-cv");

/// The body of a raw notification: non-empty and at most [`MAX_PAYLOAD`] bytes.
/// MDM ignores the content, but WNS refuses an empty one. Cheap to clone (the
/// bytes and the ready-made `Content-Length` value are shared).
#[derive(Clone, PartialEq, Eq)]
pub struct Payload(Bytes, HeaderValue);

/// Why a payload was refused before sending.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Zero bytes.
    #[error("raw payload is empty; WNS requires at least one byte")]
    Empty,
    /// More than [`MAX_PAYLOAD`] bytes.
    #[error("raw payload is {0} bytes; WNS accepts at most {MAX_PAYLOAD}")]
    TooLarge(usize),
}

impl Payload {
    /// Checks and wraps a payload.
    pub fn new(bytes: impl Into<Bytes>) -> Result<Self, PayloadError> {
        let b = bytes.into();
        match b.len() {
            0 => Err(PayloadError::Empty),
            n if n > MAX_PAYLOAD => Err(PayloadError::TooLarge(n)),
            n => Ok(Payload(b, HeaderValue::from(n))),
        }
    }

    /// The default wake payload, `wake` (MDM ignores the content).
    pub fn wake() -> Self {
        Payload(Bytes::from_static(b"wake"), HeaderValue::from_static("4"))
    }

    /// The bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }
}

impl Default for Payload {
    fn default() -> Self {
        Payload::wake()
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Payload({} bytes)", self.0.len())
    }
}

/// `X-WNS-Cache-Policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CachePolicy {
    /// WNS keeps one raw push for an offline device (the default for a wake).
    Cache,
    /// An offline device never sees the push.
    NoCache,
}

impl CachePolicy {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            CachePolicy::Cache => "cache",
            CachePolicy::NoCache => "no-cache",
        }
    }
}

/// `X-WNS-PRIORITY`: 1 high .. 4 very low. Raw pushes default to 3 at WNS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Priority {
    /// 1.
    High,
    /// 2.
    Medium,
    /// 3.
    Low,
    /// 4 (never delivered under battery saver).
    VeryLow,
}

impl Priority {
    fn header(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Priority::High => "1",
            Priority::Medium => "2",
            Priority::Low => "3",
            Priority::VeryLow => "4",
        })
    }
}

/// The optional WNS headers of one push.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PushOptions {
    /// Default [`CachePolicy::Cache`]: a wake should wait for an offline device.
    pub cache_policy: CachePolicy,
    /// `X-WNS-TTL`; `None` sends no header (no expiry at WNS).
    #[serde(with = "opt_secs", default)]
    pub ttl: Option<Duration>,
    /// `X-WNS-RequestForStatus: true` asks for `X-WNS-DeviceConnectionStatus`.
    pub request_for_status: bool,
    /// `X-WNS-PRIORITY`; `None` sends no header.
    pub priority: Option<Priority>,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            cache_policy: CachePolicy::Cache,
            ttl: None,
            request_for_status: false,
            priority: None,
        }
    }
}

mod opt_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.serialize_some(&d.as_secs()),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_secs))
    }
}

/// Builds the raw-push request with an absolute URI (the transport turns it into
/// origin form for HTTP/1.1) and every header WNS asks for.
///
/// The channel's host was validated by [`ChannelUri::parse`]; that check is the
/// only way to get a `ChannelUri`, so a bearer token can reach nothing else.
pub fn build_push(
    channel: &ChannelUri,
    token: &Secret,
    payload: &Payload,
    options: &PushOptions,
    cv: &CorrelationVector,
) -> Result<Request<Bytes>, http::Error> {
    build_push_with_auth(channel, &bearer(token)?, payload, options, cv)
}

/// The `Authorization: Bearer …` value for `token`, marked sensitive (never
/// printed, never indexed by HPACK). The engine builds it once per token.
pub fn bearer(token: &Secret) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
    let mut auth = HeaderValue::try_from(format!("Bearer {}", token.expose()))?;
    auth.set_sensitive(true);
    Ok(auth)
}

/// [`build_push`] with a ready `Authorization` value (from [`bearer`]); this is
/// the hot path: one URI parse, the `MS-CV` value, and a header map sized once;
/// every other value is static or shared. The URI is absolute and there is no
/// `Host` header: HTTP/2 carries the authority in `:authority`, and the
/// transport adds `Host` when it speaks HTTP/1.1.
pub fn build_push_with_auth(
    channel: &ChannelUri,
    auth: &HeaderValue,
    payload: &Payload,
    options: &PushOptions,
    cv: &CorrelationVector,
) -> Result<Request<Bytes>, http::Error> {
    let uri = Uri::try_from(channel.as_str())?;
    let mut h = HeaderMap::with_capacity(12);
    h.insert(AUTHORIZATION, auth.clone());
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(X_WNS_TYPE.clone(), HeaderValue::from_static("wns/raw"));
    h.insert(CONTENT_LENGTH, payload.1.clone());
    h.insert(
        X_WNS_CACHE_POLICY.clone(),
        HeaderValue::from_static(options.cache_policy.as_str()),
    );
    // Fresh per request, so HPACK indexing it would only churn the dynamic
    // table; "sensitive" makes HTTP/2 send it as a never-indexed literal.
    let mut ms_cv = HeaderValue::from_str(cv.as_str())?;
    ms_cv.set_sensitive(true);
    h.insert(MS_CV.clone(), ms_cv);
    if let Some(ttl) = options.ttl {
        h.insert(X_WNS_TTL.clone(), HeaderValue::from(ttl.as_secs()));
    }
    if options.request_for_status {
        h.insert(
            X_WNS_REQUEST_FOR_STATUS.clone(),
            HeaderValue::from_static("true"),
        );
    }
    if let Some(p) = options.priority {
        h.insert(X_WNS_PRIORITY.clone(), p.header());
    }
    let mut req = Request::new(payload.0.clone());
    *req.method_mut() = Method::POST;
    *req.uri_mut() = uri;
    *req.headers_mut() = h;
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chan() -> ChannelUri {
        ChannelUri::parse("https://db5p.notify.windows.com/?token=AwYAAAB%2bq%3d%3d").unwrap()
    }

    #[test]
    fn payload_bounds() {
        assert_eq!(Payload::new(Bytes::new()), Err(PayloadError::Empty));
        assert!(Payload::new(vec![b'x'; MAX_PAYLOAD]).is_ok());
        assert_eq!(
            Payload::new(vec![b'x'; MAX_PAYLOAD + 1]),
            Err(PayloadError::TooLarge(5001))
        );
        assert_eq!(Payload::wake().bytes().len(), 4);
    }

    #[test]
    fn raw_push_has_exact_headers() {
        let cv = CorrelationVector::new();
        let req = build_push(
            &chan(),
            &Secret::new("tok"),
            &Payload::wake(),
            &PushOptions::default(),
            &cv,
        )
        .unwrap();
        assert_eq!(req.method(), Method::POST);
        assert_eq!(
            req.uri().to_string(),
            "https://db5p.notify.windows.com/?token=AwYAAAB%2bq%3d%3d"
        );
        let h = req.headers();
        // The authority is in the URI; the transport adds Host for HTTP/1.1.
        assert!(h.get(http::header::HOST).is_none());
        assert_eq!(h[AUTHORIZATION], "Bearer tok");
        assert!(h[AUTHORIZATION].is_sensitive());
        assert_eq!(h[CONTENT_TYPE], "application/octet-stream");
        assert_eq!(h["x-wns-type"], "wns/raw");
        assert_eq!(h[CONTENT_LENGTH], "4");
        assert_eq!(h["x-wns-cache-policy"], "cache");
        assert_eq!(h["ms-cv"], cv.as_str());
        assert!(h.get("x-wns-ttl").is_none());
        assert!(h.get("x-wns-requestforstatus").is_none());
        assert!(h.get("x-wns-priority").is_none());
        assert!(h.get(http::header::EXPECT).is_none());
        assert!(h.get(http::header::TRANSFER_ENCODING).is_none());
        assert_eq!(req.body().as_ref(), b"wake");
    }

    #[test]
    fn optional_headers() {
        let opts = PushOptions {
            cache_policy: CachePolicy::NoCache,
            ttl: Some(Duration::from_secs(3600)),
            request_for_status: true,
            priority: Some(Priority::High),
        };
        let cv = CorrelationVector::new();
        let req = build_push(
            &chan(),
            &Secret::new("t"),
            &Payload::new(&b"hi"[..]).unwrap(),
            &opts,
            &cv,
        )
        .unwrap();
        let h = req.headers();
        assert_eq!(h["x-wns-cache-policy"], "no-cache");
        assert_eq!(h["x-wns-ttl"], "3600");
        assert_eq!(h["x-wns-requestforstatus"], "true");
        assert_eq!(h["x-wns-priority"], "1");
        assert_eq!(h[CONTENT_LENGTH], "2");
    }

    #[test]
    fn token_with_bad_bytes_is_an_error_not_a_panic() {
        let cv = CorrelationVector::new();
        let r = build_push(
            &chan(),
            &Secret::new("a\r\nb"),
            &Payload::wake(),
            &PushOptions::default(),
            &cv,
        );
        assert!(r.is_err());
    }
}
