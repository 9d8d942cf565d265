//! The versioned wake request (schema v1) that the queue consumer reads from
//! JetStream and the HTTP API reads from `POST /v1/wakes`, and the result row
//! both write back.
//!
//! This module owns the wire format: parsing with a precise error path
//! (`not_after`, `wakes[3].tenant`), the bounds on every field, and the turn of a
//! valid request into a [`Notification`]. The schema is documented in
//! `docs/QUEUE.md` and as JSON Schema in `docs/wake-request.v1.schema.json`.
//!
//! ```json
//! {"v": 1, "device_id": "dev-42", "tenant": "contoso",
//!  "channel_uri": "https://db5p.notify.windows.com/?token=AwYAAAB...",
//!  "ttl_s": 3600, "idempotency_key": "wake-2024-06-01-dev-42",
//!  "not_after": "2024-06-01T12:00:00Z"}
//! ```
//!
//! A request that is not valid JSON, breaks the schema (a missing or unknown
//! field, a wrong type, an unknown `v`, a field over its bound) is *malformed*:
//! the consumer dead-letters it, the HTTP API answers 400. A well-formed request
//! whose channel URI is not a WNS channel is *not* malformed: it gets the final
//! outcome `invalid_channel`, because that is news for the MDM server.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::campaign::report::{ReportRow, RowSubject};
use crate::engine::Notification;
use crate::wns::{ChannelUri, Outcome, OutcomeKind, PushOptions};

/// The schema version this build reads and writes.
pub const WAKE_REQUEST_VERSION: u32 = 1;
/// Largest encoded wake request (one queue message) in bytes.
pub const MAX_WAKE_REQUEST_BYTES: usize = 64 * 1024;
/// Longest `device_id`, `tenant` and `idempotency_key`, in characters.
pub const MAX_ID_LEN: usize = 256;
/// Largest `ttl_s` (30 days).
pub const MAX_TTL_S: u64 = 30 * 24 * 3600;

/// One wake request, schema v1, as it is on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WakeRequest {
    /// Schema version; absent means 1. Any other value is refused.
    #[serde(default = "v1")]
    pub v: u32,
    /// The caller's id for the device (1..=256 characters, not only spaces, no
    /// control characters); echoed in the result.
    pub device_id: String,
    /// The device's WNS channel URI (`Push/ChannelURI`).
    pub channel_uri: String,
    /// The configured tenant whose credentials and rate limit to use.
    pub tenant: String,
    /// `X-WNS-TTL` for this wake, seconds (overrides `[push] ttl_s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_s: Option<u64>,
    /// The caller's key for deduplication; results carry it and the queue
    /// consumer uses it as the results' `Nats-Msg-Id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Do not push after this instant (RFC 3339, e.g. `2024-06-01T12:00:00Z`
    /// or with an offset `+02:00`); the outcome is then `expired`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
}

fn v1() -> u32 {
    WAKE_REQUEST_VERSION
}

/// Why a wake request is malformed, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}{}", path_prefix(.path), position(.line, .column))]
pub struct MalformedWake {
    /// The JSON path of the offending value (`not_after`, `wakes[3].tenant`), when known.
    pub path: Option<String>,
    /// What is wrong.
    pub message: String,
    /// 1-based line of the JSON text, for syntax and type errors.
    pub line: Option<usize>,
    /// 1-based column of the JSON text.
    pub column: Option<usize>,
}

fn path_prefix(p: &Option<String>) -> String {
    p.as_ref().map(|p| format!("{p}: ")).unwrap_or_default()
}

fn position(l: &Option<usize>, c: &Option<usize>) -> String {
    match (l, c) {
        (Some(l), Some(c)) => format!(" (line {l}, column {c})"),
        _ => String::new(),
    }
}

impl MalformedWake {
    fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        MalformedWake {
            path: Some(path.into()),
            message: message.into(),
            line: None,
            column: None,
        }
    }

    /// The same error with `prefix` put before its path (`wakes[3]` + `tenant`).
    pub fn under(mut self, prefix: &str) -> Self {
        self.path = Some(match self.path.take() {
            Some(p) if p.starts_with('[') => format!("{prefix}{p}"),
            Some(p) if !p.is_empty() && p != "." => format!("{prefix}.{p}"),
            _ => prefix.to_string(),
        });
        self
    }
}

/// Parses JSON text; a syntax error says its line and column.
pub fn parse_json_text(bytes: &[u8]) -> Result<serde_json::Value, MalformedWake> {
    serde_json::from_slice(bytes).map_err(|e| MalformedWake {
        path: None,
        message: strip_position(&e.to_string()),
        line: (e.line() > 0).then_some(e.line()),
        column: (e.column() > 0).then_some(e.column()),
    })
}

/// Deserializes a JSON value as `T`; an error names the JSON path of the value.
pub fn from_value_with_path<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
) -> Result<T, MalformedWake> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        MalformedWake {
            path: (path != ".").then_some(path),
            message: strip_position(&e.into_inner().to_string()),
            line: None,
            column: None,
        }
    })
}

/// serde_json puts " at line L column C" at the end of its messages; the
/// position is kept in its own fields instead.
fn strip_position(m: &str) -> String {
    match m.rfind(" at line ") {
        Some(i) => m[..i].to_string(),
        None => m.to_string(),
    }
}

impl WakeRequest {
    /// A v1 request with the three required fields.
    pub fn new(
        device_id: impl Into<String>,
        channel_uri: impl Into<String>,
        tenant: impl Into<String>,
    ) -> Self {
        WakeRequest {
            v: WAKE_REQUEST_VERSION,
            device_id: device_id.into(),
            channel_uri: channel_uri.into(),
            tenant: tenant.into(),
            ttl_s: None,
            idempotency_key: None,
            not_after: None,
        }
    }

    /// Parses and validates one request (a queue message body).
    pub fn from_json(bytes: &[u8]) -> Result<WakeRequest, MalformedWake> {
        if bytes.len() > MAX_WAKE_REQUEST_BYTES {
            return Err(MalformedWake {
                path: None,
                message: format!(
                    "the message is {} bytes; the limit is {MAX_WAKE_REQUEST_BYTES}",
                    bytes.len()
                ),
                line: None,
                column: None,
            });
        }
        Self::from_value(parse_json_text(bytes)?)
    }

    /// Validates one request given as a JSON value (an item of an HTTP batch).
    pub fn from_value(value: serde_json::Value) -> Result<WakeRequest, MalformedWake> {
        let Some(obj) = value.as_object() else {
            return Err(MalformedWake {
                path: None,
                message: format!("expected a JSON object, found {}", json_type(&value)),
                line: None,
                column: None,
            });
        };
        // `v` is checked before the rest, so that a future version with other
        // fields is reported as an unknown version, not as an unknown field.
        if let Some(v) = obj.get("v") {
            if v.as_u64() != Some(u64::from(WAKE_REQUEST_VERSION)) {
                return Err(MalformedWake::at(
                    "v",
                    format!("unknown schema version {v}; this build reads v{WAKE_REQUEST_VERSION}"),
                ));
            }
        }
        // Optional fields are left out, never null: the schema has no nulls.
        if let Some(k) = ["v", "ttl_s", "idempotency_key", "not_after"]
            .iter()
            .find(|k| obj.get(**k).is_some_and(serde_json::Value::is_null))
        {
            return Err(MalformedWake::at(
                *k,
                "must not be null; leave the field out instead",
            ));
        }
        let req: WakeRequest = from_value_with_path(value)?;
        req.validate()?;
        Ok(req)
    }

    /// Checks every bound of the schema; see the module docs.
    pub fn validate(&self) -> Result<(), MalformedWake> {
        if self.v != WAKE_REQUEST_VERSION {
            return Err(MalformedWake::at(
                "v",
                format!(
                    "unknown schema version {}; this build reads v{WAKE_REQUEST_VERSION}",
                    self.v
                ),
            ));
        }
        check_id("device_id", &self.device_id)?;
        check_id("tenant", &self.tenant)?;
        if self.channel_uri.is_empty() {
            return Err(MalformedWake::at("channel_uri", "is empty"));
        }
        if self.channel_uri.len() > crate::wns::channel::MAX_CHANNEL_URI_LEN {
            return Err(MalformedWake::at(
                "channel_uri",
                format!(
                    "is longer than {} bytes",
                    crate::wns::channel::MAX_CHANNEL_URI_LEN
                ),
            ));
        }
        if let Some(k) = &self.idempotency_key {
            check_id("idempotency_key", k)?;
            if k.bytes().any(|b| !(0x21..=0x7e).contains(&b)) {
                return Err(MalformedWake::at(
                    "idempotency_key",
                    "must be printable ASCII without spaces",
                ));
            }
        }
        if let Some(t) = self.ttl_s {
            if t == 0 || t > MAX_TTL_S {
                return Err(MalformedWake::at(
                    "ttl_s",
                    format!("must be between 1 and {MAX_TTL_S}"),
                ));
            }
        }
        self.not_after_time()?;
        Ok(())
    }

    /// `not_after` as a time.
    pub fn not_after_time(&self) -> Result<Option<SystemTime>, MalformedWake> {
        self.not_after
            .as_deref()
            .map(|s| parse_rfc3339(s).map_err(|m| MalformedWake::at("not_after", m)))
            .transpose()
    }

    /// The notification to submit, with `defaults` for the push options. A
    /// channel URI outside WNS gives the final `invalid_channel` outcome instead.
    pub fn to_notification(&self, defaults: &PushOptions) -> Result<Notification, Box<Outcome>> {
        let channel = ChannelUri::parse(&self.channel_uri)
            .map_err(|e| Box::new(Outcome::local(OutcomeKind::InvalidChannel, e.to_string())))?;
        let mut n = Notification::wake(Arc::<str>::from(self.tenant.as_str()), channel);
        n.options = defaults.clone();
        if let Some(t) = self.ttl_s {
            n.options.ttl = Some(Duration::from_secs(t));
        }
        n.not_after = self.not_after_time().ok().flatten();
        Ok(n)
    }

    /// Who a result row is about.
    pub fn subject(&self) -> RowSubject<'_> {
        RowSubject {
            line: None,
            device_id: Some(&self.device_id),
            tenant: Some(&self.tenant),
            channel_uri: Some(&self.channel_uri),
        }
    }
}

/// The JSON type name of a value, for error messages.
pub fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn check_id(field: &str, v: &str) -> Result<(), MalformedWake> {
    if v.trim().is_empty() {
        return Err(MalformedWake::at(field, "is empty"));
    }
    if v.chars().count() > MAX_ID_LEN {
        return Err(MalformedWake::at(
            field,
            format!("is longer than {MAX_ID_LEN} characters"),
        ));
    }
    if v.chars().any(char::is_control) {
        return Err(MalformedWake::at(field, "contains control characters"));
    }
    Ok(())
}

/// Parses RFC 3339 (`2024-06-01T12:00:00Z`, `2024-06-01T14:00:00.5+02:00`),
/// any year from 0000 to 9999; a leap second (`:60`) counts as `:59`.
pub fn parse_rfc3339(s: &str) -> Result<SystemTime, String> {
    let bad = || format!("{s:?} is not an RFC 3339 time like 2024-06-01T12:00:00Z");
    let b = s.trim().as_bytes();
    let num = |r: std::ops::Range<usize>| -> Result<i64, String> {
        let part = b.get(r).ok_or_else(bad)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        Ok(part.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(bad());
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(bad()),
    };
    if day < 1 || day > days_in_month || hour > 23 || minute > 59 || second > 60 {
        return Err(bad());
    }
    let mut i = 19;
    let mut nanos: u32 = 0;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return Err(bad());
        }
        for (k, d) in b[start..i.min(start + 9)].iter().enumerate() {
            nanos += u32::from(d - b'0') * 10u32.pow(8 - k as u32);
        }
    }
    let offset_s: i64 = match b.get(i..) {
        Some([b'Z' | b'z']) => 0,
        Some([sign @ (b'+' | b'-'), _, _, b':', _, _]) => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            if oh > 23 || om > 59 {
                return Err(bad());
            }
            let o = oh * 3600 + om * 60;
            if *sign == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return Err(bad()),
    };
    // Days from 1970-01-01 (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second.min(59) - offset_s;
    let t = if secs >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs as u64, nanos))
    } else {
        SystemTime::UNIX_EPOCH
            .checked_sub(Duration::from_secs(secs.unsigned_abs()))
            .and_then(|t| t.checked_add(Duration::from_nanos(u64::from(nanos))))
    };
    t.ok_or_else(bad)
}

/// One result: a campaign report row ([`ReportRow`], the same JSON) with the
/// request's idempotency key and, for the queue, the delivery count and the
/// instance that handled it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WakeResult {
    /// The report row.
    #[serde(flatten)]
    pub row: ReportRow,
    /// The request's `idempotency_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// JetStream deliveries of the message, the last one included (queue only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliveries: Option<u64>,
    /// The consumer instance that published it (queue only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

impl WakeResult {
    /// The result of `req` with `outcome`.
    pub fn new(req: &WakeRequest, outcome: &Outcome) -> Self {
        WakeResult {
            row: ReportRow::new(req.subject(), outcome),
            idempotency_key: req.idempotency_key.clone(),
            deliveries: None,
            instance: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CH: &str = "https://db5p.notify.windows.com/?token=ok.1";

    fn parse(s: &str) -> Result<WakeRequest, MalformedWake> {
        WakeRequest::from_json(s.as_bytes())
    }

    #[test]
    fn minimal_and_full_requests_parse() {
        let r = parse(&format!(
            r#"{{"device_id":"d1","channel_uri":"{CH}","tenant":"t"}}"#
        ))
        .unwrap();
        assert_eq!(r, WakeRequest::new("d1", CH, "t"));
        let r = parse(&format!(
            r#"{{"v":1,"device_id":"d1","channel_uri":"{CH}","tenant":"t","ttl_s":60,
                "idempotency_key":"k-1","not_after":"2030-01-01T00:00:00Z"}}"#
        ))
        .unwrap();
        assert_eq!(r.ttl_s, Some(60));
        let n = r.to_notification(&PushOptions::default()).unwrap();
        assert_eq!(n.options.ttl, Some(Duration::from_secs(60)));
        assert_eq!(
            n.not_after,
            Some(humantime::parse_rfc3339("2030-01-01T00:00:00Z").unwrap())
        );
    }

    #[test]
    fn malformed_requests_say_where() {
        let cases = [
            ("{", None, "EOF"),
            ("[]", None, "expected a JSON object, found an array"),
            (
                r#"{"device_id":"d","tenant":"t"}"#,
                None,
                "missing field `channel_uri`",
            ),
            (
                &format!(r#"{{"device_id":5,"channel_uri":"{CH}","tenant":"t"}}"#),
                Some("device_id"),
                "invalid type",
            ),
            (
                &format!(r#"{{"device_id":"d","channel_uri":"{CH}","tenant":"t","bogus":1}}"#),
                Some("bogus"),
                "unknown field `bogus`",
            ),
            (
                &format!(r#"{{"v":2,"device_id":"d","channel_uri":"{CH}","tenant":"t","new":1}}"#),
                Some("v"),
                "unknown schema version 2",
            ),
            (
                &format!(r#"{{"v":"1","device_id":"d","channel_uri":"{CH}","tenant":"t"}}"#),
                Some("v"),
                "unknown schema version",
            ),
            (
                &format!(r#"{{"device_id":" ","channel_uri":"{CH}","tenant":"t"}}"#),
                Some("device_id"),
                "empty",
            ),
            (
                &format!(r#"{{"device_id":"d","channel_uri":"{CH}","tenant":"t","ttl_s":0}}"#),
                Some("ttl_s"),
                "between",
            ),
            (
                &format!(
                    r#"{{"device_id":"d","channel_uri":"{CH}","tenant":"t","not_after":"tomorrow"}}"#
                ),
                Some("not_after"),
                "RFC 3339",
            ),
            (
                &format!(
                    r#"{{"device_id":"d","channel_uri":"{CH}","tenant":"t","idempotency_key":"a b"}}"#
                ),
                Some("idempotency_key"),
                "printable",
            ),
            (
                &format!(
                    r#"{{"device_id":"d","channel_uri":"{CH}","tenant":"t","not_after":null}}"#
                ),
                Some("not_after"),
                "must not be null",
            ),
            (
                &format!(r#"{{"device_id":"d","channel_uri":"{CH}","tenant":"t"}} x"#),
                None,
                "trailing",
            ),
        ];
        for (text, path, want) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.path.as_deref(), path, "{text}: {e}");
            assert!(e.to_string().contains(want), "{text}: {e}");
        }
        let big = format!(
            r#"{{"device_id":"{}","channel_uri":"{CH}","tenant":"t"}}"#,
            "x".repeat(MAX_WAKE_REQUEST_BYTES)
        );
        assert!(parse(&big).unwrap_err().message.contains("limit"));
        let e = parse("{\n  \"device_id\": }").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.to_string().contains("(line 2, column"), "{e}");
        assert_eq!(e.under("wakes[3]").path.as_deref(), Some("wakes[3]"));
        let e = MalformedWake::at("device_id", "is empty").under("wakes[3]");
        assert_eq!(e.path.as_deref(), Some("wakes[3].device_id"));
    }

    #[test]
    fn foreign_channel_is_an_outcome_not_malformed() {
        let r =
            parse(r#"{"device_id":"d","channel_uri":"https://evil.test/x","tenant":"t"}"#).unwrap();
        let o = r.to_notification(&PushOptions::default()).unwrap_err();
        assert_eq!(o.kind, OutcomeKind::InvalidChannel);
    }

    #[test]
    fn rfc3339_with_offsets() {
        let z = parse_rfc3339("2024-06-01T12:00:00Z").unwrap();
        assert_eq!(parse_rfc3339("2024-06-01T14:00:00+02:00").unwrap(), z);
        assert_eq!(parse_rfc3339("2024-06-01T09:30:00-02:30").unwrap(), z);
        assert_eq!(
            parse_rfc3339("2024-06-01T12:00:00.250Z").unwrap(),
            z + Duration::from_millis(250)
        );
        assert_eq!(
            parse_rfc3339("1969-12-31T23:59:59Z").unwrap(),
            SystemTime::UNIX_EPOCH - Duration::from_secs(1)
        );
        assert!(parse_rfc3339("0001-01-01T00:00:00Z").is_ok());
        assert_eq!(
            parse_rfc3339("2024-02-29t12:00:00.123456789z").unwrap(),
            humantime::parse_rfc3339("2024-02-29T12:00:00.123456789Z").unwrap()
        );
        for bad in [
            "2024-06-01",
            "2024-06-01 12:00:00Z",
            "2024-06-01T12:00:00+2:00",
            "2023-02-29T12:00:00Z",
            "2024-06-01T12:00:00.Z",
            "2024-06-01T24:00:00Z",
            "x",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn result_is_a_report_row_plus_keys() {
        let mut r = WakeRequest::new("d1", CH, "t");
        r.idempotency_key = Some("k1".into());
        let o = Outcome::local(OutcomeKind::Expired, "late");
        let mut res = WakeResult::new(&r, &o);
        res.deliveries = Some(2);
        let text = serde_json::to_string(&res).unwrap();
        let row: ReportRow = serde_json::from_str(&text).unwrap();
        assert_eq!(row.outcome, "expired");
        assert_eq!(row.action, "retry_later");
        assert_eq!(row.device_id.as_deref(), Some("d1"));
        let back: WakeResult = serde_json::from_str(&text).unwrap();
        assert_eq!(back, res);
    }
}
