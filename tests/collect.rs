//! The Segment-compatible HTTP collector: the message shapes real SDKs send
//! (analytics-python, analytics.js, analytics-node, the mobile SDKs,
//! RudderStack), every bad-input case with its status and JSON error,
//! refused messages kept in `rejects/`, dedup, rate and disk limits with
//! `Retry-After`, `kill -9` during a load (acknowledged = stored, once), and
//! an object-store outage with nothing lost.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use panorama::collect::{Collector, CollectorConfig};
use panorama::lake::Lake;
use serde_json::{Value, json};

use crate::support::*;

const WEB_KEY: &str = "wk_web_123";
const IOS_KEY: &str = "wk_ios_456";

/// A collector over `lake` that flushes only when asked (unless changed).
async fn collector(lake: &Lake, dir: &Path, tweak: impl FnOnce(&mut CollectorConfig)) -> Collector {
    let mut config = CollectorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        wal_dir: dir.join("wal"),
        flush_interval_ms: 3_600_000,
        write_keys: [("web", WEB_KEY), ("ios", IOS_KEY)]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
        ..CollectorConfig::default()
    };
    tweak(&mut config);
    Collector::start(lake.clone(), config).await.unwrap()
}

struct Answer {
    status: u16,
    body: Value,
    retry_after: Option<u64>,
}

/// POST `body` to `path` with `key` as the Basic user name (if any).
async fn post(
    addr: SocketAddr,
    path: &str,
    key: Option<&str>,
    body: Vec<u8>,
    gzip: bool,
) -> Answer {
    let mut request = reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .header("content-type", "application/json");
    if let Some(key) = key {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{key}:"));
        request = request.header("authorization", format!("Basic {basic}"));
    }
    let body = if gzip {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&body).unwrap();
        request = request.header("content-encoding", "gzip");
        gz.finish().unwrap()
    } else {
        body
    };
    let response = request.body(body).send().await.unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    Answer {
        status,
        body,
        retry_after,
    }
}

async fn post_json(addr: SocketAddr, path: &str, key: Option<&str>, body: Value) -> Answer {
    post(addr, path, key, body.to_string().into_bytes(), false).await
}

/// A realistic track call from a server SDK.
fn track(id: &str, user: &str) -> Value {
    json!({
        "type": "track", "event": "Product Viewed", "userId": user, "messageId": id,
        "timestamp": "2026-03-01T12:00:00.123456+00:00",
        "properties": {"product_id": "P-1", "price": 19.99, "currency": "EUR"},
        "context": {"library": {"name": "analytics-python", "version": "2.3.3"}, "ip": "10.0.0.1"},
        "integrations": {}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shapes_sdks_send_land_in_raw_events() {
    let (dir, lake) = temp_lake();
    let c = collector(&lake, dir.path(), |_| {}).await;
    let addr = c.addr();

    // analytics-python / analytics-node: a batch with a batch-level sentAt
    // (the client clock is 2 minutes slow, so every time moves 2 minutes on).
    let sent_at = (chrono::Utc::now() - chrono::Duration::minutes(2)).to_rfc3339();
    let python = json!({
        "batch": [
            track("py-1", "u-1"),
            {"type": "identify", "userId": "u-1", "messageId": "py-2",
             "traits": {"email": "Jane@Example.com", "first_name": "Jane"},
             "timestamp": "2026-03-01T12:00:01+00:00",
             "context": {"library": {"name": "analytics-python", "version": "2.3.3"}}},
            {"type": "alias", "previousId": "anon-9", "userId": "u-1", "messageId": "py-3"},
            {"type": "group", "userId": "u-1", "groupId": "acme", "traits": {"plan": "pro"},
             "messageId": "py-4"},
        ],
        "sentAt": sent_at,
    });
    let a = post_json(addr, "/v1/batch", Some(WEB_KEY), python).await;
    let phone = |ago: i64| {
        (chrono::Utc::now() - chrono::Duration::hours(1) - chrono::Duration::seconds(ago))
            .to_rfc3339()
    };
    let browser_now = chrono::Utc::now().to_rfc3339();
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["accepted"], 4);

    // analytics.js: one-letter path, writeKey in the body, text/plain, no
    // Authorization header (browsers avoid the CORS preflight this way).
    let ajs = json!({
        "type": "page", "name": "Pricing", "anonymousId": "anon-9", "userId": null,
        "messageId": "ajs-next-1",
        "properties": {"path": "/pricing", "url": "https://shop.example/pricing"},
        "context": {"page": {"referrer": ""}, "userAgent": "Mozilla/5.0",
                    "library": {"name": "analytics.js", "version": "next-1.70.0"}},
        "timestamp": browser_now, "integrations": {"Segment.io": true},
        "writeKey": WEB_KEY, "sentAt": browser_now,
        "_metadata": {"bundled": ["Segment.io"], "unbundled": []}
    });
    let a = reqwest::Client::new()
        .post(format!("http://{addr}/v1/p"))
        .header("content-type", "text/plain")
        .body(ajs.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(a.status(), 200);
    assert_eq!(a.headers()["access-control-allow-origin"], "*");

    // Mobile SDKs (analytics-swift / -kotlin): gzip batch to /v1/b with
    // originalTimestamp; RudderStack sends context.traits and sentAt per
    // message.
    let mobile = json!({
        "batch": [
            {"type": "screen", "name": "Home", "anonymousId": "dev-1", "messageId": "ios-1",
             "originalTimestamp": phone(30), "timestamp": phone(30),
             "context": {"device": {"model": "iPhone15,2"}, "os": {"name": "iOS", "version": "17.4"},
                         "library": {"name": "analytics-swift", "version": "1.5.0"}}},
            {"type": "track", "event": "Order Completed", "anonymousId": "dev-1", "userId": 1001,
             "messageId": "rudder-1", "channel": "mobile",
             "originalTimestamp": phone(0), "sentAt": phone(0),
             "context": {"traits": {"email": "sam@example.com"},
                         "library": {"name": "com.rudderstack.android.sdk.core"}},
             "properties": {"revenue": 42.0}},
        ],
        "sentAt": phone(0)
    });
    let a = post(
        addr,
        "/v1/b",
        Some(IOS_KEY),
        mobile.to_string().into_bytes(),
        true,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);

    // Every single-message endpoint.
    for (path, body) in [
        ("/v1/track", track("single-track", "u-2")),
        (
            "/v1/identify",
            json!({"userId": "u-2", "traits": {"email": "u2@example.com"}, "messageId": "single-identify"}),
        ),
        (
            "/v1/page",
            json!({"anonymousId": "a-2", "name": "Home", "messageId": "single-page"}),
        ),
        (
            "/v1/screen",
            json!({"anonymousId": "a-2", "name": "Cart", "messageId": "single-screen"}),
        ),
        (
            "/v1/group",
            json!({"userId": "u-2", "groupId": "g-1", "messageId": "single-group"}),
        ),
        (
            "/v1/alias",
            json!({"userId": "u-2", "previousId": "a-2", "messageId": "single-alias"}),
        ),
    ] {
        let a = post_json(addr, path, Some(WEB_KEY), body).await;
        assert_eq!(
            (a.status, &a.body["success"]),
            (200, &json!(true)),
            "{path}: {}",
            a.body
        );
    }
    // /v1/import takes a batch too.
    let a = post_json(
        addr,
        "/v1/import",
        Some(WEB_KEY),
        json!({"batch": [track("import-1", "u-3")]}),
    )
    .await;
    assert_eq!(a.body["accepted"], 1);

    let flushed = c.flush().await.unwrap();
    assert_eq!(flushed.events, 14);
    let rows = sql_lines(
        &lake,
        "SELECT message_id, type, coalesce(event, name, ''), coalesce(user_id, ''), \
         coalesce(anonymous_id, ''), coalesce(previous_id, ''), coalesce(group_id, ''), \
         coalesce(email, '') FROM raw.events ORDER BY message_id",
    )
    .await;
    assert_eq!(
        rows,
        [
            "ajs-next-1 | page | Pricing | anon-9",
            "import-1 | track | Product Viewed | u-3",
            "ios-1 | screen | Home | dev-1",
            "py-1 | track | Product Viewed | u-1",
            "py-2 | identify | u-1 | Jane@Example.com",
            "py-3 | alias | u-1 | anon-9",
            "py-4 | group | u-1 | acme",
            "rudder-1 | track | Order Completed | 1001 | dev-1 | sam@example.com",
            "single-alias | alias | u-2 | a-2",
            "single-group | group | u-2 | g-1",
            "single-identify | identify | u-2 | u2@example.com",
            "single-page | page | Home | a-2",
            "single-screen | screen | Cart | a-2",
            "single-track | track | Product Viewed | u-2",
        ]
    );
    // Clock skew: py-1 was stamped 12:00:00.123456 by a clock 2 minutes
    // slow, so it happened about 12:02:00.12 by ours.
    let rows = sql_lines(
        &lake,
        "SELECT CAST(timestamp AS VARCHAR) FROM raw.events WHERE message_id = 'py-1'",
    )
    .await;
    assert!(rows[0].starts_with("2026-03-01T12:02:0"), "{rows:?}");
    // The phone's clock is an hour behind; ios-1 was made 30 s before it
    // was sent; rudder-1 and ajs-next-1 as they were sent.
    let rows = sql_lines(
        &lake,
        "SELECT message_id, CAST(round(date_part('epoch', received_at) - \
         date_part('epoch', timestamp)) AS BIGINT) FROM raw.events \
         WHERE message_id IN ('ios-1', 'rudder-1', 'ajs-next-1') ORDER BY 1",
    )
    .await;
    assert_eq!(rows, ["ajs-next-1 | 0", "ios-1 | 30", "rudder-1 | 0"]);
    // Properties, context and integrations are kept as JSON.
    let rows = sql_lines(
        &lake,
        "SELECT json_get_str(properties, 'product_id'), json_get_str(context, 'library.name'), \
         CAST(strpos(context, '\"integrations\":{') > 0 AS VARCHAR) FROM raw.events \
         WHERE message_id IN ('py-1', 'ajs-next-1') ORDER BY message_id",
    )
    .await;
    assert_eq!(
        rows,
        ["analytics.js | true", "P-1 | analytics-python | true"]
    );
    // The flush is in system.ingests.
    let rows = sql_lines(
        &lake,
        "SELECT table_name, rows_landed, rows_rejected FROM system.ingests",
    )
    .await;
    assert_eq!(rows, ["events | 14 | 0"]);
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_a_json_error_and_bad_messages_are_kept_in_rejects() {
    let (dir, lake) = temp_lake();
    let c = collector(&lake, dir.path(), |_| {}).await;
    let addr = c.addr();
    let good = || track("m-good", "u-1");

    let a = post(
        addr,
        "/v1/track",
        Some(WEB_KEY),
        b"{\"type\": \"track\",".to_vec(),
        false,
    )
    .await;
    assert_eq!(a.status, 400);
    assert!(
        a.body["error"]
            .as_str()
            .unwrap()
            .starts_with("malformed JSON: EOF while parsing"),
        "{}",
        a.body
    );

    let a = post_json(addr, "/v1/track", Some("wrong"), good()).await;
    assert_eq!(
        (a.status, a.body["error"].as_str()),
        (401, Some("unknown write key"))
    );
    let a = post_json(addr, "/v1/track", None, good()).await;
    assert_eq!(a.status, 401);
    assert!(
        a.body["error"]
            .as_str()
            .unwrap()
            .starts_with("missing write key")
    );

    let a = post_json(addr, "/v1/click", Some(WEB_KEY), good()).await;
    assert_eq!(a.status, 404);
    assert!(
        a.body["error"]
            .as_str()
            .unwrap()
            .contains("unknown endpoint /v1/click")
    );

    // Over the limits: 32 KB for one message, 500 KB or 2,500 per batch.
    let big = json!({"type": "track", "userId": "u", "event": "e", "properties": {"blob": "x".repeat(40_000)}});
    let a = post_json(addr, "/v1/track", Some(WEB_KEY), big.clone()).await;
    assert_eq!(a.status, 413);
    assert!(
        a.body["error"]
            .as_str()
            .unwrap()
            .contains("limit here is 32768 bytes"),
        "{}",
        a.body
    );
    let huge: Vec<Value> = (0..14).map(|_| big.clone()).collect();
    let a = post_json(addr, "/v1/batch", Some(WEB_KEY), json!({"batch": huge})).await;
    assert_eq!(a.status, 413);
    let many: Vec<Value> = (0..2_501)
        .map(|i| json!({"type": "page", "userId": format!("{i}")}))
        .collect();
    let a = post_json(addr, "/v1/batch", Some(WEB_KEY), json!({"batch": many})).await;
    assert_eq!(a.status, 400);
    assert!(
        a.body["error"]
            .as_str()
            .unwrap()
            .contains("2501 messages; the limit is 2500")
    );
    let a = post_json(addr, "/v1/batch", Some(WEB_KEY), json!({"messages": []})).await;
    assert_eq!(a.status, 400);

    // A single bad message: 400, and kept in rejects.
    let a = post_json(
        addr,
        "/v1/identify",
        Some(WEB_KEY),
        json!({"traits": {"email": "x@y.z"}, "messageId": "no-ids"}),
    )
    .await;
    assert_eq!(a.status, 400);
    assert_eq!(a.body["field"], "userId");

    // A mixed batch: the good messages are kept, each bad one is reported.
    let batch = json!({"batch": [
        good(),
        {"type": "track", "userId": "u-1", "messageId": "no-event"},
        {"type": "click", "userId": "u-1", "messageId": "bad-type"},
        {"type": "page", "userId": "u-1", "messageId": "x".repeat(120)},
        {"type": "page", "anonymousId": "a-1", "messageId": "bad-time", "timestamp": "last tuesday"},
        {"type": "page", "anonymousId": "a-1", "messageId": "big", "properties": {"blob": "y".repeat(33_000)}},
        "not an object",
        {"type": "page", "anonymousId": "a-1", "messageId": "m-good-2"},
    ]});
    let a = post_json(addr, "/v1/batch", Some(WEB_KEY), batch).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["accepted"], 2);
    let rejected: Vec<String> = a.body["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{} {} {}",
                r["index"],
                r["field"].as_str().unwrap(),
                r["reason"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(rejected.len(), 6, "{rejected:#?}");
    assert_eq!(rejected[0], "1 event is required for track");
    assert!(rejected[1].starts_with("2 type unknown type 'click'"));
    assert!(rejected[2].starts_with("3 messageId is 120 characters"));
    assert!(rejected[3].starts_with("4 timestamp not an ISO 8601 time"));
    assert!(rejected[4].starts_with("5 message is 330"));
    assert_eq!(rejected[5], "6 message is not a JSON object");

    // A batch where every message is bad is a 400, still kept in rejects.
    let a = post_json(
        addr,
        "/v1/batch",
        Some(WEB_KEY),
        json!({"batch": [{"type": "page"}]}),
    )
    .await;
    assert_eq!((a.status, a.body["accepted"].as_u64()), (400, Some(0)));

    c.flush().await.unwrap();
    assert_eq!(
        sql_lines(&lake, "SELECT message_id FROM raw.events ORDER BY 1").await,
        ["m-good", "m-good-2"]
    );
    let rejects = sql_lines(
        &lake,
        "SELECT source, line, field, substr(raw, 1, 20) FROM system.rejects \
         WHERE table_name = 'events' ORDER BY source, line",
    )
    .await;
    assert_eq!(rejects.len(), 8, "{rejects:#?}");
    assert_eq!(
        rejects[0],
        "POST /v1/batch (web) | 0 | userId | {\"type\":\"page\"}"
    );
    assert!(
        rejects[2].starts_with("POST /v1/batch (web) | 2 | type | {"),
        "{rejects:#?}"
    );
    assert_eq!(
        rejects[7],
        "POST /v1/identify (web) | 0 | userId | {\"messageId\":\"no-ids"
    );
    // The server kept serving throughout.
    let a = post_json(addr, "/v1/track", Some(WEB_KEY), track("after", "u-9")).await;
    assert_eq!(a.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_message_ids_are_stored_once() {
    let (dir, lake) = temp_lake();
    let c = collector(&lake, dir.path(), |_| {}).await;
    let addr = c.addr();
    let batch = json!({"batch": [track("dup-1", "u"), track("dup-2", "u"), track("dup-1", "u")]});
    let a = post_json(addr, "/v1/batch", Some(WEB_KEY), batch.clone()).await;
    assert_eq!(
        (a.body["accepted"].as_u64(), a.body["duplicates"].as_u64()),
        (Some(2), Some(1))
    );
    c.flush().await.unwrap();
    // A retry after the flush (an SDK that never saw the 200) is a no-op.
    let a = post_json(addr, "/v1/batch", Some(IOS_KEY), batch).await;
    assert_eq!(
        (
            a.status,
            a.body["accepted"].as_u64(),
            a.body["duplicates"].as_u64()
        ),
        (200, Some(0), Some(3))
    );
    c.flush().await.unwrap();
    assert_eq!(
        sql_lines(
            &lake,
            "SELECT message_id, count(*) FROM raw.events GROUP BY 1 ORDER BY 1"
        )
        .await,
        ["dup-1 | 1", "dup-2 | 1"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_answers_429_with_retry_after() {
    let (dir, lake) = temp_lake();
    let c = collector(&lake, dir.path(), |c| c.rate_limit_per_second = 10).await;
    let batch = |n: usize, from: usize| {
        let msgs: Vec<Value> = (from..from + n)
            .map(|i| track(&format!("r-{i}"), "u"))
            .collect();
        json!({"batch": msgs})
    };
    // The allowance holds ten seconds' worth (100) for bursts.
    let a = post_json(c.addr(), "/v1/batch", Some(WEB_KEY), batch(100, 0)).await;
    assert_eq!(a.status, 200);
    let a = post_json(c.addr(), "/v1/batch", Some(WEB_KEY), batch(50, 100)).await;
    assert_eq!(a.status, 429);
    assert!(
        a.retry_after.unwrap() >= 4,
        "50 messages at 10/s: {:?}",
        a.retry_after
    );
    assert!(
        a.body["error"]
            .as_str()
            .unwrap()
            .contains("over its limit of 10 messages per second")
    );
    // Another source has its own allowance.
    let a = post_json(c.addr(), "/v1/batch", Some(IOS_KEY), batch(50, 200)).await;
    assert_eq!(a.status, 200);
    c.flush().await.unwrap();
    assert_eq!(
        sql_lines(&lake, "SELECT count(*) FROM raw.events").await,
        ["150"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_lake_fills_the_log_to_its_budget_then_503() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on this port: every flush fails.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let lake =
        Lake::open_with_options("s3://nowhere/lake", &crate::s3::s3_options(closed)).unwrap();
    let c = collector(&lake, dir.path(), |c| {
        c.disk_budget_mb = 1;
        c.flush_interval_ms = 50;
    })
    .await;
    let mut accepted = 0;
    let mut refused = None;
    for round in 0..100 {
        let msgs: Vec<Value> = (0..100)
            .map(|i| {
                let mut t = track(&format!("o-{round}-{i}"), "u");
                t["properties"]["padding"] = json!("z".repeat(300));
                t
            })
            .collect();
        let a = post_json(c.addr(), "/v1/batch", Some(WEB_KEY), json!({"batch": msgs})).await;
        match a.status {
            200 => accepted += 100,
            503 => {
                refused = Some(a);
                break;
            }
            other => panic!("unexpected {other}: {}", a.body),
        }
    }
    let a = refused.expect("the log reached its budget");
    assert!(
        accepted >= 1_000,
        "a megabyte holds at least 1,000 messages: {accepted}"
    );
    assert!(a.retry_after.is_some());
    assert!(
        a.body["error"]
            .as_str()
            .unwrap()
            .contains("disk budget (1 MB)"),
        "{}",
        a.body
    );
    // Everything acknowledged is still in the log, for when the lake returns.
    let log: u64 = std::fs::read_dir(dir.path().join("wal"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(log > 900_000, "{log} bytes in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_while_the_object_store_is_down() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("bucket")).unwrap();
    let mut s3 = crate::s3::S3Server::start(root.path()).await;
    let lake =
        Lake::open_with_options("s3://bucket/lake", &crate::s3::s3_options(s3.addr)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let c = collector(&lake, dir.path(), |c| c.flush_interval_ms = 200).await;
    let send = |round: usize| {
        let msgs: Vec<Value> = (0..50)
            .map(|i| track(&format!("s3-{round}-{i}"), "u"))
            .collect();
        post_json(c.addr(), "/v1/batch", Some(WEB_KEY), json!({"batch": msgs}))
    };
    assert_eq!(send(0).await.status, 200);
    wait_for_events(&lake, 50).await;

    s3.stop().await;
    for round in 1..=4 {
        assert_eq!(
            send(round).await.status,
            200,
            "accepted while the lake is down"
        );
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    s3.restart().await;
    wait_for_events(&lake, 250).await;
    assert_eq!(
        sql_lines(
            &lake,
            "SELECT count(DISTINCT message_id), count(*) FROM raw.events"
        )
        .await,
        ["250 | 250"]
    );
    c.shutdown().await.unwrap();
}

/// Wait until raw.events holds `n` rows (the flusher runs in the background).
async fn wait_for_events(lake: &Lake, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(150);
    loop {
        let count = sql_lines(lake, "SELECT count(*) FROM raw.events").await;
        if count == [n.to_string()] {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "raw.events has {count:?}, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_load_loses_no_acknowledged_event_and_stores_none_twice() {
    let dir = tempfile::tempdir().unwrap();
    let lake_dir = dir.path().join("lake");
    let wal = dir.path().join("wal");
    let config = dir.path().join("panorama.toml");
    std::fs::write(&config, "[collector]\nflush_interval_ms = 150\n").unwrap();
    let args: Vec<&std::ffi::OsStr> = vec![
        "--config".as_ref(),
        config.as_os_str(),
        "--lake".as_ref(),
        lake_dir.as_os_str(),
        "serve".as_ref(),
        "--no-seed".as_ref(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--collect-listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--wal-dir".as_ref(),
        wal.as_os_str(),
    ];
    let mut served = Served::start(&args).await;
    let addr = served.collector.unwrap();
    // Four clients send batches of 50 until the server dies under them.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let clients: Vec<_> = (0..4)
        .map(|client| {
            let acked = acked.clone();
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                for round in 0.. {
                    let msgs: Vec<Value> = (0..50)
                        .map(|i| track(&format!("k-{client}-{round}-{i}"), "u"))
                        .collect();
                    let body = json!({"batch": msgs});
                    let sent = http
                        .post(format!("http://{addr}/v1/batch"))
                        .body(body.to_string())
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status() == 200 => acked.lock().unwrap().push(body),
                        _ => return,
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    served.kill();
    for c in clients {
        c.await.unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(
        acked.len() >= 8,
        "the load ran: {} batches acknowledged",
        acked.len()
    );

    // Restart: the log is replayed into the lake.
    let served = Served::start(&args).await;
    let addr = served.collector.unwrap();
    let lake = Lake::open(lake_dir.to_str().unwrap()).unwrap();
    let ids: Vec<String> = acked
        .iter()
        .flat_map(|b| b["batch"].as_array().unwrap().iter())
        .map(|m| m["messageId"].as_str().unwrap().to_string())
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let stored: std::collections::HashSet<String> =
            sql_lines(&lake, "SELECT message_id FROM raw.events")
                .await
                .into_iter()
                .collect();
        let missing = ids.iter().filter(|id| !stored.contains(*id)).count();
        if missing == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{missing} acknowledged events are missing"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let counts = sql_lines(
        &lake,
        "SELECT count(*) - count(DISTINCT message_id) FROM raw.events",
    )
    .await;
    assert_eq!(counts, ["0"], "no event is stored twice");
    // An SDK retrying a batch it already delivered stores nothing new.
    let a = post_json(addr, "/v1/batch", None, acked[0].clone()).await;
    assert_eq!((a.status, a.body["duplicates"].as_u64()), (200, Some(50)));
    drop(served);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collected_events_join_profiles_at_the_next_incremental_refresh() {
    use panorama::identity::{self, IdentityConfig};
    let (dir, lake) = temp_lake();
    let c = collector(&lake, dir.path(), |c| c.flush_interval_ms = 300).await;
    let refresh = || async {
        identity::refresh(
            &lake,
            &IdentityConfig::default(),
            identity::Mode::Incremental,
            chrono::Utc::now(),
            |_| {},
        )
        .await
        .unwrap()
    };
    // A visitor browses, then signs up on another device.
    let now = chrono::Utc::now().to_rfc3339();
    let browse = json!({"batch": [
        {"type": "page", "anonymousId": "cookie-1", "name": "Home", "messageId": "f-1", "timestamp": now},
        {"type": "track", "anonymousId": "cookie-1", "event": "Product Viewed", "messageId": "f-2", "timestamp": now},
    ]});
    assert_eq!(
        post_json(c.addr(), "/v1/batch", Some(WEB_KEY), browse)
            .await
            .status,
        200
    );
    // Freshness: queryable within the flush interval, no flush asked for.
    wait_for_events(&lake, 2).await;
    let first = refresh().await;
    assert!(first.full);

    let login = json!({"batch": [
        {"type": "identify", "anonymousId": "cookie-1", "userId": "u-77", "messageId": "f-3",
         "traits": {"email": "Max@Example.com"}, "timestamp": now},
        {"type": "identify", "anonymousId": "phone-9", "userId": "u-77", "messageId": "f-4", "timestamp": now},
    ]});
    assert_eq!(
        post_json(c.addr(), "/v1/batch", Some(IOS_KEY), login)
            .await
            .status,
        200
    );
    wait_for_events(&lake, 4).await;
    let second = refresh().await;
    assert!(!second.full, "{:?}", second.full_reason);
    assert_eq!(
        (second.raw_files, second.raw_rows),
        (1, 2),
        "only the new file is read"
    );
    let rows = sql_lines(
        &lake,
        "SELECT array_to_string(anonymous_ids, ','), array_to_string(emails, ','), events \
         FROM cdp.profiles WHERE array_has(user_ids, 'u-77')",
    )
    .await;
    assert_eq!(rows, ["cookie-1,phone-9 | max@example.com | 4"]);
    c.shutdown().await.unwrap();
}

/// Events of a suppressed identifier get the usual answer (it reveals
/// nothing), never reach the lake, and are counted in `system.ingests`;
/// once the suppression is lifted, new events land again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_suppressed_people_never_reach_the_lake() {
    let (dir, lake) = temp_lake();
    let config = panorama::identity::IdentityConfig::default();
    let gone = [("user_id".to_string(), "u-gone".to_string())];
    panorama::privacy::suppress(&lake, &config, &gone, false)
        .await
        .unwrap();
    let c = collector(&lake, dir.path(), |_| {}).await;
    let batch = json!({"batch": [track("s-1", "u-gone"), track("s-2", "u-kept")]});
    let a = post_json(c.addr(), "/v1/batch", Some(WEB_KEY), batch).await;
    assert_eq!((a.status, a.body["accepted"].as_u64()), (200, Some(2)));
    c.flush().await.unwrap();
    assert_eq!(
        sql_lines(&lake, "SELECT user_id FROM raw.events").await,
        ["u-kept"]
    );
    assert_eq!(
        sql_lines(&lake, "SELECT sum(rows_suppressed) FROM system.ingests").await,
        ["1"]
    );
    panorama::privacy::suppress(&lake, &config, &gone, true)
        .await
        .unwrap();
    let a = post_json(c.addr(), "/v1/track", Some(WEB_KEY), track("s-3", "u-gone")).await;
    assert_eq!(a.status, 200);
    c.flush().await.unwrap();
    assert_eq!(
        sql_lines(&lake, "SELECT user_id FROM raw.events ORDER BY 1").await,
        ["u-gone", "u-kept"]
    );
}
