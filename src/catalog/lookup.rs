//! Point lookups on raw tables: `WHERE key = value` or `WHERE key IN (…)`
//! on a configured key column reads only the rows holding those values.
//!
//! A raw table is many files; a plain scan plans with the statistics of
//! every file and opens each one to find a single customer (45 ms for a
//! year of daily files). A [`LookupTable`] wraps the table's provider and
//! keeps a key index per file ([`FileKeys`]), built the first time a lookup
//! needs it and extended file by file as files land. A lookup hashes the
//! wanted values, finds the files and rows holding them, and scans just
//! those rows (a Parquet row selection). The filter stays above the scan
//! and re-checks every row (other conditions too, such as on `date`), so a
//! hash collision costs a row read, never a wrong answer. Every other query
//! goes to the table's provider unchanged.
//!
//! Freshness: a lookup follows the table's Delta log
//! ([`crate::lake::delta::Follower`]): when a commit made a new version, the
//! files it added are indexed and the files it removed (compaction) are
//! dropped from the index; files in the folder that no commit names are
//! not part of the table and never read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::catalog::{ScanArgs, ScanResult};
use datafusion::common::config::TableParquetOptions;
use datafusion::common::{Constraints, ScalarValue, Statistics};
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::ParquetRowSelection;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, FileSource};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::parquet::arrow::arrow_reader::{RowSelection, RowSelector};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectMeta;
use object_store::path::Path;
use serde::Deserialize;

use super::LakeParquetFormat;
use super::key_index::{IndexedFile, NewFile, TableKeys, hash_values};
use super::lookup_exec::LookupExec;
use crate::lake::delta::Follower;
use crate::lake::{Lake, paths};
use crate::schema::RawTable;

/// At most this many values in one `IN (…)` go through the index.
const MAX_VALUES: usize = 1024;

/// `[lookup]` in `panorama.toml`: which raw-table columns are indexed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LookupConfig {
    /// `table.column` names; an empty list turns lookups off.
    pub keys: Vec<String>,
}

impl Default for LookupConfig {
    fn default() -> Self {
        let keys = [
            "customers.customer_id",
            "customers.email",
            "orders.order_id",
            "orders.customer_id",
            "order_items.order_id",
            "products.product_id",
            "survey_responses.customer_id",
            "consents.customer_id",
        ];
        LookupConfig {
            keys: keys.map(String::from).to_vec(),
        }
    }
}

impl LookupConfig {
    /// The indexed columns of `table`, as positions in its file schema.
    /// Errors name a key that is no `table.column` of a raw table.
    pub fn columns_of(&self, table: RawTable) -> std::result::Result<Vec<usize>, String> {
        let mut columns = Vec::new();
        for key in &self.keys {
            let Some((t, column)) = key.split_once('.') else {
                return Err(format!("[lookup] key '{key}' is not table.column"));
            };
            let Some(named) = RawTable::from_name(t) else {
                return Err(format!("[lookup] key '{key}': no raw table is named '{t}'"));
            };
            if named != table {
                continue;
            }
            let index = table
                .file_schema()
                .index_of(column)
                .map_err(|_| format!("[lookup] key '{key}': raw.{t} has no column '{column}'"))?;
            columns.push(index);
        }
        Ok(columns)
    }

    /// Check every key names a column of a raw table.
    pub fn validate(&self) -> std::result::Result<(), String> {
        RawTable::ALL
            .iter()
            .try_for_each(|t| self.columns_of(*t).map(|_| ()))
    }
}

/// A raw table whose key columns answer point lookups from an index.
pub struct LookupTable {
    inner: Arc<dyn TableProvider>,
    lake: Lake,
    table: RawTable,
    /// The table's schema (its file columns and `date`).
    file_schema: SchemaRef,
    /// Indexed columns, as positions in `file_schema`.
    keys: Vec<usize>,
    /// How a lookup reads its rows, and the scan source over the table's
    /// schema (the same for every lookup).
    format: LakeParquetFormat,
    source: Arc<dyn FileSource>,
    snapshot: Mutex<Arc<Snapshot>>,
    /// The table's log, followed from lookup to lookup.
    follower: Follower,
    /// Held while new files are indexed.
    rebuilding: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for LookupTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LookupTable")
            .field("table", &self.table)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

/// The table's files and their indexes as of one table version.
#[derive(Debug, Default)]
struct Snapshot {
    version: Option<u64>,
    index: Arc<TableKeys>,
}

impl LookupTable {
    /// Wrap `inner`, the listing table of `table`, indexing `keys`.
    pub fn new(
        inner: Arc<dyn TableProvider>,
        lake: Lake,
        table: RawTable,
        keys: Vec<usize>,
    ) -> Self {
        let file_schema = table.delta_schema();
        // The rows are known: no bloom filters to read (Parquet still reads
        // only the pages holding them, through the page index).
        let mut options = TableParquetOptions::default();
        options.global.bloom_filter_on_read = false;
        let format = LakeParquetFormat::for_point_reads(options);
        let source = format.file_source(TableSchema::builder(Arc::clone(&file_schema)).build());
        LookupTable {
            inner,
            format,
            source,
            lake,
            table,
            file_schema,
            keys,
            follower: Follower::new(paths::raw_table_dir(table)),
            snapshot: Mutex::default(),
            rebuilding: tokio::sync::Mutex::const_new(()),
        }
    }

    /// The key (position in `self.keys`) and values a set of filters looks
    /// up, when the index can answer them.
    fn wanted(&self, filters: &[Expr]) -> Option<(usize, Vec<ScalarValue>)> {
        let schema = &self.file_schema;
        let key_of = |e: &Expr| match e {
            Expr::Column(c) => self
                .keys
                .iter()
                .position(|&k| schema.field(k).name() == &c.name),
            _ => None,
        };
        let literal = |e: &Expr| match e {
            Expr::Literal(v, _) => Some(v.clone()),
            _ => None,
        };
        filters.iter().find_map(|filter| match filter {
            Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::Eq,
                right,
            }) => match (key_of(left), key_of(right)) {
                (Some(k), None) => Some((k, vec![literal(right)?])),
                (None, Some(k)) => Some((k, vec![literal(left)?])),
                _ => None,
            },
            Expr::InList(list) if !list.negated && list.list.len() <= MAX_VALUES => {
                let values = list.list.iter().map(literal).collect::<Option<Vec<_>>>()?;
                Some((key_of(&list.expr)?, values))
            }
            _ => None,
        })
    }

    /// The plan reading only the rows whose key `key` is one of `values`.
    async fn lookup(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        key: usize,
        values: &[ScalarValue],
        limit: Option<usize>,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let key_type = self.file_schema.field(self.keys[key]).data_type();
        let Some(hashes) = hash_values(values, key_type) else {
            return Ok(None);
        };
        let snapshot = self.current().await.map_err(external)?;
        let found = snapshot.index.find(key, &hashes);
        let rows: usize = found.iter().map(|(_, rows)| rows.len()).sum();
        let schema = self.inner.schema();
        if found.is_empty() {
            let projected = match projection {
                Some(p) => Arc::new(schema.project(p)?),
                None => schema,
            };
            return Ok(Some(Arc::new(EmptyExec::new(projected))));
        }
        let files = found
            .into_iter()
            .map(|(file, rows)| selected(file, &rows))
            .collect();
        let source = Arc::clone(&self.source);
        let config = FileScanConfigBuilder::new(self.lake.store_url().clone(), source)
            .with_file_group(FileGroup::new(files))
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        let scan = self.format.create_physical_plan(state, config).await?;
        Ok(Some(Arc::new(LookupExec::new(scan, rows))))
    }

    /// The index of the files of the table's latest version.
    async fn current(&self) -> crate::error::Result<Arc<Snapshot>> {
        let listed = self.follower.latest(&self.lake).await?;
        let last = self.last();
        if last.version == listed.version {
            return Ok(last);
        }
        let _rebuilding = self.rebuilding.lock().await;
        let last = self.last();
        if last.version == listed.version {
            return Ok(last);
        }
        let known: HashMap<&Path, (usize, &Arc<IndexedFile>)> = last
            .index
            .files()
            .iter()
            .enumerate()
            .map(|(i, f)| (&f.meta.location, (i, f)))
            .collect();
        let mut kept = Vec::new();
        let mut new = Vec::new();
        for file in &listed.files {
            match known.get(&file.meta.location) {
                Some((i, f)) if f.meta.size == file.meta.size => kept.push(*i),
                _ => new.push(file.meta.clone()),
            }
        }
        kept.sort_unstable();
        let new = self.read(new).await?;
        let index = last.index.changed(&kept, new, self.keys.len());
        tracing::debug!(
            files = index.files().len(),
            index_mb = index.memory() >> 20,
            "lookup index of raw.{}",
            self.table
        );
        let snapshot = Arc::new(Snapshot {
            version: listed.version,
            index: Arc::new(index),
        });
        *self.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = Arc::clone(&snapshot);
        Ok(snapshot)
    }

    fn last(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snapshot.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Read the keys of files not seen before, a few at a time.
    async fn read(&self, new: Vec<ObjectMeta>) -> crate::error::Result<Vec<NewFile>> {
        let started = Instant::now();
        let count = new.len();
        let lake = &self.lake;
        let (schema, keys) = (&self.file_schema, &self.keys);
        let read: Vec<NewFile> = futures::stream::iter(new)
            .map(|meta| NewFile::read(lake, meta, Vec::new(), schema, keys))
            .buffer_unordered(4)
            .try_collect()
            .await?;
        if count > 0 {
            let rows: u64 = read.iter().map(|f| u64::from(f.rows())).sum();
            tracing::info!(
                files = count,
                rows,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "read the lookup keys of new files of raw.{}",
                self.table
            );
        }
        Ok(read)
    }
}

fn external(e: crate::error::Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// The file with a row selection of `rows` (sorted, distinct).
fn selected(file: &IndexedFile, rows: &[u32]) -> PartitionedFile {
    let mut selectors = Vec::with_capacity(rows.len() * 2 + 1);
    let mut at = 0;
    for &row in rows {
        if row > at {
            selectors.push(RowSelector::skip((row - at) as usize));
        }
        selectors.push(RowSelector::select(1));
        at = row + 1;
    }
    if file.rows > at {
        selectors.push(RowSelector::skip((file.rows - at) as usize));
    }
    PartitionedFile::new_from_meta(file.meta.clone())
        .with_partition_values(file.partition_values.clone())
        .with_extension(ParquetRowSelection::new(RowSelection::from(selectors)))
}

#[async_trait]
impl TableProvider for LookupTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }

    fn constraints(&self) -> Option<&Constraints> {
        self.inner.constraints()
    }

    fn statistics(&self) -> Option<Statistics> {
        self.inner.statistics()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let args = ScanArgs::default()
            .with_projection(projection.map(Vec::as_slice))
            .with_filters(Some(filters))
            .with_limit(limit);
        Ok(self.scan_with_args(state, args).await?.into_inner())
    }

    async fn scan_with_args<'a>(
        &self,
        state: &dyn Session,
        args: ScanArgs<'a>,
    ) -> Result<ScanResult> {
        if let Some((key, values)) = self.wanted(args.filters().unwrap_or_default()) {
            let projection = args.projection().map(<[usize]>::to_vec);
            let plan = self
                .lookup(state, projection.as_ref(), key, &values, args.limit())
                .await?;
            if let Some(plan) = plan {
                return Ok(plan.into());
            }
        }
        self.inner.scan_with_args(state, args).await
    }

    async fn insert_into(
        &self,
        state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.inner.insert_into(state, input, insert_op).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_raw_table_columns() {
        let config = LookupConfig::default();
        assert!(config.validate().is_ok());
        let customers = RawTable::Customers.file_schema();
        let columns = config.columns_of(RawTable::Customers).unwrap();
        let names: Vec<&str> = columns
            .iter()
            .map(|&c| customers.field(c).name().as_str())
            .collect();
        assert_eq!(names, ["customer_id", "email"]);
        assert!(config.columns_of(RawTable::Events).unwrap().is_empty());
        for (bad, says) in [
            ("customers", "not table.column"),
            ("clients.id", "no raw table is named 'clients'"),
            ("orders.nope", "raw.orders has no column 'nope'"),
        ] {
            let config = LookupConfig {
                keys: vec![bad.to_string()],
            };
            let err = config.validate().unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
