//! The client side of one HTTP/2 connection, sans IO: streams, flow control,
//! settings, HPACK contexts and the exchanges waiting on them.
//!
//! [`Connection`] is fed the bytes read from the socket ([`Connection::recv`])
//! and collects the bytes to write ([`Connection::take_output`]); callers
//! [`submit`](Connection::submit) requests and [`poll_response`](Connection::poll_response)
//! for their answers. The IO driver in `super` owns the socket and the lock
//! around this state; nothing here blocks, reads a clock or touches a socket.
//!
//! Invariants:
//! - stream ids are opened in increasing order, and header blocks are encoded in
//!   the order they are written (one HPACK encoder, one decoder per connection);
//!   once the last id (2^31-1) is used, the connection takes no new request,
//!   hands back the queued ones unprocessed and closes when its streams end;
//! - every header block received is decoded, even for a stream already gone,
//!   so the decoder's table stays in step with the server's;
//! - at most the server's `SETTINGS_MAX_CONCURRENT_STREAMS` streams are open,
//!   and one until its first SETTINGS frame arrives;
//!   further requests wait in a queue (the engine bounds how many), which a
//!   cancelled one leaves at once (a server may allow 0 streams);
//! - DATA is sent within both send windows, which never exceed 2^31-1 (a
//!   WINDOW_UPDATE or an INITIAL_WINDOW_SIZE change that would take one past
//!   it is a FLOW_CONTROL_ERROR); a body waiting for its own stream's window
//!   holds up no other, and the server's DATA is accepted
//!   within ours (connection window credited back as it is read; a stream's
//!   window is never credited, since no body accepted exceeds it:
//!   `Transport::new` refuses a larger `max_response_body`);
//! - an answer body is at most `max_body` bytes, a header block at most
//!   [`MAX_HEADER_BLOCK`] bytes, and an answer whose DATA does not add up to
//!   its `content-length` fails its stream (RFC 9113 §8.1.1);
//! - every exchange ends exactly once: with its answer, a stream error, or the
//!   connection's failure. A request the server cannot have acted on (refused,
//!   beyond a GOAWAY's last stream, or never sent) comes back inside its
//!   [`Failure`] so it can be sent again elsewhere.

use std::collections::{HashMap, VecDeque};
use std::task::{Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};

use super::frame::{self, flag, kind, setting, FrameHead, Reason, HEAD_LEN, MAX_WINDOW};
use super::hpack::{Decoder, Encoder};
use crate::transport::TransportErrorKind;

/// Our stream receive window (`SETTINGS_INITIAL_WINDOW_SIZE`): at least any
/// body we accept (`Transport::new` refuses a `max_response_body` above it),
/// so a stream never needs a WINDOW_UPDATE.
pub(crate) const STREAM_WINDOW: u32 = 1 << 20;
/// Our connection receive window, raised from 65,535 at the start.
pub(crate) const CONN_WINDOW: u32 = 4 << 20;
/// The largest header block accepted (HEADERS plus CONTINUATION).
pub(crate) const MAX_HEADER_BLOCK: usize = 64 * 1024;
/// Our HPACK decoder's table size (the protocol default; not announced).
const DECODER_TABLE: usize = 4096;
/// The highest stream id a client may open.
const MAX_STREAM_ID: u32 = (1 << 31) - 1;

/// A failed exchange.
#[derive(Debug)]
pub(crate) struct Failure {
    /// The class of failure.
    pub(crate) kind: TransportErrorKind,
    /// What happened (without the host; the pool adds it).
    pub(crate) message: String,
    /// The request, when the server cannot have acted on it: refused with
    /// `REFUSED_STREAM`, above a GOAWAY's last stream, or never sent.
    pub(crate) unprocessed: Option<Box<Request<Bytes>>>,
}

impl Failure {
    fn new(kind: TransportErrorKind, message: impl Into<String>) -> Self {
        Failure {
            kind,
            message: message.into(),
            unprocessed: None,
        }
    }

    fn unprocessed(
        kind: TransportErrorKind,
        message: impl Into<String>,
        req: Request<Bytes>,
    ) -> Self {
        Failure {
            kind,
            message: message.into(),
            unprocessed: Some(Box::new(req)),
        }
    }
}

/// Limits of one connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Config {
    /// Largest answer body, in bytes.
    pub(crate) max_body: usize,
}

type Outcome = Result<Response<Bytes>, Failure>;

/// Where one exchange stands.
enum Slot {
    /// Unused (index on the free list).
    Free,
    /// Waiting for the server's stream limit.
    Queued {
        req: Request<Bytes>,
        waker: Option<Waker>,
    },
    /// On the wire as `stream`.
    Open { stream: u32, waker: Option<Waker> },
    /// Finished; the caller has not picked the outcome up yet.
    Done(Outcome),
}

/// One open stream.
struct Stream {
    /// The exchange it carries.
    slot: usize,
    /// Kept until the answer's head arrives, so a refused stream can be sent again.
    req: Option<Request<Bytes>>,
    /// The request body not yet sent (waiting for window).
    unsent: Bytes,
    /// Our send window on this stream.
    send_window: i64,
    /// The answer's head, once read.
    head: Option<http::response::Parts>,
    /// The answer's body so far.
    body: BytesMut,
    /// DATA bytes received on this stream (against [`STREAM_WINDOW`]).
    received: usize,
    /// The answer's `content-length`: its DATA must add up to it (RFC 9113
    /// §8.1.1; not for 204, 304 or an answer to HEAD).
    content_length: Option<u64>,
}

/// A header block split over HEADERS and CONTINUATION frames.
struct Partial {
    stream: u32,
    block: BytesMut,
    end_stream: bool,
}

/// The client side of one HTTP/2 connection.
pub(crate) struct Connection {
    cfg: Config,
    enc: Encoder,
    dec: Decoder,
    /// Bytes to write, in order.
    out: BytesMut,
    /// A header block being encoded.
    scratch: BytesMut,
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// Exchanges waiting for a stream, oldest first.
    queue: VecDeque<usize>,
    streams: HashMap<u32, Stream, foldhash::fast::RandomState>,
    /// Streams whose body waits for send window, in order.
    blocked: VecDeque<u32>,
    next_id: u32,
    /// The server's settings.
    peer_max_streams: usize,
    /// The server's first SETTINGS frame has arrived.
    peer_settings_seen: bool,
    peer_initial_window: i64,
    peer_max_frame: usize,
    /// Our connection send window.
    send_window: i64,
    /// DATA bytes received and not yet credited back to the connection window.
    recv_unacked: u32,
    partial: Option<Partial>,
    /// Last stream id of the server's GOAWAY.
    goaway: Option<u32>,
    /// Why the connection failed, once it has.
    failed: Option<(TransportErrorKind, String)>,
    /// The server acknowledged our SETTINGS.
    settings_acked: bool,
    /// Our keep-alive PING awaiting its ACK.
    ping: Option<[u8; 8]>,
    pings_sent: u64,
    /// Nobody will submit again (the pool dropped the connection).
    abandoned: bool,
    /// Wakers of exchanges that finished, to wake once the lock is released.
    wake: Vec<Waker>,
    /// The IO driver's waker, and whether it was woken since its last poll.
    driver: Option<Waker>,
    driver_woken: bool,
}

impl Connection {
    /// A new connection; the preface, our SETTINGS and the connection window
    /// update are queued for writing.
    pub(crate) fn new(cfg: Config) -> Self {
        let mut out = BytesMut::with_capacity(16 * 1024);
        out.extend_from_slice(frame::PREFACE);
        frame::put_settings(
            &mut out,
            &[
                (setting::ENABLE_PUSH, 0),
                (setting::INITIAL_WINDOW_SIZE, STREAM_WINDOW),
                (setting::MAX_HEADER_LIST_SIZE, MAX_HEADER_BLOCK as u32),
            ],
        );
        frame::put_window_update(&mut out, 0, CONN_WINDOW - 65_535);
        Connection {
            cfg,
            enc: Encoder::new(),
            dec: Decoder::new(DECODER_TABLE),
            out,
            scratch: BytesMut::with_capacity(1024),
            slots: Vec::new(),
            free: Vec::new(),
            queue: VecDeque::new(),
            streams: HashMap::default(),
            blocked: VecDeque::new(),
            next_id: 1,
            // One stream until the server's SETTINGS arrive: a server whose
            // limit is lower may treat streams past it as a connection error
            // (python-h2 behind hypercorn answers GOAWAY PROTOCOL_ERROR), and
            // its SETTINGS come first, within the round trip of that stream.
            peer_max_streams: 1,
            peer_settings_seen: false,
            peer_initial_window: 65_535,
            peer_max_frame: frame::DEFAULT_MAX_FRAME,
            send_window: 65_535,
            recv_unacked: 0,
            partial: None,
            goaway: None,
            failed: None,
            settings_acked: false,
            ping: None,
            pings_sent: 0,
            abandoned: false,
            wake: Vec::new(),
            driver: None,
            driver_woken: false,
        }
    }

    /// New requests can be sent on this connection.
    pub(crate) fn accepts_streams(&self) -> bool {
        self.failed.is_none() && self.goaway.is_none() && self.next_id <= MAX_STREAM_ID
    }

    /// The connection has nothing left to do and can be closed once its
    /// output is written: it failed, or it takes no new streams (GOAWAY,
    /// ids used up, or abandoned by the pool) and none is open or queued.
    pub(crate) fn is_finished(&self) -> bool {
        self.failed.is_some()
            || ((!self.accepts_streams() || self.abandoned)
                && self.streams.is_empty()
                && self.queue.is_empty())
    }

    /// Sends `req` (absolute URI) as soon as the server's stream limit allows.
    /// Returns the key to poll its answer with.
    pub(crate) fn submit(&mut self, req: Request<Bytes>) -> Result<usize, Failure> {
        if !self.accepts_streams() {
            let why = match &self.failed {
                Some((_, m)) => format!("the connection had failed: {m}"),
                None => "the connection takes no new streams".to_string(),
            };
            return Err(Failure::unprocessed(TransportErrorKind::Broken, why, req));
        }
        let key = self.alloc(Slot::Queued { req, waker: None });
        self.queue.push_back(key);
        self.open_queued();
        Ok(key)
    }

    /// The answer of `key`, once there is one; until then `waker` is woken when
    /// it arrives. After `Ready` the key is spent.
    pub(crate) fn poll_response(&mut self, key: usize, waker: &Waker) -> Poll<Outcome> {
        let Some(slot) = self.slots.get_mut(key) else {
            return Poll::Ready(Err(lost()));
        };
        match slot {
            Slot::Queued { waker: w, .. } | Slot::Open { waker: w, .. } => {
                match w {
                    Some(w) if w.will_wake(waker) => {}
                    _ => *w = Some(waker.clone()),
                }
                Poll::Pending
            }
            Slot::Done(_) => {
                let Slot::Done(outcome) = std::mem::replace(slot, Slot::Free) else {
                    return Poll::Ready(Err(lost()));
                };
                self.free.push(key);
                Poll::Ready(outcome)
            }
            Slot::Free => Poll::Ready(Err(lost())),
        }
    }

    /// The caller of `key` went away: its stream is reset (CANCEL) if open;
    /// if queued, it leaves the queue at once (a server may allow 0 streams,
    /// and then nothing is ever dequeued).
    pub(crate) fn cancel(&mut self, key: usize) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        match slot {
            Slot::Queued { .. } => {
                *slot = Slot::Free;
                self.free.push(key);
                self.queue.retain(|&k| k != key);
            }
            Slot::Open { stream, .. } => {
                let id = *stream;
                *slot = Slot::Free;
                self.free.push(key);
                if self.remove_stream(id).is_some() && self.failed.is_none() {
                    frame::put_rst_stream(&mut self.out, id, Reason::CANCEL);
                }
                self.open_queued();
            }
            Slot::Done(_) => {
                *slot = Slot::Free;
                self.free.push(key);
            }
            Slot::Free => {}
        }
    }

    /// The pool dropped this connection: close it once its streams are done.
    pub(crate) fn abandon(&mut self) {
        self.abandoned = true;
    }

    /// Registers the IO driver's waker (at the start of each of its polls).
    pub(crate) fn set_driver(&mut self, waker: &Waker) {
        self.driver_woken = false;
        match &self.driver {
            Some(w) if w.will_wake(waker) => {}
            _ => self.driver = Some(waker.clone()),
        }
    }

    /// The driver's waker, when it has work (output to write or the
    /// connection to close) and was not woken yet since its last poll.
    pub(crate) fn driver_to_wake(&mut self) -> Option<Waker> {
        if self.driver_woken || (self.out.is_empty() && !self.is_finished()) {
            return None;
        }
        self.driver_woken = true;
        self.driver.clone()
    }

    /// Moves the bytes to write into `dst`.
    pub(crate) fn take_output(&mut self, dst: &mut BytesMut) {
        if dst.is_empty() {
            std::mem::swap(dst, &mut self.out);
        } else {
            dst.extend_from_slice(&self.out);
            self.out.clear();
        }
    }

    /// Moves the wakers of finished exchanges into `dst`.
    pub(crate) fn take_wakers(&mut self, dst: &mut Vec<Waker>) {
        dst.append(&mut self.wake);
    }

    /// Queues a keep-alive PING.
    pub(crate) fn send_ping(&mut self) {
        self.pings_sent += 1;
        let data = self.pings_sent.to_be_bytes();
        self.ping = Some(data);
        frame::put_ping(&mut self.out, false, data);
    }

    /// A PING was sent and not acknowledged yet.
    pub(crate) fn ping_outstanding(&self) -> bool {
        self.ping.is_some()
    }

    /// Our SETTINGS are not acknowledged yet.
    pub(crate) fn settings_pending(&self) -> bool {
        !self.settings_acked
    }

    /// The server did not acknowledge our SETTINGS within `after`: queues
    /// GOAWAY (SETTINGS_TIMEOUT, RFC 9113 §6.5.3) and fails the connection
    /// (requests not sent yet come back unprocessed).
    pub(crate) fn settings_timed_out(&mut self, after: std::time::Duration) {
        if self.failed.is_some() {
            return;
        }
        frame::put_goaway(&mut self.out, 0, Reason::SETTINGS_TIMEOUT);
        let m = format!("the server did not acknowledge our SETTINGS within {after:?}");
        self.fail(TransportErrorKind::Timeout, &m);
    }

    /// Queues a GOAWAY (NO_ERROR) before an orderly close.
    pub(crate) fn close(&mut self) {
        if self.failed.is_none() {
            frame::put_goaway(&mut self.out, 0, Reason::NO_ERROR);
            self.fail(TransportErrorKind::Broken, "the connection was closed");
        }
    }

    /// The connection failed below HTTP/2 (IO error, EOF, keep-alive timeout):
    /// every exchange ends. Those never sent come back as unprocessed.
    pub(crate) fn fail(&mut self, kind: TransportErrorKind, message: &str) {
        if self.failed.is_some() {
            return;
        }
        self.failed = Some((kind, message.to_string()));
        self.partial = None;
        self.blocked.clear();
        self.hand_back_queued(kind, &format!("not sent: {message}"));
        let streams: Vec<(u32, Stream)> = self.streams.drain().collect();
        for (_, s) in streams {
            self.complete(s.slot, Err(Failure::new(kind, message)));
        }
    }

    /// Processes every complete frame at the front of `input` (which keeps any
    /// partial frame). A connection error is answered with GOAWAY and fails
    /// every exchange; reading further is pointless afterwards.
    pub(crate) fn recv(&mut self, input: &mut BytesMut) {
        while self.failed.is_none() {
            let Some(head) = FrameHead::parse(input) else {
                break;
            };
            if head.len > frame::DEFAULT_MAX_FRAME {
                self.conn_error(
                    Reason::FRAME_SIZE_ERROR,
                    format!(
                        "a frame of {} bytes (limit {})",
                        head.len,
                        frame::DEFAULT_MAX_FRAME
                    ),
                );
                break;
            }
            if input.len() < HEAD_LEN + head.len {
                input.reserve(HEAD_LEN + head.len - input.len());
                break;
            }
            self.frame(head, &input[HEAD_LEN..HEAD_LEN + head.len]);
            input.advance(HEAD_LEN + head.len);
        }
        if self.failed.is_none() {
            if self.recv_unacked >= CONN_WINDOW / 2 {
                frame::put_window_update(&mut self.out, 0, self.recv_unacked);
                self.recv_unacked = 0;
            }
            self.open_queued();
        }
    }

    fn frame(&mut self, head: FrameHead, payload: &[u8]) {
        if let Some(p) = &self.partial {
            if head.kind != kind::CONTINUATION || head.stream != p.stream {
                return self.conn_error(
                    Reason::PROTOCOL_ERROR,
                    "a frame arrived in the middle of a header block",
                );
            }
        }
        match head.kind {
            kind::DATA => self.data(head, payload),
            kind::HEADERS => self.headers(head, payload),
            kind::CONTINUATION => self.continuation(head, payload),
            kind::RST_STREAM => self.rst_stream(head, payload),
            kind::SETTINGS => self.settings(head, payload),
            kind::PING => self.ping(head, payload),
            kind::GOAWAY => self.goaway(head, payload),
            kind::WINDOW_UPDATE => self.window_update(head, payload),
            kind::PUSH_PROMISE => self.conn_error(
                Reason::PROTOCOL_ERROR,
                "PUSH_PROMISE although push is disabled",
            ),
            // Priorities are advisory; unknown types are ignored (RFC 9113 §5.5).
            kind::PRIORITY => {}
            _ => {}
        }
    }

    /// A frame on a stream we have no record of: fine for a stream that was
    /// open once (it ended or was cancelled); a connection error for one never
    /// opened or opened by the server.
    fn unknown_stream(&mut self, id: u32, what: &str) {
        if id.is_multiple_of(2) || id >= self.next_id {
            self.conn_error(
                Reason::PROTOCOL_ERROR,
                format!("{what} on stream {id}, which was never opened"),
            );
        }
    }

    fn data(&mut self, head: FrameHead, payload: &[u8]) {
        if head.stream == 0 {
            return self.conn_error(Reason::PROTOCOL_ERROR, "DATA on stream 0");
        }
        // Counts against the connection window whatever happens to the stream.
        self.recv_unacked = self.recv_unacked.saturating_add(head.len as u32);
        if self.recv_unacked > CONN_WINDOW {
            return self.conn_error(
                Reason::FLOW_CONTROL_ERROR,
                "DATA beyond the connection window",
            );
        }
        let (start, end) = match frame::strip_padding(&head, payload) {
            Ok(r) => r,
            Err(e) => return self.conn_error(Reason::PROTOCOL_ERROR, e),
        };
        let max_body = self.cfg.max_body;
        let Some(s) = self.streams.get_mut(&head.stream) else {
            return self.unknown_stream(head.stream, "DATA");
        };
        s.received += head.len;
        let error = if s.head.is_none() {
            Some((
                Reason::PROTOCOL_ERROR,
                "DATA before the answer's HEADERS".to_string(),
            ))
        } else if s.received > STREAM_WINDOW as usize {
            Some((
                Reason::FLOW_CONTROL_ERROR,
                "DATA beyond the stream window".to_string(),
            ))
        } else if s.body.len() + (end - start) > max_body {
            Some((
                Reason::CANCEL,
                format!("answer body longer than {max_body} bytes"),
            ))
        } else if let Some(n) = s
            .content_length
            .filter(|&n| (s.body.len() + (end - start)) as u64 > n)
        {
            Some((
                Reason::PROTOCOL_ERROR,
                format!("an answer body longer than its content-length ({n})"),
            ))
        } else {
            s.body.extend_from_slice(&payload[start..end]);
            None
        };
        match error {
            Some((reason, message)) => self.stream_error(head.stream, reason, message),
            None if head.has(flag::END_STREAM) => self.finish(head.stream),
            None => {}
        }
    }

    fn headers(&mut self, head: FrameHead, payload: &[u8]) {
        if head.stream == 0 {
            return self.conn_error(Reason::PROTOCOL_ERROR, "HEADERS on stream 0");
        }
        let range = match frame::headers_fragment(&head, payload) {
            Ok(r) => r,
            Err(e) => return self.conn_error(Reason::PROTOCOL_ERROR, e),
        };
        let end_stream = head.has(flag::END_STREAM);
        if head.has(flag::END_HEADERS) {
            self.header_block(head.stream, &payload[range], end_stream);
        } else {
            self.partial = Some(Partial {
                stream: head.stream,
                block: BytesMut::from(&payload[range]),
                end_stream,
            });
        }
    }

    fn continuation(&mut self, head: FrameHead, payload: &[u8]) {
        let Some(mut p) = self.partial.take() else {
            return self.conn_error(
                Reason::PROTOCOL_ERROR,
                "CONTINUATION without a header block before it",
            );
        };
        if p.block.len() + payload.len() > MAX_HEADER_BLOCK {
            return self.conn_error(
                Reason::ENHANCE_YOUR_CALM,
                format!("a header block over {MAX_HEADER_BLOCK} bytes"),
            );
        }
        p.block.extend_from_slice(payload);
        if head.has(flag::END_HEADERS) {
            self.header_block(p.stream, &p.block, p.end_stream);
        } else {
            self.partial = Some(p);
        }
    }

    fn header_block(&mut self, id: u32, block: &[u8], end_stream: bool) {
        // Decoded first and always, to keep the HPACK context in step.
        let decoded = match self.dec.decode(block, MAX_HEADER_BLOCK) {
            Ok(d) => d,
            Err(e) => return self.conn_error(Reason::COMPRESSION_ERROR, e.to_string()),
        };
        let Some(s) = self.streams.get_mut(&id) else {
            return self.unknown_stream(id, "HEADERS");
        };
        let problem = if let Some(m) = decoded.malformed {
            Some(format!("malformed answer headers: {m}"))
        } else if s.head.is_some() {
            // Trailers: accepted and dropped; they must end the stream.
            (!end_stream).then(|| "a second header block that does not end the stream".to_string())
        } else {
            match decoded.status {
                None => Some("an answer without :status".to_string()),
                Some(st) if st == StatusCode::SWITCHING_PROTOCOLS => {
                    Some("101 Switching Protocols over HTTP/2".to_string())
                }
                Some(st) if st.is_informational() => {
                    // 1xx: wait for the final answer.
                    end_stream.then(|| "an informational answer that ends the stream".to_string())
                }
                Some(st) => match content_length(&decoded.headers) {
                    Err(m) => Some(m.to_string()),
                    // A length without a body is malformed (but 204 and 304
                    // describe a body not sent, as does an answer to HEAD).
                    Ok(len) => {
                        let bodiless = st == StatusCode::NO_CONTENT
                            || st == StatusCode::NOT_MODIFIED
                            || s.req.as_ref().is_some_and(|r| r.method() == Method::HEAD);
                        let len = len.filter(|_| !bodiless);
                        if end_stream && len.is_some_and(|n| n > 0) {
                            Some("a content-length above 0 on an answer without a body".to_string())
                        } else {
                            s.content_length = len;
                            let mut r = Response::new(());
                            *r.status_mut() = st;
                            *r.version_mut() = Version::HTTP_2;
                            *r.headers_mut() = decoded.headers;
                            s.head = Some(r.into_parts().0);
                            s.req = None;
                            None
                        }
                    }
                },
            }
        };
        match problem {
            Some(m) => self.stream_error(id, Reason::PROTOCOL_ERROR, m),
            None if end_stream => self.finish(id),
            None => {}
        }
    }

    fn rst_stream(&mut self, head: FrameHead, payload: &[u8]) {
        let Some(code) = frame::u32_at(payload, 0).filter(|_| head.len == 4) else {
            return self.conn_error(Reason::FRAME_SIZE_ERROR, "RST_STREAM of the wrong size");
        };
        if head.stream == 0 {
            return self.conn_error(Reason::PROTOCOL_ERROR, "RST_STREAM on stream 0");
        }
        let reason = Reason(code);
        let Some(mut s) = self.remove_stream(head.stream) else {
            return self.unknown_stream(head.stream, "RST_STREAM");
        };
        let f = match s.req.take() {
            Some(req) if reason == Reason::REFUSED_STREAM => Failure::unprocessed(
                TransportErrorKind::Broken,
                "the server refused the stream (REFUSED_STREAM)",
                req,
            ),
            _ => Failure::new(
                TransportErrorKind::Protocol,
                format!("the server reset the stream: {reason}"),
            ),
        };
        self.complete(s.slot, Err(f));
    }

    fn settings(&mut self, head: FrameHead, payload: &[u8]) {
        if head.stream != 0 {
            return self.conn_error(Reason::PROTOCOL_ERROR, "SETTINGS on a stream");
        }
        if head.has(flag::ACK) {
            if head.len != 0 {
                self.conn_error(Reason::FRAME_SIZE_ERROR, "SETTINGS ACK with a payload");
            }
            self.settings_acked = true;
            return;
        }
        let values = match frame::settings(payload) {
            Ok(v) => v,
            Err(e) => return self.conn_error(Reason::FRAME_SIZE_ERROR, e),
        };
        let mut grew = false;
        if !self.peer_settings_seen {
            // The limit the server names, or, when it names none, RFC 9113's
            // recommended minimum of 100 as our own cap.
            self.peer_settings_seen = true;
            self.peer_max_streams = 100;
        }
        for (id, v) in values {
            match id {
                setting::HEADER_TABLE_SIZE => self.enc.set_max_table_size(v as usize),
                // A server must not enable push (RFC 9113 §6.5.2): 1 is an
                // error from it, as is any value but 0 or 1 from anyone.
                setting::ENABLE_PUSH if v != 0 => {
                    return self.conn_error(
                        Reason::PROTOCOL_ERROR,
                        format!("SETTINGS_ENABLE_PUSH {v} from the server"),
                    )
                }
                setting::MAX_CONCURRENT_STREAMS => {
                    grew |= v as usize > self.peer_max_streams;
                    self.peer_max_streams = v as usize;
                }
                setting::INITIAL_WINDOW_SIZE => {
                    let v = i64::from(v);
                    if v > MAX_WINDOW {
                        return self.conn_error(
                            Reason::FLOW_CONTROL_ERROR,
                            "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1",
                        );
                    }
                    let delta = v - self.peer_initial_window;
                    self.peer_initial_window = v;
                    let mut over = false;
                    for s in self.streams.values_mut() {
                        s.send_window += delta;
                        over |= s.send_window > MAX_WINDOW;
                    }
                    if over {
                        // RFC 9113 §6.9.2: a connection error.
                        return self.conn_error(
                            Reason::FLOW_CONTROL_ERROR,
                            "SETTINGS_INITIAL_WINDOW_SIZE took a stream's send window above 2^31-1",
                        );
                    }
                    grew |= delta > 0;
                }
                setting::MAX_FRAME_SIZE => {
                    if !(16_384..=16_777_215).contains(&v) {
                        return self.conn_error(
                            Reason::PROTOCOL_ERROR,
                            "SETTINGS_MAX_FRAME_SIZE out of range",
                        );
                    }
                    self.peer_max_frame = v as usize;
                }
                // MAX_HEADER_LIST_SIZE is advisory; our request heads are small.
                _ => {}
            }
        }
        frame::put_settings_ack(&mut self.out);
        if grew {
            self.unblock();
        }
    }

    fn ping(&mut self, head: FrameHead, payload: &[u8]) {
        let Ok(data) = <[u8; 8]>::try_from(payload) else {
            return self.conn_error(Reason::FRAME_SIZE_ERROR, "PING of the wrong size");
        };
        if head.stream != 0 {
            return self.conn_error(Reason::PROTOCOL_ERROR, "PING on a stream");
        }
        if !head.has(flag::ACK) {
            frame::put_ping(&mut self.out, true, data);
        } else if self.ping == Some(data) {
            self.ping = None;
        }
    }

    fn goaway(&mut self, head: FrameHead, payload: &[u8]) {
        if head.stream != 0 {
            return self.conn_error(Reason::PROTOCOL_ERROR, "GOAWAY on a stream");
        }
        let (Some(last), Some(code)) = (frame::u32_at(payload, 0), frame::u32_at(payload, 4))
        else {
            return self.conn_error(Reason::FRAME_SIZE_ERROR, "GOAWAY shorter than 8 bytes");
        };
        let last = last & 0x7fff_ffff;
        let last = self.goaway.map_or(last, |prev| prev.min(last));
        self.goaway = Some(last);
        let reason = Reason(code);
        let why = format!("the server is closing the connection (GOAWAY {reason})");
        // Streams above `last` were not processed: they can go elsewhere.
        let refused: Vec<u32> = self
            .streams
            .keys()
            .copied()
            .filter(|&id| id > last)
            .collect();
        for id in refused {
            if let Some(mut s) = self.remove_stream(id) {
                let f = match s.req.take() {
                    Some(req) => Failure::unprocessed(TransportErrorKind::Broken, why.clone(), req),
                    None => Failure::new(TransportErrorKind::Broken, why.clone()),
                };
                self.complete(s.slot, Err(f));
            }
        }
        self.hand_back_queued(TransportErrorKind::Broken, &why);
    }

    fn window_update(&mut self, head: FrameHead, payload: &[u8]) {
        let Some(inc) = frame::u32_at(payload, 0).filter(|_| head.len == 4) else {
            return self.conn_error(Reason::FRAME_SIZE_ERROR, "WINDOW_UPDATE of the wrong size");
        };
        let inc = i64::from(inc & 0x7fff_ffff);
        if head.stream == 0 {
            if inc == 0 {
                return self.conn_error(Reason::PROTOCOL_ERROR, "WINDOW_UPDATE of 0");
            }
            self.send_window += inc;
            if self.send_window > MAX_WINDOW {
                return self
                    .conn_error(Reason::FLOW_CONTROL_ERROR, "connection window above 2^31-1");
            }
        } else {
            let Some(s) = self.streams.get_mut(&head.stream) else {
                return self.unknown_stream(head.stream, "WINDOW_UPDATE");
            };
            s.send_window += inc;
            if inc == 0 {
                return self.stream_error(
                    head.stream,
                    Reason::PROTOCOL_ERROR,
                    "WINDOW_UPDATE of 0".into(),
                );
            }
            if s.send_window > MAX_WINDOW {
                return self.stream_error(
                    head.stream,
                    Reason::FLOW_CONTROL_ERROR,
                    "stream window above 2^31-1".into(),
                );
            }
        }
        self.unblock();
    }

    /// Opens queued exchanges while the server's stream limit allows. Once
    /// the last stream id is used, what still waits can only go on another
    /// connection, so it is handed back at once (it would wait forever here).
    fn open_queued(&mut self) {
        while self.streams.len() < self.peer_max_streams && self.accepts_streams() {
            let Some(key) = self.queue.pop_front() else {
                break;
            };
            if let Some(req) = self.take_queued(key) {
                self.open(key, req);
            }
        }
        if self.next_id > MAX_STREAM_ID && !self.queue.is_empty() {
            self.hand_back_queued(
                TransportErrorKind::Broken,
                "not sent: the connection's stream ids are used up",
            );
        }
    }

    /// Ends every queued exchange with its request handed back unprocessed
    /// (it was never sent), so the pool can send it on another connection.
    fn hand_back_queued(&mut self, kind: TransportErrorKind, why: &str) {
        for key in std::mem::take(&mut self.queue) {
            if let Some(req) = self.take_queued(key) {
                let f = Failure::unprocessed(kind, why.to_string(), req);
                self.complete(key, Err(f));
            }
        }
    }

    /// Makes the next stream opened use `id` (odd), as if the ids below it
    /// had been used: the tests reach the end of the id space this way.
    #[cfg(test)]
    pub(crate) fn skip_stream_ids_to(&mut self, id: u32) {
        debug_assert!(id % 2 == 1 && id >= self.next_id);
        self.next_id = id;
    }

    /// How many streams wait for send window to send their body.
    #[cfg(test)]
    pub(crate) fn blocked_streams(&self) -> usize {
        self.blocked.len()
    }

    /// Takes the request out of a queued slot.
    fn take_queued(&mut self, key: usize) -> Option<Request<Bytes>> {
        let slot = self.slots.get_mut(key)?;
        match std::mem::replace(slot, Slot::Free) {
            Slot::Queued { req, waker } => {
                *slot = Slot::Open { stream: 0, waker };
                Some(req)
            }
            other => {
                *slot = other;
                None
            }
        }
    }

    /// Writes the request's HEADERS (and DATA, as far as the windows allow).
    fn open(&mut self, key: usize, req: Request<Bytes>) {
        let id = self.next_id;
        self.next_id += 2;
        self.scratch.clear();
        self.enc.encode_request_of(&req, &mut self.scratch);
        let body = req.body().clone();
        frame::put_headers(
            &mut self.out,
            id,
            &self.scratch,
            body.is_empty(),
            self.peer_max_frame,
        );
        if let Some(Slot::Open { stream, .. }) = self.slots.get_mut(key) {
            *stream = id;
        }
        self.streams.insert(
            id,
            Stream {
                slot: key,
                req: Some(req),
                unsent: body,
                send_window: self.peer_initial_window,
                head: None,
                body: BytesMut::new(),
                received: 0,
                content_length: None,
            },
        );
        if !self.send_body(id) {
            self.blocked.push_back(id);
        }
    }

    /// Sends as much of a stream's body as the windows allow; true when all is sent.
    fn send_body(&mut self, id: u32) -> bool {
        let Some(s) = self.streams.get_mut(&id) else {
            return true;
        };
        while !s.unsent.is_empty() {
            let room = self
                .send_window
                .min(s.send_window)
                .min(self.peer_max_frame as i64);
            if room <= 0 {
                return false;
            }
            let n = s.unsent.len().min(room as usize);
            let last = n == s.unsent.len();
            frame::put_data(&mut self.out, id, &s.unsent[..n], last);
            s.unsent.advance(n);
            s.send_window -= n as i64;
            self.send_window -= n as i64;
        }
        true
    }

    /// Sends bodies that were waiting for window, in order, as far as the
    /// connection window allows. Flow control is per stream (RFC 9113
    /// §5.2): a stream still without window of its own keeps its place and
    /// the ones behind it go on. Called whenever a window grows, so a body
    /// that can go never waits.
    fn unblock(&mut self) {
        for id in std::mem::take(&mut self.blocked) {
            if !self.send_body(id) {
                self.blocked.push_back(id);
            }
        }
    }

    /// Takes stream `id` out of the connection's records (its body, if some
    /// is unsent, no longer waits for window).
    fn remove_stream(&mut self, id: u32) -> Option<Stream> {
        let s = self.streams.remove(&id)?;
        if !s.unsent.is_empty() {
            self.blocked.retain(|&b| b != id);
        }
        Some(s)
    }

    /// The answer on `id` is complete.
    fn finish(&mut self, id: u32) {
        let short = self.streams.get(&id).and_then(|s| {
            s.content_length
                .filter(|&n| n != s.body.len() as u64)
                .map(|n| (n, s.body.len()))
        });
        if let Some((n, got)) = short {
            let m = format!("an answer body of {got} bytes, its content-length {n}");
            return self.stream_error(id, Reason::PROTOCOL_ERROR, m);
        }
        let Some(s) = self.remove_stream(id) else {
            return;
        };
        if !s.unsent.is_empty() {
            // Answered before we sent all of the body: stop sending it.
            frame::put_rst_stream(&mut self.out, id, Reason::NO_ERROR);
        }
        let outcome = match s.head {
            Some(head) => Ok(Response::from_parts(head, s.body.freeze())),
            None => Err(Failure::new(
                TransportErrorKind::Protocol,
                "the stream ended without an answer",
            )),
        };
        self.complete(s.slot, outcome);
    }

    /// Resets stream `id` and ends its exchange with `message`.
    fn stream_error(&mut self, id: u32, reason: Reason, message: String) {
        frame::put_rst_stream(&mut self.out, id, reason);
        if let Some(s) = self.remove_stream(id) {
            self.complete(
                s.slot,
                Err(Failure::new(TransportErrorKind::Protocol, message)),
            );
        }
    }

    /// A connection error: GOAWAY with `reason`, and every exchange ends.
    fn conn_error(&mut self, reason: Reason, message: impl Into<String>) {
        if self.failed.is_some() {
            return;
        }
        frame::put_goaway(&mut self.out, 0, reason);
        let message = format!("{} ({reason})", message.into());
        self.fail(TransportErrorKind::Protocol, &message);
    }

    fn complete(&mut self, key: usize, outcome: Outcome) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        if let Slot::Queued { waker, .. } | Slot::Open { waker, .. } =
            std::mem::replace(slot, Slot::Done(outcome))
        {
            if let Some(w) = waker {
                self.wake.push(w);
            }
        }
    }

    fn alloc(&mut self, slot: Slot) -> usize {
        match self.free.pop() {
            Some(key) => {
                self.slots[key] = slot;
                key
            }
            None => {
                self.slots.push(slot);
                self.slots.len() - 1
            }
        }
    }
}

/// The answer's `content-length`: every value the same number of at most 19
/// digits (RFC 9110 §8.6), or none.
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, &'static str> {
    let mut len = None;
    for v in headers.get_all(http::header::CONTENT_LENGTH) {
        let n = crate::transport::content_length_value(v.as_bytes())
            .ok_or("an invalid content-length")?;
        if len.is_some_and(|l| l != n) {
            return Err("content-length values that differ");
        }
        len = Some(n);
    }
    Ok(len)
}

fn lost() -> Failure {
    Failure::new(
        TransportErrorKind::Protocol,
        "the exchange's record was lost (a bug in the HTTP/2 client)",
    )
}
