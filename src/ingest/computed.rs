//! Computed column mappings of a load: `--map order_key="order_id || '-' ||
//! line_id"` (or `[ingest.<table>] map`) fills a column with a SQL
//! expression over the file's fields, evaluated by DataFusion a chunk at a
//! time — concatenations, casts, `CASE`, `json_build_object(…)` to pack
//! fields into a JSON column, and Panorama's functions (`normalize_phone`,
//! …).
//!
//! A mapping whose value is a plain name (letters, digits, `_`, `-`, `.`,
//! spaces) renames a field, as it always did; anything else is an
//! expression. Field names are matched as written (no lower-casing), and
//! every field reads as text, as the file sent it: `CAST(points AS BIGINT)`
//! for arithmetic. The expression's result is converted to the column's
//! type like any field. A syntax error stops the load before it reads a
//! row, naming the expression; a row the expression fails on is rejected
//! with its line, the column and the reason (values quoted in it removed).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, RecordBatch, StringArray, new_null_array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::sqlparser::ast;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::read::Block;
use crate::error::{Error, Result};
use crate::identity::normalize::Country;

/// Words that start an expression although it is made of letters only.
const EXPRESSION_WORDS: [&str; 12] = [
    "CASE",
    "CAST",
    "NOT",
    "NULL",
    "TRUE",
    "FALSE",
    "EXTRACT",
    "TRIM",
    "SUBSTRING",
    "INTERVAL",
    "DATE",
    "TIMESTAMP",
];

/// Whether a mapping's value names a field (a rename) rather than being an
/// expression.
pub fn is_field_name(value: &str) -> bool {
    let value = value.trim();
    let first = value.split_whitespace().next().unwrap_or_default();
    !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ' '))
        && !EXPRESSION_WORDS.contains(&first.to_ascii_uppercase().as_str())
}

/// The prefix of the record keys computed values are stored under, which
/// no file field can have.
const KEY_PREFIX: char = '\u{0}';

/// Where a computed column's value is kept in a record.
pub fn key(column: &str) -> String {
    format!("{KEY_PREFIX}{column}")
}

/// Why a row is rejected: (column, reason).
pub type Failure = (String, String);

/// One computed column.
#[derive(Debug)]
struct Computed {
    column: String,
    text: String,
    expr: Arc<dyn PhysicalExpr>,
}

/// The computed mappings of a load, planned once against the fields they
/// read.
#[derive(Debug, Default)]
pub struct Expressions {
    computed: Vec<Computed>,
    /// The file fields the expressions read, in the order of `schema`.
    fields: Vec<String>,
    schema: Option<SchemaRef>,
}

impl Expressions {
    /// Plan the expressions among `mapping` (column → field or
    /// expression); `country` is `normalize_phone`'s default.
    pub fn plan(mapping: &BTreeMap<String, String>, country: Country) -> Result<Expressions> {
        let expressions: Vec<(&String, &String)> = mapping
            .iter()
            .filter(|(_, value)| !is_field_name(value))
            .collect();
        if expressions.is_empty() {
            return Ok(Expressions::default());
        }
        let mut fields = BTreeSet::new();
        for (column, text) in &expressions {
            fields.extend(referenced_fields(column, text)?);
        }
        let fields: Vec<String> = fields.into_iter().collect();
        let schema = Arc::new(Schema::new(
            fields
                .iter()
                .map(|f| Field::new(f, DataType::Utf8, true))
                .collect::<Vec<_>>(),
        ));
        let config = SessionConfig::new()
            .set_bool("datafusion.sql_parser.enable_ident_normalization", false)
            .set_str("datafusion.sql_parser.dialect", "postgresql");
        let ctx = SessionContext::new_with_config(config);
        crate::functions::register_all(&ctx, country);
        let df_schema = DFSchema::try_from(Arc::clone(&schema))
            .map_err(|e| Error::Config(format!("planning the mappings: {e}")))?;
        let mut computed = Vec::with_capacity(expressions.len());
        for (column, text) in expressions {
            let bad = |e: datafusion::error::DataFusionError| {
                Error::Config(format!(
                    "--map {column}=\"{text}\": {}",
                    crate::redact::values(&e.to_string())
                ))
            };
            let expr = ctx.parse_sql_expr(text, &df_schema).map_err(bad)?;
            let expr = ctx.create_physical_expr(expr, &df_schema).map_err(bad)?;
            computed.push(Computed {
                column: column.clone(),
                text: text.clone(),
                expr,
            });
        }
        Ok(Expressions {
            computed,
            fields,
            schema: Some(schema),
        })
    }

    /// Whether there is anything to compute.
    pub fn is_empty(&self) -> bool {
        self.computed.is_empty()
    }

    /// The file fields the expressions read (they are placed: not kept in
    /// `extra` as well).
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(String::as_str)
    }

    /// The computed columns.
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        self.computed.iter().map(|c| c.column.as_str())
    }

    /// Evaluate every expression over the records of `block`, adding each
    /// result as a text column named [`key`]`(column)`. Returns, per
    /// record, the first failure as (column, reason).
    pub fn apply(&self, block: &mut Block) -> Result<Vec<Option<Failure>>> {
        let rows = block.len();
        let mut failures = vec![None; rows];
        let Some(schema) = &self.schema else {
            return Ok(failures);
        };
        if rows == 0 {
            return Ok(failures);
        }
        let columns: Vec<ArrayRef> = self
            .fields
            .iter()
            .map(|f| match block.index_of(f) {
                Some(i) => Ok(Arc::new(block.text(i)?.clone()) as ArrayRef),
                None => Ok(new_null_array(&DataType::Utf8, rows)),
            })
            .collect::<Result<_>>()?;
        let batch = RecordBatch::try_new(Arc::clone(schema), columns)
            .map_err(|e| Error::arrow("preparing the computed mappings", e))?;
        for computed in &self.computed {
            let values = match evaluate(&computed.expr, &batch) {
                Ok(values) => values,
                // Find the rows it fails on, one by one.
                Err(_) => {
                    let mut values: Vec<Option<String>> = Vec::with_capacity(rows);
                    for (i, failure) in failures.iter_mut().enumerate() {
                        match evaluate(&computed.expr, &batch.slice(i, 1)) {
                            Ok(one) => values.push((!one.is_null(0)).then(|| one.value(0).into())),
                            Err(e) => {
                                values.push(None);
                                failure.get_or_insert_with(|| {
                                    (
                                        computed.column.clone(),
                                        crate::redact::values(&format!(
                                            "the mapping \"{}\" failed: {e}",
                                            computed.text
                                        )),
                                    )
                                });
                            }
                        }
                    }
                    StringArray::from(values)
                }
            };
            block.push_text(&key(&computed.column), values);
        }
        Ok(failures)
    }
}

/// One expression's values over `batch`, as text.
fn evaluate(
    expr: &Arc<dyn PhysicalExpr>,
    batch: &RecordBatch,
) -> datafusion::error::Result<StringArray> {
    let values = expr.evaluate(batch)?.into_array(batch.num_rows())?;
    let text = cast(&values, &DataType::Utf8)?;
    Ok(text.as_string::<i32>().clone())
}

/// The field names an expression reads, as written.
fn referenced_fields(column: &str, text: &str) -> Result<BTreeSet<String>> {
    let expr = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(text)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| {
            Error::Config(format!(
                "--map {column}=\"{text}\" is not an expression: {e}"
            ))
        })?;
    let mut fields = BTreeSet::new();
    let _ = ast::visit_expressions(&expr, |e| {
        match e {
            ast::Expr::Identifier(ident) => {
                fields.insert(ident.value.clone());
            }
            ast::Expr::CompoundIdentifier(parts) => {
                if let Some(first) = parts.first() {
                    fields.insert(first.value.clone());
                }
            }
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_rename_and_everything_else_computes() {
        assert!(is_field_name("Email_Address"));
        assert!(is_field_name("e-mail"));
        assert!(is_field_name("Email Address"));
        assert!(!is_field_name("order_id || '-' || line_id"));
        assert!(!is_field_name("CAST(points AS BIGINT)"));
        assert!(!is_field_name("CASE WHEN tier = 'gold' THEN 1 END"));
        assert!(!is_field_name("case when x then y end"));
    }

    #[test]
    fn expressions_concatenate_cast_branch_and_pack_json() {
        let mapping: BTreeMap<String, String> = [
            ("email", "Email"),
            ("order_id", "OrderId || '-' || line"),
            ("item_count", "CAST(qty AS BIGINT) * 2"),
            ("status", "CASE WHEN paid = 'y' THEN 'paid' ELSE 'open' END"),
            (
                "extra",
                "json_build_object('tier', tier, 'points', CAST(points AS BIGINT))",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let plan = Expressions::plan(&mapping, Country::FR).unwrap();
        assert_eq!(
            plan.columns().collect::<Vec<_>>(),
            ["extra", "item_count", "order_id", "status"]
        );
        assert_eq!(
            plan.fields().collect::<Vec<_>>(),
            ["OrderId", "line", "paid", "points", "qty", "tier"]
        );
        let mut block = Block::of_text(&[
            ("OrderId", &[Some("A1"), Some("A2")]),
            ("line", &[Some("3"), Some("1")]),
            ("qty", &[Some("2"), Some("two")]),
            ("paid", &[Some("y"), None]),
            ("tier", &[Some("gold"), None]),
            ("points", &[Some("120"), None]),
        ]);
        let failures = plan.apply(&mut block).unwrap();
        let value = |column: &str, row: usize| {
            let text = block.text(block.index_of(&key(column)).unwrap()).unwrap();
            text.is_valid(row).then(|| text.value(row).to_string())
        };
        assert_eq!(value("order_id", 0).as_deref(), Some("A1-3"));
        assert_eq!(value("item_count", 0).as_deref(), Some("4"));
        assert_eq!(value("status", 0).as_deref(), Some("paid"));
        assert_eq!(
            value("extra", 0).as_deref(),
            Some(r#"{"points":120,"tier":"gold"}"#)
        );
        assert!(failures[0].is_none());
        assert_eq!(value("status", 1).as_deref(), Some("open"));
        let (column, reason) = failures[1].clone().expect("qty 'two' is no number");
        assert_eq!(column, "item_count");
        assert!(reason.contains("CAST(qty AS BIGINT) * 2"), "{reason}");
        assert!(!reason.contains("two"), "the value stays out: {reason}");
    }

    #[test]
    fn a_syntax_error_names_the_expression() {
        let mapping: BTreeMap<String, String> =
            [("order_id".to_string(), "a || ".to_string())].into();
        let err = Expressions::plan(&mapping, Country::FR)
            .unwrap_err()
            .to_string();
        assert!(err.contains("order_id") && err.contains("a || "), "{err}");
    }
}
