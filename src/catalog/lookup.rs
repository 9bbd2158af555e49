//! Point lookups on raw tables: `WHERE key = value` or `WHERE key IN (…)`
//! on a configured key column reads only the rows holding those values.
//!
//! A raw table is one file per day; a plain scan plans with the statistics
//! of every file and opens each one to find a single customer (45 ms for a
//! year of files). A [`LookupTable`] wraps the table's listing table and
//! keeps a key index per file ([`FileKeys`]), built the first time a lookup
//! needs it and extended file by file as files land. A lookup hashes the
//! wanted values, finds the files and rows holding them, and scans just
//! those rows (a Parquet row selection). The filter stays above the scan
//! and re-checks every row, so a hash collision costs a row read, never a
//! wrong answer. Every other query goes to the listing table unchanged, and
//! so does a lookup that also filters on `date` (the listing table prunes
//! partitions exactly).
//!
//! Freshness: Panorama's one write path ([`crate::ingest::land_as`])
//! rewrites `system/changes/raw.<table>.json` after landing files, and a
//! lookup lists the table again when that marker changed, or when its
//! listing is older than [`RELIST_AFTER`] (files put there by other means).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::NaiveDate;
use datafusion::arrow::datatypes::{DataType, Field, SchemaRef};
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
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt};
use serde::Deserialize;

use super::LakeParquetFormat;
use super::key_index::{IndexedFile, NewFile, TableKeys, hash_values};
use super::lookup_exec::LookupExec;
use crate::lake::{Lake, paths};
use crate::schema::{PARTITION_COLUMN, RawTable};

/// A lookup lists the table again at least this often, so that files put
/// into the lake without Panorama's write path are found too.
pub const RELIST_AFTER: Duration = Duration::from_secs(1);

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
    /// The table's file schema (without the `date` partition).
    file_schema: SchemaRef,
    /// Indexed columns, as positions in `file_schema`.
    keys: Vec<usize>,
    /// How a lookup reads its rows, and the scan source over the table's
    /// file schema and `date` partition (the same for every lookup).
    format: LakeParquetFormat,
    source: Arc<dyn FileSource>,
    snapshot: Mutex<Arc<Snapshot>>,
    /// Held while the table is listed and new files indexed.
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

/// The table's files and their indexes as of one listing.
#[derive(Debug, Default)]
struct Snapshot {
    listed_at: Option<Instant>,
    marker: Option<Marker>,
    index: Arc<TableKeys>,
}

/// What the change marker looked like (absent: `None`).
type Marker = Option<(Option<String>, chrono::DateTime<chrono::Utc>, u64)>;

impl Snapshot {
    fn is_current(&self, marker: &Marker) -> bool {
        self.listed_at
            .is_some_and(|t| t.elapsed() < RELIST_AFTER && self.marker.as_ref() == Some(marker))
    }
}

impl LookupTable {
    /// Wrap `inner`, the listing table of `table`, indexing `keys`.
    pub fn new(
        inner: Arc<dyn TableProvider>,
        lake: Lake,
        table: RawTable,
        keys: Vec<usize>,
    ) -> Self {
        let file_schema = table.file_schema();
        // The rows are known: no bloom filters to read (Parquet still reads
        // only the pages holding them, through the page index).
        let mut options = TableParquetOptions::default();
        options.global.bloom_filter_on_read = false;
        let format = LakeParquetFormat::for_point_reads(options);
        let partition = Arc::new(Field::new(PARTITION_COLUMN, DataType::Date32, false));
        let source = format.file_source(
            TableSchema::builder(Arc::clone(&file_schema))
                .with_table_partition_cols(vec![partition])
                .build(),
        );
        LookupTable {
            inner,
            format,
            source,
            lake,
            table,
            file_schema,
            keys,
            snapshot: Mutex::default(),
            rebuilding: tokio::sync::Mutex::const_new(()),
        }
    }

    /// The key (position in `self.keys`) and values a set of filters looks
    /// up, when the index can answer them.
    fn wanted(&self, filters: &[Expr]) -> Option<(usize, Vec<ScalarValue>)> {
        // Partition filters are exact in the listing table: leave those
        // queries to it.
        let on_partition = filters
            .iter()
            .any(|f| f.column_refs().iter().any(|c| c.name == PARTITION_COLUMN));
        if on_partition {
            return None;
        }
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

    /// The index of the table's current files: the last one, unless the
    /// change marker moved or the listing is too old.
    async fn current(&self) -> crate::error::Result<Arc<Snapshot>> {
        let marker = self.marker().await?;
        let last = self.last();
        if last.is_current(&marker) {
            return Ok(last);
        }
        let _rebuilding = self.rebuilding.lock().await;
        let last = self.last();
        if last.is_current(&marker) {
            return Ok(last);
        }
        let listed_at = Instant::now();
        let known: HashMap<&Path, (usize, &Arc<IndexedFile>)> = last
            .index
            .files()
            .iter()
            .enumerate()
            .map(|(i, f)| (&f.meta.location, (i, f)))
            .collect();
        let mut kept = Vec::new();
        let mut new = Vec::new();
        for meta in self.lake.list(&paths::raw_table_dir(self.table)).await? {
            if meta.location.extension() != Some("parquet") {
                continue;
            }
            let Some(date) = partition_date(&meta.location) else {
                continue;
            };
            match known.get(&meta.location) {
                Some((i, f))
                    if f.meta.size == meta.size && f.meta.last_modified == meta.last_modified =>
                {
                    kept.push(*i)
                }
                _ => new.push((meta, date)),
            }
        }
        let unchanged = new.is_empty() && kept.iter().copied().eq(0..last.index.files().len());
        let index = if unchanged {
            Arc::clone(&last.index)
        } else {
            let new = self.read(new).await?;
            let index = last.index.changed(&kept, new, self.keys.len());
            tracing::debug!(
                files = index.files().len(),
                index_mb = index.memory() >> 20,
                "lookup index of raw.{}",
                self.table
            );
            Arc::new(index)
        };
        let snapshot = Arc::new(Snapshot {
            listed_at: Some(listed_at),
            marker: Some(marker),
            index,
        });
        *self.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = Arc::clone(&snapshot);
        Ok(snapshot)
    }

    fn last(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snapshot.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Read the keys of files not seen before, a few at a time.
    async fn read(
        &self,
        new: Vec<(ObjectMeta, ScalarValue)>,
    ) -> crate::error::Result<Vec<NewFile>> {
        let started = Instant::now();
        let count = new.len();
        let lake = &self.lake;
        let (schema, keys) = (&self.file_schema, &self.keys);
        let read: Vec<NewFile> = futures::stream::iter(new)
            .map(|(meta, date)| NewFile::read(lake, meta, vec![date], schema, keys))
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

    /// The table's change marker as it is now.
    async fn marker(&self) -> crate::error::Result<Marker> {
        let relative = changes_marker(self.table);
        if let Some(file) = self.lake.local_path(&relative) {
            // A local lake: one stat, on this thread (a few microseconds;
            // the object store's head would hop to the blocking pool and
            // back, a tenth of a lookup).
            return match std::fs::metadata(&file) {
                Ok(meta) => {
                    let modified = meta.modified().map_err(|source| crate::error::Error::Io {
                        what: "reading the time of".into(),
                        path: file.clone(),
                        source,
                    })?;
                    Ok(Some((None, modified.into(), meta.len())))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(crate::error::Error::Io {
                    what: "reading".into(),
                    path: file,
                    source,
                }),
            };
        }
        let path = self.lake.path(&relative);
        match self.lake.store().head(&path).await {
            Ok(meta) => Ok(Some((meta.e_tag, meta.last_modified, meta.size))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(crate::error::Error::store(format!("reading {path}"), e)),
        }
    }
}

/// The marker Panorama's write path rewrites after landing files of
/// `table`.
pub fn changes_marker(table: RawTable) -> Path {
    Path::from(format!("system/changes/raw.{}.json", table.name()))
}

/// Record that files of `table` landed (after they are all in place).
pub async fn mark_changed(lake: &Lake, table: RawTable) -> crate::error::Result<()> {
    let change = serde_json::json!({
        "table": table.name(),
        "landed_at": chrono::Utc::now().to_rfc3339(),
        "change": uuid::Uuid::new_v4().to_string(),
    });
    lake.put_json(&changes_marker(table), &change).await
}

fn external(e: crate::error::Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// The `date` of a file from its `date=YYYY-MM-DD` folder.
fn partition_date(location: &Path) -> Option<ScalarValue> {
    let folder = location
        .parts()
        .find_map(|p| p.as_ref().strip_prefix("date=").map(str::to_string))?;
    let date = NaiveDate::parse_from_str(&folder, "%Y-%m-%d").ok()?;
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1)?;
    let days = i32::try_from(date.signed_duration_since(epoch).num_days()).ok()?;
    Some(ScalarValue::Date32(Some(days)))
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

    #[test]
    fn partition_dates_come_from_the_folder() {
        let path = Path::from("lake/raw/orders/date=2026-03-07/part-1.parquet");
        assert_eq!(
            partition_date(&path),
            Some(ScalarValue::Date32(Some(20_519)))
        );
        assert_eq!(
            partition_date(&Path::from("lake/raw/orders/x.parquet")),
            None
        );
    }
}
