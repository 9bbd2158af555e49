//! Delta tables in the lake: every raw table is a Delta table (delta-rs) in
//! its folder, so each write is one atomic commit, readers see a whole
//! version, compaction and vacuum are the format's own, and any engine with
//! a Delta reader (Spark, Trino, DuckDB, polars) reads the same rows.
//!
//! Owns opening a table on the lake's object store, appending batches as
//! one commit (at most once per application transaction, so an interrupted
//! load runs again without duplicates), listing a version's data files, the
//! data files added since a version (compaction's rewrites carry
//! `dataChange = false` and are not "new"), compaction (`OPTIMIZE`, Z-order)
//! and vacuum. It knows nothing of SQL or the catalog.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::{Arc, Once};

use datafusion::arrow::array::RecordBatch;
use datafusion::parquet::file::properties::WriterProperties;
use deltalake::kernel::transaction::{CommitProperties, TransactionError};
use deltalake::kernel::{Action, Transaction};
use deltalake::logstore::{LogStore, logstore_factories};
use deltalake::operations::optimize::OptimizeType;
use deltalake::operations::write::SchemaMode;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use object_store::ObjectMeta;
use object_store::path::Path;
use url::Url;

use super::Lake;
use crate::error::{Error, Result};

/// Size compaction aims for: large enough that a query pays per byte, not
/// per file; small enough that a day's events of a big site split in a few.
pub const TARGET_FILE_BYTES: u64 = 128 << 20;

/// What one append committed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The table version the commit made (`None`: nothing to write, or
    /// already committed by an earlier run of the same transaction).
    pub version: Option<u64>,
    pub files: usize,
    pub rows: usize,
}

/// One data file of a table version.
#[derive(Debug, Clone)]
pub struct DataFile {
    /// Where it is in the store (absolute store path).
    pub meta: ObjectMeta,
    /// Its partition values (`date` → `2026-03-07`).
    pub partition: HashMap<String, Option<String>>,
}

/// The data files of one table version.
#[derive(Debug, Clone, Default)]
pub struct Files {
    /// `None`: the folder holds no Delta table yet (nothing landed).
    pub version: Option<u64>,
    pub files: Vec<DataFile>,
}

/// What changed in a table after a version.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    /// The latest version (`None`: no table).
    pub version: Option<u64>,
    /// Data files added with new rows (`dataChange = true`), oldest first,
    /// as store paths.
    pub added: Vec<Path>,
    /// Whether some commit removed rows (a delete or an overwrite, not a
    /// compaction): what was derived from the old rows must be rebuilt.
    pub rows_removed: bool,
}

/// What a compaction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compacted {
    pub files_removed: u64,
    pub files_added: u64,
    pub version: Option<u64>,
}

/// Let delta-rs commit to S3 with conditional puts (`If-None-Match`), the
/// way it does on a local folder: no lock service, and two writers never
/// both take one version. delta-rs only registers `file://` and `memory://`
/// log stores itself (its S3 store is a separate crate with a DynamoDB
/// lock); see docs/upstream.md.
fn register_log_stores() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let registry = logstore_factories();
        if let (Ok(s3), Some(default)) = (
            Url::parse("s3://"),
            Url::parse("file://")
                .ok()
                .and_then(|file| registry.get(&file).map(|f| Arc::clone(f.value()))),
        ) {
            registry.insert(s3, default);
        }
    });
}

/// The URL delta-rs knows the table in `dir` by (`file:///abs/raw/events/`).
fn table_url(lake: &Lake, dir: &Path) -> Result<Url> {
    let folder = lake.folder_url(dir);
    Url::parse(&folder).map_err(|e| Error::LakeUrl {
        url: folder,
        reason: e.to_string(),
    })
}

/// The table in `dir`, not loaded.
fn unloaded(lake: &Lake, dir: &Path) -> Result<DeltaTable> {
    register_log_stores();
    let url = table_url(lake, dir)?;
    let root = table_url(lake, &Path::default())?;
    DeltaTableBuilder::from_url(url)
        .and_then(|b| {
            b.with_storage_backend(Arc::clone(lake.store()), root)
                .build()
        })
        .map_err(|e| delta(format!("opening the table in {dir}"), e))
}

/// The table in `dir` at its latest version; `None` when nothing was ever
/// committed there.
pub async fn open(lake: &Lake, dir: &Path) -> Result<Option<DeltaTable>> {
    // delta-rs reports a missing local folder as an invalid location,
    // not as "no table".
    if lake
        .local_path(&dir.clone().join("_delta_log"))
        .is_some_and(|log| !log.is_dir())
    {
        return Ok(None);
    }
    let mut table = unloaded(lake, dir)?;
    match table.load().await {
        Ok(()) => Ok(Some(table)),
        Err(DeltaTableError::NotATable(_)) => Ok(None),
        Err(e) => Err(delta(format!("reading the log of {dir}"), e)),
    }
}

/// Bring `table` to its latest version (cheap: reads only new commits).
pub async fn refresh(table: &mut DeltaTable, dir: &Path) -> Result<()> {
    table
        .update_incremental(None)
        .await
        .map_err(|e| delta(format!("reading the log of {dir}"), e))
}

/// Append `batches` to the table in `dir` as one commit, creating the table
/// (partitioned by `partition_by`) on the first write. With `once`
/// (`(application id, version)`), the commit records that application
/// transaction and is skipped when the table already holds it: running an
/// interrupted load again writes nothing twice.
pub async fn append(
    lake: &Lake,
    dir: &Path,
    batches: Vec<RecordBatch>,
    partition_by: &[&str],
    properties: WriterProperties,
    operation: &str,
    once: Option<(&str, i64)>,
) -> Result<Appended> {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if rows == 0 {
        return Ok(Appended::default());
    }
    // delta-rs retries an append that lost its version to another writer;
    // two writers creating the table at once conflict on its metadata
    // instead, and the loser appends to the table the winner made.
    let mut attempt = 0;
    loop {
        attempt += 1;
        match append_once(
            lake,
            dir,
            batches.clone(),
            partition_by,
            properties.clone(),
            operation,
            once,
        )
        .await
        {
            Err(DeltaTableError::Transaction {
                source: TransactionError::CommitConflict(_),
            }) if attempt < 5 => continue,
            Err(e) => return Err(delta(format!("committing {rows} rows to {dir}"), e)),
            Ok(appended) => {
                return Ok(Appended {
                    rows: if appended.version.is_some() { rows } else { 0 },
                    ..appended
                });
            }
        }
    }
}

async fn append_once(
    lake: &Lake,
    dir: &Path,
    batches: Vec<RecordBatch>,
    partition_by: &[&str],
    properties: WriterProperties,
    operation: &str,
    once: Option<(&str, i64)>,
) -> std::result::Result<Appended, DeltaTableError> {
    let table = match open(lake, dir).await {
        Ok(Some(table)) => table,
        Ok(None) => unloaded(lake, dir).map_err(|e| DeltaTableError::Generic(e.to_string()))?,
        Err(e) => return Err(DeltaTableError::Generic(e.to_string())),
    };
    if let (Some((app, version)), Ok(state)) = (once, table.snapshot()) {
        let done = state
            .transaction_version(table.log_store().as_ref(), app)
            .await?;
        if done.is_some_and(|done| done >= version) {
            return Ok(Appended::default());
        }
    }
    let before = table.snapshot().map(|s| s.log_data().num_files()).ok();
    let mut commit = commit_properties(operation);
    if let Some((app, version)) = once {
        commit = commit.with_application_transaction(Transaction::new(app, version));
    }
    // A table made by an older release gains the columns added since (new
    // nullable columns; older files read them as NULL). Only then: an
    // append in merge mode also commits the table's metadata, which makes
    // concurrent appends conflict for nothing.
    let evolves = match (table.snapshot(), batches.first()) {
        (Ok(state), Some(batch)) => {
            let known = state.schema();
            batch
                .schema()
                .fields()
                .iter()
                .any(|f| known.field(f.name()).is_none())
        }
        _ => false,
    };
    let mut write = table
        .write(batches)
        .with_save_mode(SaveMode::Append)
        .with_partition_columns(partition_by.iter().map(|c| c.to_string()))
        .with_writer_properties(properties)
        .with_commit_properties(commit);
    if evolves {
        write = write.with_schema_mode(SchemaMode::Merge);
    }
    let written = write.await?;
    let after = written.snapshot().map(|s| s.log_data().num_files()).ok();
    Ok(Appended {
        version: written.version(),
        files: after.unwrap_or(0).saturating_sub(before.unwrap_or(0)),
        rows: 0,
    })
}

/// Append one record batch (a refresh, a job run, a load, rejected rows)
/// to the record table in `dir` as one commit.
pub async fn append_record(
    lake: &Lake,
    dir: &Path,
    batch: RecordBatch,
    operation: &str,
    once: Option<(&str, i64)>,
) -> Result<()> {
    append(
        lake,
        dir,
        vec![batch],
        &[],
        super::parquet::writer_properties(),
        operation,
        once,
    )
    .await
    .map(|_| ())
}

/// The data files of the latest version of the table in `dir`.
pub async fn files(lake: &Lake, dir: &Path) -> Result<Files> {
    let Some(table) = open(lake, dir).await? else {
        return Ok(Files::default());
    };
    files_of(lake, dir, &table)
}

/// The data files of `table`'s loaded version.
pub fn files_of(lake: &Lake, dir: &Path, table: &DeltaTable) -> Result<Files> {
    let state = table
        .snapshot()
        .map_err(|e| delta(format!("reading the log of {dir}"), e))?;
    let root = lake.path(dir);
    let files = state
        .log_data()
        .iter()
        .map(|file| {
            let location: Path = root
                .parts()
                .chain(file.object_store_path().parts())
                .collect();
            DataFile {
                meta: ObjectMeta {
                    location,
                    last_modified: chrono::DateTime::from_timestamp_millis(
                        file.modification_time(),
                    )
                    .unwrap_or_default(),
                    size: u64::try_from(file.size()).unwrap_or(0),
                    e_tag: None,
                    version: None,
                },
                partition: file.partition_values_map(),
            }
        })
        .collect();
    Ok(Files {
        version: table.version(),
        files,
    })
}

/// A table kept open between reads, so each read only fetches the commits
/// made since the last one (a probe for the next version's log file)
/// instead of loading the log again.
#[derive(Debug)]
pub struct Follower {
    dir: Path,
    table: tokio::sync::Mutex<Option<DeltaTable>>,
}

impl Follower {
    /// The folder followed.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Follow the table in `dir` (which need not exist yet).
    pub fn new(dir: Path) -> Follower {
        Follower {
            dir,
            table: tokio::sync::Mutex::new(None),
        }
    }

    /// The data files of the table's latest version.
    pub async fn latest(&self, lake: &Lake) -> Result<Files> {
        let mut table = self.table.lock().await;
        match table.as_mut() {
            Some(open) => refresh(open, &self.dir).await?,
            None => *table = open(lake, &self.dir).await?,
        }
        match table.as_ref() {
            Some(open) => files_of(lake, &self.dir, open),
            None => Ok(Files::default()),
        }
    }
}

/// What was committed to the table in `dir` after version `since` (`None`:
/// from the start) up to version `until` (`None`: the latest).
pub async fn changes_since(
    lake: &Lake,
    dir: &Path,
    since: Option<u64>,
    until: Option<u64>,
) -> Result<Changes> {
    let Some(table) = open(lake, dir).await? else {
        return Ok(Changes::default());
    };
    let latest = match (table.version(), until) {
        (Some(latest), Some(until)) => Some(latest.min(until)),
        (latest, _) => latest,
    };
    let mut changes = Changes {
        version: latest,
        ..Changes::default()
    };
    let Some(latest) = latest else {
        return Ok(changes);
    };
    let log = table.log_store();
    let root = lake.path(dir);
    let first = since.map_or(0, |v| v + 1);
    for version in first..=latest {
        let Some(bytes) = log
            .read_commit_entry(version)
            .await
            .map_err(|e| delta(format!("reading version {version} of {dir}"), e))?
        else {
            // Cleaned up after a checkpoint: the caller cannot know what
            // changed and must read everything.
            changes.rows_removed = true;
            continue;
        };
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let action: Action = match serde_json::from_slice(line) {
                Ok(action) => action,
                // Actions this version does not know (a newer writer's) do
                // not add or remove files.
                Err(_) => continue,
            };
            match action {
                Action::Add(add) if add.data_change => {
                    let relative = Path::parse(&add.path).map_err(|e| {
                        Error::store(
                            format!("a file path in version {version} of {dir}"),
                            object_store::Error::InvalidPath { source: e },
                        )
                    })?;
                    changes
                        .added
                        .push(root.parts().chain(relative.parts()).collect());
                }
                Action::Remove(remove) if remove.data_change => changes.rows_removed = true,
                _ => {}
            }
        }
    }
    Ok(changes)
}

/// One commit of a table, as `system.table_history` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Commit {
    pub version: u64,
    /// Milliseconds since the epoch (`None`: the commit did not say).
    pub timestamp_ms: Option<i64>,
    /// Delta's operation (`WRITE`, `OPTIMIZE`, `VACUUM END`, …).
    pub operation: String,
    /// What in Panorama wrote it (`land`, …), or the writing engine.
    pub written_by: String,
    pub files_added: i64,
    pub files_removed: i64,
    /// Rows in the files added with new data (from their statistics).
    pub rows_added: i64,
    /// Whether rows were added or removed (false for compaction).
    pub data_change: bool,
}

/// The newest `newest` commits of the table in `dir`, newest first.
pub async fn history(lake: &Lake, dir: &Path, newest: usize) -> Result<Vec<Commit>> {
    let Some(table) = open(lake, dir).await? else {
        return Ok(Vec::new());
    };
    let Some(latest) = table.version() else {
        return Ok(Vec::new());
    };
    let log = table.log_store();
    let oldest = latest.saturating_sub(newest.saturating_sub(1) as u64);
    let mut commits = Vec::new();
    for version in (oldest..=latest).rev() {
        let Some(bytes) = log
            .read_commit_entry(version)
            .await
            .map_err(|e| delta(format!("reading version {version} of {dir}"), e))?
        else {
            break; // older commits were cleaned up after a checkpoint
        };
        let mut commit = Commit {
            version,
            ..Commit::default()
        };
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let Ok(action) = serde_json::from_slice::<Action>(line) else {
                continue;
            };
            match action {
                Action::CommitInfo(info) => {
                    commit.timestamp_ms = info.timestamp;
                    commit.operation = info.operation.unwrap_or_default();
                    commit.written_by = info
                        .info
                        .get(OPERATION_KEY)
                        .and_then(|v| v.as_str())
                        .map(str::to_string)
                        .or(info.engine_info)
                        .unwrap_or_default();
                }
                Action::Add(add) => {
                    commit.files_added += 1;
                    if add.data_change {
                        commit.data_change = true;
                        commit.rows_added += add
                            .stats
                            .as_deref()
                            .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
                            .and_then(|s| s.get("numRecords").and_then(|n| n.as_i64()))
                            .unwrap_or(0);
                    }
                }
                Action::Remove(remove) => {
                    commit.files_removed += 1;
                    commit.data_change |= remove.data_change;
                }
                _ => {}
            }
        }
        commits.push(commit);
    }
    Ok(commits)
}

/// Rewrite the small files of the table in `dir` into files of about
/// [`TARGET_FILE_BYTES`], ordered by `zorder` (Z-order when given, plain
/// bin-packing otherwise). Readers keep reading the version they started
/// on; the rewrite carries `dataChange = false`, so incremental readers do
/// not see it as new rows.
pub async fn compact(
    lake: &Lake,
    dir: &Path,
    zorder: &[&str],
    properties: WriterProperties,
) -> Result<Compacted> {
    let Some(table) = open(lake, dir).await? else {
        return Ok(Compacted::default());
    };
    let kind = if zorder.is_empty() {
        OptimizeType::Compact
    } else {
        OptimizeType::ZOrder(zorder.iter().map(|c| c.to_string()).collect())
    };
    let commit = commit_properties("compact");
    let (table, metrics) = table
        .optimize()
        .with_type(kind)
        .with_commit_properties(commit)
        .with_target_size(NonZeroU64::new(TARGET_FILE_BYTES).unwrap_or(NonZeroU64::MIN))
        .with_writer_properties(properties)
        .await
        .map_err(|e| delta(format!("compacting {dir}"), e))?;
    Ok(Compacted {
        files_removed: metrics.num_files_removed,
        files_added: metrics.num_files_added,
        version: table.version(),
    })
}

/// Delete the files of the table in `dir` that no version newer than
/// `retention` ago still reads (compacted or deleted files); returns how
/// many were deleted.
pub async fn vacuum(lake: &Lake, dir: &Path, retention: chrono::Duration) -> Result<usize> {
    let Some(table) = open(lake, dir).await? else {
        return Ok(0);
    };
    let (_, metrics) = table
        .vacuum()
        .with_retention_period(retention)
        .with_enforce_retention_duration(false)
        .await
        .map_err(|e| delta(format!("vacuuming {dir}"), e))?;
    Ok(metrics.files_deleted.len())
}

/// What a delete did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deleted {
    pub rows: usize,
    /// Files rewritten without the deleted rows (or dropped whole).
    pub files_rewritten: usize,
    pub version: Option<u64>,
}

/// Delete the rows of the table in `dir` for which `predicate` is true, as
/// one commit: files holding none of them are not touched, files that do
/// are rewritten without them (copy-on-write). The commit records the
/// predicate's text, so it must not quote a personal value. The predicate
/// may call Panorama's functions: an `Expr` carries them, and delta-rs
/// plans it in a session of its own (which has its delete planner).
pub async fn delete(
    lake: &Lake,
    dir: &Path,
    predicate: datafusion::logical_expr::Expr,
    properties: WriterProperties,
    operation: &str,
) -> Result<Deleted> {
    let Some(table) = open(lake, dir).await? else {
        return Ok(Deleted::default());
    };
    let commit = commit_properties(operation);
    let (table, metrics) = table
        .delete()
        .with_predicate(predicate)
        .with_writer_properties(properties)
        .with_commit_properties(commit)
        .await
        .map_err(|e| delta(format!("deleting rows of {dir}"), e))?;
    Ok(Deleted {
        rows: metrics.num_deleted_rows.unwrap_or(0),
        files_rewritten: metrics.num_removed_files,
        version: table.version(),
    })
}

/// Make the table in `dir` forget its past: delete every data file the
/// latest version does not read, write a checkpoint of that version, and
/// delete the log entries before it (with the statistics of the files they
/// added). After an erasure nothing of the erased rows stays on disk; the
/// table's history starts again at its latest version.
pub async fn purge_history(lake: &Lake, dir: &Path) -> Result<usize> {
    let deleted_files = vacuum(lake, dir, chrono::Duration::zero()).await?;
    let Some(table) = open(lake, dir).await? else {
        return Ok(deleted_files);
    };
    let Some(version) = table.version() else {
        return Ok(deleted_files);
    };
    deltalake::checkpoints::create_checkpoint(&table, None)
        .await
        .map_err(|e| delta(format!("writing a checkpoint of {dir}"), e))?;
    // Every log entry before the checkpoint is past the cutoff (a minute
    // from now), so all of them go.
    let cutoff = chrono::Utc::now().timestamp_millis() + 60_000;
    let deleted_logs = deltalake::checkpoints::cleanup_expired_logs_for(
        version,
        table.log_store().as_ref(),
        cutoff,
        None,
    )
    .await
    .map_err(|e| delta(format!("removing old log entries of {dir}"), e))?;
    Ok(deleted_files + deleted_logs)
}

/// The commit's properties: which Panorama operation made it (read back
/// by `system.table_history` as `written_by`).
fn commit_properties(operation: &str) -> CommitProperties {
    CommitProperties::default().with_metadata([(
        OPERATION_KEY.to_string(),
        serde_json::Value::String(operation.to_string()),
    )])
}

/// The commit metadata key naming the Panorama operation.
const OPERATION_KEY: &str = "panorama.operation";

fn delta(what: String, source: DeltaTableError) -> Error {
    Error::Delta {
        what,
        source: Box::new(source),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn batch(ids: &[i64], day: &str) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("date", DataType::Utf8, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(ids.to_vec())),
                Arc::new(StringArray::from(vec![day; ids.len()])),
            ],
        )
        .expect("batch")
    }

    #[tokio::test]
    async fn appends_commit_once_and_compaction_adds_no_rows() {
        let dir = tempfile::tempdir().expect("dir");
        let lake = Lake::open(dir.path().to_str().expect("path")).expect("lake");
        let table = Path::from("raw/things");
        assert!(files(&lake, &table).await.expect("files").version.is_none());
        let props = WriterProperties::builder().build();
        for (i, day) in ["2026-01-01", "2026-01-02", "2026-01-01"]
            .iter()
            .enumerate()
        {
            let appended = append(
                &lake,
                &table,
                vec![batch(&[i as i64 * 10, i as i64 * 10 + 1], day)],
                &["date"],
                props.clone(),
                "test",
                Some(("load-1", i as i64 + 1)),
            )
            .await
            .expect("append");
            assert_eq!(appended.rows, 2);
        }
        // The same transaction again: nothing written.
        let again = append(
            &lake,
            &table,
            vec![batch(&[99], "2026-01-03")],
            &["date"],
            props.clone(),
            "test",
            Some(("load-1", 2)),
        )
        .await
        .expect("append");
        assert_eq!(again, Appended::default());
        let listed = files(&lake, &table).await.expect("files");
        assert_eq!(listed.files.len(), 3);
        assert!(
            listed
                .files
                .iter()
                .all(|f| f.partition.contains_key("date"))
        );
        let before = changes_since(&lake, &table, None, None)
            .await
            .expect("changes");
        assert_eq!(before.added.len(), 3);
        assert!(!before.rows_removed);
        let compacted = compact(&lake, &table, &[], props).await.expect("compact");
        assert_eq!(compacted.files_removed, 2);
        assert_eq!(compacted.files_added, 1);
        let after = changes_since(&lake, &table, before.version, None)
            .await
            .expect("changes");
        assert!(after.added.is_empty(), "{after:?}");
        assert!(!after.rows_removed);
        assert_eq!(files(&lake, &table).await.expect("files").files.len(), 2);
    }
}
