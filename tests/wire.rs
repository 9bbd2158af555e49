//! SQL over the Postgres protocol with `tokio-postgres`: simple and extended
//! protocol, bound parameters, binary results of every raw type.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;

use crate::support::*;

#[tokio::test]
async fn simple_protocol_answers_with_the_landed_values() {
    let Fixture {
        dir: _dir,
        lake: _,
        server,
        client,
    } = serve_fixture().await;

    let rows = simple_rows(
        &client,
        "SELECT c.first_name, count(*) AS orders, sum(o.amount) AS revenue \
         FROM raw.orders o JOIN raw.customers c ON o.customer_id = c.customer_id \
         GROUP BY c.first_name ORDER BY c.first_name",
    )
    .await;
    let text = |v: &[&str]| v.iter().map(|s| Some(s.to_string())).collect::<Vec<_>>();
    assert_eq!(
        rows,
        vec![text(&["Bob", "1", "99.99"]), text(&["Jane", "2", "150.50"])]
    );
    server.stop().await;
}

#[tokio::test]
async fn extended_protocol_binds_parameters_and_decodes_binary_results() {
    let Fixture {
        dir: _dir,
        lake: _,
        server,
        client,
    } = serve_fixture().await;

    let statement = client
        .prepare(
            "SELECT order_id, customer_id, amount, ordered_at, date, item_count \
             FROM raw.orders WHERE channel = $1 AND ordered_at >= $2 ORDER BY order_id",
        )
        .await
        .unwrap();
    let since: DateTime<Utc> = DateTime::from_timestamp_micros(JAN_15).unwrap();
    let rows = client.query(&statement, &[&"web", &since]).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].get::<_, String>(0), "O1");
    assert_eq!(rows[0].get::<_, Option<String>>(1).as_deref(), Some("C1"));
    assert_eq!(rows[0].get::<_, Decimal>(2), Decimal::new(12_050, 2));
    assert_eq!(rows[0].get::<_, DateTime<Utc>>(3), since);
    assert_eq!(
        rows[0].get::<_, NaiveDate>(4),
        NaiveDate::from_ymd_opt(2026, 1, 15).unwrap()
    );
    assert_eq!(rows[0].get::<_, i64>(5), 1);
    assert_eq!(rows[1].get::<_, String>(0), "O4");
    assert_eq!(
        rows[1].get::<_, Option<String>>(1),
        None,
        "guest order has no customer"
    );

    // The same prepared statement, reused with other parameters.
    let later = since + chrono::Duration::days(1);
    let rows = client.query(&statement, &[&"web", &later]).await.unwrap();
    let ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, vec!["O4".to_string()]);

    // Booleans, dates and integers through a parameterised filter.
    let row = client
        .query_one(
            "SELECT customer_id, newsletter, birth_date FROM raw.customers WHERE customer_id = $1",
            &[&"C2"],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(1));
    assert_eq!(
        row.get::<_, NaiveDate>(2),
        NaiveDate::from_ymd_opt(1989, 3, 2).unwrap()
    );
    server.stop().await;
}

#[tokio::test]
async fn text_results_use_postgres_spellings_for_every_raw_type() {
    let Fixture {
        dir: _dir,
        lake: _,
        server,
        client,
    } = serve_fixture().await;
    let rows = simple_rows(
        &client,
        "SELECT customer_id, birth_date, newsletter, updated_at, date \
         FROM raw.customers WHERE customer_id = 'C1'",
    )
    .await;
    let row = &rows[0];
    assert_eq!(row[0].as_deref(), Some("C1"));
    assert_eq!(row[1].as_deref(), Some("1989-03-02"));
    assert_eq!(row[2].as_deref(), Some("t"));
    let updated = row[3].as_deref().unwrap();
    assert!(updated.starts_with("2026-01-15 10:00:00"), "{updated}");
    assert_eq!(row[4].as_deref(), Some("2026-01-15"));
    server.stop().await;
}

#[tokio::test]
async fn an_error_in_one_session_does_not_disturb_another() {
    let (_dir, lake) = temp_lake();
    land_fixture(&lake).await;
    let server = TestServer::start(&lake).await;
    let broken = server.client().await;
    let healthy = server.client().await;
    let statement = healthy
        .prepare("SELECT count(*) FROM raw.orders WHERE channel = $1")
        .await
        .unwrap();
    for round in 0..5 {
        assert!(broken.simple_query("SELECT * FROM nowhere").await.is_err());
        let n: i64 = healthy
            .query_one(&statement, &[&"web"])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 2, "round {round}");
    }
    assert_eq!(
        scalar(&broken, "SELECT count(*) FROM raw.customers").await,
        3
    );
    server.stop().await;
}

/// A query that runs for many seconds unless stopped.
const SLOW: &str = "SELECT count(*) FROM range(0, 20000000000) t WHERE value % 7 = 3";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_timeout_and_cancel_stop_a_running_query_with_57014() {
    let (_dir, lake) = temp_lake();
    let server = TestServer::start(&lake).await;
    let client = server.client().await;

    // statement_timeout, through the extended protocol.
    client
        .batch_execute("SET statement_timeout = '300ms'")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let e = client.query(SLOW, &[]).await.unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("57014"), "{e}");
    let message = e.as_db_error().unwrap().message();
    assert_eq!(message, "canceling statement due to statement timeout");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(scalar(&client, "SELECT 41 + 1").await, 42, "still usable");

    // And through the simple protocol.
    let e = client.simple_query(SLOW).await.unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("57014"), "{e}");
    client
        .batch_execute("SET statement_timeout = 0")
        .await
        .unwrap();

    // A cancel request (what Ctrl-C in psql sends) from another socket.
    let token = client.cancel_token();
    let cancel = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    });
    let e = client.query(SLOW, &[]).await.unwrap_err();
    cancel.await.unwrap();
    assert_eq!(e.code().map(|c| c.code()), Some("57014"), "{e}");
    let message = e.as_db_error().unwrap().message();
    assert_eq!(message, "canceling statement due to user request");
    assert_eq!(scalar(&client, "SELECT 41 + 1").await, 42, "still usable");
}

/// A statement whose planning alone takes long: a chain of `links` CTEs,
/// each a view of the one before, over a four-row table.
fn chained_views(links: usize) -> String {
    let views: Vec<String> = std::iter::once("c0 AS (SELECT * FROM raw.orders)".to_string())
        .chain((1..links).map(|i| format!("c{i} AS (SELECT * FROM c{})", i - 1)))
        .collect();
    format!(
        "WITH {} SELECT count(*) FROM c{}",
        views.join(", "),
        links - 1
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_timeout_stops_a_statement_still_being_planned() {
    use std::time::{Duration, Instant};
    let (_dir, lake) = temp_lake();
    land_fixture(&lake).await;
    let server = TestServer::start(&lake).await;
    let client = server.client().await;
    let other = server.client().await;

    // A chain long enough that planning it takes seconds on this machine.
    let (mut links, mut planning) = (250, Duration::ZERO);
    while planning < Duration::from_secs(2) && links <= 16_000 {
        links *= 2;
        let started = Instant::now();
        let rows = client.simple_query(&chained_views(links)).await.unwrap();
        planning = started.elapsed();
        assert!(rows.iter().any(|m| matches!(
            m,
            tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("4")
        )));
    }
    assert!(
        planning >= Duration::from_secs(2),
        "{links} chained views planned in {planning:?}: no statement here plans for long"
    );
    let sql = chained_views(links);

    client
        .batch_execute("SET statement_timeout = '300ms'")
        .await
        .unwrap();
    // Simple protocol (planned at once), then extended (planned at Parse);
    // meanwhile another connection is answered.
    for extended in [false, true] {
        let started = Instant::now();
        let sent = if extended {
            client.query(&sql, &[]).await.map(drop)
        } else {
            client.simple_query(&sql).await.map(drop)
        };
        let took = started.elapsed();
        let e = sent.unwrap_err();
        assert_eq!(e.code().map(|c| c.code()), Some("57014"), "{e}");
        assert!(
            took < planning / 2,
            "extended: {extended}: a 300 ms statement_timeout fired after {took:?}, \
             planning takes {planning:?}"
        );
        let started = Instant::now();
        assert_eq!(scalar(&other, "SELECT 41 + 1").await, 42);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    assert_eq!(scalar(&client, "SELECT 41 + 1").await, 42, "still usable");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_over_the_memory_limit_is_53200_and_the_server_keeps_serving() {
    let (_dir, lake) = temp_lake();
    land_fixture(&lake).await;
    let options = panorama::engine::EngineOptions {
        memory_limit: 16 << 20,
        target_partitions: 2,
        ..Default::default()
    };
    let server =
        TestServer::start_with_options(&lake, panorama::pgwire::Actions::default(), options).await;
    let client = server.client().await;
    let other = server.client().await;
    // A hash join's build side cannot spill: 5 M rows do not fit in 16 MiB.
    let e = client
        .query(
            "SELECT count(*) FROM range(0, 5000000) a JOIN range(0, 5000000) b \
             ON a.value = b.value",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("53200"), "{e:?}");
    assert_eq!(scalar(&client, "SELECT count(*) FROM raw.orders").await, 4);
    assert_eq!(scalar(&other, "SELECT count(*) FROM raw.orders").await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_clients_at_once_all_get_right_answers() {
    let (_dir, lake) = temp_lake();
    land_fixture(&lake).await;
    let server = TestServer::start(&lake).await;
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let conn = server.conn_str();
            tokio::spawn(async move {
                let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(connection);
                for round in 0..5 {
                    match (i + round) % 4 {
                        0 => {
                            assert_eq!(scalar(&client, "SELECT count(*) FROM raw.orders").await, 4)
                        }
                        1 => {
                            let row = client
                                .query_one(
                                    "SELECT customer_id FROM raw.orders WHERE order_id = $1",
                                    &[&"O3"],
                                )
                                .await
                                .unwrap();
                            assert_eq!(row.get::<_, String>(0), "C2");
                        }
                        2 => {
                            let rows = client
                                .simple_query("SELECT city FROM raw.customers ORDER BY customer_id")
                                .await
                                .unwrap();
                            let rows = rows
                                .iter()
                                .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
                                .count();
                            assert_eq!(rows, 3);
                        }
                        _ => assert!(
                            client
                                .query("SELECT no_such_column FROM raw.orders", &[])
                                .await
                                .is_err()
                        ),
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_million_rows_stream_in_bounded_server_memory() {
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let served = serve_lake(&lake).await;
    let client = served.client().await;
    // The simple protocol, as psql and pandas' read_sql use it.
    let rows = client
        .simple_query_raw("SELECT value, value * 2 AS twice FROM range(0, 10000000) t")
        .await
        .unwrap();
    futures::pin_mut!(rows);
    let (mut n, mut sum) = (0u64, 0i64);
    while let Some(message) = rows.next().await {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = message.unwrap() {
            sum += row.get(1).unwrap().parse::<i64>().unwrap();
            n += 1;
        }
    }
    assert_eq!(n, 10_000_000);
    assert_eq!(sum, 99_999_990_000_000, "2 × (0 + … + 9,999,999)");
    // The extended protocol (JDBC, psycopg, tokio-postgres): binary rows,
    // one unlimited Execute, which pgwire alone would collect in memory.
    let rows = client
        .query_raw(
            "SELECT value, value * 2 AS twice FROM range(0, 10000000) t",
            Vec::<i64>::new(),
        )
        .await
        .unwrap();
    futures::pin_mut!(rows);
    let (mut n, mut sum) = (0u64, 0i64);
    while let Some(row) = rows.next().await {
        sum += row.unwrap().get::<_, i64>(1);
        n += 1;
    }
    assert_eq!(n, 10_000_000);
    assert_eq!(sum, 99_999_990_000_000, "2 × (0 + … + 9,999,999)");
    // Each result is ~180 MB as rows; the server never holds one.
    let peak_kib: u64 = std::fs::read_to_string(format!("/proc/{}/status", served.pid()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(peak_kib < 400 * 1024, "server peak RSS {peak_kib} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unnamed_result_columns_get_postgresql_names() {
    let (_dir, lake) = temp_lake();
    land_fixture(&lake).await;
    let server = TestServer::start(&lake).await;
    let client = server.client().await;
    let sql = "SELECT count(*), max(amount), 1::float8, count(*) + 1, status FROM raw.orders GROUP BY status";
    let statement = client.prepare(sql).await.unwrap();
    let names: Vec<&str> = statement.columns().iter().map(|c| c.name()).collect();
    assert_eq!(names, ["count", "max", "float8", "?column?", "status"]);
    // The simple protocol too, as pandas.read_sql sees it.
    let rows = client.simple_query(sql).await.unwrap();
    let Some(tokio_postgres::SimpleQueryMessage::RowDescription(columns)) = rows.first() else {
        panic!("a row description first");
    };
    let names: Vec<&str> = columns.iter().map(|c| c.name()).collect();
    assert_eq!(names, ["count", "max", "float8", "?column?", "status"]);
}
