//! Shared helpers for the integration tests: an emulator on 127.0.0.1 with a
//! generated test CA, and an engine pointed at it through resolve overrides.
#![allow(dead_code)]

use std::time::Duration;

use fleetwake::emulator::{EmulatorConfig, EmulatorHandle, HttpVersions};
use fleetwake::{
    ChannelUri, Credentials, Engine, RateLimit, RetryPolicy, Secret, TenantConfig, TransportConfig,
};

pub const SID: &str = "ms-app://S-1-15-2-1111111111-2222222222";

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
