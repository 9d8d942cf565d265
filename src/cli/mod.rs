//! The `fleetwake` command line: argument parsing, logging setup, and one module
//! per subcommand. Each subcommand is a thin layer over the library.
//!
//! Exit codes (also in `--help`):
//! - 0: success;
//! - 1: done, but some wakes failed;
//! - 2: usage, configuration or credential error;
//! - 3: interrupted (SIGINT/SIGTERM) after draining;
//! - 4: internal or I/O error;
//! - 5: an endpoint was down: a token endpoint or the WNS target could not be
//!   reached for long enough to open its breaker; what was not tried is left
//!   for a run of the same command (campaign), or nothing was measured (bench).

mod bench;
mod campaign;
mod channels;
mod config_cmd;
#[cfg(feature = "nats")]
mod consume;
#[cfg(feature = "emulator")]
mod demo;
#[cfg(feature = "emulator")]
mod emulate;
mod healthcheck;
mod mdm;
mod send;
mod serve;
mod signals;
#[cfg(feature = "emulator")]
mod simulate;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: finished, with wakes that did not succeed.
pub const EXIT_FAILURES: u8 = 1;
/// Exit code: usage, configuration or credential error.
pub const EXIT_CONFIG: u8 = 2;
/// Exit code: interrupted by SIGINT/SIGTERM (after draining).
pub const EXIT_INTERRUPTED: u8 = 3;
/// Exit code: internal or I/O error.
pub const EXIT_INTERNAL: u8 = 4;
/// Exit code: a token endpoint or the WNS target was down (its breaker opened);
/// a campaign kept its checkpoint for the devices it could not try.
pub const EXIT_UNAVAILABLE: u8 = 5;

const AFTER_HELP: &str = "\
Exit codes:
  0  success
  1  finished, but some wakes failed (see the report)
  2  usage, configuration or credential error
  3  interrupted by SIGINT/SIGTERM (in-flight wakes were drained first)
  4  internal or I/O error
  5  an endpoint was down: a tenant's token endpoint or the WNS target failed
     for long enough to open its breaker (campaign: the devices not tried have
     no row and the checkpoint is kept; run the same command again once it is
     back)

Logging: FLEETWAKE_LOG filters logs (e.g. FLEETWAKE_LOG=fleetwake=debug); --log-format json.";

/// What `--version` says: the version, the git commit it was built from, and
/// the features compiled in.
fn version_text() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        let features: Vec<&str> = [
            ("emulator", cfg!(feature = "emulator")),
            ("nats", cfg!(feature = "nats")),
            ("mimalloc", cfg!(feature = "mimalloc")),
        ]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect();
        format!(
            "{} (commit {}; features: {})",
            env!("CARGO_PKG_VERSION"),
            env!("FLEETWAKE_GIT_COMMIT"),
            if features.is_empty() {
                "none".to_string()
            } else {
                features.join(", ")
            }
        )
    })
}

/// Wake Windows devices for MDM through WNS raw push, at fleet scale.
#[derive(Debug, Parser)]
#[command(name = "fleetwake", version = version_text(), about, after_help = AFTER_HELP)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a campaign against the built-in WNS emulator: the first thing to try.
    #[cfg(feature = "emulator")]
    Demo(demo::Args),
    /// Wake every device in a CSV/JSONL list; resumable; writes a report.
    Campaign(campaign::Args),
    /// Send one wake and print the full outcome and response headers.
    Send(send::Args),
    /// Consume wake requests from a NATS JetStream stream (scales across machines).
    #[cfg(feature = "nats")]
    Consume(consume::Args),
    /// Serve the HTTP API (POST /v1/wakes, jobs, /metrics, /healthz, /readyz).
    Serve(serve::Args),
    /// Load-test a target (or the built-in emulator) with the whole engine in the path.
    Bench(bench::Args),
    /// Check a configuration file.
    #[command(subcommand)]
    Config(config_cmd::Command),
    /// GET a local health endpoint; exit 0 on 2xx (for container HEALTHCHECKs).
    Healthcheck(healthcheck::Args),
    /// Run the built-in WNS emulator (token endpoints and push endpoint over TLS).
    #[cfg(feature = "emulator")]
    Emulate(emulate::Args),
    /// SyncML for the DMClient CSP: build Push/Poll commands, parse device replies.
    Mdm(mdm::Args),
    /// The channel store: import campaign reports and SyncML replies, list what is due.
    Channels(channels::Args),
    /// Run a server policy, with and without the MDM push guidance, against a simulated fleet.
    #[cfg(feature = "emulator")]
    Simulate(simulate::Args),
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let log = init_logging(cli.log_format);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Command::Bench(a) = &cli.command {
        if a.scheduler == bench::SchedulerArg::Lanes {
            // The engine's lanes do the work; this runtime only waits for
            // them and runs the reporters.
            builder.worker_threads(1);
        } else if let Some(n) = a.threads {
            builder.worker_threads(n.max(1));
        }
    }
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_INTERNAL);
        }
    };
    let code = rt.block_on(async move {
        match cli.command {
            #[cfg(feature = "emulator")]
            Command::Demo(a) => demo::run(a).await,
            Command::Campaign(a) => campaign::run(a).await,
            Command::Send(a) => send::run(a).await,
            #[cfg(feature = "nats")]
            Command::Consume(a) => consume::run(a).await,
            Command::Serve(a) => serve::run(a).await,
            Command::Bench(a) => bench::run(a).await,
            Command::Config(c) => config_cmd::run(c),
            Command::Healthcheck(a) => healthcheck::run(a),
            #[cfg(feature = "emulator")]
            Command::Emulate(a) => emulate::run(a).await,
            Command::Mdm(a) => mdm::run(a),
            Command::Channels(a) => channels::run(a),
            #[cfg(feature = "emulator")]
            Command::Simulate(a) => simulate::run(a),
        }
    });
    drop(rt);
    log.finish();
    ExitCode::from(code)
}

/// Log lines that may wait for stderr; beyond that, lines are dropped.
const LOG_BUFFER_LINES: usize = 16_384;

/// The logger's writer thread and its count of dropped lines.
struct Logging {
    guard: tracing_appender::non_blocking::WorkerGuard,
    dropped: tracing_appender::non_blocking::ErrorCounter,
}

impl Logging {
    /// Flushes what is buffered and says how many lines were dropped, if any.
    fn finish(self) {
        let dropped = self.dropped.dropped_lines();
        drop(self.guard);
        if dropped > 0 {
            eprintln!(
                "fleetwake: {dropped} log lines were dropped because stderr was not read fast enough"
            );
        }
    }
}

/// Logs go to stderr through a bounded buffer and a writer thread: a log
/// reader that stops reading (a full pipe, a stuck log driver) costs log lines,
/// never progress. A blocking write to stderr from the runtime's threads once
/// stalled a whole consumer (docs/RELIABILITY.md).
fn init_logging(format: LogFormat) -> Logging {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("FLEETWAKE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_BUFFER_LINES)
        .thread_name("fleetwake-log")
        .finish(std::io::stderr());
    let dropped = writer.error_counter();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
    Logging { guard, dropped }
}

/// Builds the engine from `cfg` (loaded from `path`). With `[budget] url`
/// set, every PFN's budget and throttle pause are shared with the other
/// instances through NATS (and `instances` is not needed); without it, each
/// PFN's rate is split across `instances` processes. The error is ready to
/// print and names the file.
pub(crate) async fn build_engine(
    cfg: &crate::config::Config,
    path: &std::path::Path,
    instances: u32,
    name: &str,
) -> Result<crate::engine::Engine, String> {
    #[cfg(feature = "nats")]
    {
        let budget = budget_settings(cfg, path)?;
        if let Some(shared) = budget
            .connect(name)
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?
        {
            if instances > 1 {
                tracing::warn!(
                    instances,
                    "[consume] instances is not applied: [budget] shares each PFN's budget among however many instances run"
                );
            }
            tracing::info!(
                bucket = shared.bucket(),
                "each PFN's budget is shared through NATS"
            );
            return cfg
                .engine_builder()
                .map_err(|e| e.to_string())?
                .shared_budget(shared)
                .build()
                .map_err(|e| format!("{}: {e}", path.display()));
        }
    }
    let _ = name;
    check_engine(cfg, path, instances)
}

/// Builds the engine without contacting anything (no shared budget): what
/// `config check` uses, and the engine of a process with no `[budget] url`.
pub(crate) fn check_engine(
    cfg: &crate::config::Config,
    path: &std::path::Path,
    instances: u32,
) -> Result<crate::engine::Engine, String> {
    #[cfg(feature = "nats")]
    budget_settings(cfg, path)?;
    cfg.engine_builder_split(instances)
        .map_err(|e| e.to_string())?
        .build()
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Table `[name]` of `cfg` (loaded from `path`), read and checked by
/// `validate`; its errors name the file.
fn checked_section<T: serde::de::DeserializeOwned + Default>(
    cfg: &crate::config::Config,
    path: &std::path::Path,
    name: &str,
    validate: impl FnOnce(&T) -> Result<(), String>,
) -> Result<T, String> {
    let settings: T = cfg.section(name).map_err(|e| e.to_string())?;
    validate(&settings).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(settings)
}

/// `[budget]` of `cfg` (loaded from `path`), read and checked.
#[cfg(feature = "nats")]
pub(crate) fn budget_settings(
    cfg: &crate::config::Config,
    path: &std::path::Path,
) -> Result<crate::service::budget::BudgetSettings, String> {
    checked_section(
        cfg,
        path,
        "budget",
        crate::service::budget::BudgetSettings::validate,
    )
}

/// `[consume]` of `cfg` (loaded from `path`), read and checked as
/// `fleetwake consume` needs it.
#[cfg(feature = "nats")]
pub(crate) fn consume_settings(
    cfg: &crate::config::Config,
    path: &std::path::Path,
) -> Result<crate::service::consume::ConsumeSettings, String> {
    checked_section(
        cfg,
        path,
        "consume",
        crate::service::consume::ConsumeSettings::validate,
    )
}

/// `[serve]` of `cfg` (loaded from `path`), read and checked as
/// `fleetwake serve` needs it, with its API keys (at least one).
pub(crate) fn serve_settings(
    cfg: &crate::config::Config,
    path: &std::path::Path,
) -> Result<
    (
        crate::service::http_api::ServeSettings,
        crate::service::auth::ApiKeys,
    ),
    String,
> {
    let settings = checked_section(
        cfg,
        path,
        "serve",
        crate::service::http_api::ServeSettings::validate,
    )?;
    let base = path.parent().unwrap_or(std::path::Path::new("."));
    let keys = settings.api_keys(base).map_err(|e| e.to_string())?;
    if keys.is_empty() {
        return Err(format!(
            "{}: [serve] has no API key: add [serve.clients.NAME] or keys_file",
            path.display()
        ));
    }
    Ok((settings, keys))
}
