//! What the benchmarks share: volley-mock and a transport to it.

use volley_mock::{MockConfig, MockServer};
use volley_transport::Transport;

/// volley-mock with its defaults, started on `runtime`, and a transport to it.
pub(crate) fn mock_and_transport(runtime: &tokio::runtime::Runtime) -> (MockServer, Transport) {
    let server = runtime
        .block_on(MockServer::start(MockConfig::default()))
        .expect("the mock starts");
    let transport = Transport::builder()
        .base_url(server.url())
        .build()
        .expect("a loopback transport");
    (server, transport)
}
