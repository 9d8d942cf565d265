//! [`RetryPolicy`]: how often and how long a retryable outcome is retried.
//!
//! Exponential backoff with full jitter (a uniform delay in `[0, min(cap,
//! base * 2^(n-1))]`), never shorter than the server's `Retry-After` (or
//! `X-WNS-CONTINUE-AFTER`). Each wake has an attempt limit and a deadline; a retry
//! that would start after the deadline is not made, and the wake ends with its
//! last (retryable) outcome, whose MDM action is "retry later". Final outcomes are
//! never retried. The engine waits on a timer, holding neither a worker nor a
//! connection.

use std::time::Duration;

/// Retry settings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Most HTTP attempts per wake (the one resend after a token refresh is extra). Default 5.
    pub max_attempts: u32,
    /// First backoff cap. Default 500 ms.
    #[serde(rename = "base_delay_ms", with = "crate::util::duration_ms")]
    pub base_delay: Duration,
    /// Largest backoff cap. Default 30 s.
    #[serde(rename = "max_delay_ms", with = "crate::util::duration_ms")]
    pub max_delay: Duration,
    /// Time from submission after which no new attempt starts. Default 5 minutes.
    #[serde(rename = "deadline_ms", with = "crate::util::duration_ms")]
    pub deadline: Duration,
    /// On 406/429 with `Retry-After`, pause the whole tenant (PFN) for that long,
    /// since WNS throttles the app, not the channel. Default true.
    pub pause_tenant_on_throttle: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            deadline: Duration::from_secs(300),
            pause_tenant_on_throttle: true,
        }
    }
}

impl RetryPolicy {
    /// No retries at all: every outcome is returned as it comes.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The delay before attempt `attempt + 1`, after `attempt` attempts (1-based).
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let cap = self
            .base_delay
            .saturating_mul(1u32 << exp)
            .min(self.max_delay);
        let jittered = cap.mul_f64(fastrand::f64());
        match retry_after {
            Some(ra) => ra.max(jittered),
            None => jittered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_jitter_within_exponential_cap() {
        let p = RetryPolicy::default();
        for attempt in 1..=10 {
            let cap = (p.base_delay * 2u32.pow(attempt - 1)).min(p.max_delay);
            let mut max_seen = Duration::ZERO;
            for _ in 0..2000 {
                let d = p.delay(attempt, None);
                assert!(d <= cap, "attempt {attempt}: {d:?} > {cap:?}");
                max_seen = max_seen.max(d);
            }
            // Full jitter spreads over the whole range.
            assert!(
                max_seen > cap.mul_f64(0.9),
                "attempt {attempt}: {max_seen:?}"
            );
        }
    }

    #[test]
    fn retry_after_is_a_floor() {
        let p = RetryPolicy::default();
        for _ in 0..1000 {
            assert!(p.delay(1, Some(Duration::from_secs(7))) >= Duration::from_secs(7));
        }
        assert!(p.delay(u32::MAX, None) <= p.max_delay);
    }
}
