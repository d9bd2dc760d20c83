//! Where a request goes: Volley's own HTTP/1.1 pool (the default), or hyper-util's for
//! HTTP/2. Both answer with a [`PooledBody`] and fail with a [`SendError`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use tower_service::Service;

use crate::error::SendError;
use crate::h2::{self, H2Pool};
use crate::pool::{H1Pool, PooledBody};

/// Where requests go: Volley's own HTTP/1.1 pool (the default), or hyper-util's for HTTP/2.
pub(crate) enum Backend {
    Http1(Arc<H1Pool>),
    Http2(Box<H2Pool>),
}

/// What a backend answers with.
pub(crate) type BackendFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<PooledBody>, SendError>> + Send>>;

impl Service<http::Request<Full<Bytes>>> for &Backend {
    type Response = http::Response<PooledBody>;
    type Error = SendError;
    type Future = BackendFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), SendError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Full<Bytes>>) -> BackendFuture {
        match self {
            // Built in its allocation, not on the stack and copied in (see `Transport::call`).
            Backend::Http1(pool) => {
                let future = Box::write(Box::new_uninit(), pool.clone().send(request));
                Box::into_pin(future)
            }
            Backend::Http2(pool) => h2::send(pool, request),
        }
    }
}
