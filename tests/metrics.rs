//! Metrics through the `metrics` facade, read back from the Prometheus recorder.

mod common;

use std::time::Duration;

use common::*;
use fleetwake::emulator::HttpVersions;
use fleetwake::{Notification, RetryPolicy};

fn value(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_latency_in_flight_tokens_and_retries_are_recorded() {
    let handle = fleetwake::telemetry::install_prometheus_recorder().unwrap();
    let emu = emulator(HttpVersions::Both).await;
    let engine = engine(
        &emu,
        RetryPolicy {
            max_attempts: 2,
            ..quick_retries()
        },
    );
    for i in 0..5 {
        engine
            .submit(Notification::wake("t", channel("ok", i)))
            .await;
    }
    engine
        .submit(Notification::wake("t", channel("gone", 1)))
        .await;
    engine
        .submit(Notification::wake("t", channel("unavailable", 1)))
        .await;
    emu.expire_tokens();
    engine
        .submit(Notification::wake("t", channel("ok", "after-expiry")))
        .await;
    // WNS refuses a token it calls invalid (not expired), twice: the
    // credentials are suspect (`rejected_fresh`), then `unauthorized`.
    engine
        .submit(Notification::wake("t", channel("revoked", "r")))
        .await;
    let text = handle.render();
    assert_eq!(
        value(
            &text,
            r#"fleetwake_outcomes_total{tenant="t",outcome="received"}"#
        ),
        6.0
    );
    assert_eq!(
        value(
            &text,
            r#"fleetwake_outcomes_total{tenant="t",outcome="channel_expired"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            r#"fleetwake_outcomes_total{tenant="t",outcome="unavailable"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            r#"fleetwake_retries_total{tenant="t",outcome="unavailable"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            r#"fleetwake_retries_total{tenant="t",outcome="unauthorized"}"#
        ),
        2.0,
        "the resend after the expired token, and after the first invalid one"
    );
    // The first token; one after WNS said a token expired early (stale, not
    // the credentials); one after WNS called a fresh token invalid.
    for (cause, n) in [
        ("first", 1.0),
        ("rejected_stale", 1.0),
        ("rejected_fresh", 1.0),
    ] {
        assert_eq!(
            value(
                &text,
                &format!(
                    r#"fleetwake_token_refreshes_total{{tenant="t",result="ok",cause="{cause}"}}"#
                )
            ),
            n,
            "{cause}"
        );
    }
    // One HTTP attempt per request: 5 + 1 + 2 + (401 + resend) + (401 + resend) = 12.
    assert_eq!(
        value(
            &text,
            r#"fleetwake_request_duration_seconds_count{tenant="t"}"#
        ),
        12.0
    );
    assert_eq!(
        value(
            &text,
            r#"fleetwake_wake_duration_seconds_count{tenant="t"}"#
        ),
        9.0
    );
    assert_eq!(
        value(&text, "fleetwake_in_flight "),
        0.0,
        "nothing left in flight"
    );
    assert_eq!(value(&text, "fleetwake_pending "), 0.0);
    assert!(value(&text, r#"fleetwake_connections_open{protocol="h2"}"#) >= 1.0);
    // Labels carry no secrets, tokens or channel URIs.
    assert!(
        !text.contains("test-secret")
            && !text.contains("notify.windows.com")
            && !text.contains("token=")
    );
    engine.shutdown(Duration::from_secs(5)).await;
}
