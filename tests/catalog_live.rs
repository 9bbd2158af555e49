//! Files landed while the server runs are visible to the next query.

use panorama::generate::rows::TableRows;
use panorama::ingest;
use panorama::schema::RawTable;

use crate::support::*;

#[tokio::test]
async fn files_landed_after_start_are_seen_without_restart() {
    let Fixture {
        dir: _dir,
        lake,
        server,
        client,
    } = serve_fixture().await;
    let before = scalar(&client, "SELECT count(*) FROM raw.orders").await;
    assert_eq!(before, 4);

    let mut orders = TableRows::new(RawTable::Orders);
    orders
        .text(Some("O5"))
        .text(Some("C2"))
        .text(None)
        .text(None)
        .timestamp(Some(JAN_15 + 5 * DAY))
        .money(Some(500))
        .text(Some("EUR"))
        .text(Some("completed"))
        .text(Some("store"))
        .int(Some(1));
    orders.end_row();
    ingest::land(&lake, RawTable::Orders, &[orders.finish().unwrap()])
        .await
        .unwrap();

    let after = scalar(&client, "SELECT count(*) FROM raw.orders").await;
    assert_eq!(after, 5);
    server.stop().await;
}

#[tokio::test]
async fn the_bundled_sample_seeds_every_raw_table() {
    let (_dir, lake) = temp_lake();
    let seeded = panorama::seed::seed_if_empty(&lake, |_, _| {})
        .await
        .unwrap();
    let seeded = seeded.expect("an empty lake is seeded");
    assert!(seeded.rows > 10_000, "{seeded:?}");
    assert!(
        panorama::seed::seed_if_empty(&lake, |_, _| {})
            .await
            .unwrap()
            .is_none(),
        "a lake with data is never seeded twice"
    );
    let server = TestServer::start(&lake).await;
    let client = server.client().await;
    let mut total = 0;
    for table in RawTable::ALL {
        let n = scalar(&client, &format!("SELECT count(*) FROM raw.{table}")).await;
        assert!(n > 0, "raw.{table} is empty");
        total += n as usize;
    }
    assert_eq!(total, seeded.rows, "every seeded row is queryable");
    server.stop().await;
}
