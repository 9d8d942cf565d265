//! [`TokenCache`]: one WNS access token per tenant, read lock-free by every worker.
//!
//! The delivery path never holds a token across a wait. It calls
//! [`TokenCache::ready`] before it waits for its in-flight slot and the PFN
//! limiter (so a missing token is fetched before a rate-limit cell is taken),
//! then reads the token with [`TokenCache::current`] immediately before the
//! request is encoded. A wake that waited minutes behind a throttle pause
//! therefore goes out with the token that is current when it leaves.
//!
//! Invariants:
//! - Readers `load` the current token through an `ArcSwap`; they never lock.
//! - At most one refresh runs at a time per tenant (single flight). A caller that
//!   waited for the refresh lock re-checks the current token first and returns it
//!   if someone else already refreshed.
//! - The token is refreshed ahead of expiry, in the background, while the old
//!   one stays in use. The margin is a tenth of the lifetime, but at least twice
//!   the token request's own round trip, and at most half the lifetime and 5
//!   minutes; a token that would not outlive twice its own round trip is
//!   refused with an error that says so (no refresh storm).
//! - After a 401, [`TokenCache::rejection`] tells a *stale* rejection
//!   (the token was past its refresh point by our clock, had already been
//!   replaced, or WNS said `Token expired`) from a *fresh* one (a credential
//!   problem, unless the next token works); a token WNS expired early caps
//!   the lifetime believed for later ones; [`TokenCache::refresh_after_reject`] fetches a new token only if
//!   the failed token is still the current one, so a thousand concurrent 401s
//!   for the same token cause exactly one token request.
//! - A rejected credential (token endpoint 400/401/403) is remembered for
//!   `credential_retry_interval`; during that time every caller gets the same
//!   error at once, without asking the endpoint again (no retry storm). An
//!   unreachable endpoint is remembered for a short, growing interval likewise.
//! - Every token request is counted by cause ([`RefreshCause`]).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use crate::telemetry::TenantMetrics;
use crate::transport::Transport;
use crate::wns::credentials::{parse_token_response, TokenResponseError};
use crate::wns::outcome::retry_after;
use crate::wns::{Credentials, Secret};

/// A token in use, with when to refresh it.
pub struct CachedToken {
    /// The bearer token.
    pub token: Secret,
    /// When the endpoint said it expires.
    pub expires_at: Instant,
    /// When a background refresh starts.
    pub refresh_at: Instant,
    /// The `Authorization` value, built once per token; `None` when the token
    /// cannot be a header value (every push then fails with that error).
    pub bearer: Option<http::HeaderValue>,
    /// When the token was asked for (its age counts from here).
    pub issued_at: Instant,
}

impl std::fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedToken")
            .field("token", &self.token)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Why no token is available.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The token endpoint rejected the tenant's credentials. Final.
    #[error("tenant {tenant:?}: WNS credentials rejected by the token endpoint: {message}")]
    Rejected {
        /// The tenant name.
        tenant: String,
        /// The endpoint's error (never the secret).
        message: String,
    },
    /// The token endpoint could not be reached or failed. Retryable.
    #[error("tenant {tenant:?}: token endpoint unavailable: {message}")]
    Unavailable {
        /// The tenant name.
        tenant: String,
        /// What failed.
        message: String,
        /// When to try again.
        retry_after: Duration,
    },
    /// The token endpoint has failed for longer than the breaker allows
    /// (`BreakerPolicy::open_after`) and the breaker is open: nobody waits
    /// for it, one request probes it now and then. Retryable.
    #[error(
        "tenant {tenant:?}: token endpoint down for {} s (breaker open; next try in {} ms): {message}",
        down_for.as_secs(), retry_after.as_millis()
    )]
    EndpointDown {
        /// The tenant name.
        tenant: String,
        /// The last failure: what failed, where (host, address) and the OS
        /// error when there is one.
        message: String,
        /// How long the endpoint has been failing.
        down_for: Duration,
        /// When the next probe may go.
        retry_after: Duration,
    },
}

impl TokenError {
    /// How long to wait before asking again (`None` for rejected credentials).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            TokenError::Rejected { .. } => None,
            TokenError::Unavailable { retry_after, .. }
            | TokenError::EndpointDown { retry_after, .. } => Some(*retry_after),
        }
    }
}

/// What a 401 meant, by our own clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The token was past its refresh point, or already replaced by a newer
    /// one: it expired while the request waited or flew. Not a credential
    /// problem; the wake is resent with the new token.
    Stale,
    /// The token was current and fresh by our clock: WNS refused a token it
    /// should have accepted (revoked app, or its clock disagrees). One resend
    /// with a new token decides.
    Fresh,
}

/// Why a token was requested (the `cause` label of
/// `fleetwake_token_refreshes_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshCause {
    /// The tenant's first token.
    First,
    /// Ahead of expiry, in the background, while the old token is still valid.
    Ahead,
    /// The token expired with nobody sending (no background refresh ran).
    Expired,
    /// WNS answered 401 to a token that was past its refresh point or replaced.
    RejectedStale,
    /// WNS answered 401 to a token that was fresh by our clock.
    RejectedFresh,
}

impl RefreshCause {
    /// Every cause, in label order.
    pub const ALL: [RefreshCause; 5] = [
        RefreshCause::First,
        RefreshCause::Ahead,
        RefreshCause::Expired,
        RefreshCause::RejectedStale,
        RefreshCause::RejectedFresh,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RefreshCause::First => "first",
            RefreshCause::Ahead => "ahead",
            RefreshCause::Expired => "expired",
            RefreshCause::RejectedStale => "rejected_stale",
            RefreshCause::RejectedFresh => "rejected_fresh",
        }
    }
}

/// The longest token lifetime believed, whatever `expires_in` says.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(30 * 86_400);

struct Failure {
    error: TokenError,
    /// No request before this (the backoff).
    until: Instant,
    /// When this run of failures began (the first failure since a success).
    since: Instant,
    /// Failed requests in this run.
    failures: u32,
}

/// The token endpoint's outage, as [`TokenCache::outage`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outage {
    /// How long the endpoint has been failing.
    pub down_for: Duration,
    /// Whether the breaker is open (down for at least its `open_after`).
    pub breaker_open: bool,
    /// The last failure.
    pub error: TokenError,
    /// When the next request may go.
    pub retry_after: Duration,
}

/// The shared token of one tenant.
pub struct TokenCache {
    tenant: Arc<str>,
    credentials: Credentials,
    transport: Transport,
    metrics: TenantMetrics,
    current: ArcSwapOption<CachedToken>,
    refresh: Arc<tokio::sync::Mutex<()>>,
    failure: ArcSwapOption<Failure>,
    credential_retry_interval: Duration,
    /// A failing endpoint's breaker opens after this long.
    open_after: Duration,
    /// The shortest life WNS has given a token (ms; `u64::MAX` until one died
    /// early): later tokens are believed to live no longer.
    lifetime_cap_ms: AtomicU64,
    /// True while a background task probes the endpoint of an open breaker.
    prober: std::sync::atomic::AtomicBool,
    consecutive_errors: AtomicU32,
    requests: AtomicU64,
    /// Token requests by [`RefreshCause`], in `RefreshCause::ALL` order.
    by_cause: [AtomicU64; 5],
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("tenant", &self.tenant)
            .field("credentials", &self.credentials)
            .field("requests", &self.requests.load(Ordering::Relaxed))
            .finish()
    }
}

impl TokenCache {
    /// A cache with no token yet; the first [`TokenCache::ready`] fetches one.
    pub fn new(
        tenant: Arc<str>,
        credentials: Credentials,
        transport: Transport,
        metrics: TenantMetrics,
        credential_retry_interval: Duration,
        open_after: Duration,
    ) -> Self {
        TokenCache {
            tenant,
            credentials,
            transport,
            metrics,
            current: ArcSwapOption::empty(),
            refresh: Arc::new(tokio::sync::Mutex::new(())),
            failure: ArcSwapOption::empty(),
            credential_retry_interval,
            open_after,
            lifetime_cap_ms: AtomicU64::new(u64::MAX),
            prober: std::sync::atomic::AtomicBool::new(false),
            consecutive_errors: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            by_cause: Default::default(),
        }
    }

    /// How many token requests this cache has sent.
    pub fn requests_sent(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// How many token requests this cache has sent, by cause.
    pub fn requests_by_cause(&self) -> Vec<(RefreshCause, u64)> {
        RefreshCause::ALL
            .iter()
            .zip(&self.by_cause)
            .map(|(c, n)| (*c, n.load(Ordering::Relaxed)))
            .collect()
    }

    /// The token to send with now, read lock-free: `None` when there is none or
    /// it has expired by our clock. Call it immediately before the request is
    /// built, after every wait. Past the token's refresh point it starts one
    /// background refresh and still returns the old token, which is valid.
    pub fn current(self: &Arc<Self>) -> Option<Arc<CachedToken>> {
        let t = self.current.load_full()?;
        let now = Instant::now();
        if now < t.refresh_at {
            return Some(t);
        }
        if now >= t.expires_at {
            return None;
        }
        self.refresh_in_background();
        Some(t)
    }

    fn refresh_in_background(self: &Arc<Self>) {
        if let Ok(guard) = self.refresh.clone().try_lock_owned() {
            let me = self.clone();
            tokio::spawn(async move {
                let _one = guard;
                if let Err(e) = me.fetch_unless_fresh(None, RefreshCause::Ahead).await {
                    tracing::warn!(tenant = %me.tenant, error = %e, "background token refresh failed");
                }
            });
        }
    }

    /// The token endpoint's current outage, if it is failing (a request
    /// failed and none has succeeded since). Rejected credentials are not an
    /// outage.
    pub fn outage(&self) -> Option<Outage> {
        let f = self.failure.load_full()?;
        if matches!(f.error, TokenError::Rejected { .. }) {
            return None;
        }
        let now = Instant::now();
        let down_for = now.saturating_duration_since(f.since);
        Some(Outage {
            down_for,
            breaker_open: down_for >= self.open_after && f.failures >= 2,
            error: f.error.clone(),
            retry_after: f.until.saturating_duration_since(now),
        })
    }

    /// While the breaker is open, one background task asks the endpoint again
    /// at each next try, so the breaker closes when the endpoint is back even
    /// if no wake comes to ask (a consumer that stopped pulling, an API that
    /// answers 503). It ends at the first success, when the credentials are
    /// rejected, or when the cache is dropped.
    fn ensure_prober(self: &Arc<Self>) {
        if self.prober.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let wait = {
                    let Some(me) = weak.upgrade() else { return };
                    match me.failure.load_full() {
                        Some(f) if !matches!(f.error, TokenError::Rejected { .. }) => {
                            f.until.saturating_duration_since(Instant::now())
                        }
                        _ => {
                            me.prober.store(false, Ordering::Release);
                            return;
                        }
                    }
                };
                tokio::time::sleep(wait).await;
                let Some(me) = weak.upgrade() else { return };
                let guard = me.refresh.clone().lock_owned().await;
                let cause = if me.current.load().is_some() {
                    RefreshCause::Expired
                } else {
                    RefreshCause::First
                };
                let probed = me.fetch_unless_fresh(None, cause).await;
                drop(guard);
                if probed.is_ok() {
                    me.prober.store(false, Ordering::Release);
                    return;
                }
            }
        });
    }

    /// While the endpoint is failing and its breaker is not open yet: how long
    /// until it opens. A wake waiting to retry need not wait past that.
    pub fn breaker_opens_in(&self) -> Option<Duration> {
        let f = self.failure.load_full()?;
        if matches!(f.error, TokenError::Rejected { .. }) {
            return None;
        }
        Some(
            self.open_after
                .saturating_sub(Instant::now().saturating_duration_since(f.since)),
        )
    }

    /// The error a caller gets while the breaker is open.
    fn endpoint_down(&self, f: &Failure, now: Instant) -> TokenError {
        let message = match &f.error {
            TokenError::Unavailable { message, .. } | TokenError::EndpointDown { message, .. } => {
                message.clone()
            }
            TokenError::Rejected { message, .. } => message.clone(),
        };
        TokenError::EndpointDown {
            tenant: self.tenant.to_string(),
            message,
            down_for: now.saturating_duration_since(f.since),
            retry_after: f
                .until
                .saturating_duration_since(now)
                .max(Duration::from_millis(100)),
        }
    }

    /// Makes sure a token that is valid now exists, fetching one (single flight)
    /// when there is none or it expired. It hands out nothing: the caller reads
    /// the token with [`TokenCache::current`] when it is about to send.
    ///
    /// While the endpoint's breaker is open, nobody waits behind the refresh:
    /// until the next try every caller gets [`TokenError::EndpointDown`] at
    /// once, and at the next try one caller probes while the others still do.
    pub async fn ready(self: &Arc<Self>) -> Result<(), TokenError> {
        if self.current().is_some() {
            return Ok(());
        }
        if let Some(f) = self.failure.load_full() {
            let now = Instant::now();
            let open = !matches!(f.error, TokenError::Rejected { .. })
                && now.saturating_duration_since(f.since) >= self.open_after
                && f.failures >= 2;
            if open {
                self.ensure_prober();
                if now < f.until {
                    return Err(self.endpoint_down(&f, now));
                }
                let Ok(guard) = self.refresh.clone().try_lock_owned() else {
                    return Err(self.endpoint_down(&f, now));
                };
                return Box::pin(async move {
                    let _one = guard;
                    let cause = if self.current.load().is_some() {
                        RefreshCause::Expired
                    } else {
                        RefreshCause::First
                    };
                    match self.fetch_unless_fresh(None, cause).await {
                        Ok(_) => Ok(()),
                        Err(e @ TokenError::Rejected { .. }) => Err(e),
                        Err(_) => match self.failure.load_full() {
                            Some(f) => Err(self.endpoint_down(&f, Instant::now())),
                            None => Ok(()),
                        },
                    }
                })
                .await;
            }
        }
        // The slow path is boxed so that the hot path's future stays small.
        Box::pin(async {
            let _one = self.refresh.lock().await;
            let cause = if self.current.load().is_some() {
                RefreshCause::Expired
            } else {
                RefreshCause::First
            };
            self.fetch_unless_fresh(None, cause).await.map(|_| ())
        })
        .await
    }

    /// A token valid now: [`TokenCache::ready`] then [`TokenCache::current`].
    /// For callers that send at once; the engine's delivery path uses the two
    /// halves around its waits instead.
    pub async fn get(self: &Arc<Self>) -> Result<Arc<CachedToken>, TokenError> {
        loop {
            self.ready().await?;
            if let Some(t) = self.current() {
                return Ok(t);
            }
        }
    }

    /// What a 401 to a request sent with `failed` means: stale (past its
    /// refresh point by our clock, replaced while the request was in flight,
    /// or WNS said `Token expired`) or fresh (a token we had every reason to
    /// think valid was refused: a credential problem, unless the next token
    /// works).
    ///
    /// WNS saying `Token expired` about a token that our clock calls fresh
    /// means its clock, or the token's real life, is shorter than announced:
    /// the age at which it died caps the lifetime believed for later tokens
    /// (never below a quarter of what the endpoint announces), so they are
    /// refreshed before WNS drops them.
    pub fn rejection(&self, failed: &Arc<CachedToken>, wns_says_expired: bool) -> Rejection {
        let replaced = self
            .current
            .load()
            .as_ref()
            .is_none_or(|cur| !Arc::ptr_eq(cur, failed));
        let now = Instant::now();
        if replaced || now >= failed.refresh_at {
            return Rejection::Stale;
        }
        if wns_says_expired {
            let age = now.saturating_duration_since(failed.issued_at);
            let before = self.lifetime_cap_ms.fetch_min(
                age.as_millis().min(u128::from(u64::MAX)) as u64,
                Ordering::AcqRel,
            );
            if age.as_millis() < u128::from(before) {
                tracing::warn!(tenant = %self.tenant, died_at_ms = age.as_millis() as u64, lives_ms = failed.expires_at.saturating_duration_since(failed.issued_at).as_millis() as u64, "WNS said a token expired before its announced lifetime (clock skew?); later tokens are refreshed sooner");
            }
            return Rejection::Stale;
        }
        Rejection::Fresh
    }

    /// After a 401 to `failed` (judged `rejection`): a new token, fetched only if
    /// `failed` is still the current one (single flight).
    pub async fn refresh_after_reject(
        self: &Arc<Self>,
        failed: &Arc<CachedToken>,
        rejection: Rejection,
    ) -> Result<(), TokenError> {
        let cause = match rejection {
            Rejection::Stale => RefreshCause::RejectedStale,
            Rejection::Fresh => RefreshCause::RejectedFresh,
        };
        let _one = self.refresh.lock().await;
        self.fetch_unless_fresh(Some(failed), cause)
            .await
            .map(|_| ())
    }

    /// Called with the refresh lock held.
    async fn fetch_unless_fresh(
        &self,
        failed: Option<&Arc<CachedToken>>,
        cause: RefreshCause,
    ) -> Result<Arc<CachedToken>, TokenError> {
        let now = Instant::now();
        if let Some(cur) = self.current.load_full() {
            let fresh = match failed {
                Some(f) => !Arc::ptr_eq(&cur, f),
                None => now < cur.refresh_at,
            };
            if fresh && now < cur.expires_at {
                return Ok(cur);
            }
        }
        if let Some(f) = self.failure.load_full() {
            if now < f.until {
                // The remembered failure, with the time left until the next try.
                let mut e = f.error.clone();
                if let TokenError::Unavailable { retry_after, .. } = &mut e {
                    *retry_after = f.until - now;
                }
                return Err(e);
            }
        }
        match self.fetch(cause).await {
            Ok(t) => {
                if let Some(f) = self.failure.swap(None) {
                    if !matches!(f.error, TokenError::Rejected { .. }) {
                        tracing::info!(tenant = %self.tenant, down_for_s = f.since.elapsed().as_secs(), "token endpoint back");
                    }
                }
                self.consecutive_errors.store(0, Ordering::Relaxed);
                self.current.store(Some(t.clone()));
                self.metrics.token_refresh(Ok(()), cause.as_str());
                tracing::debug!(tenant = %self.tenant, cause = cause.as_str(), "WNS access token refreshed");
                Ok(t)
            }
            Err(e) => {
                let now = Instant::now();
                let previous = self.failure.load_full();
                let (until, since, failures) = match &e {
                    TokenError::Rejected { .. } => {
                        self.metrics.token_refresh(Err(true), cause.as_str());
                        tracing::error!(tenant = %self.tenant, error = %e, "WNS credentials rejected");
                        (now + self.credential_retry_interval, now, 1)
                    }
                    TokenError::Unavailable { retry_after, .. }
                    | TokenError::EndpointDown { retry_after, .. } => {
                        self.metrics.token_refresh(Err(false), cause.as_str());
                        // The outage goes on from the first failure since a success.
                        let (since, failures) = match previous.as_deref() {
                            Some(p) if !matches!(p.error, TokenError::Rejected { .. }) => {
                                (p.since, p.failures.saturating_add(1))
                            }
                            _ => (now, 1),
                        };
                        let down_for = now.saturating_duration_since(since);
                        if down_for >= self.open_after && failures >= 2 {
                            tracing::error!(tenant = %self.tenant, error = %e, down_for_s = down_for.as_secs(), "token endpoint down: breaker open, wakes of this tenant fail at once");
                        } else {
                            tracing::warn!(tenant = %self.tenant, error = %e, "token endpoint unavailable");
                        }
                        (now + *retry_after, since, failures)
                    }
                };
                self.failure.store(Some(Arc::new(Failure {
                    error: e.clone(),
                    until,
                    since,
                    failures,
                })));
                Err(e)
            }
        }
    }

    async fn fetch(&self, cause: RefreshCause) -> Result<Arc<CachedToken>, TokenError> {
        let unavailable = |message: String, retry_after: Duration| TokenError::Unavailable {
            tenant: self.tenant.to_string(),
            message,
            retry_after,
        };
        let errors = self
            .consecutive_errors
            .fetch_add(1, Ordering::Relaxed)
            .min(5);
        let backoff = Duration::from_millis(500u64 << errors);
        let req = self
            .credentials
            .token_request()
            .map_err(|e| TokenError::Rejected {
                tenant: self.tenant.to_string(),
                message: format!("cannot build the token request: {e}"),
            })?;
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.by_cause[cause as usize].fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let timeout = self.transport.config().token_timeout;
        let resp = self
            .transport
            .send_within(req, timeout)
            .await
            .map_err(|e| unavailable(e.message, backoff))?;
        let ra = retry_after(resp.headers());
        match parse_token_response(resp.status().as_u16(), ra, resp.body()) {
            Ok(tok) => {
                // Bounded so that no answer can overflow an Instant, and by
                // what WNS has shown tokens really live (never below a
                // quarter of the announced lifetime).
                let announced = tok.expires_in.min(MAX_TOKEN_LIFETIME);
                let cap = Duration::from_millis(self.lifetime_cap_ms.load(Ordering::Acquire));
                let lifetime = announced.min(cap.max(announced / 4));
                let round_trip = started.elapsed();
                let Some(margin) = refresh_margin(lifetime, round_trip) else {
                    return Err(unavailable(
                        format!(
                            "the token endpoint issued a token that lives {} ms (expires_in), \
                             no longer than twice the {} ms its own request took; \
                             a token must outlive the requests sent with it",
                            lifetime.as_millis(),
                            round_trip.as_millis()
                        ),
                        backoff,
                    ));
                };
                self.consecutive_errors.store(0, Ordering::Relaxed);
                let expires_at = started + lifetime;
                Ok(Arc::new(CachedToken {
                    bearer: crate::wns::bearer(&tok.token).ok(),
                    token: tok.token,
                    expires_at,
                    refresh_at: expires_at - margin,
                    issued_at: started,
                }))
            }
            Err(TokenResponseError::Unavailable {
                status,
                retry_after,
            }) => Err(unavailable(
                format!("HTTP {status}"),
                retry_after.unwrap_or(backoff).max(backoff),
            )),
            Err(e @ TokenResponseError::Rejected { .. }) => Err(TokenError::Rejected {
                tenant: self.tenant.to_string(),
                message: e.to_string(),
            }),
            Err(e @ TokenResponseError::Malformed(_)) => Err(unavailable(e.to_string(), backoff)),
        }
    }
}

/// How long before expiry a token is refreshed: a tenth of its lifetime, but at
/// least twice the token request's round trip (so a refresh finishes before the
/// old token dies), at most half the lifetime and 5 minutes. `None` when the
/// token does not outlive twice its round trip: it would be dead on arrival.
pub fn refresh_margin(lifetime: Duration, round_trip: Duration) -> Option<Duration> {
    let floor = round_trip.saturating_mul(2);
    if lifetime <= floor {
        return None;
    }
    Some(
        (lifetime / 10)
            .max(floor)
            .min(lifetime / 2)
            .min(Duration::from_secs(300)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margin_fits_short_and_long_lifetimes() {
        let ms = Duration::from_millis;
        // A day: capped at 5 minutes.
        assert_eq!(
            refresh_margin(Duration::from_secs(86_400), ms(200)),
            Some(Duration::from_secs(300))
        );
        // 3 s on loopback: a tenth.
        assert_eq!(refresh_margin(ms(3000), ms(2)), Some(ms(300)));
        // 3 s with a slow endpoint: twice the round trip...
        assert_eq!(refresh_margin(ms(3000), ms(400)), Some(ms(800)));
        // ... but never more than half the lifetime.
        assert_eq!(refresh_margin(ms(3000), ms(1400)), Some(ms(1500)));
        // A token that dies before twice its round trip is refused.
        assert_eq!(refresh_margin(ms(3000), ms(1500)), None);
        assert_eq!(refresh_margin(Duration::ZERO, Duration::ZERO), None);
    }
}
