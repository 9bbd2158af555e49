//! The rights of the people whose data the lake holds. This owns erasure
//! (GDPR art. 17, `panorama privacy forget`, `CALL panorama.forget(…)`),
//! access and portability (art. 15 and 20, `panorama privacy export`),
//! proof of consent (art. 7, `panorama privacy proof`),
//! retention (rows older than a period, [`retain`], run by a shipped job),
//! and their audit record, `system.privacy_requests`.
//!
//! An erasure brings the identity graph up to date, resolves the people
//! through it ([`people`]), then removes every row about them from the
//! lake: each raw table (a Delta delete: files holding none of their rows
//! are not touched, the others are rewritten without them in one commit),
//! the order lines of their orders, the rejected rows that mention them,
//! administrators' blocks naming their identifiers; then it rebuilds the
//! `cdp` views without them and deletes every older view version, and
//! purges the history of every table it changed (old data files, and the
//! log entries whose statistics could quote a value). The audit record
//! keeps each identifier only as a salted hash.
//!
//! Job tables (`analytics/tables/`) are rewritten without the rows whose
//! text cells hold one of the people's identifiers or profile ids.
//!
//! An erasure a crash interrupted is completed by the next one, or when
//! `serve` starts ([`resume`]). Events still in a collector's write-ahead
//! log are dropped at its next flush: the erasure suppresses the people
//! while it runs (and for good, unless asked otherwise).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use chrono::Utc;
use datafusion::arrow::array::AsArray;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::prelude::{SessionContext, col};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use uuid::Uuid;

use crate::engine::{self, EngineOptions};
use crate::error::{Error, Result};
use crate::identity::{self, IdentityConfig, suppression};
use crate::lake::{Lake, delta, parquet, paths};
use crate::schema::RawTable;

mod audit;
mod export;
pub mod people;
mod proof;
mod retention;

pub use audit::requests_dir;
use audit::{Request, hashes, record};
pub use export::{Exported, export, json_rows};
use people::People;
pub use proof::{Evidence, Proof, proof};
pub use retention::{Rules, retain};

/// What an erasure did.
#[derive(Debug, Clone, Default)]
pub struct Forgotten {
    pub request_id: String,
    /// Identifiers of the people, found through the identity graph.
    pub identifiers: usize,
    pub profiles: usize,
    /// `raw.orders`, `system.rejects`, … → rows removed from it.
    pub rows_removed: BTreeMap<String, usize>,
    /// Data files rewritten without their rows.
    pub files_rewritten: usize,
    /// Files deleted from disk: older versions of the tables changed, old
    /// log entries, older view versions.
    pub files_purged: usize,
}

impl Forgotten {
    pub fn rows(&self) -> usize {
        self.rows_removed.values().sum()
    }
}

/// Erase the people `requested` names ((identifier type, value) pairs,
/// values as given) from every place of the lake; `progress` hears each
/// step. Recorded in `system.privacy_requests`, started and then completed
/// or failed. Erasures an earlier process left unfinished are completed
/// first ([`resume`]).
pub async fn forget(
    lake: &Lake,
    config: &IdentityConfig,
    requested: &[(String, String)],
    options: ForgetOptions,
    mut progress: impl FnMut(&str),
) -> Result<Forgotten> {
    resume(lake, config, &mut progress).await?;
    let kind = if options.suppress {
        "erasure"
    } else {
        "erasure_only"
    };
    let request = Request::new(lake, config, kind, requested).await?;
    record(lake, &request, "started", &Forgotten::default(), None).await?;
    let outcome = erase(lake, config, Some(requested), &request, &mut progress).await;
    finish(lake, &request, outcome).await
}

/// Complete every erasure that was started and neither completed nor
/// failed: its process was killed or its machine stopped. Run before each
/// new erasure and when `serve` starts. The people are found again from
/// what the request recorded before removing anything: the salted hashes
/// of all their identifiers (`system.suppressions`), matched against the
/// identity graph; every step is then done again (each is idempotent), and
/// the history of every table it could have changed is purged.
pub async fn resume(
    lake: &Lake,
    config: &IdentityConfig,
    progress: &mut impl FnMut(&str),
) -> Result<Vec<Forgotten>> {
    if delta::open(lake, &requests_dir()).await?.is_none() {
        return Ok(Vec::new());
    }
    let ctx = session(lake, config)?;
    let mut done = Vec::new();
    for request in audit::interrupted(&ctx).await? {
        progress(&format!("completing erasure {} (interrupted)", request.id));
        tracing::warn!(request = %request.id, "completing an interrupted erasure");
        let outcome = erase(lake, config, None, &request, progress).await;
        done.push(finish(lake, &request, outcome).await?);
    }
    Ok(done)
}

/// Record how `request` ended.
async fn finish(lake: &Lake, request: &Request, outcome: Result<Forgotten>) -> Result<Forgotten> {
    match outcome {
        Ok(done) => {
            let done = Forgotten {
                request_id: request.id.clone(),
                ..done
            };
            record(lake, request, "completed", &done, None).await?;
            Ok(done)
        }
        Err(e) => {
            let error = crate::redact::values(&e.to_string());
            record(lake, request, "failed", &Forgotten::default(), Some(&error)).await?;
            Err(e)
        }
    }
}

/// How an erasure goes beyond the rows it removes.
#[derive(Debug, Clone, Copy)]
pub struct ForgetOptions {
    /// Also suppress every identifier of the people, so that nothing new
    /// about them lands (the default; an erasure that should let them come
    /// back as new data turns it off).
    pub suppress: bool,
}

impl Default for ForgetOptions {
    fn default() -> Self {
        ForgetOptions { suppress: true }
    }
}

/// Suppress (or, with `lift`, unsuppress) the identifiers `requested`
/// names, exactly as named (normalised), not their whole person: new rows
/// carrying one are dropped by `ingest` and the collector. Lifting a
/// suppression never brings erased data back. Returns how many.
pub async fn suppress(
    lake: &Lake,
    config: &IdentityConfig,
    requested: &[(String, String)],
    lift: bool,
) -> Result<usize> {
    let hashes = hashes(lake, config, requested).await?;
    let action = if lift { "unsuppress" } else { "suppress" };
    suppression::record(lake, &Uuid::new_v4().to_string(), action, &hashes).await?;
    Ok(hashes.len())
}

/// The erasure itself. `requested` names the people; `None` resumes
/// `request`, an erasure a crash interrupted.
///
/// The order makes a crash at any point resumable: every identifier of the
/// people is recorded (salted) before anything is removed; then the rows
/// found only through other rows go first (rejected rows, blocks, job
/// tables keyed by profile id, order lines by their order's id), and the
/// raw rows that carry identifiers last, so that whatever is left after a
/// crash is still found through the identity graph.
async fn erase(
    lake: &Lake,
    config: &IdentityConfig,
    requested: Option<&[(String, String)]>,
    request: &Request,
    progress: &mut impl FnMut(&str),
) -> Result<Forgotten> {
    progress("finding every identifier of the people (the identity graph brought up to date)");
    let salt = suppression::salt(lake).await?;
    let (ctx, people) = match requested {
        Some(requested) => resolve(lake, config, requested).await?,
        None => {
            let mut hashes = suppression::suppressed_by(lake, &request.id).await?;
            hashes.extend(request.hashes.iter().cloned());
            let (ctx, _) = resolve(lake, config, &[]).await?;
            let found = People::unhashed(&ctx, &salt, &hashes).await?;
            resolve(lake, config, &found).await?
        }
    };
    let mut done = Forgotten {
        identifiers: people.identifiers(),
        profiles: people.profiles.len(),
        ..Forgotten::default()
    };
    // First, so that what arrives while the erasure runs is dropped, and
    // so that a crash leaves the people findable. An erasure that lets
    // them come back lifts, at its end, what it suppressed here.
    let already = suppression::Suppressions::load(lake).await?;
    let hashes: Vec<(String, String)> = people
        .identifier_pairs()
        .filter(|(t, v)| !already.holds(t, v))
        .map(|(t, v)| (t.to_string(), suppression::hash(&salt, t, v)))
        .collect();
    suppression::record(lake, &request.id, "suppress", &hashes).await?;
    // Every Delta table that can hold rows about them: (name, folder,
    // the rows, how its files are written), in the order above.
    let mut deletes = Vec::new();
    for table in lake.raw_tables() {
        let dir = crate::lake::paths::rejects_dir(table);
        let mentions = people.mentioned_in("raw");
        deletes.push((
            "system.rejects".into(),
            dir,
            Some(mentions),
            parquet::writer_properties(),
        ));
    }
    let named = people
        .value_in("id_value")
        .or(people.value_in("other_value"));
    deletes.push((
        "system.identity_blocks".into(),
        Path::from("system/identity_blocks"),
        Some(named),
        parquet::writer_properties(),
    ));
    let mut raw = raw_rows_about(&ctx, &people, config).await?;
    // Order lines are found by their order's id: before the orders go.
    raw.sort_by_key(|(table, _)| *table != RawTable::OrderItems);
    let mut predicates: Vec<_> = raw.into_iter().map(|(t, p)| (t, Some(p))).collect();
    for table in lake.raw_tables() {
        if !predicates.iter().any(|(t, _)| *t == table) {
            // Nothing to remove; its history is still purged on a resume.
            predicates.push((table, None));
        }
    }
    let job_tables = deletes.len();
    for (table, predicate) in predicates {
        let properties = parquet::writer_properties_with(crate::ingest::compression(table));
        let dir = paths::raw_table_dir(table);
        deletes.push((format!("raw.{table}"), dir, predicate, properties));
    }
    let resuming = requested.is_none();
    let mut changed = Vec::new();
    for (i, (name, dir, predicate, properties)) in deletes.into_iter().enumerate() {
        if i == job_tables {
            progress("removing their rows from the job tables");
            erase_job_tables(lake, &people, &mut done).await?;
        }
        let Some(predicate) = predicate.filter(|_| !people.is_empty()) else {
            if resuming {
                changed.push(dir);
            }
            continue;
        };
        progress(&format!("removing their rows from {name}"));
        let deleted = delta::delete(lake, &dir, predicate, properties, "erase").await?;
        if (deleted.rows > 0 || resuming) && !changed.contains(&dir) {
            changed.push(dir);
        }
        if deleted.rows > 0 {
            *done.rows_removed.entry(name).or_default() += deleted.rows;
            done.files_rewritten += deleted.files_rewritten;
        }
    }
    progress("rebuilding the profiles without them");
    refresh(lake, config, identity::Mode::Full).await?;
    done.files_purged += identity::remove_old_versions(lake).await?;
    erase_merge_history(lake, &people, &mut done).await?;
    progress("deleting the old versions of the tables changed");
    for dir in &changed {
        done.files_purged += delta::purge_history(lake, dir).await?;
    }
    if request.kind == "erasure_only" {
        let lifted: Vec<(String, String)> = suppression::suppressed_by(lake, &request.id)
            .await?
            .into_iter()
            .collect();
        suppression::record(lake, &request.id, "unsuppress", &lifted).await?;
    }
    Ok(done)
}

/// The rows of the Parquet file `meta` that are not about the people
/// ([`People::rows_holding`]), and how many are.
async fn rows_not_about(
    lake: &Lake,
    people: &People,
    meta: &object_store::ObjectMeta,
) -> Result<(Vec<datafusion::arrow::array::RecordBatch>, usize)> {
    let mut kept = Vec::new();
    let mut dropped = 0;
    parquet::for_each_batch(lake, meta, |batch| {
        let hits = people.rows_holding(batch)?;
        dropped += hits.iter().filter(|h| **h).count();
        let keep: datafusion::arrow::array::BooleanArray = hits.iter().map(|h| Some(!h)).collect();
        kept.push(
            datafusion::arrow::compute::filter_record_batch(batch, &keep)
                .map_err(|e| Error::arrow("filtering rows about the people", e))?,
        );
        Ok(())
    })
    .await?;
    Ok((kept, dropped))
}

/// Rewrite the files of the current `cdp.profile_merges` (the history of
/// merges and splits, carried from version to version) without the rows
/// that name the people: a merge's cause is one of their identifiers, or
/// its profiles are theirs. Each file is replaced whole (a reader sees the
/// old file or the new one).
async fn erase_merge_history(lake: &Lake, people: &People, done: &mut Forgotten) -> Result<()> {
    let Some(manifest) = crate::lake::manifest::Manifest::load(lake).await? else {
        return Ok(());
    };
    let Some(folder) = manifest.tables.get("profile_merges") else {
        return Ok(());
    };
    let mut removed = 0;
    for meta in lake.list(&Path::from(folder.as_str())).await? {
        let (kept, dropped) = rows_not_about(lake, people, &meta).await?;
        if dropped == 0 {
            continue;
        }
        let path = lake.relative(&meta.location);
        parquet::write_file(lake, &path, crate::schema::cdp::profile_merges(), &kept).await?;
        done.files_rewritten += 1;
        removed += dropped;
    }
    if removed > 0 {
        *done
            .rows_removed
            .entry("cdp.profile_merges".into())
            .or_default() += removed;
    }
    Ok(())
}

/// Rewrite every job table (`analytics/tables/<name>/`) whose current
/// version holds a row about the people: each of its folders with such a
/// row is written again without them into a new folder, the table is
/// switched to the new version, and the old folders are deleted.
async fn erase_job_tables(lake: &Lake, people: &People, done: &mut Forgotten) -> Result<()> {
    use crate::analytics::tables;
    for name in tables::names(lake).await? {
        let Some(current) = tables::current(lake, &name).await? else {
            continue;
        };
        let version = current.version + 1;
        let mut folders = Vec::with_capacity(current.folders.len());
        let mut superseded = Vec::new();
        let mut removed = 0;
        for (i, folder) in current.folders.iter().enumerate() {
            let mut files = Vec::new();
            let mut dropped = 0;
            for meta in lake.list(&Path::from(folder.as_str())).await? {
                let (kept, n) = rows_not_about(lake, people, &meta).await?;
                dropped += n;
                files.push((meta, kept));
            }
            if dropped == 0 {
                folders.push(folder.clone());
                continue;
            }
            let rewritten = tables::root()
                .join(name.as_str())
                .join(format!("v={version:08}-erasure-{i}"))
                .to_string();
            for (n, (meta, kept)) in files.iter().enumerate() {
                let Some(first) = kept.first() else {
                    continue;
                };
                let path = Path::from(format!("{rewritten}/part-{n}.parquet"));
                parquet::write_file(lake, &path, first.schema(), kept).await?;
                done.files_rewritten += 1;
                superseded.push(meta.location.clone());
            }
            folders.push(rewritten);
            removed += dropped;
        }
        if removed == 0 {
            continue;
        }
        let next = tables::Current {
            version,
            folders,
            ..current
        };
        tables::switch(lake, &name, &next).await?;
        for location in superseded {
            lake.store()
                .delete(&location)
                .await
                .map_err(|e| Error::store(format!("removing {location}"), e))?;
            done.files_purged += 1;
        }
        *done
            .rows_removed
            .entry(format!("analytics.{name}"))
            .or_default() += removed;
    }
    Ok(())
}

/// A refresh of the profiles now, its report unused.
pub(super) async fn refresh(
    lake: &Lake,
    config: &IdentityConfig,
    mode: identity::Mode,
) -> Result<()> {
    identity::refresh(lake, config, mode, Utc::now(), |_| {}).await?;
    Ok(())
}

/// A session on `lake` that resolves identifiers as `config` says.
fn session(lake: &Lake, config: &IdentityConfig) -> Result<SessionContext> {
    engine::session(
        lake,
        &EngineOptions {
            identity: config.clone(),
            ..Default::default()
        },
    )
}

/// The people `requested` names, resolved on an up-to-date identity graph,
/// and the session that resolved them.
pub(super) async fn resolve(
    lake: &Lake,
    config: &IdentityConfig,
    requested: &[(String, String)],
) -> Result<(SessionContext, Arc<People>)> {
    refresh(lake, config, identity::Mode::Incremental).await?;
    let ctx = session(lake, config)?;
    let people = Arc::new(People::resolve(&ctx, config, requested).await?);
    Ok((ctx, people))
}

/// For each raw table that can hold rows about the people, the predicate
/// that finds them: through its identifier sources, and for the lines of
/// their orders (which carry no identifier) by order id.
pub(super) async fn raw_rows_about(
    ctx: &SessionContext,
    people: &Arc<People>,
    config: &IdentityConfig,
) -> Result<Vec<(RawTable, datafusion::logical_expr::Expr)>> {
    let order_ids = match people.about(RawTable::Orders.name(), config)? {
        Some(about) => keys(ctx, "raw.orders", about, "order_id").await?,
        None => HashSet::new(),
    };
    let mut out = Vec::new();
    // Built-in tables, and declared ones that identifiers are read from.
    let tables: std::collections::BTreeSet<RawTable> = RawTable::ALL
        .into_iter()
        .chain(config.source_tables())
        .collect();
    for table in tables {
        let predicate = match table {
            RawTable::OrderItems if !order_ids.is_empty() => {
                Some(People::key_in(order_ids.clone(), "order_id"))
            }
            _ => people.about(table.name(), config)?,
        };
        out.extend(predicate.map(|p| (table, p)));
    }
    Ok(out)
}

/// The values of `column` in the rows of `table` for which `about` holds.
pub(super) async fn keys(
    ctx: &SessionContext,
    table: &str,
    about: datafusion::logical_expr::Expr,
    column: &str,
) -> Result<HashSet<String>> {
    let batches = ctx
        .table(table)
        .await?
        .filter(about)?
        .select(vec![col(column)])?
        .collect()
        .await?;
    let mut keys = HashSet::new();
    for batch in &batches {
        let values = cast(batch.column(0), &DataType::Utf8)
            .map_err(|e| Error::arrow("reading order ids", e))?;
        keys.extend(
            values
                .as_string::<i32>()
                .iter()
                .flatten()
                .map(str::to_string),
        );
    }
    Ok(keys)
}
