//! `system.table_history`: the commits of every raw table's Delta log —
//! which version, when, what wrote it (a landing, compaction, vacuum, another
//! engine), files and rows added — read from the logs at each query.
//!
//! Reads the newest [`NEWEST`] commits per table: each is one small object
//! to fetch, and older ones are in the Delta log for any Delta reader.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::datasource::{MemTable, TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use crate::lake::{Lake, delta, paths};
use crate::schema::{RawTable, cdp, utc_timestamps};

/// Commits read per table.
pub(super) const NEWEST: usize = 1_000;

/// `system.table_history`.
#[derive(Debug)]
pub(super) struct TableHistory {
    lake: Lake,
}

impl TableHistory {
    pub(super) fn new(lake: Lake) -> TableHistory {
        TableHistory { lake }
    }

    async fn batch(&self) -> crate::error::Result<RecordBatch> {
        let mut rows: Vec<(RawTable, delta::Commit)> = Vec::new();
        for table in self.lake.raw_tables() {
            let dir = paths::raw_table_dir(table);
            for commit in delta::history(&self.lake, &dir, NEWEST).await? {
                rows.push((table, commit));
            }
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|(t, _)| format!("raw.{t}")),
            )),
            Arc::new(Int64Array::from_iter_values(
                rows.iter()
                    .map(|(_, c)| i64::try_from(c.version).unwrap_or(i64::MAX)),
            )),
            utc_timestamps(
                rows.iter()
                    .map(|(_, c)| c.timestamp_ms.unwrap_or(0).saturating_mul(1_000)),
            ),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|(_, c)| c.operation.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|(_, c)| c.written_by.as_str()),
            )),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|(_, c)| c.files_added),
            )),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|(_, c)| c.files_removed),
            )),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|(_, c)| c.rows_added),
            )),
            Arc::new(BooleanArray::from_iter(
                rows.iter().map(|(_, c)| Some(c.data_change)),
            )),
        ];
        RecordBatch::try_new(cdp::table_history(), columns)
            .map_err(|e| crate::error::Error::arrow("building system.table_history", e))
    }
}

#[async_trait]
impl TableProvider for TableHistory {
    fn schema(&self) -> SchemaRef {
        cdp::table_history()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batch = self
            .batch()
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        MemTable::try_new(cdp::table_history(), vec![vec![batch]])?
            .scan(state, projection, filters, limit)
            .await
    }
}
