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
//! Not covered yet (see the notes): events still in a collector's
//! write-ahead log (they are dropped at its next flush when the erasure
//! suppressed the person, as it does by default),
//! and resuming an erasure a crash interrupted (running it again finishes
//! the work: every step is idempotent).

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
pub use export::{Exported, export};
use people::People;
pub use proof::{Evidence, Proof, proof};
pub use retention::retain;

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
/// or failed.
pub async fn forget(
    lake: &Lake,
    config: &IdentityConfig,
    requested: &[(String, String)],
    options: ForgetOptions,
    mut progress: impl FnMut(&str),
) -> Result<Forgotten> {
    let request = Request::new(lake, config, "erasure", requested).await?;
    record(lake, &request, "started", &Forgotten::default(), None).await?;
    let outcome = erase(lake, config, requested, &request, options, &mut progress).await;
    match &outcome {
        Ok(done) => {
            let done = Forgotten {
                request_id: request.id.clone(),
                ..done.clone()
            };
            record(lake, &request, "completed", &done, None).await?;
            return Ok(done);
        }
        Err(e) => {
            let error = crate::redact::values(&e.to_string());
            record(
                lake,
                &request,
                "failed",
                &Forgotten::default(),
                Some(&error),
            )
            .await?;
        }
    }
    outcome
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

async fn erase(
    lake: &Lake,
    config: &IdentityConfig,
    requested: &[(String, String)],
    request: &Request,
    options: ForgetOptions,
    progress: &mut impl FnMut(&str),
) -> Result<Forgotten> {
    progress("finding every identifier of the people (the identity graph brought up to date)");
    let (ctx, people) = resolve(lake, config, requested).await?;
    let mut done = Forgotten {
        identifiers: people.identifiers(),
        profiles: people.profiles.len(),
        ..Forgotten::default()
    };
    if options.suppress {
        // First, so that what arrives while the erasure runs is dropped.
        let salt = suppression::salt(lake).await?;
        let hashes: Vec<(String, String)> = people
            .identifier_pairs()
            .map(|(t, v)| (t.to_string(), suppression::hash(&salt, t, v)))
            .collect();
        suppression::record(lake, &request.id, "suppress", &hashes).await?;
    }
    // Every Delta table that can hold rows about them: (name, folder,
    // the rows, how its files are written).
    let mut deletes = Vec::new();
    for (table, predicate) in raw_rows_about(&ctx, &people, config).await? {
        let properties = parquet::writer_properties_with(crate::ingest::compression(table));
        let dir = paths::raw_table_dir(table);
        deletes.push((format!("raw.{table}"), dir, predicate, properties));
    }
    for table in RawTable::ALL {
        let dir = crate::ingest::files::rejects_dir(table);
        let mentions = people.mentioned_in("raw");
        deletes.push((
            "system.rejects".into(),
            dir,
            mentions,
            parquet::writer_properties(),
        ));
    }
    let named = people
        .value_in("id_value")
        .or(people.value_in("other_value"));
    let blocks = Path::from("system/identity_blocks");
    deletes.push((
        "system.identity_blocks".into(),
        blocks,
        named,
        parquet::writer_properties(),
    ));
    let mut changed = Vec::new();
    for (name, dir, predicate, properties) in deletes {
        progress(&format!("removing their rows from {name}"));
        let deleted = delta::delete(lake, &dir, predicate, properties, "erase").await?;
        if deleted.rows > 0 {
            *done.rows_removed.entry(name).or_default() += deleted.rows;
            done.files_rewritten += deleted.files_rewritten;
            if !changed.contains(&dir) {
                changed.push(dir);
            }
        }
    }
    progress("removing their rows from the job tables");
    erase_job_tables(lake, &people, &mut done).await?;
    progress("rebuilding the profiles without them");
    refresh(lake, config, identity::Mode::Full).await?;
    done.files_purged += identity::remove_old_versions(lake).await?;
    progress("deleting the old versions of the tables changed");
    for dir in &changed {
        done.files_purged += delta::purge_history(lake, dir).await?;
    }
    Ok(done)
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
                let mut kept = Vec::new();
                parquet::for_each_batch(lake, &meta, |batch| {
                    let hits = people.rows_holding(batch)?;
                    dropped += hits.iter().filter(|h| **h).count();
                    let keep: datafusion::arrow::array::BooleanArray =
                        hits.iter().map(|h| Some(!h)).collect();
                    kept.push(
                        datafusion::arrow::compute::filter_record_batch(batch, &keep)
                            .map_err(|e| Error::arrow("filtering a job table", e))?,
                    );
                    Ok(())
                })
                .await?;
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

/// The people `requested` names, resolved on an up-to-date identity graph,
/// and the session that resolved them.
pub(super) async fn resolve(
    lake: &Lake,
    config: &IdentityConfig,
    requested: &[(String, String)],
) -> Result<(SessionContext, Arc<People>)> {
    refresh(lake, config, identity::Mode::Incremental).await?;
    let ctx = engine::session(
        lake,
        &EngineOptions {
            identity: config.clone(),
            ..Default::default()
        },
    )?;
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
    for table in RawTable::ALL {
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
