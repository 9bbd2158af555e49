//! Segmentation, scoring and jobs, end to end over the Postgres protocol:
//! the survey and RFM functions, the shipped analytics views, saved
//! segments, segment snapshots, scheduled jobs and exports. Every expected
//! answer is computed by hand and written out here.

use chrono::Utc;
use panorama::engine::{self, EngineOptions};
use panorama::identity::consent::ConsentConfig;
use panorama::identity::{self, IdentityConfig};
use panorama::ingest;
use panorama::jobs::{self, Job};
use panorama::lake::Lake;
use panorama::schema::RawTable;
use panorama::schema::rows::TableRows;

use crate::support::*;

const NOW_DAY: i64 = 86_400_000_000;

/// Five customers C1..C5: Ck has k net orders of 10.00 each, the last one
/// (60 - 10k) days and an hour ago; C2 granted email marketing, C4 denied
/// it, the others never answered.
async fn land_buyers(lake: &Lake) {
    let now = Utc::now().timestamp_micros();
    let mut customers = TableRows::new(RawTable::Customers);
    let mut orders = TableRows::new(RawTable::Orders);
    for k in 1..=5i64 {
        let id = format!("C{k}");
        customers
            .text(Some(&id))
            .text(Some(&format!("c{k}@example.com")))
            .text(None)
            .text(Some(&format!("Name{k}")));
        for _ in 0..5 {
            customers.text(None);
        }
        customers
            .date(None)
            .text(None)
            .boolean(None)
            .text(Some("crm"))
            .timestamp(Some(now - 100 * NOW_DAY))
            .timestamp(Some(now - 100 * NOW_DAY));
        customers.end_row();
        let last = now - (60 - 10 * k) * NOW_DAY - 3_600_000_000;
        for n in 0..k {
            orders
                .text(Some(&format!("O{k}-{n}")))
                .text(Some(&id))
                .text(None)
                .text(None)
                .timestamp(Some(last - n * 7 * NOW_DAY))
                .money(Some(1_000))
                .text(Some("EUR"))
                .text(Some("completed"))
                .text(Some("web"))
                .int(Some(1));
            orders.end_row();
        }
    }
    let mut consents = TableRows::new(RawTable::Consents);
    consents
        .text(Some("K1"))
        .text(Some("C4"))
        .text(None)
        .text(None)
        .text(Some("email_marketing"))
        .text(Some("denied"))
        .timestamp(Some(now - NOW_DAY))
        .text(Some("crm"));
    consents.end_row();
    consents
        .text(Some("K2"))
        .text(Some("C2"))
        .text(None)
        .text(None)
        .text(Some("email_marketing"))
        .text(Some("granted"))
        .timestamp(Some(now - NOW_DAY))
        .text(Some("signup_form"));
    consents.end_row();
    for (table, mut rows) in [
        (RawTable::Customers, customers),
        (RawTable::Orders, orders),
        (RawTable::Consents, consents),
    ] {
        ingest::land(lake, table, &[rows.finish().unwrap()])
            .await
            .unwrap();
    }
}

/// Survey answers: (survey, score, customer).
async fn land_answers(lake: &Lake, answers: &[(&str, i64, &str)]) {
    let mut rows = TableRows::new(RawTable::SurveyResponses);
    for (i, (survey, score, customer)) in answers.iter().enumerate() {
        rows.text(Some(&format!("R{i}")))
            .text(Some(customer))
            .text(None)
            .text(None)
            .text(Some(survey))
            .int(Some(*score))
            .text(Some(&format!("comment {i}")))
            .text(Some("email"))
            .timestamp(Some(JAN_15 + i as i64));
        rows.end_row();
    }
    ingest::land(lake, RawTable::SurveyResponses, &[rows.finish().unwrap()])
        .await
        .unwrap();
}

async fn refresh(lake: &Lake) {
    identity::refresh(
        lake,
        &IdentityConfig::default(),
        identity::Mode::Incremental,
        Utc::now(),
        |_| {},
    )
    .await
    .unwrap();
}

async fn float(client: &tokio_postgres::Client, sql: &str) -> f64 {
    client.query_one(sql, &[]).await.unwrap().get::<_, f64>(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nps_csat_and_ces_of_known_answers() {
    let (_dir, lake) = temp_lake();
    // NPS: promoters 10 10 9 9 9, passives 8 7, detractors 6 2 0 → 50 % − 30 % = 20.
    // Margin: 1.96 × √((0.5 + 0.3 − 0.2²) / 10) × 100 = 54.03.
    // CSAT: 4 and 5 out of 5 4 4 3 1 → 60 %. CES: mean of 1 2 3 7 → 3.25.
    let mut answers: Vec<(&str, i64, &str)> = [10, 10, 9, 9, 9, 8, 7, 6, 2, 0]
        .iter()
        .map(|&s| ("nps", s, "C1"))
        .collect();
    answers.extend([5, 4, 4, 3, 1].iter().map(|&s| ("csat", s, "C2")));
    answers.extend([1, 2, 3, 7].iter().map(|&s| ("ces", s, "C3")));
    land_answers(&lake, &answers).await;
    let server = TestServer::start(&lake).await;
    let client = server.client().await;
    let nps = "FROM raw.survey_responses WHERE survey = 'nps'";
    assert_eq!(
        float(&client, &format!("SELECT nps(score) {nps}")).await,
        20.0
    );
    let moe = float(&client, &format!("SELECT nps_moe(score) {nps}")).await;
    assert!((moe - 54.03).abs() < 0.01, "{moe}");
    let csat = "SELECT csat(score) FROM raw.survey_responses WHERE survey = 'csat'";
    assert_eq!(float(&client, csat).await, 60.0);
    let ces = "SELECT ces(score) FROM raw.survey_responses WHERE survey = 'ces'";
    assert_eq!(float(&client, ces).await, 3.25);
    // The shipped monthly view: one month, ten answers.
    let month = client
        .query_one(
            "SELECT responses, nps, nps_moe FROM analytics.nps_by_month",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(month.get::<_, i64>(0), 10);
    assert_eq!(month.get::<_, f64>(1), 20.0);
    let by_month = client
        .query_one(
            "SELECT csat_responses, csat, ces_responses, ces FROM analytics.csat_ces_by_month",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(by_month.get::<_, i64>(0), 5);
    assert_eq!(by_month.get::<_, f64>(1), 60.0);
    assert_eq!(by_month.get::<_, i64>(2), 4);
    assert_eq!(by_month.get::<_, f64>(3), 3.25);
    // By channel (every answer came by email) and by segment (C2 and C3
    // have no profile here: no refresh ran, so 'Unknown').
    let by_channel = client
        .query_one(
            "SELECT channel, csat, ces FROM analytics.csat_ces_by_channel",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(by_channel.get::<_, String>(0), "email");
    assert_eq!(by_channel.get::<_, f64>(1), 60.0);
    assert_eq!(by_channel.get::<_, f64>(2), 3.25);
    let by_segment = client
        .query_one(
            "SELECT segment, csat_responses, ces_responses FROM analytics.csat_ces_by_segment",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(by_segment.get::<_, String>(0), "Unknown");
    assert_eq!(by_segment.get::<_, i64>(1), 5);
    assert_eq!(by_segment.get::<_, i64>(2), 4);
    // Out of scale: an error naming the value, not a silent count.
    let err = client
        .query("SELECT csat(score) FROM raw.survey_responses", &[])
        .await
        .unwrap_err();
    let message = err.as_db_error().unwrap().message().to_string();
    assert!(
        message.contains("csat: score 7 is outside the 1..5 scale")
            || message.contains("csat: score 10 is outside the 1..5 scale"),
        "{message}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfm_quintiles_segments_and_nps_by_segment() {
    let (_dir, lake) = temp_lake();
    land_buyers(&lake).await;
    // C5 (Champions) is a promoter, C1 (Lost) a detractor with a comment.
    land_answers(&lake, &[("nps", 10, "C5"), ("nps", 3, "C1")]).await;
    refresh(&lake).await;
    let server = TestServer::start(&lake).await;
    let client = server.client().await;
    let rows = simple_rows(
        &client,
        "SELECT l.id_value, r.recency_days, r.frequency, r.monetary, r.r, r.f, r.m, r.segment \
         FROM analytics.rfm r JOIN cdp.identity_links l \
           ON l.profile_id = r.profile_id AND l.id_type = 'customer_id' \
         ORDER BY 1",
    )
    .await;
    let expected: Vec<Vec<Option<String>>> = [
        ["C1", "50", "1", "10.00", "1", "1", "1", "Lost"],
        ["C2", "40", "2", "20.00", "2", "2", "2", "Hibernating"],
        ["C3", "30", "3", "30.00", "3", "3", "3", "Need Attention"],
        ["C4", "20", "4", "40.00", "4", "4", "4", "Loyal Customers"],
        ["C5", "10", "5", "50.00", "5", "5", "5", "Champions"],
    ]
    .iter()
    .map(|r| r.iter().map(|v| Some(v.to_string())).collect())
    .collect();
    assert_eq!(rows, expected);

    let by_segment = simple_rows(
        &client,
        "SELECT segment, responses, CAST(nps AS BIGINT) FROM analytics.nps_by_segment ORDER BY segment",
    )
    .await;
    assert_eq!(
        by_segment,
        vec![
            vec![
                Some("Champions".into()),
                Some("1".into()),
                Some("100".into())
            ],
            vec![Some("Lost".into()), Some("1".into()), Some("-100".into())],
        ]
    );
    let detractors = simple_rows(
        &client,
        "SELECT l.id_value, d.score, d.comment FROM analytics.detractors d \
         JOIN cdp.identity_links l ON l.profile_id = d.profile_id AND l.id_type = 'customer_id'",
    )
    .await;
    assert_eq!(
        detractors,
        vec![vec![
            Some("C1".into()),
            Some("3".into()),
            Some("comment 1".into())
        ]]
    );
    // Ck orders every 7 days: cadence 7 days for the repeat buyers.
    let cadence = simple_rows(
        &client,
        "SELECT l.id_value, CAST(round(v.avg_days_between_orders) AS BIGINT) FROM analytics.customer_value v \
         JOIN cdp.identity_links l ON l.profile_id = v.profile_id AND l.id_type = 'customer_id' \
         WHERE v.net_orders >= 2 ORDER BY 1",
    )
    .await;
    assert_eq!(cadence.len(), 4);
    assert!(
        cadence.iter().all(|r| r[1].as_deref() == Some("7")),
        "{cadence:?}"
    );
    // Usual interval 7 days: more than 14 days since the last order is a risk.
    let at_risk = scalar(
        &client,
        "SELECT count(*) FROM analytics.churn_risk WHERE at_risk",
    )
    .await;
    assert_eq!(at_risk, 3, "C2, C3 and C4; C5 ordered 10 days ago");
    server.stop().await;
}

fn job(name: &str, text: &str) -> Job {
    Job::parse(name, "test", text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_segments_persist_snapshot_and_export_without_denied_consent() {
    let (dir, lake) = temp_lake();
    land_buyers(&lake).await;
    refresh(&lake).await;
    let first = TestServer::start(&lake).await;
    let client = first.client().await;
    client
        .simple_query(
            "CREATE VIEW analytics.regulars AS SELECT profile_id FROM cdp.profiles WHERE net_orders >= 3",
        )
        .await
        .unwrap();

    // Another server on the same lake (or this one after a restart) sees it.
    let second = TestServer::start(&lake).await;
    let other = second.client().await;
    assert_eq!(
        scalar(&other, "SELECT count(*) FROM analytics.regulars").await,
        3
    );
    let listed = scalar(
        &other,
        "SELECT count(*) FROM information_schema.tables \
         WHERE table_schema = 'analytics' AND table_name = 'regulars' AND table_type = 'VIEW'",
    )
    .await;
    assert_eq!(listed, 1);

    // Snapshot, change the definition, snapshot again: C2 entered, C5 left.
    let ctx = engine::session(&lake, &EngineOptions::default()).unwrap();
    let snapshots = job(
        "segment_snapshots",
        "-- schedule: 0 3 * * *\n-- target: segment_membership\n-- mode: append\n-- kind: segment_snapshot\n",
    );
    let config = IdentityConfig::default();
    let run = jobs::run(&ctx, &lake, &config, &snapshots, Utc::now())
        .await
        .unwrap();
    assert_eq!((run.status, run.rows_written), ("succeeded", 3), "{run:?}");
    other
        .simple_query(
            "CREATE OR REPLACE VIEW analytics.regulars AS \
             SELECT profile_id FROM cdp.profiles WHERE net_orders BETWEEN 2 AND 4",
        )
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    jobs::run(&ctx, &lake, &config, &snapshots, Utc::now())
        .await
        .unwrap();
    let changes = simple_rows(
        &client,
        "SELECT c.segment, l.id_value, c.change FROM analytics.segment_changes c \
         JOIN cdp.identity_links l ON l.profile_id = c.profile_id AND l.id_type = 'customer_id' \
         ORDER BY 2",
    )
    .await;
    assert_eq!(
        changes,
        vec![
            vec![
                Some("regulars".into()),
                Some("C2".into()),
                Some("entered".into())
            ],
            vec![
                Some("regulars".into()),
                Some("C5".into()),
                Some("left".into())
            ],
        ]
    );
    let sizes = simple_rows(
        &client,
        "SELECT segment, members FROM analytics.segment_sizes",
    )
    .await;
    assert_eq!(
        sizes,
        vec![vec![Some("regulars".into()), Some("3".into())]],
        "the last snapshot of the day counts"
    );

    // Export: C2, C3, C4 are members; only C2 granted email marketing,
    // which needs an opt-in: C3 (never asked) and C4 (denied) are left out.
    let out = dir.path().join("audience.csv");
    let export = |consent: ConsentConfig, out: std::path::PathBuf| {
        let ctx = ctx.clone();
        async move {
            let summary = panorama::export::export(
                &ctx,
                &consent,
                "regulars",
                "email_marketing",
                panorama::export::Format::Csv,
                out.to_str().unwrap(),
            )
            .await
            .unwrap();
            let csv = std::fs::read_to_string(&out).unwrap();
            (summary.written, summary.left_out, csv.lines().count())
        }
    };
    assert_eq!(
        export(ConsentConfig::default(), out.clone()).await,
        (1, 2, 2),
        "header and C2"
    );
    // Declared opt-out, no answer is consent: only C4's refusal counts.
    let opt_out = ConsentConfig {
        opt_out: vec!["email_marketing".into()],
        ..ConsentConfig::default()
    };
    assert_eq!(
        export(opt_out, dir.path().join("opt-out.csv")).await,
        (2, 1, 3),
        "header, C2 and C3"
    );
    let unknown = panorama::export::export(
        &ctx,
        &ConsentConfig::default(),
        "regulars",
        "newsletters",
        panorama::export::Format::Csv,
        out.to_str().unwrap(),
    )
    .await
    .unwrap_err();
    assert!(
        unknown
            .to_string()
            .contains("unknown consent purpose 'newsletters'"),
        "{unknown}"
    );

    // COPY … TO a file, from SQL.
    let copied = dir.path().join("copy.csv");
    client
        .simple_query(&format!(
            "COPY (SELECT profile_id FROM analytics.regulars) TO '{}'",
            copied.display()
        ))
        .await
        .unwrap();
    let csv = std::fs::read_to_string(&copied).unwrap();
    assert_eq!(csv.lines().count(), 4, "header and three members: {csv}");

    // DROP VIEW removes it for everyone.
    client
        .simple_query("DROP VIEW analytics.regulars")
        .await
        .unwrap();
    let err = other
        .simple_query("SELECT * FROM analytics.regulars")
        .await
        .unwrap_err();
    assert_eq!(err.as_db_error().unwrap().code().code(), "42P01");
    first.stop().await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_keeps_the_previous_table_and_is_recorded() {
    let (_dir, lake) = temp_lake();
    land_buyers(&lake).await;
    let ctx = engine::session(&lake, &EngineOptions::default()).unwrap();
    let config = IdentityConfig::default();
    // refresh: true builds the profiles first.
    let good = job(
        "buyers",
        "-- schedule: */5 * * * *\n-- target: buyers\n-- refresh: true\nSELECT count(*) AS n FROM cdp.profiles WHERE orders > 0",
    );
    let run = jobs::run(&ctx, &lake, &config, &good, Utc::now())
        .await
        .unwrap();
    assert_eq!((run.status, run.version), ("succeeded", Some(1)));
    let bad = job(
        "buyers",
        "-- schedule: */5 * * * *\n-- target: buyers\nSELECT nps(11) AS n",
    );
    let run = jobs::run(&ctx, &lake, &config, &bad, Utc::now())
        .await
        .unwrap();
    assert_eq!(run.status, "failed");
    assert!(
        run.error.as_deref().unwrap().contains("score 11"),
        "{run:?}"
    );

    let server = TestServer::start(&lake).await;
    let client = server.client().await;
    assert_eq!(scalar(&client, "SELECT n FROM analytics.buyers").await, 5);
    let runs = simple_rows(
        &client,
        "SELECT job, status, rows_written, version FROM system.job_runs ORDER BY started_at",
    )
    .await;
    assert_eq!(
        runs,
        vec![
            vec![
                Some("buyers".into()),
                Some("succeeded".into()),
                Some("1".into()),
                Some("1".into())
            ],
            vec![
                Some("buyers".into()),
                Some("failed".into()),
                Some("0".into()),
                None
            ],
        ]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_runs_a_lake_job_on_its_schedule() {
    use object_store::ObjectStoreExt;
    let (_dir, lake) = temp_lake();
    // A user's job in the lake's jobs/ folder, every second.
    let text = "-- schedule: * * * * * *\n-- target: heartbeat\n-- mode: append\nSELECT 1 AS beat";
    lake.store()
        .put(
            &lake.path(&object_store::path::Path::from("jobs/heartbeat.sql")),
            text.as_bytes().to_vec().into(),
        )
        .await
        .unwrap();
    let all = jobs::load(&lake).await.unwrap();
    assert!(
        all.iter()
            .any(|j| j.name == "heartbeat" && j.origin == "jobs/heartbeat.sql")
    );
    let ctx = std::sync::Arc::new(engine::session(&lake, &EngineOptions::default()).unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let scheduler = tokio::spawn(jobs::scheduler::run_forever(
        ctx.clone(),
        lake.clone(),
        IdentityConfig::default(),
        all.into_iter().filter(|j| j.name == "heartbeat").collect(),
        async {
            let _ = stopped.await;
        },
    ));
    let mut beats = 0;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let runs = ctx
            .sql("SELECT count(*) FROM system.job_runs WHERE job = 'heartbeat' AND status = 'succeeded'")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        beats = datafusion::arrow::array::AsArray::as_primitive::<
            datafusion::arrow::datatypes::Int64Type,
        >(runs[0].column(0))
        .value(0);
        if beats >= 2 {
            break;
        }
    }
    let _ = stop.send(());
    scheduler.await.unwrap();
    assert!(beats >= 2, "the job ran on schedule ({beats} runs)");
    let table = ctx
        .sql("SELECT sum(beat) FROM analytics.heartbeat")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let sum = datafusion::arrow::array::AsArray::as_primitive::<
        datafusion::arrow::datatypes::Int64Type,
    >(table[0].column(0))
    .value(0);
    assert!(sum >= 2, "appended one row per run ({sum})");
}
