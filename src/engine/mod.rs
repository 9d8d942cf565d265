//! The engine: tenants, shards, the per-PFN limiter, retries, and the public API.
//!
//! ```text
//! submit(Notification)
//!   -> tenant lookup, admission (per-tenant pending bound: submit waits when full)
//!   -> shard = hash(channel) % shards        (bounded queue per shard)
//!   -> shard worker: coalesce per channel, run delivery
//!        delivery: host breaker -> token ready -> in-flight slot -> PFN limiter
//!                  -> token read (last moment) -> build_push -> Transport::send
//!                  -> classify
//!                  -> retry / refresh / final
//!   -> every waiter of that channel gets the Outcome; metrics recorded
//! ```
//!
//! - [`token`] holds the lock-free, single-flight [`TokenCache`];
//! - [`tenant`] holds tenants, rate limits;
//! - [`retry`] holds the [`RetryPolicy`];
//! - `shard`: the worker and the life of one wake (the hot path).

#[cfg(feature = "nats")]
pub mod budget;
mod hosts;
pub mod retry;
mod shard;
pub mod tenant;
pub mod token;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::stream::{Stream, StreamExt};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinHandle;

pub use hosts::HostDown;
pub use retry::RetryPolicy;
pub use tenant::{PfnLimiter, RateLimit, TenantConfig};
pub use token::{Outage, RefreshCause, Rejection, TokenCache, TokenError};

use crate::telemetry::{EngineGauges, TenantMetrics};
use crate::transport::{Transport, TransportBuildError, TransportConfig};
use crate::wns::{
    ChannelUri, ChannelUriError, CredentialsError, Outcome, OutcomeKind, Payload, PushOptions,
};
use tenant::Tenant;

/// One wake for one device.
#[derive(Debug, Clone)]
pub struct Notification {
    /// The tenant name (see [`TenantConfig::name`]).
    pub tenant: Arc<str>,
    /// Where to push.
    pub channel: ChannelUri,
    /// The raw body (ignored by MDM, never empty).
    pub payload: Payload,
    /// Cache policy, TTL, priority, request-for-status.
    pub options: PushOptions,
    /// Do not push after this time; the outcome is then `expired`.
    pub not_after: Option<SystemTime>,
    /// Keep every response header in [`Outcome::response_headers`] (for debugging one device).
    pub capture_headers: bool,
}

impl Notification {
    /// A default wake (`cache`, payload `wake`) for `channel` of `tenant`.
    pub fn wake(tenant: impl Into<Arc<str>>, channel: ChannelUri) -> Self {
        Notification {
            tenant: tenant.into(),
            channel,
            payload: Payload::wake(),
            options: PushOptions::default(),
            not_after: None,
            capture_headers: false,
        }
    }

    /// Parses `channel_uri` and makes a default wake; the error says why the URI is refused.
    pub fn parse(tenant: impl Into<Arc<str>>, channel_uri: &str) -> Result<Self, ChannelUriError> {
        Ok(Self::wake(tenant, ChannelUri::parse(channel_uri)?))
    }
}

/// Engine-wide settings (tenants and transport are given to the builder).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Shard count. Default: twice the available cores, at least 2.
    pub shards: usize,
    /// Queue capacity per shard. Default 1024.
    pub queue_per_shard: usize,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// How long a rejected credential is remembered before the token endpoint is
    /// asked again. Default 60 s.
    pub credential_retry_interval: Duration,
    /// When a failing token endpoint or channel host stops being waited for.
    pub breaker: BreakerPolicy,
    /// Lanes: threads of the engine's own, each running a single-threaded
    /// runtime that owns a share of the shards (shard *i* on lane *i* mod
    /// lanes) and its own connections (the transport's per-host counts split
    /// between the lanes). A wake then stays on one thread from its shard to
    /// the socket and back: no lock or task is shared with another thread on
    /// the hot path but the tenant's in-flight bound, the PFN limiter and the
    /// token. Default 0: the shards run on the runtime that builds the engine
    /// (as tasks any of its threads may run), which is what tests with a
    /// paused clock need.
    pub lanes: usize,
    /// How the operating system schedules the lanes' threads (default
    /// [`LaneScheduling::Batch`]).
    pub lane_scheduling: LaneScheduling,
}

/// How the operating system schedules the threads of [`EngineConfig::lanes`].
///
/// A lane is throughput work: it wakes whenever an answer arrives, for a few
/// microseconds at a time. Under Linux's default policy a thread that wakes
/// may preempt whatever runs on its core, and on a busy machine two lanes
/// waking thousands of times a second keep preempting the other processes
/// there (and each other), for a context switch each time. `SCHED_BATCH`
/// gives the lanes the same share of CPU time, but a lane that wakes waits
/// for the running thread's slice instead of cutting it short.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LaneScheduling {
    /// `SCHED_BATCH` on Linux (elsewhere, the default policy). The default.
    #[default]
    Batch,
    /// The operating system's default policy (`SCHED_OTHER` on Linux).
    Normal,
}

impl LaneScheduling {
    /// The name used in the config file and in `bench --lane-scheduling`.
    pub fn as_str(self) -> &'static str {
        match self {
            LaneScheduling::Batch => "batch",
            LaneScheduling::Normal => "normal",
        }
    }

    /// Applies the policy to the calling thread.
    fn apply_to_this_thread(self) -> std::io::Result<()> {
        #[cfg(target_os = "linux")]
        if self == LaneScheduling::Batch {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: a plain system call on the calling thread (0) with a
            // valid parameter that outlives it; SCHED_BATCH takes priority 0
            // and needs no privilege.
            let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// The breakers of token endpoints and channel hosts: when one has failed,
/// without a success, for `open_after`, its breaker is open and wakes stop
/// spending their retry budget on it. One request probes it now and then; the
/// first success closes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// How long an endpoint must fail before its breaker opens. Default 10 s:
    /// short outages (a restart, a failover) are ridden out by retries and
    /// waits; longer ones are reported at once.
    pub open_after: Duration,
    /// What a wake does when the breaker in its way is open.
    pub when_open: WhenOpen,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            open_after: Duration::from_secs(10),
            when_open: WhenOpen::Fail,
        }
    }
}

/// What a wake does at an open breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenOpen {
    /// End at once, nothing sent, with a retryable outcome
    /// (`token_unavailable`, or the host's `connect_error` / `tls_error`),
    /// whose `retry_after` is the time to the breaker's next probe and whose
    /// detail says what failed and where. The default: queues nak, the HTTP
    /// API answers 503, campaigns stop the tenant, bench stops.
    #[default]
    Fail,
    /// Wait for the breaker (up to the wake's deadline), spending no attempt.
    Wait,
}

/// What is failing now, as [`Engine::health`] reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// Tenants whose token endpoint is failing.
    pub tenants_down: Vec<TenantDown>,
    /// Channel hosts that refuse connections or fail TLS.
    pub hosts_down: Vec<HostDown>,
    /// How many tenants the engine has.
    pub tenants: usize,
}

/// A tenant whose token endpoint is failing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantDown {
    /// The tenant.
    pub tenant: String,
    /// The outage.
    pub outage: token::Outage,
}

impl Health {
    /// True when every tenant's token breaker is open: nothing can succeed.
    pub fn all_tenants_down(&self) -> bool {
        self.tenants > 0
            && self
                .tenants_down
                .iter()
                .filter(|t| t.outage.breaker_open)
                .count()
                == self.tenants
    }

    /// One line per open breaker: what failed, where, for how long.
    pub fn open_breakers(&self) -> Vec<String> {
        let tenants = self
            .tenants_down
            .iter()
            .filter(|t| t.outage.breaker_open)
            .map(|t| t.outage.error.to_string());
        let hosts = self.hosts_down.iter().filter(|h| h.breaker_open).map(|h| {
            format!(
                "WNS host {} unreachable for {} s: {}",
                h.host,
                h.down_for.as_secs(),
                h.error
            )
        });
        tenants.chain(hosts).collect()
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        EngineConfig {
            shards: (cores * 2).max(2),
            queue_per_shard: 1024,
            retry: RetryPolicy::default(),
            credential_retry_interval: Duration::from_secs(60),
            breaker: BreakerPolicy::default(),
            lanes: 0,
            lane_scheduling: LaneScheduling::Batch,
        }
    }
}

/// The engine could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// No tenant was configured.
    #[error("no tenant is configured; add at least one with EngineBuilder::tenant")]
    NoTenants,
    /// Two tenants share a name.
    #[error("tenant {0:?} is configured twice")]
    DuplicateTenant(String),
    /// A tenant's credentials are malformed.
    #[error("tenant {tenant:?}: {error}")]
    Credentials {
        /// The tenant.
        tenant: String,
        /// What is wrong.
        error: CredentialsError,
    },
    /// Two tenants share a PFN (so one limiter) but ask for different limits.
    #[error(
        "tenants {first:?} and {second:?} share the PFN {pfn:?} (one rate limit), but set \
         different limits ({a}/s burst {b} vs {c}/s burst {d}); give them the same rate_limit",
        a = first_limit.per_second, b = first_limit.burst,
        c = second_limit.per_second, d = second_limit.burst
    )]
    PfnRateMismatch {
        /// The shared PFN.
        pfn: String,
        /// The tenant whose limit the PFN got first.
        first: String,
        /// Its limit.
        first_limit: RateLimit,
        /// The tenant that disagrees.
        second: String,
        /// Its limit.
        second_limit: RateLimit,
    },
    /// The transport could not be built.
    #[error(transparent)]
    Transport(#[from] TransportBuildError),
    /// `build` was called outside a tokio runtime.
    #[error("the engine must be built inside a tokio runtime")]
    NoRuntime,
    /// A lane's thread or runtime could not be started.
    #[error("cannot start engine lane {lane}: {error}")]
    Lane {
        /// The lane.
        lane: usize,
        /// What the OS said.
        error: std::io::Error,
    },
}

/// Builds an [`Engine`].
#[derive(Debug, Default)]
pub struct EngineBuilder {
    config: EngineConfig,
    transport: TransportConfig,
    tenants: Vec<TenantConfig>,
    #[cfg(feature = "nats")]
    shared_budget: Option<budget::SharedBudget>,
}

impl EngineBuilder {
    /// Adds a tenant.
    pub fn tenant(mut self, t: TenantConfig) -> Self {
        self.tenants.push(t);
        self
    }
    /// Sets the transport configuration.
    pub fn transport(mut self, t: TransportConfig) -> Self {
        self.transport = t;
        self
    }
    /// Sets the engine-wide configuration.
    pub fn config(mut self, c: EngineConfig) -> Self {
        self.config = c;
        self
    }
    /// Sets the retry policy.
    pub fn retry(mut self, r: RetryPolicy) -> Self {
        self.config.retry = r;
        self
    }
    /// Sets the shard count.
    pub fn shards(mut self, n: usize) -> Self {
        self.config.shards = n.max(1);
        self
    }
    /// Runs the shards on `n` threads of the engine's own (see
    /// [`EngineConfig::lanes`]; 0 runs them on the caller's runtime).
    pub fn lanes(mut self, n: usize) -> Self {
        self.config.lanes = n;
        self
    }

    /// How the lanes' threads are scheduled (see [`LaneScheduling`]).
    pub fn lane_scheduling(mut self, s: LaneScheduling) -> Self {
        self.config.lane_scheduling = s;
        self
    }

    /// Shares every PFN's rate budget and throttle pause with the other
    /// instances that name the same NATS key-value bucket (see
    /// [`budget`]); without it each engine enforces its own.
    #[cfg(feature = "nats")]
    pub fn shared_budget(mut self, b: budget::SharedBudget) -> Self {
        self.shared_budget = Some(b);
        self
    }

    /// Builds the engine and starts its shard workers (inside a tokio runtime).
    /// Install a metrics recorder before this if you want metrics.
    pub fn build(self) -> Result<Engine, BuildError> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        if self.tenants.is_empty() {
            return Err(BuildError::NoTenants);
        }
        let lanes = self.config.lanes.min(self.config.shards.max(1));
        // With lanes, each gets its own share of the connections per host.
        let mut transport_config = self.transport;
        if lanes > 0 {
            let t = &mut transport_config;
            t.h2_connections_per_host = t.h2_connections_per_host.div_ceil(lanes).max(1);
            t.h1_connections_per_host = t.h1_connections_per_host.div_ceil(lanes).max(1);
        }
        let transport = Transport::new(transport_config.clone())?;
        // One limiter per PFN, with the tenant that set it and its limit.
        let mut limiters: HashMap<String, (Arc<PfnLimiter>, String, RateLimit)> = HashMap::new();
        let mut tenants: HashMap<_, _, foldhash::fast::RandomState> = HashMap::default();
        #[cfg_attr(not(feature = "nats"), allow(unused_mut))]
        let mut budget_tasks: Vec<JoinHandle<()>> = Vec::new();
        for t in self.tenants {
            t.credentials
                .validate()
                .map_err(|error| BuildError::Credentials {
                    tenant: t.name.clone(),
                    error,
                })?;
            let name: Arc<str> = Arc::from(t.name.as_str());
            let metrics = TenantMetrics::new(&t.name);
            let pfn = t.pfn.clone().unwrap_or_else(|| t.name.clone());
            let (limiter, first, first_limit) = limiters.entry(pfn.clone()).or_insert_with(|| {
                #[cfg(feature = "nats")]
                if let Some(b) = &self.shared_budget {
                    let (shared, task) = budget::SharedPfn::start(&pfn, t.rate_limit, b);
                    budget_tasks.push(rt.spawn(task));
                    return (
                        Arc::new(PfnLimiter::shared(t.rate_limit, shared)),
                        t.name.clone(),
                        t.rate_limit,
                    );
                }
                (
                    Arc::new(PfnLimiter::new(t.rate_limit)),
                    t.name.clone(),
                    t.rate_limit,
                )
            });
            if *first_limit != t.rate_limit {
                return Err(BuildError::PfnRateMismatch {
                    pfn,
                    first: first.clone(),
                    first_limit: *first_limit,
                    second: t.name.clone(),
                    second_limit: t.rate_limit,
                });
            }
            let limiter = limiter.clone();
            let tokens = Arc::new(TokenCache::new(
                name.clone(),
                t.credentials,
                transport.clone(),
                metrics.clone(),
                self.config.credential_retry_interval,
                self.config.breaker.open_after,
            ));
            let tenant = Tenant {
                tokens,
                limiter,
                metrics,
                pending: Arc::new(Semaphore::new(t.max_pending)),
                in_flight: Arc::new(Semaphore::new(t.max_in_flight)),
            };
            if tenants.insert(name, Arc::new(tenant)).is_some() {
                return Err(BuildError::DuplicateTenant(t.name));
            }
        }
        let (draining_tx, draining) = watch::channel(false);
        let shared = Arc::new(Shared {
            transport,
            hosts: Arc::new(hosts::HostHealth::new(self.config.breaker.open_after)),
            when_open: self.config.breaker.when_open,
            retry: self.config.retry.clone(),
            gauges: EngineGauges::new(),
            draining: draining.clone(),
        });
        let mut queues = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..self.config.shards.max(1) {
            let (tx, rx) = mpsc::channel(self.config.queue_per_shard.max(1));
            queues.push(tx);
            receivers.push(rx);
        }
        let mut workers = Vec::new();
        let mut lane_handles = Vec::new();
        if lanes == 0 {
            for rx in receivers {
                workers.push(rt.spawn(shard::run_shard(shared.clone(), rx, draining.clone())));
            }
        } else {
            let mut per_lane: Vec<Vec<_>> = (0..lanes).map(|_| Vec::new()).collect();
            for (i, rx) in receivers.into_iter().enumerate() {
                per_lane[i % lanes].push(rx);
            }
            for (lane, rxs) in per_lane.into_iter().enumerate() {
                // Lane 0 uses the engine's transport (which also carries the
                // token requests); the others their own.
                let lane_shared = if lane == 0 {
                    shared.clone()
                } else {
                    let transport = Transport::new(transport_config.clone())?;
                    Arc::new(shared.with_transport(transport))
                };
                let scheduling = self.config.lane_scheduling;
                let (handle, ws) = start_lane(lane, scheduling, lane_shared, rxs, &draining)
                    .map_err(|error| BuildError::Lane { lane, error })?;
                lane_handles.push(handle);
                workers.extend(ws);
            }
        }
        Ok(Engine {
            inner: Arc::new(Inner {
                shared,
                tenants,
                queues,
                workers: Mutex::new(workers),
                lanes: lane_handles,
                background: budget_tasks,
                closing: AtomicBool::new(false),
                draining_tx,
                rejected: TenantMetrics::new("_none"),
                retry_deadline: self.config.retry.deadline,
            }),
        })
    }
}

/// Starts one lane: a thread running a single-threaded runtime with the
/// shard workers of `rxs`. The thread ends (and its runtime, with the
/// connections it opened) once every one of its workers has ended: after the
/// engine's shutdown, or when the engine is dropped and its queues close.
/// The thread takes `scheduling` as its policy.
fn start_lane(
    lane: usize,
    scheduling: LaneScheduling,
    shared: Arc<Shared>,
    rxs: Vec<mpsc::Receiver<shard::Job>>,
    draining: &watch::Receiver<bool>,
) -> std::io::Result<(tokio::runtime::Handle, Vec<JoinHandle<()>>)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Every worker holds a sender; the thread waits until all are gone.
    let (alive, mut all_ended) = mpsc::channel::<()>(1);
    let workers = rxs
        .into_iter()
        .map(|rx| {
            let (shared, draining, alive) = (shared.clone(), draining.clone(), alive.clone());
            rt.spawn(async move {
                shard::run_shard(shared, rx, draining).await;
                drop(alive);
            })
        })
        .collect();
    drop(alive);
    let handle = rt.handle().clone();
    std::thread::Builder::new()
        .name(format!("fleetwake-lane-{lane}"))
        .spawn(move || {
            if let Err(e) = scheduling.apply_to_this_thread() {
                tracing::debug!(lane, policy = scheduling.as_str(), error = %e, "lane thread keeps the default scheduling policy");
            }
            rt.block_on(async move { while all_ended.recv().await.is_some() {} });
        })?;
    Ok((handle, workers))
}

/// State every delivery reads (one per lane, sharing the host breakers).
pub(crate) struct Shared {
    pub(crate) transport: Transport,
    pub(crate) hosts: Arc<hosts::HostHealth>,
    pub(crate) when_open: WhenOpen,
    pub(crate) retry: RetryPolicy,
    pub(crate) gauges: EngineGauges,
    pub(crate) draining: watch::Receiver<bool>,
}

impl Shared {
    /// Another lane's state: the same breakers, policies, gauges and drain
    /// signal, with that lane's own `transport`.
    fn with_transport(&self, transport: Transport) -> Shared {
        Shared {
            transport,
            hosts: self.hosts.clone(),
            when_open: self.when_open,
            retry: self.retry.clone(),
            gauges: self.gauges.clone(),
            draining: self.draining.clone(),
        }
    }
}

struct Inner {
    shared: Arc<Shared>,
    tenants: HashMap<Arc<str>, Arc<Tenant>, foldhash::fast::RandomState>,
    queues: Vec<mpsc::Sender<shard::Job>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    /// The lanes' runtimes (empty without lanes).
    lanes: Vec<tokio::runtime::Handle>,
    /// Tasks that live as long as the engine (the shared budget's).
    background: Vec<JoinHandle<()>>,
    closing: AtomicBool,
    draining_tx: watch::Sender<bool>,
    rejected: TenantMetrics,
    retry_deadline: Duration,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in &self.background {
            t.abort();
        }
    }
}

/// The WNS wake engine. Cheap to clone; all clones share one engine.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use fleetwake::{Engine, TenantConfig, Notification, Credentials, Secret};
/// let engine = Engine::builder()
///     .tenant(TenantConfig::new("contoso", Credentials::PackageSid {
///         package_sid: "ms-app://S-1-15-2-1".into(),
///         secret: Secret::new(std::env::var("WNS_SECRET")?),
///     }))
///     .build()?;
/// let n = Notification::parse("contoso", "https://db5p.notify.windows.com/?token=AwYAAAB")?;
/// let outcome = engine.submit(n).await;
/// println!("{} -> {}", outcome.kind, outcome.mdm_action().describe());
/// engine.shutdown(std::time::Duration::from_secs(30)).await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("tenants", &self.inner.tenants.keys().collect::<Vec<_>>())
            .field("shards", &self.inner.queues.len())
            .finish()
    }
}

/// What [`Engine::shutdown`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// True when everything accepted reached a final outcome within the grace period.
    pub drained: bool,
}

impl Engine {
    /// A builder with default settings.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// Sends one wake and waits for its final outcome. Waits first when the
    /// tenant's pending bound or the shard queue is full. Never panics; every
    /// failure is an [`Outcome`].
    pub async fn submit(&self, n: Notification) -> Outcome {
        let submitted = Instant::now();
        let inner = &self.inner;
        let Some(tenant) = inner.tenants.get(&n.tenant) else {
            let o = Outcome::local(
                OutcomeKind::UnknownTenant,
                format!("tenant {:?} is not configured", &*n.tenant),
            );
            inner.rejected.outcome(o.kind, Duration::ZERO);
            return o;
        };
        if let Some(na) = n.not_after {
            if SystemTime::now() >= na {
                let o = Outcome::local(
                    OutcomeKind::Expired,
                    "not_after passed before the wake was sent",
                );
                tenant.metrics.outcome(o.kind, Duration::ZERO);
                return o;
            }
        }
        let shut = |tenant: &Tenant| {
            let o = Outcome::local(
                OutcomeKind::ShutDown,
                "the engine is shutting down; the wake was not sent",
            );
            tenant.metrics.outcome(o.kind, submitted.elapsed());
            o
        };
        if inner.closing.load(Ordering::Acquire) {
            return shut(tenant);
        }
        let Ok(permit) = tenant.pending.clone().acquire_owned().await else {
            return shut(tenant);
        };
        if inner.closing.load(Ordering::Acquire) {
            return shut(tenant);
        }
        let mut deadline = submitted + inner.retry_deadline;
        if let Some(na) = n.not_after {
            if let Ok(left) = na.duration_since(SystemTime::now()) {
                deadline = deadline.min(Instant::now() + left);
            }
        }
        let shard = shard_of(n.channel.as_str(), inner.queues.len());
        let (reply, rx) = oneshot::channel();
        let job = shard::Job {
            notification: n,
            tenant: tenant.clone(),
            submitted,
            deadline,
            reply,
            permit,
        };
        inner.shared.gauges.pending.increment(1.0);
        if inner.queues[shard].send(job).await.is_err() {
            inner.shared.gauges.pending.decrement(1.0);
            return shut(tenant);
        }
        match rx.await {
            Ok(o) => o,
            // The shard was aborted after the shutdown grace period.
            Err(_) => shut(tenant),
        }
    }

    /// Sends many wakes concurrently (up to `concurrency` at once) and yields
    /// `(key, outcome)` for each as it completes. The key is yours: a device id,
    /// a row number. Input is pulled lazily, so the stream can be any size.
    pub fn submit_stream<K, S>(
        &self,
        input: S,
        concurrency: usize,
    ) -> impl Stream<Item = (K, Outcome)> + Send + 'static
    where
        K: Send + 'static,
        S: Stream<Item = (K, Notification)> + Send + 'static,
    {
        let engine = self.clone();
        input
            .map(move |(k, n)| {
                let e = engine.clone();
                async move { (k, e.submit(n).await) }
            })
            .buffer_unordered(concurrency.max(1))
    }

    /// [`Engine::submit_stream`] over an iterator.
    pub fn submit_iter<K, I>(
        &self,
        input: I,
        concurrency: usize,
    ) -> impl Stream<Item = (K, Outcome)> + Send + 'static
    where
        K: Send + 'static,
        I: IntoIterator<Item = (K, Notification)>,
        I::IntoIter: Send + 'static,
    {
        self.submit_stream(futures_util::stream::iter(input), concurrency)
    }

    /// True when `tenant` is configured.
    pub fn has_tenant(&self, tenant: &str) -> bool {
        self.inner.tenants.contains_key(tenant)
    }

    /// Token requests sent so far for `tenant` (None for an unknown tenant).
    pub fn token_requests(&self, tenant: &str) -> Option<u64> {
        self.inner
            .tenants
            .get(tenant)
            .map(|t| t.tokens.requests_sent())
    }

    /// What is failing now: tenants whose token endpoint fails, channel hosts
    /// that refuse connections, and whether their breakers are open.
    pub fn health(&self) -> Health {
        let mut tenants_down: Vec<TenantDown> = self
            .inner
            .tenants
            .iter()
            .filter_map(|(name, t)| {
                t.tokens.outage().map(|outage| TenantDown {
                    tenant: name.to_string(),
                    outage,
                })
            })
            .collect();
        tenants_down.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        Health {
            tenants_down,
            hosts_down: self.inner.shared.hosts.snapshot(),
            tenants: self.inner.tenants.len(),
        }
    }

    /// The outage of `tenant`'s token endpoint, if its breaker is open.
    pub fn tenant_breaker_open(&self, tenant: &str) -> Option<token::Outage> {
        self.inner
            .tenants
            .get(tenant)
            .and_then(|t| t.tokens.outage())
            .filter(|o| o.breaker_open)
    }

    /// Token requests sent so far for `tenant`, by cause (None for an unknown
    /// tenant): tells tokens that expired from credentials WNS refused.
    pub fn token_requests_by_cause(&self, tenant: &str) -> Option<Vec<(RefreshCause, u64)>> {
        self.inner
            .tenants
            .get(tenant)
            .map(|t| t.tokens.requests_by_cause())
    }

    /// The transport (for protocol introspection). With lanes, lane 0's,
    /// which also carries the token requests.
    pub fn transport(&self) -> &Transport {
        &self.inner.shared.transport
    }

    /// The lane whose thread runs `channel`'s shard (`None` without lanes).
    /// A producer that splits its input by lane and submits each part from
    /// a task on that lane ([`Engine::lane_handles`]) keeps every wake on
    /// one thread.
    pub fn lane_of(&self, channel: &ChannelUri) -> Option<usize> {
        let lanes = self.inner.lanes.len();
        (lanes > 0).then(|| shard_of(channel.as_str(), self.inner.queues.len()) % lanes)
    }

    /// The lanes' runtimes ([`EngineConfig::lanes`]; empty without lanes):
    /// a producer spawned on one submits from the thread that also runs
    /// shards, instead of waking a thread of its own for every wake.
    pub fn lane_handles(&self) -> &[tokio::runtime::Handle] {
        &self.inner.lanes
    }

    /// Starts draining without waiting: new submits get `shut_down`; wakes not yet
    /// sent end as `shut_down` (nothing was sent for them, so they can be resent
    /// safely later); requests in flight finish; waiting retries end at once with
    /// their last, retryable, outcome.
    pub fn drain(&self) {
        self.inner.closing.store(true, Ordering::Release);
        let _ = self.inner.draining_tx.send(true);
    }

    /// [`Engine::drain`], then waits for the shard workers to finish. After
    /// `grace`, whatever is left ends as `shut_down`.
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        self.drain();
        let workers: Vec<_> = std::mem::take(&mut *self.inner.workers.lock());
        let aborts: Vec<_> = workers.iter().map(|w| w.abort_handle()).collect();
        let all = futures_util::future::join_all(workers);
        let drained = tokio::time::timeout(grace, all).await.is_ok();
        if !drained {
            for a in aborts {
                a.abort();
            }
        }
        ShutdownReport { drained }
    }
}

/// The shard of a channel: FNV-1a over the channel URI modulo the shard count,
/// so the same channel always lands on the same shard (public for benchmarks).
pub fn shard_of(channel: &str, shards: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in channel.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % shards.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_is_stable_and_spread() {
        let mut counts = [0usize; 4];
        for i in 0..4000 {
            let c = format!("https://db5p.notify.windows.com/?token=dev{i}");
            let s = shard_of(&c, 4);
            assert_eq!(s, shard_of(&c, 4));
            counts[s] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "{counts:?}");
        }
    }
}
