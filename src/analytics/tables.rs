//! Tables written by scheduled jobs. Each write goes to a new folder
//! `analytics/tables/<name>/v=<n>-<run>/`; the table's current version is
//! one small JSON object, `analytics/tables/<name>/_current.json`, listing
//! the folders that make it up (one for `replace`, the previous ones plus
//! the new one for `append`), switched in one PUT. A job that fails before
//! the switch leaves the previous version in place.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::DataFusionError;
use datafusion::datasource::empty::EmptyTable;
use datafusion::datasource::listing::ListingTable;
use datafusion::execution::context::SessionState;
use object_store::path::Path;
use serde::{Deserialize, Serialize};

use crate::catalog::folders_config;
use crate::catalog::masking::Classified;
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::schema::cdp;

/// Folder of all job tables.
pub fn root() -> Path {
    Path::from("analytics/tables")
}

fn pointer(name: &str) -> Path {
    root().join(name).join("_current.json")
}

/// The current version of a job table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Current {
    pub version: u64,
    /// Folders (relative to the lake root) whose files make up the table.
    pub folders: Vec<String>,
    /// Columns that hold personal data, by lineage from the query that
    /// wrote them (`email AS contact_email` is personal here too):
    /// analysts read them masked.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub masks: std::collections::BTreeMap<String, crate::catalog::masking::Mask>,
}

/// Tables with a fixed schema that exist (empty) before their first write,
/// so the views over them can be planned from day one.
fn fixed_schema(name: &str) -> Option<SchemaRef> {
    (name == "segment_membership").then(cdp::segment_membership)
}

/// The current version of table `name`, if it was ever written.
pub async fn current(lake: &Lake, name: &str) -> Result<Option<Current>> {
    lake.get_json(&pointer(name)).await
}

/// Make `current` the version of table `name`, atomically.
pub async fn switch(lake: &Lake, name: &str, current: &Current) -> Result<()> {
    lake.put_json(&pointer(name), current).await
}

/// Names of the job tables in the lake.
pub async fn names(lake: &Lake) -> Result<Vec<String>> {
    let mut names: Vec<String> = lake
        .list(&root())
        .await?
        .iter()
        .filter(|m| m.location.filename() == Some("_current.json"))
        .filter_map(|m| {
            let relative = lake.relative(&m.location);
            let parts: Vec<_> = relative.parts().collect();
            (parts.len() == 4).then(|| parts[2].as_ref().to_string())
        })
        .collect();
    names.extend(fixed_schema("segment_membership").map(|_| "segment_membership".to_string()));
    names.sort();
    names.dedup();
    Ok(names)
}

pub async fn exists(lake: &Lake, name: &str) -> Result<bool> {
    Ok(fixed_schema(name).is_some() || current(lake, name).await?.is_some())
}

/// The table `name` as DataFusion reads it, or `None`.
pub async fn table(
    lake: &Lake,
    state: &SessionState,
    name: &str,
) -> datafusion::error::Result<Option<Arc<dyn TableProvider>>> {
    let external = |e: Error| DataFusionError::External(Box::new(e));
    let Some(current) = current(lake, name).await.map_err(external)? else {
        return Ok(fixed_schema(name).map(|s| Arc::new(EmptyTable::new(s)) as _));
    };
    let folders: Vec<Path> = current
        .folders
        .iter()
        .map(|f| Path::from(f.as_str()))
        .collect();
    let config = folders_config(lake, &folders).map_err(external)?;
    let config = match fixed_schema(name) {
        Some(schema) => config.with_schema(schema),
        None => config.infer_schema(state).await?,
    };
    let table = Arc::new(ListingTable::try_new(config)?);
    let masks = table
        .schema()
        .fields()
        .iter()
        .map(|f| current.masks.get(f.name()).copied())
        .collect();
    Ok(Some(Arc::new(Classified::new(table, masks))))
}
