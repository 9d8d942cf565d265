//! A campaign that uses the channel store (`fleetwake campaign --store`): before
//! a push, the store's [`Policy`] decides whether the device's channel is worth
//! pushing (dead channels are skipped and listed for a PFN reset); after it,
//! every report row is recorded in the store.
//!
//! Reads happen inline; writes go through a bounded channel to one writer
//! thread that applies them in batches (one redb transaction per batch), so the
//! campaign is not slowed by a commit per device.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use super::report::ReportRow;
use super::{RowHook, SkipHook};
use crate::mdm::{ChannelStore, Policy, PushDecision, SkipReason, StoreError, Update};
use crate::wns::{Outcome, OutcomeKind};

/// Rows buffered between the campaign and the store writer.
const QUEUE: usize = 16 * 1024;
/// Most updates in one transaction.
const BATCH: usize = 4096;

/// The hooks that connect a campaign to a store, and the writer to join at the end.
pub struct StoreLink {
    /// Put into [`super::CampaignOptions::skip`].
    pub skip: SkipHook,
    /// Put into [`super::CampaignOptions::on_row`].
    pub on_row: RowHook,
    writer: JoinHandle<Result<u64, StoreError>>,
}

impl StoreLink {
    /// Connects `store` with `policy`.
    pub fn new(store: ChannelStore, policy: Policy) -> Self {
        let store = Arc::new(store);
        let (tx, rx): (SyncSender<Update>, Receiver<Update>) = sync_channel(QUEUE);
        let reader = store.clone();
        let skip: SkipHook = Arc::new(move |row, channel| {
            let rec = match reader.get(&row.device_id) {
                Ok(Some(r)) => r,
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!(device = %row.device_id, error = %e, "channel store read failed; pushing anyway");
                    return None;
                }
            };
            // A channel the store has not seen (the device has a new one) is pushed.
            if rec.channel_uri.as_deref() != Some(channel.as_str()) {
                return None;
            }
            match policy.should_push(&rec, SystemTime::now()) {
                PushDecision::Push => None,
                PushDecision::Skip(reason) => Some(skipped(reason)),
            }
        });
        let sender = parking_lot::Mutex::new(tx);
        let on_row: RowHook = Arc::new(move |row: &ReportRow| {
            let (Some(device_id), Some(kind)) = (row.device_id.clone(), row.kind()) else {
                return;
            };
            if crate::mdm::store::validate_device_id(&device_id).is_err() {
                return;
            }
            // Rows that were not pushed because of the store change nothing in it.
            if row.attempts == 0
                && row
                    .detail
                    .as_deref()
                    .is_some_and(|d| d.starts_with(SKIP_PREFIX))
            {
                return;
            }
            let u = Update::Outcome {
                device_id,
                channel_uri: row.channel_uri.clone(),
                kind,
                at: SystemTime::now(),
            };
            if sender.lock().send(u).is_err() {
                tracing::warn!("channel store writer stopped; outcome not recorded");
            }
        });
        let writer = std::thread::spawn(move || write_loop(&store, rx));
        StoreLink {
            skip,
            on_row,
            writer,
        }
    }

    /// Waits for every recorded row to be written. Call after the campaign,
    /// once the hooks are dropped. Returns how many updates were applied.
    pub fn finish(self) -> Result<u64, StoreError> {
        let StoreLink {
            skip,
            on_row,
            writer,
        } = self;
        drop(skip);
        drop(on_row);
        writer.join().unwrap_or_else(|_| {
            Err(StoreError::Io {
                path: std::path::PathBuf::from("<channel store>"),
                detail: "the writer thread panicked".into(),
            })
        })
    }
}

const SKIP_PREFIX: &str = "not pushed (channel store): ";

fn skipped(reason: SkipReason) -> Outcome {
    let kind = match reason {
        SkipReason::ChannelInvalid => OutcomeKind::ChannelInvalid,
        SkipReason::ChannelAppMismatch => OutcomeKind::ChannelAppMismatch,
        SkipReason::DomainBlocked => OutcomeKind::DomainBlocked,
        SkipReason::InvalidChannelRecord => OutcomeKind::InvalidChannel,
        SkipReason::NoChannel
        | SkipReason::ChannelExpired
        | SkipReason::ChannelTooOld
        | SkipReason::PfnResetPending => OutcomeKind::ChannelStale,
    };
    Outcome::local(kind, format!("{SKIP_PREFIX}{}", reason.describe()))
}

fn write_loop(store: &ChannelStore, rx: Receiver<Update>) -> Result<u64, StoreError> {
    let mut applied = 0u64;
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let first = match rx.recv() {
            Ok(u) => u,
            Err(_) => return Ok(applied),
        };
        batch.push(first);
        let until = Instant::now() + Duration::from_millis(200);
        while batch.len() < BATCH {
            match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(u) => batch.push(u),
                Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        store.apply(batch.drain(..))?;
        applied += n;
    }
}
