//! Secret hygiene: client secrets and access tokens never appear in logs (at
//! every level, text and JSON), reports, summaries, action lists, the HTML page,
//! error messages, Debug output or metrics labels.

mod common;

use std::path::Path;
use std::process::Command;

use fleetwake::emulator::HttpVersions;

const BIN: &str = env!("CARGO_BIN_EXE_fleetwake");
const SECRET: &str = "Sup3r-S3cret-Client-Value-7f3a9";

fn all_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(all_files(&p));
        } else {
            out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_and_tokens_never_leak() {
    let emu = common::emulator(HttpVersions::Both).await;
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    std::fs::write(dir.path().join("ca.pem"), emu.ca_pem().unwrap()).unwrap();
    std::fs::write(
        dir.path().join("bad.secret"),
        "invalid-but-still-secret-4411\n",
    )
    .unwrap();
    let addr = emu.local_addr();
    let config = dir.path().join("fleetwake.toml");
    std::fs::write(
        &config,
        format!(
            "[tenants.good]\npackage_sid = \"{sid}\"\nsecret_env = \"FW_SECRET_GOOD\"\nrate_per_second = 5000\n\
             [tenants.bad]\nentra_tenant_id = \"t1\"\nclient_id = \"c1\"\nsecret_file = \"bad.secret\"\n\
             [retry]\nmax_attempts = 2\nbase_delay_ms = 10\n\
             [transport]\nresolve = [\"*.notify.windows.com={addr}\", \"login.live.com={addr}\", \"login.microsoftonline.com={addr}\"]\n\
             extra_ca_files = [\"ca.pem\"]\nwebpki_roots = false\n",
            sid = common::SID
        ),
    )
    .unwrap();
    let h = "https://db5p.notify.windows.com/?token=";
    let devices = dir.path().join("fleet.csv");
    let mut csv = String::from("device_id,channel_uri,tenant\n");
    for (i, b) in ["ok", "gone", "otherapp", "unavailable", "ok", "invalid"]
        .iter()
        .enumerate()
    {
        csv.push_str(&format!("g{i},{h}{b}.{i},good\nb{i},{h}{b}.b{i},bad\n"));
    }
    std::fs::write(&devices, csv).unwrap();

    let mut logs = Vec::new();
    for (i, format) in ["text", "json"].iter().enumerate() {
        // Expire the tokens between runs so refreshes (and 401s) happen too.
        emu.expire_tokens();
        let out = Command::new(BIN)
            .args([
                "--log-format",
                format,
                "campaign",
                "--progress",
                "log",
                "--restart",
                "--config",
            ])
            .arg(&config)
            .arg("--devices")
            .arg(&devices)
            .arg("--report")
            .arg(out_dir.join(format!("report{i}.jsonl")))
            .arg("--html")
            .arg(out_dir.join(format!("report{i}.html")))
            .env("FW_SECRET_GOOD", SECRET)
            .env("FLEETWAKE_LOG", "trace")
            .env("RUST_LOG", "trace")
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stderr.len() > 1000, "trace logging is on");
        logs.push(("stdout".to_string(), out.stdout));
        logs.push((format!("stderr ({format})"), out.stderr));
    }
    // `send` prints every response header; `config check` prints the tenants.
    let out = Command::new(BIN)
        .args(["send", "--tenant", "good", "--config"])
        .arg(&config)
        .arg(format!("{h}ok.send"))
        .env("FW_SECRET_GOOD", SECRET)
        .env("FLEETWAKE_LOG", "trace")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    logs.push(("send stdout".into(), out.stdout));
    logs.push(("send stderr".into(), out.stderr));
    let out = Command::new(BIN)
        .args(["config", "check", "--config"])
        .arg(&config)
        .env("FW_SECRET_GOOD", SECRET)
        .output()
        .unwrap();
    logs.push(("config check".into(), [out.stdout, out.stderr].concat()));

    let tokens = emu.issued_tokens();
    assert!(tokens.len() >= 3, "tokens were issued: {}", tokens.len());
    let mut secrets = vec![
        SECRET.to_string(),
        "invalid-but-still-secret-4411".to_string(),
    ];
    secrets.extend(tokens);
    let mut everything = logs;
    everything.extend(all_files(&out_dir));
    for (name, bytes) in &everything {
        for s in &secrets {
            assert!(
                !contains(bytes, s),
                "{name} contains a secret or token ({}…)",
                &s[..6]
            );
        }
    }
    // The reports still say what went wrong with the bad credentials.
    let report = std::fs::read_to_string(out_dir.join("report0.jsonl")).unwrap();
    assert!(report.contains("credential_rejected") && report.contains("invalid_client"));
    emu.shutdown().await;
}

#[test]
fn debug_and_errors_redact() {
    use fleetwake::config::Config;
    use fleetwake::{Credentials, Secret};
    let c = Credentials::EntraId {
        tenant_id: "t".into(),
        client_id: "c".into(),
        secret: Secret::new(SECRET),
    };
    assert!(!format!("{c:?}").contains(SECRET));
    let text = format!("[tenants.a]\npackage_sid = \"ms-app://S-1\"\nsecret = \"{SECRET}\"\n");
    let e = Config::from_str_with_env(Path::new("f.toml"), &text, std::iter::empty()).unwrap_err();
    assert!(!e.to_string().contains(SECRET), "{e}");
    std::env::set_var("FW_SECRET_DEBUG", SECRET);
    let text = "[tenants.a]\npackage_sid = \"ms-app://S-1\"\nsecret_env = \"FW_SECRET_DEBUG\"\n";
    let cfg = Config::from_str_with_env(Path::new("f.toml"), text, std::iter::empty()).unwrap();
    let tenants = cfg.tenants().unwrap();
    assert!(!format!("{tenants:?} {cfg:?}").contains(SECRET));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let engine = rt.block_on(async { cfg.engine_builder().unwrap().build().unwrap() });
    assert!(!format!("{engine:?}").contains(SECRET));
}
