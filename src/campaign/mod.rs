//! Bulk wake campaigns: stream a device list through the engine and write one
//! report row per device, resumably.
//!
//! - [`input`] holds the streaming CSV/JSONL reader;
//! - [`report`] holds the per-device row (shared with the consumer and HTTP API);
//! - [`dedupe`] holds the compact channel table (a channel is pushed once);
//! - [`checkpoint`] holds the resume marker;
//! - [`summary`] holds the summary, action lists and table;
//! - [`html`] holds the self-contained HTML report;
//! - [`store`] holds the link to the channel store (`--store`).
//!
//! Invariants:
//! - Every input line that holds a device ends with exactly one report row,
//!   bad rows included (with their line number and reason).
//! - A channel is pushed at most once per campaign; later devices with the same
//!   channel get the first push's outcome, marked `coalesced`.
//! - Memory is bounded: rows are read one at a time, at most
//!   `max_outstanding` devices are between reading and their row, and the
//!   channel table costs 8 bytes per distinct channel.
//! - The report is the journal. Rows of finished pushes are flushed as soon as no
//!   other finished push is ready, so after a SIGKILL only the pushes that were in
//!   flight (plus that last handful) are sent again on resume.
//! - A device that was never tried because its tenant's token endpoint, or its
//!   channel host, is down (an open breaker: nothing was pushed) gets no row:
//!   the checkpoint stays below it and is not marked complete, so running the
//!   same command again wakes it. When every tenant's token breaker is open,
//!   reading stops: nothing could be tried.

pub mod checkpoint;
pub mod dedupe;
pub mod html;
pub mod input;
pub mod report;
pub mod store;
pub mod summary;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::io::{BufRead, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use tokio::sync::{mpsc, watch};

use crate::engine::{Engine, Notification};
use crate::wns::{ChannelUri, Outcome, OutcomeKind, PushOptions};
use checkpoint::Checkpoint;
use dedupe::{ChannelKey, ChannelState, ChannelTable};
use input::{DeviceReader, DeviceRow, InputRow};
use report::{ReportRow, RowSubject};
use summary::LatencyHistogram;

/// A hook that may decide a device's outcome without a push (e.g. the channel
/// store knows the channel is dead).
pub type SkipHook = Arc<dyn Fn(&DeviceRow, &ChannelUri) -> Option<Outcome> + Send + Sync>;
/// A hook called with every row written (e.g. to record it in the channel store).
pub type RowHook = Arc<dyn Fn(&ReportRow) + Send + Sync>;

/// How progress is shown.
#[derive(Debug, Clone)]
pub enum ProgressMode {
    /// An indicatif bar on stderr sized by input bytes (0 when unknown).
    Bar {
        /// Input size in bytes, if known.
        total_bytes: u64,
    },
    /// A log line every `every`.
    Log {
        /// Interval.
        every: Duration,
    },
    /// Nothing.
    Quiet,
}

/// Campaign settings.
#[derive(Clone)]
pub struct CampaignOptions {
    /// The JSONL report (also the journal).
    pub report: PathBuf,
    /// Stop at the first bad row.
    pub strict: bool,
    /// Ignore an existing report/checkpoint and start over.
    pub restart: bool,
    /// Identifies the campaign's arguments, for safe resume.
    pub fingerprint: String,
    /// Most devices between being read and having their row.
    pub max_outstanding: usize,
    /// Push options for every wake.
    pub push: PushOptions,
    /// Channels first seen longer ago than this are not pushed (`channel_stale`).
    pub stale_after: Duration,
    /// How often the checkpoint is written.
    pub checkpoint_every: Duration,
    /// Progress display.
    pub progress: ProgressMode,
    /// Optional pre-push decision.
    pub skip: Option<SkipHook>,
    /// Optional per-row observer.
    pub on_row: Option<RowHook>,
    /// At most this many devices will be read (the device file's line
    /// count), if known: the channel table is sized for them at the start
    /// (up to [`RESERVE_AT_MOST`]) instead of doubling as it fills.
    pub expected_devices: Option<u64>,
}

/// The most devices the channel table is sized for up front (about 300 MB of
/// table); beyond that it grows as it fills.
pub const RESERVE_AT_MOST: u64 = 16_000_000;

impl std::fmt::Debug for CampaignOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CampaignOptions")
            .field("report", &self.report)
            .field("strict", &self.strict)
            .finish()
    }
}

impl CampaignOptions {
    /// Defaults for a report path.
    pub fn new(report: impl Into<PathBuf>) -> Self {
        CampaignOptions {
            report: report.into(),
            strict: false,
            restart: false,
            fingerprint: String::new(),
            max_outstanding: 2048,
            push: PushOptions::default(),
            stale_after: Duration::from_secs(30 * 86_400),
            checkpoint_every: Duration::from_secs(1),
            progress: ProgressMode::Quiet,
            skip: None,
            on_row: None,
            expected_devices: None,
        }
    }
}

/// One second of the campaign, for the HTML charts.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TimelinePoint {
    /// Seconds since the run started (end of this interval).
    pub t: f64,
    /// Devices finished in this interval (about a second).
    pub done: u64,
    /// Of which received.
    pub received: u64,
    /// Devices finished per second over the interval.
    pub per_s: f64,
    /// Received per second over the interval.
    pub received_per_s: f64,
    /// Median latency of pushes finished in this second, ms.
    pub p50_ms: f64,
    /// 95th percentile, ms.
    pub p95_ms: f64,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct CampaignRun {
    /// Stopped by the stop signal (SIGINT/SIGTERM) after draining.
    pub interrupted: bool,
    /// `--strict` stopped at this line, for this reason.
    pub strict_stop: Option<(u64, String)>,
    /// The campaign was already complete; nothing was sent.
    pub already_complete: bool,
    /// Rows written in this run.
    pub rows_written: u64,
    /// Devices skipped because an earlier run already finished them.
    pub resumed_skipped: u64,
    /// Wall time of this run.
    pub duration: Duration,
    /// Per-second progress of this run.
    pub timeline: Vec<TimelinePoint>,
    /// Devices not tried because an endpoint was down, by what was down
    /// (`tenant NAME` or `host HOST`); they have no row and a run of the same
    /// command wakes them.
    pub not_tried: Vec<NotTried>,
    /// Reading stopped before this input line because every tenant's token
    /// endpoint was down; the rest of the input was not tried either.
    pub stopped_reading_at: Option<u64>,
}

/// Devices a campaign could not try: their token endpoint or channel host was down.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NotTried {
    /// `tenant NAME` or `host HOST`.
    pub what: String,
    /// How many devices.
    pub devices: u64,
    /// The last error: what failed, where, the OS error.
    pub error: String,
}

/// True when `o` ended undelivered because an endpoint was down: no token
/// could be had, or an open breaker (see [`Outcome::endpoint_down`]).
pub fn untried_for_outage(o: &Outcome) -> bool {
    o.endpoint_down
}

/// A campaign that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    /// The input could not be read.
    #[error(transparent)]
    Input(#[from] input::InputError),
    /// The report or checkpoint could not be used.
    #[error("{0}")]
    Report(String),
    /// Writing failed.
    #[error("writing {path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
}

struct Meta {
    line: u64,
    device_id: String,
    tenant: String,
    channel: ChannelUri,
    key: ChannelKey,
}

type Pending = Pin<Box<dyn Future<Output = (Meta, Outcome)> + Send>>;

/// What the report already holds (from an earlier, interrupted run).
struct Resume {
    watermark: u64,
    done_lines: HashSet<u64>,
    table: ChannelTable,
    report_len: u64,
}

/// Decides between a fresh start, a resume, or "already complete".
fn prepare(opts: &CampaignOptions) -> Result<Option<Resume>, CampaignError> {
    let cp_path = checkpoint::path_for(&opts.report);
    let report_err = |m: String| CampaignError::Report(m);
    if opts.restart {
        for p in [&opts.report, &cp_path] {
            match std::fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    return Err(CampaignError::Io {
                        path: p.clone(),
                        error,
                    })
                }
            }
        }
    }
    let cp = Checkpoint::read(&cp_path).map_err(report_err)?;
    let report_exists = std::fs::metadata(&opts.report)
        .map(|m| m.len() > 0)
        .unwrap_or(false);
    match cp {
        None if report_exists => Err(report_err(format!(
            "{} exists and is not a campaign in progress (no checkpoint); use --restart to overwrite it or pick another --report",
            opts.report.display()
        ))),
        None => Ok(None),
        Some(cp) if cp.fingerprint != opts.fingerprint => Err(report_err(format!(
            "{} belongs to a campaign with other arguments; run with the same arguments to resume, or --restart",
            opts.report.display()
        ))),
        Some(cp) => {
            let (done_lines, table, report_len) = scan_report(&opts.report, cp.watermark_line)?;
            Ok(Some(Resume { watermark: if cp.complete { u64::MAX } else { cp.watermark_line }, done_lines, table, report_len }))
        }
    }
}

/// Reads an existing report: the lines at or past `watermark` that are done,
/// the channel table, and the length up to the last complete row (a row cut
/// by a crash is dropped).
fn scan_report(
    path: &PathBuf,
    watermark: u64,
) -> Result<(HashSet<u64>, ChannelTable, u64), CampaignError> {
    let io = |error| CampaignError::Io {
        path: path.clone(),
        error,
    };
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((HashSet::new(), ChannelTable::new(), 0))
        }
        Err(e) => return Err(io(e)),
    };
    let mut done = HashSet::new();
    let mut table = ChannelTable::new();
    let mut good_len = 0u64;
    let mut reader = std::io::BufReader::new(&mut f);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(io)?;
        if n == 0 || buf.last() != Some(&b'\n') {
            break;
        }
        good_len += n as u64;
        let Ok(row) = serde_json::from_slice::<ReportRow>(&buf) else {
            continue;
        };
        if let Some(line) = row.line {
            if line >= watermark {
                done.insert(line);
            }
        }
        if let (Some(uri), Some(kind)) = (&row.channel_uri, row.kind()) {
            if row.status.is_some() || row.coalesced || kind == OutcomeKind::ChannelStale {
                table.set(ChannelKey::of(uri), ChannelState::Done(kind));
            }
        }
    }
    drop(reader);
    let mut rest = Vec::new();
    f.seek(SeekFrom::Start(good_len)).map_err(io)?;
    f.read_to_end(&mut rest).map_err(io)?;
    if !rest.is_empty() {
        // A row cut short by the crash: drop it (its device is sent again).
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io)?;
        f.set_len(good_len).map_err(io)?;
    }
    Ok((done, table, good_len))
}

/// Runs a campaign to the end (or until `stop` turns true, then drains).
pub async fn run<R: BufRead + Send + 'static>(
    engine: &Engine,
    mut reader: DeviceReader<R>,
    opts: CampaignOptions,
    mut stop: watch::Receiver<bool>,
) -> Result<CampaignRun, CampaignError> {
    let started = Instant::now();
    let resume = prepare(&opts)?;
    let cp_path = checkpoint::path_for(&opts.report);
    let io = |error| CampaignError::Io {
        path: opts.report.clone(),
        error,
    };
    if let Some(r) = &resume {
        if r.watermark == u64::MAX {
            return Ok(CampaignRun {
                interrupted: false,
                strict_stop: None,
                already_complete: true,
                rows_written: 0,
                resumed_skipped: 0,
                duration: started.elapsed(),
                timeline: Vec::new(),
                not_tried: Vec::new(),
                stopped_reading_at: None,
            });
        }
    }
    let (watermark0, mut done_lines, mut table, mut report_bytes) = match resume {
        Some(r) => (r.watermark, r.done_lines, r.table, r.report_len),
        None => (0, HashSet::new(), ChannelTable::new(), 0),
    };
    if let Some(n) = opts.expected_devices {
        // A resumed table already holds some of the file's channels.
        table.reserve_total(n.min(RESERVE_AT_MOST) as usize);
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&opts.report)
        .map_err(io)?;
    let mut out = BufWriter::with_capacity(256 * 1024, file);

    // The reader thread: parses rows and skips the ones already done.
    let (tx, mut rows) = mpsc::channel::<(InputRow, u64)>(1024);
    let skipped_before = done_lines.len() as u64;
    let reader_task = tokio::task::spawn_blocking(move || -> Result<u64, input::InputError> {
        let mut skipped = 0u64;
        while let Some(row) = reader.next_row()? {
            if row.line < watermark0 || done_lines.remove(&row.line) {
                skipped += 1;
                continue;
            }
            if tx.blocking_send((row, reader.bytes_read())).is_err() {
                break;
            }
        }
        Ok(skipped)
    });

    let mut progress = Progress::new(&opts.progress);
    let mut inflight: FuturesUnordered<Pending> = FuturesUnordered::new();
    let mut dup_waiters: HashMap<ChannelKey, Vec<Meta>> = HashMap::new();
    let mut outstanding: BTreeSet<u64> = BTreeSet::new();
    let mut next_line = watermark0.max(1);
    let mut reading = true;
    let mut interrupted = false;
    let mut strict_stop = None;
    let mut rows_written = 0u64;
    let mut timeline = Vec::new();
    let mut second = Second::default();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_checkpoint = Instant::now();
    let push = opts.push.clone();
    // Devices not tried for an outage: the first such line (the checkpoint
    // stays below it) and, by what was down, how many and the last error.
    let mut first_untried: Option<u64> = None;
    let mut not_tried: std::collections::BTreeMap<String, (u64, String)> = Default::default();
    let mut outage_stop = false;

    let mut writer = RowWriter {
        out: &mut out,
        bytes: &mut report_bytes,
        written: &mut rows_written,
        on_row: opts.on_row.clone(),
    };

    loop {
        let mut completed = Vec::new();
        tokio::select! {
            biased;
            Some(done) = inflight.next(), if !inflight.is_empty() => {
                completed.push(done);
                while let Some(Some(more)) = inflight.next().now_or_never() {
                    completed.push(more);
                }
            }
            changed = stop.changed(), if !interrupted => {
                if changed.is_err() || *stop.borrow() {
                    reading = false;
                    interrupted = true;
                    rows.close();
                    // Requests in flight finish; wakes not yet sent end as
                    // `shut_down` and get no row, so a resume sends them.
                    engine.drain();
                }
            }
            row = rows.recv(), if reading && outstanding.len() < opts.max_outstanding => match row {
                None => reading = false,
                Some((row, bytes)) => {
                    progress.bytes = bytes;
                    next_line = next_line.max(row.line + 1);
                    let line = row.line;
                    match admit(row, engine, &opts, &push, &mut table) {
                        Admit::Row(subject, outcome, bad) => {
                            writer.write(&subject.as_subject(), &outcome).map_err(io)?;
                            progress.count(&outcome);
                            second.count(&outcome);
                            if let Some(reason) = bad.filter(|_| opts.strict) {
                                strict_stop = Some((line, reason));
                                reading = false;
                                rows.close();
                            }
                        }
                        Admit::Wait(meta) => {
                            outstanding.insert(meta.line);
                            dup_waiters.entry(meta.key).or_default().push(meta);
                        }
                        Admit::Send(meta, fut) => {
                            outstanding.insert(meta.line);
                            inflight.push(Box::pin(fut.map(move |o| (meta, o))));
                        }
                    }
                }
            },
            _ = tick.tick() => {
                if reading && !outage_stop && !not_tried.is_empty() && engine.health().all_tenants_down() {
                    outage_stop = true;
                    reading = false;
                    rows.close();
                    tracing::error!("every tenant's token endpoint is down: the campaign stops reading; the checkpoint is kept");
                }
            }
            else => break,
        }
        for (meta, outcome) in completed {
            if untried_for_outage(&outcome) {
                // Nothing was pushed: no row, so a resume wakes this device
                // and those waiting on its channel.
                table.set(meta.key, ChannelState::New);
                let what = if outcome.kind == OutcomeKind::TokenUnavailable {
                    format!("tenant {:?}", meta.tenant)
                } else {
                    format!("host {}", meta.channel.host())
                };
                let mut lines = vec![meta.line];
                lines.extend(
                    dup_waiters
                        .remove(&meta.key)
                        .unwrap_or_default()
                        .iter()
                        .map(|d| d.line),
                );
                let entry = not_tried.entry(what).or_default();
                entry.0 += lines.len() as u64;
                entry.1 = outcome.detail.clone().unwrap_or_default();
                for line in lines {
                    outstanding.remove(&line);
                    first_untried = Some(first_untried.map_or(line, |f| f.min(line)));
                }
                if reading && !outage_stop && engine.health().all_tenants_down() {
                    // No tenant can get a token: nothing further could be tried.
                    outage_stop = true;
                    reading = false;
                    rows.close();
                    tracing::error!("every tenant's token endpoint is down: the campaign stops reading; the checkpoint is kept");
                }
                continue;
            }
            if outcome.kind == OutcomeKind::ShutDown {
                // Never sent: no row, the line stays below the watermark, and
                // devices waiting on this channel are left for the resume too.
                table.set(meta.key, ChannelState::New);
                dup_waiters.remove(&meta.key);
                continue;
            }
            table.set(meta.key, ChannelState::Done(outcome.kind));
            outstanding.remove(&meta.line);
            writer.write(&meta.as_subject(), &outcome).map_err(io)?;
            progress.count(&outcome);
            second.count(&outcome);
            for dup in dup_waiters.remove(&meta.key).unwrap_or_default() {
                let mut o = outcome.clone();
                o.coalesced = true;
                outstanding.remove(&dup.line);
                writer.write(&dup.as_subject(), &o).map_err(io)?;
                progress.count(&o);
                second.count(&o);
            }
        }
        writer.out.flush().map_err(io)?;
        if second
            .started
            .is_some_and(|s| s.elapsed() >= Duration::from_secs(1))
        {
            timeline.push(second.close(started));
        }
        progress.tick();
        let finished = !reading && inflight.is_empty() && (dup_waiters.is_empty() || interrupted);
        if finished || last_checkpoint.elapsed() >= opts.checkpoint_every {
            let watermark = outstanding.first().copied().unwrap_or(next_line);
            let watermark = first_untried.map_or(watermark, |f| f.min(watermark));
            let cp = Checkpoint {
                version: 1,
                fingerprint: opts.fingerprint.clone(),
                watermark_line: watermark,
                report_bytes: *writer.bytes,
                complete: finished
                    && !interrupted
                    && strict_stop.is_none()
                    && first_untried.is_none()
                    && !outage_stop,
                interrupted,
                updated_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            };
            cp.write(&cp_path).map_err(|error| CampaignError::Io {
                path: cp_path.clone(),
                error,
            })?;
            last_checkpoint = Instant::now();
        }
        if finished {
            break;
        }
    }
    drop(rows);
    let skipped = match reader_task.await {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => {
            progress.finish();
            return Err(e.into());
        }
        Err(e) => return Err(CampaignError::Report(format!("input reader failed: {e}"))),
    };
    if second.done > 0 {
        timeline.push(second.close(started));
    }
    progress.finish();
    Ok(CampaignRun {
        interrupted,
        strict_stop,
        already_complete: false,
        rows_written,
        resumed_skipped: skipped.max(skipped_before),
        duration: started.elapsed(),
        timeline,
        not_tried: not_tried
            .into_iter()
            .map(|(what, (devices, error))| NotTried {
                what,
                devices,
                error,
            })
            .collect(),
        stopped_reading_at: outage_stop.then_some(next_line),
    })
}

enum Admit {
    /// Final without a push: write this row now. The `String` is set for bad rows.
    Row(Subject, Box<Outcome>, Option<String>),
    /// A push for this channel is pending: wait for it.
    Wait(Meta),
    /// Push it.
    Send(Meta, Pin<Box<dyn Future<Output = Outcome> + Send>>),
}

struct Subject {
    line: u64,
    device_id: Option<String>,
    tenant: Option<String>,
    channel_uri: Option<String>,
}

impl Subject {
    fn as_subject(&self) -> RowSubject<'_> {
        RowSubject {
            line: Some(self.line),
            device_id: self.device_id.as_deref(),
            tenant: self.tenant.as_deref(),
            channel_uri: self.channel_uri.as_deref(),
        }
    }
}

impl Meta {
    fn as_subject(&self) -> RowSubject<'_> {
        RowSubject {
            line: Some(self.line),
            device_id: Some(&self.device_id),
            tenant: Some(&self.tenant),
            channel_uri: Some(self.channel.as_str()),
        }
    }
}

fn admit(
    row: InputRow,
    engine: &Engine,
    opts: &CampaignOptions,
    push: &PushOptions,
    table: &mut ChannelTable,
) -> Admit {
    let line = row.line;
    let d = match row.row {
        Err(e) => {
            let o = Outcome::local(OutcomeKind::InvalidInput, e.reason.clone());
            let s = Subject {
                line,
                device_id: e.device_id,
                tenant: None,
                channel_uri: None,
            };
            return Admit::Row(s, Box::new(o), Some(e.reason));
        }
        Ok(d) => d,
    };
    let subject = |d: &DeviceRow| Subject {
        line,
        device_id: Some(d.device_id.clone()),
        tenant: Some(d.tenant.clone()),
        channel_uri: Some(d.channel_uri.clone()),
    };
    let channel = match ChannelUri::parse(&d.channel_uri) {
        Ok(c) => c,
        Err(e) => {
            let o = Outcome::local(OutcomeKind::InvalidChannel, e.to_string());
            return Admit::Row(subject(&d), Box::new(o), Some(e.to_string()));
        }
    };
    if !engine.has_tenant(&d.tenant) {
        let reason = format!("tenant {:?} is not in the config", d.tenant);
        let o = Outcome::local(OutcomeKind::UnknownTenant, reason.clone());
        return Admit::Row(subject(&d), Box::new(o), Some(reason));
    }
    if let Some(seen) = d.channel_seen_at {
        let age = SystemTime::now().duration_since(seen).unwrap_or_default();
        if age > opts.stale_after {
            let days = age.as_secs() / 86_400;
            let o = Outcome::local(
                OutcomeKind::ChannelStale,
                format!("channel is {days} days old; channels expire after 30 days"),
            );
            return Admit::Row(subject(&d), Box::new(o), None);
        }
    }
    if let Some(skip) = &opts.skip {
        if let Some(o) = skip(&d, &channel) {
            return Admit::Row(subject(&d), Box::new(o), None);
        }
    }
    let key = ChannelKey::of(channel.as_str());
    let meta = Meta {
        line,
        device_id: d.device_id,
        tenant: d.tenant,
        channel,
        key,
    };
    match table.state(key) {
        ChannelState::Done(kind) => {
            let mut o = Outcome::local(
                kind,
                "shares the push of an earlier device with the same channel",
            );
            o.coalesced = true;
            let s = Subject {
                line,
                device_id: Some(meta.device_id),
                tenant: Some(meta.tenant),
                channel_uri: Some(meta.channel.as_str().to_string()),
            };
            Admit::Row(s, Box::new(o), None)
        }
        ChannelState::Pending => Admit::Wait(meta),
        ChannelState::New => {
            table.set(key, ChannelState::Pending);
            let mut n = Notification::wake(meta.tenant.as_str(), meta.channel.clone());
            n.options = push.clone();
            let e = engine.clone();
            Admit::Send(meta, Box::pin(async move { e.submit(n).await }))
        }
    }
}

struct RowWriter<'a, W: Write> {
    out: &'a mut W,
    bytes: &'a mut u64,
    written: &'a mut u64,
    on_row: Option<RowHook>,
}

impl<W: Write> RowWriter<'_, W> {
    fn write(&mut self, subject: &RowSubject<'_>, outcome: &Outcome) -> std::io::Result<()> {
        let row = ReportRow::new(subject.clone(), outcome);
        let mut line = serde_json::to_vec(&row).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.out.write_all(&line)?;
        *self.bytes += line.len() as u64;
        *self.written += 1;
        if let Some(h) = &self.on_row {
            h(&row);
        }
        Ok(())
    }
}

#[derive(Default)]
struct Second {
    started: Option<Instant>,
    done: u64,
    received: u64,
    hist: Option<LatencyHistogram>,
}

impl Second {
    fn count(&mut self, o: &Outcome) {
        self.started.get_or_insert_with(Instant::now);
        self.done += 1;
        if o.kind == OutcomeKind::Received {
            self.received += 1;
        }
        if o.attempts > 0 && !o.coalesced {
            self.hist
                .get_or_insert_with(LatencyHistogram::default)
                .record(o.latency.as_secs_f64() * 1000.0);
        }
    }

    fn close(&mut self, run_started: Instant) -> TimelinePoint {
        let t = (run_started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
        let (p50_ms, p95_ms) = self
            .hist
            .as_ref()
            .map(|h| (h.quantile(0.5), h.quantile(0.95)))
            .unwrap_or_default();
        let secs = self
            .started
            .map(|s| s.elapsed().as_secs_f64())
            .unwrap_or(1.0)
            .max(0.001);
        let p = TimelinePoint {
            t,
            done: self.done,
            received: self.received,
            per_s: (self.done as f64 / secs).round(),
            received_per_s: (self.received as f64 / secs).round(),
            p50_ms,
            p95_ms,
        };
        let hist = self.hist.take().map(|mut h| {
            h.clear();
            h
        });
        *self = Second {
            started: Some(Instant::now()),
            hist,
            ..Second::default()
        };
        p
    }
}

/// Live counts for the progress display.
struct Progress {
    mode: ProgressMode,
    bar: Option<indicatif::ProgressBar>,
    started: Instant,
    last_log: Instant,
    bytes: u64,
    done: u64,
    counts: [u64; OutcomeKind::ALL.len()],
}

impl Progress {
    fn new(mode: &ProgressMode) -> Self {
        let bar = match mode {
            ProgressMode::Bar { total_bytes } => {
                let b = if *total_bytes > 0 {
                    indicatif::ProgressBar::new(*total_bytes)
                } else {
                    indicatif::ProgressBar::no_length()
                };
                let style = indicatif::ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {percent:>3}% ETA {eta}\n{msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
                b.set_style(style);
                b.set_draw_target(indicatif::ProgressDrawTarget::stderr_with_hz(4));
                Some(b)
            }
            _ => None,
        };
        Progress {
            mode: mode.clone(),
            bar,
            started: Instant::now(),
            last_log: Instant::now(),
            bytes: 0,
            done: 0,
            counts: [0; OutcomeKind::ALL.len()],
        }
    }

    fn count(&mut self, o: &Outcome) {
        self.done += 1;
        self.counts[o.kind.index()] += 1;
    }

    fn line(&self) -> String {
        let rate = self.done as f64 / self.started.elapsed().as_secs_f64().max(0.001);
        let mut s = format!("{} devices done, {:.0}/s", self.done, rate);
        for k in OutcomeKind::ALL {
            let n = self.counts[k.index()];
            if n > 0 {
                s.push_str(&format!(", {}={}", k.as_str(), n));
            }
        }
        s
    }

    fn tick(&mut self) {
        match &self.mode {
            ProgressMode::Bar { .. } => {
                if let Some(b) = &self.bar {
                    b.set_position(self.bytes);
                    b.set_message(self.line());
                }
            }
            ProgressMode::Log { every } => {
                if self.last_log.elapsed() >= *every {
                    self.last_log = Instant::now();
                    tracing::info!(target: "fleetwake::campaign", "progress: {}", self.line());
                }
            }
            ProgressMode::Quiet => {}
        }
    }

    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.set_position(self.bytes);
            b.finish_with_message(self.line());
        } else if matches!(self.mode, ProgressMode::Log { .. }) {
            tracing::info!(target: "fleetwake::campaign", "done: {}", self.line());
        }
    }
}
