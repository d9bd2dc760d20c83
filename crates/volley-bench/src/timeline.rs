//! The client's in-flight timeline, computed exactly from request start and end times.
//!
//! Each recorder keeps, per 100 ms bucket, an area correction and three counters, and every
//! request start or end updates one bucket in O(1):
//!
//! - at a start at `t` in bucket `b`, the area of `b` grows by `end(b) − t` (the request is in
//!   flight from `t` to the end of the bucket), and `started[b]` counts it;
//! - at an end at `t` in bucket `b`, the area of `b` shrinks by `end(b) − t`, and
//!   `finished[b]` counts it.
//!
//! A request in flight over a whole bucket adds the bucket's width; those are the requests
//! started before the bucket and not finished before it, a running sum of the counters. So the
//! in-flight time of bucket `b` is `area[b] + running(b) × width`, exact to the nanosecond, and
//! its mean in flight that divided by the width. Recorders merge by adding bucket by bucket.

use std::time::Duration;

use super::results::TimelinePoint;

/// The width of a timeline bucket.
pub(crate) const BUCKET: Duration = Duration::from_millis(100);
const BUCKET_NS: u64 = BUCKET.as_nanos() as u64;

/// The share of the run at each end left out of "steady" figures (10 % + 10 %).
const STEADY_EDGE: f64 = 0.1;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Bucket {
    /// In-flight nanoseconds of the requests that started or finished in this bucket, as
    /// corrections to `running × width` (may be negative).
    area_ns: i64,
    started: u64,
    finished: u64,
    /// Requests cancelled in flight (counted out of those in flight, not as finished).
    cancelled: u64,
    errors: u64,
}

/// One recorder's timeline accumulators.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Timeline {
    buckets: Vec<Bucket>,
}

impl Timeline {
    /// A request started `t_ns` after the run started.
    pub(crate) fn start(&mut self, t_ns: u64) {
        let (bucket, to_end) = self.bucket(t_ns);
        bucket.area_ns += to_end;
        bucket.started += 1;
    }

    /// A request finished `t_ns` after the run started (`failed` when it ended in an error).
    pub(crate) fn end(&mut self, t_ns: u64, failed: bool) {
        let (bucket, to_end) = self.bucket(t_ns);
        bucket.area_ns -= to_end;
        bucket.finished += 1;
        bucket.errors += u64::from(failed);
    }

    /// A request was cancelled in flight `t_ns` after the run started: no longer in flight,
    /// and not finished (the throughput leaves it out).
    pub(crate) fn cancel(&mut self, t_ns: u64) {
        let (bucket, to_end) = self.bucket(t_ns);
        bucket.area_ns -= to_end;
        bucket.cancelled += 1;
    }

    /// Adds another recorder's timeline to this one.
    pub(crate) fn merge(&mut self, other: &Timeline) {
        if self.buckets.len() < other.buckets.len() {
            self.buckets.resize(other.buckets.len(), Bucket::default());
        }
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            mine.area_ns += theirs.area_ns;
            mine.started += theirs.started;
            mine.finished += theirs.finished;
            mine.cancelled += theirs.cancelled;
            mine.errors += theirs.errors;
        }
    }

    /// One point per bucket from the start to `wall` (the last bucket may be shorter);
    /// `target(start, end)` gives the driver's target over a bucket.
    pub(crate) fn points(
        &self,
        wall: Duration,
        target: impl Fn(Duration, Duration) -> Option<f64>,
    ) -> Vec<TimelinePoint> {
        let wall_ns = u64::try_from(wall.as_nanos()).unwrap_or(u64::MAX);
        let count = wall_ns.div_ceil(BUCKET_NS) as usize;
        let mut running: i64 = 0;
        let mut points = Vec::with_capacity(count);
        for index in 0..count {
            let mut bucket = self.buckets.get(index).copied().unwrap_or_default();
            if index + 1 == count {
                // A request that ended exactly at the wall time was counted in the bucket that
                // starts there; its area there is zero, but it finished in this one.
                for later in self.buckets.iter().skip(count) {
                    bucket.finished += later.finished;
                    bucket.errors += later.errors;
                }
            }
            let start_ns = index as u64 * BUCKET_NS;
            let width_ns = (wall_ns - start_ns).min(BUCKET_NS);
            let area = bucket.area_ns as f64 + running as f64 * BUCKET_NS as f64;
            let width = width_ns as f64;
            points.push(TimelinePoint {
                t_ms: (index as u64 + 1) * (BUCKET_NS / 1_000_000),
                in_flight: (area / width).max(0.0),
                target: target(
                    Duration::from_nanos(start_ns),
                    Duration::from_nanos(start_ns + width_ns),
                ),
                completed_per_sec: bucket.finished as f64 * 1e9 / width,
                errors: bucket.errors,
            });
            running += bucket.started as i64 - bucket.finished as i64 - bucket.cancelled as i64;
        }
        points
    }

    /// The bucket of `t_ns`, grown into existence, and the nanoseconds from `t_ns` to its end.
    fn bucket(&mut self, t_ns: u64) -> (&mut Bucket, i64) {
        let index = (t_ns / BUCKET_NS) as usize;
        if index >= self.buckets.len() {
            // Only the buckets up to `index` are made: `Vec` grows its capacity
            // geometrically, so growth stays amortised O(1) without zeroed buckets ahead.
            self.buckets.resize(index + 1, Bucket::default());
        }
        let to_end = (index as u64 + 1) * BUCKET_NS - t_ns;
        // `to_end <= BUCKET_NS`, far below i64::MAX.
        (&mut self.buckets[index], to_end as i64)
    }
}

/// The time-weighted mean of `in_flight` over the steady middle 80 % of a run of `wall`:
/// from 10 % to 90 % of it, partial buckets weighted by their overlap; and not past `until`,
/// a timed run's duration, after which no request starts (its drain may be longer than a
/// tenth of the run).
pub(crate) fn steady_mean(
    points: &[TimelinePoint],
    wall: Duration,
    until: Option<Duration>,
) -> f64 {
    let wall = wall.as_secs_f64();
    let (low, mut high) = (wall * STEADY_EDGE, wall * (1.0 - STEADY_EDGE));
    if let Some(until) = until {
        high = high.min(until.as_secs_f64());
    }
    let bucket = BUCKET.as_secs_f64();
    let mut sum = 0.0;
    let mut weight = 0.0;
    for (index, point) in points.iter().enumerate() {
        let start = index as f64 * bucket;
        let end = (start + bucket).min(wall);
        let overlap = end.min(high) - start.max(low);
        if overlap > 0.0 {
            sum += point.in_flight * overlap;
            weight += overlap;
        }
    }
    if weight > 0.0 { sum / weight } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn timeline(intervals: &[(u64, u64)]) -> Timeline {
        let mut t = Timeline::default();
        for &(start, end) in intervals {
            t.start(start * MS);
            t.end(end * MS, false);
        }
        t
    }

    fn in_flight(points: &[TimelinePoint]) -> Vec<f64> {
        points.iter().map(|p| p.in_flight).collect()
    }

    #[test]
    fn bucket_means_are_exact() {
        // [50, 250) covers half of bucket 0, all of bucket 1 and half of bucket 2;
        // [120, 170) covers half of bucket 1; [200, 300) covers all of bucket 2.
        let t = timeline(&[(50, 250), (120, 170), (200, 300)]);
        let points = t.points(Duration::from_millis(300), |_, _| None);
        assert_eq!(in_flight(&points), [0.5, 1.5, 1.5]);
        assert_eq!(
            points.iter().map(|p| p.t_ms).collect::<Vec<_>>(),
            [100, 200, 300]
        );
        // One request finished in bucket 1 and two in bucket 2, per second of 100 ms.
        let completed: Vec<f64> = points.iter().map(|p| p.completed_per_sec).collect();
        assert_eq!(completed, [0.0, 10.0, 20.0]);
    }

    #[test]
    fn a_short_last_bucket_is_averaged_over_its_own_width() {
        let t = timeline(&[(0, 150), (100, 150)]);
        let points = t.points(Duration::from_millis(150), |_, _| Some(2.0));
        assert_eq!(in_flight(&points), [1.0, 2.0]);
        assert_eq!(points[1].completed_per_sec, 40.0);
        assert_eq!(points[1].target, Some(2.0));
    }

    #[test]
    fn merging_adds_recorders() {
        let mut a = timeline(&[(0, 1000)]);
        let b = timeline(&[(500, 1000), (0, 10)]);
        a.merge(&b);
        let mut both = timeline(&[(0, 1000), (500, 1000), (0, 10)]);
        both.merge(&Timeline::default());
        let wall = Duration::from_secs(1);
        assert_eq!(a.points(wall, |_, _| None), both.points(wall, |_, _| None));
        let points = a.points(wall, |_, _| None);
        assert_eq!(points.len(), 10);
        assert!((points[0].in_flight - 1.1).abs() < 1e-12);
        assert_eq!(points[4].in_flight, 1.0);
        assert_eq!(points[9].in_flight, 2.0);
    }

    #[test]
    fn errors_are_counted_per_bucket() {
        let mut t = Timeline::default();
        t.start(0);
        t.end(150 * MS, true);
        t.start(0);
        t.end(160 * MS, false);
        let points = t.points(Duration::from_millis(200), |_, _| None);
        assert_eq!(points[1].errors, 1);
        assert_eq!(points[0].errors, 0);
    }

    #[test]
    fn steady_mean_leaves_out_the_first_and_last_tenth() {
        // One second: 10 buckets in flight 100 at the edges and 10 in the middle.
        let points: Vec<TimelinePoint> = (0..10)
            .map(|i| TimelinePoint {
                in_flight: if i == 0 || i == 9 { 100.0 } else { 10.0 },
                ..TimelinePoint::default()
            })
            .collect();
        assert_eq!(steady_mean(&points, Duration::from_secs(1), None), 10.0);
        // Over 1.2 s (12 buckets) the window is 120..1080 ms: 0.8 of bucket 1 and of bucket
        // 10, all of buckets 2..=9.
        let points: Vec<TimelinePoint> = (0..12)
            .map(|i| TimelinePoint {
                in_flight: f64::from(i),
                ..TimelinePoint::default()
            })
            .collect();
        let want = (0.08 * 1.0 + (2..=9).map(f64::from).sum::<f64>() * 0.1 + 0.08 * 10.0) / 0.96;
        let got = steady_mean(&points, Duration::from_millis(1200), None);
        assert!((got - want).abs() < 1e-9, "{got} vs {want}");
        assert_eq!(steady_mean(&[], Duration::ZERO, None), 0.0);
        // A timed run of 0.6 s whose drain took until 1.2 s: the window ends at 0.6 s, the
        // drain's buckets (in flight 6 to 11) left out.
        let got = steady_mean(
            &points,
            Duration::from_millis(1200),
            Some(Duration::from_millis(600)),
        );
        let want = (0.08 * 1.0 + (2..=5).map(f64::from).sum::<f64>() * 0.1) / 0.48;
        assert!((got - want).abs() < 1e-9, "{got} vs {want}");
    }

    /// A request cancelled in flight leaves those in flight, and is no finished request: the
    /// throughput does not count it.
    #[test]
    fn a_cancelled_request_is_no_longer_in_flight_and_not_finished() {
        let mut t = timeline(&[(0, 150)]);
        t.start(0);
        t.cancel(250 * MS);
        let points = t.points(Duration::from_millis(400), |_, _| None);
        assert_eq!(in_flight(&points), [2.0, 1.5, 0.5, 0.0]);
        let completed: Vec<f64> = points.iter().map(|p| p.completed_per_sec).collect();
        assert_eq!(completed, [0.0, 10.0, 0.0, 0.0]);
    }
}
