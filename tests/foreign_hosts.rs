//! A bearer token never reaches a host outside notify.windows.com: such URIs are
//! refused before a token is attached, and a listener standing in for the
//! foreign host sees no connection at all.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use fleetwake::emulator::HttpVersions;
use fleetwake::transport::{Transport, TransportErrorKind};
use fleetwake::{ChannelUri, Engine, Notification, Outcome, OutcomeKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_hosts_never_get_a_request() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let foreign = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((_s, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });

    let emu = emulator(HttpVersions::Both).await;
    let mut t = transport_for(&emu);
    // Every lookalike resolves to the foreign listener, so a leak would show there.
    for pattern in [
        "evil.test",
        "*.evil.test",
        "*.windows.com.evil.test",
        "*.com.evil.test",
        "evilnotify.windows.com",
        "windows.com",
    ] {
        t.resolve
            .insert(0, format!("{pattern}={foreign}").parse().unwrap());
    }
    let engine = Engine::builder()
        .transport(t.clone())
        .tenant(tenant("t"))
        .build()
        .unwrap();

    let hostile = [
        "https://evil.test/?token=ok.1",
        "https://notify.windows.com.evil.test/?token=ok.1",
        "https://db5p.notify.windows.com.evil.test/?token=ok.1",
        "https://evilnotify.windows.com/?token=ok.1",
        "https://windows.com/?token=ok.1",
        "https://db5p.notify.windows.com@evil.test/?token=ok.1",
        "https://evil.test@db5p.notify.windows.com/?token=ok.1",
        "https://127.0.0.1/?token=ok.1",
        &format!("https://{foreign}/?token=ok.1"),
        "https://db5p.notify.windows.com:8443/?token=ok.1",
        "http://db5p.notify.windows.com/?token=ok.1",
        "https://db5p%2enotify.windows.com.evil.test/?token=ok.1",
        "https://evil.test\\@db5p.notify.windows.com/",
        "https://db5p.notify.windows.com./?token=ok.1",
    ];
    for uri in hostile {
        let outcome = match Notification::parse("t", uri) {
            Ok(n) => engine.submit(n).await,
            Err(e) => Outcome::local(OutcomeKind::InvalidChannel, e.to_string()),
        };
        assert_eq!(
            outcome.kind,
            OutcomeKind::InvalidChannel,
            "{uri}: {outcome:?}"
        );
        assert!(
            outcome.detail.as_deref().is_some_and(|d| !d.is_empty()),
            "the outcome says why: {uri}"
        );
        assert_eq!(outcome.attempts, 0);
    }

    // The transport's own last line of defence: even a hand-built request with a
    // bearer token is refused for a foreign host, before any connection.
    let transport = Transport::new(t).unwrap();
    for url in [
        "https://evil.test/",
        "https://notify.windows.com.evil.test/?token=x",
        "https://db5p.notify.windows.com:8443/",
    ] {
        let req = http::Request::post(url)
            .header("authorization", "Bearer secret-token")
            .body(Bytes::from_static(b"wake"))
            .unwrap();
        let err = transport.send(req).await.unwrap_err();
        assert_eq!(err.kind, TransportErrorKind::Refused, "{url}");
        assert!(!err.message.contains("secret-token"));
    }

    // A real wake in the same setup still works, so the refusals are not an accident.
    let ok = engine
        .submit(Notification::wake(
            "t",
            ChannelUri::parse("https://db5p.notify.windows.com/?token=ok.real").unwrap(),
        ))
        .await;
    assert_eq!(ok.kind, OutcomeKind::Received);

    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "the foreign listener stayed silent"
    );
    engine.shutdown(Duration::from_secs(5)).await;
}
