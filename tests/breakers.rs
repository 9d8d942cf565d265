//! Failing fast when nothing can succeed (issue 20): the token endpoint's
//! breaker in `serve` and `consume`, against an emulator whose token endpoint
//! address is a closed port until a relay to the emulator is started on it
//! (the endpoint "comes back"). The campaign and bench cases are in
//! tests/cli_campaign.rs and tests/bench_smoke.rs.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fleetwake::emulator::HttpVersions;

/// Starts relaying TCP connections on `port` to `to`: the endpoint is back.
async fn relay(port: u16, to: SocketAddr) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the closed port is free to listen on");
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    })
}

/// `login.live.com` points at `port` instead of the emulator.
fn token_endpoint_at(config: &std::path::Path, emu: SocketAddr, port: u16) {
    let text = std::fs::read_to_string(config).unwrap().replace(
        &format!("\"login.live.com={emu}\""),
        &format!("\"login.live.com=127.0.0.1:{port}\""),
    );
    assert!(text.contains(&format!("login.live.com=127.0.0.1:{port}")));
    std::fs::write(
        config,
        format!("{text}\n[engine]\nbreaker_open_after_s = 2\n"),
    )
    .unwrap();
}

/// `serve` while the token endpoint is down: after the breaker opens, `POST
/// /v1/wakes` answers 503 with `Retry-After` and the reason (host, address,
/// OS error), and `/readyz` says not ready and why; once the endpoint is back,
/// the breaker's own probe closes it and wakes are accepted and received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_503_while_the_token_breaker_is_open() {
    use common::serve::*;
    let emu = common::emulator(HttpVersions::Both).await;
    let dir = tempfile::tempdir().unwrap();
    let port = common::closed_port();
    let config = write_config(dir.path(), &emu, "");
    token_endpoint_at(&config, emu.local_addr(), port);
    let server = start(&config);
    let addr = server.addr;
    let body = format!("{{\"wakes\":[{}]}}", wake("d1", "ok.1"));
    // The first requests are accepted and end `token_unavailable` while the
    // endpoint fails; within the breaker's 2 s it opens.
    let post = |body: String| {
        tokio::task::spawn_blocking(move || {
            request(
                addr,
                "POST",
                "/v1/wakes?wait=true",
                Some(KEY_A),
                Some(body.as_bytes()),
            )
        })
    };
    let t0 = Instant::now();
    let refused = loop {
        let r = post(body.clone()).await.unwrap();
        if r.status == 503 {
            break r;
        }
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["results"][0]["outcome"], "token_unavailable");
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the breaker never opened"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let opened = t0.elapsed();
    let why = refused.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    eprintln!("503 after {opened:?}: {why}");
    assert!(
        why.contains(&format!("connect login.live.com (127.0.0.1:{port})"))
            && why.contains("Connection refused"),
        "{why}"
    );
    let wait: u64 = refused.headers["retry-after"].parse().unwrap();
    assert!((1..=20).contains(&wait), "Retry-After {wait}");
    let ready = tokio::task::spawn_blocking(move || request(addr, "GET", "/readyz", None, None))
        .await
        .unwrap();
    assert_eq!(ready.status, 503);
    let j = ready.json();
    assert_eq!(j["status"], "token_endpoint_down");
    assert!(
        j["reasons"][0]
            .as_str()
            .unwrap()
            .contains("Connection refused"),
        "{j}"
    );
    assert!(ready.headers.contains_key("retry-after"));
    assert_eq!(emu.stats().pushes_total, 0);

    // The endpoint comes back; nobody sends a wake, yet the breaker closes.
    let _relay = relay(port, emu.local_addr()).await;
    let t1 = Instant::now();
    loop {
        let r = tokio::task::spawn_blocking(move || request(addr, "GET", "/readyz", None, None))
            .await
            .unwrap();
        if r.status == 200 {
            break;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(30),
            "the breaker never closed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "ready again {:?} after the endpoint came back",
        t1.elapsed()
    );
    let r = post(body).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["results"][0]["outcome"], "received");
    assert_eq!(server.stop(), Some(0));
}

/// `consume` while the token endpoint is down: nothing is pushed and no
/// result is published (retryable outcomes are nak'd with a delay); once the
/// breaker is open the instance stops pulling and its `/readyz` says why;
/// when the endpoint is back, every message is woken.
#[cfg(feature = "nats")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_naks_and_pauses_while_the_token_breaker_is_open() {
    use bytes::Bytes;
    use common::nats::*;
    let emu = common::emulator(HttpVersions::Both).await;
    let js = js().await;
    let n = names("tokendown");
    let dir = tempfile::tempdir().unwrap();
    let port = common::closed_port();
    let listen = free_port();
    let config = write_config(
        dir.path(),
        &emu,
        &n,
        "rate_per_second = 2000\nburst = 200",
        "max_attempts = 2\nbase_delay_ms = 20\nmax_delay_ms = 100",
        &format!(
            "nak_base_delay_ms = 200\nnak_max_delay_ms = 1000\nlisten = \"127.0.0.1:{listen}\""
        ),
    );
    token_endpoint_at(&config, emu.local_addr(), port);
    let c = spawn_consumer_log(&config, "a", "warn");
    wait_ready(&js, &n).await;
    let bodies: Vec<Bytes> = (0..50)
        .map(|i| wake(&format!("t-{i}"), &format!("ok.t-{i}"), ""))
        .collect();
    publish_all(&js, &n.subject, bodies).await;
    let t0 = Instant::now();
    let body = loop {
        let (code, body) = tokio::task::spawn_blocking(move || http_get(listen, "/readyz"))
            .await
            .unwrap();
        if code == 503 && body.contains("token_endpoint_down") {
            break body;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "never not ready: {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("not ready after {:?}: {body}", t0.elapsed());
    assert!(body.contains(&format!("127.0.0.1:{port}")), "{body}");
    assert_eq!(
        count_on(&js, &n.results_stream, &n.results).await,
        0,
        "nothing final yet"
    );
    assert_eq!(emu.stats().pushes_total, 0);

    let _relay = relay(port, emu.local_addr()).await;
    wait_all_done(&js, &n, 50, Duration::from_secs(60)).await;
    let rows = results(&js, &n).await;
    assert_eq!(rows.len(), 50);
    assert!(
        rows.iter().all(|r| r.row.outcome == "received"),
        "all woken once back"
    );
    let (code, stderr) = terminate(c);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("pulling nothing until one is back"),
        "{stderr}"
    );
}

/// The WNS target goes down (new connections closed, open ones cut) for 4 s
/// while the host breaker opens after 1 s. `when_open = fail`: wakes that meet
/// the open breaker end at once, `connect_error` with nothing sent and the
/// reason; `wait`: they wait it out and are all received when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_host_breaker_fails_wakes_at_once_or_waits_by_choice() {
    use common::*;
    use fleetwake::emulator::faults::Faults;
    use fleetwake::engine::{BreakerPolicy, EngineConfig, WhenOpen};
    use fleetwake::{Engine, Notification, OutcomeKind};
    use futures_util::StreamExt;
    for when_open in [WhenOpen::Fail, WhenOpen::Wait] {
        let emu = emulator(HttpVersions::Both).await;
        let engine = Engine::builder()
            .transport(transport_for(&emu))
            .tenant(tenant("t"))
            .config(EngineConfig {
                retry: quick_retries(),
                breaker: BreakerPolicy {
                    open_after: Duration::from_secs(1),
                    when_open,
                },
                ..EngineConfig::default()
            })
            .build()
            .unwrap();
        // The token first, so that only the WNS host is down.
        let o = engine
            .submit(Notification::wake("t", channel("ok", "warm")))
            .await;
        assert_eq!(o.kind, OutcomeKind::Received);
        emu.set_faults(during(
            0,
            4_000,
            Faults {
                down: true,
                ..Faults::default()
            },
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t0 = Instant::now();
        let input = (0..300).map(|i| (i, Notification::wake("t", channel("ok", i))));
        let outcomes: Vec<_> = engine.submit_iter(input, 300).collect().await;
        let took = t0.elapsed();
        let fast: Vec<_> = outcomes
            .iter()
            .filter(|(_, o)| o.kind == OutcomeKind::ConnectError && o.endpoint_down)
            .collect();
        let received = outcomes
            .iter()
            .filter(|(_, o)| o.kind == OutcomeKind::Received)
            .count();
        eprintln!(
            "{when_open:?}: {} failed at the open breaker, {received} received, in {took:?}",
            fast.len()
        );
        match when_open {
            WhenOpen::Fail => {
                assert!(!fast.is_empty(), "some wakes met the open breaker");
                let d = fast[0].1.detail.as_deref().unwrap_or_default();
                assert!(
                    d.contains("breaker open") && d.contains("db5p.notify.windows.com"),
                    "{d}"
                );
                assert!(fast[0].1.retry_after.is_some());
                assert!(
                    took < Duration::from_secs(4),
                    "ended before the target came back: {took:?}"
                );
            }
            WhenOpen::Wait => {
                assert!(fast.is_empty());
                // Those that met the breaker waited and were received; a few
                // may have spent their 3 attempts before it opened.
                for (i, o) in &outcomes {
                    assert!(
                        o.kind == OutcomeKind::Received || o.attempts == 3,
                        "device {i}: {o:?}"
                    );
                }
                assert!(received >= 290, "{received}");
                assert!(took >= Duration::from_secs(3), "{took:?}");
            }
        }
        engine.shutdown(Duration::from_secs(5)).await;
    }
}
