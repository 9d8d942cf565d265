//! Bounded request-body reading.
//!
//! Bodies are read through [`http_body_util::Limited`] so no request can make
//! the emulator read (or buffer) unbounded input. An over-limit body is still
//! drained up to [`DRAIN_CAP`] bytes, without buffering, so an HTTP/1.1 client
//! that already wrote it gets its error response instead of a TCP reset.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

/// Most bytes ever read from one request body; past this the connection is
/// left to close.
pub(crate) const DRAIN_CAP: usize = 64 * 1024;
/// Longest time spent reading one body.
pub(crate) const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Outcome of [`read_limited`].
#[derive(Debug)]
pub(crate) enum BodyRead {
    /// The whole body, at most `limit` bytes.
    Complete(Bytes),
    /// The body was longer than `limit`.
    TooLarge,
    /// The body could not be read (client error, reset, timeout).
    Failed(String),
}

/// Reads `body`, buffering at most `limit` bytes (`limit` must be below
/// [`DRAIN_CAP`]).
pub(crate) async fn read_limited(body: Incoming, limit: usize) -> BodyRead {
    match tokio::time::timeout(BODY_TIMEOUT, read_inner(body, limit)).await {
        Ok(r) => r,
        Err(_) => BodyRead::Failed("timed out reading the request body".into()),
    }
}

/// [`read_limited`] without the timeout.
async fn read_inner(body: Incoming, limit: usize) -> BodyRead {
    let mut body = Limited::new(body, DRAIN_CAP);
    let mut buf = BytesMut::new();
    let mut too_large = false;
    loop {
        match body.frame().await {
            None => break,
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    if too_large || buf.len() + data.len() > limit {
                        too_large = true;
                        buf = BytesMut::new();
                    } else {
                        buf.extend_from_slice(&data);
                    }
                }
            }
            Some(Err(e)) => {
                if too_large || e.is::<http_body_util::LengthLimitError>() {
                    return BodyRead::TooLarge;
                }
                return BodyRead::Failed(e.to_string());
            }
        }
    }
    if too_large {
        BodyRead::TooLarge
    } else {
        BodyRead::Complete(buf.freeze())
    }
}

/// Reads and discards `body` (bounded by [`DRAIN_CAP`] and a short timeout)
/// so an early error response does not race a half-sent HTTP/1.1 body.
pub(crate) async fn drain(body: Incoming) {
    let drain = async {
        let mut body = Limited::new(body, DRAIN_CAP);
        while let Some(Ok(_)) = body.frame().await {}
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
}
