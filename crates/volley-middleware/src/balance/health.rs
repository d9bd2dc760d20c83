//! The active health check of an open endpoint: when each cool-down ends, one `GET` of the
//! configured path through the endpoint's own service decides whether traffic may try again.

use std::sync::{Arc, Weak};

use http::uri::PathAndQuery;
use tokio::time::Instant;
use tower::ServiceExt;
use tower_service::Service;
use volley_core::{Error, Request, Response};

use super::Shared;
use super::endpoint::Observed;
use super::future::observe;

/// Starts checking endpoint `index`, whose breaker just opened, when a tokio runtime is
/// there. The task holds the balancer weakly: dropping the client ends it at its next wake.
/// While the task lives, the breaker waits for its verdict; without a runtime, or once the
/// task is gone with its runtime, real requests probe when the cool-down ends.
pub(crate) fn start<S>(shared: &Arc<Shared<S>>, index: usize, path: PathAndQuery)
where
    S: Service<Request, Response = Response, Error = Error> + Clone + Send + Sync + 'static,
    S::Future: Send,
{
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    shared.selector.endpoints[index].check_running(true);
    // Moved into the task, so that it counts the check out however the task ends: returned,
    // or dropped unpolled or midway with its runtime.
    let running = Running {
        shared: Arc::downgrade(shared),
        index,
    };
    let shared = Arc::downgrade(shared);
    runtime.spawn(async move {
        let _running = running;
        check(shared, index, path).await;
    });
}

/// A running health check of endpoint `index`; counted out when dropped.
struct Running<S> {
    shared: Weak<Shared<S>>,
    index: usize,
}

impl<S> Drop for Running<S> {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.upgrade() {
            shared.selector.endpoints[self.index].check_running(false);
        }
    }
}

async fn check<S>(shared: Weak<Shared<S>>, index: usize, path: PathAndQuery)
where
    S: Service<Request, Response = Response, Error = Error> + Clone + Send + Sync + 'static,
    S::Future: Send,
{
    loop {
        let (until, service) = {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let Some(until) = shared.selector.endpoints[index].open_until() else {
                return;
            };
            (until, shared.services[index].clone())
        };
        tokio::time::sleep_until(until).await;
        let request = Request::new(http::Method::GET, path.clone());
        let result = service.oneshot(request).await;
        let alive = match observe(&result, false) {
            // A refusal (no `/models` there, a key without access to it) is an answer.
            Observed::Answered | Observed::RateLimited(_) | Observed::Refused => true,
            Observed::ServerError | Observed::Failed => false,
            // An error of the request itself, or of this side's limiter: try again after
            // the next cool-down.
            Observed::Nothing | Observed::Held(_) => false,
        };
        // Read the body, so that a connection permit it holds is given back at once.
        if let Ok(response) = result {
            let _ = response.bytes().await;
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let endpoint = &shared.selector.endpoints[index];
        endpoint.count_check(alive);
        match endpoint.checked(alive, Instant::now()) {
            Some(super::BreakerState::Open) => continue,
            _ => return,
        }
    }
}
