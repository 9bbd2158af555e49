//! Where things live inside the lake, built in one place so the layout is
//! pinned by tests: `raw/<table>/date=YYYY-MM-DD/part-<uuid>.parquet`.

use chrono::NaiveDate;
use object_store::path::Path;
use uuid::Uuid;

use crate::schema::{PARTITION_COLUMN, RawTable};

/// Root folder of all landed (raw) data.
pub fn raw_root() -> Path {
    Path::from("raw")
}

/// Folder of one raw table: `raw/<table>`.
pub fn raw_table_dir(table: RawTable) -> Path {
    raw_root().join(table.name())
}

/// A new, unique data file of one raw table for one day.
pub fn raw_file(table: RawTable, date: NaiveDate, id: Uuid) -> Path {
    raw_table_dir(table)
        .join(format!("{PARTITION_COLUMN}={}", date.format("%Y-%m-%d")))
        .join(format!("part-{}.parquet", id.as_hyphenated()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_files_follow_the_hive_layout() {
        let id = Uuid::from_u128(0x1234);
        let date = NaiveDate::from_ymd_opt(2026, 3, 7).unwrap();
        assert_eq!(
            raw_file(RawTable::SurveyResponses, date, id).as_ref(),
            "raw/survey_responses/date=2026-03-07/part-00000000-0000-0000-0000-000000001234.parquet"
        );
    }
}
