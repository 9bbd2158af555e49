//! The rights of the people whose data the lake holds. This owns erasure
//! (GDPR art. 17, `panorama privacy forget`, `CALL panorama.forget(…)`),
//! access and portability (art. 15 and 20, `panorama privacy export`), and
//! their audit record, `system.privacy_requests`.
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

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{ArrayRef, AsArray, Int64Array, RecordBatch, StringArray};
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
use crate::schema::{RawTable, cdp, utc_timestamps};

pub mod people;

use people::People;

/// Folder of `system.privacy_requests`.
pub fn requests_dir() -> Path {
    Path::from("system/privacy_requests")
}

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

/// What an export wrote.
#[derive(Debug, Clone, Default)]
pub struct Exported {
    pub request_id: String,
    pub identifiers: usize,
    pub profiles: usize,
    /// `raw.orders`, `cdp.profiles`, … → rows written.
    pub rows: BTreeMap<String, usize>,
}

/// Write everything the lake holds about the people `requested` names
/// (GDPR art. 15 and 20) to `to` as one JSON document: their identifiers,
/// profiles, merges, and every raw row about them (consents included),
/// table by table. Recorded in `system.privacy_requests` (kind `access`).
pub async fn export(
    lake: &Lake,
    config: &IdentityConfig,
    requested: &[(String, String)],
    to: &std::path::Path,
) -> Result<Exported> {
    let request = Request::new(lake, config, "access", requested).await?;
    let (ctx, people) = resolve(lake, config, requested).await?;
    let mut document = serde_json::Map::new();
    let mut exported = Exported {
        request_id: request.id.clone(),
        identifiers: people.identifiers(),
        profiles: people.profiles.len(),
        ..Exported::default()
    };
    let profiles = || {
        col("profile_id").in_list(
            people
                .profiles
                .iter()
                .map(|p| datafusion::prelude::lit(p.as_str()))
                .collect(),
            false,
        )
    };
    let merged = || {
        let ids = || {
            people
                .profiles
                .iter()
                .map(|p| datafusion::prelude::lit(p.as_str()))
                .collect()
        };
        col("from_profile_id")
            .in_list(ids(), false)
            .or(col("to_profile_id").in_list(ids(), false))
    };
    let mut sections: Vec<(String, datafusion::logical_expr::Expr)> = Vec::new();
    if !people.profiles.is_empty() {
        sections.push(("cdp.profiles".into(), profiles()));
        sections.push(("cdp.identity_links".into(), profiles()));
        sections.push(("cdp.profile_merges".into(), merged()));
    }
    for (table, predicate) in raw_rows_about(&ctx, &people, config).await? {
        sections.push((format!("raw.{table}"), predicate));
    }
    for (name, predicate) in sections {
        let batches = ctx
            .table(name.as_str())
            .await?
            .filter(predicate)?
            .collect()
            .await?;
        let rows = json_rows(&batches)?;
        exported.rows.insert(name.clone(), rows.len());
        document.insert(name, serde_json::Value::Array(rows));
    }
    let document = serde_json::json!({
        "request_id": request.id,
        "generated_at": Utc::now().to_rfc3339(),
        "identifiers": people.identifiers(),
        "profiles": people.profiles,
        "tables": document,
    });
    let text = serde_json::to_vec_pretty(&document)
        .map_err(|e| Error::Config(format!("writing the export: {e}")))?;
    std::fs::write(to, text).map_err(|e| Error::Io {
        what: "writing the export".into(),
        path: to.to_path_buf(),
        source: e,
    })?;
    let done = Forgotten {
        identifiers: exported.identifiers,
        profiles: exported.profiles,
        ..Forgotten::default()
    };
    record(lake, &request, "completed", &done, None).await?;
    Ok(exported)
}

/// Rows of `batches` as JSON objects (times as RFC 3339, lists as arrays).
fn json_rows(batches: &[RecordBatch]) -> Result<Vec<serde_json::Value>> {
    let mut writer = datafusion::arrow::json::ArrayWriter::new(Vec::new());
    let batches: Vec<&RecordBatch> = batches.iter().collect();
    writer
        .write_batches(&batches)
        .map_err(|e| Error::arrow("writing rows as JSON", e))?;
    writer
        .finish()
        .map_err(|e| Error::arrow("writing rows as JSON", e))?;
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&bytes).map_err(|e| Error::Config(format!("reading rows as JSON: {e}")))
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
    identity::refresh(lake, config, identity::Mode::Full, Utc::now(), |_| {}).await?;
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

/// The people `requested` names, resolved on an up-to-date identity graph,
/// and the session that resolved them.
async fn resolve(
    lake: &Lake,
    config: &IdentityConfig,
    requested: &[(String, String)],
) -> Result<(SessionContext, Arc<People>)> {
    identity::refresh(
        lake,
        config,
        identity::Mode::Incremental,
        Utc::now(),
        |_| {},
    )
    .await?;
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
async fn raw_rows_about(
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
async fn keys(
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

/// One privacy request, as the audit records it.
struct Request {
    id: String,
    /// `erasure` or `access`.
    kind: &'static str,
    requested_at: DateTime<Utc>,
    /// (identifier type, salted hash of its normalised value).
    hashes: Vec<(String, String)>,
}

impl Request {
    /// A new request of `kind` about the identifiers `requested`.
    async fn new(
        lake: &Lake,
        config: &IdentityConfig,
        kind: &'static str,
        requested: &[(String, String)],
    ) -> Result<Request> {
        if requested.is_empty() {
            return Err(Error::Config(format!(
                "a privacy request ({kind}) names at least one identifier"
            )));
        }
        Ok(Request {
            id: Uuid::new_v4().to_string(),
            kind,
            requested_at: Utc::now(),
            hashes: hashes(lake, config, requested).await?,
        })
    }
}

/// The salted hash of each requested identifier
/// ([`suppression::hash`]): never the value.
async fn hashes(
    lake: &Lake,
    config: &IdentityConfig,
    requested: &[(String, String)],
) -> Result<Vec<(String, String)>> {
    let salt = suppression::salt(lake).await?;
    requested
        .iter()
        .map(|(id_type, value)| {
            people::known_type(config, id_type)?;
            let normal = suppression::normalised(config, id_type, value);
            Ok((id_type.clone(), suppression::hash(&salt, id_type, &normal)))
        })
        .collect()
}

/// The time by which a request must be answered: one month (art. 12).
fn due(requested_at: DateTime<Utc>) -> DateTime<Utc> {
    requested_at
        .checked_add_months(chrono::Months::new(1))
        .unwrap_or(requested_at)
}

/// Append the request's state to `system.privacy_requests`: one row per
/// requested identifier.
async fn record(
    lake: &Lake,
    request: &Request,
    status: &str,
    done: &Forgotten,
    error: Option<&str>,
) -> Result<()> {
    let n = request.hashes.len();
    let text = |v: &str| Arc::new(StringArray::from(vec![v; n])) as ArrayRef;
    let int = |v: usize| Arc::new(Int64Array::from(vec![v as i64; n])) as ArrayRef;
    let completed = (status != "started").then(|| Utc::now().timestamp_micros());
    let tables = serde_json::to_string(&done.rows_removed)
        .map_err(|e| Error::Config(format!("recording a privacy request: {e}")))?;
    let batch = RecordBatch::try_new(
        cdp::privacy_requests(),
        vec![
            text(&request.id),
            text(request.kind),
            Arc::new(StringArray::from_iter_values(
                request.hashes.iter().map(|(t, _)| t.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                request.hashes.iter().map(|(_, h)| h.as_str()),
            )),
            text(status),
            utc_timestamps(std::iter::repeat_n(
                request.requested_at.timestamp_micros(),
                n,
            )),
            utc_timestamps(std::iter::repeat_n(
                due(request.requested_at).timestamp_micros(),
                n,
            )),
            Arc::new(
                datafusion::arrow::array::TimestampMicrosecondArray::from(vec![completed; n])
                    .with_timezone("UTC"),
            ),
            int(done.identifiers),
            int(done.profiles),
            int(done.rows()),
            int(done.files_rewritten),
            text(&tables),
            Arc::new(StringArray::from(vec![error; n])),
        ],
    )
    .map_err(|e| Error::arrow("recording a privacy request", e))?;
    delta::append_record(lake, &requests_dir(), batch, "privacy request", None).await
}
