//! Collector throughput with durability on (`cargo bench --bench collector`).
//!
//! Starts the release `panorama serve` on an empty temporary lake (the
//! write-ahead log fsyncs every acknowledged request, the flusher writes
//! Parquet every 5 s as by default), then C concurrent clients send batches
//! of 100 realistic Segment messages (unique `messageId`s, ~700 bytes each)
//! for D seconds. Reports acknowledged events/s and p50/p99/max latency,
//! checks that every acknowledged event reached `raw.events`, and measures
//! the same load against a peer in the same run: a bare axum endpoint that
//! reads the body and answers 200 (no parsing, no log, no lake), the
//! ceiling of HTTP on this machine.
//!
//! Settings: `COLLECTOR_BENCH_SECONDS` (default 20), `COLLECTOR_BENCH_CLIENTS`
//! (default 32).

#![allow(clippy::unwrap_used, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BATCH: usize = 100;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --all-targets` builds and starts every bench; this one
        // is a load test of the release build and only runs under `cargo bench`.
        println!("collector bench: run with `cargo bench --bench collector`");
        return;
    }
    let seconds: u64 = env_or("COLLECTOR_BENCH_SECONDS", 20);
    let clients: usize = env_or("COLLECTOR_BENCH_CLIENTS", 32);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let mut server = start_panorama(dir.path());
        let (addr, pg_port) = (server.1, server.2);
        println!(
            "collector bench: {clients} clients, batches of {BATCH}, {seconds} s each, {} (2 cores here)",
            chrono::Utc::now().format("%Y-%m-%d")
        );
        let durable = load(addr, clients, Duration::from_secs(seconds)).await;
        print("panorama collector (WAL + fsync)", &durable);

        // Everything acknowledged must reach the lake.
        let stored = wait_for_lake(pg_port, durable.events).await;
        println!(
            "  acknowledged {} events; {} in raw.events after the flush",
            durable.events, stored
        );
        let _ = server.0.kill();
        let _ = server.0.wait();

        let peer = start_peer().await;
        let ceiling = load(peer, clients, Duration::from_secs(seconds)).await;
        print("peer: bare axum endpoint (no parse, no log)", &ceiling);
        println!(
            "ratio: collector / bare endpoint = {:.2} (throughput)",
            durable.events as f64 / durable.secs / (ceiling.events as f64 / ceiling.secs)
        );
        assert_eq!(stored, durable.events, "acknowledged events missing from the lake");
    });
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Run {
    events: u64,
    secs: f64,
    /// Request latencies in microseconds, sorted.
    latencies: Vec<u64>,
    errors: u64,
}

fn print(name: &str, run: &Run) {
    let pct = |p: f64| {
        let i =
            ((run.latencies.len() as f64 * p) as usize).min(run.latencies.len().saturating_sub(1));
        run.latencies.get(i).copied().unwrap_or(0) as f64 / 1000.0
    };
    println!(
        "{name:<45} {:>9.0} events/s  p50 {:>6.1} ms  p99 {:>6.1} ms  max {:>7.1} ms  ({} requests, {} errors)",
        run.events as f64 / run.secs,
        pct(0.50),
        pct(0.99),
        run.latencies.last().copied().unwrap_or(0) as f64 / 1000.0,
        run.latencies.len(),
        run.errors
    );
}

/// `panorama serve` (release) on an empty lake under `dir`: the process,
/// the collector's address and the Postgres port.
fn start_panorama(dir: &std::path::Path) -> (std::process::Child, SocketAddr, u16) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_panorama"))
        .args([
            "serve",
            "--no-seed",
            "--listen",
            "127.0.0.1:0",
            "--collect-listen",
            "127.0.0.1:0",
        ])
        .arg("--lake")
        .arg(dir.join("lake"))
        .arg("--wal-dir")
        .arg(dir.join("wal"))
        .env("RUST_LOG", "warn,panorama=info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("panorama starts");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(rest) = line.split("ready: psql -h 127.0.0.1 -p ").nth(1) {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
            }
            if let Some(rest) = line.split("HTTP API at http://").nth(1) {
                let _ = tx.send(rest.split('/').next().unwrap_or("").to_string());
            }
        }
    });
    let next = || {
        rx.recv_timeout(Duration::from_secs(60))
            .expect("panorama became ready")
    };
    let pg_port = next().parse().expect("a port");
    let addr = next().parse().expect("an address");
    (child, addr, pg_port)
}

/// The peer: an axum endpoint that reads the body and answers 200.
async fn start_peer() -> SocketAddr {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/v1/batch",
        post(|body: axum::body::Bytes| async move {
            std::hint::black_box(body.len());
            "{\"success\":true}"
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// `clients` tasks sending batches for `duration`.
async fn load(addr: SocketAddr, clients: usize, duration: Duration) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let url = format!("http://{addr}/v1/batch");
                let (mut latencies, mut events, mut errors) = (Vec::new(), 0u64, 0u64);
                let mut round = 0u64;
                // One template per client; each request only changes the ids,
                // so the load generator spends little of the shared CPU.
                let template = batch(client, 0);
                while !stop.load(Ordering::Relaxed) {
                    let body = template.replace("ROUND", &round.to_string());
                    round += 1;
                    let sent = Instant::now();
                    let answer = http
                        .post(&url)
                        .basic_auth("bench", None::<&str>)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await;
                    match answer {
                        Ok(r) if r.status() == 200 => {
                            let _ = r.bytes().await;
                            latencies.push(sent.elapsed().as_micros() as u64);
                            events += BATCH as u64;
                        }
                        _ => errors += 1,
                    }
                }
                (latencies, events, errors)
            })
        })
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut run = Run {
        events: 0,
        secs: 0.0,
        latencies: Vec::new(),
        errors: 0,
    };
    for task in tasks {
        let (latencies, events, errors) = task.await.expect("a client");
        run.latencies.extend(latencies);
        run.events += events;
        run.errors += errors;
    }
    run.secs = started.elapsed().as_secs_f64();
    run.latencies.sort_unstable();
    run
}

/// 100 realistic messages: product views, cart adds, orders, pages and
/// identifies of one visitor, as analytics.js and the server SDKs send them.
fn batch(client: usize, round: u64) -> String {
    let user = format!("user-{client}-{}", round % 1000);
    let anon = format!("anon-{client}-{}", round % 1000);
    let messages: Vec<Value> = (0..BATCH)
        .map(|i| {
            let id = format!("bench-{client}-ROUND-{i}");
            let context = json!({
                "library": {"name": "analytics.js", "version": "next-1.70.0"},
                "ip": "203.0.113.7",
                "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
                "page": {"path": "/products/p-123", "url": "https://shop.example/products/p-123", "referrer": "https://www.google.com/"},
                "locale": "fr-FR"
            });
            match i % 10 {
                0 => json!({"type": "page", "name": "Product", "anonymousId": anon, "messageId": id,
                            "timestamp": "2026-11-20T10:00:00.000Z", "context": context,
                            "properties": {"path": "/products/p-123", "title": "Linen shirt"}}),
                1 => json!({"type": "identify", "userId": user, "anonymousId": anon, "messageId": id,
                            "timestamp": "2026-11-20T10:00:01.000Z", "context": context,
                            "traits": {"email": format!("{user}@example.com"), "first_name": "Jane", "plan": "gold"}}),
                9 => json!({"type": "track", "event": "Order Completed", "userId": user, "anonymousId": anon,
                            "messageId": id, "timestamp": "2026-11-20T10:05:00.000Z", "context": context,
                            "properties": {"order_id": format!("o-{client}-{round}"), "revenue": 89.90, "currency": "EUR",
                                           "products": [{"product_id": "p-123", "price": 44.95, "quantity": 2}]}}),
                _ => json!({"type": "track", "event": if i % 2 == 0 { "Product Viewed" } else { "Product Added" },
                            "userId": user, "anonymousId": anon, "messageId": id,
                            "timestamp": "2026-11-20T10:02:00.000Z", "context": context,
                            "properties": {"product_id": "p-123", "name": "Linen shirt", "price": 44.95,
                                           "category": "shirts", "currency": "EUR"}}),
            }
        })
        .collect();
    json!({"batch": messages, "sentAt": "2026-11-20T10:05:01.000Z"}).to_string()
}

/// Rows in raw.events once the collector has flushed (waits up to 60 s),
/// asked through the server's own Postgres port.
async fn wait_for_lake(pg_port: u16, expected: u64) -> u64 {
    let (client, connection) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={pg_port} user=panorama dbname=panorama"),
        tokio_postgres::NoTls,
    )
    .await
    .expect("a Postgres connection");
    tokio::spawn(connection);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = client
            .query_one("SELECT count(*) FROM raw.events", &[])
            .await
            .map(|row| row.get::<_, i64>(0) as u64)
            .unwrap_or(0);
        if rows >= expected || Instant::now() > deadline {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
