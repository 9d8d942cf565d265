//! The TOML configuration file: tenants (credentials of either flow, rate
//! limits), transport, retry policy and push defaults, turned into an
//! [`EngineBuilder`].
//!
//! - Secrets are never in the file or on the command line: each tenant names an
//!   environment variable (`secret_env`) or a file (`secret_file`).
//! - `FLEETWAKE_SECTION__KEY[__KEY]` environment variables override the file,
//!   e.g. `FLEETWAKE_TRANSPORT__HTTP=http1` or
//!   `FLEETWAKE_TENANTS__CONTOSO__RATE_PER_SECOND=50` (names are matched
//!   case-insensitively, `_` also matching `-`). Values are read as TOML
//!   (`50`, `true`, `["a","b"]`), else as a string.
//! - Every error says where: `fleetwake.toml:12:5: ...`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::IgnoredAny;
use serde::Deserialize;
use toml::Spanned;

use crate::engine::{EngineBuilder, EngineConfig, RateLimit, RetryPolicy, TenantConfig};
use crate::transport::{HttpPolicy, ResolveOverride, TransportConfig};
use crate::wns::{CachePolicy, Credentials, Priority, PushOptions, Secret};

/// A configuration error, with the place it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or `<env>` for an override).
    pub path: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
            if let Some(c) = self.column {
                write!(f, ":{c}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// `[engine]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSection {
    /// Shard count (default: 2 × cores).
    pub shards: Option<usize>,
    /// Queue capacity per shard.
    pub queue_per_shard: Option<usize>,
    /// Seconds a rejected credential is remembered before asking again.
    pub credential_retry_interval_s: Option<u64>,
    /// Seconds a token endpoint or channel host must fail before its breaker
    /// opens (default 10).
    pub breaker_open_after_s: Option<u64>,
    /// At an open breaker: `fail` (end the wake at once, retryable; default)
    /// or `wait` (wait for the breaker, up to the deadline).
    pub when_open: Option<crate::engine::WhenOpen>,
    /// Threads of the engine's own, each owning a share of the shards and of
    /// the connections (default 0: the shards run on the process's runtime).
    pub lanes: Option<usize>,
    /// How the lanes' threads are scheduled: `batch` (Linux `SCHED_BATCH`,
    /// the default) or `normal`.
    pub lane_scheduling: Option<crate::engine::LaneScheduling>,
}

/// `[push]`: defaults for every wake.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushSection {
    /// `cache` (default) or `no-cache`.
    #[serde(default = "default_cache")]
    pub cache_policy: CachePolicy,
    /// `X-WNS-TTL` in seconds; absent means none.
    pub ttl_s: Option<u64>,
    /// `X-WNS-RequestForStatus`.
    #[serde(default)]
    pub request_for_status: bool,
    /// `X-WNS-PRIORITY`: high, medium, low, very-low.
    pub priority: Option<Priority>,
}

fn default_cache() -> CachePolicy {
    CachePolicy::Cache
}

impl Default for PushSection {
    fn default() -> Self {
        PushSection {
            cache_policy: CachePolicy::Cache,
            ttl_s: None,
            request_for_status: false,
            priority: None,
        }
    }
}

impl PushSection {
    /// The push options these defaults describe.
    pub fn options(&self) -> PushOptions {
        PushOptions {
            cache_policy: self.cache_policy,
            ttl: self.ttl_s.map(Duration::from_secs),
            request_for_status: self.request_for_status,
            priority: self.priority,
        }
    }
}

/// HTTP version policy as written in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpSetting {
    /// Offer h2 and http/1.1.
    #[default]
    Auto,
    /// Only HTTP/1.1.
    Http1,
    /// Only HTTP/2.
    Http2,
}

/// `[transport]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransportSection {
    /// `auto`, `http1` or `http2`.
    #[serde(default)]
    pub http: HttpSetting,
    /// `own` (the project's HTTP codecs, default) or `crates` (h2 and hyper).
    #[serde(default)]
    pub stack: crate::transport::HttpStack,
    /// HTTP/2 connections per host.
    pub h2_connections_per_host: Option<usize>,
    /// HTTP/1.1 connections per host.
    pub h1_connections_per_host: Option<usize>,
    /// Connect timeout, ms.
    pub connect_timeout_ms: Option<u64>,
    /// TLS handshake timeout, ms.
    pub tls_timeout_ms: Option<u64>,
    /// Request timeout, ms.
    pub request_timeout_ms: Option<u64>,
    /// Resolve overrides, `HOST=IP:PORT` or `*.DOMAIN=IP:PORT`.
    #[serde(default)]
    pub resolve: Vec<ResolveOverride>,
    /// Extra CA certificate files (PEM), relative to the config file.
    #[serde(default)]
    pub extra_ca_files: Vec<PathBuf>,
    /// Trust the public WebPKI roots (default true).
    pub webpki_roots: Option<bool>,
}

/// `[metrics]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Serve Prometheus `/metrics` on this address.
    pub prometheus_listen: Option<SocketAddr>,
}

/// One `[tenants.NAME]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSection {
    /// The PFN the devices were given (tenants sharing one share its rate limit).
    pub pfn: Option<String>,
    /// Package SID flow: `ms-app://S-1-15-2-...`.
    pub package_sid: Option<String>,
    /// Entra ID flow: directory (tenant) id.
    pub entra_tenant_id: Option<String>,
    /// Entra ID flow: application (client) id.
    pub client_id: Option<String>,
    /// Environment variable holding the secret.
    pub secret_env: Option<String>,
    /// File holding the secret (trailing newline trimmed), relative to the config file.
    pub secret_file: Option<PathBuf>,
    /// Refused: secrets never go in the config file.
    pub secret: Option<toml::Value>,
    /// Refused: same.
    pub client_secret: Option<toml::Value>,
    /// Sustained requests per second for this PFN (default 200).
    pub rate_per_second: Option<u32>,
    /// Burst (default rate / 10).
    pub burst: Option<u32>,
    /// Requests in flight for this tenant (default 256).
    pub max_in_flight: Option<usize>,
    /// Wakes accepted and not yet final (default 4096).
    pub max_pending: Option<usize>,
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `[engine]`.
    #[serde(default)]
    pub engine: EngineSection,
    /// `[retry]`.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// `[push]`.
    #[serde(default)]
    pub push: PushSection,
    /// `[transport]`.
    #[serde(default)]
    pub transport: TransportSection,
    /// `[metrics]`.
    #[serde(default)]
    pub metrics: MetricsSection,
    /// `[tenants.NAME]`.
    #[serde(default)]
    pub tenants: BTreeMap<String, Spanned<TenantSection>>,
    /// `[campaign]`, read by the campaign command.
    pub campaign: Option<toml::Value>,
    /// `[consume]`, read by the queue consumer.
    pub consume: Option<toml::Value>,
    /// `[serve]`, read by the HTTP API.
    pub serve: Option<toml::Value>,
    /// `[budget]`, where the PFN budget shared by every instance lives.
    pub budget: Option<toml::Value>,
}

/// A loaded, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// The parsed sections.
    pub file: FileConfig,
    text: String,
}

impl Config {
    /// Reads `path` and applies `FLEETWAKE_*` overrides from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            line: None,
            column: None,
            message: format!("cannot read the config file: {e}"),
        })?;
        Self::from_str_with_env(path, &text, std::env::vars())
    }

    /// Parses `text` (as if read from `path`) with the given environment.
    pub fn from_str_with_env(
        path: &Path,
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let err_at = |span: Option<std::ops::Range<usize>>, message: String| {
            let (line, column) = span
                .map(|s| line_col(text, s.start))
                .unwrap_or((None, None));
            ConfigError {
                path: path.to_path_buf(),
                line,
                column,
                message,
            }
        };
        let mut file: FileConfig =
            toml::from_str(text).map_err(|e| err_at(e.span(), e.message().trim().to_string()))?;
        let overrides: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("FLEETWAKE_") && k.contains("__"))
            .collect();
        if !overrides.is_empty() {
            let mut table: toml::Table = toml::from_str(text)
                .map_err(|e| err_at(e.span(), e.message().trim().to_string()))?;
            for (k, v) in &overrides {
                apply_override(&mut table, k, v).map_err(|m| ConfigError {
                    path: PathBuf::from(format!("<env {k}>")),
                    line: None,
                    column: None,
                    message: m,
                })?;
            }
            let merged = toml::to_string(&table).map_err(|e| err_at(None, e.to_string()))?;
            file = toml::from_str(&merged).map_err(|e| ConfigError {
                path: PathBuf::from("<env FLEETWAKE_* overrides>"),
                line: None,
                column: None,
                message: e.message().trim().to_string(),
            })?;
        }
        if file.tenants.is_empty() {
            return Err(err_at(
                None,
                "no [tenants.NAME] table: at least one tenant is needed".into(),
            ));
        }
        let cfg = Config {
            path: path.to_path_buf(),
            file,
            text: text.to_string(),
        };
        for (name, t) in &cfg.file.tenants {
            cfg.check_tenant(name, t)?;
        }
        Ok(cfg)
    }

    fn tenant_err(&self, t: &Spanned<TenantSection>, name: &str, message: String) -> ConfigError {
        let (line, column) = line_col(&self.text, t.span().start);
        ConfigError {
            path: self.path.clone(),
            line,
            column,
            message: format!("tenant `{name}`: {message}"),
        }
    }

    fn check_tenant(&self, name: &str, t: &Spanned<TenantSection>) -> Result<(), ConfigError> {
        let s = t.get_ref();
        let err = |m: &str| self.tenant_err(t, name, m.to_string());
        if s.secret.is_some() || s.client_secret.is_some() {
            return Err(err("secrets never go in the config file; use secret_env = \"VAR\" or secret_file = \"path\""));
        }
        match (&s.package_sid, &s.entra_tenant_id, &s.client_id) {
            (Some(_), None, None) | (None, Some(_), Some(_)) => {}
            (Some(_), _, _) => return Err(err("give either package_sid, or entra_tenant_id with client_id, not both")),
            _ => return Err(err("needs package_sid (Package SID flow) or entra_tenant_id and client_id (Entra ID flow)")),
        }
        match (&s.secret_env, &s.secret_file) {
            (Some(_), None) | (None, Some(_)) => {}
            (Some(_), Some(_)) => return Err(err("give secret_env or secret_file, not both")),
            (None, None) => {
                return Err(err("needs secret_env = \"VAR\" or secret_file = \"path\""))
            }
        }
        if s.rate_per_second == Some(0) {
            return Err(err("rate_per_second must be at least 1"));
        }
        Ok(())
    }

    /// Resolves a path written in the file relative to the file's folder.
    pub fn relative(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.path.parent().unwrap_or(Path::new(".")).join(p)
        }
    }

    /// Reads a tenant's secret from its env var or file.
    pub fn tenant_secret(&self, name: &str) -> Result<Secret, ConfigError> {
        let Some(t) = self.file.tenants.get(name) else {
            return Err(ConfigError {
                path: self.path.clone(),
                line: None,
                column: None,
                message: format!("no tenant `{name}`"),
            });
        };
        let s = t.get_ref();
        if let Some(var) = &s.secret_env {
            return match std::env::var(var) {
                Ok(v) if !v.is_empty() => Ok(Secret::new(v)),
                Ok(_) => {
                    Err(self.tenant_err(t, name, format!("environment variable {var} is empty")))
                }
                Err(_) => {
                    Err(self.tenant_err(t, name, format!("environment variable {var} is not set")))
                }
            };
        }
        if let Some(f) = &s.secret_file {
            let path = self.relative(f);
            return match std::fs::read_to_string(&path) {
                Ok(v) if !v.trim_end_matches(['\r', '\n']).is_empty() => {
                    Ok(Secret::new(v.trim_end_matches(['\r', '\n'])))
                }
                Ok(_) => Err(self.tenant_err(
                    t,
                    name,
                    format!("secret file {} is empty", path.display()),
                )),
                Err(e) => Err(self.tenant_err(
                    t,
                    name,
                    format!("cannot read secret file {}: {e}", path.display()),
                )),
            };
        }
        Err(self.tenant_err(t, name, "no secret source".into()))
    }

    /// The tenant configurations, with secrets read.
    pub fn tenants(&self) -> Result<Vec<TenantConfig>, ConfigError> {
        let mut out = Vec::new();
        for (name, t) in &self.file.tenants {
            let s = t.get_ref();
            let secret = self.tenant_secret(name)?;
            let credentials = match (&s.package_sid, &s.entra_tenant_id, &s.client_id) {
                (Some(sid), _, _) => Credentials::PackageSid {
                    package_sid: sid.clone(),
                    secret,
                },
                (None, Some(tid), Some(cid)) => Credentials::EntraId {
                    tenant_id: tid.clone(),
                    client_id: cid.clone(),
                    secret,
                },
                _ => return Err(self.tenant_err(t, name, "no credentials".into())),
            };
            credentials
                .validate()
                .map_err(|e| self.tenant_err(t, name, e.to_string()))?;
            let mut rl = RateLimit::default();
            if let Some(r) = s.rate_per_second {
                rl = RateLimit::per_second(r);
            }
            if let Some(b) = s.burst {
                rl = rl.with_burst(b);
            }
            let mut tc = TenantConfig::new(name.clone(), credentials).rate_limit(rl);
            if let Some(p) = &s.pfn {
                tc = tc.pfn(p.clone());
            }
            if let Some(n) = s.max_in_flight {
                tc = tc.max_in_flight(n);
            }
            if let Some(n) = s.max_pending {
                tc = tc.max_pending(n);
            }
            out.push(tc);
        }
        Ok(out)
    }

    /// The transport configuration (reads the extra CA files).
    pub fn transport(&self) -> Result<TransportConfig, ConfigError> {
        let t = &self.file.transport;
        let mut tc = TransportConfig {
            http: match t.http {
                HttpSetting::Auto => HttpPolicy::Auto,
                HttpSetting::Http1 => HttpPolicy::Http1Only,
                HttpSetting::Http2 => HttpPolicy::Http2Only,
            },
            stack: t.stack,
            resolve: t.resolve.clone(),
            ..TransportConfig::default()
        };
        if let Some(n) = t.h2_connections_per_host {
            tc.h2_connections_per_host = n.max(1);
        }
        if let Some(n) = t.h1_connections_per_host {
            tc.h1_connections_per_host = n.max(1);
        }
        if let Some(ms) = t.connect_timeout_ms {
            tc.connect_timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = t.tls_timeout_ms {
            tc.tls_timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = t.request_timeout_ms {
            tc.request_timeout = Duration::from_millis(ms);
        }
        if let Some(w) = t.webpki_roots {
            tc.webpki_roots = w;
        }
        for f in &t.extra_ca_files {
            let p = self.relative(f);
            tc.add_ca_file(&p).map_err(|e| ConfigError {
                path: self.path.clone(),
                line: self
                    .text
                    .find("extra_ca_files")
                    .map(|i| line_col(&self.text, i).0)
                    .unwrap_or(None),
                column: None,
                message: e.to_string(),
            })?;
        }
        Ok(tc)
    }

    /// An engine builder with every tenant, the transport and the retry policy.
    pub fn engine_builder(&self) -> Result<EngineBuilder, ConfigError> {
        self.engine_builder_split(1)
    }

    /// [`Config::engine_builder`] for one of `instances` processes that share
    /// each PFN's rate budget: every tenant's `rate_per_second` and `burst` are
    /// divided by `instances` (rounded down). Together the instances then start
    /// at most `rate_per_second + burst` requests per PFN in any one-second
    /// window, as one process would. A rate or burst smaller than `instances`
    /// cannot be split that way and is an error.
    pub fn engine_builder_split(&self, instances: u32) -> Result<EngineBuilder, ConfigError> {
        let share = instances.max(1);
        let mut ec = EngineConfig {
            retry: self.file.retry.clone(),
            ..EngineConfig::default()
        };
        if let Some(n) = self.file.engine.lanes {
            ec.lanes = n;
        }
        if let Some(s) = self.file.engine.lane_scheduling {
            ec.lane_scheduling = s;
        }
        if let Some(n) = self.file.engine.shards {
            ec.shards = n.max(1);
        }
        if let Some(n) = self.file.engine.queue_per_shard {
            ec.queue_per_shard = n.max(1);
        }
        if let Some(s) = self.file.engine.credential_retry_interval_s {
            ec.credential_retry_interval = Duration::from_secs(s);
        }
        if let Some(s) = self.file.engine.breaker_open_after_s {
            ec.breaker.open_after = Duration::from_secs(s.clamp(1, 3600));
        }
        if let Some(w) = self.file.engine.when_open {
            ec.breaker.when_open = w;
        }
        let mut b = EngineBuilder::default()
            .config(ec)
            .transport(self.transport()?);
        for mut t in self.tenants()? {
            if share > 1 {
                let r = t.rate_limit;
                if r.per_second.get() < share || r.burst.get() < share {
                    let message = format!(
                        "rate_per_second ({}) and burst ({}) must each be at least the number \
                         of instances sharing them ({share}); otherwise the instances together \
                         would send more than the PFN's budget",
                        r.per_second, r.burst
                    );
                    return Err(match self.file.tenants.get(&t.name) {
                        Some(sec) => self.tenant_err(sec, &t.name, message),
                        None => ConfigError {
                            path: self.path.clone(),
                            line: None,
                            column: None,
                            message: format!("tenant `{}`: {message}", t.name),
                        },
                    });
                }
                t.rate_limit = RateLimit::per_second(r.per_second.get() / share)
                    .with_burst(r.burst.get() / share);
            }
            b = b.tenant(t);
        }
        Ok(b)
    }

    /// The push defaults.
    pub fn push_options(&self) -> PushOptions {
        self.file.push.options()
    }

    /// Tenant names.
    pub fn tenant_names(&self) -> impl Iterator<Item = &str> {
        self.file.tenants.keys().map(String::as_str)
    }

    /// A raw extra section (`[consume]`, `[serve]`, `[campaign]`) deserialized.
    pub fn section<T: serde::de::DeserializeOwned + Default>(
        &self,
        name: &str,
    ) -> Result<T, ConfigError> {
        let raw = match name {
            "campaign" => &self.file.campaign,
            "consume" => &self.file.consume,
            "serve" => &self.file.serve,
            "budget" => &self.file.budget,
            _ => &None,
        };
        match raw {
            None => Ok(T::default()),
            Some(v) => v.clone().try_into().map_err(|e: toml::de::Error| {
                // The raw value has no positions: parse the file's text again
                // for the section alone to point at the offending key.
                let from_text = match name {
                    "campaign" => section_span::<T, IgnoredAny, IgnoredAny, IgnoredAny>(&self.text),
                    "consume" => section_span::<IgnoredAny, T, IgnoredAny, IgnoredAny>(&self.text),
                    "serve" => section_span::<IgnoredAny, IgnoredAny, T, IgnoredAny>(&self.text),
                    _ => section_span::<IgnoredAny, IgnoredAny, IgnoredAny, T>(&self.text),
                };
                let (path, span) = match from_text {
                    Some(span) => (self.path.clone(), Some(span)),
                    // The file is fine: an environment override broke it.
                    None if self.text.contains(&format!("[{name}")) => {
                        (PathBuf::from("<env>"), None)
                    }
                    None => (self.path.clone(), None),
                };
                let (line, column) = span
                    .map(|s| line_col(&self.text, s.start))
                    .unwrap_or((None, None));
                ConfigError {
                    path,
                    line,
                    column,
                    message: format!("[{name}]: {}", e.message().trim()),
                }
            }),
        }
    }
}

/// The extra sections, each either the wanted type or ignored (only parsed
/// for the error's position, so the fields are never read).
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Sections<A, B, C, D> {
    #[serde(default = "none")]
    campaign: Option<A>,
    #[serde(default = "none")]
    consume: Option<B>,
    #[serde(default = "none")]
    serve: Option<C>,
    #[serde(default = "none")]
    budget: Option<D>,
}

fn none<T>() -> Option<T> {
    None
}

/// Where in `text` the one typed section of `Sections<A, B, C>` fails to parse.
fn section_span<A, B, C, D>(text: &str) -> Option<std::ops::Range<usize>>
where
    A: serde::de::DeserializeOwned,
    B: serde::de::DeserializeOwned,
    C: serde::de::DeserializeOwned,
    D: serde::de::DeserializeOwned,
{
    toml::from_str::<Sections<A, B, C, D>>(text)
        .err()
        .and_then(|e| e.span())
}

fn line_col(text: &str, offset: usize) -> (Option<usize>, Option<usize>) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let col = offset
        - before
            .iter()
            .rposition(|&b| b == b'\n')
            .map(|i| i + 1)
            .unwrap_or(0)
        + 1;
    (Some(line), Some(col))
}

fn apply_override(table: &mut toml::Table, key: &str, value: &str) -> Result<(), String> {
    let path: Vec<String> = key["FLEETWAKE_".len()..]
        .split("__")
        .map(|s| s.to_ascii_lowercase())
        .collect();
    if path.iter().any(|p| p.is_empty()) {
        return Err("empty name between '__'".into());
    }
    let parsed: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    let mut cur = table;
    for (i, part) in path.iter().enumerate() {
        let existing = cur
            .keys()
            .find(|k| k.to_ascii_lowercase().replace('-', "_") == part.replace('-', "_"))
            .cloned()
            .unwrap_or_else(|| part.clone());
        if i + 1 == path.len() {
            cur.insert(existing, parsed);
            return Ok(());
        }
        let next = cur
            .entry(existing.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = next
            .as_table_mut()
            .ok_or_else(|| format!("`{existing}` is not a table"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[retry]
max_attempts = 3

[transport]
http = "http1"
resolve = ["*.notify.windows.com=127.0.0.1:8443"]

[tenants.contoso]
pfn = "Contoso.MDM_8wekyb3d8bbwe"
package_sid = "ms-app://S-1-15-2-1"
secret_env = "FW_TEST_SECRET_CONTOSO"
rate_per_second = 100

[tenants.fabrikam]
entra_tenant_id = "fab"
client_id = "app"
secret_file = "fab.secret"
"#;

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_str_with_env(
            Path::new("fleetwake.toml"),
            text,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn good_config_parses() {
        let c = parse(GOOD, &[]).unwrap();
        assert_eq!(c.file.retry.max_attempts, 3);
        assert_eq!(
            c.tenant_names().collect::<Vec<_>>(),
            ["contoso", "fabrikam"]
        );
        assert_eq!(c.transport().unwrap().http, HttpPolicy::Http1Only);
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let e = parse("[transport]\nhttp = \"http3\"\n[tenants.a]\n", &[]).unwrap_err();
        assert_eq!((e.line, e.column), (Some(2), Some(8)), "{e}");
        assert!(e.to_string().starts_with("fleetwake.toml:2:8: "), "{e}");
        let e = parse("[retry]\nmax_attemps = 3\n", &[]).unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(e.message.contains("max_attemps"), "{e}");
        let e = parse("x = \n", &[]).unwrap_err();
        assert_eq!(e.line, Some(1), "{e}");
    }

    #[test]
    fn lane_scheduling_is_read_and_a_bad_value_points_at_it() {
        let text = format!("[engine]\nlanes = 2\nlane_scheduling = \"normal\"\n{GOOD}");
        let c = parse(&text, &[]).unwrap();
        assert_eq!(
            c.file.engine.lane_scheduling,
            Some(crate::engine::LaneScheduling::Normal)
        );
        assert_eq!(parse(GOOD, &[]).unwrap().file.engine.lane_scheduling, None);
        let e = parse(
            &format!("[engine]\nlane_scheduling = \"fifo\"\n{GOOD}"),
            &[],
        )
        .unwrap_err();
        assert_eq!((e.line, e.column), (Some(2), Some(19)), "{e}");
        assert!(
            e.message.contains("batch") && e.message.contains("normal"),
            "{e}"
        );
    }

    #[test]
    fn a_rate_too_small_to_split_across_instances_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleetwake.toml");
        std::fs::write(dir.path().join("a.secret"), "s\n").unwrap();
        let text = "\n[tenants.a]\npackage_sid = \"ms-app://S-1\"\nsecret_file = \"a.secret\"\nrate_per_second = 4\nburst = 2\n";
        let c = Config::from_str_with_env(&path, text, std::iter::empty()).unwrap();
        if let Err(e) = c.engine_builder_split(2) {
            panic!("{e}");
        }
        let e = c.engine_builder_split(3).unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        assert!(
            e.message.contains("tenant `a`") && e.message.contains("(3)"),
            "{e}"
        );
    }

    #[test]
    fn tenant_problems_point_at_the_tenant() {
        let e = parse("\n\n[tenants.a]\npackage_sid = \"ms-app://S\"\n", &[]).unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.contains("secret_env"), "{e}");
        let e = parse(
            "[tenants.a]\npackage_sid = \"ms-app://S\"\nsecret = \"hunter2\"\n",
            &[],
        )
        .unwrap_err();
        assert!(e.message.contains("never go in the config file"), "{e}");
        assert!(!e.to_string().contains("hunter2"));
        let e = parse("[tenants.a]\nsecret_env = \"X\"\n", &[]).unwrap_err();
        assert!(e.message.contains("package_sid"), "{e}");
        let e = parse("[retry]\n", &[]).unwrap_err();
        assert!(e.message.contains("at least one tenant"), "{e}");
        let e = parse(
            "[bogus]\n[tenants.a]\npackage_sid=\"ms-app://S\"\nsecret_env=\"X\"\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(e.line, Some(1));
        assert!(e.message.contains("unknown field `bogus`"), "{e}");
    }

    #[test]
    fn env_overrides_win() {
        let c = parse(
            GOOD,
            &[
                ("FLEETWAKE_TRANSPORT__HTTP", "http2"),
                ("FLEETWAKE_TENANTS__CONTOSO__RATE_PER_SECOND", "7"),
                ("FLEETWAKE_RETRY__MAX_ATTEMPTS", "9"),
                ("FLEETWAKE_LOG", "debug"),
            ],
        )
        .unwrap();
        assert_eq!(c.transport().unwrap().http, HttpPolicy::Http2Only);
        assert_eq!(c.file.retry.max_attempts, 9);
        assert_eq!(c.file.tenants["contoso"].get_ref().rate_per_second, Some(7));
        let e = parse(GOOD, &[("FLEETWAKE_RETRY__MAX_ATTEMPTS", "\"many\"")]).unwrap_err();
        assert!(e.path.display().to_string().contains("env"), "{e}");
    }

    #[test]
    fn secrets_from_env_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleetwake.toml");
        std::fs::write(dir.path().join("fab.secret"), "s3cret\n").unwrap();
        let c = Config::from_str_with_env(&path, GOOD, std::iter::empty()).unwrap();
        assert_eq!(c.tenant_secret("fabrikam").unwrap().expose(), "s3cret");
        let e = c.tenant_secret("contoso").unwrap_err();
        assert!(
            e.message.contains("FW_TEST_SECRET_CONTOSO is not set"),
            "{e}"
        );
        assert_eq!(e.line, Some(9), "the [tenants.contoso] header");
    }
}
