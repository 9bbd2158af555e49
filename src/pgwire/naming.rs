//! Result column names as PostgreSQL gives them, which BI tools show as
//! chart axes and pandas as DataFrame columns: `SELECT count(*)` is
//! `count`, `now()` is `now`, `1::float8` is `float8`, `x + 1` is
//! `?column?` — where DataFusion would say `count(*)`, `now()`,
//! `Int64(1)`, `x + Int64(1)`.
//!
//! The select list of a query is given PostgreSQL's name as an alias
//! before DataFusion plans it (PostgreSQL's `FigureColname`), catalog
//! queries included: psql's `\d` asks for `pg_catalog.format_type(…)`,
//! which PostgreSQL names `format_type`, and for `''`, which it names
//! `?column?`. Items that already have an alias or are plain columns keep
//! theirs. PostgreSQL lets two columns have one name, DataFusion does not:
//! a name that clashes with another item's gets a suffix that
//! [`described`] takes off the row description again, with
//! `datafusion-pg-catalog`'s `__alias_` prefix (`SELECT c.oid, c.*`). A text that does not parse is
//! passed on untouched, and so is a query whose top-level `FROM` reads only
//! catalogs that are always empty here (psql's row policies and extended
//! statistics): datafusion-postgres answers those with a stand-in query it
//! recognizes by their text.

use datafusion::sql::sqlparser::ast::{
    AccessExpr, DataType, Expr, Ident, Select, SelectItem, SetExpr, Spanned, Statement,
    TableFactor, Value,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Location;
use datafusion_postgres::pgwire::api::Type;
use datafusion_postgres::pgwire::api::results::FieldInfo;
use std::sync::Arc;

/// `sql` with PostgreSQL's column names as aliases, if that changes it.
///
/// The aliases are inserted into the original text (at the end of each
/// item, from the parser's source spans), never by printing the statement
/// again, which would not always read back the same in DataFusion; the new
/// text is used only if it parses to exactly the intended statement.
pub(super) fn rename(sql: &str) -> Option<String> {
    let original = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    let single = original.len() == 1;
    let mut intended = original.clone();
    let mut inserts: Vec<(usize, String)> = Vec::new();
    for statement in &mut intended {
        if let Statement::Query(query) = statement
            && let SetExpr::Select(select) = query.body.as_mut()
            && !reads_only_empty_catalogs(select)
        {
            // Where each item starts; an item ends where the next one
            // starts (less the comma), the last where FROM starts.
            let starts: Vec<usize> = select
                .projection
                .iter()
                .map(|item| offset(sql, item.span().start))
                .collect::<Option<_>>()?;
            let list_end = match select.from.first() {
                Some(from) => {
                    let at = offset(sql, from.relation.span().start)?;
                    sql[..at].to_lowercase().rfind("from")?
                }
                None if single => sql.trim_end().trim_end_matches(';').len(),
                None => return None,
            };
            for (i, alias) in name_items(&mut select.projection) {
                let end = match starts.get(i + 1) {
                    Some(&next) => sql[..next].rfind(',')?,
                    None => list_end,
                };
                let end = sql[..end].trim_end().len();
                inserts.push((end, alias));
            }
        }
    }
    if inserts.is_empty() {
        return None;
    }
    inserts.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
    let mut text = sql.to_string();
    for (at, alias) in inserts {
        text.insert_str(at, &format!(" AS \"{alias}\""));
    }
    let reread = Parser::parse_sql(&PostgreSqlDialect {}, &text).ok()?;
    (reread == intended).then_some(text)
}

/// Byte offset in `sql` of a parser location (1-based line and column,
/// columns counted in characters).
fn offset(sql: &str, at: Location) -> Option<usize> {
    if at.line == 0 || at.column == 0 {
        return None;
    }
    let line_start: usize = sql
        .split_inclusive('\n')
        .take(at.line as usize - 1)
        .map(str::len)
        .sum();
    let line = &sql[line_start..];
    let within = match line.char_indices().nth(at.column as usize - 1) {
        Some((i, _)) => i,
        None => line.len(),
    };
    Some(line_start + within)
}

/// Give the unnamed items their PostgreSQL name (in the AST); returns the
/// positions of the items named and their names.
fn name_items(items: &mut [SelectItem]) -> Vec<(usize, String)> {
    let names: Vec<Option<String>> = items.iter().map(item_name).collect();
    let mut added = Vec::new();
    for (i, item) in items.iter_mut().enumerate() {
        let SelectItem::UnnamedExpr(expr) = item else {
            continue;
        };
        if matches!(expr, Expr::Identifier(_) | Expr::CompoundIdentifier(_)) {
            continue;
        }
        let Some(name) = names[i].clone() else {
            continue;
        };
        // `ARRAY(SELECT …)` is rewritten by datafusion-postgres only when
        // it stands unnamed: leave it as it is.
        if name == "array" {
            continue;
        }
        // DataFusion needs unique names where PostgreSQL allows the same
        // one twice (`SELECT NULL, NULL`): a clashing name gets a suffix
        // that [`described`] takes off the row description.
        let clashes = names
            .iter()
            .enumerate()
            .any(|(j, other)| j != i && other.as_deref() == Some(name.as_str()));
        let alias = if clashes {
            format!("{name}{DUPLICATE}{i}")
        } else {
            name
        };
        added.push((i, alias.clone()));
        *item = SelectItem::ExprWithAlias {
            expr: expr.clone(),
            alias: Ident::with_quote('"', alias),
        };
    }
    added
}

/// Whether every relation the top-level `FROM` of `select` names is a
/// `pg_catalog` table that is always empty here.
pub(super) fn reads_only_empty_catalogs(select: &Select) -> bool {
    let mut relations = select
        .from
        .iter()
        .flat_map(|t| std::iter::once(&t.relation).chain(t.joins.iter().map(|j| &j.relation)))
        .peekable();
    relations.peek().is_some()
        && relations.all(|r| match r {
            TableFactor::Table { name, .. } => {
                name.0.last().and_then(|p| p.as_ident()).is_some_and(|i| {
                    super::rewrite::EMPTY_CATALOGS.contains(&i.value.to_lowercase().as_str())
                })
            }
            _ => false,
        })
}

/// The name of a select item, as [`figure`] gives it.
fn item_name(item: &SelectItem) -> Option<String> {
    match item {
        SelectItem::ExprWithAlias { alias, .. } => Some(alias.value.to_lowercase()),
        SelectItem::UnnamedExpr(expr) => Some(figure(expr)),
        _ => None,
    }
}

/// PostgreSQL's name for an unnamed select-list expression.
fn figure(expr: &Expr) -> String {
    figured(expr).0
}

/// The name and its strength, as PostgreSQL's `FigureColnameInternal`
/// rates them: 2 for a name taken from a column or function, 1 for a
/// fallback (a cast's type, `case`), 0 for none (`?column?`). A `CASE` is
/// named by its `ELSE` when that name is strong (psql's `\d` gets
/// `reloftype` from `CASE … ELSE c.reloftype::regtype::text END`).
fn figured(expr: &Expr) -> (String, u8) {
    let name = match expr {
        Expr::Cast {
            expr, data_type, ..
        } => {
            return match figured(expr) {
                (_, 0) => (type_name(data_type), 1),
                strong => strong,
            };
        }
        Expr::Nested(inner) | Expr::Collate { expr: inner, .. } => return figured(inner),
        Expr::Case { else_result, .. } => {
            return match else_result.as_deref().map(figured) {
                Some(strong @ (_, 2)) => strong,
                _ => ("case".into(), 1),
            };
        }
        Expr::Value(v) if matches!(v.value, Value::Boolean(_)) => return ("bool".into(), 1),
        Expr::TypedString(typed) => return (type_name(&typed.data_type), 1),
        other => figure_strong(other),
    };
    let strength = if name == "?column?" { 0 } else { 2 };
    (name, strength)
}

/// The names PostgreSQL takes from the expression itself.
fn figure_strong(expr: &Expr) -> String {
    match expr {
        Expr::Function(f) => f
            .name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .map(|i| match i.value.to_lowercase().as_str() {
                // SQL-standard spellings PostgreSQL names by their function.
                "user" => "current_user".to_string(),
                other => other.to_string(),
            })
            .unwrap_or_else(|| "?column?".into()),
        Expr::Identifier(i) => i.value.to_lowercase(),
        Expr::CompoundIdentifier(parts) => parts
            .last()
            .map(|i| i.value.to_lowercase())
            .unwrap_or_default(),
        // `(keys).x` is `x`; `(current_schemas(true))[1]` is named by its
        // array.
        Expr::CompoundFieldAccess { root, access_chain } => match access_chain.last() {
            Some(AccessExpr::Dot(Expr::Identifier(field))) => field.value.to_lowercase(),
            _ => figure(root),
        },
        // A scalar subquery is named by its one column.
        Expr::Subquery(query) => match query.body.as_ref() {
            SetExpr::Select(select) if select.projection.len() == 1 => {
                item_name(&select.projection[0]).unwrap_or_else(|| "?column?".into())
            }
            _ => "?column?".into(),
        },
        Expr::Exists { .. } => "exists".into(),
        Expr::Array(_) => "array".into(),
        Expr::Extract { .. } => "extract".into(),
        Expr::Substring { .. } => "substring".into(),
        Expr::Position { .. } => "position".into(),
        Expr::Overlay { .. } => "overlay".into(),
        Expr::Trim { trim_where, .. } => {
            use datafusion::sql::sqlparser::ast::TrimWhereField;
            match trim_where {
                Some(TrimWhereField::Leading) => "ltrim",
                Some(TrimWhereField::Trailing) => "rtrim",
                _ => "btrim",
            }
            .into()
        }
        Expr::Ceil { .. } => "ceil".into(),
        Expr::Floor { .. } => "floor".into(),
        Expr::AtTimeZone { .. } => "timezone".into(),
        Expr::Interval(_) => "interval".into(),
        _ => "?column?".into(),
    }
}

/// What [`rename`] appends to a name another result column already has;
/// [`described`] takes it off. A private-use character, which no client
/// writes in an identifier.
const DUPLICATE: char = '\u{E000}';

/// `datafusion-pg-catalog`'s alias for a column a `*` beside it repeats
/// (`SELECT c.oid, c.*` is `c.oid AS __alias_oid, c.*`).
const PG_CATALOG_ALIAS: &str = "__alias_";

/// A row description as PostgreSQL gives it: the names [`rename`] and
/// `datafusion-pg-catalog` made unique back to the name PostgreSQL repeats,
/// and a column of NULLs with no type (`SELECT NULL AS role`) `text`, as
/// PostgreSQL resolves an unknown-typed output column. The values are
/// unchanged: NULL encodes alike in every type.
pub(super) fn described(fields: &[FieldInfo]) -> Option<Vec<FieldInfo>> {
    let rename = |name: &str| -> Option<String> {
        if let Some((base, _)) = name.split_once(DUPLICATE) {
            return Some(base.to_string());
        }
        name.strip_prefix(PG_CATALOG_ALIAS)
            .filter(|base| !base.is_empty())
            .map(str::to_string)
    };
    let changes = fields
        .iter()
        .any(|f| rename(f.name()).is_some() || *f.datatype() == Type::UNKNOWN);
    if !changes {
        return None;
    }
    Some(
        fields
            .iter()
            .map(|f| {
                let name = rename(f.name()).unwrap_or_else(|| f.name().to_string());
                let datatype = match f.datatype() {
                    t if *t == Type::UNKNOWN => Type::TEXT,
                    t => t.clone(),
                };
                FieldInfo::new(name, f.table_id(), f.column_id(), datatype, f.format())
                    .with_format_options(Arc::clone(f.format_options()))
                    .with_type_size(f.type_size())
                    .with_type_modifier(f.type_modifier())
            })
            .collect(),
    )
}

/// The internal name PostgreSQL uses for a cast's type.
fn type_name(data_type: &DataType) -> String {
    let text = data_type.to_string().to_lowercase();
    let base = text.split('(').next().unwrap_or(&text).trim().to_string();
    let base = base
        .strip_prefix("pg_catalog.")
        .unwrap_or(&base)
        .to_string();
    match base.as_str() {
        "int" | "integer" | "int4" => "int4",
        "bigint" | "int8" => "int8",
        "smallint" | "int2" => "int2",
        "real" | "float4" => "float4",
        "double precision" | "float8" | "double" | "float" => "float8",
        "boolean" | "bool" => "bool",
        "decimal" | "numeric" => "numeric",
        "character varying" | "varchar" => "varchar",
        "timestamp with time zone" | "timestamptz" => "timestamptz",
        "timestamp" | "timestamp without time zone" => "timestamp",
        "character" | "char" => "bpchar",
        "text" => "text",
        other => return other.to_string(),
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unnamed_items_get_postgresql_names() {
        assert_eq!(
            rename("SELECT count(*), now(), 1::float8, x + 1, y, z AS zed FROM t").as_deref(),
            Some(
                "SELECT count(*) AS \"count\", now() AS \"now\", 1::float8 AS \"float8\", \
                 x + 1 AS \"?column?\", y, z AS zed FROM t"
            )
        );
        assert_eq!(
            rename("select\n  sum(é.a)\nfrom t é").as_deref(),
            Some("select\n  sum(é.a) AS \"sum\"\nfrom t é")
        );
        // Clashing names are made unique; plain columns need nothing.
        assert_eq!(
            rename("SELECT 1, 2").as_deref(),
            Some("SELECT 1 AS \"?column?\u{E000}0\", 2 AS \"?column?\u{E000}1\"")
        );
        assert_eq!(rename("SELECT a, b FROM t"), None);
        assert_eq!(
            rename("SELECT count(*)::int FROM t").as_deref(),
            Some("SELECT count(*)::int AS \"count\" FROM t")
        );
        assert_eq!(rename("not sql at all"), None);
    }

    #[test]
    fn a_case_is_named_by_a_strong_else() {
        assert_eq!(
            rename(
                "SELECT CASE WHEN c.reloftype = 0 THEN '' \
                 ELSE c.reloftype::pg_catalog.regtype::pg_catalog.text END, \
                 CASE WHEN x THEN 1 ELSE 2 END FROM pg_catalog.pg_class c"
            )
            .as_deref(),
            Some(
                "SELECT CASE WHEN c.reloftype = 0 THEN '' \
                 ELSE c.reloftype::pg_catalog.regtype::pg_catalog.text END AS \"reloftype\", \
                 CASE WHEN x THEN 1 ELSE 2 END AS \"case\" FROM pg_catalog.pg_class c"
            )
        );
    }

    #[test]
    fn row_descriptions_lose_the_suffixes() {
        use datafusion_postgres::pgwire::api::results::FieldFormat;
        let field =
            |name: &str, t: Type| FieldInfo::new(name.into(), None, None, t, FieldFormat::Text);
        let fields = [
            field("__alias_oid", Type::INT4),
            field("oid", Type::OID),
            field("?column?\u{E000}2", Type::UNKNOWN),
        ];
        let fixed = described(&fields).unwrap();
        let names: Vec<&str> = fixed.iter().map(|f| f.name()).collect();
        assert_eq!(names, ["oid", "oid", "?column?"]);
        assert_eq!(*fixed[2].datatype(), Type::TEXT);
        assert!(described(&[field("x", Type::TEXT)]).is_none());
    }

    #[test]
    fn catalog_queries_get_postgresql_names_too() {
        assert_eq!(
            rename(
                "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), '', \
                 (SELECT c.collname FROM pg_catalog.pg_collation c WHERE c.oid = a.attcollation), \
                 true, c.oid::pg_catalog.regclass FROM pg_catalog.pg_attribute a"
            )
            .as_deref(),
            Some(
                "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) AS \"format_type\", \
                 '' AS \"?column?\", \
                 (SELECT c.collname FROM pg_catalog.pg_collation c WHERE c.oid = a.attcollation) \
                 AS \"collname\", true AS \"bool\", c.oid::pg_catalog.regclass AS \"oid\" \
                 FROM pg_catalog.pg_attribute a"
            )
        );
        // Read only from always-empty catalogs: left to datafusion-postgres.
        assert_eq!(
            rename(
                "SELECT pol.polname, CASE pol.polcmd WHEN 'r' THEN 'SELECT' END FROM pg_catalog.pg_policy pol"
            ),
            None
        );
    }
}
