//! Incremental refreshes against full rebuilds, on random identity data:
//! random rows split into random files that land in random orders. After
//! every landing an incremental refresh reads only the new files; the
//! result must equal a full rebuild of the same lake (same components,
//! same ids, same profile facts), a full rebuild of a lake that received
//! the files in another order (same components and facts), and, with the
//! limits switched off, the components of a plain union-find written here.

use std::collections::{BTreeMap, BTreeSet};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use panorama::engine::{self, EngineOptions};
use panorama::identity::{self, IdentityConfig, Mode};
use panorama::ingest;
use panorama::lake::Lake;
use panorama::schema::RawTable;
use panorama::schema::rows::TableRows;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::support::*;

/// One raw row: its table, the identifiers on it (type, raw value) and
/// what it says (an event type, an order amount, a first name).
#[derive(Debug, Clone)]
struct Row {
    table: RawTable,
    ids: Vec<(&'static str, String)>,
    what: String,
    cents: i64,
    at: i64,
}

fn random_rows(rng: &mut ChaCha8Rng) -> Vec<Row> {
    let start = JAN_15 - 20 * DAY;
    let at = |rng: &mut ChaCha8Rng| start + rng.random_range(0..6 * DAY);
    // Case and space variants of one email must be one identifier.
    let email = |rng: &mut ChaCha8Rng| {
        let e = format!("e{}@x.com", rng.random_range(0..8));
        match rng.random_range(0..3) {
            0 => e,
            1 => e.to_uppercase(),
            _ => format!("  {e} "),
        }
    };
    let mut rows = Vec::new();
    for _ in 0..50 {
        let mut ids = vec![("anonymous_id", format!("k{}", rng.random_range(0..25)))];
        if rng.random_bool(0.3) {
            ids.push(("user_id", format!("u{}", rng.random_range(0..8))));
        }
        if rng.random_bool(0.2) {
            ids.push(("email", email(rng)));
        }
        let kind = ["page", "track", "identify"][rng.random_range(0..3)];
        rows.push(Row {
            table: RawTable::Events,
            ids,
            what: kind.into(),
            cents: 0,
            at: at(rng),
        });
    }
    for _ in 0..8 {
        let mut ids = vec![("customer_id", format!("C{}", rng.random_range(0..5)))];
        if rng.random_bool(0.7) {
            ids.push(("email", email(rng)));
        }
        rows.push(Row {
            table: RawTable::Customers,
            ids,
            what: ["Ann", "Ben", "Cid"][rng.random_range(0..3)].into(),
            cents: 0,
            at: at(rng),
        });
    }
    for _ in 0..15 {
        let mut ids = Vec::new();
        if rng.random_bool(0.5) {
            ids.push(("customer_id", format!("C{}", rng.random_range(0..5))));
        }
        if rng.random_bool(0.4) {
            ids.push(("email", email(rng)));
        }
        if ids.is_empty() || rng.random_bool(0.4) {
            ids.push(("anonymous_id", format!("k{}", rng.random_range(0..25))));
        }
        rows.push(Row {
            table: RawTable::Orders,
            ids,
            what: ["completed", "returned"][rng.random_range(0..2)].into(),
            cents: rng.random_range(100..10_000),
            at: at(rng),
        });
    }
    rows
}

fn id<'a>(row: &'a Row, id_type: &str) -> Option<&'a str> {
    row.ids
        .iter()
        .find(|(t, _)| *t == id_type)
        .map(|(_, v)| v.as_str())
}

/// Land `rows` (one file per table and day touched).
async fn land(lake: &Lake, rows: &[Row], n: usize) {
    for table in [RawTable::Events, RawTable::Customers, RawTable::Orders] {
        let mut b = TableRows::new(table);
        for (i, r) in rows.iter().enumerate().filter(|(_, r)| r.table == table) {
            match table {
                RawTable::Events => {
                    b.text(Some(&format!("m{n}-{i}")))
                        .text(Some(&r.what))
                        .text(None)
                        .text(None)
                        .text(id(r, "anonymous_id"))
                        .text(id(r, "user_id"))
                        .text(None)
                        .text(None)
                        .text(id(r, "email"))
                        .timestamp(Some(r.at))
                        .timestamp(Some(r.at))
                        .text(None)
                        .text(None)
                        .text(None);
                }
                RawTable::Customers => {
                    b.text(id(r, "customer_id"))
                        .text(id(r, "email"))
                        .text(None)
                        .text(Some(&r.what));
                    for _ in 0..5 {
                        b.text(None);
                    }
                    b.date(None)
                        .text(None)
                        .boolean(None)
                        .text(Some("crm"))
                        .timestamp(Some(r.at))
                        .timestamp(Some(r.at));
                }
                _ => {
                    b.text(Some(&format!("o{n}-{i}")))
                        .text(id(r, "customer_id"))
                        .text(id(r, "email"))
                        .text(id(r, "anonymous_id"))
                        .timestamp(Some(r.at))
                        .money(Some(r.cents))
                        .text(Some("EUR"))
                        .text(Some(&r.what))
                        .text(Some("web"))
                        .int(Some(1));
                }
            }
            b.end_row();
        }
        if !b.is_empty() {
            ingest::land(lake, table, &[b.finish().unwrap()])
                .await
                .unwrap();
        }
    }
}

fn lines(batches: &[RecordBatch], skip: usize) -> Vec<String> {
    let projected: Vec<RecordBatch> = batches
        .iter()
        .map(|b| {
            b.project(&(skip..b.num_columns()).collect::<Vec<_>>())
                .unwrap()
        })
        .collect();
    let mut out: Vec<String> = pretty_format_batches(&projected)
        .unwrap()
        .to_string()
        .lines()
        .filter(|l| l.starts_with('|'))
        .skip(1)
        .map(String::from)
        .collect();
    out.sort();
    out
}

/// What a lake's committed views say: links (type, value, profile id),
/// profile rows with ids, and profile rows without ids.
#[derive(Debug, PartialEq)]
struct Views {
    links: Vec<String>,
    profiles: Vec<String>,
    facts: Vec<String>,
}

async fn views(lake: &Lake, config: &IdentityConfig) -> Views {
    let options = EngineOptions {
        identity: config.clone(),
        ..EngineOptions::default()
    };
    let ctx = engine::session(lake, &options).unwrap();
    let q = |sql: &'static str| {
        let ctx = ctx.clone();
        async move { ctx.sql(sql).await.unwrap().collect().await.unwrap() }
    };
    let links = q("SELECT id_type, id_value, profile_id FROM cdp.identity_links").await;
    // Every column but refreshed_at (the last).
    let profiles = q("SELECT * FROM cdp.profiles").await;
    let profiles: Vec<RecordBatch> = profiles
        .iter()
        .map(|b| {
            b.project(&(0..b.num_columns() - 1).collect::<Vec<_>>())
                .unwrap()
        })
        .collect();
    Views {
        links: lines(&links, 0),
        profiles: lines(&profiles, 0),
        facts: lines(&profiles, 1),
    }
}

/// Components as sets of `type:value`, from the committed links.
async fn components(lake: &Lake, config: &IdentityConfig) -> BTreeSet<BTreeSet<String>> {
    let v = views(lake, config).await;
    let mut by_profile: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in v.links {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        by_profile
            .entry(cells[3].to_string())
            .or_default()
            .insert(format!("{}:{}", cells[1], cells[2]));
    }
    by_profile.into_values().collect()
}

/// A plain union-find over the rows' normalised identifiers.
fn reference_components(rows: &[Row]) -> BTreeSet<BTreeSet<String>> {
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    let mut parent: Vec<usize> = Vec::new();
    fn find(parent: &mut [usize], x: usize) -> usize {
        let mut r = x;
        while parent[r] != r {
            r = parent[r];
        }
        parent[x] = r;
        r
    }
    for row in rows {
        let mut first = None;
        for (t, v) in &row.ids {
            let v = if *t == "email" || *t == "anonymous_id" {
                v.trim().to_lowercase()
            } else {
                v.trim().to_string()
            };
            let key = format!("{t}:{v}");
            let next = index.len();
            let n = *index.entry(key).or_insert(next);
            if n == parent.len() {
                parent.push(n);
            }
            match first {
                None => first = Some(n),
                Some(f) => {
                    let (a, b) = (find(&mut parent, f), find(&mut parent, n));
                    parent[a] = b;
                }
            }
        }
    }
    let mut out: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    for (key, n) in &index {
        let root = find(&mut parent, *n);
        out.entry(root).or_default().insert(key.clone());
    }
    out.into_values().collect()
}

/// Refresh as of `day` days after January 15th.
async fn refresh(
    lake: &Lake,
    config: &IdentityConfig,
    mode: Mode,
    day: i64,
) -> identity::RefreshReport {
    identity::refresh(
        lake,
        config,
        mode,
        chrono::DateTime::from_timestamp_micros(JAN_15 + day * DAY).unwrap(),
        |_| {},
    )
    .await
    .unwrap()
}

async fn check(seed: u64, config: &IdentityConfig, unlimited: bool) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let rows = random_rows(&mut rng);
    let mut shuffled = rows.clone();
    shuffled.shuffle(&mut rng);
    let parts = rng.random_range(2..6);
    let size = shuffled.len().div_ceil(parts);
    let chunks: Vec<Vec<Row>> = shuffled.chunks(size).map(<[Row]>::to_vec).collect();

    // Lake A: land chunk by chunk, refreshing incrementally each time.
    let (_a_dir, a) = temp_lake();
    for (n, chunk) in chunks.iter().enumerate() {
        land(&a, chunk, n).await;
        // Time passes between refreshes: idle anonymous profiles leave.
        let report = refresh(&a, config, Mode::Incremental, 2 * n as i64).await;
        assert_eq!(report.full, n == 0, "seed {seed}: refresh {n}");
        // Deltas on top of the first version, but every max_delta_layers-th
        // refresh, which compacts them (and none when no change is small
        // enough for one: new rows always change something).
        let layers = config.max_delta_layers as usize;
        assert_eq!(
            report.delta,
            config.max_delta_share > 0.0 && n > 0 && (n - 1) % (layers + 1) < layers,
            "seed {seed}: refresh {n} writes only what changed"
        );
        if n == 0 {
            assert_eq!(report.full_reason.as_deref(), Some("first refresh"));
        }
        assert_eq!(
            report.raw_rows,
            chunk.len(),
            "seed {seed}: refresh {n} reads only the new rows"
        );
    }
    let incremental = views(&a, config).await;
    assert!(!incremental.links.is_empty());
    let last_day = 2 * (chunks.len() as i64 - 1);
    let report = refresh(&a, config, Mode::Full, last_day).await;
    assert_eq!(report.raw_rows, rows.len());
    assert_eq!(report.full_reason.as_deref(), Some("requested"));
    let full = views(&a, config).await;
    assert_eq!(
        incremental, full,
        "seed {seed}: a full rebuild gives the same ids and profiles"
    );
    if config.parallel_profiles_from < rows.len() {
        // Built in two halves on two threads or as one file, the profiles
        // are the same.
        let one_file = IdentityConfig {
            parallel_profiles_from: usize::MAX,
            ..config.clone()
        };
        refresh(&a, &one_file, Mode::Full, last_day).await;
        assert_eq!(
            views(&a, &one_file).await,
            full,
            "seed {seed}: cdp.profiles as one file"
        );
    }

    // Lake B: the same files in another order, one full rebuild.
    let (_b_dir, b) = temp_lake();
    let mut order: Vec<usize> = (0..chunks.len()).collect();
    order.shuffle(&mut rng);
    for n in order {
        land(&b, &chunks[n], n).await;
    }
    refresh(&b, config, Mode::Full, last_day).await;
    assert_eq!(
        components(&b, config).await,
        components(&a, config).await,
        "seed {seed}: arrival order changes no component"
    );
    assert_eq!(
        views(&b, config).await.facts,
        full.facts,
        "seed {seed}: nor any profile fact"
    );
    if unlimited {
        assert_eq!(
            components(&a, config).await,
            reference_components(&rows),
            "seed {seed}: components of a plain union-find"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_refreshes_equal_full_rebuilds_in_any_file_order() {
    // Every incremental refresh writes only what changed, however much
    // that is; one setting compacts every second layer and writes the
    // profiles in two halves.
    // Rows are 14 to 20 days old on January 15th: anonymous-only profiles
    // leave the view one refresh after another.
    let mut default = IdentityConfig {
        max_delta_share: 1.0,
        anonymous_idle_days: 17,
        ..IdentityConfig::default()
    };
    let mut unlimited = default.clone();
    for t in &mut unlimited.types {
        t.max_per_profile = None;
    }
    unlimited.max_distinct_neighbours = 1000;
    unlimited.anonymous_idle_days = 100_000;
    // Any change is too much for a delta: every incremental refresh
    // resolves part of the graph, reads the stored facts it touches, then
    // finds it must write whole views (and reads the other facts).
    let whole = IdentityConfig {
        max_delta_share: 0.0,
        ..default.clone()
    };
    for seed in 0..6 {
        if seed < 2 {
            check(200 + seed, &whole, false).await;
        }
        default.max_delta_layers = if seed % 2 == 0 { 8 } else { 2 };
        // Every second seed writes cdp.profiles as two files on two threads.
        default.parallel_profiles_from = if seed % 2 == 0 { 1 << 20 } else { 2 };
        check(seed, &default, false).await;
        check(100 + seed, &unlimited, true).await;
    }
}
