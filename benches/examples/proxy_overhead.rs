//! Client CPU per request and requests in flight, direct against through a forward proxy
//! (tinyproxy, `CONNECT` tunnels), to an HTTPS mock with 20 ms latency in a process of its
//! own. Run with a release build:
//!
//! ```text
//! cargo run --release -p volley-benches --example proxy_overhead -- [REQUESTS] [CONCURRENCY]
//! ```
//!
//! Loopback only; every phase is bounded by its request count. CPU comes from
//! `/proc/<pid>/stat` (Linux; 10 ms ticks), in flight from the mock's own statistics (the
//! mean of its 100 ms timeline, and the peak).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

use futures_util::StreamExt as _;
use volley_core::Request;
use volley_mock::{MockConfig, MockServer, MockTls};
use volley_testkit::proxy::Tinyproxy;
use volley_testkit::tls::TestPki;
use volley_transport::Transport;

const BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}]}"#;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("server") {
        serve(&args[2], &args[3]);
        return;
    }
    let requests: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let concurrency: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(256);
    let pki = TestPki::new("proxy-bench");
    let dir = pki.dir().to_owned();
    let mut server = Command::new(std::env::current_exe().unwrap())
        .args(["server", dir.join("server.pem").to_str().unwrap()])
        .arg(dir.join("server.key"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().parse().expect("the server prints its port");
    let proxy = Tinyproxy::start(None).expect("tinyproxy is installed");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "{requests} requests at concurrency {concurrency}, HTTPS mock with 20 ms latency, \
         HTTP/1.1 (medians of 3 alternating runs)"
    );
    let mut results: Vec<(&str, Vec<Phase>)> = vec![("direct", vec![]), ("via tinyproxy", vec![])];
    for _ in 0..3 {
        for (name, phases) in &mut results {
            let via = (*name != "direct").then(|| proxy.url());
            let phase = runtime.block_on(phase(&pki, port, via, requests, concurrency, &proxy));
            phases.push(phase);
        }
    }
    println!(
        "{:<14} {:>16} {:>18} {:>14} {:>12} {:>10}",
        "path", "client CPU/req", "tinyproxy CPU/req", "mean in flight", "peak", "req/s"
    );
    for (name, phases) in &results {
        let median = |f: &dyn Fn(&Phase) -> f64| {
            let mut v: Vec<f64> = phases.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        println!(
            "{:<14} {:>13.1} µs {:>15.1} µs {:>14.1} {:>12.0} {:>10.0}",
            name,
            median(&|p| p.client_us),
            median(&|p| p.proxy_us),
            median(&|p| p.mean_in_flight),
            median(&|p| p.peak as f64),
            median(&|p| p.rate),
        );
    }
    drop(server.stdin.take());
    let _ = server.wait();
}

struct Phase {
    client_us: f64,
    proxy_us: f64,
    mean_in_flight: f64,
    peak: u64,
    rate: f64,
}

async fn phase(
    pki: &TestPki,
    port: u16,
    proxy: Option<String>,
    requests: usize,
    concurrency: usize,
    tinyproxy: &Tinyproxy,
) -> Phase {
    let builder = |base: String| {
        let b = Transport::builder()
            .base_url(base)
            .tls_ca_pem(pki.ca_pem.as_bytes())
            .tls_ca_from_env(false);
        match &proxy {
            Some(url) => b.proxy(url),
            None => b.proxy(""),
        }
    };
    let transport = builder(format!("https://127.0.0.1:{port}/v1"))
        .build()
        .unwrap();
    let admin = builder(format!("https://127.0.0.1:{port}"))
        .build()
        .unwrap();
    let send_all = |n: usize| {
        let transport = transport.clone();
        async move {
            let failed = futures_util::stream::iter(0..n)
                .map(|_| transport.send(Request::post("/chat/completions", BODY).unwrap()))
                .buffer_unordered(concurrency)
                .filter(|r| std::future::ready(r.is_err()))
                .count()
                .await;
            assert_eq!(failed, 0, "requests failed");
        }
    };
    // Warm-up: connections (and tunnels) opened, TLS sessions made.
    send_all(concurrency * 2).await;
    admin
        .send(Request::post("/stats/reset", "").unwrap())
        .await
        .unwrap();
    let (client0, proxy0) = (cpu_ticks(std::process::id()), cpu_ticks(tinyproxy.pid()));
    let start = Instant::now();
    send_all(requests).await;
    let elapsed = start.elapsed();
    let (client1, proxy1) = (cpu_ticks(std::process::id()), cpu_ticks(tinyproxy.pid()));
    let stats: serde_json::Value = admin
        .send(Request::get("/stats").unwrap())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let timeline = stats["timeline"].as_array().cloned().unwrap_or_default();
    // The full buckets while the load ran (the last one may be partly idle).
    let busy: Vec<f64> = timeline
        .iter()
        .filter_map(|b| b["in_flight"].as_f64())
        .collect();
    let busy = &busy[..busy.len().saturating_sub(1)];
    let tick_us = 1_000_000.0 / 100.0;
    Phase {
        client_us: (client1 - client0) as f64 * tick_us / requests as f64,
        proxy_us: (proxy1 - proxy0) as f64 * tick_us / requests as f64,
        mean_in_flight: busy.iter().sum::<f64>() / busy.len().max(1) as f64,
        peak: stats["peak_in_flight"].as_u64().unwrap_or(0),
        rate: requests as f64 / elapsed.as_secs_f64(),
    }
}

/// User plus system CPU time of a process, in clock ticks (100 per second on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces, inside parentheses).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

/// The HTTPS mock, in a process of its own so its CPU is not the client's: prints its port,
/// serves until its standard input closes.
fn serve(cert: &str, key: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let tls = MockTls::new(
            &std::fs::read(cert).unwrap(),
            &std::fs::read(key).unwrap(),
            None,
        )
        .unwrap();
        let server = MockServer::start_tls(
            MockConfig {
                latency: "20ms".parse().unwrap(),
                ..MockConfig::default()
            },
            tls,
        )
        .await
        .unwrap();
        println!("{}", server.addr().port());
        std::io::stdout().flush().unwrap();
        tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
        })
        .await
        .unwrap();
        server.shutdown().await;
    });
}
