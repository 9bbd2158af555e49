//! A table of the `cdp` schema: its schema is fixed, its files are whatever
//! the committed manifest points at when the query is planned. Before the
//! first refresh it is empty. A view with delta layers reads as the union
//! of its layers, each without the rows later ones replaced ([`super::layers`]).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::union::UnionExec;
use object_store::path::Path;

use super::folder_table;
use super::layers::{self, KeySet, LayerExec};
use crate::lake::Lake;
use crate::lake::manifest::{Manifest, VIEWS_FORMAT};

/// A materialised view resolved through the manifest at every scan.
#[derive(Debug)]
pub struct VersionedTable {
    lake: Lake,
    name: String,
    schema: SchemaRef,
    /// The superseded keys of each layer of the last version scanned.
    superseded: tokio::sync::Mutex<Option<(u64, Vec<Arc<KeySet>>)>>,
}

impl VersionedTable {
    pub fn new(lake: Lake, name: impl Into<String>, schema: SchemaRef) -> VersionedTable {
        VersionedTable {
            lake,
            name: name.into(),
            schema,
            superseded: tokio::sync::Mutex::new(None),
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
        let Some(m) = manifest.filter(|m| m.tables.contains_key(&self.name)) else {
            let projected = match projection {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => self.schema.clone(),
            };
            return Ok(Arc::new(EmptyExec::new(projected)));
        };
        let folder = Path::from(m.tables[&self.name].as_str());
        let deltas = m.deltas_of(&self.name);
        if deltas.is_empty() {
            return folder_table(&self.lake, &folder, self.schema.clone())
                .map_err(|e| DataFusionError::External(Box::new(e)))?
                .scan(state, projection, filters, limit)
                .await;
        }
        // Layers: the base, then each delta; every layer but the last
        // loses the rows later ones replaced or removed.
        let keys = layers::key_columns(&self.name);
        let superseded = {
            let mut cache = self.superseded.lock().await;
            match &*cache {
                Some((version, sets)) if *version == m.version => sets.clone(),
                _ => {
                    let sets = layers::superseded(&self.lake, deltas, keys)
                        .await
                        .map_err(|e| DataFusionError::External(Box::new(e)))?;
                    *cache = Some((m.version, sets.clone()));
                    sets
                }
            }
        };
        let wanted: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        // Read the key columns too, then keep the wanted ones.
        let mut read: Vec<usize> = (0..keys).collect();
        read.extend(wanted.iter().filter(|&&c| c >= keys));
        let output: Vec<usize> = wanted
            .iter()
            .map(|c| read.iter().position(|r| r == c).unwrap_or(0))
            .collect();
        let folders =
            std::iter::once(folder).chain(deltas.iter().map(|d| Path::from(d.rows.as_str())));
        let mut plans: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        for (i, folder) in folders.enumerate() {
            let scan = folder_table(&self.lake, &folder, self.schema.clone())
                .map_err(|e| DataFusionError::External(Box::new(e)))?
                .scan(state, Some(&read), filters, None)
                .await?;
            plans.push(Arc::new(LayerExec::try_new(
                scan,
                (0..keys).collect(),
                superseded.get(i).cloned(),
                output.clone(),
            )?));
        }
        Ok(UnionExec::try_new(plans)?)
    }
}
