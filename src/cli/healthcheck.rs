//! `fleetwake healthcheck`: GET a local health endpoint and exit 0 on a 2xx
//! answer, 1 otherwise. For container `HEALTHCHECK`s, where the image has no
//! shell and no curl (the Dockerfile uses it for `serve`'s `/healthz`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use clap::Parser;

/// Check a plain-HTTP health endpoint on this host (exit 0 when it answers 2xx).
#[derive(Debug, Parser)]
#[command(
    after_help = "Example (a Dockerfile HEALTHCHECK for `fleetwake serve`):
  fleetwake healthcheck --addr 127.0.0.1:8080 --path /healthz"
)]
pub(crate) struct Args {
    /// The address to connect to.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "IP:PORT")]
    addr: SocketAddr,
    /// The path to GET.
    #[arg(long, default_value = "/healthz")]
    path: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 3, value_name = "SECS")]
    timeout_s: u64,
}

pub(crate) fn run(a: Args) -> u8 {
    match check(&a) {
        Ok(status) if (200..300).contains(&status) => super::EXIT_OK,
        Ok(status) => {
            eprintln!("unhealthy: GET {} on {} answered {status}", a.path, a.addr);
            super::EXIT_FAILURES
        }
        Err(e) => {
            eprintln!("unhealthy: GET {} on {}: {e}", a.path, a.addr);
            super::EXIT_FAILURES
        }
    }
}

fn check(a: &Args) -> std::io::Result<u16> {
    let limit = Duration::from_secs(a.timeout_s.clamp(1, 60));
    let mut s = TcpStream::connect_timeout(&a.addr, limit)?;
    s.set_read_timeout(Some(limit))?;
    s.set_write_timeout(Some(limit))?;
    if !a.path.starts_with('/') || a.path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(std::io::Error::other(
            "the path must start with / and hold no spaces",
        ));
    }
    write!(
        s,
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        a.path, a.addr
    )?;
    let mut head = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        let m = s.read(&mut head[n..])?;
        if m == 0 {
            break;
        }
        n += m;
    }
    let line = std::str::from_utf8(&head[..n]).unwrap_or("");
    line.strip_prefix("HTTP/1.1 ")
        .or_else(|| line.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP answer"))
}
