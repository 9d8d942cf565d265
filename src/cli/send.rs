//! `fleetwake send`: one wake to one channel, with the full outcome and every
//! response header printed, for debugging a single device.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::Config;
use crate::engine::{Notification, RetryPolicy};
use crate::wns::ChannelUri;

const EXAMPLES: &str = "\
Examples:
  fleetwake send --config fleetwake.toml --tenant contoso 'https://db5p.notify.windows.com/?token=AwYAAAB...'
  fleetwake send --config fleetwake.toml --tenant contoso --no-retry --request-status URI

Exit code 0 when WNS answered `received`, 1 for any other outcome, 2 for a bad
channel URI, config or credentials.";

/// Arguments of `fleetwake send`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// The TOML config.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The tenant (a `[tenants.NAME]` key) whose credentials to use.
    #[arg(long)]
    tenant: String,
    /// Ask WNS for the device connection status.
    #[arg(long)]
    request_status: bool,
    /// Send once, without retries.
    #[arg(long)]
    no_retry: bool,
    /// Print the outcome as JSON.
    #[arg(long)]
    json: bool,
    /// The channel URI (as read from Push/ChannelURI).
    channel_uri: String,
}

pub(crate) async fn run(a: Args) -> u8 {
    let channel = match ChannelUri::parse(&a.channel_uri) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return super::EXIT_CONFIG;
        }
    };
    let cfg = match Config::load(&a.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return super::EXIT_CONFIG;
        }
    };
    if !cfg.tenant_names().any(|t| t == a.tenant) {
        eprintln!(
            "error: tenant {:?} is not in {} (it has: {})",
            a.tenant,
            a.config.display(),
            cfg.tenant_names().collect::<Vec<_>>().join(", ")
        );
        return super::EXIT_CONFIG;
    }
    let mut builder = match cfg.engine_builder() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return super::EXIT_CONFIG;
        }
    };
    if a.no_retry {
        builder = builder.retry(RetryPolicy::none());
    }
    // One push counts against the PFN's shared budget and honours its pause too.
    #[cfg(feature = "nats")]
    {
        let shared = match super::budget_settings(&cfg, &a.config) {
            Ok(b) => b
                .connect("send")
                .await
                .map_err(|e| format!("{}: {e}", a.config.display())),
            Err(e) => Err(e),
        };
        match shared {
            Ok(Some(shared)) => builder = builder.shared_budget(shared),
            Ok(None) => {}
            Err(e) => {
                eprintln!("error: {e}");
                return super::EXIT_CONFIG;
            }
        }
    }
    let engine = match builder.build() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return super::EXIT_CONFIG;
        }
    };
    let mut n = Notification::wake(a.tenant.as_str(), channel.clone());
    n.options = cfg.push_options();
    n.options.request_for_status |= a.request_status;
    n.capture_headers = true;
    let o = engine.submit(n).await;
    engine.shutdown(Duration::from_secs(5)).await;
    if a.json {
        let row = crate::campaign::report::ReportRow::new(
            crate::campaign::report::RowSubject {
                line: None,
                device_id: None,
                tenant: Some(&a.tenant),
                channel_uri: Some(channel.as_str()),
            },
            &o,
        );
        println!("{}", serde_json::to_string_pretty(&row).unwrap_or_default());
    } else {
        println!(
            "outcome:     {}{}",
            o.kind,
            if o.kind.is_retryable() {
                " (retryable)"
            } else {
                " (final)"
            }
        );
        println!(
            "http status: {}",
            o.status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into())
        );
        println!(
            "mdm action:  {} ({})",
            o.mdm_action(),
            o.mdm_action().describe()
        );
        println!("attempts:    {}", o.attempts);
        println!("latency:     {:.1} ms", o.latency.as_secs_f64() * 1000.0);
        if let Some(d) = &o.detail {
            println!("detail:      {d}");
        }
        if let Some(h) = &o.response_headers {
            println!("response headers:");
            for (k, v) in h.iter() {
                println!("  {}: {}", k, v.to_str().unwrap_or("<binary>"));
            }
        }
    }
    match o.kind {
        crate::wns::OutcomeKind::Received => super::EXIT_OK,
        crate::wns::OutcomeKind::CredentialRejected => super::EXIT_CONFIG,
        _ => super::EXIT_FAILURES,
    }
}
