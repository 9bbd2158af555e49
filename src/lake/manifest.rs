//! Versioned, materialised views: each refresh writes its tables under a new
//! version folder (`cdp/<table>/v=<n>-<run>/`) and then switches one small JSON
//! manifest (`cdp/_manifest.json`) to point at them. Readers resolve the
//! manifest at every scan, so they see the last committed version whole;
//! a refresh that dies before the switch leaves the previous one in place.

use std::collections::BTreeMap;

use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use super::Lake;
use crate::error::{Error, Result};

/// Format tag of the manifest, for future migrations.
pub const MANIFEST_FORMAT: u32 = 1;

/// Where the committed manifest of the `cdp` views lives.
pub fn manifest_path() -> Path {
    Path::from("cdp/_manifest.json")
}

/// The folder of one table at one version, written by run `run` (a unique
/// tag, so a run that died half-way never shares a folder with the next).
pub fn version_dir(table: &str, version: u64, run: &str) -> Path {
    Path::from(format!("cdp/{table}/v={version:08}-{run}"))
}

/// The committed state of the materialised views.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub version: u64,
    /// RFC 3339 time of the commit.
    pub committed_at: String,
    /// Table name → folder (relative to the lake root) of its current files.
    pub tables: BTreeMap<String, String>,
    /// Raw files folded into this version (path in the lake → size), so
    /// the next refresh reads only the others.
    #[serde(default)]
    pub raw_files: BTreeMap<String, u64>,
    /// The identity settings the stored refresh state was built with; a
    /// refresh under other settings rebuilds from all raw data.
    #[serde(default)]
    pub identity_settings: Option<String>,
}

impl Manifest {
    /// Read the committed manifest; `None` before the first refresh.
    pub async fn load(lake: &Lake) -> Result<Option<Manifest>> {
        let path = lake.path(&manifest_path());
        match lake.store().get(&path).await {
            Ok(found) => {
                let bytes = found
                    .bytes()
                    .await
                    .map_err(|e| Error::store(format!("reading {path}"), e))?;
                let manifest: Manifest = serde_json::from_slice(&bytes)
                    .map_err(|e| Error::Config(format!("{path} is not a valid manifest: {e}")))?;
                if manifest.format != MANIFEST_FORMAT {
                    return Err(Error::Config(format!(
                        "{path} has format {}, this Panorama reads format {MANIFEST_FORMAT}",
                        manifest.format
                    )));
                }
                Ok(Some(manifest))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::store(format!("reading {path}"), e)),
        }
    }

    /// Atomically make this manifest the committed one.
    pub async fn commit(&self, lake: &Lake) -> Result<()> {
        let path = lake.path(&manifest_path());
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::Config(format!("encoding the manifest: {e}")))?;
        lake.store()
            .put(&path, PutPayload::from(json))
            .await
            .map_err(|e| Error::store(format!("committing {path}"), e))?;
        Ok(())
    }
}
