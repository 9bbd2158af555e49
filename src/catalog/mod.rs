//! The SQL catalog over the lake: schemas `raw`, `cdp`, `analytics`,
//! `system` and `public` inside one catalog named `panorama`.
//!
//! Raw tables are Delta tables over `raw/<table>/` ([`delta_table`]), the
//! built-in ones with the schema fixed in [`crate::schema`], declared ones
//! with theirs ([`raw_schema`] lists both, including tables declared after
//! start-up). Each scan reads the table's latest version, so rows landed
//! after start-up are visible to the next query without a restart. The
//! catalog only builds plans; it never loads data.

use std::sync::Arc;

use datafusion::catalog::{
    CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider, SchemaProvider,
};
use datafusion::datasource::TableProvider;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};

pub mod codec;
pub mod delta_table;
mod history;
mod key_index;
mod layers;
pub mod lineage;
pub mod lookup;
mod lookup_exec;
pub mod masking;
pub mod parquet_format;
pub mod profile_index;
pub mod raw_schema;
pub mod resolved;
mod versioned;

pub use parquet_format::LakeParquetFormat;
pub use versioned::VersionedTable;

use object_store::path::Path;

use crate::error::Result;
use crate::identity::config::IdentityConfig;
use crate::identity::normalize::Country;
use crate::lake::Lake;
use crate::schema::{RawTable, cdp};
use profile_index::ProfileIndexCache;

/// Name of the one catalog (what `current_database()` answers).
pub const CATALOG: &str = "panorama";

/// The schemas every lake has, in the order `\dn` shows them.
pub const SCHEMAS: [&str; 6] = ["public", "raw", "cdp", "resolved", "analytics", "system"];

/// The materialised views of the `cdp` schema and their schemas.
pub fn cdp_tables(
    id_types: &[String],
    purposes: &[String],
) -> Vec<(&'static str, datafusion::arrow::datatypes::SchemaRef)> {
    vec![
        ("identity_links", cdp::identity_links()),
        ("identity_rejections", cdp::identity_rejections()),
        ("profile_merges", cdp::profile_merges()),
        ("profiles", cdp::profiles(id_types, purposes)),
    ]
}

/// Build the `panorama` catalog for `lake`: `identity` gives the
/// identifier types (each a list column of `cdp.profiles`), the consent
/// purposes (each a `consent_<purpose>` column) and the identifier sources
/// (the tables of the `resolved` schema, whose profiles `index` finds;
/// `country` is the phone rule's default). `lookup` names the raw-table key
/// columns that answer point lookups from an index
/// ([`lookup::LookupTable`]).
pub fn lake_catalog(
    lake: &Lake,
    identity: &IdentityConfig,
    country: Country,
    lookup: &lookup::LookupConfig,
    index: Arc<ProfileIndexCache>,
) -> Result<Arc<dyn CatalogProvider>> {
    let id_types: Vec<String> = identity.types.iter().map(|t| t.name.clone()).collect();
    let catalog = MemoryCatalogProvider::new();
    let raw: Arc<dyn SchemaProvider> =
        Arc::new(raw_schema::RawSchema::new(lake.clone(), lookup.clone())?);
    for name in SCHEMAS {
        if name == "raw" {
            catalog.register_schema(name, Arc::clone(&raw))?;
            continue;
        }
        if name == "resolved" {
            let resolved = resolved::ResolvedSchema::new(
                lake.clone(),
                Arc::clone(&raw),
                Arc::new(identity.clone()),
                country,
                Arc::clone(&index),
            );
            catalog.register_schema(name, Arc::new(resolved))?;
            continue;
        }
        let schema: Arc<dyn SchemaProvider> = Arc::new(MemorySchemaProvider::new());
        match name {
            "cdp" => {
                for (table, table_schema) in cdp_tables(&id_types, &identity.consent.purposes) {
                    schema.register_table(
                        table.to_string(),
                        Arc::new(VersionedTable::new(lake.clone(), table, table_schema)),
                    )?;
                }
            }
            "system" => {
                for table in system_tables(&lake.raw_tables()) {
                    let mut provider =
                        delta_table::DeltaLakeTable::new(lake.clone(), table.dirs, table.schema);
                    if table.name == "rejects" {
                        provider = provider.following(|lake| {
                            lake.raw_tables()
                                .into_iter()
                                .map(crate::lake::paths::rejects_dir)
                                .collect()
                        });
                    }
                    schema.register_table(table.name.to_string(), Arc::new(provider))?;
                }
                schema.register_table(
                    "table_history".to_string(),
                    Arc::new(history::TableHistory::new(lake.clone())),
                )?;
            }
            _ => {}
        }
        catalog.register_schema(name, schema)?;
    }
    Ok(Arc::new(catalog))
}

/// A listing table over every Parquet file of a lake folder.
pub fn folder_table(
    lake: &Lake,
    folder: &Path,
    schema: datafusion::arrow::datatypes::SchemaRef,
) -> Result<Arc<dyn TableProvider>> {
    folders_table(lake, std::slice::from_ref(folder), schema)
}

/// A listing table over every Parquet file of several lake folders.
pub fn folders_table(
    lake: &Lake,
    folders: &[Path],
    schema: datafusion::arrow::datatypes::SchemaRef,
) -> Result<Arc<dyn TableProvider>> {
    let config = folders_config(lake, folders)?.with_schema(schema);
    Ok(Arc::new(ListingTable::try_new(config)?))
}

/// The listing configuration of [`folders_table`], before its schema is
/// set (or inferred).
pub fn folders_config(lake: &Lake, folders: &[Path]) -> Result<ListingTableConfig> {
    let urls = folders
        .iter()
        .map(|f| ListingTableUrl::parse(lake.folder_url(f)))
        .collect::<datafusion::error::Result<Vec<_>>>()?;
    let options =
        ListingOptions::new(Arc::new(LakeParquetFormat::default())).with_file_extension(".parquet");
    Ok(ListingTableConfig::new_with_multi_paths(urls).with_listing_options(options))
}

/// One of Panorama's record tables in `system`: Delta tables (one, or one
/// per raw table for `rejects`) of rows appended one commit per record.
#[derive(Debug, Clone)]
pub struct SystemTable {
    pub name: &'static str,
    pub dirs: Vec<Path>,
    pub schema: datafusion::arrow::datatypes::SchemaRef,
}

/// Every record table of `system`, where its Delta tables are, for a lake
/// whose raw tables are `tables` (each has its rejects).
pub fn system_tables(tables: &[RawTable]) -> Vec<SystemTable> {
    let one = |name, dir: &str, schema| SystemTable {
        name,
        dirs: vec![Path::from(dir)],
        schema,
    };
    vec![
        one("refreshes", "system/refreshes", cdp::refreshes()),
        SystemTable {
            name: "ingests",
            dirs: vec![crate::lake::paths::ingests_dir()],
            schema: crate::schema::cdp::ingests(),
        },
        SystemTable {
            name: "rejects",
            dirs: tables
                .iter()
                .map(|t| crate::lake::paths::rejects_dir(*t))
                .collect(),
            schema: crate::schema::cdp::rejects(),
        },
        one("job_runs", "system/job_runs", cdp::job_runs()),
        one(
            "identity_blocks",
            "system/identity_blocks",
            cdp::identity_blocks(),
        ),
        one(
            "privacy_requests",
            "system/privacy_requests",
            cdp::privacy_requests(),
        ),
        one("suppressions", "system/suppressions", cdp::suppressions()),
    ]
}

/// One raw table: the latest version of its Delta table.
pub fn raw_table(lake: &Lake, table: RawTable) -> Result<Arc<dyn TableProvider>> {
    Ok(Arc::new(delta_table::DeltaLakeTable::raw(
        lake.clone(),
        table,
    )))
}
