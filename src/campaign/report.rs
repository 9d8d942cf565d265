//! The per-device report row: one JSON object per line, the same shape for a
//! campaign report, the queue consumer's results and the HTTP API. It is built
//! from an [`Outcome`], so it says exactly what the engine decided.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::wns::{MdmAction, Outcome, OutcomeKind};

/// The report schema version (the `v` field).
pub const REPORT_VERSION: u32 = 1;

/// One device's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportRow {
    /// Schema version.
    #[serde(default = "one")]
    pub v: u32,
    /// Input line number (campaigns only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// The caller's device id (absent when the row could not be read far enough).
    pub device_id: Option<String>,
    /// The tenant named by the input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The channel URI as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_uri: Option<String>,
    /// [`OutcomeKind::as_str`].
    pub outcome: String,
    /// HTTP status of the last answer.
    pub status: Option<u16>,
    /// [`MdmAction::as_str`].
    pub action: String,
    /// Requests sent for this wake.
    pub attempts: u32,
    /// True when this device shared a push with another device of the same channel.
    #[serde(default)]
    pub coalesced: bool,
    /// `X-WNS-Msg-ID`.
    pub msg_id: Option<String>,
    /// `X-WNS-Debug-Trace`.
    pub debug_trace: Option<String>,
    /// `MS-CV`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ms_cv: Option<String>,
    /// `X-WNS-DeviceConnectionStatus`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_connection_status: Option<String>,
    /// `Retry-After`, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
    /// The reason (refusal, transport error, `X-WNS-Error-Description`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Milliseconds from submission to the final outcome.
    pub latency_ms: f64,
    /// When the outcome was final (RFC 3339, UTC).
    pub at: String,
}

fn one() -> u32 {
    REPORT_VERSION
}

/// Who the row is about.
#[derive(Debug, Clone, Default)]
pub struct RowSubject<'a> {
    /// Input line.
    pub line: Option<u64>,
    /// Device id.
    pub device_id: Option<&'a str>,
    /// Tenant.
    pub tenant: Option<&'a str>,
    /// Channel URI.
    pub channel_uri: Option<&'a str>,
}

impl ReportRow {
    /// The row for `outcome`.
    pub fn new(subject: RowSubject<'_>, outcome: &Outcome) -> Self {
        ReportRow {
            v: REPORT_VERSION,
            line: subject.line,
            device_id: subject.device_id.map(str::to_string),
            tenant: subject.tenant.map(str::to_string),
            channel_uri: subject.channel_uri.map(str::to_string),
            outcome: outcome.kind.as_str().to_string(),
            status: outcome.status,
            action: outcome.mdm_action().as_str().to_string(),
            attempts: outcome.attempts,
            coalesced: outcome.coalesced,
            msg_id: outcome.wns.msg_id().map(str::to_string),
            debug_trace: outcome.wns.debug_trace().map(str::to_string),
            ms_cv: outcome.wns.ms_cv().map(str::to_string),
            device_connection_status: outcome.wns.device_connection_status().map(str::to_string),
            retry_after_s: outcome.retry_after.map(|d| d.as_secs()),
            detail: outcome.detail.clone(),
            latency_ms: (outcome.latency.as_secs_f64() * 1e6).round() / 1e3,
            at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        }
    }

    /// The outcome kind, if the name is known.
    pub fn kind(&self) -> Option<OutcomeKind> {
        self.outcome.parse().ok()
    }

    /// The MDM action, derived from the outcome kind.
    pub fn mdm_action(&self) -> Option<MdmAction> {
        self.kind().map(OutcomeKind::mdm_action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn row_round_trips_and_names_the_action() {
        let mut o = Outcome::local(OutcomeKind::ChannelExpired, "gone");
        o.status = Some(410);
        o.attempts = 1;
        o.latency = Duration::from_micros(12_345);
        let row = ReportRow::new(
            RowSubject {
                line: Some(3),
                device_id: Some("d1"),
                tenant: Some("t"),
                channel_uri: Some("https://x.notify.windows.com/?token=a"),
            },
            &o,
        );
        let text = serde_json::to_string(&row).unwrap();
        assert!(
            text.contains("\"action\":\"reset_pfn_at_next_sync\""),
            "{text}"
        );
        assert!(text.contains("\"latency_ms\":12.345"), "{text}");
        let back: ReportRow = serde_json::from_str(&text).unwrap();
        assert_eq!(back, row);
        assert_eq!(back.kind(), Some(OutcomeKind::ChannelExpired));
    }
}
