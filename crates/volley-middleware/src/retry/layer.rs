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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layer_keeps_its_policy_and_debug_shows_the_settings() {
        let policy = Policy::builder()
            .max_retries(7)
            .give_up_after(std::time::Duration::from_secs(90))
            .build()
            .unwrap();
        let layer = RetryLayer::new(policy);
        assert_eq!(layer.policy().max_retries(), 7);
        assert_eq!(
            layer.policy().give_up_after(),
            std::time::Duration::from_secs(90)
        );
        // Debug of the policy (and its builder) names the settings a log line would need.
        let shown = format!("{layer:?}");
        assert!(shown.contains("max_retries: 7"), "{shown}");
        assert!(shown.contains("give_up_after: 90s"), "{shown}");
        let builder = format!("{:?}", Policy::builder().max_retries(4));
        assert!(builder.contains("max_retries: 4"), "{builder}");
    }
}
