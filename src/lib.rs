//! fleetwake: wake Windows devices for MDM through WNS raw push, at fleet scale.
//!
//! The crate is a library first; the `fleetwake` binary is a thin layer on it.
//! An MDM server embeds the [`Engine`]: give it tenants (a PFN with its WNS
//! credentials and rate budget), feed it [`Notification`]s, and act on each
//! [`Outcome`]'s [`MdmAction`].
//!
//! ```
//! use fleetwake::{
//!     ChannelUri, Credentials, Engine, MdmAction, Notification, OutcomeKind, Secret,
//!     TenantConfig, TransportConfig,
//! };
//! use futures_util::StreamExt;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! # // This example runs against the built-in WNS emulator; in production the
//! # // transport needs no setup (it trusts the public roots and resolves WNS).
//! # let emu = fleetwake::emulator::EmulatorConfig::default().start().await?;
//! # let mut transport = TransportConfig::default();
//! # transport.webpki_roots = false;
//! # transport.add_ca_pem(emu.ca_pem().unwrap_or_default())?;
//! # for host in ["*.notify.windows.com", "login.live.com"] {
//! #     transport.resolve.push(format!("{host}={}", emu.local_addr()).parse()?);
//! # }
//! # // The emulator takes any secret; a real one comes from your secret store.
//! # std::env::set_var("CONTOSO_WNS_SECRET", "emulator-takes-any-secret");
//! // One tenant: the Store app whose PFN the devices got through the DMClient
//! // CSP, with its Package SID and secret (from the environment, never argv).
//! let secret = std::env::var("CONTOSO_WNS_SECRET")?;
//! let engine = Engine::builder()
//!     .transport(transport)
//!     .tenant(
//!         TenantConfig::new(
//!             "contoso",
//!             Credentials::PackageSid {
//!                 package_sid: "ms-app://S-1-15-2-1111111111-2222222222".into(),
//!                 secret: Secret::new(secret),
//!             },
//!         )
//!         .pfn("Contoso.MDM_8wekyb3d8bbwe"),
//!     )
//!     .build()?;
//!
//! // A stream of (your key, notification): here three devices.
//! let devices = [
//!     ("laptop-1", "https://db5p.notify.windows.com/?token=ok.1"),
//!     ("laptop-2", "https://db5p.notify.windows.com/?token=gone.2"),
//!     ("laptop-3", "https://db5p.notify.windows.com/?token=ok.3"),
//! ];
//! let wakes = devices.into_iter().map(|(id, uri)| {
//!     (id, Notification::wake("contoso", ChannelUri::parse(uri).expect("a WNS channel URI")))
//! });
//! let mut outcomes = engine.submit_iter(wakes, 100);
//! while let Some((device, outcome)) = outcomes.next().await {
//!     match outcome.mdm_action() {
//!         MdmAction::None => println!("{device}: woken"),
//!         // 410: the channel expired; set Push/PFN again at the next sync.
//!         MdmAction::ResetPfnAtNextSync => println!("{device}: reset the PFN"),
//!         other => println!("{device}: {} ({})", outcome.kind, other.describe()),
//!     }
//! #   assert!(matches!(outcome.kind, OutcomeKind::Received | OutcomeKind::ChannelExpired));
//! }
//! engine.shutdown(std::time::Duration::from_secs(30)).await;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })
//! # }
//! ```
//!
//! # Modules
//!
//! - [`wns`] holds the sans-IO protocol core (channel URIs, credentials, the request,
//!   the [`Outcome`] classification);
//! - [`transport`] holds rustls connections, per-host HTTP/2 and HTTP/1.1 pools;
//! - [`engine`] holds tenants, token cache, per-PFN limiter (and the budget
//!   shared through NATS), shards, coalescing, retries, breakers;
//! - [`service`] holds the service modes: the JetStream queue consumer, the HTTP
//!   API, and the versioned wake-request schema they share;
//! - [`campaign`] holds bulk campaigns over a device file, resumable;
//! - [`mdm`] holds the DMClient CSP side: SyncML, device replies, the channel store;
//! - [`config`] holds the TOML configuration the binary reads;
//! - [`telemetry`] holds metrics;
//! - `emulator` (feature `emulator`): a WNS emulator for tests and demos.
//!
//! See `docs/ARCHITECTURE.md` for how a wake flows through them.
//!
//! # Features
//!
//! - `emulator` (default): the built-in WNS emulator
//!   (`fleetwake::emulator`, `fleetwake emulate`, `fleetwake demo`, `bench --target emulator`).
//! - `nats` (default): the JetStream queue consumer (`service::consume`) and
//!   the PFN budget shared through NATS (`engine::budget`, `[budget]`).
//! - `mimalloc` (default): mimalloc as the binary's allocator (the library
//!   never sets an allocator).
//!
//! # Stability
//!
//! The embedding API is [`Engine`], [`EngineBuilder`], [`Notification`],
//! [`Outcome`] with [`OutcomeKind`] and [`MdmAction`], [`TenantConfig`],
//! [`Credentials`], [`TransportConfig`] and [`service::WakeRequest`] /
//! [`service::WakeResult`] (the queue schema v1, versioned on its own).
//! Outcome and action names are part of reports and metrics and change only
//! with a major version. Everything else public (`config`, `campaign`, `mdm`,
//! `telemetry`, `emulator`, the sans-IO pieces under `wns` and `transport`)
//! is usable but may change in minor releases while the crate is 0.x. The
//! command line is not a library API at all.

pub mod campaign;
mod cli;
pub mod config;
#[cfg(feature = "emulator")]
pub mod emulator;
pub mod engine;
pub mod mdm;
pub mod service;
pub mod telemetry;
pub mod transport;
mod util;
pub mod wns;

pub use engine::{
    Engine, EngineBuilder, EngineConfig, LaneScheduling, Notification, RateLimit, RetryPolicy,
    TenantConfig,
};
pub use transport::{HttpPolicy, HttpStack, ResolveOverride, TransportConfig};
pub use wns::{
    ChannelUri, Credentials, MdmAction, Outcome, OutcomeKind, Payload, PushOptions, Secret,
};

/// The `fleetwake` command line, for the binary in this package. Not part of
/// the library's API: it may change in any release.
#[doc(hidden)]
pub fn __cli_main() -> std::process::ExitCode {
    cli::main()
}
