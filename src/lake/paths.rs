//! Where things live inside the lake, built in one place: each raw table is
//! a Delta table in `raw/<table>/` (its data files named by delta-rs), its
//! rejected rows in `rejects/<table>/`, the records of loads in
//! `system/ingests/`.

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

/// Folder of rejected rows of a table.
pub fn rejects_dir(table: RawTable) -> Path {
    Path::from(format!("rejects/{table}"))
}

/// Folder of `system.ingests`.
pub fn ingests_dir() -> Path {
    Path::from("system/ingests")
}
