//! Versioned, materialised views: each refresh writes its tables under a new
//! version folder (`cdp/<table>/v=<n>-<run>/`) and then switches one small JSON
//! manifest (`cdp/_manifest.json`) to point at them. Readers resolve the
//! manifest at every scan, so they see the last committed version whole;
//! a refresh that dies before the switch leaves the previous one in place.

use std::collections::BTreeMap;

use object_store::path::Path;
use serde::{Deserialize, Serialize};

use super::Lake;
use crate::error::{Error, Result};

/// Format tag of the manifest, for future migrations.
pub const MANIFEST_FORMAT: u32 = 1;

/// Version of the `cdp` views' columns; bumped whenever a view gains or
/// changes a column. Views committed under another version are refused
/// when read (their missing columns would read as NULL) until a refresh
/// rebuilds them.
pub const VIEWS_FORMAT: u32 = 2;

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
    /// [`VIEWS_FORMAT`] of the build that committed the views.
    #[serde(default)]
    pub views_format: u32,
}

impl Manifest {
    /// Read the committed manifest; `None` before the first refresh.
    pub async fn load(lake: &Lake) -> Result<Option<Manifest>> {
        let manifest: Option<Manifest> = lake.get_json(&manifest_path()).await?;
        if let Some(m) = &manifest
            && m.format != MANIFEST_FORMAT
        {
            return Err(Error::Config(format!(
                "{} has format {}, this Panorama reads format {MANIFEST_FORMAT}",
                manifest_path(),
                m.format
            )));
        }
        Ok(manifest)
    }

    /// Atomically make this manifest the committed one.
    pub async fn commit(&self, lake: &Lake) -> Result<()> {
        lake.put_json(&manifest_path(), self).await
    }
}
