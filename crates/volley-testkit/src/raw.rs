//! Raw HTTP/1.1 on loopback, for the answers volley-mock cannot give (an echo of the headers,
//! a 403, a stream of anything): reading a request's head, or a whole request, off a socket,
//! and a server that answers every request with what a function makes of its head.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Starts a server on a free loopback port that answers every request, on every connection
/// (kept alive), with the bytes `answer` makes of its head (in lower case, see
/// [`read_request`]): a whole HTTP/1.1 response. Returns the port. It runs as long as the
/// runtime it was started on. Must be called within a tokio runtime.
pub async fn serve(answer: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding a loopback port");
    let port = listener.local_addr().expect("a bound address").port();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let answer = Arc::clone(&answer);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some(head) = read_request(&mut socket, &mut buf).await {
                    if socket.write_all(&answer(&head)).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// Starts a server on a free loopback port that answers one request with `parts`, written one
/// after another with `gap` between them, then closes the connection: a response whose end
/// is its connection's (the first part starts with its status line and head). Returns the
/// port. Must be called within a tokio runtime.
pub async fn answer_once_in_parts(parts: Vec<String>, gap: std::time::Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding a loopback port");
    let port = listener.local_addr().expect("a bound address").port();
    tokio::spawn(async move {
        let Ok((mut socket, _)) = listener.accept().await else {
            return;
        };
        let mut buf = Vec::new();
        if read_request(&mut socket, &mut buf).await.is_none() {
            return;
        }
        for (n, part) in parts.iter().enumerate() {
            if n > 0 {
                tokio::time::sleep(gap).await;
            }
            if socket.write_all(part.as_bytes()).await.is_err() {
                return;
            }
        }
        let _ = socket.shutdown().await;
    });
    port
}

/// A whole response: `status` (such as `"401 Unauthorized"`), a JSON `body`, and `headers`
/// (`name: value` lines without their line ends).
pub fn json_response(status: &str, headers: &[String], body: &str) -> Vec<u8> {
    let mut head = format!("HTTP/1.1 {status}\r\ncontent-type: application/json\r\n");
    for header in headers {
        head.push_str(header);
        head.push_str("\r\n");
    }
    format!("{head}content-length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

/// A whole `200 OK` response carrying `body` as an event stream (`text/event-stream`, with a
/// `Content-Length`): the answer of a server that streams, for [`serve`].
pub fn event_stream_response(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

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
