//! Upkeep of the lake's Delta tables: compaction (small files rewritten into
//! large ones), vacuum (files no recent version reads deleted) and the
//! one-time upgrade of a lake written before raw tables were Delta tables.
//!
//! `panorama compact`, `panorama vacuum` and `panorama lake upgrade` call
//! these; `serve` and the other commands refuse a lake that still needs the
//! upgrade ([`check_upgraded`]) rather than read half of it.

use object_store::ObjectStoreExt;
use object_store::path::Path;

use crate::error::{Error, Result};
use crate::ingest::{Landed, compression, land_once};
use crate::lake::parquet::{self, writer_properties_with};
use crate::lake::{Lake, delta, paths};
use crate::schema::{DAY_COLUMN, RawTable};

/// Rows of an old table landed per commit by [`upgrade`].
const UPGRADE_ROWS: usize = 250_000;

/// How long files replaced by compaction stay readable by default: queries
/// and refreshes that started on an older version finish well within it.
pub const DEFAULT_RETENTION_HOURS: u32 = 4;

/// The raw tables named in `names` (`events` or `raw.events`; all of them
/// when empty or `raw`); an unknown name is refused with the list of known
/// ones.
pub fn raw_tables(lake: &Lake, names: &[String]) -> Result<Vec<RawTable>> {
    if names.is_empty() || names.iter().any(|n| n == "raw") {
        return Ok(lake.raw_tables());
    }
    names
        .iter()
        .map(|name| {
            let name = name.strip_prefix("raw.").unwrap_or(name);
            lake.raw_table(name).ok_or_else(|| {
                let known: Vec<&str> = lake.raw_tables().iter().map(|t| t.name()).collect();
                Error::Config(format!(
                    "no raw table is named '{name}' (known: {})",
                    known.join(", ")
                ))
            })
        })
        .collect()
}

/// Compact each of `tables`, reporting each table's result to `progress`.
pub async fn compact(
    lake: &Lake,
    tables: &[RawTable],
    mut progress: impl FnMut(RawTable, &delta::Compacted),
) -> Result<delta::Compacted> {
    let mut total = delta::Compacted::default();
    for &table in tables {
        let done = delta::compact(
            lake,
            &paths::raw_table_dir(table),
            &[],
            writer_properties_with(compression(table)),
        )
        .await?;
        progress(table, &done);
        total.files_removed += done.files_removed;
        total.files_added += done.files_added;
    }
    Ok(total)
}

/// Vacuum each of `tables`: delete the files no version of the last
/// `retention_hours` reads. Returns the number of files deleted.
pub async fn vacuum(lake: &Lake, tables: &[RawTable], retention_hours: u32) -> Result<usize> {
    let mut deleted = 0;
    for &table in tables {
        deleted += delta::vacuum(
            lake,
            &paths::raw_table_dir(table),
            chrono::Duration::hours(i64::from(retention_hours)),
        )
        .await?;
    }
    Ok(deleted)
}

/// The Parquet files of `table` in the layout of lakes written before raw
/// tables were Delta tables (`raw/<table>/date=YYYY-MM-DD/*.parquet`), in
/// path order.
async fn old_files(lake: &Lake, table: RawTable) -> Result<Vec<object_store::ObjectMeta>> {
    let dir = lake.path(&paths::raw_table_dir(table));
    let listed = lake
        .store()
        .list_with_delimiter(Some(&dir))
        .await
        .map_err(|e| Error::store(format!("listing {dir}"), e))?;
    let mut files = Vec::new();
    for folder in listed.common_prefixes {
        let is_day = folder
            .filename()
            .is_some_and(|name| name.starts_with(&format!("{DAY_COLUMN}=")));
        if is_day {
            files.extend(
                lake.list(&lake.relative(&folder))
                    .await?
                    .into_iter()
                    .filter(|m| m.location.extension() == Some("parquet")),
            );
        }
    }
    files.sort_by(|a, b| a.location.cmp(&b.location));
    Ok(files)
}

/// Whether `table` still has files in the old layout.
async fn needs_upgrade(lake: &Lake, table: RawTable) -> Result<bool> {
    Ok(!old_files(lake, table).await?.is_empty())
}

/// Move every raw table of an older lake into its Delta table: the rows of
/// its old files land in commits of up to [`UPGRADE_ROWS`] rows, each at
/// most once (a Delta application transaction per chunk), then the old
/// files are deleted. An interrupted upgrade run again resumes after the
/// last chunk committed; tables already upgraded are skipped. `progress`
/// hears of each table as it starts. Returns what landed per table.
pub async fn upgrade(
    lake: &Lake,
    mut progress: impl FnMut(RawTable, usize),
    mut progress_records: impl FnMut(&Path, usize),
) -> Result<Vec<(RawTable, Landed)>> {
    let mut upgraded = Vec::new();
    for table in RawTable::ALL {
        let old = old_files(lake, table).await?;
        if old.is_empty() {
            continue;
        }
        progress(table, old.len());
        let app = format!("upgrade-raw.{table}");
        let mut landed = Landed::default();
        let mut chunk = 0i64;
        let mut batches = Vec::new();
        let mut rows = 0;
        for meta in &old {
            parquet::for_each_batch(lake, meta, |batch| {
                rows += batch.num_rows();
                batches.push(batch.clone());
                Ok(())
            })
            .await?;
            if rows >= UPGRADE_ROWS {
                chunk += 1;
                let batches = std::mem::take(&mut batches);
                landed += land_once(lake, table, &batches, Some((&app, chunk))).await?;
                rows = 0;
            }
        }
        chunk += 1;
        landed += land_once(lake, table, &batches, Some((&app, chunk))).await?;
        for meta in &old {
            lake.store()
                .delete(&meta.location)
                .await
                .map_err(|e| Error::store(format!("deleting {}", meta.location), e))?;
            // A local folder stays behind, empty: remove it.
            if let Some(folder) = lake
                .local_path(&lake.relative(&meta.location))
                .and_then(|file| file.parent().map(std::path::Path::to_path_buf))
            {
                let _ = std::fs::remove_dir(folder);
            }
        }
        upgraded.push((table, landed));
    }
    for table in crate::catalog::system_tables(&lake.raw_tables()) {
        for dir in &table.dirs {
            if let Some(landed) = upgrade_records(lake, dir).await? {
                progress_records(dir, landed);
            }
        }
    }
    // The change markers the old write path kept for lookups.
    for meta in lake.list(&Path::from("system/changes")).await? {
        lake.store()
            .delete(&meta.location)
            .await
            .map_err(|e| Error::store(format!("deleting {}", meta.location), e))?;
    }
    Ok(upgraded)
}

/// The Parquet files of a record table (`system/refreshes`, …) written
/// before record tables were Delta tables: any, when its folder has no
/// Delta log.
async fn old_records(lake: &Lake, dir: &Path) -> Result<Vec<object_store::ObjectMeta>> {
    let at = lake.path(dir);
    let listed = lake
        .store()
        .list_with_delimiter(Some(&at))
        .await
        .map_err(|e| Error::store(format!("listing {at}"), e))?;
    if listed
        .common_prefixes
        .iter()
        .any(|p| p.filename() == Some("_delta_log"))
    {
        return Ok(Vec::new());
    }
    let mut files: Vec<_> = listed
        .objects
        .into_iter()
        .filter(|m| m.location.extension() == Some("parquet"))
        .collect();
    files.sort_by(|a, b| a.location.cmp(&b.location));
    Ok(files)
}

/// Move the rows of an old record table into its Delta table, as one
/// commit (so the table holds all of them or none), then delete the old
/// files. Returns the number of rows moved, `None` when nothing was to do.
async fn upgrade_records(lake: &Lake, dir: &Path) -> Result<Option<usize>> {
    let old = old_records(lake, dir).await?;
    if old.is_empty() {
        return Ok(None);
    }
    let mut batches = Vec::new();
    for meta in &old {
        parquet::for_each_batch(lake, meta, |batch| {
            batches.push(batch.clone());
            Ok(())
        })
        .await?;
    }
    let rows = batches.iter().map(|b| b.num_rows()).sum();
    delta::append(
        lake,
        dir,
        batches,
        &[],
        crate::lake::parquet::writer_properties(),
        "upgrade",
        None,
    )
    .await?;
    for meta in &old {
        lake.store()
            .delete(&meta.location)
            .await
            .map_err(|e| Error::store(format!("deleting {}", meta.location), e))?;
    }
    Ok(Some(rows))
}

/// Refuse a lake whose raw or record tables are not Delta tables yet.
pub async fn check_upgraded(lake: &Lake) -> Result<()> {
    for table in crate::catalog::system_tables(&lake.raw_tables()) {
        for dir in &table.dirs {
            if !old_records(lake, dir).await?.is_empty() {
                return Err(Error::Config(format!(
                    "the lake at {} was written by an older Panorama ({dir} is not a Delta \
                     table yet): run `panorama lake upgrade --lake {}` once",
                    lake.url(),
                    lake.url()
                )));
            }
        }
    }
    for table in RawTable::ALL {
        if needs_upgrade(lake, table).await? {
            return Err(Error::Config(format!(
                "the lake at {} was written by an older Panorama (raw.{table} is not a Delta \
                 table yet): run `panorama lake upgrade --lake {}` once",
                lake.url(),
                lake.url()
            )));
        }
    }
    Ok(())
}
