//! Parquet files in the lake: the writer settings every file shares and an
//! atomic, streaming write of record batches to one object.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::AsyncArrowWriter;
use datafusion::parquet::arrow::ParquetRecordBatchStreamBuilder;
use datafusion::parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use datafusion::parquet::basic::{Compression, Encoding, ZstdLevel};
use datafusion::parquet::file::properties::{WriterProperties, WriterPropertiesBuilder};
use datafusion::parquet::schema::types::ColumnPath;
use object_store::ObjectMeta;
use object_store::buffered::BufWriter;
use object_store::path::Path;

use super::Lake;
use crate::error::{Error, Result};

/// Rows per row group: large enough for fast scans, small enough to prune.
pub const ROW_GROUP_ROWS: usize = 256 * 1024;

/// Writer settings shared by every file Panorama writes: ZSTD, the most
/// compact for data that is scanned.
pub fn writer_properties() -> WriterProperties {
    writer_properties_with(Compression::ZSTD(ZstdLevel::default()))
}

/// [`writer_properties`] with another codec.
pub fn writer_properties_with(compression: Compression) -> WriterProperties {
    WriterProperties::builder()
        .set_compression(compression)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build()
}

/// Writer settings for large files a refresh writes in one go and reads
/// back whole or by key (`cdp.identity_links`, `cdp.profiles`, the refresh
/// state): LZ4, which writes and decodes several times faster than ZSTD,
/// and no dictionary for `unique` columns (ids, values), which would only
/// fill one up and fall back to plain encoding.
pub fn bulk_properties(unique: &[&str]) -> WriterProperties {
    let mut builder = bulk_builder();
    for column in unique {
        builder = builder.set_column_dictionary_enabled((*column).into(), false);
    }
    builder.build()
}

/// [`bulk_properties`] with a dictionary only for the `repeated` columns
/// (the few whose values repeat: identifier types, field names): for
/// tables of ids, numbers and times that are mostly distinct, where the
/// encoder would hash every value only to fill a dictionary up.
pub fn bulk_properties_repeated(repeated: &[&str]) -> WriterProperties {
    bulk_properties_ascending(repeated, &[])
}

/// [`bulk_properties_repeated`], with the `ascending` integer columns
/// delta-encoded and not compressed: a column of sorted numbers (a key
/// repeated by each of its rows) then takes a few bits a row and decodes
/// without a decompression pass. Columns are named by their path (`a.b`).
pub fn bulk_properties_ascending(repeated: &[&str], ascending: &[&str]) -> WriterProperties {
    let path = |column: &str| ColumnPath::new(column.split('.').map(String::from).collect());
    let mut builder = bulk_builder().set_dictionary_enabled(false);
    for column in repeated {
        builder = builder.set_column_dictionary_enabled(path(column), true);
    }
    for column in ascending {
        builder = builder
            .set_column_encoding(path(column), Encoding::DELTA_BINARY_PACKED)
            .set_column_compression(path(column), Compression::UNCOMPRESSED);
    }
    builder.build()
}

fn bulk_builder() -> WriterPropertiesBuilder {
    WriterProperties::builder()
        .set_compression(Compression::LZ4_RAW)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
}

/// A Parquet file being written to the lake. Nothing is visible to readers
/// until [`ParquetFileWriter::finish`] completes.
pub struct ParquetFileWriter {
    path: Path,
    rows: usize,
    writer: AsyncArrowWriter<BufWriter>,
}

impl ParquetFileWriter {
    /// Start a file at `relative` (a path inside the lake).
    pub fn create(lake: &Lake, relative: &Path, schema: SchemaRef) -> Result<Self> {
        Self::create_with(lake, relative, schema, writer_properties())
    }

    /// [`ParquetFileWriter::create`] with other writer settings.
    pub fn create_with(
        lake: &Lake,
        relative: &Path,
        schema: SchemaRef,
        properties: WriterProperties,
    ) -> Result<Self> {
        let path = lake.path(relative);
        let object = BufWriter::new(Arc::clone(lake.store()), path.clone());
        let writer = AsyncArrowWriter::try_new(object, schema, Some(properties))
            .map_err(|e| Error::parquet(format!("starting {path}"), e))?;
        Ok(ParquetFileWriter {
            path,
            rows: 0,
            writer,
        })
    }

    /// Append one batch.
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.rows += batch.num_rows();
        self.writer
            .write(batch)
            .await
            .map_err(|e| Error::parquet(format!("writing {}", self.path), e))
    }

    /// Finish the file and make it visible; returns rows written.
    pub async fn finish(self) -> Result<usize> {
        self.writer
            .close()
            .await
            .map_err(|e| Error::parquet(format!("finishing {}", self.path), e))?;
        Ok(self.rows)
    }
}

/// Write `batches` as one Parquet file at `relative`, atomically.
pub async fn write_file(
    lake: &Lake,
    relative: &Path,
    schema: SchemaRef,
    batches: &[RecordBatch],
) -> Result<usize> {
    write_file_with(lake, relative, schema, batches, writer_properties()).await
}

/// [`write_file`] with other writer settings.
pub async fn write_file_with(
    lake: &Lake,
    relative: &Path,
    schema: SchemaRef,
    batches: &[RecordBatch],
    properties: WriterProperties,
) -> Result<usize> {
    let mut writer = ParquetFileWriter::create_with(lake, relative, schema, properties)?;
    for batch in batches {
        writer.write(batch).await?;
    }
    writer.finish().await
}

// `ParquetObjectReader` is deprecated in parquet 59 in favour of a reader of
// one's own; it is still the reader DataFusion 55 itself uses, so Panorama
// keeps it until DataFusion moves.
#[allow(deprecated)]
use datafusion::parquet::arrow::async_reader::ParquetObjectReader;

/// Open a Parquet object of the lake (`meta.location` is absolute, as
/// [`Lake::list`] returns it) for a streaming read.
#[allow(deprecated)]
pub async fn open(
    lake: &Lake,
    meta: &ObjectMeta,
) -> Result<ParquetRecordBatchStreamBuilder<ParquetObjectReader>> {
    open_as(lake, meta, |_| None).await
}

/// [`open`], reading columns as the schema `hint` returns for the file's
/// own schema (e.g. strings as dictionaries); `None` keeps the file's.
#[allow(deprecated)]
pub async fn open_as(
    lake: &Lake,
    meta: &ObjectMeta,
    hint: impl FnOnce(&Schema) -> Option<SchemaRef>,
) -> Result<ParquetRecordBatchStreamBuilder<ParquetObjectReader>> {
    let unreadable = |e| {
        Error::parquet(
            format!("{} is not a readable Parquet file", meta.location),
            e,
        )
    };
    let mut reader = ParquetObjectReader::new(Arc::clone(lake.store()), meta.location.clone())
        .with_file_size(meta.size);
    let mut metadata = ArrowReaderMetadata::load_async(&mut reader, ArrowReaderOptions::new())
        .await
        .map_err(unreadable)?;
    if let Some(schema) = hint(metadata.schema()) {
        metadata = ArrowReaderMetadata::try_new(
            metadata.metadata().clone(),
            ArrowReaderOptions::new().with_schema(schema),
        )
        .map_err(unreadable)?;
    }
    Ok(ParquetRecordBatchStreamBuilder::new_with_metadata(
        reader, metadata,
    ))
}

/// Call `each` with every batch of one Parquet object of the lake.
pub async fn for_each_batch(
    lake: &Lake,
    meta: &ObjectMeta,
    each: impl FnMut(&RecordBatch) -> Result<()>,
) -> Result<()> {
    for_each_batch_part(lake, meta, None, (0, 1), each).await
}

/// [`for_each_batch`] of the first `columns` columns (all if `None`) of
/// every `parts`-th row group from `part` on: one of `parts` readers that
/// share a file, each on its own core.
pub async fn for_each_batch_part(
    lake: &Lake,
    meta: &ObjectMeta,
    columns: Option<usize>,
    part: (usize, usize),
    each: impl FnMut(&RecordBatch) -> Result<()>,
) -> Result<()> {
    for_each_batch_part_as(lake, meta, None, columns, part, each).await
}

/// [`for_each_batch_part`], reading the columns as the schema `schema`
/// says (e.g. strings as dictionaries, as they are stored) if given.
pub async fn for_each_batch_part_as(
    lake: &Lake,
    meta: &ObjectMeta,
    schema: Option<SchemaRef>,
    columns: Option<usize>,
    (part, parts): (usize, usize),
    mut each: impl FnMut(&RecordBatch) -> Result<()>,
) -> Result<()> {
    use datafusion::parquet::arrow::ProjectionMask;
    use futures::StreamExt;
    let failed = |e| Error::parquet(format!("reading {}", meta.location), e);
    let mut builder = open_as(lake, meta, |_| schema)
        .await?
        .with_batch_size(64 * 1024);
    let groups = builder.metadata().num_row_groups();
    builder = builder.with_row_groups((part..groups).step_by(parts.max(1)).collect());
    if let Some(columns) = columns {
        let mask = ProjectionMask::roots(builder.parquet_schema(), 0..columns);
        builder = builder.with_projection(mask);
    }
    let mut stream = builder.build().map_err(failed)?;
    while let Some(batch) = stream.next().await {
        each(&batch.map_err(failed)?)?;
    }
    Ok(())
}
