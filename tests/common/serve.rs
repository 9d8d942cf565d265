//! Helpers for the tests of `fleetwake serve`: the config, the server process
//! and raw HTTP/1.1 requests (so that tests control every byte).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fleetwake::emulator::EmulatorHandle;

pub const BIN: &str = env!("CARGO_BIN_EXE_fleetwake");
pub const KEY_A: &str = "key-a-0123456789abcdef";
pub const KEY_B: &str = "key-b-0123456789abcdef";
pub const KEY_C: &str = "key-c-0123456789abcdef";

pub fn sha256_hex(s: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, s.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn write_config(dir: &Path, emu: &EmulatorHandle, serve_extra: &str) -> PathBuf {
    write_config_with(
        dir,
        emu,
        "rate_per_second = 5000",
        "max_attempts = 2\nbase_delay_ms = 20\nmax_delay_ms = 100",
        "",
        serve_extra,
    )
}

/// The config with the tenant's extra keys, the `[retry]` table, extra
/// `[transport]` keys and extra `[serve]` keys.
pub fn write_config_with(
    dir: &Path,
    emu: &EmulatorHandle,
    tenant_extra: &str,
    retry: &str,
    transport_extra: &str,
    serve_extra: &str,
) -> PathBuf {
    std::fs::write(dir.join("keys.txt"), format!("# clients\nc:{KEY_C}\n")).unwrap();
    let text = format!(
        r#"{engine}
[serve]
listen = "127.0.0.1:0"
keys_file = "keys.txt"
{serve_extra}

[serve.clients.a]
key_env = "FLEETWAKE_TEST_KEY_A"

[serve.clients.b]
key_sha256 = "{b}"
"#,
        engine = super::engine_toml(dir, emu, tenant_extra, retry, transport_extra),
        b = sha256_hex(KEY_B),
    );
    let path = dir.join("fleetwake.toml");
    std::fs::write(&path, text).unwrap();
    path
}

pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
}

pub fn start(config: &Path) -> Server {
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .env("FLEETWAKE_TEST_SECRET", "test-secret")
        .env("FLEETWAKE_TEST_KEY_A", KEY_A)
        .env("FLEETWAKE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    Server { child, addr }
}

impl Server {
    /// SIGTERM and the exit code.
    pub fn stop(mut self) -> Option<i32> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        self.child.wait().unwrap().code()
    }
}

impl Drop for Server {
    /// A failed test must not leave the server running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub struct Resp {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&[u8]>,
) -> Resp {
    request_raw(addr, method, path, key, body, &[])
}

pub fn request_raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&[u8]>,
    extra: &[(&str, String)],
) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(90))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    if let Some(k) = key {
        head.push_str(&format!("Authorization: Bearer {k}\r\n"));
    }
    let expect_continue = extra.iter().any(|(k, _)| k.eq_ignore_ascii_case("expect"));
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        if !extra
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        {
            head.push_str(&format!(
                "Content-Length: {}\r\nContent-Type: application/json\r\n",
                b.len()
            ));
        }
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    if let (Some(b), false) = (body, expect_continue) {
        s.write_all(b).unwrap();
    }
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Resp {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

pub fn wake(id: &str, token: &str) -> String {
    format!(
        r#"{{"device_id":"{id}","tenant":"contoso","channel_uri":"https://db5p.notify.windows.com/?token={token}"}}"#
    )
}

/// `POST /v1/wakes?wait=true` with each body, all at once (one thread and one
/// connection each); the answers in the order of `bodies`.
pub fn post_wait_parallel(addr: SocketAddr, bodies: Vec<String>) -> Vec<Resp> {
    post_wait_parallel_to(bodies.into_iter().map(|b| (addr, b)).collect())
}

/// [`post_wait_parallel`], each body to its own server.
pub fn post_wait_parallel_to(requests: Vec<(SocketAddr, String)>) -> Vec<Resp> {
    let clients: Vec<_> = requests
        .into_iter()
        .map(|(addr, b)| {
            std::thread::spawn(move || {
                request(
                    addr,
                    "POST",
                    "/v1/wakes?wait=true",
                    Some(KEY_A),
                    Some(b.as_bytes()),
                )
            })
        })
        .collect();
    clients
        .into_iter()
        .map(|c| c.join().expect("client thread"))
        .collect()
}
