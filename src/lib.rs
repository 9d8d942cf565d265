//! fleetwake: wake Windows devices for MDM through WNS raw push, at fleet scale.
//!
//! The crate is a library first; the `fleetwake` binary is a thin layer on it.
//!
//! - [`wns`] holds the sans-IO protocol core (channel URIs, credentials, the request,
//!   the [`Outcome`] classification);
//! - [`transport`] holds rustls connections, per-host HTTP/2 and HTTP/1.1 pools;
//! - [`engine`] holds tenants, token cache, per-PFN limiter, shards, coalescing, retries;
//! - [`service`] holds the service modes: the JetStream queue consumer, the HTTP
//!   API, and the versioned wake-request schema they share;
//! - [`telemetry`] holds metrics;
//! - `emulator` (feature `emulator`, on by default): a WNS emulator for tests and demos.
//!
//! See `docs/ARCHITECTURE.md` for how a wake flows through them.

pub mod campaign;
pub mod cli;
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
    Engine, EngineBuilder, EngineConfig, Notification, RateLimit, RetryPolicy, TenantConfig,
};
pub use transport::{HttpPolicy, ResolveOverride, TransportConfig};
pub use wns::{
    ChannelUri, Credentials, MdmAction, Outcome, OutcomeKind, Payload, PushOptions, Secret,
};
