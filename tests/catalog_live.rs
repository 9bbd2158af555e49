//! Files landed while the server runs are visible to the next query.

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

    land_order(&lake, "O5", "C2").await;

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
