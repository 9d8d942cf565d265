//! `fleetwake emulate`: the WNS emulator as a standalone server, for pointing
//! your own MDM server (or `fleetwake` itself) at a local WNS.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::emulator::{EmulatorConfig, HttpVersions, TlsSource};

const EXAMPLES: &str = "\
Examples:
  # Generate a test CA in ./emu, serve on 127.0.0.1:8443
  fleetwake emulate --bind 127.0.0.1:8443 --ca-out ./emu

  # Then point a client at it (curl shown; fleetwake uses the same overrides):
  curl --cacert emu/ca.pem --resolve login.live.com:443:127.0.0.1 ...

  # Serve your own certificate, HTTP/1.1 only, with 60-second tokens
  fleetwake emulate --cert cert.pem --key key.pem --http1-only --token-lifetime 60

Channel tokens choose the behaviour: https://x.notify.windows.com/?token=gone.dev1 answers 410.
See docs/EMULATOR.md for the full grammar and the /_emulator/ admin endpoints.";

/// Arguments of `fleetwake emulate`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    bind: SocketAddr,
    /// Write the generated test CA (ca.pem) and leaf (cert.pem, key.pem) here.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["cert", "key"])]
    ca_out: Option<PathBuf>,
    /// Serve this certificate chain (PEM) instead of a generated one.
    #[arg(long, requires = "key", value_name = "FILE")]
    cert: Option<PathBuf>,
    /// Private key (PEM) for --cert.
    #[arg(long, requires = "cert", value_name = "FILE")]
    key: Option<PathBuf>,
    /// Offer only HTTP/1.1 in ALPN.
    #[arg(long, conflicts_with = "http2_only")]
    http1_only: bool,
    /// Offer only HTTP/2 in ALPN.
    #[arg(long)]
    http2_only: bool,
    /// Lifetime of issued access tokens, in seconds.
    #[arg(long, default_value_t = 86_400, value_name = "SECS")]
    token_lifetime: u64,
    /// Expire tokens at the push endpoint this many ms before the announced
    /// lifetime (a server clock that runs ahead; exercises stale-token 401s).
    #[arg(long, default_value_t = 0, value_name = "MS")]
    token_expires_early_ms: u64,
    /// HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS.
    #[arg(long, default_value_t = 100, value_name = "N")]
    h2_max_streams: u32,
}

pub(crate) async fn run(a: Args) -> u8 {
    let tls = match (a.cert, a.key) {
        (Some(cert_pem), Some(key_pem)) => TlsSource::Files { cert_pem, key_pem },
        _ => TlsSource::Generate {
            out_dir: a.ca_out.clone(),
        },
    };
    let http = if a.http1_only {
        HttpVersions::Http1Only
    } else if a.http2_only {
        HttpVersions::Http2Only
    } else {
        HttpVersions::Both
    };
    let cfg = EmulatorConfig {
        bind: a.bind,
        tls,
        http,
        token_lifetime: Duration::from_secs(a.token_lifetime),
        token_expires_early: Duration::from_millis(a.token_expires_early_ms),
        h2_max_concurrent_streams: a.h2_max_streams,
        ..EmulatorConfig::default()
    };
    let emu = match cfg.start().await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return super::EXIT_CONFIG;
        }
    };
    let addr = emu.local_addr();
    println!("WNS emulator listening on https://{addr}");
    if let Some(dir) = &a.ca_out {
        println!("test CA written to {}", dir.join("ca.pem").display());
    }
    println!("resolve overrides: *.notify.windows.com={addr} login.live.com={addr} login.microsoftonline.com={addr}");
    println!("stats: https://{addr}/_emulator/stats   (Ctrl-C stops)");
    wait_for_signal().await;
    println!("stopping");
    emu.shutdown().await;
    super::EXIT_OK
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
