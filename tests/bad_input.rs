//! Bad input gets a precise error with a SQLSTATE, and the same connection
//! keeps working afterwards.

use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};

use crate::support::*;

fn sqlstate(err: &tokio_postgres::Error) -> String {
    err.as_db_error()
        .map(|e| e.code().code().to_string())
        .unwrap_or_else(|| format!("not a server error: {err}"))
}

#[tokio::test]
async fn syntax_errors_and_unknown_tables_leave_the_session_usable() {
    let Fixture {
        dir: _dir,
        lake: _,
        server,
        client,
    } = serve_fixture().await;

    let err = client.simple_query("SELEC 1").await.unwrap_err();
    assert_eq!(sqlstate(&err), "42601", "{err:?}");

    let err = client
        .query("SELECT * FROM raw.nope", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42P01", "{err:?}");
    let message = err.as_db_error().unwrap().message().to_string();
    assert!(message.contains("nope"), "{message}");

    let err = client
        .query("SELECT no_such_column FROM raw.orders", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42703", "{err:?}");

    let row = client
        .query_one("SELECT count(*) FROM raw.orders", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 4);
    server.stop().await;
}

#[tokio::test]
async fn a_truncated_parquet_file_is_named_and_other_tables_keep_working() {
    let (_dir, lake) = temp_lake();
    land_fixture(&lake).await;
    // A file cut short mid-write by some other tool.
    let bad = Path::from("raw/orders/date=2026-01-20/part-broken.parquet");
    let full = lake.list(&Path::from("raw/orders")).await.unwrap();
    let good = lake
        .store()
        .get(&full[0].location)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    lake.store()
        .put(
            &lake.path(&bad),
            PutPayload::from(good.slice(0..good.len() / 2)),
        )
        .await
        .unwrap();

    let server = TestServer::start(&lake).await;
    let client = server.client().await;
    let err = client
        .query("SELECT sum(amount) FROM raw.orders", &[])
        .await
        .unwrap_err();
    let message = err
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert!(
        message.contains("part-broken.parquet"),
        "the error must name the broken file: {err:?}"
    );

    let row = client
        .query_one("SELECT count(*) FROM raw.customers", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 3, "other tables keep working");
    server.stop().await;
}
