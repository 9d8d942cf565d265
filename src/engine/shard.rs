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

/// Free resends after a 401 on a token that went stale while its wake waited
/// or flew (past its refresh point, or already replaced): they do not count
/// against `max_attempts`, and never end as `unauthorized`.
const MAX_STALE_RESENDS: u32 = 2;

/// The life of one wake: host breaker, token readiness, in-flight slot, PFN
/// limiter, then the token read at the last moment, the request,
/// classification, retries.
pub(crate) async fn deliver(
    shared: &Shared,
    tenant: &Arc<Tenant>,
    n: &Notification,
    deadline: Instant,
) -> Outcome {
    let policy = &shared.retry;
    // Attempts that count against `max_attempts` (requests, and token-endpoint
    // failures, so that a dead endpoint cannot loop forever) ...
    let mut attempts: u32 = 0;
    // ... and the requests actually sent, which the outcome reports.
    let mut sent: u32 = 0;
    let mut fresh_resend_used = false;
    let mut stale_resends: u32 = 0;
    let mut last: Option<Outcome> = None;
    let finish = |mut o: Outcome, sent: u32| {
        o.attempts = sent;
        o
    };
    let shut_down = |last: &Option<Outcome>| {
        last.clone().unwrap_or_else(|| {
            Outcome::local(
                OutcomeKind::ShutDown,
                "not sent: the engine is shutting down",
            )
        })
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
            return finish(expired(), sent);
        }
        // A host that refuses connections is waited out without spending an
        // attempt; once its breaker is open, the wake ends at once instead
        // (unless the engine was told to wait).
        let mut draining = shared.draining.clone();
        let wait_until = match shared.hosts.gate(n.channel.host()) {
            super::hosts::Gate::Go => None,
            super::hosts::Gate::WaitUntil(until) => Some(until),
            super::hosts::Gate::Open(open) => match shared.when_open {
                super::WhenOpen::Wait => Some(open.until),
                super::WhenOpen::Fail => {
                    let kind = match open.kind {
                        crate::transport::TransportErrorKind::Tls => OutcomeKind::TlsError,
                        _ => OutcomeKind::ConnectError,
                    };
                    let mut o = Outcome::local(
                        kind,
                        format!(
                            "not sent: WNS host {} unreachable for {} s (breaker open): {}",
                            n.channel.host(),
                            open.down_for.as_secs(),
                            open.message
                        ),
                    );
                    o.retry_after = Some(
                        open.until
                            .saturating_duration_since(Instant::now())
                            .max(Duration::from_millis(100)),
                    );
                    o.endpoint_down = true;
                    return finish(o, sent);
                }
            },
        };
        if let Some(until) = wait_until {
            if until >= deadline {
                return finish(expired(), sent);
            }
            tokio::select! {
                biased;
                _ = draining.wait_for(|d| *d) => return finish(shut_down(&last), sent),
                _ = tokio::time::sleep_until(until.into()) => continue,
            }
        }
        // A token must exist before a rate-limit cell is taken, so that a slow
        // token endpoint cannot pile up granted cells that then fire at once.
        // It is not taken here: a wake may wait long in the limiter.
        let ready = tokio::select! {
            biased;
            _ = draining.wait_for(|d| *d) => None,
            r = tenant.tokens.ready() => Some(r),
        };
        match ready {
            None => return finish(shut_down(&last), sent),
            Some(Ok(())) => {}
            Some(Err(e @ super::token::TokenError::Rejected { .. })) => {
                return finish(
                    Outcome::local(OutcomeKind::CredentialRejected, e.to_string()),
                    sent,
                );
            }
            Some(Err(e @ super::token::TokenError::EndpointDown { retry_after, .. })) => {
                // The breaker is open: no attempt is spent on it.
                match shared.when_open {
                    super::WhenOpen::Fail => {
                        let mut o =
                            Outcome::local(OutcomeKind::TokenUnavailable, format!("not sent: {e}"));
                        o.retry_after = Some(retry_after);
                        o.endpoint_down = true;
                        return finish(o, sent);
                    }
                    super::WhenOpen::Wait => {
                        let until = Instant::now() + retry_after;
                        if until >= deadline {
                            let mut o = Outcome::local(
                                OutcomeKind::TokenUnavailable,
                                format!("not sent: {e}"),
                            );
                            o.retry_after = Some(retry_after);
                            o.endpoint_down = true;
                            return finish(o, sent);
                        }
                        tokio::select! {
                            biased;
                            _ = draining.wait_for(|d| *d) => return finish(shut_down(&last), sent),
                            _ = tokio::time::sleep_until(until.into()) => continue,
                        }
                    }
                }
            }
            Some(Err(e @ super::token::TokenError::Unavailable { retry_after, .. })) => {
                let mut o = Outcome::local(OutcomeKind::TokenUnavailable, e.to_string());
                // No need to wait past the moment the breaker opens: from then
                // on the wake is decided at once (failed or waiting).
                let opens_in = tenant.tokens.breaker_opens_in().unwrap_or(retry_after);
                o.retry_after = Some(retry_after.min(opens_in.max(Duration::from_millis(50))));
                // No token could be had: nothing of this wake was delivered
                // unless an earlier attempt was.
                o.endpoint_down = sent == 0;
                attempts += 1;
                if wait_for_retry(shared, tenant, policy, attempts, &o, deadline).await {
                    last = Some(o);
                    continue;
                }
                return finish(o, sent);
            }
        }
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
            return finish(shut_down(&last), sent);
        };
        if !on_time {
            return finish(expired(), sent);
        }
        // The token is read now, after every wait, immediately before the
        // request is built. If it expired during the waits and no refresh has
        // replaced it yet (nothing was sent for a while, e.g. during a PFN
        // pause), the cell is given up rather than held across a token fetch:
        // the next round fetches a token first, then takes a new cell.
        let Some(token) = tenant.tokens.current() else {
            drop(in_flight_slot);
            continue;
        };
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
                    sent,
                )
            }
        };
        attempts += 1;
        sent += 1;
        shared.gauges.in_flight.increment(1.0);
        let started = Instant::now();
        // Boxed: the exchange's state lives only while a request is in flight,
        // so the many wakes waiting for a slot or a rate-limit cell stay small.
        let result = Box::pin(shared.transport.send(req)).await;
        tenant.metrics.request(started.elapsed());
        shared.gauges.in_flight.decrement(1.0);
        drop(in_flight_slot);
        let unreachable = match &result {
            Err(e)
                if matches!(
                    e.kind,
                    crate::transport::TransportErrorKind::Connect
                        | crate::transport::TransportErrorKind::Tls
                ) =>
            {
                Some((e.kind, e.message.clone()))
            }
            _ => None,
        };
        let mut wns_says_expired = false;
        let outcome = match result {
            Ok(resp) => {
                let classified = classify(resp.status(), resp.headers());
                wns_says_expired = classified.token_expired;
                let mut o = Outcome::from_classified(classified);
                if n.capture_headers {
                    o.response_headers = Some(Box::new(resp.headers().clone()));
                }
                o
            }
            Err(e) => Outcome::local(e.outcome_kind(), e.message),
        };
        // Only a host that cannot be reached trips its breaker; a connection
        // that broke mid-request means the host is there.
        if let Some((kind, message)) = &unreachable {
            shared.hosts.failed(n.channel.host(), *kind, message);
        } else if outcome.status.is_some() {
            shared.hosts.answered(n.channel.host());
        }
        let outcome = if outcome.kind == OutcomeKind::Unauthorized {
            // Boxed: a rare path, kept out of the hot path's future.
            match Box::pin(unauthorized(
                tenant,
                &token,
                outcome,
                wns_says_expired,
                &mut fresh_resend_used,
                &mut stale_resends,
            ))
            .await
            {
                AfterUnauthorized::Resend(o) => {
                    // The resend does not count against `max_attempts`.
                    attempts -= 1;
                    last = Some(o);
                    continue;
                }
                AfterUnauthorized::Final(o) => return finish(o, sent),
                AfterUnauthorized::Retry(o) => o,
            }
        } else {
            outcome
        };
        if !outcome.kind.is_retryable() {
            return finish(outcome, sent);
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
            return finish(outcome, sent);
        }
        last = Some(outcome);
    }
}

/// What a wake does after a 401.
enum AfterUnauthorized {
    /// Send again at once with the new token; the outcome stands in for the
    /// wake's last one if it ends before that.
    Resend(Outcome),
    /// The wake ends with this.
    Final(Outcome),
    /// A retryable outcome for the normal retry path.
    Retry(Outcome),
}

/// After a 401 on `token`: a stale token (it expired while the wake waited or
/// flew, or WNS said `Token expired`) is replaced and the wake resent, for free, up to
/// [`MAX_STALE_RESENDS`] times, and never ends `unauthorized`; a token that was
/// fresh by our clock gets one refresh and one resend, and a second 401 on a
/// fresh token is `unauthorized`.
async fn unauthorized(
    tenant: &Arc<Tenant>,
    token: &Arc<super::token::CachedToken>,
    outcome: Outcome,
    wns_says_expired: bool,
    fresh_resend_used: &mut bool,
    stale_resends: &mut u32,
) -> AfterUnauthorized {
    use super::token::{Rejection, TokenError};
    let rejection = tenant.tokens.rejection(token, wns_says_expired);
    // What a stale rejection stands for in a report: not a credential
    // problem, and retryable.
    let stale = || {
        let mut o = Outcome::local(
            OutcomeKind::TokenUnavailable,
            "WNS refused an access token that expired while the wake waited (401); \
             a new token was fetched",
        );
        o.status = outcome.status;
        o.wns = outcome.wns.clone();
        o
    };
    let resend = match rejection {
        Rejection::Stale if *stale_resends < MAX_STALE_RESENDS => {
            *stale_resends += 1;
            stale()
        }
        // More stale 401s than that: the wakes wait longer than tokens live.
        // Retried like any retryable outcome, within the attempt budget.
        Rejection::Stale => return AfterUnauthorized::Retry(stale()),
        Rejection::Fresh if !*fresh_resend_used => {
            *fresh_resend_used = true;
            outcome.clone()
        }
        Rejection::Fresh => return AfterUnauthorized::Final(outcome),
    };
    tenant.metrics.retry(OutcomeKind::Unauthorized);
    match tenant.tokens.refresh_after_reject(token, rejection).await {
        Ok(()) => AfterUnauthorized::Resend(resend),
        Err(e @ TokenError::Rejected { .. }) => AfterUnauthorized::Final(Outcome::local(
            OutcomeKind::CredentialRejected,
            e.to_string(),
        )),
        Err(e @ (TokenError::Unavailable { .. } | TokenError::EndpointDown { .. })) => {
            let mut o = Outcome::local(OutcomeKind::TokenUnavailable, e.to_string());
            o.retry_after = e.retry_after();
            AfterUnauthorized::Retry(o)
        }
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
