//! Shared helpers for the integration tests: an emulator on 127.0.0.1 with a
//! generated test CA, and an engine pointed at it through resolve overrides.
#![allow(dead_code)]

#[cfg(feature = "nats")]
pub mod nats;
pub mod serve;

use std::time::Duration;

use fleetwake::emulator::{EmulatorConfig, EmulatorHandle, HttpVersions};
use fleetwake::{
    ChannelUri, Credentials, Engine, RateLimit, RetryPolicy, Secret, TenantConfig, TransportConfig,
};

/// Every row of a campaign report (JSON lines); panics naming a bad row.
pub fn read_report(path: &std::path::Path) -> Vec<fleetwake::campaign::report::ReportRow> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad row {l}: {e}")))
        .collect()
}

pub const SID: &str = "ms-app://S-1-15-2-1111111111-2222222222";

/// The `[tenants.contoso]`, `[retry]` and `[transport]` tables of a config
/// file in `dir` that reaches `emu` (its CA is written to `dir/ca.pem`); the
/// secret comes from `FLEETWAKE_TEST_SECRET`.
pub fn engine_toml(
    dir: &std::path::Path,
    emu: &EmulatorHandle,
    tenant_extra: &str,
    retry: &str,
    transport_extra: &str,
) -> String {
    std::fs::write(dir.join("ca.pem"), emu.ca_pem().expect("generated CA")).expect("write ca.pem");
    let addr = emu.local_addr();
    format!(
        r#"
[tenants.contoso]
package_sid = "{SID}"
secret_env = "FLEETWAKE_TEST_SECRET"
{tenant_extra}

[retry]
{retry}

[transport]
resolve = ["*.notify.windows.com={addr}", "login.live.com={addr}"]
extra_ca_files = ["ca.pem"]
webpki_roots = false
{transport_extra}
"#
    )
}

/// Starts an emulator with the default settings and the given HTTP versions.
pub async fn emulator(http: HttpVersions) -> EmulatorHandle {
    let cfg = EmulatorConfig {
        http,
        ..EmulatorConfig::default()
    };
    cfg.start().await.expect("emulator starts")
}

/// Starts an emulator from a config.
pub async fn emulator_with(cfg: EmulatorConfig) -> EmulatorHandle {
    cfg.start().await.expect("emulator starts")
}

/// A transport that reaches the emulator for every WNS and login host, trusting
/// only the emulator's test CA.
pub fn transport_for(emu: &EmulatorHandle) -> TransportConfig {
    let addr = emu.local_addr();
    let mut t = TransportConfig {
        resolve: vec![
            format!("*.notify.windows.com={addr}").parse().unwrap(),
            format!("login.live.com={addr}").parse().unwrap(),
            format!("login.microsoftonline.com={addr}").parse().unwrap(),
        ],
        webpki_roots: false,
        ..TransportConfig::default()
    };
    t.add_ca_pem(emu.ca_pem().expect("generated CA")).unwrap();
    t
}

/// A Package SID tenant with a generous rate limit.
pub fn tenant(name: &str) -> TenantConfig {
    TenantConfig::new(
        name,
        Credentials::PackageSid {
            package_sid: SID.into(),
            secret: Secret::new("test-secret"),
        },
    )
    .rate_limit(RateLimit::per_second(100_000).with_burst(10_000))
}

/// A channel URI whose token selects the emulator behaviour.
pub fn channel(behaviour: &str, id: impl std::fmt::Display) -> ChannelUri {
    ChannelUri::parse(&format!(
        "https://db5p.notify.windows.com/?token={behaviour}.{id}"
    ))
    .unwrap()
}

/// Fast retries for tests.
pub fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(100),
        deadline: Duration::from_secs(20),
        pause_tenant_on_throttle: true,
    }
}

/// An engine with one tenant "t" against the emulator.
pub fn engine(emu: &EmulatorHandle, retry: RetryPolicy) -> Engine {
    Engine::builder()
        .transport(transport_for(emu))
        .tenant(tenant("t"))
        .retry(retry)
        .build()
        .unwrap()
}

/// Established TCP connections whose local end is `port` on 127.0.0.1, as the
/// kernel lists them (`/proc/net/tcp`): for a server in this process, its open
/// client connections, counted independently of any client's bookkeeping.
pub fn established_on(port: u16) -> usize {
    let want = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1] == want && f[3] == "01"
        })
        .count()
}

/// A port on 127.0.0.1 that nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `/proc/PID/status` field in KiB (`VmRSS`, `VmHWM`), 0 if unknown.
pub fn proc_status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Samples `f` every 20 ms on a thread until the returned guard is stopped;
/// the guard gives the largest value seen.
pub struct MaxSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<usize>>,
}

impl MaxSampler {
    pub fn start(f: impl Fn() -> usize + Send + 'static) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut max = 0;
            while !s.load(Ordering::Relaxed) {
                max = max.max(f());
                std::thread::sleep(Duration::from_millis(20));
            }
            max
        });
        MaxSampler {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops sampling; the maximum seen.
    pub fn finish(mut self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle
            .take()
            .map(|h| h.join().unwrap_or(0))
            .unwrap_or(0)
    }
}

/// A fault plan with `f` all the time.
pub fn faults(f: fleetwake::emulator::faults::Faults) -> fleetwake::emulator::faults::FaultPlan {
    fleetwake::emulator::faults::FaultPlan {
        base: f,
        phases: vec![],
    }
}

/// A fault plan with `f` from `from_ms` to `until_ms` after it is set.
pub fn during(
    from_ms: u64,
    until_ms: u64,
    f: fleetwake::emulator::faults::Faults,
) -> fleetwake::emulator::faults::FaultPlan {
    use fleetwake::emulator::faults::{FaultPhase, FaultPlan, Faults};
    FaultPlan {
        base: Faults::default(),
        phases: vec![FaultPhase {
            from_ms,
            until_ms,
            faults: f,
        }],
    }
}

/// The first `name` on `PATH`, if any.
#[allow(dead_code)]
pub fn which(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
