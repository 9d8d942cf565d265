//! The HTTP API that an MDM server calls: `POST /v1/wakes` (one wake or a
//! batch; `?wait=true` answers with every outcome, otherwise `202` and a job),
//! `GET /v1/wakes/{job}`, `GET /metrics`, `/healthz`, `/readyz` and
//! `GET /openapi.json` (the document in `docs/openapi.json`, which the tests
//! check against the live server).
//!
//! Rules, in the order they apply:
//! - `/healthz`, `/readyz` and `/openapi.json` are open; every other path
//!   (`/metrics` too, unless `metrics_public`) needs `Authorization: Bearer KEY`
//!   of a configured client, else `401` with an empty body and nothing else;
//! - a body over `max_body_bytes` gets `413` (before it is read, when
//!   `Content-Length` says so); a batch over `max_batch` wakes gets `413`;
//! - bad JSON gets `400` with the line and column, a schema error `400` with the
//!   JSON path (`wakes[3].tenant`);
//! - jobs are kept in memory: at most `max_jobs` jobs and `max_held_results`
//!   wakes in all; a finished job is forgotten `job_ttl_s` after it finished; a
//!   job is visible only to the client that made it. When full: `503` with
//!   `Retry-After`.
//! - `?wait=true` waits at most `wait_timeout_s`, then answers `202` with the job.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use metrics::{counter, gauge, Gauge};
use metrics_exporter_prometheus::PrometheusHandle;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::auth::{ApiKeys, ClientKeySection, KeyError};
use super::ops::{self, Body, Handler, Readiness};
use super::wake_request::{json_type, parse_json_text, MalformedWake, WakeRequest, WakeResult};
use crate::engine::Engine;
use crate::wns::{Outcome, PushOptions};

/// The OpenAPI 3 document served at `/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../../docs/openapi.json");

/// The `[serve]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeSettings {
    /// Listen address. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// A file of `NAME:KEY` lines (one client per line).
    pub keys_file: Option<PathBuf>,
    /// `[serve.clients.NAME]`: one key per client (`key_env`, `key_file` or `key_sha256`).
    pub clients: BTreeMap<String, ClientKeySection>,
    /// Largest request body. Default 4 MiB.
    pub max_body_bytes: usize,
    /// Most wakes in one request. Default 10000.
    pub max_batch: usize,
    /// Longest `?wait=true` wait, seconds; then `202`. Default 60.
    pub wait_timeout_s: u64,
    /// Most jobs kept. Default 1000.
    pub max_jobs: usize,
    /// Most wakes kept in all jobs. Default 1000000.
    pub max_held_results: usize,
    /// Seconds a finished job is kept. Default 3600.
    pub job_ttl_s: u64,
    /// Wakes of one job submitted at once. Default 256.
    pub job_concurrency: usize,
    /// Most open connections. Default 1024.
    pub max_connections: usize,
    /// Time to send the headers and to send the body, seconds. Default 30.
    pub request_timeout_s: u64,
    /// A connection with no request in progress that moves no byte for this
    /// long is closed, seconds (also one that connects and never sends). Default 60.
    pub idle_timeout_s: u64,
    /// Serve `/metrics` without a key. Default false.
    pub metrics_public: bool,
    /// Seconds open requests get to finish on SIGTERM. Default 30.
    pub drain_timeout_s: u64,
    /// Seconds the listener stays open after SIGTERM, answering `/readyz` 503
    /// and new wakes 503, so that a load balancer sees the drain before
    /// connections are refused (a Kubernetes endpoint update lags the
    /// signal). Default 0: the listener closes at once. At most 300.
    pub drain_delay_s: u64,
}

impl Default for ServeSettings {
    fn default() -> Self {
        ServeSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            keys_file: None,
            clients: BTreeMap::new(),
            max_body_bytes: 4 * 1024 * 1024,
            max_batch: 10_000,
            wait_timeout_s: 60,
            max_jobs: 1000,
            max_held_results: 1_000_000,
            job_ttl_s: 3600,
            job_concurrency: 256,
            max_connections: 1024,
            request_timeout_s: 30,
            idle_timeout_s: 60,
            metrics_public: false,
            drain_timeout_s: 30,
            drain_delay_s: 0,
        }
    }
}

impl ServeSettings {
    /// Checks the bounds.
    pub fn validate(&self) -> Result<(), String> {
        for (k, v) in [
            ("max_body_bytes", self.max_body_bytes),
            ("max_batch", self.max_batch),
            ("max_jobs", self.max_jobs),
            ("max_held_results", self.max_held_results),
            ("job_concurrency", self.job_concurrency),
            ("max_connections", self.max_connections),
            ("request_timeout_s", self.request_timeout_s as usize),
            ("idle_timeout_s", self.idle_timeout_s as usize),
        ] {
            if v == 0 {
                return Err(format!("[serve] {k} must be at least 1"));
            }
        }
        if self.max_body_bytes > 256 * 1024 * 1024 {
            return Err("[serve] max_body_bytes is at most 256 MiB".into());
        }
        if self.max_batch > self.max_held_results {
            return Err("[serve] max_batch must not exceed max_held_results".into());
        }
        if self.drain_delay_s > 300 {
            return Err("[serve] drain_delay_s is at most 300".into());
        }
        Ok(())
    }

    /// The API keys of every configured client; `base` is the config file's folder.
    pub fn api_keys(&self, base: &std::path::Path) -> Result<ApiKeys, KeyError> {
        let mut keys = ApiKeys::new();
        for (name, c) in &self.clients {
            keys.add_section(name, c, base)?;
        }
        if let Some(f) = &self.keys_file {
            let p = if f.is_absolute() {
                f.clone()
            } else {
                base.join(f)
            };
            keys.add_keys_file(&p)?;
        }
        Ok(keys)
    }
}

/// A job's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Wakes are still being sent.
    Running,
    /// Every wake has its result.
    Done,
}

/// The JSON of a job (`POST /v1/wakes` and `GET /v1/wakes/{job}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobStatus {
    /// The job id.
    pub job: String,
    /// Running or done.
    pub status: JobState,
    /// Wakes in the job.
    pub total: usize,
    /// Wakes with a result.
    pub done: usize,
    /// When the job was made (RFC 3339).
    pub created_at: String,
    /// Results so far, in request order; `line` is the 1-based position in the request.
    pub results: Vec<WakeResult>,
}

struct Job {
    id: String,
    client: Arc<str>,
    created_at: String,
    requests: Vec<WakeRequest>,
    results: Mutex<Vec<Option<WakeResult>>>,
    done: AtomicUsize,
    finished: watch::Sender<bool>,
    finished_at: Mutex<Option<Instant>>,
}

impl Job {
    fn status(&self) -> JobStatus {
        let results: Vec<WakeResult> = self.results.lock().iter().flatten().cloned().collect();
        let done = results.len();
        JobStatus {
            job: self.id.clone(),
            status: if done == self.requests.len() {
                JobState::Done
            } else {
                JobState::Running
            },
            total: self.requests.len(),
            done,
            created_at: self.created_at.clone(),
            results,
        }
    }
}

/// The jobs in memory, bounded in count and in held results.
struct JobStore {
    jobs: Mutex<HashMap<String, Arc<Job>>>,
    held: AtomicUsize,
    max_jobs: usize,
    max_held: usize,
    ttl: Duration,
    gauge_jobs: Gauge,
    gauge_held: Gauge,
}

impl JobStore {
    fn sweep(&self, jobs: &mut HashMap<String, Arc<Job>>) {
        let now = Instant::now();
        let ttl = self.ttl;
        let mut freed = 0;
        jobs.retain(|_, j| {
            let keep = j
                .finished_at
                .lock()
                .is_none_or(|t| now.saturating_duration_since(t) < ttl);
            if !keep {
                freed += j.requests.len();
            }
            keep
        });
        self.held.fetch_sub(freed, Ordering::AcqRel);
        self.gauge_jobs.set(jobs.len() as f64);
        self.gauge_held
            .set(self.held.load(Ordering::Acquire) as f64);
    }

    fn insert(&self, job: Arc<Job>) -> Result<(), ()> {
        let mut jobs = self.jobs.lock();
        self.sweep(&mut jobs);
        let n = job.requests.len();
        if jobs.len() >= self.max_jobs || self.held.load(Ordering::Acquire) + n > self.max_held {
            return Err(());
        }
        self.held.fetch_add(n, Ordering::AcqRel);
        jobs.insert(job.id.clone(), job);
        self.gauge_jobs.set(jobs.len() as f64);
        self.gauge_held
            .set(self.held.load(Ordering::Acquire) as f64);
        Ok(())
    }

    fn get(&self, id: &str) -> Option<Arc<Job>> {
        let mut jobs = self.jobs.lock();
        self.sweep(&mut jobs);
        jobs.get(id).cloned()
    }
}

/// The HTTP API: settings, keys, the engine, the jobs.
pub struct HttpApi {
    engine: Engine,
    push: PushOptions,
    keys: ApiKeys,
    settings: ServeSettings,
    jobs: JobStore,
    readiness: Arc<Readiness>,
    prom: Option<PrometheusHandle>,
}

impl std::fmt::Debug for HttpApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpApi")
            .field("listen", &self.settings.listen)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

/// The routes, as metric labels.
fn route_label(method: &Method, path: &str) -> &'static str {
    match (method, path) {
        (&Method::POST, "/v1/wakes") => "post_wakes",
        (&Method::GET, p) if p.starts_with("/v1/wakes/") => "get_wake_job",
        (_, "/metrics") => "metrics",
        (_, "/healthz") => "healthz",
        (_, "/readyz") => "readyz",
        (_, "/openapi.json") => "openapi",
        _ => "other",
    }
}

fn unauthorized() -> Response<Body> {
    let mut r = Response::new(Body::new(Bytes::new()));
    *r.status_mut() = StatusCode::UNAUTHORIZED;
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"fleetwake\""),
    );
    r
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = ops::error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

fn bad_request(e: &MalformedWake) -> Response<Body> {
    #[derive(Serialize)]
    struct E<'a> {
        error: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        path: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        line: Option<usize>,
        #[serde(skip_serializing_if = "Option::is_none")]
        column: Option<usize>,
    }
    ops::json(
        StatusCode::BAD_REQUEST,
        &E {
            error: e.to_string(),
            path: e.path.as_deref(),
            line: e.line,
            column: e.column,
        },
    )
}

fn too_large(message: String) -> Response<Body> {
    ops::error(StatusCode::PAYLOAD_TOO_LARGE, message)
}

fn job_id() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        // Never expected; fall back to a non-cryptographic id (ids are per client anyway).
        b = fastrand::u128(..).to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Parses the body of `POST /v1/wakes`: one wake object, or `{"wakes": [...]}`.
pub fn parse_wakes(
    body: &[u8],
    max_batch: usize,
) -> Result<Vec<WakeRequest>, (StatusCode, MalformedWake)> {
    let bad = |e| (StatusCode::BAD_REQUEST, e);
    let value = parse_json_text(body).map_err(bad)?;
    let serde_json::Value::Object(mut obj) = value else {
        return Err(bad(MalformedWake {
            path: None,
            message: format!(
                "expected a wake object or {{\"wakes\": [...]}}, found {}",
                json_type(&value)
            ),
            line: None,
            column: None,
        }));
    };
    if !obj.contains_key("wakes") {
        return Ok(vec![WakeRequest::from_value(serde_json::Value::Object(
            obj,
        ))
        .map_err(bad)?]);
    }
    if let Some(k) = obj.keys().find(|k| *k != "wakes") {
        return Err(bad(MalformedWake {
            path: Some(k.clone()),
            message: format!("unknown field `{k}`, expected `wakes`"),
            line: None,
            column: None,
        }));
    }
    let wakes = obj.remove("wakes").unwrap_or_default();
    let serde_json::Value::Array(items) = wakes else {
        return Err(bad(MalformedWake {
            path: Some("wakes".into()),
            message: format!("expected an array, found {}", json_type(&wakes)),
            line: None,
            column: None,
        }));
    };
    if items.is_empty() {
        return Err(bad(MalformedWake {
            path: Some("wakes".into()),
            message: "is empty".into(),
            line: None,
            column: None,
        }));
    }
    if items.len() > max_batch {
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            MalformedWake {
                path: Some("wakes".into()),
                message: format!(
                    "{} wakes is over the limit of {max_batch} per request",
                    items.len()
                ),
                line: None,
                column: None,
            },
        ));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, v)| WakeRequest::from_value(v).map_err(|e| bad(e.under(&format!("wakes[{i}]")))))
        .collect()
}

impl HttpApi {
    /// The API over `engine`. Install the Prometheus recorder (and pass its
    /// handle as `prom`) before building the engine.
    pub fn new(
        engine: Engine,
        push: PushOptions,
        keys: ApiKeys,
        settings: ServeSettings,
        readiness: Arc<Readiness>,
        prom: Option<PrometheusHandle>,
    ) -> Arc<HttpApi> {
        let jobs = JobStore {
            jobs: Mutex::new(HashMap::new()),
            held: AtomicUsize::new(0),
            max_jobs: settings.max_jobs,
            max_held: settings.max_held_results,
            ttl: Duration::from_secs(settings.job_ttl_s),
            gauge_jobs: gauge!("fleetwake_http_jobs"),
            gauge_held: gauge!("fleetwake_http_held_results"),
        };
        Arc::new(HttpApi {
            engine,
            push,
            keys,
            settings,
            jobs,
            readiness,
            prom,
        })
    }

    /// The handler to give [`ops::spawn_server`].
    pub fn handler(self: &Arc<Self>) -> Handler {
        let api = self.clone();
        Arc::new(move |req, _peer| {
            let api = api.clone();
            Box::pin(async move {
                let route = route_label(req.method(), req.uri().path());
                let resp = api.handle(req).await;
                counter!("fleetwake_http_requests_total", "route" => route, "status" => resp.status().as_str().to_string())
                    .increment(1);
                resp
            })
        })
    }

    /// Answers one request.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        match path.as_str() {
            "/healthz" if method == Method::GET => return ops::healthz(),
            "/readyz" if method == Method::GET => return ops::readyz(&self.readiness),
            "/openapi.json" if method == Method::GET => {
                return ops::with_type(
                    StatusCode::OK,
                    "application/json",
                    Bytes::from_static(OPENAPI_JSON.as_bytes()),
                )
            }
            "/metrics" if method == Method::GET && self.settings.metrics_public => {
                return ops::metrics(self.prom.as_ref())
            }
            _ => {}
        }
        let Some(client) = self.keys.check(
            req.headers()
                .get(header::AUTHORIZATION)
                .map(HeaderValue::as_bytes),
        ) else {
            return unauthorized();
        };
        match path.as_str() {
            "/metrics" if method == Method::GET => ops::metrics(self.prom.as_ref()),
            "/metrics" | "/healthz" | "/readyz" | "/openapi.json" => method_not_allowed("GET"),
            "/v1/wakes" if method == Method::POST => self.post_wakes(client, req).await,
            "/v1/wakes" => method_not_allowed("POST"),
            p if p.starts_with("/v1/wakes/") => {
                if method != Method::GET {
                    return method_not_allowed("GET");
                }
                let id = &p["/v1/wakes/".len()..];
                match self.jobs.get(id) {
                    Some(job) if job.client == client => ops::json(StatusCode::OK, &job.status()),
                    _ => ops::error(StatusCode::NOT_FOUND, "no such job"),
                }
            }
            _ => ops::error(StatusCode::NOT_FOUND, "not found"),
        }
    }

    async fn post_wakes(&self, client: Arc<str>, req: Request<Incoming>) -> Response<Body> {
        let wait = match req.uri().query().map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .filter(|(k, _)| k == "wait")
                .map(|(_, v)| v.into_owned())
                .last()
        }) {
            None | Some(None) => false,
            Some(Some(v)) => match v.as_str() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => {
                    return ops::error(StatusCode::BAD_REQUEST, "wait must be true or false");
                }
            },
        };
        if self.readiness.is_draining() {
            let mut r = ops::error(StatusCode::SERVICE_UNAVAILABLE, "the server is draining");
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            return r;
        }
        let limit = self.settings.max_body_bytes;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return too_large(format!("the body is over the limit of {limit} bytes"));
        }
        let read = Limited::new(req.into_body(), limit).collect();
        let body =
            match tokio::time::timeout(Duration::from_secs(self.settings.request_timeout_s), read)
                .await
            {
                Err(_) => {
                    return ops::error(
                        StatusCode::REQUEST_TIMEOUT,
                        "the body took too long to arrive",
                    )
                }
                Ok(Err(e)) => {
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some()
                    {
                        return too_large(format!("the body is over the limit of {limit} bytes"));
                    }
                    return ops::error(StatusCode::BAD_REQUEST, "the body could not be read");
                }
                Ok(Ok(c)) => c.to_bytes(),
            };
        let requests = match parse_wakes(&body, self.settings.max_batch) {
            Ok(r) => r,
            Err((StatusCode::PAYLOAD_TOO_LARGE, e)) => return too_large(e.to_string()),
            Err((_, e)) => return bad_request(&e),
        };
        drop(body);
        // Every tenant the request names has its token breaker open: nothing
        // in it could be sent. Say so now rather than accept a job of
        // `token_unavailable` outcomes.
        let tenants: std::collections::BTreeSet<&str> =
            requests.iter().map(|r| r.tenant.as_str()).collect();
        let outages: Vec<_> = tenants
            .iter()
            .map(|t| self.engine.tenant_breaker_open(t))
            .collect();
        if !outages.is_empty() && outages.iter().all(Option::is_some) {
            let outages: Vec<_> = outages.into_iter().flatten().collect();
            let wait = outages
                .iter()
                .map(|o| o.retry_after)
                .min()
                .unwrap_or(Duration::from_secs(1));
            let reasons = outages
                .iter()
                .map(|o| o.error.to_string())
                .collect::<Vec<_>>()
                .join("; ");
            let mut r = ops::error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("nothing was accepted: {reasons}"),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, ops::retry_after_header(wait));
            return r;
        }
        let n = requests.len();
        let (finished, mut finished_rx) = watch::channel(false);
        let job = Arc::new(Job {
            id: job_id(),
            client,
            created_at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            results: Mutex::new(vec![None; n]),
            requests,
            done: AtomicUsize::new(0),
            finished,
            finished_at: Mutex::new(None),
        });
        if self.jobs.insert(job.clone()).is_err() {
            let mut r = ops::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many jobs are held; retry later",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            return r;
        }
        tokio::spawn(run_job(
            self.engine.clone(),
            self.push.clone(),
            job.clone(),
            self.settings.job_concurrency,
        ));
        if wait {
            let _ = tokio::time::timeout(
                Duration::from_secs(self.settings.wait_timeout_s),
                finished_rx.wait_for(|f| *f),
            )
            .await;
        }
        let status = job.status();
        let code = if status.status == JobState::Done && wait {
            StatusCode::OK
        } else {
            StatusCode::ACCEPTED
        };
        let mut r = ops::json(code, &status);
        if code == StatusCode::ACCEPTED {
            if let Ok(v) = HeaderValue::from_str(&format!("/v1/wakes/{}", job.id)) {
                r.headers_mut().insert(header::LOCATION, v);
            }
        }
        r
    }
}

async fn run_job(engine: Engine, push: PushOptions, job: Arc<Job>, concurrency: usize) {
    let work: Vec<(usize, Result<crate::Notification, Box<Outcome>>)> = job
        .requests
        .iter()
        .map(|r| r.to_notification(&push))
        .enumerate()
        .collect();
    let engine2 = engine.clone();
    let mut outcomes = futures_util::stream::iter(work)
        .map(move |(i, n)| {
            let e = engine2.clone();
            async move {
                let o: Outcome = match n {
                    Ok(n) => e.submit(n).await,
                    Err(o) => *o,
                };
                (i, o)
            }
        })
        .buffer_unordered(concurrency.max(1));
    while let Some((i, o)) = outcomes.next().await {
        let mut res = WakeResult::new(&job.requests[i], &o);
        res.row.line = Some(i as u64 + 1);
        if let Some(slot) = job.results.lock().get_mut(i) {
            *slot = Some(res);
        }
        job.done.fetch_add(1, Ordering::AcqRel);
    }
    *job.finished_at.lock() = Some(Instant::now());
    let _ = job.finished.send(true);
}

#[cfg(test)]
mod tests {
    use super::*;

    const CH: &str = "https://db5p.notify.windows.com/?token=ok.1";

    #[test]
    fn single_and_batch_bodies() {
        let one = format!(r#"{{"device_id":"d","channel_uri":"{CH}","tenant":"t"}}"#);
        assert_eq!(parse_wakes(one.as_bytes(), 10).unwrap().len(), 1);
        let two = format!(r#"{{"wakes":[{one},{one}]}}"#);
        assert_eq!(parse_wakes(two.as_bytes(), 10).unwrap().len(), 2);
        let (code, e) = parse_wakes(two.as_bytes(), 1).unwrap_err();
        assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(e.message.contains("limit of 1"), "{e}");
        let bad = format!(r#"{{"wakes":[{one},{{"device_id":"d","channel_uri":"{CH}"}}]}}"#);
        let (code, e) = parse_wakes(bad.as_bytes(), 10).unwrap_err();
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert_eq!(e.path.as_deref(), Some("wakes[1]"), "{e}");
        assert!(e.message.contains("missing field `tenant`"), "{e}");
        let bad =
            format!(r#"{{"wakes":[{one},{{"device_id":7,"channel_uri":"{CH}","tenant":"t"}}]}}"#);
        let (_, e) = parse_wakes(bad.as_bytes(), 10).unwrap_err();
        assert_eq!(e.path.as_deref(), Some("wakes[1].device_id"), "{e}");
        for (body, want) in [
            ("{\"wakes\": []}", "is empty"),
            ("{\"wakes\": 3}", "expected an array"),
            ("{\"wakes\": [], \"x\": 1}", "unknown field `x`"),
            ("[1]", "found an array"),
            ("{\"wakes\": [1,", "EOF"),
        ] {
            let (_, e) = parse_wakes(body.as_bytes(), 10).unwrap_err();
            assert!(e.to_string().contains(want), "{body}: {e}");
        }
    }

    #[test]
    fn defaults_validate_and_openapi_parses() {
        ServeSettings::default().validate().unwrap();
        let long_delay = ServeSettings {
            drain_delay_s: 301,
            ..ServeSettings::default()
        };
        let e = long_delay.validate().unwrap_err();
        assert!(e.contains("drain_delay_s"), "{e}");
        let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        assert!(doc["paths"]["/v1/wakes"]["post"].is_object());
    }
}
