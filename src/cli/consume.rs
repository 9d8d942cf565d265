//! `fleetwake consume`: run the JetStream queue consumer until SIGTERM. A thin
//! layer over [`crate::service::consume`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::service::consume::{ConsumeError, ConsumeSettings, WakeConsumer};
use crate::service::ops::{self, Readiness, ServerLimits};

const EXAMPLES: &str = "\
Reads wake requests (JSON, schema v1: device_id, channel_uri, tenant, and
optionally ttl_s, idempotency_key, not_after) from a JetStream stream through a
durable pull consumer, and publishes one result row per request. Settings are
in the [consume] table of the config; see docs/QUEUE.md and docs/DEPLOYMENT.md.

Examples:
  fleetwake consume --config fleetwake.toml
  nats pub fleetwake.wakes.contoso '{\"device_id\":\"d1\",\"tenant\":\"contoso\",\"channel_uri\":\"https://db5p.notify.windows.com/?token=...\"}'
  nats sub fleetwake.results

Run any number of instances with the same [consume] table: they share the
consumer. Set `instances = N` so that each takes 1/N of every PFN's rate.
SIGTERM drains (no new fetches, in-flight messages finish and are acked) and
exits 0; 3 if the drain timed out.";

/// Arguments of `fleetwake consume`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// The TOML config (tenants, transport, retry policy, [consume]).
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
    let settings: ConsumeSettings = match super::consume_settings(&cfg, &a.config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return super::EXIT_CONFIG;
        }
    };
    let stop = super::signals::stop_on_signals();
    let readiness = Readiness::new(true);
    let (ops_stop_tx, ops_stop) = tokio::sync::watch::channel(false);
    let mut ops_server = None;
    if let Some(addr) = settings.listen {
        let prom = match crate::telemetry::install_prometheus_recorder() {
            Ok(h) => Some(h),
            Err(e) => {
                eprintln!("error: metrics recorder: {e}");
                return super::EXIT_INTERNAL;
            }
        };
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot listen on {addr}: {e}");
                return super::EXIT_CONFIG;
            }
        };
        tracing::info!(%addr, "serving /healthz, /readyz and /metrics");
        ops_server = Some(ops::spawn_server(
            listener,
            ops::ops_handler(readiness.clone(), prom),
            ServerLimits {
                max_connections: 64,
                grace: Duration::from_secs(2),
                ..ServerLimits::default()
            },
            ops_stop,
        ));
    } else if let Some(addr) = cfg.file.metrics.prometheus_listen {
        if let Err(e) = crate::telemetry::install_prometheus(addr) {
            eprintln!("error: {e}");
            return super::EXIT_CONFIG;
        }
    }
    let engine = match super::build_engine(&cfg, &a.config, settings.instances, "consume").await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return super::EXIT_CONFIG;
        }
    };
    readiness.set_engine_ready(&engine);
    let consumer = loop {
        match WakeConsumer::connect(settings.clone(), engine.clone(), cfg.push_options()).await {
            Ok(c) => break c,
            Err(e @ ConsumeError::Connect { .. }) => {
                tracing::warn!(error = %e, "retrying in 2 s");
                let mut s = stop.clone();
                tokio::select! {
                    _ = s.wait_for(|s| *s) => {
                        let _ = ops_stop_tx.send(true);
                        return super::EXIT_INTERRUPTED;
                    }
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                return super::EXIT_CONFIG;
            }
        }
    };
    let summary = consumer.run(stop, Some(Arc::clone(&readiness))).await;
    engine.shutdown(Duration::from_secs(5)).await;
    tracing::info!(
        acked = summary.acked,
        nacked = summary.nacked,
        dead_lettered = summary.dead_lettered,
        released = summary.released,
        publish_failed = summary.publish_failed,
        drained = summary.drained,
        "consumer stopped"
    );
    let _ = ops_stop_tx.send(true);
    if let Some(s) = ops_server {
        let _ = s.await;
    }
    if summary.drained {
        super::EXIT_OK
    } else {
        super::EXIT_INTERRUPTED
    }
}
