//! Raw tables are Delta tables: other engines' Delta readers see exactly
//! Panorama's rows, compaction and vacuum change no answer, two writers on
//! one table (a folder, an S3 bucket) lose no commit, and a lake written by
//! an older Panorama is refused until `panorama lake upgrade` moves it,
//! resumably.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use panorama::generate::{self, GenerateOptions, Output};
use panorama::identity::{self, IdentityConfig};
use panorama::ingest;
use panorama::lake::{Lake, delta, paths};
use panorama::schema::RawTable;
use panorama::schema::rows::TableRows;
use sha2::Digest;

use crate::support::*;

/// Each raw table and the text column whose values identify its rows.
const KEYS: [(RawTable, &str); 7] = [
    (RawTable::Events, "message_id"),
    (RawTable::Customers, "customer_id"),
    (RawTable::Orders, "order_id"),
    (RawTable::OrderItems, "product_id"),
    (RawTable::Products, "product_id"),
    (RawTable::SurveyResponses, "response_id"),
    (RawTable::Consents, "consent_id"),
];

/// What one engine saw of one table: rows, rows per `date`, and a hash of
/// the sorted key values (as tests/clients/delta_readers.py computes it).
#[derive(Debug, PartialEq, serde::Deserialize)]
struct Seen {
    rows: u64,
    per_day: BTreeMap<String, u64>,
    keys: String,
}

fn seen(rows: &[tokio_postgres::Row]) -> Seen {
    let mut keys: Vec<String> = rows
        .iter()
        .map(|r| r.get::<_, Option<String>>(0).unwrap_or_default())
        .collect();
    keys.sort();
    let mut digest = sha2::Sha256::new();
    for key in &keys {
        digest.update(key.as_bytes());
        digest.update(b"\n");
    }
    let mut per_day = BTreeMap::new();
    for row in rows {
        *per_day.entry(row.get::<_, String>(1)).or_default() += 1;
    }
    Seen {
        rows: rows.len() as u64,
        per_day,
        keys: digest
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    }
}

/// What Panorama answers for every raw table, over the Postgres protocol.
async fn panorama_sees(client: &tokio_postgres::Client) -> BTreeMap<String, Seen> {
    let mut out = BTreeMap::new();
    for (table, key) in KEYS {
        let rows = client
            .query(
                &format!("SELECT {key}, CAST(date AS TEXT) FROM raw.{table}"),
                &[],
            )
            .await
            .unwrap();
        out.insert(table.name().to_string(), seen(&rows));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deltalake_polars_and_duckdb_read_every_raw_table_as_panorama_does() {
    let (dir, lake) = temp_lake();
    let options = GenerateOptions { scale: 1, seed: 7 };
    generate::generate(options, Output::Lake(&lake), |_| {})
        .await
        .unwrap();
    // A second writer's small commit and a compaction on top.
    land_fixture(&lake).await;
    panorama::maintenance::compact(&lake, &[RawTable::Orders], |_, _| {})
        .await
        .unwrap();

    let server = TestServer::start(&lake).await;
    let client = server.client().await;
    let ours = panorama_sees(&client).await;
    server.stop().await;
    assert!(ours["events"].rows > 10_000, "{:?}", ours["events"].rows);
    assert!(ours["events"].per_day.len() > 300, "a year of days");

    let python = std::env::var_os("PANORAMA_TEST_PYTHON")
        .expect("PANORAMA_TEST_PYTHON: run ./tests/run.sh (it installs deltalake, polars, duckdb)");
    let output = Command::new(python)
        .arg(Path::new("tests/clients/delta_readers.py"))
        .arg(dir.path())
        .args(KEYS.iter().map(|(t, k)| format!("{}:{k}", t.name())))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "delta_readers.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let theirs: BTreeMap<String, BTreeMap<String, Seen>> =
        serde_json::from_slice(&output.stdout).unwrap();
    for (table, engines) in &theirs {
        for (engine, seen) in engines {
            assert_eq!(
                seen, &ours[table],
                "{engine} reads raw.{table} differently from Panorama"
            );
        }
        assert_eq!(engines.len(), 3, "{table}: {engines:?}");
    }
    assert_eq!(theirs.len(), KEYS.len());
}

/// One order row of day `day` after JAN_15.
fn order(id: &str, customer: &str, email: &str, cents: i64, day: i64) -> TableRows {
    let mut rows = TableRows::new(RawTable::Orders);
    rows.text(Some(id))
        .text(Some(customer))
        .text(Some(email))
        .text(None)
        .timestamp(Some(JAN_15 + day * DAY))
        .money(Some(cents))
        .text(Some("EUR"))
        .text(Some("completed"))
        .text(Some("web"))
        .int(Some(1));
    rows.end_row();
    rows
}

async fn refresh(lake: &Lake, mode: identity::Mode) -> identity::RefreshReport {
    identity::refresh(
        lake,
        &IdentityConfig::default(),
        mode,
        chrono::DateTime::from_timestamp_micros(JAN_15 + 60 * DAY).unwrap(),
        |_| {},
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_and_vacuum_change_no_answer_and_refresh_stays_incremental() {
    let (_dir, lake) = temp_lake();
    land_fixture(&lake).await;
    // Thirty small landings, as collector flushes make them.
    for i in 0..30 {
        let batch = order(
            &format!("X{i}"),
            &format!("C{}", i % 5),
            &format!("buyer{}@example.com", i % 7),
            1_000 + i,
            i % 9,
        )
        .finish()
        .unwrap();
        ingest::land(&lake, RawTable::Orders, &[batch])
            .await
            .unwrap();
    }
    let dir = paths::raw_table_dir(RawTable::Orders);
    let before_files = delta::files(&lake, &dir).await.unwrap().files.len();
    assert_eq!(before_files, 31);
    let first = refresh(&lake, identity::Mode::Incremental).await;
    assert!(first.full);

    let answers = |lake: Lake| async move {
        sql_lines(
            &lake,
            "SELECT count(*), sum(amount), count(DISTINCT customer_id), min(date), max(date) \
             FROM raw.orders",
        )
        .await
    };
    let profiles = |lake: Lake| async move {
        sql_lines(
            &lake,
            "SELECT profile_id, orders, gross_revenue FROM cdp.profiles ORDER BY profile_id",
        )
        .await
    };
    let expected = answers(lake.clone()).await;

    let compacted = panorama::maintenance::compact(&lake, &[RawTable::Orders], |_, _| {})
        .await
        .unwrap();
    assert_eq!(compacted.files_removed, 31);
    assert_eq!(compacted.files_added, 1);
    assert_eq!(delta::files(&lake, &dir).await.unwrap().files.len(), 1);
    assert_eq!(answers(lake.clone()).await, expected);
    // The history says what wrote each version.
    let history = sql_lines(
        &lake,
        "SELECT version, operation, written_by, files_added, files_removed, rows_added, \
         data_change FROM system.table_history WHERE table_name = 'raw.orders' \
         ORDER BY version DESC LIMIT 2",
    )
    .await;
    assert_eq!(
        history,
        [
            "31 | OPTIMIZE | compact | 1 | 31 | 0 | false",
            "30 | WRITE | land | 1 | 0 | 1 | true"
        ]
    );

    // Compaction added no rows: the next refresh is incremental and reads
    // nothing; one more landing is read alone.
    let after = refresh(&lake, identity::Mode::Incremental).await;
    assert!(!after.full, "{after:?}");
    assert_eq!(after.raw_files, 0, "{after:?}");
    let batch = order("Y1", "C1", "buyer1@example.com", 5_000, 3)
        .finish()
        .unwrap();
    ingest::land(&lake, RawTable::Orders, &[batch])
        .await
        .unwrap();
    let next = refresh(&lake, identity::Mode::Incremental).await;
    assert!(!next.full, "{next:?}");
    assert_eq!(next.raw_files, 1, "{next:?}");
    let incremental = profiles(lake.clone()).await;
    refresh(&lake, identity::Mode::Full).await;
    assert_eq!(profiles(lake.clone()).await, incremental);

    // Vacuum deletes the 31 replaced files, and only them.
    let on_disk = |lake: Lake| async move {
        lake.list(&paths::raw_table_dir(RawTable::Orders))
            .await
            .unwrap()
            .iter()
            .filter(|m| m.location.extension() == Some("parquet"))
            .count()
    };
    assert_eq!(on_disk(lake.clone()).await, 33);
    let deleted = panorama::maintenance::vacuum(&lake, &[RawTable::Orders], 0)
        .await
        .unwrap();
    assert_eq!(deleted, 31);
    assert_eq!(on_disk(lake.clone()).await, 2);
    assert_eq!(profiles(lake.clone()).await, incremental);
}

/// Two handles on one lake (as two processes have) each land `n` one-row
/// commits at the same time; every row must be there after.
async fn two_writers(lake_a: Lake, lake_b: Lake, n: usize) {
    let write = |lake: Lake, prefix: &'static str| async move {
        for i in 0..n {
            let batch = order(&format!("{prefix}{i}"), "C1", "a@example.com", 100, 1)
                .finish()
                .unwrap();
            ingest::land(&lake, RawTable::Orders, &[batch])
                .await
                .unwrap();
        }
    };
    let (a, b) = tokio::join!(
        tokio::spawn(write(lake_a.clone(), "A")),
        tokio::spawn(write(lake_b, "B"))
    );
    a.unwrap();
    b.unwrap();
    let rows = sql_lines(
        &lake_a,
        "SELECT count(*), count(DISTINCT order_id) FROM raw.orders",
    )
    .await;
    assert_eq!(rows, [format!("{} | {}", 2 * n, 2 * n)]);
    let listed = delta::files(&lake_a, &paths::raw_table_dir(RawTable::Orders))
        .await
        .unwrap();
    assert_eq!(
        listed.version,
        Some(2 * n as u64 - 1),
        "one version per commit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_on_one_table_in_a_folder_lose_no_commit() {
    let (dir, lake) = temp_lake();
    let other = Lake::open(dir.path().to_str().unwrap()).unwrap();
    two_writers(lake, other, 12).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_on_one_table_in_an_s3_bucket_lose_no_commit() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("bucket")).unwrap();
    let s3 = crate::s3::S3Server::start(root.path()).await;
    let options = crate::s3::s3_options(s3.addr);
    let a = Lake::open_with_options("s3://bucket/lake", &options).unwrap();
    let b = Lake::open_with_options("s3://bucket/lake", &options).unwrap();
    two_writers(a, b, 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_lake_is_refused_then_upgraded_in_place_resumably() {
    let (dir, lake) = temp_lake();
    // The layout of earlier releases: a folder per day, no Delta log.
    let mut expected = 0;
    let mut old = Vec::new();
    for day in 0..5 {
        let batch = order(
            &format!("OLD{day}"),
            "C1",
            "old@example.com",
            100 * day,
            day,
        )
        .finish()
        .unwrap();
        let path = paths::raw_table_dir(RawTable::Orders)
            .join(format!("date=2026-01-{:02}", 15 + day))
            .join(format!("part-{day}.parquet"));
        panorama::lake::parquet::write_file(
            &lake,
            &path,
            batch.schema(),
            std::slice::from_ref(&batch),
        )
        .await
        .unwrap();
        old.push(batch);
        expected += 1;
    }
    let refused = panorama::maintenance::check_upgraded(&lake)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("panorama lake upgrade"), "{refused}");
    let bin = env!("CARGO_BIN_EXE_panorama");
    let lake_arg = dir.path().to_str().unwrap();
    let serve = Command::new(bin)
        .args(["sql", "SELECT 1", "--lake", lake_arg])
        .output()
        .unwrap();
    assert!(!serve.status.success());
    assert!(
        String::from_utf8_lossy(&serve.stderr).contains("panorama lake upgrade"),
        "{serve:?}"
    );

    // An upgrade that stopped after its commit, before deleting the old
    // files (its only chunk landed under the upgrade's transaction id),
    // resumes without landing the rows twice.
    ingest::land_once(
        &lake,
        RawTable::Orders,
        &old,
        Some(("upgrade-raw.orders", 1)),
    )
    .await
    .unwrap();
    let upgrade = Command::new(bin)
        .args(["lake", "upgrade", "--lake", lake_arg])
        .output()
        .unwrap();
    assert!(upgrade.status.success(), "{upgrade:?}");
    panorama::maintenance::check_upgraded(&lake).await.unwrap();
    let rows = sql_lines(
        &lake,
        "SELECT count(*), count(DISTINCT date), sum(amount) FROM raw.orders",
    )
    .await;
    assert_eq!(rows, [format!("{expected} | 5 | 10.00")]);
    let again = Command::new(bin)
        .args(["lake", "upgrade", "--lake", lake_arg])
        .output()
        .unwrap();
    assert!(again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("up to date"),
        "{again:?}"
    );
    assert_eq!(
        sql_lines(&lake, "SELECT count(*) FROM raw.orders").await,
        [expected.to_string()]
    );
}

/// Random interleavings (seeded, so a failure replays) of landings,
/// compactions and incremental refreshes, with a reader querying all along:
/// the reader only ever sees a whole number of landings — never a
/// duplicated or missing row — and the profiles the incremental refreshes
/// built equal a full rebuild's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_interleaving_of_landing_compaction_and_refresh_shows_a_reader_a_partial_table() {
    use rand::{Rng, SeedableRng};
    for seed in 0..3u64 {
        let (_dir, lake) = temp_lake();
        land_fixture(&lake).await;
        let base = 4; // land_fixture's orders
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        // Landing i holds i % 3 + 1 rows; the reader may see any prefix.
        let sizes: Vec<usize> = (0..24).map(|i| i % 3 + 1).collect();
        let prefixes: std::collections::BTreeSet<usize> = (0..=sizes.len())
            .map(|n| base + sizes[..n].iter().sum::<usize>())
            .collect();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (lake, stop) = (lake.clone(), stop.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let line = sql_lines(
                        &lake,
                        "SELECT count(*), count(DISTINCT order_id) FROM raw.orders",
                    )
                    .await;
                    seen.push(line[0].clone());
                }
                seen
            })
        };
        for (i, &size) in sizes.iter().enumerate() {
            let rows: Vec<_> = (0..size)
                .map(|r| {
                    order(
                        &format!("S{seed}-{i}-{r}"),
                        &format!("C{}", rng.random_range(1..6)),
                        &format!("p{}@example.com", rng.random_range(0..9)),
                        100,
                        rng.random_range(0..20),
                    )
                    .finish()
                    .unwrap()
                })
                .collect();
            ingest::land(&lake, RawTable::Orders, &rows).await.unwrap();
            match rng.random_range(0..4) {
                0 => {
                    panorama::maintenance::compact(&lake, &[RawTable::Orders], |_, _| {})
                        .await
                        .unwrap();
                }
                1 => {
                    refresh(&lake, identity::Mode::Incremental).await;
                }
                _ => {}
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let seen = reader.await.unwrap();
        assert!(!seen.is_empty());
        let mut last = 0;
        for line in &seen {
            let (count, distinct) = line.split_once(" | ").unwrap();
            let (count, distinct): (usize, usize) =
                (count.parse().unwrap(), distinct.parse().unwrap());
            assert_eq!(count, distinct, "seed {seed}: a duplicated row");
            assert!(
                prefixes.contains(&count),
                "seed {seed}: {count} rows is no whole landing"
            );
            assert!(
                count >= last,
                "seed {seed}: rows went missing ({last} then {count})"
            );
            last = count;
        }
        refresh(&lake, identity::Mode::Incremental).await;
        let profiles =
            "SELECT profile_id, orders, gross_revenue, last_seen FROM cdp.profiles ORDER BY 1";
        let incremental = sql_lines(&lake, profiles).await;
        refresh(&lake, identity::Mode::Full).await;
        assert_eq!(sql_lines(&lake, profiles).await, incremental, "seed {seed}");
    }
}

/// `panorama compact` killed at any moment leaves the table readable at
/// its previous version, and the next run completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compaction_killed_midway_leaves_the_table_whole() {
    let (dir, lake) = temp_lake();
    for i in 0..40 {
        let batch = order(&format!("K{i}"), "C1", "k@example.com", 100, i % 10)
            .finish()
            .unwrap();
        ingest::land(&lake, RawTable::Orders, &[batch])
            .await
            .unwrap();
    }
    let count = "SELECT count(*), count(DISTINCT order_id) FROM raw.orders";
    let bin = env!("CARGO_BIN_EXE_panorama");
    let lake_arg = dir.path().to_str().unwrap();
    for delay_ms in [0u64, 15, 40, 80, 150] {
        let mut child = Command::new(bin)
            .args(["compact", "orders", "--lake", lake_arg])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
        child.kill().unwrap();
        let _ = child.wait();
        assert_eq!(
            sql_lines(&lake, count).await,
            ["40 | 40"],
            "killed after {delay_ms} ms"
        );
    }
    let done = Command::new(bin)
        .args(["compact", "orders", "--lake", lake_arg])
        .output()
        .unwrap();
    assert!(done.status.success(), "{done:?}");
    assert_eq!(sql_lines(&lake, count).await, ["40 | 40"]);
    let files = delta::files(&lake, &paths::raw_table_dir(RawTable::Orders))
        .await
        .unwrap();
    assert_eq!(files.files.len(), 1);
}
