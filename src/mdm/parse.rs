//! Reading SyncML: a hardened pull parser over quick-xml ([`parse_commands`])
//! and, on top of it, the typed reading of a device's `Results`/`Status` reply
//! ([`parse_device_reply`] into a [`ChannelReport`]), with the `Push/Status`
//! codes ([`PushStatus`]).
//!
//! Hostile input is refused, never expanded: input over [`MAX_INPUT_BYTES`],
//! nesting deeper than [`MAX_DEPTH`], more than [`MAX_ELEMENTS`] elements, any
//! DTD (`<!DOCTYPE`, and so any `<!ENTITY`), and any entity reference other than
//! the five predefined ones and character references. The work is linear in the
//! input, and every error carries the line and column where it was found.

use std::fmt;

use quick_xml::events::Event;
use quick_xml::Reader;

use super::syncml::{classify_node, DmNode, Format, PollConfig, PollValue};
use crate::wns::channel::{ChannelUri, ChannelUriError};

/// Largest accepted input, in bytes (1 MiB). Real replies are a few KiB.
pub const MAX_INPUT_BYTES: usize = 1 << 20;
/// Deepest accepted element nesting. SyncML replies nest about 6 deep.
pub const MAX_DEPTH: usize = 64;
/// Most elements accepted in one message.
pub const MAX_ELEMENTS: usize = 50_000;

/// A place in the input: 1-based line, and 1-based column counted in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Position {
    /// Line, from 1.
    pub line: u32,
    /// Column in characters, from 1.
    pub column: u32,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// Why a SyncML message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncMlError {
    /// The input is over [`MAX_INPUT_BYTES`].
    #[error("the input is {len} bytes; the limit is {limit} bytes")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// Elements nest deeper than [`MAX_DEPTH`].
    #[error("{at}: elements nest deeper than {limit} levels")]
    TooDeep {
        /// Where.
        at: Position,
        /// The limit.
        limit: usize,
    },
    /// More than [`MAX_ELEMENTS`] elements.
    #[error("{at}: more than {limit} elements")]
    TooManyElements {
        /// Where.
        at: Position,
        /// The limit.
        limit: usize,
    },
    /// A `<!DOCTYPE ...>` (with or without `<!ENTITY>` declarations).
    #[error("{at}: a DOCTYPE declaration is refused (SyncML needs no DTD, and DTD entities are how entity-expansion attacks work)")]
    Dtd {
        /// Where.
        at: Position,
    },
    /// `&name;` that is not `amp`, `lt`, `gt`, `quot` or `apos`.
    #[error("{at}: entity reference &{name}; is undefined (only &amp; &lt; &gt; &quot; &apos; and character references are accepted)")]
    UnknownEntity {
        /// Where.
        at: Position,
        /// The entity name (shortened).
        name: String,
    },
    /// Not well-formed XML.
    #[error("{at}: malformed XML: {message}")]
    Malformed {
        /// Where.
        at: Position,
        /// What quick-xml or the parser found.
        message: String,
    },
    /// The input ends inside an element.
    #[error("{at}: the input ends before <{open}> is closed")]
    Truncated {
        /// End of input.
        at: Position,
        /// The innermost open element.
        open: String,
    },
    /// No element at all.
    #[error("the input holds no XML element")]
    Empty,
    /// The root element is not `SyncML`.
    #[error("{at}: the root element is <{found}>, expected <SyncML>")]
    NotSyncMl {
        /// Where.
        at: Position,
        /// The root found (shortened).
        found: String,
    },
    /// An element's text is not what the node holds.
    #[error("{at}: {what} must be {expected}, found {found:?}")]
    BadValue {
        /// Where the element starts.
        at: Position,
        /// Which value.
        what: String,
        /// What was expected.
        expected: &'static str,
        /// The text found (shortened).
        found: String,
    },
    /// `Push/ChannelURI` holds something that is not a WNS channel.
    #[error("{at}: Push/ChannelURI {uri:?} is not a WNS channel: {reason}")]
    BadChannelUri {
        /// Where the value starts.
        at: Position,
        /// The value (shortened).
        uri: String,
        /// Why it was refused.
        reason: ChannelUriError,
    },
    /// Push nodes of two providers in one reply.
    #[error("{at}: the reply carries DMClient nodes of two providers, {first:?} and {second:?}")]
    MixedProviders {
        /// Where the second one is.
        at: Position,
        /// The first provider.
        first: String,
        /// The second provider.
        second: String,
    },
}

impl SyncMlError {
    /// The position of the error, when it has one.
    pub fn position(&self) -> Option<Position> {
        use SyncMlError::*;
        match self {
            TooLarge { .. } | Empty => None,
            TooDeep { at, .. }
            | TooManyElements { at, .. }
            | Dtd { at }
            | UnknownEntity { at, .. }
            | Malformed { at, .. }
            | Truncated { at, .. }
            | NotSyncMl { at, .. }
            | BadValue { at, .. }
            | BadChannelUri { at, .. }
            | MixedProviders { at, .. } => Some(*at),
        }
    }
}

fn shorten(s: &str) -> String {
    const MAX: usize = 80;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Turns byte offsets into positions in linear total time (offsets are asked
/// for in increasing order while parsing; an earlier one restarts the count).
struct Lines<'a> {
    text: &'a str,
    off: usize,
    line: u32,
    column: u32,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Self {
        Lines {
            text,
            off: 0,
            line: 1,
            column: 1,
        }
    }

    fn at(&mut self, off: usize) -> Position {
        let off = off.min(self.text.len());
        if off < self.off {
            self.off = 0;
            self.line = 1;
            self.column = 1;
        }
        for &b in &self.text.as_bytes()[self.off..off] {
            if b == b'\n' {
                self.line = self.line.saturating_add(1);
                self.column = 1;
            } else if b & 0xC0 != 0x80 {
                self.column = self.column.saturating_add(1);
            }
        }
        self.off = off;
        Position {
            line: self.line,
            column: self.column,
        }
    }
}

/// One `<Item>` of a command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncItem {
    /// `Target/LocURI`.
    pub target: Option<String>,
    /// `Source/LocURI`.
    pub source: Option<String>,
    /// `Meta/Format` of the item.
    pub format: Option<String>,
    /// `Data` text (unescaped, untrimmed); `Some("")` for `<Data/>`.
    pub data: Option<String>,
    /// Where the item starts.
    pub at: Option<Position>,
    /// Where its `Data` starts.
    pub data_at: Option<Position>,
}

/// One SyncBody command (`Status`, `Results`, `Get`, `Add`, `Replace`, `Alert`, ...).
/// Commands inside `Atomic` and `Sequence` are listed in document order too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncCommand {
    /// The element name (local part).
    pub name: String,
    /// `CmdID`.
    pub cmd_id: Option<String>,
    /// `MsgRef`.
    pub msg_ref: Option<String>,
    /// `CmdRef`.
    pub cmd_ref: Option<String>,
    /// `Cmd`.
    pub cmd: Option<String>,
    /// The command's own `Data` (a `Status` code, an `Alert` code).
    pub data: Option<String>,
    /// Command-level `Meta/Format`.
    pub format: Option<String>,
    /// The items.
    pub items: Vec<SyncItem>,
    /// Where the command starts.
    pub at: Option<Position>,
    /// Where its own `Data` starts.
    pub data_at: Option<Position>,
}

/// Which text an open element feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    CmdId,
    MsgRef,
    CmdRef,
    Cmd,
    CmdData,
    CmdFormat,
    ItemTarget,
    ItemSource,
    ItemFormat,
    ItemData,
}

/// Reads every SyncBody command of a SyncML message, with the limits of this
/// module. The root must be `<SyncML>`; namespace prefixes are ignored.
pub fn parse_commands(xml: &str) -> Result<Vec<SyncCommand>, SyncMlError> {
    if xml.len() > MAX_INPUT_BYTES {
        return Err(SyncMlError::TooLarge {
            len: xml.len(),
            limit: MAX_INPUT_BYTES,
        });
    }
    let body = xml.strip_prefix('\u{feff}').unwrap_or(xml);
    let bom = xml.len() - body.len();
    let mut lines = Lines::new(xml);
    let mut reader = Reader::from_str(body);
    {
        let c = reader.config_mut();
        c.check_end_names = true;
        c.expand_empty_elements = false;
        c.trim_text(false);
    }
    // Names of the open elements (local parts).
    let mut stack: Vec<String> = Vec::new();
    let mut elements = 0usize;
    let mut seen_root = false;
    let mut root_closed = false;
    let mut commands = Vec::new();
    let mut cmd: Option<(usize, SyncCommand)> = None; // (depth of the command element, command)
    let mut item: Option<(usize, SyncItem)> = None;
    let mut slot: Option<(usize, Slot, String)> = None; // (depth of the element, slot, text)

    loop {
        let start = bom + reader.buffer_position() as usize;
        let ev = match reader.read_event() {
            Ok(ev) => ev,
            Err(e) => {
                let at = lines.at(bom + reader.error_position() as usize);
                return Err(SyncMlError::Malformed {
                    at,
                    message: shorten(&e.to_string()),
                });
            }
        };
        match ev {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let is_empty = matches!(ev, Event::Empty(_));
                elements += 1;
                if elements > MAX_ELEMENTS {
                    return Err(SyncMlError::TooManyElements {
                        at: lines.at(start),
                        limit: MAX_ELEMENTS,
                    });
                }
                let local = e.local_name().as_ref().to_string();
                if stack.is_empty() {
                    if root_closed {
                        return Err(SyncMlError::Malformed {
                            at: lines.at(start),
                            message: format!("a second root element <{}>", shorten(&local)),
                        });
                    }
                    if local != "SyncML" {
                        return Err(SyncMlError::NotSyncMl {
                            at: lines.at(start),
                            found: shorten(&local),
                        });
                    }
                    seen_root = true;
                }
                let depth = stack.len() + 1;
                if depth > MAX_DEPTH {
                    return Err(SyncMlError::TooDeep {
                        at: lines.at(start),
                        limit: MAX_DEPTH,
                    });
                }
                let parent = stack.last().map(String::as_str);
                // A new command?
                if cmd.is_none()
                    && matches!(parent, Some("SyncBody" | "Atomic" | "Sequence"))
                    && is_command(&local)
                    && stack.len() >= 2
                    && stack[1] == "SyncBody"
                {
                    cmd = Some((
                        depth,
                        SyncCommand {
                            name: local.clone(),
                            at: Some(lines.at(start)),
                            ..SyncCommand::default()
                        },
                    ));
                } else if let Some((cdepth, ref mut c)) = cmd {
                    let rel = depth - cdepth;
                    let new_slot = if rel == 1 {
                        match local.as_str() {
                            "CmdID" => Some(Slot::CmdId),
                            "MsgRef" => Some(Slot::MsgRef),
                            "CmdRef" => Some(Slot::CmdRef),
                            "Cmd" => Some(Slot::Cmd),
                            "Data" => {
                                c.data_at = Some(lines.at(start));
                                Some(Slot::CmdData)
                            }
                            "Item" => {
                                item = Some((
                                    depth,
                                    SyncItem {
                                        at: Some(lines.at(start)),
                                        ..SyncItem::default()
                                    },
                                ));
                                None
                            }
                            _ => None,
                        }
                    } else if rel == 2 && parent == Some("Meta") && local == "Format" {
                        Some(Slot::CmdFormat)
                    } else if let Some((idepth, ref mut it)) = item {
                        match (depth - idepth, local.as_str(), parent) {
                            (1, "Data", _) => {
                                it.data_at = Some(lines.at(start));
                                Some(Slot::ItemData)
                            }
                            (2, "LocURI", Some("Target")) => Some(Slot::ItemTarget),
                            (2, "LocURI", Some("Source")) => Some(Slot::ItemSource),
                            (2, "Format", Some("Meta")) => Some(Slot::ItemFormat),
                            _ => None,
                        }
                    } else {
                        None
                    };
                    if let Some(s) = new_slot {
                        slot = Some((depth, s, String::new()));
                    }
                }
                if is_empty {
                    // A self-closing element: open and close at once.
                    close(depth, &mut cmd, &mut item, &mut slot, &mut commands);
                    if depth == 1 {
                        root_closed = true;
                    }
                } else {
                    stack.push(local);
                }
            }
            Event::End(_) => {
                let depth = stack.len();
                close(depth, &mut cmd, &mut item, &mut slot, &mut commands);
                stack.pop();
                if stack.is_empty() {
                    root_closed = true;
                }
            }
            Event::Text(t) => {
                let text = t.xml10_content();
                if stack.is_empty() {
                    if !text.trim().is_empty() {
                        return Err(SyncMlError::Malformed {
                            at: lines.at(start),
                            message: "text outside the root element".into(),
                        });
                    }
                } else if let Some((d, _, ref mut buf)) = slot {
                    if d == stack.len() {
                        buf.push_str(&text);
                    }
                }
            }
            Event::CData(t) => {
                if stack.is_empty() {
                    return Err(SyncMlError::Malformed {
                        at: lines.at(start),
                        message: "CDATA outside the root element".into(),
                    });
                }
                if let Some((d, _, ref mut buf)) = slot {
                    if d == stack.len() {
                        buf.push_str(&t.xml10_content());
                    }
                }
            }
            Event::GeneralRef(r) => {
                let ch = match r.resolve_char_ref() {
                    Ok(Some(c)) => c,
                    Ok(None) => match &*r {
                        "amp" => '&',
                        "lt" => '<',
                        "gt" => '>',
                        "quot" => '"',
                        "apos" => '\'',
                        other => {
                            return Err(SyncMlError::UnknownEntity {
                                at: lines.at(start),
                                name: shorten(other),
                            })
                        }
                    },
                    Err(e) => {
                        return Err(SyncMlError::Malformed {
                            at: lines.at(start),
                            message: format!("bad character reference &{};: {e}", shorten(&r)),
                        })
                    }
                };
                if stack.is_empty() {
                    return Err(SyncMlError::Malformed {
                        at: lines.at(start),
                        message: "a reference outside the root element".into(),
                    });
                }
                if let Some((d, _, ref mut buf)) = slot {
                    if d == stack.len() {
                        buf.push(ch);
                    }
                }
            }
            Event::DocType(_) => {
                return Err(SyncMlError::Dtd {
                    at: lines.at(start),
                })
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => {
                if let Some(open) = stack.last() {
                    return Err(SyncMlError::Truncated {
                        at: lines.at(xml.len()),
                        open: shorten(open),
                    });
                }
                if !seen_root {
                    return Err(SyncMlError::Empty);
                }
                return Ok(commands);
            }
        }
    }
}

/// The SyncML commands that [`parse_commands`] lists (`Atomic` and `Sequence`
/// are containers: their children are listed instead).
fn is_command(name: &str) -> bool {
    matches!(
        name,
        "Add"
            | "Alert"
            | "Copy"
            | "Delete"
            | "Exec"
            | "Get"
            | "Map"
            | "Put"
            | "Replace"
            | "Results"
            | "Search"
            | "Status"
            | "Sync"
    )
}

/// Closes the element at `depth`: stores a finished slot, item or command.
fn close(
    depth: usize,
    cmd: &mut Option<(usize, SyncCommand)>,
    item: &mut Option<(usize, SyncItem)>,
    slot: &mut Option<(usize, Slot, String)>,
    commands: &mut Vec<SyncCommand>,
) {
    if slot.as_ref().is_some_and(|(d, _, _)| *d == depth) {
        if let Some((_, s, text)) = slot.take() {
            match s {
                Slot::ItemTarget | Slot::ItemSource | Slot::ItemFormat | Slot::ItemData => {
                    if let Some((_, it)) = item.as_mut() {
                        let field = match s {
                            Slot::ItemTarget => &mut it.target,
                            Slot::ItemSource => &mut it.source,
                            Slot::ItemFormat => &mut it.format,
                            _ => &mut it.data,
                        };
                        *field = Some(text);
                    }
                }
                _ => {
                    if let Some((_, c)) = cmd.as_mut() {
                        let field = match s {
                            Slot::CmdId => &mut c.cmd_id,
                            Slot::MsgRef => &mut c.msg_ref,
                            Slot::CmdRef => &mut c.cmd_ref,
                            Slot::Cmd => &mut c.cmd,
                            Slot::CmdFormat => &mut c.format,
                            _ => &mut c.data,
                        };
                        *field = Some(text);
                    }
                }
            }
        }
    }
    if item.as_ref().is_some_and(|(d, _)| *d == depth) {
        if let (Some((_, it)), Some((_, c))) = (item.take(), cmd.as_mut()) {
            c.items.push(it);
        }
    }
    if cmd.as_ref().is_some_and(|(d, _)| *d == depth) {
        if let Some((_, c)) = cmd.take() {
            commands.push(c);
        }
    }
}

/// A `Push/Status` value (DMClient CSP), 0 to 8.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum PushStatus {
    /// 0: Success.
    Success,
    /// 1: Failure: invalid PFN.
    InvalidPfn,
    /// 2: Failure: invalid or expired device authentication with MSA.
    DeviceAuthentication,
    /// 3: Failure: WNS client registration failed due to an invalid or revoked PFN.
    RegistrationFailed,
    /// 4: Failure: no Channel URI assigned.
    NoChannelUri,
    /// 5: Failure: Channel URI has expired.
    ChannelUriExpired,
    /// 6: Failure: Channel URI failed to be revoked.
    ChannelUriRevokeFailed,
    /// 7: Failure: push received, but no OMA-DM session (power or connectivity limits).
    SessionNotEstablished,
    /// 8: "Unknown error" (CSP) or "Push not available on the SKU" (MS-MDE2).
    UnknownOrNotOnSku,
}

/// One documented reading of a `Push/Status` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Reading {
    /// Which document says it.
    pub source: &'static str,
    /// What it says.
    pub text: &'static str,
}

const CSP: &str = "DMClient CSP";
const MDE2: &str = "MS-MDE2 2.2.9.3";

impl PushStatus {
    /// All nine, by code.
    pub const ALL: [PushStatus; 9] = [
        PushStatus::Success,
        PushStatus::InvalidPfn,
        PushStatus::DeviceAuthentication,
        PushStatus::RegistrationFailed,
        PushStatus::NoChannelUri,
        PushStatus::ChannelUriExpired,
        PushStatus::ChannelUriRevokeFailed,
        PushStatus::SessionNotEstablished,
        PushStatus::UnknownOrNotOnSku,
    ];

    /// The value for a code, if it is 0 to 8.
    pub fn from_code(code: u32) -> Option<Self> {
        Self::ALL.get(code as usize).copied()
    }

    /// The numeric value.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The documented readings: one for 0–7, two for 8 (the documents disagree).
    pub fn readings(self) -> &'static [Reading] {
        macro_rules! r {
            ($t:expr $(,)?) => {
                Reading {
                    source: CSP,
                    text: $t,
                }
            };
        }
        use PushStatus::*;
        match self {
            Success => &[r!("Success")],
            InvalidPfn => &[r!("Failure: invalid PFN")],
            DeviceAuthentication => {
                &[r!("Failure: invalid or expired device authentication with MSA")]
            }
            RegistrationFailed => &[r!(
                "Failure: WNS client registration failed due to an invalid or revoked PFN",
            )],
            NoChannelUri => &[r!("Failure: no Channel URI assigned")],
            ChannelUriExpired => &[r!("Failure: Channel URI has expired")],
            ChannelUriRevokeFailed => &[r!("Failure: Channel URI failed to be revoked")],
            SessionNotEstablished => &[r!(
                "Failure: push notification received, but unable to establish an OMA-DM session due to power or connectivity limitations",
            )],
            UnknownOrNotOnSku => &[
                Reading {
                    source: CSP,
                    text: "Unknown error",
                },
                Reading {
                    source: MDE2,
                    text: "Push not available on the SKU",
                },
            ],
        }
    }

    /// The CSP's reading.
    pub fn csp_meaning(self) -> &'static str {
        self.readings()[0].text
    }

    /// All readings in one line, naming the sources when they disagree.
    pub fn describe(self) -> String {
        match self.readings() {
            [one] => one.text.to_string(),
            many => many
                .iter()
                .map(|r| format!("{} ({})", r.text, r.source))
                .collect::<Vec<_>>()
                .join(" or "),
        }
    }

    /// True for every value but 0.
    pub fn is_failure(self) -> bool {
        self != PushStatus::Success
    }

    /// True when the device's channel is gone or was never made, so the PFN has
    /// to be set again: 1, 3, 4 and 5.
    pub fn needs_pfn_reset(self) -> bool {
        matches!(
            self,
            PushStatus::InvalidPfn
                | PushStatus::RegistrationFailed
                | PushStatus::NoChannelUri
                | PushStatus::ChannelUriExpired
        )
    }
}

impl fmt::Display for PushStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code(), self.describe())
    }
}

/// The status a device gave one command.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CmdStatus {
    /// `MsgRef`, when given.
    pub msg_ref: Option<u32>,
    /// `CmdRef`: the `CmdID` of the server command (0 for the SyncHdr).
    pub cmd_ref: u32,
    /// `Cmd`: `Get`, `Replace`, `SyncHdr`, ...
    pub cmd: String,
    /// The status code (`Data`): 200, 404, 500, ...
    pub code: u16,
}

impl CmdStatus {
    /// True for 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// What the OMA-DM 1.2 status code means.
    pub fn meaning(&self) -> &'static str {
        match self.code {
            200 => "OK",
            202 => "accepted for processing",
            212 => "authentication accepted",
            213 => "chunked item accepted",
            214 => "operation cancelled",
            215 => "not executed",
            216 => "atomic roll back OK",
            400 => "bad request",
            401 => "invalid credentials",
            403 => "forbidden",
            404 => "not found",
            405 => "command not allowed",
            406 => "optional feature not supported",
            407 => "missing credentials",
            408 => "request timeout",
            412 => "incomplete command",
            413 => "request entity too large",
            414 => "URI too long",
            415 => "unsupported media type or format",
            416 => "requested size too big",
            418 => "already exists",
            420 => "device full",
            424 => "size mismatch",
            425 => "permission denied",
            500 => "command failed",
            507 => "atomic failed",
            516 => "atomic roll back failed",
            _ => "see the OMA-DM 1.2 status codes",
        }
    }
}

/// What a device's reply says about its push channel.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ChannelReport {
    /// `Push/ChannelURI`, validated as a WNS channel; `None` when not read or null.
    pub channel_uri: Option<String>,
    /// `Push/Status`.
    pub push_status: Option<PushStatus>,
    /// `Push/PFN` as the device reports it.
    pub pfn: Option<String>,
    /// Every `Status` in the reply, in order.
    pub statuses: Vec<CmdStatus>,
    /// The `Poll/...` nodes the reply carried (all `None` when not read).
    pub poll: PollConfig,
    /// The DMClient provider the nodes belong to, when the reply has any.
    pub provider_id: Option<String>,
}

impl ChannelReport {
    /// Statuses that are not 2xx (the SyncHdr status included).
    pub fn failed_commands(&self) -> impl Iterator<Item = &CmdStatus> {
        self.statuses.iter().filter(|s| !s.is_success())
    }
}

fn parse_num<T: std::str::FromStr>(
    text: Option<&str>,
    at: Option<Position>,
    what: &str,
    expected: &'static str,
) -> Result<Option<T>, SyncMlError> {
    let Some(t) = text else { return Ok(None) };
    let t = t.trim();
    t.parse::<T>().map(Some).map_err(|_| SyncMlError::BadValue {
        at: at.unwrap_or(Position { line: 1, column: 1 }),
        what: what.to_string(),
        expected,
        found: shorten(t),
    })
}

/// Reads a device's reply (`Status` and `Results` commands) into a
/// [`ChannelReport`]. Other commands (`Alert`, `Replace` of DevInfo, ...) are
/// skipped; `Status` codes must be integers, `Push/Status` 0 to 8, Poll values
/// integers or booleans, and `Push/ChannelURI` a WNS channel (or empty).
pub fn parse_device_reply(xml: &str) -> Result<ChannelReport, SyncMlError> {
    let commands = parse_commands(xml)?;
    let mut report = ChannelReport::default();
    let origin = Position { line: 1, column: 1 };
    for c in &commands {
        match c.name.as_str() {
            "Status" => {
                let at = c.at;
                let cmd_ref =
                    parse_num::<u32>(c.cmd_ref.as_deref(), at, "Status/CmdRef", "an integer")?
                        .ok_or(SyncMlError::BadValue {
                            at: at.unwrap_or(origin),
                            what: "Status/CmdRef".into(),
                            expected: "present",
                            found: String::new(),
                        })?;
                let code = parse_num::<u16>(
                    c.data.as_deref(),
                    c.data_at.or(at),
                    "Status/Data",
                    "a status code such as 200",
                )?
                .ok_or(SyncMlError::BadValue {
                    at: at.unwrap_or(origin),
                    what: "Status/Data".into(),
                    expected: "a status code such as 200",
                    found: String::new(),
                })?;
                let msg_ref =
                    parse_num::<u32>(c.msg_ref.as_deref(), at, "Status/MsgRef", "an integer")?;
                report.statuses.push(CmdStatus {
                    msg_ref,
                    cmd_ref,
                    cmd: c.cmd.as_deref().unwrap_or("").trim().to_string(),
                    code,
                });
            }
            "Results" => {
                for it in &c.items {
                    let Some(loc) = it.source.as_deref().or(it.target.as_deref()) else {
                        continue;
                    };
                    let Some((provider, node)) = classify_node(loc) else {
                        continue;
                    };
                    let at = it.data_at.or(it.at).unwrap_or(origin);
                    match &report.provider_id {
                        Some(p) if p != provider => {
                            return Err(SyncMlError::MixedProviders {
                                at,
                                first: shorten(p),
                                second: shorten(provider),
                            })
                        }
                        Some(_) => {}
                        None => report.provider_id = Some(provider.to_string()),
                    }
                    let value = it.data.as_deref().map(str::trim).unwrap_or("");
                    match node {
                        DmNode::PushChannelUri => {
                            report.channel_uri = if value.is_empty() {
                                None
                            } else {
                                ChannelUri::parse(value).map_err(|reason| {
                                    SyncMlError::BadChannelUri {
                                        at,
                                        uri: shorten(value),
                                        reason,
                                    }
                                })?;
                                Some(value.to_string())
                            };
                        }
                        DmNode::PushStatus => {
                            if value.is_empty() {
                                continue;
                            }
                            let bad = || SyncMlError::BadValue {
                                at,
                                what: "Push/Status".into(),
                                expected: "an integer from 0 to 8",
                                found: shorten(value),
                            };
                            let n: u32 = value.parse().map_err(|_| bad())?;
                            report.push_status = Some(PushStatus::from_code(n).ok_or_else(bad)?);
                        }
                        DmNode::PushPfn => {
                            report.pfn = (!value.is_empty()).then(|| value.to_string());
                        }
                        DmNode::Poll(p) => {
                            if value.is_empty() {
                                continue;
                            }
                            let what = format!("Poll/{}", p.name());
                            let v = match p.format() {
                                Format::Bool => {
                                    PollValue::Bool(parse_bool(value).ok_or_else(|| {
                                        SyncMlError::BadValue {
                                            at,
                                            what: what.clone(),
                                            expected: "true or false",
                                            found: shorten(value),
                                        }
                                    })?)
                                }
                                _ => PollValue::Int(
                                    parse_num::<u32>(
                                        Some(value),
                                        Some(at),
                                        &what,
                                        "a non-negative integer",
                                    )?
                                    .unwrap_or(0),
                                ),
                            };
                            report.poll.set(p, v);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(report)
}

fn parse_bool(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("true") || s == "1" {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") || s == "0" {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mdm::syncml::{sync_message, Pfn, ProviderId, SetOp, SyncHeader, SyncMlBuilder};

    const CHANNEL: &str = "https://db5p.notify.windows.com/?token=AwYAAAAFv7NXFYkqEBnZUvCH%2bMRbmMeLw7MK0JqzKXC4sXP%2bX9sbSkMDdI0EJtqNQjWzQzmLx1DhE2gZs2nSQ9Wbb%2bVO";

    /// A reply shaped like a Windows 10/11 DM client's answer to
    /// Get ChannelURI + Get Status (CmdID 2 and 3) after Replace PFN (CmdID 4).
    fn windows_reply(channel: &str, status: &str) -> String {
        format!(
            r#"<?xml version="1.0" encoding="utf-8"?>
<SyncML xmlns="SYNCML:SYNCML1.2">
  <SyncHdr>
    <VerDTD>1.2</VerDTD>
    <VerProto>DM/1.2</VerProto>
    <SessionID>1F</SessionID>
    <MsgID>2</MsgID>
    <Target><LocURI>https://mdm.contoso.com/omadm/WindowsPhone.ashx</LocURI></Target>
    <Source><LocURI>42B7F2A1C0D3E4F5A6B7C8D9E0F1A2B3</LocURI></Source>
    <Meta><A:MaxMsgSize xmlns:A="syncml:metinf">65536</A:MaxMsgSize></Meta>
  </SyncHdr>
  <SyncBody>
    <Status><CmdID>1</CmdID><MsgRef>1</MsgRef><CmdRef>0</CmdRef><Cmd>SyncHdr</Cmd><Data>200</Data></Status>
    <Status><CmdID>2</CmdID><MsgRef>1</MsgRef><CmdRef>4</CmdRef><Cmd>Replace</Cmd><Data>200</Data></Status>
    <Status><CmdID>3</CmdID><MsgRef>1</MsgRef><CmdRef>2</CmdRef><Cmd>Get</Cmd><Data>200</Data></Status>
    <Results>
      <CmdID>4</CmdID><MsgRef>1</MsgRef><CmdRef>2</CmdRef>
      <Item>
        <Source><LocURI>./Vendor/MSFT/DMClient/Provider/MS DM Server/Push/ChannelURI</LocURI></Source>
        <Meta><Format xmlns="syncml:metinf">chr</Format></Meta>
        <Data>{channel}</Data>
      </Item>
    </Results>
    <Status><CmdID>5</CmdID><MsgRef>1</MsgRef><CmdRef>3</CmdRef><Cmd>Get</Cmd><Data>200</Data></Status>
    <Results>
      <CmdID>6</CmdID><MsgRef>1</MsgRef><CmdRef>3</CmdRef>
      <Item>
        <Source><LocURI>./Vendor/MSFT/DMClient/Provider/MS DM Server/Push/Status</LocURI></Source>
        <Meta><Format xmlns="syncml:metinf">int</Format></Meta>
        <Data>{status}</Data>
      </Item>
    </Results>
    <Final/>
  </SyncBody>
</SyncML>
"#
        )
    }

    #[test]
    fn reads_a_real_shaped_reply() {
        let r = parse_device_reply(&windows_reply(CHANNEL, "0")).unwrap();
        assert_eq!(r.channel_uri.as_deref(), Some(CHANNEL));
        assert_eq!(r.push_status, Some(PushStatus::Success));
        assert_eq!(r.provider_id.as_deref(), Some("MS DM Server"));
        assert_eq!(r.statuses.len(), 4);
        assert_eq!(r.statuses[0].cmd, "SyncHdr");
        assert_eq!(r.statuses[0].cmd_ref, 0);
        assert_eq!(r.statuses[1].cmd, "Replace");
        assert_eq!(r.statuses[1].cmd_ref, 4);
        assert_eq!(r.statuses[1].msg_ref, Some(1));
        assert!(r.failed_commands().next().is_none());
        assert_eq!(r.pfn, None);
    }

    #[test]
    fn escaped_channel_and_cdata_are_unescaped() {
        let escaped = "https://db5p.notify.windows.com/?token=a&amp;b=%2b";
        let r = parse_device_reply(&windows_reply(escaped, "0")).unwrap();
        assert_eq!(
            r.channel_uri.as_deref(),
            Some("https://db5p.notify.windows.com/?token=a&b=%2b")
        );
        let cdata = format!("<![CDATA[{CHANNEL}]]>");
        let r = parse_device_reply(&windows_reply(&cdata, "&#53;")).unwrap();
        assert_eq!(r.channel_uri.as_deref(), Some(CHANNEL));
        assert_eq!(r.push_status, Some(PushStatus::ChannelUriExpired));
    }

    #[test]
    fn every_push_status_and_both_readings_of_8() {
        for code in 0..=8u32 {
            let r = parse_device_reply(&windows_reply(CHANNEL, &code.to_string())).unwrap();
            let s = r.push_status.unwrap();
            assert_eq!(u32::from(s.code()), code);
        }
        let eight = PushStatus::from_code(8).unwrap();
        let texts: Vec<_> = eight.readings().iter().map(|r| r.text).collect();
        assert_eq!(texts, ["Unknown error", "Push not available on the SKU"]);
        assert!(eight.describe().contains("MS-MDE2"));
        assert_eq!(PushStatus::from_code(5).unwrap().readings().len(), 1);
        assert_eq!(
            PushStatus::ChannelUriExpired.csp_meaning(),
            "Failure: Channel URI has expired"
        );
        assert!(PushStatus::ChannelUriExpired.needs_pfn_reset());
        assert!(!PushStatus::SessionNotEstablished.needs_pfn_reset());
        assert_eq!(PushStatus::from_code(9), None);
        for bad in ["9", "-1", "x", "5.0"] {
            let e = parse_device_reply(&windows_reply(CHANNEL, bad)).unwrap_err();
            assert!(matches!(e, SyncMlError::BadValue { .. }), "{bad}: {e}");
            assert_eq!(e.position().unwrap().line, 30, "{e}");
        }
    }

    #[test]
    fn null_channel_and_missing_get() {
        let r = parse_device_reply(&windows_reply("", "4")).unwrap();
        assert_eq!(r.channel_uri, None);
        assert_eq!(r.push_status, Some(PushStatus::NoChannelUri));
        let empty_data =
            windows_reply(CHANNEL, "4").replace(&format!("<Data>{CHANNEL}</Data>"), "<Data/>");
        assert_eq!(parse_device_reply(&empty_data).unwrap().channel_uri, None);
        // Push not configured: the Get fails with 404 and there are no Results.
        let xml = r#"<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr/><SyncBody>
<Status><CmdID>1</CmdID><MsgRef>1</MsgRef><CmdRef>2</CmdRef><Cmd>Get</Cmd><Data>404</Data></Status>
<Final/></SyncBody></SyncML>"#;
        let r = parse_device_reply(xml).unwrap();
        assert_eq!(r.channel_uri, None);
        let failed: Vec<_> = r.failed_commands().collect();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].meaning(), "not found");
    }

    #[test]
    fn foreign_channel_is_refused_with_position() {
        let e = parse_device_reply(&windows_reply("https://evil.test/?token=x", "0")).unwrap_err();
        match e {
            SyncMlError::BadChannelUri { at, .. } => assert_eq!(at.line, 21),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn prefixed_names_device_root_and_pfn_and_poll() {
        let xml = format!(
            r#"<s:SyncML xmlns:s="SYNCML:SYNCML1.2"><s:SyncHdr/><s:SyncBody>
<s:Results><s:CmdID>2</s:CmdID><s:MsgRef>1</s:MsgRef><s:CmdRef>5</s:CmdRef>
<s:Item><s:Source><s:LocURI>./Device/Vendor/MSFT/DMClient/Provider/contoso/Push/PFN</s:LocURI></s:Source><s:Data>Contoso.Mdm_8wekyb3d8bbwe</s:Data></s:Item>
<s:Item><s:Source><s:LocURI>./Device/Vendor/MSFT/DMClient/Provider/contoso/Push/ChannelURI</s:LocURI></s:Source><s:Data> {CHANNEL} </s:Data></s:Item>
<s:Item><s:Source><s:LocURI>./Device/Vendor/MSFT/DMClient/Provider/contoso/Poll/IntervalForRemainingScheduledRetries</s:LocURI></s:Source><s:Data>1440</s:Data></s:Item>
<s:Item><s:Source><s:LocURI>./Device/Vendor/MSFT/DMClient/Provider/contoso/Poll/PollOnLogin</s:LocURI></s:Source><s:Data>true</s:Data></s:Item>
</s:Results><s:Final/></s:SyncBody></s:SyncML>"#
        );
        let r = parse_device_reply(&xml).unwrap();
        assert_eq!(r.pfn.as_deref(), Some("Contoso.Mdm_8wekyb3d8bbwe"));
        assert_eq!(r.channel_uri.as_deref(), Some(CHANNEL));
        assert_eq!(r.provider_id.as_deref(), Some("contoso"));
        assert_eq!(r.poll.interval_for_remaining_scheduled_retries, Some(1440));
        assert_eq!(r.poll.poll_on_login, Some(true));
        assert_eq!(
            r.poll.steady_interval(),
            Some(std::time::Duration::from_secs(86_400))
        );
    }

    #[test]
    fn mixed_providers_refused() {
        let xml = format!(
            r#"<SyncML><SyncBody><Results><CmdRef>2</CmdRef>
<Item><Source><LocURI>./Vendor/MSFT/DMClient/Provider/a/Push/ChannelURI</LocURI></Source><Data>{CHANNEL}</Data></Item>
<Item><Source><LocURI>./Vendor/MSFT/DMClient/Provider/b/Push/Status</LocURI></Source><Data>0</Data></Item>
</Results></SyncBody></SyncML>"#
        );
        assert!(matches!(
            parse_device_reply(&xml),
            Err(SyncMlError::MixedProviders { .. })
        ));
    }

    #[test]
    fn atomic_children_are_commands() {
        let mut b = SyncMlBuilder::new(ProviderId::new("p").unwrap());
        let inner = b.set_pfn(SetOp::Add, &Pfn::new("Contoso.Mdm_8wekyb3d8bbwe").unwrap());
        let xml = format!(
            "<SyncML><SyncBody><Atomic><CmdID>9</CmdID>{inner}</Atomic><Final/></SyncBody></SyncML>"
        );
        let cmds = parse_commands(&xml).unwrap();
        assert_eq!(cmds.len(), 1);
        assert_eq!(cmds[0].name, "Add");
        assert_eq!(cmds[0].items[0].format.as_deref(), Some("chr"));
    }

    #[test]
    fn builder_round_trip() {
        let mut b = SyncMlBuilder::new(ProviderId::new("MS DM Server").unwrap());
        let pfn = Pfn::new("Contoso.MdmPush_8wekyb3d8bbwe").unwrap();
        let mut body = b.set_pfn(SetOp::Replace, &pfn);
        body.push_str(&b.get_channel_uri());
        body.push_str(&b.get_push_status());
        let poll = PollConfig {
            interval_for_remaining_scheduled_retries: Some(1440),
            all_users_poll_on_first_login: Some(false),
            ..PollConfig::default()
        };
        body.push_str(&b.poll_schedule(SetOp::Add, &poll).unwrap());
        let hdr = SyncHeader {
            session_id: "1".into(),
            msg_id: 1,
            target: "dev".into(),
            source: "https://mdm.example/omadm".into(),
        };
        let msg = sync_message(&hdr, &body).unwrap();
        let cmds = parse_commands(&msg).unwrap();
        let names: Vec<_> = cmds.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["Replace", "Get", "Get", "Add", "Add"]);
        let ids: Vec<_> = cmds.iter().map(|c| c.cmd_id.clone().unwrap()).collect();
        assert_eq!(ids, ["1", "2", "3", "4", "5"]);
        assert_eq!(cmds[0].items[0].data.as_deref(), Some(pfn.as_str()));
        assert_eq!(
            classify_node(cmds[1].items[0].target.as_deref().unwrap()),
            Some(("MS DM Server", DmNode::PushChannelUri))
        );
        assert_eq!(cmds[4].items[0].data.as_deref(), Some("false"));
        assert_eq!(cmds[4].items[0].format.as_deref(), Some("bool"));
    }

    fn err(xml: &str) -> SyncMlError {
        parse_device_reply(xml).unwrap_err()
    }

    #[test]
    fn hostile_billion_laughs_and_xxe() {
        let laughs = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<SyncML><SyncBody><Status><CmdRef>1</CmdRef><Data>&lol9;</Data></Status></SyncBody></SyncML>"#;
        let e = err(laughs);
        assert_eq!(
            e,
            SyncMlError::Dtd {
                at: Position { line: 2, column: 1 }
            }
        );
        let xxe = r#"<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><SyncML/>"#;
        assert!(matches!(err(xxe), SyncMlError::Dtd { .. }));
        // An entity used without any DTD.
        let e = err("<SyncML><SyncBody><Status><CmdRef>1</CmdRef><Data>&xxe;</Data></Status></SyncBody></SyncML>");
        assert!(
            matches!(e, SyncMlError::UnknownEntity { ref name, .. } if name == "xxe"),
            "{e}"
        );
        // Parameter-entity style and ENTITY outside a DOCTYPE are malformed.
        assert!(parse_device_reply("<!ENTITY x \"y\"><SyncML/>").is_err());
    }

    #[test]
    fn hostile_deep_wide_huge() {
        let deep = format!("<SyncML>{}", "<a>".repeat(100_000));
        let e = err(&deep);
        assert_eq!(
            e,
            SyncMlError::TooDeep {
                at: Position {
                    line: 1,
                    column: 8 + 3 * 63 + 1
                },
                limit: MAX_DEPTH
            }
        );
        let wide = format!("<SyncML>{}</SyncML>", "<a/>".repeat(60_000));
        assert!(matches!(err(&wide), SyncMlError::TooManyElements { .. }));
        let huge = format!("<SyncML>{}</SyncML>", "x".repeat(MAX_INPUT_BYTES));
        assert!(matches!(err(&huge), SyncMlError::TooLarge { .. }));
        // Just under the limits is fine.
        let ok = format!("<SyncML>{}{}</SyncML>", "<a>".repeat(63), "</a>".repeat(63));
        assert!(parse_device_reply(&ok).is_ok());
    }

    #[test]
    fn malformed_inputs_have_positions() {
        type Check = fn(&SyncMlError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("", |e| *e == SyncMlError::Empty),
            ("   \n ", |e| *e == SyncMlError::Empty),
            ("<SyncML><SyncBody>", |e| matches!(e, SyncMlError::Truncated { open, .. } if open == "SyncBody")),
            ("<SyncML></SyncBody>", |e| matches!(e, SyncMlError::Malformed { .. })),
            ("<Foo/>", |e| matches!(e, SyncMlError::NotSyncMl { found, .. } if found == "Foo")),
            ("<SyncML/><SyncML/>", |e| matches!(e, SyncMlError::Malformed { .. })),
            ("<SyncML/>junk", |e| matches!(e, SyncMlError::Malformed { .. })),
            ("<SyncML>&#0;</SyncML>", |e| matches!(e, SyncMlError::Malformed { .. })),
            ("<SyncML>& </SyncML>", |e| matches!(e, SyncMlError::Malformed { .. })),
            ("<SyncML><a b=\"1></SyncML>", |e| matches!(e, SyncMlError::Malformed { .. } | SyncMlError::Truncated { .. })),
            ("<SyncML><SyncBody><Status><CmdRef>x</CmdRef><Data>200</Data></Status></SyncBody></SyncML>", |e| matches!(e, SyncMlError::BadValue { .. })),
            ("<SyncML><SyncBody><Status><CmdRef>1</CmdRef></Status></SyncBody></SyncML>", |e| matches!(e, SyncMlError::BadValue { .. })),
        ];
        for (xml, want) in cases {
            let e = parse_device_reply(xml).expect_err(xml);
            assert!(want(&e), "{xml:?}: {e:?}");
        }
        let e = err("<SyncML>\n  <SyncBody>\n    <Status>\n  </SyncBody>");
        let at = e.position().unwrap();
        assert_eq!(at.line, 4, "{e}");
        assert!(e.to_string().starts_with("line 4, column"), "{e}");
    }

    #[test]
    fn bom_and_non_ascii_columns() {
        let xml = "\u{feff}<SyncML>\n<é>&bad;</é></SyncML>";
        match err(xml) {
            SyncMlError::UnknownEntity { at, .. } => {
                assert_eq!(at, Position { line: 2, column: 4 })
            }
            e => panic!("{e}"),
        }
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use crate::mdm::syncml::{
        sync_message, Pfn, PollConfig, ProviderId, SetOp, SyncHeader, SyncMlBuilder,
    };
    use proptest::prelude::*;

    fn provider() -> impl Strategy<Value = String> {
        "[A-Za-z0-9._-]([A-Za-z0-9 ._-]{0,30}[A-Za-z0-9._-])?"
            .prop_filter("not . or ..", |s| s != "." && s != "..")
    }

    fn pfn() -> impl Strategy<Value = String> {
        ("[A-Za-z0-9.-]{3,50}", "[a-z0-9]{13}").prop_map(|(n, p)| format!("{n}_{p}"))
    }

    fn channel() -> impl Strategy<Value = String> {
        ("[a-z0-9]{1,10}", "[A-Za-z0-9%&=+._~-]{1,200}")
            .prop_map(|(sub, tok)| format!("https://{sub}x.notify.windows.com/?token={tok}"))
    }

    fn poll() -> impl Strategy<Value = PollConfig> {
        let int = || proptest::option::of(0u32..100_000);
        (
            (int(), proptest::option::of(1u32..50), int(), int()),
            (
                proptest::option::of(prop_oneof![Just(0u32), 1440u32..100_000]),
                int(),
                proptest::option::of(any::<bool>()),
                proptest::option::of(any::<bool>()),
            ),
        )
            .prop_map(|((a, b, c, d), (e, f, g, h))| PollConfig {
                interval_for_first_set_of_retries: a,
                number_of_first_retries: b,
                interval_for_second_set_of_retries: c,
                number_of_second_retries: d,
                interval_for_remaining_scheduled_retries: e,
                number_of_remaining_scheduled_retries: f,
                poll_on_login: g,
                all_users_poll_on_first_login: h,
            })
            .prop_filter("at least one node", |c| !c.is_empty())
    }

    /// What a device answers to the builder's Gets: one Status and one Results each.
    fn device_answer(server_msg: &str, values: &dyn Fn(&str) -> String) -> String {
        let cmds = parse_commands(server_msg).unwrap();
        let mut body = String::from(
            "<Status><CmdID>1</CmdID><MsgRef>1</MsgRef><CmdRef>0</CmdRef><Cmd>SyncHdr</Cmd><Data>200</Data></Status>\n",
        );
        let mut id = 2;
        for c in &cmds {
            let cmd_id = c.cmd_id.clone().unwrap();
            body.push_str(&format!(
                "<Status><CmdID>{id}</CmdID><MsgRef>1</MsgRef><CmdRef>{cmd_id}</CmdRef><Cmd>{}</Cmd><Data>200</Data></Status>\n",
                c.name
            ));
            id += 1;
            if c.name == "Get" {
                body.push_str(&format!(
                    "<Results><CmdID>{id}</CmdID><MsgRef>1</MsgRef><CmdRef>{cmd_id}</CmdRef>"
                ));
                id += 1;
                for it in &c.items {
                    let loc = it.target.clone().unwrap();
                    body.push_str(&format!(
                        "<Item><Source><LocURI>{}</LocURI></Source><Data>{}</Data></Item>",
                        crate::mdm::syncml::escape(&loc),
                        crate::mdm::syncml::escape(&values(&loc))
                    ));
                }
                body.push_str("</Results>\n");
            }
        }
        format!("<SyncML xmlns=\"SYNCML:SYNCML1.2\"><SyncHdr/><SyncBody>{body}<Final/></SyncBody></SyncML>")
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        #[test]
        fn build_then_answer_round_trip(
            provider in provider(),
            pfn in pfn(),
            uri in channel(),
            status in 0u32..=8,
            poll in poll(),
            first in 1u32..1000,
        ) {
            let mut b = SyncMlBuilder::new(ProviderId::new(&provider).unwrap()).with_first_cmd_id(first);
            let pfn = Pfn::new(&pfn).unwrap();
            let mut body = b.set_pfn(SetOp::Replace, &pfn);
            body.push_str(&b.get_channel_uri());
            body.push_str(&b.get_push_status());
            let poll_ok = poll.validate().is_ok();
            if poll_ok {
                body.push_str(&b.poll_schedule(SetOp::Replace, &poll).unwrap());
            } else {
                prop_assert!(b.poll_schedule(SetOp::Replace, &poll).is_err());
            }
            let msg = sync_message(&SyncHeader {
                session_id: "1".into(), msg_id: 1, target: "dev".into(), source: "https://mdm".into(),
            }, &body).unwrap();
            // The server message reads back exactly.
            let cmds = parse_commands(&msg).unwrap();
            prop_assert_eq!(cmds[0].items[0].data.as_deref(), Some(pfn.as_str()));
            prop_assert_eq!(cmds[0].cmd_id.clone(), Some(first.to_string()));
            if poll_ok {
                prop_assert_eq!(cmds.len(), 3 + poll.values().len());
                let mut back = PollConfig::default();
                for c in &cmds[3..] {
                    let it = &c.items[0];
                    let (_, node) = classify_node(it.target.as_deref().unwrap()).unwrap();
                    let DmNode::Poll(p) = node else { panic!("not a poll node") };
                    let d = it.data.as_deref().unwrap();
                    let v = match p.format() {
                        Format::Bool => PollValue::Bool(d.parse().unwrap()),
                        _ => PollValue::Int(d.parse().unwrap()),
                    };
                    back.set(p, v);
                }
                prop_assert_eq!(back, poll);
            }
            // A device's answer to it reads into the report.
            let answer = device_answer(&msg, &|loc| match classify_node(loc) {
                Some((_, DmNode::PushChannelUri)) => uri.clone(),
                Some((_, DmNode::PushStatus)) => status.to_string(),
                _ => String::new(),
            });
            let r = parse_device_reply(&answer).unwrap();
            prop_assert_eq!(r.channel_uri.as_deref(), Some(uri.as_str()));
            prop_assert_eq!(r.push_status.map(|s| u32::from(s.code())), Some(status));
            prop_assert_eq!(r.provider_id.as_deref(), Some(provider.as_str()));
            prop_assert!(r.statuses.iter().all(|s| s.code == 200));
        }

        #[test]
        fn arbitrary_text_never_panics(s in ".{0,400}") {
            let _ = parse_device_reply(&s);
        }

        #[test]
        fn xmlish_soup_never_panics(parts in proptest::collection::vec(prop_oneof![
            Just("<SyncML>"), Just("</SyncML>"), Just("<SyncBody>"), Just("</SyncBody>"),
            Just("<Status>"), Just("</Status>"), Just("<Results>"), Just("</Results>"),
            Just("<Item>"), Just("</Item>"), Just("<Data>"), Just("</Data>"), Just("<Data/>"),
            Just("<CmdRef>"), Just("</CmdRef>"), Just("<Source><LocURI>"), Just("</LocURI></Source>"),
            Just("./Vendor/MSFT/DMClient/Provider/p/Push/Status"), Just("./Vendor/MSFT/DMClient/Provider/p/Push/ChannelURI"),
            Just("https://a.notify.windows.com/?token=x"), Just("200"), Just("8"), Just("&amp;"), Just("&lol;"),
            Just("&#x0;"), Just("&#65;"), Just("<![CDATA["), Just("]]>"), Just("<!--"), Just("-->"),
            Just("<!DOCTYPE x>"), Just("<?pi?>"), Just("<a:b xmlns:a='x'>"), Just("</a:b>"), Just("<"), Just(">"), Just("\""), Just("é"),
        ], 0..60)) {
            let xml: String = parts.concat();
            let _ = parse_device_reply(&xml);
        }

        #[test]
        fn truncated_and_mutated_replies_never_panic(cut in 0usize..2000, byte in any::<u8>(), at in 0usize..2000) {
            let good = device_answer(
                &sync_message(&SyncHeader { session_id: "1".into(), msg_id: 1, target: "d".into(), source: "s".into() },
                    &SyncMlBuilder::new(ProviderId::new("p").unwrap()).get_channel_uri()).unwrap(),
                &|_| "https://a.notify.windows.com/?token=x".to_string(),
            );
            let mut bytes = good.into_bytes();
            bytes.truncate(cut.min(bytes.len()));
            if !bytes.is_empty() {
                let i = at % bytes.len();
                bytes[i] = byte;
            }
            let s = String::from_utf8_lossy(&bytes);
            let _ = parse_device_reply(&s);
        }

        #[test]
        fn nesting_beyond_the_limit_is_an_error(depth in 65usize..3000) {
            let xml = format!("<SyncML>{}{}</SyncML>", "<a>".repeat(depth - 1), "</a>".repeat(depth - 1));
            let e = parse_device_reply(&xml).unwrap_err();
            let is_too_deep = matches!(e, SyncMlError::TooDeep { .. });
            prop_assert!(is_too_deep);
        }
    }
}
