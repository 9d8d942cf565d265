//! The service layer: fleetwake as a long-running process that other systems
//! feed, rather than a command that reads a file.
//!
//! - [`wake_request`] owns the versioned wake-request schema (v1) shared by the
//!   queue and the HTTP API, and the result row both write back;
//! - [`consume`] (feature `nats`) owns the NATS JetStream queue consumer: fetch,
//!   dead-letter, nak with delay, publish-then-ack, drain;
//! - [`http_api`] owns the HTTP API (`POST /v1/wakes`, jobs, `/metrics`,
//!   `/healthz`, `/readyz`, `/openapi.json`);
//! - [`auth`] owns API keys and their constant-time check;
//! - [`ops`] owns readiness, the metrics text and the small HTTP server both
//!   modes use;
//! - [`budget`] (feature `nats`) owns the `[budget]` table: where the PFN
//!   budget shared by every instance lives;
//! - [`nats`] (feature `nats`) owns connecting to NATS from a config table.
//!
//! Both modes are thin drivers of one [`crate::Engine`]: they turn requests into
//! [`crate::Notification`]s, wait for the [`crate::Outcome`], and report it as a
//! [`crate::campaign::report::ReportRow`].

pub mod auth;
#[cfg(feature = "nats")]
pub mod budget;
#[cfg(feature = "nats")]
pub mod consume;
pub mod http_api;
#[cfg(feature = "nats")]
pub mod nats;
pub mod ops;
pub mod wake_request;

pub use wake_request::{MalformedWake, WakeRequest, WakeResult};
