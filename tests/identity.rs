//! Identity resolution and unified profiles, end to end: hand-built raw
//! data, `identity::refresh`, and the `cdp` views read over the Postgres
//! protocol. Every expected value is written out here.

use panorama::identity::{self, IdentityConfig};
use panorama::ingest;
use panorama::lake::Lake;
use panorama::schema::RawTable;
use panorama::schema::rows::TableRows;

use crate::support::*;

/// An event row: (type, anonymous_id, user_id, previous_id, email, at).
type Ev<'a> = (
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    i64,
);

async fn land_events(lake: &Lake, events: &[Ev<'_>]) {
    let mut rows = TableRows::new(RawTable::Events);
    for (i, (kind, anon, user, previous, email, at)) in events.iter().enumerate() {
        rows.text(Some(&format!("m-{at}-{i}")))
            .text(Some(kind))
            .text(None)
            .text(None)
            .text(*anon)
            .text(*user)
            .text(*previous)
            .text(None)
            .text(*email)
            .timestamp(Some(*at))
            .timestamp(Some(*at))
            .text(Some("{}"))
            .text(Some("{}"))
            .text(Some("{}"));
        rows.end_row();
    }
    ingest::land(lake, RawTable::Events, &[rows.finish().unwrap()])
        .await
        .unwrap();
}

async fn refresh(lake: &Lake) -> identity::RefreshReport {
    identity::refresh(
        lake,
        &IdentityConfig::default(),
        identity::Mode::Incremental,
        chrono::DateTime::from_timestamp_micros(JAN_15 + 30 * DAY).unwrap(),
        |_| {},
    )
    .await
    .unwrap()
}

const T: i64 = JAN_15 - 10 * DAY;

/// The profile id an identifier value belongs to.
async fn profile_of(client: &tokio_postgres::Client, value: &str) -> String {
    client
        .query_one(
            "SELECT profile_id FROM cdp.identity_links WHERE id_value = $1",
            &[&value],
        )
        .await
        .unwrap()
        .get(0)
}

async fn scenario() -> (tempfile::TempDir, Lake) {
    let (dir, lake) = temp_lake();
    // Customers C1 (Jane, " Jane.Doe@Example.com", +33 6 12 34 56 78),
    // C2 and C3 (Bob and Tess; Tess has the junk email test@test.com).
    land_fixture(&lake).await;
    land_events(
        &lake,
        &[
            // Jane: a cookie, then a login, then her email on another device.
            ("page", Some("k-laptop"), None, None, None, T),
            (
                "identify",
                Some("k-laptop"),
                Some("u-jane"),
                None,
                Some("JANE.DOE@example.com "),
                T + 1,
            ),
            (
                "identify",
                Some("k-phone"),
                None,
                None,
                Some("jane.doe@example.com"),
                T + 2,
            ),
            // A family computer used by two logged-in people.
            (
                "identify",
                Some("k-family"),
                Some("u-alice"),
                None,
                None,
                T + 3,
            ),
            (
                "identify",
                Some("k-family"),
                Some("u-bob"),
                None,
                None,
                T + 4,
            ),
            // Two strangers who typed the junk email.
            (
                "identify",
                Some("k-x"),
                Some("u-x"),
                None,
                Some("test@test.com"),
                T + 5,
            ),
            (
                "identify",
                Some("k-y"),
                Some("u-y"),
                None,
                Some("test@test.com"),
                T + 6,
            ),
            // An alias: the old cookie becomes u-zoe.
            ("alias", None, Some("u-zoe"), Some("k-old"), None, T + 7),
            ("page", Some("k-old"), None, None, None, T + 8),
        ],
    )
    .await;
    (dir, lake)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_person_across_devices_sources_and_spellings() {
    let (_dir, lake) = scenario().await;
    let report = refresh(&lake).await;
    assert_eq!(report.version, 1);
    assert_eq!(
        report.refused_links, 1,
        "the family computer's second login"
    );

    let server = TestServer::start(&lake).await;
    let client = server.client().await;
    let rows = client
        .query(
            "SELECT profile_id, customer_ids, user_ids, emails, phones, anonymous_ids, \
                    first_name, city, orders, net_orders, \
                    CAST(gross_revenue AS DOUBLE) AS gross, CAST(net_revenue AS DOUBLE) AS net, \
                    preferred_channel, identifies \
             FROM cdp.profiles WHERE 'jane.doe@example.com' = ANY(emails)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "Jane is one profile");
    let jane = &rows[0];
    assert_eq!(jane.get::<_, Vec<String>>("customer_ids"), vec!["C1"]);
    assert_eq!(jane.get::<_, Vec<String>>("user_ids"), vec!["u-jane"]);
    assert_eq!(
        jane.get::<_, Vec<String>>("emails"),
        vec!["jane.doe@example.com"]
    );
    assert_eq!(jane.get::<_, Vec<String>>("phones"), vec!["+33612345678"]);
    assert_eq!(
        jane.get::<_, Vec<String>>("anonymous_ids"),
        vec!["k-laptop", "k-phone"]
    );
    assert_eq!(jane.get::<_, String>("first_name"), "Jane");
    assert_eq!(jane.get::<_, String>("city"), "Paris");
    assert_eq!(jane.get::<_, i64>("orders"), 2);
    assert_eq!(
        jane.get::<_, i64>("net_orders"),
        1,
        "the returned order does not count"
    );
    assert_eq!(jane.get::<_, f64>("gross"), 150.5);
    assert_eq!(jane.get::<_, f64>("net"), 120.5);
    assert_eq!(jane.get::<_, i64>("identifies"), 2);

    // The shared computer: two people, the cookie stays with the first login.
    let family: Vec<(Vec<String>, Option<Vec<String>>)> = client
        .query(
            "SELECT user_ids, anonymous_ids FROM cdp.profiles \
             WHERE array_has(user_ids, 'u-alice') OR array_has(user_ids, 'u-bob') ORDER BY user_ids",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        family,
        vec![
            (
                vec!["u-alice".to_string()],
                Some(vec!["k-family".to_string()])
            ),
            (vec!["u-bob".to_string()], None),
        ]
    );
    let refused = scalar(
        &client,
        "SELECT count(*) FROM cdp.identity_rejections \
             WHERE kind = 'limit_exceeded' AND id_value = 'k-family' AND other_value = 'u-bob'",
    )
    .await;
    assert_eq!(refused, 1, "the refused link is queryable");

    // Junk email links nobody.
    let strangers = scalar(
        &client,
        "SELECT count(DISTINCT profile_id) FROM cdp.identity_links \
             WHERE id_type = 'user_id' AND id_value IN ('u-x', 'u-y')",
    )
    .await;
    assert_eq!(strangers, 2);
    let junk = scalar(
        &client,
        "SELECT count(*) FROM cdp.identity_links WHERE id_value = 'test@test.com'",
    )
    .await;
    assert_eq!(junk, 0);

    // The alias joins the old cookie to the user.
    let zoe: Vec<String> = client
        .query_one(
            "SELECT anonymous_ids FROM cdp.profiles WHERE array_has(user_ids, 'u-zoe')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(zoe, vec!["k-old"]);

    let refreshes = scalar(
        &client,
        "SELECT count(*) FROM system.refreshes WHERE status = 'committed' AND refused_links = 1",
    )
    .await;
    assert_eq!(refreshes, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_are_stable_and_the_older_id_survives_a_merge() {
    let (_dir, lake) = scenario().await;
    refresh(&lake).await;
    let server = TestServer::start(&lake).await;
    let client = server.client().await;
    let jane = profile_of(&client, "u-jane").await;
    let zoe = profile_of(&client, "u-zoe").await;
    assert_ne!(jane, zoe);

    // A second refresh with nothing new changes no id.
    let report = refresh(&lake).await;
    assert_eq!(
        (report.version, report.new_profiles, report.merges),
        (2, 0, 0)
    );
    assert_eq!(profile_of(&client, "u-jane").await, jane);

    // Zoe's old cookie turns out to be Jane's: Jane's profile is older.
    land_events(
        &lake,
        &[(
            "identify",
            Some("k-old"),
            None,
            None,
            Some("jane.doe@example.com"),
            T + 20,
        )],
    )
    .await;
    let report = refresh(&lake).await;
    assert_eq!(
        report.merges, 0,
        "u-zoe and u-jane cannot share a profile: one user_id each"
    );
    assert_eq!(report.refused_links, 2);

    // An anonymous tablet visitor is a profile of its own...
    land_events(
        &lake,
        &[("page", Some("k-tablet"), None, None, None, T + 30)],
    )
    .await;
    refresh(&lake).await;
    let tablet: String = client
        .query_one(
            "SELECT profile_id FROM cdp.identity_links WHERE id_value = 'k-tablet'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_ne!(tablet, jane);
    // ...until it logs in with Jane's email: the older id (Jane's) survives.
    land_events(
        &lake,
        &[(
            "identify",
            Some("k-tablet"),
            None,
            None,
            Some("jane.doe@example.com"),
            T + 31,
        )],
    )
    .await;
    let report = refresh(&lake).await;
    assert_eq!(report.merges, 1, "{report:?}");
    assert_eq!(
        profile_of(&client, "u-jane").await,
        jane,
        "Jane's older id survives"
    );
    let merge = client
        .query_one(
            "SELECT kind, from_profile_id, to_profile_id, cause_type, cause_value FROM cdp.profile_merges",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(merge.get::<_, String>(0), "merge");
    assert_eq!(merge.get::<_, String>(1), tablet);
    assert_eq!(merge.get::<_, String>(2), jane);
    assert_eq!(merge.get::<_, String>(3), "anonymous_id");
    assert_eq!(merge.get::<_, String>(4), "k-tablet");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_materialized_view_from_sql_commits_a_version_readers_see_at_once() {
    let (_dir, lake) = scenario().await;
    let server = TestServer::start_with_refresh(&lake, JAN_15 + 30 * DAY).await;
    let client = server.client().await;
    let before = scalar(&client, "SELECT count(*) FROM cdp.profiles").await;
    assert_eq!(before, 0, "no profiles before the first refresh");
    client
        .simple_query("REFRESH MATERIALIZED VIEW cdp.profiles")
        .await
        .unwrap();
    let after = scalar(&client, "SELECT count(*) FROM cdp.profiles").await;
    // Jane, Bob (C2), Tess (C3), Alice, Bob-the-user, u-x, u-y, Zoe, and the
    // guest who ordered with guest@example.com.
    assert_eq!(after, 9);
    let err = client
        .simple_query("REFRESH MATERIALIZED VIEW raw.orders")
        .await
        .unwrap_err();
    assert_eq!(err.as_db_error().unwrap().code().code(), "42809");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_killed_midway_leaves_the_last_version_readable() {
    let (dir, lake) = temp_lake();
    panorama::seed::seed(&lake, |_, _| {}).await.unwrap();
    // Every version has the same profiles whatever its clock (no idle
    // visitor is left out), so a kill before or after the commit must
    // both leave exactly this count readable.
    let config_path = dir.path().join("panorama.toml");
    std::fs::write(&config_path, "[identity]\nanonymous_idle_days = 100000\n").unwrap();
    let config = IdentityConfig {
        anonymous_idle_days: 100_000,
        ..IdentityConfig::default()
    };
    let at = chrono::DateTime::from_timestamp_micros(JAN_15 + 30 * DAY).unwrap();
    let refresh = || identity::refresh(&lake, &config, identity::Mode::Incremental, at, |_| {});
    let first = refresh().await.unwrap();
    let server = TestServer::start(&lake).await;
    let client = server.client().await;
    let count = "SELECT count(*) FROM cdp.profiles";
    let before = scalar(&client, count).await;
    assert_eq!(before as usize, first.profiles);

    // Kill `panorama refresh --full` at several points of its run.
    for delay_ms in [50u64, 150, 400, 900] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_panorama"))
            .args(["refresh", "--full", "--lake", dir.path().to_str().unwrap()])
            .arg("--config")
            .arg(&config_path)
            .env_remove("PANORAMA_LAKE")
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
        let _ = child.kill();
        let _ = child.wait();
        let during = scalar(&client, count).await;
        assert_eq!(
            during, before,
            "readers see a whole version after a kill at {delay_ms} ms"
        );
    }
    let next = refresh().await.unwrap();
    assert!(next.version > first.version);
    assert_eq!(next.profiles, first.profiles);
    let after = scalar(&client, count).await;
    assert_eq!(after, before);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_blocks_a_link_and_the_profile_splits_deterministically() {
    let (_dir, lake) = scenario().await;
    let server = TestServer::start_with_refresh(&lake, JAN_15 + 30 * DAY).await;
    let client = server.client().await;
    client
        .simple_query("REFRESH MATERIALIZED VIEW cdp.profiles")
        .await
        .unwrap();
    let jane = profile_of(&client, "u-jane").await;
    assert_eq!(profile_of(&client, "k-phone").await, jane);

    // The phone cookie was linked to Jane only through her email: cut it.
    // The value is normalised like the identity rules do.
    client
        .simple_query(
            "CALL panorama.block_link('anonymous_id', 'k-phone', 'email', ' Jane.Doe@EXAMPLE.com', 'shared tablet')",
        )
        .await
        .unwrap();
    client
        .simple_query("REFRESH MATERIALIZED VIEW cdp.profiles")
        .await
        .unwrap();
    let phone = profile_of(&client, "k-phone").await;
    assert_ne!(phone, jane, "the cookie is a profile of its own");
    assert_eq!(
        profile_of(&client, "u-jane").await,
        jane,
        "the older part keeps the id"
    );
    assert_eq!(profile_of(&client, "k-laptop").await, jane);
    let split = simple_rows(
        &client,
        "SELECT kind, from_profile_id, to_profile_id FROM cdp.profile_merges WHERE kind = 'split'",
    )
    .await;
    assert_eq!(
        split,
        vec![vec![
            Some("split".into()),
            Some(jane.clone()),
            Some(phone.clone())
        ]]
    );
    let refused = scalar(
        &client,
        "SELECT count(*) FROM cdp.identity_rejections \
         WHERE kind = 'blocked_link' AND id_value = 'jane.doe@example.com' AND other_value = 'k-phone'",
    )
    .await;
    assert_eq!(refused, 1, "the blocked link is listed");
    let decisions = simple_rows(
        &client,
        "SELECT action, id_type, id_value, other_type, other_value, reason FROM system.identity_blocks",
    )
    .await;
    assert_eq!(
        decisions,
        vec![
            [
                "block",
                "anonymous_id",
                "k-phone",
                "email",
                "jane.doe@example.com",
                "shared tablet"
            ]
            .map(|s| Some(s.to_string()))
            .to_vec()
        ]
    );

    // A full rebuild from raw data reproduces the same ids.
    identity::refresh(
        &lake,
        &IdentityConfig::default(),
        identity::Mode::Full,
        chrono::DateTime::from_timestamp_micros(JAN_15 + 31 * DAY).unwrap(),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(profile_of(&client, "k-phone").await, phone);
    assert_eq!(profile_of(&client, "u-jane").await, jane);

    // Blocking a value: the junk never links; unknown types are refused.
    let err = client
        .simple_query("CALL panorama.block_identifier('colour', 'red')")
        .await
        .unwrap_err();
    let err = err.as_db_error().unwrap();
    assert_eq!(err.code().code(), "22023");
    assert!(
        err.message().contains("unknown identifier type 'colour'"),
        "{}",
        err.message()
    );

    // Lifting the block merges the cookie back; Jane's older id survives.
    client
        .simple_query(
            "CALL panorama.unblock_link('anonymous_id', 'k-phone', 'email', 'jane.doe@example.com')",
        )
        .await
        .unwrap();
    client
        .simple_query("REFRESH MATERIALIZED VIEW cdp.profiles")
        .await
        .unwrap();
    assert_eq!(profile_of(&client, "k-phone").await, jane);
    let merged = scalar(
        &client,
        &format!(
            "SELECT count(*) FROM cdp.profile_merges WHERE kind = 'merge' \
             AND from_profile_id = '{phone}' AND to_profile_id = '{jane}'"
        ),
    )
    .await;
    assert_eq!(merged, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_file_with_a_missing_or_mistyped_identifier_column_fails_the_refresh_by_name() {
    use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    let (_dir, lake) = scenario().await;
    let first = refresh(&lake).await;
    // One good order, as a user's tool might export it...
    let mut rows = TableRows::new(RawTable::Orders);
    rows.text(Some("O9"))
        .text(Some("C1"))
        .text(Some("jane.doe@example.com"))
        .text(None)
        .timestamp(Some(T))
        .money(Some(500))
        .text(Some("EUR"))
        .text(Some("completed"))
        .text(Some("web"))
        .int(Some(1));
    rows.end_row();
    let good = rows.finish().unwrap();
    let attempt = |batch: RecordBatch| {
        let lake = lake.clone();
        async move {
            let mut bytes = Vec::new();
            let mut writer =
                datafusion::parquet::arrow::ArrowWriter::try_new(&mut bytes, batch.schema(), None)
                    .unwrap();
            writer.write(&batch).unwrap();
            writer.close().unwrap();
            commit_foreign_file(&lake, RawTable::Orders, "part-bad.parquet", bytes.into()).await;
            let err = identity::refresh(
                &lake,
                &IdentityConfig::default(),
                identity::Mode::Incremental,
                chrono::DateTime::from_timestamp_micros(JAN_15 + 30 * DAY).unwrap(),
                |_| {},
            )
            .await
            .unwrap_err()
            .to_string();
            remove_foreign_file(&lake, RawTable::Orders, "part-bad.parquet").await;
            err
        }
    };
    // ...without its customer_id column,
    let keep: Vec<usize> = (0..good.num_columns()).filter(|&i| i != 1).collect();
    let err = attempt(good.project(&keep).unwrap()).await;
    assert_eq!(
        err,
        "raw file raw/orders/part-bad.parquet: column 'customer_id' missing (the identity rules read it)"
    );
    // ...or with numbers where emails belong.
    let mut fields: Vec<Field> = good
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields[2] = Field::new("email", DataType::Int64, true);
    let mut columns: Vec<ArrayRef> = good.columns().to_vec();
    columns[2] = Arc::new(Int64Array::from(vec![42]));
    let err = attempt(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()).await;
    assert_eq!(
        err,
        "raw file raw/orders/part-bad.parquet: column 'email' has type Int64, expected Utf8"
    );

    // Nothing was committed; both failures are recorded.
    let manifest = panorama::lake::manifest::Manifest::load(&lake)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(manifest.version, first.version);
    let server = TestServer::start(&lake).await;
    let client = server.client().await;
    let failed = scalar(
        &client,
        "SELECT count(*) FROM system.refreshes WHERE status = 'failed' AND error LIKE '%part-bad.parquet%'",
    )
    .await;
    assert_eq!(failed, 2);
    // With the bad file gone, the next refresh succeeds.
    assert_eq!(refresh(&lake).await.version, first.version + 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_from_two_clients_at_once_commit_one_after_the_other() {
    let (_dir, lake) = scenario().await;
    let server = TestServer::start_with_refresh(&lake, JAN_15 + 30 * DAY).await;
    let (a, b) = (server.client().await, server.client().await);
    let (ra, rb) = tokio::join!(
        a.simple_query("REFRESH MATERIALIZED VIEW cdp.profiles"),
        b.simple_query("REFRESH MATERIALIZED VIEW cdp.profiles")
    );
    ra.unwrap();
    rb.unwrap();
    let versions = simple_rows(
        &a,
        "SELECT version, full FROM system.refreshes WHERE status = 'committed' ORDER BY version",
    )
    .await;
    assert_eq!(
        versions,
        vec![
            vec![Some("1".into()), Some("t".into())],
            vec![Some("2".into()), Some("f".into())]
        ],
        "the second waited for the first and read nothing new"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_built_by_an_older_panorama_are_refused_until_refreshed() {
    let (_dir, lake) = scenario().await;
    refresh(&lake).await;
    // As an older build would have left it: another views format.
    let mut manifest = panorama::lake::manifest::Manifest::load(&lake)
        .await
        .unwrap()
        .unwrap();
    manifest.views_format = 1;
    manifest.commit(&lake).await.unwrap();
    let server = TestServer::start(&lake).await;
    let client = server.client().await;
    let err = client
        .query("SELECT count(*) FROM cdp.profiles", &[])
        .await
        .unwrap_err();
    let message = err.as_db_error().unwrap().message().to_string();
    assert!(
        message.contains("cdp.profiles was built by an older version of Panorama"),
        "{message}"
    );
    refresh(&lake).await;
    assert_eq!(
        scalar(&client, "SELECT count(*) FROM cdp.profiles").await,
        9
    );
    server.stop().await;
}

/// Refresh under `config`, incrementally when the stored state allows.
async fn refresh_with(lake: &Lake, config: &IdentityConfig) -> identity::RefreshReport {
    identity::refresh(
        lake,
        config,
        identity::Mode::Incremental,
        chrono::DateTime::from_timestamp_micros(JAN_15 + 30 * DAY).unwrap(),
        |_| {},
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_added_to_the_blocked_list_unlinks_on_the_next_incremental_refresh() {
    let (_dir, lake) = temp_lake();
    let shared = Some("shared@corp.example");
    let event = |anon, email, at| ("identify", Some(anon), None, None, email, at);
    land_events(&lake, &[event("a1", shared, T), event("a2", shared, T + 1)]).await;
    let open = IdentityConfig::default();
    let report = refresh_with(&lake, &open).await;
    assert_eq!(report.profiles, 1, "two cookies through one email");

    // The email turns out to be a shared inbox: the list grows.
    let mut listed = IdentityConfig::default();
    listed
        .blocked_values
        .push(" Shared@Corp.example ".to_string());
    land_events(&lake, &[event("a3", None, T + 2)]).await;
    let report = refresh_with(&lake, &listed).await;
    assert!(!report.full, "{:?}", report.full_reason);
    assert_eq!(report.profiles, 3, "a1, a2 and a3 apart: {report:?}");
    assert_eq!(report.blocked_values, 1);

    // Under the same list, a refresh that reads new rows of the email
    // (but compares only identifiers without a profile with the list)
    // keeps it blocked.
    land_events(&lake, &[event("a4", shared, T + 3)]).await;
    let report = refresh_with(&lake, &listed).await;
    assert!(!report.full, "{:?}", report.full_reason);
    assert_eq!(report.profiles, 4, "a4 joins nobody: {report:?}");
    assert_eq!(report.blocked_values, 1);

    // Taken off the list again: the email joins the cookies once more.
    land_events(&lake, &[event("a5", None, T + 4)]).await;
    let report = refresh_with(&lake, &open).await;
    assert!(!report.full, "{:?}", report.full_reason);
    assert_eq!(
        report.profiles, 3,
        "a1, a2, a4 and the email; a3; a5: {report:?}"
    );
    assert_eq!(report.blocked_values, 0);
}

/// A custom identifier read from a column that also feeds a profile fact
/// (a loyalty id kept in `customers.postal_code`, an order's `channel`):
/// the column is read as a dictionary for identity and as text for the
/// fact. Every such column, in every table that feeds facts, refreshes
/// and keeps the fact (this used to panic in the scan).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_identifier_column_may_also_feed_profile_facts() {
    use panorama::identity::config::{IdentifierSource, IdentifierType};
    use panorama::identity::normalize::Normalize;
    let fact_columns = [
        ("customers", "first_name"),
        ("customers", "last_name"),
        ("customers", "city"),
        ("customers", "postal_code"),
        ("customers", "country"),
        ("customers", "loyalty_tier"),
        ("customers", "source"),
        ("orders", "status"),
        ("orders", "channel"),
    ];
    for (table, column) in fact_columns {
        let (_dir, lake) = temp_lake();
        land_fixture(&lake).await;
        let mut config = IdentityConfig::default();
        config.types.push(IdentifierType {
            name: "probe".into(),
            normalize: Normalize::Text,
            max_per_profile: None,
            priority: 9,
            invalid: Default::default(),
        });
        config.sources.push(IdentifierSource {
            table: table.into(),
            column: column.into(),
            id_type: "probe".into(),
            json_path: None,
        });
        identity::refresh(
            &lake,
            &config,
            identity::Mode::Full,
            chrono::DateTime::from_timestamp_micros(JAN_15 + 30 * DAY).expect("time"),
            |_| {},
        )
        .await
        .unwrap_or_else(|e| panic!("{table}.{column}: {e}"));
        let ctx = panorama::engine::session(
            &lake,
            &panorama::engine::EngineOptions {
                identity: config.clone(),
                ..Default::default()
            },
        )
        .expect("session");
        let batches = ctx
            .sql("SELECT city, loyalty_tier, orders FROM cdp.profiles WHERE array_has(customer_ids, 'C1')")
            .await
            .expect("plan")
            .collect()
            .await
            .expect("run");
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .expect("format")
            .to_string();
        assert!(
            text.contains("Paris") && text.contains("gold"),
            "{table}.{column}: the facts are kept\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_a_rule_refuses_are_counted_or_kept_as_the_type_says() {
    use panorama::identity::normalize::Invalid;
    use panorama::ingest::files::{self, IngestOptions};

    let (dir, lake) = temp_lake();
    let csv = dir.path().join("crm.csv");
    std::fs::write(
        &csv,
        "customer_id,email,phone,source,updated_at\n\
         C1,ann@x.com,+33 6 12 34 56 78,crm,2026-01-10\n\
         C2,not-an-email,9123456789,crm,2026-01-10\n\
         C3,cy@z.com,9123456789,crm,2026-01-11\n",
    )
    .unwrap();
    files::load_file(
        &lake,
        RawTable::Customers,
        &csv,
        &IngestOptions::default(),
        |_| {},
    )
    .await
    .unwrap();
    let config = IdentityConfig::default();
    let report = refresh_with(&lake, &config).await;
    // Under the default rules (phones of France), a US number and a
    // malformed email link nothing, and say so.
    // Counted per source and per file (the one file loaded).
    let totals = |report: &identity::RefreshReport| -> Vec<(String, u64, Vec<String>)> {
        report
            .refused_values
            .iter()
            .map(|(source, r)| (source.clone(), r.total, r.files.keys().cloned().collect()))
            .collect()
    };
    let counted = totals(&report);
    assert_eq!(
        counted
            .iter()
            .map(|(s, n, _)| (s.as_str(), *n))
            .collect::<Vec<_>>(),
        [
            ("raw.customers.email (email)", 1),
            ("raw.customers.phone (phone)", 2)
        ]
    );
    let file = &counted[0].2;
    assert!(
        file.len() == 1 && file[0].starts_with("raw/customers/") && file[0].ends_with(".parquet"),
        "{file:?}"
    );
    assert_eq!(counted[1].2, *file);
    let recorded = sql_lines(&lake, "SELECT refused_values FROM system.refreshes").await;
    let recorded: serde_json::Value = serde_json::from_str(&recorded[0]).unwrap();
    assert_eq!(
        recorded,
        serde_json::json!({
            "raw.customers.email (email)": {"total": 1, "files": {file[0].clone(): 1}},
            "raw.customers.phone (phone)": {"total": 2, "files": {file[0].clone(): 2}},
        })
    );
    assert_eq!(
        sql_lines(
            &lake,
            "SELECT count(*) FROM cdp.identity_links WHERE id_type = 'phone'"
        )
        .await,
        vec!["1"]
    );

    // Kept as sent: the shared number now links C2 and C3.
    let mut keep = IdentityConfig::default();
    for t in &mut keep.types {
        if t.name == "phone" {
            t.invalid = Invalid::Keep;
        }
    }
    let report = identity::refresh(
        &lake,
        &keep,
        identity::Mode::Full,
        chrono::DateTime::from_timestamp_micros(JAN_15 + 30 * DAY).unwrap(),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(
        totals(&report)
            .iter()
            .map(|(s, n, _)| (s.as_str(), *n))
            .collect::<Vec<_>>(),
        [("raw.customers.email (email)", 1)]
    );
    // The number is an identifier now (joining C2; C3 keeps its own
    // profile, as one customer_id per profile allows).
    assert_eq!(
        sql_lines(
            &lake,
            "SELECT id_value FROM cdp.identity_links WHERE id_type = 'phone' ORDER BY 1"
        )
        .await,
        vec!["+33612345678", "9123456789"]
    );
}
