//! The `psql` binary against Panorama: what a person types first.

use std::process::Command;

use crate::support::*;

fn psql(server: &TestServer, args: &[&str]) -> (bool, String, String) {
    let output = Command::new("psql")
        .args([
            "-X",
            "-h",
            &server.addr.ip().to_string(),
            "-p",
            &server.addr.port().to_string(),
            "-U",
            "panorama",
            "-d",
            "panorama",
        ])
        .args(args)
        .output()
        .expect("psql must be installed (the test script installs postgresql-client)");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_queries_joins_and_lists_raw_tables() {
    let (_dir, lake) = temp_lake();
    land_fixture(&lake).await;
    let server = TestServer::start(&lake).await;

    let (ok, out, err) = psql(&server, &["-At", "-c", "SELECT count(*) FROM raw.orders"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "4");

    let (ok, out, err) = psql(
        &server,
        &[
            "-At",
            "-F",
            ",",
            "-c",
            "SELECT o.order_id, c.city FROM raw.orders o \
             JOIN raw.customers c USING (customer_id) ORDER BY o.order_id",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "O1,Paris\nO2,Paris\nO3,Lyon");

    let (ok, out, err) = psql(&server, &["-c", "\\dt raw.*"]);
    assert!(ok, "{err}");
    for table in [
        "events",
        "customers",
        "orders",
        "order_items",
        "products",
        "survey_responses",
        "consents",
    ] {
        assert!(
            out.lines()
                .any(|l| l.contains(" raw ") && l.contains(&format!(" {table} "))),
            "\\dt raw.* should list {table}:\n{out}"
        );
    }

    let (ok, out, err) = psql(&server, &["-c", "\\d raw.orders"]);
    assert!(ok, "{err}");
    assert!(out.contains("order_id"), "{out}");
    assert!(out.contains("amount"), "{out}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_to_stdout_streams_csv_and_text_as_postgres_writes_them() {
    let (_dir, lake) = temp_lake();
    land_fixture(&lake).await;
    let server = TestServer::start(&lake).await;
    let (ok, out, err) = psql(
        &server,
        &[
            "-c",
            "COPY (SELECT order_id, amount, status = 'returned' AS returned, \
             CASE WHEN order_id = 'O4' THEN NULL ELSE customer_id END AS customer, \
             'a,\"b\"' AS quoted FROM raw.orders ORDER BY order_id) TO STDOUT WITH CSV HEADER",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "order_id,amount,returned,customer,quoted\n\
         O1,120.50,f,C1,\"a,\"\"b\"\"\"\n\
         O2,30.00,t,C1,\"a,\"\"b\"\"\"\n\
         O3,99.99,f,C2,\"a,\"\"b\"\"\"\n\
         O4,10.00,f,,\"a,\"\"b\"\"\"\n"
    );
    // The text format (the default): tabs, \N for NULL; a table by name.
    let (ok, out, err) = psql(
        &server,
        &["-c", "COPY raw.orders (order_id, customer_id) TO STDOUT"],
    );
    assert!(ok, "{err}");
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(lines, ["O1\tC1", "O2\tC1", "O3\tC2", "O4\t\\N"]);
    // COPY FROM is refused, clearly (loads go through ingest or the collector).
    let (ok, _, err) = psql(&server, &["-c", "COPY raw.orders FROM STDIN"]);
    assert!(!ok);
    assert!(err.contains("COPY … FROM is not supported"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_and_show_answer_as_postgres_does() {
    let (_dir, lake) = temp_lake();
    let server = TestServer::start(&lake).await;
    let (ok, _, err) = psql(&server, &["-c", "SET no_such_setting = 1"]);
    assert!(!ok);
    assert!(
        err.contains("unrecognized configuration parameter \"no_such_setting\""),
        "{err}"
    );
    let (ok, out, err) = psql(
        &server,
        &[
            "-At",
            "-c",
            "SET client_min_messages TO warning",
            "-c",
            "SHOW client_min_messages",
            "-c",
            "SHOW transaction_isolation",
            "-c",
            "SHOW TRANSACTION ISOLATION LEVEL",
            "-c",
            "SHOW server_version_num",
            "-c",
            "SHOW standard_conforming_strings",
            "-c",
            "SHOW max_identifier_length",
            "-c",
            "SELECT version()",
        ],
    );
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..7],
        [
            "SET",
            "warning",
            "read committed",
            "read committed",
            "160006",
            "on",
            "63"
        ]
    );
    assert!(
        lines[7].starts_with("PostgreSQL 16.6 (Panorama "),
        "{}",
        lines[7]
    );
    // Through the extended protocol too (what JDBC and psycopg use).
    let client = server.client().await;
    let e = client
        .execute("SET no_such_setting = 1", &[])
        .await
        .unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("42704"), "{e}");
    let row = client
        .query_one("SHOW server_version_num", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "160006");
    // DDL answers with its command tag.
    let (ok, out, err) = psql(
        &server,
        &[
            "-c",
            "CREATE VIEW analytics.one AS SELECT 1 AS x",
            "-c",
            "DROP VIEW analytics.one",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(out, "CREATE VIEW\nDROP VIEW\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_backslash_commands_browse_the_schemas() {
    let (_dir, lake) = temp_lake();
    land_and_refresh_fixture(&lake).await;
    let server = TestServer::start(&lake).await;
    let (ok, out, err) = psql(&server, &["-c", "\\dn"]);
    assert!(ok, "{err}");
    for schema in ["analytics", "cdp", "raw", "system"] {
        assert!(out.contains(schema), "\\dn lists {schema}: {out}");
    }
    let (ok, out, err) = psql(&server, &["-c", "\\dt cdp.*"]);
    assert!(ok, "{err}");
    for table in ["profiles", "identity_links", "profile_merges"] {
        assert!(out.contains(table), "\\dt cdp.* lists {table}: {out}");
    }
    let (ok, out, err) = psql(&server, &["-c", "\\d cdp.profiles"]);
    assert!(ok, "{err}");
    assert!(out.contains("emails") && out.contains("text[]"), "{out}");
    let (ok, out, err) = psql(&server, &["-c", "\\dv analytics.*"]);
    assert!(ok, "{err}");
    assert!(out.contains("rfm") && out.contains("nps_by_month"), "{out}");
    let (ok, out, err) = psql(
        &server,
        &["-c", "\\x", "-c", "\\timing", "-c", "SELECT 1 AS a, 2 AS b"],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("-[ RECORD 1 ]") && out.contains("Time:"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_statement_query_runs_up_to_its_first_error() {
    let (_dir, lake) = temp_lake();
    let server = TestServer::start(&lake).await;
    // One Query message: the first result is sent, then the error, and the
    // third statement never runs.
    let (ok, out, err) = psql(
        &server,
        &[
            "-At",
            "-c",
            "SELECT 'first' AS a; SELECT no_such_column FROM (SELECT 1 AS x) t; SELECT 'third'",
        ],
    );
    assert!(!ok);
    assert_eq!(out, "first\n");
    assert!(err.contains("no_such_column"), "{err}");
    assert!(!out.contains("third"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floats_read_as_postgresql_writes_them() {
    let (_dir, lake) = temp_lake();
    let server = TestServer::start(&lake).await;
    let query = "SELECT CAST(1 AS DOUBLE) AS a, 1e20 AS b, CAST(0.00001 AS DOUBLE) AS c, \
                 CAST(0.1 AS REAL) AS d, CAST(NULL AS DOUBLE) AS e, 'x' AS f";
    let (ok, out, err) = psql(&server, &["-At", "-c", query]);
    assert!(ok, "{err}");
    assert_eq!(out, "1|1e+20|1e-05|0.1||x\n");
    let (ok, out, err) = psql(
        &server,
        &["-c", &format!("COPY ({query}) TO STDOUT WITH CSV")],
    );
    assert!(ok, "{err}");
    assert_eq!(out, "1,1e+20,1e-05,0.1,,x\n");
    server.stop().await;
}
