//! The profile API's fast path: the current version of `cdp.profiles` held
//! in memory beside the process's [`ProfileIndex`] (every identifier and
//! its profile), so that answering a website costs a normalisation, two
//! hash lookups and the JSON of one row — no SQL planning. Loaded at the
//! first call and again (in the background, the old copy answering
//! meanwhile) when the index moves to a newer version, which it checks at
//! most once a second. Memory: the profiles in Arrow, the index
//! ([`crate::catalog::profile_index`]) and 4 bytes per identifier (docs/console.md
//! gives figures).

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{RecordBatch, UInt32Array};
use datafusion::arrow::compute::{concat_batches, take_record_batch};
use datafusion::prelude::SessionContext;

use crate::catalog::profile_index::{ProfileIndex, ProfileIndexCache};
use crate::error::{Error, Result};
use crate::identity::suppression::text;
use crate::lake::Lake;

/// An identifier whose profile is not in `cdp.profiles`.
const NO_PROFILE: u32 = u32::MAX;

/// One version of the profiles, indexed.
pub(crate) struct Loaded {
    pub version: u64,
    index: Arc<ProfileIndex>,
    profiles: RecordBatch,
    /// Identifier row of the index → profile row.
    profile_of: Vec<u32>,
    /// Profile row → its identifier rows.
    links_of: Vec<Vec<u32>>,
}

impl Loaded {
    /// The profile row of an identifier (normalised).
    pub(crate) fn find(&self, id_type: &str, value: &str) -> Option<u32> {
        let link = self.index.find(id_type, value)?;
        Some(self.profile_of[link as usize]).filter(|&row| row != NO_PROFILE)
    }

    /// The profile at `row`, as a one-row batch.
    pub(crate) fn profile(&self, row: u32) -> RecordBatch {
        self.profiles.slice(row as usize, 1)
    }

    /// The identifiers of the profile at `row`: `id_type, id_value,
    /// first_seen, last_seen`.
    pub(crate) fn identifiers(&self, row: u32) -> Result<RecordBatch> {
        let rows = UInt32Array::from(self.links_of[row as usize].clone());
        let links = self
            .index
            .links()
            .project(&[0, 1, 3, 4])
            .map_err(|e| Error::arrow("reading a profile's identifiers", e))?;
        take_record_batch(&links, &rows)
            .map_err(|e| Error::arrow("reading a profile's identifiers", e))
    }
}

/// How often the committed version is checked.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The cache: the loaded version and when the manifest was last checked.
#[derive(Default)]
pub(crate) struct ProfileCache {
    loaded: RwLock<Option<Arc<Loaded>>>,
    checked: RwLock<Option<Instant>>,
    reloading: tokio::sync::Mutex<()>,
}

impl ProfileCache {
    fn held(&self) -> Option<Arc<Loaded>> {
        self.loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The current version, loading it if there is none yet; at most once
    /// a second, checks for a newer committed version and loads it (index
    /// and profiles in one go) in the background, the held copy answering
    /// meanwhile.
    pub(crate) async fn current(
        self: &Arc<Self>,
        lake: &Lake,
        admin: &Arc<SessionContext>,
    ) -> Result<Option<Arc<Loaded>>> {
        let index = ProfileIndexCache::of_session(&admin.state());
        let Some(held) = self.held() else {
            // Nothing yet: the first caller loads, the others wait for it.
            let _guard = self.reloading.lock().await;
            if let Some(held) = self.held() {
                return Ok(Some(held));
            }
            let Some(committed) = index.committed(lake).await? else {
                return Ok(None);
            };
            let fresh = Arc::new(load(admin, committed).await?);
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
            let version = held.version;
            tokio::spawn(async move {
                let Ok(_guard) = cache.reloading.try_lock() else {
                    return;
                };
                let fresh = match index.committed(&lake).await {
                    Ok(Some(committed)) if committed.version() != version => {
                        load(&admin, committed).await
                    }
                    Ok(_) => return,
                    Err(e) => Err(e),
                };
                match fresh {
                    Ok(fresh) => {
                        *cache.loaded.write().unwrap_or_else(|e| e.into_inner()) =
                            Some(Arc::new(fresh));
                    }
                    Err(e) => tracing::warn!(
                        "the profile API keeps version {version}: loading a newer one failed: {}",
                        crate::redact::values(&e.to_string())
                    ),
                }
            });
        }
        Ok(Some(held))
    }
}

/// Read `cdp.profiles` and tie it to `index`'s identifiers.
async fn load(admin: &SessionContext, index: Arc<ProfileIndex>) -> Result<Loaded> {
    let started = Instant::now();
    let profiles = admin
        .sql("SELECT * FROM cdp.profiles")
        .await?
        .collect()
        .await?;
    let profiles = concat(&profiles, admin, "SELECT * FROM cdp.profiles LIMIT 0").await?;
    let ids = profiles
        .column_by_name("profile_id")
        .ok_or_else(|| Error::Config("cdp.profiles has no profile_id".into()))?;
    let ids = text(ids)?;
    let row_of: std::collections::HashMap<&str, u32> = ids
        .iter()
        .enumerate()
        .filter_map(|(i, id)| Some((id?, i as u32)))
        .collect();
    let links = index.links();
    let owners = text(links.column(2))?;
    let mut profile_of = vec![NO_PROFILE; links.num_rows()];
    let mut links_of = vec![Vec::new(); profiles.num_rows()];
    for (i, owner) in owners.iter().enumerate() {
        if let Some(&row) = owner.and_then(|o| row_of.get(o)) {
            profile_of[i] = row;
            links_of[row as usize].push(i as u32);
        }
    }
    tracing::info!(
        version = index.version(),
        profiles = profiles.num_rows(),
        identifiers = index.len(),
        ms = started.elapsed().as_millis() as u64,
        "profile API: loaded the profiles into memory"
    );
    Ok(Loaded {
        version: index.version(),
        index,
        profiles,
        profile_of,
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
