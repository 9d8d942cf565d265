//! The sans-IO WNS protocol core: everything about WNS that can be decided
//! without a socket.
//!
//! - [`channel`] holds which URIs may receive a bearer token ([`ChannelUri`]);
//! - [`credentials`] holds the two token flows, request building and answer parsing;
//! - [`request`] holds the raw-push request and its headers;
//! - [`outcome`] holds classifying answers into the one [`Outcome`] type;
//! - [`correlation`] holds fresh `MS-CV` values.
//!
//! Nothing here does IO or keeps state; the transport and engine call into it.

pub mod channel;
pub mod correlation;
pub mod credentials;
pub mod outcome;
pub mod request;

pub use channel::{ChannelUri, ChannelUriError};
pub use correlation::CorrelationVector;
pub use credentials::{AccessToken, Credentials, CredentialsError, Secret, TokenResponseError};
pub use outcome::{classify, Classified, MdmAction, Outcome, OutcomeKind, WnsHeaders};
pub use request::{
    bearer, build_push, build_push_with_auth, CachePolicy, Payload, PayloadError, Priority,
    PushOptions, MAX_PAYLOAD,
};
