//! The generic cell rate algorithm for one per-minute limit, with no clock and no I/O: times
//! are nanoseconds since the limiter's epoch, passed in.
//!
//! The state is one number, the theoretical arrival time (TAT): the instant at which the
//! bucket is full again. A bucket is full when `tat <= now`; it holds
//! `burst - (tat - now) / interval` units otherwise, and may go below zero (see
//! [`Gcra::earliest`]).

/// Nanoseconds in a minute.
const MINUTE_NANOS: f64 = 60e9;

/// One limit: `limit` units per minute, with a tolerance of `burst` units. (The caller keeps
/// the limit itself, to refuse costs above it before they get here.)
#[derive(Debug, Clone)]
pub(crate) struct Gcra {
    /// Nanoseconds one unit costs: a minute over the limit, stretched by the headroom.
    interval: f64,
    /// How far the TAT may run ahead of now before a request waits: the burst times the
    /// nominal (unstretched) interval, less the jitter margin. With headroom the burst in
    /// units shrinks in proportion, so both the rate and the burst aim below the provider's.
    tolerance: u64,
    /// When the bucket is full again.
    tat: u64,
}

impl Gcra {
    /// A full bucket. `limit` and `burst` are at least 1; `headroom` is in `[0, 1)`; the
    /// tolerance shrinks by `jitter` nanoseconds (down to none: one unit at a time).
    pub(crate) fn new(limit: u64, burst: u64, headroom: f64, jitter: u64) -> Gcra {
        let nominal = MINUTE_NANOS / limit as f64;
        Gcra {
            interval: nominal / (1.0 - headroom),
            tolerance: ((burst as f64 * nominal) as u64).saturating_sub(jitter),
            tat: 0,
        }
    }

    /// The nanoseconds `cost` units take to refill, rounded up (so rounding never loosens).
    fn span(&self, cost: u64) -> u64 {
        let span = (cost as f64 * self.interval).ceil();
        // `as` saturates: an absurd cost becomes "never", not a wrap-around.
        span as u64
    }

    /// The earliest time at or after `now` at which a request of `cost` conforms.
    ///
    /// A cost within the burst conforms once the bucket holds it. A cost above the burst (but
    /// within the per-minute limit, which the caller checks) could never fit the bucket, so it
    /// conforms once the bucket is full, and leaves it in debt: the requests after it wait
    /// until the debt is repaid. Over any window the average stays within the limit either way.
    pub(crate) fn earliest(&self, now: u64, cost: u64) -> u64 {
        let span = self.span(cost);
        let tolerance = self.tolerance.max(span);
        self.tat
            .max(now)
            .saturating_add(span)
            .saturating_sub(tolerance)
            .max(now)
    }

    /// Records a request of `cost` sent at `at` (a conforming time from [`earliest`]).
    ///
    /// [`earliest`]: Gcra::earliest
    pub(crate) fn commit(&mut self, at: u64, cost: u64) {
        self.tat = self.tat.max(at).saturating_add(self.span(cost));
    }

    /// Gives back `cost` units, never filling the bucket beyond full.
    pub(crate) fn refund(&mut self, now: u64, cost: u64) {
        self.tat = self.tat.saturating_sub(self.span(cost)).max(now);
    }

    /// Takes `cost` more units as of `now` (usage above the estimate). The bucket may go into
    /// debt; requests reserved later wait for it.
    pub(crate) fn charge(&mut self, now: u64, cost: u64) {
        self.tat = self.tat.max(now).saturating_add(self.span(cost));
    }

    /// Learns that the provider's bucket is empty as of `now`: ours is emptied too, unless it
    /// is already lower, and refills at the configured rate from here.
    pub(crate) fn empty(&mut self, now: u64) {
        self.tat = self.tat.max(now.saturating_add(self.tolerance));
    }

    /// Learns that the provider's bucket holds `units` as of `now`: ours holds no more,
    /// unless it is already lower. Only ever tightens.
    pub(crate) fn hold(&mut self, now: u64, units: u64) {
        let full_in = self.tolerance.saturating_sub(self.span(units));
        self.tat = self.tat.max(now.saturating_add(full_in));
    }

    /// A bucket for a new limit that keeps `old`'s debt beyond `from` (a full one without
    /// `old`): what was sent stays sent, and is repaid at the new rate (a limit raised from 1
    /// a minute to 1 000 repays in a minute what the old one would have taken 17 hours for).
    /// `from` is now, or the end of a pause in force: a pause is time the provider asked for,
    /// not units, and is kept.
    pub(crate) fn relimited(
        old: Option<&Gcra>,
        from: u64,
        limit: u64,
        burst: u64,
        headroom: f64,
        jitter: u64,
    ) -> Gcra {
        let mut next = Gcra::new(limit, burst, headroom, jitter);
        let Some(old) = old else {
            return next;
        };
        next.tat = match old.tat.checked_sub(from) {
            Some(debt) if debt > 0 => {
                let units = debt as f64 / old.interval;
                from.saturating_add((units * next.interval) as u64)
            }
            _ => old.tat,
        };
        next
    }

    /// Moves the bucket's state `by` nanoseconds into the future (a pause): what was full now
    /// is full only after the pause, and any debt is repaid that much later.
    pub(crate) fn delay(&mut self, now: u64, by: u64) {
        self.tat = self.tat.max(now).saturating_add(by);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn a_full_bucket_lets_a_burst_through_then_paces() {
        // 600 per minute: one every 100 ms, burst 10.
        let mut g = Gcra::new(600, 10, 0.0, 0);
        for _ in 0..10 {
            assert_eq!(g.earliest(0, 1), 0);
            g.commit(0, 1);
        }
        assert_eq!(g.earliest(0, 1), SEC / 10);
        g.commit(SEC / 10, 1);
        assert_eq!(g.earliest(0, 1), 2 * SEC / 10);
        // After idling the bucket is full again, and no fuller.
        assert_eq!(g.earliest(100 * SEC, 1), 100 * SEC);
        g.commit(100 * SEC, 10);
        assert_eq!(g.earliest(100 * SEC, 1), 100 * SEC + SEC / 10);
    }

    /// A new limit repays the debt at its own rate, and keeps a pause as the time it is.
    #[test]
    fn a_new_limit_rescales_the_debt_but_not_a_pause() {
        // 60 a minute: one a second, burst 1; 10 units of debt.
        let mut g = Gcra::new(60, 1, 0.0, 0);
        g.commit(0, 10);
        let raised = Gcra::relimited(Some(&g), 0, 600, 1, 0.0, 0);
        // Ten units at a tenth of a second each: full again at 1 s, when one more fits.
        assert_eq!(raised.earliest(0, 1), SEC);
        // Paused for 30 s by a 429: the pause stays 30 s, the debt after it is rescaled.
        g.delay(0, 30 * SEC);
        let raised = Gcra::relimited(Some(&g), 30 * SEC, 600, 1, 0.0, 0);
        assert_eq!(raised.earliest(0, 1), 31 * SEC);
    }

    #[test]
    fn a_cost_above_the_burst_waits_for_a_full_bucket_and_leaves_debt() {
        let mut g = Gcra::new(600, 10, 0.0, 0);
        g.commit(0, 5);
        // Needs a full bucket: 5 units refill in 500 ms.
        assert_eq!(g.earliest(0, 30), SEC / 2);
        g.commit(SEC / 2, 30);
        // 20 units of debt plus the next unit: 2.1 s after the big one.
        assert_eq!(g.earliest(SEC / 2, 1), SEC / 2 + 21 * SEC / 10);
    }

    #[test]
    fn refunds_never_overfill_and_charges_create_debt() {
        let mut g = Gcra::new(600, 10, 0.0, 0);
        g.commit(0, 10);
        g.refund(0, 4);
        assert_eq!(g.earliest(0, 4), 0);
        g.refund(0, 100);
        assert_eq!(g.earliest(0, 10), 0, "full");
        assert_eq!(
            g.earliest(0, 11),
            0,
            "and no fuller: 11 needs a full bucket"
        );
        g.commit(0, 11);
        assert_eq!(g.earliest(0, 1), 2 * SEC / 10);
        g.charge(0, 5);
        assert_eq!(g.earliest(0, 1), 7 * SEC / 10);
    }

    #[test]
    fn empty_and_delay() {
        let mut g = Gcra::new(600, 10, 0.0, 0);
        g.empty(0);
        assert_eq!(g.earliest(0, 1), SEC / 10);
        g.commit(SEC / 10, 5);
        g.empty(SEC / 10);
        assert_eq!(g.earliest(0, 1), 6 * SEC / 10, "already lower: unchanged");
        let mut g = Gcra::new(600, 10, 0.0, 0);
        g.delay(0, 3 * SEC);
        assert_eq!(g.earliest(0, 10), 3 * SEC);
    }

    #[test]
    fn headroom_slows_the_rate_and_shrinks_the_burst() {
        let mut g = Gcra::new(600, 10, 0.5, 0);
        let mut sent = 0;
        while g.earliest(0, 1) == 0 {
            g.commit(0, 1);
            sent += 1;
        }
        assert_eq!(sent, 5);
        assert_eq!(g.earliest(0, 1), SEC / 5);
    }

    #[test]
    fn the_jitter_margin_shrinks_the_burst_but_never_below_one_unit() {
        // 25 ms off a one-second burst of 10: 9 go at once, the 10th 25 ms later.
        let mut g = Gcra::new(600, 10, 0.0, 25_000_000);
        let mut sent = 0;
        while g.earliest(0, 1) == 0 {
            g.commit(0, 1);
            sent += 1;
        }
        assert_eq!(sent, 9);
        assert_eq!(g.earliest(0, 1), 25_000_000);
        // A burst of one shrunk below a unit still sends one at a time, an interval apart.
        let mut g = Gcra::new(60, 1, 0.0, 25_000_000);
        assert_eq!(g.earliest(0, 1), 0);
        g.commit(0, 1);
        assert_eq!(g.earliest(0, 1), SEC);
    }

    proptest! {
        /// Whatever the costs and arrival times, a schedule built from `earliest` never lets
        /// more than `burst + rate * window` units (or one request larger than the burst,
        /// plus the rate) through in any window, and never schedules before `now`.
        #[test]
        fn schedules_conform(
            limit in 60u64..100_000,
            burst_fraction in 1u64..=60,
            costs in prop::collection::vec((0u64..2_000, 0u64..SEC), 1..200),
        ) {
            let burst = (limit * burst_fraction / 60).max(1);
            let mut g = Gcra::new(limit, burst, 0.0, 0);
            let mut now = 0;
            let mut sends = Vec::new();
            for (cost, gap) in costs {
                let cost = cost % limit + 1;
                now += gap;
                let at = g.earliest(now, cost);
                prop_assert!(at >= now);
                g.commit(at, cost);
                sends.push((at, cost));
                now = now.max(at);
            }
            let interval = 60e9 / limit as f64;
            for (i, &(start, _)) in sends.iter().enumerate() {
                let mut total = 0;
                let mut largest = 0;
                for &(at, cost) in &sends[i..] {
                    total += cost;
                    largest = largest.max(cost);
                    let window = (at - start) as f64;
                    let allowed = burst.max(largest) as f64 + window / interval + 1e-6;
                    prop_assert!(
                        total as f64 <= allowed,
                        "{total} units in {window} ns, allowed {allowed}"
                    );
                }
            }
        }
    }
}
