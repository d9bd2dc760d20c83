//! The rate-limit slot with the `redis` feature: the in-process limiter or the shared one.
//!
//! The stack is one concrete type, so its rate-limit slot holds one limiter type:
//! [`AnyLimiter`], an enum whose acquire future is an either-future. The local path costs a
//! match and nothing else: no box, no dynamic call.

use futures_util::future::Either;
use volley_core::RequestId;
use volley_middleware::rate_limit::{
    Cost, Grant, LocalAcquire, LocalLimiter, Observation, RateLimiter, RedisLimiter,
};

use crate::ClientBuilder;
use crate::client::PresetLimiter;

/// The limiter of the rate-limit slot: in-process, or shared through Redis.
#[derive(Clone)]
pub(crate) enum AnyLimiter {
    Local(LocalLimiter),
    Redis(RedisLimiter),
}

impl From<LocalLimiter> for AnyLimiter {
    fn from(limiter: LocalLimiter) -> AnyLimiter {
        AnyLimiter::Local(limiter)
    }
}

impl RateLimiter for AnyLimiter {
    type Acquire = Either<LocalAcquire, <RedisLimiter as RateLimiter>::Acquire>;

    fn acquire(&self, id: RequestId, cost: Cost) -> Self::Acquire {
        match self {
            AnyLimiter::Local(limiter) => Either::Left(limiter.acquire(id, cost)),
            AnyLimiter::Redis(limiter) => Either::Right(limiter.acquire(id, cost)),
        }
    }

    fn settle(&self, grant: Grant, actual_tokens: u64) {
        match self {
            AnyLimiter::Local(limiter) => limiter.settle(grant, actual_tokens),
            AnyLimiter::Redis(limiter) => limiter.settle(grant, actual_tokens),
        }
    }

    fn release(&self, grant: Grant) {
        match self {
            AnyLimiter::Local(limiter) => limiter.release(grant),
            AnyLimiter::Redis(limiter) => limiter.release(grant),
        }
    }

    fn observe(&self, observation: &Observation) {
        match self {
            AnyLimiter::Local(limiter) => limiter.observe(observation),
            AnyLimiter::Redis(limiter) => limiter.observe(observation),
        }
    }
}

impl ClientBuilder {
    /// A rate limiter shared through Redis by every process (and machine) that uses it with
    /// the same prefix and credential: together they stay within one provider budget.
    /// Replaces [`ClientBuilder::rpm`], [`ClientBuilder::tpm`],
    /// [`ClientBuilder::rate_limits`] and [`ClientBuilder::rate_limiter`].
    ///
    /// Key the limiter to the credential the client sends with
    /// ([`ClientBuilder::credential_id`]), as the cache is: processes with one key share a
    /// budget, processes with different keys do not. What happens when Redis cannot be
    /// reached is the limiter's [`FailureMode`](crate::redis::FailureMode).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use volley::Client;
    /// use volley::middleware::rate_limit::Limits;
    /// use volley::redis::{FailureMode, RedisLimiter, RedisOptions, RedisStore, SharedLimits};
    ///
    /// # async fn run() -> Result<(), volley::Error> {
    /// let redis = RedisOptions::new("redis://:password@10.0.0.5:6379");
    /// let builder = Client::builder().from_env().concurrency(512);
    /// let limiter = RedisLimiter::connect(
    ///     SharedLimits::new(redis.clone(), Limits::per_minute().requests(10_000).tokens(2_000_000))
    ///         .prefix("prod")
    ///         .credential(&builder.credential_id()?)
    ///         .on_failure(FailureMode::LocalFallback { processes: 8 }),
    /// )
    /// .await?;
    /// let store = RedisStore::connect(redis, Duration::from_secs(86_400)).await?;
    /// let client = builder
    ///     .shared_rate_limiter(limiter)
    ///     .cache_store(store)
    ///     .build()?;
    /// # drop(client);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// Default: none (a limiter of its own when a limit is set).
    pub fn shared_rate_limiter(self, limiter: RedisLimiter) -> ClientBuilder {
        let counts_tokens = limiter.limits().tokens_per_minute().is_some();
        self.preset_limiter(PresetLimiter {
            limiter: AnyLimiter::Redis(limiter),
            counts_tokens,
        })
    }
}
