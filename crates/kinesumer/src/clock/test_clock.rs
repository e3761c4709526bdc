//! [`TestClock`]: time for tests and simulations (feature `test-util`).

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Clock;

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
