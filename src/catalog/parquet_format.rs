//! Parquet reading for lake tables: DataFusion's `ParquetFormat`, with every
//! file error naming the file it came from.
//!
//! DataFusion reports a truncated or foreign file as, say, "EOF: file size
//! of 100 is less than footer" without saying which of thousands of files
//! is at fault. [`LakeParquetFormat`] delegates everything to
//! `ParquetFormat` and wraps the per-file reader and statistics calls so
//! their errors carry the object path.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::{GetExt, Statistics};
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
use datafusion::datasource::physical_plan::parquet::ParquetFileReaderFactory;
use datafusion::datasource::physical_plan::{
    FileScanConfig, FileScanConfigBuilder, FileSource, ParquetSource,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::{DataFusionError, Result};
use datafusion::parquet::arrow::arrow_reader::ArrowReaderOptions;
use datafusion::parquet::arrow::async_reader::AsyncFileReader;
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::metadata::ParquetMetaData;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use futures::FutureExt;
use futures::future::BoxFuture;
use object_store::{ObjectMeta, ObjectStore};

/// `ParquetFormat` whose errors name the file.
#[derive(Debug, Default)]
pub struct LakeParquetFormat {
    inner: ParquetFormat,
    /// Read byte ranges of local files on the query's own thread.
    inline_local_reads: bool,
}

impl LakeParquetFormat {
    /// For reading a few rows of each file, as point lookups do: with
    /// `options`, and, on a local lake, byte ranges read on the query's
    /// thread. Such a read is a few kilobytes from the page cache; the
    /// object store's hop to the blocking pool and back costs more than
    /// the read (a point lookup made three of them).
    pub fn for_point_reads(options: datafusion::config::TableParquetOptions) -> Self {
        LakeParquetFormat {
            inner: ParquetFormat::default().with_options(options),
            inline_local_reads: true,
        }
    }
}

fn name_file(location: &object_store::path::Path, e: DataFusionError) -> DataFusionError {
    DataFusionError::Context(format!("reading lake file {location}"), Box::new(e))
}

#[async_trait]
impl FileFormat for LakeParquetFormat {
    fn get_ext(&self) -> String {
        self.inner.get_ext()
    }

    fn get_ext_with_compression(&self, c: &FileCompressionType) -> Result<String> {
        self.inner.get_ext_with_compression(c)
    }

    fn compression_type(&self) -> Option<FileCompressionType> {
        self.inner.compression_type()
    }

    async fn infer_schema(
        &self,
        state: &dyn Session,
        store: &Arc<dyn ObjectStore>,
        objects: &[ObjectMeta],
    ) -> Result<SchemaRef> {
        self.inner.infer_schema(state, store, objects).await
    }

    async fn infer_stats(
        &self,
        state: &dyn Session,
        store: &Arc<dyn ObjectStore>,
        table_schema: SchemaRef,
        object: &ObjectMeta,
    ) -> Result<Statistics> {
        self.inner
            .infer_stats(state, store, table_schema, object)
            .await
            .map_err(|e| name_file(&object.location, e))
    }

    async fn create_physical_plan(
        &self,
        state: &dyn Session,
        conf: FileScanConfig,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mut source = conf
            .file_source()
            .downcast_ref::<ParquetSource>()
            .cloned()
            .ok_or_else(|| DataFusionError::Internal("expected a ParquetSource".into()))?
            .with_table_parquet_options(self.inner.options().clone());
        let store = state
            .runtime_env()
            .object_store(conf.object_store_url.clone())?;
        let cache = state.runtime_env().cache_manager.get_file_metadata_cache();
        let local = self.inline_local_reads && conf.object_store_url.as_str() == "file:///";
        source = source.with_parquet_file_reader_factory(Arc::new(NamingReaderFactory {
            inner: CachedParquetFileReaderFactory::new(store, cache),
            local,
        }));
        if let Some(hint) = self.inner.metadata_size_hint() {
            source = source.with_metadata_size_hint(hint);
        }
        let conf = FileScanConfigBuilder::from(conf)
            .with_source(Arc::new(source))
            .build();
        Ok(DataSourceExec::from_data_source(conf))
    }

    fn file_source(&self, table_schema: TableSchema) -> Arc<dyn FileSource> {
        self.inner.file_source(table_schema)
    }
}

/// `plan` with every Parquet scan reading through the naming reader (its
/// errors say which file): what a plan decoded on a worker lost, a reader
/// factory not being part of a plan's encoding.
pub fn name_files_in(
    plan: Arc<dyn ExecutionPlan>,
    runtime: &datafusion::execution::runtime_env::RuntimeEnv,
) -> Result<Arc<dyn ExecutionPlan>> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    plan.transform_up(|node| {
        let Some((conf, source)) = node
            .downcast_ref::<DataSourceExec>()
            .and_then(|scan| scan.downcast_to_file_source::<ParquetSource>())
        else {
            return Ok(Transformed::no(node));
        };
        let store = runtime.object_store(conf.object_store_url.clone())?;
        let cache = runtime.cache_manager.get_file_metadata_cache();
        let source =
            source
                .clone()
                .with_parquet_file_reader_factory(Arc::new(NamingReaderFactory {
                    inner: CachedParquetFileReaderFactory::new(store, cache),
                    local: false,
                }));
        let conf = FileScanConfigBuilder::from(conf.clone())
            .with_source(Arc::new(source))
            .build();
        Ok(Transformed::yes(
            DataSourceExec::from_data_source(conf) as Arc<dyn ExecutionPlan>
        ))
    })
    .map(|t| t.data)
}

impl GetExt for LakeParquetFormat {
    fn get_ext(&self) -> String {
        FileFormat::get_ext(self)
    }
}

/// Creates readers whose errors start with the file's path.
#[derive(Debug)]
struct NamingReaderFactory {
    inner: CachedParquetFileReaderFactory,
    /// Files are local (`LocalFileSystem` paths): read ranges directly.
    local: bool,
}

impl ParquetFileReaderFactory for NamingReaderFactory {
    fn create_reader(
        &self,
        partition_index: usize,
        file: PartitionedFile,
        metadata_size_hint: Option<usize>,
        metrics: &ExecutionPlanMetricsSet,
    ) -> Result<Box<dyn AsyncFileReader + Send>> {
        let location = file.object_meta.location.to_string();
        let inner = self
            .inner
            .create_reader(partition_index, file, metadata_size_hint, metrics)?;
        // `LocalFileSystem` paths are absolute paths without the leading /.
        let local = self
            .local
            .then(|| std::path::PathBuf::from(format!("/{location}")));
        Ok(Box::new(NamingReader {
            location,
            inner,
            local,
        }))
    }
}

struct NamingReader {
    location: String,
    inner: Box<dyn AsyncFileReader + Send>,
    /// The local file to read byte ranges from directly, if any.
    local: Option<std::path::PathBuf>,
}

impl NamingReader {
    fn name(location: &str, e: ParquetError) -> ParquetError {
        ParquetError::General(format!("reading lake file {location}: {e}"))
    }

    /// `ranges` of the local file `path`, read on this thread.
    fn read_local(
        &self,
        path: &std::path::Path,
        ranges: &[Range<u64>],
    ) -> Result<Vec<Bytes>, ParquetError> {
        use std::os::unix::fs::FileExt;
        let read = || -> std::io::Result<Vec<Bytes>> {
            let file = std::fs::File::open(path)?;
            ranges
                .iter()
                .map(|range| {
                    let mut buffer = vec![0; (range.end - range.start) as usize];
                    file.read_exact_at(&mut buffer, range.start)?;
                    Ok(Bytes::from(buffer))
                })
                .collect()
        };
        read().map_err(|e| Self::name(&self.location, ParquetError::External(Box::new(e))))
    }
}

impl AsyncFileReader for NamingReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, Result<Bytes, ParquetError>> {
        if let Some(path) = &self.local {
            let read = self.read_local(path, std::slice::from_ref(&range));
            return futures::future::ready(read.map(|mut r| r.remove(0))).boxed();
        }
        let location = self.location.clone();
        self.inner
            .get_bytes(range)
            .map(move |r| r.map_err(|e| Self::name(&location, e)))
            .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, Result<Vec<Bytes>, ParquetError>> {
        if let Some(path) = &self.local {
            return futures::future::ready(self.read_local(path, &ranges)).boxed();
        }
        let location = self.location.clone();
        self.inner
            .get_byte_ranges(ranges)
            .map(move |r| r.map_err(|e| Self::name(&location, e)))
            .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, Result<Arc<ParquetMetaData>, ParquetError>> {
        let location = self.location.clone();
        self.inner
            .get_metadata(options)
            .map(move |r| r.map_err(|e| Self::name(&location, e)))
            .boxed()
    }
}
