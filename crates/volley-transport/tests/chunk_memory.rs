//! A body sent one byte per chunk costs about its bytes, not a slice (and a piece of hyper's
//! read buffer) per byte: measured by a counting allocator, the only test of its binary so
//! that nothing else allocates beside it. When each chunk was kept until the end, 512 KiB so
//! sent cost more than 16 MiB of heap; a hostile server could make a 64 MiB body cost
//! gigabytes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tower::ServiceExt;
use volley_core::Request;
use volley_transport::Transport;

/// The system allocator, counting the bytes in use and their high-water mark.
struct Counting;

static IN_USE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `System::alloc`, with the caller's layout.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let now = IN_USE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) };
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const LEN: usize = 512 << 10;

#[tokio::test]
async fn a_body_sent_one_byte_per_chunk_costs_about_its_bytes() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    // The whole answer made before the count starts: `"`, LEN - 2 `a`s, `"`, a byte a chunk.
    let mut answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                       transfer-encoding: chunked\r\nconnection: close\r\n\r\n1\r\n\"\r\n"
        .to_vec();
    answer.extend(b"1\r\na\r\n".repeat(LEN - 2));
    answer.extend(b"1\r\n\"\r\n0\r\n\r\n");
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        volley_testkit::raw::read_request_head(&mut socket).await;
        socket.write_all(&answer).await.unwrap();
        // Handed back, not freed here: its freeing would hide as much of the count.
        answer
    });
    let transport = Transport::builder().base_url(&url).build().unwrap();
    let request = Request::post("/chat/completions", "{}").unwrap();
    PEAK.store(IN_USE.load(Ordering::Relaxed), Ordering::Relaxed);
    let before = IN_USE.load(Ordering::Relaxed);
    let body = transport
        .oneshot(request)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let peak = PEAK.load(Ordering::Relaxed) - before;
    drop(server.await.unwrap());
    assert_eq!(body.len(), LEN);
    assert!(body.starts_with(b"\"aa") && body.ends_with(b"aa\""));
    println!(
        "{LEN} bytes in one-byte chunks: heap peak {} KiB",
        peak >> 10
    );
    assert!(
        peak < 4 * LEN,
        "heap peak {} KiB for a body of {} KiB",
        peak >> 10,
        LEN >> 10
    );
}
