//! Telemetry: the metric names and the handles the hot path records into.
//!
//! Everything goes through the `metrics` facade, so any recorder works; the
//! optional Prometheus exporter is [`install_prometheus`]. Handles are looked up
//! once per tenant ([`TenantMetrics`]) so recording on the hot path is an atomic
//! add, not a map lookup. Install a recorder *before* building the engine:
//! handles taken before that point record nothing.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `fleetwake_outcomes_total` | counter | `tenant`, `outcome` |
//! | `fleetwake_retries_total` | counter | `tenant`, `outcome` (the retryable outcome retried) |
//! | `fleetwake_coalesced_total` | counter | `tenant` |
//! | `fleetwake_request_duration_seconds` | histogram | `tenant` (one HTTP attempt) |
//! | `fleetwake_wake_duration_seconds` | histogram | `tenant` (submit to final outcome) |
//! | `fleetwake_in_flight` | gauge | (HTTP requests outstanding) |
//! | `fleetwake_pending` | gauge | (wakes accepted and not yet final) |
//! | `fleetwake_token_refreshes_total` | counter | `tenant`, `result` (`ok`, `rejected`, `error`), `cause` (`first`, `ahead`, `expired`, `rejected_stale`, `rejected_fresh`) |
//! | `fleetwake_connections_open` | gauge | `protocol` (`h2`, `http1`) |
//! | `fleetwake_queue_messages_total` | counter | `result` (`acked`, `nacked`, `dead_lettered`, `released`, `publish_failed`) |
//! | `fleetwake_queue_in_flight` | gauge | (queue messages being worked on) |
//! | `fleetwake_queue_connected` | gauge | (1 while the NATS connection is up) |
//! | `fleetwake_queue_pulls_abandoned_total` | counter | (pull requests that got no end from the server and were made again) |
//! | `fleetwake_queue_pulls_failed_total` | counter | (pull requests that could not be made or ended with an error) |
//! | `fleetwake_queue_watchdog_rebuilds_total` | counter | `what` (`subscription`, `connection`): the watchdog found nothing moving while messages waited |
//! | `fleetwake_queue_nak_delay_seconds` | histogram | (delay asked for with each nak) |
//! | `fleetwake_budget_permits_leased_total` | counter | `pfn` (cells leased from the shared budget) |
//! | `fleetwake_budget_permits_wasted_total` | counter | `pfn` (leased cells that passed unused, or fell inside a pause) |
//! | `fleetwake_budget_pauses_received_total` | counter | `pfn` (pauses learned from other instances) |
//! | `fleetwake_budget_lease_failures_total` | counter | `pfn` (KV reads/writes that failed: NATS away or slow) |
//! | `fleetwake_budget_wait_seconds` | histogram | `pfn` (time a wake waited for a cell) |
//! | `fleetwake_budget_rate_per_second`, `fleetwake_budget_burst` | gauge | `pfn` (the budget in force) |
//! | `fleetwake_budget_connected` | gauge | `pfn` (1 while leases are granted) |
//! | `fleetwake_http_requests_total` | counter | `route`, `status` |
//! | `fleetwake_http_jobs` | gauge | (HTTP API jobs held in memory) |
//! | `fleetwake_http_held_results` | gauge | (wakes held in those jobs) |
//!
//! The queue and HTTP metrics are recorded by [`crate::service`].
//! Labels never carry secrets, tokens or channel URIs: `tenant` is the configured
//! tenant name, `pfn` the configured PFN.

use std::net::SocketAddr;
use std::time::Duration;

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

use crate::wns::OutcomeKind;

/// Metric handles for one tenant.
#[derive(Clone)]
pub struct TenantMetrics {
    outcomes: Box<[Counter]>,
    retries: Box<[Counter]>,
    coalesced: Counter,
    request_duration: Histogram,
    wake_duration: Histogram,
    /// Token requests by result (ok, rejected, error) then cause.
    tokens: Box<[Counter]>,
}

/// The `cause` labels of token requests, in the order `token_refresh` indexes them.
const TOKEN_CAUSES: [&str; 5] = [
    "first",
    "ahead",
    "expired",
    "rejected_stale",
    "rejected_fresh",
];

impl TenantMetrics {
    /// Looks up every handle for `tenant` in the current recorder.
    pub fn new(tenant: &str) -> Self {
        let t = tenant.to_string();
        let outcomes = OutcomeKind::ALL
            .iter()
            .map(|k| counter!("fleetwake_outcomes_total", "tenant" => t.clone(), "outcome" => k.as_str()))
            .collect();
        let retries = OutcomeKind::ALL
            .iter()
            .map(|k| counter!("fleetwake_retries_total", "tenant" => t.clone(), "outcome" => k.as_str()))
            .collect();
        TenantMetrics {
            outcomes,
            retries,
            coalesced: counter!("fleetwake_coalesced_total", "tenant" => t.clone()),
            request_duration: histogram!("fleetwake_request_duration_seconds", "tenant" => t.clone()),
            wake_duration: histogram!("fleetwake_wake_duration_seconds", "tenant" => t.clone()),
            tokens: ["ok", "rejected", "error"]
                .iter()
                .flat_map(|result| {
                    let t = t.clone();
                    TOKEN_CAUSES.iter().map(move |cause| {
                        counter!("fleetwake_token_refreshes_total", "tenant" => t.clone(), "result" => *result, "cause" => *cause)
                    })
                })
                .collect(),
        }
    }

    /// A final outcome and its end-to-end latency.
    pub fn outcome(&self, kind: OutcomeKind, latency: Duration) {
        self.outcomes[kind.index()].increment(1);
        self.wake_duration.record(latency.as_secs_f64());
    }

    /// A retry scheduled after `kind`.
    pub fn retry(&self, kind: OutcomeKind) {
        self.retries[kind.index()].increment(1);
    }

    /// A wake merged into one already queued for the same channel.
    pub fn coalesced(&self) {
        self.coalesced.increment(1);
    }

    /// One HTTP attempt's duration.
    pub fn request(&self, d: Duration) {
        self.request_duration.record(d.as_secs_f64());
    }

    /// A token request's result (`Ok`, rejected credentials, or another
    /// error) and its cause (one of `first`, `ahead`, `expired`,
    /// `rejected_stale`, `rejected_fresh`; anything else counts as `first`).
    pub fn token_refresh(&self, result: Result<(), bool>, cause: &str) {
        let r = match result {
            Ok(()) => 0,
            Err(true) => 1,
            Err(false) => 2,
        };
        let c = TOKEN_CAUSES.iter().position(|x| *x == cause).unwrap_or(0);
        self.tokens[r * TOKEN_CAUSES.len() + c].increment(1);
    }
}

/// Engine-wide gauges.
#[derive(Clone)]
pub struct EngineGauges {
    /// HTTP requests outstanding.
    pub in_flight: Gauge,
    /// Wakes accepted and not yet final.
    pub pending: Gauge,
}

impl EngineGauges {
    /// Looks up the gauges in the current recorder.
    pub fn new() -> Self {
        EngineGauges {
            in_flight: gauge!("fleetwake_in_flight"),
            pending: gauge!("fleetwake_pending"),
        }
    }
}

impl Default for EngineGauges {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts one open connection for as long as it lives.
pub(crate) struct ConnectionGuard(Gauge);

impl ConnectionGuard {
    pub(crate) fn new(protocol: &'static str) -> Self {
        let g = gauge!("fleetwake_connections_open", "protocol" => protocol);
        g.increment(1.0);
        ConnectionGuard(g)
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// The Prometheus exporter could not start.
#[derive(Debug, thiserror::Error)]
#[error("Prometheus exporter on {addr}: {reason}")]
pub struct ExporterError {
    addr: SocketAddr,
    reason: String,
}

/// Installs the Prometheus recorder and serves `/metrics` on `addr`. Call it
/// inside a tokio runtime, before building the engine.
pub fn install_prometheus(addr: SocketAddr) -> Result<(), ExporterError> {
    prometheus_builder()
        .map_err(|reason| ExporterError { addr, reason })?
        .with_http_listener(addr)
        .install()
        .map_err(|e| ExporterError {
            addr,
            reason: e.to_string(),
        })
}

/// Installs the Prometheus recorder without a listener and returns the handle
/// that renders the text format (for serving `/metrics` from an existing server).
pub fn install_prometheus_recorder() -> Result<metrics_exporter_prometheus::PrometheusHandle, String>
{
    let handle = prometheus_builder()?
        .install_recorder()
        .map_err(|e| e.to_string())?;
    // The recorder's upkeep folds histogram samples into their buckets; without
    // it they pile up between scrapes. It runs whether or not anyone scrapes.
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        let h = handle.clone();
        rt.spawn(async move {
            let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
            loop {
                tick.tick().await;
                h.run_upkeep();
            }
        });
    }
    Ok(handle)
}

/// Upper bounds (seconds) of the histogram buckets, for every histogram.
///
/// Histograms are exported with buckets, not as summaries: buckets add up
/// across instances (`histogram_quantile(0.99, sum by (le) (rate(..._bucket[1m])))`),
/// and recording into one is a few instructions, where a summary's sketch cost
/// ~1,700 per observation, two observations per wake (docs/BENCHMARKS.md).
pub const HISTOGRAM_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 900.0, 3600.0,
];

fn prometheus_builder() -> Result<metrics_exporter_prometheus::PrometheusBuilder, String> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(HISTOGRAM_BUCKETS)
        .map_err(|e| e.to_string())
}

/// How often the in-process recorder's upkeep runs.
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
