//! `fleetwake campaign`: wake every device in a file (or stdin), resumably, and
//! write the report, summary, action lists and optional HTML page.

use std::io::{BufRead, BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::campaign::{
    self, input::DeviceReader, summary, CampaignOptions, CampaignRun, ProgressMode,
};
use crate::config::Config;
use crate::engine::Engine;

const EXAMPLES: &str = "\
Input: CSV with a header, or JSONL, with device_id, channel_uri, tenant and
optionally channel_seen_at (RFC 3339). `-` reads stdin.

Examples:
  fleetwake campaign --config fleetwake.toml --devices fleet.csv --report wake.jsonl
  fleetwake campaign --config fleetwake.toml --devices - --report wake.jsonl --html wake.html < fleet.jsonl

Run the same command again after a crash or Ctrl-C to resume from the checkpoint
(wake.jsonl.checkpoint); --restart starts over. Outputs beside the report:
wake.jsonl.summary.json and wake.jsonl.actions/<action>.csv.";

/// Arguments of `fleetwake campaign`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// The TOML config (tenants, transport, retry policy).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// The device list (CSV or JSONL), or `-` for stdin.
    #[arg(long, value_name = "FILE|-")]
    pub devices: String,
    /// The JSONL report: one row per device (also the resume journal).
    #[arg(long, value_name = "FILE")]
    pub report: PathBuf,
    /// Also write a self-contained HTML report.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Where the JSON summary goes [default: REPORT.summary.json].
    #[arg(long, value_name = "FILE")]
    pub summary: Option<PathBuf>,
    /// Stop at the first bad row instead of reporting it and going on.
    #[arg(long)]
    pub strict: bool,
    /// Discard an existing report and checkpoint and start over.
    #[arg(long)]
    pub restart: bool,
    /// Most devices between being read and having their report row (each
    /// costs about 6 KB while outstanding).
    #[arg(long, default_value_t = 2048, value_name = "N")]
    pub max_outstanding: usize,
    /// Use the channel store: skip channels it knows are dead (410, 404, 403, older
    /// than 30 days) and record every outcome in it.
    #[arg(long, value_name = "FILE")]
    pub store: Option<PathBuf>,
    /// Progress display: auto (a bar on a terminal, else a log line every 5 s), bar, log, none.
    #[arg(long, default_value = "auto", value_parser = ["auto", "bar", "log", "none"])]
    pub progress: String,
}

pub(crate) async fn run(a: Args) -> u8 {
    let cfg = match Config::load(&a.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return super::EXIT_CONFIG;
        }
    };
    if let Some(addr) = cfg.file.metrics.prometheus_listen {
        if let Err(e) = crate::telemetry::install_prometheus(addr) {
            eprintln!("error: {e}");
            return super::EXIT_CONFIG;
        }
    }
    let engine = match super::build_engine(&cfg, &a.config, 1, "campaign").await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return super::EXIT_CONFIG;
        }
    };
    let (reader, total_bytes): (Box<dyn BufRead + Send>, u64) = if a.devices == "-" {
        (
            Box::new(BufReader::with_capacity(256 * 1024, std::io::stdin())),
            0,
        )
    } else {
        match std::fs::File::open(&a.devices) {
            Ok(f) => {
                let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                (Box::new(BufReader::with_capacity(256 * 1024, f)), len)
            }
            Err(e) => {
                eprintln!("error: cannot open the device list {}: {e}", a.devices);
                return super::EXIT_CONFIG;
            }
        }
    };
    let source = if a.devices == "-" {
        "stdin".to_string()
    } else {
        a.devices.clone()
    };
    let mut opts = CampaignOptions::new(&a.report);
    opts.strict = a.strict;
    opts.restart = a.restart;
    opts.max_outstanding = a.max_outstanding.max(1);
    opts.push = cfg.push_options();
    opts.fingerprint = fingerprint(&a.config, &a.devices, total_bytes);
    if a.devices != "-" {
        // One quick pass (about 1 GB/s) to size the channel table once.
        opts.expected_devices = count_lines(Path::new(&a.devices)).ok();
    }
    opts.progress = progress_mode(&a.progress, total_bytes);
    let link = match &a.store {
        None => None,
        Some(path) => match crate::mdm::ChannelStore::open(path) {
            Ok(store) => {
                let link = campaign::store::StoreLink::new(store, crate::mdm::Policy::default());
                opts.skip = Some(link.skip.clone());
                opts.on_row = Some(link.on_row.clone());
                Some(link)
            }
            Err(e) => {
                eprintln!("error: {e}");
                return if e.is_input_error() {
                    super::EXIT_CONFIG
                } else {
                    super::EXIT_INTERNAL
                };
            }
        },
    };
    let outputs = Outputs {
        summary: a.summary.clone(),
        html: a.html.clone(),
    };
    let stop = super::signals::stop_on_signals();
    let mut code = run_and_report(
        &engine,
        DeviceReader::new(reader, source),
        opts,
        stop,
        &outputs,
    )
    .await;
    engine.shutdown(Duration::from_secs(30)).await;
    if let (Some(link), Some(path)) = (link, &a.store) {
        match link.finish() {
            Ok(n) => println!("Channel store: {n} outcomes recorded in {}", path.display()),
            Err(e) => {
                eprintln!("error: recording outcomes in the channel store: {e}");
                code = super::EXIT_INTERNAL;
            }
        }
    }
    code
}

/// Where the end-of-campaign files go.
pub(crate) struct Outputs {
    pub(crate) summary: Option<PathBuf>,
    pub(crate) html: Option<PathBuf>,
}

pub(crate) fn progress_mode(choice: &str, total_bytes: u64) -> ProgressMode {
    let tty = std::io::stderr().is_terminal();
    match choice {
        "bar" => ProgressMode::Bar { total_bytes },
        "log" => ProgressMode::Log {
            every: Duration::from_secs(5),
        },
        "none" => ProgressMode::Quiet,
        _ if tty => ProgressMode::Bar { total_bytes },
        _ => ProgressMode::Log {
            every: Duration::from_secs(5),
        },
    }
}

/// The number of lines of a file (a last line without a newline counts).
fn count_lines(path: &Path) -> std::io::Result<u64> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 256 * 1024];
    let (mut lines, mut last) = (0u64, b'\n');
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        last = buf[n - 1];
    }
    Ok(lines + u64::from(last != b'\n'))
}

fn fingerprint(config: &Path, devices: &str, devices_len: u64) -> String {
    let config = std::fs::canonicalize(config).unwrap_or_else(|_| config.to_path_buf());
    let devices = if devices == "-" {
        "stdin".to_string()
    } else {
        std::fs::canonicalize(devices)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| devices.to_string())
    };
    format!(
        "config={} devices={} bytes={}",
        config.display(),
        devices,
        devices_len
    )
}

/// Runs the campaign, then writes and prints the summary. Returns the exit code.
pub(crate) async fn run_and_report<R: BufRead + Send + 'static>(
    engine: &Engine,
    reader: DeviceReader<R>,
    opts: CampaignOptions,
    stop: tokio::sync::watch::Receiver<bool>,
    outputs: &Outputs,
) -> u8 {
    let report = opts.report.clone();
    let run = match campaign::run(engine, reader, opts, stop).await {
        Ok(r) => r,
        Err(e @ campaign::CampaignError::Report(_))
        | Err(e @ campaign::CampaignError::Input(_)) => {
            eprintln!("error: {e}");
            return super::EXIT_CONFIG;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return super::EXIT_INTERNAL;
        }
    };
    match finish(&report, &run, outputs) {
        Ok(s) => exit_code(&run, &s),
        Err(e) => {
            eprintln!("error: writing the summary: {e}");
            super::EXIT_INTERNAL
        }
    }
}

fn finish(
    report: &Path,
    run: &CampaignRun,
    outputs: &Outputs,
) -> std::io::Result<summary::Summary> {
    let mut s = summary::summarize(report, Some(&summary::actions_dir(report)))?;
    s.duration_s = (run.duration.as_secs_f64() * 10.0).round() / 10.0;
    s.devices_per_s = (run.rows_written as f64 / run.duration.as_secs_f64().max(0.001)).round();
    s.interrupted = run.interrupted;
    if run.already_complete {
        println!("The campaign for {} is already complete; showing its summary (--restart runs it again).", report.display());
    }
    if run.resumed_skipped > 0 {
        println!(
            "Resumed: {} devices were already done in an earlier run.",
            run.resumed_skipped
        );
    }
    print!("{}", summary::render_table(&s));
    let summary_path = outputs.summary.clone().unwrap_or_else(|| {
        let mut p = report.as_os_str().to_owned();
        p.push(".summary.json");
        PathBuf::from(p)
    });
    std::fs::write(
        &summary_path,
        serde_json::to_vec_pretty(&s).map_err(std::io::Error::other)?,
    )?;
    println!("\nSummary JSON: {}", summary_path.display());
    if let Some(h) = &outputs.html {
        campaign::html::write(h, &s, &run.timeline)?;
        println!("HTML report:  {}", h.display());
    }
    if let Some((line, reason)) = &run.strict_stop {
        eprintln!("error: --strict: stopped at line {line}: {reason}");
    }
    if run.interrupted {
        eprintln!("interrupted: in-flight wakes were drained and the checkpoint written; run the same command to resume");
    }
    for n in &run.not_tried {
        eprintln!(
            "error: {} devices not tried: {}: {}",
            n.devices, n.what, n.error
        );
    }
    if let Some(line) = run.stopped_reading_at {
        eprintln!(
            "error: every tenant's token endpoint is down: the campaign stopped reading at line {line}; the devices from there on were not tried either"
        );
    }
    if !run.not_tried.is_empty() {
        eprintln!(
            "The devices not tried have no row and the checkpoint is kept: run the same command again once the endpoint is back to wake them."
        );
    }
    Ok(s)
}

fn exit_code(run: &CampaignRun, s: &summary::Summary) -> u8 {
    if run.interrupted {
        super::EXIT_INTERRUPTED
    } else if run.strict_stop.is_some() {
        super::EXIT_CONFIG
    } else if !run.not_tried.is_empty() {
        super::EXIT_UNAVAILABLE
    } else if s.not_received() > 0 {
        super::EXIT_FAILURES
    } else {
        super::EXIT_OK
    }
}
