//! Landing data in the lake: record batches of a raw table → one commit to
//! the table's Delta table (`raw/<table>/`), each row with its `date` (the
//! UTC day of the table's time column).
//!
//! Raw tables are not partitioned: a day of a small site is a few hundred
//! rows, and one file per day and table made a year of data tens of
//! thousands of tiny files. Rows land sorted by time, so each file's
//! `date` and time statistics still let a query skip the files outside its
//! range; compaction ([`crate::maintenance`]) merges what landed small.
//!
//! This is the single write path into `raw/`; the generator, the sample
//! seeding, the file loader and the HTTP collector all go through [`land`].
//! A landing is one atomic Delta commit: readers see all of its rows or
//! none, and two writers landing at once both commit (delta-rs retries on
//! the next version).

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, TimestampMicrosecondArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::parquet::basic::{Compression, ZstdLevel};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::lake::parquet::writer_properties_with;
use crate::lake::{Lake, delta, paths};
use crate::schema::{DAY_COLUMN, RawTable};

pub mod computed;
pub mod fetch;
pub mod files;
pub mod read;

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

/// Write `batches` (with `table`'s file schema) into the lake as one
/// commit.
pub async fn land(lake: &Lake, table: RawTable, batches: &[RecordBatch]) -> Result<Landed> {
    land_once(lake, table, batches, None).await
}

/// [`land`], at most once per `once` = (application id, version): the
/// commit records that Delta application transaction, and landing again
/// with a version the table already holds for that id writes nothing, so
/// an interrupted load can simply be run again without duplicating rows.
/// Versions of one id must grow (chunk numbers of a load, segment numbers
/// of a collector log).
pub async fn land_once(
    lake: &Lake,
    table: RawTable,
    batches: &[RecordBatch],
    once: Option<(&str, i64)>,
) -> Result<Landed> {
    let dated = batches
        .iter()
        .filter(|b| b.num_rows() > 0)
        .map(|b| with_day(b, table))
        .collect::<Result<Vec<_>>>()?;
    if dated.is_empty() {
        return Ok(Landed::default());
    }
    let appended = delta::append(
        lake,
        &paths::raw_table_dir(table),
        dated,
        &[],
        writer_properties_with(compression(table)),
        "land",
        once,
    )
    .await?;
    Ok(Landed {
        files: appended.files,
        rows: appended.rows,
    })
}

/// `batch` with the `date` column appended: the UTC day of each row's
/// business time.
fn with_day(batch: &RecordBatch, table: RawTable) -> Result<RecordBatch> {
    let batch = table
        .conform(batch)
        .map_err(|e| Error::arrow(format!("rows of raw.{table}"), e))?;
    let schema = batch.schema();
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(DAY_COLUMN, DataType::Date32, false));
    let mut columns = batch.columns().to_vec();
    columns.push(day_of(&batch, table)?);
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| Error::arrow(format!("dating rows of raw.{table}"), e))
}

/// The schema of a raw table as a Delta table ([`RawTable::delta_schema`]).
pub fn delta_schema(table: RawTable) -> SchemaRef {
    table.delta_schema()
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
