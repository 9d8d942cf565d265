//! The MDM side end to end through the binary: a campaign with `--store` records
//! outcomes, the next campaign skips the dead channels, `channels list --due`
//! lists them, a SyncML session with a new ChannelURI clears them, and
//! `simulate` shows the guidance paying off.

mod common;

use std::process::Command;

use common::read_report;
use fleetwake::emulator::HttpVersions;

const BIN: &str = env!("CARGO_BIN_EXE_fleetwake");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaign_store_skips_dead_channels_until_a_new_channel_is_read() {
    let emu = common::emulator(HttpVersions::Both).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), emu.ca_pem().unwrap()).unwrap();
    let addr = emu.local_addr();
    let config = dir.path().join("fleetwake.toml");
    std::fs::write(
        &config,
        format!(
            "[tenants.contoso]\npackage_sid = \"{}\"\nsecret_env = \"FW_MDM_TEST_SECRET\"\nrate_per_second = 1000\n\
             [transport]\nresolve = [\"*.notify.windows.com={addr}\", \"login.live.com={addr}\"]\nextra_ca_files = [\"ca.pem\"]\nwebpki_roots = false\n",
            common::SID
        ),
    )
    .unwrap();
    let h = "https://db5p.notify.windows.com/?token=";
    let devices = dir.path().join("fleet.csv");
    std::fs::write(&devices, format!("device_id,channel_uri,tenant\nd1,{h}ok.1,contoso\nd2,{h}gone.2,contoso\nd3,{h}invalid.3,contoso\n")).unwrap();
    let store = dir.path().join("channels.redb");
    let run = |report: &str| {
        Command::new(BIN)
            .args(["campaign", "--progress", "none", "--config"])
            .arg(&config)
            .arg("--devices")
            .arg(&devices)
            .arg("--report")
            .arg(dir.path().join(report))
            .arg("--store")
            .arg(&store)
            .env("FW_MDM_TEST_SECRET", "s")
            .output()
            .unwrap()
    };
    let out = run("first.jsonl");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 outcomes recorded"));
    let out = run("second.jsonl");
    assert_eq!(out.status.code(), Some(1));
    let second = read_report(&dir.path().join("second.jsonl"));
    let by = |id: &str| {
        second
            .iter()
            .find(|r| r.device_id.as_deref() == Some(id))
            .unwrap()
            .clone()
    };
    assert_eq!(by("d1").outcome, "received");
    let d2 = by("d2");
    assert_eq!(
        (d2.outcome.as_str(), d2.attempts, d2.action.as_str()),
        ("channel_stale", 0, "reset_pfn_at_next_sync")
    );
    assert!(d2.detail.unwrap().contains("410"));
    let d3 = by("d3");
    assert_eq!((d3.outcome.as_str(), d3.attempts), ("channel_invalid", 0));
    let stats = emu.stats();
    assert_eq!(
        stats.by_channel["gone.2"].values().sum::<u64>(),
        1,
        "the dead channel was not pushed again"
    );
    assert_eq!(stats.by_channel["ok.1"].values().sum::<u64>(), 2);

    // The due list names what to do at the next sync.
    let out = Command::new(BIN)
        .args(["channels", "list", "--due", "--json", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("d2") && text.contains("reset_pfn_dead"),
        "{text}"
    );
    assert!(
        text.contains("d3") && text.contains("invalid_channel"),
        "{text}"
    );

    // A session reports a new channel for d2: it replaces the old one and clears the flag.
    let reply = dir.path().join("reply.xml");
    std::fs::write(
        &reply,
        format!(
            r#"<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr><VerDTD>1.2</VerDTD></SyncHdr><SyncBody>
<Results><CmdID>3</CmdID><MsgRef>1</MsgRef><CmdRef>2</CmdRef>
<Item><Source><LocURI>./Vendor/MSFT/DMClient/Provider/Contoso/Push/ChannelURI</LocURI></Source><Data>{h}ok.new2</Data></Item>
<Item><Source><LocURI>./Vendor/MSFT/DMClient/Provider/Contoso/Push/Status</LocURI></Source><Data>0</Data></Item>
</Results><Final/></SyncBody></SyncML>"#
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["channels", "import", "--store"])
        .arg(&store)
        .arg("--syncml")
        .arg(&reply)
        .args([
            "--device-id",
            "d2",
            "--at",
            &humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(BIN)
        .args(["channels", "list", "--due", "--json", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("\"d2\""), "d2 is no longer due: {text}");
    emu.shutdown().await;
}

#[test]
fn mdm_builders_and_parser_through_the_cli() {
    let out = Command::new(BIN)
        .args([
            "mdm",
            "push-config",
            "--provider-id",
            "Contoso",
            "--pfn",
            "Contoso.MDM_8wekyb3d8bbwe",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("./Vendor/MSFT/DMClient/Provider/Contoso/Push/PFN")
            && text.contains("Push/ChannelURI"),
        "{text}"
    );
    let out = Command::new(BIN)
        .args([
            "mdm",
            "poll-config",
            "--provider-id",
            "Contoso",
            "--first-interval",
            "15",
            "--first-retries",
            "0",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "an infinite first set is refused"
    );
    let dir = tempfile::tempdir().unwrap();
    let bomb = dir.path().join("bomb.xml");
    std::fs::write(
        &bomb,
        "<!DOCTYPE x [<!ENTITY a \"aaaa\"><!ENTITY b \"&a;&a;&a;&a;\">]><SyncML>&b;</SyncML>",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["mdm", "parse"])
        .arg(&bomb)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("line 1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn simulate_shows_the_value_of_the_guidance() {
    let out = Command::new(BIN)
        .args([
            "simulate",
            "--devices",
            "3000",
            "--days",
            "60",
            "--seed",
            "3",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = v.to_string();
    assert!(text.contains("guided") && text.contains("naive"), "{text}");
}
