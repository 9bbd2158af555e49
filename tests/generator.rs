//! The synthetic CDP: deterministic, and as messy as real data.

use datafusion::arrow::util::pretty::pretty_format_batches;
use panorama::engine::{self, EngineOptions};
use panorama::generate::{self, GenerateOptions, Output};
use panorama::lake::Lake;

async fn scalar(ctx: &datafusion::prelude::SessionContext, sql: &str) -> i64 {
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let text = pretty_format_batches(&batches).unwrap().to_string();
    let value = text
        .lines()
        .nth(3)
        .unwrap()
        .trim_matches(|c| c == '|' || c == ' ');
    value.parse().unwrap_or_else(|_| panic!("{sql}:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_seed_same_data_and_the_mess_real_sources_have() {
    let options = GenerateOptions { scale: 1, seed: 7 };
    let a = Lake::open("memory://").unwrap();
    let b = Lake::open("memory://").unwrap();
    let mut days = 0;
    let first = generate::generate(options, Output::Lake(&a), |p| days = p.days_done)
        .await
        .unwrap();
    assert_eq!(days, 365, "progress reaches the last day");
    let second = generate::generate(options, Output::Lake(&b), |_| {})
        .await
        .unwrap();
    assert_eq!(
        first.tables, second.tables,
        "same (scale, seed), same row counts"
    );

    let ctx_a = engine::session(&a, &EngineOptions::default()).unwrap();
    let ctx_b = engine::session(&b, &EngineOptions::default()).unwrap();
    let digest = "SELECT sum(hashed) FROM (SELECT (ascii(md5(concat_ws('|', message_id, type, \
                  anonymous_id, user_id, timestamp::text))) ) AS hashed FROM raw.events)";
    assert_eq!(scalar(&ctx_a, digest).await, scalar(&ctx_b, digest).await);

    let ctx = ctx_a;
    let known = scalar(
        &ctx,
        "SELECT count(DISTINCT customer_id) FROM raw.customers",
    )
    .await;
    assert!(
        (900..=1000).contains(&known),
        "about scale×1000 CRM customers: {known}"
    );
    assert!(scalar(&ctx, "SELECT count(*) FROM raw.customers WHERE email = 'test@test.com' OR trim(email) = '' OR email = 'null'").await > 0);
    assert!(
        scalar(
            &ctx,
            "SELECT count(*) FROM raw.customers WHERE phone LIKE '+33%'"
        )
        .await
            > 0
    );
    assert!(
        scalar(
            &ctx,
            "SELECT count(*) FROM raw.customers WHERE phone LIKE '06%'"
        )
        .await
            > 0
    );
    assert!(
        scalar(
            &ctx,
            "SELECT count(*) FROM raw.customers WHERE email <> lower(trim(email))"
        )
        .await
            > 0
    );
    assert!(
        scalar(
            &ctx,
            "SELECT count(*) FROM raw.events WHERE type = 'identify' AND user_id IS NOT NULL"
        )
        .await
            > 0
    );
    assert!(
        scalar(
            &ctx,
            "SELECT count(*) FROM raw.events WHERE type = 'alias' AND previous_id IS NOT NULL"
        )
        .await
            > 0
    );
    // Anonymous visitors whose cookie never logs in.
    assert!(
        scalar(&ctx, "SELECT count(*) FROM (SELECT anonymous_id FROM raw.events GROUP BY anonymous_id HAVING count(user_id) = 0)").await
            > 100
    );
    for status in ["completed", "returned", "cancelled"] {
        assert!(
            scalar(
                &ctx,
                &format!("SELECT count(*) FROM raw.orders WHERE status = '{status}'")
            )
            .await
                > 0,
            "{status}"
        );
    }
    for channel in ["web", "app", "store"] {
        assert!(
            scalar(
                &ctx,
                &format!("SELECT count(*) FROM raw.orders WHERE channel = '{channel}'")
            )
            .await
                > 0,
            "{channel}"
        );
    }
    assert_eq!(scalar(&ctx, "SELECT count(*) FROM raw.survey_responses WHERE survey = 'nps' AND score NOT BETWEEN 0 AND 10").await, 0);
    assert_eq!(scalar(&ctx, "SELECT count(*) FROM raw.survey_responses WHERE survey = 'csat' AND score NOT BETWEEN 1 AND 5").await, 0);
    assert_eq!(scalar(&ctx, "SELECT count(*) FROM raw.survey_responses WHERE survey = 'ces' AND score NOT BETWEEN 1 AND 7").await, 0);
    assert!(
        scalar(
            &ctx,
            "SELECT count(DISTINCT score) FROM raw.survey_responses WHERE survey = 'nps'"
        )
        .await
            >= 9
    );
    assert!(
        scalar(
            &ctx,
            "SELECT count(*) FROM raw.consents WHERE status = 'denied'"
        )
        .await
            > 0
    );
    // Order totals equal the sum of their lines.
    assert_eq!(
        scalar(&ctx, "SELECT count(*) FROM raw.orders o JOIN (SELECT order_id, sum(quantity * unit_price) AS t FROM raw.order_items GROUP BY order_id) i USING (order_id) WHERE i.t <> o.amount").await,
        0
    );
    // Every file sits in the partition of its own rows' day.
    assert_eq!(
        scalar(
            &ctx,
            "SELECT count(*) FROM raw.events WHERE date <> CAST(timestamp AS date)"
        )
        .await,
        0
    );
}
