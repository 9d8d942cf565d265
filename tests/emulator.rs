//! Integration tests: the emulator on 127.0.0.1:0, driven by a real TLS
//! client over HTTP/1.1 and HTTP/2.

mod support;

use std::time::{Duration, Instant};

use fleetwake::emulator::{
    EmulatedApp, EmulatorConfig, EmulatorError, EmulatorHandle, EmulatorStats, HttpVersions,
    TlsSource,
};
use http::Method;
use support::{tls_config, tls_connect, Client, Proto, Resp, BOTH, WNS_HOST};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn start() -> EmulatorHandle {
    EmulatorConfig::default().start().await.unwrap()
}

fn client(emu: &EmulatorHandle, proto: Proto) -> Client {
    Client::new(emu.local_addr(), emu.ca_pem().unwrap(), proto)
}

fn assert_common_headers(r: &Resp) {
    let id = r.header("x-wns-msg-id").expect("msg id");
    assert_eq!(id.len(), 16, "{id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    assert!(r.header("x-wns-debug-trace").unwrap().starts_with("EMU-"));
    assert!(r.header("ms-cv").is_some());
}

#[tokio::test]
async fn token_endpoints_both_flows() {
    for proto in BOTH {
        let emu = start().await;
        let c = client(&emu, proto);

        let r = c
            .legacy_token("ms-app://s-1-15-2-1", "secret", "notify.windows.com")
            .await;
        assert_eq!(r.status, 200, "{proto:?}");
        let j = r.json();
        assert_eq!(j["token_type"], "bearer");
        assert_eq!(j["expires_in"], serde_json::json!(86400));
        assert!(j["expires_in"].is_number());
        let t1 = j["access_token"].as_str().unwrap().to_owned();
        assert!(t1.len() >= 32);

        let r = c.entra_token("contoso-tenant", "app-guid", "secret").await;
        assert_eq!(r.status, 200);
        let j = r.json();
        assert_eq!(j["token_type"], "Bearer");
        assert_eq!(j["expires_in"], serde_json::json!("86399"));
        assert_eq!(j["ext_expires_in"], serde_json::json!("86399"));
        let t2 = j["access_token"].as_str().unwrap().to_owned();
        assert_ne!(t1, t2);

        // Both tokens push, and are attributed to their app keys.
        assert_eq!(c.push(&t1, "ok.a", &[], b"x").await.status, 200);
        assert_eq!(c.push(&t2, "ok.a", &[], b"x").await.status, 200);

        let bad = c
            .legacy_token("app", "invalid-secret", "notify.windows.com")
            .await;
        assert_eq!(bad.status, 400);
        assert_eq!(bad.json()["error"], "invalid_client");
        assert!(bad.json()["error_description"].is_string());

        let bad = c
            .legacy_token("app", "secret", "https://wns.windows.com/.default")
            .await;
        assert_eq!(bad.status, 400);
        assert_eq!(bad.json()["error"], "invalid_scope");

        let body = support::form(&[
            ("grant_type", "password"),
            ("client_id", "a"),
            ("client_secret", "b"),
            ("scope", "notify.windows.com"),
        ]);
        let ct = [("content-type", "application/x-www-form-urlencoded")];
        let bad = c
            .send(
                Method::POST,
                "login.live.com",
                "/accesstoken.srf",
                &ct,
                body,
            )
            .await;
        assert_eq!(bad.json()["error"], "unsupported_grant_type");

        let body = support::form(&[("grant_type", "client_credentials"), ("client_secret", "b")]);
        let bad = c
            .send(
                Method::POST,
                "login.live.com",
                "/accesstoken.srf",
                &ct,
                body,
            )
            .await;
        assert_eq!(bad.status, 400);
        assert_eq!(bad.json()["error"], "invalid_request");

        let bad = c
            .send(
                Method::POST,
                "login.live.com",
                "/accesstoken.srf",
                &[("content-type", "application/json")],
                "{}",
            )
            .await;
        assert_eq!(bad.json()["error"], "invalid_request");

        let s = emu.stats();
        assert_eq!(s.token_requests.legacy, 1);
        assert_eq!(s.token_requests.entra, 1);
        assert_eq!(s.token_requests.rejected, 5);
        assert_eq!(s.pushes_per_app.get("ms-app://s-1-15-2-1"), Some(&1));
        assert_eq!(s.pushes_per_app.get("contoso-tenant/app-guid"), Some(&1));
        let key = if proto == Proto::H1 { "h1" } else { "h2" };
        let conns = if proto == Proto::H1 {
            s.connections.h1
        } else {
            s.connections.h2
        };
        assert!(conns >= 1, "{key}");
        emu.shutdown().await;
    }
}

#[tokio::test]
async fn configured_apps_and_lifetime() {
    let emu = EmulatorConfig {
        apps: vec![EmulatedApp::new("app-1", "right")],
        token_lifetime: Duration::from_secs(3600),
        ..Default::default()
    }
    .start()
    .await
    .unwrap();
    let c = client(&emu, Proto::H2);
    let r = c.legacy_token("app-1", "wrong", "notify.windows.com").await;
    assert_eq!(
        (r.status.as_u16(), r.json()["error"].as_str()),
        (400, Some("invalid_client"))
    );
    let r = c.legacy_token("app-2", "right", "notify.windows.com").await;
    assert_eq!(r.json()["error"], "invalid_client");
    let r = c.legacy_token("app-1", "right", "notify.windows.com").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["expires_in"], 3600);
    let r = c.entra_token("t", "app-1", "right").await;
    assert_eq!(r.json()["expires_in"], "3599");
    emu.shutdown().await;
}

/// (channel token, status, X-WNS-Status, extra header expectations)
type Case = (
    &'static str,
    u16,
    Option<&'static str>,
    &'static [(&'static str, Option<&'static str>)],
);

const CASES: &[Case] = &[
    ("ok.1", 200, Some("received"), &[("retry-after", None)]),
    ("AwYAAABq7aWo", 200, Some("received"), &[]),
    ("offline.1", 200, Some("dropped"), &[]),
    ("dropped.1", 200, Some("dropped"), &[]),
    ("channelthrottled.1", 200, Some("channelthrottled"), &[]),
    (
        "gone.1",
        410,
        None,
        &[("x-wns-error-description", Some("The channel expired"))],
    ),
    ("invalid.1", 404, None, &[]),
    (
        "otherapp.1",
        403,
        None,
        &[(
            "x-wns-error-description",
            Some("Channel URL incompatible with caller app"),
        )],
    ),
    (
        "throttle406-30.1",
        406,
        None,
        &[("retry-after", Some("30")), ("x-wns-continue-after", None)],
    ),
    ("throttle429-7.1", 429, None, &[("retry-after", Some("7"))]),
    (
        "continueafter-12.1",
        406,
        None,
        &[("x-wns-continue-after", Some("12")), ("retry-after", None)],
    ),
    ("unavailable.1", 503, None, &[("retry-after", None)]),
    ("unavailable-9.1", 503, None, &[("retry-after", Some("9"))]),
    ("error.1", 500, None, &[]),
];

#[tokio::test]
async fn behaviours_over_both_protocols() {
    let emu = start().await;
    for proto in BOTH {
        let c = client(&emu, proto);
        let tok = c.token("app").await;
        for (channel, status, wns, extra) in CASES {
            let r = c.push(&tok, channel, &[], b"payload").await;
            assert_eq!(r.status.as_u16(), *status, "{proto:?} {channel}");
            assert_common_headers(&r);
            assert_eq!(r.header("x-wns-status"), *wns, "{channel}");
            assert_eq!(r.header("x-wns-notificationstatus"), *wns, "{channel}");
            assert_eq!(r.header("x-wns-deviceconnectionstatus"), None);
            for (name, want) in *extra {
                assert_eq!(r.header(name), *want, "{proto:?} {channel} {name}");
            }
        }
        // MS-CV is echoed.
        let r = c.push(&tok, "ok.cv", &[("ms-cv", "abc123.7")], b"x").await;
        assert_eq!(r.header("ms-cv"), Some("abc123.7"));
        // RequestForStatus.
        let r = c
            .push(&tok, "ok.rfs", &[("x-wns-requestforstatus", "true")], b"x")
            .await;
        assert_eq!(r.header("x-wns-deviceconnectionstatus"), Some("connected"));
        let r = c
            .push(
                &tok,
                "offline.rfs",
                &[("x-wns-requestforstatus", "true")],
                b"x",
            )
            .await;
        assert_eq!(
            r.header("x-wns-deviceconnectionstatus"),
            Some("disconnected")
        );
        let r = c
            .push(&tok, "ok.rfs", &[("x-wns-requestforstatus", "false")], b"x")
            .await;
        assert_eq!(r.header("x-wns-deviceconnectionstatus"), None);
    }

    // Message ids are unique; per-channel stats add up.
    let s = emu.stats();
    assert_eq!(s.by_channel["gone.1"][&410], 2);
    assert_eq!(s.by_channel["ok.rfs"][&200], 4);
    assert_eq!(s.by_status[&503], 4);
    let total: u64 = s.by_status.values().sum();
    assert_eq!(total, s.pushes_total);
    emu.shutdown().await;
}

#[tokio::test]
async fn message_ids_are_unique() {
    let emu = start().await;
    let c = client(&emu, Proto::H2);
    let tok = c.token("app").await;
    let mut ids = std::collections::HashSet::new();
    let mut traces = std::collections::HashSet::new();
    for _ in 0..200 {
        let r = c.push(&tok, "ok.u", &[], b"x").await;
        assert!(ids.insert(r.header("x-wns-msg-id").unwrap().to_owned()));
        assert!(traces.insert(r.header("x-wns-debug-trace").unwrap().to_owned()));
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn flaky_and_slow() {
    let emu = start().await;
    for proto in BOTH {
        let c = client(&emu, proto);
        let tok = c.token("app").await;
        let ch = format!("flaky-2.{proto:?}");
        let codes: Vec<u16> = {
            let mut v = Vec::new();
            for _ in 0..4 {
                v.push(c.push(&tok, &ch, &[], b"x").await.status.as_u16());
            }
            v
        };
        assert_eq!(codes, vec![503, 503, 200, 200]);
        // Rejected pushes (e.g. 401) do not consume flaky attempts.
        let ch = format!("flaky-1.{proto:?}");
        assert_eq!(c.push("bogus", &ch, &[], b"x").await.status, 401);
        assert_eq!(c.push(&tok, &ch, &[], b"x").await.status, 503);
        assert_eq!(c.push(&tok, &ch, &[], b"x").await.status, 200);

        let t0 = Instant::now();
        let r = c.push(&tok, "slow-300.x", &[], b"x").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-wns-status"), Some("received"));
        assert!(t0.elapsed() >= Duration::from_millis(300));
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn auth_invalid_vs_expired() {
    for proto in BOTH {
        let emu = start().await;
        let c = client(&emu, proto);
        let invalid = "Bearer error=\"invalid_request\",error_description=\"Invalid token\"";
        let expired = "Bearer error=\"invalid_request\",error_description=\"Token expired\"";

        // No Authorization header at all.
        let r = c
            .send(
                Method::POST,
                WNS_HOST,
                "/?token=ok.a",
                &[
                    ("x-wns-type", "wns/raw"),
                    ("content-type", "application/octet-stream"),
                ],
                "x",
            )
            .await;
        assert_eq!(r.status, 401);
        assert_eq!(r.header("www-authenticate"), Some(invalid));
        assert_eq!(r.header("x-wns-error-description"), Some("Invalid token"));
        assert_common_headers(&r);

        let r = c.push("never-issued", "ok.a", &[], b"x").await;
        assert_eq!(r.status, 401);
        assert_eq!(r.header("www-authenticate"), Some(invalid));

        let tok = c.token("app").await;
        assert_eq!(c.push(&tok, "ok.a", &[], b"x").await.status, 200);
        emu.expire_tokens();
        let r = c.push(&tok, "ok.a", &[], b"x").await;
        assert_eq!(r.status, 401);
        assert_eq!(r.header("www-authenticate"), Some(expired));
        assert_eq!(r.header("x-wns-error-description"), Some("Token expired"));

        // A new token works again; the admin endpoint expires it too.
        let tok2 = c.token("app").await;
        assert_eq!(c.push(&tok2, "ok.a", &[], b"x").await.status, 200);
        let r = c
            .send(Method::POST, WNS_HOST, "/_emulator/expire-tokens", &[], "")
            .await;
        assert_eq!(r.status, 200);
        let r = c.push(&tok2, "ok.a", &[], b"x").await;
        assert_eq!(r.header("www-authenticate"), Some(expired));

        // 401s are counted per channel and per app (expired token still names its app).
        let s = emu.stats();
        assert_eq!(s.by_channel["ok.a"][&401], 4);
        assert_eq!(s.by_channel["ok.a"][&200], 2);
        assert_eq!(s.pushes_per_app["app"], 4);
        emu.shutdown().await;
    }
}

#[tokio::test]
async fn token_expires_after_lifetime() {
    let emu = EmulatorConfig {
        token_lifetime: Duration::from_millis(400),
        ..Default::default()
    }
    .start()
    .await
    .unwrap();
    let c = client(&emu, Proto::H2);
    let r = c.legacy_token("app", "s", "notify.windows.com").await;
    assert_eq!(r.json()["expires_in"], 0);
    let tok = r.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(c.push(&tok, "ok.a", &[], b"x").await.status, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = c.push(&tok, "ok.a", &[], b"x").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("x-wns-error-description"), Some("Token expired"));
    emu.shutdown().await;
}

#[tokio::test]
async fn request_validation() {
    let emu = start().await;
    for proto in BOTH {
        let c = client(&emu, proto);
        let tok = c.token("app").await;
        let auth = format!("Bearer {tok}");

        let r = c
            .send(
                Method::GET,
                WNS_HOST,
                "/?token=ok.a",
                &[("authorization", &auth)],
                "",
            )
            .await;
        assert_eq!(r.status, 405, "{proto:?}");
        assert_common_headers(&r);

        let bad_type = [
            ("authorization", auth.as_str()),
            ("x-wns-type", "wns/toast"),
            ("content-type", "application/octet-stream"),
        ];
        let r = c
            .send(Method::POST, WNS_HOST, "/?token=ok.a", &bad_type, "x")
            .await;
        assert_eq!(r.status, 400);
        assert_eq!(
            r.header("x-wns-error-description"),
            Some("X-WNS-Type must be wns/raw")
        );

        let bad_ct = [
            ("authorization", auth.as_str()),
            ("x-wns-type", "wns/raw"),
            ("content-type", "text/xml"),
        ];
        let r = c
            .send(Method::POST, WNS_HOST, "/?token=ok.a", &bad_ct, "x")
            .await;
        assert_eq!(r.status, 400);

        let r = c
            .push(&tok, "ok.a", &[("expect", "100-continue")], b"x")
            .await;
        assert_eq!(r.status, 400);
        assert_eq!(
            r.header("x-wns-error-description"),
            Some("Expect header is not supported")
        );

        // hyper's HTTP/1.1 client sends no Content-Length for an empty body:
        // the emulator answers 411 there (documented choice), 400 on HTTP/2.
        let r = c.push(&tok, "ok.a", &[], b"").await;
        let want = if proto == Proto::H1 { 411 } else { 400 };
        assert_eq!(r.status, want, "{proto:?}");
        let r = c.push(&tok, "ok.a", &[("content-length", "0")], b"").await;
        assert_eq!(r.status, 400, "{proto:?}");
        assert_eq!(
            r.header("x-wns-error-description"),
            Some("Payload is empty")
        );

        let r = c.push(&tok, "ok.a", &[], &[7u8; 5000]).await;
        assert_eq!(r.status, 200);
        let r = c.push(&tok, "ok.a", &[], &[7u8; 5001]).await;
        assert_eq!(r.status, 413, "{proto:?}");
        // The connection is still usable after a 413.
        assert_eq!(c.push(&tok, "ok.a", &[], b"x").await.status, 200);
        let r = c.push(&tok, "ok.a", &[], &[7u8; 200_000]).await;
        assert_eq!(r.status, 413, "{proto:?}");

        for (h, v) in [
            ("x-wns-cache-policy", "sometimes"),
            ("x-wns-ttl", "-5"),
            ("x-wns-ttl", "ten"),
            ("x-wns-priority", "0"),
            ("x-wns-priority", "5"),
            ("x-wns-requestforstatus", "maybe"),
        ] {
            let r = c.push(&tok, "ok.a", &[(h, v)], b"x").await;
            assert_eq!(r.status, 400, "{h}: {v}");
        }
        for (h, v) in [
            ("x-wns-cache-policy", "No-Cache"),
            ("x-wns-ttl", "0"),
            ("x-wns-priority", "1"),
            ("x-wns-requestforstatus", "False"),
        ] {
            let r = c.push(&tok, "ok.a", &[(h, v)], b"x").await;
            assert_eq!(r.status, 200, "{h}: {v}");
        }

        // Missing / empty token query parameter.
        let hdrs = [
            ("authorization", auth.as_str()),
            ("x-wns-type", "wns/raw"),
            ("content-type", "application/octet-stream"),
        ];
        for path in ["/", "/?token=", "/w/?other=1"] {
            let r = c.send(Method::POST, WNS_HOST, path, &hdrs, "x").await;
            assert_eq!(r.status, 404, "{path}");
        }
        // Order: auth is checked before headers, body and token.
        let r = c.send(Method::POST, WNS_HOST, "/", &[], "").await;
        assert_eq!(r.status, 401);
    }
    emu.shutdown().await;
}

/// Raw HTTP/1.1 over TLS for what hyper's client will not send.
async fn raw_h1(emu: &EmulatorHandle, request: String) -> String {
    let cfg = tls_config(emu.ca_pem().unwrap(), &[b"http/1.1"]);
    let mut s = tls_connect(emu.local_addr(), cfg, WNS_HOST).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn http1_framing_rules() {
    let emu = start().await;
    let tok = client(&emu, Proto::H1).token("app").await;
    let head = format!(
        "POST /?token=ok.raw HTTP/1.1\r\nHost: {WNS_HOST}\r\nAuthorization: Bearer {tok}\r\n\
         X-WNS-Type: wns/raw\r\nContent-Type: application/octet-stream\r\n"
    );
    let r = raw_h1(
        &emu,
        format!("{head}Transfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n"),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    assert!(
        r.to_ascii_lowercase()
            .contains("x-wns-error-description: transfer-encoding"),
        "{r}"
    );

    let r = raw_h1(&emu, format!("{head}\r\n")).await;
    assert!(r.starts_with("HTTP/1.1 411"), "{r}");

    let r = raw_h1(&emu, format!("{head}Content-Length: 3\r\n\r\nabc")).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    emu.shutdown().await;
}

#[tokio::test]
async fn offline_cache_with_ttl() {
    for proto in BOTH {
        let emu = start().await;
        let c = client(&emu, proto);
        let tok = c.token("app").await;

        let r = c.push(&tok, "offline.nocache", &[], b"a").await;
        assert_eq!(r.header("x-wns-status"), Some("dropped"));
        let r = c
            .push(
                &tok,
                "offline.nocache",
                &[("x-wns-cache-policy", "no-cache")],
                b"a",
            )
            .await;
        assert_eq!(r.header("x-wns-status"), Some("dropped"));
        assert!(emu.cached_push("offline.nocache").is_none());

        let r = c
            .push(
                &tok,
                "offline.c1",
                &[("x-wns-cache-policy", "cache")],
                b"first",
            )
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-wns-status"), Some("received"));
        let r = c
            .push(
                &tok,
                "offline.c1",
                &[
                    ("x-wns-cache-policy", "CACHE"),
                    ("x-wns-ttl", "1"),
                    ("x-wns-priority", "2"),
                ],
                b"second",
            )
            .await;
        assert_eq!(r.header("x-wns-status"), Some("received"));
        let cached = emu.cached_push("offline.c1").expect("cached");
        assert_eq!(&cached.payload[..], b"second");
        assert_eq!(cached.msg_id, r.header("x-wns-msg-id").unwrap());
        assert_eq!(cached.ttl, Some(Duration::from_secs(1)));
        assert_eq!(cached.priority, Some(2));

        // No TTL: never expires.
        c.push(
            &tok,
            "offline.c2",
            &[("x-wns-cache-policy", "cache")],
            b"keep",
        )
        .await;
        assert_eq!(emu.stats().cached_pushes, 2);

        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(emu.cached_push("offline.c1").is_none());
        assert_eq!(&emu.cached_push("offline.c2").unwrap().payload[..], b"keep");
        assert_eq!(emu.stats().cached_pushes, 1);
        // Reset clears stats, not the cache.
        emu.reset_stats();
        assert_eq!(emu.stats().cached_pushes, 1);
        assert_eq!(emu.stats().pushes_total, 0);
        emu.shutdown().await;
    }
}

#[tokio::test]
async fn max_rate_per_app_sliding_window() {
    for proto in BOTH {
        let emu = start().await;
        let c = std::sync::Arc::new(client(&emu, proto));
        let tok_a = c.token("app-a").await;
        let tok_b = c.token("app-b").await;

        // A burst of 60 (concurrent on h2), a pause past the window, then 25.
        let burst = |n: usize, tok: String| {
            let c = c.clone();
            async move {
                let t0 = Instant::now();
                let mut set = tokio::task::JoinSet::new();
                for i in 0..n {
                    let (c, tok) = (c.clone(), tok.clone());
                    set.spawn(
                        async move { c.push(&tok, &format!("ok.{i}"), &[], b"x").await.status },
                    );
                }
                while let Some(s) = set.join_next().await {
                    assert_eq!(s.unwrap(), 200);
                }
                t0.elapsed()
            }
        };
        let took = burst(60, tok_a.clone()).await;
        assert!(
            took < Duration::from_millis(900),
            "burst too slow: {took:?}"
        );
        tokio::time::sleep(Duration::from_millis(1100)).await;
        burst(25, tok_a.clone()).await;
        burst(10, tok_b.clone()).await;

        let s = emu.stats();
        assert_eq!(s.max_rate_per_app["app-a"], 60, "{proto:?}");
        assert_eq!(s.pushes_per_app["app-a"], 85);
        assert_eq!(s.max_rate_per_app["app-b"], 10);
        assert_eq!(s.pushes_per_app["app-b"], 10);

        emu.reset_stats();
        let s = emu.stats();
        assert!(s.max_rate_per_app.is_empty() && s.pushes_per_app.is_empty());
        // Existing tokens keep counting after a reset.
        assert_eq!(c.push(&tok_a, "ok.z", &[], b"x").await.status, 200);
        assert_eq!(emu.stats().max_rate_per_app["app-a"], 1);
        emu.shutdown().await;
    }
}

#[tokio::test]
async fn admin_endpoints() {
    let emu = start().await;
    let c = client(&emu, Proto::H1);
    let tok = c.token("app").await;
    c.push(&tok, "gone.x", &[], b"x").await;
    let r = c
        .send(Method::GET, WNS_HOST, "/_emulator/stats", &[], "")
        .await;
    assert_eq!(r.status, 200);
    let s: EmulatorStats = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(s.by_channel["gone.x"][&410], 1);
    assert_eq!(s.by_status[&410], 1);
    assert_eq!(s.pushes_total, 1);
    assert_eq!(s.token_requests.legacy, 1);
    assert_eq!(s.connections.h1, 1);
    assert_eq!(s, emu.stats());

    let r = c
        .send(
            Method::GET,
            WNS_HOST,
            "/_emulator/stats?channels=false",
            &[],
            "",
        )
        .await;
    let s: EmulatorStats = serde_json::from_slice(&r.body).unwrap();
    assert!(s.by_channel.is_empty());
    assert_eq!(s.pushes_total, 1);

    let r = c
        .send(Method::POST, WNS_HOST, "/_emulator/reset", &[], "")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(emu.stats().pushes_total, 0);
    assert!(emu.stats().by_channel.is_empty());
    // The token survives a reset.
    assert_eq!(c.push(&tok, "ok.x", &[], b"x").await.status, 200);

    let r = c
        .send(Method::POST, WNS_HOST, "/_emulator/stats", &[], "")
        .await;
    assert_eq!(r.status, 405);
    let r = c
        .send(Method::GET, WNS_HOST, "/_emulator/nope", &[], "")
        .await;
    assert_eq!(r.status, 404);
    emu.shutdown().await;
}

#[tokio::test]
async fn alpn_selection_and_connection_stats() {
    async fn negotiated(emu: &EmulatorHandle, offer: &[&[u8]]) -> Option<Vec<u8>> {
        let cfg = tls_config(emu.ca_pem().unwrap(), offer);
        let s = tls_connect(emu.local_addr(), cfg, "login.live.com")
            .await
            .unwrap();
        s.get_ref().1.alpn_protocol().map(|p| p.to_vec())
    }
    let both: &[&[u8]] = &[b"h2", b"http/1.1"];
    for (http, want) in [
        (HttpVersions::Both, b"h2".as_slice()),
        (HttpVersions::Http1Only, b"http/1.1".as_slice()),
        (HttpVersions::Http2Only, b"h2".as_slice()),
    ] {
        let emu = EmulatorConfig {
            http,
            ..Default::default()
        }
        .start()
        .await
        .unwrap();
        assert_eq!(
            negotiated(&emu, both).await.as_deref(),
            Some(want),
            "{http:?}"
        );
        emu.shutdown().await;
    }

    let emu = start().await;
    let h1 = client(&emu, Proto::H1);
    let h2 = client(&emu, Proto::H2);
    h1.token("a").await;
    h1.token("a").await;
    h2.token("a").await;
    h2.token("a").await;
    let s = emu.stats();
    assert_eq!((s.connections.h1, s.connections.h2), (1, 1));
    emu.shutdown().await;
}

#[tokio::test]
async fn handshake_failures_do_not_stop_the_server() {
    let emu = start().await;
    // Plain-text garbage.
    let mut tcp = tokio::net::TcpStream::connect(emu.local_addr())
        .await
        .unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await;
    drop(tcp);
    // A client that trusts a different CA.
    let other = EmulatorConfig::default().start().await.unwrap();
    let cfg = tls_config(other.ca_pem().unwrap(), &[b"h2"]);
    assert!(tls_connect(emu.local_addr(), cfg, WNS_HOST).await.is_err());
    // A name outside the certificate.
    let cfg = tls_config(emu.ca_pem().unwrap(), &[b"h2"]);
    assert!(tls_connect(emu.local_addr(), cfg, "example.org")
        .await
        .is_err());
    // The server still works, for the SANs it claims.
    for sni in [
        WNS_HOST,
        "notify.windows.com",
        "login.live.com",
        "login.microsoftonline.com",
        "localhost",
    ] {
        let c = Client::with_sni(emu.local_addr(), emu.ca_pem().unwrap(), Proto::H2, sni);
        c.token("a").await;
    }
    other.shutdown().await;
    emu.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_lets_requests_finish() {
    let emu = start().await;
    let addr = emu.local_addr();
    let c1 = std::sync::Arc::new(client(&emu, Proto::H1));
    let c2 = std::sync::Arc::new(client(&emu, Proto::H2));
    let t1 = c1.token("app").await;
    let t2 = c2.token("app").await;
    let p1 = tokio::spawn({
        let c1 = c1.clone();
        async move { c1.push(&t1, "slow-600.a", &[], b"x").await }
    });
    let p2 = tokio::spawn({
        let c2 = c2.clone();
        async move { c2.push(&t2, "slow-600.b", &[], b"x").await }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let t0 = Instant::now();
    emu.shutdown().await;
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(p1.await.unwrap().status, 200);
    assert_eq!(p2.await.unwrap().status, 200);
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn shutdown_is_bounded_for_very_slow_requests() {
    let emu = start().await;
    let c = std::sync::Arc::new(client(&emu, Proto::H2));
    let tok = c.token("app").await;
    let _pending = tokio::spawn({
        let c = c.clone();
        async move { c.push(&tok, "slow-60000.a", &[], b"x").await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = Instant::now();
    emu.shutdown().await;
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(8),
        "{took:?}"
    );
}

#[tokio::test]
async fn tls_files_and_out_dir() {
    let dir = std::env::temp_dir().join(format!("wns-emu-it-{}", std::process::id()));
    let gen = EmulatorConfig {
        tls: TlsSource::Generate {
            out_dir: Some(dir.clone()),
        },
        extra_sans: vec!["push.fleetwake.test".into()],
        ..Default::default()
    }
    .start()
    .await
    .unwrap();
    let ca = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
    assert_eq!(ca, gen.ca_pem().unwrap());
    let c = Client::with_sni(gen.local_addr(), &ca, Proto::H2, "push.fleetwake.test");
    c.token("a").await;
    gen.shutdown().await;

    let files = EmulatorConfig {
        tls: TlsSource::Files {
            cert_pem: dir.join("cert.pem"),
            key_pem: dir.join("key.pem"),
        },
        ..Default::default()
    }
    .start()
    .await
    .unwrap();
    assert!(files.ca_pem().is_none());
    let c = Client::new(files.local_addr(), &ca, Proto::H1);
    c.token("a").await;
    files.shutdown().await;

    let err = EmulatorConfig {
        tls: TlsSource::Files {
            cert_pem: dir.join("missing.pem"),
            key_pem: dir.join("key.pem"),
        },
        ..Default::default()
    }
    .start()
    .await
    .unwrap_err();
    assert!(matches!(err, EmulatorError::FileRead { .. }));
    assert!(err.to_string().contains("missing.pem"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn bind_error_names_the_address() {
    let emu = start().await;
    let err = EmulatorConfig {
        bind: emu.local_addr(),
        ..Default::default()
    }
    .start()
    .await
    .unwrap_err();
    assert!(matches!(err, EmulatorError::Bind { .. }));
    assert!(
        err.to_string().contains(&emu.local_addr().to_string()),
        "{err}"
    );
    emu.shutdown().await;
}

/// A bounded load run: many concurrent pushes over a few HTTP/2 connections,
/// all on loopback; checks the counters stay consistent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_load_counts_are_consistent() {
    let emu = EmulatorConfig {
        h2_max_concurrent_streams: 200,
        ..Default::default()
    }
    .start()
    .await
    .unwrap();
    let clients: Vec<_> = (0..4)
        .map(|_| std::sync::Arc::new(client(&emu, Proto::H2)))
        .collect();
    let tok = clients[0].token("load").await;
    let per_task = 50;
    let tasks = 80;
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let c = clients[t % clients.len()].clone();
        let tok = tok.clone();
        set.spawn(async move {
            for i in 0..per_task {
                let ch = if i % 10 == 0 { "gone.l" } else { "ok.l" };
                let r = c.push(&tok, ch, &[], b"payload").await;
                assert!(r.status == 200 || r.status == 410);
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    let n = (tasks * per_task) as u64;
    let elapsed = t0.elapsed();
    eprintln!(
        "{n} pushes in {elapsed:?} ({:.0}/s, debug build)",
        n as f64 / elapsed.as_secs_f64()
    );
    let s = emu.stats();
    assert_eq!(s.pushes_total, n);
    assert_eq!(s.pushes_per_app["load"], n);
    assert_eq!(s.by_channel["gone.l"][&410], n / 10);
    assert_eq!(s.by_channel["ok.l"][&200], n - n / 10);
    assert!(s.max_rate_per_app["load"] >= 1 && s.max_rate_per_app["load"] <= n);
    emu.shutdown().await;
}
