//! A table of the `cdp` schema: its schema is fixed, its files are whatever
//! the committed manifest points at when the query is planned. Before the
//! first refresh it is empty.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use object_store::path::Path;

use super::folder_table;
use crate::lake::Lake;
use crate::lake::manifest::{Manifest, VIEWS_FORMAT};

/// A materialised view resolved through the manifest at every scan.
#[derive(Debug)]
pub struct VersionedTable {
    lake: Lake,
    name: String,
    schema: SchemaRef,
}

impl VersionedTable {
    pub fn new(lake: Lake, name: impl Into<String>, schema: SchemaRef) -> VersionedTable {
        VersionedTable {
            lake,
            name: name.into(),
            schema,
        }
    }
}

#[async_trait]
impl TableProvider for VersionedTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Listed as tables (`\dt cdp.*`, `getTables`): they are materialised,
    /// and BI tools browse tables first. (PostgreSQL would file a
    /// materialised view under `\dm`, which few tools look at.)
    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let manifest = Manifest::load(&self.lake)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        if let Some(m) = &manifest
            && m.views_format != VIEWS_FORMAT
        {
            return Err(DataFusionError::Plan(format!(
                "cdp.{} was built by an older version of Panorama (views format {}, this one \
                 reads {VIEWS_FORMAT}); run `panorama refresh` (or REFRESH MATERIALIZED VIEW \
                 cdp.profiles) to rebuild it",
                self.name, m.views_format
            )));
        }
        let Some(folder) = manifest.and_then(|m| m.tables.get(&self.name).cloned()) else {
            let projected = match projection {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => self.schema.clone(),
            };
            return Ok(Arc::new(EmptyExec::new(projected)));
        };
        folder_table(&self.lake, &Path::from(folder), self.schema.clone())
            .map_err(|e| DataFusionError::External(Box::new(e)))?
            .scan(state, projection, filters, limit)
            .await
    }
}
