//! The two OAuth token endpoints (legacy `login.live.com/accesstoken.srf` and
//! Entra `login.microsoftonline.com/{tenant}/oauth2/v2.0/token`) and the
//! registry of issued access tokens the push endpoint checks bearers against.

use std::collections::hash_map::{Entry, RandomState};
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use parking_lot::RwLock;
use serde_json::json;

use super::body::{drain, read_limited, BodyRead};
use super::stats::{AppRate, TokenOutcome};
use super::{RespBody, Shared};

/// Scope the legacy endpoint requires.
pub const LEGACY_SCOPE: &str = "notify.windows.com";
/// Scope the Entra endpoint requires.
pub const ENTRA_SCOPE: &str = "https://wns.windows.com/.default";
/// Largest token-request body read.
const MAX_FORM_BODY: usize = 16 * 1024;
/// Length of generated access tokens.
const TOKEN_LEN: usize = 48;
/// Shards of the registry; a power of two.
const SHARDS: usize = 16;
/// A shard is pruned of dead tokens when it grows past this.
const PRUNE_AT: usize = 4096;

/// Which token endpoint a request hit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TokenFlow {
    /// `POST /accesstoken.srf`.
    Legacy,
    /// `POST /{tenant}/oauth2/v2.0/token`.
    Entra {
        /// The `{tenant}` path segment.
        tenant: String,
    },
}

/// One issued access token.
#[derive(Debug)]
pub(crate) struct IssuedToken {
    /// App key the token was issued to (`client_id` or `tenant/client_id`).
    pub app_key: Arc<str>,
    /// That app's push-rate counters.
    pub rate: Arc<AppRate>,
    /// End of the token's lifetime (`None`: too far away to represent).
    expires_at: Option<Instant>,
    /// Registry epoch at issue time; a later epoch means "expired".
    epoch: u64,
}

impl IssuedToken {
    /// Whether the token is still valid in registry epoch `epoch` at `now`.
    fn is_live(&self, epoch: u64, now: Instant) -> bool {
        self.epoch == epoch && self.expires_at.is_none_or(|t| now < t)
    }
}

/// Result of checking a bearer token.
#[derive(Debug)]
pub(crate) enum TokenCheck {
    /// Issued and unexpired.
    Valid(Arc<IssuedToken>),
    /// Issued but past its lifetime or expired by `expire_tokens()`.
    Expired(Arc<IssuedToken>),
    /// Never issued by this emulator.
    Unknown,
}

/// One shard of the registry.
type Shard = RwLock<HashMap<Box<str>, Arc<IssuedToken>>>;

/// Sharded map of issued tokens. `expire_all` bumps an epoch, so it is O(1)
/// and tokens issued afterwards are valid again.
#[derive(Debug)]
pub(crate) struct TokenRegistry {
    shards: Box<[Shard]>,
    hasher: RandomState,
    epoch: AtomicU64,
}

impl Default for TokenRegistry {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            epoch: AtomicU64::new(0),
        }
    }
}

impl TokenRegistry {
    fn shard(&self, token: &str) -> &Shard {
        &self.shards[(self.hasher.hash_one(token) as usize) & (SHARDS - 1)]
    }

    /// Issues a new unique token for `app_key`, valid for `lifetime`.
    pub(crate) fn issue(
        &self,
        app_key: Arc<str>,
        rate: Arc<AppRate>,
        lifetime: Duration,
    ) -> String {
        let now = Instant::now();
        let epoch = self.epoch.load(Ordering::Acquire);
        let expires_at = now.checked_add(lifetime);
        let entry = Arc::new(IssuedToken {
            app_key,
            rate,
            expires_at,
            epoch,
        });
        loop {
            let token = random_token();
            let mut shard = self.shard(&token).write();
            if shard.len() >= PRUNE_AT {
                shard.retain(|_, t| t.is_live(epoch, now));
            }
            if let Entry::Vacant(v) = shard.entry(token.clone().into_boxed_str()) {
                v.insert(entry);
                return token;
            }
        }
    }

    /// Looks a bearer token up.
    pub(crate) fn check(&self, token: &str) -> TokenCheck {
        let Some(entry) = self.shard(token).read().get(token).cloned() else {
            return TokenCheck::Unknown;
        };
        if entry.is_live(self.epoch.load(Ordering::Acquire), Instant::now()) {
            TokenCheck::Valid(entry)
        } else {
            TokenCheck::Expired(entry)
        }
    }

    /// Every token issued so far (for tests that look for leaks).
    pub(crate) fn all(&self) -> Vec<String> {
        self.shards
            .iter()
            .flat_map(|s| s.read().keys().map(|k| k.to_string()).collect::<Vec<_>>())
            .collect()
    }

    /// Makes every token issued so far answer "expired".
    pub(crate) fn expire_all(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }
}

/// A URL-safe random token of [`TOKEN_LEN`] characters.
fn random_token() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    (0..TOKEN_LEN)
        .map(|_| char::from(ALPHABET[fastrand::usize(..ALPHABET.len())]))
        .collect()
}

/// An OAuth error: `400` (or `405`) with a JSON body.
struct OAuthError {
    /// HTTP status.
    status: StatusCode,
    /// The `error` code.
    code: &'static str,
    /// The `error_description`.
    description: String,
}

impl OAuthError {
    /// A 400 with this code and description.
    fn new(code: &'static str, description: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code,
            description: description.into(),
        }
    }
}

/// Handles a token request end to end, counting it in the stats.
pub(crate) async fn handle(
    shared: &Shared,
    req: Request<hyper::body::Incoming>,
    flow: TokenFlow,
) -> Response<RespBody> {
    match issue(shared, req, &flow).await {
        Ok(resp) => {
            shared.stats.token_request(match flow {
                TokenFlow::Legacy => TokenOutcome::Legacy,
                TokenFlow::Entra { .. } => TokenOutcome::Entra,
            });
            resp
        }
        Err(e) => {
            shared.stats.token_request(TokenOutcome::Rejected);
            tracing::debug!(code = e.code, description = %e.description, "token request rejected");
            let body = json!({ "error": e.code, "error_description": e.description });
            let mut resp = json_response(e.status, &body);
            if e.status == StatusCode::METHOD_NOT_ALLOWED {
                resp.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("POST"));
            }
            resp
        }
    }
}

/// Validates a token request and, if it is acceptable, issues a token.
async fn issue(
    shared: &Shared,
    req: Request<hyper::body::Incoming>,
    flow: &TokenFlow,
) -> Result<Response<RespBody>, OAuthError> {
    if req.method() != Method::POST {
        return Err(OAuthError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            code: "invalid_request",
            description: "The token endpoint only accepts POST.".into(),
        });
    }
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| media_type_is(v, "application/x-www-form-urlencoded"));
    if !is_form {
        drain(req.into_body()).await;
        return Err(OAuthError::new(
            "invalid_request",
            "Content-Type must be application/x-www-form-urlencoded.",
        ));
    }
    let body = match read_limited(req.into_body(), MAX_FORM_BODY).await {
        BodyRead::Complete(b) => b,
        BodyRead::TooLarge => {
            return Err(OAuthError::new(
                "invalid_request",
                "Request body too large.",
            ))
        }
        BodyRead::Failed(why) => {
            return Err(OAuthError::new(
                "invalid_request",
                format!("Could not read the request body: {why}"),
            ))
        }
    };
    let mut grant_type = None;
    let mut client_id = None;
    let mut client_secret = None;
    let mut scope = None;
    for (k, v) in form_urlencoded::parse(&body) {
        let slot = match &*k {
            "grant_type" => &mut grant_type,
            "client_id" => &mut client_id,
            "client_secret" => &mut client_secret,
            "scope" => &mut scope,
            _ => continue,
        };
        if slot.is_none() && !v.is_empty() {
            *slot = Some(v.into_owned());
        }
    }
    let missing = |name: &str| {
        OAuthError::new(
            "invalid_request",
            format!("The request body must contain the parameter '{name}'."),
        )
    };
    let grant_type = grant_type.ok_or_else(|| missing("grant_type"))?;
    let client_id = client_id.ok_or_else(|| missing("client_id"))?;
    let client_secret = client_secret.ok_or_else(|| missing("client_secret"))?;
    let scope = scope.ok_or_else(|| missing("scope"))?;
    if grant_type != "client_credentials" {
        return Err(OAuthError::new(
            "unsupported_grant_type",
            format!("The grant type '{grant_type}' is not supported; use client_credentials."),
        ));
    }
    let wanted_scope = match flow {
        TokenFlow::Legacy => LEGACY_SCOPE,
        TokenFlow::Entra { .. } => ENTRA_SCOPE,
    };
    if scope != wanted_scope {
        return Err(OAuthError::new(
            "invalid_scope",
            format!("The provided scope '{scope}' is not valid here; expected '{wanted_scope}'."),
        ));
    }
    let credentials_ok = if shared.apps.is_empty() {
        !client_secret.starts_with("invalid")
    } else {
        shared
            .apps
            .iter()
            .any(|a| a.client_id == client_id && a.client_secret == client_secret)
    };
    if !credentials_ok {
        return Err(OAuthError::new(
            "invalid_client",
            "Invalid client_id or client_secret.",
        ));
    }

    let app_key = match flow {
        TokenFlow::Legacy => client_id,
        TokenFlow::Entra { tenant } => format!("{tenant}/{client_id}"),
    };
    let (app_key, rate) = shared.stats.app(&app_key);
    let valid_for = shared
        .token_lifetime
        .saturating_sub(shared.token_expires_early);
    let token = shared.tokens.issue(app_key, rate, valid_for);
    let secs = shared.token_lifetime.as_secs();
    let body = match flow {
        TokenFlow::Legacy => json!({
            "access_token": token,
            "token_type": "bearer",
            "expires_in": secs,
        }),
        TokenFlow::Entra { .. } => {
            // Entra reports one second less than the lifetime, as a string.
            let s = secs.saturating_sub(1).to_string();
            json!({
                "token_type": "Bearer",
                "expires_in": s,
                "ext_expires_in": s,
                "access_token": token,
            })
        }
    };
    Ok(json_response(StatusCode::OK, &body))
}

/// Whether the media type of a `Content-Type` value (parameters ignored) is `want`.
pub(crate) fn media_type_is(content_type: &str, want: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case(want))
}

/// A JSON response with the no-store cache headers token endpoints send.
fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<RespBody> {
    let mut resp = Response::new(RespBody::from(body.to_string()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_issue_check_expire() {
        let reg = TokenRegistry::default();
        let rate = Arc::new(AppRate::default());
        let t1 = reg.issue(Arc::from("a"), rate.clone(), Duration::from_secs(60));
        assert_eq!(t1.len(), TOKEN_LEN);
        assert!(matches!(reg.check(&t1), TokenCheck::Valid(e) if &*e.app_key == "a"));
        assert!(matches!(reg.check("nope"), TokenCheck::Unknown));
        reg.expire_all();
        assert!(matches!(reg.check(&t1), TokenCheck::Expired(_)));
        let t2 = reg.issue(Arc::from("a"), rate.clone(), Duration::from_secs(60));
        assert_ne!(t1, t2);
        assert!(matches!(reg.check(&t2), TokenCheck::Valid(_)));
        let t3 = reg.issue(Arc::from("a"), rate, Duration::ZERO);
        assert!(matches!(reg.check(&t3), TokenCheck::Expired(_)));
    }

    #[test]
    fn tokens_are_unique_and_url_safe() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let t = random_token();
            assert!(t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            assert!(seen.insert(t));
        }
    }

    #[test]
    fn media_type() {
        assert!(media_type_is(
            "application/x-www-form-urlencoded; charset=utf-8",
            "application/x-www-form-urlencoded"
        ));
        assert!(media_type_is(
            "Application/Octet-Stream",
            "application/octet-stream"
        ));
        assert!(!media_type_is("text/plain", "application/octet-stream"));
    }
}
