//! Batch loads (`panorama ingest`): good, mixed and broken files with exact
//! counts of landed and rejected rows, idempotent re-loads, compressed
//! NDJSON, Parquet input, and the command's summary and exit code.

use std::io::Write;

use panorama::ingest::files::{self, IngestOptions};
use panorama::schema::RawTable;

use crate::support::*;

const ORDERS_CSV: &str = "\
order_id,customer,email,ordered_at,amount,currency,status,channel,item_count
O1,C1,a@x.com,2026-01-15T10:00:00Z,12.50,EUR,completed,web,1
O2,C2,,2026-01-16 09:00:00,3,EUR,returned,store,2
O3,C3,,2026-01-16T10:00:00Z,12.345,EUR,completed,web,1
O4,C4,,yesterday,5,EUR,completed,web,1
O5,C5
,C6,,2026-01-17T10:00:00Z,5,EUR,completed,web,1
";

fn mapping() -> IngestOptions {
    IngestOptions {
        mapping: [("customer_id".to_string(), "customer".to_string())].into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_csv_lands_every_good_row_and_names_every_bad_one() {
    let (dir, lake) = temp_lake();
    let path = dir.path().join("orders.csv");
    std::fs::write(&path, ORDERS_CSV).unwrap();
    let report = files::load_file(&lake, RawTable::Orders, &path, &mapping(), |_| {})
        .await
        .unwrap();
    assert_eq!(
        (report.rows_read, report.rows_landed, report.rows_rejected),
        (6, 2, 4)
    );
    assert_eq!(
        sql_lines(
            &lake,
            "SELECT order_id, customer_id, amount, status FROM raw.orders ORDER BY 1"
        )
        .await,
        vec!["O1 | C1 | 12.50 | completed", "O2 | C2 | 3.00 | returned"]
    );
    assert_eq!(
        sql_lines(
            &lake,
            "SELECT line, field, reason FROM system.rejects ORDER BY line"
        )
        .await,
        vec![
            "4 | amount | not an amount with at most 2 decimals",
            "5 | ordered_at | not a time (RFC 3339, YYYY-MM-DD HH:MM:SS or YYYY-MM-DD)",
            "6 | 2 fields where the header has 9",
            "7 | order_id | required, but missing",
        ]
    );
    assert_eq!(
        sql_lines(
            &lake,
            "SELECT table_name, rows_read, rows_landed, rows_rejected FROM system.ingests"
        )
        .await,
        vec!["orders | 6 | 2 | 4"]
    );

    // The same file again: skipped, nothing doubled.
    let again = files::load_file(&lake, RawTable::Orders, &path, &mapping(), |_| {})
        .await
        .unwrap();
    assert!(again.skipped);
    // A load that died before recording itself is simply run again: the
    // chunks land under the same names, so nothing is doubled either.
    for meta in lake.list(&files::ingests_dir()).await.unwrap() {
        use object_store::ObjectStoreExt;
        lake.store().delete(&meta.location).await.unwrap();
    }
    let rerun = files::load_file(&lake, RawTable::Orders, &path, &mapping(), |_| {})
        .await
        .unwrap();
    assert!(!rerun.skipped);
    assert_eq!(
        sql_lines(&lake, "SELECT count(*) FROM raw.orders").await,
        vec!["2"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzipped_ndjson_events_keep_json_fields_and_reject_what_they_must() {
    let (dir, lake) = temp_lake();
    let path = dir.path().join("events.ndjson.gz");
    let body = [
        r#"{"type":"track","event":"Product Viewed","anonymous_id":"k1","timestamp":"2026-01-15T10:00:00Z","properties":{"product_id":"P7","price":9.5}}"#,
        r#"{"type":"identify","anonymous_id":"k1","user_id":"u1","email":"A@X.com","timestamp":"2026-01-15T10:05:00Z","traits":{"plan":"gold"}}"#,
        r#"{"type":"page","timestamp":"2026-01-15T10:06:00Z"}"#,
        r#"{"type":"page", "anonymous_id": "k2""#,
        r#"["not", "an", "object"]"#,
    ]
    .join("\n");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(body.as_bytes()).unwrap();
    std::fs::write(&path, gz.finish().unwrap()).unwrap();
    let report = files::load_file(
        &lake,
        RawTable::Events,
        &path,
        &IngestOptions::default(),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(
        (report.rows_read, report.rows_landed, report.rows_rejected),
        (5, 2, 3)
    );
    assert_eq!(
        sql_lines(
            &lake,
            "SELECT type, json_get_str(properties, 'product_id'), json_get_str(traits, 'plan'), length(message_id) \
             FROM raw.events ORDER BY timestamp"
        )
        .await,
        // (empty cells are dropped by `lines`)
        vec!["track | P7 | 36", "identify | gold | 36"]
    );
    let rejects = sql_lines(
        &lake,
        "SELECT line, field, reason FROM system.rejects ORDER BY line",
    )
    .await;
    assert_eq!(rejects.len(), 3);
    assert_eq!(
        rejects[0],
        "3 | anonymous_id | an event needs an anonymous_id or a user_id"
    );
    assert!(
        rejects[1].starts_with("4 | malformed JSON"),
        "{}",
        rejects[1]
    );
    assert_eq!(rejects[2], "5 | not a JSON object");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_files_load_with_defaults_and_the_command_exits_non_zero_on_rejects() {
    use datafusion::arrow::array::{BooleanArray, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    let (dir, lake) = temp_lake();
    // A CRM export as Parquet, without the `source` column.
    let schema = Arc::new(Schema::new(vec![
        Field::new("customer_id", DataType::Utf8, true),
        Field::new("email", DataType::Utf8, true),
        Field::new("newsletter", DataType::Boolean, true),
        Field::new("updated_at", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec![Some("C1"), None])),
            Arc::new(StringArray::from(vec![Some("a@x.com"), Some("b@x.com")])),
            Arc::new(BooleanArray::from(vec![Some(true), Some(false)])),
            Arc::new(StringArray::from(vec!["2026-01-15", "2026-01-15"])),
        ],
    )
    .unwrap();
    let path = dir.path().join("crm.parquet");
    let file = std::fs::File::create(&path).unwrap();
    let mut writer = datafusion::parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_panorama"))
        .args(["ingest", "customers"])
        .arg(&path)
        .args(["--default", "source=crm", "--lake"])
        .arg(dir.path())
        .env_remove("PANORAMA_LAKE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("2 rows read, 1 landed in 1 files, 1 rejected"),
        "{stderr}"
    );
    assert!(
        stderr.contains("raw.customers: 1 rows landed, 1 rejected"),
        "{stderr}"
    );
    assert_eq!(
        sql_lines(
            &lake,
            "SELECT customer_id, email, newsletter, source FROM raw.customers"
        )
        .await,
        vec!["C1 | a@x.com | true | crm"]
    );
    assert_eq!(
        sql_lines(&lake, "SELECT line, field, reason FROM system.rejects").await,
        vec!["2 | customer_id | required, but missing"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_named_by_url_load_over_http_and_s3() {
    use axum::routing::get;
    let (dir, lake) = temp_lake();
    // An HTTP server with one export, and an S3 bucket with another.
    let app = axum::Router::new().route("/exports/orders.csv", get(|| async { ORDERS_CSV }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("exports/crm")).unwrap();
    std::fs::write(
        root.path().join("exports/crm/customers.csv"),
        "customer_id,email,phone,source,updated_at\nC9, C9@X.com ,06 12 34 56 78,crm,2026-01-15\n",
    )
    .unwrap();
    let s3 = crate::s3::S3Server::start(root.path()).await;

    let run = |table: &str, input: String| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_panorama"));
        let map = if table == "orders" {
            "customer_id=customer"
        } else {
            "email=email"
        };
        command
            .args(["ingest", table, &input, "--map", map, "--lake"])
            .arg(dir.path())
            .env_remove("PANORAMA_LAKE");
        for (key, value) in crate::s3::s3_options(s3.addr) {
            command.env(key.to_uppercase(), value);
        }
        command
    };
    let url = format!("http://{http}/exports/orders.csv");
    let output = tokio::task::spawn_blocking({
        let mut c = run("orders", url.clone());
        move || c.output().unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{url}: 6 rows read, 2 landed")),
        "{stderr}"
    );
    let sources = sql_lines(&lake, "SELECT DISTINCT source FROM system.rejects").await;
    assert_eq!(sources, std::slice::from_ref(&url), "rejects name the URL");

    // The same bytes again: already loaded, nothing duplicated.
    let output = tokio::task::spawn_blocking({
        let mut c = run("orders", url.clone());
        move || c.output().unwrap()
    })
    .await
    .unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("already loaded"));

    // s3://bucket/key with the AWS_* settings, and a clear error for a 404.
    let mut c = run("customers", "s3://exports/crm/customers.csv".into());
    let output = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut c = run("orders", format!("http://{http}/exports/missing.csv"));
    let output = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("the server answered 404 Not Found"),
        "{stderr}"
    );
    assert_eq!(
        sql_lines(&lake, "SELECT count(*) FROM raw.orders").await,
        ["2"]
    );
    assert_eq!(
        sql_lines(&lake, "SELECT customer_id, email, phone FROM raw.customers").await,
        ["C9 | c9@x.com | +33612345678"],
        "identifiers are normalised as the identity rules do"
    );
}

/// A file's fields that no column of the table holds are kept, by name,
/// in the table's `extra` JSON column (NDJSON values keep their JSON type),
/// the summary names them, `--drop` is the only way to leave one out, and
/// `system.ingests` records both lists. A table landed before `extra`
/// existed gains the column on this load; its old rows read NULL there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_no_column_holds_are_kept_in_extra_unless_dropped() {
    use datafusion::arrow::array::{RecordBatch, StringArray, TimestampMicrosecondArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    let (dir, lake) = temp_lake();
    // A customers table as an older release landed it: no `extra` column.
    let mut fields: Vec<Field> = RawTable::Customers
        .file_schema()
        .fields()
        .iter()
        .filter(|f| f.name() != panorama::schema::EXTRA_COLUMN)
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("date", DataType::Date32, false));
    let old_schema = Arc::new(Schema::new(fields));
    let columns = old_schema
        .fields()
        .iter()
        .map(|f| match f.name().as_str() {
            "customer_id" => Arc::new(StringArray::from(vec!["C0"])) as _,
            "source" => Arc::new(StringArray::from(vec!["crm"])) as _,
            "updated_at" => Arc::new(
                TimestampMicrosecondArray::from(vec![1_768_471_200_000_000]).with_timezone("UTC"),
            ) as _,
            "date" => Arc::new(datafusion::arrow::array::Date32Array::from(vec![20468])) as _,
            _ => datafusion::arrow::array::new_null_array(f.data_type(), 1),
        })
        .collect();
    let old = RecordBatch::try_new(old_schema, columns).unwrap();
    panorama::lake::delta::append(
        &lake,
        &object_store::path::Path::from("raw/customers"),
        vec![old],
        &[],
        Default::default(),
        "land",
        None,
    )
    .await
    .unwrap();

    let csv = dir.path().join("crm.csv");
    std::fs::write(
        &csv,
        "customer_id,source,updated_at,points,tier_since,internal_note\n\
         C1,crm,2026-01-15,120,2025-03-01,call back\n\
         C2,crm,2026-01-15,,2024-11-30,\n",
    )
    .unwrap();
    let ndjson = dir.path().join("crm.ndjson");
    std::fs::write(
        &ndjson,
        r#"{"customer_id":"C3","source":"app","updated_at":"2026-01-16","points":7,"wallet":{"cards":2},"vip":true}"#,
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_panorama"))
        .args(["ingest", "customers"])
        .arg(&csv)
        .arg(&ndjson)
        .args(["--drop", "internal_note", "--lake"])
        .arg(dir.path())
        .env_remove("PANORAMA_LAKE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr
            .contains("crm.csv: fields with no column of raw.customers, kept in its extra column")
            && stderr.contains(": points, tier_since\n"),
        "{stderr}"
    );
    assert!(
        stderr.contains("crm.csv: fields left out (--drop): internal_note"),
        "{stderr}"
    );
    assert!(stderr.contains(": points, vip, wallet\n"), "{stderr}");
    assert_eq!(
        sql_lines(
            &lake,
            "SELECT customer_id, coalesce(extra, 'NULL') FROM raw.customers ORDER BY 1"
        )
        .await,
        vec![
            "C0 | NULL",
            r#"C1 | {"points":"120","tier_since":"2025-03-01"}"#,
            r#"C2 | {"tier_since":"2024-11-30"}"#,
            r#"C3 | {"points":7,"vip":true,"wallet":{"cards":2}}"#,
        ]
    );
    assert_eq!(
        sql_lines(
            &lake,
            "SELECT fields_in_extra, coalesce(fields_dropped, '-') FROM system.ingests ORDER BY source"
        )
        .await,
        vec!["points,tier_since | internal_note", "points,vip,wallet | -"]
    );
    // Every other engine sees the evolved table too.
    let table =
        panorama::lake::delta::open(&lake, &object_store::path::Path::from("raw/customers"))
            .await
            .unwrap()
            .unwrap();
    let schema = table.snapshot().unwrap().schema();
    assert!(schema.field("extra").is_some(), "{schema:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn computed_mappings_build_keys_cast_branch_and_pack_json() {
    let (dir, lake) = temp_lake();
    let csv = dir.path().join("till.csv");
    std::fs::write(
        &csv,
        "OrderNo,Line,Mail,When,Total,Paid,Tier,Points,Till\n\
         T1,1,A@X.com,2026-01-15 10:00:00,12.5,y,gold,120,7\n\
         T1,2,a@x.com,2026-01-15 10:00:00,3,n,silver,8,7\n\
         T2,1,b@x.com,2026-01-16 10:00:00,9.99,y,gold,many,8\n",
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_panorama"))
        .args(["ingest", "orders"])
        .arg(&csv)
        .args([
            "--map",
            "order_id=OrderNo || '-' || Line",
            "--map",
            "email=Mail",
            "--map",
            "ordered_at=When",
            "--map",
            "amount=CAST(Total AS DECIMAL(12,2))",
            "--map",
            "status=CASE WHEN Paid = 'y' THEN 'completed' ELSE 'pending' END",
            "--map",
            "extra=json_build_object('tier', Tier, 'points', CAST(Points AS BIGINT))",
            "--default",
            "currency=EUR",
            "--default",
            "channel=store",
            "--default",
            "item_count=1",
            "--lake",
        ])
        .arg(dir.path())
        .env_remove("PANORAMA_LAKE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    // One row rejected: the command says so and exits non-zero.
    assert!(!output.status.success(), "{stderr}");
    assert_eq!(
        sql_lines(
            &lake,
            "SELECT order_id, email, amount, status, extra FROM raw.orders ORDER BY 1"
        )
        .await,
        vec![
            r#"T1-1 | a@x.com | 12.50 | completed | {"Till":"7","points":120,"tier":"gold"}"#,
            r#"T1-2 | a@x.com | 3.00 | pending | {"Till":"7","points":8,"tier":"silver"}"#,
        ]
    );
    let rejects = sql_lines(&lake, "SELECT line, field, reason FROM system.rejects").await;
    assert_eq!(rejects.len(), 1, "{rejects:?}");
    assert!(
        rejects[0].starts_with("4 | extra | the mapping \"json_build_object("),
        "{rejects:?}"
    );
    assert!(!rejects[0].contains("many"), "{rejects:?}");

    // A syntax error stops the load before a row is read, naming it.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_panorama"))
        .args(["ingest", "orders"])
        .arg(&csv)
        .args(["--map", "order_id=OrderNo ||", "--lake"])
        .arg(dir.path())
        .env_remove("PANORAMA_LAKE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("order_id=\"OrderNo ||\""), "{stderr}");
}

/// A Parquet file whose columns already have the table's types (a
/// timestamp in nanoseconds with an offset, a 32-bit count) lands the same
/// rows, rejects and `extra` as the same data sent as CSV text: typed
/// columns skip the text round trip, never its rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_parquet_columns_land_what_the_same_rows_as_text_land() {
    use datafusion::arrow::array::{
        ArrayRef, Float32Array, Int32Array, RecordBatch, StringArray, TimestampNanosecondArray,
    };
    use std::sync::Arc;

    const HOUR_NS: i64 = 3_600_000_000_000;
    let jan_15_10h = 1_768_471_200_000_000_000i64; // 2026-01-15T10:00:00Z
    let text = |v: &[Option<&str>]| Arc::new(StringArray::from(v.to_vec())) as ArrayRef;
    let batch = RecordBatch::try_from_iter([
        ("order_id", text(&[Some("O1"), Some("O2"), Some("O3")])),
        ("customer_id", text(&[Some("C1"), Some("C2"), None])),
        (
            "ordered_at",
            Arc::new(
                TimestampNanosecondArray::from(vec![
                    Some(jan_15_10h),
                    None,
                    Some(jan_15_10h + HOUR_NS),
                ])
                .with_timezone("+02:00"),
            ) as ArrayRef,
        ),
        ("amount", text(&[Some("12.50"), Some("3"), Some("1")])),
        ("currency", text(&[Some("EUR"), Some("EUR"), Some("EUR")])),
        (
            "status",
            text(&[Some("completed"), Some("completed"), Some("returned")]),
        ),
        ("channel", text(&[Some("web"), Some("web"), Some("store")])),
        (
            "item_count",
            Arc::new(Int32Array::from(vec![Some(3), Some(1), None])) as ArrayRef,
        ),
        (
            "score",
            Arc::new(Float32Array::from(vec![Some(1.5), None, Some(2.0)])) as ArrayRef,
        ),
    ])
    .unwrap();
    let csv = "order_id,customer_id,ordered_at,amount,currency,status,channel,item_count,score\n\
               O1,C1,2026-01-15T10:00:00Z,12.50,EUR,completed,web,3,1.5\n\
               O2,C2,,3,EUR,completed,web,1,\n\
               O3,,2026-01-15T11:00:00Z,1,EUR,returned,store,,2\n";
    let options = IngestOptions {
        defaults: [("ordered_at".to_string(), "2026-01-20".to_string())].into(),
        ..Default::default()
    };
    let mut answers = Vec::new();
    for parquet in [true, false] {
        let (dir, lake) = temp_lake();
        let path = if parquet {
            let path = dir.path().join("orders.parquet");
            let file = std::fs::File::create(&path).unwrap();
            let mut writer =
                datafusion::parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None)
                    .unwrap();
            writer.write(&batch).unwrap();
            writer.close().unwrap();
            path
        } else {
            let path = dir.path().join("orders.csv");
            std::fs::write(&path, csv).unwrap();
            path
        };
        let report = files::load_file(&lake, RawTable::Orders, &path, &options, |_| {})
            .await
            .unwrap();
        assert_eq!(
            (report.rows_read, report.rows_landed, report.rows_rejected),
            (3, 2, 1),
            "{report:?}"
        );
        answers.push((
            sql_lines(
                &lake,
                "SELECT order_id, customer_id, ordered_at, amount, item_count, extra \
                 FROM raw.orders ORDER BY 1",
            )
            .await,
            sql_lines(&lake, "SELECT field, reason FROM system.rejects").await,
        ));
        // A Parquet row is numbered from 1; a CSV line counts the header.
        assert_eq!(
            sql_lines(&lake, "SELECT line FROM system.rejects").await,
            [if parquet { "3" } else { "4" }]
        );
    }
    assert_eq!(answers[0], answers[1], "Parquet, then CSV");
    let (rows, rejects) = &answers[0];
    assert_eq!(
        rows,
        &[
            r#"O1 | C1 | 2026-01-15T10:00:00Z | 12.50 | 3 | {"score":"1.5"}"#,
            "O2 | C2 | 2026-01-20T00:00:00Z | 3.00 | 1",
        ]
    );
    assert_eq!(rejects, &["item_count | required, but missing"]);
}
