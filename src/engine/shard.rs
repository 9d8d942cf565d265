//! The hot path. A shard owns a bounded queue and the wakes whose channels hash
//! to it; [`run_shard`] is its worker and [`deliver`] the life of one wake.
//!
//! Shard invariants:
//! - A channel always maps to the same shard, so the shard's coalescing map is
//!   the only place that knows whether a wake for that channel is already queued
//!   or in flight. A second wake for it is merged (not sent) and gets the same
//!   outcome: WNS caches only one raw push per channel anyway.
//! - Deliveries run as futures inside the shard task, so a delivery waiting for a
//!   rate-limit cell or a retry timer holds no worker thread and no connection.
//! - On shutdown the queue is closed for new wakes but drained; waiting retries
//!   end at once with their last (retryable) outcome.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use foldhash::fast::RandomState;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit};

use super::tenant::Tenant;
use super::{Notification, Shared};
use crate::wns::{
    build_push, build_push_with_auth, classify, CorrelationVector, Outcome, OutcomeKind,
};

/// One accepted wake on its way to a shard.
pub(crate) struct Job {
    pub(crate) notification: Notification,
    pub(crate) tenant: Arc<Tenant>,
    pub(crate) submitted: Instant,
    pub(crate) deadline: Instant,
    pub(crate) reply: oneshot::Sender<Outcome>,
    pub(crate) permit: OwnedSemaphorePermit,
}

struct Waiter {
    reply: oneshot::Sender<Outcome>,
    tenant: Arc<Tenant>,
    submitted: Instant,
    coalesced: bool,
    _permit: OwnedSemaphorePermit,
}

/// The waiters of one channel: the wake that is being delivered, and those
/// merged into it (usually none, so no allocation).
struct Waiters {
    first: Waiter,
    merged: Vec<Waiter>,
}

type Delivery = Pin<Box<dyn Future<Output = (Arc<str>, Outcome)> + Send>>;

/// The shard worker: takes wakes from its queue, merges duplicates, runs
/// deliveries concurrently, and hands every waiter its outcome.
pub(crate) async fn run_shard(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Job>,
    mut draining: watch::Receiver<bool>,
) {
    // foldhash: fast, and seeded per process (channel URIs come from input).
    let mut waiting: HashMap<Arc<str>, Waiters, RandomState> = HashMap::default();
    let mut running: FuturesUnordered<Delivery> = FuturesUnordered::new();
    let mut intake_open = true;
    loop {
        tokio::select! {
            biased;
            Some((key, outcome)) = running.next(), if !running.is_empty() => {
                if let Some(ws) = waiting.remove(&key) {
                    resolve(&shared, ws, outcome);
                }
            }
            job = rx.recv(), if intake_open => match job {
                Some(job) => accept(&shared, &mut waiting, &mut running, job),
                None => intake_open = false,
            },
            changed = draining.changed(), if intake_open => {
                // Stop taking new wakes; what is buffered is still drained.
                if changed.is_err() || *draining.borrow() {
                    rx.close();
                }
            }
            else => break,
        }
    }
}

fn accept(
    shared: &Arc<Shared>,
    waiting: &mut HashMap<Arc<str>, Waiters, RandomState>,
    running: &mut FuturesUnordered<Delivery>,
    job: Job,
) {
    let key = job.notification.channel.shared().clone();
    let Job {
        notification,
        tenant,
        submitted,
        deadline,
        reply,
        permit,
    } = job;
    if let Some(ws) = waiting.get_mut(&key) {
        tenant.metrics.coalesced();
        ws.merged.push(Waiter {
            reply,
            tenant,
            submitted,
            coalesced: true,
            _permit: permit,
        });
        return;
    }
    waiting.insert(
        key.clone(),
        Waiters {
            first: Waiter {
                reply,
                tenant: tenant.clone(),
                submitted,
                coalesced: false,
                _permit: permit,
            },
            merged: Vec::new(),
        },
    );
    let shared = shared.clone();
    let fut = async move {
        let outcome = deliver(&shared, &tenant, &notification, deadline).await;
        (key, outcome)
    };
    running.push(Box::pin(fut));
}

fn resolve(shared: &Shared, waiters: Waiters, outcome: Outcome) {
    // The merged waiters get copies; the first one gets the outcome itself.
    for w in waiters.merged {
        give(shared, w, outcome.clone());
    }
    give(shared, waiters.first, outcome);
}

fn give(shared: &Shared, w: Waiter, mut o: Outcome) {
    o.latency = w.submitted.elapsed();
    o.coalesced = w.coalesced;
    w.tenant.metrics.outcome(o.kind, o.latency);
    shared.gauges.pending.decrement(1.0);
    // The submitter may have gone away; the outcome is still counted.
    let _ = w.reply.send(o);
}

/// The life of one wake: rate limit, token, request, classification, retries.
pub(crate) async fn deliver(
    shared: &Shared,
    tenant: &Arc<Tenant>,
    n: &Notification,
    deadline: Instant,
) -> Outcome {
    let policy = &shared.retry;
    let mut attempts: u32 = 0;
    let mut resent_after_refresh = false;
    let mut last: Option<Outcome> = None;
    let finish = |mut o: Outcome, attempts: u32| {
        o.attempts = attempts;
        o
    };
    loop {
        let expired = || {
            last.clone().unwrap_or_else(|| {
                Outcome::local(
                    OutcomeKind::Expired,
                    "deadline passed before the wake could be sent",
                )
            })
        };
        if Instant::now() >= deadline {
            return finish(expired(), attempts);
        }
        // A host that refuses connections is waited out without spending an attempt.
        let mut draining = shared.draining.clone();
        if let super::hosts::Gate::WaitUntil(until) = shared.hosts.gate(n.channel.host()) {
            if until >= deadline {
                return finish(expired(), attempts);
            }
            tokio::select! {
                biased;
                _ = draining.wait_for(|d| *d) => {
                    let o = last.clone().unwrap_or_else(|| Outcome::local(OutcomeKind::ShutDown, "not sent: the engine is shutting down"));
                    return finish(o, attempts);
                }
                _ = tokio::time::sleep_until(until.into()) => continue,
            }
        }
        // The token comes before the rate-limit cell, so that a slow token
        // endpoint cannot pile up granted cells that then fire all at once.
        let got = tokio::select! {
            biased;
            _ = draining.wait_for(|d| *d) => None,
            t = tenant.tokens.get() => Some(t),
        };
        let Some(got) = got else {
            let o = last.clone().unwrap_or_else(|| {
                Outcome::local(
                    OutcomeKind::ShutDown,
                    "not sent: the engine is shutting down",
                )
            });
            return finish(o, attempts);
        };
        let token = match got {
            Ok(t) => t,
            Err(e @ super::token::TokenError::Rejected { .. }) => {
                return finish(
                    Outcome::local(OutcomeKind::CredentialRejected, e.to_string()),
                    attempts,
                );
            }
            Err(e @ super::token::TokenError::Unavailable { retry_after, .. }) => {
                let mut o = Outcome::local(OutcomeKind::TokenUnavailable, e.to_string());
                o.retry_after = Some(retry_after);
                // Counted as an attempt so that a dead token endpoint cannot loop forever.
                attempts += 1;
                match wait_for_retry(shared, tenant, policy, attempts, &o, deadline).await {
                    true => {
                        last = Some(o);
                        continue;
                    }
                    false => return finish(o, attempts),
                }
            }
        };
        // Waiting for a slot and for the rate limit is cut short by draining:
        // nothing has been sent for this attempt yet.
        let ready = async {
            let permit = tenant.in_flight.clone().acquire_owned().await.ok()?;
            Some((permit, tenant.limiter.until_ready(deadline).await))
        };
        let waited = tokio::select! {
            biased;
            _ = draining.wait_for(|d| *d) => None,
            r = ready => r,
        };
        let Some((in_flight_slot, on_time)) = waited else {
            let o = last.clone().unwrap_or_else(|| {
                Outcome::local(
                    OutcomeKind::ShutDown,
                    "not sent: the engine is shutting down",
                )
            });
            return finish(o, attempts);
        };
        if !on_time {
            return finish(expired(), attempts);
        }
        let cv = CorrelationVector::new();
        let built = match &token.bearer {
            Some(auth) => build_push_with_auth(&n.channel, auth, &n.payload, &n.options, &cv),
            // Gives the reason the token cannot be a header value.
            None => build_push(&n.channel, &token.token, &n.payload, &n.options, &cv),
        };
        let req = match built {
            Ok(r) => r,
            Err(e) => {
                return finish(
                    Outcome::local(
                        OutcomeKind::CredentialRejected,
                        format!("the access token cannot be sent as a header: {e}"),
                    ),
                    attempts,
                )
            }
        };
        attempts += 1;
        shared.gauges.in_flight.increment(1.0);
        let started = Instant::now();
        // Boxed: the exchange's state lives only while a request is in flight,
        // so the many wakes waiting for a slot or a rate-limit cell stay small.
        let result = Box::pin(shared.transport.send(req)).await;
        tenant.metrics.request(started.elapsed());
        shared.gauges.in_flight.decrement(1.0);
        drop(in_flight_slot);
        let unreachable = matches!(&result, Err(e) if matches!(e.kind, crate::transport::TransportErrorKind::Connect | crate::transport::TransportErrorKind::Tls));
        let outcome = match result {
            Ok(resp) => {
                let mut o = Outcome::from_classified(classify(resp.status(), resp.headers()));
                if n.capture_headers {
                    o.response_headers = Some(Box::new(resp.headers().clone()));
                }
                o
            }
            Err(e) => Outcome::local(e.outcome_kind(), e.message),
        };
        // Only a host that cannot be reached trips its breaker; a connection
        // that broke mid-request means the host is there.
        if unreachable {
            shared.hosts.failed(n.channel.host());
        } else if outcome.status.is_some() {
            shared.hosts.answered(n.channel.host());
        }
        if outcome.kind == OutcomeKind::Unauthorized && !resent_after_refresh {
            // Exactly one refresh (single flight, only if this token is still current), then one resend.
            resent_after_refresh = true;
            tenant.metrics.retry(OutcomeKind::Unauthorized);
            // Boxed: a rare path, kept out of the hot path's future.
            match Box::pin(tenant.tokens.refresh_after_reject(&token)).await {
                Ok(_) => {
                    last = Some(outcome);
                    continue;
                }
                Err(e @ super::token::TokenError::Rejected { .. }) => {
                    return finish(
                        Outcome::local(OutcomeKind::CredentialRejected, e.to_string()),
                        attempts,
                    )
                }
                Err(_) => return finish(outcome, attempts),
            }
        }
        if !outcome.kind.is_retryable() {
            return finish(outcome, attempts);
        }
        if matches!(
            outcome.kind,
            OutcomeKind::Throttled | OutcomeKind::RateLimited
        ) && policy.pause_tenant_on_throttle
        {
            if let Some(ra) = outcome.retry_after {
                tenant.limiter.pause(ra);
            }
        }
        if !wait_for_retry(shared, tenant, policy, attempts, &outcome, deadline).await {
            return finish(outcome, attempts);
        }
        last = Some(outcome);
    }
}

/// Sleeps before the next attempt. False when no retry should follow: attempts
/// used up, the wait would pass the deadline, or the engine is draining.
async fn wait_for_retry(
    shared: &Shared,
    tenant: &Tenant,
    policy: &super::RetryPolicy,
    attempts: u32,
    outcome: &Outcome,
    deadline: Instant,
) -> bool {
    if attempts >= policy.max_attempts {
        return false;
    }
    let delay: Duration = policy.delay(attempts, outcome.retry_after);
    if Instant::now() + delay >= deadline {
        return false;
    }
    tenant.metrics.retry(outcome.kind);
    let mut draining = shared.draining.clone();
    if *draining.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = draining.wait_for(|d| *d) => false,
    }
}
