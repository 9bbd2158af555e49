//! The `raw` schema: one table per raw table of the lake — the built-in
//! ones and every declared one, including a table declared after start-up
//! (`CREATE TABLE raw.<name>` over SQL, or by another command on the same
//! lake object): the list is the lake's ([`Lake::raw_tables`]) at each
//! call, so every session of every role sees a new table at once. Each
//! table's provider (with its key index, [`super::lookup`]) is built once
//! and kept, so its cached Delta log state and index live across queries.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use datafusion::catalog::SchemaProvider;
use datafusion::datasource::TableProvider;
use datafusion::error::{DataFusionError, Result};

use super::lookup::{LookupConfig, LookupTable};
use crate::lake::Lake;
use crate::schema::RawTable;

/// The `raw` schema of a lake.
#[derive(Debug)]
pub struct RawSchema {
    lake: Lake,
    lookup: LookupConfig,
    providers: RwLock<HashMap<RawTable, Arc<dyn TableProvider>>>,
}

impl RawSchema {
    /// The schema over `lake`'s raw tables; the keys `lookup` names are
    /// indexed. A key naming no column is an error here, for the tables
    /// the lake has now.
    pub fn new(lake: Lake, lookup: LookupConfig) -> crate::error::Result<RawSchema> {
        let schema = RawSchema {
            lake,
            lookup,
            providers: RwLock::default(),
        };
        for table in schema.lake.raw_tables() {
            schema
                .provider(table)
                .map_err(crate::error::Error::Config)?;
        }
        Ok(schema)
    }

    /// The lake whose tables these are.
    pub fn lake(&self) -> &Lake {
        &self.lake
    }

    fn provider(&self, table: RawTable) -> std::result::Result<Arc<dyn TableProvider>, String> {
        if let Some(provider) = self
            .providers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&table)
        {
            return Ok(Arc::clone(provider));
        }
        let mut provider: Arc<dyn TableProvider> = Arc::new(
            super::delta_table::DeltaLakeTable::raw(self.lake.clone(), table),
        );
        let keys = self.lookup.columns_of(table)?;
        if !keys.is_empty() {
            provider = Arc::new(LookupTable::new(provider, self.lake.clone(), table, keys));
        }
        let mut providers = self.providers.write().unwrap_or_else(|e| e.into_inner());
        Ok(Arc::clone(providers.entry(table).or_insert(provider)))
    }
}

#[async_trait]
impl SchemaProvider for RawSchema {
    fn table_names(&self) -> Vec<String> {
        self.lake
            .raw_tables()
            .iter()
            .map(|t| t.name().to_string())
            .collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        match self.lake.raw_table(name) {
            None => Ok(None),
            Some(table) => self
                .provider(table)
                .map(Some)
                .map_err(DataFusionError::Plan),
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        self.lake.raw_table(name).is_some()
    }
}
