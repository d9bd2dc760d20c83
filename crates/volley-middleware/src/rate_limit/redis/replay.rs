//! The Lua script and its Rust model (`store::Model`, which the dispatcher's unit tests run
//! against) replayed side by side: one sequence of calls (reservations, give-backs, charges,
//! empty buckets, pauses, a lost state) to a real Redis and to the model, their replies
//! compared. Needs Redis: ignored unless asked for (`-- --include-ignored`, as in CI).

use std::time::{Duration, Instant};

use super::super::Cost;
use super::store::{Call, Model, RedisStore, Reply, Store};
use super::{Limits, SharedLimits};
use crate::redis::RedisOptions;

/// A small deterministic generator (xorshift), so a failure replays the same calls.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The calls: a process's life compressed, every field of [`Call`] exercised. Floors are
/// given with every call; they apply only when the epoch the caller saw is not the state's.
fn calls(rng: &mut Rng, n: usize) -> Vec<Call> {
    (0..n)
        .map(|i| {
            let reserve = (0..rng.below(4))
                .map(|_| Cost {
                    requests: 1,
                    // Up to 1.5 times the token burst: costs above the burst take their own
                    // path in the arithmetic.
                    tokens: rng.below(1_500),
                    input_tokens: rng.below(1_500),
                    output_tokens: rng.below(150),
                })
                .collect();
            let sometimes = |rng: &mut Rng, most: u64| {
                if rng.below(4) == 0 {
                    1 + rng.below(most)
                } else {
                    0
                }
            };
            Call {
                epoch_seen: 0,
                floors: std::array::from_fn(|_| rng.below(30_000_000)),
                give_back: [
                    sometimes(rng, 1),
                    sometimes(rng, 800),
                    sometimes(rng, 800),
                    sometimes(rng, 80),
                ],
                charge: [
                    0,
                    sometimes(rng, 900),
                    sometimes(rng, 900),
                    sometimes(rng, 90),
                ],
                empty: std::array::from_fn(|_| rng.below(10) == 0),
                pause_us: if i % 17 == 16 { 5_000_000 } else { 0 },
                // Limits learned (used only where the configuration learns them): now and then
                // a new one, otherwise what the caller knew, which restores a lost state.
                learned: [
                    [0, 6, 600][rng.below(3) as usize],
                    [0, 60_000, 30_000][rng.below(3) as usize],
                    [0, 60_000, 30_000][rng.below(3) as usize],
                    [0, 6_000, 3_000][rng.below(3) as usize],
                ],
                fresh: std::array::from_fn(|_| rng.below(5) == 0),
                reserve,
            }
        })
        .collect()
}

#[ignore = "needs Redis: REDIS_URL"]
#[tokio::test]
async fn the_script_and_its_model_agree() {
    // 6 requests and 60 000 tokens a minute: 10 s a request, 1 ms a token, so a difference
    // in the arithmetic shows as seconds, far above the clocks' drift during the replay; as
    // many input tokens, and 6 000 output tokens (10 ms a token, burst 100).
    replay(
        Limits::per_minute()
            .requests(6)
            .burst_requests(2)
            .tokens(60_000)
            .burst_tokens(1_000)
            .input_tokens(60_000)
            .output_tokens(6_000)
            .headroom(0.0)
            .jitter_margin(Duration::ZERO),
        "replay",
    )
    .await;
}

#[ignore = "needs Redis: REDIS_URL"]
#[tokio::test]
async fn the_script_and_its_model_agree_on_learned_limits() {
    // Requests, tokens and input tokens learned (6 or 600 a minute, 60 000 or 30 000), with a
    // headroom and a jitter margin, which the script applies to them itself (a large margin,
    // so a mistake in it shows above the clocks' drift); output tokens given.
    replay(
        Limits::auto()
            .output_tokens(6_000)
            .headroom(0.01)
            .jitter_margin(Duration::from_millis(500)),
        "replay-learned",
    )
    .await;
}

/// Replays the same calls to Redis and to the model under `limits`.
async fn replay(limits: Limits, name: &str) {
    let url = volley_testkit::redis::url();
    let options = SharedLimits::new(RedisOptions::new(&url), limits)
        .prefix(volley_testkit::redis::unique_prefix(name));
    let config = options.resolve().unwrap();
    let store = RedisStore::connect(&options.redis, &config).await.unwrap();
    let mut model = Model::new(&config);
    model.latency = Duration::ZERO;
    let client = ::redis::Client::open(url.as_str()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();

    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let calls = calls(&mut rng, 60);
    let mut seen = [0u64; 2]; // the epoch each side answered last: Redis, model
    let mut mismatches = Vec::new();
    let mut start = Instant::now();
    for (i, call) in calls.iter().enumerate() {
        if i == 30 {
            // The state is lost (a restart of an empty Redis): both start again from the
            // caller's floors.
            let _: i64 = ::redis::cmd("DEL")
                .arg(&config.key)
                .query_async(&mut admin)
                .await
                .unwrap();
            model.restart();
            start = Instant::now();
        }
        let mut to_redis = call.clone();
        to_redis.epoch_seen = seen[0];
        let mut to_model = call.clone();
        to_model.epoch_seen = seen[1];
        let from_redis = store.call(&to_redis).await.unwrap();
        let from_model = model.call(&to_model).await.unwrap();
        // The two clocks advance alike but not in step: their `now`s drift apart by at most
        // the time the replay has taken since the state began.
        let drift = u64::try_from(start.elapsed().as_micros()).unwrap() * 2 + 10;
        if !agree(&from_redis, &from_model, drift) {
            mismatches.push(format!(
                "call {i} {call:?}\n  redis {from_redis:?}\n  model {from_model:?}"
            ));
        }
        if i != 0 && i != 30 {
            assert_eq!(from_redis.epoch, seen[0], "call {i}: Redis kept its epoch");
            assert_eq!(
                from_model.epoch, seen[1],
                "call {i}: the model kept its epoch"
            );
        }
        seen = [from_redis.epoch, from_model.epoch];
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

/// Same learned limits, shift and waits, each within `drift` microseconds.
fn agree(a: &Reply, b: &Reply, drift: u64) -> bool {
    a.learned == b.learned
        && a.shift.abs_diff(b.shift) <= drift
        && a.waits.len() == b.waits.len()
        && a.waits
            .iter()
            .zip(&b.waits)
            .all(|(x, y)| x.abs_diff(*y) <= drift)
}
