//! One round trip to the shared state: [`Call`] in, [`Reply`] out. [`RedisStore`] runs the
//! Lua script; the tests run the dispatcher against [`Model`], the same arithmetic in Rust on
//! tokio's clock, so its timing can be checked in paused time.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use ::redis::Script;
use volley_core::{Error, ErrorKind};

use super::super::Cost;
use super::config::{Config, TTL_SLACK};
use crate::redis::{RedisConnection, RedisOptions};

/// The script: GCRA on the server's clock (see the file for its arguments).
const SCRIPT: &str = include_str!("gcra.lua");

/// How many buckets the state holds: requests, tokens, input tokens, output tokens, in this
/// order in every array below and in the script.
pub(super) const DIMS: usize = 4;

/// A cost in the order of the buckets.
pub(super) fn units(cost: Cost) -> [u64; DIMS] {
    [
        u64::from(cost.requests),
        cost.tokens,
        cost.input_tokens,
        cost.output_tokens,
    ]
}

/// What one round trip reports and asks for. Times are microseconds from the server's now.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Call {
    /// The state's epoch this process saw last (0: none).
    pub(super) epoch_seen: u64,
    /// The end of this process's latest reservation in each bucket, to restore lost state
    /// from.
    pub(super) floors: [u64; DIMS],
    /// Units to give back, per bucket.
    pub(super) give_back: [u64; DIMS],
    /// Units to charge, per bucket (settlement: usage above the estimate).
    pub(super) charge: [u64; DIMS],
    /// Buckets the provider reported empty.
    pub(super) empty: [bool; DIMS],
    /// A pause to start, if longer than one in force.
    pub(super) pause_us: u64,
    /// The limits per minute this process knows as learned, per bucket (0: none).
    pub(super) learned: [u64; DIMS],
    /// Which of `learned` were just read from a header, to replace the shared ones (the
    /// others only restore a lost state).
    pub(super) fresh: [bool; DIMS],
    /// Send times to reserve, in order.
    pub(super) reserve: Vec<Cost>,
}

/// What the state says back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Reply {
    pub(super) epoch: u64,
    /// Microseconds of pause added since the epoch.
    pub(super) shift: u64,
    /// The limits per minute learned by any process, per bucket (0: none).
    pub(super) learned: [u64; DIMS],
    /// For each reservation, how long from now it may go, in microseconds.
    pub(super) waits: Vec<u64>,
}

pub(super) type StoreFuture<'a> = Pin<Box<dyn Future<Output = Result<Reply, Error>> + Send + 'a>>;

/// Where the shared state lives.
pub(super) trait Store: Send + Sync + 'static {
    /// Applies `call` atomically and answers.
    fn call<'a>(&'a self, call: &'a Call) -> StoreFuture<'a>;
}

/// The shared state in Redis.
pub(super) struct RedisStore {
    connection: RedisConnection,
    script: Script,
    /// Whether the script is sent whole with every call (`EVAL`): the server, or a proxy in
    /// front of it (twemproxy, Envoy), refuses `SCRIPT LOAD`, which `EVALSHA` needs.
    eval: bool,
    key: String,
    /// ARGV[1..=8]: the four limits' intervals and tolerances, formatted once.
    dims: [String; 2 * DIMS],
    /// ARGV[25..=26]: the headroom and the jitter margin, for learned limits.
    learning: [String; 2],
    ttl_slack_ms: String,
    /// The longest one round trip may take, reconnecting included: two command timeouts, so a
    /// script evicted from the server's cache can be loaded again (NOSCRIPT, `SCRIPT LOAD`,
    /// `EVALSHA`) within it.
    timeout: Duration,
}

impl RedisStore {
    /// Connects now and loads the script.
    pub(super) async fn connect(
        options: &RedisOptions,
        config: &Config,
    ) -> Result<RedisStore, Error> {
        let connection = RedisConnection::connect(options).await?;
        let script = Script::new(SCRIPT);
        let timeout = config.command_timeout.saturating_mul(2);
        let mut conn = connection.clone();
        let eval = match tokio::time::timeout(
            timeout,
            script.prepare_invoke().load_async(&mut conn),
        )
        .await
        {
            Ok(Ok(_sha)) => false,
            Ok(Err(e)) if refuses_script_load(&e) => {
                tracing::info!(
                    server = %config.server,
                    "the Redis server refuses SCRIPT LOAD (a proxy in front of it, or the \
                     command renamed away): the rate-limit script goes with every call (EVAL)"
                );
                true
            }
            Ok(Err(e)) => return Err(connection.error("loading the rate-limit script", &e)),
            Err(_) => return Err(timed_out(&config.server, timeout)),
        };
        let dims = config.dims();
        let dims = std::array::from_fn(|i| match dims[i / 2] {
            Some(d) if i % 2 == 0 => d.interval_us.to_string(),
            Some(d) => d.tolerance_us.to_string(),
            // A learned limit: the script reads it from the state.
            None if i % 2 == 0 && config.learn[i / 2] => "-1".to_owned(),
            None => "0".to_owned(),
        });
        let learning = [
            config.limits.headroom.to_string(),
            config.limits.jitter_margin.as_micros().to_string(),
        ];
        Ok(RedisStore {
            connection,
            script,
            eval,
            key: config.key.clone(),
            dims,
            learning,
            ttl_slack_ms: TTL_SLACK.as_millis().to_string(),
            timeout,
        })
    }
}

/// Whether a `SCRIPT LOAD` failed because the command is refused as such: unknown (renamed
/// away), or not supported by a proxy (twemproxy, Envoy's Redis proxy), which still pass
/// `EVAL` on. A refusal for want of permission (`NOPERM`) is the user's to fix, not this.
fn refuses_script_load(error: &::redis::RedisError) -> bool {
    let text = error.to_string().to_ascii_lowercase();
    ["unknown command", "unsupported command", "not supported"]
        .iter()
        .any(|refusal| text.contains(refusal))
}

impl RedisStore {
    /// The script's arguments for `call`, in the order the script reads them (ARGV).
    fn args(&self, call: &Call) -> Vec<String> {
        let bits = |flags: &[bool; DIMS]| {
            flags
                .iter()
                .enumerate()
                .fold(0u8, |bits, (d, &set)| bits | (u8::from(set) << d))
        };
        let mut args = Vec::with_capacity(2 * DIMS + 19 + DIMS * call.reserve.len());
        args.extend(self.dims.iter().cloned());
        args.push(call.epoch_seen.to_string());
        for values in [&call.floors, &call.give_back, &call.charge] {
            args.extend(values.iter().map(u64::to_string));
        }
        args.push(bits(&call.empty).to_string());
        args.push(call.pause_us.to_string());
        args.push(self.ttl_slack_ms.clone());
        args.extend(self.learning.iter().cloned());
        args.extend(call.learned.iter().map(u64::to_string));
        args.push(bits(&call.fresh).to_string());
        args.push(call.reserve.len().to_string());
        for cost in &call.reserve {
            args.extend(units(*cost).iter().map(u64::to_string));
        }
        args
    }
}

impl Store for RedisStore {
    fn call<'a>(&'a self, call: &'a Call) -> StoreFuture<'a> {
        Box::pin(async move {
            let args = self.args(call);
            let mut conn = self.connection.clone();
            let run = async {
                if self.eval {
                    ::redis::cmd("EVAL")
                        .arg(SCRIPT)
                        .arg(1)
                        .arg(&self.key)
                        .arg(&args)
                        .query_async::<Vec<i64>>(&mut conn)
                        .await
                } else {
                    let mut invocation = self.script.prepare_invoke();
                    invocation.key(&self.key).arg(&args);
                    invocation.invoke_async(&mut conn).await
                }
            };
            let values: Vec<i64> = match tokio::time::timeout(self.timeout, run).await {
                Ok(Ok(values)) => values,
                Ok(Err(e)) => {
                    let error = self.connection.error("shared rate limiter", &e);
                    return Err(error.with_request_sent(may_have_run(&e)));
                }
                Err(_) => return Err(timed_out(self.connection.server(), self.timeout)),
            };
            parse(&values, call.reserve.len()).ok_or_else(|| {
                Error::new(
                    ErrorKind::Connection,
                    format!(
                        "shared rate limiter (Redis at {}): the script answered {} values for {} \
                         reservations",
                        self.connection.server(),
                        values.len(),
                        call.reserve.len()
                    ),
                )
            })
        })
    }
}

/// Whether the script may have run although the call failed: unless Redis refused it
/// before running it (a connection refused; `NOSCRIPT`, `NOPERM`, `READONLY`, `LOADING`, a
/// cluster redirect), a connection dropped after the call was written (a load balancer's idle
/// kill, `CLIENT KILL`, a failover) leaves the answer lost, not the call. What the call gave
/// back must then not be given back again.
fn may_have_run(e: &::redis::RedisError) -> bool {
    use ::redis::{ErrorKind as Kind, ServerErrorKind as Server};
    let refused_unrun = matches!(
        e.kind(),
        Kind::Server(
            Server::NoScript
                | Server::NoPerm
                | Server::ReadOnly
                | Server::BusyLoading
                | Server::Moved
                | Server::Ask
                | Server::TryAgain
                | Server::ClusterDown
                | Server::CrossSlot
                | Server::MasterDown
        )
    );
    // Refusals Redis answers by code rather than by a kind of their own: a full memory, a
    // script already running, credentials refused.
    let refused_by_code = matches!(e.kind(), Kind::AuthenticationFailed)
        || e.code()
            .is_some_and(|code| matches!(code, "OOM" | "BUSY" | "WRONGPASS" | "NOAUTH"));
    !(refused_unrun || refused_by_code || e.is_connection_refusal())
}

fn timed_out(server: &str, timeout: Duration) -> Error {
    Error::new(
        ErrorKind::Timeout,
        format!("shared rate limiter: Redis at {server} did not answer within {timeout:?}"),
    )
}

/// The longest wait a reply may give, in microseconds: a day. Longer waits are cut to it, so
/// a broken server cannot push a deadline past what the clock can represent.
pub(super) const MAX_WAIT_US: u64 = 86_400_000_000;

/// `{epoch, shift, learned × 4, wait...}`, checked: a server's reply is never trusted to have
/// the right shape or sane numbers.
fn parse(values: &[i64], reservations: usize) -> Option<Reply> {
    if values.len() != reservations + 2 + DIMS {
        return None;
    }
    let non_negative = |v: i64| u64::try_from(v).unwrap_or(0);
    Some(Reply {
        epoch: non_negative(values[0]),
        shift: non_negative(values[1]),
        learned: std::array::from_fn(|d| non_negative(values[2 + d])),
        waits: values[2 + DIMS..]
            .iter()
            .map(|&v| non_negative(v).min(MAX_WAIT_US))
            .collect(),
    })
}

#[cfg(test)]
pub(super) use model::Model;

#[cfg(test)]
mod model {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Mutex, PoisonError};
    use std::time::Duration;

    use tokio::time::Instant;
    use volley_core::{Error, ErrorKind};

    use super::{Call, DIMS, Reply, Store, StoreFuture, units};
    use crate::rate_limit::redis::config::Config;

    /// The script's arithmetic on tokio's clock, with a switch to make it unreachable and a
    /// round-trip time: the dispatcher's tests run against it in paused time.
    pub(in crate::rate_limit::redis) struct Model {
        config: Config,
        state: Mutex<Option<State>>,
        origin: Instant,
        /// Each call takes this long, half before and half after the state changes.
        pub(in crate::rate_limit::redis) latency: Duration,
        pub(in crate::rate_limit::redis) down: AtomicBool,
        pub(in crate::rate_limit::redis) calls: AtomicU64,
        /// Every call, in order.
        pub(in crate::rate_limit::redis) log: Mutex<Vec<Call>>,
    }

    #[derive(Debug, Clone, Copy)]
    struct State {
        tat: [u64; DIMS],
        learned: [u64; DIMS],
        paused: u64,
        shift: u64,
        epoch: u64,
    }

    impl Model {
        pub(in crate::rate_limit::redis) fn new(config: &Config) -> Model {
            Model {
                config: config.clone(),
                state: Mutex::new(None),
                // The server's clock is far from ours: the epoch of a model is 1 000 s in.
                origin: Instant::now() - Duration::from_secs(1_000),
                latency: Duration::from_micros(200),
                down: AtomicBool::new(false),
                calls: AtomicU64::new(0),
                log: Mutex::new(Vec::new()),
            }
        }

        /// Loses the state, as a restart of an empty Redis does.
        pub(in crate::rate_limit::redis) fn restart(&self) {
            *self.state.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }

        fn now(&self) -> u64 {
            u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX)
        }

        fn apply(&self, call: &Call) -> Reply {
            let now = self.now();
            let mut guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let mut s = guard.unwrap_or(State {
                tat: [0; DIMS],
                learned: [0; DIMS],
                paused: 0,
                shift: 0,
                epoch: now,
            });
            // The script writes back only the buckets it limits.
            let stored = s.tat;
            let lost = s.epoch != call.epoch_seen;
            if lost {
                for i in 0..DIMS {
                    s.tat[i] = s.tat[i].max(now + call.floors[i]);
                }
            }
            for i in 0..DIMS {
                let known = call.learned[i];
                if known > 0 && (call.fresh[i] || (lost && s.learned[i] == 0)) {
                    s.learned[i] = known;
                }
            }
            let mut dims = self.config.dims();
            for ((dim, learns), learned) in dims.iter_mut().zip(self.config.learn).zip(s.learned) {
                if learns && dim.is_none() && learned > 0 {
                    *dim = Some(self.config.learned_dim(learned));
                }
            }
            for (i, d) in dims.iter().enumerate() {
                let Some(d) = d else { continue };
                if call.give_back[i] > 0 {
                    s.tat[i] = s.tat[i].saturating_sub(d.span(call.give_back[i])).max(now);
                }
                if call.charge[i] > 0 {
                    s.tat[i] = s.tat[i].max(now) + d.span(call.charge[i]);
                }
                if call.empty[i] {
                    s.tat[i] = s.tat[i].max(now + d.tolerance_us);
                }
            }
            if call.pause_us > 0 {
                let stop = now + call.pause_us;
                let from = now.max(s.paused);
                if stop > from {
                    let by = stop - from;
                    s.paused = stop;
                    for (i, d) in dims.iter().enumerate() {
                        if d.is_some() {
                            s.tat[i] = s.tat[i].max(now) + by;
                        }
                    }
                    s.shift += by;
                }
            }
            let mut waits = Vec::with_capacity(call.reserve.len());
            for cost in &call.reserve {
                let costs = units(*cost);
                let mut at = now.max(s.paused);
                for (i, d) in dims.iter().enumerate() {
                    if let Some(d) = d {
                        let span = d.span(costs[i]);
                        let earliest = (s.tat[i].max(now) + span)
                            .saturating_sub(d.tolerance_us.max(span))
                            .max(now);
                        at = at.max(earliest);
                    }
                }
                for (i, d) in dims.iter().enumerate() {
                    if let Some(d) = d {
                        s.tat[i] = s.tat[i].max(at) + d.span(costs[i]);
                    }
                }
                waits.push(at - now);
            }
            for (i, d) in dims.iter().enumerate() {
                if d.is_none() {
                    s.tat[i] = stored[i];
                }
            }
            *guard = Some(s);
            Reply {
                epoch: s.epoch,
                shift: s.shift,
                learned: s.learned,
                waits,
            }
        }
    }

    impl Store for Model {
        fn call<'a>(&'a self, call: &'a Call) -> StoreFuture<'a> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::Relaxed);
                self.log
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(call.clone());
                tokio::time::sleep(self.latency / 2).await;
                if self.down.load(Ordering::Relaxed) {
                    return Err(Error::new(ErrorKind::Connect, "model: connection refused"));
                }
                let reply = self.apply(call);
                tokio::time::sleep(self.latency / 2).await;
                Ok(reply)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call Redis refused before running it gives back again; one whose connection dropped
    /// (after it was written, as far as anyone knows) or that failed otherwise does not.
    #[test]
    fn only_a_call_redis_refused_unrun_gives_back_again() {
        use ::redis::{ErrorKind as Kind, RedisError, ServerErrorKind as Server};
        use std::io::{Error as Io, ErrorKind as IoKind};
        for unrun in [
            RedisError::from(Io::new(IoKind::ConnectionRefused, "refused")),
            RedisError::from((Kind::Server(Server::ReadOnly), "READONLY")),
            RedisError::from((Kind::Server(Server::NoScript), "NOSCRIPT")),
            RedisError::from((Kind::Server(Server::BusyLoading), "LOADING")),
        ] {
            assert!(!may_have_run(&unrun), "{unrun}");
        }
        for maybe in [
            RedisError::from(Io::new(IoKind::ConnectionReset, "reset")),
            RedisError::from(Io::new(IoKind::UnexpectedEof, "closed")),
            RedisError::from((Kind::Server(Server::ResponseError), "ERR in the script")),
        ] {
            assert!(may_have_run(&maybe), "{maybe}");
        }
    }

    #[test]
    fn replies_are_checked() {
        assert_eq!(
            parse(&[7, 3, 600, 0, 0, 8_000, 0, 50], 2),
            Some(Reply {
                epoch: 7,
                shift: 3,
                learned: [600, 0, 0, 8_000],
                waits: vec![0, 50]
            })
        );
        assert_eq!(parse(&[7, 3, 0, 0, 0, 0, 0], 2), None);
        assert_eq!(parse(&[7, -3, -5, 0, 0, 0, -1], 1).unwrap().waits, [0]);
        assert_eq!(
            parse(&[7, 3, 0, 0, 0, 0, i64::MAX], 1).unwrap().waits,
            [MAX_WAIT_US]
        );
    }
}
