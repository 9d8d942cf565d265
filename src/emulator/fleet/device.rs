//! One simulated device and its server, run on a per-device event queue, and
//! the counters ([`Stats`]) that become a [`SimReport`].
//!
//! The guided server keeps a real [`ChannelRecord`] per device and asks the
//! real [`Policy`] whether to push and whether to set the PFN again, so the
//! simulation exercises the same decisions a campaign with `--store` makes.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::ops::Range;

use super::schedule::{next_attempt, Build, CHANNEL_LIFETIME, DAY};
use super::world::{device_seed, World, STREAM_DEVICE};
use super::{ServerPolicy, SimConfig, SimReport};
use crate::mdm::parse::PushStatus;
use crate::mdm::policy::{ChannelRecord, Policy, PushDecision, SessionChange};
use crate::wns::outcome::OutcomeKind;

/// Counters of one or more devices.
#[derive(Debug, Clone, Default)]
pub(crate) struct Stats {
    devices: u64,
    devices_1511: u64,
    never_renew: u64,
    intended_wakes: u64,
    pushes_sent: u64,
    pushes_skipped: u64,
    pushes_410: u64,
    sent_last_week: u64,
    dead_last_week: u64,
    delivered_online: u64,
    cached: u64,
    delivered_from_cache: u64,
    cache_replaced: u64,
    cache_dropped: u64,
    reached: u64,
    served_any: u64,
    push_sessions: u64,
    push_sessions_failed: u64,
    poll_sessions: u64,
    polls_missed: u64,
    renewal_sessions: u64,
    registrations: u64,
    registration_failures: u64,
    pfn_resets: u64,
    per_day: Vec<u64>,
    latencies: Vec<u32>,
}

impl Stats {
    pub(crate) fn new(days: u32) -> Self {
        Stats {
            per_day: vec![0; days as usize],
            ..Stats::default()
        }
    }

    pub(crate) fn merge(&mut self, o: Stats) {
        self.devices += o.devices;
        self.devices_1511 += o.devices_1511;
        self.never_renew += o.never_renew;
        self.intended_wakes += o.intended_wakes;
        self.pushes_sent += o.pushes_sent;
        self.pushes_skipped += o.pushes_skipped;
        self.pushes_410 += o.pushes_410;
        self.sent_last_week += o.sent_last_week;
        self.dead_last_week += o.dead_last_week;
        self.delivered_online += o.delivered_online;
        self.cached += o.cached;
        self.delivered_from_cache += o.delivered_from_cache;
        self.cache_replaced += o.cache_replaced;
        self.cache_dropped += o.cache_dropped;
        self.reached += o.reached;
        self.served_any += o.served_any;
        self.push_sessions += o.push_sessions;
        self.push_sessions_failed += o.push_sessions_failed;
        self.poll_sessions += o.poll_sessions;
        self.polls_missed += o.polls_missed;
        self.renewal_sessions += o.renewal_sessions;
        self.registrations += o.registrations;
        self.registration_failures += o.registration_failures;
        self.pfn_resets += o.pfn_resets;
        for (a, b) in self.per_day.iter_mut().zip(o.per_day) {
            *a += b;
        }
        self.latencies.extend(o.latencies);
    }

    pub(crate) fn report(mut self, cfg: &SimConfig, policy: ServerPolicy) -> SimReport {
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let mut pct = |p: f64| -> Option<u64> {
            let n = self.latencies.len();
            if n == 0 {
                return None;
            }
            let i = ((p * n as f64).ceil() as usize).clamp(1, n) - 1;
            Some(u64::from(*self.latencies.select_nth_unstable(i).1))
        };
        let p50 = pct(0.50);
        let p95 = pct(0.95);
        let mean = ratio(self.per_day.iter().sum(), self.per_day.len() as u64);
        SimReport {
            policy,
            devices: cfg.devices,
            days: cfg.days,
            seed: cfg.seed,
            devices_1511: self.devices_1511,
            devices_never_renew: self.never_renew,
            intended_wakes: self.intended_wakes,
            pushes_sent: self.pushes_sent,
            pushes_skipped: self.pushes_skipped,
            pushes_410: self.pushes_410,
            share_410: ratio(self.pushes_410, self.pushes_sent),
            pushes_sent_last_week: self.sent_last_week,
            pushes_410_last_week: self.dead_last_week,
            share_410_last_week: ratio(self.dead_last_week, self.sent_last_week),
            delivered_online: self.delivered_online,
            cached: self.cached,
            delivered_from_cache: self.delivered_from_cache,
            cache_replaced: self.cache_replaced,
            cache_dropped: self.cache_dropped,
            push_reachability: ratio(self.reached, self.intended_wakes),
            wakes_served_by_any_session: ratio(self.served_any, self.intended_wakes),
            reach_within_secs: cfg.reach_within.as_secs(),
            push_sessions: self.push_sessions,
            push_sessions_failed: self.push_sessions_failed,
            latency_p50_secs: p50,
            latency_p95_secs: p95,
            wns_requests_per_day_mean: mean,
            wns_requests_per_day_peak: self.per_day.iter().copied().max().unwrap_or(0),
            poll_sessions: self.poll_sessions,
            polls_missed: self.polls_missed,
            renewal_sessions: self.renewal_sessions,
            channel_registrations: self.registrations,
            registration_failures: self.registration_failures,
            pfn_resets: self.pfn_resets,
        }
    }
}

/// Runs devices `range` and returns their counters.
pub(crate) fn run_range(cfg: &SimConfig, policy: ServerPolicy, range: Range<u32>) -> Stats {
    let mut stats = Stats::new(cfg.days);
    let guided = cfg.guided_policy();
    let mut heap = BinaryHeap::new();
    for index in range {
        let world = World::generate(cfg, index);
        stats.devices += 1;
        stats.devices_1511 += u64::from(world.build == Build::V1511);
        stats.never_renew += u64::from(world.never_renews);
        heap.clear();
        let mut dev = Device::new(cfg, policy, &guided, index, &world, &mut heap, &mut stats);
        dev.run();
    }
    stats
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Cause {
    Push,
    Renewal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Enroll,
    /// A scheduled channel request, valid while its token is current.
    Attempt(u32),
    Poll,
    Wake,
    /// The WNS connection may be back (index into `World::resumes`).
    Resume(usize),
    Session(Cause),
}

type Queue = BinaryHeap<Reverse<(u64, u32, Ev)>>;

enum Server {
    /// The record and the generation of the channel it holds.
    Guided(Box<ChannelRecord>, Option<usize>),
    /// The generation learned at enrollment.
    Naive(Option<usize>),
}

struct Device<'a> {
    cfg: &'a SimConfig,
    policy: &'a Policy,
    index: u32,
    w: &'a World,
    q: &'a mut Queue,
    stats: &'a mut Stats,
    rng: fastrand::Rng,
    seq: u32,
    horizon: u64,
    /// Expiry of every channel the device obtained, by generation.
    channels: Vec<u64>,
    /// The newest channel's URI (what `Push/ChannelURI` reads).
    uri: String,
    attempt_token: u32,
    /// WNS's cache: one push per channel (generation, sent at).
    cache: Vec<(usize, u64)>,
    pending_session: Option<u64>,
    pending_wakes: Vec<u64>,
    /// Wakes waiting for any session within the reach window.
    waiting: VecDeque<u64>,
    server: Server,
}

impl<'a> Device<'a> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        cfg: &'a SimConfig,
        policy: ServerPolicy,
        guided: &'a Policy,
        index: u32,
        w: &'a World,
        q: &'a mut Queue,
        stats: &'a mut Stats,
    ) -> Self {
        Device {
            cfg,
            policy: guided,
            index,
            w,
            q,
            stats,
            rng: fastrand::Rng::with_seed(device_seed(cfg.seed, index, STREAM_DEVICE)),
            seq: 0,
            horizon: u64::from(cfg.days) * DAY,
            channels: Vec::new(),
            uri: String::new(),
            attempt_token: 0,
            cache: Vec::new(),
            pending_session: None,
            pending_wakes: Vec::new(),
            waiting: VecDeque::new(),
            server: match policy {
                ServerPolicy::Guided => Server::Guided(Box::default(), None),
                ServerPolicy::Naive => Server::Naive(None),
            },
        }
    }

    fn at(&mut self, t: u64, ev: Ev) {
        if t < self.horizon {
            self.seq = self.seq.wrapping_add(1);
            self.q.push(Reverse((t, self.seq, ev)));
        }
    }

    fn delay(&mut self) -> u64 {
        let r = self.cfg.session_delay;
        self.rng.u64(r.min.as_secs()..=r.max.as_secs())
    }

    fn run(&mut self) {
        self.at(self.w.enroll_at, Ev::Enroll);
        while let Some(Reverse((t, _, ev))) = self.q.pop() {
            match ev {
                Ev::Enroll => self.enroll(t),
                Ev::Attempt(token) => {
                    if token == self.attempt_token {
                        self.request_channel(t, false);
                    }
                }
                Ev::Poll => {
                    if self.w.network(t) {
                        self.stats.poll_sessions += 1;
                        self.session(t, true);
                    } else {
                        self.stats.polls_missed += 1;
                    }
                    self.at(t + self.cfg.poll_interval.as_secs(), Ev::Poll);
                }
                Ev::Wake => {
                    self.wake(t);
                    self.at(t + self.cfg.push_interval.as_secs(), Ev::Wake);
                }
                Ev::Resume(i) => {
                    self.resume(t);
                    if let Some(&next) = self.w.resumes.get(i + 1) {
                        self.at(next, Ev::Resume(i + 1));
                    }
                }
                Ev::Session(cause) => self.triggered_session(t, cause),
            }
        }
        self.stats.cache_dropped += self.cache.len() as u64;
    }

    fn enroll(&mut self, t: u64) {
        // The PFN is set at enrollment: the device asks WNS for a channel, and the
        // enrollment session reads it.
        self.request_channel(t, true);
        self.session(t, false);
        self.at(t + self.cfg.poll_interval.as_secs(), Ev::Poll);
        let every = self.cfg.push_interval.as_secs();
        let phase = self.w.wake_phase;
        let first = if phase > t {
            phase
        } else {
            phase + ((t - phase) / every + 1) * every
        };
        self.at(first, Ev::Wake);
        let i = self.w.resumes.partition_point(|&r| r <= t);
        if let Some(&r) = self.w.resumes.get(i) {
            self.at(r, Ev::Resume(i));
        }
    }

    /// The device asks WNS for a channel (enrollment, renewal or PFN reset).
    fn request_channel(&mut self, t: u64, enrolling: bool) {
        let expiry = self.channels.last().copied();
        if self.w.wns_up(t) {
            let expires = t + CHANNEL_LIFETIME;
            self.channels.push(expires);
            self.uri = format!(
                "https://sim.notify.windows.com/?token=d{}c{}",
                self.index,
                self.channels.len() - 1
            );
            self.stats.registrations += 1;
            if !enrolling {
                let s = t + self.delay();
                self.at(s, Ev::Session(Cause::Renewal));
            }
            self.attempt_token = self.attempt_token.wrapping_add(1);
            if !self.w.never_renews {
                let next = next_attempt(self.w.build, t, Some(expires), true, &mut self.rng);
                self.at(next, Ev::Attempt(self.attempt_token));
            }
        } else {
            self.stats.registration_failures += 1;
            let network = self.w.network(t);
            let next = next_attempt(self.w.build, t, expiry, network, &mut self.rng);
            self.attempt_token = self.attempt_token.wrapping_add(1);
            self.at(next, Ev::Attempt(self.attempt_token));
        }
    }

    fn wake(&mut self, t: u64) {
        self.stats.intended_wakes += 1;
        self.waiting.push_back(t);
        let target = match &self.server {
            Server::Naive(known) => *known,
            Server::Guided(rec, known) => match self.policy.should_push_at(rec, t) {
                PushDecision::Push => *known,
                PushDecision::Skip(_) => None,
            },
        };
        let Some(gen) = target else {
            self.stats.pushes_skipped += 1;
            return;
        };
        self.stats.pushes_sent += 1;
        let day = (t / DAY) as usize;
        if let Some(n) = self.stats.per_day.get_mut(day) {
            *n += 1;
        }
        let last_week = t + 7 * DAY >= self.horizon;
        self.stats.sent_last_week += u64::from(last_week);
        if self.channels[gen] <= t {
            self.stats.pushes_410 += 1;
            self.stats.dead_last_week += u64::from(last_week);
            if let Server::Guided(rec, _) = &mut self.server {
                let uri = rec.channel_uri.clone();
                rec.apply_outcome_parts(uri.as_deref(), OutcomeKind::ChannelExpired, t);
            }
        } else if self.w.wns_up(t) {
            self.stats.delivered_online += 1;
            self.deliver(t, t);
        } else {
            self.stats.cached += 1;
            if let Some(slot) = self.cache.iter_mut().find(|(g, _)| *g == gen) {
                self.stats.cache_replaced += 1;
                slot.1 = t;
            } else {
                self.cache.push((gen, t));
            }
        }
    }

    fn resume(&mut self, t: u64) {
        if self.cache.is_empty() || !self.w.wns_up(t) {
            return;
        }
        let ttl = self.cfg.push_ttl.as_secs();
        let cached = std::mem::take(&mut self.cache);
        for (gen, sent) in cached {
            if t < sent + ttl && self.channels[gen] > t {
                self.stats.delivered_from_cache += 1;
                self.deliver(t, sent);
            } else {
                self.stats.cache_dropped += 1;
            }
        }
    }

    /// A raw push reaches the device: it opens a session shortly after.
    fn deliver(&mut self, t: u64, sent: u64) {
        if self.pending_session.is_none() {
            let s = t + self.delay();
            self.pending_session = Some(s);
            self.at(s, Ev::Session(Cause::Push));
        }
        self.pending_wakes.push(sent);
    }

    fn triggered_session(&mut self, t: u64, cause: Cause) {
        match cause {
            Cause::Push => {
                self.pending_session = None;
                if !self.w.network(t) {
                    // Push/Status 7: received, but no session for lack of connectivity.
                    self.stats.push_sessions_failed += 1;
                    self.pending_wakes.clear();
                    return;
                }
                self.stats.push_sessions += 1;
                let window = self.cfg.reach_within.as_secs();
                for sent in self.pending_wakes.drain(..) {
                    let latency = t - sent;
                    self.stats
                        .latencies
                        .push(u32::try_from(latency).unwrap_or(u32::MAX));
                    self.stats.reached += u64::from(latency <= window);
                }
            }
            Cause::Renewal => {
                if !self.w.network(t) {
                    return;
                }
                self.stats.renewal_sessions += 1;
            }
        }
        self.session(t, true);
    }

    /// A management session at `t` (the device has a network).
    fn session(&mut self, t: u64, may_reset: bool) {
        let window = self.cfg.reach_within.as_secs();
        while let Some(&w) = self.waiting.front() {
            if w + window < t {
                self.waiting.pop_front();
            } else if w <= t {
                self.stats.served_any += 1;
                self.waiting.pop_front();
            } else {
                break;
            }
        }
        let newest = self.channels.len().checked_sub(1);
        let reset = match &mut self.server {
            Server::Naive(known) => {
                if known.is_none() {
                    *known = newest;
                }
                false
            }
            Server::Guided(rec, known) => {
                // Get Push/ChannelURI and Push/Status, as the guidance says, every session.
                let (uri, status) = match newest {
                    Some(g) if self.channels[g] > t => {
                        (Some(self.uri.as_str()), PushStatus::Success)
                    }
                    Some(_) => (Some(self.uri.as_str()), PushStatus::ChannelUriExpired),
                    None => (None, PushStatus::NoChannelUri),
                };
                if rec.apply_session_parts(uri, Some(status), t) == SessionChange::NewChannel {
                    *known = newest;
                }
                may_reset && self.policy.pfn_reset_reason_at(rec, t).is_some()
            }
        };
        if reset {
            // Replace Push/PFN: the device registers for a new channel.
            self.stats.pfn_resets += 1;
            self.request_channel(t, false);
        }
    }
}
