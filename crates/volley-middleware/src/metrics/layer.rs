//! [`MetricsLayer`]: the configuration of the metrics middleware.

use std::sync::Arc;

use tower_layer::Layer;

use super::handles::Handles;
use super::{Metrics, Scope};

/// Builds [`Metrics`] services. See the [module docs](super) for what is recorded.
#[derive(Debug, Clone, Copy, Default)]
#[must_use]
pub struct MetricsLayer {
    scope: Scope,
    replays: bool,
}

impl MetricsLayer {
    /// A layer of scope [`Scope::Request`].
    pub fn new() -> MetricsLayer {
        MetricsLayer::default()
    }

    /// What one call of the wrapped service is: a whole request (outside retry) or one
    /// attempt (inside it). Every metric is labelled `scope="request"` or `scope="attempt"`,
    /// and the span is named `volley.request` or `volley.attempt`. Default
    /// [`Scope::Request`].
    pub fn scope(mut self, scope: Scope) -> MetricsLayer {
        self.scope = scope;
        self
    }

    /// The scope in force.
    pub fn current_scope(&self) -> Scope {
        self.scope
    }

    /// Whether a cache layer sits inside this one: its replays (`x-volley-cache: hit`, a
    /// header the cache layer removes from servers' answers) are then counted as requests but
    /// not in `volley_tokens_total`, whose usage was billed when the answer first came.
    /// Without a cache the header is not read: a server's own `x-volley-cache` hides nothing.
    /// Default `false`.
    pub fn replays(mut self, cache_inside: bool) -> MetricsLayer {
        self.replays = cache_inside;
        self
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = Metrics<S>;

    /// Registers the metric handles with the `metrics` recorder in force (the local one, else
    /// the global one) and wraps `inner`.
    fn layer(&self, inner: S) -> Metrics<S> {
        Metrics::from_handles(inner, Arc::new(Handles::register(self.scope, self.replays)))
    }
}
