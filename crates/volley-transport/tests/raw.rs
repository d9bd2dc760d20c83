//! What volley-mock cannot say, said by a raw responder on loopback: a redirect to a second
//! listener, a chunked body cut before its last chunk, a brotli body.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpListener;
use volley_core::Request;
use volley_transport::Transport;

const CHAT_BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
const ANSWER: &str = r#"{"id":"chatcmpl-raw","object":"chat.completion","choices":[]}"#;
/// No test here may take longer than this.
const BOUND: Duration = Duration::from_secs(10);

/// A listener that answers every request with `response`, byte for byte, then closes the
/// connection; counts the connections it accepted and keeps the request heads it read.
struct Raw {
    url: String,
    connections: Arc<AtomicUsize>,
    heads: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Raw {
    async fn start(response: Vec<u8>) -> Raw {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (count, seen) = (connections.clone(), heads.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let response = response.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    // A request cut short is recorded as nothing.
                    let head = volley_testkit::raw::read_request(&mut socket, &mut Vec::new())
                        .await
                        .unwrap_or_default();
                    seen.lock().unwrap().push(head);
                    let _ = socket.write_all(&response).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Raw {
            url,
            connections,
            heads,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn transport(url: &str) -> Transport {
    Transport::builder()
        .base_url(url)
        .build()
        .expect("a loopback base URL builds")
}

fn chat() -> Request {
    Request::post("/chat/completions", CHAT_BODY).unwrap()
}

#[tokio::test]
async fn a_redirect_is_an_error_and_the_target_sees_no_connection() {
    let target = Raw::start(
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{ANSWER}",
            ANSWER.len()
        )
        .into_bytes(),
    )
    .await;
    for status in [
        "301 Moved Permanently",
        "302 Found",
        "307 Temporary Redirect",
        "308 Permanent Redirect",
    ] {
        // A password and a signed query in the Location.
        let location = format!(
            "{}/chat/completions?sig=query-secret#part",
            target
                .url
                .replacen("http://", "http://user:url-password@", 1)
        );
        let redirect = Raw::start(
            format!("HTTP/1.1 {status}\r\nlocation: {location}\r\ncontent-length: 0\r\n\r\n")
                .into_bytes(),
        )
        .await;
        let result = tokio::time::timeout(
            BOUND,
            Transport::builder()
                .base_url(&redirect.url)
                .api_key("sk-raw-redirect-secret")
                .build()
                .unwrap()
                .send(chat()),
        )
        .await
        .expect("the request ends");
        let error = result.expect_err("a redirect is not a success");
        assert_eq!(
            error.status().map(|s| s.as_u16()),
            status[..3].parse().ok(),
            "{error}"
        );
        assert_eq!(redirect.connections(), 1);
        // The message says where it points, without the URL's secrets.
        let message = error.to_string();
        assert!(
            message.contains(&format!(
                "redirected to {}/chat/completions (redirects are not followed",
                target.url
            )),
            "{message}"
        );
        for secret in ["url-password", "query-secret", "#part"] {
            assert!(!message.contains(secret), "{message}");
        }
    }
    // Whatever the transport does with a 3xx, it never takes the bearer to the Location.
    assert_eq!(target.connections(), 0, "the redirect was followed");

    // A server that puts the client's key in the Location gets it scrubbed from the message.
    let echo = Raw::start(
        b"HTTP/1.1 302 Found\r\nlocation: /v1/sk-raw-redirect-secret/chat\r\ncontent-length: 0\r\n\r\n"
            .to_vec(),
    )
    .await;
    let error = Transport::builder()
        .base_url(&echo.url)
        .api_key("sk-raw-redirect-secret")
        .build()
        .unwrap()
        .send(chat())
        .await
        .expect_err("a redirect is not a success");
    let message = error.to_string();
    assert!(message.contains("redirected to /v1/"), "{message}");
    assert!(!message.contains("sk-raw-redirect-secret"), "{message}");

    // A `//` inside a relative path opens no authority: the path is shown whole.
    let relative = Raw::start(
        b"HTTP/1.1 307 Temporary Redirect\r\nlocation: /v1//a@b/chat\r\ncontent-length: 0\r\n\r\n"
            .to_vec(),
    )
    .await;
    let message = transport(&relative.url)
        .send(chat())
        .await
        .expect_err("a redirect is not a success")
        .to_string();
    assert!(
        message.contains("redirected to /v1//a@b/chat ("),
        "{message}"
    );
}

/// A response that is no HTTP (a server of another protocol on the port, a broken proxy) is
/// said to be one, with hyper's reason: not "the connection failed".
#[tokio::test]
async fn a_response_that_is_no_http_says_so() {
    for (response, reason) in [
        (&b"SSH-2.0-OpenSSH_9.2\r\n\r\n"[..], "invalid HTTP version"),
        (b"HTTP/1.1 2000 OK\r\ncontent-length: 0\r\n\r\n", "status"),
        (b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n", "header"),
    ] {
        let raw = Raw::start(response.to_vec()).await;
        // HTTP/2 offered: plain `http://` speaks HTTP/1.1 through hyper-util's pool.
        for http2 in [false, true] {
            let transport = Transport::builder()
                .base_url(&raw.url)
                .http2(http2)
                .build()
                .unwrap();
            let error = tokio::time::timeout(BOUND, transport.send(chat()))
                .await
                .expect("the request ends")
                .expect_err("no HTTP is no success");
            assert_eq!(error.kind(), volley_core::ErrorKind::Connection, "{error}");
            let report = error.report().to_string();
            assert!(
                report.contains("could not be read as HTTP/1.1") && report.contains(reason),
                "http2 {http2}: {report}"
            );
        }
    }
}

#[tokio::test]
async fn a_chunked_body_cut_before_its_last_chunk_is_an_error() {
    // The JSON is whole, but the chunked body never ends (no `0` chunk): the connection
    // closes. A success here would be an answer the server never finished.
    let raw = Raw::start(
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{ANSWER}\r\n",
            ANSWER.len()
        )
        .into_bytes(),
    )
    .await;
    let result = tokio::time::timeout(BOUND, transport(&raw.url).send(chat()))
        .await
        .expect("the request ends");
    let error = match result {
        Ok(response) => panic!("a cut body read as a success: {response:?}"),
        Err(error) => error,
    };
    assert!(error.status().is_none(), "{error}");

    // A chunk cut in its middle, too.
    let raw = Raw::start(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n40\r\n{\"id\":\"chatcmpl-raw\""
            .to_vec(),
    )
    .await;
    let result = tokio::time::timeout(BOUND, transport(&raw.url).send(chat()))
        .await
        .expect("the request ends");
    assert!(result.is_err(), "a cut chunk read as a success");
}

#[tokio::test]
async fn brotli_bodies_are_decoded() {
    let body = brotli_stored(ANSWER.as_bytes());
    let mut response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: br\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(&body);
    let raw = Raw::start(response).await;
    let answer: serde_json::Value = tokio::time::timeout(BOUND, async {
        transport(&raw.url)
            .send(chat())
            .await
            .expect("the request succeeds")
            .json()
            .await
            .expect("the decoded body is the JSON")
    })
    .await
    .expect("the request ends");
    assert_eq!(answer["id"], "chatcmpl-raw");
    let heads = raw.heads.lock().unwrap();
    let asked = heads[0]
        .lines()
        .find_map(|l| l.strip_prefix("accept-encoding:"))
        .unwrap_or_default();
    assert!(
        asked.contains("br"),
        "brotli was not asked for: {}",
        heads[0]
    );
}

/// `data` as a brotli stream of one stored (uncompressed) meta-block (RFC 7932, 9.2): window
/// bits `0` (16), ISLAST 0, MNIBBLES 4, MLEN-1 in 16 bits, ISUNCOMPRESSED 1, padding to the
/// byte, the bytes, then an empty last meta-block (ISLAST 1, ISLASTEMPTY 1).
fn brotli_stored(data: &[u8]) -> Vec<u8> {
    assert!(!data.is_empty() && data.len() <= 1 << 16);
    let header: u32 = ((data.len() as u32 - 1) << 4) | (1 << 20);
    let mut out = header.to_le_bytes()[..3].to_vec();
    out.extend_from_slice(data);
    out.push(0b11);
    out
}

/// A POST, PUT or PATCH without a body still says its length (RFC 9110, 8.6: some front ends
/// answer 411 without one); a GET without a body says nothing.
#[tokio::test]
async fn an_empty_post_says_content_length_zero() {
    let server = Raw::start(
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{ANSWER}",
            ANSWER.len()
        )
        .into_bytes(),
    )
    .await;
    let transport = transport(&server.url);
    for method in [http::Method::POST, http::Method::PUT, http::Method::PATCH] {
        let request = Request::new(method.clone(), "/batches/b1/cancel".parse().unwrap());
        tokio::time::timeout(BOUND, transport.send(request))
            .await
            .expect("the request ends")
            .expect("a 200");
        let head = server.heads.lock().unwrap().pop().expect("a request head");
        assert!(
            head.starts_with(&format!("{} ", method.as_str().to_lowercase())),
            "{head}"
        );
        assert!(
            head.contains("\r\ncontent-length: 0\r\n"),
            "{method}: {head}"
        );
        assert!(!head.contains("content-type"), "{method}: {head}");
    }
    let get = Request::get("/models").unwrap();
    tokio::time::timeout(BOUND, transport.send(get))
        .await
        .expect("the request ends")
        .expect("a 200");
    let head = server.heads.lock().unwrap().pop().expect("a request head");
    assert!(!head.contains("content-length"), "{head}");
}

/// A 304 answers a conditional request: an empty success, not a redirect's error.
#[tokio::test]
async fn not_modified_is_an_answer_with_no_body() {
    let server = Raw::start(b"HTTP/1.1 304 Not Modified\r\netag: \"v1\"\r\n\r\n".to_vec()).await;
    let request = Request::get("/models").unwrap().with_header(
        http::header::IF_NONE_MATCH,
        http::HeaderValue::from_static("\"v1\""),
    );
    let response = tokio::time::timeout(BOUND, transport(&server.url).send(request))
        .await
        .expect("the request ends")
        .expect("a 304 is an answer");
    assert_eq!(response.status(), http::StatusCode::NOT_MODIFIED);
    assert_eq!(response.headers()["etag"], "\"v1\"");
    assert!(response.bytes().await.unwrap().is_empty());
}

/// A 101 to a request that asked for no upgrade is the server's error, not an empty answer.
#[tokio::test]
async fn switching_protocols_unasked_is_an_error() {
    let server = Raw::start(
        b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n"
            .to_vec(),
    )
    .await;
    let error = tokio::time::timeout(BOUND, transport(&server.url).send(chat()))
        .await
        .expect("the request ends")
        .expect_err("a 101 is no answer");
    assert_eq!(
        error.status(),
        Some(http::StatusCode::SWITCHING_PROTOCOLS),
        "{error}"
    );
}
