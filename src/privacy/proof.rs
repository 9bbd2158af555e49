//! Proof of consent (GDPR art. 7(1): the controller must be able to show
//! that the person consented): for each purpose, a person's answer in
//! `cdp.profiles` and every record behind it — the consent records of
//! `raw.consents` and the preferences SDKs sent in events — with its
//! source, time and the notice version when one was sent
//! (`panorama privacy proof`).

use std::collections::BTreeMap;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::Expr;
use datafusion::prelude::{SessionContext, col, lit};

use super::audit::{Request, record};
use super::{Forgotten, raw_rows_about, resolve};
use crate::error::{Error, Result};
use crate::identity::IdentityConfig;
use crate::lake::Lake;
use crate::schema::RawTable;

/// One record that answered a purpose.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Evidence {
    pub purpose: String,
    /// RFC 3339, UTC.
    pub recorded_at: String,
    pub status: String,
    /// `raw.consents`' `source` (a CMP, a form, the CRM), or `sdk` for a
    /// preference sent with an event.
    pub source: String,
    /// `raw.consents.<consent_id>` or `raw.events.<message_id>`.
    pub record: String,
    /// The `notice_version` the record carried (in its `extra`), if any.
    pub notice_version: Option<String>,
}

/// The evidence for each purpose of one person.
#[derive(Debug, Clone, Default)]
pub struct Proof {
    pub request_id: String,
    pub profiles: Vec<String>,
    /// Purpose → the answers of the person's profiles (`granted`,
    /// `denied`, `conflict`; none when nothing answered).
    pub answers: BTreeMap<String, Vec<String>>,
    /// Every record, by purpose then time.
    pub evidence: Vec<Evidence>,
}

/// The consent evidence for the people `requested` names, recorded in
/// `system.privacy_requests` (kind `proof`).
pub async fn proof(
    lake: &Lake,
    config: &IdentityConfig,
    requested: &[(String, String)],
) -> Result<Proof> {
    let request = Request::new(lake, config, "proof", requested).await?;
    let (ctx, people) = resolve(lake, config, requested).await?;
    let mut proof = Proof {
        request_id: request.id.clone(),
        profiles: people.profiles.clone(),
        ..Proof::default()
    };
    for purpose in &config.consent.purposes {
        proof.answers.insert(purpose.clone(), Vec::new());
    }
    if !people.profiles.is_empty() {
        let ids = people.profiles.iter().map(|p| lit(p.as_str())).collect();
        let columns: Vec<Expr> = config
            .consent
            .purposes
            .iter()
            .map(|p| col(format!("consent_{p}")))
            .collect();
        let batches = ctx
            .table("cdp.profiles")
            .await?
            .filter(col("profile_id").in_list(ids, false))?
            .select(columns)?
            .collect()
            .await?;
        for batch in &batches {
            for (purpose, column) in config.consent.purposes.iter().zip(batch.columns()) {
                let answers = proof.answers.entry(purpose.clone()).or_default();
                answers.extend(texts(column)?.into_iter().flatten());
            }
        }
    }
    for (table, about) in raw_rows_about(&ctx, &people, config).await? {
        match table {
            RawTable::Consents => consent_records(&ctx, about, &mut proof.evidence).await?,
            RawTable::Events => sdk_records(&ctx, config, about, &mut proof.evidence).await?,
            _ => {}
        }
    }
    proof.evidence.sort();
    let done = Forgotten {
        identifiers: people.identifiers(),
        profiles: people.profiles.len(),
        ..Forgotten::default()
    };
    record(lake, &request, "completed", &done, None).await?;
    Ok(proof)
}

async fn consent_records(
    ctx: &SessionContext,
    about: Expr,
    evidence: &mut Vec<Evidence>,
) -> Result<()> {
    let batches = ctx
        .table("raw.consents")
        .await?
        .filter(about)?
        .select_columns(&[
            "consent_id",
            "purpose",
            "status",
            "recorded_at",
            "source",
            "extra",
        ])?
        .collect()
        .await?;
    for batch in &batches {
        let [id, purpose, status, at, source, extra] = columns(batch)?;
        for row in 0..batch.num_rows() {
            let notice_version = extra[row]
                .as_deref()
                .and_then(|e| serde_json::from_str::<serde_json::Value>(e).ok())
                .and_then(|e| match e.get("notice_version")? {
                    serde_json::Value::String(s) => Some(s.clone()),
                    other => Some(other.to_string()),
                });
            evidence.push(Evidence {
                purpose: purpose[row].clone().unwrap_or_default(),
                recorded_at: at[row].clone().unwrap_or_default(),
                status: status[row].clone().unwrap_or_default(),
                source: source[row].clone().unwrap_or_default(),
                record: format!("raw.consents.{}", id[row].as_deref().unwrap_or("")),
                notice_version,
            });
        }
    }
    Ok(())
}

async fn sdk_records(
    ctx: &SessionContext,
    config: &IdentityConfig,
    about: Expr,
    evidence: &mut Vec<Evidence>,
) -> Result<()> {
    let batches = ctx
        .table("raw.events")
        .await?
        .filter(about.and(col("context").like(lit("%onsent%"))))?
        .select_columns(&["message_id", "timestamp", "context"])?
        .collect()
        .await?;
    for batch in &batches {
        let [id, at, context] = columns(batch)?;
        for row in 0..batch.num_rows() {
            let Some(context) = context[row].as_deref() else {
                continue;
            };
            for (purpose, granted) in config.consent.sdk_answers(context) {
                evidence.push(Evidence {
                    purpose: purpose.to_string(),
                    recorded_at: at[row].clone().unwrap_or_default(),
                    status: if granted { "granted" } else { "denied" }.into(),
                    source: "sdk".into(),
                    record: format!("raw.events.{}", id[row].as_deref().unwrap_or("")),
                    notice_version: None,
                });
            }
        }
    }
    Ok(())
}

/// Every column of `batch` as text (times as RFC 3339).
fn columns<const N: usize>(batch: &RecordBatch) -> Result<[Vec<Option<String>>; N]> {
    let all: Vec<Vec<Option<String>>> = batch.columns().iter().map(texts).collect::<Result<_>>()?;
    all.try_into()
        .map_err(|_| Error::Config("reading consent records: unexpected columns".into()))
}

fn texts(column: &std::sync::Arc<dyn Array>) -> Result<Vec<Option<String>>> {
    let column = match column.data_type() {
        DataType::Timestamp(_, _) => {
            let micros = cast(column, &DataType::Int64)
                .map_err(|e| Error::arrow("reading consent records", e))?;
            let micros = micros.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            return Ok(micros
                .iter()
                .map(|m| {
                    m.and_then(chrono::DateTime::from_timestamp_micros)
                        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                })
                .collect());
        }
        _ => {
            cast(column, &DataType::Utf8).map_err(|e| Error::arrow("reading consent records", e))?
        }
    };
    Ok(column
        .as_string::<i32>()
        .iter()
        .map(|s| s.map(str::to_string))
        .collect())
}
