//! Where things live inside the lake, built in one place: each raw table is
//! a Delta table in `raw/<table>/` (its data files in `date=YYYY-MM-DD/`
//! folders, named by delta-rs).

use object_store::path::Path;

use crate::schema::RawTable;

/// Root folder of all landed (raw) data.
pub fn raw_root() -> Path {
    Path::from("raw")
}

/// Folder of one raw table: `raw/<table>`.
pub fn raw_table_dir(table: RawTable) -> Path {
    raw_root().join(table.name())
}
