//! Point lookups by a key column (`WHERE customer_id = $1`) answer from the
//! key index, reading one file instead of every day's file, and always give
//! what a full scan gives: duplicates, misses, `IN` lists, and files landed
//! after the index was built (committed by any writer, at once), files
//! compacted together, and never a file no commit names.

use panorama::ingest;
use panorama::lake::{Lake, paths};
use panorama::schema::RawTable;
use panorama::schema::rows::TableRows;

use crate::support::*;

/// Customers `(id, city, day after JAN_15)` as one batch of raw.customers.
fn customers(rows: &[(&str, &str, i64)]) -> datafusion::arrow::array::RecordBatch {
    let mut batch = TableRows::new(RawTable::Customers);
    for &(id, city, day) in rows {
        batch
            .text(Some(id))
            .text(Some(&format!("{}@example.com", id.to_lowercase())))
            .text(None)
            .text(Some("Ann"))
            .text(Some("Lee"))
            .text(None)
            .text(Some(city))
            .text(None)
            .text(Some("FR"))
            .date(None)
            .text(Some("gold"))
            .boolean(Some(true))
            .text(Some("crm"))
            .timestamp(Some(JAN_15))
            .timestamp(Some(JAN_15 + day * DAY));
        batch.end_row();
    }
    batch.finish().unwrap()
}

async fn land(lake: &Lake, rows: &[(&str, &str, i64)]) {
    ingest::land(lake, RawTable::Customers, &[customers(rows)])
        .await
        .unwrap();
}

/// `customer_id | city | date` of the rows `filter` selects, in order.
async fn found(client: &tokio_postgres::Client, filter: &str, key: &str) -> Vec<String> {
    let sql = format!(
        "SELECT customer_id, city, CAST(date AS TEXT) FROM raw.customers WHERE {filter} \
         ORDER BY date, city"
    );
    client
        .query(&sql, &[&key])
        .await
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{} | {} | {}",
                r.get::<_, String>(0),
                r.get::<_, String>(1),
                r.get::<_, String>(2)
            )
        })
        .collect()
}

/// The lookup and the same filter written so no index can answer it.
async fn lookup_and_scan(client: &tokio_postgres::Client, key: &str) -> Vec<String> {
    let looked_up = found(client, "customer_id = $1", key).await;
    let scanned = found(client, "customer_id || '' = $1", key).await;
    assert_eq!(looked_up, scanned, "lookup of {key} differs from a scan");
    looked_up
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_lookups_read_only_matching_files_and_see_new_files() {
    let (_dir, lake) = temp_lake();
    // 60 customers over 20 days, landed day by day (20 commits, 20 files,
    // as a daily CRM export makes them); C7 was updated on day 12, so it
    // has two rows in two files.
    let mut rows: Vec<(String, &str, i64)> = (0..60)
        .map(|i| {
            (
                format!("C{i}"),
                ["Paris", "Lyon", "Lille"][i % 3],
                (i % 20) as i64,
            )
        })
        .collect();
    rows.push(("C7".into(), "Nantes", 12));
    let rows: Vec<(&str, &str, i64)> = rows.iter().map(|(a, b, c)| (a.as_str(), *b, *c)).collect();
    for day in 0..20 {
        let of_day: Vec<_> = rows.iter().copied().filter(|r| r.2 == day).collect();
        land(&lake, &of_day).await;
    }
    let server = TestServer::start(&lake).await;
    let client = server.client().await;

    assert_eq!(
        lookup_and_scan(&client, "C42").await,
        ["C42 | Paris | 2026-01-17"]
    );
    assert_eq!(
        lookup_and_scan(&client, "C7").await,
        ["C7 | Lyon | 2026-01-22", "C7 | Nantes | 2026-01-27"],
        "both rows of a key held by two files"
    );
    assert!(lookup_and_scan(&client, "C999").await.is_empty());
    assert!(lookup_and_scan(&client, "").await.is_empty());

    // The plan of a lookup reads the one file holding the key; without a
    // key filter every file is read.
    let plan = |sql: &str| {
        let client = &client;
        let sql = format!("EXPLAIN {sql}");
        async move {
            simple_rows(client, &sql)
                .await
                .into_iter()
                .filter_map(|r| r.get(1).cloned().flatten())
                .collect::<Vec<_>>()
                .join("\n")
        }
    };
    let one = plan("SELECT city FROM raw.customers WHERE customer_id = 'C42'").await;
    assert!(
        one.contains("LookupExec: rows=1") && one.matches(".parquet").count() == 1,
        "{one}"
    );
    let all = plan("SELECT city FROM raw.customers WHERE city = 'Paris'").await;
    assert!(
        !all.contains("LookupExec") && all.matches(".parquet").count() > 1,
        "{all}"
    );
    // IN lists and the other key column (email) use the index too.
    let in_list = simple_rows(
        &client,
        "SELECT customer_id FROM raw.customers WHERE customer_id IN ('C1', 'C2', 'nope') \
         ORDER BY customer_id",
    )
    .await;
    assert_eq!(
        in_list,
        [[Some("C1".to_string())], [Some("C2".to_string())]]
    );
    let by_email = plan("SELECT city FROM raw.customers WHERE email = 'c3@example.com'").await;
    assert!(by_email.contains("LookupExec: rows=1"), "{by_email}");
    // A lookup that also filters on the partition is the listing table's,
    // and exact.
    assert_eq!(
        found(
            &client,
            "customer_id = $1 AND date = DATE '2026-01-27'",
            "C7"
        )
        .await,
        ["C7 | Nantes | 2026-01-27"]
    );

    // A file landed through Panorama (here after the index was built) is
    // seen by the next lookup.
    land(&lake, &[("C60", "Brest", 3), ("C7", "Rennes", 30)]).await;
    assert_eq!(
        lookup_and_scan(&client, "C60").await,
        ["C60 | Brest | 2026-01-18"]
    );
    assert_eq!(lookup_and_scan(&client, "C7").await.len(), 3);

    // A Parquet file dropped into the table's folder by hand is not part of
    // the table: no commit names it.
    let stray = paths::raw_table_dir(RawTable::Customers)
        .join("date=2026-01-16")
        .join("part-stray.parquet");
    panorama::lake::parquet::write_file(
        &lake,
        &stray,
        RawTable::Customers.file_schema(),
        &[customers(&[("C61", "Metz", 1)])],
    )
    .await
    .unwrap();
    assert!(lookup_and_scan(&client, "C61").await.is_empty());

    // Another process's commit is seen by the next lookup, and compaction
    // (files rewritten together) changes no answer.
    let other = Lake::open(lake.url().as_str()).unwrap();
    land(&other, &[("C62", "Metz", 1)]).await;
    assert_eq!(
        lookup_and_scan(&client, "C62").await,
        ["C62 | Metz | 2026-01-16"]
    );
    let before = lookup_and_scan(&client, "C7").await;
    let compacted = panorama::lake::delta::compact(
        &other,
        &paths::raw_table_dir(RawTable::Customers),
        &[],
        panorama::lake::parquet::writer_properties(),
    )
    .await
    .unwrap();
    assert!(compacted.files_removed > 1, "{compacted:?}");
    assert_eq!(lookup_and_scan(&client, "C7").await, before);
    assert_eq!(
        lookup_and_scan(&client, "C62").await,
        ["C62 | Metz | 2026-01-16"]
    );
    server.stop().await;
}
