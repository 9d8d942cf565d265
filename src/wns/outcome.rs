//! The one [`Outcome`] type: what happened to a wake, whether it may be retried,
//! and what the MDM server should do about the device.
//!
//! [`classify`] reads a WNS response (status and headers, sans IO) into an
//! [`OutcomeKind`]. Reports, metrics, retries and the MDM actions are all driven
//! from the kind, so there is exactly one place that knows what `410` means.

use std::fmt;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

/// Every way a wake can end (or pause, for the retryable kinds).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    /// 200, `X-WNS-Status: received`: WNS accepted the push (not a delivery receipt).
    Received,
    /// 200, `dropped`: WNS dropped it (offline without cache, or the client refused it).
    Dropped,
    /// 200, `channelthrottled`: the sender exceeded the rate for this channel; dropped.
    ChannelThrottled,
    /// 400: headers wrong or conflicting.
    BadRequest,
    /// 401 that survived one token refresh.
    Unauthorized,
    /// 403: the channel belongs to another app; PFN and credentials do not match.
    ChannelAppMismatch,
    /// 404: the channel URI is invalid or unknown to WNS.
    ChannelInvalid,
    /// 405: wrong method.
    MethodNotAllowed,
    /// 406: the sender exceeded its throttle limit.
    Throttled,
    /// 410: the channel expired.
    ChannelExpired,
    /// 410 with an error description saying the sending domain is blocked.
    DomainBlocked,
    /// 413: payload over 5000 bytes.
    PayloadTooLarge,
    /// 429: app throttled or monthly quota exceeded.
    RateLimited,
    /// 500.
    ServerError,
    /// 503.
    Unavailable,
    /// Any other HTTP status.
    UnexpectedStatus,
    /// TCP connect failed or was refused, or the connection broke before an answer.
    ConnectError,
    /// The TLS handshake failed (certificate or protocol).
    TlsError,
    /// No answer within the request timeout.
    Timeout,
    /// The HTTP exchange failed in another way (protocol error, stream reset).
    ProtocolError,
    /// The channel URI was refused before sending (outside WNS, malformed).
    InvalidChannel,
    /// The payload was refused before sending (empty or over 5000 bytes).
    InvalidPayload,
    /// The notification names a tenant the engine does not know.
    UnknownTenant,
    /// The input row could not be read (broken line, bad encoding, missing field).
    InvalidInput,
    /// Not pushed: the channel is known to be dead (410 before) or older than 30 days.
    ChannelStale,
    /// The token endpoint rejected the tenant's credentials.
    CredentialRejected,
    /// The token endpoint could not be reached or failed; retryable.
    TokenUnavailable,
    /// The notification's deadline or `not_after` passed before a final answer.
    Expired,
    /// The engine shut down before the notification was sent.
    ShutDown,
}

/// What the MDM server should do for the device after this outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MdmAction {
    /// Nothing: WNS accepted the wake.
    None,
    /// Not delivered now; the device's poll schedule still brings it in.
    WaitForPoll,
    /// 410: set `Push/PFN` again at the next sync session, then read `Push/ChannelURI`.
    ResetPfnAtNextSync,
    /// 404: stop pushing this channel; read `Push/ChannelURI` at the next session.
    RefreshChannelAtNextSync,
    /// 403: the PFN set on the device and the WNS credentials belong to different apps.
    FixPfnOrCredentials,
    /// 401 after a refresh, or the token endpoint refused the credentials.
    FixCredentials,
    /// 410 "domain blocked": WNS blocked this sender; stop pushing for the PFN.
    StopPushingForPfn,
    /// A retryable failure outlasted the retry budget; try the wake again later.
    RetryLater,
    /// 400/405/413 or a refused payload: the request itself is wrong (a bug or config error).
    FixRequest,
    /// The stored channel URI is not a WNS channel; read `Push/ChannelURI` again.
    FixChannelRecord,
    /// The tenant is not configured.
    FixConfig,
    /// The input row is malformed; fix the device list.
    FixInput,
}

impl MdmAction {
    /// A stable snake_case name for reports and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            MdmAction::None => "none",
            MdmAction::WaitForPoll => "wait_for_poll",
            MdmAction::ResetPfnAtNextSync => "reset_pfn_at_next_sync",
            MdmAction::RefreshChannelAtNextSync => "refresh_channel_at_next_sync",
            MdmAction::FixPfnOrCredentials => "fix_pfn_or_credentials",
            MdmAction::FixCredentials => "fix_credentials",
            MdmAction::StopPushingForPfn => "stop_pushing_for_pfn",
            MdmAction::RetryLater => "retry_later",
            MdmAction::FixRequest => "fix_request",
            MdmAction::FixChannelRecord => "fix_channel_record",
            MdmAction::FixConfig => "fix_config",
            MdmAction::FixInput => "fix_input",
        }
    }

    /// One sentence for people.
    pub fn describe(self) -> &'static str {
        match self {
            MdmAction::None => "nothing to do",
            MdmAction::WaitForPoll => "not delivered now; the device's poll schedule will bring it in",
            MdmAction::ResetPfnAtNextSync => {
                "channel expired: set Push/PFN again at the next sync session and read Push/ChannelURI"
            }
            MdmAction::RefreshChannelAtNextSync => {
                "channel invalid: stop pushing it and read Push/ChannelURI at the next session"
            }
            MdmAction::FixPfnOrCredentials => {
                "channel belongs to another app: the PFN on the device and the WNS credentials do not match"
            }
            MdmAction::FixCredentials => "WNS credentials rejected: check the Package SID / client id and secret",
            MdmAction::StopPushingForPfn => "WNS blocked this sender: stop pushing for this PFN",
            MdmAction::RetryLater => "temporary failure outlasted the retry budget: wake again later",
            MdmAction::FixRequest => "the request was refused as malformed: a configuration or code error",
            MdmAction::FixChannelRecord => "the stored channel URI is not a WNS channel: read Push/ChannelURI again",
            MdmAction::FixConfig => "the tenant is not configured",
            MdmAction::FixInput => "the input row is malformed: fix the device list",
        }
    }
}

impl fmt::Display for MdmAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl OutcomeKind {
    /// All kinds, in declaration order (for metrics tables and reports).
    pub const ALL: [OutcomeKind; 29] = [
        OutcomeKind::Received,
        OutcomeKind::Dropped,
        OutcomeKind::ChannelThrottled,
        OutcomeKind::BadRequest,
        OutcomeKind::Unauthorized,
        OutcomeKind::ChannelAppMismatch,
        OutcomeKind::ChannelInvalid,
        OutcomeKind::MethodNotAllowed,
        OutcomeKind::Throttled,
        OutcomeKind::ChannelExpired,
        OutcomeKind::DomainBlocked,
        OutcomeKind::PayloadTooLarge,
        OutcomeKind::RateLimited,
        OutcomeKind::ServerError,
        OutcomeKind::Unavailable,
        OutcomeKind::UnexpectedStatus,
        OutcomeKind::ConnectError,
        OutcomeKind::TlsError,
        OutcomeKind::Timeout,
        OutcomeKind::ProtocolError,
        OutcomeKind::InvalidChannel,
        OutcomeKind::InvalidPayload,
        OutcomeKind::UnknownTenant,
        OutcomeKind::InvalidInput,
        OutcomeKind::ChannelStale,
        OutcomeKind::CredentialRejected,
        OutcomeKind::TokenUnavailable,
        OutcomeKind::Expired,
        OutcomeKind::ShutDown,
    ];

    /// Index into [`OutcomeKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// A stable snake_case name for reports and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Received => "received",
            OutcomeKind::Dropped => "dropped",
            OutcomeKind::ChannelThrottled => "channel_throttled",
            OutcomeKind::BadRequest => "bad_request",
            OutcomeKind::Unauthorized => "unauthorized",
            OutcomeKind::ChannelAppMismatch => "channel_app_mismatch",
            OutcomeKind::ChannelInvalid => "channel_invalid",
            OutcomeKind::MethodNotAllowed => "method_not_allowed",
            OutcomeKind::Throttled => "throttled",
            OutcomeKind::ChannelExpired => "channel_expired",
            OutcomeKind::DomainBlocked => "domain_blocked",
            OutcomeKind::PayloadTooLarge => "payload_too_large",
            OutcomeKind::RateLimited => "rate_limited",
            OutcomeKind::ServerError => "server_error",
            OutcomeKind::Unavailable => "unavailable",
            OutcomeKind::UnexpectedStatus => "unexpected_status",
            OutcomeKind::ConnectError => "connect_error",
            OutcomeKind::TlsError => "tls_error",
            OutcomeKind::Timeout => "timeout",
            OutcomeKind::ProtocolError => "protocol_error",
            OutcomeKind::InvalidChannel => "invalid_channel",
            OutcomeKind::InvalidPayload => "invalid_payload",
            OutcomeKind::UnknownTenant => "unknown_tenant",
            OutcomeKind::InvalidInput => "invalid_input",
            OutcomeKind::ChannelStale => "channel_stale",
            OutcomeKind::CredentialRejected => "credential_rejected",
            OutcomeKind::TokenUnavailable => "token_unavailable",
            OutcomeKind::Expired => "expired",
            OutcomeKind::ShutDown => "shut_down",
        }
    }

    /// True when sending the same wake again later may give a better answer.
    /// The engine retries these (with backoff, within the attempt and time budget);
    /// every other kind is final and never retried.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            OutcomeKind::Throttled
                | OutcomeKind::RateLimited
                | OutcomeKind::ServerError
                | OutcomeKind::Unavailable
                | OutcomeKind::ConnectError
                | OutcomeKind::TlsError
                | OutcomeKind::Timeout
                | OutcomeKind::ProtocolError
                | OutcomeKind::TokenUnavailable
        )
    }

    /// True when WNS accepted the wake.
    pub fn is_success(self) -> bool {
        self == OutcomeKind::Received
    }

    /// What the MDM server should do when this is the final outcome.
    pub fn mdm_action(self) -> MdmAction {
        use OutcomeKind::*;
        match self {
            Received => MdmAction::None,
            Dropped | ChannelThrottled => MdmAction::WaitForPoll,
            ChannelExpired | ChannelStale => MdmAction::ResetPfnAtNextSync,
            ChannelInvalid => MdmAction::RefreshChannelAtNextSync,
            ChannelAppMismatch => MdmAction::FixPfnOrCredentials,
            Unauthorized | CredentialRejected => MdmAction::FixCredentials,
            DomainBlocked => MdmAction::StopPushingForPfn,
            BadRequest | MethodNotAllowed | PayloadTooLarge | InvalidPayload | UnexpectedStatus => {
                MdmAction::FixRequest
            }
            InvalidChannel => MdmAction::FixChannelRecord,
            UnknownTenant => MdmAction::FixConfig,
            InvalidInput => MdmAction::FixInput,
            Throttled | RateLimited | ServerError | Unavailable | ConnectError | TlsError
            | Timeout | ProtocolError | TokenUnavailable | Expired | ShutDown => {
                MdmAction::RetryLater
            }
        }
    }
}

impl std::str::FromStr for OutcomeKind {
    type Err = String;
    /// Reads a name written by [`OutcomeKind::as_str`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OutcomeKind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown outcome {s:?}"))
    }
}

impl fmt::Display for OutcomeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The WNS diagnostic headers of a response. Values are shared with the response
/// buffer (cloning is cheap). WNS asks for msg-id, debug-trace and MS-CV in any
/// support case.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct WnsHeaders {
    /// `X-WNS-Msg-ID`.
    pub msg_id: Option<HeaderValue>,
    /// `X-WNS-Debug-Trace`.
    pub debug_trace: Option<HeaderValue>,
    /// `MS-CV` as echoed or generated by WNS.
    pub ms_cv: Option<HeaderValue>,
    /// `X-WNS-Error-Description`.
    pub error_description: Option<HeaderValue>,
    /// `X-WNS-DeviceConnectionStatus` (only with `X-WNS-RequestForStatus: true`).
    pub device_connection_status: Option<HeaderValue>,
    /// `X-WNS-Status`, or `X-WNS-NotificationStatus` when the former is absent.
    pub notification_status: Option<HeaderValue>,
}

fn text(v: &Option<HeaderValue>) -> Option<&str> {
    v.as_ref().and_then(|v| v.to_str().ok())
}

static X_WNS_CONTINUE_AFTER: HeaderName = HeaderName::from_static("x-wns-continue-after");

impl WnsHeaders {
    /// Picks the WNS headers out of a response (names are case-insensitive).
    pub fn from_headers(h: &HeaderMap) -> Self {
        // One pass over the answer's few headers (names are stored lowercase)
        // instead of a hashed lookup per name; the first value of a name wins,
        // as with `HeaderMap::get`.
        let mut w = WnsHeaders::default();
        let mut legacy_status = None;
        for (name, value) in h {
            let slot = match name.as_str() {
                "x-wns-msg-id" => &mut w.msg_id,
                "x-wns-debug-trace" => &mut w.debug_trace,
                "ms-cv" => &mut w.ms_cv,
                "x-wns-error-description" => &mut w.error_description,
                "x-wns-deviceconnectionstatus" => &mut w.device_connection_status,
                "x-wns-status" => &mut w.notification_status,
                "x-wns-notificationstatus" => &mut legacy_status,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(value.clone());
            }
        }
        if w.notification_status.is_none() {
            w.notification_status = legacy_status;
        }
        w
    }
    /// `X-WNS-Msg-ID` as text.
    pub fn msg_id(&self) -> Option<&str> {
        text(&self.msg_id)
    }
    /// `X-WNS-Debug-Trace` as text.
    pub fn debug_trace(&self) -> Option<&str> {
        text(&self.debug_trace)
    }
    /// `MS-CV` as text.
    pub fn ms_cv(&self) -> Option<&str> {
        text(&self.ms_cv)
    }
    /// `X-WNS-Error-Description` as text.
    pub fn error_description(&self) -> Option<&str> {
        text(&self.error_description)
    }
    /// `X-WNS-DeviceConnectionStatus` as text.
    pub fn device_connection_status(&self) -> Option<&str> {
        text(&self.device_connection_status)
    }
    /// `X-WNS-Status` (or the older `X-WNS-NotificationStatus`) as text.
    pub fn notification_status(&self) -> Option<&str> {
        text(&self.notification_status)
    }
}

impl fmt::Debug for WnsHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("WnsHeaders");
        for (k, v) in [
            ("msg_id", self.msg_id()),
            ("debug_trace", self.debug_trace()),
            ("ms_cv", self.ms_cv()),
            ("error_description", self.error_description()),
            ("device_connection_status", self.device_connection_status()),
            ("notification_status", self.notification_status()),
        ] {
            if let Some(v) = v {
                d.field(k, &v);
            }
        }
        d.finish()
    }
}

/// One classified WNS answer (one attempt).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    /// What the answer means.
    pub kind: OutcomeKind,
    /// The HTTP status.
    pub status: u16,
    /// Wait this long before retrying: `Retry-After`, else `X-WNS-CONTINUE-AFTER`.
    pub retry_after: Option<Duration>,
    /// The WNS diagnostic headers.
    pub wns: WnsHeaders,
    /// A 401 whose `WWW-Authenticate` says the token expired (for logs; any 401 refreshes).
    pub token_expired: bool,
}

/// Longest `Retry-After` honoured; a larger value is capped (and usually outlasts
/// the notification's deadline, so it ends as `RetryLater`).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Reads `Retry-After` (delta-seconds only; WNS sends seconds) or `X-WNS-CONTINUE-AFTER`.
pub fn retry_after(h: &HeaderMap) -> Option<Duration> {
    let secs = |n: &HeaderName| {
        h.get(n)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER))
    };
    secs(&http::header::RETRY_AFTER).or_else(|| secs(&X_WNS_CONTINUE_AFTER))
}

/// Classifies one WNS response, sans IO.
pub fn classify(status: StatusCode, headers: &HeaderMap) -> Classified {
    use OutcomeKind::*;
    let wns = WnsHeaders::from_headers(headers);
    let code = status.as_u16();
    let kind = match code {
        200 => match wns.notification_status().map(str::trim) {
            Some(s) if s.eq_ignore_ascii_case("dropped") => Dropped,
            Some(s) if s.eq_ignore_ascii_case("channelthrottled") => ChannelThrottled,
            // "received", or absent: a 200 without a status header is WNS accepting it.
            _ => Received,
        },
        400 => BadRequest,
        401 => Unauthorized,
        403 => ChannelAppMismatch,
        404 => ChannelInvalid,
        405 => MethodNotAllowed,
        406 => Throttled,
        410 => {
            let blocked = wns
                .error_description()
                .is_some_and(|d| d.to_ascii_lowercase().contains("blocked"));
            if blocked {
                DomainBlocked
            } else {
                ChannelExpired
            }
        }
        413 => PayloadTooLarge,
        429 => RateLimited,
        500 => ServerError,
        503 => Unavailable,
        502 | 504 => Unavailable,
        _ => UnexpectedStatus,
    };
    let token_expired = code == 401
        && headers
            .get(http::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("Token expired"));
    Classified {
        kind,
        status: code,
        // A success has nothing to wait for (and skips two lookups).
        retry_after: if status.is_success() {
            None
        } else {
            retry_after(headers)
        },
        wns,
        token_expired,
    }
}

/// The final result of one wake: the one type reports, metrics, retries and MDM
/// actions are driven from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// What happened.
    pub kind: OutcomeKind,
    /// HTTP status of the last answer, if there was one.
    pub status: Option<u16>,
    /// WNS diagnostic headers of the last answer.
    pub wns: WnsHeaders,
    /// `Retry-After` of the last answer.
    pub retry_after: Option<Duration>,
    /// How many requests were sent (0 when refused before sending).
    pub attempts: u32,
    /// From submission to the final outcome.
    pub latency: Duration,
    /// A human-readable detail (the reason for a refusal, or the transport error).
    pub detail: Option<String>,
    /// True when this wake was merged into another wake for the same channel.
    pub coalesced: bool,
    /// Every response header, when the notification asked for them.
    pub response_headers: Option<Box<HeaderMap>>,
    /// True when the wake ended because its token endpoint or WNS host was
    /// down: no token could be had, or it met an open breaker. Nothing was
    /// delivered, so sending it again later is safe (a campaign leaves it for
    /// the next run).
    pub endpoint_down: bool,
}

impl Outcome {
    /// An outcome with no HTTP answer behind it (refusals, transport errors, shutdown).
    pub fn local(kind: OutcomeKind, detail: impl Into<String>) -> Self {
        Outcome {
            kind,
            status: None,
            wns: WnsHeaders::default(),
            retry_after: None,
            attempts: 0,
            latency: Duration::ZERO,
            detail: Some(detail.into()),
            coalesced: false,
            response_headers: None,
            endpoint_down: false,
        }
    }

    /// An outcome from a classified answer.
    pub fn from_classified(c: Classified) -> Self {
        let detail = c.wns.error_description().map(str::to_string);
        Outcome {
            kind: c.kind,
            status: Some(c.status),
            wns: c.wns,
            retry_after: c.retry_after,
            attempts: 0,
            latency: Duration::ZERO,
            detail,
            coalesced: false,
            response_headers: None,
            endpoint_down: false,
        }
    }

    /// What the MDM server should do.
    pub fn mdm_action(&self) -> MdmAction {
        self.kind.mdm_action()
    }

    /// True when the engine will not retry this outcome.
    pub fn is_final(&self) -> bool {
        !self.kind.is_retryable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn kind(code: u16, pairs: &[(&str, &str)]) -> OutcomeKind {
        classify(StatusCode::from_u16(code).unwrap(), &headers(pairs)).kind
    }

    #[test]
    fn status_200_reads_x_wns_status_then_fallback() {
        use OutcomeKind::*;
        assert_eq!(kind(200, &[("X-WNS-Status", "received")]), Received);
        assert_eq!(kind(200, &[("x-wns-status", "dropped")]), Dropped);
        assert_eq!(
            kind(200, &[("X-WNS-STATUS", "channelthrottled")]),
            ChannelThrottled
        );
        assert_eq!(
            kind(200, &[("X-WNS-NotificationStatus", "dropped")]),
            Dropped
        );
        assert_eq!(
            kind(
                200,
                &[
                    ("X-WNS-Status", "received"),
                    ("X-WNS-NotificationStatus", "dropped")
                ]
            ),
            Received
        );
        assert_eq!(kind(200, &[]), Received);
    }

    #[test]
    fn every_documented_status() {
        use OutcomeKind::*;
        for (code, want) in [
            (400, BadRequest),
            (401, Unauthorized),
            (403, ChannelAppMismatch),
            (404, ChannelInvalid),
            (405, MethodNotAllowed),
            (406, Throttled),
            (410, ChannelExpired),
            (413, PayloadTooLarge),
            (429, RateLimited),
            (500, ServerError),
            (503, Unavailable),
            (418, UnexpectedStatus),
        ] {
            assert_eq!(kind(code, &[]), want, "{code}");
        }
        assert_eq!(
            kind(410, &[("X-WNS-Error-Description", "Domain Blocked")]),
            DomainBlocked
        );
    }

    #[test]
    fn final_versus_retryable_and_actions() {
        use OutcomeKind::*;
        for k in [
            Received,
            Dropped,
            ChannelThrottled,
            BadRequest,
            ChannelAppMismatch,
            ChannelInvalid,
            ChannelExpired,
            PayloadTooLarge,
            InvalidChannel,
            CredentialRejected,
            Unauthorized,
        ] {
            assert!(!k.is_retryable(), "{k}");
        }
        for k in [
            Throttled,
            RateLimited,
            ServerError,
            Unavailable,
            ConnectError,
            Timeout,
            TokenUnavailable,
        ] {
            assert!(k.is_retryable(), "{k}");
        }
        assert_eq!(ChannelExpired.mdm_action(), MdmAction::ResetPfnAtNextSync);
        assert_eq!(
            ChannelInvalid.mdm_action(),
            MdmAction::RefreshChannelAtNextSync
        );
        assert_eq!(
            ChannelAppMismatch.mdm_action(),
            MdmAction::FixPfnOrCredentials
        );
        assert!(ChannelExpired.mdm_action().describe().contains("Push/PFN"));
        for (i, k) in OutcomeKind::ALL.iter().enumerate() {
            assert_eq!(k.index(), i);
        }
    }

    #[test]
    fn retry_after_and_continue_after() {
        let c = classify(
            StatusCode::from_u16(429).unwrap(),
            &headers(&[("Retry-After", "7")]),
        );
        assert_eq!(c.retry_after, Some(Duration::from_secs(7)));
        let c = classify(
            StatusCode::from_u16(406).unwrap(),
            &headers(&[("X-WNS-CONTINUE-AFTER", "3")]),
        );
        assert_eq!(c.retry_after, Some(Duration::from_secs(3)));
        let c = classify(
            StatusCode::from_u16(503).unwrap(),
            &headers(&[("Retry-After", "Wed, 21 Oct 2015 07:28:00 GMT")]),
        );
        assert_eq!(c.retry_after, None);
        let c = classify(
            StatusCode::from_u16(503).unwrap(),
            &headers(&[("Retry-After", "99999999999")]),
        );
        assert_eq!(c.retry_after, Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn carries_diagnostic_headers() {
        let c = classify(
            StatusCode::OK,
            &headers(&[
                ("X-WNS-MSG-ID", "3CE38FF109E03A74"),
                ("X-WNS-DEBUG-TRACE", "DB3WNS4011534"),
                ("MS-CV", "abc.0"),
                ("X-WNS-DEVICECONNECTIONSTATUS", "connected"),
                ("X-WNS-STATUS", "received"),
            ]),
        );
        assert_eq!(c.wns.msg_id(), Some("3CE38FF109E03A74"));
        assert_eq!(c.wns.debug_trace(), Some("DB3WNS4011534"));
        assert_eq!(c.wns.ms_cv(), Some("abc.0"));
        assert_eq!(c.wns.device_connection_status(), Some("connected"));
        let c = classify(
            StatusCode::UNAUTHORIZED,
            &headers(&[(
                "WWW-Authenticate",
                "Bearer error=\"invalid_request\",error_description=\"Token expired\"",
            )]),
        );
        assert!(c.token_expired);
        let o = Outcome::from_classified(classify(
            StatusCode::FORBIDDEN,
            &headers(&[(
                "X-WNS-Error-Description",
                "Channel URL incompatible with caller app",
            )]),
        ));
        assert_eq!(
            o.detail.as_deref(),
            Some("Channel URL incompatible with caller app")
        );
        assert!(o.is_final());
    }
}
