//! A lock-free retry budget with the semantics of tower's `TpsBudget` (and finagle's).
//!
//! Every first attempt deposits; every retry withdraws. A retry is allowed while the deposits
//! of the last `ttl`, plus a reserve of `min_per_sec · ttl` retries, cover it. tower's
//! `TpsBudget` takes a mutex on every deposit, which is every request; this one does one
//! compare-and-swap on an atomic instead, so a request whose first attempt succeeds pays a
//! clock read and one atomic update. A withdrawal checks and spends in one compare-and-swap
//! too, so the budget is never overdrawn.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// The window `ttl` is divided into this many slots; deposits older than `ttl` expire slot by
/// slot.
const SLOTS: usize = 10;

/// One deposit, in budget units. A retry costs `DEPOSIT / ratio` units, so ratios down to
/// 0.001 keep three digits of precision in integer arithmetic.
const DEPOSIT: i32 = 1000;

pub(crate) struct Budget {
    start: Instant,
    slot_nanos: u64,
    /// Each slot packs the generation it belongs to (high 32 bits; a generation is one
    /// `slot_nanos` period since `start`) and its balance in units (low 32 bits, as `i32`),
    /// so both change in one atomic operation.
    slots: [AtomicU64; SLOTS],
    /// Units always available on top of the slots: the `min_per_sec` retries.
    reserve: i64,
    deposit: i32,
    withdraw: i32,
}

impl Budget {
    /// Checks the settings (`ttl` in 1..=60 s, `ratio` 0 or in 0.001..=1000, `min_per_sec`
    /// below `i32::MAX`) and returns a reason when they are out of range.
    pub(crate) fn new(ttl: Duration, min_per_sec: u32, ratio: f32) -> Result<Budget, String> {
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&ttl) {
            return Err(format!(
                "retry budget TTL {ttl:?} is not between 1 s and 60 s"
            ));
        }
        if !(ratio == 0.0 || (0.001..=1000.0).contains(&ratio)) {
            return Err(format!(
                "retry budget ratio {ratio} is not 0 or between 0.001 and 1000"
            ));
        }
        if min_per_sec >= i32::MAX as u32 {
            return Err(format!("retry budget minimum {min_per_sec}/s is too large"));
        }
        let (deposit, withdraw) = if ratio == 0.0 {
            // Deposits earn nothing; only the reserve can be spent.
            (0, DEPOSIT)
        } else {
            // In range by the checks above: 1..=1_000_000.
            (
                DEPOSIT,
                (f64::from(DEPOSIT) / f64::from(ratio)).round() as i32,
            )
        };
        let reserve = i64::from(min_per_sec)
            .saturating_mul(ttl.as_secs() as i64)
            .saturating_mul(i64::from(withdraw));
        Ok(Budget {
            start: Instant::now(),
            // At least 100 ms by the TTL check.
            slot_nanos: (ttl / SLOTS as u32).as_nanos() as u64,
            slots: Default::default(),
            reserve,
            deposit,
            withdraw,
        })
    }

    /// Records a first attempt.
    pub(crate) fn deposit(&self) {
        if self.deposit != 0 {
            self.add(self.generation(), self.deposit);
        }
    }

    /// Takes one retry from the budget; `false` when it is spent.
    ///
    /// The check and the withdrawal are one compare-and-swap on the current slot, so racing
    /// withdrawals cannot both spend the last retry: every withdrawal (and deposit) of this
    /// generation changes that slot, and a swap that lost a race checks again. The other live
    /// slots belong to earlier generations, which nothing writes any more (until time moves
    /// on and a later generation reuses one, as it would between any check and spend).
    pub(crate) fn withdraw(&self) -> bool {
        let generation = self.generation();
        let index = generation as usize % SLOTS;
        let slot = &self.slots[index];
        let withdraw = i64::from(self.withdraw);
        let mut current = slot.load(Ordering::Acquire);
        loop {
            let (slot_generation, balance) = unpack(current);
            // A slot left over from an expired generation starts afresh.
            let own = if slot_generation == generation {
                balance
            } else {
                0
            };
            let others = self.live_balance(generation, Some(index));
            if self
                .reserve
                .saturating_add(others)
                .saturating_add(i64::from(own))
                < withdraw
            {
                return false;
            }
            let next = pack(generation, own.saturating_sub(self.withdraw));
            match slot.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    fn generation(&self) -> u32 {
        let elapsed = Instant::now()
            .saturating_duration_since(self.start)
            .as_nanos();
        // Wraps after 2^32 slots (13 years with the smallest TTL); `balance` compares
        // generations with wrapping arithmetic, so only the 13-year wrap itself is imprecise.
        (elapsed / u128::from(self.slot_nanos)) as u32
    }

    fn add(&self, generation: u32, amount: i32) {
        let slot = &self.slots[generation as usize % SLOTS];
        let mut current = slot.load(Ordering::Relaxed);
        loop {
            let (slot_generation, balance) = unpack(current);
            let next = if slot_generation == generation {
                pack(generation, balance.saturating_add(amount))
            } else {
                // The slot holds a generation that has expired: start it afresh.
                pack(generation, amount)
            };
            match slot.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    /// The units available now: the reserve plus the balances of the live slots.
    fn balance(&self, generation: u32) -> i64 {
        self.reserve
            .saturating_add(self.live_balance(generation, None))
    }

    /// The sum of the balances of the slots live in `generation`, leaving out slot `except`.
    fn live_balance(&self, generation: u32, except: Option<usize>) -> i64 {
        self.slots
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != except)
            .map(|(_, slot)| unpack(slot.load(Ordering::Acquire)))
            .filter(|(g, _)| generation.wrapping_sub(*g) < SLOTS as u32)
            .map(|(_, balance)| i64::from(balance))
            .sum()
    }
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let available = self.balance(self.generation()) / i64::from(self.withdraw);
        f.debug_struct("Budget")
            .field("retries_available", &available)
            .finish_non_exhaustive()
    }
}

fn pack(generation: u32, balance: i32) -> u64 {
    (u64::from(generation) << 32) | u64::from(balance as u32)
}

fn unpack(packed: u64) -> (u32, i32) {
    ((packed >> 32) as u32, packed as u32 as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn settings_are_checked() {
        assert!(Budget::new(secs(10), 10, 0.2).is_ok());
        assert!(Budget::new(Duration::from_millis(999), 10, 0.2).is_err());
        assert!(Budget::new(secs(61), 10, 0.2).is_err());
        assert!(Budget::new(secs(10), 10, -0.1).is_err());
        assert!(Budget::new(secs(10), 10, f32::NAN).is_err());
        assert!(Budget::new(secs(10), 10, 1000.5).is_err());
        assert!(Budget::new(secs(10), 10, 0.0001).is_err());
        assert!(Budget::new(secs(10), u32::MAX, 0.2).is_err());
        assert!(Budget::new(secs(10), 10, 0.0).is_ok());
        assert!(Budget::new(secs(60), 10, 1000.0).is_ok());
    }

    /// `Debug` tells the retries available: deposits count for exactly the TTL, no longer.
    #[tokio::test(start_paused = true)]
    async fn debug_counts_the_retries_available_until_the_deposits_expire() {
        // A retry per five requests, no reserve.
        let budget = Budget::new(secs(10), 0, 0.2).unwrap();
        for _ in 0..10 {
            budget.deposit();
        }
        assert_eq!(format!("{budget:?}"), "Budget { retries_available: 2, .. }");
        // Just before the deposits' slot is ten generations old they still count; at ten, not.
        tokio::time::advance(secs(10) - Duration::from_millis(1)).await;
        assert!(format!("{budget:?}").contains("retries_available: 2"));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(format!("{budget:?}").contains("retries_available: 0"));
    }

    #[test]
    fn packing_round_trips() {
        for (g, b) in [(0, 0), (1, -1), (u32::MAX, i32::MIN), (7, i32::MAX)] {
            assert_eq!(unpack(pack(g, b)), (g, b));
        }
    }

    #[test]
    fn racing_withdrawals_never_overdraw() {
        // Rounds of two threads withdrawing at once from a budget with one retry left: exactly
        // one may succeed. Spinning (not a blocking barrier) releases both threads within
        // nanoseconds of each other: a check-then-subtract withdrawal was overdrawn in nearly
        // every round.
        const ROUNDS: usize = 5_000;
        let budgets: Vec<Budget> = (0..ROUNDS)
            .map(|_| Budget::new(secs(1), 1, 0.0).unwrap())
            .collect();
        let arrived = std::sync::atomic::AtomicUsize::new(0);
        let granted: Vec<std::sync::atomic::AtomicU8> =
            (0..ROUNDS).map(|_| Default::default()).collect();
        std::thread::scope(|scope| {
            for _ in 0..2 {
                scope.spawn(|| {
                    for (round, budget) in budgets.iter().enumerate() {
                        arrived.fetch_add(1, Ordering::AcqRel);
                        let mut spins = 0u32;
                        while arrived.load(Ordering::Acquire) < 2 * (round + 1) {
                            // The other thread may be descheduled (a busy machine): let it run.
                            spins += 1;
                            if spins.is_multiple_of(1024) {
                                std::thread::yield_now();
                            } else {
                                std::hint::spin_loop();
                            }
                        }
                        if budget.withdraw() {
                            granted[round].fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        let overdrawn = granted
            .iter()
            .filter(|g| g.load(Ordering::Relaxed) > 1)
            .count();
        let none = granted
            .iter()
            .filter(|g| g.load(Ordering::Relaxed) == 0)
            .count();
        assert_eq!(
            (overdrawn, none),
            (0, 0),
            "rounds overdrawn, rounds with no retry"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_pay_for_a_share_of_retries() {
        let budget = Budget::new(secs(10), 0, 0.2).unwrap();
        assert!(!budget.withdraw(), "nothing deposited, no reserve");
        for _ in 0..10 {
            budget.deposit();
        }
        assert!(budget.withdraw());
        assert!(budget.withdraw());
        assert!(!budget.withdraw(), "20 % of 10 is 2");
    }

    #[tokio::test(start_paused = true)]
    async fn the_reserve_refills_as_withdrawals_expire() {
        let budget = Budget::new(secs(1), 3, 0.0).unwrap();
        for _ in 0..3 {
            assert!(budget.withdraw());
        }
        assert!(!budget.withdraw(), "3/s for a 1 s TTL");
        budget.deposit();
        assert!(!budget.withdraw(), "a ratio of 0 earns nothing");
        tokio::time::advance(Duration::from_millis(1100)).await;
        assert!(
            budget.withdraw(),
            "the withdrawals of the last window expired"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_expire_after_the_ttl() {
        let budget = Budget::new(secs(2), 0, 1.0).unwrap();
        budget.deposit();
        tokio::time::advance(Duration::from_millis(1500)).await;
        budget.deposit();
        tokio::time::advance(Duration::from_millis(1000)).await;
        // The first deposit is 2.5 s old, the second 1 s.
        assert!(budget.withdraw());
        assert!(!budget.withdraw());
        // A slot's generation wraps round the ring after the TTL: old balances are replaced.
        tokio::time::advance(secs(30)).await;
        assert!(!budget.withdraw());
        budget.deposit();
        assert!(budget.withdraw());
    }
}
