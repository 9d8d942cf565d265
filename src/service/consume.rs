//! The NATS JetStream queue consumer: wake requests in, one result per request
//! out, any number of instances sharing one durable pull consumer.
//!
//! The life of one message (see `docs/QUEUE.md`):
//!
//! ```text
//! fetch (only as many as there are free in-flight slots)
//!   -> parse (schema v1)      malformed  -> publish to the dead-letter subject (reason in headers),
//!                                           confirmed, then TERM
//!   -> Engine::submit          (a +WPI "in progress" every ack_wait/2 while it waits)
//!   -> shut_down (draining)    -> NAK now: nothing was sent, another instance takes it
//!   -> retryable and deliveries < max_deliver
//!                              -> NAK with delay = min(max(Retry-After, backoff), nak_max_delay)
//!   -> final (or the last delivery)
//!                              -> publish the result row (Nats-Msg-Id = idempotency key or
//!                                 stream:sequence), await the publish ack, then ACK
//! ```
//!
//! Delivery is at least once: a crash between the push and the ack makes
//! JetStream redeliver, so a device may be woken twice and the result published
//! twice. The stream's duplicate window drops a second result with the same
//! `Nats-Msg-Id`; readers of the results should still dedupe by idempotency key.
//!
//! Backpressure: JetStream stops delivering at the consumer's `max_ack_pending`
//! (shared by all instances); each instance fetches only up to its free
//! `in_flight` slots, and `Engine::submit` waits on the tenant's pending bound.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use async_nats::jetstream::{self, consumer::pull, stream, AckKind};
use async_nats::HeaderMap;
use futures_util::StreamExt;
use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};
use serde::Deserialize;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::ops::Readiness;
use super::wake_request::{MalformedWake, WakeRequest, WakeResult};
use crate::engine::Engine;
use crate::util::WarnEvery;
use crate::wns::{Outcome, OutcomeKind, PushOptions};

/// The `[consume]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsumeSettings {
    /// NATS server URL(s), comma-separated. Default `nats://127.0.0.1:4222`.
    pub url: String,
    /// Environment variable holding a NATS token.
    pub token_env: Option<String>,
    /// NATS user (with `password_env`).
    pub user: Option<String>,
    /// Environment variable holding the NATS password.
    pub password_env: Option<String>,
    /// The wake-request stream (created if missing). Default `FLEETWAKE_WAKES`.
    pub stream: String,
    /// Its subjects (used when creating it). Default `["fleetwake.wakes.>"]`.
    pub subjects: Vec<String>,
    /// The durable pull consumer every instance shares. Default `fleetwake`.
    pub consumer: String,
    /// Consume only this subject of the stream (when creating the consumer).
    pub filter_subject: Option<String>,
    /// Where results go. Default `fleetwake.results`.
    pub results_subject: String,
    /// Where malformed messages go. Default `fleetwake.dead`.
    pub dead_letter_subject: String,
    /// The stream created for results and dead letters if no stream captures
    /// them. Default `FLEETWAKE_RESULTS`.
    pub results_stream: String,
    /// Age limit of the wake stream, seconds. Default 86400.
    pub stream_max_age_s: u64,
    /// Age limit of the results stream, seconds. Default 604800.
    pub results_max_age_s: u64,
    /// Duplicate window of both streams, seconds (Nats-Msg-Id dedupe). Default 120.
    pub dedupe_window_s: u64,
    /// Replicas of the streams it creates (3 on a JetStream cluster). Default 1.
    pub replicas: usize,
    /// Unacknowledged messages for the whole consumer (all instances). Default 1024.
    pub max_ack_pending: i64,
    /// Seconds before an unacknowledged message is redelivered. Default 30.
    pub ack_wait_s: u64,
    /// Deliveries after which a retryable outcome is final. Default 10.
    pub max_deliver: u64,
    /// Most messages per pull request. Default 128.
    pub fetch_batch: usize,
    /// How long one pull request waits for messages, ms. Default 1000.
    pub fetch_expires_ms: u64,
    /// Messages this instance works on at once. Default 512.
    pub in_flight: usize,
    /// First nak backoff, ms. Default 1000.
    pub nak_base_delay_ms: u64,
    /// Longest nak delay, ms (also caps Retry-After). Default 600000.
    pub nak_max_delay_ms: u64,
    /// Instances sharing each PFN's rate budget: each tenant's `rate_per_second`
    /// and `burst` are divided by it. Default 1.
    pub instances: u32,
    /// Name of this instance in results and logs. Default `HOSTNAME-PID`.
    pub instance_id: Option<String>,
    /// Seconds the in-flight messages get to finish on SIGTERM. Default 30.
    pub drain_timeout_s: u64,
    /// The watchdog: when no message has been delivered and no result made for
    /// this many seconds while the consumer says messages are waiting (and this
    /// instance has free slots), the pull subscription is rebuilt (and, if that
    /// fails, the connection). Default 30.
    pub watchdog_s: u64,
    /// Serve `/healthz`, `/readyz` and `/metrics` on this address.
    pub listen: Option<std::net::SocketAddr>,
}

impl Default for ConsumeSettings {
    fn default() -> Self {
        ConsumeSettings {
            url: "nats://127.0.0.1:4222".into(),
            token_env: None,
            user: None,
            password_env: None,
            stream: "FLEETWAKE_WAKES".into(),
            subjects: vec!["fleetwake.wakes.>".into()],
            consumer: "fleetwake".into(),
            filter_subject: None,
            results_subject: "fleetwake.results".into(),
            dead_letter_subject: "fleetwake.dead".into(),
            results_stream: "FLEETWAKE_RESULTS".into(),
            stream_max_age_s: 86_400,
            results_max_age_s: 7 * 86_400,
            dedupe_window_s: 120,
            replicas: 1,
            max_ack_pending: 1024,
            ack_wait_s: 30,
            max_deliver: 10,
            fetch_batch: 128,
            fetch_expires_ms: 1000,
            in_flight: 512,
            nak_base_delay_ms: 1000,
            nak_max_delay_ms: 600_000,
            instances: 1,
            instance_id: None,
            drain_timeout_s: 30,
            watchdog_s: 30,
            listen: None,
        }
    }
}

impl ConsumeSettings {
    /// The NATS servers of `url` (comma-separated; the client also learns the
    /// rest of a cluster from the server it reaches).
    pub fn server_addrs(&self) -> Result<Vec<async_nats::ServerAddr>, String> {
        super::nats::server_addrs(&self.url, "consume")
    }

    /// Checks the bounds; the message says which key is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("max_ack_pending", self.max_ack_pending.max(0) as u64),
            ("ack_wait_s", self.ack_wait_s),
            ("max_deliver", self.max_deliver),
            ("fetch_batch", self.fetch_batch as u64),
            ("fetch_expires_ms", self.fetch_expires_ms),
            ("in_flight", self.in_flight as u64),
            ("instances", u64::from(self.instances)),
            ("replicas", self.replicas as u64),
            ("dedupe_window_s", self.dedupe_window_s),
        ];
        for (k, v) in positive {
            if v == 0 {
                return Err(format!("[consume] {k} must be at least 1"));
            }
        }
        if self.fetch_batch > 10_000 || self.in_flight > 100_000 {
            return Err(
                "[consume] fetch_batch is at most 10000 and in_flight at most 100000".into(),
            );
        }
        self.server_addrs()?;
        if self.fetch_expires_ms < 100 || self.fetch_expires_ms > 60_000 {
            return Err("[consume] fetch_expires_ms must be between 100 and 60000".into());
        }
        // A pull request lasts fetch_expires_ms (+ PULL_GRACE when its server
        // dies); the watchdog must not fire inside two of them.
        let least = (2 * self.fetch_expires_ms + 2 * PULL_GRACE.as_millis() as u64).div_ceil(1000);
        if self.watchdog_s < least || self.watchdog_s > 3600 {
            return Err(format!(
                "[consume] watchdog_s must be between {least} (two pull requests of \
                 fetch_expires_ms with their grace) and 3600"
            ));
        }
        if self.dedupe_window_s > self.results_max_age_s.min(self.stream_max_age_s) {
            return Err("[consume] dedupe_window_s must not exceed the streams' max age".into());
        }
        for (k, v) in [
            ("stream", &self.stream),
            ("consumer", &self.consumer),
            ("results_stream", &self.results_stream),
        ] {
            if v.is_empty() || v.contains(['.', ' ', '*', '>', '/', '\\']) {
                return Err(format!(
                    "[consume] {k} {v:?} is not a valid JetStream name (no '.', spaces, wildcards)"
                ));
            }
        }
        for (k, v) in [
            ("results_subject", &self.results_subject),
            ("dead_letter_subject", &self.dead_letter_subject),
        ] {
            if v.is_empty() || v.contains(['*', '>', ' ']) {
                return Err(format!("[consume] {k} {v:?} must be a plain subject"));
            }
        }
        if self.subjects.is_empty() {
            return Err("[consume] subjects must name at least one subject".into());
        }
        Ok(())
    }

    /// The nak delay after `deliveries` deliveries: an exponential backoff with
    /// equal jitter (`[cap/2, cap]`), never below `retry_after`, at most
    /// `nak_max_delay_ms`.
    pub fn nak_delay(&self, deliveries: u64, retry_after: Option<Duration>) -> Duration {
        let max = Duration::from_millis(self.nak_max_delay_ms);
        let exp = deliveries.saturating_sub(1).min(30) as u32;
        let cap = Duration::from_millis(self.nak_base_delay_ms)
            .saturating_mul(1u32 << exp)
            .min(max);
        let backoff = cap / 2 + (cap / 2).mul_f64(fastrand::f64());
        backoff.max(retry_after.unwrap_or_default()).min(max)
    }

    fn instance_name(&self) -> String {
        if let Some(i) = &self.instance_id {
            return i.clone();
        }
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
            })
            .unwrap_or_else(|| "fleetwake".into());
        format!("{host}-{}", std::process::id())
    }
}

/// Why the consumer could not start or went on.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// A setting is wrong.
    #[error("{0}")]
    Settings(String),
    /// NATS could not be reached.
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// A stream or consumer could not be found or created.
    #[error("JetStream setup: {0}")]
    Setup(String),
}

/// Counts of what the consumer did with messages.
#[derive(Debug, Default)]
pub struct ConsumeCounts {
    /// Acknowledged after their result was published.
    pub acked: AtomicU64,
    /// Nak'd with a delay (retryable outcome).
    pub nacked: AtomicU64,
    /// Published to the dead-letter subject and terminated.
    pub dead_lettered: AtomicU64,
    /// Nak'd at once, unsent, because the instance was draining.
    pub released: AtomicU64,
    /// Result or dead-letter publishes that failed (the message was nak'd).
    pub publish_failed: AtomicU64,
}

/// A snapshot of [`ConsumeCounts`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ConsumeSummary {
    /// See [`ConsumeCounts::acked`].
    pub acked: u64,
    /// See [`ConsumeCounts::nacked`].
    pub nacked: u64,
    /// See [`ConsumeCounts::dead_lettered`].
    pub dead_lettered: u64,
    /// See [`ConsumeCounts::released`].
    pub released: u64,
    /// See [`ConsumeCounts::publish_failed`].
    pub publish_failed: u64,
    /// True when every in-flight message finished within the drain timeout.
    pub drained: bool,
}

/// How long after its `expires` a pull request without an end from the
/// server is given up on.
const PULL_GRACE: Duration = Duration::from_secs(2);

struct QueueMetrics {
    acked: Counter,
    nacked: Counter,
    dead_lettered: Counter,
    released: Counter,
    publish_failed: Counter,
    pulls_abandoned: Counter,
    pulls_failed: Counter,
    rebuilt_subscription: Counter,
    rebuilt_connection: Counter,
    in_flight: Gauge,
    connected: Gauge,
    nak_delay: Histogram,
}

impl QueueMetrics {
    fn new() -> Self {
        let m = |r: &'static str| counter!("fleetwake_queue_messages_total", "result" => r);
        QueueMetrics {
            acked: m("acked"),
            nacked: m("nacked"),
            dead_lettered: m("dead_lettered"),
            released: m("released"),
            publish_failed: m("publish_failed"),
            pulls_abandoned: counter!("fleetwake_queue_pulls_abandoned_total"),
            pulls_failed: counter!("fleetwake_queue_pulls_failed_total"),
            rebuilt_subscription: counter!("fleetwake_queue_watchdog_rebuilds_total", "what" => "subscription"),
            rebuilt_connection: counter!("fleetwake_queue_watchdog_rebuilds_total", "what" => "connection"),
            in_flight: gauge!("fleetwake_queue_in_flight"),
            connected: gauge!("fleetwake_queue_connected"),
            nak_delay: histogram!("fleetwake_queue_nak_delay_seconds"),
        }
    }
}

/// The NATS connection and its JetStream context; replaced as a whole when
/// the watchdog reconnects.
struct Nats {
    client: async_nats::Client,
    js: jetstream::Context,
}

struct Ctx {
    nats: ArcSwap<Nats>,
    engine: Engine,
    settings: ConsumeSettings,
    push: PushOptions,
    instance: String,
    metrics: QueueMetrics,
    counts: Arc<ConsumeCounts>,
    progress: Progress,
    publish_warning: WarnEvery,
}

impl Ctx {
    fn js(&self) -> jetstream::Context {
        self.nats.load().js.clone()
    }
}

/// When a message was last delivered or a result last made, for the watchdog.
struct Progress {
    start: std::time::Instant,
    last_ms: AtomicU64,
}

impl Progress {
    fn new() -> Self {
        Progress {
            start: std::time::Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = self.start.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(now, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// A connected consumer: streams and the durable consumer exist.
pub struct WakeConsumer {
    consumer: jetstream::consumer::PullConsumer,
    ctx: Arc<Ctx>,
}

impl std::fmt::Debug for WakeConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WakeConsumer")
            .field("stream", &self.ctx.settings.stream)
            .field("consumer", &self.ctx.settings.consumer)
            .field("instance", &self.ctx.instance)
            .finish()
    }
}

impl WakeConsumer {
    /// Connects to NATS, creates the wake stream, the results stream and the
    /// durable consumer if they are missing, and checks that the results and
    /// dead-letter subjects are captured by a stream (so publishes are confirmed).
    pub async fn connect(
        settings: ConsumeSettings,
        engine: Engine,
        push: PushOptions,
    ) -> Result<WakeConsumer, ConsumeError> {
        settings.validate().map_err(ConsumeError::Settings)?;
        let instance = settings.instance_name();
        let client = connect_nats(&settings, &instance).await?;
        let js = jetstream::new(client.clone());
        let window = Duration::from_secs(settings.dedupe_window_s);
        let wakes = js
            .get_or_create_stream(stream::Config {
                name: settings.stream.clone(),
                subjects: settings.subjects.clone(),
                retention: stream::RetentionPolicy::WorkQueue,
                max_age: Duration::from_secs(settings.stream_max_age_s),
                duplicate_window: window,
                num_replicas: settings.replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| ConsumeError::Setup(format!("stream {}: {e}", settings.stream)))?;
        js.get_or_create_stream(stream::Config {
            name: settings.results_stream.clone(),
            subjects: vec![
                settings.results_subject.clone(),
                settings.dead_letter_subject.clone(),
            ],
            max_age: Duration::from_secs(settings.results_max_age_s),
            duplicate_window: window,
            num_replicas: settings.replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| ConsumeError::Setup(format!("stream {}: {e}", settings.results_stream)))?;
        for subject in [&settings.results_subject, &settings.dead_letter_subject] {
            js.stream_by_subject(subject.as_str()).await.map_err(|e| {
                ConsumeError::Setup(format!(
                    "no stream captures {subject:?} ({e}); add it to a stream's subjects"
                ))
            })?;
        }
        let consumer = durable_consumer(&wakes, &settings).await?;
        tracing::info!(
            stream = %settings.stream,
            consumer = %settings.consumer,
            results = %settings.results_subject,
            dead_letter = %settings.dead_letter_subject,
            %instance,
            "connected to JetStream"
        );
        Ok(WakeConsumer {
            consumer,
            ctx: Arc::new(Ctx {
                nats: ArcSwap::from_pointee(Nats { client, js }),
                engine,
                settings,
                push,
                instance,
                metrics: QueueMetrics::new(),
                counts: Arc::new(ConsumeCounts::default()),
                progress: Progress::new(),
                publish_warning: WarnEvery::new(Duration::from_secs(5)),
            }),
        })
    }

    /// This instance's name.
    pub fn instance(&self) -> &str {
        &self.ctx.instance
    }

    /// Live counts.
    pub fn counts(&self) -> Arc<ConsumeCounts> {
        self.ctx.counts.clone()
    }

    /// Consumes until `stop` turns true, then drains: no new pull requests;
    /// messages that still arrive for the last one are released (nak'd at once);
    /// the engine is drained (unsent wakes end as `shut_down` and are released,
    /// requests in flight finish); the in-flight messages get their results
    /// published and their acks sent, within `drain_timeout_s`; the connection is
    /// flushed. `readiness`, if given, follows the NATS connection.
    pub async fn run(
        self,
        mut stop: watch::Receiver<bool>,
        readiness: Option<Arc<Readiness>>,
    ) -> ConsumeSummary {
        let WakeConsumer { mut consumer, ctx } = self;
        let s = &ctx.settings;
        let watcher = {
            let readiness = readiness.clone();
            let ctx = ctx.clone();
            tokio::spawn(async move {
                loop {
                    let up = ctx.nats.load().client.connection_state()
                        == async_nats::connection::State::Connected;
                    ctx.metrics.connected.set(if up { 1.0 } else { 0.0 });
                    if let Some(r) = &readiness {
                        r.set_upstream(up);
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            })
        };
        let slots = Arc::new(Semaphore::new(s.in_flight));
        let mut tasks: JoinSet<()> = JoinSet::new();
        let expires = Duration::from_millis(s.fetch_expires_ms);
        // How often the watchdog looks (it acts after `watchdog_s` of nothing).
        let mut watchdog = tokio::time::interval(Duration::from_secs(s.watchdog_s.div_ceil(4)));
        watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let pull_warning = WarnEvery::new(Duration::from_secs(5));
        // Pull requests that ended with an error in a row: each waits longer.
        let mut failed_pulls: u32 = 0;
        ctx.progress.touch();
        let mut stopping = *stop.borrow();
        let outage_warning = WarnEvery::new(Duration::from_secs(30));
        while !stopping {
            while tasks.try_join_next().is_some() {}
            // Every tenant's token breaker open: whatever is pulled would only
            // be nak'd, spending its deliveries. Pull nothing until one is back.
            let health = ctx.engine.health();
            if health.all_tenants_down() {
                if outage_warning.check().is_some() {
                    tracing::warn!(reasons = ?health.open_breakers(), "every tenant's token endpoint is down: pulling nothing until one is back");
                }
                // A deliberate pause: the watchdog has nothing to rebuild.
                ctx.progress.touch();
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
            if failed_pulls > 0 {
                let pause = Duration::from_millis(100u64 << failed_pulls.min(5))
                    .min(Duration::from_secs(2));
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
            let mut permits = tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            };
            let extra = slots
                .available_permits()
                .min(s.fetch_batch.saturating_sub(1));
            if extra > 0 {
                if let Ok(more) = slots.clone().try_acquire_many_owned(extra as u32) {
                    permits.merge(more);
                }
            }
            let want = permits.num_permits();
            // Making the pull request is bounded too: its server may be gone.
            let batch = tokio::time::timeout(
                WATCHDOG_REQUEST_TIMEOUT,
                consumer
                    .batch()
                    .max_messages(want)
                    .expires(expires)
                    .messages(),
            )
            .await;
            // The server ends a pull request at `expires`. If the server that
            // held it dies (a cluster node, or the consumer's leader moving),
            // no end ever comes: give up on the request a little later and
            // pull again (anything still delivered to it is redelivered after
            // ack_wait).
            let deadline = tokio::time::Instant::now() + expires + PULL_GRACE;
            let mut rebuild_for: Option<String> = None;
            match batch {
                Ok(Ok(mut batch)) => {
                    let mut delivered = false;
                    loop {
                        tokio::select! {
                            biased;
                            m = batch.next() => match m {
                                None => break,
                                Some(Err(e)) => {
                                    if !delivered {
                                        failed_pulls += 1;
                                        ctx.metrics.pulls_failed.increment(1);
                                        if let Some(n) = pull_warning.check() {
                                            tracing::warn!(error = %e, quiet_since_last = n, "a pull request ended with an error; pulling again after a pause");
                                        }
                                    }
                                    break;
                                }
                                Some(Ok(msg)) => {
                                    delivered = true;
                                    failed_pulls = 0;
                                    ctx.progress.touch();
                                    if stopping {
                                        release(&ctx, &msg).await;
                                        continue;
                                    }
                                    match permits.split(1) {
                                        Some(p) => {
                                            tasks.spawn(handle(ctx.clone(), msg, p));
                                        }
                                        // More messages than asked for: cannot happen; release it.
                                        None => release(&ctx, &msg).await,
                                    }
                                }
                            },
                            _ = stop.wait_for(|s| *s), if !stopping => {
                                stopping = true;
                                tracing::info!("stop requested: no new pull requests; draining");
                            }
                            _ = tokio::time::sleep_until(deadline) => {
                                tracing::warn!(
                                    "a pull request got no end from the server (a node lost?); pulling again"
                                );
                                ctx.metrics.pulls_abandoned.increment(1);
                                break;
                            }
                            _ = watchdog.tick(), if !stopping => {
                                rebuild_for = stalled(&ctx, &consumer, slots.available_permits() + permits.num_permits()).await;
                                if rebuild_for.is_some() {
                                    break;
                                }
                            }
                        }
                    }
                }
                Ok(Err(e)) => {
                    failed_pulls += 1;
                    ctx.metrics.pulls_failed.increment(1);
                    if let Some(n) = pull_warning.check() {
                        tracing::warn!(error = %e, quiet_since_last = n, "a pull request could not be made; pulling again after a pause");
                    }
                }
                Err(_) => {
                    failed_pulls += 1;
                    ctx.metrics.pulls_failed.increment(1);
                    if let Some(n) = pull_warning.check() {
                        tracing::warn!(quiet_since_last = n, "a pull request could not be made within 5 s; pulling again after a pause");
                    }
                }
            }
            let free = slots.available_permits() + permits.num_permits();
            drop(permits);
            if rebuild_for.is_none() && failed_pulls > 0 && !stopping {
                // Pull requests that cannot even be made get no watchdog tick
                // above: look here.
                rebuild_for = stalled(&ctx, &consumer, free).await;
            }
            if let Some(why) = rebuild_for {
                tracing::debug!(%why, "rebuilding the pull subscription");
                if let Some(c) = rebuild(&ctx).await {
                    consumer = c;
                    failed_pulls = 0;
                }
                // Whether or not it worked, the next look is a full interval away.
                ctx.progress.touch();
            }
            if *stop.borrow() {
                stopping = true;
            }
        }
        if let Some(r) = &readiness {
            r.set_draining();
        }
        ctx.engine.drain();
        let grace = Duration::from_secs(s.drain_timeout_s);
        let drained =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
                .await
                .is_ok();
        if !drained {
            tracing::warn!(
                left = tasks.len(),
                "drain timeout: messages still in flight are left to redelivery"
            );
            tasks.shutdown().await;
        }
        let client = ctx.nats.load().client.clone();
        if let Err(e) = tokio::time::timeout(Duration::from_secs(5), client.flush()).await {
            tracing::warn!(error = %e, "flushing acks to NATS timed out");
        }
        watcher.abort();
        let c = &ctx.counts;
        ConsumeSummary {
            acked: c.acked.load(Ordering::Relaxed),
            nacked: c.nacked.load(Ordering::Relaxed),
            dead_lettered: c.dead_lettered.load(Ordering::Relaxed),
            released: c.released.load(Ordering::Relaxed),
            publish_failed: c.publish_failed.load(Ordering::Relaxed),
            drained,
        }
    }
}

/// Connects to the NATS servers of `settings` with its credentials.
async fn connect_nats(
    settings: &ConsumeSettings,
    instance: &str,
) -> Result<async_nats::Client, ConsumeError> {
    super::nats::connect(
        &settings.url,
        settings.token_env.as_deref(),
        settings.user.as_deref(),
        settings.password_env.as_deref(),
        format!("fleetwake-consume {instance}"),
        "consume",
    )
    .await
    .map_err(|e| match e {
        super::nats::ConnectError::Settings(m) => ConsumeError::Settings(m),
        super::nats::ConnectError::Unreachable { url, reason } => {
            ConsumeError::Connect { url, reason }
        }
    })
}

/// The durable pull consumer every instance shares, created if missing.
async fn durable_consumer(
    wakes: &stream::Stream,
    settings: &ConsumeSettings,
) -> Result<jetstream::consumer::PullConsumer, ConsumeError> {
    wakes
        .get_or_create_consumer(
            &settings.consumer,
            pull::Config {
                durable_name: Some(settings.consumer.clone()),
                description: Some("fleetwake wake requests".into()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(settings.ack_wait_s),
                // Slack over max_deliver so that the last delivery's
                // result is published even after a crash or two.
                max_deliver: (settings.max_deliver + 3).min(i64::MAX as u64) as i64,
                max_ack_pending: settings.max_ack_pending,
                filter_subject: settings.filter_subject.clone().unwrap_or_default(),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| ConsumeError::Setup(format!("consumer {}: {e}", settings.consumer)))
}

/// How long the watchdog waits for each JetStream request it makes.
const WATCHDOG_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The watchdog's check: `Some(reason)` when nothing has moved for
/// `watchdog_s` although the consumer says messages wait for this instance.
/// Nothing to deliver, or every ack slot of the consumer held (by other
/// instances), is not a stall.
async fn stalled(
    ctx: &Ctx,
    consumer: &jetstream::consumer::PullConsumer,
    free_slots: usize,
) -> Option<String> {
    let idle = ctx.progress.idle();
    if idle < Duration::from_secs(ctx.settings.watchdog_s) || free_slots == 0 {
        return None;
    }
    let info = tokio::time::timeout(WATCHDOG_REQUEST_TIMEOUT, consumer.get_info()).await;
    match info {
        Ok(Ok(info)) => {
            let window_full = i64::try_from(info.num_ack_pending)
                .is_ok_and(|n| n >= ctx.settings.max_ack_pending);
            if info.num_pending == 0 || window_full {
                // Idle for a good reason: look again in one watchdog interval.
                ctx.progress.touch();
                return None;
            }
            let leader = info.cluster.as_ref().and_then(|c| c.leader.clone());
            tracing::warn!(
                idle_s = idle.as_secs(),
                num_pending = info.num_pending,
                num_ack_pending = info.num_ack_pending,
                leader = leader.as_deref().unwrap_or("-"),
                free_slots,
                "watchdog: no message delivered and no result made while messages wait; \
                 rebuilding the pull subscription"
            );
            Some(format!(
                "{} pending, {} awaiting ack, leader {}",
                info.num_pending,
                info.num_ack_pending,
                leader.as_deref().unwrap_or("-")
            ))
        }
        Ok(Err(e)) => {
            tracing::warn!(idle_s = idle.as_secs(), error = %e, "watchdog: nothing moved and the consumer's info cannot be read; rebuilding the pull subscription");
            Some(format!("consumer info: {e}"))
        }
        Err(_) => {
            tracing::warn!(idle_s = idle.as_secs(), "watchdog: nothing moved and the consumer's info did not come within 5 s; rebuilding the pull subscription");
            Some("consumer info timed out".into())
        }
    }
}

/// Rebuilds the pull subscription: a fresh handle to the durable consumer
/// (created again if it was deleted), over the same connection; if that
/// fails, over a new connection. `None` when both failed (the watchdog tries
/// again later).
async fn rebuild(ctx: &Ctx) -> Option<jetstream::consumer::PullConsumer> {
    let s = &ctx.settings;
    let again = |js: jetstream::Context| async move {
        let wakes = js
            .get_stream(&s.stream)
            .await
            .map_err(|e| format!("stream {}: {e}", s.stream))?;
        durable_consumer(&wakes, s).await.map_err(|e| e.to_string())
    };
    let timeout = WATCHDOG_REQUEST_TIMEOUT * 2;
    match tokio::time::timeout(timeout, again(ctx.js())).await {
        Ok(Ok(c)) => {
            ctx.metrics.rebuilt_subscription.increment(1);
            tracing::info!("watchdog: pull subscription rebuilt");
            return Some(c);
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "watchdog: the consumer cannot be reached; reconnecting to NATS")
        }
        Err(_) => tracing::warn!("watchdog: the consumer did not answer; reconnecting to NATS"),
    }
    let client = match tokio::time::timeout(timeout, connect_nats(s, &ctx.instance)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "watchdog: reconnecting to NATS failed; trying again later");
            return None;
        }
        Err(_) => {
            tracing::error!("watchdog: reconnecting to NATS timed out; trying again later");
            return None;
        }
    };
    let js = jetstream::new(client.clone());
    match tokio::time::timeout(timeout, again(js.clone())).await {
        Ok(Ok(c)) => {
            // Messages already delivered keep their own (old) connection for
            // their acks; it closes when the last of them is done.
            ctx.nats.store(Arc::new(Nats { client, js }));
            ctx.metrics.rebuilt_connection.increment(1);
            tracing::info!("watchdog: reconnected to NATS and rebuilt the pull subscription");
            Some(c)
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "watchdog: the consumer cannot be reached over a new connection either; trying again later");
            None
        }
        Err(_) => {
            tracing::error!("watchdog: the consumer did not answer over a new connection either; trying again later");
            None
        }
    }
}

/// Nak without delay: the message was not worked on here.
async fn release(ctx: &Ctx, msg: &jetstream::Message) {
    if let Err(e) = msg.ack_with(AckKind::Nak(None)).await {
        tracing::debug!(error = %e, "release (nak) failed; the message is redelivered after ack_wait");
    }
    ctx.counts.released.fetch_add(1, Ordering::Relaxed);
    ctx.metrics.released.increment(1);
}

async fn handle(ctx: Arc<Ctx>, msg: jetstream::Message, _slot: OwnedSemaphorePermit) {
    ctx.metrics.in_flight.increment(1.0);
    handle_inner(&ctx, &msg).await;
    ctx.progress.touch();
    ctx.metrics.in_flight.decrement(1.0);
}

async fn handle_inner(ctx: &Ctx, msg: &jetstream::Message) {
    let (stream, seq, deliveries) = match msg.info() {
        Ok(i) => (
            i.stream.to_string(),
            i.stream_sequence,
            i.delivered.max(1) as u64,
        ),
        Err(e) => {
            tracing::warn!(error = %e, subject = %msg.subject, "not a JetStream message; ignored");
            return;
        }
    };
    let req = match WakeRequest::from_json(&msg.payload) {
        Ok(r) => r,
        Err(why) => return dead_letter(ctx, msg, &stream, seq, deliveries, &why).await,
    };
    let mut outcome = match req.to_notification(&ctx.push) {
        Err(o) => *o,
        Ok(n) => {
            let submit = ctx.engine.submit(n);
            tokio::pin!(submit);
            let every =
                Duration::from_secs(ctx.settings.ack_wait_s).max(Duration::from_secs(1)) / 2;
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tokio::select! {
                    o = &mut submit => break o,
                    _ = tick.tick() => {
                        // Still working: keep JetStream from redelivering it elsewhere.
                        let _ = msg.ack_with(AckKind::Progress).await;
                    }
                }
            }
        }
    };
    if outcome.kind == OutcomeKind::ShutDown {
        return release(ctx, msg).await;
    }
    if outcome.kind.is_retryable() && deliveries < ctx.settings.max_deliver {
        let delay = ctx.settings.nak_delay(deliveries, outcome.retry_after);
        let too_late = req
            .not_after_time()
            .ok()
            .flatten()
            .is_some_and(|na| SystemTime::now() + delay >= na);
        if !too_late {
            if let Err(e) = msg.ack_with(AckKind::Nak(Some(delay))).await {
                tracing::debug!(error = %e, "nak failed; redelivered after ack_wait");
            }
            ctx.counts.nacked.fetch_add(1, Ordering::Relaxed);
            ctx.metrics.nacked.increment(1);
            ctx.metrics.nak_delay.record(delay.as_secs_f64());
            return;
        }
        let mut expired = Outcome::local(
            OutcomeKind::Expired,
            format!(
                "not_after passes before the next attempt; last outcome {}{}",
                outcome.kind,
                outcome
                    .status
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default()
            ),
        );
        expired.attempts = outcome.attempts;
        expired.status = outcome.status;
        expired.wns = outcome.wns.clone();
        expired.retry_after = outcome.retry_after;
        expired.latency = outcome.latency;
        outcome = expired;
    }
    let mut result = WakeResult::new(&req, &outcome);
    result.deliveries = Some(deliveries);
    result.instance = Some(ctx.instance.clone());
    let msg_id = req
        .idempotency_key
        .clone()
        .unwrap_or_else(|| format!("{stream}:{seq}"));
    let body = match serde_json::to_vec(&result) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "cannot encode a result row");
            return publish_failed(ctx, msg, deliveries).await;
        }
    };
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", msg_id.as_str());
    headers.insert("Fleetwake-Outcome", outcome.kind.as_str());
    match publish_confirmed(ctx, &ctx.settings.results_subject, headers, body).await {
        Ok(()) => {
            if let Err(e) = msg.ack().await {
                tracing::debug!(error = %e, "ack failed; redelivered after ack_wait (result deduped)");
            }
            ctx.counts.acked.fetch_add(1, Ordering::Relaxed);
            ctx.metrics.acked.increment(1);
        }
        Err(e) => {
            if let Some(n) = ctx.publish_warning.check() {
                tracing::warn!(error = %e, quiet_since_last = n, "publishing a result failed; nak with backoff");
            }
            publish_failed(ctx, msg, deliveries).await
        }
    }
}

async fn publish_confirmed(
    ctx: &Ctx,
    subject: &str,
    headers: HeaderMap,
    body: Vec<u8>,
) -> Result<(), String> {
    let ack = ctx
        .js()
        .publish_with_headers(subject.to_string(), headers, body.into())
        .await
        .map_err(|e| e.to_string())?;
    ack.await.map(|_| ()).map_err(|e| e.to_string())
}

/// A publish failed (a results stream without a leader, NATS away): nak with
/// the consumer's backoff, so that a long outage does not spend the message's
/// deliveries at one a second.
async fn publish_failed(ctx: &Ctx, msg: &jetstream::Message, deliveries: u64) {
    ctx.counts.publish_failed.fetch_add(1, Ordering::Relaxed);
    ctx.metrics.publish_failed.increment(1);
    let delay = ctx.settings.nak_delay(deliveries, None);
    let _ = msg.ack_with(AckKind::Nak(Some(delay))).await;
}

/// Header-safe text: printable ASCII, at most 512 bytes.
fn header_text(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .collect();
    out.truncate(512);
    out
}

async fn dead_letter(
    ctx: &Ctx,
    msg: &jetstream::Message,
    stream: &str,
    seq: u64,
    deliveries: u64,
    why: &MalformedWake,
) {
    tracing::info!(%stream, seq, reason = %why, "malformed wake request: dead-lettered");
    let mut h = HeaderMap::new();
    h.insert("Nats-Msg-Id", format!("dead:{stream}:{seq}").as_str());
    h.insert("Fleetwake-Reason", header_text(&why.to_string()).as_str());
    if let Some(p) = &why.path {
        h.insert("Fleetwake-Path", header_text(p).as_str());
    }
    h.insert("Fleetwake-Source-Stream", header_text(stream).as_str());
    h.insert(
        "Fleetwake-Source-Subject",
        header_text(&msg.subject).as_str(),
    );
    h.insert("Fleetwake-Source-Sequence", seq.to_string().as_str());
    h.insert("Fleetwake-Deliveries", deliveries.to_string().as_str());
    h.insert("Fleetwake-Instance", header_text(&ctx.instance).as_str());
    match publish_confirmed(
        ctx,
        &ctx.settings.dead_letter_subject,
        h,
        msg.payload.to_vec(),
    )
    .await
    {
        Ok(()) => {
            if let Err(e) = msg.ack_with(AckKind::Term).await {
                tracing::debug!(error = %e, "term failed; redelivered after ack_wait");
            }
            ctx.counts.dead_lettered.fetch_add(1, Ordering::Relaxed);
            ctx.metrics.dead_lettered.increment(1);
        }
        Err(e) => {
            if let Some(n) = ctx.publish_warning.check() {
                tracing::warn!(error = %e, quiet_since_last = n, "publishing a dead letter failed; nak with backoff");
            }
            publish_failed(ctx, msg, deliveries).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_takes_a_comma_separated_list_of_servers() {
        let s = ConsumeSettings {
            url: "nats://127.0.0.1:4222, nats://127.0.0.1:4223,nats://10.0.0.3:4222".into(),
            ..ConsumeSettings::default()
        };
        assert_eq!(s.server_addrs().unwrap().len(), 3);
        for (url, says) in [
            ("nats://127.0.0.1:4222,http://x:1", "http://x:1"),
            (" , ", "names no NATS server"),
        ] {
            let s = ConsumeSettings {
                url: url.into(),
                ..ConsumeSettings::default()
            };
            let e = s.validate().unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
        }
    }

    #[test]
    fn defaults_are_valid_and_bounds_are_checked() {
        let s = ConsumeSettings::default();
        s.validate().unwrap();
        let bad = ConsumeSettings {
            stream: "a.b".into(),
            ..ConsumeSettings::default()
        };
        assert!(bad.validate().unwrap_err().contains("stream"));
        let bad = ConsumeSettings {
            in_flight: 0,
            ..ConsumeSettings::default()
        };
        assert!(bad.validate().unwrap_err().contains("in_flight"));
        let bad = ConsumeSettings {
            results_subject: "r.>".into(),
            ..ConsumeSettings::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn nak_delay_backs_off_honours_retry_after_and_caps() {
        let s = ConsumeSettings {
            nak_base_delay_ms: 1000,
            nak_max_delay_ms: 60_000,
            ..ConsumeSettings::default()
        };
        for _ in 0..200 {
            let d = s.nak_delay(1, None);
            assert!(
                d >= Duration::from_millis(500) && d <= Duration::from_secs(1),
                "{d:?}"
            );
            let d = s.nak_delay(3, None);
            assert!(
                d >= Duration::from_secs(2) && d <= Duration::from_secs(4),
                "{d:?}"
            );
            assert!(s.nak_delay(1, Some(Duration::from_secs(7))) >= Duration::from_secs(7));
            assert_eq!(
                s.nak_delay(40, None).max(Duration::from_secs(60)),
                Duration::from_secs(60)
            );
            assert_eq!(
                s.nak_delay(1, Some(Duration::from_secs(3600))),
                Duration::from_secs(60)
            );
        }
    }

    #[test]
    fn header_text_is_safe() {
        assert_eq!(header_text("a\r\nb"), "a??b");
        assert_eq!(header_text(&"x".repeat(600)).len(), 512);
    }
}
