//! `fleetwake bench` end to end against the in-process emulator: a smoke test
//! that checks counts and the shape of the report, never speed.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_fleetwake");

fn bench(args: &[&str]) -> serde_json::Value {
    let out = Command::new(BIN)
        .args(["bench", "--target", "emulator", "--json", "--warmup", "100"])
        .args(args)
        .output()
        .expect("run fleetwake bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[test]
fn closed_loop_h2_counts_every_wake() {
    let r = bench(&["--count", "3000", "--concurrency", "200"]);
    assert_eq!(r["notifications"], 3000);
    assert_eq!(r["outcomes"]["received"], 3000);
    assert_eq!(r["outcomes"].as_object().map(|o| o.len()), Some(1));
    assert_eq!(r["mode"], "closed");
    assert_eq!(r["protocol"], "h2");
    for k in ["throughput_per_s", "cpu_s_per_1000", "peak_rss_kb"] {
        assert!(r[k].as_f64().is_some_and(|v| v > 0.0), "{k}: {}", r[k]);
    }
    for p in ["p50_ms", "p99_ms", "max_ms"] {
        assert!(r["latency"][p].as_f64().is_some(), "{p}");
    }
}

#[test]
fn open_loop_h1_counts_every_wake() {
    let r = bench(&[
        "--http",
        "h1",
        "--connections",
        "8",
        "--rate",
        "5000",
        "--count",
        "2000",
    ]);
    assert_eq!(r["notifications"], 2000);
    assert_eq!(r["outcomes"]["received"], 2000);
    assert_eq!(r["mode"], "open");
    assert_eq!(r["protocol"], "http1");
}

#[test]
fn bad_arguments_exit_2() {
    let out = Command::new(BIN)
        .args(["bench", "--target", "not-an-address", "--count", "10"])
        .output()
        .expect("run fleetwake bench");
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN)
        .args(["bench", "--target", "emulator"])
        .output()
        .expect("run fleetwake bench");
    assert_eq!(out.status.code(), Some(2), "no --count or --duration");
}

/// A target that is not running: the bench stops within seconds with the
/// reason (what failed, where, the OS error) and exit code 5, instead of
/// grinding through every wake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_is_not_running_stops_the_bench_with_the_reason() {
    let emu = fleetwake::emulator::EmulatorConfig::default()
        .start()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, emu.ca_pem().unwrap()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = format!("127.0.0.1:{port}");
    let t0 = std::time::Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["bench", "--target", &target, "--count", "3000", "--ca"])
            .arg(&ca)
            .env("FLEETWAKE_LOG", "error")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let took = t0.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{took:?}: {stderr}");
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot reach the target 127.0.0.1:{port}"))
            && stderr.contains("Connection refused"),
        "{stderr}"
    );
    assert!(took < std::time::Duration::from_secs(20), "{took:?}");
    emu.shutdown().await;
}
