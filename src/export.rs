//! Activation: write an audience file from a saved segment, leaving out the
//! profiles without a granted consent for the chosen purpose (denied, in
//! conflict, or — for a purpose that needs an opt-in — never asked), and
//! counting them. The file goes to a local path or into the lake's object
//! store.

use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::prelude::SessionContext;

use crate::error::{Error, Result};
use crate::identity::consent::ConsentConfig;

/// The audience file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Parquet,
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub written: u64,
    /// Members left out for want of a granted consent for the purpose.
    pub left_out: u64,
}

/// Export the members of `analytics.<segment>` to `to`.
pub async fn export(
    ctx: &SessionContext,
    consent: &ConsentConfig,
    segment: &str,
    purpose: &str,
    format: Format,
    to: &str,
) -> Result<Summary> {
    if segment.is_empty()
        || !segment
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(Error::Config(format!("'{segment}' is not a segment name")));
    }
    if !consent.is_purpose(purpose) {
        return Err(Error::Config(format!(
            "unknown consent purpose '{purpose}' (known: {})",
            consent.purposes.join(", ")
        )));
    }
    // A member whose profile is gone (merged away since the snapshot) has
    // no answer to go by: left out, whatever the purpose's default.
    let admitted = format!(
        "_found IS NOT NULL AND {}",
        consent.admits_sql(purpose, "_consent")
    );
    let members = format!(
        "SELECT s.*, p.profile_id AS _found, p.consent_{purpose} AS _consent \
         FROM analytics.\"{segment}\" s \
         LEFT JOIN cdp.profiles p ON p.profile_id = CAST(s.profile_id AS VARCHAR)"
    );
    let count = |filter: &str| {
        let sql = format!("SELECT count(*) FROM ({members}) m WHERE {filter}");
        async move {
            let batches = ctx.sql(&sql).await?.collect().await?;
            let n = batches
                .first()
                .and_then(|b| {
                    b.column(0)
                        .as_any()
                        .downcast_ref::<datafusion::arrow::array::Int64Array>()
                        .map(|a| a.value(0))
                })
                .unwrap_or(0);
            Ok::<u64, Error>(n as u64)
        }
    };
    let left_out = count(&format!("({admitted}) IS NOT TRUE")).await?;
    let kept = ctx
        .sql(&format!("SELECT * FROM ({members}) m WHERE {admitted}"))
        .await?
        .drop_columns(&["_found", "_consent"])?;
    let options = DataFrameWriteOptions::new().with_single_file_output(true);
    let written = match format {
        Format::Csv => kept.write_csv(to, options, None).await?,
        Format::Parquet => kept.write_parquet(to, options, None).await?,
    };
    let written = written
        .first()
        .and_then(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<datafusion::arrow::array::UInt64Array>()
                .map(|a| a.value(0))
        })
        .unwrap_or(0);
    Ok(Summary { written, left_out })
}
