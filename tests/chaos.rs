//! The chaos suite: campaigns against the emulator while it injects one fault
//! at a time. After each run:
//! - every device has exactly one final outcome (no row lost, none doubled);
//! - no channel got more requests than the retry policy allows;
//! - the per-PFN rate, as the emulator measured it, stayed within the limit;
//! - open connections and memory stayed bounded.

mod common;

use std::collections::HashMap;
use std::io::BufReader;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use fleetwake::campaign::input::DeviceReader;
use fleetwake::campaign::report::ReportRow;
use fleetwake::campaign::{self, CampaignOptions};
use fleetwake::emulator::faults::{FaultPlan, Faults};
use fleetwake::emulator::HttpVersions;
use fleetwake::{Engine, HttpPolicy, RateLimit, RetryPolicy};

const DEVICES: usize = 1500;
const RATE: u32 = 1000;
const BURST: u32 = 50;
const MAX_ATTEMPTS: u32 = 4;
const H2_CONNS: usize = 4;
const H1_CONNS: usize = 16;

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

struct Run {
    rows: Vec<ReportRow>,
    max_open: usize,
    rss_growth_kb: u64,
}

async fn chaos(
    name: &str,
    plan: FaultPlan,
    http: HttpPolicy,
) -> (Run, fleetwake::emulator::EmulatorStats) {
    let emu = emulator(HttpVersions::Both).await;
    emu.set_faults(plan);
    let mut t = transport_for(&emu);
    t.http = http;
    t.h2_connections_per_host = H2_CONNS;
    t.h1_connections_per_host = H1_CONNS;
    t.connect_timeout = Duration::from_millis(400);
    t.tls_timeout = Duration::from_millis(400);
    t.request_timeout = Duration::from_millis(600);
    let retry = RetryPolicy {
        max_attempts: MAX_ATTEMPTS,
        base_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(400),
        deadline: Duration::from_secs(20),
        pause_tenant_on_throttle: true,
    };
    let engine = Engine::builder()
        .transport(t)
        .tenant(tenant("t").rate_limit(RateLimit::per_second(RATE).with_burst(BURST)))
        .retry(retry)
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("device_id,channel_uri,tenant\n");
    for i in 0..DEVICES {
        csv.push_str(&format!(
            "{name}-{i},https://db5p.notify.windows.com/?token=ok.{name}-{i},t\n"
        ));
    }
    let report = dir.path().join("report.jsonl");
    let mut opts = CampaignOptions::new(&report);
    opts.max_outstanding = 512;
    opts.fingerprint = name.into();
    let reader = DeviceReader::new(BufReader::new(std::io::Cursor::new(csv.into_bytes())), name);
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);

    let max_open = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let base_rss = rss_kb();
    let peak_rss = Arc::new(AtomicUsize::new(base_rss as usize));
    let sampler = {
        let (engine, max_open, done, peak_rss) = (
            engine.clone(),
            max_open.clone(),
            done.clone(),
            peak_rss.clone(),
        );
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                max_open.fetch_max(engine.transport().open_connections(), Ordering::Relaxed);
                peak_rss.fetch_max(rss_kb() as usize, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let run = campaign::run(&engine, reader, opts, stop).await.unwrap();
    done.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    assert!(!run.interrupted);
    engine.shutdown(Duration::from_secs(5)).await;
    let rows: Vec<ReportRow> = std::fs::read_to_string(&report)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let stats = emu.stats();
    emu.shutdown().await;
    let rss_growth_kb = (peak_rss.load(Ordering::Relaxed) as u64).saturating_sub(base_rss);
    (
        Run {
            rows,
            max_open: max_open.load(Ordering::Relaxed),
            rss_growth_kb,
        },
        stats,
    )
}

fn check(
    name: &str,
    run: &Run,
    stats: &fleetwake::emulator::EmulatorStats,
    http: HttpPolicy,
    min_received: f64,
) {
    // Exactly one final outcome per device.
    let mut per_device: HashMap<&str, usize> = HashMap::new();
    for r in &run.rows {
        *per_device
            .entry(r.device_id.as_deref().unwrap())
            .or_default() += 1;
        assert_ne!(r.outcome, "shut_down", "{name}: {r:?}");
        assert!(r.kind().is_some(), "{name}: unknown outcome {}", r.outcome);
    }
    assert_eq!(per_device.len(), DEVICES, "{name}: every device has a row");
    assert!(
        per_device.values().all(|&n| n == 1),
        "{name}: no device has two rows"
    );
    // No channel got more requests than the policy allows (attempts + the one resend after a 401).
    let allowed = u64::from(MAX_ATTEMPTS) + 1;
    for (channel, by_status) in &stats.by_channel {
        let n: u64 = by_status.values().sum();
        assert!(
            n <= allowed,
            "{name}: channel {channel} got {n} requests, more than {allowed}"
        );
    }
    // The rate per PFN. The limiter bounds the starts; the emulator counts
    // arrivals, which a busy machine delays unevenly: 10% is allowed for that
    // (a broken limiter shows up as a multiple, not as a few percent).
    let max = stats.max_rate_per_app.get(SID).copied().unwrap_or(0);
    let limit = u64::from(RATE + BURST) + u64::from(RATE) / 10;
    assert!(
        max <= limit,
        "{name}: {max} pushes in one second, limit {RATE}/s + burst {BURST}"
    );
    // Connections: the pool per host, doubled for replacements that overlap a
    // closing connection, plus the token endpoint's.
    let pool = if http == HttpPolicy::Http1Only {
        H1_CONNS
    } else {
        H2_CONNS
    };
    assert!(
        run.max_open <= 2 * pool + 2,
        "{name}: {} connections open at once",
        run.max_open
    );
    assert!(
        run.rss_growth_kb < 256 * 1024,
        "{name}: RSS grew by {} KiB",
        run.rss_growth_kb
    );
    let received =
        run.rows.iter().filter(|r| r.outcome == "received").count() as f64 / DEVICES as f64;
    assert!(
        received >= min_received,
        "{name}: only {:.1}% received",
        received * 100.0
    );
}

/// One scenario at a time: they measure rates and connections, which a
/// neighbouring scenario on the same two cores would disturb.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn scenario(name: &str, plan: FaultPlan, http: HttpPolicy, min_received: f64) {
    let _one = SERIAL.lock().await;
    let (run, stats) = chaos(name, plan, http).await;
    check(name, &run, &stats, http, min_received);
    eprintln!(
        "{name}: {} rows, {} requests, max {} open connections, max {}/s per PFN, RSS +{} KiB",
        run.rows.len(),
        stats.pushes_total,
        run.max_open,
        stats.max_rate_per_app.get(SID).copied().unwrap_or(0),
        run.rss_growth_kb
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_resets_mid_request() {
    scenario(
        "reset",
        faults(Faults {
            reset_rate: 0.15,
            ..Faults::default()
        }),
        HttpPolicy::Auto,
        0.95,
    )
    .await;
    scenario(
        "reset-h1",
        faults(Faults {
            reset_rate: 0.15,
            ..Faults::default()
        }),
        HttpPolicy::Http1Only,
        0.95,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_goaway_and_stream_limits() {
    scenario(
        "goaway",
        faults(Faults {
            goaway_after: Some(40),
            ..Faults::default()
        }),
        HttpPolicy::Auto,
        0.99,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_handshake_failures() {
    scenario(
        "tls",
        faults(Faults {
            tls_fail_rate: 0.3,
            ..Faults::default()
        }),
        HttpPolicy::Auto,
        0.9,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalls_longer_than_the_timeout() {
    let f = Faults {
        stall_rate: 0.05,
        stall_ms: 3000,
        ..Faults::default()
    };
    scenario("stall", faults(f), HttpPolicy::Auto, 0.95).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_of_500_503_and_429_storms() {
    let f = |status, rate, ra| Faults {
        error_rate: rate,
        error_status: status,
        retry_after_s: ra,
        ..Faults::default()
    };
    scenario(
        "burst500",
        during(200, 1200, f(500, 0.8, None)),
        HttpPolicy::Auto,
        0.95,
    )
    .await;
    scenario(
        "burst503",
        faults(f(503, 0.3, Some(0))),
        HttpPolicy::Auto,
        0.95,
    )
    .await;
    scenario(
        "storm429",
        during(200, 1500, f(429, 1.0, Some(1))),
        HttpPolicy::Auto,
        0.95,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_down_or_slow() {
    scenario(
        "token-down",
        during(
            0,
            1500,
            Faults {
                token_down: true,
                ..Faults::default()
            },
        ),
        HttpPolicy::Auto,
        0.99,
    )
    .await;
    scenario(
        "token-slow",
        faults(Faults {
            token_delay_ms: 1500,
            ..Faults::default()
        }),
        HttpPolicy::Auto,
        0.99,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_disappears_and_comes_back() {
    scenario(
        "down",
        during(
            300,
            2300,
            Faults {
                down: true,
                ..Faults::default()
            },
        ),
        HttpPolicy::Auto,
        0.99,
    )
    .await;
    scenario(
        "down-h1",
        during(
            300,
            2300,
            Faults {
                down: true,
                ..Faults::default()
            },
        ),
        HttpPolicy::Http1Only,
        0.99,
    )
    .await;
}
