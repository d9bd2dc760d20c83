//! Raw HTTP/1.1 on loopback, for the answers volley-mock cannot give (an echo of the headers,
//! a 403, a stream of anything): reading a request's head, or a whole request, off a socket.

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The most a request head may take before the reader gives up.
const MAX_HEAD: usize = 64 * 1024;

/// Reads from `socket` through the blank line that ends a request's head (and whatever came
/// in the same reads after it), as text. `None` when the peer closes or fails first, or the
/// head passes 64 KiB.
pub async fn read_request_head(socket: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    read_head(socket, &mut head).await?;
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// Reads into `buf` until it holds a request head's blank line; returns where the head ends
/// (past the blank line). `None` as for [`read_request_head`].
async fn read_head(socket: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(at + 4);
        }
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > MAX_HEAD {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads one whole request from `socket` (its head and a body of `content-length` bytes) and
/// takes it out of `buf`, which keeps whatever came after it: the next request on a
/// kept-alive connection. Returns the head, blank line included, in ASCII lower case. `None`
/// when the peer closes or fails first, or the head passes 64 KiB.
pub async fn read_request(socket: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    let end = read_head(socket, buf).await?;
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut chunk = [0u8; 4096];
    while buf.len() < end + length {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    buf.drain(..end + length);
    Some(head)
}
