//! Landing data in the lake: record batches of a raw table → Parquet files
//! under `raw/<table>/date=YYYY-MM-DD/`, one new file per day touched.
//!
//! This is the single write path into `raw/`; the generator, the sample
//! seeding (and later the file loader and the HTTP collector) all go
//! through [`land`]. Files are immutable once written and every write is
//! atomic, so readers see a day's file whole or not at all.

use chrono::NaiveDate;
use datafusion::arrow::array::{
    Array, ArrayRef, Date32Array, RecordBatch, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::kernels::partition::partition;
use datafusion::arrow::compute::{cast, concat_batches};
use datafusion::arrow::datatypes::DataType;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::lake::parquet::{write_file_with, writer_properties_with};
use crate::lake::{Lake, paths};
use crate::schema::RawTable;

pub mod fetch;
pub mod files;

/// What one call to [`land`] wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Landed {
    pub files: usize,
    pub rows: usize,
}

impl std::ops::AddAssign for Landed {
    fn add_assign(&mut self, other: Landed) {
        self.files += other.files;
        self.rows += other.rows;
    }
}

/// Write `batches` (with `table`'s file schema) into the lake, one Parquet
/// file per day of the table's time column. Rows should come roughly in time
/// order: each run of equal days becomes one file.
pub async fn land(lake: &Lake, table: RawTable, batches: &[RecordBatch]) -> Result<Landed> {
    land_as(lake, table, batches, None).await
}

/// [`land`], naming each day's file from `seed` when given (UUID v5 of the
/// seed and the day) instead of at random: landing the same rows again
/// with the same seed overwrites the same files, so an interrupted load can
/// simply be run again without duplicating anything.
pub async fn land_as(
    lake: &Lake,
    table: RawTable,
    batches: &[RecordBatch],
    seed: Option<Uuid>,
) -> Result<Landed> {
    let schema = table.file_schema();
    if batches.iter().all(|b| b.num_rows() == 0) {
        return Ok(Landed::default());
    }
    let batch = concat_batches(&schema, batches)
        .map_err(|e| Error::arrow(format!("combining rows of raw.{table}"), e))?;
    let days = day_of(&batch, table)?;
    let ranges = partition(std::slice::from_ref(&days))
        .map_err(|e| Error::arrow(format!("splitting raw.{table} by day"), e))?;
    let days = days
        .as_any()
        .downcast_ref::<Date32Array>()
        .ok_or_else(|| Error::Config("day column is not a date".into()))?;
    let mut landed = Landed::default();
    // Group the runs by day so each day gets one file even if rows interleave.
    let mut by_day: std::collections::BTreeMap<i32, Vec<RecordBatch>> = Default::default();
    for range in ranges.ranges() {
        let day = days.value(range.start);
        by_day
            .entry(day)
            .or_default()
            .push(batch.slice(range.start, range.end - range.start));
    }
    for (day, parts) in by_day {
        let date = NaiveDate::from_num_days_from_ce_opt(day + EPOCH_DAYS_FROM_CE)
            .ok_or_else(|| Error::Config(format!("day {day} is out of range")))?;
        let id = match seed {
            Some(seed) => Uuid::new_v5(&seed, &day.to_le_bytes()),
            None => Uuid::new_v4(),
        };
        let path = paths::raw_file(table, date, id);
        landed.rows += write_file_with(
            lake,
            &path,
            schema.clone(),
            &parts,
            writer_properties_with(compression(table)),
        )
        .await?;
        landed.files += 1;
    }
    // Point lookups cache the table's file list until this changes.
    crate::catalog::lookup::mark_changed(lake, table).await?;
    Ok(landed)
}

/// The codec of a raw table's files. The CRM and the catalogue
/// (`customers`, `products`) are read a few rows at a time by key (see
/// [`crate::catalog::lookup`]): LZ4, because the Parquet reader sets up a
/// ZSTD compressor and decompressor for every column chunk it reads, which
/// costs more than reading a row (0.35 of a 1.4 ms lookup of six columns).
/// Everything else is scanned: ZSTD, the most compact.
pub fn compression(table: RawTable) -> Compression {
    match table {
        RawTable::Customers | RawTable::Products => Compression::LZ4_RAW,
        _ => Compression::ZSTD(ZstdLevel::default()),
    }
}

/// Days from 0001-01-01 (chrono's CE day 1) to 1970-01-01.
const EPOCH_DAYS_FROM_CE: i32 = 719_163;

/// The UTC day of each row's business time, as a `date` array.
fn day_of(batch: &RecordBatch, table: RawTable) -> Result<ArrayRef> {
    let column = batch
        .column_by_name(table.time_column())
        .ok_or_else(|| Error::Config(format!("raw.{table} has no {}", table.time_column())))?;
    let ts = column
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .ok_or_else(|| {
            Error::Config(format!(
                "raw.{table}.{} is not a timestamp",
                table.time_column()
            ))
        })?;
    if ts.null_count() > 0 {
        return Err(Error::Config(format!(
            "raw.{table}.{} has nulls; every row needs a time",
            table.time_column()
        )));
    }
    cast(ts, &DataType::Date32).map_err(|e| Error::arrow("computing partition days", e))
}
