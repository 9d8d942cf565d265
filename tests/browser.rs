//! The HTML report as a browser shows it: the demo's report, and a campaign
//! over a hostile fleet, rendered by headless Chromium and checked by
//! `tests/browser/check_report.py` (selenium). `.ci/run` installs Chromium
//! and chromedriver from Debian's packages and selenium from PyPI; with
//! `CI=true` a missing browser fails the test instead of skipping it.

mod common;

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_fleetwake");

/// True when the browser tooling is here; panics under CI when it is not.
fn browser_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import selenium"])
        .status()
        .is_ok_and(|s| s.success())
        && Path::new("/usr/bin/chromium").exists()
        && Path::new("/usr/bin/chromedriver").exists();
    if !ok {
        assert!(
            std::env::var("CI").is_err(),
            "chromium, chromedriver (Debian) and selenium (PyPI) are needed: .ci/run installs them"
        );
        eprintln!("skipped: no chromium, chromedriver or selenium here");
    }
    ok
}

fn check(html: &Path, report: &Path, extra: &[&str]) {
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/browser/check_report.py"
        ))
        .arg("--html")
        .arg(html)
        .arg("--report")
        .arg(report)
        .args(extra)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success(), "{text}");
}

#[test]
fn the_demo_report_renders_and_matches_its_jsonl() {
    if !browser_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let status = Command::new(BIN)
        .args(["demo", "--progress", "none", "--out"])
        .arg(&out)
        .env("FLEETWAKE_LOG", "warn")
        .status()
        .unwrap();
    assert!(status.success());
    check(&out.join("report.html"), &out.join("report.jsonl"), &[]);
}

/// Device ids, tenants and channel URIs that try to be markup, reorder text
/// or break the layout: on the page they are inert text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_fleet_is_inert_text_on_the_page() {
    if !browser_available() {
        return;
    }
    let emu = common::emulator(fleetwake::emulator::HttpVersions::Both).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fleetwake.toml");
    std::fs::write(
        &config,
        common::engine_toml(
            dir.path(),
            &emu,
            "rate_per_second = 5000",
            "max_attempts = 2",
            "",
        ),
    )
    .unwrap();
    let canary = "window.__fleetwake_pwned=1";
    let hostile = [
        format!("<script>{canary}</script>"),
        format!("\"><img src=x onerror=\"{canary}\">"),
        format!("</svg></table><script>{canary}</script>"),
        "\u{202e}gnp.exe".to_string(),
        "left\u{2067}right\u{2069} and \u{202d}over".to_string(),
        "a,b\"c,\"d".to_string(),
        "A".repeat(10 * 1024),
        format!("{}{}", "W".repeat(5000), "<b>bold?</b>"),
    ];
    let mut lines = Vec::new();
    for (i, h) in hostile.iter().enumerate() {
        // As a device id, on an expired channel (listed under reset_pfn_at_next_sync).
        lines.push(serde_json::json!({
            "device_id": h,
            "tenant": "contoso",
            "channel_uri": format!("https://db5p.notify.windows.com/?token=gone.{i}"),
        }));
        // As a tenant (unknown_tenant, listed under fix_config).
        lines.push(serde_json::json!({
            "device_id": format!("t{i}"),
            "tenant": h,
            "channel_uri": format!("https://db5p.notify.windows.com/?token=ok.t{i}"),
        }));
        // As a channel URI (invalid_channel, listed under fix_channel_record).
        lines.push(serde_json::json!({
            "device_id": format!("c{i}"),
            "tenant": "contoso",
            "channel_uri": format!("https://db5p.notify.windows.com/?token={h}"),
        }));
    }
    for i in 0..50 {
        lines.push(serde_json::json!({
            "device_id": format!("ok-{i}"),
            "tenant": "contoso",
            "channel_uri": format!("https://db5p.notify.windows.com/?token=ok.{i}"),
        }));
    }
    let devices = dir.path().join("fleet.jsonl");
    std::fs::write(
        &devices,
        lines
            .iter()
            .map(|l| l.to_string() + "\n")
            .collect::<String>(),
    )
    .unwrap();
    let report = dir.path().join("wake.jsonl");
    let html = dir.path().join("wake.html");
    let out = tokio::task::spawn_blocking({
        let (config, devices, report, html) = (
            config.clone(),
            devices.clone(),
            report.clone(),
            html.clone(),
        );
        move || {
            Command::new(BIN)
                .args(["campaign", "--progress", "none", "--config"])
                .arg(&config)
                .arg("--devices")
                .arg(&devices)
                .arg("--report")
                .arg(&report)
                .arg("--html")
                .arg(&html)
                .env("FLEETWAKE_TEST_SECRET", "test-secret")
                .env("FLEETWAKE_LOG", "warn")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.code() == Some(1),
        "finished with failures: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hostile_file = dir.path().join("hostile.jsonl");
    std::fs::write(
        &hostile_file,
        hostile
            .iter()
            .map(|h| serde_json::to_string(h).unwrap() + "\n")
            .collect::<String>(),
    )
    .unwrap();
    let hostile_arg = hostile_file.to_string_lossy().to_string();
    tokio::task::spawn_blocking(move || check(&html, &report, &["--hostile", &hostile_arg]))
        .await
        .unwrap();
}
