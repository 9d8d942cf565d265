//! `fleetwake serve` end to end against the WNS emulator: API keys (missing,
//! wrong, right, from env, file and digest), body and batch limits, bad JSON,
//! `?wait=true` and jobs, `/metrics`, health, the drain on SIGTERM with a
//! delay, and a schemathesis run of the served OpenAPI document against the
//! live server.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::serve::*;
use fleetwake::emulator::HttpVersions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_auth_limits_modes_and_metrics() {
    let emu = common::emulator(HttpVersions::Both).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &emu, "max_body_bytes = 65536\nmax_batch = 50");
    let srv = start(&config);
    let addr = srv.addr;
    let one = wake("d1", "ok.h1");

    // Open endpoints.
    assert_eq!(request(addr, "GET", "/healthz", None, None).status, 200);
    let r = request(addr, "GET", "/readyz", None, None);
    assert_eq!(
        (r.status, r.json()["status"].as_str()),
        (200, Some("ready"))
    );
    let r = request(addr, "GET", "/openapi.json", None, None);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json")).unwrap()
    );

    // Authentication: missing, wrong, other scheme -> 401 and nothing else.
    for key in [None, Some("key-a-0123456789abcdeX"), Some("")] {
        let r = request(
            addr,
            "POST",
            "/v1/wakes?wait=true",
            key,
            Some(one.as_bytes()),
        );
        assert_eq!(r.status, 401, "{key:?}");
        assert!(r.body.is_empty(), "401 carries no body");
        assert_eq!(r.headers["www-authenticate"], "Bearer realm=\"fleetwake\"");
    }
    let r = request_raw(
        addr,
        "GET",
        "/metrics",
        None,
        None,
        &[("Authorization", format!("Basic {KEY_A}"))],
    );
    assert_eq!(r.status, 401);
    assert_eq!(
        request(addr, "GET", "/nope", None, None).status,
        401,
        "unknown paths are not revealed"
    );
    assert_eq!(request(addr, "GET", "/nope", Some(KEY_A), None).status, 404);
    assert_eq!(
        emu.stats().pushes_total,
        0,
        "nothing was sent for unauthenticated requests"
    );
    // The right keys, from the environment, a digest in the config and the keys file.
    for key in [KEY_A, KEY_B, KEY_C] {
        let r = request(
            addr,
            "POST",
            "/v1/wakes?wait=true",
            Some(key),
            Some(one.as_bytes()),
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let j = r.json();
        assert_eq!(j["status"], "done");
        assert_eq!(j["results"][0]["outcome"], "received");
        assert_eq!(j["results"][0]["device_id"], "d1");
    }

    // Limits: a body over max_body_bytes (refused before it is sent), a batch over max_batch.
    let r = request_raw(
        addr,
        "POST",
        "/v1/wakes",
        Some(KEY_A),
        Some(b""),
        &[
            ("Content-Length", "70000".into()),
            ("Expect", "100-continue".into()),
        ],
    );
    assert_eq!(r.status, 413);
    assert!(r.json()["error"].as_str().unwrap().contains("65536"));
    let batch = format!(
        r#"{{"wakes":[{}]}}"#,
        (0..51)
            .map(|i| wake(&format!("b{i}"), "ok.b"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let r = request(
        addr,
        "POST",
        "/v1/wakes",
        Some(KEY_A),
        Some(batch.as_bytes()),
    );
    assert_eq!(r.status, 413);
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("51 wakes is over the limit of 50"));

    // Bad JSON says where: line and column for syntax, the path for the schema.
    let r = request(
        addr,
        "POST",
        "/v1/wakes",
        Some(KEY_A),
        Some(b"{\n \"wakes\": [\n  {\"device_id\": }]}"),
    );
    assert_eq!(r.status, 400);
    let j = r.json();
    assert_eq!(j["line"], 3, "{j}");
    assert!(j["column"].as_u64().is_some(), "{j}");
    let bad = format!(
        r#"{{"wakes":[{one},{{"device_id":"d2","channel_uri":"https://db5p.notify.windows.com/?token=ok.2"}}]}}"#
    );
    let r = request(addr, "POST", "/v1/wakes", Some(KEY_A), Some(bad.as_bytes()));
    assert_eq!(r.status, 400);
    let j = r.json();
    assert_eq!(j["path"], "wakes[1]", "{j}");
    assert!(
        j["error"]
            .as_str()
            .unwrap()
            .contains("missing field `tenant`"),
        "{j}"
    );
    let r = request(
        addr,
        "POST",
        "/v1/wakes",
        Some(KEY_A),
        Some(br#"{"v":2,"device_id":"d","tenant":"t","channel_uri":"x"}"#),
    );
    assert_eq!((r.status, r.json()["path"].as_str()), (400, Some("v")));
    let r = request(
        addr,
        "POST",
        "/v1/wakes?wait=maybe",
        Some(KEY_A),
        Some(one.as_bytes()),
    );
    assert_eq!(r.status, 400);

    // Sync mode: every outcome, in request order.
    let mixed = format!(
        r#"{{"wakes":[{},{},{},{},{}]}}"#,
        wake("m-ok", "ok.m1"),
        wake("m-gone", "gone.m2"),
        r#"{"device_id":"m-foreign","tenant":"contoso","channel_uri":"https://evil.test/?token=ok"}"#,
        wake("m-other", "otherapp.m4"),
        r#"{"device_id":"m-tenant","tenant":"initech","channel_uri":"https://db5p.notify.windows.com/?token=ok.m5","idempotency_key":"k-5"}"#,
    );
    let r = request(
        addr,
        "POST",
        "/v1/wakes?wait=true",
        Some(KEY_A),
        Some(mixed.as_bytes()),
    );
    assert_eq!(r.status, 200);
    let j = r.json();
    let got: Vec<(String, String, u64)> = j["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["device_id"].as_str().unwrap().to_string(),
                x["outcome"].as_str().unwrap().to_string(),
                x["line"].as_u64().unwrap(),
            )
        })
        .collect();
    let want = [
        ("m-ok", "received"),
        ("m-gone", "channel_expired"),
        ("m-foreign", "invalid_channel"),
        ("m-other", "channel_app_mismatch"),
        ("m-tenant", "unknown_tenant"),
    ];
    for (i, (id, outcome)) in want.iter().enumerate() {
        assert_eq!(got[i], (id.to_string(), outcome.to_string(), i as u64 + 1));
    }
    assert_eq!(j["results"][1]["action"], "reset_pfn_at_next_sync");
    assert_eq!(j["results"][4]["idempotency_key"], "k-5");

    // Async mode: 202 and a job; the job is the caller's only.
    let slow = format!(
        r#"{{"wakes":[{}]}}"#,
        (0..20)
            .map(|i| wake(&format!("s{i}"), &format!("slow-300.s{i}")))
            .collect::<Vec<_>>()
            .join(",")
    );
    let r = request(
        addr,
        "POST",
        "/v1/wakes",
        Some(KEY_A),
        Some(slow.as_bytes()),
    );
    assert_eq!(r.status, 202);
    let j = r.json();
    let job = j["job"].as_str().unwrap().to_string();
    assert_eq!(r.headers["location"], format!("/v1/wakes/{job}"));
    assert_eq!(
        (j["status"].as_str(), j["total"].as_u64()),
        (Some("running"), Some(20))
    );
    assert_eq!(
        request(addr, "GET", &format!("/v1/wakes/{job}"), Some(KEY_B), None).status,
        404
    );
    assert_eq!(
        request(addr, "GET", &format!("/v1/wakes/{job}"), None, None).status,
        401
    );
    let t0 = Instant::now();
    let done = loop {
        let r = request(addr, "GET", &format!("/v1/wakes/{job}"), Some(KEY_A), None);
        assert_eq!(r.status, 200);
        let j = r.json();
        if j["status"] == "done" {
            break j;
        }
        assert!(t0.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(done["done"], 20);
    let results = done["results"].as_array().unwrap();
    assert_eq!(results.len(), 20);
    assert!(results.iter().all(|x| x["outcome"] == "received"));
    assert_eq!(
        request(
            addr,
            "GET",
            "/v1/wakes/0123456789abcdef0123456789abcdef",
            Some(KEY_A),
            None
        )
        .status,
        404
    );
    assert_eq!(
        request(addr, "PUT", "/v1/wakes", Some(KEY_A), Some(b"{}")).status,
        405
    );

    // Metrics: needs a key; counts outcomes and requests.
    assert_eq!(request(addr, "GET", "/metrics", None, None).status, 401);
    let r = request(addr, "GET", "/metrics", Some(KEY_B), None);
    assert_eq!(r.status, 200);
    assert!(r.headers["content-type"].starts_with("text/plain"));
    let text = String::from_utf8(r.body).unwrap();
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(value("fleetwake_outcomes_total{tenant=\"contoso\",outcome=\"received\"}") >= 24.0);
    assert!(
        value("fleetwake_outcomes_total{tenant=\"contoso\",outcome=\"channel_expired\"}") >= 1.0
    );
    assert!(value("fleetwake_http_requests_total{route=\"post_wakes\",status=\"401\"}") >= 3.0);
    assert!(value("fleetwake_http_requests_total{route=\"post_wakes\",status=\"413\"}") >= 2.0);
    assert!(value("fleetwake_http_jobs") >= 1.0);

    assert_eq!(srv.stop(), Some(0));
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_drain_delay_answers_503_while_still_listening() {
    let emu = common::emulator(HttpVersions::Both).await;
    let dir = tempfile::tempdir().unwrap();
    const DELAY: Duration = Duration::from_secs(5);
    let config = write_config(dir.path(), &emu, "drain_delay_s = 5");
    let mut srv = start(&config);
    let addr = srv.addr;
    assert_eq!(request(addr, "GET", "/readyz", None, None).status, 200);
    // The image's HEALTHCHECK command agrees with the endpoints.
    assert_eq!(healthcheck(addr, "/healthz"), Some(0));
    assert_eq!(healthcheck(addr, "/readyz"), Some(0));

    let signalled = Instant::now();
    Command::new("kill")
        .args(["-TERM", &srv.child.id().to_string()])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // Within the delay the listener still accepts: readiness and new wakes
    // say 503, liveness 200.
    assert_eq!(request(addr, "GET", "/readyz", None, None).status, 503);
    assert_eq!(request(addr, "GET", "/healthz", None, None).status, 200);
    assert_eq!(healthcheck(addr, "/readyz"), Some(1), "503 is unhealthy");
    assert_eq!(healthcheck(addr, "/healthz"), Some(0));
    let body = wake("drain-1", "ok.drain1");
    let r = request(
        addr,
        "POST",
        "/v1/wakes?wait=true",
        Some(KEY_A),
        Some(body.as_bytes()),
    );
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        signalled.elapsed() < DELAY,
        "the checks above ran after the delay"
    );

    // Then the drain closes the listener and the process exits 0.
    assert_eq!(srv.child.wait().unwrap().code(), Some(0));
    assert!(signalled.elapsed() >= DELAY, "exited before the delay");
    assert!(std::net::TcpStream::connect(addr).is_err());
    assert_eq!(healthcheck(addr, "/healthz"), Some(1), "nothing listens");
    emu.shutdown().await;
}

/// `fleetwake healthcheck` (the Dockerfile's HEALTHCHECK) against `addr`:
/// its exit code.
fn healthcheck(addr: std::net::SocketAddr, path: &str) -> Option<i32> {
    let out = Command::new(BIN)
        .args(["healthcheck", "--addr", &addr.to_string(), "--path", path])
        .output()
        .unwrap();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("unhealthy:"), "{err}");
    }
    out.status.code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_holds_against_the_live_server() {
    let Some(st) = common::which("schemathesis") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "schemathesis is not on PATH; .ci/run installs it (pip install schemathesis)"
        );
        eprintln!("\n*** SKIPPED: schemathesis is not on PATH (pip install schemathesis) ***\n");
        return;
    };
    let emu = common::emulator(HttpVersions::Both).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &emu, "wait_timeout_s = 5\nmax_batch = 100");
    let srv = start(&config);
    let out = Command::new(st)
        .current_dir(dir.path())
        .args([
            "run",
            &format!("http://{}/openapi.json", srv.addr),
            "--header",
            &format!("Authorization: Bearer {KEY_A}"),
            "--max-examples",
            "40",
            "--workers",
            "1",
            "--seed",
            "1",
            "--request-timeout",
            "30",
            "--no-color",
            "--generation-database",
            "none",
        ])
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found responses that break docs/openapi.json:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("No issues found") && stdout.contains("Tested:"),
        "{stdout}"
    );
    assert_eq!(srv.stop(), Some(0));
    emu.shutdown().await;
}
