//! `fleetwake bench`: load against any WNS-like target with the whole engine in
//! the path (tenant admission, PFN limiter, sharding, coalescing map, token
//! cache, request building, classification, metrics).
//!
//! Channel URIs are synthetic (`https://bench.notify.windows.com/?token=ok.N`,
//! unique, so nothing is coalesced) and reach the target through resolve
//! overrides for `*.notify.windows.com` and `login.live.com`; the target's
//! certificate is checked against `--ca`. The token is fetched from the target's
//! `/accesstoken.srf`, like a real one.
//!
//! Two load models:
//! - **closed loop** (`--concurrency C`): C submitters, each sending its next
//!   wake when the previous one ends; latency runs from submit to outcome;
//! - **open loop** (`--rate R`): wake *i* is due at `start + i/R`; latency runs
//!   from that *intended* time, so a stalled engine shows up in the percentiles
//!   instead of silently slowing the load (no coordinated omission). The
//!   generator starts the wakes due every 4 ms; that delay is counted too.
//!
//! The report has throughput, latency percentiles, CPU seconds per 1000 wakes
//! (`getrusage`, the whole process), peak RSS (`VmHWM`), and the outcome counts;
//! as a table, or JSON with `--json`. With `--interval S` a line (or JSON
//! object) is also printed every S seconds, for soak runs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use parking_lot::Mutex;

use crate::engine::{Engine, Notification, RateLimit, TenantConfig};
use crate::transport::{HttpPolicy, HttpStack, TransportConfig};
use crate::wns::{ChannelUri, Credentials, OutcomeKind, Payload, Secret};

const EXAMPLES: &str = "\
Examples:
  fleetwake bench --target emulator --count 3000
  fleetwake bench --target 127.0.0.1:8443 --ca ca.pem --http h2 --connections 4 --concurrency 400 --duration 10
  fleetwake bench --target 127.0.0.1:8443 --ca ca.pem --http h1 --connections 64 --rate 50000 --count 500000 --json

Exit code 0 when every wake was `received`, 1 otherwise, 2 for bad arguments.";

/// Arguments of `fleetwake bench`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// `IP:PORT` of the target (it must answer WNS pushes and `/accesstoken.srf`),
    /// or `emulator` to start the built-in emulator in this process.
    #[arg(long, value_name = "IP:PORT|emulator")]
    target: String,
    /// PEM file with the CA that signed the target's certificate.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// HTTP version to use.
    #[arg(long, value_enum, default_value_t = HttpArg::H2)]
    http: HttpArg,
    /// Which code speaks HTTP: the project's own codecs or the crates
    /// (`h2` for HTTP/2, hyper for HTTP/1.1), with the same pool around them.
    #[arg(long, value_enum, default_value_t = StackArg::Own)]
    stack: StackArg,
    /// Connections per host [default: 4 for h2, 64 for h1].
    #[arg(long, value_name = "N")]
    connections: Option<usize>,
    /// Send this many wakes (after the warm-up).
    #[arg(long, value_name = "N", conflicts_with = "duration")]
    count: Option<u64>,
    /// Send for this many seconds (after the warm-up).
    #[arg(long, value_name = "SECONDS")]
    duration: Option<f64>,
    /// Open loop: start wakes at this constant rate (per second).
    #[arg(long, value_name = "PER_SECOND", conflicts_with = "concurrency")]
    rate: Option<f64>,
    /// Closed loop: keep this many wakes in flight [default: 400].
    #[arg(long, value_name = "N")]
    concurrency: Option<usize>,
    /// Open loop: most wakes outstanding before the generator waits (the wait is
    /// counted in latency, since latency runs from the intended send time).
    /// The default is about what 4 HTTP/2 connections carry at once; a longer
    /// queue inside the process only adds cache misses when behind (4,096 cost
    /// 35% more CPU per wake, so a slow second never recovered).
    #[arg(long, default_value_t = 512, value_name = "N")]
    max_outstanding: usize,
    /// Engine shards [default: the engine's default, twice the cores].
    #[arg(long, value_name = "N")]
    shards: Option<usize>,
    /// The tenant's most HTTP requests in flight [default: 100 per connection
    /// for h2, one per connection for h1; wakes beyond it wait in the engine].
    #[arg(long, value_name = "N")]
    max_in_flight: Option<usize>,
    /// The tenant's rate limit (per second); high by default so it does not bind.
    #[arg(long, default_value_t = 10_000_000, value_name = "PER_SECOND")]
    rate_limit: u32,
    /// Payload size in bytes (1..=5000).
    #[arg(long, default_value_t = 4, value_name = "BYTES")]
    payload_size: usize,
    /// Wakes sent before measuring (opens the connections, fetches the token).
    #[arg(long, default_value_t = 2000, value_name = "N")]
    warmup: u64,
    /// Threads that run the engine [default: one per core]. With the default
    /// `--scheduler lanes`, each owns a share of the shards and connections,
    /// and the load generator's submitters are spread over them.
    #[arg(long, value_name = "N")]
    pub(crate) threads: Option<usize>,
    /// How the engine's work is spread over the threads: `lanes` (one
    /// single-threaded runtime per thread, shards and connections split
    /// between them) or `shared` (one work-stealing runtime whose threads
    /// all run every shard and connection task).
    #[arg(long, value_enum, default_value_t = SchedulerArg::Lanes)]
    pub(crate) scheduler: SchedulerArg,
    /// How the lanes' threads are scheduled: `batch` (Linux `SCHED_BATCH`:
    /// a lane that wakes does not preempt the thread running on its core;
    /// the engine's default) or `normal`.
    #[arg(long, value_enum, default_value_t = LaneSchedulingArg::Batch, value_name = "POLICY")]
    lane_scheduling: LaneSchedulingArg,
    /// Do not install a metrics recorder (by default a Prometheus recorder
    /// records every metric, as in production).
    #[arg(long)]
    no_metrics: bool,
    /// Share the PFN budget through this NATS server (a JetStream key-value
    /// bucket of this run's own), as `[budget] url` does, to measure what
    /// the shared budget costs per wake.
    #[cfg(feature = "nats")]
    #[arg(long, value_name = "URL")]
    budget_url: Option<String>,
    /// Also print throughput, latency and RSS every this many seconds.
    #[arg(long, value_name = "SECONDS")]
    interval: Option<f64>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// HTTP version of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum HttpArg {
    /// HTTP/2 (ALPN h2 only).
    H2,
    /// HTTP/1.1 (ALPN http/1.1 only).
    H1,
}

/// The `--scheduler` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SchedulerArg {
    /// Engine lanes: a thread per lane, each with its own shards and connections.
    Lanes,
    /// One work-stealing runtime for everything.
    Shared,
}

/// The `--lane-scheduling` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LaneSchedulingArg {
    /// `SCHED_BATCH` on Linux.
    Batch,
    /// The default policy.
    Normal,
}

impl From<LaneSchedulingArg> for crate::engine::LaneScheduling {
    fn from(a: LaneSchedulingArg) -> Self {
        match a {
            LaneSchedulingArg::Batch => crate::engine::LaneScheduling::Batch,
            LaneSchedulingArg::Normal => crate::engine::LaneScheduling::Normal,
        }
    }
}

/// The `--stack` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StackArg {
    /// The project's own HTTP/2 and HTTP/1.1 codecs.
    Own,
    /// The `h2` crate and hyper's HTTP/1.1 client connection.
    Crates,
}

impl From<StackArg> for HttpStack {
    fn from(s: StackArg) -> HttpStack {
        match s {
            StackArg::Own => HttpStack::Own,
            StackArg::Crates => HttpStack::Crates,
        }
    }
}

/// How much to send.
#[derive(Debug, Clone, Copy)]
enum Amount {
    Count(u64),
    Duration(Duration),
}

/// Latency and outcome counts, shared by the submitters.
struct Recorder {
    /// A few histograms so that submitters on different threads rarely meet.
    shards: Vec<Mutex<Histogram<u64>>>,
    /// Everything drained so far.
    total: Mutex<Histogram<u64>>,
    outcomes: Vec<AtomicU64>,
    done: AtomicU64,
}

impl Recorder {
    fn new() -> Self {
        Recorder {
            shards: (0..16).map(|_| Mutex::new(new_histogram())).collect(),
            total: Mutex::new(new_histogram()),
            outcomes: OutcomeKind::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            done: AtomicU64::new(0),
        }
    }

    fn record(&self, slot: usize, kind: OutcomeKind, latency: Duration) {
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.shards[slot % self.shards.len()]
            .lock()
            .saturating_record(us);
        self.outcomes[kind.index()].fetch_add(1, Ordering::Relaxed);
        self.done.fetch_add(1, Ordering::Relaxed);
    }

    /// Moves everything recorded since the last drain into `interval` (and
    /// into the total).
    fn drain(&self, interval: &mut Histogram<u64>) {
        let mut total = self.total.lock();
        for s in &self.shards {
            let mut h = s.lock();
            let _ = interval.add(&*h);
            let _ = total.add(&*h);
            h.reset();
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 1 h with 3 significant digits; cannot fail for these bounds.
    Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .or_else(|_| Histogram::new(3))
        .unwrap_or_else(|_| unreachable_histogram())
}

#[cold]
fn unreachable_histogram() -> Histogram<u64> {
    // `Histogram::new(3)` only fails for sigfig > 5.
    Histogram::new(2).unwrap_or_else(|_| std::process::abort())
}

/// Percentiles in milliseconds.
#[derive(Debug, Clone, serde::Serialize)]
struct Latency {
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    mean_ms: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
        }
    }
}

/// One `--interval` line.
#[derive(Debug, Clone, serde::Serialize)]
struct IntervalReport {
    t_s: f64,
    done: u64,
    throughput_per_s: f64,
    latency: Latency,
    rss_kb: u64,
}

/// The final report.
#[derive(Debug, Clone, serde::Serialize)]
struct Report {
    target: String,
    http: HttpArg,
    protocol: Option<&'static str>,
    /// Which code spoke HTTP (`own` or `crates`).
    stack: HttpStack,
    scheduler: SchedulerArg,
    /// The lanes' scheduling policy.
    lane_scheduling: crate::engine::LaneScheduling,
    mode: &'static str,
    connections: usize,
    concurrency: Option<usize>,
    rate: Option<f64>,
    shards: usize,
    threads: usize,
    metrics: bool,
    warmup: u64,
    notifications: u64,
    elapsed_s: f64,
    throughput_per_s: f64,
    latency: Latency,
    cpu_user_s: f64,
    cpu_sys_s: f64,
    cpu_s_per_1000: f64,
    peak_rss_kb: u64,
    outcomes: BTreeMap<&'static str, u64>,
    intervals: Vec<IntervalReport>,
}

pub(crate) async fn run(a: Args) -> u8 {
    match run_inner(a).await {
        Ok(code) => code,
        Err(Failure::Usage(e)) => {
            eprintln!("error: {e}");
            super::EXIT_CONFIG
        }
        Err(Failure::Internal(e)) => {
            eprintln!("error: {e}");
            super::EXIT_INTERNAL
        }
    }
}

enum Failure {
    Usage(String),
    Internal(String),
}

fn usage(e: impl std::fmt::Display) -> Failure {
    Failure::Usage(e.to_string())
}

async fn run_inner(a: Args) -> Result<u8, Failure> {
    let amount = match (a.count, a.duration) {
        (Some(n), _) => Amount::Count(n),
        (None, Some(s)) if s.is_finite() && s > 0.0 => Amount::Duration(Duration::from_secs_f64(s)),
        (None, Some(_)) => return Err(usage("--duration must be a positive number of seconds")),
        (None, None) => return Err(usage("give --count N or --duration SECONDS")),
    };
    if let Some(r) = a.rate {
        if !(r.is_finite() && r > 0.0) {
            return Err(usage("--rate must be a positive number per second"));
        }
    }
    let payload = Payload::new(vec![b'w'; a.payload_size]).map_err(usage)?;
    let connections = a.connections.unwrap_or(match a.http {
        HttpArg::H2 => 4,
        HttpArg::H1 => 64,
    });

    let handle = if a.no_metrics {
        None
    } else {
        // A recorder that records everything (as a production exporter would);
        // nobody scrapes it, but its upkeep runs so histograms stay bounded.
        match crate::telemetry::install_prometheus_recorder() {
            Ok(h) => Some(h),
            Err(e) => return Err(Failure::Internal(format!("metrics recorder: {e}"))),
        }
    };

    #[cfg(feature = "emulator")]
    let mut emulator = None;
    let (addr, ca_pem): (SocketAddr, String) = if a.target == "emulator" {
        #[cfg(feature = "emulator")]
        {
            let emu = crate::emulator::EmulatorConfig {
                http: match a.http {
                    HttpArg::H2 => crate::emulator::HttpVersions::Both,
                    HttpArg::H1 => crate::emulator::HttpVersions::Http1Only,
                },
                ..Default::default()
            }
            .start()
            .await
            .map_err(|e| Failure::Internal(e.to_string()))?;
            let addr = emu.local_addr();
            let pem = emu.ca_pem().unwrap_or_default().to_string();
            emulator = Some(emu);
            (addr, pem)
        }
        #[cfg(not(feature = "emulator"))]
        {
            return Err(usage("this build has no emulator (feature `emulator`)"));
        }
    } else {
        let addr: SocketAddr = a
            .target
            .parse()
            .map_err(|e| usage(format!("--target {:?}: {e} (want IP:PORT)", a.target)))?;
        let Some(ca) = &a.ca else {
            return Err(usage("--ca FILE is needed with an IP:PORT target"));
        };
        let pem = std::fs::read_to_string(ca)
            .map_err(|e| usage(format!("--ca {}: {e}", ca.display())))?;
        (addr, pem)
    };

    let mut transport = TransportConfig {
        http: match a.http {
            HttpArg::H2 => HttpPolicy::Http2Only,
            HttpArg::H1 => HttpPolicy::Http1Only,
        },
        stack: a.stack.into(),
        h2_connections_per_host: connections.max(1),
        h1_connections_per_host: connections.max(1),
        webpki_roots: false,
        ..TransportConfig::default()
    };
    for r in [
        format!("*.notify.windows.com={addr}"),
        format!("login.live.com={addr}"),
    ] {
        transport.resolve.push(r.parse().map_err(usage)?);
    }
    transport.add_ca_pem(&ca_pem).map_err(usage)?;

    let concurrency = a.concurrency.unwrap_or(400).max(1);
    let outstanding = match a.rate {
        Some(_) => a.max_outstanding.max(1),
        None => concurrency,
    };
    let tenant = TenantConfig::new(
        "bench",
        Credentials::PackageSid {
            package_sid: "ms-app://S-1-15-2-1111111111-2222222222-3333333333".into(),
            secret: Secret::new("bench"),
        },
    )
    .rate_limit(RateLimit::per_second(a.rate_limit))
    .max_pending(outstanding + 1)
    .max_in_flight(a.max_in_flight.unwrap_or(match a.http {
        HttpArg::H2 => connections.max(1) * 100,
        HttpArg::H1 => connections.max(1),
    }));
    // A target that refuses every connection (or a token endpoint that fails)
    // for 2 s is down: its breaker opens, the wakes end at once, and the run
    // stops with the reason instead of grinding through every wake.
    let threads = a.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    let mut engine_config = crate::engine::EngineConfig::default();
    if a.scheduler == SchedulerArg::Lanes {
        engine_config.lanes = threads.max(1);
    }
    engine_config.lane_scheduling = a.lane_scheduling.into();
    engine_config.breaker.open_after = BREAKER_OPEN_AFTER;
    engine_config.breaker.when_open = crate::engine::WhenOpen::Fail;
    let mut builder = Engine::builder()
        .config(engine_config)
        .transport(transport)
        .tenant(tenant);
    #[cfg(feature = "nats")]
    if let Some(url) = &a.budget_url {
        let client = crate::service::nats::connect(
            url,
            None,
            None,
            None,
            "fleetwake-bench".into(),
            "bench --budget-url",
        )
        .await
        .map_err(usage)?;
        let bucket = format!("FLEETWAKE_BENCH_{}", std::process::id());
        builder = builder.shared_budget(crate::engine::budget::SharedBudget::new(client, bucket));
    }
    if let Some(s) = a.shards {
        builder = builder.shards(s);
    }
    let shards = a
        .shards
        .unwrap_or_else(|| crate::engine::EngineConfig::default().shards);
    let engine = builder.build().map_err(|e| usage(e.to_string()))?;

    let ctx = Arc::new(Ctx {
        engine: engine.clone(),
        tenant: Arc::from("bench"),
        payload,
        next: AtomicU64::new(0),
        rec: Recorder::new(),
        stop: AtomicBool::new(false),
        intervals: Mutex::new(Vec::new()),
    });

    let down: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    // Warm-up: opens the connections and fetches the token; not measured.
    if a.warmup > 0 {
        let warm = Ctx {
            engine: engine.clone(),
            tenant: ctx.tenant.clone(),
            payload: ctx.payload.clone(),
            next: AtomicU64::new(u64::MAX / 2),
            rec: Recorder::new(),
            stop: AtomicBool::new(false),
            intervals: Mutex::new(Vec::new()),
        };
        let warm = Arc::new(warm);
        let watch = watch_breakers(engine.clone(), warm.clone(), down.clone());
        closed_loop(&warm, concurrency, Amount::Count(a.warmup)).await;
        watch.abort();
        if let Some(why) = down.lock().clone() {
            return Ok(target_down(&a.target, &why));
        }
        let failed =
            a.warmup - warm.rec.outcomes[OutcomeKind::Received.index()].load(Ordering::Relaxed);
        if failed == a.warmup {
            let mut kinds = BTreeMap::new();
            for k in OutcomeKind::ALL {
                let n = warm.rec.outcomes[k.index()].load(Ordering::Relaxed);
                if n > 0 {
                    kinds.insert(k.as_str(), n);
                }
            }
            eprintln!("warning: no warm-up wake was received: {kinds:?}");
        }
    }

    let cpu0 = cpu_times();
    let start = Instant::now();
    let reporter = a.interval.filter(|s| s.is_finite() && *s > 0.0).map(|s| {
        let ctx = ctx.clone();
        let json = a.json;
        tokio::spawn(async move {
            interval_reporter(ctx, start, Duration::from_secs_f64(s), json).await
        })
    });
    let watch = watch_breakers(engine.clone(), ctx.clone(), down.clone());
    match a.rate {
        Some(rate) => open_loop(&ctx, rate, amount, outstanding, start).await,
        None => closed_loop(&ctx, concurrency, amount).await,
    }
    watch.abort();
    let elapsed = start.elapsed();
    let cpu1 = cpu_times();
    ctx.stop.store(true, Ordering::Release);
    if let Some(r) = reporter {
        r.abort();
        let _ = r.await;
    }
    ctx.rec.drain(&mut new_histogram());
    let total = ctx.rec.total.lock().clone();
    let done = ctx.rec.done.load(Ordering::Relaxed);
    let protocol = engine.transport().protocol_for("bench.notify.windows.com");
    engine.shutdown(Duration::from_secs(10)).await;
    #[cfg(feature = "emulator")]
    if let Some(emu) = emulator {
        emu.shutdown().await;
    }
    drop(handle);

    let mut outcomes = BTreeMap::new();
    for k in OutcomeKind::ALL {
        let n = ctx.rec.outcomes[k.index()].load(Ordering::Relaxed);
        if n > 0 {
            outcomes.insert(k.as_str(), n);
        }
    }
    let cpu_user = cpu1.0 - cpu0.0;
    let cpu_sys = cpu1.1 - cpu0.1;
    let report = Report {
        target: a.target.clone(),
        http: a.http,
        protocol,
        stack: a.stack.into(),
        scheduler: a.scheduler,
        lane_scheduling: a.lane_scheduling.into(),
        mode: if a.rate.is_some() { "open" } else { "closed" },
        connections,
        concurrency: a.rate.is_none().then_some(concurrency),
        rate: a.rate,
        shards,
        threads,
        metrics: !a.no_metrics,
        warmup: a.warmup,
        notifications: done,
        elapsed_s: elapsed.as_secs_f64(),
        throughput_per_s: done as f64 / elapsed.as_secs_f64().max(1e-9),
        latency: Latency::of(&total),
        cpu_user_s: cpu_user,
        cpu_sys_s: cpu_sys,
        cpu_s_per_1000: (cpu_user + cpu_sys) * 1000.0 / (done.max(1) as f64),
        peak_rss_kb: proc_status_kb("VmHWM:").unwrap_or(0),
        outcomes,
        intervals: ctx.intervals.lock().clone(),
    };
    if let Some(why) = down.lock().clone() {
        return Ok(target_down(&a.target, &why));
    }
    if a.json {
        match serde_json::to_string(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => return Err(Failure::Internal(e.to_string())),
        }
    } else {
        print!("{}", render(&report));
    }
    let received = report.outcomes.get("received").copied().unwrap_or(0);
    Ok(if received == done {
        super::EXIT_OK
    } else {
        super::EXIT_FAILURES
    })
}

struct Ctx {
    engine: Engine,
    tenant: Arc<str>,
    payload: Payload,
    /// The next channel number.
    next: AtomicU64,
    rec: Recorder,
    stop: AtomicBool,
    /// `--interval` lines, for the final JSON.
    intervals: Mutex<Vec<IntervalReport>>,
}

impl Ctx {
    /// Wake number `i`, for a channel on `lane` if one is given: a submitter
    /// on a lane partitions its wakes as a lane-aware producer would, so
    /// that the wake never leaves that lane's thread. Channel `ok.{i}` is
    /// used when it is on the lane, else the first `ok.{i}.{j}` that is
    /// (about `lanes` tries); either way unique.
    fn notification(&self, i: u64, lane: Option<usize>) -> Option<Notification> {
        // The caller's side of a wake: a channel URI as text, parsed and checked.
        let mut uri = String::with_capacity(64);
        uri.push_str("https://bench.notify.windows.com/?token=ok.");
        push_decimal(&mut uri, i);
        let mut channel = ChannelUri::parse(&uri).ok()?;
        if let Some(lane) = lane {
            let base = uri.len();
            let mut j = 1;
            while self.engine.lane_of(&channel).is_some_and(|l| l != lane) && j < 1024 {
                uri.truncate(base);
                uri.push('.');
                push_decimal(&mut uri, j);
                channel = ChannelUri::parse(&uri).ok()?;
                j += 1;
            }
        }
        let mut n = Notification::wake(self.tenant.clone(), channel);
        n.payload = self.payload.clone();
        Some(n)
    }
}

/// Appends `n` in decimal (without the formatting machinery).
fn push_decimal(s: &mut String, n: u64) {
    let mut buf = [0u8; 20];
    for &d in crate::util::decimal(n, &mut buf) {
        s.push(char::from(d));
    }
}

/// How long the target (or its token endpoint) must fail before the bench
/// calls it down and stops.
const BREAKER_OPEN_AFTER: Duration = Duration::from_secs(2);

/// Watches the engine's breakers while `ctx` runs: the first one that opens
/// stops the run and leaves its reason in `down`.
fn watch_breakers(
    engine: Engine,
    ctx: Arc<Ctx>,
    down: Arc<Mutex<Option<String>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Some(why) = engine.health().open_breakers().into_iter().next() {
                *down.lock() = Some(why);
                ctx.stop.store(true, Ordering::Release);
                return;
            }
        }
    })
}

/// Says that the target could not be reached, and why; the exit code.
fn target_down(target: &str, why: &str) -> u8 {
    eprintln!("error: cannot reach the target {target}: {why}");
    eprintln!("the run was stopped; nothing was measured");
    super::EXIT_UNAVAILABLE
}

/// `concurrency` submitters, each sending its next wake when the last one ends.
/// The submitters go round-robin onto the engine's lanes when it has any
/// (next to the shards), else onto this runtime.
async fn closed_loop(ctx: &Arc<Ctx>, concurrency: usize, amount: Amount) {
    let lanes = ctx.engine.lane_handles().to_vec();
    // Lane-aware producers: with two lanes or more, each submitter sends
    // only wakes whose shard is on its own lane.
    let partition = lanes.len() > 1;
    let base = ctx.next.load(Ordering::Relaxed);
    let until = match amount {
        Amount::Duration(d) => Some(Instant::now() + d),
        Amount::Count(_) => None,
    };
    let limit = match amount {
        Amount::Count(n) => base.saturating_add(n),
        Amount::Duration(_) => u64::MAX,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for slot in 0..concurrency {
        let ctx = ctx.clone();
        let lane = partition.then(|| slot % lanes.len());
        let submitter = async move {
            loop {
                if until.is_some_and(|u| Instant::now() >= u) || ctx.stop.load(Ordering::Acquire) {
                    break;
                }
                let i = ctx.next.fetch_add(1, Ordering::Relaxed);
                if i >= limit {
                    break;
                }
                let Some(n) = ctx.notification(i, lane) else {
                    break;
                };
                let t0 = Instant::now();
                let o = ctx.engine.submit(n).await;
                ctx.rec.record(slot, o.kind, t0.elapsed());
            }
        };
        match lanes.get(slot % lanes.len().max(1)) {
            Some(lane) => tasks.spawn_on(submitter, lane),
            None => tasks.spawn(submitter),
        };
    }
    while tasks.join_next().await.is_some() {}
}

/// Starts wake *i* at `start + i/rate`; latency runs from that intended time.
/// The wakes are a lazy stream released at their due times (in ticks of
/// [`OPEN_LOOP_TICK`]) and fed to [`Engine::submit_stream`], which keeps at
/// most `outstanding` in flight in this one task: no task, permit or channel
/// per wake. When the engine falls behind, due wakes wait in the stream and
/// their wait counts in their latency (no coordinated omission); the backlog
/// is what is due but not yet started, and memory stays bounded by
/// `outstanding`.
async fn open_loop(ctx: &Arc<Ctx>, rate: f64, amount: Amount, outstanding: usize, start: Instant) {
    // On a runtime worker, like the engine's shards: run from `block_on`'s
    // thread, every result would be a cross-thread wake-up (~30% more CPU
    // per wake).
    // With lanes, one generator per lane at rate/lanes, each sending wakes
    // of its own lane (as the closed loop's submitters do).
    let lanes = ctx.engine.lane_handles().to_vec();
    if lanes.is_empty() {
        let ctx = ctx.clone();
        let gen = Generator::whole();
        let _ = tokio::spawn(async move {
            open_loop_driver(&ctx, rate, amount, outstanding, start, gen).await
        })
        .await;
        return;
    }
    let n = lanes.len();
    let mut drivers = Vec::with_capacity(n);
    for (l, handle) in lanes.iter().enumerate() {
        let ctx = ctx.clone();
        let part = match amount {
            Amount::Count(c) => Amount::Count(c / n as u64 + u64::from((l as u64) < c % n as u64)),
            d => d,
        };
        let gen = Generator {
            lane: (n > 1).then_some(l),
            first: l as u64,
            step: n as u64,
        };
        let per = (outstanding / n).max(1);
        drivers.push(handle.spawn(async move {
            open_loop_driver(&ctx, rate / n as f64, part, per, start, gen).await
        }));
    }
    for d in drivers {
        let _ = d.await;
    }
}

/// Which wakes one open-loop generator sends: numbers `first + k * step`,
/// for channels of `lane` if set.
#[derive(Clone, Copy)]
struct Generator {
    lane: Option<usize>,
    first: u64,
    step: u64,
}

impl Generator {
    fn whole() -> Self {
        Generator {
            lane: None,
            first: 0,
            step: 1,
        }
    }
}

async fn open_loop_driver(
    ctx: &Arc<Ctx>,
    rate: f64,
    amount: Amount,
    outstanding: usize,
    start: Instant,
    mine: Generator,
) {
    use futures_util::StreamExt;
    let gen = ctx.clone();
    let due_wakes = futures_util::stream::unfold(0u64, move |i| {
        let ctx = gen.clone();
        async move {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            match amount {
                Amount::Count(n) if i >= n => return None,
                Amount::Duration(d) if due >= start + d => return None,
                _ if ctx.stop.load(Ordering::Acquire) => return None,
                _ => {}
            }
            let now = Instant::now();
            if due > now {
                // Sleep in ticks of at least TICK; the wakes due by then start
                // together (fewer wake-ups and fuller writes; the tick's delay is
                // counted in latency, which runs from each wake's own due time).
                tokio::time::sleep_until((due.max(now + OPEN_LOOP_TICK)).into()).await;
            }
            let n = ctx.notification(mine.first + i * mine.step, mine.lane)?;
            Some((((i, due), n), i + 1))
        }
    });
    let mut done = std::pin::pin!(ctx.engine.submit_stream(due_wakes, outstanding));
    while let Some(((i, due), o)) = done.next().await {
        ctx.rec.record(i as usize, o.kind, due.elapsed());
    }
}

/// The open loop's scheduling granularity.
const OPEN_LOOP_TICK: Duration = Duration::from_millis(4);

async fn interval_reporter(ctx: Arc<Ctx>, start: Instant, every: Duration, json: bool) {
    let mut tick = tokio::time::interval_at((start + every).into(), every);
    let mut last_done = 0u64;
    let mut last_t = start;
    let mut h = new_histogram();
    loop {
        tick.tick().await;
        if ctx.stop.load(Ordering::Acquire) {
            break;
        }
        let now = Instant::now();
        let done = ctx.rec.done.load(Ordering::Relaxed);
        h.reset();
        ctx.rec.drain(&mut h);
        let r = IntervalReport {
            t_s: (now - start).as_secs_f64(),
            done,
            throughput_per_s: (done - last_done) as f64 / (now - last_t).as_secs_f64().max(1e-9),
            latency: Latency::of(&h),
            rss_kb: proc_status_kb("VmRSS:").unwrap_or(0),
        };
        if json {
            if let Ok(s) = serde_json::to_string(&r) {
                eprintln!("{s}");
            }
        } else {
            eprintln!(
                "[{:>7.1}s] {:>9.0}/s  p50 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms  rss {:>7} KB",
                r.t_s, r.throughput_per_s, r.latency.p50_ms, r.latency.p99_ms, r.latency.max_ms, r.rss_kb
            );
        }
        ctx.intervals.lock().push(r);
        last_done = done;
        last_t = now;
    }
}

/// User and system CPU seconds of the whole process so far.
fn cpu_times() -> (f64, f64) {
    // SAFETY: getrusage writes into the struct we pass; a zeroed rusage is valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return (0.0, 0.0);
    }
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (s(ru.ru_utime), s(ru.ru_stime))
}

/// A `kB` field of `/proc/self/status` (`VmHWM:`, `VmRSS:`), where there is one.
fn proc_status_kb(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}

fn render(r: &Report) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let load = match (r.concurrency, r.rate) {
        (Some(c), _) => format!("closed loop, {c} in flight"),
        (_, Some(rate)) => format!("open loop, {rate:.0}/s"),
        _ => String::new(),
    };
    let _ = writeln!(
        s,
        "fleetwake bench: {} ({}, {} stack)",
        r.target,
        r.protocol.unwrap_or("?"),
        r.stack.as_str()
    );
    let _ = writeln!(
        s,
        "  load          {load}; {} connections; {} shards; {} threads ({:?}, {}); metrics {}",
        r.connections,
        r.shards,
        r.threads,
        r.scheduler,
        r.lane_scheduling.as_str(),
        if r.metrics { "on" } else { "off" }
    );
    let _ = writeln!(
        s,
        "  wakes         {} in {:.2} s",
        r.notifications, r.elapsed_s
    );
    let _ = writeln!(s, "  throughput    {:.0} /s", r.throughput_per_s);
    let l = &r.latency;
    let _ = writeln!(
        s,
        "  latency (ms)  p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  mean {:.2}",
        l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.mean_ms
    );
    let _ = writeln!(
        s,
        "  cpu           {:.2} s user + {:.2} s sys = {:.4} s per 1000 wakes",
        r.cpu_user_s, r.cpu_sys_s, r.cpu_s_per_1000
    );
    let _ = writeln!(s, "  peak rss      {:.1} MB", r.peak_rss_kb as f64 / 1024.0);
    let outcomes: Vec<String> = r.outcomes.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let _ = writeln!(s, "  outcomes      {}", outcomes.join(", "));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal() {
        for n in [0u64, 7, 10, 12345, u64::MAX] {
            let mut s = String::from("x");
            push_decimal(&mut s, n);
            assert_eq!(s, format!("x{n}"));
        }
    }
}
