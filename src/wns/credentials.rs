//! Credentials and the token endpoints, sans IO: what to POST to get a WNS access
//! token, and how to read the answer.
//!
//! Two flows exist (see `wns-protocol.md` §1):
//! - [`Credentials::PackageSid`]: the flow MDM push documents. The Store app's
//!   Package SID (`ms-app://S-1-15-2-...`) and secret, POSTed to
//!   `https://login.live.com/accesstoken.srf` with scope `notify.windows.com`.
//! - [`Credentials::EntraId`]: a Microsoft Entra app registration, POSTed to
//!   `https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token` with scope
//!   `https://wns.windows.com/.default`.
//!
//! Secrets live in [`Secret`], whose `Debug` and `Display` never show the value.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request};

/// Token endpoint of the Package SID flow.
pub const LIVE_TOKEN_URL: &str = "https://login.live.com/accesstoken.srf";
/// Scope of the Package SID flow.
pub const LIVE_SCOPE: &str = "notify.windows.com";
/// Host of the Entra ID token endpoint.
pub const ENTRA_HOST: &str = "login.microsoftonline.com";
/// Scope of the Entra ID flow.
pub const ENTRA_SCOPE: &str = "https://wns.windows.com/.default";
/// The longest token endpoint answer read, in bytes.
pub const MAX_TOKEN_RESPONSE: usize = 64 * 1024;

/// A secret string (client secret or access token). Its `Debug`/`Display` print
/// `"<redacted>"`; only [`Secret::expose`] gives the value, and only the request
/// builders call it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Box<str>);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into().into_boxed_str())
    }

    /// The secret value. Never log what this returns.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The credentials of one WNS app (one PFN).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// Package SID and secret at login.live.com (the documented MDM flow).
    PackageSid {
        /// `ms-app://S-1-15-2-...`.
        package_sid: String,
        /// The app's client secret.
        secret: Secret,
    },
    /// Microsoft Entra ID client credentials.
    EntraId {
        /// Directory (tenant) id.
        tenant_id: String,
        /// Application (client) id.
        client_id: String,
        /// Client secret.
        secret: Secret,
    },
}

/// A credential that cannot be used as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    /// The Package SID does not start with `ms-app://`.
    #[error("package SID must start with \"ms-app://\" (got {0:?})")]
    PackageSid(String),
    /// A tenant or client id holds characters other than letters, digits, `-`, `.` and `_`.
    #[error("{field} {value:?} may only hold letters, digits, '-', '.' and '_'")]
    BadId {
        /// Which field.
        field: &'static str,
        /// The value given.
        value: String,
    },
    /// The secret is empty.
    #[error("the client secret is empty")]
    EmptySecret,
}

impl Credentials {
    /// Checks the credential's shape (not whether WNS will accept it).
    pub fn validate(&self) -> Result<(), CredentialsError> {
        let id_ok = |field: &'static str, v: &str| {
            if !v.is_empty()
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
            {
                Ok(())
            } else {
                Err(CredentialsError::BadId {
                    field,
                    value: v.to_string(),
                })
            }
        };
        match self {
            Credentials::PackageSid {
                package_sid,
                secret,
            } => {
                if !package_sid.starts_with("ms-app://") || package_sid.len() <= "ms-app://".len() {
                    return Err(CredentialsError::PackageSid(package_sid.clone()));
                }
                if secret.expose().is_empty() {
                    return Err(CredentialsError::EmptySecret);
                }
            }
            Credentials::EntraId {
                tenant_id,
                client_id,
                secret,
            } => {
                id_ok("tenant id", tenant_id)?;
                id_ok("client id", client_id)?;
                if secret.expose().is_empty() {
                    return Err(CredentialsError::EmptySecret);
                }
            }
        }
        Ok(())
    }

    /// The token endpoint URL for this credential.
    pub fn token_url(&self) -> String {
        match self {
            Credentials::PackageSid { .. } => LIVE_TOKEN_URL.to_string(),
            Credentials::EntraId { tenant_id, .. } => {
                format!("https://{ENTRA_HOST}/{tenant_id}/oauth2/v2.0/token")
            }
        }
    }

    /// A short public name for logs: the Package SID or `tenant/client id`. Never the secret.
    pub fn client_label(&self) -> String {
        match self {
            Credentials::PackageSid { package_sid, .. } => package_sid.clone(),
            Credentials::EntraId {
                tenant_id,
                client_id,
                ..
            } => format!("{tenant_id}/{client_id}"),
        }
    }

    /// Builds the token request: a form POST with every value URL-encoded.
    pub fn token_request(&self) -> Result<Request<Bytes>, http::Error> {
        let (client_id, secret, scope) = match self {
            Credentials::PackageSid {
                package_sid,
                secret,
            } => (package_sid.as_str(), secret, LIVE_SCOPE),
            Credentials::EntraId {
                client_id, secret, ..
            } => (client_id.as_str(), secret, ENTRA_SCOPE),
        };
        let body: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "client_credentials")
            .append_pair("client_id", client_id)
            .append_pair("client_secret", secret.expose())
            .append_pair("scope", scope)
            .finish();
        let url = self.token_url();
        Request::builder()
            .method(Method::POST)
            .uri(url)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .header(header::CONTENT_LENGTH, body.len())
            .body(Bytes::from(body))
    }
}

/// An access token with its lifetime as the endpoint gave it.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    /// The bearer token.
    pub token: Secret,
    /// `expires_in` from the answer (the endpoint's own lifetime, read at run time).
    pub expires_in: Duration,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &self.token)
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// Why a token endpoint answer gave no token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenResponseError {
    /// The endpoint refused the credentials (HTTP 400/401 with an OAuth error). Final.
    #[error("token endpoint rejected the credentials: {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Rejected {
        /// OAuth `error` code, e.g. `invalid_client`.
        error: String,
        /// OAuth `error_description`, if any.
        description: Option<String>,
    },
    /// The endpoint failed in a way that may pass (5xx, 429). Retryable.
    #[error("token endpoint answered HTTP {status}")]
    Unavailable {
        /// HTTP status.
        status: u16,
        /// `Retry-After`, if given.
        retry_after: Option<Duration>,
    },
    /// A 2xx answer that is not a usable token document.
    #[error("token endpoint answer is malformed: {0}")]
    Malformed(String),
}

impl TokenResponseError {
    /// True when asking again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, TokenResponseError::Unavailable { .. })
    }
}

/// The default lifetime assumed when an answer has no `expires_in` (WNS documents 24 h).
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(86_400);

/// Reads a token endpoint answer. `expires_in` may be a JSON number or a string.
pub fn parse_token_response(
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Result<AccessToken, TokenResponseError> {
    #[derive(serde::Deserialize)]
    struct Ok_ {
        access_token: Option<String>,
        token_type: Option<String>,
        expires_in: Option<serde_json::Value>,
    }
    #[derive(serde::Deserialize)]
    struct Err_ {
        error: Option<String>,
        error_description: Option<String>,
    }
    match status {
        200..=299 => {
            let doc: Ok_ = serde_json::from_slice(body)
                .map_err(|e| TokenResponseError::Malformed(format!("not JSON: {e}")))?;
            let token = doc
                .access_token
                .filter(|t| !t.is_empty())
                .ok_or_else(|| TokenResponseError::Malformed("no access_token".into()))?;
            if let Some(tt) = doc.token_type {
                if !tt.eq_ignore_ascii_case("bearer") {
                    return Err(TokenResponseError::Malformed(format!(
                        "token_type {tt:?} is not bearer"
                    )));
                }
            }
            let expires_in = match doc.expires_in {
                None | Some(serde_json::Value::Null) => DEFAULT_TOKEN_LIFETIME,
                Some(serde_json::Value::Number(n)) => {
                    n.as_u64().map(Duration::from_secs).ok_or_else(|| {
                        TokenResponseError::Malformed(format!(
                            "expires_in {n} is not a whole number"
                        ))
                    })?
                }
                Some(serde_json::Value::String(s)) => s
                    .trim()
                    .parse::<u64>()
                    .map(Duration::from_secs)
                    .map_err(|_| {
                        TokenResponseError::Malformed(format!(
                            "expires_in {s:?} is not a whole number"
                        ))
                    })?,
                Some(other) => {
                    return Err(TokenResponseError::Malformed(format!(
                        "expires_in has type {other}"
                    )))
                }
            };
            Ok(AccessToken {
                token: Secret::new(token),
                expires_in,
            })
        }
        400 | 401 | 403 => {
            let doc: Option<Err_> = serde_json::from_slice(body).ok();
            let (error, description) = match doc {
                Some(d) => (
                    d.error.unwrap_or_else(|| format!("http_{status}")),
                    d.error_description,
                ),
                None => (format!("http_{status}"), None),
            };
            Err(TokenResponseError::Rejected {
                error,
                description: description.map(|d| truncate(&d, 300)),
            })
        }
        _ => Err(TokenResponseError::Unavailable {
            status,
            retry_after,
        }),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid() -> Credentials {
        Credentials::PackageSid {
            package_sid: "ms-app://S-1-15-2-2972962901-2322836549".into(),
            secret: Secret::new("s3cr3t/+&="),
        }
    }

    #[test]
    fn secret_never_in_debug() {
        let c = sid();
        let dbg = format!(
            "{c:?} {:?}",
            AccessToken {
                token: Secret::new("tok123"),
                expires_in: Duration::ZERO
            }
        );
        assert!(!dbg.contains("s3cr3t"), "{dbg}");
        assert!(!dbg.contains("tok123"), "{dbg}");
        assert!(dbg.contains("redacted"));
    }

    #[test]
    fn live_form_is_url_encoded() {
        let req = sid().token_request().unwrap();
        assert_eq!(req.uri(), "https://login.live.com/accesstoken.srf");
        assert_eq!(req.uri().host(), Some("login.live.com"));
        assert!(
            req.headers().get(header::HOST).is_none(),
            "the transport adds Host"
        );
        let body = std::str::from_utf8(req.body()).unwrap();
        assert_eq!(
            body,
            "grant_type=client_credentials&client_id=ms-app%3A%2F%2FS-1-15-2-2972962901-2322836549\
             &client_secret=s3cr3t%2F%2B%26%3D&scope=notify.windows.com"
        );
        assert_eq!(
            req.headers()[header::CONTENT_LENGTH],
            body.len().to_string().as_str()
        );
    }

    #[test]
    fn entra_form_and_url() {
        let c = Credentials::EntraId {
            tenant_id: "contoso-1".into(),
            client_id: "abc".into(),
            secret: Secret::new("x"),
        };
        c.validate().unwrap();
        let req = c.token_request().unwrap();
        assert_eq!(
            req.uri(),
            "https://login.microsoftonline.com/contoso-1/oauth2/v2.0/token"
        );
        let body = std::str::from_utf8(req.body()).unwrap();
        assert!(
            body.ends_with("scope=https%3A%2F%2Fwns.windows.com%2F.default"),
            "{body}"
        );
    }

    #[test]
    fn validate_shapes() {
        assert!(sid().validate().is_ok());
        let bad = Credentials::PackageSid {
            package_sid: "S-1-15".into(),
            secret: Secret::new("x"),
        };
        assert!(matches!(
            bad.validate(),
            Err(CredentialsError::PackageSid(_))
        ));
        let bad = Credentials::EntraId {
            tenant_id: "a/../b".into(),
            client_id: "c".into(),
            secret: Secret::new("x"),
        };
        assert!(matches!(
            bad.validate(),
            Err(CredentialsError::BadId { .. })
        ));
        let bad = Credentials::PackageSid {
            package_sid: "ms-app://S".into(),
            secret: Secret::new(""),
        };
        assert_eq!(bad.validate(), Err(CredentialsError::EmptySecret));
    }

    #[test]
    fn expires_in_number_or_string() {
        let t = parse_token_response(
            200,
            None,
            br#"{"access_token":"a","token_type":"bearer","expires_in":86400}"#,
        )
        .unwrap();
        assert_eq!(t.expires_in, Duration::from_secs(86400));
        let t = parse_token_response(
            200,
            None,
            br#"{"token_type":"Bearer","expires_in":"86399","access_token":"b"}"#,
        )
        .unwrap();
        assert_eq!(t.expires_in, Duration::from_secs(86399));
        assert_eq!(t.token.expose(), "b");
        let t = parse_token_response(200, None, br#"{"access_token":"c"}"#).unwrap();
        assert_eq!(t.expires_in, DEFAULT_TOKEN_LIFETIME);
        assert!(matches!(
            parse_token_response(200, None, br#"{"access_token":"c","expires_in":"soon"}"#),
            Err(TokenResponseError::Malformed(_))
        ));
        assert!(matches!(
            parse_token_response(200, None, b"<html>"),
            Err(TokenResponseError::Malformed(_))
        ));
        assert!(matches!(
            parse_token_response(200, None, br#"{"expires_in":5}"#),
            Err(TokenResponseError::Malformed(_))
        ));
    }

    #[test]
    fn errors_are_classified() {
        let e = parse_token_response(
            400,
            None,
            br#"{"error":"invalid_client","error_description":"bad secret"}"#,
        )
        .unwrap_err();
        assert_eq!(
            e,
            TokenResponseError::Rejected {
                error: "invalid_client".into(),
                description: Some("bad secret".into())
            }
        );
        assert!(!e.is_retryable());
        let e = parse_token_response(503, Some(Duration::from_secs(3)), b"").unwrap_err();
        assert!(e.is_retryable());
        let e = parse_token_response(400, None, b"nope").unwrap_err();
        assert!(matches!(e, TokenResponseError::Rejected { ref error, .. } if error == "http_400"));
    }
}
