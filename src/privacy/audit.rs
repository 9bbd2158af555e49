//! The audit of privacy requests, `system.privacy_requests`: one row per
//! identifier a request names and state it reaches, the identifier only as
//! a salted hash ([`suppression::hash`]), never its value.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{ArrayRef, AsArray, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use object_store::path::Path;
use uuid::Uuid;

use super::Forgotten;
use super::people;
use crate::error::{Error, Result};
use crate::identity::{IdentityConfig, suppression};
use crate::lake::{Lake, delta};
use crate::schema::{cdp, utc_timestamps};

/// Folder of `system.privacy_requests`.
pub fn requests_dir() -> Path {
    Path::from("system/privacy_requests")
}

/// One privacy request, as the audit records it.
pub(super) struct Request {
    pub(super) id: String,
    /// `erasure` (and suppression), `erasure_only` (the people may come
    /// back as new data), `access`, `proof` or `retention`.
    pub(super) kind: &'static str,
    pub(super) requested_at: DateTime<Utc>,
    /// (identifier type, salted hash of its normalised value).
    pub(super) hashes: Vec<(String, String)>,
}

impl Request {
    /// A new request of `kind` about the identifiers `requested`.
    pub(super) async fn new(
        lake: &Lake,
        config: &IdentityConfig,
        kind: &'static str,
        requested: &[(String, String)],
    ) -> Result<Request> {
        if requested.is_empty() {
            return Err(Error::Config(format!(
                "a privacy request ({kind}) names at least one identifier"
            )));
        }
        Ok(Request {
            id: Uuid::new_v4().to_string(),
            kind,
            requested_at: Utc::now(),
            hashes: hashes(lake, config, requested).await?,
        })
    }
}

/// The erasures that were started and never completed nor failed (the
/// process was killed, the machine stopped), oldest first, as they were
/// requested.
pub(super) async fn interrupted(ctx: &datafusion::prelude::SessionContext) -> Result<Vec<Request>> {
    let batches = ctx
        .sql(
            "SELECT request_id, kind, id_type, value_hash, status, \
             CAST(requested_at AS BIGINT) AS at \
             FROM system.privacy_requests WHERE kind IN ('erasure', 'erasure_only') \
             ORDER BY requested_at, request_id",
        )
        .await?
        .collect()
        .await?;
    let mut requests: Vec<(Request, bool)> = Vec::new();
    for batch in &batches {
        let text = |i: usize| -> Result<StringArray> {
            let c = datafusion::arrow::compute::cast(batch.column(i), &DataType::Utf8)
                .map_err(|e| Error::arrow("reading privacy requests", e))?;
            Ok(c.as_string::<i32>().clone())
        };
        let (id, kind, id_type, hash, status) = (text(0)?, text(1)?, text(2)?, text(3)?, text(4)?);
        let at = batch.column(5).as_primitive::<Int64Type>();
        for i in 0..batch.num_rows() {
            let position = requests.iter().position(|(r, _)| r.id == id.value(i));
            let (request, ended) = match position {
                Some(p) => &mut requests[p],
                None => {
                    requests.push((
                        Request {
                            id: id.value(i).to_string(),
                            kind: if kind.value(i) == "erasure" {
                                "erasure"
                            } else {
                                "erasure_only"
                            },
                            requested_at: DateTime::from_timestamp_micros(at.value(i))
                                .unwrap_or_else(Utc::now),
                            hashes: Vec::new(),
                        },
                        false,
                    ));
                    let last = requests.len() - 1;
                    &mut requests[last]
                }
            };
            match status.value(i) {
                "started" => {
                    let pair = (id_type.value(i).to_string(), hash.value(i).to_string());
                    if !request.hashes.contains(&pair) {
                        request.hashes.push(pair);
                    }
                }
                _ => *ended = true,
            }
        }
    }
    Ok(requests
        .into_iter()
        .filter(|(_, ended)| !ended)
        .map(|(r, _)| r)
        .collect())
}

/// The salted hash of each requested identifier
/// ([`suppression::hash`]): never the value.
pub(super) async fn hashes(
    lake: &Lake,
    config: &IdentityConfig,
    requested: &[(String, String)],
) -> Result<Vec<(String, String)>> {
    let salt = suppression::salt(lake).await?;
    requested
        .iter()
        .map(|(id_type, value)| {
            people::known_type(config, id_type)?;
            let normal = suppression::normalised(config, id_type, value);
            Ok((id_type.clone(), suppression::hash(&salt, id_type, &normal)))
        })
        .collect()
}

/// The time by which a request must be answered: one month (art. 12).
fn due(requested_at: DateTime<Utc>) -> DateTime<Utc> {
    requested_at
        .checked_add_months(chrono::Months::new(1))
        .unwrap_or(requested_at)
}

/// Append the request's state to `system.privacy_requests`: one row per
/// requested identifier.
pub(super) async fn record(
    lake: &Lake,
    request: &Request,
    status: &str,
    done: &Forgotten,
    error: Option<&str>,
) -> Result<()> {
    let n = request.hashes.len();
    let text = |v: &str| Arc::new(StringArray::from(vec![v; n])) as ArrayRef;
    let int = |v: usize| Arc::new(Int64Array::from(vec![v as i64; n])) as ArrayRef;
    let completed = (status != "started").then(|| Utc::now().timestamp_micros());
    let tables = serde_json::to_string(&done.rows_removed)
        .map_err(|e| Error::Config(format!("recording a privacy request: {e}")))?;
    let batch = RecordBatch::try_new(
        cdp::privacy_requests(),
        vec![
            text(&request.id),
            text(request.kind),
            Arc::new(StringArray::from_iter_values(
                request.hashes.iter().map(|(t, _)| t.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                request.hashes.iter().map(|(_, h)| h.as_str()),
            )),
            text(status),
            utc_timestamps(std::iter::repeat_n(
                request.requested_at.timestamp_micros(),
                n,
            )),
            utc_timestamps(std::iter::repeat_n(
                due(request.requested_at).timestamp_micros(),
                n,
            )),
            Arc::new(
                datafusion::arrow::array::TimestampMicrosecondArray::from(vec![completed; n])
                    .with_timezone("UTC"),
            ),
            int(done.identifiers),
            int(done.profiles),
            int(done.rows()),
            int(done.files_rewritten),
            text(&tables),
            Arc::new(StringArray::from(vec![error; n])),
        ],
    )
    .map_err(|e| Error::arrow("recording a privacy request", e))?;
    delta::append_record(lake, &requests_dir(), batch, "privacy request", None).await
}
