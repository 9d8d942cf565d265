//! Connecting to NATS from a config table (`[consume]`, `[budget]`): the
//! comma-separated URL list and credentials from the environment only.

use std::time::Duration;

/// The servers of a comma-separated `url` of table `[table]`.
pub fn server_addrs(url: &str, table: &str) -> Result<Vec<async_nats::ServerAddr>, String> {
    let mut addrs = Vec::new();
    for u in url.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let a = u
            .parse::<async_nats::ServerAddr>()
            .map_err(|e| format!("[{table}] url: {u:?} is not a NATS server address: {e}"))?;
        addrs.push(a);
    }
    if addrs.is_empty() {
        return Err(format!("[{table}] url names no NATS server"));
    }
    Ok(addrs)
}

/// Why a connection could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// A setting is wrong (the message names the table and key).
    #[error("{0}")]
    Settings(String),
    /// NATS could not be reached.
    #[error("cannot connect to NATS at {url}: {reason}")]
    Unreachable {
        /// The URL list.
        url: String,
        /// Why.
        reason: String,
    },
}

/// Connects to `url` with the token or user and password named by the
/// environment variables, as connection `name`. Errors name the table's key.
pub async fn connect(
    url: &str,
    token_env: Option<&str>,
    user: Option<&str>,
    password_env: Option<&str>,
    name: String,
    table: &str,
) -> Result<async_nats::Client, ConnectError> {
    use ConnectError::Settings;
    let mut opts = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5));
    if let Some(var) = token_env {
        let t = std::env::var(var)
            .map_err(|_| Settings(format!("[{table}] token_env: {var} is not set")))?;
        opts = opts.token(t);
    }
    match (user, password_env) {
        (Some(u), Some(var)) => {
            let p = std::env::var(var)
                .map_err(|_| Settings(format!("[{table}] password_env: {var} is not set")))?;
            opts = opts.user_and_password(u.to_string(), p);
        }
        (None, None) => {}
        _ => {
            return Err(Settings(format!(
                "[{table}] user and password_env go together"
            )))
        }
    }
    let addrs = server_addrs(url, table).map_err(Settings)?;
    opts.connect(addrs)
        .await
        .map_err(|e| ConnectError::Unreachable {
            url: url.to_string(),
            reason: e.to_string(),
        })
}
