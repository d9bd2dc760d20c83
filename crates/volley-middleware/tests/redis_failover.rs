//! A failover behind one name: the connection to a primary that a failover made a replica
//! answers `READONLY` to every write; the Redis connection replaces itself, and writes reach
//! the new primary. Two `redis-server`s of the test's own, and a TCP forwarder in front of
//! them standing for the name (a managed Redis's primary endpoint, a DNS name): it sends each
//! new connection where it points, and keeps the old ones where they went.
//!
//! Ignored unless asked for (`-- --include-ignored`, as in CI), as every Redis test.

#![cfg(feature = "redis")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use volley_middleware::redis::{RedisConnection, RedisOptions};
use volley_testkit::redis::RedisServer;
use volley_testkit::require_redis;

/// A forwarder on a loopback port: each connection goes to the port `target` holds when it
/// comes, for as long as it lasts.
async fn forwarder(target: Arc<AtomicU16>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let to = target.load(Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", to)).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    port
}

async fn set(connection: &mut RedisConnection, value: u32) -> redis::RedisResult<()> {
    redis::cmd("SET")
        .arg("failover:key")
        .arg(value)
        .query_async(connection)
        .await
}

#[ignore = "needs Redis: REDIS_URL"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_answered_readonly_after_a_failover_reaches_the_new_primary() {
    let _url = require_redis!();
    let old = RedisServer::start(None);
    let new = RedisServer::start(None);
    let target = Arc::new(AtomicU16::new(old.port()));
    let front = forwarder(Arc::clone(&target)).await;
    let options = RedisOptions::new(format!("redis://127.0.0.1:{front}"));
    let mut connection = RedisConnection::connect(&options).await.unwrap();
    set(&mut connection, 1).await.unwrap();

    // The failover: the old primary becomes a replica of the new one, and the name points at
    // the new one. The connection made before still reaches the old.
    let admin = redis::Client::open(old.url()).unwrap();
    let mut admin = admin.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(new.port())
        .query_async(&mut admin)
        .await
        .unwrap();
    target.store(new.port(), Ordering::SeqCst);
    let err = set(&mut connection, 2).await.unwrap_err();
    assert_eq!(err.code(), Some("READONLY"), "{err}");

    // Then writes go through again, to the new primary.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 3;
    loop {
        match set(&mut connection, n).await {
            Ok(()) => break,
            Err(e) if e.code() == Some("READONLY") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("still refused after 10 s: {e}"),
        }
        n += 1;
    }
    let direct = redis::Client::open(new.url()).unwrap();
    let mut direct = direct.get_multiplexed_async_connection().await.unwrap();
    let stored: u32 = redis::cmd("GET")
        .arg("failover:key")
        .query_async(&mut direct)
        .await
        .unwrap();
    assert_eq!(stored, n, "written to the new primary");
}
