//! `fleetwake demo`: the first thing to run on a fresh machine. It starts the
//! built-in WNS emulator over TLS, writes a simulated fleet with a realistic
//! mix of outcomes, and runs a real campaign against it, with the same
//! progress, summary, action lists and HTML report as a production campaign.
//! It then checks the report against what the fleet should produce.

use std::io::BufReader;
use std::path::PathBuf;
use std::time::Duration;

use crate::campaign::{input::DeviceReader, CampaignOptions};
use crate::emulator::{demo, EmulatorConfig, HttpVersions, TlsSource};
use crate::engine::{Engine, RateLimit, RetryPolicy, TenantConfig};
use crate::transport::{HttpPolicy, TransportConfig};
use crate::wns::{Credentials, Secret};

const EXAMPLES: &str = "\
Examples:
  fleetwake demo                       # 100,000 devices, outputs in ./fleetwake-demo
  fleetwake demo --devices 1000000 --http1
Outputs: devices.csv, report.jsonl, report.html, report.jsonl.summary.json,
report.jsonl.actions/*.csv and the emulator's test CA (ca.pem).";

/// Arguments of `fleetwake demo`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// Devices in the simulated fleet.
    #[arg(long, default_value_t = 100_000)]
    devices: u64,
    /// Seed of the fleet's outcome mix.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Folder for the fleet, the report and the other outputs.
    #[arg(long, default_value = "fleetwake-demo")]
    out: PathBuf,
    /// Use HTTP/1.1 instead of HTTP/2.
    #[arg(long)]
    http1: bool,
    /// Rate limit per tenant (requests/s) for the demo's two tenants.
    #[arg(long, default_value_t = 40_000)]
    rate: u32,
    /// Progress display: auto, bar, log, none.
    #[arg(long, default_value = "auto", value_parser = ["auto", "bar", "log", "none"])]
    progress: String,
}

pub(crate) async fn run(a: Args) -> u8 {
    match run_inner(a).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            super::EXIT_INTERNAL
        }
    }
}

async fn run_inner(a: Args) -> Result<u8, String> {
    std::fs::create_dir_all(&a.out).map_err(|e| format!("creating {}: {e}", a.out.display()))?;
    let emu = EmulatorConfig {
        tls: TlsSource::Generate {
            out_dir: Some(a.out.clone()),
        },
        http: HttpVersions::Both,
        ..EmulatorConfig::default()
    }
    .start()
    .await
    .map_err(|e| e.to_string())?;
    let addr = emu.local_addr();
    println!(
        "WNS emulator on https://{addr} (test CA: {})",
        a.out.join("ca.pem").display()
    );

    let fleet = a.out.join("devices.csv");
    let expected = {
        let f = std::fs::File::create(&fleet).map_err(|e| format!("{}: {e}", fleet.display()))?;
        let mut w = std::io::BufWriter::new(f);
        let exp = demo::write_fleet(&mut w, a.devices, a.seed)
            .map_err(|e| format!("{}: {e}", fleet.display()))?;
        std::io::Write::flush(&mut w).map_err(|e| e.to_string())?;
        exp
    };
    println!(
        "Simulated fleet: {} devices in {}",
        a.devices,
        fleet.display()
    );

    let mut transport = TransportConfig {
        http: if a.http1 {
            HttpPolicy::Http1Only
        } else {
            HttpPolicy::Auto
        },
        resolve: vec![
            format!("*.notify.windows.com={addr}")
                .parse()
                .map_err(|e| format!("{e}"))?,
            format!("login.live.com={addr}")
                .parse()
                .map_err(|e| format!("{e}"))?,
            format!("login.microsoftonline.com={addr}")
                .parse()
                .map_err(|e| format!("{e}"))?,
        ],
        webpki_roots: false,
        ..TransportConfig::default()
    };
    transport
        .add_ca_pem(emu.ca_pem().unwrap_or_default())
        .map_err(|e| e.to_string())?;
    let rate = RateLimit::per_second(a.rate);
    // Demo-only credentials: the emulator accepts any secret that does not start with "invalid".
    let contoso = TenantConfig::new(
        "contoso",
        Credentials::PackageSid {
            package_sid: "ms-app://S-1-15-2-1234567890-1234567890-1234567890".into(),
            secret: Secret::new("demo"),
        },
    )
    .rate_limit(rate);
    let fabrikam = TenantConfig::new(
        "fabrikam",
        Credentials::EntraId {
            tenant_id: "fabrikam-tenant".into(),
            client_id: "fabrikam-mdm".into(),
            secret: Secret::new("demo"),
        },
    )
    .rate_limit(rate);
    let retry = RetryPolicy {
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(2),
        ..RetryPolicy::default()
    };
    let engine = Engine::builder()
        .transport(transport)
        .tenant(contoso)
        .tenant(fabrikam)
        .retry(retry)
        .build()
        .map_err(|e| e.to_string())?;

    let report = a.out.join("report.jsonl");
    let mut opts = CampaignOptions::new(&report);
    opts.restart = true;
    opts.fingerprint = "demo".into();
    let total = std::fs::metadata(&fleet).map(|m| m.len()).unwrap_or(0);
    opts.progress = super::campaign::progress_mode(&a.progress, total);
    let file = std::fs::File::open(&fleet).map_err(|e| e.to_string())?;
    let reader = DeviceReader::new(
        BufReader::with_capacity(256 * 1024, file),
        fleet.display().to_string(),
    );
    let outputs = super::campaign::Outputs {
        summary: None,
        html: Some(a.out.join("report.html")),
    };
    let stop = super::signals::stop_on_signals();
    let code = super::campaign::run_and_report(&engine, reader, opts, stop, &outputs).await;
    engine.shutdown(Duration::from_secs(10)).await;
    let stats = emu.stats();
    emu.shutdown().await;
    println!(
        "\nEmulator saw {} pushes, {} token requests, at most {:?} pushes/s per app.",
        stats.pushes_total,
        stats.token_requests.legacy + stats.token_requests.entra,
        stats.max_rate_per_app.values().max().copied().unwrap_or(0)
    );
    if code == super::EXIT_INTERRUPTED {
        return Ok(code);
    }
    let summary_path = a.out.join("report.jsonl.summary.json");
    let text =
        std::fs::read(&summary_path).map_err(|e| format!("{}: {e}", summary_path.display()))?;
    let summary: crate::campaign::summary::Summary =
        serde_json::from_slice(&text).map_err(|e| e.to_string())?;
    let mut ok = summary.devices == a.devices;
    for (k, n) in &expected {
        let got = summary.by_outcome.get(*k).copied().unwrap_or(0);
        if got != *n {
            ok = false;
            println!("Demo check: outcome {k}: expected {n}, report has {got}");
        }
    }
    if ok {
        println!(
            "Demo check: OK. The report matches the fleet the emulator simulated ({} devices).",
            a.devices
        );
        Ok(super::EXIT_OK)
    } else {
        println!("Demo check: FAILED (see above).");
        Ok(super::EXIT_FAILURES)
    }
}
