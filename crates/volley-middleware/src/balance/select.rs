//! Choosing an endpoint: the first priority group with an endpoint available, then power of
//! two choices by load within it, avoiding endpoints where this request already failed.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

use super::breaker::Admission;
use super::endpoint::EndpointState;

/// The endpoints, grouped by priority (lowest number first), and a random state.
pub(crate) struct Selector {
    pub(crate) endpoints: Box<[EndpointState]>,
    /// Indices into `endpoints`, sorted by priority; `groups` are ranges of it.
    order: Box<[usize]>,
    groups: Box<[(usize, usize)]>,
    rng: AtomicU64,
    epoch: Instant,
}

/// Why no endpoint was chosen.
#[derive(Debug)]
pub(crate) struct AllOpen;

impl Selector {
    pub(crate) fn new(endpoints: Vec<EndpointState>) -> Selector {
        let mut order: Vec<usize> = (0..endpoints.len()).collect();
        order.sort_by_key(|&i| endpoints[i].config.priority);
        let mut groups = Vec::new();
        let mut start = 0;
        for i in 1..=order.len() {
            if i == order.len()
                || endpoints[order[i]].config.priority != endpoints[order[start]].config.priority
            {
                groups.push((start, i));
                start = i;
            }
        }
        Selector {
            endpoints: endpoints.into_boxed_slice(),
            order: order.into_boxed_slice(),
            groups: groups.into_boxed_slice(),
            rng: AtomicU64::new(0x9e37_79b9_7f4a_7c15),
            epoch: Instant::now(),
        }
    }

    /// Nanoseconds since the selector was made: the clock of the loads.
    pub(crate) fn nanos(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// The endpoint for request `id`, other than `exclude` (a hedge's first endpoint) unless
    /// it is the only one. Errors only when every breaker is open.
    pub(crate) fn select(
        &self,
        id: u64,
        now: Instant,
        exclude: Option<usize>,
    ) -> Result<usize, AllOpen> {
        if self.endpoints.len() == 1 {
            return if self.endpoints[0].open(now) {
                Err(AllOpen)
            } else {
                Ok(0)
            };
        }
        let nanos = self.nanos(now);
        // A retry (the request failed somewhere already) goes to a closed endpoint where it
        // has not failed: half-open probes are for fresh requests, so that a retry does not
        // spend its attempt on an endpoint still being tested.
        let retry = self.endpoints.iter().any(|e| e.failed_recently(id));
        // Pass 1: the first group with such an endpoint; pass 2: the first group with any
        // available endpoint (the retry goes back).
        for first in [true, false] {
            for &(start, end) in &self.groups {
                let members = &self.order[start..end];
                let ok = |&&i: &&usize| {
                    let e = &self.endpoints[i];
                    Some(i) != exclude
                        && e.available(now)
                        && !(first && e.failed_recently(id))
                        && !(first && retry && !e.is_closed())
                };
                if let Some(i) = self.p2c(members, ok, nanos) {
                    return Ok(i);
                }
            }
        }
        // Every endpoint is open or saturated: a saturated one waits in its own limit.
        let saturated = self
            .order
            .iter()
            .copied()
            .filter(|&i| Some(i) != exclude && !self.endpoints[i].open(now))
            .min_by(|&a, &b| {
                self.endpoints[a]
                    .load(nanos)
                    .total_cmp(&self.endpoints[b].load(nanos))
            });
        saturated.ok_or(AllOpen)
    }

    /// The endpoint for request `id`, as [`select`](Self::select) chooses it, admitted: a
    /// choice whose breaker refuses the request by the time it is admitted (another request
    /// took its last probe slot, or it opened) is made again without it.
    pub(crate) fn choose(
        &self,
        id: u64,
        now: Instant,
        exclude: Option<usize>,
    ) -> Result<(usize, Admission), AllOpen> {
        let first = self.select(id, now, exclude)?;
        self.admit_from(first, id, now, exclude)
    }

    /// Admits request `id` at `index`, chosen a moment ago; when its breaker refuses, chooses
    /// again (the refusing endpoint is no longer available, so the next choice differs), at
    /// most once per endpoint.
    pub(crate) fn admit_from(
        &self,
        mut index: usize,
        id: u64,
        now: Instant,
        exclude: Option<usize>,
    ) -> Result<(usize, Admission), AllOpen> {
        for _ in 0..self.endpoints.len() {
            match self.endpoints[index].admit(now) {
                Admission::No => index = self.select(id, now, exclude)?,
                admission => return Ok((index, admission)),
            }
        }
        Err(AllOpen)
    }

    /// Power of two choices among `members` that pass `ok`, drawn by weight: the less loaded
    /// of two random picks.
    fn p2c(&self, members: &[usize], ok: impl Fn(&&usize) -> bool, nanos: u64) -> Option<usize> {
        let total: u64 = members
            .iter()
            .filter(&ok)
            .map(|&i| u64::from(self.endpoints[i].config.weight))
            .sum();
        if total == 0 {
            return None;
        }
        // A draw by weight among the members that pass `ok`, leaving out `skip`.
        let pick = |r: u64, skip: Option<usize>| {
            let skipped = skip.map_or(0, |i| u64::from(self.endpoints[i].config.weight));
            let total = total - skipped;
            if total == 0 {
                return None;
            }
            let mut r = r % total;
            for &i in members.iter().filter(&ok).filter(|&&i| Some(i) != skip) {
                let w = u64::from(self.endpoints[i].config.weight);
                if r < w {
                    return Some(i);
                }
                r -= w;
            }
            // Availability changed between the passes: take any other.
            members.iter().copied().find(|i| ok(&i) && Some(*i) != skip)
        };
        let a = pick(self.random(), None)?;
        // The second choice is always another endpoint, so two always get compared.
        let Some(b) = pick(self.random(), Some(a)) else {
            return Some(a);
        };
        let (la, lb) = (self.endpoints[a].load(nanos), self.endpoints[b].load(nanos));
        Some(if lb < la { b } else { a })
    }

    /// splitmix64 over a shared counter: lock-free and good enough for picking.
    fn random(&self) -> u64 {
        let mut z = self
            .rng
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}
