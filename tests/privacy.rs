//! Access (`panorama privacy export`) and erasure (`panorama privacy
//! forget`, `CALL panorama.forget`): an export holds every row about a
//! person and nobody else's; after an erasure a person
//! present in every raw table, in rejected rows and in two versions of the
//! views is gone from every byte of the lake afterwards — Parquet values and
//! statistics, Delta logs, view manifests — while everyone else's rows are
//! unchanged, queries and profiles still work, and the audit keeps only
//! salted hashes. Analysts cannot call it.

use std::path::Path;

use panorama::identity::IdentityConfig;
use panorama::ingest::files::{self, IngestOptions};
use panorama::lake::Lake;
use panorama::schema::RawTable;

use crate::support::*;

/// Jane's identifiers, as sent and as normalised: none may remain.
const JANE: [&str; 6] = [
    "jane.doe@example.com",
    "cookie-jane",
    "u-jane",
    "c-jane",
    "+33612345678",
    "o-jane-",
];

async fn load(lake: &Lake, dir: &Path, table: RawTable, name: &str, body: &str) -> u64 {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    let options = IngestOptions::default()
        .normalizing(table, &IdentityConfig::default())
        .unwrap();
    files::load_file(lake, table, &path, &options, |_| {})
        .await
        .unwrap()
        .rows_rejected
}

/// Jane and Bob in every raw table, a rejected row quoting Jane's email,
/// and two refreshes (two versions of the views).
async fn land_jane_and_bob(lake: &Lake, dir: &Path) {
    let rejected = load(
        lake,
        dir,
        RawTable::Customers,
        "crm.csv",
        "customer_id,email,phone,first_name,last_name,source,updated_at\n\
         C-JANE, Jane.Doe@Example.com ,06 12 34 56 78,Jane,Doe,crm,2026-01-10\n\
         C-BOB,bob@example.com,06 98 76 54 32,Bob,Martin,crm,2026-01-10\n\
         C-JANE,jane.doe@example.com,,Jane,Doe,crm,not a date\n",
    )
    .await;
    assert_eq!(rejected, 1, "the bad row of Jane's is in system.rejects");
    load(
        lake,
        dir,
        RawTable::Orders,
        "orders.csv",
        "order_id,customer_id,ordered_at,amount,currency,status,channel,item_count\n\
         O-JANE-1,C-JANE,2026-01-11,120.50,EUR,completed,web,2\n\
         O-BOB-1,C-BOB,2026-01-11,30,EUR,completed,store,1\n",
    )
    .await;
    load(
        lake,
        dir,
        RawTable::OrderItems,
        "items.csv",
        "order_id,line,product_id,quantity,unit_price,ordered_at\n\
         O-JANE-1,1,P1,1,100.50,2026-01-11\n\
         O-JANE-1,2,P2,1,20,2026-01-11\n\
         O-BOB-1,1,P1,1,30,2026-01-11\n",
    )
    .await;
    assert_eq!(refresh_now(lake).await.profiles, 2, "Jane and Bob");
    load(
        lake,
        dir,
        RawTable::Events,
        "events.ndjson",
        &[
            r#"{"type":"page","anonymous_id":"cookie-jane","timestamp":"2026-01-12T10:00:00Z","name":"Home"}"#,
            r#"{"type":"identify","anonymous_id":"cookie-jane","user_id":"u-jane","email":"Jane.Doe@example.com","timestamp":"2026-01-12T10:01:00Z","traits":{"email":"Jane.Doe@example.com","first_name":"Jane"}}"#,
            r#"{"type":"page","anonymous_id":"cookie-bob","user_id":"u-bob","email":"bob@example.com","timestamp":"2026-01-12T11:00:00Z","name":"Home"}"#,
        ]
        .join("\n"),
    )
    .await;
    load(
        lake,
        dir,
        RawTable::SurveyResponses,
        "nps.csv",
        "response_id,email,survey,score,comment,responded_at\n\
         R1,jane.doe@example.com,nps,9,Jane here: love it,2026-01-13\n\
         R2,bob@example.com,nps,6,ok,2026-01-13\n",
    )
    .await;
    load(
        lake,
        dir,
        RawTable::Consents,
        "consents.csv",
        "consent_id,anonymous_id,purpose,status,recorded_at,source\n\
         K1,cookie-jane,email_marketing,granted,2026-01-12,cmp\n\
         K2,cookie-bob,email_marketing,denied,2026-01-12,cmp\n",
    )
    .await;
    assert_eq!(
        refresh_now(lake).await.profiles,
        2,
        "Jane's cookie joined her profile"
    );
}

/// Every row of every raw table about Bob, as text, table by table.
async fn bobs_rows(lake: &Lake) -> Vec<String> {
    let mut rows = Vec::new();
    for (table, columns, key) in [
        ("customers", "*", "customer_id = 'C-BOB'"),
        ("orders", "*", "order_id = 'O-BOB-1'"),
        ("order_items", "*", "order_id = 'O-BOB-1'"),
        (
            "events",
            "* EXCEPT (received_at)",
            "anonymous_id = 'cookie-bob'",
        ),
        ("survey_responses", "*", "response_id = 'R2'"),
        ("consents", "*", "consent_id = 'K2'"),
    ] {
        let lines = sql_lines(
            lake,
            &format!("SELECT {columns} FROM raw.{table} WHERE {key} ORDER BY 1"),
        )
        .await;
        assert!(!lines.is_empty(), "Bob is in raw.{table}");
        rows.extend(lines.into_iter().map(|l| format!("{table}: {l}")));
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_person_leaves_no_byte_in_the_lake_and_everyone_else_stays() {
    let (dir, lake) = temp_lake();
    forgotten_everywhere(&lake, dir.path()).await;
}

/// The same on a lake in an S3 bucket (s3s over the bucket's folder): every
/// object the server stores is read back byte by byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_person_leaves_no_byte_in_an_s3_lake() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("cdp-bucket")).unwrap();
    let s3 = crate::s3::S3Server::start(root.path()).await;
    let lake =
        Lake::open_with_options("s3://cdp-bucket/prod/lake", &crate::s3::s3_options(s3.addr))
            .unwrap();
    forgotten_everywhere(&lake, root.path()).await;
    assert!(
        root.path()
            .join("cdp-bucket/prod/lake/raw/orders/_delta_log")
            .is_dir(),
        "the lake was in the bucket"
    );
}

/// Jane and Bob landed in `lake` (whose bytes are all under `root`), an
/// export of Jane, then her erasure: nothing of her stays anywhere under
/// `root`, Bob's rows are unchanged, a second erasure changes nothing, and
/// she cannot come back through ingest.
async fn forgotten_everywhere(lake: &Lake, root: &Path) {
    let (dir, lake) = (root, lake.clone());
    let files_dir = tempfile::tempdir().unwrap();
    land_jane_and_bob(&lake, files_dir.path()).await;
    let before = found_in_lake(dir, &JANE);
    assert!(
        JANE.iter().all(|n| before.iter().any(|f| f.starts_with(n))),
        "the scan finds each of Jane's identifiers before: {before:#?}"
    );
    let bob_before = bobs_rows(&lake).await;
    // A scheduled job's table holding both people.
    let ctx = panorama::engine::session(&lake, &Default::default()).unwrap();
    let contacts = panorama::jobs::Job::parse(
        "contacts",
        "test",
        "-- schedule: 0 3 * * *\n-- target: contacts\n-- mode: append\n\
         SELECT profile_id, emails, first_name FROM cdp.profiles",
    )
    .unwrap();
    let run = panorama::jobs::run(
        &ctx,
        &lake,
        &IdentityConfig::default(),
        &contacts,
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(run.rows_written, 2, "{run:?}");

    // Access (art. 15, 20): everything about Jane, nothing about Bob.
    let export = files_dir.path().join("jane.json");
    let exported = panorama::privacy::export(
        &lake,
        &IdentityConfig::default(),
        &[("phone".into(), "06 12 34 56 78".into())],
        &export,
        Some(&files_dir.path().join("jane-csv")),
    )
    .await
    .unwrap();
    let rows = |t: &str| exported.rows.get(t).copied().unwrap_or(0);
    assert_eq!(
        (
            rows("raw.customers"),
            rows("raw.orders"),
            rows("raw.order_items"),
            rows("raw.events"),
            rows("raw.survey_responses"),
            rows("raw.consents"),
            rows("cdp.profiles"),
        ),
        (1, 1, 2, 2, 1, 1, 1),
        "{exported:?}"
    );
    let document: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&export).unwrap()).unwrap();
    assert_eq!(
        document["tables"]["raw.orders"][0]["order_id"], "O-JANE-1",
        "{document:#}"
    );
    assert_eq!(document["tables"]["raw.consents"][0]["status"], "granted");
    let text = document.to_string().to_lowercase();
    assert!(text.contains("jane.doe@example.com") && !text.contains("bob"));
    // The same, one CSV per table on request (portability, art. 20).
    let orders_csv =
        std::fs::read_to_string(files_dir.path().join("jane-csv").join("raw.orders.csv")).unwrap();
    let mut lines = orders_csv.lines();
    assert!(lines.next().unwrap().split(',').any(|c| c == "order_id"));
    assert!(lines.next().unwrap().contains("O-JANE-1"), "{orders_csv}");
    assert_eq!(lines.next(), None, "{orders_csv}");

    // Named by one identifier only: the graph gives the others.
    let done = panorama::privacy::forget(
        &lake,
        &IdentityConfig::default(),
        &[("email".into(), " JANE.DOE@example.com".into())],
        Default::default(),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(done.profiles, 1, "{done:?}");
    assert!(
        done.identifiers >= 5,
        "email, phone, customer id, cookie, user id: {done:?}"
    );
    for table in [
        "raw.customers",
        "raw.orders",
        "raw.order_items",
        "raw.events",
        "raw.survey_responses",
        "raw.consents",
        "system.rejects",
    ] {
        assert!(
            done.rows_removed.get(table).is_some_and(|n| *n > 0),
            "{table}: {done:?}"
        );
    }
    assert_eq!(done.rows_removed["raw.order_items"], 2);
    assert_eq!(done.rows_removed["analytics.contacts"], 1);

    let left = found_in_lake(dir, &JANE);
    assert!(left.is_empty(), "Jane is still in the lake: {left:#?}");
    assert!(
        found_in_lake(dir, &["jane"]).is_empty(),
        "nor her name: {:#?}",
        found_in_lake(dir, &["jane"])
    );
    assert_eq!(
        bobs_rows(&lake).await,
        bob_before,
        "Bob's rows are unchanged"
    );
    assert_eq!(
        sql_lines(&lake, "SELECT count(*) FROM cdp.profiles").await,
        vec!["1"]
    );
    assert_eq!(
        sql_lines(&lake, "SELECT first_name FROM analytics.contacts").await,
        vec!["Bob"]
    );
    assert_eq!(
        sql_lines(
            &lake,
            "SELECT status, kind, id_type, length(value_hash), rows_removed > 0 \
             FROM system.privacy_requests ORDER BY kind, status DESC"
        )
        .await,
        vec![
            "completed | access | phone | 64 | false",
            "started | erasure | email | 64 | false",
            "completed | erasure | email | 64 | true"
        ]
    );
    // The tables changed are still Delta tables every engine can read.
    let table = panorama::lake::delta::open(&lake, &object_store::path::Path::from("raw/orders"))
        .await
        .unwrap()
        .expect("raw.orders");
    assert!(table.version().is_some());

    // Forgetting again finds nothing more and changes nothing.
    let again = panorama::privacy::forget(
        &lake,
        &IdentityConfig::default(),
        &[("email".into(), "jane.doe@example.com".into())],
        Default::default(),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(again.rows(), 0, "{again:?}");
    assert_eq!(bobs_rows(&lake).await, bob_before);

    // Erasure suppressed her: a new export of the CRM that still has her
    // lands Bob's row only, and says it kept one row out.
    let crm = files_dir.path().join("crm-again.csv");
    std::fs::write(
        &crm,
        "customer_id,email,phone,first_name,source,updated_at\n\
         C-JANE2,jane.doe@EXAMPLE.com,,Jane,crm,2026-02-01\n\
         C-BOB,bob@example.com,,Bob,crm,2026-02-01\n",
    )
    .unwrap();
    let options = IngestOptions::default()
        .normalizing(RawTable::Customers, &IdentityConfig::default())
        .unwrap();
    let report = files::load_file(&lake, RawTable::Customers, &crm, &options, |_| {})
        .await
        .unwrap();
    assert_eq!(
        (
            report.rows_landed,
            report.rows_suppressed,
            report.rows_rejected
        ),
        (1, 1, 0)
    );
    assert!(found_in_lake(dir, &JANE).is_empty());
}

/// `CALL panorama.forget` erases over SQL and logs no value (an analyst
/// gets 42501: tests/auth.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_over_sql_erases_and_logs_no_value() {
    let (dir, lake) = temp_lake();
    let files_dir = tempfile::tempdir().unwrap();
    land_jane_and_bob(&lake, files_dir.path()).await;
    let served = serve_lake(dir.path()).await;
    let client = served.client().await;
    client
        .batch_execute("CALL panorama.forget('customer_id', 'C-JANE')")
        .await
        .unwrap();
    assert_eq!(
        scalar(
            &client,
            "SELECT count(*) FROM raw.orders WHERE customer_id = 'C-JANE'"
        )
        .await,
        0
    );
    // Its certificate, by request id, from the command line.
    let id = scalar_text(
        &client,
        "SELECT request_id FROM system.privacy_requests WHERE status = 'completed'",
    )
    .await;
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_panorama"))
        .args(["privacy", "status", &id, "--lake"])
        .arg(dir.path())
        .env_remove("PANORAMA_LAKE")
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{status:?}");
    assert!(
        printed.contains("started")
            && printed.contains("completed")
            && printed.contains("raw.orders"),
        "{printed}"
    );
    assert!(!printed.to_lowercase().contains("c-jane"), "{printed}");
    let log = served.log().join("\n").to_lowercase();
    assert!(!log.contains("c-jane"), "the server log names no value");
    assert!(
        client
            .batch_execute("CALL panorama.forget('email')")
            .await
            .is_err(),
        "an odd number of arguments is refused"
    );
}

/// The shipped retention job erases the events older than their period
/// (`[retention]`, 25 months by default) for good — rows, old file
/// versions, log entries, profiles built from them — keeps the recent
/// ones, and records the removal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retention_job_erases_events_older_than_their_period() {
    let (dir, lake) = temp_lake();
    let files_dir = tempfile::tempdir().unwrap();
    let recent = (chrono::Utc::now() - chrono::Duration::days(1)).to_rfc3339();
    let old = r#"{"type":"page","anonymous_id":"cookie-old","timestamp":"2023-01-01T10:00:00Z"}"#;
    let new = format!(r#"{{"type":"page","anonymous_id":"cookie-new","timestamp":"{recent}"}}"#);
    let body = format!("{old}\n{new}");
    load(
        &lake,
        files_dir.path(),
        RawTable::Events,
        "events.ndjson",
        &body,
    )
    .await;
    assert_eq!(refresh_now(&lake).await.profiles, 2);
    let run = run_shipped_retention(&lake, &IdentityConfig::default(), chrono::Utc::now()).await;
    assert_eq!((run.status, run.rows_written), ("succeeded", 1), "{run:?}");
    assert_eq!(
        sql_lines(&lake, "SELECT anonymous_id FROM raw.events").await,
        vec!["cookie-new"]
    );
    assert_eq!(
        sql_lines(&lake, "SELECT count(*) FROM cdp.profiles").await,
        vec!["1"]
    );
    let left = found_in_lake(dir.path(), &["cookie-old"]);
    assert!(left.is_empty(), "{left:#?}");
    assert_eq!(
        sql_lines(
            &lake,
            "SELECT kind, id_type, rows_removed FROM system.privacy_requests"
        )
        .await,
        vec!["retention | raw.events | 1"]
    );
}

/// Visitors never identified are kept 13 months by default: their older
/// rows go, while an old row of a cookie that later logged in stays (its
/// person's history), as do recent anonymous rows; a period set in
/// `[retention]` replaces the default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_erases_old_rows_of_visitors_never_identified() {
    let (dir, lake) = temp_lake();
    let files_dir = tempfile::tempdir().unwrap();
    let now = chrono::Utc::now();
    let at = |days: i64| (now - chrono::Duration::days(days)).to_rfc3339();
    let event = |id: &str, days: i64| {
        format!(
            r#"{{"type":"page","anonymous_id":"{id}","timestamp":"{}"}}"#,
            at(days)
        )
    };
    let body = [
        event("visitor-gone", 430),
        event("visitor-recent", 20),
        event("cookie-known", 430),
        format!(
            r#"{{"type":"identify","anonymous_id":"cookie-known","email":"kim@example.com","timestamp":"{}"}}"#,
            at(10)
        ),
        format!(
            r#"{{"type":"track","event":"Ordered","user_id":"u-kim","email":"kim@example.com","timestamp":"{}"}}"#,
            at(500)
        ),
        event("visitor-kept-longer", 200),
    ]
    .join("\n");
    let rejected = load(
        &lake,
        files_dir.path(),
        RawTable::Events,
        "events.ndjson",
        &body,
    )
    .await;
    assert_eq!(rejected, 0);
    refresh_now(&lake).await;
    let mut config = IdentityConfig::default();
    assert_eq!(
        config.retention.anonymous,
        panorama::identity::retention::Period::Months(13)
    );
    let run = run_shipped_retention(&lake, &config, now).await;
    assert_eq!((run.status, run.rows_written), ("succeeded", 1), "{run:?}");
    let left = sql_lines(
        &lake,
        "SELECT coalesce(anonymous_id, user_id) FROM raw.events ORDER BY 1",
    )
    .await;
    assert_eq!(
        left,
        vec![
            "cookie-known",
            "cookie-known",
            "u-kim",
            "visitor-kept-longer",
            "visitor-recent"
        ]
    );
    let found = found_in_lake(dir.path(), &["visitor-gone"]);
    assert!(found.is_empty(), "{found:#?}");
    assert_eq!(
        sql_lines(
            &lake,
            "SELECT kind, id_type, rows_removed FROM system.privacy_requests"
        )
        .await,
        vec!["retention | raw.events (anonymous) | 1"]
    );

    // A shorter period from the configuration takes the next one.
    config.retention = toml::from_str("anonymous = \"90 days\"").unwrap();
    let run = run_shipped_retention(&lake, &config, now).await;
    assert_eq!((run.status, run.rows_written), ("succeeded", 1), "{run:?}");
    let left = sql_lines(
        &lake,
        "SELECT count(*) FROM raw.events WHERE anonymous_id = 'visitor-kept-longer'",
    )
    .await;
    assert_eq!(left, vec!["0"]);
}

/// Run the shipped `retention` job on `lake` under `config` at `now`.
async fn run_shipped_retention(
    lake: &Lake,
    config: &IdentityConfig,
    now: chrono::DateTime<chrono::Utc>,
) -> panorama::jobs::Run {
    let job = panorama::jobs::load(lake)
        .await
        .unwrap()
        .into_iter()
        .find(|j| j.name == "retention")
        .expect("the shipped retention job");
    let ctx = panorama::engine::session(lake, &Default::default()).unwrap();
    panorama::jobs::run(&ctx, lake, config, &job, now)
        .await
        .unwrap()
}

/// The one text value `sql` answers.
async fn scalar_text(client: &tokio_postgres::Client, sql: &str) -> String {
    let rows = simple_rows(client, sql).await;
    rows[0][0].clone().expect("a value")
}
