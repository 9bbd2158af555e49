//! The raw tables a lake has: the seven built in, and those users declared
//! ([`crate::schema::declared`]), each stored as `system/tables/<name>.json`
//! — written when a table is declared or widened, read by every process
//! that opens the lake ([`Lake::load_declared_tables`]), so a table created
//! over SQL by one process is known to the next `ingest` or `refresh`.

use object_store::path::Path;

use super::Lake;
use crate::error::{Error, Result};
use crate::schema::RawTable;
use crate::schema::declared::Declaration;

/// Folder of the stored declarations.
fn dir() -> Path {
    Path::from("system/tables")
}

fn file(name: &str) -> Path {
    dir().join(format!("{name}.json"))
}

impl Lake {
    /// Every raw table of this lake: the built-in ones, then the declared
    /// ones in the order they were declared.
    pub fn raw_tables(&self) -> Vec<RawTable> {
        let declared = self.declared.read().unwrap_or_else(|e| e.into_inner());
        RawTable::ALL
            .iter()
            .chain(declared.iter())
            .copied()
            .collect()
    }

    /// The table of this lake called `name`.
    pub fn raw_table(&self, name: &str) -> Option<RawTable> {
        self.raw_tables().into_iter().find(|t| t.name() == name)
    }

    /// Read the tables declared in this lake (call once after opening it).
    pub async fn load_declared_tables(&self) -> Result<Vec<RawTable>> {
        let mut found = Vec::new();
        for meta in self.list(&dir()).await? {
            let relative = self.relative(&meta.location);
            if relative.extension() != Some("json") {
                continue;
            }
            let Some(stored) = self.get_json::<Declaration>(&relative).await? else {
                continue;
            };
            // Checked again: the file is outside Panorama's control.
            let declaration = Declaration::new(&stored.name, stored.columns, stored.time)
                .map_err(|reason| Error::Config(format!("{}: {reason}", self.path(&relative))))?;
            found.push(self.adopt(&declaration));
        }
        Ok(found)
    }

    /// Declare `declaration` in this lake: a new table, or a wider
    /// version of a declared one (see [`Declaration::evolves_from`]);
    /// declaring the same again changes nothing. Returns the table and
    /// whether the lake changed.
    pub async fn declare_table(&self, declaration: &Declaration) -> Result<(RawTable, bool)> {
        let name = &declaration.name;
        let stored = self.get_json::<Declaration>(&file(name)).await?;
        if let Some(before) = &stored {
            if before == declaration {
                return Ok((self.adopt(declaration), false));
            }
            declaration.evolves_from(before).map_err(Error::Config)?;
        }
        self.put_json(&file(name), declaration).await?;
        Ok((self.adopt(declaration), true))
    }

    /// Make `declaration` this lake's table of that name.
    fn adopt(&self, declaration: &Declaration) -> RawTable {
        let table = RawTable::declare(declaration);
        let mut declared = self.declared.write().unwrap_or_else(|e| e.into_inner());
        match declared.iter_mut().find(|t| t.name() == declaration.name) {
            Some(slot) => *slot = table,
            None => declared.push(table),
        }
        table
    }
}
