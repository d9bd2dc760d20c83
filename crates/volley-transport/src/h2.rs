//! HTTP/2 ([`Builder::http2`](crate::Builder::http2),
//! [`Builder::http2_prior_knowledge`](crate::Builder::http2_prior_knowledge)): hyper-util's
//! pool, which multiplexes streams onto one connection per host. Volley's own pool
//! ([`pool`](crate::pool)) serves HTTP/1.1 only.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;

use crate::connector::Connector;
use crate::error::SendError;
use crate::pool::PooledBody;

/// hyper-util's pool, for the HTTP/2 configurations.
pub(crate) type H2Pool = Client<Connector, Full<Bytes>>;

/// Sends `request` (absolute URI) on hyper-util's pool and waits for the response head.
pub(crate) fn send(
    pool: &H2Pool,
    request: http::Request<Full<Bytes>>,
) -> Pin<Box<dyn Future<Output = Result<http::Response<PooledBody>, SendError>> + Send>> {
    let response = pool.request(request);
    Box::pin(async move {
        response
            .await
            .map(|mut r| {
                crate::send::canonical_content_coding(r.headers_mut());
                r.map(PooledBody::unpooled)
            })
            .map_err(SendError::Http2)
    })
}
