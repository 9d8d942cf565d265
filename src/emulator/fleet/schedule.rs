//! The DMClient channel-renewal retry schedule, as the MDM push document gives
//! it, as a pure function of the build, the clock, the channel's expiry and
//! network availability ([`next_attempt`]).
//!
//! - **1511:** expiry more than 15 days away: try when 15 days are left; expiry
//!   within 15 days: retry in 4 ± 1 h; expired: retry in 1 day ± 4 h.
//! - **1607 and later:** the same, except that with no network the retry is
//!   skipped and another is scheduled in 4 ± 1 h.
//!
//! Times are simulated seconds; jitter is uniform over whole seconds, bounds included.

/// One hour, in seconds.
pub const HOUR: u64 = 3600;
/// One day, in seconds.
pub const DAY: u64 = 86_400;
/// How long a channel lives.
pub const CHANNEL_LIFETIME: u64 = 30 * DAY;
/// Renewal starts when this much of the channel's life is left.
pub const RENEW_WHEN_LEFT: u64 = 15 * DAY;
/// Retry delay while the expiry is within 15 days (and, on 1607+, without network).
pub const NEAR_RETRY: u64 = 4 * HOUR;
/// Jitter of [`NEAR_RETRY`].
pub const NEAR_JITTER: u64 = HOUR;
/// Retry delay once the channel has expired.
pub const EXPIRED_RETRY: u64 = DAY;
/// Jitter of [`EXPIRED_RETRY`].
pub const EXPIRED_JITTER: u64 = 4 * HOUR;

/// Which DMClient retry logic a device runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Build {
    /// Windows 10 version 1511 (also used for devices with the never-renew bug).
    V1511,
    /// Windows 10 version 1607 and later: checks for a network before retrying.
    V1607Plus,
}

/// When the device next tries to get (renew) its channel, at `now`.
///
/// `expiry` is the current channel's expiry (`None`: no channel, taken as
/// expired); `network` says whether a network is available now (only 1607+
/// looks). `rng` supplies the jitter.
pub fn next_attempt(
    build: Build,
    now: u64,
    expiry: Option<u64>,
    network: bool,
    rng: &mut fastrand::Rng,
) -> u64 {
    if build == Build::V1607Plus && !network {
        return jittered(now, NEAR_RETRY, NEAR_JITTER, rng);
    }
    match expiry {
        Some(e) if e > now && e - now > RENEW_WHEN_LEFT => e - RENEW_WHEN_LEFT,
        Some(e) if e > now => jittered(now, NEAR_RETRY, NEAR_JITTER, rng),
        _ => jittered(now, EXPIRED_RETRY, EXPIRED_JITTER, rng),
    }
}

/// `now + base ± jitter`, uniform over whole seconds with both bounds possible.
pub fn jittered(now: u64, base: u64, jitter: u64, rng: &mut fastrand::Rng) -> u64 {
    now + base - jitter + rng.u64(0..=2 * jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 100 * DAY;

    /// The smallest and largest of many draws, as offsets from `NOW`.
    fn range_of(build: Build, expiry: Option<u64>, network: bool) -> (u64, u64) {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut lo = u64::MAX;
        let mut hi = 0;
        for _ in 0..50_000 {
            let t = next_attempt(build, NOW, expiry, network, &mut rng);
            lo = lo.min(t);
            hi = hi.max(t);
        }
        (lo - NOW, hi - NOW)
    }

    /// Every draw is inside `want`, and the draws reach within 0.1% of both ends.
    fn check(got: (u64, u64), want: (u64, u64)) {
        let slack = (want.1 - want.0) / 1000;
        assert!(
            got.0 >= want.0 && got.1 <= want.1,
            "{got:?} outside {want:?}"
        );
        assert!(
            got.0 - want.0 <= slack && want.1 - got.1 <= slack,
            "{got:?} does not span {want:?}"
        );
    }

    const NEAR: (u64, u64) = (3 * HOUR, 5 * HOUR);
    const EXPIRED: (u64, u64) = (20 * HOUR, 28 * HOUR);

    #[test]
    fn v1511_boundaries_and_jitter_bounds() {
        let b = Build::V1511;
        // More than 15 days away: exactly when 15 days are left (no jitter).
        assert_eq!(range_of(b, Some(NOW + 15 * DAY + 1), true), (1, 1));
        assert_eq!(
            range_of(b, Some(NOW + 30 * DAY), true),
            (15 * DAY, 15 * DAY)
        );
        // Exactly 15 days, and anything down to one second: 4 ± 1 h, bounds reached.
        check(range_of(b, Some(NOW + 15 * DAY), true), NEAR);
        check(range_of(b, Some(NOW + 1), true), NEAR);
        // Expired (at the instant of expiry, after it, or no channel): 1 day ± 4 h.
        check(range_of(b, Some(NOW), true), EXPIRED);
        check(range_of(b, Some(NOW - 1), true), EXPIRED);
        check(range_of(b, None, true), EXPIRED);
        // 1511 does not look at the network.
        check(range_of(b, Some(NOW), false), EXPIRED);
        assert_eq!(range_of(b, Some(NOW + 20 * DAY), false), (5 * DAY, 5 * DAY));
    }

    #[test]
    fn v1607_skips_without_network() {
        let b = Build::V1607Plus;
        for expiry in [Some(NOW + 20 * DAY), Some(NOW + DAY), Some(NOW), None] {
            check(range_of(b, expiry, false), NEAR);
        }
        // With a network it follows the 1511 rules.
        assert_eq!(range_of(b, Some(NOW + 15 * DAY + 1), true), (1, 1));
        check(range_of(b, Some(NOW + 15 * DAY), true), NEAR);
        check(range_of(b, Some(NOW), true), EXPIRED);
    }

    #[test]
    fn jitter_bounds_are_inclusive() {
        let mut rng = fastrand::Rng::with_seed(3);
        let seen: std::collections::BTreeSet<u64> =
            (0..1000).map(|_| jittered(100, 10, 2, &mut rng)).collect();
        assert_eq!(
            seen.into_iter().collect::<Vec<_>>(),
            [108, 109, 110, 111, 112]
        );
    }

    #[test]
    fn jitter_is_roughly_uniform() {
        let mut rng = fastrand::Rng::with_seed(1);
        let n = 40_000;
        let below = (0..n)
            .filter(|_| jittered(0, NEAR_RETRY, NEAR_JITTER, &mut rng) < NEAR_RETRY)
            .count();
        let share = below as f64 / n as f64;
        assert!((0.47..0.53).contains(&share), "{share}");
    }
}
