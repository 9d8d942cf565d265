//! Channel-token behaviour grammar.
//!
//! The emulator decides how to answer a push from the channel token alone, so
//! tests can script WNS outcomes just by choosing channel URLs. This module owns
//! that grammar as a pure function, [`parse_behavior`], with no I/O or state.
//!
//! # Grammar
//!
//! The behaviour prefix is the part of the channel token before the first `.`
//! (or the whole token when it has no `.`). It is matched ASCII
//! case-insensitively. Anything that does not match one of the forms below,
//! including a well-known keyword with a malformed parameter (`flaky-x`), means
//! [`Behavior::Ok`].
//!
//! | prefix                | outcome |
//! |-----------------------|---------|
//! | `ok`                  | 200 `received` |
//! | `offline`             | device offline: cached (200 `received`) with `X-WNS-Cache-Policy: cache`, else 200 `dropped` |
//! | `dropped`             | 200 `dropped` |
//! | `channelthrottled`    | 200 `channelthrottled` |
//! | `gone`                | 410 |
//! | `invalid`             | 404 |
//! | `otherapp`            | 403 |
//! | `blocked`             | 410 `domain blocked` (WNS blocked the app's PFN) |
//! | `badrequest`          | 400 |
//! | `revoked`             | 401 `Invalid token` whatever the token (a revoked app) |
//! | `notallowed`          | 405 |
//! | `toolarge`            | 413 (also answered for any payload over 5000 bytes) |
//! | `throttle406-<secs>`  | 406 + `Retry-After` |
//! | `throttle429-<secs>`  | 429 + `Retry-After` |
//! | `continueafter-<secs>`| 406 + `X-WNS-CONTINUE-AFTER` |
//! | `unavailable`         | 503 |
//! | `unavailable-<secs>`  | 503 + `Retry-After` |
//! | `error`               | 500 |
//! | `flaky-<n>`           | first `n` pushes to the channel get 503, then 200 `received` |
//! | `throttleonce-<secs>` | the first push to the channel gets 406 + `Retry-After`, later ones 200 `received` |
//! | `slow-<ms>`           | sleep `ms` (capped at 60 s), then 200 `received` |
//!
//! Numeric parameters are plain ASCII decimal digits (no sign, no spaces) that
//! fit in a `u64`.

use std::time::Duration;

/// Longest delay a `slow-<ms>` channel may impose.
pub const MAX_SLOW: Duration = Duration::from_secs(60);

/// The scripted outcome for pushes to one channel, parsed from its token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behavior {
    /// 200 with `X-WNS-Status: received`.
    Ok,
    /// The device is offline: cache the push if asked to, else drop it.
    Offline,
    /// 200 with `X-WNS-Status: dropped`.
    Dropped,
    /// 200 with `X-WNS-Status: channelthrottled`.
    ChannelThrottled,
    /// 410 Gone: the channel expired.
    Gone,
    /// 404 Not Found: the channel URL is not valid.
    Invalid,
    /// 403 Forbidden: the channel belongs to another app.
    OtherApp,
    /// 406 with `Retry-After: <secs>`.
    Throttle406(u64),
    /// 429 with `Retry-After: <secs>`.
    Throttle429(u64),
    /// 406 with `X-WNS-CONTINUE-AFTER: <secs>` and no `Retry-After`.
    ContinueAfter(u64),
    /// 503, with `Retry-After: <secs>` when given.
    Unavailable(Option<u64>),
    /// 500 Internal Server Error.
    Error,
    /// 410 with an error description saying the app's domain is blocked.
    Blocked,
    /// 400 Bad Request.
    BadRequest,
    /// 401 with `WWW-Authenticate`, whatever the token.
    Revoked,
    /// 405 Method Not Allowed.
    NotAllowed,
    /// 413 Request Entity Too Large.
    TooLarge,
    /// The first `n` pushes to the channel get 503, later ones 200 `received`.
    Flaky(u64),
    /// The first push to the channel gets 406 with `Retry-After: <secs>`,
    /// later ones 200 `received` (one throttle, then the app may go on).
    ThrottleOnce(u64),
    /// Wait this long (already capped at [`MAX_SLOW`]) then 200 `received`.
    Slow(Duration),
}

/// Parses the behaviour encoded in a channel token; see the module docs for
/// the grammar. Never fails: unknown or malformed prefixes yield
/// [`Behavior::Ok`].
pub fn parse_behavior(channel_token: &str) -> Behavior {
    let prefix = channel_token
        .split_once('.')
        .map_or(channel_token, |(head, _)| head);
    if prefix.len() > 64 {
        return Behavior::Ok;
    }
    let prefix = prefix.to_ascii_lowercase();
    let (word, param) = match prefix.split_once('-') {
        Some((w, p)) => (w, Some(p)),
        None => (prefix.as_str(), None),
    };
    let num = param.and_then(parse_decimal);
    match (word, param, num) {
        ("ok", None, _) => Behavior::Ok,
        ("offline", None, _) => Behavior::Offline,
        ("dropped", None, _) => Behavior::Dropped,
        ("channelthrottled", None, _) => Behavior::ChannelThrottled,
        ("gone", None, _) => Behavior::Gone,
        ("invalid", None, _) => Behavior::Invalid,
        ("otherapp", None, _) => Behavior::OtherApp,
        ("error", None, _) => Behavior::Error,
        ("blocked", None, _) => Behavior::Blocked,
        ("badrequest", None, _) => Behavior::BadRequest,
        ("revoked", None, _) => Behavior::Revoked,
        ("notallowed", None, _) => Behavior::NotAllowed,
        ("toolarge", None, _) => Behavior::TooLarge,
        ("unavailable", None, _) => Behavior::Unavailable(None),
        ("unavailable", Some(_), Some(s)) => Behavior::Unavailable(Some(s)),
        ("throttle406", Some(_), Some(s)) => Behavior::Throttle406(s),
        ("throttle429", Some(_), Some(s)) => Behavior::Throttle429(s),
        ("continueafter", Some(_), Some(s)) => Behavior::ContinueAfter(s),
        ("flaky", Some(_), Some(n)) => Behavior::Flaky(n),
        ("throttleonce", Some(_), Some(s)) => Behavior::ThrottleOnce(s),
        ("slow", Some(_), Some(ms)) => Behavior::Slow(Duration::from_millis(ms).min(MAX_SLOW)),
        _ => Behavior::Ok,
    }
}

/// Parses plain ASCII decimal digits; `None` for empty, signed or overflowing input.
fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_keywords() {
        assert_eq!(parse_behavior("ok.x"), Behavior::Ok);
        assert_eq!(parse_behavior("offline.dev-1"), Behavior::Offline);
        assert_eq!(parse_behavior("dropped.a"), Behavior::Dropped);
        assert_eq!(
            parse_behavior("channelthrottled.a"),
            Behavior::ChannelThrottled
        );
        assert_eq!(parse_behavior("gone.dev-17"), Behavior::Gone);
        assert_eq!(parse_behavior("invalid.a"), Behavior::Invalid);
        assert_eq!(parse_behavior("otherapp.a"), Behavior::OtherApp);
        assert_eq!(parse_behavior("error.a"), Behavior::Error);
        assert_eq!(parse_behavior("blocked.a"), Behavior::Blocked);
        assert_eq!(parse_behavior("badrequest.a"), Behavior::BadRequest);
        assert_eq!(parse_behavior("revoked.a"), Behavior::Revoked);
        assert_eq!(parse_behavior("notallowed.a"), Behavior::NotAllowed);
        assert_eq!(parse_behavior("toolarge.a"), Behavior::TooLarge);
        assert_eq!(parse_behavior("unavailable.a"), Behavior::Unavailable(None));
    }

    #[test]
    fn parameterised_keywords() {
        assert_eq!(
            parse_behavior("throttle406-30.a"),
            Behavior::Throttle406(30)
        );
        assert_eq!(parse_behavior("throttle429-5.a"), Behavior::Throttle429(5));
        assert_eq!(
            parse_behavior("continueafter-7.a"),
            Behavior::ContinueAfter(7)
        );
        assert_eq!(
            parse_behavior("unavailable-12.a"),
            Behavior::Unavailable(Some(12))
        );
        assert_eq!(parse_behavior("flaky-3.a"), Behavior::Flaky(3));
        assert_eq!(parse_behavior("flaky-0.a"), Behavior::Flaky(0));
        assert_eq!(
            parse_behavior("throttleonce-3.a"),
            Behavior::ThrottleOnce(3)
        );
        assert_eq!(
            parse_behavior("slow-250.a"),
            Behavior::Slow(Duration::from_millis(250))
        );
    }

    #[test]
    fn slow_is_capped() {
        assert_eq!(parse_behavior("slow-600000.a"), Behavior::Slow(MAX_SLOW));
        assert_eq!(
            parse_behavior("slow-18446744073709551615.a"),
            Behavior::Slow(MAX_SLOW)
        );
    }

    #[test]
    fn only_text_before_first_dot_counts() {
        assert_eq!(parse_behavior("gone.offline.x"), Behavior::Gone);
        assert_eq!(parse_behavior("x.gone"), Behavior::Ok);
        // Dashes after the first dot are not parameters.
        assert_eq!(parse_behavior("gone.dev-17-a"), Behavior::Gone);
    }

    #[test]
    fn whole_token_without_dot_is_the_prefix() {
        assert_eq!(parse_behavior("gone"), Behavior::Gone);
        assert_eq!(parse_behavior("throttle429-9"), Behavior::Throttle429(9));
    }

    #[test]
    fn case_insensitive() {
        assert_eq!(parse_behavior("GONE.a"), Behavior::Gone);
        assert_eq!(parse_behavior("Flaky-2.a"), Behavior::Flaky(2));
    }

    #[test]
    fn unknown_or_malformed_is_ok() {
        for t in [
            "",
            ".",
            "AwYAAABq7aWo%3d",
            "AwYAAABq7aWo+/=",
            "nope.a",
            "gone-1.a",
            "flaky.a",
            "flaky-.a",
            "flaky-x.a",
            "flaky--1.a",
            "flaky-+1.a",
            "flaky- 1.a",
            "throttle406.a",
            "throttle429-99999999999999999999999.a",
            "slow-1-2.a",
            "unavailable-.a",
            "unavailable-abc.a",
            "ok-1.a",
        ] {
            assert_eq!(parse_behavior(t), Behavior::Ok, "token {t:?}");
        }
        let long = format!("{}.a", "x".repeat(1000));
        assert_eq!(parse_behavior(&long), Behavior::Ok);
    }
}
