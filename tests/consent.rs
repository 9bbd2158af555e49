//! Consent as a contract: a profile's answer per purpose comes from
//! `raw.consents` and from the preferences SDKs send with events, the
//! latest record winning; two profiles that answered differently merge
//! into a `conflict`, which never counts as granted; an opt-in purpose
//! without an answer is not granted; activation jobs with a purpose leave
//! out (and count) everyone else; `privacy proof` shows the records.

use std::path::Path;

use panorama::engine::{self, EngineOptions};
use panorama::identity::{self, IdentityConfig};
use panorama::ingest::files::{self, IngestOptions};
use panorama::lake::Lake;
use panorama::schema::RawTable;

use crate::support::*;

fn config() -> IdentityConfig {
    let mut config = IdentityConfig::default();
    config
        .consent
        .sdk_categories
        .insert("Advertising".into(), "ads".into());
    config
}

async fn load(lake: &Lake, dir: &Path, table: RawTable, name: &str, body: &str) {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    let options = IngestOptions::default()
        .normalizing(table, &config())
        .unwrap();
    let report = files::load_file(lake, table, &path, &options, |_| {})
        .await
        .unwrap();
    assert_eq!(report.rows_rejected, 0, "{name}");
}

async fn refresh(lake: &Lake) {
    identity::refresh(
        lake,
        &config(),
        identity::Mode::Incremental,
        chrono::Utc::now(),
        |_| {},
    )
    .await
    .unwrap();
}

/// `customer | email_marketing | ads | analytics` of each customer.
async fn answers(lake: &Lake) -> Vec<String> {
    sql_lines(
        lake,
        "SELECT customer_ids[1], coalesce(consent_email_marketing, '-'), \
         coalesce(consent_ads, '-'), coalesce(consent_analytics, '-') \
         FROM cdp.profiles WHERE customer_ids IS NOT NULL ORDER BY 1",
    )
    .await
}

async fn activation(lake: &Lake, purpose: &str) -> (u64, u64) {
    let ctx = engine::session(
        lake,
        &EngineOptions {
            identity: config(),
            ..Default::default()
        },
    )
    .unwrap();
    let job = panorama::jobs::Job::parse(
        &format!("feed_{purpose}"),
        "test",
        &format!(
            "-- schedule: 0 3 * * *\n-- target: feed_{purpose}\n-- purpose: {purpose}\n\
             SELECT profile_id, emails FROM cdp.profiles WHERE customer_ids IS NOT NULL;"
        ),
    )
    .unwrap();
    let run = panorama::jobs::run(&ctx, lake, &config(), &job, chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(run.status, "succeeded", "{run:?}");
    (run.rows_written, run.rows_left_out)
}

/// A segment saved over the Postgres protocol for a purpose returns only
/// the profiles that granted it (both protocols); the snapshot job counts
/// the others; a segment without `profile_id`, an unknown purpose or
/// another view option is refused and saves nothing.
async fn segments_saved_for_a_purpose_keep_only_grants(lake: &Lake) {
    let server = TestServer::start(lake).await;
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE VIEW analytics.newsletter WITH (purpose = 'email_marketing') AS \
             SELECT profile_id, emails FROM cdp.profiles WHERE customer_ids IS NOT NULL",
        )
        .await
        .unwrap();
    let all = "SELECT count(*) FROM cdp.profiles WHERE customer_ids IS NOT NULL";
    assert_eq!(scalar(&client, all).await, 2);
    // Ann's answer is a conflict: only Ben is in the segment.
    assert_eq!(
        scalar(&client, "SELECT count(*) FROM analytics.newsletter").await,
        1
    );
    let simple = simple_rows(&client, "SELECT count(*) FROM analytics.newsletter").await;
    assert_eq!(simple, [[Some("1".to_string())]]);
    for (sql, expected) in [
        (
            "CREATE VIEW analytics.bad WITH (purpose = 'email_marketing') AS SELECT emails FROM cdp.profiles",
            "must return a profile_id column",
        ),
        (
            "CREATE VIEW analytics.bad WITH (purpose = 'newsletters') AS SELECT profile_id FROM cdp.profiles",
            "is not one of the consent purposes",
        ),
        (
            "CREATE VIEW analytics.bad WITH (security_barrier = true) AS SELECT profile_id FROM cdp.profiles",
            "views take only purpose",
        ),
        (
            "CREATE VIEW analytics.newsletter WITH (purpose = 'ads') AS SELECT profile_id FROM cdp.profiles",
            "already exists",
        ),
    ] {
        let error = client.batch_execute(sql).await.unwrap_err();
        let message = error
            .as_db_error()
            .map(|e| e.message().to_string())
            .unwrap_or_default();
        assert!(message.contains(expected), "{sql}: {message}");
    }
    assert_eq!(
        scalar(
            &client,
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'bad'"
        )
        .await,
        0
    );
    // Prepared (extended protocol) too.
    let row = client
        .query_one(
            "SELECT count(*) FROM analytics.newsletter WHERE profile_id IS NOT NULL",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1);
    server.stop().await;

    let ctx = engine::session(lake, &EngineOptions::default()).unwrap();
    let job = panorama::jobs::Job::parse(
        "snapshots",
        "test",
        "-- schedule: 0 3 * * *\n-- target: segment_membership\n-- kind: segment_snapshot",
    )
    .unwrap();
    let run = panorama::jobs::run(&ctx, lake, &config(), &job, chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(
        (run.status, run.rows_written, run.rows_left_out),
        ("succeeded", 1, 1),
        "{run:?}"
    );
    client_free_drop(lake).await;
}

/// Drop the segment so that the rest of the test sees the lake as before.
async fn client_free_drop(lake: &Lake) {
    let ctx = engine::session(lake, &EngineOptions::default()).unwrap();
    ctx.sql("DROP VIEW analytics.newsletter")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_merge_into_conflicts_sdks_answer_too_and_activation_needs_a_grant() {
    let (_dir, lake) = temp_lake();
    let files_dir = tempfile::tempdir().unwrap();
    let dir = files_dir.path();
    load(
        &lake,
        dir,
        RawTable::Customers,
        "crm.csv",
        "customer_id,email,source,updated_at\n\
         C-ANN,ann@example.com,crm,2026-01-01\n\
         C-BEN,ben@example.com,crm,2026-01-01\n",
    )
    .await;
    // Both said yes to email marketing in the CRM, under notice v3.
    load(
        &lake,
        dir,
        RawTable::Consents,
        "consents.csv",
        "consent_id,customer_id,purpose,status,recorded_at,source,notice_version\n\
         K1,C-ANN,email_marketing,granted,2026-01-02,crm,v3\n\
         K2,C-BEN,email_marketing,granted,2026-01-02,signup_form,v3\n",
    )
    .await;
    // An anonymous visitor refused email marketing and accepted ads in a
    // Segment banner, then logged in as Ann two days later.
    load(
        &lake,
        dir,
        RawTable::Events,
        "web.ndjson",
        &[
            r#"{"message_id":"m1","type":"page","anonymous_id":"cookie-ann","timestamp":"2026-01-03T10:00:00Z","context":{"consent":{"categoryPreferences":{"Email_Marketing":false,"Advertising":true}}}}"#,
            r#"{"message_id":"m2","type":"identify","anonymous_id":"cookie-ann","email":"ann@example.com","timestamp":"2026-01-05T10:00:00Z"}"#,
        ]
        .join("\n"),
    )
    .await;
    refresh(&lake).await;
    assert_eq!(
        answers(&lake).await,
        ["C-ANN | conflict | granted | -", "C-BEN | granted | - | -"],
        "two people's answers merged: a conflict; no answer stays empty"
    );
    // Email marketing: Ann's conflict does not count as a grant; ads need
    // an opt-in Ben never gave.
    assert_eq!(activation(&lake, "email_marketing").await, (1, 1));
    assert_eq!(activation(&lake, "ads").await, (1, 1));
    assert_eq!(
        sql_lines(&lake, "SELECT count(*) FROM analytics.feed_ads").await,
        ["1"]
    );
    segments_saved_for_a_purpose_keep_only_grants(&lake).await;

    // Ben refuses through RudderStack's consent manager; Ann, logged in,
    // accepts again: the latest answer wins for both.
    load(
        &lake,
        dir,
        RawTable::Events,
        "web2.ndjson",
        &[
            r#"{"message_id":"m3","type":"track","event":"Viewed","anonymous_id":"cookie-ben","email":"ben@example.com","timestamp":"2026-01-06T10:00:00Z","context":{"consentManagement":{"allowedConsentIds":["analytics"],"deniedConsentIds":["email_marketing"]}}}"#,
            r#"{"message_id":"m4","type":"page","anonymous_id":"cookie-ann","timestamp":"2026-01-08T10:00:00Z","context":{"consent":{"categoryPreferences":{"email_marketing":true}}}}"#,
        ]
        .join("\n"),
    )
    .await;
    refresh(&lake).await;
    assert_eq!(
        answers(&lake).await,
        [
            "C-ANN | granted | granted | -",
            "C-BEN | denied | - | granted"
        ]
    );
    assert_eq!(activation(&lake, "email_marketing").await, (1, 1));

    // A purpose the lake does not declare is refused by name.
    let ctx = engine::session(&lake, &EngineOptions::default()).unwrap();
    let job = panorama::jobs::Job::parse(
        "feed_x",
        "test",
        "-- schedule: 0 3 * * *\n-- target: feed_x\n-- purpose: newsletters\nSELECT profile_id FROM cdp.profiles",
    )
    .unwrap();
    let run = panorama::jobs::run(&ctx, &lake, &config(), &job, chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(run.status, "failed");
    assert!(
        run.error
            .as_deref()
            .is_some_and(|e| e.contains("purpose \"newsletters\" is not one of")),
        "{run:?}"
    );

    // The proof for Ann: every record, its source, time and notice.
    let proof = panorama::privacy::proof(
        &lake,
        &config(),
        &[("email".into(), "ANN@example.com".into())],
    )
    .await
    .unwrap();
    assert_eq!(proof.profiles.len(), 1);
    assert_eq!(proof.answers["email_marketing"], ["granted"]);
    assert_eq!(proof.answers["ads"], ["granted"]);
    assert!(proof.answers["analytics"].is_empty());
    let evidence: Vec<String> = proof
        .evidence
        .iter()
        .map(|e| {
            format!(
                "{} {} {} {} {} {}",
                e.purpose,
                e.recorded_at,
                e.status,
                e.source,
                e.record,
                e.notice_version.as_deref().unwrap_or("-")
            )
        })
        .collect();
    assert_eq!(
        evidence,
        [
            "ads 2026-01-03T10:00:00Z granted sdk raw.events.m1 -",
            "email_marketing 2026-01-02T00:00:00Z granted crm raw.consents.K1 v3",
            "email_marketing 2026-01-03T10:00:00Z denied sdk raw.events.m1 -",
            "email_marketing 2026-01-08T10:00:00Z granted sdk raw.events.m4 -",
        ]
    );
    // Audited like every privacy request: a salted hash, not the email.
    let audit = sql_lines(
        &lake,
        "SELECT kind, status, id_type, value_hash FROM system.privacy_requests WHERE kind = 'proof'",
    )
    .await;
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert!(audit[0].starts_with("proof | completed | email | "));
    assert!(!audit[0].contains("ann"), "{audit:?}");
}
