//! Storage limitation (GDPR art. 5): rows older than a period erased for
//! good, run by the `retention` jobs.

use chrono::{DateTime, Utc};
use datafusion::prelude::col;
use uuid::Uuid;

use super::Forgotten;
use super::audit::{Request, record};
use crate::error::Result;
use crate::identity::{self, IdentityConfig};
use crate::lake::{Lake, delta, parquet, paths};
use crate::schema::RawTable;

/// Erase the rows of `tables` whose day (`date`) is more than `keep_days`
/// before `now`, as an erasure does: one Delta delete per table (the
/// predicate is a date, no personal value), the tables' history purged,
/// the profiles rebuilt without them and the older view versions deleted.
/// Each table's removal is recorded in `system.privacy_requests` (kind
/// `retention`, the table as `id_type`). Returns the rows removed.
pub async fn retain(
    lake: &Lake,
    config: &IdentityConfig,
    tables: &[RawTable],
    keep_days: u32,
    now: DateTime<Utc>,
) -> Result<u64> {
    let cutoff = (now - chrono::Duration::days(i64::from(keep_days))).date_naive();
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    let days = i32::try_from((cutoff - epoch).num_days()).unwrap_or(i32::MIN);
    let mut removed = 0;
    for &table in tables {
        let dir = paths::raw_table_dir(table);
        let older = col(crate::schema::DAY_COLUMN).lt(datafusion::prelude::lit(
            datafusion::common::ScalarValue::Date32(Some(days)),
        ));
        let properties = parquet::writer_properties_with(crate::ingest::compression(table));
        let deleted = delta::delete(lake, &dir, older, properties, "retention").await?;
        if deleted.rows == 0 {
            continue;
        }
        let mut done = Forgotten {
            files_rewritten: deleted.files_rewritten,
            ..Forgotten::default()
        };
        done.rows_removed
            .insert(format!("raw.{table}"), deleted.rows);
        done.files_purged = delta::purge_history(lake, &dir).await?;
        let request = Request {
            id: Uuid::new_v4().to_string(),
            kind: "retention",
            requested_at: now,
            hashes: vec![(format!("raw.{table}"), String::new())],
        };
        record(lake, &request, "completed", &done, None).await?;
        removed += deleted.rows as u64;
    }
    if removed > 0 {
        super::refresh(lake, config, identity::Mode::Incremental).await?;
        identity::remove_old_versions(lake).await?;
    }
    Ok(removed)
}
