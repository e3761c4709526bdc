//! Exponential backoff with full jitter, for retries the client makes itself.
//!
//! The n-th wait (counting from 0) is uniform in `[0, min(cap, base × 2ⁿ)]`: "full
//! jitter" from the AWS Architecture Blog, *Exponential Backoff And Jitter* (Marc Brooker,
//! 2015), which spreads a fleet's retries so that throttled callers do not come back in
//! lockstep. It is what the AWS SDKs' standard retry mode does too.

use std::time::Duration;

/// The retry delays of one retrying caller: grows on every failure, back to the start
/// after a success ([`Backoff::reset`]).
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
}

impl Backoff {
    /// A backoff whose first ceiling is `base` and that never waits more than `cap`.
    pub(crate) fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            failures: 0,
        }
    }

    /// The delay before the next retry; each call raises the next ceiling.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        ceiling.mul_f64(crate::random::unit())
    }

    /// Starts over after a success.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }

    /// The largest delay the next [`Backoff::next_delay`] may return.
    fn ceiling(&self) -> Duration {
        // 2^20 × any sensible base is far past any sensible cap: stop doubling there
        // so the multiplication cannot overflow.
        let factor = 1u32 << self.failures.min(20);
        self.base.saturating_mul(factor).min(self.cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let ceilings: Vec<u64> = (0..10)
            .map(|_| {
                let c = b.ceiling();
                let d = b.next_delay();
                assert!(d <= c, "{d:?} > {c:?}");
                c.as_millis() as u64
            })
            .collect();
        assert_eq!(
            ceilings,
            [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000]
        );
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        for _ in 0..5 {
            b.next_delay();
        }
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(100));
    }

    #[test]
    fn never_overflows() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        for _ in 0..1000 {
            assert!(b.next_delay() <= Duration::from_secs(5));
        }
    }

    #[test]
    fn jitter_spreads_the_delays() {
        let mut delays: Vec<Duration> = (0..50)
            .map(|_| Backoff::new(Duration::from_secs(1), Duration::from_secs(1)).next_delay())
            .collect();
        delays.sort();
        delays.dedup();
        assert!(
            delays.len() > 40,
            "full jitter should rarely repeat a delay"
        );
    }
}
