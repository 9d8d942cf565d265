//! MDM-side support for push: SyncML for the DMClient CSP ([`syncml`] builds
//! commands, [`parse`] reads device replies), the channel lifecycle as pure
//! decisions ([`policy`]) and the embedded channel store ([`store`]).
//!
//! The flow this supports, per the MDM push document: set `Push/PFN` once, read
//! `Push/ChannelURI` (and `Push/Status`) in every management session, push only
//! live channels, set the PFN again after a 410 and before 30 days, and keep a
//! poll schedule because push does not replace polling.

pub mod parse;
pub mod policy;
pub mod store;
pub mod syncml;

pub use parse::{
    parse_commands, parse_device_reply, ChannelReport, CmdStatus, PushStatus, SyncMlError,
};
pub use policy::{
    ChannelRecord, DueCategory, DueEntry, Policy, PushDecision, ResetReason, SkipReason,
};
pub use store::{ChannelStore, StoreError, Update};
pub use syncml::{
    BuildError, CspRoot, Pfn, PollConfig, ProviderId, SetOp, SyncHeader, SyncMlBuilder,
};

/// Test helpers shared by the MDM and CLI tests.
#[cfg(test)]
pub(crate) mod test_support {
    use std::path::PathBuf;

    /// A temporary directory removed on drop.
    pub(crate) struct TempDir(PathBuf);

    impl TempDir {
        /// A fresh directory under the system temp dir.
        pub(crate) fn new(tag: &str) -> Self {
            let n = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let p = std::env::temp_dir()
                .join(format!("fleetwake-mdm-{tag}-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }

        /// A path inside it.
        pub(crate) fn join(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
