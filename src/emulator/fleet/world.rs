//! What happens to one simulated device regardless of the server: its build,
//! whether it has the never-renew bug, when it enrolls, and when it has no
//! network or no WNS connection (battery saver, Data Sense). Generated from its
//! own seeded stream, so both server policies see the very same fleet.

use super::schedule::{Build, DAY};
use super::SimConfig;

/// Stream numbers mixed into per-device seeds.
pub(crate) const STREAM_WORLD: u64 = 1;
/// The device-behaviour stream (retry jitter, session delays).
pub(crate) const STREAM_DEVICE: u64 = 2;

/// A per-device, per-stream seed (SplitMix64 finaliser over the three inputs).
pub(crate) fn device_seed(seed: u64, device: u32, stream: u64) -> u64 {
    let mut z = seed
        ^ (u64::from(device).wrapping_add(1)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One device's fixed circumstances over the simulated period.
#[derive(Debug, Clone)]
pub(crate) struct World {
    /// Retry logic.
    pub build: Build,
    /// The old-build bug: the channel is never renewed automatically.
    pub never_renews: bool,
    /// Enrollment time (always with a network).
    pub enroll_at: u64,
    /// Offset of the server's wake schedule for this device.
    pub wake_phase: u64,
    /// Sorted, disjoint intervals `[start, end)` with no network.
    pub no_network: Vec<(u64, u64)>,
    /// Sorted, disjoint intervals with a network but no WNS connection.
    pub wns_off: Vec<(u64, u64)>,
    /// Sorted ends of all those intervals: when the WNS connection may come back.
    pub resumes: Vec<u64>,
}

fn uniform(rng: &mut fastrand::Rng, min: u64, max: u64) -> u64 {
    if max <= min {
        min
    } else {
        rng.u64(min..=max)
    }
}

fn merge(mut v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for (s, e) in v {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

fn inside(intervals: &[(u64, u64)], t: u64) -> Option<(u64, u64)> {
    let i = intervals.partition_point(|&(s, _)| s <= t);
    (i > 0 && intervals[i - 1].1 > t).then(|| intervals[i - 1])
}

impl World {
    /// Draws device `index`'s world.
    pub(crate) fn generate(cfg: &SimConfig, index: u32) -> World {
        let mut rng = fastrand::Rng::with_seed(device_seed(cfg.seed, index, STREAM_WORLD));
        let horizon = u64::from(cfg.days) * DAY;
        let never_renews = rng.f64() < cfg.share_buggy_never_renews;
        let old = rng.f64() < cfg.share_1511;
        let build = if never_renews || old {
            Build::V1511
        } else {
            Build::V1607Plus
        };
        let spread = cfg
            .enrollment_spread
            .as_secs()
            .min(horizon.saturating_sub(1));
        let enroll_at = uniform(&mut rng, 0, spread);
        let wake_phase = rng.u64(0..cfg.push_interval.as_secs().max(1));

        let mut no_network = Vec::new();
        let mut wns_off = Vec::new();
        for day in 0..u64::from(cfg.days) {
            if rng.f64() < cfg.offline_chance_per_day {
                let s = day * DAY + rng.u64(0..DAY);
                let d = uniform(
                    &mut rng,
                    cfg.offline.min.as_secs(),
                    cfg.offline.max.as_secs(),
                );
                no_network.push((s, s + d));
            }
            if rng.f64() < cfg.battery_saver_chance_per_day {
                let s = day * DAY + rng.u64(0..DAY);
                let d = uniform(
                    &mut rng,
                    cfg.battery_saver.min.as_secs(),
                    cfg.battery_saver.max.as_secs(),
                );
                wns_off.push((s, s + d));
            }
        }
        if rng.f64() < cfg.share_long_offline {
            let s = rng.u64(0..horizon.max(1));
            let d = uniform(
                &mut rng,
                cfg.long_offline.min.as_secs(),
                cfg.long_offline.max.as_secs(),
            );
            no_network.push((s, s + d));
        }
        if rng.f64() < cfg.share_data_sense {
            // Over the monthly allowance from a day in 15..=28 of each 30-day
            // cycle until the cycle resets.
            let cycle = 30 * DAY;
            let mut c = 0;
            while c * cycle < horizon {
                let s = c * cycle + uniform(&mut rng, 15, 28) * DAY + rng.u64(0..DAY);
                wns_off.push((s, (c + 1) * cycle));
                c += 1;
            }
        }
        let no_network = merge(no_network);
        let wns_off = merge(wns_off);
        let mut resumes: Vec<u64> = no_network
            .iter()
            .chain(wns_off.iter())
            .map(|&(_, e)| e)
            .collect();
        resumes.sort_unstable();
        resumes.dedup();
        let mut w = World {
            build,
            never_renews,
            enroll_at,
            wake_phase,
            no_network,
            wns_off,
            resumes,
        };
        if let Some((_, end)) = inside(&w.no_network, w.enroll_at) {
            w.enroll_at = end;
        }
        w
    }

    /// True when the device has a network at `t`.
    pub(crate) fn network(&self, t: u64) -> bool {
        inside(&self.no_network, t).is_none()
    }

    /// True when the device is connected to WNS at `t`.
    pub(crate) fn wns_up(&self, t: u64) -> bool {
        self.network(t) && inside(&self.wns_off, t).is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_and_inside() {
        let m = merge(vec![(5, 10), (1, 3), (2, 6), (20, 30), (30, 31)]);
        assert_eq!(m, [(1, 10), (20, 31)]);
        assert_eq!(inside(&m, 0), None);
        assert_eq!(inside(&m, 1), Some((1, 10)));
        assert_eq!(inside(&m, 9), Some((1, 10)));
        assert_eq!(inside(&m, 10), None);
        assert_eq!(inside(&m, 30), Some((20, 31)));
    }

    #[test]
    fn deterministic_and_shares() {
        let cfg = SimConfig {
            devices: 4000,
            ..SimConfig::default()
        };
        let a: Vec<_> = (0..50)
            .map(|i| World::generate(&cfg, i).no_network)
            .collect();
        let b: Vec<_> = (0..50)
            .map(|i| World::generate(&cfg, i).no_network)
            .collect();
        assert_eq!(a, b);
        let worlds: Vec<_> = (0..cfg.devices).map(|i| World::generate(&cfg, i)).collect();
        let buggy = worlds.iter().filter(|w| w.never_renews).count() as f64 / 4000.0;
        let old = worlds.iter().filter(|w| w.build == Build::V1511).count() as f64 / 4000.0;
        assert!(
            (buggy - cfg.share_buggy_never_renews).abs() < 0.02,
            "{buggy}"
        );
        let want_old =
            cfg.share_buggy_never_renews + (1.0 - cfg.share_buggy_never_renews) * cfg.share_1511;
        assert!((old - want_old).abs() < 0.03, "{old}");
        for w in &worlds {
            assert!(w.network(w.enroll_at));
            assert!(w.resumes.windows(2).all(|p| p[0] < p[1]));
        }
        assert_ne!(
            device_seed(1, 0, STREAM_WORLD),
            device_seed(1, 0, STREAM_DEVICE)
        );
        assert_ne!(device_seed(1, 0, 1), device_seed(2, 0, 1));
    }
}
