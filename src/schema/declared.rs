//! Raw tables a user declares — a loyalty programme, store visits, support
//! tickets — next to the seven built-in ones: in `panorama.toml`
//! (`[tables.<name>]`) or with `CREATE TABLE raw.<name> (…)` over SQL.
//!
//! A [`Declaration`] is the table's columns (PostgreSQL type names, a
//! `NOT NULL` and a `personal` flag each), its time column (the day of each
//! row's `date`; without one, an implicit `loaded_at` filled at landing)
//! and, like every raw table, a trailing `extra` JSON column. Declarations
//! are stored in the lake (`system/tables/<name>.json`, see
//! [`crate::lake::tables`]) so every process that opens the lake knows the
//! table; its rows are a Delta table in `raw/<name>/` like the others.
//!
//! [`RawTable`](super::RawTable) stays a small `Copy` handle: each distinct
//! declaration is interned once per process in a registry that only grows
//! (a declaration is a few hundred bytes, and a process sees a handful).

use std::sync::{Arc, RwLock};

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use super::{EXTRA_COLUMN, money_type, timestamp_type};

/// The time column a declared table without one gets: when the row landed.
pub const LOADED_AT: &str = "loaded_at";

/// Field metadata key marking a column as personal data (masked for
/// analysts whatever its name; see [`crate::catalog::masking`]).
pub const PERSONAL_METADATA: &str = "panorama.personal";

/// One column of a declared table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    pub name: String,
    /// The canonical type name (`text`, `int8`, `float8`, `numeric(12,2)`,
    /// `bool`, `date`, `timestamptz`).
    #[serde(rename = "type")]
    pub sql_type: String,
    #[serde(default)]
    pub not_null: bool,
    #[serde(default)]
    pub personal: bool,
}

/// A declared raw table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Declaration {
    pub name: String,
    pub columns: Vec<Column>,
    /// The column holding each row's business time; `None`: `loaded_at`.
    #[serde(default)]
    pub time: Option<String>,
}

/// `[tables.<name>]` in `panorama.toml`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// `"name type [not null] [personal]"`, in order.
    pub columns: Vec<String>,
    /// The time column (a `timestamptz`); without it, `loaded_at`.
    #[serde(default)]
    pub time: Option<String>,
}

/// The Arrow type of a PostgreSQL type name, and its canonical name.
pub fn parse_type(sql_type: &str) -> Option<(DataType, &'static str)> {
    let t: String = sql_type
        .to_ascii_lowercase()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let base = t.split('(').next().unwrap_or_default().trim();
    Some(match base {
        "text" | "varchar" | "character varying" | "char" | "character" | "string" | "json"
        | "jsonb" | "uuid" => (DataType::Utf8, "text"),
        "int" | "integer" | "int2" | "int4" | "int8" | "bigint" | "smallint" => {
            (DataType::Int64, "int8")
        }
        "double" | "double precision" | "float" | "float4" | "float8" | "real" => {
            (DataType::Float64, "float8")
        }
        "numeric" | "decimal" | "money" if t == base || t.replace(' ', "").ends_with("(12,2)") => {
            (money_type(), "numeric(12,2)")
        }
        "bool" | "boolean" => (DataType::Boolean, "bool"),
        "date" => (DataType::Date32, "date"),
        "timestamptz" | "timestamp" | "timestamp with time zone" => {
            (timestamp_type(), "timestamptz")
        }
        _ => return None,
    })
}

/// What a declared column may be called.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 63
}

impl Column {
    /// Parse `"name type [not null] [personal]"`.
    pub fn parse(spec: &str) -> Result<Column, String> {
        let spec = spec.trim();
        let (name, rest) = spec
            .split_once(char::is_whitespace)
            .ok_or_else(|| format!("column \"{spec}\": expected \"name type\""))?;
        let mut rest = rest.trim().to_ascii_lowercase();
        let (mut not_null, mut personal) = (false, false);
        loop {
            if let Some(r) = rest.strip_suffix("not null") {
                not_null = true;
                rest = r.trim_end().to_string();
            } else if let Some(r) = rest.strip_suffix("personal") {
                personal = true;
                rest = r.trim_end().to_string();
            } else {
                break;
            }
        }
        Column::new(name, &rest, not_null, personal)
    }

    /// A column of type `sql_type` (any spelling [`parse_type`] knows).
    pub fn new(
        name: &str,
        sql_type: &str,
        not_null: bool,
        personal: bool,
    ) -> Result<Column, String> {
        let (_, canonical) = parse_type(sql_type).ok_or_else(|| {
            format!(
                "column {name}: unknown type \"{sql_type}\" (use text, int8, float8, \
                 numeric(12,2), bool, date or timestamptz)"
            )
        })?;
        Ok(Column {
            name: name.to_string(),
            sql_type: canonical.to_string(),
            not_null,
            personal,
        })
    }

    fn field(&self) -> Field {
        let (data_type, _) = parse_type(&self.sql_type).unwrap_or((DataType::Utf8, "text"));
        let field = Field::new(&self.name, data_type, !self.not_null);
        if self.personal {
            field.with_metadata([(PERSONAL_METADATA.to_string(), "true".to_string())].into())
        } else {
            field
        }
    }
}

impl Declaration {
    /// A declaration from `[tables.<name>]`.
    pub fn from_config(name: &str, config: &TableConfig) -> Result<Declaration, String> {
        let columns = config
            .columns
            .iter()
            .map(|c| Column::parse(c))
            .collect::<Result<Vec<_>, _>>()?;
        Declaration::new(name, columns, config.time.clone())
    }

    /// Check and build a declaration: a new table name, unique column
    /// names, known types, a `timestamptz` time column (made NOT NULL:
    /// every row needs a day).
    pub fn new(
        name: &str,
        mut columns: Vec<Column>,
        time: Option<String>,
    ) -> Result<Declaration, String> {
        if !valid_name(name) {
            return Err(format!(
                "raw.{name}: a table name is lower-case letters, digits and _"
            ));
        }
        if super::RawTable::ALL.iter().any(|t| t.name() == name) {
            return Err(format!("raw.{name} is a built-in table"));
        }
        if columns.is_empty() {
            return Err(format!("raw.{name} has no columns"));
        }
        let reserved = [super::DAY_COLUMN, EXTRA_COLUMN];
        for (i, c) in columns.iter().enumerate() {
            if !valid_name(&c.name) {
                return Err(format!(
                    "raw.{name}.{}: a column name is lower-case letters, digits and _",
                    c.name
                ));
            }
            if reserved.contains(&c.name.as_str()) || (time.is_none() && c.name == LOADED_AT) {
                return Err(format!(
                    "raw.{name}.{}: the name is reserved (every raw table has it)",
                    c.name
                ));
            }
            if columns[..i].iter().any(|o| o.name == c.name) {
                return Err(format!("raw.{name}.{} is declared twice", c.name));
            }
        }
        if let Some(time) = &time {
            let column = columns
                .iter_mut()
                .find(|c| &c.name == time)
                .ok_or_else(|| format!("raw.{name}: the time column {time} is not a column"))?;
            if column.sql_type != "timestamptz" {
                return Err(format!(
                    "raw.{name}: the time column {time} must be a timestamptz"
                ));
            }
            column.not_null = true;
        }
        Ok(Declaration {
            name: name.to_string(),
            columns,
            time,
        })
    }

    /// The column holding each row's business time.
    pub fn time_column(&self) -> &str {
        self.time.as_deref().unwrap_or(LOADED_AT)
    }

    /// The Arrow schema of the table's files (without `date`).
    pub fn file_schema(&self) -> SchemaRef {
        let mut fields: Vec<Field> = self.columns.iter().map(Column::field).collect();
        if self.time.is_none() {
            fields.push(Field::new(LOADED_AT, timestamp_type(), false));
        }
        fields.push(Field::new(EXTRA_COLUMN, DataType::Utf8, true));
        Arc::new(Schema::new(fields))
    }

    /// Whether the table may become `self` having been `before`: the same
    /// time column and every old column kept with its type; new columns
    /// nullable (older rows read them as NULL).
    pub fn evolves_from(&self, before: &Declaration) -> Result<(), String> {
        let name = &self.name;
        if self.time != before.time {
            return Err(format!(
                "raw.{name}: its time column cannot change (it is {})",
                before.time_column()
            ));
        }
        for old in &before.columns {
            match self.columns.iter().find(|c| c.name == old.name) {
                None => {
                    return Err(format!(
                        "raw.{name}.{}: a column cannot be removed (it holds rows)",
                        old.name
                    ));
                }
                Some(new) if new.sql_type != old.sql_type => {
                    return Err(format!(
                        "raw.{name}.{}: its type cannot change from {} to {}",
                        old.name, old.sql_type, new.sql_type
                    ));
                }
                Some(_) => {}
            }
        }
        if let Some(new) = self
            .columns
            .iter()
            .find(|c| c.not_null && !before.columns.iter().any(|o| o.name == c.name))
        {
            return Err(format!(
                "raw.{name}.{}: a column added to a table with rows must allow NULL",
                new.name
            ));
        }
        Ok(())
    }
}

/// Every declaration this process has seen, in the order first seen.
static REGISTRY: RwLock<Vec<&'static Declaration>> = RwLock::new(Vec::new());

/// The registry index of `declaration`, interning it on first sight.
pub(super) fn intern(declaration: &Declaration) -> usize {
    if let Some(i) = registry().iter().position(|d| *d == declaration) {
        return i;
    }
    let mut registry = REGISTRY.write().unwrap_or_else(|e| e.into_inner());
    // Another thread may have interned it between the two locks.
    if let Some(i) = registry.iter().position(|d| *d == declaration) {
        return i;
    }
    registry.push(Box::leak(Box::new(declaration.clone())));
    registry.len() - 1
}

/// The declaration at `index`.
pub(super) fn get(index: usize) -> Option<&'static Declaration> {
    registry().get(index).copied()
}

/// The index of the latest declaration called `name`.
pub(super) fn latest(name: &str) -> Option<usize> {
    registry().iter().rposition(|d| d.name == name)
}

/// The registry, read (no copy: `RawTable::name` of a declared table
/// comes through here).
fn registry() -> std::sync::RwLockReadGuard<'static, Vec<&'static Declaration>> {
    REGISTRY.read().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_parse_with_their_flags_and_types() {
        let c = Column::parse("full_name  Character Varying(80) NOT NULL personal").unwrap();
        assert_eq!(
            (c.name.as_str(), c.sql_type.as_str(), c.not_null, c.personal),
            ("full_name", "text", true, true)
        );
        assert_eq!(Column::parse("points bigint").unwrap().sql_type, "int8");
        assert_eq!(
            Column::parse("spent numeric").unwrap().sql_type,
            "numeric(12,2)"
        );
        assert!(Column::parse("spent numeric(10,4)").is_err());
        assert!(Column::parse("points").is_err());
        let err = Column::parse("x blob").unwrap_err();
        assert!(err.contains("unknown type \"blob\""), "{err}");
    }

    #[test]
    fn declarations_are_checked_and_evolve_only_by_adding_nullable_columns() {
        let cols = |specs: &[&str]| specs.iter().map(|s| Column::parse(s).unwrap()).collect();
        let visits = Declaration::new(
            "store_visits",
            cols(&[
                "visit_id text not null",
                "card text",
                "visited_at timestamptz",
            ]),
            Some("visited_at".into()),
        )
        .unwrap();
        let schema = visits.file_schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["visit_id", "card", "visited_at", "extra"]);
        assert!(
            !schema.field(2).is_nullable(),
            "the time column is required"
        );
        let untimed = Declaration::new("tickets", cols(&["ticket_id text"]), None).unwrap();
        assert_eq!(untimed.time_column(), LOADED_AT);
        assert_eq!(untimed.file_schema().field(1).name(), LOADED_AT);

        for (name, columns, time, why) in [
            ("orders", vec!["a text"], None, "built-in"),
            ("Visits", vec!["a text"], None, "lower-case"),
            ("v", vec!["a text", "a int8"], None, "twice"),
            ("v", vec!["date text"], None, "reserved"),
            ("v", vec!["a text"], Some("b"), "not a column"),
            ("v", vec!["a text"], Some("a"), "must be a timestamptz"),
        ] {
            let err = Declaration::new(name, cols(&columns), time.map(String::from)).unwrap_err();
            assert!(err.contains(why), "{err}");
        }

        let wider = Declaration::new(
            "store_visits",
            cols(&[
                "visit_id text not null",
                "card text",
                "visited_at timestamptz",
                "store text",
            ]),
            Some("visited_at".into()),
        )
        .unwrap();
        wider.evolves_from(&visits).unwrap();
        assert!(visits.evolves_from(&wider).unwrap_err().contains("removed"));
        let retyped = Declaration::new(
            "store_visits",
            cols(&["visit_id int8", "card text", "visited_at timestamptz"]),
            Some("visited_at".into()),
        )
        .unwrap();
        assert!(retyped.evolves_from(&visits).unwrap_err().contains("type"));
    }
}
