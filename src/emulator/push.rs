//! The WNS push endpoint: request validation (in WNS's order), applying the
//! channel token's [`Behavior`], the offline cache, stats, and the response
//! headers (`X-WNS-Msg-ID`, `X-WNS-Debug-Trace`, `MS-CV`, `X-WNS-Status`, ...).
//!
//! Validation order, first failure wins:
//! 1. method is not `POST` → 405;
//! 2. bearer token missing/unknown → 401 `Invalid token`, expired → 401 `Token expired`;
//! 3. `X-WNS-Type` ≠ `wns/raw` or `Content-Type` ≠ `application/octet-stream`,
//!    `Transfer-Encoding: chunked`, or any `Expect` header → 400; on HTTP/1.x a
//!    missing `Content-Length` → 411;
//! 4. empty body → 400, body over 5000 bytes → 413;
//! 5. malformed `X-WNS-Cache-Policy`, `X-WNS-TTL`, `X-WNS-PRIORITY` or
//!    `X-WNS-RequestForStatus` → 400;
//! 6. no (or empty) `token` query parameter → 404.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::behavior::{parse_behavior, Behavior};
use super::body::{drain, read_limited, BodyRead, DRAIN_CAP};
use super::channels::{CachedPush, ChannelState};
use super::faults::Faults;
use super::tokens::{media_type_is, TokenCheck};
use super::{RespBody, Shared};

/// Largest raw payload WNS accepts.
pub const MAX_PAYLOAD: usize = 5000;

// WNS header names (lowercase, as HTTP/2 requires).
const X_WNS_TYPE: HeaderName = HeaderName::from_static("x-wns-type");
const X_WNS_CACHE_POLICY: HeaderName = HeaderName::from_static("x-wns-cache-policy");
const X_WNS_TTL: HeaderName = HeaderName::from_static("x-wns-ttl");
const X_WNS_PRIORITY: HeaderName = HeaderName::from_static("x-wns-priority");
const X_WNS_REQUEST_FOR_STATUS: HeaderName = HeaderName::from_static("x-wns-requestforstatus");
const X_WNS_MSG_ID: HeaderName = HeaderName::from_static("x-wns-msg-id");
const X_WNS_DEBUG_TRACE: HeaderName = HeaderName::from_static("x-wns-debug-trace");
const X_WNS_STATUS: HeaderName = HeaderName::from_static("x-wns-status");
const X_WNS_NOTIFICATION_STATUS: HeaderName = HeaderName::from_static("x-wns-notificationstatus");
const X_WNS_DEVICE_STATUS: HeaderName = HeaderName::from_static("x-wns-deviceconnectionstatus");
const X_WNS_ERROR_DESCRIPTION: HeaderName = HeaderName::from_static("x-wns-error-description");
const X_WNS_CONTINUE_AFTER: HeaderName = HeaderName::from_static("x-wns-continue-after");
const MS_CV: HeaderName = HeaderName::from_static("ms-cv");

/// Everything that goes into a push response besides the per-request ids.
#[derive(Debug)]
struct Reply {
    /// HTTP status.
    status: StatusCode,
    /// `X-WNS-Error-Description`.
    description: Option<&'static str>,
    /// `WWW-Authenticate` (401 only).
    www_authenticate: Option<&'static str>,
    /// `X-WNS-Status` and `X-WNS-NotificationStatus` (200 only).
    wns_status: Option<&'static str>,
    /// `Retry-After` seconds.
    retry_after: Option<u64>,
    /// `X-WNS-CONTINUE-AFTER` seconds.
    continue_after: Option<u64>,
    /// `X-WNS-DeviceConnectionStatus` (when `X-WNS-RequestForStatus: true`).
    device_status: Option<&'static str>,
}

impl Reply {
    /// Just a status.
    fn status(status: StatusCode) -> Self {
        Self {
            status,
            description: None,
            www_authenticate: None,
            wns_status: None,
            retry_after: None,
            continue_after: None,
            device_status: None,
        }
    }

    /// An error status with its `X-WNS-Error-Description`.
    fn error(status: StatusCode, description: &'static str) -> Self {
        Self {
            description: Some(description),
            ..Self::status(status)
        }
    }

    /// 200 with this `X-WNS-Status`.
    fn ok(wns_status: &'static str) -> Self {
        Self {
            wns_status: Some(wns_status),
            ..Self::status(StatusCode::OK)
        }
    }
}

/// Optional WNS request headers, validated.
#[derive(Debug, Default)]
struct PushOptions {
    /// `X-WNS-Cache-Policy: cache`.
    cache: bool,
    /// `X-WNS-TTL` seconds.
    ttl: Option<u64>,
    /// `X-WNS-PRIORITY` (1..=4).
    priority: Option<u8>,
    /// `X-WNS-RequestForStatus: true`.
    request_for_status: bool,
}

/// Handles one request to the push endpoint.
pub(crate) async fn handle(
    shared: &Shared,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, super::InjectedReset> {
    let seq = shared.seq.fetch_add(1, Ordering::Relaxed) + 1;
    let (parts, body) = req.into_parts();
    let channel = parts.uri.query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
            .filter(|v| !v.is_empty())
    });
    let msg_id = shared.msg_id(seq);

    let (reply, slow) = match validate(shared, &parts, body).await {
        Err(reply) => {
            if let Some(ch) = &channel {
                shared.channels.with(ch, |s| s.count(reply.status.as_u16()));
            }
            (reply, None)
        }
        Ok((payload, opts)) => match &channel {
            None => (
                Reply::error(StatusCode::NOT_FOUND, "Missing channel token"),
                None,
            ),
            Some(ch) => {
                let behavior = parse_behavior(ch);
                let faults = shared.faults.current();
                if Faults::hit(faults.reset_rate) {
                    // Counted as status 0: the request arrived and got no answer.
                    shared.channels.with(ch, |state| state.count(0));
                    shared.stats.push(0);
                    return Err(super::InjectedReset);
                }
                // A stalled push is counted on arrival and answered late.
                let stall = Faults::hit(faults.stall_rate)
                    .then(|| Duration::from_millis(faults.stall_ms.min(600_000)));
                let injected = Faults::hit(faults.error_rate).then(|| {
                    let status = StatusCode::from_u16(faults.error_status)
                        .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                    Reply {
                        retry_after: faults.retry_after_s,
                        ..Reply::error(status, "Injected fault")
                    }
                });
                let now = Instant::now();
                let mut reply = shared.channels.with(ch, |state| {
                    let r = match injected {
                        Some(r) => r,
                        None => decide(behavior, state, &opts, payload, &msg_id, now),
                    };
                    state.count(r.status.as_u16());
                    r
                });
                if opts.request_for_status {
                    reply.device_status = Some(if behavior == Behavior::Offline {
                        "disconnected"
                    } else {
                        "connected"
                    });
                }
                let slow = match behavior {
                    Behavior::Slow(d) => Some(d),
                    _ => None,
                };
                let slow = stall.or(slow);
                (reply, slow)
            }
        },
    };
    shared.stats.push(reply.status.as_u16());
    if let Some(d) = slow {
        tokio::time::sleep(d).await;
    }
    let ms_cv = parts
        .headers
        .get(MS_CV)
        .cloned()
        .unwrap_or_else(generate_cv);
    Ok(build(reply, &msg_id, seq, ms_cv))
}

/// Steps 1–5 of the validation (see module docs). On success returns the payload.
async fn validate(
    shared: &Shared,
    parts: &Parts,
    body: Incoming,
) -> Result<(Bytes, PushOptions), Reply> {
    let has_expect = parts.headers.contains_key(header::EXPECT);
    match check_head(shared, parts) {
        Ok(()) => {}
        Err(reply) => {
            // With `Expect` the client waits for us and sends nothing more.
            if !has_expect && declared_len(&parts.headers).is_none_or(|n| n <= DRAIN_CAP as u64) {
                drain(body).await;
            }
            return Err(reply);
        }
    }
    // Step 4: the payload.
    if declared_len(&parts.headers).is_some_and(|n| n > DRAIN_CAP as u64) {
        return Err(Reply::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Payload exceeds 5000 bytes",
        ));
    }
    let payload = match read_limited(body, MAX_PAYLOAD).await {
        BodyRead::Complete(b) if b.is_empty() => {
            return Err(Reply::error(StatusCode::BAD_REQUEST, "Payload is empty"))
        }
        BodyRead::Complete(b) => b,
        BodyRead::TooLarge => {
            return Err(Reply::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Payload exceeds 5000 bytes",
            ))
        }
        BodyRead::Failed(why) => {
            tracing::debug!(%why, "push body read failed");
            return Err(Reply::error(
                StatusCode::BAD_REQUEST,
                "Could not read the request body",
            ));
        }
    };
    // Step 5: optional headers.
    let opts = parse_options(&parts.headers)?;
    Ok((payload, opts))
}

/// Steps 1–3: method, authorisation, mandatory headers.
fn check_head(shared: &Shared, parts: &Parts) -> Result<(), Reply> {
    let h = &parts.headers;
    if parts.method != Method::POST {
        return Err(Reply::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "Only POST is supported",
        ));
    }
    let bearer = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|t| !t.is_empty());
    let check = match bearer {
        Some(t) => shared.tokens.check(t),
        None => TokenCheck::Unknown,
    };
    match check {
        TokenCheck::Unknown => {
            return Err(Reply {
                www_authenticate: Some(
                    "Bearer error=\"invalid_request\",error_description=\"Invalid token\"",
                ),
                ..Reply::error(StatusCode::UNAUTHORIZED, "Invalid token")
            })
        }
        TokenCheck::Expired(t) => {
            tracing::trace!(app = %t.app_key, "push with an expired token");
            t.rate.record_push();
            return Err(Reply {
                www_authenticate: Some(
                    "Bearer error=\"invalid_request\",error_description=\"Token expired\"",
                ),
                ..Reply::error(StatusCode::UNAUTHORIZED, "Token expired")
            });
        }
        TokenCheck::Valid(t) => t.rate.record_push(),
    }
    let header_is = |name: &HeaderName, f: &dyn Fn(&str) -> bool| {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| f(v.trim()))
    };
    if !header_is(&X_WNS_TYPE, &|v| v.eq_ignore_ascii_case("wns/raw")) {
        return Err(Reply::error(
            StatusCode::BAD_REQUEST,
            "X-WNS-Type must be wns/raw",
        ));
    }
    if !header_is(&header::CONTENT_TYPE, &|v| {
        media_type_is(v, "application/octet-stream")
    }) {
        return Err(Reply::error(
            StatusCode::BAD_REQUEST,
            "Content-Type must be application/octet-stream",
        ));
    }
    if h.contains_key(header::TRANSFER_ENCODING) {
        return Err(Reply::error(
            StatusCode::BAD_REQUEST,
            "Transfer-Encoding (chunked) is not supported",
        ));
    }
    if h.contains_key(header::EXPECT) {
        return Err(Reply::error(
            StatusCode::BAD_REQUEST,
            "Expect header is not supported",
        ));
    }
    let http1 = parts.version < http::Version::HTTP_2;
    if http1 && !h.contains_key(header::HOST) {
        // RFC 9112 §3.2: a server answers 400 to an HTTP/1.1 request without Host.
        return Err(Reply::error(StatusCode::BAD_REQUEST, "Host is required"));
    }
    if http1 && !h.contains_key(header::CONTENT_LENGTH) {
        return Err(Reply::error(
            StatusCode::LENGTH_REQUIRED,
            "Content-Length is required",
        ));
    }
    Ok(())
}

/// Step 5: the optional WNS headers.
fn parse_options(h: &HeaderMap) -> Result<PushOptions, Reply> {
    fn get<'a>(
        h: &'a HeaderMap,
        name: &HeaderName,
        what: &'static str,
    ) -> Result<Option<&'a str>, Reply> {
        match h.get(name) {
            None => Ok(None),
            Some(v) => v
                .to_str()
                .map(|s| Some(s.trim()))
                .map_err(|_| Reply::error(StatusCode::BAD_REQUEST, what)),
        }
    }
    let mut opts = PushOptions::default();
    const CACHE: &str = "Invalid X-WNS-Cache-Policy (cache or no-cache)";
    if let Some(v) = get(h, &X_WNS_CACHE_POLICY, CACHE)? {
        opts.cache = if v.eq_ignore_ascii_case("cache") {
            true
        } else if v.eq_ignore_ascii_case("no-cache") {
            false
        } else {
            return Err(Reply::error(StatusCode::BAD_REQUEST, CACHE));
        };
    }
    const TTL: &str = "Invalid X-WNS-TTL (non-negative integer seconds)";
    if let Some(v) = get(h, &X_WNS_TTL, TTL)? {
        opts.ttl = Some(parse_digits(v).ok_or_else(|| Reply::error(StatusCode::BAD_REQUEST, TTL))?);
    }
    const PRIORITY: &str = "Invalid X-WNS-PRIORITY (1 to 4)";
    if let Some(v) = get(h, &X_WNS_PRIORITY, PRIORITY)? {
        match parse_digits(v) {
            Some(p @ 1..=4) => opts.priority = u8::try_from(p).ok(),
            _ => return Err(Reply::error(StatusCode::BAD_REQUEST, PRIORITY)),
        }
    }
    const RFS: &str = "Invalid X-WNS-RequestForStatus (true or false)";
    if let Some(v) = get(h, &X_WNS_REQUEST_FOR_STATUS, RFS)? {
        opts.request_for_status = if v.eq_ignore_ascii_case("true") {
            true
        } else if v.eq_ignore_ascii_case("false") {
            false
        } else {
            return Err(Reply::error(StatusCode::BAD_REQUEST, RFS));
        };
    }
    Ok(opts)
}

/// Plain ASCII decimal digits as a `u64`.
fn parse_digits(v: &str) -> Option<u64> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// The request's `Content-Length`, if present and numeric.
fn declared_len(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Applies `behavior` to a validated push, under the channel's lock.
fn decide(
    behavior: Behavior,
    state: &mut ChannelState,
    opts: &PushOptions,
    payload: Bytes,
    msg_id: &HeaderValue,
    now: Instant,
) -> Reply {
    match behavior {
        Behavior::Ok | Behavior::Slow(_) => Reply::ok("received"),
        Behavior::Offline if opts.cache => {
            let ttl = opts.ttl.map(std::time::Duration::from_secs);
            state.cached = Some(CachedPush {
                payload,
                msg_id: msg_id.to_str().unwrap_or_default().to_owned(),
                ttl,
                priority: opts.priority,
                received_at: SystemTime::now(),
                // A TTL too large to represent never expires in practice.
                expires_at: ttl.and_then(|t| now.checked_add(t)),
            });
            Reply::ok("received")
        }
        Behavior::Offline | Behavior::Dropped => Reply::ok("dropped"),
        Behavior::ChannelThrottled => Reply::ok("channelthrottled"),
        Behavior::Gone => Reply::error(StatusCode::GONE, "The channel expired"),
        Behavior::Invalid => Reply::error(StatusCode::NOT_FOUND, "The channel URL is not valid"),
        Behavior::OtherApp => Reply::error(
            StatusCode::FORBIDDEN,
            "Channel URL incompatible with caller app",
        ),
        Behavior::Throttle406(s) => Reply {
            retry_after: Some(s),
            ..Reply::error(StatusCode::NOT_ACCEPTABLE, "Throttle limit exceeded")
        },
        Behavior::Throttle429(s) => Reply {
            retry_after: Some(s),
            ..Reply::error(StatusCode::TOO_MANY_REQUESTS, "Too many requests")
        },
        Behavior::ContinueAfter(s) => Reply {
            continue_after: Some(s),
            ..Reply::error(StatusCode::NOT_ACCEPTABLE, "Throttle limit exceeded")
        },
        Behavior::Unavailable(s) => Reply {
            retry_after: s,
            ..Reply::error(StatusCode::SERVICE_UNAVAILABLE, "Service unavailable")
        },
        Behavior::Error => Reply::error(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error"),
        Behavior::Blocked => {
            Reply::error(StatusCode::GONE, "The domain of the application is blocked")
        }
        Behavior::BadRequest => Reply::error(StatusCode::BAD_REQUEST, "Bad request"),
        Behavior::Revoked => Reply {
            www_authenticate: Some(
                "Bearer error=\"invalid_request\",error_description=\"Invalid token\"",
            ),
            ..Reply::error(StatusCode::UNAUTHORIZED, "Invalid token")
        },
        Behavior::NotAllowed => Reply::error(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed"),
        Behavior::TooLarge => Reply::error(StatusCode::PAYLOAD_TOO_LARGE, "Payload too large"),
        Behavior::Flaky(n) => {
            state.flaky_seen = state.flaky_seen.saturating_add(1);
            if state.flaky_seen <= n {
                Reply::error(StatusCode::SERVICE_UNAVAILABLE, "Service unavailable")
            } else {
                Reply::ok("received")
            }
        }
        Behavior::ThrottleOnce(s) => {
            state.flaky_seen = state.flaky_seen.saturating_add(1);
            if state.flaky_seen == 1 {
                Reply {
                    retry_after: Some(s),
                    ..Reply::error(StatusCode::NOT_ACCEPTABLE, "Throttle limit exceeded")
                }
            } else {
                Reply::ok("received")
            }
        }
    }
}

/// A fresh correlation vector, `<22 alphanumerics>.0`.
fn generate_cv() -> HeaderValue {
    let mut s: String = (0..22).map(|_| fastrand::alphanumeric()).collect();
    s.push_str(".0");
    HeaderValue::try_from(s).unwrap_or(HeaderValue::from_static("AAAAAAAAAAAAAAAAAAAAAA.0"))
}

/// Turns a [`Reply`] into the response, adding the per-request ids.
fn build(reply: Reply, msg_id: &HeaderValue, seq: u64, ms_cv: HeaderValue) -> Response<RespBody> {
    let mut resp = Response::new(RespBody::default());
    *resp.status_mut() = reply.status;
    let h = resp.headers_mut();
    h.insert(X_WNS_MSG_ID, msg_id.clone());
    h.insert(
        X_WNS_DEBUG_TRACE,
        HeaderValue::from_str(&format!("EMU-{seq}")).unwrap_or(HeaderValue::from_static("EMU")),
    );
    h.insert(MS_CV, ms_cv);
    if let Some(s) = reply.wns_status {
        h.insert(X_WNS_STATUS, HeaderValue::from_static(s));
        h.insert(X_WNS_NOTIFICATION_STATUS, HeaderValue::from_static(s));
    }
    if let Some(s) = reply.device_status {
        h.insert(X_WNS_DEVICE_STATUS, HeaderValue::from_static(s));
    }
    if let Some(d) = reply.description {
        h.insert(X_WNS_ERROR_DESCRIPTION, HeaderValue::from_static(d));
    }
    if let Some(w) = reply.www_authenticate {
        h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(w));
    }
    if let Some(s) = reply.retry_after {
        h.insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    if let Some(s) = reply.continue_after {
        h.insert(X_WNS_CONTINUE_AFTER, HeaderValue::from(s));
    }
    if reply.status == StatusCode::METHOD_NOT_ALLOWED {
        h.insert(header::ALLOW, HeaderValue::from_static("POST"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse() {
        let mut h = HeaderMap::new();
        assert!(!parse_options(&h).unwrap().cache);
        h.insert(X_WNS_CACHE_POLICY, HeaderValue::from_static("Cache"));
        h.insert(X_WNS_TTL, HeaderValue::from_static("60"));
        h.insert(X_WNS_PRIORITY, HeaderValue::from_static("4"));
        h.insert(X_WNS_REQUEST_FOR_STATUS, HeaderValue::from_static("TRUE"));
        let o = parse_options(&h).unwrap();
        assert!(o.cache && o.request_for_status);
        assert_eq!((o.ttl, o.priority), (Some(60), Some(4)));
        for (name, bad) in [
            (X_WNS_CACHE_POLICY, "maybe"),
            (X_WNS_TTL, "-1"),
            (X_WNS_TTL, "1.5"),
            (X_WNS_PRIORITY, "0"),
            (X_WNS_PRIORITY, "5"),
            (X_WNS_REQUEST_FOR_STATUS, "yes"),
        ] {
            let mut h2 = h.clone();
            h2.insert(name.clone(), HeaderValue::from_static(bad));
            let err = parse_options(&h2).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{name}: {bad}");
        }
    }

    #[test]
    fn flaky_then_ok() {
        let mut st = ChannelState::default();
        let id = HeaderValue::from_static("0000000000000000");
        let opts = PushOptions::default();
        let now = Instant::now();
        let codes: Vec<u16> = (0..4)
            .map(|_| {
                decide(Behavior::Flaky(2), &mut st, &opts, Bytes::new(), &id, now)
                    .status
                    .as_u16()
            })
            .collect();
        assert_eq!(codes, vec![503, 503, 200, 200]);
    }
}
