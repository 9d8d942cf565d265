//! Hostile clients against a live `fleetwake serve`: a flood of connections
//! and requests beyond the server's bounds, bodies far over the limit (a true
//! and a lying `Content-Length`, chunked without a length), slowloris clients
//! (headers and body one byte a second), malformed JSON, and HTTP/2 abuse
//! written frame by frame (rapid reset, a CONTINUATION flood, PING and
//! SETTINGS floods that never read). The server must stay within its bounds,
//! answer clearly, and keep serving everyone else.
//! (tests/serve.rs covers keys, the 413 announced with `Expect: 100-continue`,
//! batch limits and bad JSON with a line and a path.)

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::serve::*;
use common::{proc_status_kb, MaxSampler};
use fleetwake::emulator::HttpVersions;

/// One at a time: they measure time and count sockets.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Sockets the process holds open (listener, accepted and outgoing connections).
fn sockets_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|l| l.to_string_lossy().starts_with("socket:"))
                .count()
        })
        .unwrap_or(0)
}

/// Reads until EOF or an error (a reset after the answer); what arrived.
fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

fn status_of(raw: &[u8]) -> Option<u16> {
    std::str::from_utf8(raw.get(9..12)?).ok()?.parse().ok()
}

/// `GET /healthz` on a fresh connection: the status and how long it took.
fn healthz(addr: SocketAddr, timeout: Duration) -> (Option<u16>, Duration) {
    let t0 = Instant::now();
    let Ok(mut s) = TcpStream::connect(addr) else {
        return (None, t0.elapsed());
    };
    s.set_read_timeout(Some(timeout)).unwrap();
    let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let raw = read_until_closed(&mut s);
    (status_of(&raw), t0.elapsed())
}

fn auth() -> String {
    format!("Authorization: Bearer {KEY_A}\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_connections_and_requests_stays_bounded() {
    let _one = SERIAL.lock().await;
    let emu = common::emulator(HttpVersions::Both).await;
    let dir = tempfile::tempdir().unwrap();
    const MAX_CONNS: usize = 32;
    const IDLE_S: u64 = 2;
    const MAX_JOBS: usize = 8;
    let config = write_config(
        dir.path(),
        &emu,
        &format!(
            "max_connections = {MAX_CONNS}\nidle_timeout_s = {IDLE_S}\nrequest_timeout_s = 5\n\
             max_jobs = {MAX_JOBS}\njob_ttl_s = 1\nwait_timeout_s = 30"
        ),
    );
    let srv = start(&config);
    let (addr, pid) = (srv.addr, srv.child.id());
    let base_sockets = sockets_of(pid);
    let sockets = MaxSampler::start(move || sockets_of(pid));

    // 1. Twice max_connections clients that connect and send nothing. They
    // fill every slot; the rest wait in the listen backlog. When a client is
    // accepted with every slot taken, the server closes the connection idle
    // the longest (quiet >= 250 ms) to make room, so a health check that
    // queues behind them all is answered quickly; the hogs are all closed
    // (evicted, or after idle_timeout_s).
    let hogs: Vec<TcpStream> = (0..2 * MAX_CONNS)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let (status, took) = healthz(addr, Duration::from_secs(30));
    assert_eq!(status, Some(200), "healthz after {took:?}");
    // Eviction needs the newest hogs to be quiet for 250 ms: 2 s is slack.
    assert!(
        took <= Duration::from_secs(2),
        "healthz waited {took:?} behind idle connections"
    );
    let hog_wait = took;
    // Every hog was closed by the server (EOF), none answered.
    for mut h in hogs {
        h.set_read_timeout(Some(Duration::from_secs(3 * IDLE_S + 3)))
            .unwrap();
        let mut b = [0u8; 64];
        let n = h.read(&mut b);
        assert!(
            matches!(n, Ok(0))
                || n.as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "an idle connection was not closed: {n:?}"
        );
    }

    // 2. 60 clients at once, each a ?wait=true request of 5 slow wakes (1.5 s):
    // at most max_jobs jobs run; the others get 503 with Retry-After. Nothing
    // hangs, nothing is pushed for a refused request.
    let body = |c: usize| {
        let wakes: Vec<String> = (0..5)
            .map(|i| wake(&format!("f{c}-{i}"), &format!("slow-1500.f{c}-{i}")))
            .collect();
        format!(r#"{{"wakes":[{}]}}"#, wakes.join(","))
    };
    let t0 = Instant::now();
    let answers = post_wait_parallel(addr, (0..60).map(body).collect());
    let flood_took = t0.elapsed();
    let ok = answers.iter().filter(|r| r.status == 200).count();
    let busy = answers.iter().filter(|r| r.status == 503).count();
    assert_eq!(ok + busy, answers.len(), "only 200 or 503");
    assert!(ok >= MAX_JOBS, "{ok} served");
    assert!(busy >= 1, "the job bound was reached");
    for r in answers.iter().filter(|r| r.status == 503) {
        assert_eq!(r.headers.get("retry-after").map(String::as_str), Some("5"));
        assert!(r.json()["error"]
            .as_str()
            .unwrap()
            .contains("too many jobs"));
    }
    for r in answers.iter().filter(|r| r.status == 200) {
        let j = r.json();
        assert_eq!(j["results"].as_array().unwrap().len(), 5);
        assert!(j["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["outcome"] == "received"));
    }
    assert_eq!(
        emu.stats().pushes_total as usize,
        5 * ok,
        "refused requests push nothing"
    );

    // 3. Afterwards: prompt health, bounded sockets and memory.
    let (status, took) = healthz(addr, Duration::from_secs(5));
    assert_eq!(status, Some(200));
    assert!(took < Duration::from_secs(1), "healthz took {took:?}");
    let max_sockets = sockets.finish();
    let peak_rss_kb = proc_status_kb(pid, "VmHWM");
    eprintln!(
        "flood: {} idle connections, healthz behind them in {hog_wait:?}; 60 requests: {ok} served, {busy} got 503, in {flood_took:?}; \
         server sockets max {max_sockets} (at rest {base_sockets}); peak RSS {} MiB",
        2 * MAX_CONNS,
        peak_rss_kb / 1024
    );
    // Accepted connections never exceed max_connections, plus the one new
    // client held while an idle connection is closed for it; the rest is the
    // listener and the engine's own connections to WNS (and the token host).
    assert!(
        max_sockets <= base_sockets + MAX_CONNS + 4,
        "{max_sockets} sockets open (at rest {base_sockets}, max_connections {MAX_CONNS})"
    );
    assert!(peak_rss_kb < 128 * 1024, "peak RSS {peak_rss_kb} KiB");
    assert_eq!(srv.stop(), Some(0));
    emu.shutdown().await;
}

/// What the kernel buffers on loopback (send + receive buffers) passes before
/// the server's close is felt; far less than the bodies sent.
const LET_THROUGH: usize = 48 << 20;

/// Sends `head`, then up to `total` bytes of `chunk` repeated, on a thread;
/// reads the answer, which must have status `want` and be followed by the
/// close before `LET_THROUGH` bytes went in. Returns the answer text and the
/// bytes the server let through.
fn send_huge(
    addr: SocketAddr,
    head: String,
    chunk: Vec<u8>,
    total: usize,
    want: u16,
) -> (String, usize) {
    let (answer, sent) = send_huge_raw(addr, head, chunk, total);
    let text = String::from_utf8_lossy(&answer).into_owned();
    assert_eq!(status_of(&answer), Some(want), "{text}");
    assert!(sent < LET_THROUGH, "{sent} bytes went in: {text}");
    (text, sent)
}

fn send_huge_raw(addr: SocketAddr, head: String, chunk: Vec<u8>, total: usize) -> (Vec<u8>, usize) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let mut w = s.try_clone().unwrap();
    w.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    let writer = std::thread::spawn(move || {
        let mut sent = 0;
        while sent < total {
            match w.write(&chunk) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        sent
    });
    let answer = read_until_closed(&mut s);
    let _ = s.shutdown(std::net::Shutdown::Both);
    (answer, writer.join().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_bodies_get_413_without_being_read() {
    let _one = SERIAL.lock().await;
    let emu = common::emulator(HttpVersions::Both).await;
    let dir = tempfile::tempdir().unwrap();
    const LIMIT: usize = 65536;
    let config = write_config(dir.path(), &emu, &format!("max_body_bytes = {LIMIT}"));
    let srv = start(&config);
    let (addr, pid) = (srv.addr, srv.child.id());
    const HUGE: usize = 256 << 20;
    let post = format!("POST /v1/wakes HTTP/1.1\r\nHost: x\r\n{}", auth());

    // A true Content-Length far over the limit, no Expect: 413 at once.
    let (answer, sent) = send_huge(
        addr,
        format!("{post}Content-Length: {HUGE}\r\n\r\n"),
        vec![b'x'; 65536],
        HUGE,
        413,
    );
    assert!(answer.contains("over the limit of 65536 bytes"), "{answer}");
    let declared_sent = sent;

    // Chunked, no length: the limit is counted while reading; 413, closed.
    let mut chunk = format!("{:x}\r\n", 65536).into_bytes();
    chunk.extend(std::iter::repeat_n(b'x', 65536));
    chunk.extend_from_slice(b"\r\n");
    let (answer, sent) = send_huge(
        addr,
        format!("{post}Transfer-Encoding: chunked\r\n\r\n"),
        chunk,
        HUGE,
        413,
    );
    assert!(answer.contains("over the limit of 65536 bytes"), "{answer}");
    let chunked_sent = sent;

    // A lying Content-Length (100 bytes, then 256 MiB): the 100 bytes are the
    // body (not JSON: 400 saying where); what follows is not a request (431 or
    // 400) and the connection is closed.
    let (answer, sent) = send_huge(
        addr,
        format!("{post}Content-Length: 100\r\n\r\n"),
        vec![b'x'; 65536],
        HUGE,
        400,
    );
    assert!(answer.contains("\"line\":1"), "{answer}");
    let lie_sent = sent;
    assert_eq!(emu.stats().pushes_total, 0);

    // The server is fine and did not buffer the bodies.
    let (status, took) = healthz(addr, Duration::from_secs(5));
    assert_eq!(status, Some(200));
    assert!(took < Duration::from_secs(1), "healthz took {took:?}");
    let peak_rss_kb = proc_status_kb(pid, "VmHWM");
    eprintln!(
        "huge bodies of {} MiB: bytes accepted before the close: declared {declared_sent}, \
         chunked {chunked_sent}, lying {lie_sent}; server peak RSS {} MiB",
        HUGE >> 20,
        peak_rss_kb / 1024
    );
    assert!(peak_rss_kb < 96 * 1024, "peak RSS {peak_rss_kb} KiB");
    assert_eq!(srv.stop(), Some(0));
    emu.shutdown().await;
}

/// Writes `bytes` one per second until the server closes the connection;
/// returns how long that took and what the server answered.
fn trickle(mut s: TcpStream, bytes: &[u8]) -> (Duration, Vec<u8>) {
    let t0 = Instant::now();
    let mut r = s.try_clone().unwrap();
    r.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let reader = std::thread::spawn(move || {
        let answer = read_until_closed(&mut r);
        (Instant::now(), answer)
    });
    for b in bytes {
        if s.write_all(&[*b]).is_err() || reader.is_finished() {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let (closed_at, answer) = reader.join().unwrap();
    (closed_at.duration_since(t0), answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_clients_are_dropped_and_others_are_served_meanwhile() {
    let _one = SERIAL.lock().await;
    let emu = common::emulator(HttpVersions::Both).await;
    let dir = tempfile::tempdir().unwrap();
    const TIMEOUT_S: u64 = 3;
    let config = write_config(
        dir.path(),
        &emu,
        &format!("request_timeout_s = {TIMEOUT_S}\nmax_connections = 8"),
    );
    let srv = start(&config);
    let addr = srv.addr;

    // Headers one byte a second: never complete within the header timeout.
    let slow_head = std::thread::spawn(move || {
        let s = TcpStream::connect(addr).unwrap();
        let head = format!(
            "POST /v1/wakes HTTP/1.1\r\nHost: x\r\n{}X-Slow: {}\r\n\r\n",
            auth(),
            "a".repeat(60)
        );
        trickle(s, head.as_bytes())
    });
    // Complete headers, then the body one byte a second.
    let slow_body = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        let body = wake("slow", "ok.slow");
        let head = format!(
            "POST /v1/wakes?wait=true HTTP/1.1\r\nHost: x\r\n{}Content-Length: {}\r\n\r\n",
            auth(),
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        trickle(s, body.as_bytes())
    });
    // Meanwhile everyone else is served at once.
    std::thread::sleep(Duration::from_millis(500));
    let mut worst = Duration::ZERO;
    for i in 0..10 {
        let (status, took) = healthz(addr, Duration::from_secs(5));
        assert_eq!(status, Some(200));
        worst = worst.max(took);
        let t = Instant::now();
        let r = request(
            addr,
            "POST",
            "/v1/wakes?wait=true",
            Some(KEY_A),
            Some(wake(&format!("fast{i}"), &format!("ok.fast{i}")).as_bytes()),
        );
        assert_eq!(r.status, 200);
        worst = worst.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        worst < Duration::from_secs(1),
        "a normal request took {worst:?} next to slow clients"
    );
    let (head_closed, head_answer) = slow_head.join().unwrap();
    let (body_closed, body_answer) = slow_body.join().unwrap();
    eprintln!(
        "slowloris: header trickler dropped after {head_closed:?}, body trickler after {body_closed:?} \
         (timeout {TIMEOUT_S} s); worst normal request {worst:?}"
    );
    // Dropped after the timeout, with 3 s of slack for the one-second trickle
    // and scheduling; not before the timeout.
    let (lo, hi) = (
        Duration::from_secs(TIMEOUT_S) - Duration::from_millis(500),
        Duration::from_secs(TIMEOUT_S + 3),
    );
    assert!(
        (lo..=hi).contains(&head_closed),
        "header trickler dropped after {head_closed:?}"
    );
    assert!(
        head_answer.is_empty() || status_of(&head_answer) == Some(408),
        "{}",
        String::from_utf8_lossy(&head_answer)
    );
    assert!(
        (lo..=hi).contains(&body_closed),
        "body trickler dropped after {body_closed:?}"
    );
    assert_eq!(
        status_of(&body_answer),
        Some(408),
        "{}",
        String::from_utf8_lossy(&body_answer)
    );
    assert_eq!(
        emu.stats().by_channel.get("ok.slow"),
        None,
        "the slow wake was not sent"
    );
    assert_eq!(srv.stop(), Some(0));
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_and_wrong_types_get_400_saying_where() {
    let _one = SERIAL.lock().await;
    let emu = common::emulator(HttpVersions::Both).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &emu, "");
    let srv = start(&config);
    let addr = srv.addr;
    const CH: &str = "https://db5p.notify.windows.com/?token=ok.m";
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    // (body, where: the JSON path, "line" for a line and column, or "" for the
    // whole body; words of the error)
    let cases: Vec<(Vec<u8>, &str, &str)> = vec![
        (
            format!(r#"{{"device_id":7,"tenant":"t","channel_uri":"{CH}"}}"#).into_bytes(),
            "device_id",
            "expected a string",
        ),
        (
            format!(r#"{{"device_id":"d","tenant":"t","channel_uri":"{CH}","ttl_s":"60"}}"#)
                .into_bytes(),
            "ttl_s",
            "expected",
        ),
        (
            format!(r#"{{"device_id":"d","tenant":"t","channel_uri":"{CH}","ttl_s":1e99}}"#)
                .into_bytes(),
            "ttl_s",
            "",
        ),
        (
            format!(r#"{{"device_id":"d","tenant":["t"],"channel_uri":"{CH}"}}"#).into_bytes(),
            "tenant",
            "expected a string",
        ),
        (
            format!(r#"{{"device_id":null,"tenant":"t","channel_uri":"{CH}"}}"#).into_bytes(),
            "device_id",
            "",
        ),
        (
            format!(r#"{{"v":"1","device_id":"d","tenant":"t","channel_uri":"{CH}"}}"#)
                .into_bytes(),
            "v",
            "",
        ),
        (
            br#"{"wakes":{"device_id":"d"}}"#.to_vec(),
            "wakes",
            "expected an array",
        ),
        (
            format!(
                r#"{{"wakes":[{{"device_id":"d","tenant":"t","channel_uri":"{CH}","ttl_s":-1}}]}}"#
            )
            .into_bytes(),
            "wakes[0].ttl_s",
            "",
        ),
        (b"\"just a string\"".to_vec(), "", "found a string"),
        (b"".to_vec(), "line", "EOF"),
        (
            b"{\"device_id\":\"d\xff\xfe\",\"tenant\":\"t\"}".to_vec(),
            "line",
            "unicode",
        ),
        (
            format!(r#"{{"device_id":"d","tenant":"t","channel_uri":"{CH}"}} trailing"#)
                .into_bytes(),
            "line",
            "trailing",
        ),
        (deep.into_bytes(), "line", "recursion"),
    ];
    for (body, path, words) in &cases {
        let shown = String::from_utf8_lossy(&body[..body.len().min(80)]).into_owned();
        let r = request(addr, "POST", "/v1/wakes", Some(KEY_A), Some(body));
        assert_eq!(
            r.status,
            400,
            "{shown}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let j = r.json();
        let error = j["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(words),
            "{shown}: {error:?} should say {words:?}"
        );
        match *path {
            "" => {}
            "line" => assert!(j["line"].as_u64().is_some(), "{shown}: {j}"),
            p => assert_eq!(j["path"].as_str(), Some(p), "{shown}: {j}"),
        }
    }
    assert_eq!(emu.stats().pushes_total, 0, "nothing malformed is sent");
    let (status, _) = healthz(addr, Duration::from_secs(5));
    assert_eq!(status, Some(200));
    assert_eq!(srv.stop(), Some(0));
    emu.shutdown().await;
}

// ---------------------------------------------------------------------------
// HTTP/2 (cleartext, prior knowledge) abuse: frames written by hand.

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK for `GET /healthz` (`:authority x`): static-table names, literal values.
fn h2_healthz_block() -> Vec<u8> {
    let mut b = vec![0x82, 0x86]; // :method GET, :scheme http
    b.extend_from_slice(&[0x04, 8]);
    b.extend_from_slice(b"/healthz"); // :path, literal without indexing
    b.extend_from_slice(&[0x01, 1, b'x']); // :authority
    b
}

/// The frames in `raw` (kind, flags, stream, payload); stops at a partial one.
fn h2_frames(mut raw: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
    let mut out = Vec::new();
    while raw.len() >= 9 {
        let len = (usize::from(raw[0]) << 16) | (usize::from(raw[1]) << 8) | usize::from(raw[2]);
        if raw.len() < 9 + len {
            break;
        }
        let stream = u32::from_be_bytes([raw[5], raw[6], raw[7], raw[8]]) & 0x7fff_ffff;
        out.push((raw[3], raw[4], stream, raw[9..9 + len].to_vec()));
        raw = &raw[9 + len..];
    }
    out
}

/// The error code of the first GOAWAY in `raw`, if any.
fn h2_goaway(raw: &[u8]) -> Option<u32> {
    h2_frames(raw)
        .into_iter()
        .find(|f| f.0 == 0x7)
        .and_then(|f| Some(u32::from_be_bytes(f.3.get(4..8)?.try_into().ok()?)))
}

/// How one abusive HTTP/2 connection ended.
struct H2Ended {
    /// What the server sent.
    raw: Vec<u8>,
    /// The server closed the connection (else the read timed out).
    closed: bool,
    /// The peak RSS of the server while the client wrote without reading.
    rss_kb_while_writing: usize,
}

/// Writes `bytes` (the server may stop reading), reading nothing until the
/// write finished or `timeout` passed, while sampling the server's RSS; then
/// reads what came back until the server closes or `timeout` passes.
fn h2_abuse(addr: SocketAddr, pid: u32, bytes: Vec<u8>, timeout: Duration) -> H2Ended {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(timeout)).unwrap();
    s.set_write_timeout(Some(timeout)).unwrap();
    let rss = MaxSampler::start(move || proc_status_kb(pid, "VmRSS") as usize);
    let _ = s.write_all(&bytes);
    // One sample after the write too, in case it finished before the first.
    let rss_kb_while_writing = rss.finish().max(proc_status_kb(pid, "VmRSS") as usize);
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) => {
                break !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                )
            }
        }
    };
    H2Ended {
        raw,
        closed,
        rss_kb_while_writing,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_abuse_is_cut_off_and_others_are_served() {
    let _one = SERIAL.lock().await;
    let emu = common::emulator(HttpVersions::Both).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &emu,
        "request_timeout_s = 5\nidle_timeout_s = 2",
    );
    let srv = start(&config);
    let (addr, pid) = (srv.addr, srv.child.id());
    let rss = MaxSampler::start(move || proc_status_kb(pid, "VmRSS") as usize);
    let block = h2_healthz_block();
    let preface = || {
        let mut b = H2_PREFACE.to_vec();
        b.extend(h2_frame(0x4, 0, 0, &[]));
        b
    };
    let healthy = |what: &str| {
        let (status, took) = healthz(addr, Duration::from_secs(10));
        assert_eq!(status, Some(200), "healthz after {what} ({took:?})");
    };

    // The same frames, well-behaved, get an answer: the server speaks h2c.
    let mut ok = preface();
    ok.extend(h2_frame(0x1, 0x5, 1, &block)); // HEADERS, END_STREAM | END_HEADERS
    ok.extend(h2_frame(0x7, 0, 0, &[0, 0, 0, 1, 0, 0, 0, 0])); // GOAWAY: done
    let end = h2_abuse(addr, pid, ok, Duration::from_secs(10));
    let answer = h2_frames(&end.raw)
        .into_iter()
        .find(|f| f.0 == 0x1 && f.2 == 1)
        .expect("an answer on stream 1");
    assert_eq!(answer.3.first(), Some(&0x88), ":status 200 (indexed)");

    // 1. Rapid reset (CVE-2023-44487): open a stream and cancel it, 5,000 times.
    let mut flood = preface();
    for i in 0..5000u32 {
        let id = 2 * i + 1;
        flood.extend(h2_frame(0x1, 0x5, id, &block));
        flood.extend(h2_frame(0x3, 0, id, &8u32.to_be_bytes())); // RST_STREAM CANCEL
    }
    let end = h2_abuse(addr, pid, flood, Duration::from_secs(10));
    assert!(end.closed, "the rapid-reset connection was not closed");
    assert_eq!(h2_goaway(&end.raw), Some(0xb), "GOAWAY ENHANCE_YOUR_CALM");
    healthy("a rapid reset flood");

    // 2. CONTINUATION flood (CVE-2024-27316 and kin): a header block that
    // never ends, 3.2 MB of new header names.
    let mut cont = preface();
    cont.extend(h2_frame(0x1, 0x1, 1, &block)); // END_STREAM, no END_HEADERS
    let mut junk = Vec::new();
    for i in 0.. {
        let name = format!("x-junk-{i}");
        if junk.len() + name.len() + 43 > 16_000 {
            break;
        }
        junk.extend_from_slice(&[0x00, name.len() as u8]);
        junk.extend_from_slice(name.as_bytes());
        junk.push(40);
        junk.extend_from_slice(&[b'a'; 40]);
    }
    for _ in 0..200 {
        cont.extend(h2_frame(0x9, 0, 1, &junk));
    }
    let end = h2_abuse(addr, pid, cont, Duration::from_secs(10));
    assert!(end.closed, "the CONTINUATION flood was not cut off");
    assert!(
        h2_goaway(&end.raw).is_some_and(|code| code != 0),
        "no GOAWAY with an error code"
    );
    healthy("a CONTINUATION flood");

    // 3. PING and SETTINGS floods that never read the answers: the server
    // must stop reading rather than queue answers without bound, and drop the
    // stalled connection.
    for (name, kind) in [("PING", 0x6u8), ("SETTINGS", 0x4)] {
        let mut f = preface();
        // 17 MB of PINGs (9 MB of SETTINGS): more than the socket buffers hold.
        for i in 0..1_000_000u64 {
            let payload = if kind == 0x6 {
                i.to_be_bytes().to_vec()
            } else {
                Vec::new()
            };
            f.extend(h2_frame(kind, 0, 0, &payload));
        }
        let end = h2_abuse(addr, pid, f, Duration::from_secs(5));
        assert!(
            end.rss_kb_while_writing < 64 * 1024,
            "{name} flood: server RSS {} kB",
            end.rss_kb_while_writing
        );
        // The server stopped reading and then dropped the stalled connection
        // (no bytes moved for idle_timeout_s).
        assert!(end.closed, "{name} flood: the connection was not closed");
        healthy(&format!("a {name} flood"));
    }

    let peak = rss.finish();
    assert!(peak < 64 * 1024, "server peak RSS {peak} kB");
    assert_eq!(srv.stop(), Some(0));
}
