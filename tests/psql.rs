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
