//! [`Bench`] and its [`Live`] handle: setting a run up, running it, and putting its results
//! together.

use std::fmt;
use std::num::NonZero;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use volley::core::{Error, ErrorKind};

use super::body::Bodies;
use super::config::{BenchConfig, Load, StackKind, default_client};
use super::lane::Lane;
use super::pacer::{Pacer, Schedule, TokioClock, Until};
use super::recorder::Recorder;
use super::results::{BenchResults, Connections, ENDPOINT_SAMPLE_MS, EndpointPoint};
use super::rng::Rng;
use super::server::ServerProbe;
use super::shared::{Live, Shared, bound_drain, conduct};
use super::summary::{Facts, results};
use super::sys;
use super::target::{Sender, Target};
use volley::{Client, ClientBuilder};

/// Lanes per runtime worker thread: a few, so a lane that is busy parsing does not hold up
/// the others, and few enough that their recorders stay small.
const LANES_PER_WORKER: usize = 4;

/// One benchmark run, ready to start.
///
/// [`Bench::new`] checks the configuration, builds the client and the request bodies;
/// [`Bench::live`] gives a handle for progress; [`Bench::run`] runs it on the caller's tokio
/// runtime (the requests on [`BenchConfig::workers`] when given) and returns the results.
pub struct Bench {
    config: BenchConfig,
    client: Client,
    target: Target,
    probe: Option<ServerProbe>,
    bodies: Arc<Bodies>,
    shared: Arc<Shared>,
}

impl Bench {
    /// Checks `config`, builds the client (and the bare transport for
    /// [`StackKind::Bare`]) and prebuilds the request bodies.
    ///
    /// # Errors
    /// `Config` for a configuration that cannot run (no stop condition, zero concurrency, an
    /// invalid rate or length) or a client that cannot be built (an invalid base URL, plain
    /// HTTP to a remote host).
    pub fn new(config: BenchConfig) -> Result<Bench, Error> {
        config.validate()?;
        let peak = config.peak_concurrency();
        let base = config.client.clone().unwrap_or_else(default_client);
        let base = if config.adaptive {
            base.concurrency_auto(peak)
        } else {
            base.concurrency(peak)
        };
        // The probe is built before the API key is added: the statistics calls go to
        // whatever the target is, and a real provider's endpoints need not see the key.
        let probe_builder = base.clone();
        let mut builder = if config.endpoints.is_empty() {
            base.base_url(config.base_url.clone())
        } else {
            config
                .endpoints
                .iter()
                .cloned()
                .fold(base, ClientBuilder::endpoint)
        };
        if let Some(key) = &config.api_key {
            builder = builder.api_key(key.clone());
        }
        let client = builder.build()?;
        let target = match config.stack {
            StackKind::Full => Target::Full(Box::new(client.clone())),
            StackKind::Bare => Target::Bare(client.transport().clone()),
        };
        // Server statistics are one server's: not read over several endpoints.
        let probe = if config.endpoints.len() > 1 {
            None
        } else {
            ServerProbe::new(probe_builder, client.base_url())
        };
        let bodies = Bodies::build(
            &config.model,
            config.stream,
            config.dialect,
            &config.prompt_tokens,
            &config.output_tokens,
            &config.body_shape()?,
        )?;
        let initial_target = match config.load {
            Load::Closed { concurrency } => concurrency,
            Load::Ramp(ramp) => ramp.from,
            Load::Open { .. } => 0,
        };
        let shared = Arc::new(Shared::new(
            lane_count(peak, config.workers.len()),
            initial_target,
        ));
        Ok(Bench {
            config,
            client,
            target,
            probe,
            bodies: Arc::new(bodies),
            shared,
        })
    }

    /// A handle on the run's progress; take it before [`Bench::run`].
    pub fn live(&self) -> Live {
        Live {
            shared: self.shared.clone(),
        }
    }

    /// The configuration, as given.
    pub fn config(&self) -> &BenchConfig {
        &self.config
    }

    /// Runs the benchmark to its stop condition (or [`Live::stop`]) and returns what it
    /// measured. Requests in flight at the stop are finished and counted, for at most
    /// [`BenchConfig::grace`] after a duration; those still running then, or at
    /// [`Live::cancel`], are cancelled and counted as unfinished. Dropping this future aborts
    /// them.
    ///
    /// When the target answers volley-mock's `POST /stats/reset` and `GET /stats`, its
    /// statistics are reset before the run and read after it, for the results' `server`.
    ///
    /// # Errors
    /// `Cancelled` when the runtime shuts down during the run. Failed requests are not errors
    /// of the run: they are counted in the results by kind.
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    pub async fn run(self) -> Result<BenchResults, Error> {
        let Bench {
            config,
            client,
            target,
            probe,
            bodies,
            shared,
        } = self;
        let started_at = SystemTime::now();
        if config.warmup > 0 {
            match &target {
                Target::Full(client) => warm_up(client, &config, &bodies, &shared).await,
                Target::Bare(transport) => warm_up(transport, &config, &bodies, &shared).await,
            }
        }
        let probe = match probe {
            Some(probe) if probe.reset().await => Some(probe),
            _ => None,
        };
        let reset_done = Instant::now();
        let connections_before = client.connection_stats();
        // The balancer's counts so far are the warm-up's (nothing before it).
        let endpoints_before = client.endpoint_stats();
        let hedges_before = client.hedges();
        let cpu_before = sys::cpu_times();

        let start = Instant::now();
        let _ = shared.started.set(start);
        // Both sets abort their tasks when dropped, so dropping this future stops the run.
        let mut workers = JoinSet::new();
        let mut helpers = JoinSet::new();
        let tokio_start = tokio::time::Instant::from_std(start);
        let lanes = Lanes {
            config: &config,
            shared: &shared,
            bodies: &bodies,
            start,
        };
        // Lanes are generic over what sends, so each kind's request future is its own size.
        match &target {
            Target::Full(client) => lanes.start(client, &mut workers, &mut helpers, tokio_start),
            Target::Bare(transport) => {
                lanes.start(transport, &mut workers, &mut helpers, tokio_start);
            }
        }

        // With a balancer: each endpoint's attempts, sampled every window.
        let samples = Arc::new(Mutex::new(Vec::new()));
        if !client.endpoint_stats().is_empty() {
            helpers.spawn(sample_endpoints(
                client.clone(),
                samples.clone(),
                tokio_start,
            ));
        }
        // With an adaptive concurrency limit: where it stands, every timeline bucket.
        let limits = Arc::new(Mutex::new(Vec::new()));
        if config.adaptive {
            helpers.spawn(sample_limit(client.clone(), limits.clone(), tokio_start));
        }
        let mut merged = Recorder::new();
        while let Some(joined) = workers.join_next().await {
            match joined {
                Ok(recorder) => merged.merge(&recorder),
                // A panic in a lane is a bug; let it surface where the caller can see it.
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => {
                    return Err(Error::new(
                        ErrorKind::Cancelled,
                        "the runtime shut down during the benchmark",
                    ));
                }
            }
        }
        let _ = shared.ended.set(Instant::now());
        helpers.abort_all();
        let endpoints = client.endpoint_stats();
        let endpoint_timeline = {
            let mut samples = samples.lock().unwrap_or_else(|e| e.into_inner());
            if !endpoints.is_empty() {
                samples.push(endpoint_sample(&endpoints, tokio_start));
            }
            let baseline: Vec<u64> = endpoints_before.iter().map(|s| s.requests).collect();
            endpoint_points(&samples, &baseline)
        };
        let endpoints = since(endpoints, &endpoints_before);
        let cpu = sys::cpu_times()
            .zip(cpu_before)
            .map(|(after, before)| after.since(before));
        let connections_after = client.connection_stats();
        let wall = Duration::from_nanos(merged.last_end_ns);
        let server = match probe {
            Some(probe) => probe.read().await.map(|stats| {
                let offset = start.saturating_duration_since(reset_done);
                stats.server_side(offset, wall, config.duration)
            }),
            None => None,
        };
        Ok(results(Facts {
            config: &config,
            base_url: client.base_url(),
            started_at,
            recorder: merged,
            dropped: shared.dropped.load(Relaxed),
            peak_in_flight: shared.peak.load(Relaxed),
            cpu,
            peak_rss: sys::peak_rss_bytes(),
            connections: Connections {
                opened: connections_after
                    .opened
                    .saturating_sub(connections_before.opened),
                reused: connections_after
                    .reused()
                    .saturating_sub(connections_before.reused()),
            },
            server,
            endpoints: &endpoints,
            endpoint_timeline,
            hedges: client.hedges().saturating_sub(hedges_before),
            concurrency_limit: std::mem::take(
                &mut *limits.lock().unwrap_or_else(|e| e.into_inner()),
            ),
            error_examples: shared.failures.examples(),
            stopped_early: shared.failures.stopped.get().cloned(),
            interrupted: shared
                .interrupted
                .load(std::sync::atomic::Ordering::Relaxed),
        }))
    }
}

/// What every lane of a run is built from.
struct Lanes<'a> {
    config: &'a BenchConfig,
    shared: &'a Arc<Shared>,
    bodies: &'a Arc<Bodies>,
    start: Instant,
}

impl Lanes<'_> {
    /// Lane `index`, sending with `target`.
    fn lane<T>(&self, index: usize, target: T) -> Lane<T> {
        let config = self.config;
        Lane {
            index,
            lanes: self.shared.lanes.len(),
            shared: self.shared.clone(),
            target,
            bodies: self.bodies.clone(),
            stream: config.stream,
            dialect: config.dialect,
            path: super::lane::endpoint(config.dialect),
            prompt: config.prompt_tokens,
            output: config.output_tokens,
            requests: config.requests,
            deadline: config.duration.map(|d| self.start + d),
            start: self.start,
            recorder: Mutex::new(Recorder::new()),
        }
    }

    /// Spawns the lanes (spread over [`BenchConfig::workers`] when given) and the task that
    /// conducts them (closed loop, ramp) or paces their arrivals (open loop).
    fn start<T: Sender + Clone>(
        &self,
        target: &T,
        workers: &mut JoinSet<Recorder>,
        helpers: &mut JoinSet<()>,
        tokio_start: tokio::time::Instant,
    ) {
        let (config, shared) = (self.config, self.shared);
        let lanes = shared.lanes.len();
        match config.load {
            Load::Closed { .. } | Load::Ramp(_) => {
                for index in 0..lanes {
                    let rng = Rng::fork(config.seed, index as u64);
                    let lane = self.lane(index, target.clone());
                    let closed = lane.closed(rng, shared.control.subscribe());
                    spawn_lane(workers, &config.workers, index, closed);
                }
                let ramp = match config.load {
                    Load::Ramp(ramp) => Some(ramp),
                    _ => None,
                };
                helpers.spawn(conduct(shared.clone(), ramp, config.duration, tokio_start));
            }
            Load::Open { rate, arrivals } => {
                let mut senders = Vec::with_capacity(lanes);
                for index in 0..lanes {
                    let (sender, receiver) = mpsc::unbounded_channel();
                    senders.push(sender);
                    let open = self
                        .lane(index, target.clone())
                        .open(receiver, shared.control.subscribe());
                    spawn_lane(workers, &config.workers, index, open);
                }
                let pacer = Pacer {
                    shared: shared.clone(),
                    senders,
                    max_in_flight: config.max_in_flight as u64,
                    prompt: config.prompt_tokens,
                    output: config.output_tokens,
                    rng: Rng::fork(config.seed, u64::MAX),
                };
                let schedule = Schedule::new(rate, arrivals, config.seed);
                let until = Until {
                    arrivals: config.requests,
                    duration: config.duration,
                };
                let clock = TokioClock::new(tokio_start, shared.control.subscribe());
                helpers.spawn(pacer.run(schedule, until, clock));
            }
        }
        if let Some(duration) = config.duration {
            helpers.spawn(bound_drain(
                shared.clone(),
                duration,
                config.grace,
                tokio_start,
            ));
        }
    }
}

/// Spawns lane `index` on `runtimes[index % n]`, or on the caller's runtime with none given.
fn spawn_lane<F>(
    set: &mut JoinSet<F::Output>,
    runtimes: &[tokio::runtime::Handle],
    index: usize,
    lane: F,
) where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match runtimes.get(index % runtimes.len().max(1)) {
        Some(runtime) => set.spawn_on(lane, runtime),
        None => set.spawn(lane),
    };
}

/// Sends [`BenchConfig::warmup`] requests, at most the load's peak concurrency at once,
/// spread over the worker runtimes as the lanes are (so each keeps the connections it
/// opened), and discards what they measure. Ends when they are done, when the run is
/// stopped, or after [`WARMUP_LIMIT`](super::config::WARMUP_LIMIT), whichever comes first.
async fn warm_up<T: Sender + Clone>(
    target: &T,
    config: &BenchConfig,
    bodies: &Arc<Bodies>,
    shared: &Arc<Shared>,
) {
    let total = config.warmup;
    // The run's concurrency; for an open loop, a second's arrivals.
    let concurrency = match config.load {
        Load::Open { rate, .. } => (rate.ceil() as usize).clamp(1, config.max_in_flight.max(1)),
        _ => config.peak_concurrency(),
    };
    let at_once = usize::try_from(total)
        .unwrap_or(usize::MAX)
        .min(concurrency)
        .max(1);
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // A server that refuses what is sent (a 4xx other than 429: a wrong key, an unknown
    // model) ends the warm-up; the run then stops on the same answer.
    let refused = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = JoinSet::new();
    for index in 0..at_once {
        let (target, bodies, next) = (target.clone(), bodies.clone(), next.clone());
        let refused = refused.clone();
        let control = shared.control.subscribe();
        let mut rng = Rng::fork(config.seed ^ 0x5741_524d, index as u64);
        let (prompt, output) = (config.prompt_tokens, config.output_tokens);
        let (dialect, path) = (config.dialect, super::lane::endpoint(config.dialect));
        let task = async move {
            while next.fetch_add(1, Relaxed) < total
                && !control.borrow().stop
                && !refused.load(Relaxed)
            {
                let body = bodies.body(prompt.sample(&mut rng), output.sample(&mut rng));
                let request = volley::core::Request::new(http::Method::POST, path.clone())
                    .with_body(body)
                    .with_dialect(dialect);
                let refusal = |s: http::StatusCode| s.is_client_error() && s != 429;
                match target.send(request).await {
                    // Read to the end, so that the connection goes back to the pool, a chunk
                    // at a time: read whole, a warm-up of long streams held them all in
                    // memory at once (the run's peak RSS was the warm-up's), and one longer
                    // than the client's body limit was cut, its connection closed.
                    Ok(response) => {
                        if refusal(response.status()) {
                            refused.store(true, Relaxed);
                        }
                        let mut body = response.into_parts().1.into_stream();
                        while let Some(Ok(_)) = body.next().await {}
                    }
                    Err(e) if e.status().is_some_and(refusal) => refused.store(true, Relaxed),
                    Err(_) => {}
                }
            }
        };
        spawn_lane(&mut tasks, &config.workers, index, task);
    }
    let all = async { while tasks.join_next().await.is_some() {} };
    let mut control = shared.control.subscribe();
    let cancelled = async move {
        let _ = control.wait_for(|c| c.cancel).await;
    };
    // The requests still running when it ends are aborted as `tasks` is dropped.
    tokio::select! {
        done = tokio::time::timeout(super::config::WARMUP_LIMIT, all) => {
            if done.is_err() {
                tracing::warn!(
                    "the warm-up's {total} requests took longer than {} s: the rest were \
                     cancelled",
                    super::config::WARMUP_LIMIT.as_secs()
                );
            }
        }
        () = cancelled => {}
    }
}

/// One sample of each endpoint's attempts so far: (ms since the start, attempts).
type EndpointSample = (u64, Vec<u64>);

fn endpoint_sample(stats: &[volley::EndpointStats], start: tokio::time::Instant) -> EndpointSample {
    let t_ms = start.elapsed().as_millis() as u64;
    (t_ms, stats.iter().map(|s| s.requests).collect())
}

/// Samples `client`'s endpoints every [`ENDPOINT_SAMPLE_MS`] until aborted.
async fn sample_endpoints(
    client: Client,
    samples: Arc<Mutex<Vec<EndpointSample>>>,
    start: tokio::time::Instant,
) {
    let every = Duration::from_millis(ENDPOINT_SAMPLE_MS);
    let mut tick = tokio::time::interval_at(start + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let sample = endpoint_sample(&client.endpoint_stats(), start);
        samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(sample);
    }
}

/// Samples `client`'s concurrency limit every timeline bucket until aborted.
async fn sample_limit(
    client: Client,
    samples: Arc<Mutex<Vec<(u64, u64)>>>,
    start: tokio::time::Instant,
) {
    let every = crate::timeline::BUCKET;
    let mut tick = tokio::time::interval_at(start + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let sample = (
            start.elapsed().as_millis() as u64,
            client.concurrency_limit() as u64,
        );
        samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(sample);
    }
}

/// Each endpoint's counts of `after` less those of `before` (the warm-up's): requests and
/// their outcomes, breaker openings, health checks, and the mean latency of the answers in
/// between. The state and the requests in flight are `after`'s.
fn since(
    after: Vec<volley::EndpointStats>,
    before: &[volley::EndpointStats],
) -> Vec<volley::EndpointStats> {
    after
        .iter()
        .zip(before)
        .map(|(after, before)| after.since(before))
        .collect()
}

/// The attempts of each endpoint in each window between samples, the first window from
/// `baseline` (the counts when the run started).
fn endpoint_points(samples: &[EndpointSample], baseline: &[u64]) -> Vec<EndpointPoint> {
    let mut before: Option<&[u64]> = Some(baseline);
    let mut points = Vec::with_capacity(samples.len());
    for (t_ms, counts) in samples {
        let attempts = counts
            .iter()
            .enumerate()
            .map(|(i, &n)| n.saturating_sub(before.and_then(|b| b.get(i)).copied().unwrap_or(0)))
            .collect();
        points.push(EndpointPoint {
            t_ms: *t_ms,
            attempts,
        });
        before = Some(counts.as_slice());
    }
    points
}

impl fmt::Debug for Bench {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bench")
            .field("config", &self.config)
            .field("lanes", &self.shared.lanes.len())
            .finish_non_exhaustive()
    }
}

/// How many lanes: [`LANES_PER_WORKER`] per runtime given (`runtimes`), or else per worker of
/// the caller's runtime (or per CPU outside a runtime), at most one per request in flight.
fn lane_count(peak_concurrency: usize, runtimes: usize) -> usize {
    let workers = if runtimes > 0 {
        runtimes
    } else {
        tokio::runtime::Handle::try_current()
            .map(|h| h.metrics().num_workers())
            .unwrap_or_else(|_| std::thread::available_parallelism().map_or(1, NonZero::get))
    };
    (workers.max(1) * LANES_PER_WORKER).clamp(1, peak_concurrency.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_are_spread_over_the_runtimes_given() {
        let runtimes = crate::WorkerRuntimes::start(2).unwrap();
        let caller = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let ran_on = caller.block_on(async {
            let mut set = JoinSet::new();
            for index in 0..5 {
                spawn_lane(&mut set, runtimes.handles(), index, async move {
                    (index, std::thread::current().name().map(str::to_owned))
                });
            }
            let mut ran_on = set.join_all().await;
            ran_on.sort();
            ran_on
        });
        drop(runtimes);
        let names: Vec<_> = ran_on.iter().map(|(_, n)| n.as_deref().unwrap()).collect();
        assert_eq!(
            names,
            [
                "volley-bench-1",
                "volley-bench-2",
                "volley-bench-1",
                "volley-bench-2",
                "volley-bench-1"
            ]
        );
        // With none given, lanes run on the caller's runtime.
        let here = caller.block_on(async {
            let mut set = JoinSet::new();
            spawn_lane(&mut set, &[], 0, async { std::thread::current().id() });
            set.join_all().await
        });
        assert_eq!(here, [std::thread::current().id()]);
    }

    #[test]
    fn four_lanes_per_runtime_given_and_never_more_than_requests_in_flight() {
        assert_eq!(lane_count(1024, 2), 8);
        assert_eq!(lane_count(1024, 1), 4);
        assert_eq!(lane_count(3, 2), 3);
    }
}
