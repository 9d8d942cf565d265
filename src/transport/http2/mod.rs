//! HTTP/2 on one connection: a lean client for the push path.
//!
//! A push is one small POST and an answer of a few headers, so the client
//! only needs what that exchange uses, done cheaply: [`frame`] reads and
//! writes frames, [`hpack`] (with [`huffman`]) keeps the header compression
//! contexts, and [`conn`] is the sans-IO connection (streams, flow control,
//! settings, GOAWAY, keep-alive PINGs, the exchanges waiting on it). This
//! module is the thin IO layer: [`Http2Conn`] is the handle the pool keeps,
//! and one task per connection ([`Driver`]) reads and writes the TLS stream.
//!
//! A request is encoded into the connection's output under its lock by the
//! caller ([`Http2Conn::send`]), which then wakes the driver to write it; the
//! driver decodes answers under the same lock and wakes the callers whose
//! exchanges finished. It replaced the `h2` crate on this path (see
//! docs/BENCHMARKS.md); `h2` still serves the emulator and the HTTP API
//! through hyper, and the push path's `crates` stack (`super::stack`).
//!
//! Its tests: `tests` drives the sans-IO connection frame by frame; `hostile`
//! runs the whole client against servers that attack it; `differential`
//! feeds it and the `h2` crate's client the same server bytes (hand-built
//! scenarios, recordings of nginx, nghttpd and the emulator, and seeded
//! generated answers) and requires the same answers and errors, or a
//! documented, asserted difference.
//!
//! Invariants: the lock is never held across an await or a wake; the driver
//! writes everything the connection queued before it closes; when the driver
//! ends for any reason, every exchange still waiting ends with an error; a
//! server that leaves our SETTINGS unacknowledged for [`SETTINGS_TIMEOUT`], or
//! a keep-alive PING unanswered for [`PING_TIMEOUT`], fails the connection;
//! reading pauses while [`MAX_UNWRITTEN`] bytes of our output wait (a server
//! that floods frames to acknowledge and never reads gets backpressure);
//! once the connection has failed (or is done) it reads nothing more, and its
//! last frames get [`CLOSE_GRACE`] to be written before the driver stops.

pub(crate) mod conn;
pub(crate) mod frame;
pub(crate) mod hpack;
pub(crate) mod huffman;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{Request, Response};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite};

use conn::Connection;
pub(crate) use conn::{Config, Failure};

use crate::transport::TransportErrorKind;

/// Interval of keep-alive PINGs.
const PING_INTERVAL: Duration = Duration::from_secs(30);
/// A PING not answered within this fails the connection.
const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// Our SETTINGS not acknowledged within this fail the connection.
const SETTINGS_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a failed connection's last frames (its GOAWAY) may take to be
/// written before the driver stops anyway.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Rounds of reading and writing in one poll of the driver before it yields.
const DRIVER_BUDGET: u32 = 32;
/// Bytes asked of the socket in one read.
const READ_CHUNK: usize = 32 * 1024;
/// Reading stops while this much of our output waits to be written: a server
/// that floods frames we must answer (PING, SETTINGS) and does not read our
/// answers gets backpressure, not an output buffer that grows without end.
/// (One read's worth of acknowledgements can come on top: 32 KiB of PINGs is
/// about 33 KiB of ACKs.)
const MAX_UNWRITTEN: usize = 256 * 1024;
/// New output below this size waits one turn of the scheduler before it is
/// written (see `Driver::hold`): requests that other tasks encode in that
/// turn go out in the same write. At or above it, it is written at once.
const COALESCE_BELOW: usize = 32 * 1024;

/// State shared by the handle, the exchanges and the driver.
struct Shared {
    conn: Mutex<Connection>,
    /// Set once the connection takes no new requests (failed, GOAWAY, ended).
    closed: AtomicBool,
}

impl Shared {
    /// Runs `f` under the lock, then wakes whoever it made runnable (the
    /// driver too, when it has new work).
    fn with<R>(&self, f: impl FnOnce(&mut Connection) -> R) -> R {
        self.run(f, true)
    }

    /// [`Shared::with`] for the driver itself, which picks up new output on
    /// its next round without a wake-up.
    fn run<R>(&self, f: impl FnOnce(&mut Connection) -> R, wake_driver: bool) -> R {
        let mut wake = Vec::new();
        let (r, driver) = {
            let mut c = self.conn.lock();
            let r = f(&mut c);
            c.take_wakers(&mut wake);
            if !c.accepts_streams() {
                self.closed.store(true, Ordering::Release);
            }
            let driver = if wake_driver {
                c.driver_to_wake()
            } else {
                None
            };
            (r, driver)
        };
        for w in wake {
            w.wake();
        }
        if let Some(d) = driver {
            d.wake();
        }
        r
    }
}

/// The pool's handle to one HTTP/2 connection. Dropping it lets the
/// connection finish its open streams and close.
pub(crate) struct Http2Conn {
    shared: Arc<Shared>,
}

impl Http2Conn {
    /// Starts HTTP/2 on a connected TLS stream (ALPN chose h2): spawns the
    /// driver task, which holds `guard` for as long as the connection lives.
    pub(crate) fn start<S, G>(io: S, cfg: Config, guard: G) -> Http2Conn
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        G: Send + Unpin + 'static,
    {
        let shared = Arc::new(Shared {
            conn: Mutex::new(Connection::new(cfg)),
            closed: AtomicBool::new(false),
        });
        let driver = Driver {
            shared: shared.clone(),
            io,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: BytesMut::with_capacity(16 * 1024),
            timer: Box::pin(tokio::time::sleep(SETTINGS_TIMEOUT)),
            awaiting_settings: true,
            awaiting_pong: false,
            closing: false,
            unflushed: false,
            hold: None,
            done: false,
            _guard: guard,
        };
        tokio::spawn(driver);
        Http2Conn { shared }
    }

    /// The connection takes no new requests (it failed, the server sent
    /// GOAWAY, or its stream ids ran out).
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Sends `req` (absolute `https` URI, no `Host`) and reads the whole answer.
    pub(crate) async fn send(&self, req: Request<Bytes>) -> Result<Response<Bytes>, Failure> {
        let key = self.shared.with(|c| c.submit(req))?;
        Exchange {
            shared: &self.shared,
            key,
            done: false,
        }
        .await
    }
}

impl Drop for Http2Conn {
    fn drop(&mut self) {
        self.shared.with(|c| c.abandon());
    }
}

/// One request's wait for its answer; dropping it cancels the stream.
struct Exchange<'a> {
    shared: &'a Shared,
    key: usize,
    done: bool,
}

impl Future for Exchange<'_> {
    type Output = Result<Response<Bytes>, Failure>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let key = self.key;
        let r = self.shared.conn.lock().poll_response(key, cx.waker());
        if r.is_ready() {
            self.done = true;
        }
        r
    }
}

impl Drop for Exchange<'_> {
    fn drop(&mut self) {
        if !self.done {
            let key = self.key;
            self.shared.with(|c| c.cancel(key));
        }
    }
}

/// The task that owns the TLS stream: writes what the connection queued,
/// feeds it what the server sent, and sends keep-alive PINGs.
struct Driver<S, G> {
    shared: Arc<Shared>,
    io: S,
    rbuf: BytesMut,
    wbuf: BytesMut,
    timer: Pin<Box<tokio::time::Sleep>>,
    /// The timer runs to the deadline for the SETTINGS acknowledgement.
    awaiting_settings: bool,
    /// A PING is out and the timer runs to its deadline.
    awaiting_pong: bool,
    /// The connection is finished and the timer runs to the end of the
    /// close grace.
    closing: bool,
    /// Bytes were written and not flushed yet (TLS may hold them).
    unflushed: bool,
    /// Output waiting one turn of the scheduler to be written with more
    /// (`tokio::task::yield_now`, polled once; it wakes this task after the
    /// tasks that are ready now have run and the IO driver was polled).
    hold: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    done: bool,
    _guard: G,
}

impl<S: AsyncRead + AsyncWrite + Unpin, G> Driver<S, G> {
    /// Ends every exchange with `message` and stops.
    fn fail(&mut self, kind: TransportErrorKind, message: &str) -> Poll<()> {
        // Failing the connection also marks it closed (see `Shared::run`).
        self.shared.run(|c| c.fail(kind, message), false);
        self.done = true;
        Poll::Ready(())
    }

    /// Writes `wbuf`; true when something was written.
    fn write(&mut self, cx: &mut Context<'_>) -> Result<bool, std::io::Error> {
        let mut wrote = false;
        while !self.wbuf.is_empty() {
            match Pin::new(&mut self.io).poll_write(cx, &self.wbuf) {
                Poll::Ready(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => {
                    self.wbuf.advance(n);
                    wrote = true;
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => break,
            }
        }
        if wrote || self.unflushed {
            self.unflushed = match Pin::new(&mut self.io).poll_flush(cx) {
                Poll::Ready(Ok(())) => false,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => true,
            };
        }
        Ok(wrote)
    }

    /// Reads once; `Some(true)` when bytes came, `Some(false)` at EOF, `None` when none yet.
    fn read(&mut self, cx: &mut Context<'_>) -> Result<Option<bool>, std::io::Error> {
        if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 2 {
            self.rbuf.reserve(READ_CHUNK);
        }
        match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rbuf) {
            Poll::Ready(Ok(n)) => Ok(Some(n > 0)),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Ok(None),
        }
    }

    /// The timer fired: check the SETTINGS acknowledgement (once, first), send
    /// a keep-alive PING, or fail if the last PING went unanswered.
    fn tick(&mut self) -> Option<Poll<()>> {
        let now = tokio::time::Instant::now();
        if self.shared.conn.lock().is_finished() {
            // Its last frames could not be written within the grace (the
            // server does not read): stop without them.
            let m = "the connection was closed";
            return Some(self.fail(TransportErrorKind::Broken, m));
        }
        if self.awaiting_settings {
            self.awaiting_settings = false;
            if self.shared.conn.lock().settings_pending() {
                // Fails the connection; the loop arms the close grace, writes
                // the GOAWAY and ends, or the next tick ends it after the grace.
                self.shared
                    .run(|c| c.settings_timed_out(SETTINGS_TIMEOUT), false);
            } else {
                self.timer
                    .as_mut()
                    .reset(now + PING_INTERVAL.saturating_sub(SETTINGS_TIMEOUT));
            }
            return None;
        }
        if self.awaiting_pong {
            if self.shared.conn.lock().ping_outstanding() {
                let m = format!("keep-alive PING unanswered for {PING_TIMEOUT:?}");
                return Some(self.fail(TransportErrorKind::Timeout, &m));
            }
            self.awaiting_pong = false;
            self.timer
                .as_mut()
                .reset(now + PING_INTERVAL.saturating_sub(PING_TIMEOUT));
        } else {
            self.shared.run(|c| c.send_ping(), false);
            self.awaiting_pong = true;
            self.timer.as_mut().reset(now + PING_TIMEOUT);
        }
        None
    }
}

fn io_failure(doing: &str, e: &std::io::Error) -> (TransportErrorKind, String) {
    let kind = if crate::transport::is_tls_error(e) {
        TransportErrorKind::Tls
    } else {
        TransportErrorKind::Broken
    };
    (kind, format!("{doing}: {e}"))
}

impl<S: AsyncRead + AsyncWrite + Unpin, G: Unpin> Future for Driver<S, G> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        // Output was held in this poll (it goes out on the next one).
        let mut held = false;
        for _ in 0..DRIVER_BUDGET {
            let finished = {
                let mut c = this.shared.conn.lock();
                c.set_driver(cx.waker());
                let finished = c.is_finished();
                if finished {
                    // GOAWAY (unless it failed), written before the close.
                    c.close();
                }
                c.take_output(&mut this.wbuf);
                finished
            };
            if finished && !this.closing {
                // However it came to an end (a connection error, a timeout,
                // GOAWAY, abandoned), its last frames get the grace, no more.
                this.closing = true;
                let end = tokio::time::Instant::now() + CLOSE_GRACE;
                this.timer.as_mut().reset(end);
            }
            // Write coalescing: fresh output (requests the callers just
            // encoded) waits one turn of the scheduler, so that the callers
            // that run in that turn add theirs and one write carries them
            // all. Each write is a syscall and a TLS record; on a busy
            // connection this cuts them several times over. Output already
            // held once, large output, and a closing connection go at once.
            let small = !finished && this.wbuf.len() < COALESCE_BELOW;
            if !held && small && this.hold.is_none() && !this.wbuf.is_empty() {
                let mut y: Pin<Box<dyn Future<Output = ()> + Send>> =
                    Box::pin(tokio::task::yield_now());
                if y.as_mut().poll(cx).is_pending() {
                    this.hold = Some(y);
                    held = true;
                }
            }
            let wrote = if held && small {
                Ok(false)
            } else {
                this.hold = None;
                held = false;
                this.write(cx)
            };
            let wrote = match wrote {
                Ok(w) => w,
                Err(e) => {
                    let (kind, m) = io_failure("writing", &e);
                    return this.fail(kind, &m);
                }
            };
            if finished && this.wbuf.is_empty() {
                let _ = Pin::new(&mut this.io).poll_shutdown(cx);
                let m = "the connection was closed";
                return this.fail(TransportErrorKind::Broken, m);
            }
            // Backpressure: while the server does not take what we owe it,
            // read nothing more (the write above is registered for wake-up).
            // A finished connection reads nothing at all: it takes no more
            // input, so what came would only pile up in `rbuf`.
            let read = if finished || this.wbuf.len() >= MAX_UNWRITTEN {
                Ok(None)
            } else {
                this.read(cx)
            };
            let read = match read {
                Ok(r) => r,
                Err(e) => {
                    let (kind, m) = io_failure("reading", &e);
                    return this.fail(kind, &m);
                }
            };
            match read {
                Some(true) => {
                    let rbuf = &mut this.rbuf;
                    this.shared.run(|c| c.recv(rbuf), false);
                }
                Some(false) => {
                    let m = "the server closed the connection";
                    return this.fail(TransportErrorKind::Broken, m);
                }
                None => {}
            }
            if this.timer.as_mut().poll(cx).is_ready() {
                if let Some(end) = this.tick() {
                    return end;
                }
                continue;
            }
            if read.is_none() && !wrote {
                return Poll::Pending;
            }
        }
        // Used its budget: let other tasks run, then carry on.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<S, G> Drop for Driver<S, G> {
    fn drop(&mut self) {
        if !self.done {
            // The runtime is shutting down (or the task was aborted): nobody
            // may wait for an answer that will not come.
            let m = "the connection's task ended";
            self.shared.with(|c| c.fail(TransportErrorKind::Broken, m));
        }
    }
}

#[cfg(test)]
mod tests;
