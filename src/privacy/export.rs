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
/// table by table, and with `csv`, one CSV file per table in that folder.
/// Recorded in `system.privacy_requests` (kind `access`).
pub async fn export(
    lake: &Lake,
    config: &IdentityConfig,
    requested: &[(String, String)],
    to: &std::path::Path,
    csv: Option<&std::path::Path>,
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
        let rows_about = ctx.table(name.as_str()).await?.filter(predicate)?;
        let schema = std::sync::Arc::new(rows_about.schema().as_arrow().clone());
        let batches = rows_about.collect().await?;
        if let Some(folder) = csv {
            // An empty table still gets its header: the person sees what
            // the table would hold.
            let empty = [RecordBatch::new_empty(schema)];
            let written = if batches.is_empty() {
                &empty[..]
            } else {
                &batches[..]
            };
            write_csv(&folder.join(format!("{name}.csv")), written)?;
        }
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

/// `batches` as one CSV file with a header; lists are written as text
/// (`[a, b]`), which CSV has no form for.
fn write_csv(path: &std::path::Path, batches: &[RecordBatch]) -> Result<()> {
    let io = |source| Error::Io {
        what: "writing the export".into(),
        path: path.to_path_buf(),
        source,
    };
    if let Some(folder) = path.parent() {
        std::fs::create_dir_all(folder).map_err(io)?;
    }
    let file = std::fs::File::create(path).map_err(io)?;
    let mut writer = datafusion::arrow::csv::WriterBuilder::new()
        .with_header(true)
        .build(file);
    for batch in batches {
        let batch = lists_as_text(batch)?;
        writer
            .write(&batch)
            .map_err(|e| Error::arrow("writing the export as CSV", e))?;
    }
    Ok(())
}

fn lists_as_text(batch: &RecordBatch) -> Result<RecordBatch> {
    use datafusion::arrow::array::{ArrayRef, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    let failed = |e| Error::arrow("writing the export as CSV", e);
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if matches!(
            field.data_type(),
            DataType::List(_) | DataType::LargeList(_)
        ) {
            let format = ArrayFormatter::try_new(column.as_ref(), &FormatOptions::default())
                .map_err(failed)?;
            let text: StringArray = (0..column.len())
                .map(|i| column.is_valid(i).then(|| format.value(i).to_string()))
                .collect();
            fields.push(Field::new(field.name(), DataType::Utf8, true));
            columns.push(std::sync::Arc::new(text));
        } else {
            fields.push(field.as_ref().clone());
            columns.push(column.clone());
        }
    }
    RecordBatch::try_new(std::sync::Arc::new(Schema::new(fields)), columns).map_err(failed)
}

/// Rows of `batches` as JSON objects (times as RFC 3339, lists as arrays).
pub fn json_rows(batches: &[RecordBatch]) -> Result<Vec<serde_json::Value>> {
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
