//! Random spread for waits: one small generator per thread.

use std::cell::RefCell;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

thread_local! {
    // Seeded from the process's random hashing keys: `rand` is built without its OS
    // generator feature, and jitter needs spread, not cryptographic quality.
    static RNG: RefCell<SmallRng> = RefCell::new(SmallRng::seed_from_u64(
        RandomState::new().hash_one(std::thread::current().id()),
    ));
}

/// Runs `f` with this thread's generator.
pub(crate) fn with_rng<T>(f: impl FnOnce(&mut SmallRng) -> T) -> T {
    RNG.with_borrow_mut(f)
}

/// A uniformly random number of nanoseconds in `[0, max]`.
pub(crate) fn nanos_up_to(max: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    with_rng(|rng| rng.random_range(0..=max))
}

/// A uniformly random duration in `[0, max]`.
pub(crate) fn up_to(max: Duration) -> Duration {
    Duration::from_nanos(nanos_up_to(
        u64::try_from(max.as_nanos()).unwrap_or(u64::MAX),
    ))
}

/// A uniformly random fraction in `[0, 1)`.
pub(crate) fn fraction() -> f64 {
    with_rng(|rng| rng.random::<f64>())
}
