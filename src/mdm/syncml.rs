//! OMA-DM 1.2 SyncML command builders for the DMClient CSP: the `Push` nodes
//! (`PFN`, `ChannelURI`, `Status`) and the eight `Poll` schedule nodes, plus the
//! validated identifiers they need ([`ProviderId`], [`Pfn`]) and a wrapper for a
//! whole `<SyncML>` message.
//!
//! Every builder returns well-formed body commands (`<Add>`, `<Replace>`,
//! `<Get>`) with a `<CmdID>` from the builder's counter; all text is XML-escaped.
//! Node paths are recognised again by [`classify_node`] when a device answers.

use std::fmt::Write as _;
use std::time::Duration;

/// The DMClient provider subtree, in the form the MDM push document uses.
pub const VENDOR_PROVIDER_ROOT: &str = "./Vendor/MSFT/DMClient/Provider";
/// The same subtree in the form of the current auto-generated CSP reference.
pub const DEVICE_PROVIDER_ROOT: &str = "./Device/Vendor/MSFT/DMClient/Provider";

/// Default of `Poll/IntervalForFirstSetOfRetries`, in minutes (DMClient CSP).
pub const DEFAULT_FIRST_INTERVAL_MIN: u32 = 15;
/// Default of `Poll/NumberOfFirstRetries` (DMClient CSP).
pub const DEFAULT_FIRST_RETRIES: u32 = 10;
/// The smallest non-zero `Poll/IntervalForRemainingScheduledRetries`, in minutes
/// (MS-MDE2: "MUST NOT be smaller than 1440 minutes").
pub const MIN_REMAINING_INTERVAL_MIN: u32 = 1440;
/// Longest accepted provider ID, in bytes.
pub const MAX_PROVIDER_ID_LEN: usize = 128;

/// Why a command could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The provider ID is empty, too long or holds a character a node name may not hold.
    #[error("invalid provider ID {value:?}: {reason}")]
    InvalidProviderId {
        /// The value given (shortened).
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The PFN is not `PackageName_PublisherId`.
    #[error("invalid PFN {value:?}: {reason} (expected PackageName_PublisherId, e.g. Contoso.MdmPush_8wekyb3d8bbwe)")]
    InvalidPfn {
        /// The value given (shortened).
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `NumberOfFirstRetries = 0` with a non-zero first interval repeats forever.
    #[error("NumberOfFirstRetries = 0 with IntervalForFirstSetOfRetries = {interval} makes the first set of retries infinite (the second and remaining schedules are then never used); the CSP says the server should not set 0")]
    InfiniteFirstSet {
        /// The effective first interval, in minutes.
        interval: u32,
    },
    /// `IntervalForRemainingScheduledRetries` in `1..1440`.
    #[error("IntervalForRemainingScheduledRetries = {0} minutes is below the 1440-minute (24 h) floor of the long-running poll (0 disables it)")]
    RemainingIntervalTooShort(u32),
    /// An integer node value does not fit the CSP's `int`.
    #[error("{node} = {value} does not fit a 32-bit signed int")]
    OutOfRange {
        /// The node name.
        node: &'static str,
        /// The value given.
        value: u32,
    },
    /// A Poll command was asked for with no node set.
    #[error("no Poll node is set; give at least one value")]
    EmptyPollConfig,
    /// A SyncHdr field is empty, too long or holds a control character.
    #[error("invalid SyncHdr {field}: {reason}")]
    InvalidHeader {
        /// Which field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
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

/// A validated DMClient provider ID (the `{ProviderID}` node name, e.g. `MS DM Server`).
///
/// Accepted: 1 to 128 ASCII letters, digits, spaces, `.`, `-` and `_`; no
/// leading or trailing space; not `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProviderId(String);

impl ProviderId {
    /// Validates a provider ID.
    pub fn new(value: &str) -> Result<Self, BuildError> {
        let bad = |reason| BuildError::InvalidProviderId {
            value: shorten(value),
            reason,
        };
        if value.is_empty() {
            return Err(bad("it is empty"));
        }
        if value.len() > MAX_PROVIDER_ID_LEN {
            return Err(bad("it is longer than 128 bytes"));
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b" ._-".contains(&b))
        {
            return Err(bad(
                "only ASCII letters, digits, spaces, '.', '-' and '_' are allowed",
            ));
        }
        if value.starts_with(' ') || value.ends_with(' ') {
            return Err(bad("it starts or ends with a space"));
        }
        if value == "." || value == ".." {
            return Err(bad("'.' and '..' are not node names"));
        }
        Ok(ProviderId(value.to_string()))
    }

    /// The provider ID as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ProviderId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated Package Family Name: `PackageName_PublisherId`.
///
/// The package name is 3 to 50 ASCII letters, digits, `.` and `-` (the appx
/// manifest rule); the publisher ID is 13 ASCII letters or digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pfn(String);

impl Pfn {
    /// Validates a PFN.
    pub fn new(value: &str) -> Result<Self, BuildError> {
        let bad = |reason| BuildError::InvalidPfn {
            value: shorten(value),
            reason,
        };
        if value.is_empty() {
            return Err(bad("it is empty"));
        }
        let Some((name, publisher)) = value.rsplit_once('_') else {
            return Err(bad("there is no '_' between package name and publisher ID"));
        };
        if !(3..=50).contains(&name.len()) {
            return Err(bad("the package name must be 3 to 50 characters long"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        {
            return Err(bad(
                "the package name may hold only ASCII letters, digits, '.' and '-'",
            ));
        }
        if publisher.len() != 13 || !publisher.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(bad("the publisher ID must be 13 ASCII letters or digits"));
        }
        Ok(Pfn(value.to_string()))
    }

    /// The PFN as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Pfn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which form of the DMClient path to emit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CspRoot {
    /// `./Vendor/MSFT/DMClient/Provider/...` (the MDM push document and MS-MDE2).
    #[default]
    Vendor,
    /// `./Device/Vendor/MSFT/DMClient/Provider/...` (the current CSP reference).
    Device,
}

impl CspRoot {
    /// The provider subtree for this form.
    pub fn provider_root(self) -> &'static str {
        match self {
            CspRoot::Vendor => VENDOR_PROVIDER_ROOT,
            CspRoot::Device => DEVICE_PROVIDER_ROOT,
        }
    }
}

/// `Add` or `Replace`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SetOp {
    /// `<Add>`: create the node (fails with 418 if it exists).
    Add,
    /// `<Replace>`: set an existing node.
    #[default]
    Replace,
}

impl SetOp {
    /// The SyncML element name.
    pub fn element(self) -> &'static str {
        match self {
            SetOp::Add => "Add",
            SetOp::Replace => "Replace",
        }
    }
}

/// The SyncML `Meta/Format` of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `chr`: text.
    Chr,
    /// `int`: integer.
    Int,
    /// `bool`: `true` / `false`.
    Bool,
}

impl Format {
    /// The `Format` text.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Chr => "chr",
            Format::Int => "int",
            Format::Bool => "bool",
        }
    }
}

/// The eight `Poll` schedule nodes, in CSP order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PollNode {
    /// `IntervalForFirstSetOfRetries` (minutes).
    IntervalForFirstSetOfRetries,
    /// `NumberOfFirstRetries`.
    NumberOfFirstRetries,
    /// `IntervalForSecondSetOfRetries` (minutes).
    IntervalForSecondSetOfRetries,
    /// `NumberOfSecondRetries`.
    NumberOfSecondRetries,
    /// `IntervalForRemainingScheduledRetries` (minutes).
    IntervalForRemainingScheduledRetries,
    /// `NumberOfRemainingScheduledRetries`.
    NumberOfRemainingScheduledRetries,
    /// `PollOnLogin` (bool).
    PollOnLogin,
    /// `AllUsersPollOnFirstLogin` (bool).
    AllUsersPollOnFirstLogin,
}

impl PollNode {
    /// All eight, in CSP order.
    pub const ALL: [PollNode; 8] = [
        PollNode::IntervalForFirstSetOfRetries,
        PollNode::NumberOfFirstRetries,
        PollNode::IntervalForSecondSetOfRetries,
        PollNode::NumberOfSecondRetries,
        PollNode::IntervalForRemainingScheduledRetries,
        PollNode::NumberOfRemainingScheduledRetries,
        PollNode::PollOnLogin,
        PollNode::AllUsersPollOnFirstLogin,
    ];

    /// The node name as the CSP spells it.
    pub fn name(self) -> &'static str {
        match self {
            PollNode::IntervalForFirstSetOfRetries => "IntervalForFirstSetOfRetries",
            PollNode::NumberOfFirstRetries => "NumberOfFirstRetries",
            PollNode::IntervalForSecondSetOfRetries => "IntervalForSecondSetOfRetries",
            PollNode::NumberOfSecondRetries => "NumberOfSecondRetries",
            PollNode::IntervalForRemainingScheduledRetries => {
                "IntervalForRemainingScheduledRetries"
            }
            PollNode::NumberOfRemainingScheduledRetries => "NumberOfRemainingScheduledRetries",
            PollNode::PollOnLogin => "PollOnLogin",
            PollNode::AllUsersPollOnFirstLogin => "AllUsersPollOnFirstLogin",
        }
    }

    /// `int` or `bool`.
    pub fn format(self) -> Format {
        match self {
            PollNode::PollOnLogin | PollNode::AllUsersPollOnFirstLogin => Format::Bool,
            _ => Format::Int,
        }
    }
}

/// A DMClient node under `Provider/{ProviderID}/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DmNode {
    /// `Push/PFN` (chr; Add, Delete, Get, Replace).
    PushPfn,
    /// `Push/ChannelURI` (chr; Get only).
    PushChannelUri,
    /// `Push/Status` (int; Get only).
    PushStatus,
    /// A `Poll/...` node.
    Poll(PollNode),
}

impl DmNode {
    /// The path below `Provider/{ProviderID}/`.
    pub fn relative_path(self) -> String {
        match self {
            DmNode::PushPfn => "Push/PFN".to_string(),
            DmNode::PushChannelUri => "Push/ChannelURI".to_string(),
            DmNode::PushStatus => "Push/Status".to_string(),
            DmNode::Poll(p) => format!("Poll/{}", p.name()),
        }
    }

    /// The node's `Meta/Format`.
    pub fn format(self) -> Format {
        match self {
            DmNode::PushPfn | DmNode::PushChannelUri => Format::Chr,
            DmNode::PushStatus => Format::Int,
            DmNode::Poll(p) => p.format(),
        }
    }
}

/// Recognises a DMClient node path (either root form, `./` optional, fixed parts
/// matched ASCII case-insensitively) and returns the provider ID and node.
pub fn classify_node(loc_uri: &str) -> Option<(&str, DmNode)> {
    let s = loc_uri.trim();
    let s = s.strip_prefix("./").unwrap_or(s);
    let s = strip_prefix_ci(s, "Device/").unwrap_or(s);
    let s = strip_prefix_ci(s, "Vendor/MSFT/DMClient/Provider/")?;
    let (provider, rest) = s.split_once('/')?;
    if provider.is_empty() {
        return None;
    }
    let node = if rest.eq_ignore_ascii_case("Push/PFN") {
        DmNode::PushPfn
    } else if rest.eq_ignore_ascii_case("Push/ChannelURI") {
        DmNode::PushChannelUri
    } else if rest.eq_ignore_ascii_case("Push/Status") {
        DmNode::PushStatus
    } else {
        let name = strip_prefix_ci(rest, "Poll/")?;
        DmNode::Poll(
            PollNode::ALL
                .into_iter()
                .find(|p| p.name().eq_ignore_ascii_case(name))?,
        )
    };
    Some((provider, node))
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    if s.len() >= prefix.len()
        && s.is_char_boundary(prefix.len())
        && s[..prefix.len()].eq_ignore_ascii_case(prefix)
    {
        Some(&s[prefix.len()..])
    } else {
        None
    }
}

/// The eight DMClient `Poll` nodes. `None` nodes are not sent.
///
/// Intervals are minutes; `Number*` are counts. [`PollConfig::validate`] refuses
/// what the CSP warns against.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PollConfig {
    /// `IntervalForFirstSetOfRetries` (minutes; CSP default 15; 0 disables).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub interval_for_first_set_of_retries: Option<u32>,
    /// `NumberOfFirstRetries` (CSP default 10; 0 means forever, which is refused).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub number_of_first_retries: Option<u32>,
    /// `IntervalForSecondSetOfRetries` (minutes; 0 disables).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub interval_for_second_set_of_retries: Option<u32>,
    /// `NumberOfSecondRetries` (0 means forever when the interval is non-zero).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub number_of_second_retries: Option<u32>,
    /// `IntervalForRemainingScheduledRetries` (minutes; 0 disables; otherwise at least 1440).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub interval_for_remaining_scheduled_retries: Option<u32>,
    /// `NumberOfRemainingScheduledRetries` (0 means forever when the interval is non-zero).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub number_of_remaining_scheduled_retries: Option<u32>,
    /// `PollOnLogin`: a session at every user login.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub poll_on_login: Option<bool>,
    /// `AllUsersPollOnFirstLogin`: a session at each user's first login.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub all_users_poll_on_first_login: Option<bool>,
}

/// A value of a Poll node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollValue {
    /// An `int` node.
    Int(u32),
    /// A `bool` node.
    Bool(bool),
}

impl PollConfig {
    /// True when no node is set.
    pub fn is_empty(&self) -> bool {
        self.values().is_empty()
    }

    /// The set nodes and their values, in CSP order.
    pub fn values(&self) -> Vec<(PollNode, PollValue)> {
        let ints = [
            (
                PollNode::IntervalForFirstSetOfRetries,
                self.interval_for_first_set_of_retries,
            ),
            (PollNode::NumberOfFirstRetries, self.number_of_first_retries),
            (
                PollNode::IntervalForSecondSetOfRetries,
                self.interval_for_second_set_of_retries,
            ),
            (
                PollNode::NumberOfSecondRetries,
                self.number_of_second_retries,
            ),
            (
                PollNode::IntervalForRemainingScheduledRetries,
                self.interval_for_remaining_scheduled_retries,
            ),
            (
                PollNode::NumberOfRemainingScheduledRetries,
                self.number_of_remaining_scheduled_retries,
            ),
        ];
        let bools = [
            (PollNode::PollOnLogin, self.poll_on_login),
            (
                PollNode::AllUsersPollOnFirstLogin,
                self.all_users_poll_on_first_login,
            ),
        ];
        ints.into_iter()
            .filter_map(|(n, v)| v.map(|v| (n, PollValue::Int(v))))
            .chain(
                bools
                    .into_iter()
                    .filter_map(|(n, v)| v.map(|v| (n, PollValue::Bool(v)))),
            )
            .collect()
    }

    /// Sets one node (used by the reply parser).
    pub fn set(&mut self, node: PollNode, value: PollValue) {
        match (node, value) {
            (PollNode::IntervalForFirstSetOfRetries, PollValue::Int(v)) => {
                self.interval_for_first_set_of_retries = Some(v)
            }
            (PollNode::NumberOfFirstRetries, PollValue::Int(v)) => {
                self.number_of_first_retries = Some(v)
            }
            (PollNode::IntervalForSecondSetOfRetries, PollValue::Int(v)) => {
                self.interval_for_second_set_of_retries = Some(v)
            }
            (PollNode::NumberOfSecondRetries, PollValue::Int(v)) => {
                self.number_of_second_retries = Some(v)
            }
            (PollNode::IntervalForRemainingScheduledRetries, PollValue::Int(v)) => {
                self.interval_for_remaining_scheduled_retries = Some(v)
            }
            (PollNode::NumberOfRemainingScheduledRetries, PollValue::Int(v)) => {
                self.number_of_remaining_scheduled_retries = Some(v)
            }
            (PollNode::PollOnLogin, PollValue::Bool(v)) => self.poll_on_login = Some(v),
            (PollNode::AllUsersPollOnFirstLogin, PollValue::Bool(v)) => {
                self.all_users_poll_on_first_login = Some(v)
            }
            // A value of the wrong kind for the node: ignored (the parser never does this).
            _ => {}
        }
    }

    /// Refuses what the CSP warns against: an infinite first set
    /// (`NumberOfFirstRetries = 0` with a non-zero first interval, the CSP default
    /// of 15 counting when the interval is not set) and a long-running interval in
    /// `1..1440` minutes. Integers must also fit a signed 32-bit `int`.
    pub fn validate(&self) -> Result<(), BuildError> {
        for (node, value) in self.values() {
            if let PollValue::Int(v) = value {
                if v > i32::MAX as u32 {
                    return Err(BuildError::OutOfRange {
                        node: node.name(),
                        value: v,
                    });
                }
            }
        }
        let first_interval = self
            .interval_for_first_set_of_retries
            .unwrap_or(DEFAULT_FIRST_INTERVAL_MIN);
        if self.number_of_first_retries == Some(0) && first_interval != 0 {
            return Err(BuildError::InfiniteFirstSet {
                interval: first_interval,
            });
        }
        if let Some(m) = self.interval_for_remaining_scheduled_retries {
            if (1..MIN_REMAINING_INTERVAL_MIN).contains(&m) {
                return Err(BuildError::RemainingIntervalTooShort(m));
            }
        }
        Ok(())
    }

    /// The interval of the schedule that repeats forever, when the set nodes
    /// determine one (first, then second, then remaining set, as the CSP orders
    /// them). `None` means the device falls back to its 24-hour maintenance
    /// schedule or the nodes were not read.
    pub fn steady_interval(&self) -> Option<Duration> {
        let mins = |m: u32| Some(Duration::from_secs(u64::from(m) * 60));
        let first = self
            .interval_for_first_set_of_retries
            .unwrap_or(DEFAULT_FIRST_INTERVAL_MIN);
        if self.number_of_first_retries == Some(0) && first != 0 {
            return mins(first);
        }
        if let Some(i) = self.interval_for_second_set_of_retries.filter(|&i| i != 0) {
            if self.number_of_second_retries.unwrap_or(0) == 0 {
                return mins(i);
            }
        }
        if let Some(i) = self
            .interval_for_remaining_scheduled_retries
            .filter(|&i| i != 0)
        {
            if self.number_of_remaining_scheduled_retries.unwrap_or(0) == 0 {
                return mins(i);
            }
        }
        None
    }
}

/// Builds DMClient commands for one provider, numbering them from a counter.
#[derive(Debug, Clone)]
pub struct SyncMlBuilder {
    provider: ProviderId,
    root: CspRoot,
    next_cmd_id: u32,
}

impl SyncMlBuilder {
    /// A builder whose first command gets `CmdID` 1, using the `./Vendor/...` paths.
    pub fn new(provider: ProviderId) -> Self {
        SyncMlBuilder {
            provider,
            root: CspRoot::Vendor,
            next_cmd_id: 1,
        }
    }

    /// Chooses the path form.
    pub fn with_root(mut self, root: CspRoot) -> Self {
        self.root = root;
        self
    }

    /// Numbers the next command `id` (0 is taken as 1).
    pub fn with_first_cmd_id(mut self, id: u32) -> Self {
        self.next_cmd_id = id.max(1);
        self
    }

    /// The `CmdID` the next command will get.
    pub fn next_cmd_id(&self) -> u32 {
        self.next_cmd_id
    }

    /// The provider this builder addresses.
    pub fn provider(&self) -> &ProviderId {
        &self.provider
    }

    /// The full `LocURI` of a node.
    pub fn node_uri(&self, node: DmNode) -> String {
        format!(
            "{}/{}/{}",
            self.root.provider_root(),
            self.provider.as_str(),
            node.relative_path()
        )
    }

    fn take_id(&mut self) -> u32 {
        let id = self.next_cmd_id;
        self.next_cmd_id = self.next_cmd_id.saturating_add(1);
        id
    }

    fn set_command(&mut self, op: SetOp, node: DmNode, data: &str) -> String {
        let id = self.take_id();
        let mut out = String::with_capacity(256);
        let el = op.element();
        let _ = write!(
            out,
            "<{el}>\n  <CmdID>{id}</CmdID>\n  <Item>\n    <Target>\n      <LocURI>{}</LocURI>\n    </Target>\n    <Meta>\n      <Format xmlns=\"syncml:metinf\">{}</Format>\n    </Meta>\n    <Data>{}</Data>\n  </Item>\n</{el}>\n",
            escape(&self.node_uri(node)),
            node.format().as_str(),
            escape(data),
        );
        out
    }

    /// `Add` or `Replace` `Push/PFN`.
    pub fn set_pfn(&mut self, op: SetOp, pfn: &Pfn) -> String {
        self.set_command(op, DmNode::PushPfn, pfn.as_str())
    }

    /// One `<Get>` with one `<Item>` per node.
    pub fn get(&mut self, nodes: &[DmNode]) -> String {
        let id = self.take_id();
        let mut out = format!("<Get>\n  <CmdID>{id}</CmdID>\n");
        for &node in nodes {
            let _ = write!(
                out,
                "  <Item>\n    <Target>\n      <LocURI>{}</LocURI>\n    </Target>\n  </Item>\n",
                escape(&self.node_uri(node))
            );
        }
        out.push_str("</Get>\n");
        out
    }

    /// `<Get>` `Push/ChannelURI`: the guidance is to read it in every session.
    pub fn get_channel_uri(&mut self) -> String {
        self.get(&[DmNode::PushChannelUri])
    }

    /// `<Get>` `Push/Status`.
    pub fn get_push_status(&mut self) -> String {
        self.get(&[DmNode::PushStatus])
    }

    /// One `Add`/`Replace` per set Poll node, after [`PollConfig::validate`].
    pub fn poll_schedule(&mut self, op: SetOp, cfg: &PollConfig) -> Result<String, BuildError> {
        cfg.validate()?;
        let values = cfg.values();
        if values.is_empty() {
            return Err(BuildError::EmptyPollConfig);
        }
        let mut out = String::new();
        for (node, value) in values {
            let data = match value {
                PollValue::Int(v) => v.to_string(),
                PollValue::Bool(b) => b.to_string(),
            };
            out.push_str(&self.set_command(op, DmNode::Poll(node), &data));
        }
        Ok(out)
    }
}

/// The `<SyncHdr>` of a server-to-device message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncHeader {
    /// `SessionID` (echoes the device's).
    pub session_id: String,
    /// `MsgID` of this message.
    pub msg_id: u32,
    /// `Target/LocURI`: the device ID.
    pub target: String,
    /// `Source/LocURI`: the server URL.
    pub source: String,
}

fn check_header_field(field: &'static str, v: &str) -> Result<(), BuildError> {
    let bad = |reason| BuildError::InvalidHeader { field, reason };
    if v.trim().is_empty() {
        return Err(bad("it is empty"));
    }
    if v.len() > 1024 {
        return Err(bad("it is longer than 1024 bytes"));
    }
    if v.chars().any(char::is_control) {
        return Err(bad("it holds a control character"));
    }
    Ok(())
}

/// Wraps body commands into a whole `<SyncML>` message ending in `<Final/>`.
pub fn sync_message(header: &SyncHeader, commands: &str) -> Result<String, BuildError> {
    check_header_field("SessionID", &header.session_id)?;
    check_header_field("Target", &header.target)?;
    check_header_field("Source", &header.source)?;
    let mut out = String::with_capacity(commands.len() + 512);
    let _ = write!(
        out,
        "<SyncML xmlns=\"SYNCML:SYNCML1.2\">\n<SyncHdr>\n  <VerDTD>1.2</VerDTD>\n  <VerProto>DM/1.2</VerProto>\n  <SessionID>{}</SessionID>\n  <MsgID>{}</MsgID>\n  <Target>\n    <LocURI>{}</LocURI>\n  </Target>\n  <Source>\n    <LocURI>{}</LocURI>\n  </Source>\n</SyncHdr>\n<SyncBody>\n",
        escape(&header.session_id),
        header.msg_id,
        escape(&header.target),
        escape(&header.source),
    );
    out.push_str(commands);
    out.push_str("<Final/>\n</SyncBody>\n</SyncML>\n");
    Ok(out)
}

/// XML-escapes text (`&`, `<`, `>`, `"`, `'`).
pub fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> ProviderId {
        ProviderId::new("MS DM Server").unwrap()
    }

    #[test]
    fn provider_id_rules() {
        for ok in ["MS DM Server", "contoso", "A", "x.y-z_1"] {
            assert!(ProviderId::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            " lead",
            "trail ",
            "a/b",
            "a<b",
            "a&b",
            ".",
            "..",
            "tab\there",
            "é",
        ] {
            let e = ProviderId::new(bad).unwrap_err();
            assert!(matches!(e, BuildError::InvalidProviderId { .. }), "{bad}");
            assert!(e.to_string().contains("invalid provider ID"), "{e}");
        }
        assert!(ProviderId::new(&"a".repeat(129)).is_err());
        assert!(ProviderId::new(&"a".repeat(128)).is_ok());
    }

    #[test]
    fn pfn_rules() {
        for ok in [
            "Microsoft.WindowsStore_8wekyb3d8bbwe",
            "Contoso.MdmPush_abcdefghjkmnp",
            "abc_0123456789abc",
        ] {
            assert!(Pfn::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "nounderscore",
            "ab_8wekyb3d8bbwe",
            "Contoso.Mdm_short",
            "Con toso_8wekyb3d8bbwe",
            "Contoso_Mdm_8wekyb3d8bbwe",
            "Contoso<x>_8wekyb3d8bbwe",
            "Contoso.Mdm_8wekyb3d8bbw!",
        ] {
            let e = Pfn::new(bad).unwrap_err();
            assert!(matches!(e, BuildError::InvalidPfn { .. }), "{bad}");
        }
        let e = Pfn::new(&"x".repeat(500)).unwrap_err().to_string();
        assert!(e.len() < 300, "error text is shortened: {e}");
    }

    #[test]
    fn set_pfn_command_shape() {
        let mut b = SyncMlBuilder::new(provider()).with_first_cmd_id(7);
        let pfn = Pfn::new("Contoso.MdmPush_8wekyb3d8bbwe").unwrap();
        let xml = b.set_pfn(SetOp::Replace, &pfn);
        assert!(xml.starts_with("<Replace>\n  <CmdID>7</CmdID>"), "{xml}");
        assert!(
            xml.contains("<LocURI>./Vendor/MSFT/DMClient/Provider/MS DM Server/Push/PFN</LocURI>")
        );
        assert!(xml.contains("<Format xmlns=\"syncml:metinf\">chr</Format>"));
        assert!(xml.contains("<Data>Contoso.MdmPush_8wekyb3d8bbwe</Data>"));
        assert_eq!(b.next_cmd_id(), 8);
        let add = b.set_pfn(SetOp::Add, &pfn);
        assert!(add.starts_with("<Add>\n  <CmdID>8</CmdID>"));
        assert!(add.ends_with("</Add>\n"));
    }

    #[test]
    fn get_commands_and_device_root() {
        let mut b = SyncMlBuilder::new(provider()).with_root(CspRoot::Device);
        let g = b.get_channel_uri();
        assert!(g.contains(
            "<LocURI>./Device/Vendor/MSFT/DMClient/Provider/MS DM Server/Push/ChannelURI</LocURI>"
        ));
        assert!(!g.contains("<Data>"));
        let s = b.get_push_status();
        assert!(s.contains("<CmdID>2</CmdID>") && s.contains("/Push/Status</LocURI>"));
        let both = b.get(&[DmNode::PushChannelUri, DmNode::PushStatus]);
        assert_eq!(both.matches("<Item>").count(), 2);
    }

    #[test]
    fn poll_validation() {
        let ok = PollConfig {
            interval_for_first_set_of_retries: Some(15),
            number_of_first_retries: Some(8),
            interval_for_second_set_of_retries: Some(240),
            number_of_second_retries: Some(6),
            interval_for_remaining_scheduled_retries: Some(1440),
            number_of_remaining_scheduled_retries: Some(0),
            poll_on_login: Some(true),
            all_users_poll_on_first_login: Some(false),
        };
        ok.validate().unwrap();
        // Infinite first set, explicit or through the default interval of 15.
        let inf = PollConfig {
            number_of_first_retries: Some(0),
            ..PollConfig::default()
        };
        assert_eq!(
            inf.validate(),
            Err(BuildError::InfiniteFirstSet { interval: 15 })
        );
        let inf2 = PollConfig {
            interval_for_first_set_of_retries: Some(1),
            number_of_first_retries: Some(0),
            ..PollConfig::default()
        };
        assert!(matches!(
            inf2.validate(),
            Err(BuildError::InfiniteFirstSet { interval: 1 })
        ));
        // 0 retries with the first set disabled is fine.
        PollConfig {
            interval_for_first_set_of_retries: Some(0),
            number_of_first_retries: Some(0),
            ..PollConfig::default()
        }
        .validate()
        .unwrap();
        // Remaining interval boundaries: 0 ok, 1 and 1439 refused, 1440 ok.
        for (m, good) in [
            (0, true),
            (1, false),
            (1439, false),
            (1440, true),
            (10080, true),
        ] {
            let c = PollConfig {
                interval_for_remaining_scheduled_retries: Some(m),
                ..PollConfig::default()
            };
            assert_eq!(c.validate().is_ok(), good, "{m}");
        }
        let big = PollConfig {
            number_of_second_retries: Some(u32::MAX),
            ..PollConfig::default()
        };
        assert!(matches!(big.validate(), Err(BuildError::OutOfRange { .. })));
    }

    #[test]
    fn poll_builder_emits_only_set_nodes() {
        let mut b = SyncMlBuilder::new(provider());
        let cfg = PollConfig {
            interval_for_remaining_scheduled_retries: Some(1440),
            poll_on_login: Some(true),
            ..PollConfig::default()
        };
        let xml = b.poll_schedule(SetOp::Replace, &cfg).unwrap();
        assert_eq!(xml.matches("<Replace>").count(), 2);
        assert!(xml.contains("/Poll/IntervalForRemainingScheduledRetries</LocURI>"));
        assert!(xml.contains("<Format xmlns=\"syncml:metinf\">int</Format>"));
        assert!(xml.contains("<Data>1440</Data>"));
        assert!(xml.contains("/Poll/PollOnLogin</LocURI>"));
        assert!(xml.contains("<Format xmlns=\"syncml:metinf\">bool</Format>"));
        assert!(xml.contains("<Data>true</Data>"));
        assert_eq!(
            b.poll_schedule(SetOp::Replace, &PollConfig::default()),
            Err(BuildError::EmptyPollConfig)
        );
        let bad = PollConfig {
            interval_for_remaining_scheduled_retries: Some(60),
            ..PollConfig::default()
        };
        assert_eq!(
            b.poll_schedule(SetOp::Replace, &bad),
            Err(BuildError::RemainingIntervalTooShort(60))
        );
    }

    #[test]
    fn steady_interval() {
        let c = PollConfig {
            interval_for_remaining_scheduled_retries: Some(1440),
            ..PollConfig::default()
        };
        assert_eq!(c.steady_interval(), Some(Duration::from_secs(86_400)));
        let c = PollConfig {
            interval_for_second_set_of_retries: Some(480),
            number_of_second_retries: Some(0),
            interval_for_remaining_scheduled_retries: Some(1440),
            ..PollConfig::default()
        };
        assert_eq!(c.steady_interval(), Some(Duration::from_secs(480 * 60)));
        let c = PollConfig {
            interval_for_remaining_scheduled_retries: Some(1440),
            number_of_remaining_scheduled_retries: Some(5),
            ..PollConfig::default()
        };
        assert_eq!(c.steady_interval(), None);
        assert_eq!(PollConfig::default().steady_interval(), None);
    }

    #[test]
    fn classify_paths() {
        let b = SyncMlBuilder::new(provider());
        for node in [
            DmNode::PushPfn,
            DmNode::PushChannelUri,
            DmNode::PushStatus,
            DmNode::Poll(PollNode::PollOnLogin),
            DmNode::Poll(PollNode::IntervalForRemainingScheduledRetries),
        ] {
            assert_eq!(
                classify_node(&b.node_uri(node)),
                Some(("MS DM Server", node))
            );
        }
        assert_eq!(
            classify_node("./Device/Vendor/MSFT/DMClient/Provider/X/Push/ChannelURI"),
            Some(("X", DmNode::PushChannelUri))
        );
        assert_eq!(
            classify_node("./vendor/msft/dmclient/provider/X/push/channeluri"),
            Some(("X", DmNode::PushChannelUri))
        );
        assert_eq!(
            classify_node("Vendor/MSFT/DMClient/Provider/X/Push/Status"),
            Some(("X", DmNode::PushStatus))
        );
        for no in [
            "./Vendor/MSFT/DMClient/Provider//Push/PFN",
            "./Vendor/MSFT/DMClient/Provider/X/Push",
            "./Vendor/MSFT/DMClient/Provider/X/Push/Other",
            "./Vendor/MSFT/Policy/Config/X",
            "./DevInfo/DevId",
            "",
            "./Vendor/MSFT/DMClient/Provider/X/Poll/Nope",
        ] {
            assert_eq!(classify_node(no), None, "{no}");
        }
    }

    #[test]
    fn message_wrapper_and_escaping() {
        let hdr = SyncHeader {
            session_id: "1A".into(),
            msg_id: 2,
            target: "device<&>\"'".into(),
            source: "https://mdm.contoso.com/omadm?a=1&b=2".into(),
        };
        let msg = sync_message(&hdr, "<Get>\n</Get>\n").unwrap();
        assert!(msg.starts_with("<SyncML xmlns=\"SYNCML:SYNCML1.2\">"));
        assert!(msg.contains("<LocURI>device&lt;&amp;&gt;&quot;&apos;</LocURI>"));
        assert!(msg.contains("?a=1&amp;b=2"));
        assert!(msg.contains("<Final/>\n</SyncBody>\n</SyncML>"));
        let bad = SyncHeader {
            target: "a\nb".into(),
            ..hdr.clone()
        };
        assert!(matches!(
            sync_message(&bad, ""),
            Err(BuildError::InvalidHeader {
                field: "Target",
                ..
            })
        ));
        let bad = SyncHeader {
            session_id: " ".into(),
            ..hdr
        };
        assert!(sync_message(&bad, "").is_err());
    }
}
