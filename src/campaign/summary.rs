//! What a campaign ends with: the summary (read back from the report, so it is
//! exact across resumes), the action lists for the MDM server, and the summary
//! table printed on stdout.

use std::collections::BTreeMap;
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::report::ReportRow;
use crate::wns::MdmAction;

/// A latency histogram with about 2% relative precision, in constant memory.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    buckets: Vec<u64>,
    count: u64,
    max_ms: f64,
}

const MIN_MS: f64 = 0.01;
const GROWTH: f64 = 1.02;
const BUCKETS: usize = 1400;

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            buckets: vec![0; BUCKETS],
            count: 0,
            max_ms: 0.0,
        }
    }
}

impl LatencyHistogram {
    /// Records one latency in milliseconds.
    pub fn record(&mut self, ms: f64) {
        let ms = if ms.is_finite() { ms.max(0.0) } else { 0.0 };
        let i = if ms <= MIN_MS {
            0
        } else {
            ((ms / MIN_MS).ln() / GROWTH.ln()) as usize + 1
        };
        self.buckets[i.min(BUCKETS - 1)] += 1;
        self.count += 1;
        self.max_ms = self.max_ms.max(ms);
    }

    /// The value at quantile `q` (0..=1), in ms; 0 when empty.
    pub fn quantile(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let target = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= target {
                let upper = if i == 0 {
                    MIN_MS
                } else {
                    MIN_MS * GROWTH.powi(i as i32)
                };
                return upper.min(self.max_ms);
            }
        }
        self.max_ms
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Empties it.
    pub fn clear(&mut self) {
        self.buckets.iter_mut().for_each(|b| *b = 0);
        self.count = 0;
        self.max_ms = 0.0;
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Percentiles {
    /// From a histogram.
    pub fn of(h: &LatencyHistogram) -> Self {
        let r = |x: f64| (x * 1000.0).round() / 1000.0;
        Percentiles {
            p50: r(h.quantile(0.5)),
            p90: r(h.quantile(0.9)),
            p99: r(h.quantile(0.99)),
            max: r(h.max_ms),
        }
    }
}

/// The end-of-campaign summary (also written as JSON).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Devices with a row in the report.
    pub devices: u64,
    /// Rows by outcome.
    pub by_outcome: BTreeMap<String, u64>,
    /// Rows by MDM action.
    pub by_action: BTreeMap<String, u64>,
    /// Devices that shared a push with another device of the same channel.
    pub coalesced: u64,
    /// HTTP requests sent (sum of attempts; shared pushes counted once).
    pub requests: u64,
    /// Latency of pushed wakes.
    pub latency_ms: Percentiles,
    /// Wall time of the last run, seconds.
    pub duration_s: f64,
    /// Devices finished per second in the last run.
    pub devices_per_s: f64,
    /// True when the last run was stopped by a signal.
    pub interrupted: bool,
    /// Action list files written.
    pub action_lists: BTreeMap<String, PathBuf>,
    /// The report file.
    pub report: PathBuf,
    /// The first [`INLINE_LIST`] devices of each action list, for the HTML
    /// page (the lists themselves are the CSV files).
    #[serde(skip)]
    pub action_examples: BTreeMap<String, Vec<ActionExample>>,
}

/// How many devices of each action list the summary keeps for the HTML page.
pub const INLINE_LIST: usize = 200;

/// One device of an action list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActionExample {
    /// The device id.
    pub device_id: String,
    /// Its tenant.
    pub tenant: String,
    /// Its outcome.
    pub outcome: String,
    /// Its line in the input.
    pub line: Option<u64>,
}

impl Summary {
    /// Rows whose outcome is `received`.
    pub fn received(&self) -> u64 {
        self.by_outcome.get("received").copied().unwrap_or(0)
    }

    /// Rows whose outcome is anything else.
    pub fn not_received(&self) -> u64 {
        self.devices - self.received()
    }
}

/// Actions that get a list file.
pub const LISTED_ACTIONS: &[MdmAction] = &[
    MdmAction::ResetPfnAtNextSync,
    MdmAction::RefreshChannelAtNextSync,
    MdmAction::FixPfnOrCredentials,
    MdmAction::FixCredentials,
    MdmAction::StopPushingForPfn,
    MdmAction::RetryLater,
    MdmAction::FixRequest,
    MdmAction::FixChannelRecord,
    MdmAction::FixConfig,
    MdmAction::FixInput,
];

/// Where the action lists of a report go: `<report>.actions/`.
pub fn actions_dir(report: &Path) -> PathBuf {
    let mut s = report.as_os_str().to_owned();
    s.push(".actions");
    PathBuf::from(s)
}

/// Reads the whole report, counts it, and writes one CSV list per action
/// (`device_id,tenant,channel_uri,outcome,line`) into `dir`.
pub fn summarize(report: &Path, dir: Option<&Path>) -> std::io::Result<Summary> {
    let file = std::fs::File::open(report)?;
    let mut s = Summary {
        report: report.to_path_buf(),
        ..Summary::default()
    };
    let mut hist = LatencyHistogram::default();
    let mut lists: BTreeMap<&'static str, BufWriter<std::fs::File>> = BTreeMap::new();
    if let Some(d) = dir {
        if d.exists() {
            std::fs::remove_dir_all(d)?;
        }
        std::fs::create_dir_all(d)?;
    }
    for line in std::io::BufReader::new(file).lines() {
        let line = line?;
        let Ok(row) = serde_json::from_str::<ReportRow>(&line) else {
            continue;
        };
        s.devices += 1;
        *s.by_outcome.entry(row.outcome.clone()).or_default() += 1;
        *s.by_action.entry(row.action.clone()).or_default() += 1;
        if row.coalesced {
            s.coalesced += 1;
        } else {
            s.requests += u64::from(row.attempts);
            if row.attempts > 0 {
                hist.record(row.latency_ms);
            }
        }
        let (Some(d), Some(action)) = (dir, row.mdm_action()) else {
            continue;
        };
        if !LISTED_ACTIONS.contains(&action) {
            continue;
        }
        let w = match lists.entry(action.as_str()) {
            std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::btree_map::Entry::Vacant(v) => {
                let path = d.join(format!("{}.csv", action.as_str()));
                let mut w = BufWriter::new(std::fs::File::create(&path)?);
                writeln!(w, "device_id,tenant,channel_uri,outcome,line")?;
                s.action_lists.insert(action.as_str().to_string(), path);
                v.insert(w)
            }
        };
        let examples = s
            .action_examples
            .entry(action.as_str().to_string())
            .or_default();
        if examples.len() < INLINE_LIST {
            examples.push(ActionExample {
                device_id: row.device_id.clone().unwrap_or_default(),
                tenant: row.tenant.clone().unwrap_or_default(),
                outcome: row.outcome.clone(),
                line: row.line,
            });
        }
        writeln!(
            w,
            "{},{},{},{},{}",
            csv_field(row.device_id.as_deref().unwrap_or("")),
            csv_field(row.tenant.as_deref().unwrap_or("")),
            csv_field(row.channel_uri.as_deref().unwrap_or("")),
            row.outcome,
            row.line.map(|l| l.to_string()).unwrap_or_default()
        )?;
    }
    for (_, mut w) in lists {
        w.flush()?;
    }
    s.latency_ms = Percentiles::of(&hist);
    Ok(s)
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The summary as a table for people.
pub fn render_table(s: &Summary) -> String {
    let mut out = String::new();
    let w = |out: &mut String, k: &str, v: String| out.push_str(&format!("  {k:<34} {v:>12}\n"));
    out.push_str(&format!("Campaign summary ({})\n", s.report.display()));
    w(&mut out, "devices", s.devices.to_string());
    w(&mut out, "requests sent", s.requests.to_string());
    w(
        &mut out,
        "shared a push (same channel)",
        s.coalesced.to_string(),
    );
    w(
        &mut out,
        "duration (this run)",
        format!("{:.1} s", s.duration_s),
    );
    w(&mut out, "throughput", format!("{:.0}/s", s.devices_per_s));
    w(
        &mut out,
        "latency p50 / p99",
        format!("{:.1} / {:.1} ms", s.latency_ms.p50, s.latency_ms.p99),
    );
    out.push_str("\nOutcome                              devices   share\n");
    let total = s.devices.max(1) as f64;
    let mut rows: Vec<_> = s.by_outcome.iter().collect();
    rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (k, n) in rows {
        out.push_str(&format!(
            "  {k:<34} {n:>8} {:>6.2}%\n",
            *n as f64 * 100.0 / total
        ));
    }
    out.push_str("\nMDM action                           devices   what to do\n");
    let mut rows: Vec<_> = s.by_action.iter().collect();
    rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (k, n) in rows {
        let what = crate::wns::OutcomeKind::ALL
            .iter()
            .map(|o| o.mdm_action())
            .find(|a| a.as_str() == k)
            .map(|a| a.describe())
            .unwrap_or("");
        out.push_str(&format!("  {k:<34} {n:>8}   {what}\n"));
    }
    if !s.action_lists.is_empty() {
        out.push_str("\nAction lists\n");
        for (k, p) in &s.action_lists {
            out.push_str(&format!("  {k:<34} {}\n", p.display()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_are_close() {
        let mut h = LatencyHistogram::default();
        for i in 1..=1000 {
            h.record(i as f64);
        }
        let p50 = h.quantile(0.5);
        assert!((490.0..=520.0).contains(&p50), "{p50}");
        let p99 = h.quantile(0.99);
        assert!((980.0..=1000.0).contains(&p99), "{p99}");
        assert_eq!(h.quantile(1.0), 1000.0);
        h.record(f64::NAN);
        h.record(1e12);
        assert_eq!(h.count(), 1002);
    }
}
