//! The library's one source of randomness (tick jitter, backoff jitter, incarnation
//! tokens), seedable per thread so a simulation replays exactly.
//!
//! Outside simulations it is the thread-local generator of `rand`. A simulation running on
//! a current-thread runtime seeds this thread's generator ([`seed_thread`]); with tokio's
//! paused clock, the run is then a function of the seed.

use std::cell::RefCell;

use rand::rngs::StdRng;
use rand::Rng;

thread_local! {
    static SEEDED: RefCell<Option<StdRng>> = const { RefCell::new(None) };
}

/// Seeds this thread's generator (`None`: back to the unseeded `rand` generator).
#[cfg(any(test, feature = "test-util"))]
pub(crate) fn seed_thread(seed: Option<u64>) {
    use rand::SeedableRng;
    SEEDED.with(|s| *s.borrow_mut() = seed.map(StdRng::seed_from_u64));
}

fn with<T>(f: impl FnOnce(&mut dyn rand::RngCore) -> T) -> T {
    SEEDED.with(|s| match s.borrow_mut().as_mut() {
        Some(rng) => f(rng),
        None => f(&mut rand::rng()),
    })
}

/// A uniform number in `[0, 1)`.
pub(crate) fn unit() -> f64 {
    with(|rng| rng.random())
}

/// A uniform 64-bit number.
pub(crate) fn u64() -> u64 {
    with(|rng| rng.random())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seeded_thread_repeats_its_sequence() {
        seed_thread(Some(7));
        let first: Vec<u64> = (0..4).map(|_| u64()).collect();
        seed_thread(Some(7));
        let again: Vec<u64> = (0..4).map(|_| u64()).collect();
        seed_thread(None);
        assert_eq!(first, again);
        assert!((0.0..1.0).contains(&unit()));
    }
}
