//! The sans-IO connection against a scripted server: frames in, frames out.
//! (tests/chaos.rs and tests/engine.rs run the whole client against the
//! emulator's HTTP/2 server, an independent implementation.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Poll, Wake, Waker};

use bytes::{Bytes, BytesMut};
use http::Request;

use super::conn::{Config, Connection, Failure};
use super::frame::{self, flag, kind, setting, FrameHead, Reason, HEAD_LEN};
use crate::transport::TransportErrorKind;

struct Count(AtomicUsize);

impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn waker() -> (Waker, Arc<Count>) {
    let c = Arc::new(Count(AtomicUsize::new(0)));
    (Waker::from(c.clone()), c)
}

fn request(body: &'static [u8]) -> Request<Bytes> {
    let mut r = Request::new(Bytes::from_static(body));
    *r.method_mut() = http::Method::POST;
    *r.uri_mut() = "https://db5p.notify.windows.com/?token=abc"
        .parse()
        .unwrap();
    r.headers_mut()
        .insert("x-wns-type", "wns/raw".parse().unwrap());
    r
}

/// A connection past its preface, with the output drained.
fn conn(max_body: usize) -> Connection {
    let mut c = Connection::new(Config { max_body });
    let out = output(&mut c);
    assert!(out.starts_with(frame::PREFACE));
    let fs = frames(&out[frame::PREFACE.len()..]);
    assert_eq!(fs[0].0.kind, kind::SETTINGS);
    let settings: Vec<_> = frame::settings(&fs[0].1).unwrap().collect();
    assert!(settings.contains(&(setting::ENABLE_PUSH, 0)));
    assert_eq!(fs[1].0.kind, kind::WINDOW_UPDATE);
    c
}

fn output(c: &mut Connection) -> BytesMut {
    let mut out = BytesMut::new();
    c.take_output(&mut out);
    out
}

fn frames(mut b: &[u8]) -> Vec<(FrameHead, Vec<u8>)> {
    let mut v = Vec::new();
    while let Some(h) = FrameHead::parse(b) {
        v.push((h, b[HEAD_LEN..HEAD_LEN + h.len].to_vec()));
        b = &b[HEAD_LEN + h.len..];
    }
    assert!(b.is_empty(), "trailing bytes in the output");
    v
}

fn out_frames(c: &mut Connection) -> Vec<(FrameHead, Vec<u8>)> {
    frames(&output(c))
}

/// The streams whose HEADERS the client wrote since the last look.
fn opened(c: &mut Connection) -> Vec<u32> {
    out_frames(c)
        .iter()
        .filter(|(h, _)| h.kind == kind::HEADERS)
        .map(|(h, _)| h.stream)
        .collect()
}

fn feed(c: &mut Connection, bytes: &[u8]) {
    let mut b = BytesMut::from(bytes);
    c.recv(&mut b);
    assert!(
        b.is_empty() || c.is_finished(),
        "a whole frame was left unread"
    );
}

fn server_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    frame::put_head(&mut b, payload.len(), kind, flags, stream);
    b.extend_from_slice(payload);
    b.to_vec()
}

/// HPACK: `:status` (indexed 200, else literal with the static name) and
/// literal fields without indexing.
fn block(status: u16, fields: &[(&str, &str)]) -> Vec<u8> {
    let mut b = Vec::new();
    if status == 200 {
        b.push(0x88);
    } else {
        b.extend_from_slice(&[0x08, 3]);
        b.extend_from_slice(status.to_string().as_bytes());
    }
    for (n, v) in fields {
        b.push(0x00);
        b.push(n.len() as u8);
        b.extend_from_slice(n.as_bytes());
        b.push(v.len() as u8);
        b.extend_from_slice(v.as_bytes());
    }
    b
}

fn response(stream: u32, status: u16, body: &[u8]) -> Vec<u8> {
    let hb = block(status, &[("x-wns-status", "received")]);
    let mut v = server_frame(
        kind::HEADERS,
        flag::END_HEADERS | if body.is_empty() { flag::END_STREAM } else { 0 },
        stream,
        &hb,
    );
    if !body.is_empty() {
        v.extend(server_frame(kind::DATA, flag::END_STREAM, stream, body));
    }
    v
}

/// An HPACK integer with an `n`-bit prefix whose other bits are `first`.
fn hpack_int(first: u8, n: u32, mut v: usize, out: &mut Vec<u8>) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// Reads what a client writes (its preface, then frames) until it closes,
/// handing each frame to `each`.
async fn client_frames<R>(mut r: R, mut each: impl FnMut(FrameHead, &[u8]))
where
    R: tokio::io::AsyncRead + Unpin,
{
    use bytes::Buf;
    use tokio::io::AsyncReadExt;
    let mut buf = BytesMut::new();
    let mut preface = false;
    loop {
        if r.read_buf(&mut buf).await.unwrap_or(0) == 0 {
            return;
        }
        if !preface {
            if buf.len() < frame::PREFACE.len() {
                continue;
            }
            assert_eq!(&buf[..frame::PREFACE.len()], frame::PREFACE);
            buf.advance(frame::PREFACE.len());
            preface = true;
        }
        while let Some(h) = FrameHead::parse(&buf) {
            if buf.len() < HEAD_LEN + h.len {
                break;
            }
            each(h, &buf[HEAD_LEN..HEAD_LEN + h.len]);
            buf.advance(HEAD_LEN + h.len);
        }
    }
}

fn settings(values: &[(u16, u32)]) -> Vec<u8> {
    let mut b = BytesMut::new();
    frame::put_settings(&mut b, values);
    b.to_vec()
}

/// The server now allows `max` streams; the client's output is drained.
fn stream_limit(c: &mut Connection, max: u32) {
    feed(c, &settings(&[(setting::MAX_CONCURRENT_STREAMS, max)]));
    out_frames(c);
}

/// Submits `n` requests without a body; their keys.
fn submit_n(c: &mut Connection, n: usize) -> Vec<usize> {
    (0..n).map(|_| c.submit(request(b"")).unwrap()).collect()
}

/// A connection whose server sent SETTINGS with `values`, output drained.
fn settled(values: &[(u16, u32)]) -> Connection {
    let mut c = conn(1024);
    feed(&mut c, &settings(values));
    out_frames(&mut c);
    c
}

/// A connection whose server allows `max` streams, and the keys of `n`
/// requests submitted on it (those it opened are in its output).
fn queued(max: u32, n: usize) -> (Connection, Vec<usize>) {
    let mut c = settled(&[(setting::MAX_CONCURRENT_STREAMS, max)]);
    let keys = submit_n(&mut c, n);
    (c, keys)
}

/// The server's WINDOW_UPDATE of `inc` on `stream`.
fn window_update(stream: u32, inc: u32) -> Vec<u8> {
    server_frame(kind::WINDOW_UPDATE, 0, stream, &inc.to_be_bytes())
}

fn poll(c: &mut Connection, key: usize, w: &Waker) -> Poll<Result<http::Response<Bytes>, Failure>> {
    c.poll_response(key, w)
}

fn failure(p: Poll<Result<http::Response<Bytes>, Failure>>) -> Failure {
    match p {
        Poll::Ready(Err(f)) => f,
        Poll::Ready(Ok(r)) => panic!("expected a failure, got {r:?}"),
        Poll::Pending => panic!("expected a failure, still pending"),
    }
}

#[test]
fn one_exchange_with_settings_and_a_body() {
    let mut c = conn(1024);
    let (w, woken) = waker();
    let key = c.submit(request(b"wake")).unwrap();
    let fs = out_frames(&mut c);
    assert_eq!(fs.len(), 2);
    assert_eq!((fs[0].0.kind, fs[0].0.stream), (kind::HEADERS, 1));
    assert_eq!(fs[0].0.flags, flag::END_HEADERS);
    assert_eq!(
        (fs[1].0.kind, fs[1].0.flags),
        (kind::DATA, flag::END_STREAM)
    );
    assert_eq!(fs[1].1, b"wake");
    assert!(poll(&mut c, key, &w).is_pending());

    feed(&mut c, &settings(&[(setting::MAX_CONCURRENT_STREAMS, 100)]));
    let fs = out_frames(&mut c);
    assert_eq!((fs[0].0.kind, fs[0].0.flags), (kind::SETTINGS, flag::ACK));

    feed(&mut c, &response(1, 200, b"ok"));
    let mut wakers = Vec::new();
    c.take_wakers(&mut wakers);
    assert_eq!(wakers.len(), 1);
    wakers.into_iter().for_each(Waker::wake);
    assert_eq!(woken.0.load(Ordering::SeqCst), 1);
    let Poll::Ready(Ok(r)) = poll(&mut c, key, &w) else {
        panic!("no answer")
    };
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), http::Version::HTTP_2);
    assert_eq!(r.headers()["x-wns-status"], "received");
    assert_eq!(&r.body()[..], b"ok");
}

#[test]
fn bytes_one_at_a_time_give_the_same_answer() {
    let mut c = conn(1024);
    let (w, _) = waker();
    let key = c.submit(request(b"")).unwrap();
    let fs = out_frames(&mut c);
    assert_eq!(fs.len(), 1, "an empty body ends the stream with HEADERS");
    assert_eq!(fs[0].0.flags, flag::END_HEADERS | flag::END_STREAM);
    let mut input = BytesMut::new();
    for b in response(1, 503, b"busy") {
        input.extend_from_slice(&[b]);
        c.recv(&mut input);
    }
    assert!(input.is_empty());
    let Poll::Ready(Ok(r)) = poll(&mut c, key, &w) else {
        panic!("no answer")
    };
    assert_eq!((r.status().as_u16(), &r.body()[..]), (503, &b"busy"[..]));
}

#[test]
fn the_servers_stream_limit_queues_requests() {
    let (mut c, keys) = queued(1, 3);
    let (w, _) = waker();
    let fs = out_frames(&mut c);
    assert_eq!(fs.len(), 1);
    assert_eq!(fs[0].0.stream, 1);
    feed(&mut c, &response(1, 200, b""));
    let fs = out_frames(&mut c);
    assert_eq!((fs.len(), fs[0].0.stream), (1, 3), "the next one opens");
    assert!(poll(&mut c, keys[0], &w).is_ready());
    assert!(poll(&mut c, keys[2], &w).is_pending());
    // The limit grows: the last one opens at once.
    feed(&mut c, &settings(&[(setting::MAX_CONCURRENT_STREAMS, 10)]));
    let fs = out_frames(&mut c);
    assert!(fs
        .iter()
        .any(|(h, _)| h.kind == kind::HEADERS && h.stream == 5));
}

/// Before the server's first SETTINGS, one stream: hypercorn (python-h2)
/// with a limit of 1 answers a second early stream with GOAWAY
/// PROTOCOL_ERROR (found by tests/interop_servers.rs).
#[test]
fn one_stream_until_the_servers_settings_arrive() {
    let mut c = conn(1024);
    let _keys = submit_n(&mut c, 3);
    assert_eq!(opened(&mut c), [1]);
    // SETTINGS that name no limit: the rest open (up to our cap of 100).
    feed(&mut c, &settings(&[(setting::INITIAL_WINDOW_SIZE, 65_535)]));
    assert_eq!(opened(&mut c), [3, 5]);
}

/// A server may allow 0 streams (RFC 9113 §5.1.2): every request queues.
/// Cancelled ones leave the queue at once (they used to stay, marked, until
/// popped, which a limit of 0 never does), so an abandoned connection whose
/// callers all went away is finished, and their slots are used again.
#[test]
fn cancelled_requests_leave_the_queue_at_a_limit_of_0() {
    let (mut c, keys) = queued(0, 4);
    let (w, _) = waker();
    assert!(opened(&mut c).is_empty(), "a limit of 0 opens nothing");
    c.cancel(keys[1]);
    assert!(out_frames(&mut c).is_empty(), "nothing to reset");
    // The others still wait, in order, and open when the limit grows.
    feed(&mut c, &settings(&[(setting::MAX_CONCURRENT_STREAMS, 1)]));
    for (stream, key) in [(1, keys[0]), (3, keys[2]), (5, keys[3])] {
        assert_eq!(opened(&mut c), [stream]);
        feed(&mut c, &response(stream, 200, b""));
        assert!(matches!(poll(&mut c, key, &w), Poll::Ready(Ok(_))));
    }

    stream_limit(&mut c, 0);
    let keys = submit_n(&mut c, 100);
    keys.iter().for_each(|&k| c.cancel(k));
    // Their slots are free: the next ones take them, none is added.
    let again = submit_n(&mut c, 100);
    assert!(again.iter().all(|k| keys.contains(k)), "{again:?}");
    again.iter().for_each(|&k| c.cancel(k));
    assert!(opened(&mut c).is_empty());
    c.abandon();
    assert!(c.is_finished(), "nothing is open or queued");
}

#[test]
fn goaway_returns_unprocessed_requests_and_closes_to_new_ones() {
    let mut c = conn(1024);
    let (w, _) = waker();
    let k1 = c.submit(request(b"")).unwrap();
    let k3 = c.submit(request(b"")).unwrap();
    out_frames(&mut c);
    let mut ga = 1u32.to_be_bytes().to_vec();
    ga.extend_from_slice(&0u32.to_be_bytes());
    feed(&mut c, &server_frame(kind::GOAWAY, 0, 0, &ga));
    assert!(!c.accepts_streams());
    let f = failure(poll(&mut c, k3, &w));
    assert!(
        f.unprocessed.is_some(),
        "stream 3 was above the last stream"
    );
    assert!(f.message.contains("GOAWAY NO_ERROR"), "{}", f.message);
    assert!(!c.is_finished(), "stream 1 still runs");
    feed(&mut c, &response(1, 200, b""));
    assert!(matches!(poll(&mut c, k1, &w), Poll::Ready(Ok(_))));
    assert!(c.is_finished());
    let f = c.submit(request(b"")).unwrap_err();
    assert!(f.unprocessed.is_some());
}

/// At the end of the id space (2^31-1, about a billion streams, hours of
/// one busy connection): the request that gets the last id runs, the ones
/// still queued come back unprocessed at once (they used to wait forever),
/// and the connection finishes when its streams end.
#[test]
fn used_up_stream_ids_hand_the_queued_requests_back() {
    const LAST: u32 = (1 << 31) - 1;
    let mut c = conn(1024);
    let (w, _) = waker();
    let (late, woken) = waker();
    stream_limit(&mut c, 1);
    c.skip_stream_ids_to(LAST - 2);
    let keys = submit_n(&mut c, 3);
    assert_eq!(
        opened(&mut c),
        [LAST - 2],
        "the limit of one holds two back"
    );
    assert!(c.accepts_streams());
    assert!(poll(&mut c, keys[2], &late).is_pending());
    let mut wakers = Vec::new();
    c.take_wakers(&mut wakers);
    feed(&mut c, &response(LAST - 2, 200, b""));
    assert_eq!(opened(&mut c), [LAST], "the last id goes to the next one");
    assert!(matches!(poll(&mut c, keys[0], &w), Poll::Ready(Ok(_))));
    // The one handed back is woken, so its caller sees it at once.
    wakers.clear();
    c.take_wakers(&mut wakers);
    wakers.into_iter().for_each(Waker::wake);
    assert_eq!(woken.0.load(Ordering::SeqCst), 1);
    let f = failure(poll(&mut c, keys[2], &late));
    assert!(f.unprocessed.is_some(), "never sent, so resendable");
    assert!(
        f.message.contains("stream ids are used up"),
        "{}",
        f.message
    );
    assert!(!c.accepts_streams());
    assert!(!c.is_finished(), "the last stream still runs");
    let f = c.submit(request(b"")).unwrap_err();
    assert!(f.unprocessed.is_some());
    feed(&mut c, &response(LAST, 200, b""));
    assert!(matches!(poll(&mut c, keys[1], &w), Poll::Ready(Ok(_))));
    assert!(c.is_finished());
}

#[test]
fn resets_refused_is_unprocessed_other_codes_are_not() {
    let mut c = conn(1024);
    let (w, _) = waker();
    let k1 = c.submit(request(b"")).unwrap();
    let k3 = c.submit(request(b"")).unwrap();
    out_frames(&mut c);
    feed(
        &mut c,
        &server_frame(
            kind::RST_STREAM,
            0,
            1,
            &Reason::REFUSED_STREAM.0.to_be_bytes(),
        ),
    );
    feed(
        &mut c,
        &server_frame(kind::RST_STREAM, 0, 3, &2u32.to_be_bytes()),
    );
    let f1 = failure(poll(&mut c, k1, &w));
    assert!(f1.unprocessed.is_some());
    let f3 = failure(poll(&mut c, k3, &w));
    assert!(f3.unprocessed.is_none());
    assert_eq!(f3.kind, TransportErrorKind::Protocol);
    assert!(f3.message.contains("INTERNAL_ERROR"), "{}", f3.message);
    assert!(
        c.accepts_streams(),
        "a stream error leaves the connection up"
    );
}

#[test]
fn bodies_wait_for_send_window() {
    let mut c = settled(&[(setting::INITIAL_WINDOW_SIZE, 3)]);
    let (w, _) = waker();
    let key = c.submit(request(b"wake")).unwrap();
    let fs = out_frames(&mut c);
    assert_eq!(fs[1].0.kind, kind::DATA);
    assert_eq!((fs[1].1.as_slice(), fs[1].0.flags), (&b"wak"[..], 0));
    feed(&mut c, &window_update(1, 10));
    let fs = out_frames(&mut c);
    assert_eq!(
        (fs[0].1.as_slice(), fs[0].0.flags),
        (&b"e"[..], flag::END_STREAM)
    );
    feed(&mut c, &response(1, 200, b""));
    assert!(matches!(poll(&mut c, key, &w), Poll::Ready(Ok(_))));
}

/// Flow control is per stream (RFC 9113 §5.2): a body waiting for its own
/// stream's window holds up no other. (The first blocked stream used to
/// stop every body queued behind it.) A stream that goes away leaves the
/// list of blocked ones.
#[test]
fn a_stream_without_window_does_not_hold_up_the_others() {
    let mut c = settled(&[(setting::INITIAL_WINDOW_SIZE, 0)]);
    let (w, _) = waker();
    let keys: Vec<usize> = [&b"one"[..], b"two", b"three"]
        .into_iter()
        .map(|b| c.submit(request(b)).unwrap())
        .collect();
    assert_eq!(opened(&mut c), [1, 3, 5], "HEADERS only: no window");
    assert_eq!(c.blocked_streams(), 3);
    feed(&mut c, &window_update(3, 10));
    let fs = out_frames(&mut c);
    assert_eq!(fs.len(), 1, "{fs:?}");
    assert_eq!((fs[0].0.kind, fs[0].0.stream), (kind::DATA, 3));
    assert_eq!(
        (fs[0].1.as_slice(), fs[0].0.flags),
        (&b"two"[..], flag::END_STREAM)
    );
    feed(&mut c, &response(3, 200, b""));
    assert!(matches!(poll(&mut c, keys[1], &w), Poll::Ready(Ok(_))));
    // Stream 1 goes away still blocked; stream 5's body goes when it may.
    c.cancel(keys[0]);
    assert_eq!(c.blocked_streams(), 1);
    feed(&mut c, &window_update(5, 10));
    let fs = out_frames(&mut c);
    assert_eq!((fs[1].0.kind, fs[1].0.stream), (kind::DATA, 5));
    assert_eq!(c.blocked_streams(), 0);
}

#[test]
fn a_body_over_the_limit_resets_the_stream() {
    let mut c = conn(4);
    let (w, _) = waker();
    let key = c.submit(request(b"")).unwrap();
    out_frames(&mut c);
    feed(&mut c, &response(1, 200, b"12345"));
    let fs = out_frames(&mut c);
    assert_eq!(fs[0].0.kind, kind::RST_STREAM);
    assert_eq!(fs[0].1, Reason::CANCEL.0.to_be_bytes());
    let f = failure(poll(&mut c, key, &w));
    assert!(f.message.contains("longer than 4 bytes"), "{}", f.message);
}

#[test]
fn header_blocks_across_continuation_and_interleaving_is_an_error() {
    let mut c = conn(1024);
    let (w, _) = waker();
    let key = c.submit(request(b"")).unwrap();
    out_frames(&mut c);
    let hb = block(200, &[("x-wns-status", "received")]);
    let mut bytes = server_frame(kind::HEADERS, flag::END_STREAM, 1, &hb[..4]);
    bytes.extend(server_frame(kind::CONTINUATION, 0, 1, &hb[4..9]));
    bytes.extend(server_frame(
        kind::CONTINUATION,
        flag::END_HEADERS,
        1,
        &hb[9..],
    ));
    feed(&mut c, &bytes);
    let Poll::Ready(Ok(r)) = poll(&mut c, key, &w) else {
        panic!("no answer")
    };
    assert_eq!(r.headers()["x-wns-status"], "received");

    let key = c.submit(request(b"")).unwrap();
    out_frames(&mut c);
    let mut bytes = server_frame(kind::HEADERS, 0, 3, &hb[..4]);
    bytes.extend(server_frame(kind::PING, 0, 0, &[0; 8]));
    feed(&mut c, &bytes);
    let fs = out_frames(&mut c);
    assert_eq!(fs.last().unwrap().0.kind, kind::GOAWAY);
    assert_eq!(
        fs.last().unwrap().1[4..],
        Reason::PROTOCOL_ERROR.0.to_be_bytes()
    );
    let f = failure(poll(&mut c, key, &w));
    assert!(
        f.message.contains("middle of a header block"),
        "{}",
        f.message
    );
    assert!(c.is_finished());
}

#[test]
fn pings_are_answered_and_ours_acknowledged() {
    let mut c = conn(1024);
    feed(&mut c, &server_frame(kind::PING, 0, 0, b"12345678"));
    let fs = out_frames(&mut c);
    assert_eq!((fs[0].0.kind, fs[0].0.flags), (kind::PING, flag::ACK));
    assert_eq!(fs[0].1, b"12345678");
    c.send_ping();
    assert!(c.ping_outstanding());
    let fs = out_frames(&mut c);
    feed(&mut c, &server_frame(kind::PING, flag::ACK, 0, b"wrongone"));
    assert!(c.ping_outstanding());
    feed(&mut c, &server_frame(kind::PING, flag::ACK, 0, &fs[0].1));
    assert!(!c.ping_outstanding());
    feed(&mut c, &server_frame(kind::PING, 0, 0, b"short"));
    assert!(c.is_finished(), "a PING of 5 bytes is a connection error");
}

#[test]
fn a_cancelled_streams_headers_still_update_the_hpack_table() {
    let mut c = conn(1024);
    let (w, _) = waker();
    let k1 = c.submit(request(b"")).unwrap();
    let k3 = c.submit(request(b"")).unwrap();
    out_frames(&mut c);
    c.cancel(k1);
    let fs = out_frames(&mut c);
    assert_eq!((fs[0].0.kind, fs[0].0.stream), (kind::RST_STREAM, 1));
    // Stream 1's answer adds "x-wns-msg-id: 42" to the table (incremental indexing) ...
    let mut hb = vec![0x88, 0x40, 12];
    hb.extend_from_slice(b"x-wns-msg-id");
    hb.extend_from_slice(&[2, b'4', b'2']);
    feed(
        &mut c,
        &server_frame(kind::HEADERS, flag::END_HEADERS | flag::END_STREAM, 1, &hb),
    );
    assert!(
        c.accepts_streams(),
        "frames for a cancelled stream are fine"
    );
    // ... and stream 3's answer refers to it as dynamic entry 62.
    feed(
        &mut c,
        &server_frame(
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            3,
            &[0x88, 0xbe],
        ),
    );
    let Poll::Ready(Ok(r)) = poll(&mut c, k3, &w) else {
        panic!("no answer")
    };
    assert_eq!(r.headers()["x-wns-msg-id"], "42");
}

#[test]
fn connection_errors_fail_every_exchange() {
    for (bytes, reason, what) in [
        (
            server_frame(kind::DATA, 0, 7, b"x"),
            Reason::PROTOCOL_ERROR,
            "never opened",
        ),
        (
            server_frame(kind::HEADERS, flag::END_HEADERS, 2, &[0x88]),
            Reason::PROTOCOL_ERROR,
            "never opened",
        ),
        (
            server_frame(kind::PUSH_PROMISE, 0, 1, &[0; 4]),
            Reason::PROTOCOL_ERROR,
            "PUSH_PROMISE",
        ),
        (
            server_frame(kind::HEADERS, flag::END_HEADERS, 1, &[0x80]),
            Reason::COMPRESSION_ERROR,
            "HPACK",
        ),
        (
            server_frame(kind::SETTINGS, 0, 0, &[0; 5]),
            Reason::FRAME_SIZE_ERROR,
            "multiple of 6",
        ),
        (
            window_update(0, 0x7fff_ffff),
            Reason::FLOW_CONTROL_ERROR,
            "above 2^31-1",
        ),
        (
            {
                let mut b = BytesMut::new();
                frame::put_head(&mut b, 20_000, kind::DATA, 0, 1);
                b.to_vec()
            },
            Reason::FRAME_SIZE_ERROR,
            "20000 bytes",
        ),
    ] {
        connection_error(&bytes, reason, what);
    }
}

/// `bytes`, fed with stream 1 open, are a connection error: GOAWAY with
/// `reason`, and stream 1's exchange fails with a message naming `what`.
fn connection_error(bytes: &[u8], reason: Reason, what: &str) {
    let mut c = conn(1024);
    let (w, _) = waker();
    let open = c.submit(request(b"")).unwrap();
    out_frames(&mut c);
    feed(&mut c, bytes);
    let fs = out_frames(&mut c);
    let last = fs.last().expect("GOAWAY");
    assert_eq!(last.0.kind, kind::GOAWAY, "{what}");
    assert_eq!(last.1[4..], reason.0.to_be_bytes(), "{what}");
    let f = failure(poll(&mut c, open, &w));
    assert!(f.message.contains(what), "{what}: {}", f.message);
    assert!(c.is_finished());
}

/// SETTINGS a client must refuse: ENABLE_PUSH other than 0 from a server
/// (RFC 9113 §6.5.2; they used to be taken unless above 1), and an
/// INITIAL_WINDOW_SIZE that takes an open stream's send window past 2^31-1
/// (§6.9.2; it used to be applied).
#[test]
fn settings_that_enable_push_or_overflow_a_window_are_connection_errors() {
    for v in [1, 2] {
        let b = settings(&[(setting::ENABLE_PUSH, v)]);
        connection_error(&b, Reason::PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH");
    }
    let mut c = conn(1024);
    feed(&mut c, &settings(&[(setting::ENABLE_PUSH, 0)]));
    assert!(c.accepts_streams(), "ENABLE_PUSH 0 is fine");

    // Stream 1's window raised to exactly 2^31-1, then one more by SETTINGS.
    let inc: u32 = 0x7fff_ffff - 65_535;
    let mut b = window_update(1, inc);
    b.extend(settings(&[(setting::INITIAL_WINDOW_SIZE, 65_536)]));
    connection_error(&b, Reason::FLOW_CONTROL_ERROR, "stream's send window");
    // Up to 2^31-1 is fine, and so is a window that shrinks.
    let mut c = conn(1024);
    c.submit(request(b"")).unwrap();
    feed(&mut c, &window_update(1, inc));
    feed(&mut c, &settings(&[(setting::INITIAL_WINDOW_SIZE, 65_535)]));
    feed(&mut c, &settings(&[(setting::INITIAL_WINDOW_SIZE, 0)]));
    assert!(c.accepts_streams());
}

#[test]
fn failing_below_http_returns_unsent_requests() {
    let mut c = conn(1024);
    let (w, _) = waker();
    feed(&mut c, &settings(&[(setting::MAX_CONCURRENT_STREAMS, 1)]));
    let sent = c.submit(request(b"")).unwrap();
    let queued = c.submit(request(b"")).unwrap();
    c.fail(
        TransportErrorKind::Broken,
        "the server closed the connection",
    );
    let f = failure(poll(&mut c, sent, &w));
    assert!((f.unprocessed.is_none(), f.kind) == (true, TransportErrorKind::Broken));
    let f = failure(poll(&mut c, queued, &w));
    assert!(f.unprocessed.is_some());
    assert!(c.is_finished());
}

#[test]
fn the_connection_window_is_credited_back() {
    let mut c = conn(1 << 20);
    let (w, _) = waker();
    let keys = submit_n(&mut c, 2);
    out_frames(&mut c);
    let chunk = vec![b'x'; 16_384];
    let mut updates = 0u64;
    for stream in [1u32, 3] {
        let hb = block(200, &[]);
        feed(
            &mut c,
            &server_frame(kind::HEADERS, flag::END_HEADERS, stream, &hb),
        );
        for i in 0..64 {
            let fl = if i == 63 { flag::END_STREAM } else { 0 };
            feed(&mut c, &server_frame(kind::DATA, fl, stream, &chunk));
            for (h, p) in out_frames(&mut c) {
                if h.kind == kind::WINDOW_UPDATE && h.stream == 0 {
                    updates += u64::from(u32::from_be_bytes(p[..4].try_into().unwrap()));
                }
            }
        }
    }
    assert_eq!(updates, 2 << 20, "2 MiB read, 2 MiB credited");
    for k in keys {
        let Poll::Ready(Ok(r)) = poll(&mut c, k, &w) else {
            panic!("no answer")
        };
        assert_eq!(r.body().len(), 1 << 20);
    }
}

#[test]
fn informational_answers_and_trailers() {
    let mut c = conn(1024);
    let (w, _) = waker();
    let key = c.submit(request(b"")).unwrap();
    out_frames(&mut c);
    let mut bytes = server_frame(kind::HEADERS, flag::END_HEADERS, 1, &block(100, &[]));
    bytes.extend(server_frame(
        kind::HEADERS,
        flag::END_HEADERS,
        1,
        &block(200, &[]),
    ));
    bytes.extend(server_frame(kind::DATA, 0, 1, b"a"));
    let mut trailers = vec![0x00, 9];
    trailers.extend_from_slice(b"x-trailer");
    trailers.extend_from_slice(&[1, b'1']);
    bytes.extend(server_frame(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        1,
        &trailers,
    ));
    feed(&mut c, &bytes);
    let Poll::Ready(Ok(r)) = poll(&mut c, key, &w) else {
        panic!("no answer")
    };
    assert_eq!((r.status().as_u16(), &r.body()[..]), (200, &b"a"[..]));
}

/// The whole client (driver task included) against a scripted server that
/// sends its SETTINGS, optionally acknowledges ours, and then never answers.
/// Returns the connection and the server task, which yields every byte read.
fn scripted_server(ack: bool) -> (super::Http2Conn, tokio::task::JoinHandle<Vec<u8>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (client, mut server) = tokio::io::duplex(64 * 1024);
    let conn = super::Http2Conn::start(client, Config { max_body: 1024 }, ());
    let task = tokio::spawn(async move {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let mut acked = false;
        let _ = server.write_all(&settings(&[])).await;
        loop {
            match server.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            if ack && !acked && got.len() >= frame::PREFACE.len() + HEAD_LEN {
                acked = true;
                let _ = server
                    .write_all(&server_frame(kind::SETTINGS, flag::ACK, 0, &[]))
                    .await;
            }
        }
        got
    });
    (conn, task)
}

#[tokio::test(start_paused = true)]
async fn a_server_that_never_acknowledges_our_settings_is_given_up_on() {
    let (conn, server) = scripted_server(false);
    let start = tokio::time::Instant::now();
    let f = conn.send(request(b"wake")).await.unwrap_err();
    assert_eq!(f.kind, TransportErrorKind::Timeout, "{}", f.message);
    assert!(f.message.contains("SETTINGS"), "{}", f.message);
    // Virtual time (paused clock): the deadline is the SETTINGS timeout, not
    // the keep-alive PING's 30 s.
    assert_eq!(start.elapsed().as_secs(), super::SETTINGS_TIMEOUT.as_secs());
    assert!(conn.is_closed());
    drop(conn);
    let got = server.await.unwrap();
    let fs = frames(&got[frame::PREFACE.len()..]);
    let (head, payload) = fs.last().unwrap();
    assert_eq!(head.kind, kind::GOAWAY);
    assert_eq!(payload[4..8], 4u32.to_be_bytes(), "SETTINGS_TIMEOUT");
}

#[tokio::test(start_paused = true)]
async fn an_acknowledged_connection_outlives_the_settings_timeout() {
    let (conn, server) = scripted_server(true);
    let send = conn.send(request(b"wake"));
    // The server never answers; the exchange is still waiting after 25 s
    // (past the SETTINGS timeout, before the first keep-alive PING).
    let waited = tokio::time::timeout(std::time::Duration::from_secs(25), send).await;
    assert!(waited.is_err(), "the exchange ended early: {waited:?}");
    assert!(!conn.is_closed());
    // The first keep-alive PING goes out 30 s after the start.
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    assert!(!conn.is_closed());
    drop(conn);
    let got = server.await.unwrap();
    let fs = frames(&got[frame::PREFACE.len()..]);
    let pings: Vec<_> = fs.iter().filter(|(h, _)| h.kind == kind::PING).collect();
    assert_eq!(pings.len(), 1, "one PING by 31 s");
    assert!(!pings[0].0.has(flag::ACK));
    assert!(fs.iter().any(|(h, _)| h.kind == kind::HEADERS));
}

#[tokio::test(start_paused = true)]
async fn a_failed_connection_whose_server_does_not_read_ends_after_the_grace() {
    // The server neither reads nor acknowledges: past the first 64 octets
    // nothing can be written, our GOAWAY included.
    let (client, _server) = tokio::io::duplex(64);
    // The driver task holds the guard until it ends.
    let (guard, ended) = tokio::sync::oneshot::channel::<()>();
    let conn = super::Http2Conn::start(client, Config { max_body: 1024 }, guard);
    let start = tokio::time::Instant::now();
    let f = conn.send(request(b"wake")).await.unwrap_err();
    assert_eq!(f.kind, TransportErrorKind::Timeout, "{}", f.message);
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), ended).await;
    assert!(ended.is_ok(), "the driver still holds the connection");
    // Virtual time: the SETTINGS timeout, then the close grace.
    assert_eq!(
        start.elapsed(),
        super::SETTINGS_TIMEOUT + super::CLOSE_GRACE,
        "ended at the wrong time"
    );
}

#[path = "hostile.rs"]
mod hostile;

#[path = "differential.rs"]
mod differential;
