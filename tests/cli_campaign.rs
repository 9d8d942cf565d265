//! The `fleetwake` binary end to end: campaigns against the emulator over TLS,
//! resume after a real SIGKILL, a SIGTERM drain, `config check`, and `demo`.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::read_report;
use fleetwake::emulator::{EmulatorHandle, HttpVersions};

const BIN: &str = env!("CARGO_BIN_EXE_fleetwake");
const SECRET_VAR: &str = "FLEETWAKE_TEST_SECRET";

fn write_config(dir: &Path, emu: &EmulatorHandle, extra: &str) -> PathBuf {
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, emu.ca_pem().unwrap()).unwrap();
    let addr = emu.local_addr();
    let text = format!(
        r#"
[tenants.contoso]
package_sid = "{sid}"
secret_env = "{SECRET_VAR}"
{extra}

[retry]
max_attempts = 3
base_delay_ms = 20
max_delay_ms = 100

[transport]
resolve = ["*.notify.windows.com={addr}", "login.live.com={addr}"]
extra_ca_files = ["ca.pem"]
webpki_roots = false
"#,
        sid = common::SID
    );
    let path = dir.join("fleetwake.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn campaign(config: &Path, devices: &Path, report: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.args(["campaign", "--progress", "none", "--config"])
        .arg(config)
        .arg("--devices")
        .arg(devices)
        .arg("--report")
        .arg(report)
        .env(SECRET_VAR, "test-secret")
        .env("FLEETWAKE_LOG", "warn");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_campaign_rows_actions_and_bad_lines() {
    let emu = common::emulator(HttpVersions::Both).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &emu, "rate_per_second = 5000");
    let devices = dir.path().join("fleet.csv");
    let h = "https://db5p.notify.windows.com/?token=";
    let csv = format!(
        "device_id,channel_uri,tenant\n\
         d-ok,{h}ok.1,contoso\n\
         d-gone,{h}gone.2,contoso\n\
         d-invalid,{h}invalid.3,contoso\n\
         d-other,{h}otherapp.4,contoso\n\
         d-evil,https://notify.windows.com.evil.test/?token=ok.5,contoso\n\
         d-tenant,{h}ok.6,initech\n\
         \"broken,{h}ok.7,contoso\n\
         d-dup,{h}gone.2,contoso\n\
         d-offline,{h}offline.9,contoso\n"
    );
    std::fs::write(&devices, csv).unwrap();
    let report = dir.path().join("wake.jsonl");
    let html = dir.path().join("wake.html");
    let out = campaign(&config, &devices, &report)
        .arg("--html")
        .arg(&html)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "some devices were not received\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = read_report(&report);
    assert_eq!(rows.len(), 9, "one row per device");
    let by_id: HashMap<_, _> = rows
        .iter()
        .map(|r| {
            (
                r.device_id
                    .clone()
                    .unwrap_or_else(|| format!("line{}", r.line.unwrap())),
                r,
            )
        })
        .collect();
    let expect = [
        ("d-ok", "received", Some(200), "none"),
        (
            "d-gone",
            "channel_expired",
            Some(410),
            "reset_pfn_at_next_sync",
        ),
        (
            "d-invalid",
            "channel_invalid",
            Some(404),
            "refresh_channel_at_next_sync",
        ),
        (
            "d-other",
            "channel_app_mismatch",
            Some(403),
            "fix_pfn_or_credentials",
        ),
        ("d-evil", "invalid_channel", None, "fix_channel_record"),
        ("d-tenant", "unknown_tenant", None, "fix_config"),
        ("d-offline", "received", Some(200), "none"),
    ];
    for (id, outcome, status, action) in expect {
        let r = by_id.get(id).unwrap_or_else(|| panic!("{id} missing"));
        assert_eq!(
            (r.outcome.as_str(), r.status, r.action.as_str()),
            (outcome, status, action),
            "{id}"
        );
    }
    assert!(by_id["d-ok"].msg_id.is_some() && by_id["d-ok"].debug_trace.is_some());
    assert_eq!(by_id["d-evil"].line, Some(6));
    assert!(by_id["d-evil"]
        .detail
        .as_deref()
        .unwrap()
        .contains("outside notify.windows.com"));
    let broken = rows
        .iter()
        .find(|r| r.outcome == "invalid_input")
        .expect("the broken line is reported");
    assert_eq!(broken.line, Some(8));
    assert!(broken.detail.as_deref().unwrap().contains("unterminated"));
    let dup = &by_id["d-dup"];
    assert_eq!(
        (dup.outcome.as_str(), dup.coalesced),
        ("channel_expired", true)
    );
    assert_eq!(
        emu.stats()
            .by_channel
            .get("gone.2")
            .and_then(|m| m.get(&410)),
        Some(&1),
        "pushed once"
    );
    // Action lists.
    let actions = dir.path().join("wake.jsonl.actions");
    let reset = std::fs::read_to_string(actions.join("reset_pfn_at_next_sync.csv")).unwrap();
    assert!(
        reset.contains("d-gone,contoso") && reset.contains("d-dup,contoso"),
        "{reset}"
    );
    assert!(
        std::fs::read_to_string(actions.join("refresh_channel_at_next_sync.csv"))
            .unwrap()
            .contains("d-invalid")
    );
    assert!(
        std::fs::read_to_string(actions.join("fix_pfn_or_credentials.csv"))
            .unwrap()
            .contains("d-other")
    );
    // Summary file and table.
    let summary: fleetwake::campaign::summary::Summary =
        serde_json::from_slice(&std::fs::read(dir.path().join("wake.jsonl.summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary.devices, 9);
    assert_eq!(summary.by_outcome["received"], 2);
    assert!(stdout.contains("reset_pfn_at_next_sync"), "{stdout}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("<svg")
            && page.contains("channel_expired")
            && !page.contains("http://")
            && !page.contains("<script src")
    );

    // --strict stops at the first bad row, with exit code 2.
    let out = campaign(&config, &devices, &dir.path().join("strict.jsonl"))
        .arg("--strict")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("line 6"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    emu.shutdown().await;
}

fn fleet(path: &Path, n: usize, behaviour: &str) {
    let mut s = String::from("device_id,channel_uri,tenant\n");
    for i in 0..n {
        s.push_str(&format!(
            "dev-{i},https://db5p.notify.windows.com/?token={behaviour}.{i},contoso\n"
        ));
    }
    std::fs::write(path, s).unwrap();
}

fn assert_complete(report: &Path, n: usize) {
    let rows = read_report(report);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for r in &rows {
        *seen.entry(r.device_id.clone().unwrap()).or_default() += 1;
        assert_eq!(r.outcome, "received", "{r:?}");
    }
    assert_eq!(seen.len(), n, "every device has a row");
    assert!(seen.values().all(|&c| c == 1), "no device has two rows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_sigkill_loses_nothing() {
    let emu = common::emulator(HttpVersions::Both).await;
    let dir = tempfile::tempdir().unwrap();
    let in_flight = 64;
    let config = write_config(
        dir.path(),
        &emu,
        &format!("rate_per_second = 2000\nmax_in_flight = {in_flight}"),
    );
    let n = 10_000;
    let devices = dir.path().join("fleet.csv");
    fleet(&devices, n, "slow-20");
    let report = dir.path().join("wake.jsonl");
    let mut child = campaign(&config, &devices, &report)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until a good part of the fleet is done, then kill -9.
    let t0 = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let done = std::fs::read_to_string(&report)
            .map(|s| s.lines().count())
            .unwrap_or(0);
        if done >= n / 3 || t0.elapsed() > Duration::from_secs(30) {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let partial = std::fs::read_to_string(&report).unwrap().lines().count();
    assert!(
        partial > 0 && partial < n,
        "killed mid-run: {partial} of {n}"
    );
    let out = campaign(&config, &devices, &report).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Resumed"));
    assert_complete(&report, n);
    // Pushes beyond one per channel: at most what was in flight at the kill.
    let extra: u64 = emu
        .stats()
        .by_channel
        .values()
        .map(|m| m.values().sum::<u64>().saturating_sub(1))
        .sum();
    assert!(
        extra <= in_flight,
        "{extra} channels were pushed twice; the in-flight bound is {in_flight}"
    );
    // Running it once more changes nothing.
    let out = campaign(&config, &devices, &report).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("already complete"));
    assert_complete(&report, n);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_checkpoints() {
    let emu = common::emulator(HttpVersions::Both).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &emu, "rate_per_second = 500");
    let n = 3000;
    let devices = dir.path().join("fleet.csv");
    fleet(&devices, n, "slow-300");
    let report = dir.path().join("wake.jsonl");
    let child = campaign(&config, &devices, &report)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "documented 'interrupted' code; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = read_report(&report);
    assert!(!rows.is_empty() && rows.len() < n, "{}", rows.len());
    assert!(
        rows.iter().all(|r| r.outcome == "received"),
        "in-flight wakes finished, none was cut"
    );
    let cp: fleetwake::campaign::checkpoint::Checkpoint =
        serde_json::from_slice(&std::fs::read(dir.path().join("wake.jsonl.checkpoint")).unwrap())
            .unwrap();
    assert!(cp.interrupted && !cp.complete);
    let pushed = emu.stats().by_status.get(&200).copied().unwrap_or(0);
    assert_eq!(pushed as usize, rows.len(), "everything sent has its row");
    let out = campaign(&config, &devices, &report).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_complete(&report, n);
    emu.shutdown().await;
}

#[test]
fn config_check_says_what_and_where() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[transport]\nhttp = \"http3\"\n", "fleetwake.toml:2:8"),
        ("[tenants.a]\npackage_sid = \"ms-app://S-1\"\n", "fleetwake.toml:1:1: tenant `a`: needs secret_env"),
        ("[tenants.a]\npackage_sid = \"ms-app://S-1\"\nsecret = \"x\"\n", "never go in the config file"),
        ("[tenants.a]\npackage_sid = \"ms-app://S-1\"\nsecret_env = \"FW_NOT_SET_ANYWHERE\"\n", "FW_NOT_SET_ANYWHERE is not set"),
        ("[tenants.a]\npackage_sid = \"S-1\"\nsecret_env = \"HOME\"\n", "ms-app://"),
        ("[tenants.a]\npackage_sid = \"ms-app://S-1\"\nsecret_env = \"HOME\"\n[transport]\nextra_ca_files = [\"nope.pem\"]\n", "nope.pem"),
        ("[retry]\nmax_attemps = 2\n", "fleetwake.toml:2:1: unknown field `max_attemps`"),
        // The service sections are checked as `consume` and `serve` would.
        ("[tenants.a]\npackage_sid = \"ms-app://S-1\"\nsecret_env = \"HOME\"\n[serve]\nmax_batch = \"x\"\n", "fleetwake.toml:5:13: [serve]: invalid type"),
        ("[tenants.a]\npackage_sid = \"ms-app://S-1\"\nsecret_env = \"HOME\"\n[serve]\nlisten = \"127.0.0.1:0\"\n", "[serve] has no API key"),
        ("[tenants.a]\npackage_sid = \"ms-app://S-1\"\nsecret_env = \"HOME\"\nrate_per_second = 2\n[consume]\ninstances = 3\n", "fleetwake.toml:1:1: tenant `a`: rate_per_second (2)"),
        ("[tenants.a]\npackage_sid = \"ms-app://S-1\"\nsecret_env = \"HOME\"\npfn = \"P\"\n[tenants.b]\npackage_sid = \"ms-app://S-2\"\nsecret_env = \"HOME\"\npfn = \"P\"\nrate_per_second = 5\n", "share the PFN \"P\""),
    ];
    for (text, want) in cases {
        let path = dir.path().join("fleetwake.toml");
        std::fs::write(&path, text).unwrap();
        let out = Command::new(BIN)
            .args(["config", "check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {err}");
        assert!(err.contains(want), "{text}\nwanted {want:?} in: {err}");
    }
    let path = dir.path().join("fleetwake.toml");
    std::fs::write(
        &path,
        "[tenants.a]\npackage_sid = \"ms-app://S-1\"\nsecret_env = \"HOME\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["config", "check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn demo_exits_zero_with_a_correct_summary() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["demo", "--devices", "3000", "--progress", "none", "--out"])
        .arg(dir.path())
        .env("FLEETWAKE_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Demo check: OK"), "{stdout}");
    let rows = read_report(&dir.path().join("report.jsonl"));
    assert_eq!(rows.len(), 3000);
    for needed in [
        "received",
        "channel_expired",
        "channel_invalid",
        "channel_app_mismatch",
    ] {
        assert!(rows.iter().any(|r| r.outcome == needed), "{needed}");
    }
    assert!(dir.path().join("report.html").exists());
}

#[test]
fn help_has_examples_everywhere() {
    for cmd in [
        vec!["--help"],
        vec!["campaign", "--help"],
        vec!["demo", "--help"],
        vec!["send", "--help"],
        vec!["emulate", "--help"],
        vec!["consume", "--help"],
        vec!["serve", "--help"],
        vec!["config", "check", "--help"],
    ] {
        let out = Command::new(BIN).args(&cmd).output().unwrap();
        assert!(out.status.success(), "{cmd:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("Example") || text.contains("Exit codes"),
            "{cmd:?}: {text}"
        );
    }
}

/// Runs the campaign, which must exit 0; its report's rows.
fn campaign_ok(
    config: &Path,
    devices: &Path,
    report: &Path,
) -> Vec<fleetwake::campaign::report::ReportRow> {
    let out = campaign(config, devices, report).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    read_report(report)
}

/// A config whose WNS host is the emulator and whose `login.live.com` is
/// `token_addr` (a closed port while the endpoint is "down").
fn config_with_token_endpoint(
    dir: &Path,
    emu: &EmulatorHandle,
    token_addr: &str,
    extra: &str,
) -> PathBuf {
    let path = write_config(dir, emu, "rate_per_second = 20000\nburst = 2000");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replace(
        &format!("\"login.live.com={}\"", emu.local_addr()),
        &format!("\"login.live.com={token_addr}\""),
    );
    std::fs::write(&path, format!("{text}\n{extra}\n")).unwrap();
    path
}

/// The token endpoint cannot be reached (a closed port) for a 20,000-device
/// campaign: within seconds the tenant's breaker opens, the campaign stops
/// with one clear error (host, address, OS error) and exit code 5, writes no
/// row for the devices it never tried and keeps its checkpoint; the same
/// command, once the endpoint is back, wakes every device exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_token_endpoint_stops_the_campaign_and_a_rerun_wakes_everyone() {
    let emu = common::emulator(HttpVersions::Both).await;
    let dir = tempfile::tempdir().unwrap();
    let dead = format!("127.0.0.1:{}", common::closed_port());
    let config = config_with_token_endpoint(dir.path(), &emu, &dead, "");
    let devices = dir.path().join("fleet.csv");
    let mut csv = String::from("device_id,channel_uri,tenant\n");
    for i in 0..20_000 {
        csv.push_str(&format!(
            "d{i},https://db5p.notify.windows.com/?token=ok.{i},contoso\n"
        ));
    }
    std::fs::write(&devices, csv).unwrap();
    let report = dir.path().join("wake.jsonl");

    let t0 = Instant::now();
    let out = campaign(&config, &devices, &report).output().unwrap();
    let took = t0.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("endpoint down: exit {:?} after {took:?}", out.status.code());
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    let said: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    eprintln!("{}", said.join("\n"));
    assert!(
        said.iter().any(|l| l.contains("devices not tried")
            && l.contains(&format!("connect login.live.com ({dead})"))
            && l.contains("Connection refused")),
        "one clear error with the host, the address and the OS error: {stderr}"
    );
    assert!(
        took < Duration::from_secs(30),
        "stopped within seconds, not after trying every device: {took:?}"
    );
    let rows = if report.exists() {
        read_report(&report)
    } else {
        Vec::new()
    };
    assert!(
        rows.is_empty(),
        "no row for a device never tried: {}",
        rows.len()
    );
    assert_eq!(emu.stats().pushes_total, 0);
    let cp: fleetwake::campaign::checkpoint::Checkpoint =
        serde_json::from_slice(&std::fs::read(dir.path().join("wake.jsonl.checkpoint")).unwrap())
            .unwrap();
    assert!(!cp.complete, "the checkpoint is kept for the rerun");

    // The endpoint is back: the same command wakes every device, once.
    let config = config_with_token_endpoint(dir.path(), &emu, &emu.local_addr().to_string(), "");
    let rows = campaign_ok(&config, &devices, &report);
    assert_eq!(rows.len(), 20_000, "one row per device");
    let ids: std::collections::HashSet<_> = rows.iter().map(|r| r.device_id.clone()).collect();
    assert_eq!(ids.len(), 20_000);
    assert!(rows.iter().all(|r| r.outcome == "received"));
    assert_eq!(emu.stats().pushes_total, 20_000);
}

/// Two tenants, one whose token endpoint is down (Package SID at
/// login.live.com, a closed port) and one that works (Entra ID): the first is
/// stopped (no rows, exit 5, its error) while the other's devices are woken;
/// the rerun wakes the first tenant's devices only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_whose_token_endpoint_is_down_is_stopped_and_the_others_go_on() {
    let emu = common::emulator(HttpVersions::Both).await;
    let dir = tempfile::tempdir().unwrap();
    let dead = format!("127.0.0.1:{}", common::closed_port());
    let entra = format!(
        "[engine]\nbreaker_open_after_s = 2\n\n[tenants.fabrikam]\nentra_tenant_id = \"fab\"\nclient_id = \"app-1\"\nsecret_env = \"{SECRET_VAR}\"\nrate_per_second = 20000\nburst = 2000\n"
    );
    // Package SID (contoso) at the dead port, Entra ID (fabrikam) at the emulator.
    let two_tenants = |token_addr: &str| {
        let config = config_with_token_endpoint(dir.path(), &emu, token_addr, &entra);
        let text = std::fs::read_to_string(&config).unwrap().replace(
            "resolve = [",
            &format!(
                "resolve = [\"login.microsoftonline.com={}\", ",
                emu.local_addr()
            ),
        );
        std::fs::write(&config, text).unwrap();
        config
    };
    let config = two_tenants(&dead);
    let devices = dir.path().join("fleet.csv");
    let mut csv = String::from("device_id,channel_uri,tenant\n");
    for i in 0..2_000 {
        let t = if i % 2 == 0 { "contoso" } else { "fabrikam" };
        csv.push_str(&format!(
            "d{i},https://db5p.notify.windows.com/?token=ok.{i},{t}\n"
        ));
    }
    std::fs::write(&devices, csv).unwrap();
    let report = dir.path().join("wake.jsonl");
    let out = campaign(&config, &devices, &report).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(
        stderr.contains("devices not tried: tenant \"contoso\""),
        "{stderr}"
    );
    let rows = read_report(&report);
    assert_eq!(
        rows.len(),
        1_000,
        "only the working tenant's devices have rows"
    );
    assert!(rows
        .iter()
        .all(|r| r.tenant.as_deref() == Some("fabrikam") && r.outcome == "received"));

    let config = two_tenants(&emu.local_addr().to_string());
    let rows = campaign_ok(&config, &devices, &report);
    assert_eq!(rows.len(), 2_000);
    assert!(rows.iter().all(|r| r.outcome == "received"));
    assert_eq!(emu.stats().pushes_total, 2_000, "nobody was woken twice");
}
