//! The profile API's fast path: the current version of `cdp.profiles` and
//! `cdp.identity_links` held in memory, with a hash index from every
//! normalised identifier to its profile, so that answering a website costs
//! a normalisation, two hash lookups and the JSON of one row — no SQL
//! planning. Loaded at the first call and again (in the background, the
//! old copy answering meanwhile) when a refresh commits a new version,
//! which is checked at most once a second. Memory: about the size of the
//! two tables in Arrow plus ~60 bytes per identifier and per profile
//! (docs/console.md gives figures).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{concat_batches, take_record_batch};
use datafusion::prelude::SessionContext;

use crate::error::{Error, Result};
use crate::identity::suppression::text;
use crate::lake::Lake;
use crate::lake::manifest::Manifest;

/// How often the manifest is checked for a new version.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// One version of the two tables, indexed.
pub struct Loaded {
    pub version: u64,
    profiles: RecordBatch,
    links: RecordBatch,
    /// `type \0 value` → profile row.
    by_identifier: HashMap<String, u32>,
    /// Profile row → its rows of `links`.
    links_of: Vec<Vec<u32>>,
}

impl Loaded {
    /// The profile row of an identifier (normalised).
    pub fn find(&self, id_type: &str, value: &str) -> Option<u32> {
        self.by_identifier.get(&key(id_type, value)).copied()
    }

    /// The profile at `row`, as a one-row batch.
    pub fn profile(&self, row: u32) -> RecordBatch {
        self.profiles.slice(row as usize, 1)
    }

    /// The identifiers of the profile at `row`: `id_type, id_value,
    /// first_seen, last_seen`.
    pub fn identifiers(&self, row: u32) -> Result<RecordBatch> {
        let rows = UInt32Array::from(self.links_of[row as usize].clone());
        take_record_batch(&self.links, &rows)
            .map_err(|e| Error::arrow("reading a profile's identifiers", e))
    }
}

fn key(id_type: &str, value: &str) -> String {
    let mut key = String::with_capacity(id_type.len() + value.len() + 1);
    key.push_str(id_type);
    key.push('\0');
    key.push_str(value);
    key
}

/// The cache: the loaded version and when the manifest was last checked.
#[derive(Default)]
pub struct ProfileCache {
    loaded: RwLock<Option<Arc<Loaded>>>,
    checked: RwLock<Option<Instant>>,
    reloading: tokio::sync::Mutex<()>,
}

impl ProfileCache {
    /// The current version, loading it if there is none yet; starts a
    /// reload in the background when a newer one was committed.
    pub async fn current(
        self: &Arc<Self>,
        lake: &Lake,
        admin: &Arc<SessionContext>,
    ) -> Result<Option<Arc<Loaded>>> {
        let loaded = self
            .loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(loaded) = loaded else {
            // Nothing yet: the first caller loads, the others wait for it.
            let _guard = self.reloading.lock().await;
            if let Some(loaded) = self
                .loaded
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
            {
                return Ok(Some(loaded));
            }
            let Some(manifest) = Manifest::load(lake).await? else {
                return Ok(None);
            };
            let fresh = Arc::new(load(admin, manifest.version).await?);
            *self.loaded.write().unwrap_or_else(|e| e.into_inner()) = Some(fresh.clone());
            *self.checked.write().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
            return Ok(Some(fresh));
        };
        let due = self
            .checked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_none_or(|at| at.elapsed() >= CHECK_EVERY);
        if due {
            *self.checked.write().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
            let (cache, lake, admin) = (Arc::clone(self), lake.clone(), Arc::clone(admin));
            let version = loaded.version;
            tokio::spawn(async move {
                let Ok(_guard) = cache.reloading.try_lock() else {
                    return;
                };
                match Manifest::load(&lake).await {
                    Ok(Some(m)) if m.version != version => match load(&admin, m.version).await {
                        Ok(fresh) => {
                            *cache.loaded.write().unwrap_or_else(|e| e.into_inner()) =
                                Some(Arc::new(fresh));
                        }
                        Err(e) => tracing::warn!(
                            "the profile API keeps version {version}: loading {} failed: {}",
                            m.version,
                            crate::redact::values(&e.to_string())
                        ),
                    },
                    _ => {}
                }
            });
        }
        Ok(Some(loaded))
    }
}

/// Read and index `version` (the current one) of the two tables.
async fn load(admin: &SessionContext, version: u64) -> Result<Loaded> {
    let started = Instant::now();
    let profiles = admin
        .sql("SELECT * FROM cdp.profiles")
        .await?
        .collect()
        .await?;
    let links = admin
        .sql("SELECT id_type, id_value, first_seen, last_seen, profile_id FROM cdp.identity_links")
        .await?
        .collect()
        .await?;
    let profiles = concat(&profiles, admin, "SELECT * FROM cdp.profiles LIMIT 0").await?;
    let links = concat(
        &links,
        admin,
        "SELECT id_type, id_value, first_seen, last_seen, profile_id FROM cdp.identity_links LIMIT 0",
    )
    .await?;
    let ids = profiles
        .column_by_name("profile_id")
        .ok_or_else(|| Error::Config("cdp.profiles has no profile_id".into()))?;
    let ids = text(ids)?;
    let row_of: HashMap<&str, u32> = ids
        .iter()
        .enumerate()
        .filter_map(|(i, id)| Some((id?, i as u32)))
        .collect();
    let (types, values, owners) = (
        text(links.column(0))?,
        text(links.column(1))?,
        text(links.column(4))?,
    );
    let mut by_identifier = HashMap::with_capacity(links.num_rows());
    let mut links_of = vec![Vec::new(); profiles.num_rows()];
    for i in 0..links.num_rows() {
        let Some(&row) = owners
            .is_valid(i)
            .then(|| row_of.get(owners.value(i)))
            .flatten()
        else {
            continue;
        };
        links_of[row as usize].push(i as u32);
        if types.is_valid(i) && values.is_valid(i) {
            by_identifier.insert(key(types.value(i), values.value(i)), row);
        }
    }
    let links = links
        .project(&[0, 1, 2, 3])
        .map_err(|e| Error::arrow("indexing the links", e))?;
    tracing::info!(
        version,
        profiles = profiles.num_rows(),
        identifiers = by_identifier.len(),
        ms = started.elapsed().as_millis() as u64,
        "profile API: loaded the profiles into memory"
    );
    Ok(Loaded {
        version,
        profiles,
        links,
        by_identifier,
        links_of,
    })
}

/// `batches` as one batch (their schema from `empty` when there are none).
async fn concat(
    batches: &[RecordBatch],
    admin: &SessionContext,
    empty: &str,
) -> Result<RecordBatch> {
    let schema = match batches.first() {
        Some(b) => b.schema(),
        None => admin.sql(empty).await?.schema().inner().clone(),
    };
    concat_batches(&schema, batches).map_err(|e| Error::arrow("holding a table in memory", e))
}
