//! `fleetwake simulate`: runs the guided and the naive MDM server against the
//! simulated fleet and prints the figures side by side, as a table or as JSON.

use std::time::{Duration, Instant};

use crate::emulator::fleet::{simulate, ServerPolicy, SimConfig, SimReport};
use crate::mdm::policy::short_duration;

const EXAMPLES: &str = "\
Examples:
  fleetwake simulate --devices 100000 --days 60 --seed 1
  fleetwake simulate --devices 20000 --days 90 --share-buggy-never-renews 0.2 --json
  fleetwake simulate --policy naive --push-interval 6h --push-ttl 6h

Guided: reads ChannelURI every session, sets the PFN again after a 410 and before
30 days (--early-margin), never pushes a dead channel, keeps polling. Naive: keeps
pushing the channel learned at enrollment. The same seed gives the same fleet and
the same figures.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Which {
    /// Both, side by side.
    Both,
    /// Only the guided server.
    Guided,
    /// Only the naive server.
    Naive,
}

/// Arguments of `fleetwake simulate`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// Devices in the fleet.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    devices: u32,
    /// Simulated days.
    #[arg(long, default_value_t = 60, value_name = "D")]
    days: u32,
    /// Seed of the fleet's randomness.
    #[arg(long, default_value_t = 1, value_name = "S")]
    seed: u64,
    /// Which server policies to run.
    #[arg(long, value_enum, default_value_t = Which::Both)]
    policy: Which,
    /// Share of devices on Windows 10 1511 retry logic.
    #[arg(long, default_value_t = 0.10, value_name = "SHARE")]
    share_1511: f64,
    /// Share of devices with the old-build bug (channel never renewed).
    #[arg(long, default_value_t = 0.05, value_name = "SHARE")]
    share_buggy_never_renews: f64,
    /// Devices enroll over this period.
    #[arg(long, default_value = "7d", value_parser = parse_duration, value_name = "DURATION")]
    enrollment_spread: Duration,
    /// How often the server wakes each device.
    #[arg(long, default_value = "1d", value_parser = parse_duration, value_name = "DURATION")]
    push_interval: Duration,
    /// The devices' poll interval.
    #[arg(long, default_value = "1d", value_parser = parse_duration, value_name = "DURATION")]
    poll_interval: Duration,
    /// X-WNS-TTL of each push.
    #[arg(long, default_value = "1d", value_parser = parse_duration, value_name = "DURATION")]
    push_ttl: Duration,
    /// A wake is reached when its push leads to a session within this time.
    #[arg(long, default_value = "1h", value_parser = parse_duration, value_name = "DURATION")]
    reach_within: Duration,
    /// The guided server sets the PFN again this long before 30 days.
    #[arg(long, default_value = "5d", value_parser = parse_duration, value_name = "DURATION")]
    early_margin: Duration,
    /// Chance per day of an offline spell (1 to 12 h).
    #[arg(long, default_value_t = 0.5, value_name = "P")]
    offline_chance: f64,
    /// Share of devices with one long offline spell (5 to 25 days).
    #[arg(long, default_value_t = 0.05, value_name = "SHARE")]
    share_long_offline: f64,
    /// Chance per day of a battery-saver spell (1 to 8 h without WNS).
    #[arg(long, default_value_t = 0.15, value_name = "P")]
    battery_saver_chance: f64,
    /// Share of devices that exhaust their Data Sense allowance monthly.
    #[arg(long, default_value_t = 0.03, value_name = "SHARE")]
    share_data_sense: f64,
    /// Worker threads (0: one per core; the result does not depend on it).
    #[arg(long, default_value_t = 0, value_name = "N")]
    threads: usize,
    /// Print JSON (the configuration and both runs) instead of a table.
    #[arg(long)]
    json: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (e.g. 1d, 6h, 90m)"))
}

pub(crate) fn run(a: Args) -> u8 {
    let cfg = SimConfig {
        devices: a.devices,
        days: a.days,
        seed: a.seed,
        share_1511: a.share_1511,
        share_buggy_never_renews: a.share_buggy_never_renews,
        enrollment_spread: a.enrollment_spread,
        push_interval: a.push_interval,
        poll_interval: a.poll_interval,
        push_ttl: a.push_ttl,
        reach_within: a.reach_within,
        early_reset_margin: a.early_margin,
        offline_chance_per_day: a.offline_chance,
        share_long_offline: a.share_long_offline,
        battery_saver_chance_per_day: a.battery_saver_chance,
        share_data_sense: a.share_data_sense,
        threads: a.threads,
        ..SimConfig::default()
    };
    if let Err(e) = cfg.validate() {
        eprintln!("error: {e}");
        return super::EXIT_CONFIG;
    }
    let policies: &[ServerPolicy] = match a.policy {
        Which::Both => &[ServerPolicy::Guided, ServerPolicy::Naive],
        Which::Guided => &[ServerPolicy::Guided],
        Which::Naive => &[ServerPolicy::Naive],
    };
    let mut runs = Vec::new();
    for &p in policies {
        let started = Instant::now();
        match simulate(&cfg, p) {
            Ok(r) => runs.push((r, started.elapsed())),
            Err(e) => {
                eprintln!("error: {e}");
                return super::EXIT_CONFIG;
            }
        }
    }
    if a.json {
        let mut v = serde_json::json!({ "config": cfg });
        let mut elapsed = serde_json::Map::new();
        for (r, t) in &runs {
            v[r.policy.as_str()] = serde_json::to_value(r).unwrap_or_default();
            elapsed.insert(r.policy.as_str().into(), (t.as_millis() as u64).into());
        }
        v["elapsed_ms"] = elapsed.into();
        match serde_json::to_string_pretty(&v) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("error: cannot write JSON: {e}");
                return super::EXIT_INTERNAL;
            }
        }
    } else {
        print_table(&cfg, &runs);
    }
    super::EXIT_OK
}

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

/// One table cell from a report.
type Cell = Box<dyn Fn(&SimReport) -> String>;

fn print_table(cfg: &SimConfig, runs: &[(SimReport, Duration)]) {
    let Some((first, _)) = runs.first() else {
        return;
    };
    println!(
        "simulated {} devices over {} days, seed {} ({} on 1511 logic, {} never renew)",
        cfg.devices, cfg.days, cfg.seed, first.devices_1511, first.devices_never_renew
    );
    let lat = |s: Option<u64>| s.map_or_else(|| "-".to_string(), short_duration);
    let within = short_duration(cfg.reach_within.as_secs());
    let rows: Vec<(String, Cell)> = vec![
        (
            "intended wakes".into(),
            Box::new(|r| r.intended_wakes.to_string()),
        ),
        (
            "pushes sent".into(),
            Box::new(|r| r.pushes_sent.to_string()),
        ),
        (
            "pushes skipped (dead/no channel)".into(),
            Box::new(|r| r.pushes_skipped.to_string()),
        ),
        (
            "pushes to dead channels (410)".into(),
            Box::new(|r| r.pushes_410.to_string()),
        ),
        (
            "  share of pushes sent".into(),
            Box::new(|r| pct(r.share_410)),
        ),
        (
            "  share in the last 7 days".into(),
            Box::new(|r| pct(r.share_410_last_week)),
        ),
        (
            format!("push reachability (session <= {within})"),
            Box::new(|r| pct(r.push_reachability)),
        ),
        (
            format!("wakes served by any session <= {within}"),
            Box::new(|r| pct(r.wakes_served_by_any_session)),
        ),
        (
            "sessions triggered by push".into(),
            Box::new(|r| r.push_sessions.to_string()),
        ),
        (
            "push -> session p50 / p95".into(),
            Box::new(move |r| format!("{} / {}", lat(r.latency_p50_secs), lat(r.latency_p95_secs))),
        ),
        (
            "WNS requests/day mean / peak".into(),
            Box::new(|r| {
                format!(
                    "{:.0} / {}",
                    r.wns_requests_per_day_mean, r.wns_requests_per_day_peak
                )
            }),
        ),
        (
            "pushes cached / delivered later".into(),
            Box::new(|r| format!("{} / {}", r.cached, r.delivered_from_cache)),
        ),
        (
            "poll sessions (missed)".into(),
            Box::new(|r| format!("{} ({})", r.poll_sessions, r.polls_missed)),
        ),
        (
            "renewal sessions".into(),
            Box::new(|r| r.renewal_sessions.to_string()),
        ),
        ("PFN resets".into(), Box::new(|r| r.pfn_resets.to_string())),
    ];
    print!("{:<42}", "");
    for (r, _) in runs {
        print!(" {:>22}", r.policy.as_str());
    }
    println!();
    for (label, f) in &rows {
        print!("{label:<42}");
        for (r, _) in runs {
            print!(" {:>22}", f(r));
        }
        println!();
    }
    print!("{:<42}", "run time");
    for (_, t) in runs {
        print!(" {:>22}", format!("{:.2} s", t.as_secs_f64()));
    }
    println!();
}
