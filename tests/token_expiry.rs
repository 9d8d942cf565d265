//! Time-dependent token correctness (issue 14): a wake that waits in the PFN
//! limiter or behind a throttle pause takes its token when it is sent, so a
//! token that expired while it waited never turns a healthy channel into
//! `unauthorized`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use fleetwake::emulator::faults::Faults;
use fleetwake::emulator::{EmulatorConfig, EmulatorHandle, HttpVersions};
use fleetwake::engine::RefreshCause;
use fleetwake::{Engine, MdmAction, Notification, OutcomeKind, RateLimit, RetryPolicy};
use futures_util::StreamExt;

/// An engine with one tenant "t" at `rate`, `max_attempts` attempts (backoff
/// 50 ms to 1 s) and a deadline of `deadline_s`.
fn engine_with(
    emu: &EmulatorHandle,
    rate: RateLimit,
    max_attempts: u32,
    deadline_s: u64,
) -> Engine {
    Engine::builder()
        .transport(transport_for(emu))
        .tenant(tenant("t").rate_limit(rate))
        .retry(RetryPolicy {
            max_attempts,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(1),
            deadline: Duration::from_secs(deadline_s),
            pause_tenant_on_throttle: true,
        })
        .build()
        .unwrap()
}

/// Tokens of 3 s, a PFN limited to 50/s, 1,000 devices, and a 406 with
/// `Retry-After: 4` (longer than a token's life) partway through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_longer_than_a_token_lifetime_never_end_unauthorized() {
    const LIFETIME: Duration = Duration::from_secs(3);
    let emu = emulator_with(EmulatorConfig {
        token_lifetime: LIFETIME,
        http: HttpVersions::Both,
        ..EmulatorConfig::default()
    })
    .await;
    let engine = engine_with(&emu, RateLimit::per_second(50).with_burst(5), 5, 120);
    // 8 s in (about 400 wakes sent), every push for 100 ms gets 406 with
    // Retry-After 4 s: the PFN pauses for longer than a token lives, while
    // hundreds of wakes wait in the limiter.
    emu.set_faults(during(
        8_000,
        8_100,
        Faults {
            error_rate: 1.0,
            error_status: 406,
            retry_after_s: Some(4),
            ..Faults::default()
        },
    ));
    let started = Instant::now();
    let input = (0..1000).map(|i| (i, Notification::wake("t", channel("ok", i))));
    let outcomes: Vec<_> = engine.submit_iter(input, 1000).collect().await;
    let took = started.elapsed();
    assert_eq!(outcomes.len(), 1000);
    let stats = emu.stats();
    let unauthorized = outcomes
        .iter()
        .filter(|(_, o)| o.kind == OutcomeKind::Unauthorized)
        .count();
    assert_eq!(unauthorized, 0, "no healthy channel ends unauthorized");
    for (i, o) in &outcomes {
        assert_eq!(o.kind, OutcomeKind::Received, "device {i}: {o:?}");
        assert_eq!(o.mdm_action(), MdmAction::None);
    }
    assert!(
        stats.by_status.get(&406).copied().unwrap_or(0) >= 1,
        "the throttle happened: {:?}",
        stats.by_status
    );
    // The run spans took / LIFETIME lifetimes; a token is asked for about once
    // per lifetime while wakes are being sent (none during the pause), so the
    // count is within one of that number.
    let lifetimes = took.as_secs_f64() / LIFETIME.as_secs_f64();
    let requests = stats.token_requests.legacy as f64;
    eprintln!(
        "run {took:?} ({lifetimes:.1} lifetimes), {requests} token requests, answers {:?}",
        stats.by_status
    );
    assert!(
        requests <= lifetimes.ceil() + 1.0,
        "{requests} token requests for a run of {took:?} ({lifetimes:.1} lifetimes)"
    );
    assert!(
        requests >= (lifetimes / 2.0).floor(),
        "tokens were renewed as they aged: {requests} for {lifetimes:.1} lifetimes"
    );
    engine.shutdown(Duration::from_secs(5)).await;
}

/// Runs 3,000 wakes at 400/s against 3 s tokens that the push endpoint
/// expires `early` before their announced end, with a token endpoint that takes
/// `token_delay_ms` to answer; returns the engine's token requests by cause.
async fn early_deaths(early: Duration, token_delay_ms: u64) -> Vec<(RefreshCause, u64)> {
    let emu = emulator_with(EmulatorConfig {
        token_lifetime: Duration::from_secs(3),
        token_expires_early: early,
        ..EmulatorConfig::default()
    })
    .await;
    emu.set_faults(faults(Faults {
        token_delay_ms,
        ..Faults::default()
    }));
    let engine = engine_with(&emu, RateLimit::per_second(400).with_burst(40), 3, 60);
    let input = (0..3000).map(|i| (i, Notification::wake("t", channel("ok", i))));
    let outcomes: Vec<_> = engine.submit_iter(input, 3000).collect().await;
    assert_eq!(outcomes.len(), 3000);
    let mut resent = 0;
    for (i, o) in &outcomes {
        assert_eq!(o.kind, OutcomeKind::Received, "device {i}: {o:?}");
        // At most: the attempt budget, the one resend after a fresh 401 and two
        // free resends after stale ones.
        assert!(o.attempts <= 3 + 1 + 2, "device {i}: {o:?}");
        resent += u64::from(o.attempts - 1);
    }
    let stats = emu.stats();
    let refused = stats.by_status.get(&401).copied().unwrap_or(0);
    let by_cause = engine.token_requests_by_cause("t").unwrap();
    eprintln!(
        "early {early:?}, token delay {token_delay_ms} ms: answers {:?}, {resent} resends, token requests {by_cause:?}",
        stats.by_status
    );
    assert!(refused >= 1, "tokens did die early: {:?}", stats.by_status);
    assert_eq!(resent, refused, "every 401 was followed by one resend");
    assert_eq!(stats.by_status.get(&200).copied(), Some(3000));
    // About one token per (real) lifetime over 7.5 s of sending: not one per
    // 401, nor per wake.
    assert!(
        stats.token_requests.legacy <= 10,
        "{} token requests",
        stats.token_requests.legacy
    );
    engine.shutdown(Duration::from_secs(5)).await;
    by_cause
}

fn count(by_cause: &[(RefreshCause, u64)], cause: RefreshCause) -> u64 {
    by_cause
        .iter()
        .find(|(c, _)| *c == cause)
        .map_or(0, |(_, n)| *n)
}

/// WNS's clock runs ahead of ours by 1.2 s: in each token's last 1.2 s,
/// pushes get 401 `Token expired` on a token that is fresh by our clock. WNS
/// says it expired, so it is not a credential problem: the token is replaced
/// (`rejected_stale`), every refused wake is resent, and the age at which it
/// died caps the lifetime believed for the next tokens, which are then
/// refreshed before WNS drops them. Nobody ends `unauthorized`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_wns_expires_early_is_replaced_and_later_ones_refreshed_sooner() {
    let by_cause = early_deaths(Duration::from_millis(1200), 0).await;
    assert!(
        count(&by_cause, RefreshCause::RejectedStale) >= 1,
        "{by_cause:?}"
    );
    assert_eq!(
        count(&by_cause, RefreshCause::RejectedFresh),
        0,
        "{by_cause:?}"
    );
    assert!(count(&by_cause, RefreshCause::Ahead) >= 1, "{by_cause:?}");
    assert_eq!(count(&by_cause, RefreshCause::First), 1, "{by_cause:?}");
}

/// The token endpoint takes 300 ms, so the refresh margin is twice that: the
/// background refresh starts 2.4 s after the token was asked for and lands at
/// 2.7 s. The endpoint issues the token when it answers (0.3 s) and the push
/// endpoint kills it 750 ms before its announced end, at 0.3 + 2.25 = 2.55 s,
/// so pushes sent from then until the new token lands get 401 on a token that
/// is past its refresh point (stale). They are resent with the new token for free, never counted
/// against the credentials: no token request is made for a fresh rejection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_refused_after_its_refresh_point_is_stale_not_a_credential_problem() {
    let by_cause = early_deaths(Duration::from_millis(750), 300).await;
    assert_eq!(
        count(&by_cause, RefreshCause::RejectedFresh),
        0,
        "{by_cause:?}"
    );
    assert!(count(&by_cause, RefreshCause::Ahead) >= 1, "{by_cause:?}");
}

/// A token endpoint whose tokens live 1 s but which takes 600 ms to answer:
/// every token would be dead before a push could use it. That is an error
/// that says so, retried with the endpoint's backoff, not a refresh storm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_shorter_than_its_own_round_trip_is_an_error_not_a_storm() {
    let emu = emulator_with(EmulatorConfig {
        token_lifetime: Duration::from_secs(1),
        ..EmulatorConfig::default()
    })
    .await;
    emu.set_faults(faults(Faults {
        token_delay_ms: 600,
        ..Faults::default()
    }));
    let engine = engine_with(&emu, RateLimit::per_second(100_000), 3, 30);
    let input = (0..200).map(|i| (i, Notification::wake("t", channel("ok", i))));
    let outcomes: Vec<_> = engine.submit_iter(input, 200).collect().await;
    for (i, o) in &outcomes {
        assert_eq!(o.kind, OutcomeKind::TokenUnavailable, "device {i}: {o:?}");
        assert_eq!(o.mdm_action(), MdmAction::RetryLater);
        assert_eq!(o.attempts, 0, "nothing was pushed");
        let d = o.detail.as_deref().unwrap_or_default();
        assert!(
            d.contains("lives 1000 ms") && d.contains("twice the"),
            "the error says why: {d}"
        );
    }
    let stats = emu.stats();
    eprintln!(
        "{} token requests for 200 wakes",
        stats.token_requests.legacy
    );
    assert_eq!(stats.pushes_total, 0);
    // One request per backoff step (0.5 s, 1 s, ...), shared by all 200 wakes.
    assert!(
        stats.token_requests.legacy <= 4,
        "no refresh storm: {} token requests",
        stats.token_requests.legacy
    );
    engine.shutdown(Duration::from_secs(5)).await;
}
