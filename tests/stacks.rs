//! The same behaviour checks against both HTTP stacks behind the pool
//! (src/transport/stack.rs): the project's own codecs and the crates (the
//! `h2` crate, hyper's HTTP/1.1 client connection), each over HTTP/2 and
//! HTTP/1.1, against the emulator over TLS on loopback: every outcome kind
//! the emulator can produce maps the same, the protocol is the one the policy
//! asks for, HTTP/1.1 connections are kept alive and HTTP/2 ones multiplexed,
//! a keep-alive connection the server closed while idle is recovered, answer
//! bodies over the limit are protocol errors, and a GOAWAY, a
//! `Connection: close` or a cut connection loses no wake. A scripted
//! HTTP/1.1 server adds what the emulator (hyper's server) never sends:
//! chunked and read-to-close bodies, a malformed chunk, an unannounced close
//! after each answer; and it shows the request head each stack writes.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use fleetwake::emulator::faults::Faults;
use fleetwake::emulator::{EmulatorHandle, HttpVersions};
use fleetwake::transport::{Transport, TransportErrorKind};
use fleetwake::{
    Engine, HttpPolicy, HttpStack, MdmAction, Notification, OutcomeKind, RetryPolicy,
    TransportConfig,
};
use futures_util::StreamExt;

const STACKS: [HttpStack; 2] = [HttpStack::Own, HttpStack::Crates];

/// The client policies that pin each protocol, and the protocol each gives.
const PROTOCOLS: [(HttpPolicy, &str); 2] = [
    (HttpPolicy::Http2Only, "h2"),
    (HttpPolicy::Http1Only, "http1"),
];

const HOST: &str = "db5p.notify.windows.com";

/// Longest a bounded wait for a condition may take.
const WAIT: Duration = Duration::from_secs(10);

/// A transport reaching `emu` on `stack` with the `http` policy.
fn transport(emu: &EmulatorHandle, stack: HttpStack, http: HttpPolicy) -> TransportConfig {
    TransportConfig {
        stack,
        http,
        ..transport_for(emu)
    }
}

/// An engine with one tenant "t" over `t`.
fn engine_over(t: TransportConfig, retry: RetryPolicy) -> Engine {
    Engine::builder()
        .transport(t)
        .tenant(tenant("t"))
        .retry(retry)
        .build()
        .expect("engine builds")
}

/// A request to the emulator's admin API (no token, so any port is fine).
fn admin(method: http::Method, path: &str) -> http::Request<bytes::Bytes> {
    let mut r = http::Request::new(bytes::Bytes::new());
    *r.method_mut() = method;
    *r.uri_mut() = format!("https://{HOST}/_emulator/{path}")
        .parse()
        .expect("admin URI");
    r
}

/// Waits (bounded) until `f` holds.
async fn until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What one wake came to, as compared across stacks.
type Mapped = (OutcomeKind, Option<u16>, u32, Option<Duration>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_outcome_maps_the_same_on_both_stacks() {
    use OutcomeKind::*;
    let emu = emulator(HttpVersions::Both).await;
    // Two attempts; a Retry-After beyond the 2 s deadline ends the wake at
    // once (so the throttles are checked without waiting them out).
    let retry = RetryPolicy {
        max_attempts: 2,
        deadline: Duration::from_secs(2),
        pause_tenant_on_throttle: false,
        ..quick_retries()
    };
    let s30 = Some(Duration::from_secs(30));
    // (behaviour, kind, status, attempts, Retry-After)
    let cases: [(&str, OutcomeKind, u16, u32, Option<Duration>); 19] = [
        ("ok", Received, 200, 1, None),
        ("offline", Received, 200, 1, None),
        ("dropped", Dropped, 200, 1, None),
        ("channelthrottled", ChannelThrottled, 200, 1, None),
        ("gone", ChannelExpired, 410, 1, None),
        ("invalid", ChannelInvalid, 404, 1, None),
        ("otherapp", ChannelAppMismatch, 403, 1, None),
        ("blocked", DomainBlocked, 410, 1, None),
        ("badrequest", BadRequest, 400, 1, None),
        ("notallowed", MethodNotAllowed, 405, 1, None),
        ("toolarge", PayloadTooLarge, 413, 1, None),
        ("throttle406-30", Throttled, 406, 1, s30),
        ("continueafter-30", Throttled, 406, 1, s30),
        ("throttle429-30", RateLimited, 429, 1, s30),
        ("unavailable-30", Unavailable, 503, 1, s30),
        ("unavailable", Unavailable, 503, 2, None),
        ("error", ServerError, 500, 2, None),
        // A 5xx, retried, then received.
        ("flaky-1", Received, 200, 2, None),
        // 401 for every token: one refresh and one resend, then final.
        ("revoked", Unauthorized, 401, 2, None),
    ];
    let mut seen: BTreeMap<(&str, &str), Vec<Mapped>> = BTreeMap::new();
    for stack in STACKS {
        for (http, proto) in PROTOCOLS {
            let who = format!("{}/{proto}", stack.as_str());
            let engine = engine_over(transport(&emu, stack, http), retry.clone());
            let mut mapped = Vec::new();
            for (behaviour, kind, status, attempts, retry_after) in cases {
                let tokens_before = emu.stats().token_requests.legacy;
                let id = format!("{}-{proto}", stack.as_str());
                let o = engine
                    .submit(Notification::wake("t", channel(behaviour, &id)))
                    .await;
                assert_eq!(o.kind, kind, "{who} {behaviour}: {o:?}");
                assert_eq!(o.status, Some(status), "{who} {behaviour}: {o:?}");
                assert_eq!(o.attempts, attempts, "{who} {behaviour}: {o:?}");
                if retry_after.is_some() {
                    assert_eq!(o.retry_after, retry_after, "{who} {behaviour}: {o:?}");
                    assert_eq!(o.mdm_action(), MdmAction::RetryLater, "{who} {behaviour}");
                }
                // The WNS headers came through whichever code read them.
                assert!(
                    o.wns.msg_id().is_some_and(|m| m.len() == 16),
                    "{who} {behaviour}: {o:?}"
                );
                assert!(o.wns.debug_trace().is_some(), "{who} {behaviour}");
                if behaviour == "revoked" {
                    assert_eq!(
                        emu.stats().token_requests.legacy,
                        tokens_before + 1,
                        "{who}: one token refresh for the 401"
                    );
                }
                mapped.push((o.kind, o.status, o.attempts, o.retry_after));
            }
            // The answer was read over the protocol the policy asked for.
            assert_eq!(engine.transport().protocol_for(HOST), Some(proto), "{who}");
            mapped.extend(transport_failures(&emu, stack, http, &who).await);
            seen.insert((stack.as_str(), proto), mapped);
            engine.shutdown(Duration::from_secs(5)).await;
        }
    }
    for (_, proto) in PROTOCOLS {
        assert_eq!(
            seen[&("own", proto)],
            seen[&("crates", proto)],
            "{proto}: the stacks map the same answers to different outcomes"
        );
    }
    emu.shutdown().await;
}

/// The outcomes of failures below HTTP, with faults injected into `emu`: a
/// connection reset instead of an answer, an answer that comes too late and
/// a certificate nobody trusts. Each is retryable, so each takes both
/// attempts.
async fn transport_failures(
    emu: &EmulatorHandle,
    stack: HttpStack,
    http: HttpPolicy,
    who: &str,
) -> Vec<Mapped> {
    let retry = RetryPolicy {
        max_attempts: 2,
        ..quick_retries()
    };
    let t = TransportConfig {
        request_timeout: Duration::from_millis(750),
        ..transport(emu, stack, http)
    };
    let engine = engine_over(t, retry);
    let id = |what: &str| format!("{what}-{}", who.replace('/', "-"));
    // Warm up: the token and a kept connection, so the faults hit the push.
    let o = engine
        .submit(Notification::wake("t", channel("ok", id("warm"))))
        .await;
    assert_eq!(o.kind, OutcomeKind::Received, "{who}: {o:?}");
    let mut mapped = Vec::new();
    let h2 = http == HttpPolicy::Http2Only;
    // A reset instead of an answer: RST_STREAM over HTTP/2, a closed
    // connection over HTTP/1.1.
    emu.set_faults(faults(Faults {
        reset_rate: 1.0,
        ..Faults::default()
    }));
    let o = engine
        .submit(Notification::wake("t", channel("ok", id("reset"))))
        .await;
    let want = if h2 {
        OutcomeKind::ProtocolError
    } else {
        OutcomeKind::ConnectError
    };
    assert_eq!((o.kind, o.attempts), (want, 2), "{who} reset: {o:?}");
    mapped.push((o.kind, o.status, o.attempts, o.retry_after));
    // An answer held past the request timeout.
    emu.set_faults(faults(Faults {
        stall_rate: 1.0,
        stall_ms: 5_000,
        ..Faults::default()
    }));
    let o = engine
        .submit(Notification::wake("t", channel("ok", id("stall"))))
        .await;
    assert_eq!(
        (o.kind, o.attempts),
        (OutcomeKind::Timeout, 2),
        "{who} stall: {o:?}"
    );
    mapped.push((o.kind, o.status, o.attempts, o.retry_after));
    // A certificate nobody trusts (a new host, so a new connection).
    emu.set_faults(faults(Faults {
        tls_fail_rate: 1.0,
        ..Faults::default()
    }));
    let uri = fleetwake::ChannelUri::parse(&format!(
        "https://{}.notify.windows.com/?token=ok.tls",
        id("tls")
    ))
    .expect("channel URI");
    let o = engine.submit(Notification::wake("t", uri)).await;
    assert_eq!(
        (o.kind, o.attempts),
        (OutcomeKind::TlsError, 2),
        "{who} TLS: {o:?}"
    );
    mapped.push((o.kind, o.status, o.attempts, o.retry_after));
    emu.set_faults(faults(Faults::default()));
    engine.shutdown(Duration::from_secs(5)).await;
    mapped
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_protocol_is_what_the_policy_asks() {
    let both = emulator(HttpVersions::Both).await;
    let h1_only = emulator(HttpVersions::Http1Only).await;
    for stack in STACKS {
        for (emu, server, http, want) in [
            (&both, "both", HttpPolicy::Auto, Some("h2")),
            (&both, "both", HttpPolicy::Http2Only, Some("h2")),
            (&both, "both", HttpPolicy::Http1Only, Some("http1")),
            (&h1_only, "http1", HttpPolicy::Auto, Some("http1")),
            (&h1_only, "http1", HttpPolicy::Http1Only, Some("http1")),
            (&h1_only, "http1", HttpPolicy::Http2Only, None),
        ] {
            let who = format!("{} {http:?} against {server}", stack.as_str());
            let before = emu.stats().connections;
            let t = Transport::new(transport(emu, stack, http)).expect("transport");
            let r = t.send(admin(http::Method::GET, "stats")).await;
            let after = emu.stats().connections;
            match want {
                Some(proto) => {
                    let r = r.unwrap_or_else(|e| panic!("{who}: {e}"));
                    assert_eq!(r.status(), 200, "{who}");
                    assert_eq!(t.protocol_for(HOST), Some(proto), "{who}");
                    let opened = if proto == "h2" {
                        (after.h2 - before.h2, after.h1 - before.h1)
                    } else {
                        (after.h1 - before.h1, after.h2 - before.h2)
                    };
                    assert_eq!(opened, (1, 0), "{who}: one connection, {proto}");
                }
                None => {
                    // The server refuses the handshake (no protocol in
                    // common), before either stack has a word to say.
                    let e = r.expect_err("no HTTP/2 to be had");
                    assert_eq!(e.kind, TransportErrorKind::Tls, "{who}: {e}");
                    assert!(e.message.contains(HOST), "{who}: {e}");
                    assert_eq!(t.protocol_for(HOST), None, "{who}");
                }
            }
        }
    }
    both.shutdown().await;
    h1_only.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_http2_forbids_are_dropped_not_sent() {
    let emu = emulator(HttpVersions::Both).await;
    for stack in STACKS {
        let who = stack.as_str();
        let before = emu.stats().connections.h2;
        let t = Transport::new(TransportConfig {
            h2_connections_per_host: 1,
            ..transport(&emu, stack, HttpPolicy::Http2Only)
        })
        .expect("transport");
        // `Host` and connection-specific fields (RFC 9113 §8.2.2): HTTP/1.1
        // words that HTTP/2 does not send, on either stack.
        let mut req = admin(http::Method::GET, "stats");
        for (name, value) in [
            ("host", HOST),
            ("connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("upgrade", "h2c"),
            ("te", "gzip"),
        ] {
            req.headers_mut().insert(
                http::HeaderName::from_static(name),
                http::HeaderValue::from_static(value),
            );
        }
        for _ in 0..2 {
            let r = t.send(req.clone()).await;
            assert!(r.as_ref().is_ok_and(|r| r.status() == 200), "{who}: {r:?}");
        }
        assert_eq!(
            emu.stats().connections.h2 - before,
            1,
            "{who}: one connection, kept"
        );
    }
    emu.shutdown().await;
}

/// The connections `emu` accepted, `(h2, http1)`, are the ones `engine`
/// holds open.
fn connections_are(emu: &EmulatorHandle, engine: &Engine, who: &str, want: (u64, u64)) {
    let c = emu.stats().connections;
    assert_eq!((c.h2, c.h1), want, "{who}: {c:?}");
    let open = engine.transport().open_connections() as u64;
    assert_eq!(open, want.0 + want.1, "{who}: open connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_keeps_connections_alive_across_sequential_wakes() {
    for stack in STACKS {
        let emu = emulator(HttpVersions::Both).await;
        let engine = engine_over(
            transport(&emu, stack, HttpPolicy::Http1Only),
            RetryPolicy::none(),
        );
        for i in 0..40 {
            let o = engine
                .submit(Notification::wake("t", channel("ok", i)))
                .await;
            assert_eq!(o.kind, OutcomeKind::Received, "{}: {o:?}", stack.as_str());
        }
        // One connection to the channel host, one to login.live.com, by the
        // emulator's count, the transport's and the kernel's.
        let who = stack.as_str();
        connections_are(&emu, &engine, who, (0, 2));
        assert_eq!(established_on(emu.local_addr().port()), 2, "{who}");
        engine.shutdown(Duration::from_secs(5)).await;
        emu.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_multiplexes_concurrent_wakes_over_few_connections() {
    for stack in STACKS {
        let emu = emulator(HttpVersions::Both).await;
        let t = TransportConfig {
            h2_connections_per_host: 2,
            ..transport(&emu, stack, HttpPolicy::Http2Only)
        };
        let engine = engine_over(t, RetryPolicy::none());
        let started = Instant::now();
        // 200 answers of 300 ms each: one after the other they take a minute.
        let input = (0..200).map(|i| (i, Notification::wake("t", channel("slow-300", i))));
        let outcomes: Vec<_> = engine.submit_iter(input, 200).collect().await;
        let took = started.elapsed();
        let who = stack.as_str();
        assert_eq!(outcomes.len(), 200);
        for (i, o) in &outcomes {
            assert_eq!(o.kind, OutcomeKind::Received, "{who} {i}: {o:?}");
        }
        assert!(
            took < Duration::from_secs(5),
            "{who}: 200 concurrent wakes took {took:?}"
        );
        // Two multiplexed connections to the channel host, one to login.
        connections_are(&emu, &engine, who, (3, 0));
        engine.shutdown(Duration::from_secs(5)).await;
        emu.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http1_connection_the_server_closed_is_recovered() {
    for stack in STACKS {
        let who = stack.as_str();
        let emu = emulator(HttpVersions::Both).await;
        let port = emu.local_addr().port();
        let retry = RetryPolicy {
            max_attempts: 2,
            ..quick_retries()
        };
        let engine = engine_over(transport(&emu, stack, HttpPolicy::Http1Only), retry);
        let wake = |i: &str| engine.submit(Notification::wake("t", channel("ok", i)));
        let o = wake("first").await;
        assert_eq!(o.kind, OutcomeKind::Received, "{who}: {o:?}");
        let cut = || async {
            // The emulator drops every open connection (no TLS close_notify,
            // no `Connection: close`), then takes new ones again.
            emu.set_faults(faults(Faults {
                down: true,
                ..Faults::default()
            }));
            until("the emulator to drop its connections", || {
                established_on(port) == 0
            })
            .await;
            emu.set_faults(faults(Faults::default()));
        };
        // At once: hyper's connection task has seen the close by then, and
        // the own codec's check before every reuse (a non-blocking read)
        // finds it, so the request goes out on a fresh connection.
        cut().await;
        let o = wake("right-after-the-close").await;
        assert_eq!(
            (o.kind, o.attempts),
            (OutcomeKind::Received, 1),
            "{who}: {o:?}"
        );
        // And after idling.
        cut().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let o = wake("after-idling").await;
        assert_eq!(
            (o.kind, o.attempts),
            (OutcomeKind::Received, 1),
            "{who}: {o:?}"
        );
        assert_eq!(emu.stats().connections.h2, 0, "{who}");
        engine.shutdown(Duration::from_secs(5)).await;
        emu.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_bodies_over_the_limit_are_protocol_errors() {
    let emu = emulator(HttpVersions::Both).await;
    for stack in STACKS {
        for (http, proto) in PROTOCOLS {
            let who = format!("{}/{proto}", stack.as_str());
            // `{"ok":true}` is 11 bytes: within a limit of 11, over one of 10.
            for (limit, fits) in [(11, true), (10, false)] {
                let t = Transport::new(TransportConfig {
                    max_response_body: limit,
                    ..transport(&emu, stack, http)
                })
                .expect("transport");
                let r = t.send(admin(http::Method::POST, "reset")).await;
                if fits {
                    let r = r.unwrap_or_else(|e| panic!("{who} limit {limit}: {e}"));
                    assert_eq!(r.body().as_ref(), b"{\"ok\":true}", "{who}");
                } else {
                    let e = r.expect_err("over the limit");
                    assert_eq!(e.kind, TransportErrorKind::Protocol, "{who}: {e}");
                    assert!(
                        e.message.contains(&format!("longer than {limit} bytes")),
                        "{who}: {e}"
                    );
                }
                // Much longer (the stats), then one within the limit again on
                // the same transport: the failure left nothing broken behind.
                let e = t
                    .send(admin(http::Method::GET, "stats"))
                    .await
                    .expect_err("the stats are longer than 11 bytes");
                assert_eq!(e.kind, TransportErrorKind::Protocol, "{who}: {e}");
                assert!(e.message.contains("longer than"), "{who}: {e}");
                if fits {
                    let r = t
                        .send(admin(http::Method::POST, "reset"))
                        .await
                        .unwrap_or_else(|e| panic!("{who} after a failure: {e}"));
                    assert_eq!(r.status(), 200, "{who}");
                }
                assert_eq!(t.protocol_for(HOST), Some(proto), "{who}");
            }
        }
    }
    emu.shutdown().await;
}

/// An emulator, and an engine reaching it on `stack` with the `http` policy
/// (two HTTP/2 connections, `h1` HTTP/1.1 ones) that has its token and its
/// first connection.
async fn warmed_up(
    stack: HttpStack,
    http: HttpPolicy,
    h1: usize,
    retry: RetryPolicy,
) -> (EmulatorHandle, Engine) {
    let emu = emulator(HttpVersions::Both).await;
    let t = TransportConfig {
        h2_connections_per_host: 2,
        h1_connections_per_host: h1,
        ..transport(&emu, stack, http)
    };
    let engine = engine_over(t, retry);
    let o = engine
        .submit(Notification::wake("t", channel("ok", "warm")))
        .await;
    assert_eq!(o.kind, OutcomeKind::Received, "{}: {o:?}", stack.as_str());
    (emu, engine)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_goaway_or_connection_close_mid_run_loses_no_wake() {
    for stack in STACKS {
        for (http, proto) in PROTOCOLS {
            let who = format!("{}/{proto}", stack.as_str());
            // No retries: a graceful close is the pool's to get past.
            let (emu, engine) = warmed_up(stack, http, 8, RetryPolicy::none()).await;
            // Every connection ends after its fifth request: a GOAWAY over
            // HTTP/2 (open streams finish), `Connection: close` over HTTP/1.1.
            emu.set_faults(faults(Faults {
                goaway_after: Some(5),
                ..Faults::default()
            }));
            // Ten in flight at a time, so that every connection ends.
            let input = (0..120).map(|i| (i, Notification::wake("t", channel("slow-20", i))));
            let outcomes: Vec<_> = engine.submit_iter(input, 10).collect().await;
            assert_eq!(outcomes.len(), 120, "{who}: every wake has an outcome");
            for (i, o) in &outcomes {
                assert_eq!(
                    (o.kind, o.attempts),
                    (OutcomeKind::Received, 1),
                    "{who} wake {i}: {o:?}"
                );
            }
            // A connection serves its five and at most the ten in flight.
            let c = emu.stats().connections;
            let opened = if proto == "h2" { c.h2 } else { c.h1 };
            assert!(
                opened >= 120 / (5 + 10),
                "{who}: connections were closed and opened again: {c:?}"
            );
            engine.shutdown(Duration::from_secs(5)).await;
            emu.shutdown().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_cut_mid_run_lose_no_wake() {
    let retry = RetryPolicy {
        max_attempts: 6,
        base_delay: Duration::from_millis(25),
        max_delay: Duration::from_millis(200),
        deadline: Duration::from_secs(20),
        pause_tenant_on_throttle: false,
    };
    for stack in STACKS {
        for (http, proto) in PROTOCOLS {
            let who = format!("{}/{proto}", stack.as_str());
            let (emu, engine) = warmed_up(stack, http, 16, retry.clone()).await;
            // From 20 ms to 220 ms the target is gone: open connections are
            // cut mid-request, new ones closed at once.
            emu.set_faults(during(
                20,
                220,
                Faults {
                    down: true,
                    ..Faults::default()
                },
            ));
            let input = (0..96).map(|i| (i, Notification::wake("t", channel("slow-80", i))));
            let outcomes: Vec<_> = engine.submit_iter(input, 96).collect().await;
            assert_eq!(outcomes.len(), 96, "{who}: every wake has an outcome");
            let mut retried = 0;
            for (i, o) in &outcomes {
                if o.attempts > 1 {
                    retried += 1;
                }
                if o.kind != OutcomeKind::Received {
                    // Not received: only a retryable failure, retried to the end.
                    assert!(o.kind.is_retryable(), "{who} wake {i}: {o:?}");
                    assert_eq!(o.attempts, retry.max_attempts, "{who} wake {i}: {o:?}");
                }
            }
            assert!(retried > 0, "{who}: the cut hit no wake in flight");
            engine.shutdown(Duration::from_secs(5)).await;
            emu.shutdown().await;
        }
    }
}

#[test]
fn the_config_file_chooses_the_stack() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("fleetwake.toml");
    let file = |transport: &str| {
        format!(
            "[transport]\n{transport}\n\n[tenants.a]\npackage_sid = \"ms-app://S-1\"\nsecret_env = \"X\"\n"
        )
    };
    let stack = |text: String| {
        std::fs::write(&path, text).expect("write the config");
        fleetwake::config::Config::load(&path).map(|c| c.transport().map(|t| t.stack))
    };
    assert_eq!(stack(file("")), Ok(Ok(HttpStack::Own)), "the default");
    assert_eq!(stack(file("stack = \"own\"")), Ok(Ok(HttpStack::Own)));
    assert_eq!(stack(file("stack = \"crates\"")), Ok(Ok(HttpStack::Crates)));
    let e = stack(file("stack = \"hyper\"")).expect_err("an unknown stack");
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!("{}:2:", path.display())),
        "names the file and line: {shown}"
    );
    assert!(
        shown.contains("hyper") && shown.contains("own") && shown.contains("crates"),
        "names the value and the choices: {shown}"
    );
    // The names the file takes are the ones reports use.
    assert_eq!(HttpStack::Own.as_str(), "own");
    assert_eq!(HttpStack::Crates.as_str(), "crates");
}

/// A TLS server on 127.0.0.1 that speaks only HTTP/1.1 and answers each
/// request with the raw bytes its path names ([`scripted_answer`]): the
/// framings and faults the emulator (hyper's server) never sends. It keeps
/// every request head it read, and counts the connections it accepted.
struct Scripted {
    addr: std::net::SocketAddr,
    ca: String,
    heads: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The answer to `path`, and whether the server closes the connection after it.
fn scripted_answer(path: &str) -> (&'static [u8], bool) {
    match path {
        "/chunked" => (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
            false,
        ),
        "/chunked-long" => (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\na\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n",
            false,
        ),
        "/bad-chunk" => (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
            false,
        ),
        "/until-close" => (b"HTTP/1.1 200 OK\r\n\r\nhello", true),
        // Followed, a moment later and unasked, by a second answer
        // ([`STRAY`], written by `serve_scripted`).
        "/then-stray" => (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", false),
        // HTTP/1.0 with Transfer-Encoding: faulty framing (RFC 9112 §6.1).
        "/http10-chunked" => (
            b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            false,
        ),
        "/until-close-long" => (b"HTTP/1.1 200 OK\r\n\r\n01234567890123456789", true),
        "/close" => (
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
            true,
        ),
        // A keep-alive the server ends right after the answer, unannounced.
        "/silent-close" => (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", true),
        _ => (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", false),
    }
}

/// The answer nobody asked for that follows `/then-stray`'s.
const STRAY: &[u8] = b"HTTP/1.1 410 Gone\r\ncontent-length: 0\r\n\r\n";

async fn scripted() -> Scripted {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    // The emulator's generator writes a CA and a leaf for *.notify.windows.com.
    let dir = tempfile::tempdir().expect("temp dir");
    let pems = fleetwake::emulator::EmulatorConfig {
        tls: fleetwake::emulator::TlsSource::Generate {
            out_dir: Some(dir.path().to_path_buf()),
        },
        ..Default::default()
    };
    emulator_with(pems).await.shutdown().await;
    let ca = std::fs::read_to_string(dir.path().join("ca.pem")).expect("ca.pem");
    let chain = CertificateDer::pem_file_iter(dir.path().join("cert.pem"))
        .expect("cert.pem")
        .collect::<Result<Vec<_>, _>>()
        .expect("certificates");
    let key = PrivateKeyDer::from_pem_file(dir.path().join("key.pem")).expect("key.pem");
    let mut cfg = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("server certificate");
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (h, a) = (heads.clone(), accepted.clone());
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (acceptor, heads) = (acceptor.clone(), h.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    serve_scripted(tls, heads).await;
                }
            });
        }
    });
    Scripted {
        addr,
        ca,
        heads,
        accepted,
        task,
    }
}

/// Reads request heads (the requests here have no body) and writes the
/// scripted answers until the client closes or an answer closes.
async fn serve_scripted(
    mut s: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    heads: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let path = head.split_whitespace().nth(1).unwrap_or("/");
        let path = path.split('?').next().unwrap_or(path).to_owned();
        heads.lock().unwrap().push(head);
        let (answer, close) = scripted_answer(&path);
        if s.write_all(answer).await.is_err() || s.flush().await.is_err() {
            return;
        }
        if path == "/then-stray" {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if s.write_all(STRAY).await.is_err() || s.flush().await.is_err() {
                return;
            }
        }
        if close {
            let _ = s.shutdown().await;
            return;
        }
    }
}

/// A scripted server, and a transport that reaches it over HTTP/1.1 on
/// `stack` (a 5 s request timeout, and what `tune` sets).
async fn scripted_on(
    stack: HttpStack,
    tune: impl FnOnce(&mut TransportConfig),
) -> (Scripted, Transport) {
    let server = scripted().await;
    let mut t = TransportConfig {
        stack,
        http: HttpPolicy::Http1Only,
        resolve: vec![format!("*.notify.windows.com={}", server.addr)
            .parse()
            .expect("override")],
        webpki_roots: false,
        request_timeout: Duration::from_secs(5),
        ..TransportConfig::default()
    };
    tune(&mut t);
    t.add_ca_pem(&server.ca).expect("the CA");
    (server, Transport::new(t).expect("transport"))
}

/// A GET of `target` on the channel host.
fn get(target: &str) -> http::Request<bytes::Bytes> {
    let mut r = http::Request::new(bytes::Bytes::new());
    *r.uri_mut() = format!("https://{HOST}{target}").parse().expect("URI");
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_the_server_ends_after_each_answer_costs_no_wait() {
    for stack in STACKS {
        // One connection for three requests at a time: each request finds
        // the connection its predecessor used, which the server has just
        // closed, and must get a fresh one without waiting for a slot that
        // the others hold.
        let (_server, t) = scripted_on(stack, |t| t.h1_connections_per_host = 1).await;
        let started = Instant::now();
        let who = stack.as_str();
        for round in 0..5 {
            let three =
                futures_util::future::join_all((0..3).map(|_| t.send(get("/silent-close")))).await;
            for r in three {
                let r = r.unwrap_or_else(|e| panic!("{who} round {round}: {e}"));
                assert_eq!(r.body().as_ref(), b"ok", "{who}");
            }
        }
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(4),
            "{who}: 15 requests took {took:?}"
        );
    }
}

/// Bytes a server sends after an answer, unasked, are never read as the
/// next request's answer: a connection with bytes waiting is not reused,
/// however soon after its last answer. (Before, the own codec trusted a
/// connection used in the last 250 ms, so the next request got the stray
/// 410, and every later answer on the connection its predecessor's.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_after_an_answer_are_not_taken_for_the_next_answer() {
    use std::sync::atomic::Ordering::SeqCst;
    for stack in STACKS {
        let (server, t) = scripted_on(stack, |t| t.h1_connections_per_host = 1).await;
        let who = stack.as_str();
        let r = t.send(get("/then-stray")).await.expect("the first answer");
        assert_eq!(
            (r.status().as_u16(), r.body().as_ref()),
            (200, &b"ok"[..]),
            "{who}"
        );
        // The stray answer arrives 20 ms after the first.
        tokio::time::sleep(Duration::from_millis(100)).await;
        for i in 0..3 {
            let r = t.send(get("/plain")).await.expect("the next answers");
            assert_eq!(
                (r.status().as_u16(), r.body().as_ref()),
                (200, &b"ok"[..]),
                "{who}: request {i} after the stray bytes"
            );
        }
        assert_eq!(
            server.accepted.load(SeqCst),
            2,
            "{who}: one fresh connection"
        );
    }
}

/// An HTTP/1.0 answer with Transfer-Encoding has faulty framing (RFC 9112
/// §6.1): a protocol error on both stacks (hyper's rule), and the
/// connection is not used again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http10_answer_with_transfer_encoding_is_a_protocol_error() {
    for stack in STACKS {
        let (_server, t) = scripted_on(stack, |_| {}).await;
        let who = stack.as_str();
        let e = t
            .send(get("/http10-chunked"))
            .await
            .expect_err("faulty framing");
        assert_eq!(e.kind, TransportErrorKind::Protocol, "{who}: {e}");
        assert_eq!(t.open_connections(), 0, "{who}: not kept");
        let r = t.send(get("/plain")).await.expect("a fresh connection");
        assert_eq!(r.status(), 200, "{who}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_framing_host_and_limits_beyond_the_emulator() {
    use std::sync::atomic::Ordering::SeqCst;
    for stack in STACKS {
        let (server, t) = scripted_on(stack, |t| t.max_response_body = 16).await;
        let who = stack.as_str();
        let get = |target: &str| t.send(get(target));
        let body =
            |r: Result<http::Response<bytes::Bytes>, fleetwake::transport::TransportError>,
             what: &str| {
                let r = r.unwrap_or_else(|e| panic!("{who} {what}: {e}"));
                assert_eq!(r.status(), 200, "{who} {what}");
                String::from_utf8_lossy(r.body()).into_owned()
            };
        let protocol_error = |r: Result<_, fleetwake::transport::TransportError>, what: &str| {
            let e = r.expect_err(what);
            assert_eq!(e.kind, TransportErrorKind::Protocol, "{who} {what}: {e}");
            e.message
        };
        // Origin-form target, one Host (the port only when not 443), and
        // three answers over one kept connection.
        for _ in 0..3 {
            assert_eq!(body(get("/plain?a=1").await, "plain"), "ok");
        }
        assert_eq!(server.accepted.load(SeqCst), 1, "{who}: kept alive");
        {
            let heads = server.heads.lock().unwrap();
            let head = heads[0].to_ascii_lowercase();
            assert!(
                head.starts_with("get /plain?a=1 http/1.1\r\n"),
                "{who}: {head}"
            );
            let hosts: Vec<&str> = head
                .lines()
                .filter_map(|l| l.strip_prefix("host:"))
                .map(str::trim)
                .collect();
            assert_eq!(hosts, [HOST], "{who}: {head}");
        }
        // Chunked: decoded, and bounded by the limit; a malformed chunk size
        // is the server's protocol error.
        assert_eq!(body(get("/chunked").await, "chunked"), "hello world");
        let m = protocol_error(get("/chunked-long").await, "chunked over the limit");
        assert!(m.contains("longer than 16 bytes"), "{who}: {m}");
        let m = protocol_error(get("/bad-chunk").await, "a malformed chunk size");
        assert!(m.to_ascii_lowercase().contains("chunk"), "{who}: {m}");
        // Read to the close: the body, and bounded by the limit; the
        // connection is not kept.
        assert_eq!(body(get("/until-close").await, "until close"), "hello");
        assert_eq!(t.open_connections(), 0, "{who}: read to its close");
        let m = protocol_error(
            get("/until-close-long").await,
            "to the close, over the limit",
        );
        assert!(m.contains("longer than 16 bytes"), "{who}: {m}");
        // `Connection: close`: the answer, the connection let go at once
        // (not kept for a request that would find it closing), then a fresh
        // connection.
        assert_eq!(body(get("/plain").await, "plain"), "ok");
        assert_eq!(t.open_connections(), 1, "{who}: kept alive");
        assert_eq!(body(get("/close").await, "close"), "ok");
        assert_eq!(t.open_connections(), 0, "{who}: after Connection: close");
        let before = server.accepted.load(SeqCst);
        assert_eq!(body(get("/plain").await, "after a close"), "ok");
        assert_eq!(server.accepted.load(SeqCst), before + 1, "{who}");
        // Another port: named in Host.
        assert_eq!(body(get(":8443/port").await, "port"), "ok");
        {
            let heads = server.heads.lock().unwrap();
            let head = heads
                .last()
                .map(|h| h.to_ascii_lowercase())
                .unwrap_or_default();
            assert!(
                head.contains(&format!("\r\nhost: {HOST}:8443\r\n")),
                "{who}: {head}"
            );
        }
        assert_eq!(
            server.heads.lock().unwrap().len(),
            12,
            "{who}: every request sent once"
        );
    }
}
