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
use std::time::Duration;

use chrono::{DateTime, Utc};

#[cfg(any(test, feature = "test-util"))]
mod test_clock;
#[cfg(any(test, feature = "test-util"))]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub use test_clock::TestClock;

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
