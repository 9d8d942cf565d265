//! Hostile and broken input, each with its own test: every bad row gets a clear
//! reason with its line number, the rest of the work goes on, no token reaches a
//! host outside WNS, and memory stays bounded.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::read_report;
use fleetwake::campaign::report::ReportRow;
use fleetwake::emulator::HttpVersions;

const BIN: &str = env!("CARGO_BIN_EXE_fleetwake");

fn config(dir: &Path, emu: &fleetwake::emulator::EmulatorHandle) -> std::path::PathBuf {
    std::fs::write(dir.join("ca.pem"), emu.ca_pem().unwrap()).unwrap();
    let addr = emu.local_addr();
    let path = dir.join("fleetwake.toml");
    std::fs::write(
        &path,
        format!(
            "[tenants.t]\npackage_sid = \"{}\"\nsecret_env = \"FW_HOSTILE_SECRET\"\nrate_per_second = 20000\n\
             [transport]\nresolve = [\"*.notify.windows.com={addr}\", \"login.live.com={addr}\"]\nextra_ca_files = [\"ca.pem\"]\nwebpki_roots = false\n",
            common::SID
        ),
    )
    .unwrap();
    path
}

/// Runs a campaign, sampling the child's peak RSS (VmHWM) while it runs.
fn run(config: &Path, devices: &Path, report: &Path) -> (Option<i32>, String, u64) {
    let mut child = Command::new(BIN)
        .args(["campaign", "--progress", "none", "--config"])
        .arg(config)
        .arg("--devices")
        .arg(devices)
        .arg("--report")
        .arg(report)
        .env("FW_HOSTILE_SECRET", "s")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status_path = format!("/proc/{}/status", child.id());
    let mut hwm_kb = 0;
    loop {
        if let Ok(s) = std::fs::read_to_string(&status_path) {
            if let Some(v) = s
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            {
                hwm_kb = hwm_kb.max(v);
            }
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        hwm_kb,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_encodings_huge_lines_and_nul_bytes() {
    let emu = common::emulator(HttpVersions::Both).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &emu);
    let devices = dir.path().join("fleet.csv");
    let mut f = std::fs::File::create(&devices).unwrap();
    let h = "https://db5p.notify.windows.com/?token=";
    writeln!(f, "device_id,channel_uri,tenant").unwrap();
    writeln!(f, "ok1,{h}ok.1,t").unwrap(); // 2
    f.write_all(b"latin1-\xe9\xe8,https://db5p.notify.windows.com/?token=ok.2,t\n")
        .unwrap(); // 3
    f.write_all(b"nul\0byte,https://db5p.notify.windows.com/?token=ok.3,t\n")
        .unwrap(); // 4
    f.write_all(&vec![b'A'; 10 * 1024 * 1024]).unwrap(); // 5: a 10 MiB line
    f.write_all(b"\n").unwrap();
    f.write_all(b"\xff\xfe\x00\x00garbage\n").unwrap(); // 6
    writeln!(f, "ok2,{h}ok.4,t").unwrap(); // 7
    f.write_all(b"half-a-line-without-newline,").unwrap(); // 8
    drop(f);
    let report = dir.path().join("r.jsonl");
    let (code, stderr, hwm) = run(&cfg, &devices, &report);
    assert_eq!(code, Some(1), "{stderr}");
    let rows = read_report(&report);
    let by_line: HashMap<u64, &ReportRow> = rows.iter().map(|r| (r.line.unwrap(), r)).collect();
    assert_eq!(by_line[&2].outcome, "received");
    assert_eq!(by_line[&7].outcome, "received");
    for (line, want) in [
        (3, "UTF-8"),
        (4, "NUL"),
        (5, "longer than"),
        (6, "NUL"),
        (8, "fields"),
    ] {
        let r = by_line
            .get(&line)
            .unwrap_or_else(|| panic!("line {line} has no row: {rows:?}"));
        assert_eq!(r.outcome, "invalid_input", "line {line}");
        assert!(
            r.detail.as_deref().unwrap().contains(want),
            "line {line}: {:?}",
            r.detail
        );
    }
    assert_eq!(rows.len(), 7);
    assert!(
        hwm < 100 * 1024,
        "a 10 MiB line is never held whole: peak RSS {hwm} KiB"
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_duplicate_rows_cost_one_push() {
    let emu = common::emulator(HttpVersions::Both).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &emu);
    let devices = dir.path().join("dups.csv");
    let n = 200_000; // the long-run script uses millions
    let mut f = std::io::BufWriter::new(std::fs::File::create(&devices).unwrap());
    writeln!(f, "device_id,channel_uri,tenant").unwrap();
    for i in 0..n {
        writeln!(
            f,
            "d{i},https://db5p.notify.windows.com/?token=slow-200.same,t"
        )
        .unwrap();
    }
    drop(f);
    let report = dir.path().join("r.jsonl");
    let (code, stderr, hwm) = run(&cfg, &devices, &report);
    assert_eq!(code, Some(0), "{stderr}");
    let stats = emu.stats();
    assert_eq!(
        stats.by_channel["slow-200.same"].values().sum::<u64>(),
        1,
        "one push for {n} rows"
    );
    let text = std::fs::read_to_string(&report).unwrap();
    assert_eq!(text.lines().count(), n);
    assert_eq!(text.matches("\"coalesced\":true").count(), n - 1);
    assert!(hwm < 64 * 1024, "peak RSS {hwm} KiB");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uris_that_try_to_escape_wns_in_a_campaign() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let foreign = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let emu = common::emulator(HttpVersions::Both).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &emu);
    // Every lookalike resolves to the foreign listener.
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "resolve = [",
        &format!("resolve = [\"evil.test={foreign}\", \"*.evil.test={foreign}\", \"*.windows.com.evil.test={foreign}\", "),
    );
    std::fs::write(&cfg, text).unwrap();
    let escapes = [
        "https://evil.test/?token=ok.1",
        "https://notify.windows.com.evil.test/?token=ok.1",
        "https://db5p.notify.windows.com.evil.test/?token=ok.1",
        "https://evilnotify.windows.com/?token=ok.1",
        "https://db5p.notify.windows.com@evil.test/?token=ok.1",
        "https://user:pw@db5p.notify.windows.com/?token=ok.1",
        "https://127.0.0.1/?token=ok.1",
        "https://[::1]/?token=ok.1",
        "https://0x7f.0.0.1/?token=ok.1",
        "https://db5p.notify.windows.com:8443/?token=ok.1",
        "http://db5p.notify.windows.com/?token=ok.1",
        "https://db5p%2Enotify.windows.com.evil.test/?token=ok.1",
        "https://xn--db5p-notify.windows.com.evil.test/?token=ok.1",
        "HTTPS://DB5P.NOTIFY.WINDOWS.COM.EVIL.TEST/?token=ok.1",
        "https://db5p.notify.windows.com\\@evil.test/?token=ok.1",
        "//evil.test/?token=ok.1",
    ];
    let mut csv = String::from("device_id,channel_uri,tenant\n");
    for (i, u) in escapes.iter().enumerate() {
        csv.push_str(&format!("e{i},\"{u}\",t\n"));
    }
    csv.push_str("real,https://db5p.notify.windows.com/?token=ok.real,t\n");
    let devices = dir.path().join("escapes.csv");
    std::fs::write(&devices, csv).unwrap();
    let report = dir.path().join("r.jsonl");
    let (code, stderr, _) = run(&cfg, &devices, &report);
    assert_eq!(code, Some(1), "{stderr}");
    let rows = read_report(&report);
    assert_eq!(rows.len(), escapes.len() + 1);
    for r in &rows {
        if r.device_id.as_deref() == Some("real") {
            assert_eq!(r.outcome, "received");
        } else {
            assert_eq!(
                (r.outcome.as_str(), r.attempts),
                ("invalid_channel", 0),
                "{r:?}"
            );
            assert!(r.detail.as_deref().is_some_and(|d| !d.is_empty()));
        }
    }
    assert!(
        listener.accept().is_err(),
        "the foreign listener saw no connection"
    );
    emu.shutdown().await;
}
