//! `fleetwake consume` against a three-node JetStream cluster on loopback
//! (nats-server processes started here, streams with three replicas): the
//! node that leads the wake stream is killed with SIGKILL partway through, and
//! every message must still get exactly one stored result.
//!
//! It once stalled in about 3 runs of 10. The cause was this harness: it read
//! the consumer's stderr only at the end, and a burst of publish-failure
//! warnings while the results stream elected a leader filled the 64 KiB pipe,
//! so the consumer blocked on a log write. The harness now reads stderr all
//! the time, the consumer logs through a bounded buffer that drops lines
//! instead of blocking, such bursts are one line per 5 s, and a watchdog
//! rebuilds the pull subscription if nothing moves while messages wait
//! (docs/RELIABILITY.md). `scripts/cluster-test-10` runs it ten times.

#![cfg(feature = "nats")]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use common::nats::*;
use fleetwake::emulator::HttpVersions;

/// One nats-server of the cluster; killed when dropped.
struct Node {
    name: String,
    child: Child,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Three clustered JetStream servers on free loopback ports, data under `dir`.
/// The client URLs, comma-separated, and the nodes.
fn start_cluster(dir: &Path) -> (String, Vec<Node>) {
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let routes = ports
        .iter()
        .map(|(_, c)| format!("nats://127.0.0.1:{c}"))
        .collect::<Vec<_>>()
        .join(",");
    let nodes = ports
        .iter()
        .enumerate()
        .map(|(i, (client, cluster))| {
            let name = format!("fwt-n{i}");
            let child = Command::new("nats-server")
                .args(["-js", "-a", "127.0.0.1", "-p", &client.to_string()])
                .args(["-n", &name, "--cluster_name", "fwt"])
                .args(["--cluster", &format!("nats://127.0.0.1:{cluster}")])
                .args(["--routes", &routes, "-sd"])
                .arg(dir.join(&name))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("nats-server (.ci/run installs it)");
            Node { name, child }
        })
        .collect();
    let urls = ports
        .iter()
        .map(|(p, _)| format!("nats://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    (urls, nodes)
}

async fn cluster_js(urls: &str) -> jetstream::Context {
    let addrs: Vec<async_nats::ServerAddr> = urls.split(',').map(|u| u.parse().unwrap()).collect();
    let t0 = Instant::now();
    loop {
        if let Ok(c) = async_nats::connect(addrs.clone()).await {
            return jetstream::new(c);
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "cluster not up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the cluster has a JetStream leader: a replicated stream can be made.
async fn wait_jetstream(js: &jetstream::Context) {
    let t0 = Instant::now();
    loop {
        let probe = js
            .get_or_create_stream(stream::Config {
                name: "FWT_PROBE".into(),
                subjects: vec!["fwt.probe".into()],
                num_replicas: 3,
                ..Default::default()
            })
            .await;
        if probe.is_ok() {
            let _ = js.delete_stream("FWT_PROBE").await;
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "JetStream never became available: {probe:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Results stored so far, or `None` while the cluster cannot answer.
async fn stored(js: &jetstream::Context, n: &Names) -> Option<u64> {
    let mut s = js.get_stream(&n.results_stream).await.ok()?;
    Some(s.info().await.ok()?.state.messages)
}

/// Waits until `want` results are stored, riding out leader elections;
/// `Err` says how many there were after `limit`.
async fn wait_stored(
    js: &jetstream::Context,
    n: &Names,
    want: u64,
    limit: Duration,
) -> Result<(), String> {
    let t0 = Instant::now();
    let mut have = None;
    while t0.elapsed() < limit {
        have = stored(js, n).await;
        if have.is_some_and(|h| h >= want) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("{have:?} of {want} results after {limit:?}"))
}

/// Fails the test with `why` and the consumer's log.
fn fail_with_log(consumer: Proc, why: String) -> ! {
    let (code, stderr) = terminate(consumer);
    let _ = std::fs::write(
        std::env::temp_dir().join("fwt-cluster-consumer.log"),
        &stderr,
    );
    let tail: String = stderr
        .lines()
        .rev()
        .take(60)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    panic!("{why}; the consumer exited {code:?}, its log ends:\n{tail}");
}

/// Every stored result; the read is tried again while the cluster, one node
/// down, is slow to place the reading consumer (a JetStream API timeout).
async fn results_when_available(
    js: &jetstream::Context,
    n: &Names,
) -> Vec<fleetwake::service::WakeResult> {
    for _ in 0..10 {
        let js2 = js.clone();
        let (stream, subject) = (n.results_stream.clone(), n.results.clone());
        // read_all panics on a JetStream error: run it where a panic is a retry.
        let read = tokio::spawn(async move { read_all(&js2, &stream, &subject).await }).await;
        if let Ok(messages) = read {
            return messages
                .iter()
                .map(|m| serde_json::from_slice(&m.payload).expect("a result row"))
                .collect();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("the results could not be read from the cluster");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_node_killed_partway_loses_nothing() {
    let t0 = Instant::now();
    let emu = common::emulator(HttpVersions::Both).await;
    let dir = tempfile::tempdir().unwrap();
    let (urls, mut nodes) = start_cluster(dir.path());
    let js = cluster_js(&urls).await;
    wait_jetstream(&js).await;

    let n = names("cluster");
    let config = write_config(
        dir.path(),
        &emu,
        &n,
        "rate_per_second = 800\nburst = 100",
        "max_attempts = 3\nbase_delay_ms = 20\nmax_delay_ms = 100",
        "replicas = 3\nack_wait_s = 3\nin_flight = 64\nfetch_batch = 32\nwatchdog_s = 10",
    );
    let text = std::fs::read_to_string(&config).unwrap();
    let one = format!("url = \"{NATS}\"");
    assert!(text.contains(&one));
    std::fs::write(&config, text.replace(&one, &format!("url = \"{urls}\""))).unwrap();

    let consumer = spawn_consumer_log(&config, "a", "info");
    wait_ready(&js, &n).await;
    let total = 3000usize;
    let bodies = (0..total)
        .map(|i| wake(&format!("dev-{i}"), &format!("ok.{i}"), ""))
        .collect();
    publish_all(&js, &n.subject, bodies).await;

    // Kill the node that leads the wake stream once a third is done.
    if let Err(why) = wait_stored(&js, &n, total as u64 / 3, Duration::from_secs(120)).await {
        fail_with_log(consumer, why);
    }
    let leader = js
        .get_stream(&n.stream)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .expect("a stream leader");
    let at = nodes
        .iter()
        .position(|x| x.name == leader)
        .expect("leader is ours");
    let killed = nodes.remove(at);
    drop(killed); // SIGKILL
    eprintln!("killed {leader}");

    // The consumer and the results ride out the election on the other two.
    if let Err(why) = wait_stored(&js, &n, total as u64, Duration::from_secs(90)).await {
        fail_with_log(consumer, why);
    }
    let (code, stderr) = terminate(consumer);
    assert_eq!(code, Some(0), "drains and exits 0: {stderr}");
    eprintln!(
        "{:.1} s; pull requests abandoned or failed: {}; publish-failure warnings: {}; watchdog rebuilds: {}",
        t0.elapsed().as_secs_f64(),
        stderr.matches("pulling again").count(),
        stderr.matches("publishing a result failed").count(),
        stderr.matches("watchdog: nothing moved").count()
    );

    let rows = results_when_available(&js, &n).await;
    let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in &rows {
        by_key
            .entry(r.idempotency_key.clone().expect("key echoed"))
            .or_default()
            .push(r.row.outcome.clone());
    }
    let missing = (0..total)
        .filter(|i| !by_key.contains_key(&format!("dev-{i}")))
        .count();
    assert_eq!(missing, 0, "results lost");
    assert!(
        by_key.values().all(|o| o.iter().all(|o| o == "received")),
        "an outcome other than received"
    );
    // JetStream dedupe (Nats-Msg-Id = idempotency key) keeps one per message.
    assert_eq!(rows.len(), total, "one stored result per message");
    emu.shutdown().await;
}
