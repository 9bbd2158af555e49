//! Versioned, materialised views: each refresh writes its tables under a new
//! version folder (`cdp/<table>/v=<n>-<run>/`) and then switches one small JSON
//! manifest (`cdp/_manifest.json`) to point at them. Readers resolve the
//! manifest at every scan, so they see the last committed version whole;
//! a refresh that dies before the switch leaves the previous one in place.
//!
//! A table is a base folder plus, after incremental refreshes, delta layers
//! on top of it ([`Delta`]): each layer holds the rows that changed (they
//! replace the rows of older layers with the same key) and the keys of rows
//! that were removed. A full refresh, or a compaction, writes a new base and
//! no layers.

use std::collections::BTreeMap;

use object_store::path::Path;
use serde::{Deserialize, Serialize};

use super::Lake;
use crate::error::{Error, Result};

/// Format tag of the manifest, for future migrations: 2 added delta
/// layers (a Panorama that reads format 1 would ignore them and serve
/// stale rows, so it must refuse the file).
pub const MANIFEST_FORMAT: u32 = 2;

/// Oldest manifest format this version reads (1 has no layers).
const OLDEST_FORMAT: u32 = 1;

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
    /// Raw files folded into this version (path in the lake → size), as
    /// releases before the Delta lake recorded them; read only to recognise
    /// such a manifest (its next refresh rebuilds), never written now.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub raw_files: BTreeMap<String, u64>,
    /// Raw table name → the version of its Delta table folded into this
    /// version, so the next refresh reads only the files committed since.
    #[serde(default)]
    pub raw_versions: BTreeMap<String, u64>,
    /// The identity settings the stored refresh state was built with; a
    /// refresh under other settings rebuilds from all raw data.
    #[serde(default)]
    pub identity_settings: Option<String>,
    /// [`VIEWS_FORMAT`] of the build that committed the views.
    #[serde(default)]
    pub views_format: u32,
    /// Table name → delta layers on top of its base folder, oldest first.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub deltas: BTreeMap<String, Vec<Delta>>,
    /// Microseconds since the epoch before which an anonymous-only profile
    /// was idle too long to be in the committed `cdp.profiles`.
    #[serde(default)]
    pub anonymous_cutoff: Option<i64>,
    /// The blocked-value list (normalised, sorted) the identifiers were
    /// checked against: under the same list, an identifier that had a
    /// profile is not on it, and the next refresh checks only the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_values: Option<Vec<String>>,
}

/// One delta layer of a table: a folder of rows that replace older rows
/// with the same key, and a file of the keys of removed rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    pub rows: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<String>,
}

/// The folder of a delta layer's removed keys beside its rows folder.
pub fn removed_dir(table: &str, version: u64, run: &str) -> Path {
    Path::from(format!("cdp/{table}/v={version:08}-{run}-removed"))
}

impl Manifest {
    /// Read the committed manifest; `None` before the first refresh.
    pub async fn load(lake: &Lake) -> Result<Option<Manifest>> {
        let manifest: Option<Manifest> = lake.get_json(&manifest_path()).await?;
        if let Some(m) = &manifest
            && !(OLDEST_FORMAT..=MANIFEST_FORMAT).contains(&m.format)
        {
            return Err(Error::Config(format!(
                "{} has format {}, this Panorama reads formats {OLDEST_FORMAT} to \
                 {MANIFEST_FORMAT}: it was written by a newer Panorama",
                manifest_path(),
                m.format
            )));
        }
        Ok(manifest)
    }

    /// The delta layers of `table`, oldest first (none after a full
    /// refresh).
    pub fn deltas_of(&self, table: &str) -> &[Delta] {
        self.deltas.get(table).map_or(&[], Vec::as_slice)
    }

    /// Every folder the manifest points at (bases, layers, removed keys).
    pub fn folders(&self) -> impl Iterator<Item = &str> {
        self.tables.values().map(String::as_str).chain(
            self.deltas
                .values()
                .flatten()
                .flat_map(|d| std::iter::once(d.rows.as_str()).chain(d.removed.as_deref())),
        )
    }

    /// Atomically make this manifest the committed one.
    pub async fn commit(&self, lake: &Lake) -> Result<()> {
        lake.put_json(&manifest_path(), self).await
    }
}
