//! Every known identifier and its profile, in memory: the committed
//! version of `cdp.identity_links` held as one Arrow batch with a hash
//! table over its rows, so that "which profile is this email?" costs a
//! normalisation and one probe — no SQL planning, no join. The `resolved`
//! schema ([`super::resolved`]) answers each raw row's profile with it, and
//! the console's profile API finds a profile by identifier with it.
//!
//! One [`ProfileIndexCache`] is shared by every session of a process (a
//! session-config extension): it loads the index at the first use and again
//! when a refresh has committed a newer version (checked by each query of
//! `resolved`, and once a second by the profile API). Memory: the identifiers'
//! text and profile ids in Arrow, plus about 9 bytes of hash table per
//! identifier (a `u32` row and a control byte, at 7/8 load).

use std::hash::BuildHasher;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;

use datafusion::arrow::array::{Array, AsArray, RecordBatch, StringArray};
use datafusion::arrow::compute::{cast, concat_batches};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::prelude::SessionContext;
use hashbrown::{DefaultHashBuilder, HashTable};

use super::VersionedTable;
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::lake::manifest::Manifest;
use crate::schema::cdp;

/// The columns of `cdp.identity_links` the index holds, in this order.
const COLUMNS: [&str; 5] = [
    "id_type",
    "id_value",
    "profile_id",
    "first_seen",
    "last_seen",
];

/// One committed version of the identifiers, indexed.
pub struct ProfileIndex {
    version: u64,
    /// `COLUMNS`, the three text columns as plain `Utf8`.
    links: RecordBatch,
    types: StringArray,
    values: StringArray,
    profiles: StringArray,
    /// Rows of `links` by the hash of `(id_type, id_value)`.
    table: HashTable<u32>,
    hasher: DefaultHashBuilder,
    /// Rows of `links` in profile-id order (4 bytes per identifier), built
    /// at the first [`ProfileIndex::identifiers_of`].
    by_profile: OnceLock<Vec<u32>>,
}

impl std::fmt::Debug for ProfileIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProfileIndex")
            .field("version", &self.version)
            .field("identifiers", &self.links.num_rows())
            .finish()
    }
}

impl ProfileIndex {
    /// Read and index the committed version of `cdp.identity_links`;
    /// `None` before the first refresh.
    pub async fn load(lake: &Lake) -> Result<Option<ProfileIndex>> {
        let Some(manifest) = Manifest::load(lake).await? else {
            return Ok(None);
        };
        let started = Instant::now();
        let ctx = SessionContext::new();
        ctx.register_object_store(lake.store_url().as_ref(), Arc::clone(lake.store()));
        let table = VersionedTable::new(lake.clone(), "identity_links", cdp::identity_links());
        let batches = ctx
            .read_table(Arc::new(table))?
            .select_columns(&COLUMNS)?
            .collect()
            .await?;
        let index = ProfileIndex::new(manifest.version, &batches)?;
        tracing::info!(
            version = index.version,
            identifiers = index.len(),
            ms = started.elapsed().as_millis() as u64,
            "indexed the identifiers of the profiles"
        );
        Ok(Some(index))
    }

    /// Index `batches` (the [`COLUMNS`] of `cdp.identity_links`).
    fn new(version: u64, batches: &[RecordBatch]) -> Result<ProfileIndex> {
        let schema = Arc::new(Schema::new(
            COLUMNS
                .iter()
                .map(|name| {
                    let field = cdp::identity_links();
                    let data_type = match field.field_with_name(name) {
                        Ok(f) if f.data_type().is_temporal() => f.data_type().clone(),
                        _ => DataType::Utf8,
                    };
                    Field::new(*name, data_type, true)
                })
                .collect::<Vec<_>>(),
        ));
        let plain: Vec<RecordBatch> = batches
            .iter()
            .map(|b| {
                let columns = (0..COLUMNS.len())
                    .map(|i| cast(b.column(i), schema.field(i).data_type()))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                RecordBatch::try_new(Arc::clone(&schema), columns)
            })
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::arrow("reading cdp.identity_links", e))?;
        let links = concat_batches(&schema, &plain)
            .map_err(|e| Error::arrow("holding cdp.identity_links in memory", e))?;
        let text = |i: usize| links.column(i).as_string::<i32>().clone();
        let (types, values, profiles) = (text(0), text(1), text(2));
        let hasher = DefaultHashBuilder::default();
        let mut table = HashTable::with_capacity(links.num_rows());
        for row in 0..links.num_rows() {
            if types.is_null(row) || values.is_null(row) || profiles.is_null(row) {
                continue;
            }
            let hash = hasher.hash_one((types.value(row), values.value(row)));
            table.insert_unique(hash, row as u32, |&r| {
                hasher.hash_one((types.value(r as usize), values.value(r as usize)))
            });
        }
        Ok(ProfileIndex {
            version,
            links,
            types,
            values,
            profiles,
            table,
            hasher,
            by_profile: OnceLock::new(),
        })
    }

    /// The committed version this index was read at.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// How many identifiers are indexed.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The row of identifier `(id_type, value)` — `value` normalised by
    /// its type's rule — or `None` when no profile has it.
    pub fn find(&self, id_type: &str, value: &str) -> Option<u32> {
        let hash = self.hasher.hash_one((id_type, value));
        self.table
            .find(hash, |&r| {
                self.types.value(r as usize) == id_type && self.values.value(r as usize) == value
            })
            .copied()
    }

    /// The profile id of identifier row `row`.
    pub fn profile_id(&self, row: u32) -> &str {
        self.profiles.value(row as usize)
    }

    /// The identifier rows of profile `profile_id` (none for an unknown
    /// id): a binary search over the rows in profile order.
    pub fn identifiers_of(&self, profile_id: &str) -> &[u32] {
        let sorted = self.by_profile.get_or_init(|| {
            let mut rows: Vec<u32> = (0..self.profiles.len() as u32)
                .filter(|&r| self.profiles.is_valid(r as usize))
                .collect();
            rows.sort_unstable_by(|&a, &b| {
                self.profiles
                    .value(a as usize)
                    .cmp(self.profiles.value(b as usize))
            });
            rows
        });
        let id = |r: &u32| self.profiles.value(*r as usize);
        let start = sorted.partition_point(|r| id(r) < profile_id);
        let end = start + sorted[start..].partition_point(|r| id(r) == profile_id);
        &sorted[start..end]
    }

    /// The identifier at row `row`: (type, normalised value).
    pub fn identifier(&self, row: u32) -> (&str, &str) {
        (
            self.types.value(row as usize),
            self.values.value(row as usize),
        )
    }

    /// Every identifier: `id_type, id_value, profile_id, first_seen,
    /// last_seen` (rows as [`Self::find`] numbers them).
    pub fn links(&self) -> &RecordBatch {
        &self.links
    }
}

/// The process's index, reloaded when a refresh commits a newer version.
#[derive(Default)]
pub struct ProfileIndexCache {
    loaded: RwLock<Option<Arc<ProfileIndex>>>,
    /// Held while loading, so one caller loads and the others wait.
    loading: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for ProfileIndexCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProfileIndexCache")
            .field("loaded", &self.held())
            .finish()
    }
}

impl ProfileIndexCache {
    /// The cache every session of `state`'s process shares (a fresh one if
    /// the session was built without it).
    pub fn of_session(state: &datafusion::execution::SessionState) -> Arc<ProfileIndexCache> {
        state
            .config()
            .get_extension::<ProfileIndexCache>()
            .unwrap_or_default()
    }

    fn held(&self) -> Option<Arc<ProfileIndex>> {
        self.loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The index of the version committed now (one small read of the
    /// manifest), loading it if this process holds an older one. A query
    /// uses this, so it answers from the same version its `cdp` tables
    /// read.
    pub async fn committed(&self, lake: &Lake) -> Result<Option<Arc<ProfileIndex>>> {
        let Some(manifest) = Manifest::load(lake).await? else {
            return Ok(None);
        };
        if let Some(held) = self.held().filter(|i| i.version >= manifest.version) {
            return Ok(Some(held));
        }
        let _loading = self.loading.lock().await;
        if let Some(held) = self.held().filter(|i| i.version >= manifest.version) {
            return Ok(Some(held));
        }
        let fresh = ProfileIndex::load(lake).await?.map(Arc::new);
        *self.loaded.write().unwrap_or_else(|e| e.into_inner()) = fresh.clone();
        Ok(fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{ArrayRef, TimestampMicrosecondArray};

    fn links(rows: &[(&str, &str, &str)]) -> RecordBatch {
        let column = |i: usize| -> ArrayRef {
            Arc::new(StringArray::from_iter(rows.iter().map(|r| {
                Some(match i {
                    0 => r.0,
                    1 => r.1,
                    _ => r.2,
                })
            })))
        };
        let time: ArrayRef = Arc::new(
            TimestampMicrosecondArray::from(vec![Some(0); rows.len()]).with_timezone("UTC"),
        );
        RecordBatch::try_from_iter([
            ("id_type", column(0)),
            ("id_value", column(1)),
            ("profile_id", column(2)),
            ("first_seen", Arc::clone(&time)),
            ("last_seen", time),
        ])
        .unwrap()
    }

    #[test]
    fn an_identifier_finds_its_profile_and_nothing_else_does() {
        let index = ProfileIndex::new(
            7,
            &[
                links(&[
                    ("email", "ada@example.com", "p1"),
                    ("phone", "+33612", "p1"),
                ]),
                links(&[("email", "bob@example.com", "p2")]),
            ],
        )
        .unwrap();
        assert_eq!(index.version(), 7);
        assert_eq!(index.len(), 3);
        let profile = |t, v| index.find(t, v).map(|r| index.profile_id(r).to_string());
        assert_eq!(profile("email", "ada@example.com").as_deref(), Some("p1"));
        assert_eq!(profile("phone", "+33612").as_deref(), Some("p1"));
        assert_eq!(profile("email", "bob@example.com").as_deref(), Some("p2"));
        // The type is part of the key, and values are compared whole.
        assert_eq!(profile("phone", "ada@example.com"), None);
        assert_eq!(profile("email", "ada@example.co"), None);
        // And back: a profile's identifiers.
        let of = |p| {
            let mut ids: Vec<_> = index
                .identifiers_of(p)
                .iter()
                .map(|&r| index.identifier(r))
                .collect();
            ids.sort();
            ids
        };
        assert_eq!(
            of("p1"),
            [("email", "ada@example.com"), ("phone", "+33612")]
        );
        assert_eq!(of("p2"), [("email", "bob@example.com")]);
        assert!(of("p0").is_empty() && of("p3").is_empty());
    }
}
