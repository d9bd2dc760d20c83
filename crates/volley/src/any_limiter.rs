//! The limiter of the rate-limit slot with the `redis` feature: in-process or shared.
//!
//! The stack is one concrete type, so its rate-limit slot holds one limiter type:
//! [`AnyLimiter`], an enum whose acquire future is an either-future. The local path costs a
//! match and nothing else: no box, no dynamic call.

use futures_util::future::Either;
use volley_core::RequestId;
use volley_middleware::rate_limit::{
    Cost, Grant, LocalAcquire, LocalLimiter, Observation, RateLimiter, RedisLimiter,
};

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

    fn acquire_before(
        &self,
        id: RequestId,
        cost: Cost,
        deadline: Option<std::time::Instant>,
    ) -> Self::Acquire {
        match self {
            AnyLimiter::Local(limiter) => Either::Left(limiter.acquire_before(id, cost, deadline)),
            AnyLimiter::Redis(limiter) => Either::Right(limiter.acquire_before(id, cost, deadline)),
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

    fn abandon(&self, grant: Grant) {
        match self {
            AnyLimiter::Local(limiter) => limiter.abandon(grant),
            AnyLimiter::Redis(limiter) => limiter.abandon(grant),
        }
    }

    fn observe(&self, observation: &Observation) {
        match self {
            AnyLimiter::Local(limiter) => limiter.observe(observation),
            AnyLimiter::Redis(limiter) => limiter.observe(observation),
        }
    }

    fn learns(&self) -> bool {
        match self {
            AnyLimiter::Local(limiter) => limiter.learns(),
            AnyLimiter::Redis(limiter) => limiter.learns(),
        }
    }

    fn for_request(&self, request: &volley_core::Request) -> AnyLimiter {
        match self {
            AnyLimiter::Local(limiter) => AnyLimiter::Local(limiter.for_request(request)),
            AnyLimiter::Redis(limiter) => AnyLimiter::Redis(limiter.for_request(request)),
        }
    }

    fn splits_tokens(&self) -> bool {
        match self {
            AnyLimiter::Local(limiter) => limiter.splits_tokens(),
            AnyLimiter::Redis(limiter) => limiter.splits_tokens(),
        }
    }

    fn settle_usage(&self, grant: Grant, usage: volley_core::dialect::TokenUsage) {
        match self {
            AnyLimiter::Local(limiter) => limiter.settle_usage(grant, usage),
            AnyLimiter::Redis(limiter) => limiter.settle_usage(grant, usage),
        }
    }
}
