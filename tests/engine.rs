//! The engine against the WNS emulator over real TLS on loopback.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use fleetwake::emulator::HttpVersions;
use fleetwake::{
    Credentials, Engine, MdmAction, Notification, OutcomeKind, RateLimit, RetryPolicy, Secret,
    TenantConfig,
};
use futures_util::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_outcome_path() {
    let emu = emulator(HttpVersions::Both).await;
    let engine = engine(
        &emu,
        RetryPolicy {
            max_attempts: 2,
            ..quick_retries()
        },
    );
    use OutcomeKind::*;
    let cases = [
        ("ok", Received, Some(200), MdmAction::None),
        ("offline", Received, Some(200), MdmAction::None),
        ("dropped", Dropped, Some(200), MdmAction::WaitForPoll),
        (
            "channelthrottled",
            ChannelThrottled,
            Some(200),
            MdmAction::WaitForPoll,
        ),
        (
            "gone",
            ChannelExpired,
            Some(410),
            MdmAction::ResetPfnAtNextSync,
        ),
        (
            "invalid",
            ChannelInvalid,
            Some(404),
            MdmAction::RefreshChannelAtNextSync,
        ),
        (
            "otherapp",
            ChannelAppMismatch,
            Some(403),
            MdmAction::FixPfnOrCredentials,
        ),
        ("throttle406-0", Throttled, Some(406), MdmAction::RetryLater),
        (
            "throttle429-0",
            RateLimited,
            Some(429),
            MdmAction::RetryLater,
        ),
        ("unavailable", Unavailable, Some(503), MdmAction::RetryLater),
        ("error", ServerError, Some(500), MdmAction::RetryLater),
        (
            "blocked",
            DomainBlocked,
            Some(410),
            MdmAction::StopPushingForPfn,
        ),
        ("badrequest", BadRequest, Some(400), MdmAction::FixRequest),
        (
            "notallowed",
            MethodNotAllowed,
            Some(405),
            MdmAction::FixRequest,
        ),
        (
            "toolarge",
            PayloadTooLarge,
            Some(413),
            MdmAction::FixRequest,
        ),
    ];
    for (i, (behaviour, kind, status, action)) in cases.into_iter().enumerate() {
        let o = engine
            .submit(Notification::wake("t", channel(behaviour, i)))
            .await;
        assert_eq!(o.kind, kind, "{behaviour}: {o:?}");
        assert_eq!(o.status, status, "{behaviour}");
        assert_eq!(o.mdm_action(), action, "{behaviour}");
        assert!(
            o.wns.msg_id().is_some_and(|m| m.len() == 16),
            "{behaviour}: msg id {o:?}"
        );
        assert!(o.wns.debug_trace().is_some(), "{behaviour}");
        assert!(o.wns.ms_cv().is_some(), "{behaviour}");
        let expected_attempts = if kind.is_retryable() { 2 } else { 1 };
        assert_eq!(o.attempts, expected_attempts, "{behaviour}: {o:?}");
    }
    // 401 for every token: exactly one refresh and one resend, then final.
    let before = emu.stats().token_requests.legacy;
    let o = engine
        .submit(Notification::wake("t", channel("revoked", "r")))
        .await;
    assert_eq!(o.kind, Unauthorized, "{o:?}");
    assert_eq!(o.status, Some(401));
    assert_eq!(o.attempts, 2, "{o:?}");
    assert_eq!(o.mdm_action(), MdmAction::FixCredentials);
    assert_eq!(emu.stats().token_requests.legacy, before + 1);
    // The error description travels with the outcome.
    let o = engine
        .submit(Notification::wake("t", channel("otherapp", "d")))
        .await;
    assert_eq!(
        o.detail.as_deref(),
        Some("Channel URL incompatible with caller app")
    );
    // 413: a payload over 5000 bytes never leaves (refused by Payload::new) ...
    assert!(fleetwake::Payload::new(vec![b'x'; 5001]).is_err());
    // ... and the emulator enforces it too (so classification of 413 is real).
    let stats = emu.stats();
    assert_eq!(
        stats.by_channel.get("gone.4").and_then(|m| m.get(&410)),
        Some(&1)
    );
    // Retryable kinds were sent twice, final ones once.
    assert_eq!(
        stats
            .by_channel
            .get("unavailable.9")
            .and_then(|m| m.get(&503)),
        Some(&2)
    );
    // Request for status brings the device connection status back.
    let mut n = Notification::wake("t", channel("offline", "rfs"));
    n.options.request_for_status = true;
    let o = engine.submit(n).await;
    assert_eq!(o.wns.device_connection_status(), Some("disconnected"));
    // The offline channel holds exactly one cached push.
    assert!(emu.cached_push("offline.1").is_some());
    engine.shutdown(Duration::from_secs(5)).await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_errors_are_outcomes() {
    // Nothing listens on this port: connect error, retryable.
    let sock = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = sock.local_addr().unwrap();
    drop(sock);
    let emu = emulator(HttpVersions::Both).await;
    let mut t = transport_for(&emu);
    t.resolve.insert(
        0,
        format!("dead.notify.windows.com={dead}").parse().unwrap(),
    );
    // A server whose certificate the client does not trust: TLS error.
    let other = emulator(HttpVersions::Both).await;
    t.resolve.insert(
        0,
        format!("untrusted.notify.windows.com={}", other.local_addr())
            .parse()
            .unwrap(),
    );
    // A server that accepts TCP and never answers: timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let _keep = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    t.resolve.insert(
        0,
        format!("silent.notify.windows.com={silent_addr}")
            .parse()
            .unwrap(),
    );
    t.tls_timeout = Duration::from_millis(300);
    t.connect_timeout = Duration::from_millis(300);
    let engine = Engine::builder()
        .transport(t)
        .tenant(tenant("t"))
        .retry(RetryPolicy::none())
        .build()
        .unwrap();
    let uri = |h: &str| {
        fleetwake::ChannelUri::parse(&format!("https://{h}.notify.windows.com/?token=ok.1"))
            .unwrap()
    };
    let o = engine.submit(Notification::wake("t", uri("db5p"))).await;
    assert_eq!(o.kind, OutcomeKind::Received, "{o:?}");
    let o = engine.submit(Notification::wake("t", uri("dead"))).await;
    assert_eq!(o.kind, OutcomeKind::ConnectError, "{o:?}");
    assert!(
        o.detail
            .as_deref()
            .unwrap_or("")
            .contains("dead.notify.windows.com"),
        "{o:?}"
    );
    let o = engine
        .submit(Notification::wake("t", uri("untrusted")))
        .await;
    assert_eq!(o.kind, OutcomeKind::TlsError, "{o:?}");
    let o = engine.submit(Notification::wake("t", uri("silent"))).await;
    assert_eq!(o.kind, OutcomeKind::Timeout, "{o:?}");
    assert!(o.kind.is_retryable());
    engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_expiry_during_1000_concurrent_sends_costs_one_token_request() {
    let emu = emulator(HttpVersions::Both).await;
    let engine = engine(&emu, quick_retries());
    let o = engine
        .submit(Notification::wake("t", channel("ok", "warmup")))
        .await;
    assert_eq!(o.kind, OutcomeKind::Received);
    assert_eq!(emu.stats().token_requests.legacy, 1);
    emu.expire_tokens();
    let input = (0..1000).map(|i| (i, Notification::wake("t", channel("ok", format!("dev{i}")))));
    let outcomes: Vec<_> = engine.submit_iter(input, 1000).collect().await;
    assert_eq!(outcomes.len(), 1000);
    let ids: HashSet<_> = outcomes.iter().map(|(i, _)| *i).collect();
    assert_eq!(ids.len(), 1000, "every notification has its outcome");
    for (i, o) in &outcomes {
        assert_eq!(o.kind, OutcomeKind::Received, "device {i}: {o:?}");
    }
    let stats = emu.stats();
    assert_eq!(
        stats.token_requests.legacy, 2,
        "exactly one refresh for the whole burst"
    );
    assert_eq!(engine.token_requests("t"), Some(2));
    assert!(
        stats.by_status.get(&401).copied().unwrap_or(0) >= 1,
        "the old token was refused at least once"
    );
    assert_eq!(stats.by_status.get(&200).copied(), Some(1001));
    engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_give_one_token_request_and_a_clear_error() {
    let emu = emulator(HttpVersions::Both).await;
    let bad = TenantConfig::new(
        "bad",
        Credentials::PackageSid {
            package_sid: SID.into(),
            secret: Secret::new("invalid-secret"),
        },
    )
    .rate_limit(RateLimit::per_second(100_000));
    let engine = Engine::builder()
        .transport(transport_for(&emu))
        .tenant(bad)
        .tenant(tenant("good"))
        .build()
        .unwrap();
    let input = (0..200).map(|i| {
        let t = if i % 2 == 0 { "bad" } else { "good" };
        (i, Notification::wake(t, channel("ok", i)))
    });
    let outcomes: Vec<_> = engine.submit_iter(input, 200).collect().await;
    for (i, o) in outcomes {
        if i % 2 == 0 {
            assert_eq!(o.kind, OutcomeKind::CredentialRejected, "{o:?}");
            assert_eq!(o.mdm_action(), MdmAction::FixCredentials);
            assert_eq!(o.attempts, 0);
            let d = o.detail.unwrap_or_default();
            assert!(d.contains("invalid_client") && d.contains("\"bad\""), "{d}");
            assert!(
                !d.contains("invalid-secret"),
                "the secret never appears: {d}"
            );
        } else {
            assert_eq!(
                o.kind,
                OutcomeKind::Received,
                "the good tenant is not starved: {o:?}"
            );
        }
    }
    assert_eq!(
        emu.stats().token_requests.rejected,
        1,
        "no retry storm on the token endpoint"
    );
    engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_id_flow_works() {
    let emu = emulator(HttpVersions::Both).await;
    let t = TenantConfig::new(
        "entra",
        Credentials::EntraId {
            tenant_id: "contoso".into(),
            client_id: "app-1".into(),
            secret: Secret::new("s"),
        },
    )
    .rate_limit(RateLimit::per_second(1000));
    let engine = Engine::builder()
        .transport(transport_for(&emu))
        .tenant(t)
        .build()
        .unwrap();
    let o = engine
        .submit(Notification::wake("entra", channel("ok", 1)))
        .await;
    assert_eq!(o.kind, OutcomeKind::Received, "{o:?}");
    let stats = emu.stats();
    assert_eq!(stats.token_requests.entra, 1);
    assert_eq!(stats.token_requests.legacy, 0);
    engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_refreshed_before_expiry_without_401s() {
    let emu = emulator_with(fleetwake::emulator::EmulatorConfig {
        token_lifetime: Duration::from_secs(2),
        ..Default::default()
    })
    .await;
    let engine = engine(&emu, quick_retries());
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < Duration::from_millis(4500) {
        let o = engine
            .submit(Notification::wake("t", channel("ok", i)))
            .await;
        assert_eq!(o.kind, OutcomeKind::Received);
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = emu.stats();
    assert!(
        stats.token_requests.legacy >= 3,
        "refreshed as the 2 s tokens aged: {:?}",
        stats.token_requests
    );
    assert_eq!(
        stats.by_status.get(&401),
        None,
        "refreshed ahead of expiry, so no request was refused"
    );
    engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_pfn_rate_limit_as_measured_by_the_emulator() {
    let emu = emulator(HttpVersions::Both).await;
    let rate = 100;
    let burst = 10;
    let t = tenant("t").rate_limit(RateLimit::per_second(rate).with_burst(burst));
    // A second tenant with the same PFN shares the limit.
    let t2 = tenant("t2")
        .rate_limit(RateLimit::per_second(rate).with_burst(burst))
        .pfn("t");
    let t = t.pfn("t");
    let engine = Engine::builder()
        .transport(transport_for(&emu))
        .tenant(t)
        .tenant(t2)
        .build()
        .unwrap();
    let started = Instant::now();
    let input = (0..360).map(|i| {
        (
            i,
            Notification::wake(if i % 2 == 0 { "t" } else { "t2" }, channel("ok", i)),
        )
    });
    let outcomes: Vec<_> = engine.submit_iter(input, 400).collect().await;
    let took = started.elapsed();
    assert!(outcomes
        .iter()
        .all(|(_, o)| o.kind == OutcomeKind::Received));
    let stats = emu.stats();
    let max = stats.max_rate_per_app.get(SID).copied().unwrap_or(0);
    // The limiter starts at most rate + burst requests in any one-second window.
    // The emulator counts arrivals, which trail the starts by a variable network
    // and scheduling delay; 50 ms of such jitter is allowed (5 requests at 100/s).
    let jitter = u64::from(rate) / 20;
    assert!(
        max <= u64::from(rate + burst) + jitter,
        "max {max} pushes in one second exceeds {rate}/s + burst {burst}"
    );
    assert!(
        max >= u64::from(rate) * 8 / 10,
        "the limiter is not needlessly slow: {max}"
    );
    // 360 requests at 100/s after a burst of 10 take at least 3.4 s.
    assert!(took >= Duration::from_millis(3400), "{took:?}");
    engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wakes_for_one_channel_are_coalesced() {
    let emu = emulator(HttpVersions::Both).await;
    let engine = engine(&emu, quick_retries());
    let input = (0..50).map(|i| (i, Notification::wake("t", channel("slow-300", "same"))));
    let outcomes: Vec<_> = engine.submit_iter(input, 50).collect().await;
    assert_eq!(outcomes.len(), 50);
    assert!(outcomes
        .iter()
        .all(|(_, o)| o.kind == OutcomeKind::Received));
    assert_eq!(outcomes.iter().filter(|(_, o)| o.coalesced).count(), 49);
    let stats = emu.stats();
    assert_eq!(
        stats
            .by_channel
            .get("slow-300.same")
            .and_then(|m| m.get(&200)),
        Some(&1),
        "one push for fifty wakes"
    );
    // Once the first wake is final, a new wake is sent again.
    let o = engine
        .submit(Notification::wake("t", channel("slow-300", "same")))
        .await;
    assert!(!o.coalesced);
    assert_eq!(
        emu.stats()
            .by_channel
            .get("slow-300.same")
            .and_then(|m| m.get(&200)),
        Some(&2)
    );
    engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let emu = emulator(HttpVersions::Both).await;
    let engine = engine(
        &emu,
        RetryPolicy {
            max_attempts: 2,
            ..quick_retries()
        },
    );
    // 503 with Retry-After: 1 -> the second attempt comes at least 1 s after the first.
    let o = engine
        .submit(Notification::wake("t", channel("unavailable-1", "a")))
        .await;
    assert_eq!(o.kind, OutcomeKind::Unavailable);
    assert_eq!(o.attempts, 2);
    assert_eq!(o.retry_after, Some(Duration::from_secs(1)));
    assert!(o.latency >= Duration::from_secs(1), "{:?}", o.latency);
    assert!(o.latency < Duration::from_secs(3), "{:?}", o.latency);
    // X-WNS-CONTINUE-AFTER counts the same.
    let o = engine
        .submit(Notification::wake("t", channel("continueafter-1", "b")))
        .await;
    assert_eq!(o.kind, OutcomeKind::Throttled);
    assert!(o.latency >= Duration::from_secs(1), "{:?}", o.latency);
    // 429 pauses the whole PFN: an unrelated wake right after waits the pause out.
    // (A fresh engine, so the 406 pauses above do not overlap.)
    let engine = common::engine(
        &emu,
        RetryPolicy {
            max_attempts: 2,
            ..quick_retries()
        },
    );
    let e2 = engine.clone();
    let throttled = tokio::spawn(async move {
        e2.submit(Notification::wake("t", channel("throttle429-2", "c")))
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = Instant::now();
    let o = engine
        .submit(Notification::wake("t", channel("ok", "after-429")))
        .await;
    assert_eq!(o.kind, OutcomeKind::Received);
    assert!(
        t0.elapsed() >= Duration::from_millis(1500),
        "paused for Retry-After: {:?}",
        t0.elapsed()
    );
    let o = throttled.await.unwrap();
    assert_eq!(o.kind, OutcomeKind::RateLimited);
    // A Retry-After longer than the deadline ends the wake at once, as retry-later.
    let short = RetryPolicy {
        deadline: Duration::from_secs(1),
        pause_tenant_on_throttle: false,
        ..quick_retries()
    };
    let engine2 = common::engine(&emu, short);
    let t0 = Instant::now();
    let o = engine2
        .submit(Notification::wake("t", channel("throttle429-30", "d")))
        .await;
    assert_eq!((o.kind, o.attempts), (OutcomeKind::RateLimited, 1));
    assert_eq!(o.mdm_action(), MdmAction::RetryLater);
    assert!(t0.elapsed() < Duration::from_millis(900));
    engine.shutdown(Duration::from_secs(5)).await;
    engine2.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaky_channel_recovers_within_the_retry_budget() {
    let emu = emulator(HttpVersions::Both).await;
    let engine = engine(&emu, quick_retries());
    let o = engine
        .submit(Notification::wake("t", channel("flaky-2", "x")))
        .await;
    assert_eq!(o.kind, OutcomeKind::Received, "{o:?}");
    assert_eq!(o.attempts, 3);
    engine.shutdown(Duration::from_secs(5)).await;
}

async fn protocol_check(server: HttpVersions, client: fleetwake::HttpPolicy, want: &str) {
    let emu = emulator(server).await;
    let mut t = transport_for(&emu);
    t.http = client;
    t.h2_connections_per_host = 3;
    t.h1_connections_per_host = 8;
    let engine = Engine::builder()
        .transport(t)
        .tenant(tenant("t"))
        .build()
        .unwrap();
    let input = (0..300).map(|i| (i, Notification::wake("t", channel("slow-20", i))));
    let outcomes: Vec<_> = engine.submit_iter(input, 300).collect().await;
    assert!(
        outcomes
            .iter()
            .all(|(_, o)| o.kind == OutcomeKind::Received),
        "{want}"
    );
    assert_eq!(
        engine.transport().protocol_for("db5p.notify.windows.com"),
        Some(want)
    );
    let c = emu.stats().connections;
    if want == "h2" {
        // Three multiplexed connections to the channel host, one to login.live.com.
        assert_eq!((c.h2, c.h1), (3 + 1, 0), "three multiplexed h2 connections");
    } else {
        assert_eq!(c.h2, 0);
        // At most eight to the channel host, plus one to login.live.com.
        assert!(
            c.h1 <= 8 + 1 && c.h1 >= 3,
            "a bounded keep-alive pool: {c:?}"
        );
    }
    engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_multiplexed_over_several_connections() {
    protocol_check(HttpVersions::Both, fleetwake::HttpPolicy::Auto, "h2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_keep_alive_when_the_server_has_no_h2() {
    protocol_check(
        HttpVersions::Http1Only,
        fleetwake::HttpPolicy::Auto,
        "http1",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_when_the_client_policy_says_so() {
    protocol_check(
        HttpVersions::Both,
        fleetwake::HttpPolicy::Http1Only,
        "http1",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_what_is_in_flight() {
    let emu = emulator(HttpVersions::Both).await;
    let engine = engine(&emu, quick_retries());
    let e2 = engine.clone();
    let all = tokio::spawn(async move {
        let input = (0..200).map(|i| (i, Notification::wake("t", channel("slow-400", i))));
        e2.submit_iter(input, 200).collect::<Vec<_>>().await
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let report = engine.shutdown(Duration::from_secs(10)).await;
    assert!(report.drained);
    let outcomes = all.await.unwrap();
    assert_eq!(outcomes.len(), 200);
    let received = outcomes
        .iter()
        .filter(|(_, o)| o.kind == OutcomeKind::Received)
        .count();
    assert_eq!(
        received, 200,
        "everything accepted before shutdown was sent"
    );
    assert_eq!(emu.stats().by_status.get(&200).copied(), Some(200));
    let o = engine
        .submit(Notification::wake("t", channel("ok", "late")))
        .await;
    assert_eq!(o.kind, OutcomeKind::ShutDown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_grace_bounds_the_wait() {
    let emu = emulator(HttpVersions::Both).await;
    let engine = engine(&emu, quick_retries());
    let e2 = engine.clone();
    let stuck = tokio::spawn(async move {
        e2.submit(Notification::wake("t", channel("slow-5000", "s")))
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = Instant::now();
    let report = engine.shutdown(Duration::from_millis(300)).await;
    assert!(!report.drained);
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert_eq!(stuck.await.unwrap().kind, OutcomeKind::ShutDown);
}

#[tokio::test]
async fn tenants_sharing_a_pfn_must_agree_on_its_rate_limit() {
    let tenant = |name: &str, rate: u32| {
        TenantConfig::new(
            name,
            Credentials::PackageSid {
                package_sid: SID.into(),
                secret: Secret::new("s"),
            },
        )
        .pfn("Contoso.MDM_8wekyb3d8bbwe")
        .rate_limit(RateLimit::per_second(rate))
    };
    let err = Engine::builder()
        .tenant(tenant("a", 200))
        .tenant(tenant("b", 100))
        .build()
        .expect_err("different limits on one PFN are refused");
    let msg = err.to_string();
    assert!(
        msg.contains("\"a\"") && msg.contains("\"b\"") && msg.contains("Contoso.MDM_8wekyb3d8bbwe"),
        "{msg}"
    );
    assert!(msg.contains("200/s") && msg.contains("100/s"), "{msg}");
    // The same limit on both is fine: they share one limiter.
    let engine = Engine::builder()
        .tenant(tenant("a", 200))
        .tenant(tenant("b", 200))
        .build()
        .expect("same limit");
    engine.shutdown(Duration::from_secs(1)).await;
}

/// Threads of this process whose name starts with `prefix`.
fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(|t| t.ok())
                .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                .filter(|n| n.starts_with(prefix))
                .count()
        })
        .unwrap_or(0)
}

/// Waits (bounded) until `n` threads are named `prefix` (a new thread
/// names itself once it runs).
async fn lane_threads(prefix: &str, n: usize) -> usize {
    for _ in 0..100 {
        if threads_named(prefix) == n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    threads_named(prefix)
}

/// Waits (bounded) until no thread named `prefix` is left.
async fn lanes_gone(prefix: &str) -> bool {
    lane_threads(prefix, 0).await == 0
}

/// Engine lanes: the shards on threads of their own, each with its own
/// connections. Both protocols deliver every wake, coalescing still holds
/// (a channel has one shard, so one lane), the connections are split between
/// the lanes, and shutdown drains the lanes and ends their threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lanes_deliver_coalesce_split_connections_and_shut_down() {
    for (policy, want) in [
        (fleetwake::HttpPolicy::Auto, "h2"),
        (fleetwake::HttpPolicy::Http1Only, "http1"),
    ] {
        let emu = emulator(HttpVersions::Both).await;
        let mut t = transport_for(&emu);
        t.http = policy;
        t.h2_connections_per_host = 4;
        t.h1_connections_per_host = 8;
        let engine = Engine::builder()
            .transport(t)
            .tenant(tenant("t"))
            .shards(4)
            .lanes(2)
            .build()
            .unwrap();
        assert_eq!(engine.lane_handles().len(), 2);
        assert_eq!(lane_threads("fleetwake-lane", 2).await, 2, "{want}");
        // Every channel is on one lane, and both lanes get some.
        let lanes: HashSet<_> = (0..64)
            .filter_map(|i| engine.lane_of(&channel("ok", i)))
            .collect();
        assert_eq!(lanes, HashSet::from([0, 1]));
        // 400 wakes for 200 channels (each twice, at once): 200 requests.
        let input = (0..400).map(|i| (i, Notification::wake("t", channel("slow-20", i % 200))));
        let outcomes: Vec<_> = engine.submit_iter(input, 400).collect().await;
        assert_eq!(outcomes.len(), 400);
        assert!(outcomes
            .iter()
            .all(|(_, o)| o.kind == OutcomeKind::Received));
        let coalesced = outcomes.iter().filter(|(_, o)| o.coalesced).count();
        assert_eq!(
            emu.stats().by_status.get(&200).copied(),
            Some(400 - coalesced as u64)
        );
        assert!(coalesced > 0, "{want}: duplicates in flight were merged");
        assert_eq!(
            engine.transport().protocol_for("db5p.notify.windows.com"),
            Some(want)
        );
        let c = emu.stats().connections;
        if want == "h2" {
            // Two per lane to the channel host, one to login.live.com.
            assert_eq!((c.h2, c.h1), (2 + 2 + 1, 0), "{c:?}");
        } else {
            // At most four per lane, plus the token endpoint's.
            assert!(c.h1 <= 4 + 4 + 1 && c.h2 == 0, "{c:?}");
        }
        // A producer on a lane, for channels of that lane.
        let e2 = engine.clone();
        let on_lane = engine.lane_handles()[1].spawn(async move {
            let ch = (0..)
                .map(|i| channel("ok", format!("lane1-{i}")))
                .find(|c| e2.lane_of(c) == Some(1))
                .unwrap();
            e2.submit(Notification::wake("t", ch)).await.kind
        });
        assert_eq!(on_lane.await.unwrap(), OutcomeKind::Received);
        let report = engine.shutdown(Duration::from_secs(5)).await;
        assert!(report.drained);
        assert!(
            lanes_gone("fleetwake-lane").await,
            "{want}: lane threads ended"
        );
    }
    // An engine with lanes dropped without a shutdown still ends its lanes'
    // threads: its queues close, so the shards end. (In this test, not one
    // of its own: tests run in parallel and count threads by name.)
    let emu = emulator(HttpVersions::Both).await;
    let engine = Engine::builder()
        .transport(transport_for(&emu))
        .tenant(tenant("t"))
        .lanes(2)
        .build()
        .unwrap();
    let o = engine
        .submit(Notification::wake("t", channel("ok", 1)))
        .await;
    assert_eq!(o.kind, OutcomeKind::Received);
    assert_eq!(lane_threads("fleetwake-lane", 2).await, 2);
    drop(engine);
    assert!(lanes_gone("fleetwake-lane").await);
}

/// The lanes' threads run under the scheduling policy asked for: Linux's
/// `SCHED_BATCH` by default (a lane that wakes does not preempt the thread on
/// its core), the default policy with `LaneScheduling::Normal`; the caller's
/// threads are left alone.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lane_threads_take_the_scheduling_policy_asked_for() {
    fn policy() -> i32 {
        // SAFETY: a plain query about the calling thread.
        unsafe { libc::sched_getscheduler(0) }
    }
    let emu = emulator(HttpVersions::Both).await;
    for (asked, want) in [
        (None, libc::SCHED_BATCH),
        (Some(fleetwake::LaneScheduling::Batch), libc::SCHED_BATCH),
        (Some(fleetwake::LaneScheduling::Normal), libc::SCHED_OTHER),
    ] {
        let mut b = Engine::builder()
            .transport(transport_for(&emu))
            .tenant(tenant("t"))
            .shards(2)
            .lanes(2);
        if let Some(s) = asked {
            b = b.lane_scheduling(s);
        }
        let engine = b.build().unwrap();
        for (lane, h) in engine.lane_handles().iter().enumerate() {
            let got = h.spawn(async { policy() }).await.unwrap();
            assert_eq!(got, want, "lane {lane}, asked {asked:?}");
        }
        // A wake still goes through a lane under that policy.
        let o = engine
            .submit(Notification::wake("t", channel("ok", "policy")))
            .await;
        assert_eq!(o.kind, OutcomeKind::Received, "{asked:?}");
        assert_eq!(
            policy(),
            libc::SCHED_OTHER,
            "the caller's thread is not changed"
        );
        engine.shutdown(Duration::from_secs(5)).await;
    }
}
