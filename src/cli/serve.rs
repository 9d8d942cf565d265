//! `fleetwake serve`: run the HTTP API until SIGTERM. A thin layer over
//! [`crate::service::http_api`].

use std::path::PathBuf;
use std::time::Duration;

use crate::config::Config;
use crate::service::http_api::{HttpApi, ServeSettings};
use crate::service::ops::{self, Readiness, ServerLimits};

const EXAMPLES: &str = "\
Serves POST /v1/wakes (one wake or {\"wakes\": [...]}; ?wait=true for the
outcomes, else 202 and a job), GET /v1/wakes/{job}, GET /metrics, /healthz,
/readyz and /openapi.json. Settings and API keys are in the [serve] table of the
config; see docs/DEPLOYMENT.md.

Examples:
  fleetwake serve --config fleetwake.toml
  curl -H \"Authorization: Bearer $KEY\" -d '{\"device_id\":\"d1\",\"tenant\":\"contoso\",\"channel_uri\":\"https://db5p.notify.windows.com/?token=...\"}' 'http://127.0.0.1:8080/v1/wakes?wait=true'

Prints `listening on http://ADDR` on stdout once it accepts requests. SIGTERM
drains (readyz turns 503; with [serve] drain_delay_s the listener stays open
that long first; open requests finish) and exits 0.";

/// Arguments of `fleetwake serve`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// The TOML config (tenants, transport, retry policy, [serve]).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
}

pub(crate) async fn run(a: Args) -> u8 {
    let cfg = match Config::load(&a.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return super::EXIT_CONFIG;
        }
    };
    let (settings, keys): (ServeSettings, _) = match super::serve_settings(&cfg, &a.config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return super::EXIT_CONFIG;
        }
    };
    let prom = match crate::telemetry::install_prometheus_recorder() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: metrics recorder: {e}");
            return super::EXIT_INTERNAL;
        }
    };
    let engine = match super::build_engine(&cfg, &a.config, 1, "serve").await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return super::EXIT_CONFIG;
        }
    };
    let readiness = Readiness::new(false);
    let listener = match tokio::net::TcpListener::bind(settings.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", settings.listen);
            return super::EXIT_CONFIG;
        }
    };
    let addr = listener.local_addr().unwrap_or(settings.listen);
    let limits = ServerLimits {
        max_connections: settings.max_connections,
        header_timeout: Duration::from_secs(settings.request_timeout_s),
        idle_timeout: Duration::from_secs(settings.idle_timeout_s),
        grace: Duration::from_secs(settings.drain_timeout_s),
    };
    let drain_delay = Duration::from_secs(settings.drain_delay_s);
    let api = HttpApi::new(
        engine.clone(),
        cfg.push_options(),
        keys,
        settings,
        readiness.clone(),
        Some(prom),
    );
    let mut stop = super::signals::stop_on_signals();
    let (server_stop_tx, server_stop) = tokio::sync::watch::channel(false);
    let server = ops::spawn_server(listener, api.handler(), limits, server_stop);
    readiness.set_engine_ready(&engine);
    println!("listening on http://{addr}");
    tracing::info!(%addr, "HTTP API ready");
    let _ = stop.wait_for(|s| *s).await;
    readiness.set_draining();
    if drain_delay > Duration::ZERO {
        // Still accepting: probes see 503 before connections are refused.
        // A second signal exits at once (see `signals`).
        tracing::info!(?drain_delay, "draining: the listener stays open");
        tokio::time::sleep(drain_delay).await;
    }
    // Unsent wakes end as shut_down; requests in flight finish.
    engine.drain();
    let _ = server_stop_tx.send(true);
    let _ = server.await;
    let report = engine.shutdown(Duration::from_secs(5)).await;
    tracing::info!(drained = report.drained, "HTTP API stopped");
    super::EXIT_OK
}
