//! Taking a permit from a semaphore in `poll_ready`, for both concurrency limits.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore, TryAcquireError};

type Acquiring =
    Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send + Sync>>;

/// A service's permit, from none to held: `poll_ready` drives it, `call` takes the permit.
pub(crate) enum Acquire {
    /// No permit and no wait in progress.
    Idle,
    /// Queued on the semaphore. Boxed only on this slow path: a free slot is taken without
    /// allocating.
    Waiting(Acquiring),
    /// Holding the permit the next `call` takes.
    Ready(OwnedSemaphorePermit),
}

impl Acquire {
    /// Ready once a permit of `semaphore` is held.
    pub(crate) fn poll(&mut self, semaphore: &Arc<Semaphore>, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match self {
                Acquire::Ready(_) => return Poll::Ready(()),
                Acquire::Idle => {
                    *self = match semaphore.clone().try_acquire_owned() {
                        Ok(permit) => Acquire::Ready(permit),
                        Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => {
                            Acquire::Waiting(Box::pin(semaphore.clone().acquire_owned()))
                        }
                    };
                }
                Acquire::Waiting(acquiring) => {
                    // The limits own their semaphores and never close them, so acquiring
                    // cannot fail.
                    let permit = ready!(acquiring.as_mut().poll(cx))
                        .expect("a concurrency semaphore is never closed");
                    *self = Acquire::Ready(permit);
                }
            }
        }
    }

    /// The permit `poll` acquired, leaving `Idle`.
    ///
    /// # Panics
    /// When no permit is held: `call` before `poll_ready` returned ready. `service` names the
    /// service in the message.
    pub(crate) fn take(&mut self, service: &str) -> OwnedSemaphorePermit {
        match std::mem::replace(self, Acquire::Idle) {
            Acquire::Ready(permit) => permit,
            _ => panic!("{service}::call before poll_ready returned Ready"),
        }
    }

    /// Whether a permit is held.
    pub(crate) fn holds_permit(&self) -> bool {
        matches!(self, Acquire::Ready(_))
    }
}
