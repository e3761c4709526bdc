//! Clocks behind one small trait, so tests can drive time.
//!
//! Two kinds of time are used:
//!
//! - the *fencing clock* ([`Clock::fencing_now`]), which judges liveness and fencing
//!   deadlines. It keeps counting while the machine is suspended (`CLOCK_BOOTTIME` on
//!   Linux): the ordinary monotonic clock stops during a suspend, and a resumed member
//!   would believe no time had passed and keep handing out records of shards that are
//!   already elsewhere (DESIGN §3, scenario 6). On other systems it is the monotonic
//!   clock, which is documented as the weaker guarantee.
//! - the *wall clock* ([`Clock::wall`]), used only for the `last_update` attributes and to
//!   pin LATEST as a timestamp (with `latest_skew_margin`). No liveness decision compares
//!   another machine's wall clock.

use std::fmt::Debug;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// A source of time for the group protocol.
pub trait Clock: Send + Sync + Debug + 'static {
    /// Time since an arbitrary fixed origin, counting suspended time where the system
    /// allows it. Never goes backwards.
    fn fencing_now(&self) -> Duration;

    /// The wall clock (UTC).
    fn wall(&self) -> DateTime<Utc>;
}

/// The system clocks: `CLOCK_BOOTTIME` for fencing on Linux (the monotonic clock
/// elsewhere), and the system wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn fencing_now(&self) -> Duration {
        let ts = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn fencing_now(&self) -> Duration {
        use std::sync::OnceLock;
        use std::time::Instant;
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        ORIGIN.get_or_init(Instant::now).elapsed()
    }

    fn wall(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock for tests and simulations that follows tokio's clock (so it pauses and
/// advances with `tokio::time::pause`/`advance`) and can be made to jump: a suspend
/// (the fencing clock jumps, tokio's timers do not notice), or a wall-clock step.
#[derive(Debug)]
pub struct TestClock {
    origin: tokio::time::Instant,
    wall_origin: DateTime<Utc>,
    jumps: Mutex<Jumps>,
}

#[derive(Debug, Default)]
struct Jumps {
    suspended: Duration,
    wall_step: chrono::Duration,
}

impl TestClock {
    /// A clock whose wall time starts at `wall_origin`.
    pub fn new(wall_origin: DateTime<Utc>) -> Self {
        Self {
            origin: tokio::time::Instant::now(),
            wall_origin,
            jumps: Mutex::new(Jumps::default()),
        }
    }

    /// Simulates a suspend of `d`: the fencing clock and the wall clock move on by `d`.
    pub fn suspend(&self, d: Duration) {
        let mut j = self.jumps.lock().expect("clock lock");
        j.suspended += d;
        j.wall_step += chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
    }

    /// Steps the wall clock by `step` (forwards or backwards), as NTP or an operator might.
    pub fn step_wall(&self, step: chrono::Duration) {
        self.jumps.lock().expect("clock lock").wall_step += step;
    }
}

impl Clock for TestClock {
    fn fencing_now(&self) -> Duration {
        self.origin.elapsed() + self.jumps.lock().expect("clock lock").suspended
    }

    fn wall(&self) -> DateTime<Utc> {
        let elapsed = chrono::Duration::from_std(self.origin.elapsed()).unwrap_or_default();
        self.wall_origin + elapsed + self.jumps.lock().expect("clock lock").wall_step
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_fencing_clock_moves_forward() {
        let c = SystemClock;
        let a = c.fencing_now();
        let b = c.fencing_now();
        assert!(b >= a);
        assert!(a > Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn test_clock_follows_tokio_and_jumps() {
        let c = TestClock::new(DateTime::UNIX_EPOCH);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(c.fencing_now(), Duration::from_secs(2));
        c.suspend(Duration::from_secs(30));
        assert_eq!(c.fencing_now(), Duration::from_secs(32));
        c.step_wall(chrono::Duration::seconds(-100));
        assert_eq!(
            c.wall(),
            DateTime::UNIX_EPOCH + chrono::Duration::seconds(32 - 100)
        );
    }
}
