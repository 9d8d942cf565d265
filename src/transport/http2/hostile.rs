//! A hostile-server suite: the whole HTTP/2 client (connection and driver
//! task) against scripted servers that play the known attack classes on the
//! server side: HPACK bombs (a table size update past our limit, a header list
//! far past it), endless CONTINUATION, WINDOW_UPDATE past 2^31-1, SETTINGS and
//! PING floods (read and unread), RST floods, DATA for reset streams, frames
//! over the max size, a peer that never opens its window, GOAWAY, and bytes
//! streamed after a connection error.
//!
//! Each must end with a bounded error for the requests it touched (within
//! the request timeout the transport applies, on a paused clock), bounded
//! memory (a flood from a server that does not read is met with backpressure:
//! what it manages to write is bounded), and a connection that is either
//! still good for the next request or closed, so the pool replaces it. None
//! may hang.
//!
//! Found here: a PING or SETTINGS flood from a server that never read our
//! acknowledgements grew the client's output buffer without end (the two
//! unread-flood tests ran out of memory); the driver now stops reading while
//! `MAX_UNWRITTEN` bytes of output wait. A failed connection whose GOAWAY
//! could not be written kept reading what the server streamed into its
//! buffer (nothing consumed it) until the next timer; it now reads nothing
//! more and ends after the close grace.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::sync::mpsc;

use super::super::Http2Conn;
use super::*;

/// What `Transport::send` allows one exchange.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// No scenario may take longer than this (virtual time).
const SCENARIO_BOUND: Duration = Duration::from_secs(120);

/// The server side: writes what the script says; a reader task (unless the
/// server is one that never reads) parses what the client sends.
struct Srv {
    w: WriteHalf<DuplexStream>,
    /// Frames the client sent, as the reader parsed them.
    seen: mpsc::UnboundedReceiver<(FrameHead, Vec<u8>)>,
    /// Bytes this server managed to write.
    written: Arc<AtomicUsize>,
    /// Frames taken from `seen` by a script that was looking for others.
    backlog: Vec<(FrameHead, Vec<u8>)>,
    /// Keeps the read half open when nobody reads it.
    _unread: Option<ReadHalf<DuplexStream>>,
}

impl Srv {
    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.w.write_all(bytes).await?;
        self.written.fetch_add(bytes.len(), Ordering::Relaxed);
        Ok(())
    }

    /// Our SETTINGS (with `values`) and the acknowledgement of the client's.
    async fn handshake(&mut self, values: &[(u16, u32)]) {
        let mut b = settings(values);
        b.extend(server_frame(kind::SETTINGS, flag::ACK, 0, &[]));
        self.send(&b).await.unwrap();
    }

    /// Waits for the client's frame of `kind` on `stream` (the reader must run).
    async fn wait_for(&mut self, kind: u8, stream: u32) -> (FrameHead, Vec<u8>) {
        if let Some(i) = self
            .backlog
            .iter()
            .position(|(h, _)| h.kind == kind && h.stream == stream)
        {
            return self.backlog.remove(i);
        }
        loop {
            let f = self.seen.recv().await.expect("the client closed first");
            if f.0.kind == kind && f.0.stream == stream {
                return f;
            }
            self.backlog.push(f);
        }
    }

    /// Every frame the client sent so far that no `wait_for` returned.
    fn drain_seen(&mut self) -> Vec<(FrameHead, Vec<u8>)> {
        let mut v = std::mem::take(&mut self.backlog);
        while let Ok(f) = self.seen.try_recv() {
            v.push(f);
        }
        v
    }
}

/// A client connection and the server side of it. `reads`: whether the
/// server reads what the client writes.
fn pair(reads: bool) -> (Http2Conn, Srv) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let conn = Http2Conn::start(client, Config { max_body: 1024 }, ());
    let (r, w) = tokio::io::split(server);
    let (tx, seen) = mpsc::unbounded_channel();
    let unread = if reads {
        tokio::spawn(client_frames(r, move |h, p| {
            let _ = tx.send((h, p.to_vec()));
        }));
        None
    } else {
        Some(r)
    };
    let srv = Srv {
        w,
        seen,
        written: Arc::new(AtomicUsize::new(0)),
        backlog: Vec::new(),
        _unread: unread,
    };
    (conn, srv)
}

/// One exchange as `Transport::send` runs it: bounded by the request timeout.
async fn exchange(conn: &Http2Conn) -> Result<http::Response<Bytes>, String> {
    match tokio::time::timeout(REQUEST_TIMEOUT, conn.send(request(b"wake"))).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(f)) => Err(format!("{:?}: {}", f.kind, f.message)),
        Err(_) => Err("request timeout".into()),
    }
}

/// Runs a whole scenario within the bound.
async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(SCENARIO_BOUND, f)
        .await
        .expect("the scenario hung")
}

fn headers_frame(stream: u32, flags: u8, block: &[u8]) -> Vec<u8> {
    server_frame(kind::HEADERS, flags, stream, block)
}

#[tokio::test(start_paused = true)]
async fn a_table_size_update_past_our_limit_is_a_compression_error() {
    bounded(async {
        let (conn, mut srv) = pair(true);
        let server = tokio::spawn(async move {
            srv.handshake(&[]).await;
            srv.wait_for(kind::HEADERS, 1).await;
            let mut block = Vec::new();
            hpack_int(0x20, 5, 1 << 20, &mut block); // size update: 1 MiB
            block.push(0x88);
            let _ = srv
                .send(&headers_frame(
                    1,
                    flag::END_HEADERS | flag::END_STREAM,
                    &block,
                ))
                .await;
            srv
        });
        let r = exchange(&conn).await;
        let e = r.expect_err("must fail");
        assert!(e.contains("COMPRESSION") || e.contains("table size"), "{e}");
        assert!(conn.is_closed(), "a compression error ends the connection");
        drop(server.await.unwrap());
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_header_list_far_past_the_limit_fails_its_stream_only() {
    bounded(async {
        let (conn, mut srv) = pair(true);
        let server = tokio::spawn(async move {
            srv.handshake(&[]).await;
            srv.wait_for(kind::HEADERS, 1).await;
            // One 4,000-byte field indexed, then referenced 20,000 times:
            // 24 kB on the wire, 80 MB decoded.
            let mut block = vec![0x88, 0x40, 6];
            block.extend_from_slice(b"x-bomb");
            hpack_int(0x00, 7, 4000, &mut block);
            block.extend(std::iter::repeat_n(b'a', 4000));
            block.extend(std::iter::repeat_n(0x80 | 62, 20_000));
            let (first, rest) = block.split_at(16_000);
            let mut b = headers_frame(1, flag::END_STREAM, first);
            b.extend(server_frame(kind::CONTINUATION, flag::END_HEADERS, 1, rest));
            srv.send(&b).await.unwrap();
            // The next request on the same connection is answered normally.
            srv.wait_for(kind::HEADERS, 3).await;
            srv.send(&response(3, 200, b"")).await.unwrap();
            srv
        });
        let first = exchange(&conn).await;
        let e = first.expect_err("the bomb's stream must fail");
        assert!(e.contains("too large"), "{e}");
        let second = exchange(&conn).await;
        assert_eq!(second.expect("the connection is still good").status(), 200);
        assert!(!conn.is_closed());
        drop(server.await.unwrap());
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn endless_continuation_ends_at_the_header_block_limit() {
    bounded(async {
        let (conn, mut srv) = pair(true);
        let written = srv.written.clone();
        let server = tokio::spawn(async move {
            srv.handshake(&[]).await;
            srv.wait_for(kind::HEADERS, 1).await;
            let _ = srv.send(&headers_frame(1, 0, &[0x88])).await;
            let fragment = server_frame(kind::CONTINUATION, 0, 1, &[0u8; 16_384]);
            // Until the client hangs up.
            while srv.send(&fragment).await.is_ok() {}
        });
        let e = exchange(&conn).await.expect_err("must fail");
        assert!(e.contains("header block over"), "{e}");
        assert!(conn.is_closed());
        drop(conn);
        server.await.unwrap();
        let w = written.load(Ordering::Relaxed);
        assert!(w < 512 * 1024, "the client read {w} bytes of CONTINUATION");
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn window_updates_past_2_31_fail_the_stream_or_the_connection() {
    bounded(async {
        // On a stream: that stream fails, the next request is answered.
        let (conn, mut srv) = pair(true);
        let server = tokio::spawn(async move {
            // A window of 0, so the body waits and the stream stays open.
            srv.handshake(&[(setting::INITIAL_WINDOW_SIZE, 0)]).await;
            srv.wait_for(kind::HEADERS, 1).await;
            let inc = 0x7fff_ffffu32.to_be_bytes();
            let mut b = server_frame(kind::WINDOW_UPDATE, 0, 1, &inc);
            b.extend(server_frame(kind::WINDOW_UPDATE, 0, 1, &inc));
            srv.send(&b).await.unwrap();
            srv.wait_for(kind::HEADERS, 3).await;
            srv.send(&server_frame(
                kind::WINDOW_UPDATE,
                0,
                3,
                &10u32.to_be_bytes(),
            ))
            .await
            .unwrap();
            srv.send(&response(3, 200, b"")).await.unwrap();
            srv
        });
        let e = exchange(&conn).await.expect_err("must fail");
        assert!(e.contains("FLOW_CONTROL") || e.contains("2^31"), "{e}");
        assert_eq!(exchange(&conn).await.unwrap().status(), 200);
        assert!(!conn.is_closed());
        drop(server.await.unwrap());

        // On the connection: the connection fails.
        let (conn, mut srv) = pair(true);
        let server = tokio::spawn(async move {
            srv.handshake(&[]).await;
            srv.wait_for(kind::HEADERS, 1).await;
            let inc = 0x7fff_ffffu32.to_be_bytes();
            let _ = srv
                .send(&server_frame(kind::WINDOW_UPDATE, 0, 0, &inc))
                .await;
            srv
        });
        let e = exchange(&conn).await.expect_err("must fail");
        assert!(e.contains("2^31") || e.contains("FLOW_CONTROL"), "{e}");
        assert!(conn.is_closed());
        drop(server.await.unwrap());
    })
    .await;
}

/// A flood of frames the client must acknowledge, from a server that never
/// reads: backpressure bounds what the client takes in, the request ends at
/// its timeout and the connection at the keep-alive PING's.
async fn unread_flood(one: Vec<u8>) {
    bounded(async {
        let (conn, mut srv) = pair(false);
        let written = srv.written.clone();
        let server = tokio::spawn(async move {
            srv.handshake(&[]).await;
            let batch = one.repeat(1000);
            while srv.send(&batch).await.is_ok() {}
        });
        let e = exchange(&conn).await.expect_err("must fail");
        assert_eq!(e, "request timeout");
        // The keep-alive PING cannot be written, so it goes unanswered.
        let t0 = tokio::time::Instant::now();
        while !conn.is_closed() {
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "the connection lives on"
            );
        }
        let w = written.load(Ordering::Relaxed);
        assert!(
            w < 2 << 20,
            "the client took in {w} bytes it could not acknowledge"
        );
        drop(conn);
        server.await.unwrap();
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_settings_flood_from_a_server_that_never_reads_is_bounded() {
    unread_flood(settings(&[(setting::MAX_CONCURRENT_STREAMS, 100)])).await;
}

#[tokio::test(start_paused = true)]
async fn a_ping_flood_from_a_server_that_never_reads_is_bounded() {
    unread_flood(server_frame(kind::PING, 0, 0, &[7; 8])).await;
}

/// A server that makes the connection fail, never reads (so our GOAWAY
/// cannot be written) and then streams bytes: the failed connection takes
/// nothing more in, and its driver ends after the close grace.
#[tokio::test(start_paused = true)]
async fn bytes_after_a_connection_error_are_not_taken_in() {
    bounded(async {
        // 64 octets each way: the client's preface, SETTINGS and window
        // update fill its side, so nothing more of it can be written.
        let (client, server) = tokio::io::duplex(64);
        let (guard, ended) = tokio::sync::oneshot::channel::<()>();
        let conn = Http2Conn::start(client, Config { max_body: 1024 }, guard);
        let (_unread, mut w) = tokio::io::split(server);
        let start = tokio::time::Instant::now();
        let written = Arc::new(AtomicUsize::new(0));
        let count = written.clone();
        let server = tokio::spawn(async move {
            // A PING on a stream: a connection error (PROTOCOL_ERROR).
            let mut b = server_frame(kind::PING, 0, 1, &[0; 8]);
            while count.load(Ordering::Relaxed) < 8 << 20 && w.write_all(&b).await.is_ok() {
                count.fetch_add(b.len(), Ordering::Relaxed);
                b = vec![0; 4096];
            }
        });
        let ended = tokio::time::timeout(Duration::from_secs(5), ended).await;
        let w = written.load(Ordering::Relaxed);
        assert!(w < 64 * 1024, "the failed connection took in {w} bytes");
        assert!(ended.is_ok(), "the driver still holds the connection");
        assert!(
            start.elapsed() <= super::super::CLOSE_GRACE,
            "ended {:?} after the error",
            start.elapsed()
        );
        assert!(conn.is_closed());
        server.await.unwrap();
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_ping_and_settings_flood_from_a_server_that_reads_delays_nothing() {
    bounded(async {
        let (conn, mut srv) = pair(true);
        let server = tokio::spawn(async move {
            srv.handshake(&[]).await;
            srv.wait_for(kind::HEADERS, 1).await;
            let mut one = server_frame(kind::PING, 0, 0, &[1; 8]);
            one.extend(settings(&[]));
            let batch = one.repeat(1000);
            for _ in 0..100 {
                srv.send(&batch).await.unwrap();
            }
            srv.send(&response(1, 200, b"")).await.unwrap();
            // Every PING and SETTINGS acknowledged.
            let mut acks = (0, 0);
            while acks != (100_000, 100_001) {
                let (h, _) = srv.seen.recv().await.unwrap();
                match h.kind {
                    kind::PING if h.has(flag::ACK) => acks.0 += 1,
                    kind::SETTINGS if h.has(flag::ACK) => acks.1 += 1,
                    _ => {}
                }
            }
            srv
        });
        assert_eq!(exchange(&conn).await.unwrap().status(), 200);
        drop(server.await.unwrap());
        assert!(!conn.is_closed());
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn an_rst_flood_fails_its_stream_and_an_idle_stream_reset_the_connection() {
    bounded(async {
        let (conn, mut srv) = pair(true);
        let server = tokio::spawn(async move {
            srv.handshake(&[]).await;
            srv.wait_for(kind::HEADERS, 1).await;
            // 10,000 resets of the same stream: the first ends it, the rest
            // are for a closed stream and change nothing.
            let one = server_frame(kind::RST_STREAM, 0, 1, &0x8u32.to_be_bytes());
            let flood = one.repeat(10_000);
            srv.send(&flood).await.unwrap();
            srv.wait_for(kind::HEADERS, 3).await;
            srv.send(&response(3, 200, b"")).await.unwrap();
            // A stream the client never opened.
            srv.wait_for(kind::HEADERS, 5).await;
            let _ = srv
                .send(&server_frame(
                    kind::RST_STREAM,
                    0,
                    99,
                    &0x8u32.to_be_bytes(),
                ))
                .await;
            srv
        });
        let e = exchange(&conn).await.expect_err("the reset stream fails");
        assert!(e.contains("CANCEL") || e.contains("reset"), "{e}");
        assert_eq!(exchange(&conn).await.unwrap().status(), 200);
        let e = exchange(&conn).await.expect_err("an idle stream's reset");
        assert!(e.contains("PROTOCOL_ERROR") || e.contains("idle"), "{e}");
        assert!(conn.is_closed());
        drop(server.await.unwrap());
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn data_for_a_reset_stream_is_credited_back_and_the_connection_goes_on() {
    bounded(async {
        let (conn, mut srv) = pair(true);
        let server = tokio::spawn(async move {
            srv.handshake(&[]).await;
            srv.wait_for(kind::HEADERS, 1).await;
            // The client gives up on stream 1 (its caller went away).
            srv.wait_for(kind::RST_STREAM, 1).await;
            // 16 MiB of DATA for it anyway: four times the client's
            // connection window, so it must credit the discarded bytes back.
            srv.send(&headers_frame(1, flag::END_HEADERS, &[0x88]))
                .await
                .unwrap();
            let data = server_frame(kind::DATA, 0, 1, &[0u8; 16_384]);
            // The connection window the client grants: 65,535 and every
            // WINDOW_UPDATE on stream 0 (its first raises it to 4 MiB).
            let mut window = 65_535u64;
            let mut sent = 0u64;
            let credit = |(h, p): &(FrameHead, Vec<u8>)| {
                if h.kind == kind::WINDOW_UPDATE && h.stream == 0 {
                    u64::from(u32::from_be_bytes([p[0], p[1], p[2], p[3]]))
                } else {
                    0
                }
            };
            window += srv.backlog.iter().map(credit).sum::<u64>();
            while sent < 16 << 20 {
                while sent + 16_384 > window {
                    let f = srv.seen.recv().await.expect("the client hung up");
                    window += credit(&f);
                    srv.backlog.push(f);
                }
                srv.send(&data).await.unwrap();
                sent += 16_384;
            }
            srv.wait_for(kind::HEADERS, 3).await;
            srv.send(&response(3, 200, b"")).await.unwrap();
            srv
        });
        // The first caller gives up after 1 s.
        let gave_up =
            tokio::time::timeout(Duration::from_secs(1), conn.send(request(b"wake"))).await;
        assert!(gave_up.is_err());
        assert_eq!(exchange(&conn).await.unwrap().status(), 200);
        assert!(!conn.is_closed());
        drop(server.await.unwrap());
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_frame_over_the_max_size_is_a_connection_error() {
    bounded(async {
        let (conn, mut srv) = pair(true);
        let server = tokio::spawn(async move {
            srv.handshake(&[]).await;
            srv.wait_for(kind::HEADERS, 1).await;
            let _ = srv
                .send(&server_frame(kind::DATA, 0, 1, &vec![0u8; 16_385]))
                .await;
            srv
        });
        let e = exchange(&conn).await.expect_err("must fail");
        assert!(e.contains("FRAME_SIZE") || e.contains("size"), "{e}");
        assert!(conn.is_closed());
        drop(server.await.unwrap());
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_never_opens_its_window_costs_the_request_its_timeout() {
    bounded(async {
        let (conn, mut srv) = pair(true);
        let server = tokio::spawn(async move {
            srv.handshake(&[(setting::INITIAL_WINDOW_SIZE, 0)]).await;
            // The first body went out under the default window, before our
            // SETTINGS arrived; it is answered.
            srv.wait_for(kind::HEADERS, 1).await;
            srv.send(&response(1, 200, b"")).await.unwrap();
            // The next one meets a window of 0 that never opens; the client
            // cancels its stream when the request times out.
            srv.wait_for(kind::HEADERS, 3).await;
            let (_, p) = srv.wait_for(kind::RST_STREAM, 3).await;
            assert_eq!(p, 0x8u32.to_be_bytes(), "CANCEL");
            let data: Vec<_> = srv
                .drain_seen()
                .into_iter()
                .filter(|(h, _)| h.kind == kind::DATA && h.stream == 3)
                .collect();
            assert!(data.is_empty(), "DATA past a window of 0");
            srv
        });
        assert_eq!(exchange(&conn).await.unwrap().status(), 200);
        let e = exchange(&conn).await.expect_err("must fail");
        assert_eq!(e, "request timeout");
        drop(server.await.unwrap());
        assert!(!conn.is_closed(), "the connection itself did nothing wrong");
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn goaway_before_any_stream_returns_the_request_unprocessed() {
    bounded(async {
        let (conn, mut srv) = pair(true);
        let server = tokio::spawn(async move {
            srv.handshake(&[]).await;
            let mut ga = 0u32.to_be_bytes().to_vec();
            ga.extend_from_slice(&0u32.to_be_bytes());
            let _ = srv.send(&server_frame(kind::GOAWAY, 0, 0, &ga)).await;
            // A second GOAWAY that raises the last stream id must not
            // revive anything.
            let mut ga = 99u32.to_be_bytes().to_vec();
            ga.extend_from_slice(&0u32.to_be_bytes());
            let _ = srv.send(&server_frame(kind::GOAWAY, 0, 0, &ga)).await;
            srv
        });
        for _ in 0..2 {
            let f = tokio::time::timeout(REQUEST_TIMEOUT, conn.send(request(b"wake")))
                .await
                .expect("bounded")
                .expect_err("must fail");
            assert!(f.unprocessed.is_some(), "{}", f.message);
        }
        drop(server.await.unwrap());
    })
    .await;
}
