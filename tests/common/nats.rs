//! Helpers for the tests of `fleetwake consume`: unique stream and subject
//! names, the config, consumer processes, and JetStream reads and waits against
//! the nats-server on 127.0.0.1:4222.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy};
use bytes::Bytes;
use fleetwake::emulator::EmulatorHandle;
use fleetwake::service::WakeResult;

pub const BIN: &str = env!("CARGO_BIN_EXE_fleetwake");
pub const SECRET_VAR: &str = "FLEETWAKE_TEST_SECRET";
pub const NATS: &str = "nats://127.0.0.1:4222";

/// Names for one test run: stream, subjects, consumer, results.
pub struct Names {
    pub stream: String,
    pub subject: String,
    pub consumer: String,
    pub results_stream: String,
    pub results: String,
    pub dead: String,
}

pub fn names(tag: &str) -> Names {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let id = format!("{tag}_{}_{nanos}", std::process::id());
    Names {
        stream: format!("FWT_{id}"),
        subject: format!("fwt.{id}.wakes"),
        consumer: format!("c_{id}"),
        results_stream: format!("FWTR_{id}"),
        results: format!("fwt.{id}.results"),
        dead: format!("fwt.{id}.dead"),
    }
}

pub fn write_config(
    dir: &Path,
    emu: &EmulatorHandle,
    n: &Names,
    tenant_extra: &str,
    retry: &str,
    consume_extra: &str,
) -> PathBuf {
    write_config_with(dir, emu, n, tenant_extra, retry, "", consume_extra)
}

/// Like [`write_config`], with extra `[transport]` keys.
pub fn write_config_with(
    dir: &Path,
    emu: &EmulatorHandle,
    n: &Names,
    tenant_extra: &str,
    retry: &str,
    transport_extra: &str,
    consume_extra: &str,
) -> PathBuf {
    let text = format!(
        r#"{engine}
[consume]
url = "{NATS}"
stream = "{stream}"
subjects = ["{subject}"]
consumer = "{consumer}"
results_stream = "{results_stream}"
results_subject = "{results}"
dead_letter_subject = "{dead}"
{consume_extra}
"#,
        engine = super::engine_toml(dir, emu, tenant_extra, retry, transport_extra),
        stream = n.stream,
        subject = n.subject,
        consumer = n.consumer,
        results_stream = n.results_stream,
        results = n.results,
        dead = n.dead,
    );
    let path = dir.join("fleetwake.toml");
    std::fs::write(&path, text).unwrap();
    path
}

pub fn spawn_consumer(config: &Path, instance: &str) -> Proc {
    spawn_consumer_log(config, instance, "warn")
}

/// A consumer process; killed if a failing test drops it still running. Its
/// stderr is read all the time by a thread: a pipe nobody reads fills at 64
/// KiB, and then the process blocks on its next log line (that once looked
/// like a consumer stall, see docs/RELIABILITY.md).
pub struct Proc {
    child: Child,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl std::ops::Deref for Proc {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.child
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Proc {
    /// Wraps a child spawned with `stderr(Stdio::piped())`, reading it at once.
    pub fn new(mut child: Child) -> Proc {
        let stderr = child.stderr.take().map(|mut e| {
            std::thread::spawn(move || {
                use std::io::Read;
                let mut bytes = Vec::new();
                let _ = e.read_to_end(&mut bytes);
                String::from_utf8_lossy(&bytes).into_owned()
            })
        });
        Proc { child, stderr }
    }
}

/// `fleetwake consume` with its stderr piped (not read yet).
fn consume_command(config: &Path, instance: &str, log: &str) -> Child {
    Command::new(BIN)
        .args(["consume", "--config"])
        .arg(config)
        .env(SECRET_VAR, "test-secret")
        .env("FLEETWAKE_CONSUME__INSTANCE_ID", instance)
        .env("FLEETWAKE_LOG", log)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A consumer whose stderr is a pipe that nobody reads (returned as is).
pub fn spawn_consumer_unread(
    config: &Path,
    instance: &str,
    log: &str,
) -> (Proc, std::process::ChildStderr) {
    let mut child = consume_command(config, instance, log);
    let stderr = child.stderr.take().expect("piped");
    (Proc::new(child), stderr)
}

pub fn spawn_consumer_log(config: &Path, instance: &str, log: &str) -> Proc {
    Proc::new(consume_command(config, instance, log))
}

/// SIGTERM, then the exit code and stderr.
pub fn terminate(mut child: Proc) -> (Option<i32>, String) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let code = child.wait().unwrap().code();
    let stderr = child
        .stderr
        .take()
        .map(|h| h.join().unwrap_or_default())
        .unwrap_or_default();
    (code, stderr)
}

pub async fn js() -> jetstream::Context {
    let client = async_nats::connect(NATS)
        .await
        .expect("a NATS server with JetStream on 127.0.0.1:4222 (.ci/run starts one)");
    jetstream::new(client)
}

/// Waits until the consumer process has created the stream and the consumer.
pub async fn wait_ready(js: &jetstream::Context, n: &Names) {
    let t0 = Instant::now();
    loop {
        if let Ok(s) = js.get_stream(&n.stream).await {
            if s.get_consumer::<pull::Config>(&n.consumer).await.is_ok()
                && js.get_stream(&n.results_stream).await.is_ok()
            {
                return;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the consumer did not create its streams"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Publishes every body to the subject and waits for the acks.
pub async fn publish_all(js: &jetstream::Context, subject: &str, bodies: Vec<Bytes>) {
    for chunk in bodies.chunks(2000) {
        let mut acks = Vec::with_capacity(chunk.len());
        for b in chunk {
            acks.push(js.publish(subject.to_string(), b.clone()).await.unwrap());
        }
        for a in acks {
            a.await.unwrap();
        }
    }
}

pub fn wake(id: &str, channel: &str, extra: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"v":1,"device_id":"{id}","tenant":"contoso","channel_uri":"https://db5p.notify.windows.com/?token={channel}","idempotency_key":"{id}"{extra}}}"#
    ))
}

/// Every message on `subject` in `stream`, in order.
pub async fn read_all(
    js: &jetstream::Context,
    stream: &str,
    subject: &str,
) -> Vec<jetstream::Message> {
    let s = js.get_stream(stream).await.unwrap();
    let c = s
        .create_consumer(pull::Config {
            ack_policy: AckPolicy::None,
            filter_subject: subject.to_string(),
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .unwrap();
    let want = c.get_info().await.unwrap().num_pending as usize;
    let mut out = Vec::with_capacity(want);
    use futures_util::StreamExt;
    while out.len() < want {
        let mut batch = c
            .fetch()
            .max_messages((want - out.len()).min(1000))
            .messages()
            .await
            .unwrap();
        while let Some(m) = batch.next().await {
            out.push(m.unwrap());
        }
    }
    out
}

pub async fn results(js: &jetstream::Context, n: &Names) -> Vec<WakeResult> {
    read_all(js, &n.results_stream, &n.results)
        .await
        .iter()
        .map(|m| {
            serde_json::from_slice(&m.payload)
                .unwrap_or_else(|e| panic!("bad result {:?}: {e}", m.payload))
        })
        .collect()
}

pub async fn count_on(js: &jetstream::Context, stream: &str, subject: &str) -> u64 {
    let s = js.get_stream(stream).await.unwrap();
    let info = s.info_with_subjects(subject).await;
    match info {
        Ok(mut subjects) => {
            use futures_util::TryStreamExt;
            let mut total = 0;
            while let Ok(Some((_, c))) = subjects.try_next().await {
                total += c as u64;
            }
            total
        }
        Err(_) => 0,
    }
}

/// Waits until `want` results are in (at most `limit`) and then until every
/// wake request was acked (at most 60 s more).
pub async fn wait_all_done(js: &jetstream::Context, n: &Names, want: u64, limit: Duration) {
    wait_count(js, &n.results_stream, &n.results, want, limit).await;
    wait_stream_empty(js, &n.stream, Duration::from_secs(60)).await;
}

/// Waits (at most `limit`) until `stream` holds no message: with work-queue
/// retention, until every wake request was acked or terminated.
pub async fn wait_stream_empty(js: &jetstream::Context, stream: &str, limit: Duration) {
    let t0 = Instant::now();
    loop {
        let left = js
            .get_stream(stream)
            .await
            .unwrap()
            .get_info()
            .await
            .unwrap()
            .state
            .messages;
        if left == 0 {
            return;
        }
        assert!(
            t0.elapsed() < limit,
            "{left} messages in {stream} never acked"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (at most `limit`) until `subject` holds at least `want` messages.
pub async fn wait_count(
    js: &jetstream::Context,
    stream: &str,
    subject: &str,
    want: u64,
    limit: Duration,
) {
    let t0 = Instant::now();
    loop {
        let have = count_on(js, stream, subject).await;
        if have >= want {
            return;
        }
        assert!(
            t0.elapsed() < limit,
            "only {have} of {want} messages on {subject} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn pushes_to(emu: &EmulatorHandle, token: &str) -> u64 {
    emu.stats()
        .by_channel
        .get(token)
        .map(|m| m.values().sum())
        .unwrap_or(0)
}

pub fn at(r: &WakeResult) -> SystemTime {
    humantime::parse_rfc3339(&r.row.at).unwrap()
}

pub fn free_port() -> u16 {
    super::closed_port()
}

pub fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let code = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (code, body)
}
