//! A differential test: our HTTP/2 client against the `h2` crate's client,
//! fed the same server byte streams.
//!
//! A scenario is a server script: segments of raw server bytes, each written
//! once the client has sent its k-th HEADERS frame (request k), and a plan of
//! requests, sent one after the other (each after the previous one ended) or
//! all at once. Both clients send the same POST (so stream ids 1, 3, 5, ...
//! line up), then one more, the probe, which tells whether the connection
//! still takes requests. The scripted server reads what the client sends only
//! to count HEADERS frames and to note the frames that carry the client's
//! verdicts (RST_STREAM, GOAWAY other than NO_ERROR, PING and SETTINGS
//! acknowledgements); it never answers according to them.
//!
//! Each exchange becomes an [`Outcome`]: the answer (status, headers in
//! `HeaderMap` order, body), or a class of failure (reset by the server,
//! beyond the server's GOAWAY, a protocol error the client found, the
//! connection closed under it, not sent at all, no answer in time). The two
//! clients' outcomes and signals must be equal, or the scenario names the
//! difference, why it is legitimate, and asserts exactly that difference.
//! Everything runs on a paused clock (virtual time; a scenario that hangs
//! fails at [`SCENARIO_BOUND`]), and every scenario also states what our
//! client must make of it, so two clients that fail the same way do not pass.
//!
//! Three sources of server bytes, 276 cases in all:
//! - 70 hand-built scenarios ([`scenarios`]): each frame type and the edge
//!   cases of the exchange (padding, CONTINUATION, HPACK Huffman, table use
//!   and size updates, trailers, 1xx, interleaved streams, RST_STREAM,
//!   GOAWAY, connection errors, malformed answers, content-length, SETTINGS
//!   changes, PING, WINDOW_UPDATE, unknown frames, EOF);
//! - 6 recordings of real servers ([`recordings`]; tests/data/h2-recordings/,
//!   made by `record_h2_sessions` in tests/interop_servers.rs): nginx, nghttpd
//!   and the emulator, replayed with the gates at which they were recorded;
//! - 200 seeded cases of a generator of valid answer sequences
//!   ([`generated_case`]): random statuses, header lists and representations
//!   (Huffman or not, indexed, inserted, never indexed, names from either
//!   table), table size updates, header blocks split over CONTINUATION, with
//!   padding and priority, bodies split over DATA frames (empty ones too),
//!   padding, trailers, streams interleaved, PING, SETTINGS, WINDOW_UPDATE and
//!   unknown frames between them, and server writes cut into random pieces.
//!   Besides agreeing, our client must return exactly what was sent.
//!
//! Differences kept (17 of the 70 scenarios; each asserted as it is):
//! - an answer body over `max_body`: ours resets the stream (CANCEL), `h2`
//!   has no such cap;
//! - an HPACK decoding error: ours closes with COMPRESSION_ERROR (RFC 9113
//!   §4.3), `h2` with PROTOCOL_ERROR (4 scenarios);
//! - a SETTINGS frame of a bad length, a PING of 7 bytes: ours closes with
//!   FRAME_SIZE_ERROR (RFC 9113 §6.5, §6.7), `h2` with PROTOCOL_ERROR (2);
//! - a bad head (no `:status`, 101, a 1xx, a content-length, a header list
//!   over 64 KiB) on HEADERS that also end the stream: the same outcome, but
//!   ours also sends RST_STREAM for the stream, `h2` nothing (6);
//! - an uppercase field name, a newline in a value, a two-digit status, DATA
//!   before HEADERS: ours fails the stream (a malformed answer, RFC 9113
//!   §8.1.1) and the connection goes on, `h2` fails the connection (4).
//!
//! Not compared: the GOAWAY(NO_ERROR) a client sends as it closes (ours
//! sends it once the server's GOAWAY left it nothing to do, `h2` when its
//! handle is dropped), and trailers (ours drops them; `h2`'s are read and
//! dropped too).
//!
//! Found here: our client accepted an answer whose `content-length` did not
//! match its DATA, or was not a number (RFC 9113 §8.1.1: a malformed
//! response, which a client must not accept); it now fails that stream with
//! PROTOCOL_ERROR, as `h2` does.

use std::sync::Mutex;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::super::huffman;
use super::super::Http2Conn;
use super::*;

/// What one exchange may take (virtual time); below the client's SETTINGS
/// timeout and keep-alive interval, so neither fires within a scenario.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// What the probe after the plan may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// No scenario may take longer than this (virtual time).
const SCENARIO_BOUND: Duration = Duration::from_secs(60);
/// The request body both clients send.
const BODY: &[u8] = b"wake";
/// The answer body cap of our client in these scenarios.
const MAX_BODY: usize = 64 * 1024;
/// Room in each direction of the in-memory pipe.
const PIPE: usize = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

/// Asserts a difference (ours, then h2's run); panics when it is not so.
type Check = Box<dyn Fn(&Run, &Run)>;

/// A legitimate difference between the clients, asserted as it is.
struct Difference {
    /// Why the clients differ here.
    why: &'static str,
    /// Asserts the difference (ours, then h2's run).
    check: Check,
}

/// A server script and the requests it answers.
struct Scenario {
    name: String,
    /// Bytes written once the client has sent this many HEADERS frames.
    segments: Vec<(usize, Vec<u8>)>,
    /// Requests in the plan (the probe comes on top).
    requests: usize,
    /// All requests at once (else each after the previous one ended).
    concurrent: bool,
    /// The server closes its side after the last segment.
    close: bool,
    /// Our client's answer body cap.
    max_body: usize,
    /// Each segment is written in pieces of at most this many bytes, with a
    /// yield between them (0: in one write).
    chunk: usize,
    /// What our client must make of it, one word per exchange (the probe
    /// last): a status, `rst:CODE`, `goaway:CODE`, `error`, `closed`,
    /// `notsent` or `timeout`.
    expect: String,
    differ: Option<Difference>,
}

impl Scenario {
    /// A scenario whose server starts with SETTINGS (100 streams) and the
    /// acknowledgement of the client's.
    fn new(name: &str, requests: usize, expect: &str) -> Self {
        let mut sc = Scenario::bare(name, requests, expect);
        sc.segments.push((0, hello()));
        sc
    }

    /// A scenario without the server's opening frames.
    fn bare(name: &str, requests: usize, expect: &str) -> Self {
        Scenario {
            name: name.to_string(),
            segments: Vec::new(),
            requests,
            concurrent: false,
            close: false,
            max_body: MAX_BODY,
            chunk: 0,
            expect: expect.to_string(),
            differ: None,
        }
    }

    /// Writes `bytes` once the client has sent `gate` HEADERS frames.
    fn at(mut self, gate: usize, bytes: Vec<u8>) -> Self {
        self.segments.push((gate, bytes));
        self
    }

    fn concurrent(mut self) -> Self {
        self.concurrent = true;
        self
    }

    fn close(mut self) -> Self {
        self.close = true;
        self
    }

    fn differ(mut self, why: &'static str, check: impl Fn(&Run, &Run) + 'static) -> Self {
        self.differ = Some(Difference {
            why,
            check: Box::new(check),
        });
        self
    }
}

// ---------------------------------------------------------------------------------------------
// Outcomes
// ---------------------------------------------------------------------------------------------

/// What one client made of one exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// The answer: status, headers (lowercase names in `HeaderMap` order:
    /// by first appearance, each name's values in arrival order), body.
    Answer {
        status: u16,
        headers: Vec<(String, Vec<u8>)>,
        body: Vec<u8>,
    },
    /// The server reset the stream with this code.
    ResetByServer(u32),
    /// The stream was above the last stream of the server's GOAWAY (code).
    GoAway(u32),
    /// The client found a protocol error (in the stream or the connection;
    /// the signals tell which and the code).
    ProtocolError,
    /// The connection ended under the exchange (EOF).
    Closed,
    /// The request was never sent: the connection takes no new streams.
    NotSent,
    /// No outcome within the exchange's timeout.
    Timeout,
    /// Anything else (no scenario expects it, so it always fails).
    Other(String),
}

impl Outcome {
    /// One word for the scenario's `expect`.
    fn word(&self) -> String {
        let code = |c: u32| Reason(c).name().to_string();
        match self {
            Outcome::Answer { status, .. } => status.to_string(),
            Outcome::ResetByServer(c) => format!("rst:{}", code(*c)),
            Outcome::GoAway(c) => format!("goaway:{}", code(*c)),
            Outcome::ProtocolError => "error".into(),
            Outcome::Closed => "closed".into(),
            Outcome::NotSent => "notsent".into(),
            Outcome::Timeout => "timeout".into(),
            Outcome::Other(m) => format!("other({m})"),
        }
    }
}

/// A frame the client sent that carries a verdict.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Signal {
    /// RST_STREAM on `stream` with `code`.
    Rst { stream: u32, code: u32 },
    /// GOAWAY with an error code (NO_ERROR is not compared, see the module doc).
    GoAway { code: u32 },
    /// The acknowledgement of the server's PING.
    PingAck([u8; 8]),
    /// The acknowledgement of the server's SETTINGS.
    SettingsAck,
}

/// What one client made of a scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Run {
    /// One per request, the probe last.
    outcomes: Vec<Outcome>,
    /// The client's verdict frames, sorted (their order between streams is
    /// the implementation's business).
    signals: Vec<Signal>,
    /// The client's SETTINGS that shape the exchange: ENABLE_PUSH,
    /// INITIAL_WINDOW_SIZE and MAX_HEADER_LIST_SIZE.
    settings: Vec<(u16, u32)>,
}

impl Run {
    fn words(&self) -> String {
        let w: Vec<String> = self.outcomes.iter().map(Outcome::word).collect();
        w.join(" ")
    }
}

/// Headers in `HeaderMap` order.
fn header_list(h: &http::HeaderMap) -> Vec<(String, Vec<u8>)> {
    h.iter()
        .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
        .collect()
}

/// The error code in a message of ours: "... NAME (0xN)".
fn code_in(m: &str) -> Option<u32> {
    let at = m.rfind("(0x")?;
    let hex: String = m[at + 3..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    u32::from_str_radix(&hex, 16).ok()
}

fn ours_outcome(
    r: Result<Result<http::Response<Bytes>, Failure>, tokio::time::error::Elapsed>,
) -> Outcome {
    let f = match r {
        Err(_) => return Outcome::Timeout,
        Ok(Ok(resp)) => {
            return Outcome::Answer {
                status: resp.status().as_u16(),
                headers: header_list(resp.headers()),
                body: resp.body().to_vec(),
            }
        }
        Ok(Err(f)) => f,
    };
    let m = f.message.as_str();
    let unprocessed = f.unprocessed.is_some();
    let o = if m.starts_with("the server reset the stream") {
        code_in(m).map_or_else(|| Outcome::Other(m.into()), Outcome::ResetByServer)
    } else if m.contains("(REFUSED_STREAM)") {
        Outcome::ResetByServer(Reason::REFUSED_STREAM.0)
    } else if m.starts_with("the server is closing the connection (GOAWAY") {
        code_in(m).map_or_else(|| Outcome::Other(m.into()), Outcome::GoAway)
    } else if m.starts_with("not sent")
        || m.starts_with("the connection had failed")
        || m == "the connection takes no new streams"
    {
        Outcome::NotSent
    } else if f.kind == TransportErrorKind::Protocol {
        Outcome::ProtocolError
    } else if m.contains("closed the connection") || m == "the connection was closed" {
        Outcome::Closed
    } else {
        Outcome::Other(format!("{:?}: {m}", f.kind))
    };
    // Our client hands back exactly the requests the server cannot have
    // acted on, for the pool to send again.
    let resendable = matches!(
        o,
        Outcome::NotSent | Outcome::GoAway(_) | Outcome::ResetByServer(7)
    );
    assert_eq!(unprocessed, resendable, "unprocessed flag of {o:?}: {m}");
    o
}

fn h2_outcome(e: &h2::Error) -> Outcome {
    match e.reason() {
        Some(r) if e.is_reset() && e.is_remote() => Outcome::ResetByServer(r.into()),
        Some(r) if e.is_go_away() && e.is_remote() => Outcome::GoAway(r.into()),
        Some(_) if e.is_library() => Outcome::ProtocolError,
        _ if e.is_io() => Outcome::Closed,
        _ => Outcome::Other(format!("{e:?}")),
    }
}

// ---------------------------------------------------------------------------------------------
// The scripted server
// ---------------------------------------------------------------------------------------------

/// The server side of one run.
struct Server {
    signals: Arc<Mutex<Vec<Signal>>>,
    settings: Arc<Mutex<Vec<(u16, u32)>>>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl Server {
    /// Plays `sc` on `io`.
    fn start(sc: &Scenario, io: DuplexStream) -> Server {
        let (r, mut w) = tokio::io::split(io);
        let (count, mut counted) = watch::channel(0usize);
        let signals = Arc::new(Mutex::new(Vec::new()));
        let settings = Arc::new(Mutex::new(Vec::new()));
        let (sig, set) = (signals.clone(), settings.clone());
        let reader = tokio::spawn(client_frames(r, move |h, p| {
            let u32_at = |at| frame::u32_at(p, at).unwrap_or(u32::MAX);
            let signal = match h.kind {
                kind::HEADERS => {
                    count.send_modify(|c| *c += 1);
                    None
                }
                kind::RST_STREAM => Some(Signal::Rst {
                    stream: h.stream,
                    code: u32_at(0),
                }),
                kind::GOAWAY if u32_at(4) != 0 => Some(Signal::GoAway { code: u32_at(4) }),
                kind::PING if h.has(flag::ACK) => {
                    Some(Signal::PingAck(p.try_into().unwrap_or_default()))
                }
                kind::SETTINGS if h.has(flag::ACK) => Some(Signal::SettingsAck),
                kind::SETTINGS => {
                    let mut s = set.lock().unwrap();
                    if s.is_empty() {
                        let keep = [
                            setting::ENABLE_PUSH,
                            setting::INITIAL_WINDOW_SIZE,
                            setting::MAX_HEADER_LIST_SIZE,
                        ];
                        s.extend(
                            frame::settings(p)
                                .unwrap()
                                .filter(|(id, _)| keep.contains(id)),
                        );
                        s.sort_unstable();
                    }
                    None
                }
                _ => None,
            };
            sig.lock().unwrap().extend(signal);
        }));
        let segments = sc.segments.clone();
        let (chunk, close) = (sc.chunk, sc.close);
        let writer = tokio::spawn(async move {
            for (gate, bytes) in segments {
                if counted.wait_for(|c| *c >= gate).await.is_err() {
                    return;
                }
                let piece = if chunk == 0 {
                    bytes.len().max(1)
                } else {
                    chunk
                };
                for p in bytes.chunks(piece) {
                    if w.write_all(p).await.is_err() {
                        return;
                    }
                    if chunk > 0 {
                        tokio::task::yield_now().await;
                    }
                }
            }
            if close {
                let _ = w.shutdown().await;
            }
            // Holds the write half (and so the connection) open.
            std::future::pending::<()>().await;
        });
        Server {
            signals,
            settings,
            reader,
            writer,
        }
    }

    /// The run so far; stops the server.
    fn finish(self, outcomes: Vec<Outcome>) -> Run {
        self.reader.abort();
        self.writer.abort();
        let mut signals = self.signals.lock().unwrap().clone();
        signals.sort_unstable();
        let settings = self.settings.lock().unwrap().clone();
        Run {
            outcomes,
            signals,
            settings,
        }
    }
}

/// Lets every task run until all wait (on the paused clock the sleep ends
/// only when nothing else can run).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

// ---------------------------------------------------------------------------------------------
// The two clients
// ---------------------------------------------------------------------------------------------

/// Our client through the scenario.
async fn run_ours(sc: &Scenario) -> Run {
    let (client, server) = tokio::io::duplex(PIPE);
    let srv = Server::start(sc, server);
    let conn = Http2Conn::start(
        client,
        Config {
            max_body: sc.max_body,
        },
        (),
    );
    settle().await;
    let send = |t| tokio::time::timeout(t, conn.send(request(BODY)));
    let mut outcomes = Vec::new();
    if sc.concurrent {
        // `join_all` polls in order, so the streams open in order.
        let all = (0..sc.requests).map(|_| send(REQUEST_TIMEOUT));
        outcomes.extend(
            futures_util::future::join_all(all)
                .await
                .into_iter()
                .map(ours_outcome),
        );
    } else {
        for _ in 0..sc.requests {
            outcomes.push(ours_outcome(send(REQUEST_TIMEOUT).await));
            settle().await;
        }
    }
    settle().await;
    outcomes.push(ours_outcome(send(PROBE_TIMEOUT).await));
    settle().await;
    let run = srv.finish(outcomes);
    drop(conn);
    run
}

/// The `h2` client, set up as ours announces itself: no push, a 1 MiB
/// stream window, a 4 MiB connection window, a 64 KiB header list (the runs
/// assert that both sent the same SETTINGS).
fn h2_builder() -> h2::client::Builder {
    let mut b = h2::client::Builder::new();
    b.enable_push(false)
        .initial_window_size(1 << 20)
        .initial_connection_window_size(4 << 20)
        .max_header_list_size(super::super::conn::MAX_HEADER_BLOCK as u32);
    b
}

fn h2_request() -> http::Request<()> {
    let r = request(BODY);
    let (parts, _) = r.into_parts();
    http::Request::from_parts(parts, ())
}

/// Opens one stream and sends the request; `Err` when it cannot be sent.
async fn h2_open(
    send: &h2::client::SendRequest<Bytes>,
) -> Result<h2::client::ResponseFuture, Outcome> {
    let mut ready = send.clone().ready().await.map_err(|_| Outcome::NotSent)?;
    let (resp, mut body) = ready
        .send_request(h2_request(), false)
        .map_err(|_| Outcome::NotSent)?;
    // An error here shows up in the response too.
    let _ = body.send_data(Bytes::from_static(BODY), true);
    Ok(resp)
}

/// Reads the whole answer (trailers included, then dropped as ours does).
async fn h2_answer(resp: h2::client::ResponseFuture) -> Outcome {
    let resp = match resp.await {
        Ok(r) => r,
        Err(e) => return h2_outcome(&e),
    };
    let (parts, mut body) = resp.into_parts();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        match chunk {
            Ok(c) => {
                let _ = body.flow_control().release_capacity(c.len());
                data.extend_from_slice(&c);
            }
            Err(e) => return h2_outcome(&e),
        }
    }
    if let Err(e) = body.trailers().await {
        return h2_outcome(&e);
    }
    Outcome::Answer {
        status: parts.status.as_u16(),
        headers: header_list(&parts.headers),
        body: data,
    }
}

async fn h2_exchange(send: &h2::client::SendRequest<Bytes>, t: Duration) -> Outcome {
    let one = async {
        match h2_open(send).await {
            Ok(resp) => h2_answer(resp).await,
            Err(o) => o,
        }
    };
    tokio::time::timeout(t, one)
        .await
        .unwrap_or(Outcome::Timeout)
}

/// The `h2` client through the scenario.
async fn run_h2(sc: &Scenario) -> Run {
    let (client, server) = tokio::io::duplex(PIPE);
    let srv = Server::start(sc, server);
    let (send, conn) = h2_builder()
        .handshake::<_, Bytes>(client)
        .await
        .expect("h2 handshake");
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    settle().await;
    let mut outcomes = Vec::new();
    if sc.concurrent {
        let mut opened = Vec::new();
        for _ in 0..sc.requests {
            opened.push(h2_open(&send).await);
        }
        let all = opened.into_iter().map(|o| async move {
            match o {
                Ok(resp) => tokio::time::timeout(REQUEST_TIMEOUT, h2_answer(resp))
                    .await
                    .unwrap_or(Outcome::Timeout),
                Err(o) => o,
            }
        });
        outcomes.extend(futures_util::future::join_all(all).await);
    } else {
        for _ in 0..sc.requests {
            outcomes.push(h2_exchange(&send, REQUEST_TIMEOUT).await);
            settle().await;
        }
    }
    settle().await;
    outcomes.push(h2_exchange(&send, PROBE_TIMEOUT).await);
    settle().await;
    let run = srv.finish(outcomes);
    drop(send);
    driver.abort();
    run
}

/// Runs `sc` through both clients: their runs, or the mismatch as a message.
async fn compare(sc: &Scenario) -> Result<(Run, Run), String> {
    let run = async {
        let ours = run_ours(sc).await;
        let theirs = run_h2(sc).await;
        (ours, theirs)
    };
    let (ours, theirs) = tokio::time::timeout(SCENARIO_BOUND, run)
        .await
        .map_err(|_| format!("{}: hung", sc.name))?;
    let name = &sc.name;
    if ours.words() != sc.expect {
        return Err(format!(
            "{name}: ours made `{}` of it, the scenario expects `{}`\nours: {ours:?}\nh2:   {theirs:?}",
            ours.words(),
            sc.expect
        ));
    }
    if ours.settings != theirs.settings {
        return Err(format!(
            "{name}: the clients announce different SETTINGS: {:?} vs {:?}",
            ours.settings, theirs.settings
        ));
    }
    match &sc.differ {
        None if ours != theirs => {
            return Err(format!(
                "{name}: the clients disagree\nours: {ours:?}\nh2:   {theirs:?}"
            ))
        }
        None => {}
        Some(d) => {
            // The check panics on a mismatch; turn that into this
            // scenario's message.
            let check = std::panic::AssertUnwindSafe(|| (d.check)(&ours, &theirs));
            std::panic::catch_unwind(check).map_err(|_| {
                format!(
                    "{name}: not the expected difference ({})\nours: {ours:?}\nh2:   {theirs:?}",
                    d.why
                )
            })?;
        }
    }
    Ok((ours, theirs))
}

/// Runs every scenario, then fails naming every one that did not hold.
async fn compare_all(scs: &[Scenario]) {
    let mut failed = Vec::new();
    for sc in scs {
        if let Err(m) = compare(sc).await {
            failed.push(m);
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} scenarios failed:\n\n{}",
        failed.len(),
        scs.len(),
        failed.join("\n\n")
    );
}

// ---------------------------------------------------------------------------------------------
// The differences kept
// ---------------------------------------------------------------------------------------------

const WHY_HPACK: &str = "RFC 9113 §4.3: a field block that cannot be decoded is a connection \
    error of type COMPRESSION_ERROR, which ours sends; h2 sends PROTOCOL_ERROR";

const WHY_FRAME_SIZE: &str = "RFC 9113 §6.5 and §6.7: a SETTINGS frame whose length is not a \
    multiple of 6, or a PING of other than 8 bytes, is a connection error of type \
    FRAME_SIZE_ERROR, which ours sends; h2 sends PROTOCOL_ERROR";

const WHY_CLOSED: &str = "the bad head also ended the stream, whose request had ended too: ours \
    still resets the stream (PROTOCOL_ERROR), as RFC 9113 §5.4.2 asks of a stream error and \
    §5.1 lets a server take just after its END_STREAM; h2 sends nothing on a closed stream. \
    The exchanges end alike";

const WHY_STRICTER: &str = "RFC 9113 §8.1.1 and §8.2.1 make this a malformed answer, a stream \
    error: ours resets the stream and the connection goes on (the probe is answered); h2 \
    fails the whole connection (GOAWAY PROTOCOL_ERROR) and the probe is not sent";

/// The same outcomes; ours closes the connection with GOAWAY `ours`, h2
/// with `theirs`.
fn goaway_code(ours: u32, theirs: u32) -> impl Fn(&Run, &Run) {
    move |o, t| {
        assert_eq!(o.outcomes, t.outcomes);
        assert!(o.signals.contains(&Signal::GoAway { code: ours }));
        let mut mapped: Vec<Signal> = o
            .signals
            .iter()
            .map(|s| match s {
                Signal::GoAway { code } if *code == ours => Signal::GoAway { code: theirs },
                s => s.clone(),
            })
            .collect();
        mapped.sort_unstable();
        assert_eq!(mapped, t.signals);
    }
}

/// The same outcomes; ours also resets stream 1 with PROTOCOL_ERROR.
fn rst_on_closed_stream(o: &Run, t: &Run) {
    assert_eq!(o.outcomes, t.outcomes);
    let mut with = t.signals.clone();
    with.push(Signal::Rst { stream: 1, code: 1 });
    with.sort_unstable();
    assert_eq!(o.signals, with);
}

/// Ours fails stream 1 and answers the probe; h2 fails the connection.
fn h2_fails_the_connection(o: &Run, t: &Run) {
    assert_eq!(o.outcomes[0], Outcome::ProtocolError);
    assert_eq!(t.outcomes[0], Outcome::ProtocolError);
    assert!(matches!(o.outcomes[1], Outcome::Answer { status: 200, .. }));
    assert_eq!(t.outcomes[1], Outcome::NotSent);
    let rst = Signal::Rst { stream: 1, code: 1 };
    assert_eq!(o.signals, vec![rst, Signal::SettingsAck]);
    let goaway = Signal::GoAway { code: 1 };
    assert_eq!(t.signals, vec![goaway, Signal::SettingsAck]);
}

// ---------------------------------------------------------------------------------------------
// Server bytes
// ---------------------------------------------------------------------------------------------

/// The server's SETTINGS (100 streams) and its acknowledgement of the client's.
fn hello() -> Vec<u8> {
    let mut b = settings(&[(setting::MAX_CONCURRENT_STREAMS, 100)]);
    b.extend(server_frame(kind::SETTINGS, flag::ACK, 0, &[]));
    b
}

/// How a literal field is represented.
#[derive(Debug, Clone, Copy)]
enum Rep {
    /// With incremental indexing (added to the dynamic table).
    Insert,
    /// Without indexing.
    Plain,
    /// Never indexed.
    Never,
}

/// A server header block, field by field.
#[derive(Default, Clone)]
struct Hb(Vec<u8>);

impl Hb {
    fn new() -> Self {
        Hb::default()
    }

    /// `:status`, indexed when the static table has it.
    fn status(mut self, s: u16) -> Self {
        let idx = match s {
            200 => 8,
            204 => 9,
            206 => 10,
            304 => 11,
            400 => 12,
            404 => 13,
            500 => 14,
            _ => 0,
        };
        if idx > 0 {
            return self.idx(idx);
        }
        hpack_int(0x00, 4, 8, &mut self.0);
        put_str(&mut self.0, s.to_string().as_bytes(), false);
        self
    }

    /// An indexed field.
    fn idx(mut self, i: usize) -> Self {
        hpack_int(0x80, 7, i, &mut self.0);
        self
    }

    /// A literal with a new name.
    fn lit(mut self, rep: Rep, name: &str, value: &[u8], huff: bool) -> Self {
        self.prefix(rep, 0);
        put_str(&mut self.0, name.as_bytes(), huff);
        put_str(&mut self.0, value, huff);
        self
    }

    /// A literal whose name is table entry `name`.
    fn lit_idx(mut self, rep: Rep, name: usize, value: &[u8], huff: bool) -> Self {
        self.prefix(rep, name);
        put_str(&mut self.0, value, huff);
        self
    }

    fn prefix(&mut self, rep: Rep, name: usize) {
        match rep {
            Rep::Insert => hpack_int(0x40, 6, name, &mut self.0),
            Rep::Plain => hpack_int(0x00, 4, name, &mut self.0),
            Rep::Never => hpack_int(0x10, 4, name, &mut self.0),
        }
    }

    /// A dynamic table size update.
    fn size(mut self, n: usize) -> Self {
        hpack_int(0x20, 5, n, &mut self.0);
        self
    }

    /// Raw bytes (for broken blocks).
    fn raw(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }

    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// An HPACK string literal.
fn put_str(out: &mut Vec<u8>, s: &[u8], huff: bool) {
    if huff {
        let mut e = Vec::new();
        huffman::encode(s, &mut e);
        hpack_int(0x80, 7, e.len(), out);
        out.extend_from_slice(&e);
    } else {
        hpack_int(0x00, 7, s.len(), out);
        out.extend_from_slice(s);
    }
}

fn headers(stream: u32, flags: u8, hb: &Hb) -> Vec<u8> {
    server_frame(kind::HEADERS, flags, stream, hb.bytes())
}

fn data(stream: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    server_frame(kind::DATA, flags, stream, payload)
}

/// A padded payload: pad length, `payload`, `pad` zeros.
fn padded(payload: &[u8], pad: u8) -> Vec<u8> {
    let mut p = vec![pad];
    p.extend_from_slice(payload);
    p.extend(std::iter::repeat_n(0, usize::from(pad)));
    p
}

fn rst(stream: u32, code: Reason) -> Vec<u8> {
    server_frame(kind::RST_STREAM, 0, stream, &code.0.to_be_bytes())
}

fn goaway(last: u32, code: Reason, debug: &[u8]) -> Vec<u8> {
    let mut p = last.to_be_bytes().to_vec();
    p.extend_from_slice(&code.0.to_be_bytes());
    p.extend_from_slice(debug);
    server_frame(kind::GOAWAY, 0, 0, &p)
}

fn window_update(stream: u32, inc: u32) -> Vec<u8> {
    server_frame(kind::WINDOW_UPDATE, 0, stream, &inc.to_be_bytes())
}

fn ping(data: [u8; 8]) -> Vec<u8> {
    server_frame(kind::PING, 0, 0, &data)
}

/// 20 fields of 4,000 bytes: 80 kB decoded from about 4 kB (one literal
/// inserted, then indexed 19 times), past the 64 KiB both clients announce.
fn bomb() -> Hb {
    let mut hb = Hb::new()
        .status(200)
        .lit(Rep::Insert, "x-big", &[b'v'; 4000], false);
    for _ in 0..19 {
        hb = hb.idx(62);
    }
    hb
}

/// A WNS-like answer head: status, `x-wns-status`, `x-wns-msg-id`.
fn wns(status: u16) -> Hb {
    Hb::new()
        .status(status)
        .lit(Rep::Plain, "x-wns-status", b"received", false)
        .lit(Rep::Plain, "x-wns-msg-id", b"1A2B3C4D5E6F7081", false)
}

/// A whole answer on `stream`: WNS head and `body` (END_STREAM on HEADERS
/// when empty).
fn answer(stream: u32, status: u16, body: &[u8]) -> Vec<u8> {
    let hb = wns(status);
    if body.is_empty() {
        return headers(stream, flag::END_HEADERS | flag::END_STREAM, &hb);
    }
    let mut b = headers(stream, flag::END_HEADERS, &hb);
    b.extend(data(stream, flag::END_STREAM, body));
    b
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

const EH: u8 = flag::END_HEADERS;
const ES: u8 = flag::END_STREAM;

// ---------------------------------------------------------------------------------------------
// Generated scenarios
// ---------------------------------------------------------------------------------------------

/// Every hand-built scenario.
fn scenarios() -> Vec<Scenario> {
    let mut v = Vec::new();

    v.push(
        Scenario::new("HEADERS then DATA", 1, "200 200")
            .at(1, answer(1, 200, b"hello"))
            .at(2, answer(3, 200, b"")),
    );
    v.push(
        Scenario::new(
            "HEADERS with END_STREAM, no body; 204 and 404",
            2,
            "204 404 200",
        )
        .at(1, answer(1, 204, b""))
        .at(2, answer(3, 404, b""))
        .at(3, answer(5, 200, b"")),
    );
    v.push(
        Scenario::new(
            "a body over several DATA frames and an empty last one",
            1,
            "200 200",
        )
        .at(
            1,
            cat(&[
                headers(1, EH, &wns(200)),
                data(1, 0, b"one "),
                data(1, 0, b""),
                data(1, 0, &[b'x'; 3000]),
                data(1, ES, b""),
            ]),
        )
        .at(2, answer(3, 200, b"")),
    );
    v.push(
        Scenario::new("trailers after the body", 1, "200 200")
            .at(
                1,
                cat(&[
                    headers(1, EH, &wns(200)),
                    data(1, 0, b"body"),
                    headers(
                        1,
                        EH | ES,
                        &Hb::new().lit(Rep::Plain, "x-wns-trailer", b"done", false),
                    ),
                ]),
            )
            .at(2, answer(3, 200, b"")),
    );
    v.push(
        Scenario::new("trailers straight after the head", 1, "200 200")
            .at(
                1,
                cat(&[
                    headers(1, EH, &wns(200)),
                    headers(
                        1,
                        EH | ES,
                        &Hb::new().lit(Rep::Insert, "grpc-status", b"0", true),
                    ),
                ]),
            )
            .at(2, answer(3, 200, b"")),
    );
    v.push(
        Scenario::new(
            "padded HEADERS (with priority) and padded DATA",
            1,
            "200 200",
        )
        .at(1, {
            let mut p = vec![7u8, 0, 0, 0, 0, 16];
            p.extend_from_slice(wns(200).bytes());
            p.extend([0u8; 7]);
            cat(&[
                server_frame(kind::HEADERS, EH | flag::PADDED | flag::PRIORITY, 1, &p),
                data(1, flag::PADDED, &padded(b"abc", 200)),
                data(1, flag::PADDED, &padded(b"", 0)),
                data(1, flag::PADDED | ES, &padded(b"def", 255)),
            ])
        })
        .at(2, answer(3, 200, b"")),
    );
    v.push(
        Scenario::new(
            "a header block over HEADERS and two CONTINUATIONs",
            1,
            "200 200",
        )
        .at(1, {
            let hb = wns(200).lit(Rep::Plain, "x-one", b"1", false).lit(
                Rep::Insert,
                "x-two",
                &[b'2'; 300],
                true,
            );
            let b = hb.bytes();
            cat(&[
                headers(1, ES, &Hb(b[..5].to_vec())),
                server_frame(kind::CONTINUATION, 0, 1, &b[5..40]),
                server_frame(kind::CONTINUATION, EH, 1, &b[40..]),
            ])
        })
        .at(2, answer(3, 200, b"")),
    );
    v.push(
        Scenario::new("an empty CONTINUATION between fragments", 1, "200 200")
            .at(1, {
                let b = wns(200).0;
                cat(&[
                    headers(1, ES, &Hb(b[..3].to_vec())),
                    server_frame(kind::CONTINUATION, 0, 1, &[]),
                    server_frame(kind::CONTINUATION, EH, 1, &b[3..]),
                ])
            })
            .at(2, answer(3, 200, b"")),
    );
    // Huffman literals inserted into the dynamic table by the first answer,
    // referenced (whole fields and names) by the next two.
    v.push(
        Scenario::new(
            "Huffman and the dynamic table across answers",
            3,
            "200 410 200 200",
        )
        .at(
            1,
            headers(
                1,
                EH | ES,
                &Hb::new()
                    .status(200)
                    .lit(Rep::Insert, "x-wns-status", b"received", true)
                    .lit(Rep::Insert, "x-wns-msg-id", b"0000000000000001", true)
                    .lit_idx(Rep::Insert, 31, b"text/plain; charset=utf-8", true)
                    .lit(Rep::Never, "x-secret", b"never indexed", true),
            ),
        )
        // Table now (newest first): 62 content-type, 63 x-wns-msg-id, 64 x-wns-status.
        .at(
            2,
            headers(
                3,
                EH | ES,
                &Hb::new()
                    .lit_idx(Rep::Insert, 8, b"410", false)
                    .idx(64)
                    .lit_idx(Rep::Insert, 64, b"channel expired", true)
                    .idx(64),
            ),
        )
        // 62 x-wns-status: channel expired, 63 :status 410, 64 content-type,
        // 65 x-wns-msg-id, 66 x-wns-status: received.
        .at(
            3,
            headers(5, EH | ES, &Hb::new().status(200).idx(66).idx(65).idx(64)),
        )
        .at(4, answer(7, 200, b"")),
    );
    v.push(
        Scenario::new(
            "table size updates: to 0, then back to 4096",
            3,
            "200 200 200 200",
        )
        .at(
            1,
            headers(
                1,
                EH | ES,
                &Hb::new()
                    .status(200)
                    .lit(Rep::Insert, "x-a", b"first", false)
                    .lit(Rep::Insert, "x-b", b"second", false),
            ),
        )
        // Emptied, then a new entry that the next answer uses.
        .at(
            2,
            headers(
                3,
                EH | ES,
                &Hb::new()
                    .size(0)
                    .size(4096)
                    .status(200)
                    .lit(Rep::Insert, "x-c", b"third", true),
            ),
        )
        // 110 bytes of table: x-c (38) survives, then gets evicted by a 100-byte entry.
        .at(
            3,
            headers(
                5,
                EH | ES,
                &Hb::new()
                    .size(110)
                    .status(200)
                    .idx(62)
                    .lit(Rep::Insert, "x-d", &[b'd'; 60], false)
                    .idx(62),
            ),
        )
        .at(4, answer(7, 200, b"")),
    );
    v.push(
        Scenario::new("a header block of 300 fields", 1, "200 200")
            .at(1, {
                let mut hb = Hb::new().status(200);
                for i in 0..300 {
                    let name = format!("x-field-{}", i % 120);
                    let rep = [Rep::Plain, Rep::Insert, Rep::Never][i % 3];
                    hb = hb.lit(rep, &name, format!("value {i}").as_bytes(), i % 2 == 0);
                }
                let b = hb.0;
                let mut out = BytesMut::new();
                frame::put_headers(&mut out, 1, &b, true, 4000);
                out.to_vec()
            })
            .at(2, answer(3, 200, b"")),
    );
    v.push(
        Scenario::new("repeated names, not adjacent", 1, "200 200")
            .at(
                1,
                headers(
                    1,
                    EH | ES,
                    &Hb::new()
                        .status(200)
                        .lit(Rep::Plain, "set-cookie", b"a=1", false)
                        .lit(Rep::Plain, "x-mid", b"m", false)
                        .lit_idx(Rep::Plain, 55, b"b=2", true)
                        .lit(Rep::Plain, "x-mid", b"n", false)
                        .lit(Rep::Plain, "x-empty", b"", false),
                ),
            )
            .at(2, answer(3, 200, b"")),
    );
    v.push(
        Scenario::new(
            "interleaved answers on three concurrent streams",
            3,
            "200 503 404 200",
        )
        .concurrent()
        .at(
            3,
            cat(&[
                headers(3, EH, &wns(503)),
                headers(1, EH, &wns(200)),
                data(3, 0, b"three-a "),
                data(1, 0, b"one-a "),
                headers(5, EH | ES, &wns(404)),
                data(1, ES, b"one-b"),
                data(3, ES, b"three-b"),
            ]),
        )
        .at(4, answer(7, 200, b"")),
    );
    v.push(
        Scenario::new("answers in reverse order", 3, "201 202 203 200")
            .concurrent()
            .at(
                3,
                cat(&[
                    answer(5, 203, b"c"),
                    answer(3, 202, b"b"),
                    answer(1, 201, b"a"),
                ]),
            )
            .at(4, answer(7, 200, b"")),
    );
    for (code, expect) in [
        (Reason::REFUSED_STREAM, "rst:REFUSED_STREAM 200"),
        (Reason::CANCEL, "rst:CANCEL 200"),
        (Reason(0x2), "rst:INTERNAL_ERROR 200"),
        (Reason::NO_ERROR, "rst:NO_ERROR 200"),
    ] {
        v.push(
            Scenario::new(
                &format!("RST_STREAM {} before the answer", code.name()),
                1,
                expect,
            )
            .at(1, rst(1, code))
            .at(2, answer(3, 200, b"")),
        );
    }
    v.push(
        Scenario::new(
            "RST_STREAM INTERNAL_ERROR in the middle of the body",
            1,
            "rst:INTERNAL_ERROR 200",
        )
        .at(
            1,
            cat(&[
                headers(1, EH, &wns(200)),
                data(1, 0, b"part"),
                rst(1, Reason(0x2)),
            ]),
        )
        .at(2, answer(3, 200, b"")),
    );
    v.push(
        Scenario::new("RST_STREAM after the answer ended is ignored", 1, "200 200")
            .at(1, cat(&[answer(1, 200, b"ok"), rst(1, Reason::CANCEL)]))
            .at(2, answer(3, 200, b"")),
    );
    v.push(
        Scenario::new(
            "GOAWAY NO_ERROR below an open stream",
            2,
            "200 goaway:NO_ERROR notsent",
        )
        .concurrent()
        .at(
            2,
            cat(&[goaway(1, Reason::NO_ERROR, b"bye"), answer(1, 200, b"done")]),
        ),
    );
    v.push(
        Scenario::new(
            "GOAWAY PROTOCOL_ERROR below an open stream",
            2,
            "200 goaway:PROTOCOL_ERROR notsent",
        )
        .concurrent()
        .at(
            2,
            cat(&[
                goaway(1, Reason::PROTOCOL_ERROR, b""),
                answer(1, 200, b"done"),
            ]),
        ),
    );
    v.push(
        Scenario::new(
            "GOAWAY then EOF with a stream still open below it",
            1,
            "closed notsent",
        )
        .close()
        .at(
            1,
            cat(&[headers(1, EH, &wns(200)), goaway(1, Reason::NO_ERROR, b"")]),
        ),
    );
    v.push(
        Scenario::new("GOAWAY between sequential requests", 1, "200 notsent").at(
            1,
            cat(&[answer(1, 200, b""), goaway(1, Reason::NO_ERROR, b"")]),
        ),
    );
    v.push(Scenario::new("DATA on stream 0", 1, "error notsent").at(1, data(0, 0, b"x")));
    v.push(
        Scenario::new("HEADERS on an idle stream", 1, "error notsent")
            .at(1, headers(7, EH | ES, &wns(200))),
    );
    v.push(
        Scenario::new(
            "HEADERS on a server-initiated (even) stream",
            1,
            "error notsent",
        )
        .at(1, headers(2, EH | ES, &wns(200))),
    );
    v.push(
        Scenario::new("RST_STREAM on an idle stream", 1, "error notsent")
            .at(1, rst(9, Reason::CANCEL)),
    );
    v.push(
        Scenario::new("an HPACK index past the tables", 1, "error notsent")
            .at(1, headers(1, EH | ES, &Hb::new().status(200).idx(70)))
            .differ(WHY_HPACK, goaway_code(9, 1)),
    );
    v.push(
        Scenario::new("an HPACK index of 0", 1, "error notsent")
            .at(1, headers(1, EH | ES, &Hb::new().status(200).raw(&[0x80])))
            .differ(WHY_HPACK, goaway_code(9, 1)),
    );
    v.push(
        Scenario::new("a truncated HPACK string", 1, "error notsent")
            .at(
                1,
                headers(1, EH | ES, &Hb::new().status(200).raw(&[0x00, 0x05, b'x'])),
            )
            .differ(WHY_HPACK, goaway_code(9, 1)),
    );
    v.push(
        Scenario::new("a table size update after a field", 1, "error notsent")
            .at(1, headers(1, EH | ES, &Hb::new().status(200).size(0)))
            .differ(WHY_HPACK, goaway_code(9, 1)),
    );
    v.push(
        Scenario::new("PUSH_PROMISE although push is disabled", 1, "error notsent").at(1, {
            let mut p = 2u32.to_be_bytes().to_vec();
            p.extend_from_slice(wns(200).bytes());
            server_frame(kind::PUSH_PROMISE, EH, 1, &p)
        }),
    );
    v.push(
        Scenario::new("a CONTINUATION without HEADERS", 1, "error notsent")
            .at(1, server_frame(kind::CONTINUATION, EH, 1, wns(200).bytes())),
    );
    v.push(
        Scenario::new(
            "a frame between HEADERS and CONTINUATION",
            1,
            "error notsent",
        )
        .at(
            1,
            cat(&[
                headers(1, ES, &Hb(wns(200).0[..2].to_vec())),
                ping([1; 8]),
                server_frame(kind::CONTINUATION, EH, 1, &wns(200).0[2..]),
            ]),
        ),
    );
    v.push(
        Scenario::new("a PING of 7 bytes", 1, "error notsent")
            .at(1, server_frame(kind::PING, 0, 0, &[0; 7]))
            .differ(WHY_FRAME_SIZE, goaway_code(6, 1)),
    );
    v.push(
        Scenario::new("SETTINGS with a bad length", 1, "error notsent")
            .at(1, server_frame(kind::SETTINGS, 0, 0, &[0; 5]))
            .differ(WHY_FRAME_SIZE, goaway_code(6, 1)),
    );
    v.push(
        Scenario::new("a frame over the max frame size", 1, "error notsent").at(
            1,
            cat(&[headers(1, EH, &wns(200)), data(1, ES, &vec![0; 16_385])]),
        ),
    );
    v.push(
        Scenario::new("padding longer than the frame", 1, "error notsent").at(
            1,
            cat(&[
                headers(1, EH, &wns(200)),
                server_frame(kind::DATA, flag::PADDED | ES, 1, &[9, b'a']),
            ]),
        ),
    );
    v.push(
        Scenario::new("WINDOW_UPDATE of 0 on the connection", 1, "error notsent")
            .at(1, window_update(0, 0)),
    );
    v.push(
        Scenario::new("SETTINGS changed between answers", 2, "200 200 200")
            .at(1, answer(1, 200, b"a"))
            .at(
                1,
                settings(&[
                    (setting::HEADER_TABLE_SIZE, 0),
                    (setting::MAX_FRAME_SIZE, 32_768),
                    (setting::INITIAL_WINDOW_SIZE, 100),
                    (setting::MAX_CONCURRENT_STREAMS, 5),
                    (0x99, 7),
                ]),
            )
            .at(
                2,
                cat(&[
                    settings(&[(setting::HEADER_TABLE_SIZE, 4096)]),
                    answer(3, 200, b"b"),
                ]),
            )
            .at(3, answer(5, 200, b"")),
    );
    v.push(
        Scenario::new("PINGs before and inside an answer", 1, "200 200")
            .at(
                1,
                cat(&[
                    ping(*b"pingpong"),
                    headers(1, EH, &wns(200)),
                    ping([0, 1, 2, 3, 4, 5, 6, 7]),
                    data(1, ES, b"x"),
                    server_frame(kind::PING, flag::ACK, 0, &[9; 8]),
                ]),
            )
            .at(2, answer(3, 200, b"")),
    );
    v.push(
        Scenario::new(
            "WINDOW_UPDATEs on the connection, the stream and a closed stream",
            1,
            "200 200",
        )
        .at(
            1,
            cat(&[
                window_update(0, 1000),
                window_update(1, 1000),
                answer(1, 200, b"x"),
                window_update(1, 5),
            ]),
        )
        .at(2, answer(3, 200, b"")),
    );
    v.push(
        Scenario::new(
            "frames of unknown type and PRIORITY are ignored",
            1,
            "200 200",
        )
        .at(
            1,
            cat(&[
                server_frame(0xfa, 0xff, 1, b"extension"),
                server_frame(kind::PRIORITY, 0, 1, &[0, 0, 0, 0, 16]),
                answer(1, 200, b"x"),
                server_frame(0x20, 0, 0, b""),
            ]),
        )
        .at(2, answer(3, 200, b"")),
    );
    v.push(
        Scenario::new("103 and 100 before the final answer", 1, "200 200")
            .at(
                1,
                cat(&[
                    headers(
                        1,
                        EH,
                        &Hb::new().lit_idx(Rep::Plain, 8, b"103", false).lit(
                            Rep::Plain,
                            "link",
                            b"</style.css>; rel=preload",
                            false,
                        ),
                    ),
                    headers(1, EH, &Hb::new().lit_idx(Rep::Plain, 8, b"100", false)),
                    answer(1, 200, b"final"),
                ]),
            )
            .at(2, answer(3, 200, b"")),
    );
    v.push(
        Scenario::new("a 1xx that ends the stream", 1, "error 200")
            .at(
                1,
                headers(1, EH | ES, &Hb::new().lit_idx(Rep::Plain, 8, b"100", false)),
            )
            .at(2, answer(3, 200, b""))
            .differ(WHY_CLOSED, rst_on_closed_stream),
    );
    v.push(
        Scenario::new("content-length larger than the body", 1, "error 200")
            .at(
                1,
                cat(&[
                    headers(1, EH, &wns(200).lit_idx(Rep::Plain, 28, b"10", false)),
                    data(1, ES, b"hello"),
                ]),
            )
            .at(2, answer(3, 200, b"")),
    );
    v.push(
        Scenario::new("content-length smaller than the body", 1, "error 200")
            .at(
                1,
                cat(&[
                    headers(1, EH, &wns(200).lit_idx(Rep::Plain, 28, b"2", false)),
                    data(1, 0, b"he"),
                    data(1, ES, b"llo"),
                ]),
            )
            .at(2, answer(3, 200, b"")),
    );
    v.push(
        Scenario::new(
            "content-length on an answer that ends with its HEADERS",
            1,
            "error 200",
        )
        .at(
            1,
            headers(1, EH | ES, &wns(200).lit_idx(Rep::Plain, 28, b"3", false)),
        )
        .at(2, answer(3, 200, b""))
        .differ(WHY_CLOSED, rst_on_closed_stream),
    );
    v.push(
        Scenario::new("content-length that is not a number", 1, "error 200")
            .at(
                1,
                headers(1, EH | ES, &wns(200).lit_idx(Rep::Plain, 28, b"ten", false)),
            )
            .at(2, answer(3, 200, b""))
            .differ(WHY_CLOSED, rst_on_closed_stream),
    );
    v.push(
        Scenario::new(
            "content-length right, over two DATA frames, with trailers",
            1,
            "200 200",
        )
        .at(
            1,
            cat(&[
                headers(1, EH, &wns(200).lit_idx(Rep::Plain, 28, b"5", false)),
                data(1, 0, b"hel"),
                data(1, 0, b"lo"),
                headers(1, EH | ES, &Hb::new().lit(Rep::Plain, "x-t", b"1", false)),
            ]),
        )
        .at(2, answer(3, 200, b"")),
    );
    v.push(
        Scenario::new(
            "content-length 0 with END_STREAM on HEADERS, and 304 with a length",
            2,
            "200 304 200",
        )
        .at(
            1,
            headers(1, EH | ES, &wns(200).lit_idx(Rep::Plain, 28, b"0", false)),
        )
        .at(
            2,
            headers(3, EH | ES, &wns(304).lit_idx(Rep::Plain, 28, b"42", false)),
        )
        .at(3, answer(5, 200, b"")),
    );
    // 0: agreed; 1: ours also resets the closed stream; 2: h2 fails the connection.
    for (what, hb, differs) in [
        (
            "an uppercase header name",
            wns(200).lit(Rep::Plain, "X-Upper", b"1", false),
            2,
        ),
        (
            "a missing :status",
            Hb::new().lit(Rep::Plain, "x-wns-status", b"received", false),
            1,
        ),
        ("a duplicate :status", wns(200).idx(8), 0),
        (
            "a pseudo-header after a field",
            Hb::new().lit(Rep::Plain, "x-a", b"1", false).idx(8),
            0,
        ),
        ("a request pseudo-header", wns(200).idx(4), 0),
        (
            "a connection-specific field",
            wns(200).lit(Rep::Plain, "connection", b"close", false),
            0,
        ),
        (
            "a value with a newline",
            wns(200).lit(Rep::Plain, "x-bad", b"a\nb", false),
            2,
        ),
        (
            "a status of two digits",
            Hb::new().lit_idx(Rep::Plain, 8, b"20", false),
            2,
        ),
        (
            "a 101 status",
            Hb::new().lit_idx(Rep::Plain, 8, b"101", false),
            1,
        ),
    ] {
        let sc = Scenario::new(&format!("malformed: {what}"), 1, "error 200")
            .at(1, headers(1, EH | ES, &hb))
            .at(2, answer(3, 200, b""));
        v.push(match differs {
            1 => sc.differ(WHY_CLOSED, rst_on_closed_stream),
            2 => sc.differ(WHY_STRICTER, h2_fails_the_connection),
            _ => sc,
        });
    }
    v.push(
        // RFC 9113 §8.1 forbids pseudo-headers in trailers; both clients
        // take the answer (ours drops trailers unread, h2 ignores it).
        Scenario::new("malformed trailers: a pseudo-header", 1, "200 200")
            .at(
                1,
                cat(&[
                    headers(1, EH, &wns(200)),
                    data(1, 0, b"x"),
                    headers(1, EH | ES, &Hb::new().idx(8)),
                ]),
            )
            .at(2, answer(3, 200, b"")),
    );
    v.push(
        Scenario::new("trailers that do not end the stream", 1, "error 200")
            .at(
                1,
                cat(&[
                    headers(1, EH, &wns(200)),
                    headers(1, EH, &Hb::new().lit(Rep::Plain, "x-t", b"1", false)),
                ]),
            )
            .at(2, answer(3, 200, b"")),
    );
    v.push(
        Scenario::new("DATA before HEADERS", 1, "error 200")
            .at(1, data(1, ES, b"early"))
            .at(2, answer(3, 200, b""))
            .differ(WHY_STRICTER, h2_fails_the_connection),
    );
    v.push(
        Scenario::new("EOF before the answer", 1, "closed notsent")
            .close()
            .at(1, headers(1, EH, &wns(200))),
    );
    v.push(
        Scenario::new("EOF in the middle of a frame", 1, "closed notsent")
            .close()
            .at(1, {
                let mut b = answer(1, 200, b"a body");
                b.truncate(b.len() - 2);
                b
            }),
    );
    v.push(
        Scenario::new("a body over our max_body", 1, "error 200")
            .at(1, answer(1, 200, &[b'b'; 100]))
            .at(2, answer(3, 200, b""))
            .differ(
                "our client caps answer bodies at max_body (WNS answers carry none) and \
                 resets the stream with CANCEL; h2 has no cap and takes the body",
                |ours, h2| {
                    assert_eq!(ours.outcomes[0], Outcome::ProtocolError);
                    assert_eq!(
                        ours.signals,
                        vec![Signal::Rst { stream: 1, code: 8 }, Signal::SettingsAck]
                    );
                    let Outcome::Answer { body, .. } = &h2.outcomes[0] else {
                        panic!("h2 takes the body")
                    };
                    assert_eq!(body.len(), 100);
                    assert_eq!(h2.signals, vec![Signal::SettingsAck]);
                    assert_eq!(ours.outcomes[1..], h2.outcomes[1..]);
                },
            )
            .max_body(16),
    );
    v.push(
        Scenario::new(
            "a header list over 64 KiB, ending the stream",
            1,
            "error 200",
        )
        .at(1, headers(1, EH | ES, &bomb()))
        .at(2, answer(3, 200, b""))
        .differ(WHY_CLOSED, rst_on_closed_stream),
    );
    v.push(
        // Both reset the stream with PROTOCOL_ERROR and go on.
        Scenario::new("a header list over 64 KiB, then DATA", 1, "error 200")
            .at(1, cat(&[headers(1, EH, &bomb()), data(1, ES, b"x")]))
            .at(2, answer(3, 200, b"")),
    );
    v.push(
        Scenario::new(
            "one stream at a time, set by the server",
            3,
            "200 200 200 200",
        )
        .concurrent()
        .at(1, settings(&[(setting::MAX_CONCURRENT_STREAMS, 1)]))
        .at(1, answer(1, 200, b"1"))
        .at(2, answer(3, 200, b"2"))
        .at(3, answer(5, 200, b"3"))
        .at(4, answer(7, 200, b"")),
    );
    v
}

impl Scenario {
    fn max_body(mut self, n: usize) -> Self {
        self.max_body = n;
        self
    }
}

#[tokio::test(start_paused = true)]
async fn differential_generated_scenarios() {
    compare_all(&scenarios()).await;
}

// ---------------------------------------------------------------------------------------------
// Generated answer sequences
// ---------------------------------------------------------------------------------------------

/// Seeded cases of the generator (fixed: a failure names its seed).
const GENERATED_CASES: u64 = 200;

/// The server encoder's copy of the dynamic table, newest first.
struct Table {
    entries: std::collections::VecDeque<(Vec<u8>, Vec<u8>)>,
    size: usize,
    max: usize,
}

impl Table {
    fn insert(&mut self, name: &[u8], value: &[u8]) {
        self.entries.push_front((name.to_vec(), value.to_vec()));
        self.size += name.len() + value.len() + 32;
        self.evict();
    }

    fn resize(&mut self, max: usize) {
        self.max = max;
        self.evict();
    }

    fn evict(&mut self) {
        while self.size > self.max {
            let Some((n, v)) = self.entries.pop_back() else {
                break;
            };
            self.size -= n.len() + v.len() + 32;
        }
    }

    /// The index of an entry with `name` (and `value`, when given).
    fn find(&self, name: &[u8], value: Option<&[u8]>) -> Option<usize> {
        self.entries
            .iter()
            .position(|(n, v)| n == name && value.is_none_or(|want| want == v))
            .map(|i| 62 + i)
    }
}

/// Names the generator draws from, with their static table index (0: none).
const NAMES: [(&str, usize); 10] = [
    ("x-wns-status", 0),
    ("x-wns-msg-id", 0),
    ("x-wns-debug-trace", 0),
    ("x-wns-notificationstatus", 0),
    ("x-wns-error-description", 0),
    ("content-type", 31),
    ("date", 33),
    ("retry-after", 53),
    ("www-authenticate", 61),
    ("set-cookie", 55),
];

const STATUSES: [u16; 14] = [
    200, 201, 202, 204, 304, 400, 401, 403, 404, 406, 410, 413, 429, 503,
];

/// A field value: visible ASCII with inner spaces, sometimes long.
fn value(rng: &mut fastrand::Rng) -> Vec<u8> {
    let len = match rng.u8(..10) {
        0 => 0,
        1 => rng.usize(200..1500),
        _ => rng.usize(1..40),
    };
    let mut v: Vec<u8> = (0..len)
        .map(|_| {
            if rng.u8(..8) == 0 {
                b' '
            } else {
                rng.u8(0x21..0x7f)
            }
        })
        .collect();
    if v.first() == Some(&b' ') {
        v[0] = b'a';
    }
    if v.last() == Some(&b' ') {
        let n = v.len();
        v[n - 1] = b'z';
    }
    v
}

/// One field, written into `hb` in a random representation; the table
/// follows what the client's decoder will do.
fn field(rng: &mut fastrand::Rng, hb: Hb, t: &mut Table, name: &[u8], value: &[u8]) -> Hb {
    if let Some(i) = t.find(name, Some(value)) {
        if rng.bool() {
            return hb.idx(i);
        }
    }
    let rep = [Rep::Insert, Rep::Plain, Rep::Never][rng.usize(..3)];
    if let Rep::Insert = rep {
        t.insert(name, value);
    }
    let huff = rng.bool();
    let static_idx = NAMES
        .iter()
        .find(|(n, _)| n.as_bytes() == name)
        .map_or(0, |(_, i)| *i);
    let name_idx = match (static_idx, t.find(name, None)) {
        (s, _) if s > 0 && rng.bool() => s,
        // The entry may have just been inserted: look it up before.
        (_, Some(i)) if rng.bool() && !matches!(rep, Rep::Insert) => i,
        _ => 0,
    };
    if name_idx > 0 {
        hb.lit_idx(rep, name_idx, value, huff)
    } else {
        hb.lit(rep, std::str::from_utf8(name).unwrap(), value, huff)
    }
}

/// What one generated answer is made of, before it is written.
struct Planned {
    stream: u32,
    status: u16,
    fields: Vec<(Vec<u8>, Vec<u8>)>,
    pieces: Vec<Vec<u8>>,
    trailers: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Planned {
    fn random(rng: &mut fastrand::Rng, stream: u32) -> Planned {
        let status = STATUSES[rng.usize(..STATUSES.len())];
        let bodiless = status == 204 || status == 304;
        let body_len = match rng.u8(..3) {
            _ if bodiless => 0,
            0 => 0,
            1 => rng.usize(1..100),
            _ => rng.usize(100..3000),
        };
        let body: Vec<u8> = (0..body_len).map(|_| rng.u8(..)).collect();
        let mut fields = Vec::new();
        for _ in 0..rng.usize(0..12) {
            let name = if rng.u8(..4) == 0 {
                format!("x-gen-{}", rng.u8(..20)).into_bytes()
            } else {
                NAMES[rng.usize(..NAMES.len())].0.as_bytes().to_vec()
            };
            fields.push((name, value(rng)));
        }
        if !bodiless && rng.u8(..3) == 0 {
            fields.push((
                b"content-length".to_vec(),
                body_len.to_string().into_bytes(),
            ));
        }
        // Cut the body into DATA frames (empty ones included).
        let mut pieces = Vec::new();
        let mut rest = &body[..];
        for _ in 0..rng.usize(0..4) {
            let n = rng.usize(0..=rest.len());
            pieces.push(rest[..n].to_vec());
            rest = &rest[n..];
        }
        if !rest.is_empty() || (!pieces.is_empty() && rng.bool()) {
            pieces.push(rest.to_vec());
        }
        let trailers = if rng.u8(..5) == 0 {
            (0..rng.usize(1..3))
                .map(|i| (format!("x-trailer-{i}").into_bytes(), value(rng)))
                .collect()
        } else {
            Vec::new()
        };
        Planned {
            stream,
            status,
            fields,
            pieces,
            trailers,
        }
    }

    /// The answer our client must return.
    fn outcome(&self) -> Outcome {
        let mut h = http::HeaderMap::new();
        for (n, v) in &self.fields {
            h.append(
                http::HeaderName::from_bytes(n).unwrap(),
                http::HeaderValue::from_bytes(v).unwrap(),
            );
        }
        Outcome::Answer {
            status: self.status,
            headers: header_list(&h),
            body: self.pieces.concat(),
        }
    }

    /// The frames, in order; header blocks are encoded when written (the
    /// table is shared by every stream, in wire order).
    fn frames(&self) -> Vec<Frame> {
        let mut v = vec![Frame::Head {
            end: self.pieces.is_empty() && self.trailers.is_empty(),
        }];
        for (i, _) in self.pieces.iter().enumerate() {
            v.push(Frame::Data {
                piece: i,
                end: i + 1 == self.pieces.len() && self.trailers.is_empty(),
            });
        }
        if !self.trailers.is_empty() {
            v.push(Frame::Trailers);
        }
        v
    }
}

/// One step of a planned answer.
#[derive(Clone, Copy)]
enum Frame {
    Head { end: bool },
    Data { piece: usize, end: bool },
    Trailers,
}

/// A header block as HEADERS (maybe padded, maybe with priority) and
/// CONTINUATION frames.
fn header_frames(rng: &mut fastrand::Rng, stream: u32, block: &[u8], end: bool) -> Vec<u8> {
    let mut cuts: Vec<usize> = (0..rng.usize(0..3))
        .map(|_| rng.usize(0..=block.len()))
        .collect();
    cuts.sort_unstable();
    cuts.push(block.len());
    let first = cuts[0];
    let mut flags = if end { ES } else { 0 };
    if cuts.len() == 1 {
        flags |= EH;
    }
    let mut payload = Vec::new();
    let pad = rng.bool().then(|| rng.u8(..20));
    if let Some(p) = pad {
        flags |= flag::PADDED;
        payload.push(p);
    }
    if rng.u8(..4) == 0 {
        flags |= flag::PRIORITY;
        payload.extend_from_slice(&[0, 0, 0, 0, rng.u8(..)]);
    }
    payload.extend_from_slice(&block[..first]);
    payload.extend(std::iter::repeat_n(0, usize::from(pad.unwrap_or(0))));
    let mut out = server_frame(kind::HEADERS, flags, stream, &payload);
    let windows = cuts.len() - 1;
    for (i, w) in cuts.windows(2).enumerate() {
        let f = if i + 1 == windows { EH } else { 0 };
        out.extend(server_frame(
            kind::CONTINUATION,
            f,
            stream,
            &block[w[0]..w[1]],
        ));
    }
    out
}

/// Frames that change nothing for the exchanges, which both clients must
/// take in their stride.
fn noise(rng: &mut fastrand::Rng, open: u32) -> Vec<u8> {
    match rng.u8(..12) {
        0 => ping(rng.u64(..).to_be_bytes()),
        1 => window_update(0, rng.u32(1..100_000)),
        2 => window_update(open, rng.u32(1..1000)),
        3 => settings(&[]),
        4 => server_frame(0xfb, rng.u8(..), rng.u32(..100), b"unknown"),
        _ => Vec::new(),
    }
}

/// A seeded sequence of valid answers.
fn generated_case(seed: u64) -> (Scenario, Vec<Outcome>) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let rng = &mut rng;
    let n = rng.usize(1..=3);
    let concurrent = rng.bool();
    let plans: Vec<Planned> = (0..n)
        .map(|k| Planned::random(rng, 2 * k as u32 + 1))
        .collect();
    let mut words: Vec<String> = plans.iter().map(|p| p.status.to_string()).collect();
    words.push("200".into());
    let mut sc = Scenario::new(&format!("generated case, seed {seed}"), n, &words.join(" "));
    sc.concurrent = concurrent;
    sc.chunk = if rng.bool() { 0 } else { rng.usize(1..64) };
    let mut t = Table {
        entries: Default::default(),
        size: 0,
        max: 4096,
    };
    // Concurrent: every answer in one segment, frames of the streams
    // interleaved; else each answer after its request.
    let mut queues: Vec<(usize, std::collections::VecDeque<Frame>)> = plans
        .iter()
        .enumerate()
        .map(|(i, p)| (i, p.frames().into()))
        .collect();
    let mut segment = Vec::new();
    while !queues.is_empty() {
        let q = if concurrent {
            rng.usize(..queues.len())
        } else {
            0
        };
        let (i, frames) = &mut queues[q];
        let p = &plans[*i];
        let Some(f) = frames.pop_front() else {
            let done = queues.remove(q).0;
            if !concurrent {
                sc.segments.push((done + 1, std::mem::take(&mut segment)));
            }
            continue;
        };
        segment.extend(noise(rng, p.stream));
        match f {
            Frame::Head { end } => {
                let mut hb = Hb::new();
                if rng.u8(..6) == 0 {
                    let size = rng.usize(0..=4096);
                    t.resize(size);
                    hb = hb.size(size);
                }
                hb = match t.find(b":status", Some(p.status.to_string().as_bytes())) {
                    Some(i) if rng.bool() => hb.idx(i),
                    _ if rng.bool() => hb.status(p.status),
                    _ => field(rng, hb, &mut t, b":status", p.status.to_string().as_bytes()),
                };
                for (name, value) in &p.fields {
                    hb = field(rng, hb, &mut t, name, value);
                }
                segment.extend(header_frames(rng, p.stream, hb.bytes(), end));
            }
            Frame::Data { piece, end } => {
                let body = &p.pieces[piece];
                let flags = if end { ES } else { 0 };
                if rng.bool() {
                    let pad = rng.u8(..);
                    segment.extend(data(p.stream, flags | flag::PADDED, &padded(body, pad)));
                } else {
                    segment.extend(data(p.stream, flags, body));
                }
            }
            Frame::Trailers => {
                let mut hb = Hb::new();
                for (name, value) in &p.trailers {
                    hb = field(rng, hb, &mut t, name, value);
                }
                segment.extend(header_frames(rng, p.stream, hb.bytes(), true));
            }
        }
    }
    if concurrent {
        sc.segments.push((n, segment));
    }
    let probe = 2 * n as u32 + 1;
    sc.segments.push((n + 1, answer(probe, 200, b"")));
    (sc, plans.iter().map(Planned::outcome).collect())
}

#[tokio::test(start_paused = true)]
async fn differential_generated_answer_sequences() {
    let mut failed = Vec::new();
    for seed in 0..GENERATED_CASES {
        let (sc, want) = generated_case(seed);
        match compare(&sc).await {
            Err(m) => failed.push(m),
            Ok((ours, _)) if ours.outcomes[..want.len()] != want[..] => failed.push(format!(
                "{}: not the answers the server sent\nsent: {want:?}\nours: {:?}",
                sc.name, ours.outcomes
            )),
            Ok(_) => {}
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {GENERATED_CASES} generated cases failed:\n\n{}",
        failed.len(),
        failed.join("\n\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Recordings of real servers
// ---------------------------------------------------------------------------------------------

/// A recorded session (tests/data/h2-recordings/README.md): the server's
/// bytes, cut at the offsets read when each request was sent.
fn recorded(name: &str, bytes: &[u8], gates: &str, expect: &str) -> Scenario {
    let gates: Vec<usize> = gates.lines().map(|l| l.trim().parse().unwrap()).collect();
    let mut sc = Scenario::bare(&format!("recorded: {name}"), gates.len(), expect);
    let mut from = 0;
    for (k, &g) in gates.iter().enumerate() {
        sc.segments.push((k, bytes[from..g].to_vec()));
        from = g;
    }
    sc.segments.push((gates.len(), bytes[from..].to_vec()));
    sc
}

macro_rules! recording {
    ($name:literal, $expect:expr) => {
        recorded(
            $name,
            include_bytes!(concat!("../../../tests/data/h2-recordings/", $name, ".bin")),
            include_str!(concat!(
                "../../../tests/data/h2-recordings/",
                $name,
                ".gates"
            )),
            $expect,
        )
    };
}

/// Every recording, with what our client must make of it.
fn recordings() -> Vec<Scenario> {
    vec![
        recording!("nginx-default", "200 200 200 timeout"),
        recording!("nginx-large-headers", "200 200 200 timeout"),
        recording!("nginx-goaway-after-2", "200 200 notsent notsent"),
        recording!("nghttpd-default", "200 200 200 timeout"),
        recording!("nghttpd-padding-trailers", "200 200 200 timeout"),
        recording!("emulator-200-410-406", "200 410 406 timeout"),
    ]
}

#[tokio::test(start_paused = true)]
async fn differential_recorded_sessions() {
    compare_all(&recordings()).await;
}
