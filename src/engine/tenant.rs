//! Tenants: one WNS app (PFN + credentials) each, with its own token, rate limit,
//! pause and admission bound, so that one failing or throttled tenant cannot
//! starve the others.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::Semaphore;

use super::token::TokenCache;
use crate::telemetry::TenantMetrics;
use crate::wns::Credentials;

/// A per-PFN rate limit: a steady `per_second` with bursts of up to `burst`.
/// In any one-second window at most `per_second + burst` requests start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: NonZeroU32,
    /// Requests that may start at once after a quiet period.
    pub burst: NonZeroU32,
}

impl RateLimit {
    /// `per_second` with a burst of one tenth of it (at least 1).
    pub fn per_second(per_second: u32) -> Self {
        let per_second = NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new((per_second.get() / 10).max(1)).unwrap_or(NonZeroU32::MIN);
        RateLimit { per_second, burst }
    }

    /// Sets the burst (at least 1).
    pub fn with_burst(mut self, burst: u32) -> Self {
        self.burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
        self
    }
}

impl Default for RateLimit {
    /// 200/s with a burst of 20: conservative, well below the ~1000/s at which WNS
    /// has been seen to throttle an app.
    fn default() -> Self {
        RateLimit::per_second(200).with_burst(20)
    }
}

/// The configuration of one tenant.
#[derive(Debug, Clone)]
pub struct TenantConfig {
    /// The name notifications use to pick the tenant (a config key, not a secret).
    pub name: String,
    /// The PFN the devices were given. Tenants with the same PFN share one rate limit.
    /// Defaults to the name.
    pub pfn: Option<String>,
    /// WNS credentials.
    pub credentials: Credentials,
    /// The rate limit for this PFN.
    pub rate_limit: RateLimit,
    /// Most wakes accepted and not yet final for this tenant; `submit` waits beyond it.
    pub max_pending: usize,
    /// Most HTTP requests in flight for this tenant. A tenant waiting on its rate
    /// limit holds only its own slots, so it cannot starve the others. The
    /// engine-wide bound is the sum over tenants.
    pub max_in_flight: usize,
}

impl TenantConfig {
    /// A tenant with the default rate limit and bounds.
    pub fn new(name: impl Into<String>, credentials: Credentials) -> Self {
        TenantConfig {
            name: name.into(),
            pfn: None,
            credentials,
            rate_limit: RateLimit::default(),
            max_pending: 4096,
            max_in_flight: 256,
        }
    }

    /// Sets the rate limit.
    pub fn rate_limit(mut self, r: RateLimit) -> Self {
        self.rate_limit = r;
        self
    }

    /// Sets the PFN.
    pub fn pfn(mut self, pfn: impl Into<String>) -> Self {
        self.pfn = Some(pfn.into());
        self
    }

    /// Sets the in-flight bound.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// Sets the pending bound.
    pub fn max_pending(mut self, n: usize) -> Self {
        self.max_pending = n.max(1);
        self
    }
}

/// A PFN's limiter and throttle pause, shared by the tenants using that PFN.
/// Public for benchmarks and for callers that want the same limiter elsewhere.
pub struct PfnLimiter {
    limiter: DefaultDirectRateLimiter,
    clock: DefaultClock,
    epoch: Instant,
    /// Nanoseconds after `epoch` until which nothing is sent (Retry-After on 406/429).
    paused_until: AtomicU64,
    /// The budget shared with other instances through NATS, when configured:
    /// it then replaces the in-process limiter and pause.
    #[cfg(feature = "nats")]
    shared: Option<Arc<super::budget::SharedPfn>>,
}

impl PfnLimiter {
    /// A limiter for `r`, not paused.
    pub fn new(r: RateLimit) -> Self {
        PfnLimiter {
            limiter: RateLimiter::direct(Quota::per_second(r.per_second).allow_burst(r.burst)),
            clock: DefaultClock::default(),
            epoch: Instant::now(),
            paused_until: AtomicU64::new(0),
            #[cfg(feature = "nats")]
            shared: None,
        }
    }

    /// A limiter whose budget and pause are shared through `shared`.
    #[cfg(feature = "nats")]
    pub(crate) fn shared(r: RateLimit, shared: Arc<super::budget::SharedPfn>) -> Self {
        PfnLimiter {
            shared: Some(shared),
            ..PfnLimiter::new(r)
        }
    }

    /// Waits for a pause to end and for a rate-limit cell. Returns false if that
    /// would pass `deadline` (nothing is consumed then, except on a race).
    pub async fn until_ready(&self, deadline: Instant) -> bool {
        #[cfg(feature = "nats")]
        if let Some(s) = &self.shared {
            return s.until_ready(deadline).await;
        }
        loop {
            let now = Instant::now();
            let paused =
                self.epoch + Duration::from_nanos(self.paused_until.load(Ordering::Acquire));
            if paused > now {
                if paused >= deadline {
                    return false;
                }
                tokio::time::sleep_until(paused.into()).await;
                continue;
            }
            match self.limiter.check() {
                Ok(()) => return true,
                Err(not_until) => {
                    let wait = not_until.wait_time_from(self.clock.now());
                    if now + wait >= deadline {
                        return false;
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Stops every send for this PFN for `d` (extends, never shortens, a
    /// pause); with a shared budget, on every instance.
    pub fn pause(&self, d: Duration) {
        #[cfg(feature = "nats")]
        if let Some(s) = &self.shared {
            s.pause(d);
            return;
        }
        let until = (Instant::now() + d)
            .saturating_duration_since(self.epoch)
            .as_nanos()
            .min(u64::MAX as u128) as u64;
        self.paused_until.fetch_max(until, Ordering::AcqRel);
    }
}

/// A tenant at run time.
pub(crate) struct Tenant {
    pub(crate) tokens: Arc<TokenCache>,
    pub(crate) limiter: Arc<PfnLimiter>,
    pub(crate) metrics: TenantMetrics,
    pub(crate) pending: Arc<Semaphore>,
    pub(crate) in_flight: Arc<Semaphore>,
}
