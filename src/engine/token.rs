//! [`TokenCache`]: one WNS access token per tenant, read lock-free by every worker.
//!
//! Invariants:
//! - Readers `load` the current token through an `ArcSwap`; they never lock.
//! - At most one refresh runs at a time per tenant (single flight). A caller that
//!   waited for the refresh lock re-checks the current token first and returns it
//!   if someone else already refreshed.
//! - After a 401, [`TokenCache::refresh_after_reject`] fetches a new token only if
//!   the token that failed is *still* the current one; a thousand concurrent 401s
//!   for the same stale token cause exactly one token request.
//! - The token is refreshed ahead of expiry (at `expires_in` minus a margin of
//!   10% capped at 5 minutes), in the background, while the old one stays in use.
//! - A rejected credential (token endpoint 400/401/403) is remembered for
//!   `credential_retry_interval`; during that time every caller gets the same
//!   error at once, without asking the endpoint again (no retry storm). An
//!   unreachable endpoint is remembered for a short, growing interval likewise.

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
}

/// The longest token lifetime believed, whatever `expires_in` says.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(30 * 86_400);

struct Failure {
    error: TokenError,
    until: Instant,
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
    consecutive_errors: AtomicU32,
    requests: AtomicU64,
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
    /// A cache with no token yet; the first [`TokenCache::get`] fetches one.
    pub fn new(
        tenant: Arc<str>,
        credentials: Credentials,
        transport: Transport,
        metrics: TenantMetrics,
        credential_retry_interval: Duration,
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
            consecutive_errors: AtomicU32::new(0),
            requests: AtomicU64::new(0),
        }
    }

    /// How many token requests this cache has sent.
    pub fn requests_sent(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// A valid token: the current one (lock-free), or a fresh one when there is none
    /// or it expired. Starts a background refresh when the token nears expiry.
    pub async fn get(self: &Arc<Self>) -> Result<Arc<CachedToken>, TokenError> {
        let now = Instant::now();
        if let Some(t) = self.current.load_full() {
            if now < t.refresh_at {
                return Ok(t);
            }
            if now < t.expires_at {
                if let Ok(guard) = self.refresh.clone().try_lock_owned() {
                    let me = self.clone();
                    tokio::spawn(async move {
                        let _one = guard;
                        if let Err(e) = me.fetch_unless_fresh(None).await {
                            tracing::warn!(tenant = %me.tenant, error = %e, "background token refresh failed");
                        }
                    });
                }
                return Ok(t);
            }
        }
        // The slow path is boxed so that the hot path's future stays small.
        Box::pin(async {
            let _one = self.refresh.lock().await;
            self.fetch_unless_fresh(None).await
        })
        .await
    }

    /// After a 401 with `failed`: a new token, fetched only if `failed` is still current.
    pub async fn refresh_after_reject(
        self: &Arc<Self>,
        failed: &Arc<CachedToken>,
    ) -> Result<Arc<CachedToken>, TokenError> {
        let _one = self.refresh.lock().await;
        self.fetch_unless_fresh(Some(failed)).await
    }

    /// Called with the refresh lock held.
    async fn fetch_unless_fresh(
        &self,
        failed: Option<&Arc<CachedToken>>,
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
                return Err(f.error.clone());
            }
        }
        match self.fetch().await {
            Ok(t) => {
                self.failure.store(None);
                self.consecutive_errors.store(0, Ordering::Relaxed);
                self.current.store(Some(t.clone()));
                self.metrics.token_refresh(Ok(()));
                tracing::debug!(tenant = %self.tenant, "WNS access token refreshed");
                Ok(t)
            }
            Err(e) => {
                let until = match &e {
                    TokenError::Rejected { .. } => {
                        self.metrics.token_refresh(Err(true));
                        tracing::error!(tenant = %self.tenant, error = %e, "WNS credentials rejected");
                        now + self.credential_retry_interval
                    }
                    TokenError::Unavailable { retry_after, .. } => {
                        self.metrics.token_refresh(Err(false));
                        tracing::warn!(tenant = %self.tenant, error = %e, "token endpoint unavailable");
                        now + *retry_after
                    }
                };
                self.failure.store(Some(Arc::new(Failure {
                    error: e.clone(),
                    until,
                })));
                Err(e)
            }
        }
    }

    async fn fetch(&self) -> Result<Arc<CachedToken>, TokenError> {
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
                self.consecutive_errors.store(0, Ordering::Relaxed);
                // Bounded so that no answer can overflow an Instant.
                let lifetime = tok.expires_in.min(MAX_TOKEN_LIFETIME);
                let margin = (lifetime / 10).min(Duration::from_secs(300));
                let expires_at = started + lifetime;
                Ok(Arc::new(CachedToken {
                    bearer: crate::wns::bearer(&tok.token).ok(),
                    token: tok.token,
                    expires_at,
                    refresh_at: expires_at - margin,
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
