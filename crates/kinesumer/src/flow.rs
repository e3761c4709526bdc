//! Flow control: pausing one shard or the whole member, and a member-wide limit on
//! records handed to the application.
//!
//! Both act where records leave a shard's buffer for the application: a paused or
//! rate-limited shard takes no more records from its buffer, the buffer fills (bounded
//! in records and bytes, `reader::buffer`), and the shard's reader waits to send — so
//! it stops calling Kinesis. Leases, heartbeats and commits go on.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::store::ShardRef;

/// What is paused.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Pauses {
    all: bool,
    shards: BTreeSet<ShardRef>,
}

impl Pauses {
    fn holds(&self, stream: &str, shard_id: &str) -> bool {
        self.all
            || self
                .shards
                .iter()
                .any(|s| s.stream == stream && s.shard_id == shard_id)
    }
}

/// A member's pauses and rate limit, shared by its shards' deliveries.
#[derive(Debug, Clone)]
pub(crate) struct Flow {
    pauses: Arc<watch::Sender<Pauses>>,
    limiter: Option<Arc<RateLimiter>>,
}

impl Flow {
    /// No pause; at most `per_second` records a second, if given.
    pub(crate) fn new(per_second: Option<u32>) -> Self {
        Self {
            pauses: Arc::new(watch::Sender::new(Pauses::default())),
            limiter: per_second.map(|r| Arc::new(RateLimiter::new(r))),
        }
    }

    /// Pauses `shard`, or every shard.
    pub(crate) fn pause(&self, shard: Option<&ShardRef>) {
        self.pauses.send_modify(|p| match shard {
            Some(s) => {
                p.shards.insert(s.clone());
            }
            None => p.all = true,
        });
    }

    /// Resumes `shard` (paused by itself), or lifts the pause of every shard.
    pub(crate) fn resume(&self, shard: Option<&ShardRef>) {
        self.pauses.send_modify(|p| match shard {
            Some(s) => {
                p.shards.remove(s);
            }
            None => p.all = false,
        });
    }

    /// Waits while the shard is paused.
    pub(crate) async fn unpaused(&self, stream: &str, shard_id: &str) {
        if !self.pauses.borrow().holds(stream, shard_id) {
            return;
        }
        let mut pauses = self.pauses.subscribe();
        // The sender lives as long as this flow: the wait ends only by a resume.
        let _ = pauses.wait_for(|p| !p.holds(stream, shard_id)).await;
    }

    /// Waits until `n` more records may be handed out.
    pub(crate) async fn admit(&self, n: usize) {
        if let Some(limiter) = &self.limiter {
            let wait = limiter.take(n, Instant::now());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// A token bucket of `rate` tokens a second and as many at most; taking more than there
/// are leaves a debt, paid by waiting.
#[derive(Debug)]
struct RateLimiter {
    rate: f64,
    /// Tokens (negative: owed) as of the instant.
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    fn new(per_second: u32) -> Self {
        let rate = f64::from(per_second.max(1));
        Self {
            rate,
            state: Mutex::new((rate, Instant::now())),
        }
    }

    /// Takes `n` tokens at `now`; returns how long to wait until they are paid for.
    fn take(&self, n: usize, now: Instant) -> Duration {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, then) = *state;
        let refilled =
            (tokens + now.saturating_duration_since(then).as_secs_f64() * self.rate).min(self.rate);
        let left = refilled - n as f64;
        *state = (left, now);
        if left >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-left / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_a_second_then_the_rate() {
        let limiter = RateLimiter::new(100);
        let now = Instant::now();
        assert_eq!(limiter.take(100, now), Duration::ZERO, "a second's burst");
        assert_eq!(limiter.take(50, now), Duration::from_millis(500));
        let later = now + Duration::from_secs(10);
        assert_eq!(
            limiter.take(100, later),
            Duration::ZERO,
            "the bucket holds a second's worth, not ten"
        );
        assert_eq!(limiter.take(1, later), Duration::from_millis(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_paused_shard_waits_until_resumed_and_others_go_on() {
        let flow = Flow::new(None);
        let a = ShardRef {
            stream: "s".into(),
            shard_id: "a".into(),
        };
        flow.pause(Some(&a));
        flow.unpaused("s", "b").await;
        let waiting = tokio::time::timeout(Duration::from_secs(5), flow.unpaused("s", "a"));
        assert!(waiting.await.is_err(), "paused");
        flow.pause(None);
        flow.resume(Some(&a));
        let all = tokio::time::timeout(Duration::from_secs(5), flow.unpaused("s", "a"));
        assert!(all.await.is_err(), "the member is paused");
        let f = flow.clone();
        let resumed = tokio::spawn(async move { f.unpaused("s", "a").await });
        tokio::task::yield_now().await;
        flow.resume(None);
        tokio::time::timeout(Duration::from_secs(1), resumed)
            .await
            .expect("resumed")
            .unwrap();
    }
}
