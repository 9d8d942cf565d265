//! The checkpoint: a small JSON file beside the report, rewritten atomically
//! (write to a temporary file, then rename). It records which campaign the
//! report belongs to (a fingerprint of the arguments), the input line below
//! which every device has a row in the report (the watermark), and whether the
//! campaign finished. The report itself is the journal: on resume it is read
//! back to learn which devices past the watermark are already done.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The checkpoint file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Format version.
    pub version: u32,
    /// Identifies the campaign's arguments; a resume with other arguments is refused.
    pub fingerprint: String,
    /// Every input line below this one has its row in the report.
    pub watermark_line: u64,
    /// Report size when the checkpoint was written.
    pub report_bytes: u64,
    /// True once the campaign ended normally.
    pub complete: bool,
    /// True when the last run was interrupted by a signal.
    pub interrupted: bool,
    /// RFC 3339 time of the last write.
    pub updated_at: String,
}

/// Where the checkpoint of a report lives.
pub fn path_for(report: &Path) -> PathBuf {
    let mut s = report.as_os_str().to_owned();
    s.push(".checkpoint");
    PathBuf::from(s)
}

impl Checkpoint {
    /// Reads a checkpoint; `Ok(None)` when there is none.
    pub fn read(path: &Path) -> Result<Option<Checkpoint>, String> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| format!("{}: not a fleetwake checkpoint: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Writes atomically.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)
    }
}
