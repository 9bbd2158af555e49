//! One-shot SQL for scripts (`panorama sql "..."`): run a statement on a
//! session and render the result as a text table.

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::SessionContext;

use crate::error::{Error, Result};

/// Run `sql` and collect every result batch.
pub async fn run(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>> {
    Ok(ctx.sql(sql).await?.collect().await?)
}

/// Render batches as an ASCII table.
pub fn render(batches: &[RecordBatch]) -> Result<String> {
    pretty_format_batches(batches)
        .map(|t| t.to_string())
        .map_err(|e| Error::arrow("formatting the result", e))
}
