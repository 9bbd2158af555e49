//! Users, passwords and roles on the Postgres protocol: SCRAM-SHA-256 with
//! PostgreSQL-format verifiers (tokio-postgres and psql as clients), wrong
//! passwords and unknown users refused alike, the analyst role read-only
//! (42501) on both protocols, and `serve` refusing an open address without
//! users.

use panorama::pgwire::auth::Verifier;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_passwords_and_the_read_only_analyst_role() {
    let (_dir, lake) = temp_lake();
    land_fixture(&lake).await;
    let server = ada_and_ana(&lake).await;

    // Wrong password and unknown user: the same refusal, 28P01.
    for (who, password) in [("ada", "wrong"), ("nobody", "admin-secret")] {
        let Err(e) = connect_as(&server, who, password).await else {
            panic!("{who} was let in");
        };
        assert_eq!(e.code().map(|c| c.code()), Some("28P01"), "{who}: {e:?}");
    }
    // No password at all.
    let conn = format!(
        "host=127.0.0.1 port={} user=ada dbname=panorama",
        server.addr.port()
    );
    assert!(
        tokio_postgres::connect(&conn, tokio_postgres::NoTls)
            .await
            .is_err()
    );

    let admin = connect_as(&server, "ada", "admin-secret").await.unwrap();
    assert_eq!(scalar(&admin, "SELECT count(*) FROM raw.orders").await, 4);
    admin
        .batch_execute(
            "CREATE VIEW analytics.big_orders AS SELECT * FROM raw.orders WHERE amount > 50",
        )
        .await
        .unwrap();

    let analyst = connect_as(&server, "ana", "analyst-secret").await.unwrap();
    assert_eq!(
        scalar(&analyst, "SELECT count(*) FROM analytics.big_orders").await,
        2
    );
    let refused = [
        "CREATE VIEW analytics.mine AS SELECT 1 AS x",
        "DROP VIEW analytics.big_orders",
        "REFRESH MATERIALIZED VIEW cdp.profiles",
        "CALL panorama.block_identifier('email', 'a@x.com')",
        "CALL panorama.forget('email', 'a@x.com')",
        "COPY (SELECT 1) TO '/tmp/panorama-analyst.csv'",
        "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
    ];
    for sql in refused {
        let e = analyst.simple_query(sql).await.unwrap_err();
        assert_eq!(e.code().map(|c| c.code()), Some("42501"), "{sql}: {e:?}");
    }
    // The extended protocol (JDBC, psycopg) is held to the same rule.
    let e = analyst
        .execute("CREATE VIEW analytics.mine AS SELECT 1 AS x", &[])
        .await
        .unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("42501"), "{e:?}");
    // Reading, SET/SHOW and COPY TO STDOUT stay open to analysts.
    analyst
        .batch_execute("SET application_name = 'notebook'")
        .await
        .unwrap();
    let rows = analyst
        .query(
            "SELECT order_id FROM raw.orders WHERE amount > $1 ORDER BY 1",
            &[&rust_decimal::Decimal::new(5000, 2)],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        scalar(&analyst, "SELECT count(*) FROM analytics.big_orders").await,
        2
    );

    // psql with PGPASSWORD, as a person would.
    let out = std::process::Command::new("psql")
        .args(["-X", "-At", "-h", "127.0.0.1", "-p"])
        .arg(server.addr.port().to_string())
        .args([
            "-U",
            "ana",
            "-d",
            "panorama",
            "-c",
            "SELECT count(*) FROM raw.orders",
        ])
        .env("PGPASSWORD", "analyst-secret")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "4",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn serve_refuses_an_open_address_without_users() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_panorama"))
        .args(["serve", "--no-collect", "--listen", "0.0.0.0:0", "--lake"])
        .arg(dir.path())
        .env_remove("PANORAMA_LAKE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0 without authentication"),
        "{stderr}"
    );
    // And `panorama passwd` prints a verifier the configuration accepts.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_panorama"))
        .arg("passwd")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let verifier = String::from_utf8(out.stdout).unwrap();
    assert!(Verifier::parse(verifier.trim()).is_ok(), "{verifier}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analysts_see_personal_data_masked_in_every_plan_shape() {
    let (_dir, lake) = temp_lake();
    land_and_refresh_fixture(&lake).await;
    let server = ada_and_ana(&lake).await;
    let admin = connect_as(&server, "ada", "admin-secret").await.unwrap();
    let analyst = connect_as(&server, "ana", "analyst-secret").await.unwrap();
    let jane = "SELECT count(*) FROM cdp.profiles WHERE 'jane.doe@example.com' = ANY(emails)";
    assert_eq!(scalar(&admin, jane).await, 1, "the admin sees Jane");

    let texts = |rows: Vec<tokio_postgres::Row>| -> Vec<Option<String>> {
        rows.iter().map(|r| r.get::<_, Option<String>>(0)).collect()
    };
    // Plain reads, filters, functions, subqueries, UNION, joins.
    let emails = texts(
        analyst
            .query("SELECT email FROM raw.customers ORDER BY customer_id", &[])
            .await
            .unwrap(),
    );
    assert_eq!(
        emails,
        [Some("***".into()), Some("***".into()), Some("***".into())]
    );
    for (sql, expected) in [
        (jane, 0),
        (
            "SELECT count(*) FROM raw.customers WHERE email LIKE '%example%'",
            0,
        ),
        (
            "SELECT count(*) FROM raw.customers WHERE lower(trim(email)) = 'jane.doe@example.com'",
            0,
        ),
        (
            "SELECT count(*) FROM raw.customers WHERE length(email) > 3",
            0,
        ),
        (
            "SELECT count(*) FROM (SELECT phone FROM raw.customers) t WHERE phone LIKE '+%'",
            0,
        ),
        (
            "SELECT count(*) FROM (SELECT email FROM raw.customers UNION SELECT email FROM raw.orders) u \
          WHERE email <> '***'",
            0,
        ),
        (
            "SELECT count(*) FROM raw.customers c WHERE EXISTS \
          (SELECT 1 FROM raw.orders o WHERE o.customer_id = c.customer_id AND c.email LIKE 'j%')",
            0,
        ),
        (
            "SELECT count(*) FROM cdp.identity_links WHERE id_type = 'email' AND id_value <> '***'",
            0,
        ),
        (
            "SELECT count(*) FROM cdp.profiles WHERE array_to_string(emails, ',') LIKE '%@%'",
            0,
        ),
    ] {
        assert_eq!(scalar(&analyst, sql).await, expected, "{sql}");
    }
    // Counting and joining by ids still works.
    assert_eq!(
        scalar(
            &analyst,
            "SELECT count(DISTINCT profile_id) FROM cdp.profiles"
        )
        .await,
        scalar(
            &admin,
            "SELECT count(DISTINCT profile_id) FROM cdp.profiles"
        )
        .await
    );
    assert_eq!(
        scalar(
            &analyst,
            "SELECT count(*) FROM raw.orders o JOIN raw.customers c USING (customer_id)"
        )
        .await,
        3
    );
    // A lookup by an unmasked key uses the key index and still masks; one
    // by a masked column matches nothing.
    let lookup = "SELECT email, city FROM raw.customers WHERE customer_id = $1";
    let row = analyst.query_one(lookup, &[&"C2"]).await.unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1)),
        ("***".to_string(), "Lyon".to_string())
    );
    let plan = simple_rows(
        &analyst,
        "EXPLAIN SELECT email FROM raw.customers WHERE customer_id = 'C2'",
    )
    .await;
    let plan: String = plan.into_iter().flatten().flatten().collect();
    // The mask is a leaf: it names the indexed scan it reads, and shows
    // nothing of it.
    assert!(
        plan.contains("MaskExec: personal columns masked=[email]")
            && plan.contains("reads=LookupExec")
            && !plan.contains("LookupExec:"),
        "the mask over the indexed scan: {plan}"
    );
    assert_eq!(
        scalar(
            &analyst,
            "SELECT count(*) FROM raw.customers WHERE email = 'bob@example.com'"
        )
        .await,
        0
    );
    // COPY sees what the query sees.
    let out = std::process::Command::new("psql")
        .args(["-X", "-h", "127.0.0.1", "-p"])
        .arg(server.addr.port().to_string())
        .args([
            "-U",
            "ana",
            "-d",
            "panorama",
            "-c",
            "COPY (SELECT customer_id, email, first_name, city FROM raw.customers ORDER BY 1) TO STDOUT WITH CSV",
        ])
        .env("PGPASSWORD", "analyst-secret")
        .output()
        .unwrap();
    let csv = String::from_utf8_lossy(&out.stdout);
    assert_eq!(csv.lines().next(), Some("C1,***,***,Paris"), "{csv}");
    // The admin session is untouched.
    let real = texts(
        admin
            .query(
                "SELECT email FROM raw.customers WHERE customer_id = 'C1'",
                &[],
            )
            .await
            .unwrap(),
    );
    assert_eq!(real, [Some(" Jane.Doe@Example.com".into())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_from_the_configuration_and_no_plaintext_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let config = dir.path().join("panorama.toml");
    std::fs::write(
        &config,
        format!(
            "[tls]\ncert = {:?}\nkey = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        ),
    )
    .unwrap();
    let lake = dir.path().join("lake");
    let served = Served::start(&[
        "--config".as_ref(),
        config.as_os_str(),
        "--lake".as_ref(),
        lake.as_os_str(),
        "serve".as_ref(),
        "--no-seed".as_ref(),
        "--no-collect".as_ref(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
    ])
    .await;
    let out = std::process::Command::new("psql")
        .args(["-X", "-At", "-h", "127.0.0.1", "-p"])
        .arg(served.pg_port.to_string())
        .args([
            "-U",
            "panorama",
            "-d",
            "panorama",
            "-c",
            "\\conninfo",
            "-c",
            "SELECT 42",
        ])
        .env("PGSSLMODE", "require")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("SSL connection"), "{stdout}");
    assert!(stdout.trim_end().ends_with("42"), "{stdout}");
    drop(served);

    // A key that cannot be read stops the server before it listens.
    std::fs::write(&key, "not a key").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_panorama"))
        .arg("--config")
        .arg(&config)
        .args([
            "serve",
            "--no-seed",
            "--no-collect",
            "--listen",
            "127.0.0.1:0",
            "--lake",
        ])
        .arg(&lake)
        .env_remove("PANORAMA_LAKE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("loading [tls]"), "{stderr}");
}
