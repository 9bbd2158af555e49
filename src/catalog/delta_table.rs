//! A lake table as DataFusion sees it: the data files of the latest version
//! of one Delta table ([`crate::lake::delta`]) — or of several with one
//! schema, read as one (`system.rejects`) — read with the lake's Parquet
//! format. Every raw table and `system` record table is one.
//!
//! Each scan reads the files of the table's version at that moment (the
//! log is followed, not listed again), so a query never sees a landing in
//! part, nor a compacted file together with the files it replaced.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, FileSource};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;

use super::LakeParquetFormat;
use object_store::path::Path;

use crate::lake::delta::Follower;
use crate::lake::{Lake, paths};
use crate::schema::RawTable;

/// A table over the latest versions of Delta tables in the lake.
pub struct DeltaLakeTable {
    lake: Lake,
    schema: SchemaRef,
    format: LakeParquetFormat,
    source: Arc<dyn FileSource>,
    followers: std::sync::RwLock<Vec<Arc<Follower>>>,
    /// For a table over one Delta table per raw table (`system.rejects`):
    /// the folders it should follow now, so a raw table declared after
    /// start-up has its rejects read too.
    more: Option<fn(&Lake) -> Vec<Path>>,
}

impl std::fmt::Debug for DeltaLakeTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeltaLakeTable")
            .field("followers", &self.followers)
            .finish_non_exhaustive()
    }
}

impl DeltaLakeTable {
    /// The Delta tables in `dirs`, whose files have `schema` (a file that
    /// lacks a column reads it as nulls).
    pub fn new(lake: Lake, dirs: Vec<Path>, schema: SchemaRef) -> DeltaLakeTable {
        let format = LakeParquetFormat::default();
        let source = format.file_source(TableSchema::builder(Arc::clone(&schema)).build());
        DeltaLakeTable {
            schema,
            followers: std::sync::RwLock::new(
                dirs.into_iter()
                    .map(|d| Arc::new(Follower::new(d)))
                    .collect(),
            ),
            more: None,
            lake,
            format,
            source,
        }
    }

    /// Also follow, at each scan, the folders `more` names for the lake
    /// then (see [`DeltaLakeTable::more`]).
    pub fn following(mut self, more: fn(&Lake) -> Vec<Path>) -> DeltaLakeTable {
        self.more = Some(more);
        self
    }

    /// The followers to read now (new folders added first).
    fn followers(&self) -> Vec<Arc<Follower>> {
        if let Some(more) = self.more {
            let dirs = more(&self.lake);
            let mut followers = self.followers.write().unwrap_or_else(|e| e.into_inner());
            for dir in dirs {
                if !followers.iter().any(|f| f.dir() == &dir) {
                    followers.push(Arc::new(Follower::new(dir)));
                }
            }
        }
        self.followers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// `raw.<table>`.
    pub fn raw(lake: Lake, table: RawTable) -> DeltaLakeTable {
        DeltaLakeTable::new(
            lake,
            vec![paths::raw_table_dir(table)],
            table.delta_schema(),
        )
    }
}

#[async_trait]
impl TableProvider for DeltaLakeTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // The filter stays above the scan; the Parquet reader prunes row
        // groups and pages by their statistics with it.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mut files: Vec<PartitionedFile> = Vec::new();
        for follower in self.followers() {
            let listed = follower
                .latest(&self.lake)
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            files.extend(
                listed
                    .files
                    .into_iter()
                    .map(|f| PartitionedFile::new_from_meta(f.meta)),
            );
        }
        if files.is_empty() {
            let projected = match projection {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => Arc::clone(&self.schema),
            };
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        // Largest first, dealt round-robin: groups of similar size.
        files.sort_by_key(|f| std::cmp::Reverse(f.object_meta.size));
        let groups = state.config().target_partitions().max(1).min(files.len());
        let mut grouped: Vec<Vec<PartitionedFile>> = vec![Vec::new(); groups];
        for (i, file) in files.into_iter().enumerate() {
            grouped[i % groups].push(file);
        }
        let config =
            FileScanConfigBuilder::new(self.lake.store_url().clone(), Arc::clone(&self.source))
                .with_file_groups(grouped.into_iter().map(FileGroup::new).collect())
                .with_projection_indices(projection.cloned())?
                .with_limit(limit)
                .build();
        self.format.create_physical_plan(state, config).await
    }
}
