//! [`RetryLayer`]: applies a [`Policy`] to any service.

use tower_layer::Layer;

use super::{Policy, Retry};

/// Wraps a service in [`Retry`] with a [`Policy`].
///
/// Every service the layer wraps shares the policy's retry budget. `RetryLayer::default()`
/// uses [`Policy::default`].
#[derive(Debug, Clone, Default)]
pub struct RetryLayer {
    policy: Policy,
}

impl RetryLayer {
    /// A layer that retries with `policy`.
    pub fn new(policy: Policy) -> RetryLayer {
        RetryLayer { policy }
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        Retry::new(inner, self.policy.clone())
    }
}
