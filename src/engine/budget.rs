//! The shared PFN budget (feature `nats`): one rate limit and one throttle
//! pause per PFN for every fleetwake process that names the same NATS
//! JetStream key-value bucket, whatever their number.
//!
//! WNS limits and blocks per app (PFN), not per sender, so N instances must
//! stay inside one budget together. The budget is a GCRA ledger in one KV
//! entry per PFN: `tat` (the theoretical arrival time of the next cell, in
//! Unix nanoseconds) and `paused_until`. An instance *leases* a batch of
//! cells by compare-and-set on the entry's revision: cell `k` of a lease may
//! start at `max(granted_at, base - τ + k·T)`, where `T = 1/rate`,
//! `base = max(tat, now, paused_until)` and `τ` is the burst tolerance; the
//! entry's `tat` moves to `base + n·T`. Every cell ever granted, to anyone,
//! has its own slot on that one schedule, so together the instances start at
//! most `rate + burst` requests in any one-second window:
//!
//! - No membership: instances that join lease, instances that die stop
//!   leasing. A dead instance's unused cells are only slots that pass empty
//!   (at most one lease, `lease_ms` of budget); nothing is handed back
//!   because nothing needs to be.
//! - A cell is used at its slot or within [`LATENESS`] after it; later, it
//!   is dropped (counted as wasted). That lateness is taken out of the burst
//!   tolerance, so a late cell cannot push a window over `rate + burst`.
//! - A throttle pause (406/429 with `Retry-After`) is written to the entry
//!   (`paused_until`, and `tat` moved past it) and reaches the other
//!   instances through a KV watch, one round trip later; each drops the cells
//!   it holds inside the pause. The pause ends for all at the same instant.
//! - It fails safe: without NATS no lease is granted, so an instance sends
//!   only the cells it already holds (at most one lease), then nothing for
//!   that PFN until NATS is back (a warning and
//!   `fleetwake_budget_lease_failures_total`); it never falls back to a
//!   budget of its own.
//! - The hot path takes a cell from the local lease under a short lock; NATS
//!   is spoken to once per lease (about ten times a second per PFN for all
//!   instances together), never per wake.
//!
//! Clocks: slots are Unix times, so the instances' clocks must agree (NTP);
//! a skew of `d` between two instances can let `rate × d` more requests into
//! one window (3 at 300/s with 10 ms of skew).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};
use parking_lot::Mutex;
use tokio::sync::{mpsc, Notify};

use super::tenant::RateLimit;

/// How late a cell may still be used after its slot.
pub const LATENESS: Duration = Duration::from_millis(5);

/// A cell due within this many nanoseconds is used at once, without a timer.
const EARLY_NS: u64 = 1_000_000;

/// How much later one instance's request may reach WNS than another's sent
/// at the same moment (scheduling, the connection, the network): taken out
/// of the burst tolerance too, so that the bound holds where WNS counts.
pub const DELIVERY_JITTER: Duration = Duration::from_millis(15);

/// Where the shared budget lives: a NATS connection and a JetStream
/// key-value bucket. Every instance that names the same bucket (on the same
/// NATS system) shares each PFN's budget.
#[derive(Clone)]
pub struct SharedBudget {
    client: async_nats::Client,
    bucket: String,
    replicas: usize,
    lease: Duration,
}

impl std::fmt::Debug for SharedBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedBudget")
            .field("bucket", &self.bucket)
            .field("replicas", &self.replicas)
            .field("lease", &self.lease)
            .finish()
    }
}

impl SharedBudget {
    /// The default bucket name.
    pub const DEFAULT_BUCKET: &'static str = "FLEETWAKE_BUDGET";

    /// A budget in `bucket` (created if missing, one replica) over `client`,
    /// leasing 100 ms of budget at a time.
    pub fn new(client: async_nats::Client, bucket: impl Into<String>) -> Self {
        SharedBudget {
            client,
            bucket: bucket.into(),
            replicas: 1,
            lease: Duration::from_millis(100),
        }
    }

    /// Replicas of the bucket when it is created (3 on a JetStream cluster).
    pub fn replicas(mut self, n: usize) -> Self {
        self.replicas = n.max(1);
        self
    }

    /// How much budget one lease takes (10 ms to 1 s; default 100 ms): less
    /// means more KV updates, more means more budget idle in one instance's
    /// hands.
    pub fn lease(mut self, d: Duration) -> Self {
        self.lease = d.clamp(Duration::from_millis(10), Duration::from_secs(1));
        self
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }
}

/// The KV key of a PFN: readable when the PFN is a valid key, hex otherwise.
pub fn ledger_key(pfn: &str) -> String {
    let plain = !pfn.is_empty()
        && pfn
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !pfn.ends_with('.');
    if plain {
        format!("pfn.{pfn}")
    } else {
        let hex: String = pfn.bytes().map(|b| format!("{b:02x}")).collect();
        format!("pfnx.{hex}")
    }
}

/// The ledger kept in the KV entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ledger {
    /// Version of this layout.
    #[serde(default)]
    pub v: u32,
    /// Theoretical arrival time of the next cell, Unix ns.
    pub tat_ns: u64,
    /// No cell starts before this, Unix ns (a throttle pause).
    pub paused_until_ns: u64,
    /// The rate the last writer used (instances should agree).
    pub rate: u32,
    /// The burst the last writer used.
    pub burst: u32,
}

/// The GCRA arithmetic of one PFN, sans IO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Nanoseconds between cells (`1/rate`).
    pub period_ns: u64,
    /// Burst tolerance, less the lateness allowance.
    pub tolerance_ns: u64,
    /// How late a cell may be used.
    pub lateness_ns: u64,
}

impl Schedule {
    /// The schedule for `r`: at most `rate + burst` cells start in any
    /// one-second window, even when each is used up to the lateness late.
    pub fn of(r: RateLimit) -> Self {
        let period_ns = (1_000_000_000 / u64::from(r.per_second.get())).max(1);
        let burst_ns = u64::from(r.burst.get().saturating_sub(1)) * period_ns;
        // Lateness and delivery jitter come out of the burst tolerance (at
        // most half of it): a window then holds at most
        // rate·(1 + L) + (τ - L)/T + 1 = rate + burst cells. With no
        // tolerance to take them from, less than one period of lateness still
        // cannot add a whole cell to a window.
        let lateness_ns = (LATENESS.as_nanos() as u64).min((burst_ns / 2).max(period_ns / 2));
        let reserve_ns = ((LATENESS + DELIVERY_JITTER).as_nanos() as u64)
            .min(burst_ns / 2)
            .max(lateness_ns.min(burst_ns));
        Schedule {
            period_ns,
            tolerance_ns: burst_ns.saturating_sub(reserve_ns),
            lateness_ns,
        }
    }

    /// Leases up to `want` cells at `now_ns` from `ledger`, reaching no
    /// further than `horizon_ns` past now: the lease, and the ledger to
    /// write. `None` when no cell fits now.
    pub fn lease(
        &self,
        ledger: &Ledger,
        now_ns: u64,
        want: u32,
        horizon_ns: u64,
    ) -> Option<(Lease, Ledger)> {
        let base = ledger.tat_ns.max(now_ns).max(ledger.paused_until_ns);
        // The burst tolerance never reaches back into a pause.
        let first = base
            .saturating_sub(self.tolerance_ns)
            .max(ledger.paused_until_ns);
        // Cells k with first + k·T <= now + horizon.
        let end = now_ns.saturating_add(horizon_ns);
        if first > end {
            return None;
        }
        let fit = (end - first) / self.period_ns + 1;
        let n = u64::from(want).min(fit);
        if n == 0 {
            return None;
        }
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        let mut next = *ledger;
        next.v = 1;
        next.tat_ns = base.saturating_add(u64::from(n).saturating_mul(self.period_ns));
        Some((
            Lease {
                granted_ns: now_ns,
                first_ns: first,
                taken: 0,
                cells: n,
            },
            next,
        ))
    }
}

/// Cells leased from the ledger: cell `k` may start at
/// `max(granted_ns, first_ns + k·period)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// When the lease was granted, Unix ns.
    pub granted_ns: u64,
    /// Slot of cell 0 before the `granted_ns` floor, Unix ns.
    pub first_ns: u64,
    /// Cells already taken or dropped.
    pub taken: u32,
    /// Cells in the lease.
    pub cells: u32,
}

impl Lease {
    fn slot(&self, k: u32, s: &Schedule) -> u64 {
        self.granted_ns
            .max(self.first_ns + u64::from(k) * s.period_ns)
    }
}

/// Takes the next usable cell at `now_ns`, dropping cells that are too late
/// or inside a pause: its slot, and how many were dropped.
fn take(
    leases: &mut VecDeque<Lease>,
    s: &Schedule,
    now_ns: u64,
    paused_until_ns: u64,
) -> (Option<u64>, u64) {
    let mut dropped = 0u64;
    while let Some(l) = leases.front_mut() {
        if l.taken >= l.cells {
            leases.pop_front();
            continue;
        }
        let slot = l.slot(l.taken, s);
        if slot.saturating_add(s.lateness_ns) < now_ns || slot < paused_until_ns {
            l.taken += 1;
            dropped += 1;
            continue;
        }
        l.taken += 1;
        return (Some(slot), dropped);
    }
    (None, dropped)
}

/// Cells not yet taken.
fn remaining(leases: &VecDeque<Lease>) -> u64 {
    leases.iter().map(|l| u64::from(l.cells - l.taken)).sum()
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos().min(u128::from(u64::MAX)) as u64)
        .unwrap_or(0)
}

struct Metrics {
    leased: Counter,
    wasted: Counter,
    pauses_received: Counter,
    lease_failures: Counter,
    wait_seconds: Histogram,
    connected: Gauge,
}

impl Metrics {
    fn new(pfn: &str, rate: RateLimit) -> Self {
        let p = pfn.to_string();
        gauge!("fleetwake_budget_rate_per_second", "pfn" => p.clone())
            .set(f64::from(rate.per_second.get()));
        gauge!("fleetwake_budget_burst", "pfn" => p.clone()).set(f64::from(rate.burst.get()));
        Metrics {
            leased: counter!("fleetwake_budget_permits_leased_total", "pfn" => p.clone()),
            wasted: counter!("fleetwake_budget_permits_wasted_total", "pfn" => p.clone()),
            pauses_received: counter!("fleetwake_budget_pauses_received_total", "pfn" => p.clone()),
            lease_failures: counter!("fleetwake_budget_lease_failures_total", "pfn" => p.clone()),
            wait_seconds: histogram!("fleetwake_budget_wait_seconds", "pfn" => p.clone()),
            connected: gauge!("fleetwake_budget_connected", "pfn" => p),
        }
    }
}

/// One PFN's share of the shared budget in this process.
pub(crate) struct SharedPfn {
    pfn: Arc<str>,
    key: String,
    rate: RateLimit,
    schedule: Schedule,
    lease_cells: u32,
    horizon_ns: u64,
    leases: Mutex<VecDeque<Lease>>,
    /// Woken when cells arrive or a pause changes.
    cells_ready: Notify,
    /// Woken when cells are wanted.
    wanted: Notify,
    waiting: AtomicU64,
    /// Unix ns of the last cell taken (a recent user keeps a lease ahead).
    last_take_ns: AtomicU64,
    paused_until_ns: AtomicU64,
    pauses: mpsc::Sender<u64>,
    connected: AtomicBool,
    metrics: Metrics,
}

impl std::fmt::Debug for SharedPfn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedPfn")
            .field("pfn", &self.pfn)
            .field("rate", &self.rate)
            .finish()
    }
}

impl SharedPfn {
    /// The PFN's share and the task that leases for it (spawn it).
    pub(crate) fn start(
        pfn: &str,
        rate: RateLimit,
        budget: &SharedBudget,
    ) -> (
        Arc<SharedPfn>,
        impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let schedule = Schedule::of(rate);
        let lease_cells = ((u128::from(rate.per_second.get()) * budget.lease.as_millis()) / 1000)
            .clamp(1, 10_000) as u32;
        let (tx, rx) = mpsc::channel(64);
        let me = Arc::new(SharedPfn {
            pfn: Arc::from(pfn),
            key: ledger_key(pfn),
            rate,
            schedule,
            lease_cells,
            horizon_ns: (budget.lease.as_nanos() as u64).saturating_mul(2),
            leases: Mutex::new(VecDeque::new()),
            cells_ready: Notify::new(),
            wanted: Notify::new(),
            waiting: AtomicU64::new(0),
            last_take_ns: AtomicU64::new(0),
            paused_until_ns: AtomicU64::new(0),
            pauses: tx,
            connected: AtomicBool::new(false),
            metrics: Metrics::new(pfn, rate),
        });
        let task = run(me.clone(), budget.clone(), rx);
        (me, task)
    }

    /// Waits for a cell of the shared budget (and for any pause to end).
    /// False if that would pass `deadline`.
    pub(crate) async fn until_ready(&self, deadline: Instant) -> bool {
        let started = Instant::now();
        let result = loop {
            let now_ns = unix_ns();
            let paused = self.paused_until_ns.load(Ordering::Acquire);
            if paused > now_ns {
                let until = Instant::now() + Duration::from_nanos(paused - now_ns);
                if until >= deadline {
                    break false;
                }
                tokio::time::sleep_until(until.into()).await;
                continue;
            }
            let ready = self.cells_ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            let (slot, dropped, left) = {
                let mut leases = self.leases.lock();
                let (slot, dropped) = take(&mut leases, &self.schedule, now_ns, paused);
                (slot, dropped, remaining(&leases))
            };
            if dropped > 0 {
                self.metrics.wasted.increment(dropped);
            }
            match slot {
                Some(slot) => {
                    self.last_take_ns.store(now_ns, Ordering::Relaxed);
                    if left < u64::from(self.lease_cells / 2).max(1) {
                        self.wanted.notify_one();
                    }
                    // Less than a timer tick early is sent now: the delivery
                    // jitter allowance covers it, and a timer per wake at
                    // high rates would cost more than the send.
                    if slot > now_ns + EARLY_NS {
                        let at = Instant::now() + Duration::from_nanos(slot - now_ns);
                        if at >= deadline {
                            break false;
                        }
                        tokio::time::sleep_until(at.into()).await;
                        // A pause that came meanwhile voids the cell.
                        if self.paused_until_ns.load(Ordering::Acquire) > slot {
                            self.metrics.wasted.increment(1);
                            continue;
                        }
                    }
                    break true;
                }
                None => {
                    self.waiting.fetch_add(1, Ordering::AcqRel);
                    self.wanted.notify_one();
                    let timed_out = tokio::select! {
                        _ = ready => false,
                        _ = tokio::time::sleep_until(deadline.into()) => true,
                    };
                    self.waiting.fetch_sub(1, Ordering::AcqRel);
                    if timed_out {
                        break false;
                    }
                }
            }
        };
        self.metrics
            .wait_seconds
            .record(started.elapsed().as_secs_f64());
        result
    }

    /// Stops every send for this PFN, on every instance, for `d`: at once
    /// here, and through the ledger for the others.
    pub(crate) fn pause(&self, d: Duration) {
        let until = unix_ns().saturating_add(d.as_nanos().min(u128::from(u64::MAX)) as u64);
        if self.apply_pause(until) {
            // Full queue: a pause is already on its way; the latest one wins
            // anyway when the task writes `max`.
            let _ = self.pauses.try_send(until);
        }
    }

    /// Applies a pause until `until_ns` locally: true if it extended it.
    fn apply_pause(&self, until_ns: u64) -> bool {
        let before = self.paused_until_ns.fetch_max(until_ns, Ordering::AcqRel);
        if until_ns <= before {
            return false;
        }
        // Cells inside the pause are void.
        let mut dropped = 0u64;
        let mut leases = self.leases.lock();
        for l in leases.iter_mut() {
            while l.taken < l.cells && l.slot(l.taken, &self.schedule) < until_ns {
                l.taken += 1;
                dropped += 1;
            }
        }
        leases.retain(|l| l.taken < l.cells);
        drop(leases);
        if dropped > 0 {
            self.metrics.wasted.increment(dropped);
        }
        self.cells_ready.notify_waiters();
        true
    }

    /// Whether a lease is wanted now: someone waits, or cells were taken in
    /// the last second and fewer than half a lease is left.
    fn wants_cells(&self, now_ns: u64) -> bool {
        if self.waiting.load(Ordering::Acquire) > 0 {
            return true;
        }
        let recent =
            now_ns.saturating_sub(self.last_take_ns.load(Ordering::Relaxed)) < 1_000_000_000;
        recent && remaining(&self.leases.lock()) < u64::from(self.lease_cells / 2).max(1)
    }
}

/// The ledger's entry, its revision (`None`: no entry yet).
async fn read(store: &kv::Store, key: &str) -> Result<(Ledger, Option<u64>), String> {
    match store.entry(key).await {
        Ok(Some(e)) if matches!(e.operation, kv::Operation::Put) => {
            let ledger = serde_json::from_slice(&e.value).unwrap_or_default();
            Ok((ledger, Some(e.revision)))
        }
        Ok(Some(e)) => Ok((Ledger::default(), Some(e.revision))),
        Ok(None) => Ok((Ledger::default(), None)),
        Err(e) => Err(e.to_string()),
    }
}

/// Writes `ledger` if the entry is still at `revision`: `Ok(false)` when it
/// moved (someone else wrote first).
async fn write(
    store: &kv::Store,
    key: &str,
    ledger: &Ledger,
    revision: Option<u64>,
) -> Result<bool, String> {
    let bytes = serde_json::to_vec(ledger).map_err(|e| e.to_string())?;
    let r = match revision {
        Some(rev) => store
            .update(key, bytes.into(), rev)
            .await
            .map(|_| ())
            .map_err(|e| {
                (
                    e.kind() == kv::UpdateErrorKind::WrongLastRevision,
                    e.to_string(),
                )
            }),
        None => store
            .create(key, bytes.into())
            .await
            .map(|_| ())
            .map_err(|e| {
                (
                    e.kind() == kv::CreateErrorKind::AlreadyExists,
                    e.to_string(),
                )
            }),
    };
    match r {
        Ok(()) => Ok(true),
        Err((true, _)) => Ok(false),
        Err((false, e)) => Err(e),
    }
}

/// How long one KV operation may take.
const KV_TIMEOUT: Duration = Duration::from_secs(2);

/// Compare-and-set loop: applies `change` to the ledger until it sticks.
/// `Ok(None)` when `change` declines.
async fn update<T>(
    store: &kv::Store,
    key: &str,
    mut change: impl FnMut(&Ledger) -> Option<(Ledger, T)>,
) -> Result<Option<T>, String> {
    for attempt in 0..20u32 {
        let (ledger, rev) = tokio::time::timeout(KV_TIMEOUT, read(store, key))
            .await
            .map_err(|_| "reading the budget timed out".to_string())??;
        let Some((next, out)) = change(&ledger) else {
            return Ok(None);
        };
        let written = tokio::time::timeout(KV_TIMEOUT, write(store, key, &next, rev))
            .await
            .map_err(|_| "writing the budget timed out".to_string())??;
        if written {
            return Ok(Some(out));
        }
        // Someone else wrote first: read again, after a moment that grows.
        tokio::time::sleep(Duration::from_micros(
            200 * u64::from(attempt + 1) + fastrand::u64(..300),
        ))
        .await;
    }
    Err("the budget entry kept changing under 20 updates in a row".into())
}

/// The bucket, created if missing. Its stream is made here, as the KV layout
/// wants it (`KV_<bucket>`, subjects `$KV.<bucket>.>`, one message per key,
/// rollups, direct gets), rather than with `create_key_value`, whose account
/// query the NATS 2.9 servers of Debian 12 answer in a shape async-nats 0.51
/// cannot read.
async fn open_bucket(js: &jetstream::Context, budget: &SharedBudget) -> Result<kv::Store, String> {
    if let Ok(store) = js.get_key_value(budget.bucket.as_str()).await {
        return Ok(store);
    }
    js.get_or_create_stream(jetstream::stream::Config {
        name: format!("KV_{}", budget.bucket),
        description: Some("fleetwake: each PFN's shared rate budget and throttle pause".into()),
        subjects: vec![format!("$KV.{}.>", budget.bucket)],
        max_messages_per_subject: 1,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: budget.replicas,
        discard: jetstream::stream::DiscardPolicy::New,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("creating the bucket's stream: {e}"))?;
    js.get_key_value(budget.bucket.as_str())
        .await
        .map_err(|e| e.to_string())
}

/// The PFN's task: keeps a lease ahead while there is demand, publishes local
/// pauses, and applies the others' pauses from a KV watch.
async fn run(me: Arc<SharedPfn>, budget: SharedBudget, mut pauses: mpsc::Receiver<u64>) {
    let warn = crate::util::WarnEvery::new(Duration::from_secs(10));
    let mut backoff = Duration::from_millis(100);
    let store = loop {
        let js = jetstream::new(budget.client.clone());
        let got = tokio::time::timeout(KV_TIMEOUT * 2, open_bucket(&js, &budget))
            .await
            .unwrap_or_else(|_| Err("timed out".to_string()));
        match got {
            Ok(s) => break s,
            Err(e) => {
                me.metrics.lease_failures.increment(1);
                if let Some(n) = warn.check() {
                    tracing::warn!(pfn = %me.pfn, bucket = %budget.bucket, error = %e, quiet_since_last = n, "shared budget: the key-value bucket cannot be reached; nothing is sent for this PFN until it can");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    };
    let watcher = tokio::spawn(watch(me.clone(), store.clone()));
    let _watcher = AbortOnDrop(watcher);
    backoff = Duration::from_millis(100);
    let mut pending_pause: Option<u64> = None;
    loop {
        // Publish every pause asked for here (the latest wins).
        while let Ok(p) = pauses.try_recv() {
            pending_pause = pending_pause.max(Some(p));
        }
        if let Some(until) = pending_pause.take() {
            let r = update(&store, &me.key, |l| {
                if l.paused_until_ns >= until {
                    return None;
                }
                let mut n = *l;
                n.paused_until_ns = until;
                n.tat_ns = n.tat_ns.max(until);
                Some((n, ()))
            })
            .await;
            if let Err(e) = r {
                me.metrics.lease_failures.increment(1);
                tracing::warn!(pfn = %me.pfn, error = %e, "shared budget: the throttle pause could not be written; other instances learn of it from their own 406/429");
            }
        }
        let now = unix_ns();
        if me.wants_cells(now) && now >= me.paused_until_ns.load(Ordering::Acquire) {
            let (want, sched, horizon) = (me.lease_cells, me.schedule, me.horizon_ns);
            let rate = me.rate;
            let leased = update(&store, &me.key, |l| {
                let (lease, mut next) = sched.lease(l, unix_ns(), want, horizon)?;
                next.rate = rate.per_second.get();
                next.burst = rate.burst.get();
                Some((next, (lease, *l)))
            })
            .await;
            match leased {
                Ok(Some((lease, seen))) => {
                    if !me.connected.swap(true, Ordering::AcqRel) {
                        me.metrics.connected.set(1.0);
                        tracing::info!(pfn = %me.pfn, bucket = %budget.bucket, "shared budget: leasing");
                    }
                    backoff = Duration::from_millis(100);
                    if (seen.rate, seen.burst) != (0, 0)
                        && (seen.rate, seen.burst) != (rate.per_second.get(), rate.burst.get())
                    {
                        if let Some(n) = warn.check() {
                            tracing::warn!(pfn = %me.pfn, ours = %format!("{}/s burst {}", rate.per_second, rate.burst), theirs = %format!("{}/s burst {}", seen.rate, seen.burst), quiet_since_last = n, "shared budget: instances disagree on this PFN's rate_per_second and burst; give them the same config");
                        }
                    }
                    if seen.paused_until_ns > me.paused_until_ns.load(Ordering::Acquire)
                        && me.apply_pause(seen.paused_until_ns)
                    {
                        me.metrics.pauses_received.increment(1);
                    }
                    me.metrics.leased.increment(u64::from(lease.cells));
                    me.leases.lock().push_back(lease);
                    me.cells_ready.notify_waiters();
                    continue;
                }
                Ok(None) => {
                    // The schedule is booked beyond the horizon: wait for it.
                    tokio::time::sleep(
                        Duration::from_nanos(me.schedule.period_ns).max(Duration::from_millis(1)),
                    )
                    .await;
                    continue;
                }
                Err(e) => {
                    me.metrics.lease_failures.increment(1);
                    if me.connected.swap(false, Ordering::AcqRel) {
                        me.metrics.connected.set(0.0);
                    }
                    if let Some(n) = warn.check() {
                        tracing::warn!(pfn = %me.pfn, error = %e, quiet_since_last = n, "shared budget: no lease (NATS unreachable or slow); sending only the cells already leased, then nothing for this PFN until NATS is back");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            }
        }
        // Nothing to do: wait for demand, a pause to publish, or a moment.
        tokio::select! {
            _ = me.wanted.notified() => {}
            p = pauses.recv() => match p {
                Some(p) => pending_pause = pending_pause.max(Some(p)),
                None => return,
            },
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
}

/// Applies the pauses other instances write to the ledger.
async fn watch(me: Arc<SharedPfn>, store: kv::Store) {
    loop {
        match store.watch(&me.key).await {
            Ok(mut w) => {
                while let Some(Ok(e)) = w.next().await {
                    if let Ok(l) = serde_json::from_slice::<Ledger>(&e.value) {
                        if l.paused_until_ns > unix_ns() && me.apply_pause(l.paused_until_ns) {
                            me.metrics.pauses_received.increment(1);
                            tracing::info!(pfn = %me.pfn, for_ms = (l.paused_until_ns - unix_ns()) / 1_000_000, "shared budget: paused by another instance's throttle");
                        }
                    }
                }
            }
            Err(e) => tracing::debug!(pfn = %me.pfn, error = %e, "shared budget: watch failed"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window_max(mut times: Vec<u64>) -> usize {
        times.sort_unstable();
        let mut max = 0;
        let mut start = 0;
        for end in 0..times.len() {
            while times[end] - times[start] >= 1_000_000_000 {
                start += 1;
            }
            max = max.max(end - start + 1);
        }
        max
    }

    /// Several instances leasing from one ledger, in any interleaving, and
    /// using each cell up to the lateness late: never more than rate + burst
    /// in any one-second window.
    #[test]
    fn leases_from_one_ledger_never_exceed_rate_plus_burst() {
        // Fixed seeds, so a failure can be replayed.
        let cases = [(300u32, 30u32), (100, 1), (1000, 100), (50, 5), (7, 2)];
        for ((rate, burst), seed) in cases.iter().copied().cycle().take(20).zip(0u64..) {
            fastrand::seed(seed);
            let r = RateLimit::per_second(rate).with_burst(burst);
            let s = Schedule::of(r);
            let mut ledger = Ledger::default();
            let mut sent = Vec::new();
            let mut pauses = Vec::new();
            let mut now = 1_000_000_000_000u64;
            for step in 0..4000u64 {
                // Time moves by up to 20 ms, now and then by 2 s (idle, so
                // that bursts happen); one of 3 instances leases 1..=40.
                now += fastrand::u64(..20_000_000);
                if step % 211 == 0 {
                    now += 2_000_000_000;
                }
                let want = fastrand::u32(1..=40);
                if let Some((lease, next)) = s.lease(&ledger, now, want, 200_000_000) {
                    ledger = next;
                    for k in 0..lease.cells {
                        let slot = lease.slot(k, &s);
                        // Used at its slot, or as late as allowed. The worst
                        // mix: the burst at a lease's start late, the cells
                        // after it on time.
                        let late = if slot == lease.granted_ns || fastrand::u8(..4) == 0 {
                            s.lateness_ns
                        } else {
                            0
                        };
                        sent.push(slot + late);
                    }
                }
                if step % 500 == 0 {
                    // A pause of 3 s from now.
                    ledger.paused_until_ns = now + 3_000_000_000;
                    ledger.tat_ns = ledger.tat_ns.max(ledger.paused_until_ns);
                    pauses.push((now, ledger.paused_until_ns));
                }
            }
            // No cell granted after a pause began starts inside it (cells
            // granted before it, at most the 200 ms horizon and the lateness
            // after it, are dropped by `take`, tested below).
            for (from, until) in &pauses {
                let inside = sent
                    .iter()
                    .filter(|t| **t > *from + 200_000_000 + s.lateness_ns && **t < *until)
                    .count();
                assert_eq!(inside, 0, "{rate}/s seed {seed}: cells inside a pause");
            }
            let max = window_max(sent.clone());
            assert!(
                max <= (rate + burst) as usize,
                "{rate}/s burst {burst}: {max} in one second"
            );
            assert!(
                max >= rate as usize,
                "{rate}/s burst {burst}: not needlessly slow: {max}"
            );
        }
    }

    #[test]
    fn a_lease_after_idle_starts_with_the_burst() {
        let s = Schedule::of(RateLimit::per_second(300).with_burst(30));
        let now = 5_000_000_000_000u64;
        let (lease, next) = s.lease(&Ledger::default(), now, 100, 100_000_000).unwrap();
        let immediate = (0..lease.cells)
            .filter(|k| lease.slot(*k, &s) == now)
            .count();
        // The burst, less the lateness and jitter allowance (20 ms = 6 cells).
        assert!((22..=24).contains(&immediate), "{immediate}");
        assert!(next.tat_ns > now);
        // Nothing beyond the horizon.
        let last = lease.slot(lease.cells - 1, &s);
        assert!(last <= now + 100_000_000);
    }

    #[test]
    fn take_drops_late_cells_and_cells_inside_a_pause() {
        let s = Schedule::of(RateLimit::per_second(100).with_burst(10));
        let now = 1_000_000_000_000u64;
        let (lease, _) = s.lease(&Ledger::default(), now, 20, 1_000_000_000).unwrap();
        let mut q = VecDeque::from([lease]);
        // 100 ms later: the cells whose slot passed more than 5 ms ago are gone.
        let later = now + 100_000_000;
        let (slot, dropped) = take(&mut q, &s, later, 0);
        let slot = slot.unwrap();
        assert!(slot + s.lateness_ns >= later, "a usable cell");
        assert!(dropped > 0);
        // A pause until 50 ms after that drops what falls inside it.
        let (slot2, _) = take(&mut q, &s, later, later + 50_000_000);
        assert!(slot2.is_none_or(|s2| s2 >= later + 50_000_000));
    }

    #[test]
    fn keys_are_valid_kv_keys() {
        assert_eq!(
            ledger_key("Contoso.MDM_8wekyb3d8bbwe"),
            "pfn.Contoso.MDM_8wekyb3d8bbwe"
        );
        assert_eq!(ledger_key("a b"), "pfnx.612062");
        assert_eq!(ledger_key("x."), "pfnx.782e");
    }
}
