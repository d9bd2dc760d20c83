//! Raw HTTP/1.1 on loopback, for the answers volley-mock cannot give (an echo of the headers,
//! a 403, a stream of anything): reading a request's head off a socket.

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The most a request head may take before the reader gives up.
const MAX_HEAD: usize = 64 * 1024;

/// Reads from `socket` through the blank line that ends a request's head (and whatever came
/// in the same reads after it), as text. `None` when the peer closes or fails first, or the
/// head passes 64 KiB.
pub async fn read_request_head(socket: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = socket.read(&mut buf).await.ok()?;
        if n == 0 || head.len() > MAX_HEAD {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}
