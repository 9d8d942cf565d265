//! `fleetwake channels`: the channel store on the command line. `import` reads
//! campaign reports (JSONL) or a device's SyncML reply into the store in one
//! transaction; `list` prints the records, or with `--due` what the MDM server
//! should do at each device's next session.

use std::io::{BufRead, Read};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::mdm::policy::{short_duration, unix_secs, DueCategory, Policy};
use crate::mdm::store::{validate_device_id, ChannelStore, StoreError, Update, DEFAULT_STORE_PATH};
use crate::wns::outcome::OutcomeKind;

const EXAMPLES: &str = "\
Examples:
  # Record a campaign's outcomes (410s mark the PFN for a reset)
  fleetwake channels import --report campaign-report.jsonl

  # Record a session reply: the ChannelURI read replaces the old one and clears the flags
  fleetwake channels import --syncml reply.xml --device-id d1 --at 2026-11-28T05:00:00Z

  # What to do at the next sync, and which devices are overdue
  fleetwake channels list --due
  fleetwake channels list --due --early-margin 7d --json --store /var/lib/fleetwake/channels.redb";

/// Arguments of `fleetwake channels`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    #[command(subcommand)]
    command: ChannelsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ChannelsCommand {
    /// Import campaign report rows (--report) or a device's SyncML reply (--syncml).
    #[command(after_help = IMPORT_EXAMPLES)]
    Import(ImportArgs),
    /// List the stored channels, or (--due) what is due for each device.
    #[command(after_help = LIST_EXAMPLES)]
    List(ListArgs),
}

const IMPORT_EXAMPLES: &str = "\
Examples:
  fleetwake channels import --report campaign-report.jsonl
  fleetwake channels import --syncml reply.xml --device-id d1 --at 2026-11-28T05:00:00Z

Report rows are JSON objects, one per line, with at least device_id, outcome (an
outcome name such as channel_expired) and at (RFC 3339, UTC); channel_uri names the
pushed channel. Other fields are ignored. The import is one transaction: any bad
line fails it whole, with the file, line and column.";

const LIST_EXAMPLES: &str = "\
Examples:
  fleetwake channels list
  fleetwake channels list --due --now 2026-12-01T00:00:00Z
  fleetwake channels list --due --json

Categories: reset_pfn_dead (410 or older than 30 days: not pushed), early_pfn_reset,
invalid_channel (404), pfn_mismatch (403), push_blocked, no_channel, push_error,
poll_overdue (no session for --overdue-factor poll intervals).";

#[derive(Debug, clap::Args)]
struct StoreArg {
    /// The channel store file (created when missing).
    #[arg(long, value_name = "FILE", default_value = DEFAULT_STORE_PATH)]
    store: PathBuf,
}

#[derive(Debug, clap::Args)]
struct ImportArgs {
    #[command(flatten)]
    store: StoreArg,
    /// A campaign report (JSONL, one row per device).
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "syncml",
        required_unless_present = "syncml"
    )]
    report: Option<PathBuf>,
    /// A device's SyncML reply.
    #[arg(long, value_name = "FILE", requires = "device_id")]
    syncml: Option<PathBuf>,
    /// The device the SyncML reply came from.
    #[arg(long, value_name = "ID", requires = "syncml")]
    device_id: Option<String>,
    /// When the session happened (RFC 3339, UTC; default: now).
    #[arg(long, value_name = "TIME", requires = "syncml", value_parser = parse_time)]
    at: Option<SystemTime>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct ListArgs {
    #[command(flatten)]
    store: StoreArg,
    /// List what is due instead of the records.
    #[arg(long)]
    due: bool,
    /// Only these categories (with --due; repeatable).
    #[arg(long, value_name = "CATEGORY", requires = "due", value_parser = parse_category)]
    category: Vec<DueCategory>,
    /// Evaluate at this time (RFC 3339, UTC; default: now).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    now: Option<SystemTime>,
    /// Set the PFN again this long before a channel reaches 30 days.
    #[arg(long, value_name = "DURATION", default_value = "5d", value_parser = parse_duration)]
    early_margin: Duration,
    /// Poll interval assumed when a device's is unknown.
    #[arg(long, value_name = "DURATION", default_value = "1d", value_parser = parse_duration)]
    poll_interval: Duration,
    /// Overdue after this many poll intervals without a session.
    #[arg(long, value_name = "N", default_value_t = 3)]
    overdue_factor: u32,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn parse_time(s: &str) -> Result<SystemTime, String> {
    humantime::parse_rfc3339_weak(s)
        .map_err(|e| format!("{e} (expected RFC 3339 in UTC, e.g. 2026-11-28T05:00:00Z)"))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (e.g. 5d, 36h, 90m)"))
}

fn parse_category(s: &str) -> Result<DueCategory, String> {
    ALL_CATEGORIES
        .into_iter()
        .find(|c| c.as_str() == s)
        .ok_or_else(|| {
            let names: Vec<_> = ALL_CATEGORIES.iter().map(|c| c.as_str()).collect();
            format!("unknown category {s:?}; one of {}", names.join(", "))
        })
}

const ALL_CATEGORIES: [DueCategory; 8] = [
    DueCategory::ResetPfnDead,
    DueCategory::EarlyPfnReset,
    DueCategory::InvalidChannel,
    DueCategory::PfnMismatch,
    DueCategory::PushBlocked,
    DueCategory::NoChannel,
    DueCategory::PushError,
    DueCategory::PollOverdue,
];

type CliResult = Result<(), (u8, String)>;

fn store_error(e: StoreError) -> (u8, String) {
    let code = if e.is_input_error() {
        super::EXIT_CONFIG
    } else {
        super::EXIT_INTERNAL
    };
    (code, e.to_string())
}

pub(crate) fn run(args: Args) -> u8 {
    let result = match args.command {
        ChannelsCommand::Import(a) => import(a),
        ChannelsCommand::List(a) => list(a),
    };
    match result {
        Ok(()) => super::EXIT_OK,
        Err((code, msg)) => {
            eprintln!("error: {msg}");
            code
        }
    }
}

/// One campaign report row (extra fields are ignored).
#[derive(Debug, serde::Deserialize)]
struct ReportRow {
    device_id: String,
    #[serde(default)]
    channel_uri: Option<String>,
    outcome: String,
    #[serde(default)]
    at: Option<String>,
}

/// Longest report line accepted.
const MAX_LINE: usize = 64 * 1024;

/// Reads a JSONL campaign report into updates; errors say file:line:column.
fn read_report(path: &std::path::Path) -> Result<Vec<Update>, (u8, String)> {
    let name = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| {
        let code = match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                super::EXIT_CONFIG
            }
            _ => super::EXIT_INTERNAL,
        };
        (code, format!("{name}: cannot open: {e}"))
    })?;
    let mut reader = std::io::BufReader::new(file);
    let mut updates = Vec::new();
    let mut buf = Vec::new();
    let mut line_no = 0usize;
    loop {
        buf.clear();
        line_no += 1;
        let n = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|e| (super::EXIT_INTERNAL, format!("{name}: cannot read: {e}")))?;
        if n == 0 {
            break;
        }
        let bad = |col: usize, msg: String| {
            (super::EXIT_CONFIG, format!("{name}:{line_no}:{col}: {msg}"))
        };
        if buf.len() > MAX_LINE {
            return Err(bad(1, format!("the line is longer than {MAX_LINE} bytes")));
        }
        let text = std::str::from_utf8(&buf)
            .map_err(|e| bad(e.valid_up_to() + 1, "the line is not UTF-8".into()))?;
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let row: ReportRow = serde_json::from_str(text).map_err(|e| {
            let msg = e.to_string();
            let msg = msg
                .rsplit_once(" at line ")
                .map_or(msg.as_str(), |(m, _)| m);
            bad(e.column(), msg.to_string())
        })?;
        let col_of = |key: &str| text.find(&format!("\"{key}\"")).map_or(1, |i| i + 1);
        validate_device_id(&row.device_id).map_err(|e| bad(col_of("device_id"), e.to_string()))?;
        let kind = OutcomeKind::ALL
            .into_iter()
            .find(|k| k.as_str() == row.outcome)
            .ok_or_else(|| {
                bad(
                    col_of("outcome"),
                    format!("unknown outcome {:?} (expected a name such as received or channel_expired)", row.outcome),
                )
            })?;
        let at = row
            .at
            .as_deref()
            .ok_or_else(|| bad(1, "the row has no \"at\" time".into()))
            .and_then(|s| parse_time(s).map_err(|e| bad(col_of("at"), format!("\"at\": {e}"))))?;
        updates.push(Update::Outcome {
            device_id: row.device_id,
            channel_uri: row.channel_uri.filter(|u| !u.is_empty()),
            kind,
            at,
        });
    }
    Ok(updates)
}

fn import(a: ImportArgs) -> CliResult {
    let (updates, source) = if let Some(path) = &a.report {
        (read_report(path)?, path.display().to_string())
    } else if let (Some(path), Some(device_id)) = (&a.syncml, &a.device_id) {
        validate_device_id(device_id).map_err(store_error)?;
        let report = super::mdm::read_reply(path)?;
        let at = a.at.unwrap_or_else(SystemTime::now);
        (
            vec![Update::Session {
                device_id: device_id.clone(),
                report,
                at,
            }],
            path.display().to_string(),
        )
    } else {
        return Err((
            super::EXIT_CONFIG,
            "give --report FILE, or --syncml FILE with --device-id ID".into(),
        ));
    };
    let rows = updates.len();
    let store = ChannelStore::open(&a.store.store).map_err(store_error)?;
    let sum = store.apply(updates).map_err(store_error)?;
    if a.json {
        let v = serde_json::json!({ "source": source, "store": a.store.store, "rows": rows, "summary": sum });
        println!("{v}");
    } else {
        println!(
            "imported {rows} row(s) from {source} into {}: {} device(s) created, {} new channel(s), {} same channel(s), {} outcome(s) recorded ({} adopted a channel), {} ignored for another channel, {} stale, {} refused channel URI(s)",
            a.store.store.display(),
            sum.created,
            sum.new_channels,
            sum.same_channels,
            sum.outcomes_applied,
            sum.channels_adopted,
            sum.outcomes_other_channel,
            sum.stale,
            sum.refused_channels,
        );
    }
    Ok(())
}

fn time_text(secs: Option<u64>) -> String {
    secs.map_or_else(
        || "-".to_string(),
        |s| humantime::format_rfc3339_seconds(crate::mdm::policy::from_unix_secs(s)).to_string(),
    )
}

fn list(a: ListArgs) -> CliResult {
    let policy = Policy {
        early_reset_margin: a.early_margin,
        default_poll_interval: a.poll_interval,
        poll_overdue_factor: a.overdue_factor,
        ..Policy::default()
    };
    policy
        .validate()
        .map_err(|e| (super::EXIT_CONFIG, e.to_string()))?;
    if !a.store.store.exists() {
        return Err((
            super::EXIT_CONFIG,
            format!(
                "{}: no channel store here (import into it first)",
                a.store.store.display()
            ),
        ));
    }
    let store = ChannelStore::open(&a.store.store).map_err(store_error)?;
    let now = a.now.unwrap_or_else(SystemTime::now);
    if a.due {
        let mut due = store.due(&policy, now).map_err(store_error)?;
        if !a.category.is_empty() {
            due.retain(|e| a.category.contains(&e.category));
        }
        if a.json {
            let rows: Vec<_> = due
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "device_id": e.device_id,
                        "category": e.category,
                        "action": e.category.action(),
                        "detail": e.detail,
                        "channel_uri": e.channel_uri,
                        "channel_age_secs": e.channel_age_secs,
                    })
                })
                .collect();
            println!("{}", serde_json::Value::Array(rows));
            return Ok(());
        }
        println!(
            "{:<24} {:<16} {:<9} detail / action",
            "device", "category", "age"
        );
        for e in &due {
            println!(
                "{:<24} {:<16} {:<9} {}\n{:<51} -> {}",
                e.device_id,
                e.category.as_str(),
                e.channel_age_secs
                    .map_or_else(|| "-".into(), short_duration),
                e.detail,
                "",
                e.category.action()
            );
        }
        println!(
            "{} item(s) due at {}",
            due.len(),
            time_text(Some(unix_secs(now)))
        );
        return Ok(());
    }
    let records: Vec<_> = store
        .iter()
        .map_err(store_error)?
        .collect::<Result<_, _>>()
        .map_err(store_error)?;
    if a.json {
        match serde_json::to_string(&records) {
            Ok(s) => println!("{s}"),
            Err(e) => return Err((super::EXIT_INTERNAL, format!("cannot write JSON: {e}"))),
        }
        return Ok(());
    }
    println!(
        "{:<24} {:<9} {:<20} {:<18} {:<5} {:<6} channel",
        "device", "age", "last session", "last outcome", "reset", "status"
    );
    for r in &records {
        println!(
            "{:<24} {:<9} {:<20} {:<18} {:<5} {:<6} {}",
            r.device_id,
            r.channel_age(now)
                .map_or_else(|| "-".into(), |d| short_duration(d.as_secs())),
            time_text(r.last_session_at),
            r.last_outcome.map_or("-", |k| k.as_str()),
            if r.pfn_reset_needed { "yes" } else { "no" },
            r.push_status
                .map_or_else(|| "-".into(), |s| s.code().to_string()),
            r.channel_uri.as_deref().unwrap_or("-"),
        );
    }
    println!("{} device(s)", records.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mdm::test_support::TempDir;
    use clap::Parser;

    #[derive(Parser)]
    struct TestCli {
        #[command(flatten)]
        args: Args,
    }

    fn run_args(argv: &[&str]) -> u8 {
        let mut full = vec!["channels"];
        full.extend_from_slice(argv);
        run(TestCli::try_parse_from(full).unwrap().args)
    }

    const ROW_410: &str = r#"{"device_id":"d1","channel_uri":"https://db5p.notify.windows.com/?token=D1","tenant":"contoso","outcome":"channel_expired","status":410,"action":"reset_pfn_at_next_sync","attempts":1,"msg_id":"m","debug_trace":"t","latency_ms":12.5,"at":"2026-11-28T05:00:00Z"}"#;
    const ROW_INVALID: &str = r#"{"device_id":"d2","channel_uri":"https://evil.test/x","outcome":"invalid_channel","attempts":0,"at":"2026-11-28T05:00:01Z","extra":{"a":[1]}}"#;

    #[test]
    fn report_rows_are_read_and_bad_ones_located() {
        let dir = TempDir::new("report");
        let good = dir.join("good.jsonl");
        std::fs::write(&good, format!("{ROW_410}\n\n{ROW_INVALID}\n")).unwrap();
        let ups = read_report(&good).unwrap();
        assert_eq!(ups.len(), 2);
        match &ups[0] {
            Update::Outcome {
                device_id,
                kind,
                channel_uri,
                ..
            } => {
                assert_eq!(device_id, "d1");
                assert_eq!(*kind, OutcomeKind::ChannelExpired);
                assert!(channel_uri.as_deref().unwrap().ends_with("D1"));
            }
            other => panic!("{other:?}"),
        }
        for (line2, want) in [
            (
                r#"{"device_id":"d","outcome":"nope","at":"2026-11-28T05:00:00Z"}"#,
                ":2:18: unknown outcome",
            ),
            (
                r#"{"device_id":"d","outcome":"received"}"#,
                ":2:1: the row has no",
            ),
            (
                r#"{"device_id":"d","outcome":"received","at":"soon"}"#,
                ":2:39: \"at\"",
            ),
            (
                r#"{"device_id":"","outcome":"received","at":"2026-11-28T05:00:00Z"}"#,
                ":2:2: invalid device ID",
            ),
            (r#"{"device_id":"d","outcome":5}"#, ":2:28: invalid type"),
            ("not json", ":2:2: expected"),
        ] {
            let bad = dir.join("bad.jsonl");
            std::fs::write(&bad, format!("{ROW_410}\n{line2}\n")).unwrap();
            let (code, msg) = read_report(&bad).unwrap_err();
            assert_eq!(code, crate::cli::EXIT_CONFIG);
            assert!(msg.contains(want), "{line2}: {msg}");
            assert!(msg.starts_with(&bad.display().to_string()), "{msg}");
        }
        let (code, _) = read_report(&dir.join("missing.jsonl")).unwrap_err();
        assert_eq!(code, crate::cli::EXIT_CONFIG);
    }

    #[test]
    fn import_then_list_due() {
        let dir = TempDir::new("cli");
        let store = dir.join("s.redb");
        let store = store.to_str().unwrap();
        let report = dir.join("r.jsonl");
        std::fs::write(&report, format!("{ROW_410}\n{ROW_INVALID}\n")).unwrap();
        let report = report.to_str().unwrap();
        assert_eq!(
            run_args(&["list", "--store", store]),
            crate::cli::EXIT_CONFIG
        );
        assert_eq!(
            run_args(&["import", "--report", report, "--store", store]),
            0
        );
        let reply = dir.join("reply.xml");
        std::fs::write(
            &reply,
            r#"<SyncML><SyncBody><Results><CmdRef>2</CmdRef><Item><Source><LocURI>./Vendor/MSFT/DMClient/Provider/p/Push/ChannelURI</LocURI></Source><Data>https://db5p.notify.windows.com/?token=NEW</Data></Item></Results></SyncBody></SyncML>"#,
        )
        .unwrap();
        let reply = reply.to_str().unwrap();
        assert_eq!(
            run_args(&[
                "import",
                "--syncml",
                reply,
                "--device-id",
                "d1",
                "--at",
                "2026-11-29T00:00:00Z",
                "--store",
                store
            ]),
            0
        );
        let s = ChannelStore::open(store).unwrap();
        let d1 = s.get("d1").unwrap().unwrap();
        assert!(d1.channel_uri.unwrap().ends_with("NEW"));
        assert!(!d1.pfn_reset_needed);
        drop(s);
        assert_eq!(
            run_args(&[
                "list",
                "--due",
                "--store",
                store,
                "--now",
                "2026-11-30T00:00:00Z",
                "--json"
            ]),
            0
        );
        assert_eq!(run_args(&["list", "--store", store]), 0);
        // Bad inputs: exit 2, and the store is untouched by a failed import.
        let bad = dir.join("bad.xml");
        std::fs::write(&bad, "<SyncML><!DOCTYPE x></SyncML>").unwrap();
        let bad = bad.to_str().unwrap();
        assert_eq!(
            run_args(&[
                "import",
                "--syncml",
                bad,
                "--device-id",
                "d1",
                "--store",
                store
            ]),
            crate::cli::EXIT_CONFIG
        );
        assert_eq!(
            run_args(&["list", "--due", "--store", store, "--early-margin", "40d"]),
            crate::cli::EXIT_CONFIG
        );
        assert_eq!(
            run_args(&["import", "--report", report, "--store", report]),
            crate::cli::EXIT_CONFIG
        );
        assert!(
            TestCli::try_parse_from(["channels", "list", "--due", "--category", "nope"]).is_err()
        );
        assert!(TestCli::try_parse_from(["channels", "import", "--syncml", "x.xml"]).is_err());
    }
}
