//! A small seeded random number generator (SplitMix64) for arrival times and lengths.
//!
//! The load tester needs reproducible draws from a seed, not cryptographic quality; SplitMix64
//! passes BigCrush, costs a few instructions per draw, and its sequence for a seed never changes
//! with a dependency's version, so a run's `seed` means the same arrivals forever.

/// The SplitMix64 generator.
#[derive(Debug, Clone)]
pub(crate) struct Rng {
    state: u64,
}

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

impl Rng {
    /// A generator seeded with `seed`.
    pub(crate) fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    /// An independent generator for stream `index` of the same seed (one per lane).
    pub(crate) fn fork(seed: u64, index: u64) -> Rng {
        // Mixing the index through one SplitMix64 step keeps nearby indices far apart.
        let mut mixer = Rng::new(index ^ 0xD1B5_4A32_D192_ED03);
        Rng::new(seed ^ mixer.next_u64())
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform float in `[0, 1)`.
    pub(crate) fn next_f64(&mut self) -> f64 {
        // The top 53 bits fill the mantissa exactly.
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform integer in `low..=high` (`low` when `high <= low`).
    pub(crate) fn range_inclusive(&mut self, low: u32, high: u32) -> u32 {
        if high <= low {
            return low;
        }
        let span = u64::from(high - low) + 1;
        // Lemire's multiply-shift: unbiased enough for spans this small next to 2^64.
        let pick = ((u128::from(self.next_u64()) * u128::from(span)) >> 64) as u64;
        // `pick < span <= u32::MAX + 1`, so `low + pick <= high` fits.
        low + pick as u32
    }

    /// An exponentially distributed wait with mean `1 / rate`, in seconds.
    pub(crate) fn exponential(&mut self, rate: f64) -> f64 {
        // `1 - u` is in `(0, 1]`, so the logarithm is finite.
        -(1.0 - self.next_f64()).ln() / rate
    }

    /// A standard normal draw (Box–Muller; the second value is discarded for simplicity).
    pub(crate) fn standard_normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64();
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_forks_differ() {
        let a: Vec<u64> = (0..4)
            .scan(Rng::new(7), |r, _| Some(r.next_u64()))
            .collect();
        let b: Vec<u64> = (0..4)
            .scan(Rng::new(7), |r, _| Some(r.next_u64()))
            .collect();
        assert_eq!(a, b);
        assert_ne!(Rng::fork(7, 0).next_u64(), Rng::fork(7, 1).next_u64());
    }

    #[test]
    fn draws_stay_in_range_and_have_the_right_means() {
        let mut rng = Rng::new(1);
        let n = 100_000;
        let mut sum_u = 0.0;
        let mut sum_exp = 0.0;
        let mut sum_norm = 0.0;
        for _ in 0..n {
            let u = rng.next_f64();
            assert!((0.0..1.0).contains(&u));
            sum_u += u;
            let k = rng.range_inclusive(3, 5);
            assert!((3..=5).contains(&k));
            sum_exp += rng.exponential(4.0);
            sum_norm += rng.standard_normal();
        }
        let n = f64::from(n);
        assert!((sum_u / n - 0.5).abs() < 0.01);
        assert!((sum_exp / n - 0.25).abs() < 0.01);
        assert!((sum_norm / n).abs() < 0.02);
        assert_eq!(rng.range_inclusive(9, 9), 9);
        assert_eq!(rng.range_inclusive(9, 2), 9);
    }
}
