//! SQL over the Postgres protocol with `tokio-postgres`: simple and extended
//! protocol, bound parameters, binary results of every raw type.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;

use crate::support::*;

#[tokio::test]
async fn simple_protocol_answers_with_the_landed_values() {
    let (_dir, lake) = temp_lake();
    land_fixture(&lake).await;
    let server = TestServer::start(&lake).await;
    let client = server.client().await;

    let messages = client
        .simple_query(
            "SELECT c.first_name, count(*) AS orders, sum(o.amount) AS revenue \
             FROM raw.orders o JOIN raw.customers c ON o.customer_id = c.customer_id \
             GROUP BY c.first_name ORDER BY c.first_name",
        )
        .await
        .unwrap();
    let rows: Vec<(String, String, String)> = messages
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some((
                r.get(0).unwrap().to_string(),
                r.get(1).unwrap().to_string(),
                r.get(2).unwrap().to_string(),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("Bob".into(), "1".into(), "99.99".into()),
            ("Jane".into(), "2".into(), "150.50".into()),
        ]
    );
    server.stop().await;
}

#[tokio::test]
async fn extended_protocol_binds_parameters_and_decodes_binary_results() {
    let (_dir, lake) = temp_lake();
    land_fixture(&lake).await;
    let server = TestServer::start(&lake).await;
    let client = server.client().await;

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
