//! Access and portability (GDPR art. 15 and 20): everything the lake holds
//! about a person, as one JSON document (`panorama privacy export`).

use std::collections::BTreeMap;

use chrono::Utc;
use datafusion::arrow::array::RecordBatch;
use datafusion::prelude::col;

use super::audit::{Request, record};
use super::{Forgotten, raw_rows_about, resolve};
use crate::error::{Error, Result};
use crate::identity::IdentityConfig;
use crate::lake::Lake;

/// What an export wrote.
#[derive(Debug, Clone, Default)]
pub struct Exported {
    pub request_id: String,
    pub identifiers: usize,
    pub profiles: usize,
    /// `raw.orders`, `cdp.profiles`, … → rows written.
    pub rows: BTreeMap<String, usize>,
}

/// Write everything the lake holds about the people `requested` names
/// (GDPR art. 15 and 20) to `to` as one JSON document: their identifiers,
/// profiles, merges, and every raw row about them (consents included),
/// table by table. Recorded in `system.privacy_requests` (kind `access`).
pub async fn export(
    lake: &Lake,
    config: &IdentityConfig,
    requested: &[(String, String)],
    to: &std::path::Path,
) -> Result<Exported> {
    let request = Request::new(lake, config, "access", requested).await?;
    let (ctx, people) = resolve(lake, config, requested).await?;
    let mut document = serde_json::Map::new();
    let mut exported = Exported {
        request_id: request.id.clone(),
        identifiers: people.identifiers(),
        profiles: people.profiles.len(),
        ..Exported::default()
    };
    let profiles = || {
        col("profile_id").in_list(
            people
                .profiles
                .iter()
                .map(|p| datafusion::prelude::lit(p.as_str()))
                .collect(),
            false,
        )
    };
    let merged = || {
        let ids = || {
            people
                .profiles
                .iter()
                .map(|p| datafusion::prelude::lit(p.as_str()))
                .collect()
        };
        col("from_profile_id")
            .in_list(ids(), false)
            .or(col("to_profile_id").in_list(ids(), false))
    };
    let mut sections: Vec<(String, datafusion::logical_expr::Expr)> = Vec::new();
    if !people.profiles.is_empty() {
        sections.push(("cdp.profiles".into(), profiles()));
        sections.push(("cdp.identity_links".into(), profiles()));
        sections.push(("cdp.profile_merges".into(), merged()));
    }
    for (table, predicate) in raw_rows_about(&ctx, &people, config).await? {
        sections.push((format!("raw.{table}"), predicate));
    }
    for (name, predicate) in sections {
        let batches = ctx
            .table(name.as_str())
            .await?
            .filter(predicate)?
            .collect()
            .await?;
        let rows = json_rows(&batches)?;
        exported.rows.insert(name.clone(), rows.len());
        document.insert(name, serde_json::Value::Array(rows));
    }
    let document = serde_json::json!({
        "request_id": request.id,
        "generated_at": Utc::now().to_rfc3339(),
        "identifiers": people.identifiers(),
        "profiles": people.profiles,
        "tables": document,
    });
    let text = serde_json::to_vec_pretty(&document)
        .map_err(|e| Error::Config(format!("writing the export: {e}")))?;
    std::fs::write(to, text).map_err(|e| Error::Io {
        what: "writing the export".into(),
        path: to.to_path_buf(),
        source: e,
    })?;
    let done = Forgotten {
        identifiers: exported.identifiers,
        profiles: exported.profiles,
        ..Forgotten::default()
    };
    record(lake, &request, "completed", &done, None).await?;
    Ok(exported)
}

/// Rows of `batches` as JSON objects (times as RFC 3339, lists as arrays).
fn json_rows(batches: &[RecordBatch]) -> Result<Vec<serde_json::Value>> {
    let mut writer = datafusion::arrow::json::ArrayWriter::new(Vec::new());
    let batches: Vec<&RecordBatch> = batches.iter().collect();
    writer
        .write_batches(&batches)
        .map_err(|e| Error::arrow("writing rows as JSON", e))?;
    writer
        .finish()
        .map_err(|e| Error::arrow("writing rows as JSON", e))?;
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&bytes).map_err(|e| Error::Config(format!("reading rows as JSON: {e}")))
}
