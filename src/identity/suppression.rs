//! Suppressed identifiers: people who asked that nothing more be collected
//! about them (`panorama privacy suppress`, and every erasure unless told
//! otherwise). The list, `system.suppressions`, keeps each identifier only
//! as a salted hash of its normalised value; `panorama ingest` and the
//! collector drop the rows that carry one before they reach the lake, and
//! count them (`system.ingests.rows_suppressed`).
//!
//! This also owns [`Sources`]: the identifier values of a raw row, read
//! through the `[identity]` sources (columns and JSON paths) and
//! normalised as identity resolution does — what a suppression, an erasure
//! and an export recognise a person by.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use object_store::path::Path;
use sha2::{Digest, Sha256};

use super::IdentityConfig;
use super::normalize::{self, Country, Normalize};
use crate::error::{Error, Result};
use crate::lake::{Lake, delta, parquet};
use crate::schema::utc_timestamps;

/// Folder of `system.suppressions`.
pub fn dir() -> Path {
    Path::from("system/suppressions")
}

/// `system.suppressions`.
pub fn schema() -> SchemaRef {
    crate::schema::cdp::suppressions()
}

/// The lake's secret that salts the hashes of privacy records.
const SALT: &str = "privacy_requests";

/// The salted hash of an identifier: SHA-256 of the lake's privacy salt,
/// the type and the normalised value, in hex. It proves which value a
/// record is about to whoever holds the value, and tells nobody else.
pub fn hash(salt: &[u8; 32], id_type: &str, normalised: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(id_type.as_bytes());
    hasher.update([0]);
    hasher.update(normalised.as_bytes());
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The lake's privacy salt.
pub async fn salt(lake: &Lake) -> Result<[u8; 32]> {
    lake.secret(SALT).await
}

/// `value` normalised as identifiers of type `id_type` are (as given, but
/// trimmed, when the rule cannot normalise it or the type is unknown).
pub fn normalised(config: &IdentityConfig, id_type: &str, value: &str) -> String {
    let country = normalize::country(&config.default_country);
    config
        .id_type(id_type)
        .zip(country)
        .and_then(|(t, country)| t.normalize_value(value, country))
        .unwrap_or_else(|| value.trim().to_string())
}

/// The suppressed identifiers, as salted hashes.
#[derive(Debug, Default)]
pub struct Suppressions {
    salt: [u8; 32],
    /// (identifier type, hash).
    hashes: HashSet<(String, String)>,
}

impl Suppressions {
    /// The list as its records leave it (later records win).
    pub async fn load(lake: &Lake) -> Result<Suppressions> {
        let mut records = records(lake).await?;
        records.sort();
        let mut hashes = HashSet::new();
        for Record {
            action,
            id_type,
            hash,
            ..
        } in records
        {
            if action == "suppress" {
                hashes.insert((id_type, hash));
            } else {
                hashes.remove(&(id_type, hash));
            }
        }
        let salt = if hashes.is_empty() {
            [0; 32]
        } else {
            salt(lake).await?
        };
        Ok(Suppressions { salt, hashes })
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Whether the normalised identifier is suppressed.
    pub fn holds(&self, id_type: &str, normalised: &str) -> bool {
        !self.hashes.is_empty()
            && self
                .hashes
                .contains(&(id_type.to_string(), hash(&self.salt, id_type, normalised)))
    }

    /// Which rows of `batch` (rows of raw `table`) carry a suppressed
    /// identifier; `None` when none does (or nothing is suppressed).
    pub fn rows_of(
        &self,
        table: &str,
        batch: &RecordBatch,
        config: &IdentityConfig,
    ) -> Result<Option<BooleanArray>> {
        if self.is_empty() {
            return Ok(None);
        }
        let sources = Sources::of(table, config)?;
        let columns = sources.columns(batch)?;
        let hits: BooleanArray = (0..batch.num_rows())
            .map(|i| {
                Some(
                    sources
                        .values(&columns, i)
                        .any(|(id_type, value)| self.holds(id_type, &value)),
                )
            })
            .collect();
        Ok((hits.true_count() > 0).then_some(hits))
    }
}

/// One row of `system.suppressions`, in the order that sorts them by time.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Record {
    at: i64,
    request_id: String,
    action: String,
    id_type: String,
    hash: String,
}

/// Every suppress and unsuppress record of the lake.
async fn records(lake: &Lake) -> Result<Vec<Record>> {
    let mut records = Vec::new();
    for file in delta::files(lake, &dir()).await?.files {
        parquet::for_each_batch(lake, &file.meta, |batch| {
            let text = |i: usize| -> Result<StringArray> {
                let c = cast(batch.column(i), &DataType::Utf8)
                    .map_err(|e| Error::arrow("reading suppressions", e))?;
                Ok(c.as_string::<i32>().clone())
            };
            let (request, action, id_type, hash) = (text(0)?, text(1)?, text(2)?, text(3)?);
            let at = batch
                .column(4)
                .as_primitive_opt::<datafusion::arrow::datatypes::TimestampMicrosecondType>();
            for i in 0..batch.num_rows() {
                records.push(Record {
                    at: at.map_or(0, |a| a.value(i)),
                    request_id: request.value(i).to_string(),
                    action: action.value(i).to_string(),
                    id_type: id_type.value(i).to_string(),
                    hash: hash.value(i).to_string(),
                });
            }
            Ok(())
        })
        .await?;
    }
    Ok(records)
}

/// The (type, hash) pairs request `request_id` suppressed.
pub async fn suppressed_by(lake: &Lake, request_id: &str) -> Result<HashSet<(String, String)>> {
    Ok(records(lake)
        .await?
        .into_iter()
        .filter(|r| r.request_id == request_id && r.action == "suppress")
        .map(|r| (r.id_type, r.hash))
        .collect())
}

/// Append suppress or unsuppress records for `(type, hash)` pairs.
pub async fn record(
    lake: &Lake,
    request_id: &str,
    action: &str,
    hashes: &[(String, String)],
) -> Result<()> {
    if hashes.is_empty() {
        return Ok(());
    }
    let n = hashes.len();
    let now = chrono::Utc::now().timestamp_micros();
    let batch = RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from(vec![request_id; n])) as ArrayRef,
            Arc::new(StringArray::from(vec![action; n])),
            Arc::new(StringArray::from_iter_values(
                hashes.iter().map(|(t, _)| t.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                hashes.iter().map(|(_, h)| h.as_str()),
            )),
            utc_timestamps(std::iter::repeat_n(now, n)),
        ],
    )
    .map_err(|e| Error::arrow("recording suppressions", e))?;
    delta::append_record(lake, &dir(), batch, action, None).await
}

/// One identifier source of a raw table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Source {
    pub column: String,
    pub id_type: String,
    pub normalize: Normalize,
    pub json_path: Option<Vec<String>>,
}

/// The identifier sources of one raw table, and how to read them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Sources {
    pub sources: Vec<Source>,
    pub country: Country,
}

impl Sources {
    /// The `[identity]` sources of raw `table`.
    pub fn of(table: &str, config: &IdentityConfig) -> Result<Sources> {
        let country = normalize::country(&config.default_country).ok_or_else(|| {
            Error::Config(format!("unknown country '{}'", config.default_country))
        })?;
        let sources = config
            .sources
            .iter()
            .filter(|s| s.table == table)
            .filter_map(|s| {
                config.id_type(&s.id_type).map(|t| Source {
                    column: s.column.clone(),
                    id_type: s.id_type.clone(),
                    normalize: t.normalize,
                    json_path: s
                        .json_path
                        .as_ref()
                        .map(|p| p.split('.').map(str::to_string).collect()),
                })
            })
            .collect();
        Ok(Sources { sources, country })
    }

    /// The source columns of `batch` as text, in source order (a missing
    /// column reads as NULL).
    pub fn columns(&self, batch: &RecordBatch) -> Result<Vec<StringArray>> {
        self.sources
            .iter()
            .map(|s| match batch.column_by_name(&s.column) {
                Some(c) => text(c),
                None => Ok(StringArray::new_null(batch.num_rows())),
            })
            .collect()
    }

    /// The normalised identifiers of row `i` ((type, value) pairs), given
    /// [`Sources::columns`] (or the arguments of a SQL function, in source
    /// order).
    pub fn values<'a>(
        &'a self,
        columns: &'a [StringArray],
        i: usize,
    ) -> impl Iterator<Item = (&'a str, String)> + 'a {
        self.sources
            .iter()
            .zip(columns)
            .filter(move |(_, c)| c.is_valid(i))
            .filter_map(move |(source, column)| {
                let raw = column.value(i);
                let value = match &source.json_path {
                    Some(path) => {
                        match super::normalize::json_at(raw, path.iter().map(String::as_str))? {
                            serde_json::Value::String(s) => s,
                            serde_json::Value::Number(n) => n.to_string(),
                            _ => return None,
                        }
                    }
                    None => raw.to_string(),
                };
                let normal = normalize::normalize(source.normalize, &value, self.country)
                    .unwrap_or_else(|| value.trim().to_string());
                (!normal.is_empty()).then_some((source.id_type.as_str(), normal))
            })
    }
}

/// A column as plain text.
pub fn text(column: &ArrayRef) -> Result<StringArray> {
    let plain =
        cast(column, &DataType::Utf8).map_err(|e| Error::arrow("reading identifiers", e))?;
    Ok(plain.as_string::<i32>().clone())
}
