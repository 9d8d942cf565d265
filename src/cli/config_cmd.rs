//! `fleetwake config check`: validate a config file and say exactly what is
//! wrong and where.

use std::path::PathBuf;

use crate::config::Config;

/// `fleetwake config ...`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Validate the file: syntax, fields, tenants, secrets (env vars and files
    /// must exist and be non-empty), CA files. Errors name FILE:LINE:COLUMN.
    #[command(after_help = "Example:\n  fleetwake config check --config fleetwake.toml")]
    Check {
        /// The TOML config.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

pub(crate) fn run(c: Command) -> u8 {
    match c {
        Command::Check { config } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return super::EXIT_CONFIG;
                }
            };
            let tenants = match cfg.tenants() {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: {e}");
                    return super::EXIT_CONFIG;
                }
            };
            let transport = match cfg.transport() {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: {e}");
                    return super::EXIT_CONFIG;
                }
            };
            if let Err(e) = check_service_sections(&cfg, &config) {
                eprintln!("error: {e}");
                return super::EXIT_CONFIG;
            }
            println!("{}: OK", config.display());
            for t in &tenants {
                let flow = match &t.credentials {
                    crate::wns::Credentials::PackageSid { .. } => "package SID (login.live.com)",
                    crate::wns::Credentials::EntraId { .. } => {
                        "Entra ID (login.microsoftonline.com)"
                    }
                };
                println!(
                    "  tenant {:<16} {:<38} {} req/s (burst {}), pfn {}",
                    t.name,
                    flow,
                    t.rate_limit.per_second,
                    t.rate_limit.burst,
                    t.pfn.as_deref().unwrap_or(&t.name)
                );
            }
            println!(
                "  transport: http {:?}, {} h2 / {} http1 connections per host, {} resolve overrides, {} extra CA certificates",
                transport.http,
                transport.h2_connections_per_host,
                transport.h1_connections_per_host,
                transport.resolve.len(),
                transport.extra_ca.len()
            );
            super::EXIT_OK
        }
    }
}

/// Checks `[consume]` and `[serve]` as `fleetwake consume` and `fleetwake serve`
/// would at start-up (when present), and builds the engine once, so that
/// everything they would refuse is refused here first. Contacts nothing.
fn check_service_sections(cfg: &Config, path: &std::path::Path) -> Result<(), String> {
    #[cfg(feature = "nats")]
    let instances = match cfg.file.consume {
        Some(_) => super::consume_settings(cfg, path)?.instances,
        None => 1,
    };
    #[cfg(not(feature = "nats"))]
    let instances = 1;
    if cfg.file.serve.is_some() {
        super::serve_settings(cfg, path)?;
    }
    // Building starts no connection; the engine is dropped at once.
    super::check_engine(cfg, path, instances).map(drop)
}
