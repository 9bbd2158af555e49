//! Per-connection session state, as pooled BI clients rely on it: who the
//! connection is (`current_user`, `pg_backend_pid()`), a time zone one
//! client sets that no other client sees, and `DISCARD ALL` (Npgsql's and
//! pgbouncer's reset) taking a connection back to how it started.

use crate::support::*;

async fn text(client: &tokio_postgres::Client, sql: &str) -> String {
    simple_rows(client, sql).await[0][0]
        .clone()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_keep_their_own_user_pid_and_time_zone() {
    let (_dir, lake) = temp_lake();
    let server = TestServer::start(&lake).await;
    let conn = |user: &str| {
        format!(
            "host=127.0.0.1 port={} user={user} dbname=panorama",
            server.addr.port()
        )
    };
    let (alice, c) = tokio_postgres::connect(&conn("alice"), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(c);
    let (bob, c) = tokio_postgres::connect(&conn("bob"), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(c);

    // current_user and session_user name the connection's user, on
    // both protocols.
    let row = alice
        .query_one(
            "SELECT current_user AS a, session_user AS b, current_user AS c",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, String>(2)
        ),
        ("alice".into(), "alice".into(), "alice".into())
    );
    assert_eq!(text(&bob, "SELECT current_user").await, "bob");
    assert_eq!(text(&alice, "SELECT current_user").await, "alice");

    // Each connection has its own backend pid, stable for its life.
    let a1: i32 = alice
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let a2: i32 = alice
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let b: i32 = bob
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(a1, a2);
    assert_ne!(a1, b);

    // A time zone is the connection's own: SET TIME ZONE and SET timezone.
    alice
        .batch_execute("SET TIME ZONE 'Europe/Paris'")
        .await
        .unwrap();
    assert_eq!(text(&alice, "SHOW TimeZone").await, "Europe/Paris");
    assert_eq!(text(&bob, "SHOW TimeZone").await, "UTC");
    bob.batch_execute("SET timezone = 'America/New_York'")
        .await
        .unwrap();
    assert_eq!(text(&bob, "SHOW timezone").await, "America/New_York");
    assert_eq!(text(&alice, "SHOW TimeZone").await, "Europe/Paris");
    // ... and leaves the shared engine's setting alone.
    let typeof_now = "SELECT arrow_typeof(now())";
    let before = text(&bob, typeof_now).await;
    alice
        .batch_execute("SET timezone = 'Pacific/Auckland'")
        .await
        .unwrap();
    assert_eq!(text(&bob, typeof_now).await, before);
    assert_eq!(text(&alice, typeof_now).await, before);
    alice
        .batch_execute("SET TIME ZONE 'Europe/Paris'")
        .await
        .unwrap();
    let e = alice
        .batch_execute("SET TIME ZONE 'Mars/Olympus_Mons'")
        .await
        .unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("22023"), "{e:?}");
    let message = e.as_db_error().map(|d| d.message().to_string());
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("Mars/Olympus_Mons")),
        "{message:?}"
    );
    assert_eq!(text(&alice, "SHOW TimeZone").await, "Europe/Paris");

    // timestamptz values are shown in the connection's zone, as PostgreSQL
    // shows them; binary values are the same instant for everyone.
    let instant = "SELECT arrow_cast(to_timestamp_micros(1768471200000000), \
                   'Timestamp(Microsecond, Some(\"UTC\"))') AS t";
    let paris = text(&alice, instant).await;
    assert!(
        paris.starts_with("2026-01-15 11:00:00") && paris.ends_with("+01"),
        "{paris}"
    );
    let new_york = text(&bob, instant).await;
    assert!(
        new_york.starts_with("2026-01-15 05:00:00") && new_york.ends_with("-05"),
        "{new_york}"
    );
    for client in [&alice, &bob] {
        let t: chrono::DateTime<chrono::Utc> = client.query_one(instant, &[]).await.unwrap().get(0);
        assert_eq!(t.timestamp_micros(), 1_768_471_200_000_000);
    }
    alice.batch_execute("SET TIME ZONE 'UTC'").await.unwrap();
    assert!(text(&alice, instant).await.ends_with("+00"));

    // RESET takes one parameter, or all, back to the start-up value.
    alice
        .batch_execute("SET TIME ZONE 'Asia/Tokyo'")
        .await
        .unwrap();
    alice.batch_execute("RESET TimeZone").await.unwrap();
    assert_eq!(text(&alice, "SHOW TimeZone").await, "UTC");
    let name = text(&alice, "SHOW application_name").await;
    alice
        .batch_execute("SET application_name = 'dash'; SET TIME ZONE 'Asia/Tokyo'")
        .await
        .unwrap();
    assert_eq!(text(&alice, "SHOW application_name").await, "dash");
    alice.batch_execute("RESET ALL").await.unwrap();
    assert_eq!(text(&alice, "SHOW application_name").await, name);
    assert_eq!(text(&alice, "SHOW TimeZone").await, "UTC");
    let e = alice
        .batch_execute("RESET no_such_setting")
        .await
        .unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("42704"), "{e:?}");

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discard_all_takes_a_pooled_connection_back_to_its_start() {
    let (_dir, lake) = temp_lake();
    land_fixture(&lake).await;
    let server = TestServer::start(&lake).await;
    let conn = format!(
        "host=127.0.0.1 port={} user=pool dbname=panorama application_name=report-pool",
        server.addr.port()
    );
    let (client, c) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(c);

    client
        .batch_execute(
            "SET application_name = 'dashboard 7'; SET statement_timeout = '5s'; \
             SET client_min_messages = warning; SET TIME ZONE 'Asia/Tokyo'",
        )
        .await
        .unwrap();
    assert_eq!(text(&client, "SHOW application_name").await, "dashboard 7");
    assert_eq!(text(&client, "SHOW client_min_messages").await, "warning");
    client
        .batch_execute("BEGIN; DECLARE c CURSOR FOR SELECT customer_id FROM raw.customers; COMMIT")
        .await
        .unwrap();

    let tags: Vec<u64> = client
        .simple_query("DISCARD ALL")
        .await
        .unwrap()
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .collect();
    assert_eq!(tags.len(), 1, "DISCARD ALL completes as one command");

    assert_eq!(text(&client, "SHOW application_name").await, "report-pool");
    assert_eq!(text(&client, "SHOW TimeZone").await, "UTC");
    assert_eq!(text(&client, "SHOW client_min_messages").await, "notice");
    assert_eq!(text(&client, "SHOW statement_timeout").await, "0");
    let e = client.batch_execute("FETCH 1 FROM c").await.unwrap_err();
    let message = e.as_db_error().map(|d| d.message().to_string());
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("\"c\"") || m.contains(" c ")),
        "the cursor is gone: {message:?}"
    );
    // Through the extended protocol too (Npgsql sends it prepared).
    client.execute("DISCARD ALL", &[]).await.unwrap();
    assert!(scalar(&client, "SELECT count(*) FROM raw.customers").await > 0);

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn savepoints_keep_a_transaction_usable_after_a_failed_probe() {
    let (_dir, lake) = temp_lake();
    let server = TestServer::start(&lake).await;
    let client = server.client().await;
    let code = |e: tokio_postgres::Error| e.code().map(|c| c.code().to_string());

    // Outside a transaction, as in PostgreSQL.
    let e = client.batch_execute("SAVEPOINT a").await.unwrap_err();
    assert_eq!(code(e).as_deref(), Some("25P01"));

    // psycopg 3's probe: a failing statement inside a savepoint, rolled
    // back to it, leaves the transaction usable.
    client
        .batch_execute("BEGIN; SAVEPOINT \"_pg3_1\"")
        .await
        .unwrap();
    let e = client
        .batch_execute("SELECT no_such_function()")
        .await
        .unwrap_err();
    assert!(code(e).is_some());
    let e = client.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(
        code(e).as_deref(),
        Some("25P02"),
        "the transaction is aborted"
    );
    let e = client
        .batch_execute("ROLLBACK TO SAVEPOINT nope")
        .await
        .unwrap_err();
    assert_eq!(code(e).as_deref(), Some("3B001"));
    client
        .batch_execute("ROLLBACK TO SAVEPOINT \"_pg3_1\"")
        .await
        .unwrap();
    assert_eq!(scalar(&client, "SELECT CAST(2 AS BIGINT)").await, 2);
    // Through the extended protocol too.
    client.execute("SAVEPOINT b", &[]).await.unwrap();
    client.execute("RELEASE SAVEPOINT b", &[]).await.unwrap();
    let e = client.execute("RELEASE b", &[]).await.unwrap_err();
    assert_eq!(code(e).as_deref(), Some("3B001"), "b was released");
    // That error aborted the transaction, as in PostgreSQL; the savepoint
    // brings it back once more.
    let e = client
        .batch_execute("RELEASE \"_pg3_1\"")
        .await
        .unwrap_err();
    assert_eq!(code(e).as_deref(), Some("25P02"));
    client
        .batch_execute("ROLLBACK TO \"_pg3_1\"; RELEASE \"_pg3_1\"; COMMIT")
        .await
        .unwrap();
    // COMMIT ended it: back to no transaction.
    let e = client
        .batch_execute("RELEASE \"_pg3_1\"")
        .await
        .unwrap_err();
    assert_eq!(code(e).as_deref(), Some("25P01"));
    server.stop().await;
}

/// The statement rewrites answer NULL for subqueries on these catalogs
/// without reading them (see `pgwire::rewrite`): they must stay empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalogs_the_rewrites_take_for_empty_are_empty() {
    let Fixture {
        dir: _dir,
        server,
        client,
        ..
    } = serve_fixture().await;
    for table in panorama::pgwire::rewrite::EMPTY_CATALOGS {
        let rows = scalar(&client, &format!("SELECT count(*) FROM pg_catalog.{table}")).await;
        assert_eq!(rows, 0, "pg_catalog.{table} has rows");
    }
    server.stop().await;
}
