//! Server-side statistics: lock-free counters on the hot path, a 100 ms timeline filled by a
//! sampler task, and the serialisable [`Stats`] snapshot.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::MissedTickBehavior;

use crate::FaultKind;

/// The width of one timeline bucket.
pub const TIMELINE_BUCKET: Duration = Duration::from_millis(100);

/// The most buckets the timeline keeps (one hour); older ones are dropped.
pub const TIMELINE_CAPACITY: usize = 36_000;

/// A snapshot of the server's statistics, from [`MockServer::stats`] or `GET /stats`.
///
/// Counters cover the time since the server started or since the last reset
/// ([`MockServer::reset_stats`], `POST /stats/reset`), except `in_flight`, `connections_open`
/// and `uptime_ms`, which are facts about now. Requests to `/stats` themselves are not counted.
///
/// [`MockServer::stats`]: crate::MockServer::stats
/// [`MockServer::reset_stats`]: crate::MockServer::reset_stats
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stats {
    /// Every request received (faulted ones included): the number of attempts clients made.
    pub requests_total: u64,
    /// Responses sent, by status code (`"200"`, `"429"`, ...). Resets and stalls send none.
    pub responses_by_status: BTreeMap<String, u64>,
    /// Injected faults, by kind.
    pub faults: FaultCounts,
    /// `429`s sent by the rate limiter ([`MockConfig::rate_limits`]); they are also in
    /// `responses_by_status["429"]`, and not among the injected `faults`.
    ///
    /// [`MockConfig::rate_limits`]: crate::MockConfig::rate_limits
    pub rate_limited: u64,
    /// Requests received whose response (body included, streams to their end) has not finished.
    pub in_flight: u64,
    /// The most requests in flight at once.
    pub peak_in_flight: u64,
    /// Streams that sent their final `data: [DONE]`.
    pub streams_completed: u64,
    /// SSE events sent: one per token chunk, plus the usage chunk and `[DONE]`.
    pub chunks_sent: u64,
    /// TCP connections accepted.
    pub connections_total: u64,
    /// TCP connections open now.
    pub connections_open: u64,
    /// Milliseconds since the server started.
    pub uptime_ms: u64,
    /// One entry per finished 100 ms bucket since the start or last reset, oldest first, at most
    /// [`TIMELINE_CAPACITY`].
    pub timeline: Vec<TimelineBucket>,
    /// The server's own time to first token of streams: from the request (its body read) to
    /// its first chunk leaving the stream, in milliseconds. `None` before any stream.
    pub ttft_ms: Option<LatencySummary>,
}

/// Percentiles of a server-side latency, in milliseconds, from a log-linear histogram (within
/// 1/64 of the value, about 1.6 %).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LatencySummary {
    /// How many values.
    pub count: u64,
    /// 50th percentile.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest value (a bucket's upper bound).
    pub max: f64,
}

/// A lock-free histogram of microsecond values: 64 linear sub-buckets per power of two, so a
/// value is kept within 1/64 of itself; one relaxed atomic add per value.
pub(crate) struct MicrosHistogram {
    buckets: Box<[AtomicU64]>,
}

/// Sub-buckets per power of two.
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;

impl MicrosHistogram {
    fn new() -> Self {
        let len = (64 - SUB_BITS as usize + 1) * SUB as usize;
        Self {
            buckets: (0..len).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn index(us: u64) -> usize {
        if us < SUB {
            return us as usize;
        }
        let exponent = 63 - us.leading_zeros() - SUB_BITS; // >= 0
        let mantissa = (us >> exponent) - SUB; // 0..SUB
        ((u64::from(exponent) + 1) * SUB + mantissa) as usize
    }

    /// The largest value a bucket holds.
    fn upper(index: usize) -> u64 {
        let index = index as u64;
        if index < SUB {
            return index;
        }
        let exponent = index / SUB - 1;
        let mantissa = index % SUB;
        // In u128: the top bucket's bound is 2^64 - 1.
        let bound = (u128::from(SUB + mantissa + 1) << exponent) - 1;
        u64::try_from(bound).unwrap_or(u64::MAX)
    }

    pub(crate) fn record(&self, us: u64) {
        self.buckets[Self::index(us)].fetch_add(1, Relaxed);
    }

    fn reset(&self) {
        for bucket in self.buckets.iter() {
            bucket.store(0, Relaxed);
        }
    }

    fn summary(&self) -> Option<LatencySummary> {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let count: u64 = counts.iter().sum();
        if count == 0 {
            return None;
        }
        let at = |q: f64| {
            let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
            let mut seen = 0;
            for (i, n) in counts.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    return Self::upper(i) as f64 / 1000.0;
                }
            }
            0.0
        };
        Some(LatencySummary {
            count,
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            p999: at(0.999),
            max: at(1.0),
        })
    }
}

impl Stats {
    /// How many responses had `status`.
    pub fn status_count(&self, status: u16) -> u64 {
        self.responses_by_status
            .get(status.to_string().as_str())
            .copied()
            .unwrap_or(0)
    }
}

/// Injected faults, by kind (see [`FaultKind`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultCounts {
    /// `429` responses.
    pub rate_limit: u64,
    /// `500` responses.
    pub server_error: u64,
    /// `503` responses.
    pub unavailable: u64,
    /// Connections or streams reset.
    pub reset: u64,
    /// Requests stalled.
    pub stall: u64,
    /// Bodies cut half way.
    pub cut: u64,
    /// Invalid JSON bodies.
    pub malformed: u64,
}

impl FaultCounts {
    /// The count for `kind`.
    pub fn get(&self, kind: FaultKind) -> u64 {
        match kind {
            FaultKind::RateLimit => self.rate_limit,
            FaultKind::ServerError => self.server_error,
            FaultKind::Unavailable => self.unavailable,
            FaultKind::Reset => self.reset,
            FaultKind::Stall => self.stall,
            FaultKind::Cut => self.cut,
            FaultKind::Malformed => self.malformed,
        }
    }

    /// All faults together.
    pub fn total(&self) -> u64 {
        FaultKind::ALL.iter().map(|&k| self.get(k)).sum()
    }
}

/// One 100 ms bucket of the timeline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TimelineBucket {
    /// The end of the bucket, in milliseconds since the start or last reset.
    pub t_ms: u64,
    /// Requests in flight at the end of the bucket.
    pub in_flight: u64,
    /// Requests in flight on average over the bucket, weighted by time: every request's time
    /// in flight during the bucket (to the microsecond), divided by the bucket's width. Unlike
    /// `in_flight`, a sample at one instant, it does not depend on where that instant falls:
    /// under a closed loop with a fixed latency the answers come in bursts, one per latency,
    /// and the bucket ends keep the same place relative to them, so the samples of a whole
    /// run either miss every burst (and read the full concurrency) or fall in them (and read
    /// less). Every arrival and end is counted in exactly one bucket; one that happens while
    /// a bucket is being closed can be timed from the wrong bucket's start, which makes the
    /// two buckets' means off by up to about one request each (never above `max_in_flight`).
    pub mean_in_flight: f64,
    /// The most requests in flight at any time during the bucket.
    pub max_in_flight: u64,
    /// Requests received during the bucket.
    pub started: u64,
    /// Requests whose response finished during the bucket.
    pub completed: u64,
}

/// The live counters. Everything the request path touches is a relaxed atomic; the mutex guards
/// only the timeline, which the sampler, snapshots and resets use.
pub(crate) struct Counters {
    requests_total: AtomicU64,
    by_status: Box<[AtomicU64]>,
    faults: [AtomicU64; FaultKind::ALL.len()],
    rate_limited: AtomicU64,
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
    bucket_max: AtomicU64,
    bucket_started: AtomicU64,
    bucket_completed: AtomicU64,
    // The time-weighted mean of the current bucket: its start (µs since `started_at`), and the
    // sums of the offsets from that start at which its requests started and finished.
    bucket_from_us: AtomicU64,
    bucket_start_offsets_us: AtomicU64,
    bucket_end_offsets_us: AtomicU64,
    streams_completed: AtomicU64,
    chunks_sent: AtomicU64,
    connections_total: AtomicU64,
    connections_open: AtomicU64,
    ttft: MicrosHistogram,
    started_at: Instant,
    window: Mutex<Window>,
    reset_signal: Notify,
}

struct Window {
    since: Instant,
    timeline: VecDeque<TimelineBucket>,
    // Requests in flight when the current bucket started.
    in_flight_at_bucket_start: u64,
}

/// Status codes are three digits; one slot each keeps counting a single atomic add.
const STATUS_SLOTS: usize = 600;

impl Counters {
    pub(crate) fn new() -> Self {
        let now = Instant::now();
        Self {
            requests_total: AtomicU64::new(0),
            by_status: (0..STATUS_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            faults: Default::default(),
            rate_limited: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            peak_in_flight: AtomicU64::new(0),
            bucket_max: AtomicU64::new(0),
            bucket_started: AtomicU64::new(0),
            bucket_completed: AtomicU64::new(0),
            bucket_from_us: AtomicU64::new(0),
            bucket_start_offsets_us: AtomicU64::new(0),
            bucket_end_offsets_us: AtomicU64::new(0),
            streams_completed: AtomicU64::new(0),
            chunks_sent: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
            connections_open: AtomicU64::new(0),
            ttft: MicrosHistogram::new(),
            started_at: now,
            window: Mutex::new(Window {
                since: now,
                timeline: VecDeque::new(),
                in_flight_at_bucket_start: 0,
            }),
            reset_signal: Notify::new(),
        }
    }

    /// Counts a new request and returns its arrival index since the start or last reset (the
    /// seed of its RNG).
    pub(crate) fn request_started(&self) -> u64 {
        self.request_started_at(self.now_us())
    }

    /// [`Counters::request_started`] at `now_us` (µs since `started_at`).
    fn request_started_at(&self, now_us: u64) -> u64 {
        let index = self.requests_total.fetch_add(1, Relaxed);
        self.bucket_started.fetch_add(1, Relaxed);
        self.bucket_start_offsets_us
            .fetch_add(self.bucket_offset(now_us), Relaxed);
        let now = self.in_flight.fetch_add(1, Relaxed) + 1;
        // Read before writing: the maxima rarely move, and a plain load does not contend.
        if now > self.peak_in_flight.load(Relaxed) {
            self.peak_in_flight.fetch_max(now, Relaxed);
        }
        if now > self.bucket_max.load(Relaxed) {
            self.bucket_max.fetch_max(now, Relaxed);
        }
        index
    }

    /// Requests in flight now.
    pub(crate) fn in_flight(&self) -> u64 {
        self.in_flight.load(Relaxed)
    }

    fn request_finished(&self) {
        self.request_finished_at(self.now_us());
    }

    fn request_finished_at(&self, now_us: u64) {
        self.in_flight.fetch_sub(1, Relaxed);
        self.bucket_completed.fetch_add(1, Relaxed);
        self.bucket_end_offsets_us
            .fetch_add(self.bucket_offset(now_us), Relaxed);
    }

    /// Microseconds since the counters were made: the clock of the time-weighted means.
    fn now_us(&self) -> u64 {
        micros(self.started_at.elapsed())
    }

    /// How far into the current bucket `now_us` is.
    fn bucket_offset(&self, now_us: u64) -> u64 {
        now_us.saturating_sub(self.bucket_from_us.load(Relaxed))
    }

    pub(crate) fn response(&self, status: u16) {
        if let Some(slot) = self.by_status.get(usize::from(status)) {
            slot.fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn fault(&self, kind: FaultKind) {
        self.faults[kind.index()].fetch_add(1, Relaxed);
    }

    pub(crate) fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Relaxed);
    }

    pub(crate) fn chunk_sent(&self) {
        self.chunks_sent.fetch_add(1, Relaxed);
    }

    /// A stream's first chunk left `ttft` after its request.
    pub(crate) fn first_chunk(&self, ttft: Duration) {
        self.ttft.record(micros(ttft));
    }

    pub(crate) fn stream_completed(&self) {
        self.streams_completed.fetch_add(1, Relaxed);
    }

    pub(crate) fn connection_opened(&self) {
        self.connections_total.fetch_add(1, Relaxed);
        self.connections_open.fetch_add(1, Relaxed);
    }

    pub(crate) fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        self.snapshot_locked(&window)
    }

    /// Takes a last snapshot and starts a new window: counters to zero, timeline emptied, the
    /// peak back to what is in flight now.
    pub(crate) fn reset(&self) -> Stats {
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        let last = self.snapshot_locked(&window);
        let in_flight = self.in_flight.load(Relaxed);
        self.requests_total.store(0, Relaxed);
        for slot in self.by_status.iter().chain(&self.faults) {
            slot.store(0, Relaxed);
        }
        self.rate_limited.store(0, Relaxed);
        self.peak_in_flight.store(in_flight, Relaxed);
        self.bucket_max.store(in_flight, Relaxed);
        // The bucket under way is dropped, but what was in flight at its start and what
        // arrived and ended in it carry over into the next one's start.
        let now_us = self.now_us();
        self.close_weighted(&mut window, now_us);
        self.streams_completed.store(0, Relaxed);
        self.chunks_sent.store(0, Relaxed);
        self.connections_total.store(0, Relaxed);
        self.ttft.reset();
        window.since = Instant::now();
        window.timeline.clear();
        drop(window);
        // A stored permit: the sampler realigns its buckets even if it is busy right now.
        self.reset_signal.notify_one();
        last
    }

    /// Closes the current timeline bucket.
    fn sample(&self) {
        self.sample_at(|| self.now_us());
    }

    /// [`Counters::sample`] at the time `now_us` gives (µs since `started_at`).
    fn sample_at(&self, now_us: impl FnOnce() -> u64) {
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        // Read under the lock: a reset that held it has moved the bucket's start.
        let now_us = now_us();
        let in_flight = self.in_flight.load(Relaxed);
        // The next bucket starts from what is in flight now.
        let max_in_flight = self.bucket_max.swap(in_flight, Relaxed).max(in_flight);
        let (bucket, started, completed) = self.close_weighted(&mut window, now_us);
        let mean_in_flight = bucket
            .mean()
            // No request was in flight less than never or more than the bucket's most (one
            // that arrives or ends while the bucket closes can be off by one in the sums).
            .map_or(in_flight as f64, |mean| {
                mean.clamp(0.0, max_in_flight as f64)
            });
        let bucket = TimelineBucket {
            t_ms: millis(window.since.elapsed()),
            in_flight,
            mean_in_flight,
            max_in_flight,
            started,
            completed,
        };
        if window.timeline.len() == TIMELINE_CAPACITY {
            window.timeline.pop_front();
        }
        window.timeline.push_back(bucket);
    }

    /// Ends the current bucket's weighted part at `now_us` and starts the next one there:
    /// takes the bucket's counts and offset sums (each request's arrival and end land in
    /// exactly one bucket), and carries what is in flight at the next bucket's start over
    /// from them, so that it never drifts from the counts. Returns the bucket, with what
    /// arrived and what ended in it.
    fn close_weighted(&self, window: &mut Window, now_us: u64) -> (WeightedBucket, u64, u64) {
        let from_us = self.bucket_from_us.swap(now_us, Relaxed);
        let started = self.bucket_started.swap(0, Relaxed);
        let completed = self.bucket_completed.swap(0, Relaxed);
        let bucket = WeightedBucket {
            in_flight_at_start: window.in_flight_at_bucket_start,
            started,
            completed,
            start_offsets_us: self.bucket_start_offsets_us.swap(0, Relaxed),
            end_offsets_us: self.bucket_end_offsets_us.swap(0, Relaxed),
            width_us: now_us.saturating_sub(from_us),
        };
        window.in_flight_at_bucket_start =
            (window.in_flight_at_bucket_start + started).saturating_sub(completed);
        (bucket, started, completed)
    }

    fn snapshot_locked(&self, window: &Window) -> Stats {
        let responses_by_status = self
            .by_status
            .iter()
            .enumerate()
            .filter_map(|(status, n)| {
                let n = n.load(Relaxed);
                (n > 0).then(|| (status.to_string(), n))
            })
            .collect();
        let fault = |kind: FaultKind| self.faults[kind.index()].load(Relaxed);
        Stats {
            requests_total: self.requests_total.load(Relaxed),
            responses_by_status,
            faults: FaultCounts {
                rate_limit: fault(FaultKind::RateLimit),
                server_error: fault(FaultKind::ServerError),
                unavailable: fault(FaultKind::Unavailable),
                reset: fault(FaultKind::Reset),
                stall: fault(FaultKind::Stall),
                cut: fault(FaultKind::Cut),
                malformed: fault(FaultKind::Malformed),
            },
            rate_limited: self.rate_limited.load(Relaxed),
            in_flight: self.in_flight.load(Relaxed),
            peak_in_flight: self.peak_in_flight.load(Relaxed),
            streams_completed: self.streams_completed.load(Relaxed),
            chunks_sent: self.chunks_sent.load(Relaxed),
            connections_total: self.connections_total.load(Relaxed),
            connections_open: self.connections_open.load(Relaxed),
            uptime_ms: millis(self.started_at.elapsed()),
            timeline: window.timeline.iter().copied().collect(),
            ttft_ms: self.ttft.summary(),
        }
    }
}

/// What one bucket's time-weighted mean in flight is computed from.
struct WeightedBucket {
    in_flight_at_start: u64,
    started: u64,
    completed: u64,
    /// The sums of the offsets from the bucket's start at which requests started and finished.
    start_offsets_us: u64,
    end_offsets_us: u64,
    width_us: u64,
}

impl WeightedBucket {
    /// The time in flight of every request during the bucket, over its width: those in flight
    /// at its start for the whole width, one that started at offset `o` for `width - o`, less
    /// `width - o` for one that finished at `o`. `None` for a bucket of no width.
    fn mean(&self) -> Option<f64> {
        if self.width_us == 0 {
            return None;
        }
        let width = self.width_us as f64;
        let area = self.in_flight_at_start as f64 * width
            + (self.started as f64 * width - self.start_offsets_us as f64)
            - (self.completed as f64 * width - self.end_offsets_us as f64);
        Some(area / width)
    }
}

/// Fills the timeline every [`TIMELINE_BUCKET`] until aborted.
pub(crate) async fn run_sampler<S: AsRef<Counters>>(owner: S) {
    let counters = owner.as_ref();
    let start = tokio::time::Instant::now() + TIMELINE_BUCKET;
    let mut ticks = tokio::time::interval_at(start, TIMELINE_BUCKET);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => counters.sample(),
            () = counters.reset_signal.notified() => ticks.reset(),
        }
    }
}

/// Marks one request in flight until dropped. It travels with the request into its response
/// body, so a request stays in flight until the body's last frame is produced.
pub(crate) struct InFlight<S: AsRef<Counters>> {
    owner: S,
}

impl<S: AsRef<Counters>> InFlight<S> {
    /// Wraps an owner whose counters have already counted the request as started.
    pub(crate) fn new(owner: S) -> Self {
        Self { owner }
    }

    pub(crate) fn owner(&self) -> &S {
        &self.owner
    }
}

impl<S: AsRef<Counters>> Drop for InFlight<S> {
    fn drop(&mut self) {
        self.owner.as_ref().request_finished();
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_keeps_values_within_a_sixty_fourth() {
        for us in [
            0u64,
            1,
            63,
            64,
            65,
            127,
            128,
            1_000,
            10_000,
            87_039,
            1 << 40,
            u64::MAX,
        ] {
            let index = MicrosHistogram::index(us);
            let upper = MicrosHistogram::upper(index);
            assert!(upper >= us, "{us}: upper {upper}");
            assert!(upper - us <= us / 64, "{us}: upper {upper}");
            // The bucket below ends below the value.
            if index > 0 {
                assert!(MicrosHistogram::upper(index - 1) < us, "{us}");
            }
        }
        let h = MicrosHistogram::new();
        assert_eq!(h.summary(), None);
        for ms in 1..=1000u64 {
            h.record(ms * 1000);
        }
        let s = h.summary().unwrap();
        assert_eq!(s.count, 1000);
        assert!((s.p50 - 500.0).abs() <= 500.0 / 64.0, "{s:?}");
        assert!((s.p99 - 990.0).abs() <= 990.0 / 64.0, "{s:?}");
        assert!((s.max - 1000.0).abs() <= 1000.0 / 64.0, "{s:?}");
        h.reset();
        assert_eq!(h.summary(), None);
    }
    use std::sync::Arc;

    struct Owner(Arc<Counters>);
    impl AsRef<Counters> for Owner {
        fn as_ref(&self) -> &Counters {
            &self.0
        }
    }

    #[test]
    fn counts_requests_in_flight_and_peak() {
        let counters = Arc::new(Counters::new());
        let guards: Vec<_> = (0..5)
            .map(|i| {
                assert_eq!(counters.request_started(), i);
                InFlight::new(Owner(counters.clone()))
            })
            .collect();
        counters.response(200);
        counters.response(429);
        counters.response(429);
        counters.fault(FaultKind::RateLimit);
        let stats = counters.snapshot();
        assert_eq!(
            (stats.requests_total, stats.in_flight, stats.peak_in_flight),
            (5, 5, 5)
        );
        assert_eq!(stats.status_count(429), 2);
        assert_eq!(stats.status_count(200), 1);
        assert_eq!(stats.faults.rate_limit, 1);
        assert_eq!(stats.faults.total(), 1);
        drop(guards);
        let stats = counters.snapshot();
        assert_eq!((stats.in_flight, stats.peak_in_flight), (0, 5));
    }

    #[test]
    fn timeline_buckets_record_max_started_and_completed() {
        let counters = Arc::new(Counters::new());
        let mut guards: Vec<_> = (0..3)
            .map(|_| {
                counters.request_started();
                InFlight::new(Owner(counters.clone()))
            })
            .collect();
        guards.truncate(1);
        counters.sample();
        counters.sample();
        let timeline = counters.snapshot().timeline;
        assert_eq!(timeline.len(), 2);
        assert_eq!(
            (
                timeline[0].in_flight,
                timeline[0].max_in_flight,
                timeline[0].started,
                timeline[0].completed
            ),
            (1, 3, 3, 2)
        );
        assert_eq!(
            (
                timeline[1].in_flight,
                timeline[1].max_in_flight,
                timeline[1].started,
                timeline[1].completed
            ),
            (1, 1, 0, 0)
        );
    }

    #[test]
    fn the_timeline_weighs_in_flight_by_time() {
        let counters = Counters::new();
        // Bucket 1, 0–100 ms: one request for the whole bucket, one for 25 ms of it, one for
        // its last 10 ms: 1.35 on average, 2 at its end.
        counters.request_started_at(0);
        counters.request_started_at(50_000);
        counters.request_finished_at(75_000);
        counters.request_started_at(90_000);
        counters.sample_at(|| 100_000);
        // Bucket 2, 100–200 ms: the first request ends halfway, the last stays: 1.5, 1 at its end.
        counters.request_finished_at(150_000);
        counters.sample_at(|| 200_000);
        // Bucket 3, a longer one (200–350 ms): one more for its last 30 ms: 1.2.
        counters.request_started_at(320_000);
        counters.sample_at(|| 350_000);
        let timeline = counters.snapshot().timeline;
        let got: Vec<(u64, f64)> = timeline
            .iter()
            .map(|b| (b.in_flight, b.mean_in_flight))
            .collect();
        assert_eq!(got, [(2, 1.35), (1, 1.5), (2, 1.2)]);
    }

    #[test]
    fn a_reset_restarts_the_weighted_bucket_with_what_is_in_flight() {
        let counters = Counters::new();
        // Before the reset: two requests arrive 40 and 60 ms into the first bucket, one ends.
        counters.request_started_at(40_000);
        counters.request_started_at(60_000);
        counters.request_finished_at(70_000);
        let before = counters.now_us();
        counters.reset();
        // One request carried over; the bucket runs from the reset to 100 ms after it, and
        // nothing from before the reset is counted in it.
        let from = counters.bucket_from_us.load(Relaxed);
        assert!(
            from >= before,
            "the reset starts a bucket: {from} < {before}"
        );
        counters.request_started_at(from + 50_000);
        counters.sample_at(|| from + 100_000);
        let bucket = counters.snapshot().timeline[0];
        assert_eq!((bucket.in_flight, bucket.mean_in_flight), (2, 1.5));
        assert_eq!((bucket.started, bucket.completed), (1, 0));
        // A bucket of no width (two samples in the same microsecond) reports its end.
        counters.sample_at(|| from + 100_000);
        assert_eq!(counters.snapshot().timeline[1].mean_in_flight, 2.0);
    }

    #[test]
    fn a_weighted_mean_never_exceeds_the_buckets_most_in_flight() {
        let counters = Counters::new();
        // An end whose count went to the bucket before and whose offset came to this one
        // (a race with the close between them): the sums alone would say 2 on average.
        counters.request_started_at(0);
        counters.bucket_end_offsets_us.fetch_add(100_000, Relaxed);
        counters.sample_at(|| 100_000);
        let bucket = counters.snapshot().timeline[0];
        assert_eq!(bucket.max_in_flight, 1);
        assert_eq!(bucket.mean_in_flight, 1.0);
    }

    #[test]
    fn timeline_is_bounded() {
        let counters = Counters::new();
        for _ in 0..TIMELINE_CAPACITY + 10 {
            counters.sample();
        }
        assert_eq!(counters.snapshot().timeline.len(), TIMELINE_CAPACITY);
    }

    #[test]
    fn reset_returns_the_old_window_and_keeps_what_is_in_flight() {
        let counters = Arc::new(Counters::new());
        counters.request_started();
        let guard = InFlight::new(Owner(counters.clone()));
        counters.request_started();
        drop(InFlight::new(Owner(counters.clone())));
        counters.response(200);
        counters.sample();
        let last = counters.reset();
        assert_eq!(
            (
                last.requests_total,
                last.peak_in_flight,
                last.timeline.len()
            ),
            (2, 2, 1)
        );
        let now = counters.snapshot();
        assert_eq!(now.requests_total, 0);
        assert!(now.responses_by_status.is_empty());
        assert!(now.timeline.is_empty());
        assert_eq!((now.in_flight, now.peak_in_flight), (1, 1));
        drop(guard);
        assert_eq!(counters.snapshot().in_flight, 0);
        // The arrival index restarts, so a phase after a reset replays the same RNG sequence.
        assert_eq!(counters.request_started(), 0);
    }

    #[test]
    fn stats_json_round_trips() {
        let counters = Counters::new();
        counters.request_started();
        counters.response(503);
        counters.sample();
        let stats = counters.snapshot();
        let json = serde_json::to_string(&stats).unwrap();
        assert!(
            json.contains(r#""responses_by_status":{"503":1}"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Stats>(&json).unwrap(), stats);
    }
}
