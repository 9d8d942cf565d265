//! `fleetwake mdm`: print DMClient SyncML (`push-config`, `poll-config`) and
//! read a device's reply (`parse FILE`). Also the bounded file reader the
//! `channels` command shares.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::mdm::parse::{parse_device_reply, ChannelReport, MAX_INPUT_BYTES};
use crate::mdm::syncml::{
    sync_message, CspRoot, Pfn, PollConfig, ProviderId, SetOp, SyncHeader, SyncMlBuilder,
};

const EXAMPLES: &str = "\
Examples:
  # Set the PFN and read ChannelURI and Status (body commands, CmdID from 1)
  fleetwake mdm push-config --provider-id 'MS DM Server' --pfn Contoso.MdmPush_8wekyb3d8bbwe

  # Only read ChannelURI and Status, as every session should
  fleetwake mdm push-config --provider-id 'MS DM Server'

  # A daily long-running poll, as a whole SyncML message
  fleetwake mdm poll-config --provider-id 'MS DM Server' --remaining-interval 1440 \\
      --message --session-id 1F --target DEVICE-ID --source https://mdm.contoso.com/omadm

  # Read a device's reply
  fleetwake mdm parse reply.xml --json";

/// Arguments of `fleetwake mdm`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    #[command(subcommand)]
    command: MdmCommand,
}

#[derive(Debug, clap::Subcommand)]
enum MdmCommand {
    /// Print SyncML that sets Push/PFN (with --pfn) and reads Push/ChannelURI and Push/Status.
    #[command(after_help = PUSH_EXAMPLES)]
    PushConfig(PushConfigArgs),
    /// Print SyncML that sets the DMClient Poll schedule (refuses what the CSP warns against).
    #[command(after_help = POLL_EXAMPLES)]
    PollConfig(PollConfigArgs),
    /// Read a device's Results/Status reply: ChannelURI, Push/Status, PFN, Poll nodes, statuses.
    #[command(after_help = PARSE_EXAMPLES)]
    Parse(ParseArgs),
}

const PUSH_EXAMPLES: &str = "\
Examples:
  fleetwake mdm push-config --provider-id 'MS DM Server' --pfn Contoso.MdmPush_8wekyb3d8bbwe
  fleetwake mdm push-config --provider-id contoso --pfn Contoso.MdmPush_8wekyb3d8bbwe --op add --root device
  fleetwake mdm push-config --provider-id contoso --first-cmd-id 5";

const POLL_EXAMPLES: &str = "\
Examples:
  # 15 minutes x 8, then 4 hours x 6, then daily forever, and a session at every login
  fleetwake mdm poll-config --provider-id 'MS DM Server' --first-interval 15 --first-retries 8 \\
      --second-interval 240 --second-retries 6 --remaining-interval 1440 --remaining-retries 0 \\
      --poll-on-login true

Refused: --first-retries 0 with a non-zero first interval (an infinite first set), and
--remaining-interval 1..1439 (the long-running poll must be at least 1440 minutes).
The flags map to the CSP nodes IntervalForFirstSetOfRetries, NumberOfFirstRetries,
IntervalForSecondSetOfRetries, NumberOfSecondRetries, IntervalForRemainingScheduledRetries,
NumberOfRemainingScheduledRetries, PollOnLogin and AllUsersPollOnFirstLogin.";

const PARSE_EXAMPLES: &str = "\
Examples:
  fleetwake mdm parse reply.xml
  fleetwake mdm parse reply.xml --json
  cat reply.xml | fleetwake mdm parse -

Input over 1 MiB, nested deeper than 64, with more than 50,000 elements, with a DOCTYPE
or with undefined entities is refused with the line and column.";

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum RootArg {
    /// ./Vendor/MSFT/DMClient/Provider/...
    Vendor,
    /// ./Device/Vendor/MSFT/DMClient/Provider/...
    Device,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum OpArg {
    /// <Add>
    Add,
    /// <Replace>
    Replace,
}

#[derive(Debug, clap::Args)]
struct Common {
    /// DMClient provider ID (the {ProviderID} node), e.g. "MS DM Server".
    #[arg(long, value_name = "ID")]
    provider_id: String,
    /// Node path form.
    #[arg(long, value_enum, default_value_t = RootArg::Vendor)]
    root: RootArg,
    /// Command used to set nodes.
    #[arg(long, value_enum, default_value_t = OpArg::Replace)]
    op: OpArg,
    /// CmdID of the first command.
    #[arg(long, default_value_t = 1, value_name = "N")]
    first_cmd_id: u32,
    /// Wrap the commands in a whole <SyncML> message.
    #[arg(long, requires_all = ["session_id", "target", "source"])]
    message: bool,
    /// SyncHdr SessionID (with --message).
    #[arg(long, value_name = "ID")]
    session_id: Option<String>,
    /// SyncHdr MsgID (with --message).
    #[arg(long, default_value_t = 1, value_name = "N")]
    msg_id: u32,
    /// SyncHdr Target/LocURI: the device ID (with --message).
    #[arg(long, value_name = "DEVICE")]
    target: Option<String>,
    /// SyncHdr Source/LocURI: the server URL (with --message).
    #[arg(long, value_name = "URL")]
    source: Option<String>,
}

#[derive(Debug, clap::Args)]
struct PushConfigArgs {
    #[command(flatten)]
    common: Common,
    /// Set Push/PFN to this Package Family Name first.
    #[arg(long, value_name = "PFN")]
    pfn: Option<String>,
    /// Only set the PFN; do not read ChannelURI and Status.
    #[arg(long, requires = "pfn")]
    set_only: bool,
}

#[derive(Debug, clap::Args)]
struct PollConfigArgs {
    #[command(flatten)]
    common: Common,
    /// IntervalForFirstSetOfRetries, minutes.
    #[arg(long, value_name = "MIN")]
    first_interval: Option<u32>,
    /// NumberOfFirstRetries.
    #[arg(long, value_name = "N")]
    first_retries: Option<u32>,
    /// IntervalForSecondSetOfRetries, minutes.
    #[arg(long, value_name = "MIN")]
    second_interval: Option<u32>,
    /// NumberOfSecondRetries (0: forever).
    #[arg(long, value_name = "N")]
    second_retries: Option<u32>,
    /// IntervalForRemainingScheduledRetries, minutes (0 or at least 1440).
    #[arg(long, value_name = "MIN")]
    remaining_interval: Option<u32>,
    /// NumberOfRemainingScheduledRetries (0: forever).
    #[arg(long, value_name = "N")]
    remaining_retries: Option<u32>,
    /// PollOnLogin.
    #[arg(long, value_name = "BOOL")]
    poll_on_login: Option<bool>,
    /// AllUsersPollOnFirstLogin.
    #[arg(long, value_name = "BOOL")]
    all_users_poll_on_first_login: Option<bool>,
}

#[derive(Debug, clap::Args)]
struct ParseArgs {
    /// The reply file ('-' for standard input).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: Args) -> u8 {
    let result = match args.command {
        MdmCommand::PushConfig(a) => push_config(a),
        MdmCommand::PollConfig(a) => poll_config(a),
        MdmCommand::Parse(a) => parse(a),
    };
    match result {
        Ok(()) => super::EXIT_OK,
        Err((code, msg)) => {
            eprintln!("error: {msg}");
            code
        }
    }
}

type CliResult = Result<(), (u8, String)>;

fn usage(e: impl std::fmt::Display) -> (u8, String) {
    (super::EXIT_CONFIG, e.to_string())
}

fn builder(c: &Common) -> Result<SyncMlBuilder, (u8, String)> {
    let provider = ProviderId::new(&c.provider_id).map_err(usage)?;
    let root = match c.root {
        RootArg::Vendor => CspRoot::Vendor,
        RootArg::Device => CspRoot::Device,
    };
    Ok(SyncMlBuilder::new(provider)
        .with_root(root)
        .with_first_cmd_id(c.first_cmd_id))
}

fn op(c: &Common) -> SetOp {
    match c.op {
        OpArg::Add => SetOp::Add,
        OpArg::Replace => SetOp::Replace,
    }
}

fn emit(c: &Common, body: String) -> CliResult {
    let out = if c.message {
        let header = SyncHeader {
            session_id: c.session_id.clone().unwrap_or_default(),
            msg_id: c.msg_id,
            target: c.target.clone().unwrap_or_default(),
            source: c.source.clone().unwrap_or_default(),
        };
        sync_message(&header, &body).map_err(usage)?
    } else {
        body
    };
    print!("{out}");
    Ok(())
}

fn push_config(a: PushConfigArgs) -> CliResult {
    let mut b = builder(&a.common)?;
    let pfn = a.pfn.as_deref().map(Pfn::new).transpose().map_err(usage)?;
    let mut body = String::new();
    if let Some(pfn) = &pfn {
        body.push_str(&b.set_pfn(op(&a.common), pfn));
    }
    if !a.set_only {
        body.push_str(&b.get_channel_uri());
        body.push_str(&b.get_push_status());
    }
    emit(&a.common, body)
}

fn poll_config(a: PollConfigArgs) -> CliResult {
    let mut b = builder(&a.common)?;
    let cfg = PollConfig {
        interval_for_first_set_of_retries: a.first_interval,
        number_of_first_retries: a.first_retries,
        interval_for_second_set_of_retries: a.second_interval,
        number_of_second_retries: a.second_retries,
        interval_for_remaining_scheduled_retries: a.remaining_interval,
        number_of_remaining_scheduled_retries: a.remaining_retries,
        poll_on_login: a.poll_on_login,
        all_users_poll_on_first_login: a.all_users_poll_on_first_login,
    };
    let body = b.poll_schedule(op(&a.common), &cfg).map_err(usage)?;
    emit(&a.common, body)
}

/// Reads an XML input file (or standard input for `-`) of at most 1 MiB as
/// UTF-8. Errors name the file; a missing or unreadable file is an input error
/// (exit 2), a failure while reading an I/O error (exit 4).
pub(crate) fn read_xml_file(path: &Path) -> Result<String, (u8, String)> {
    let name = input_name(path);
    let limit = MAX_INPUT_BYTES as u64;
    let mut bytes = Vec::new();
    let read = if path.as_os_str() == "-" {
        std::io::stdin().take(limit + 1).read_to_end(&mut bytes)
    } else {
        let file = std::fs::File::open(path).map_err(|e| {
            let code = match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                    super::EXIT_CONFIG
                }
                _ => super::EXIT_INTERNAL,
            };
            (code, format!("{name}: cannot open: {e}"))
        })?;
        if file.metadata().is_ok_and(|m| m.is_dir()) {
            return Err((super::EXIT_CONFIG, format!("{name}: is a directory")));
        }
        file.take(limit + 1).read_to_end(&mut bytes)
    };
    read.map_err(|e| (super::EXIT_INTERNAL, format!("{name}: cannot read: {e}")))?;
    if bytes.len() as u64 > limit {
        return Err((
            super::EXIT_CONFIG,
            format!("{name}: the input is over the {MAX_INPUT_BYTES}-byte limit"),
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        let start = valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let column = String::from_utf8_lossy(&valid[start..]).chars().count() + 1;
        (
            super::EXIT_CONFIG,
            format!("{name}: line {line}, column {column}: the input is not UTF-8"),
        )
    })
}

/// How an input path is named in messages (`standard input` for `-`).
fn input_name(path: &Path) -> String {
    if path.as_os_str() == "-" {
        "standard input".to_string()
    } else {
        path.display().to_string()
    }
}

/// Reads and parses a reply file; errors carry the file name, line and column.
pub(crate) fn read_reply(path: &Path) -> Result<ChannelReport, (u8, String)> {
    let xml = read_xml_file(path)?;
    parse_device_reply(&xml).map_err(|e| (super::EXIT_CONFIG, format!("{}: {e}", input_name(path))))
}

fn parse(a: ParseArgs) -> CliResult {
    let r = read_reply(&a.file)?;
    if a.json {
        let push_status = r.push_status.map(|s| {
            serde_json::json!({
                "code": s.code(),
                "name": s,
                "readings": s.readings(),
            })
        });
        let v = serde_json::json!({
            "provider_id": r.provider_id,
            "channel_uri": r.channel_uri,
            "push_status": push_status,
            "pfn": r.pfn,
            "poll": r.poll,
            "statuses": r.statuses.iter().map(|s| serde_json::json!({
                "msg_ref": s.msg_ref,
                "cmd_ref": s.cmd_ref,
                "cmd": s.cmd,
                "code": s.code,
                "meaning": s.meaning(),
            })).collect::<Vec<_>>(),
        });
        match serde_json::to_string_pretty(&v) {
            Ok(s) => println!("{s}"),
            Err(e) => return Err((super::EXIT_INTERNAL, format!("cannot write JSON: {e}"))),
        }
        return Ok(());
    }
    let none = "(not in the reply)";
    println!("provider:     {}", r.provider_id.as_deref().unwrap_or(none));
    println!("ChannelURI:   {}", r.channel_uri.as_deref().unwrap_or(none));
    match r.push_status {
        Some(s) => println!("Push/Status:  {s}"),
        None => println!("Push/Status:  {none}"),
    }
    println!("PFN:          {}", r.pfn.as_deref().unwrap_or(none));
    let poll: Vec<String> = r
        .poll
        .values()
        .into_iter()
        .map(|(n, v)| match v {
            crate::mdm::syncml::PollValue::Int(i) => format!("{}={i}", n.name()),
            crate::mdm::syncml::PollValue::Bool(b) => format!("{}={b}", n.name()),
        })
        .collect();
    if !poll.is_empty() {
        println!("Poll:         {}", poll.join(", "));
    }
    println!("statuses:");
    for s in &r.statuses {
        println!(
            "  CmdRef {:>3}  {:<8} {} {}",
            s.cmd_ref,
            s.cmd,
            s.code,
            s.meaning()
        );
    }
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
        let mut full = vec!["mdm"];
        full.extend_from_slice(argv);
        run(TestCli::try_parse_from(full).unwrap().args)
    }

    #[test]
    fn exit_codes() {
        let ok = [
            "push-config",
            "--provider-id",
            "MS DM Server",
            "--pfn",
            "Contoso.Mdm_8wekyb3d8bbwe",
        ];
        assert_eq!(run_args(&ok), 0);
        assert_eq!(run_args(&["push-config", "--provider-id", "a/b"]), 2);
        assert_eq!(
            run_args(&["push-config", "--provider-id", "a", "--pfn", "x"]),
            2
        );
        assert_eq!(
            run_args(&["poll-config", "--provider-id", "a", "--first-retries", "0"]),
            2
        );
        assert_eq!(
            run_args(&[
                "poll-config",
                "--provider-id",
                "a",
                "--remaining-interval",
                "1439"
            ]),
            2
        );
        assert_eq!(
            run_args(&[
                "poll-config",
                "--provider-id",
                "a",
                "--remaining-interval",
                "1440"
            ]),
            0
        );
        assert_eq!(
            run_args(&[
                "poll-config",
                "--provider-id",
                "a",
                "--poll-on-login",
                "true",
                "--message",
                "--session-id",
                "1",
                "--target",
                "dev",
                "--source",
                "https://mdm"
            ]),
            0
        );
        assert!(
            TestCli::try_parse_from(["mdm", "push-config", "--provider-id", "a", "--message"])
                .is_err()
        );
        assert!(TestCli::try_parse_from([
            "mdm",
            "poll-config",
            "--provider-id",
            "a",
            "--poll-on-login",
            "maybe"
        ])
        .is_err());
        let dir = TempDir::new("mdmcli");
        let f = dir.join("r.xml");
        std::fs::write(&f, "<SyncML><SyncBody/></SyncML>").unwrap();
        assert_eq!(run_args(&["parse", f.to_str().unwrap()]), 0);
        assert_eq!(run_args(&["parse", f.to_str().unwrap(), "--json"]), 0);
        std::fs::write(&f, "<SyncML>").unwrap();
        assert_eq!(run_args(&["parse", f.to_str().unwrap()]), 2);
        assert_eq!(
            run_args(&["parse", dir.join("none.xml").to_str().unwrap()]),
            2
        );
    }

    #[test]
    fn reader_limits_and_utf8_position() {
        let dir = TempDir::new("reader");
        let f = dir.join("latin1.xml");
        std::fs::write(&f, b"<SyncML>\n  <a>\xe9</a></SyncML>").unwrap();
        let (code, msg) = read_xml_file(&f).unwrap_err();
        assert_eq!(code, 2);
        assert!(
            msg.ends_with("line 2, column 6: the input is not UTF-8"),
            "{msg}"
        );
        let big = dir.join("big.xml");
        std::fs::write(&big, vec![b' '; MAX_INPUT_BYTES + 1]).unwrap();
        assert!(read_xml_file(&big).unwrap_err().1.contains("limit"));
        std::fs::write(&big, vec![b' '; MAX_INPUT_BYTES]).unwrap();
        assert!(read_xml_file(&big).is_ok());
        let e = read_reply(&f.with_file_name("nope.xml")).unwrap_err();
        assert!(e.1.contains("nope.xml: cannot open"), "{}", e.1);
    }
}
