//! Fault injection: what the emulator does wrong on purpose, by rate or on a
//! schedule, so that clients can be tested against resets, GOAWAY, TLS
//! failures, stalls, error bursts, a sick token endpoint and a target that
//! disappears and comes back.
//!
//! The current [`Faults`] live in a `watch` channel: every check reads them
//! without a lock, and turning `down` on cuts every open connection at once. A
//! schedule is a list of [`FaultPhase`]s relative to when it was set; a small
//! ticker task switches between them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// What to do wrong. Rates are probabilities in `0..=1` per request (or per
/// connection for `tls_fail_rate`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Abort the connection instead of answering a push (a reset mid-request).
    pub reset_rate: f64,
    /// Complete the TLS handshake with a certificate no client trusts.
    pub tls_fail_rate: f64,
    /// HTTP/2: send GOAWAY (and finish open streams) after this many requests
    /// on one connection; HTTP/1.1: close after that many.
    pub goaway_after: Option<u64>,
    /// Hold a push this long before answering (past the client's timeout).
    pub stall_rate: f64,
    /// How long a stalled push is held, ms.
    pub stall_ms: u64,
    /// Answer a push with `error_status` instead of its behaviour.
    pub error_rate: f64,
    /// 500, 503 or 429 (any status works).
    pub error_status: u16,
    /// `Retry-After` seconds sent with `error_status`.
    pub retry_after_s: Option<u64>,
    /// The token endpoints answer 503.
    pub token_down: bool,
    /// The token endpoints wait this long first, ms.
    pub token_delay_ms: u64,
    /// The target is gone: new connections are closed at once and open ones cut.
    pub down: bool,
}

impl Faults {
    /// Draws against a rate.
    pub(crate) fn hit(rate: f64) -> bool {
        rate > 0.0 && fastrand::f64() < rate
    }
}

/// One phase of a schedule: `faults` apply from `from_ms` to `until_ms` after
/// the schedule was set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultPhase {
    /// Start, ms after the schedule was set.
    pub from_ms: u64,
    /// End (exclusive), ms after the schedule was set.
    pub until_ms: u64,
    /// The faults of this phase.
    pub faults: Faults,
}

/// A base set of faults plus an optional schedule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultPlan {
    /// Faults outside every phase.
    pub base: Faults,
    /// Timed phases (the first that covers the current time wins).
    pub phases: Vec<FaultPhase>,
}

#[derive(Debug)]
struct Plan {
    plan: FaultPlan,
    set_at: Instant,
}

/// Owns the current faults.
#[derive(Debug)]
pub(crate) struct FaultController {
    tx: watch::Sender<Faults>,
    plan: Arc<Mutex<Plan>>,
}

impl FaultController {
    pub(crate) fn new() -> Self {
        let (tx, _) = watch::channel(Faults::default());
        FaultController {
            tx,
            plan: Arc::new(Mutex::new(Plan {
                plan: FaultPlan::default(),
                set_at: Instant::now(),
            })),
        }
    }

    /// The faults in force now.
    pub(crate) fn current(&self) -> Faults {
        *self.tx.borrow()
    }

    /// A receiver that sees every change.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Faults> {
        self.tx.subscribe()
    }

    /// Replaces the plan; phases count from now.
    pub(crate) fn set(&self, plan: FaultPlan) {
        let mut p = self.plan.lock();
        *p = Plan {
            plan,
            set_at: Instant::now(),
        };
        let now = evaluate(&p, Instant::now());
        drop(p);
        self.tx.send_replace(now);
    }

    /// Re-evaluates the schedule (called by the ticker).
    pub(crate) fn tick(&self) {
        let now = evaluate(&self.plan.lock(), Instant::now());
        self.tx.send_if_modified(|f| {
            if *f != now {
                *f = now;
                true
            } else {
                false
            }
        });
    }
}

fn evaluate(p: &Plan, now: Instant) -> Faults {
    let t = now.saturating_duration_since(p.set_at).as_millis() as u64;
    p.plan
        .phases
        .iter()
        .find(|ph| ph.from_ms <= t && t < ph.until_ms)
        .map(|ph| ph.faults)
        .unwrap_or(p.plan.base)
}

/// The ticker period.
pub(crate) const TICK: Duration = Duration::from_millis(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_switches_phases() {
        let c = FaultController::new();
        let down = Faults {
            down: true,
            ..Faults::default()
        };
        c.set(FaultPlan {
            base: Faults::default(),
            phases: vec![FaultPhase {
                from_ms: 0,
                until_ms: 50,
                faults: down,
            }],
        });
        assert!(c.current().down);
        std::thread::sleep(Duration::from_millis(60));
        c.tick();
        assert!(!c.current().down);
        let text =
            r#"{"base":{"error_rate":0.5,"error_status":503,"retry_after_s":1},"phases":[]}"#;
        let p: FaultPlan = serde_json::from_str(text).unwrap();
        assert_eq!(p.base.error_status, 503);
        assert!(serde_json::from_str::<FaultPlan>(r#"{"base":{"nope":1}}"#).is_err());
    }
}
