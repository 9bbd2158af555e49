//! Statement rewrites that make SQL PostgreSQL accepts plan in DataFusion
//! with PostgreSQL's meaning, applied to the text of a statement before
//! `datafusion-postgres` parses it (both protocols):
//!
//! - `x LIKE p ESCAPE '/'`: DataFusion only takes the backslash as escape
//!   character, so the pattern is translated by `pg_like_escape(p, '/')`
//!   (SQLAlchemy's `get_schema_names` escapes with `/`);
//! - a parameter the client declared a type for in Parse (psycopg sends a
//!   Python float as `float8`, a date as `date`) is `CAST($n AS type)`, so
//!   it keeps that type, as in PostgreSQL, instead of taking the type
//!   DataFusion infers from its context (`numeric_column > $1` would
//!   coerce 100.5 to the column's `numeric(12,2)` and fail); parameters of
//!   LIMIT and OFFSET are left alone;
//! - in a query on `pg_catalog`, a correlated scalar subquery that is not
//!   an aggregate takes `max()` of its one column (DataFusion refuses the
//!   plain form; PostgreSQL requires at most one row, so `max` of it is the
//!   row). Npgsql's type loading and pgjdbc's `getTypeInfo` need it.
//!
//! - in the same queries, a scalar subquery reading only catalogs that are
//!   always empty here (`pg_attrdef`: no defaults, `pg_sequence`, …) is
//!   NULL, which is what it returns; DataFusion cannot plan some of them
//!   (SQLAlchemy's `get_columns` asks for defaults and identity options
//!   in correlated subqueries under CASE).
//!
//! - literals pgjdbc writes in its simple-query mode: a date with a zone
//!   (`CAST('2024-02-29 +00' AS DATE)`, the zone dropped as PostgreSQL
//!   does) and an untyped array literal (`= ANY('{"a","b"}')`, read as
//!   `ARRAY['a', 'b']`, as PostgreSQL infers the array from the left
//!   side).
//!
//! The statement is printed again only when a rule applied. After
//! planning, [`untyped_parameters_as_text`] gives a parameter that neither
//! the client nor its context typed PostgreSQL's type for it, `text`.

use std::collections::HashSet;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, LimitClause, ObjectName, Query, SelectItem, SetExpr, Value, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Expr as DfExpr, LogicalPlan, expr::Placeholder};
use datafusion_postgres::pgwire::api::Type;

/// The statement `sql` rewritten, if any rule applies; `types` are the
/// parameter types the client declared (`None` or `unknown`: undeclared).
pub fn rewrite(sql: &str, types: &[Option<Type>]) -> Option<String> {
    // Most statements meet no rule: skip the parse unless a word of one is
    // there (or a declared parameter type).
    const WORDS: &[&str] = &["escape", "pg_", "any", "all", "date", "generate_subscripts"];
    let declared = types.iter().flatten().any(|t| sql_type(t).is_some());
    let lower = sql.to_ascii_lowercase();
    if !declared && !WORDS.iter().any(|w| lower.contains(w)) {
        return None;
    }
    let dialect = PostgreSqlDialect {};
    let mut statements = Parser::parse_sql(&dialect, sql).ok()?;
    let [statement] = statements.as_mut_slice() else {
        return None;
    };
    let mut rules = Rules {
        types,
        on_catalog: false,
        limit_params: HashSet::new(),
        changed: false,
    };
    // A first pass finds catalog relations and LIMIT parameters.
    let _ = statement.visit(&mut Survey(&mut rules));
    let _ = statement.visit(&mut rules);
    rules.changed.then(|| statement.to_string())
}

struct Rules<'a> {
    types: &'a [Option<Type>],
    on_catalog: bool,
    limit_params: HashSet<String>,
    changed: bool,
}

struct Survey<'r, 'a>(&'r mut Rules<'a>);

impl VisitorMut for Survey<'_, '_> {
    type Break = ();

    fn pre_visit_relation(&mut self, relation: &mut ObjectName) -> ControlFlow<()> {
        let name = relation.to_string().to_lowercase();
        let last = name.rsplit('.').next().unwrap_or_default();
        if name.starts_with("pg_catalog.") || last.starts_with("pg_") {
            self.0.on_catalog = true;
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        let mut exprs = Vec::new();
        match &query.limit_clause {
            Some(LimitClause::LimitOffset { limit, offset, .. }) => {
                exprs.extend(limit.iter());
                exprs.extend(offset.iter().map(|o| &o.value));
            }
            Some(LimitClause::OffsetCommaLimit { offset, limit }) => {
                exprs.extend([offset, limit]);
            }
            None => {}
        }
        for expr in exprs {
            if let Expr::Value(v) = expr
                && let Value::Placeholder(p) = &v.value
            {
                self.0.limit_params.insert(p.clone());
            }
        }
        ControlFlow::Continue(())
    }
}

/// An expression parsed from `text` (built from printed sub-expressions).
fn expr(text: &str) -> Option<Expr> {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(text)
        .ok()?
        .parse_expr()
        .ok()
}

/// The SQL type a declared parameter type is cast to, for the types whose
/// meaning DataFusion would otherwise change.
fn sql_type(ty: &Type) -> Option<&'static str> {
    Some(match *ty {
        Type::BOOL => "BOOLEAN",
        Type::INT2 => "SMALLINT",
        Type::INT4 => "INTEGER",
        Type::INT8 => "BIGINT",
        Type::FLOAT4 => "REAL",
        Type::FLOAT8 => "DOUBLE PRECISION",
        Type::TEXT | Type::VARCHAR | Type::BPCHAR => "TEXT",
        Type::DATE => "DATE",
        Type::TIMESTAMP => "TIMESTAMP",
        Type::TIMESTAMPTZ => "TIMESTAMP WITH TIME ZONE",
        Type::TEXT_ARRAY | Type::VARCHAR_ARRAY => "TEXT[]",
        Type::INT8_ARRAY => "BIGINT[]",
        Type::INT4_ARRAY => "INTEGER[]",
        _ => return None,
    })
}

/// The text of a string literal, inside any parentheses.
fn string_literal(e: &Expr) -> Option<&str> {
    match e {
        Expr::Nested(inner) => string_literal(inner),
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::EscapedStringLiteral(s) => Some(s),
            _ => None,
        },
        _ => None,
    }
}

/// `2024-02-29` of `2024-02-29 +00` / `2024-02-29 -05:30`.
fn date_without_zone(text: &str) -> Option<&str> {
    let (date, zone) = text.split_once(' ')?;
    let zone = zone.strip_prefix(['+', '-'])?;
    let valid_date = date.len() == 10 && date.chars().filter(|c| *c == '-').count() == 2;
    let valid_zone = !zone.is_empty() && zone.chars().all(|c| c.is_ascii_digit() || c == ':');
    (valid_date && valid_zone).then_some(date)
}

/// `ARRAY['a', 'b', NULL]` of the one-dimensional array literal
/// `{"a",b,NULL}` (elements that are all integers stay numbers).
fn array_literal(text: &str) -> Option<Expr> {
    let body = text.trim().strip_prefix('{')?.strip_suffix('}')?;
    let mut elements: Vec<Option<String>> = Vec::new();
    let mut chars = body.chars().peekable();
    while chars.peek().is_some() {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        let mut element = String::new();
        let quoted = chars.peek() == Some(&'"');
        if quoted {
            chars.next();
            loop {
                match chars.next()? {
                    '\\' => element.push(chars.next()?),
                    '"' => break,
                    c => element.push(c),
                }
            }
            while chars.peek().is_some_and(|c| *c != ',') {
                chars.next();
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != ',') {
                if c == '{' || c == '"' {
                    return None; // nested or malformed: leave it alone
                }
                element.push(c);
            }
            element = element.trim().to_string();
        }
        chars.next(); // the comma
        let is_null = !quoted && element.eq_ignore_ascii_case("null");
        elements.push((!is_null).then_some(element));
    }
    let numbers = elements.iter().flatten().all(|e| e.parse::<i64>().is_ok());
    let items: Vec<String> = elements
        .iter()
        .map(|e| match e {
            None => "NULL".to_string(),
            Some(e) if numbers => e.clone(),
            Some(e) => format!("'{}'", e.replace('\'', "''")),
        })
        .collect();
    expr(&format!("ARRAY[{}]", items.join(", ")))
}

/// `pg_catalog` tables that have no rows in Panorama (`tests/session.rs`
/// checks this list against the server).
pub const EMPTY_CATALOGS: &[&str] = &[
    "pg_attrdef",
    "pg_sequence",
    "pg_inherits",
    "pg_trigger",
    "pg_statistic_ext",
    "pg_partitioned_table",
    "pg_foreign_table",
    "pg_policy",
    "pg_enum",
];

/// Whether every relation `query` reads is an always-empty catalog.
fn reads_only_empty_catalogs(query: &Query) -> bool {
    let mut any = false;
    let mut all_empty = true;
    let _ = datafusion::sql::sqlparser::ast::visit_relations(query, |relation| {
        any = true;
        let name = relation.to_string().to_lowercase();
        let last = name
            .rsplit('.')
            .next()
            .unwrap_or_default()
            .trim_matches('"');
        all_empty &= EMPTY_CATALOGS.contains(&last);
        ControlFlow::<()>::Continue(())
    });
    any && all_empty
}

/// NULL, still mentioning the placeholders of `query`: parameters are
/// numbered, and one that vanished from the plan would shift the others.
fn null_keeping_placeholders(query: &Query) -> Option<Expr> {
    let mut placeholders = Vec::new();
    let _ = datafusion::sql::sqlparser::ast::visit_expressions(query, |e| {
        if let Expr::Value(v) = e
            && let Value::Placeholder(p) = &v.value
        {
            placeholders.push(format!("{p} IS NULL"));
        }
        ControlFlow::<()>::Continue(())
    });
    if placeholders.is_empty() {
        return expr("NULL");
    }
    expr(&format!(
        "CASE WHEN FALSE AND {} THEN NULL END",
        placeholders.join(" AND ")
    ))
}

/// `plan` with every parameter that has no type (none declared, none
/// inferred: `SELECT $1`, `$1 IS NULL`) typed `text`, as PostgreSQL types
/// an unknown parameter; otherwise its value could not be decoded.
pub fn untyped_parameters_as_text(
    plan: LogicalPlan,
    declared: &[Option<Type>],
) -> datafusion::common::Result<LogicalPlan> {
    let undeclared = |id: &str| {
        id.strip_prefix('$')
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| declared.get(n.checked_sub(1)?))
            .is_none_or(|t| t.as_ref().is_none_or(|t| *t == Type::UNKNOWN))
    };
    // A function's argument or a cast's operand keeps no type here: the
    // signature or the cast gives it one (`= ANY($1)` is `array_has(col,
    // $1)`, a list; `CAST($1 AS DATE)` is decoded as a date).
    let mut arguments = HashSet::new();
    plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|e| {
                let typed_by_parent: Vec<&DfExpr> = match e {
                    DfExpr::ScalarFunction(f) => f.args.iter().collect(),
                    DfExpr::Cast(c) => vec![c.expr.as_ref()],
                    DfExpr::TryCast(c) => vec![c.expr.as_ref()],
                    _ => vec![],
                };
                for arg in typed_by_parent {
                    if let DfExpr::Placeholder(p) = arg {
                        arguments.insert(p.id.clone());
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    })?;
    let text: FieldRef = Arc::new(Field::new("", DataType::Utf8, true));
    plan.transform_up_with_subqueries(|node| {
        let node = node.map_expressions(|e| {
            e.transform_up(|e| match e {
                DfExpr::Placeholder(Placeholder { id, field: None })
                    if undeclared(&id) && !arguments.contains(&id) =>
                {
                    Ok(Transformed::yes(DfExpr::Placeholder(
                        Placeholder::new_with_field(id, Some(Arc::clone(&text))),
                    )))
                }
                e => Ok(Transformed::no(e)),
            })
        })?;
        if node.transformed {
            node.map_data(|p| p.recompute_schema())
        } else {
            Ok(node)
        }
    })
    .map(|t| t.data)
}

const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "array_agg",
    "string_agg",
    "bool_and",
    "bool_or",
    "every",
];

impl Rules<'_> {
    fn placeholder(&self, name: &str) -> Option<Expr> {
        if self.limit_params.contains(name) {
            return None;
        }
        let index: usize = name.strip_prefix('$')?.parse().ok()?;
        let ty = self.types.get(index.checked_sub(1)?)?.as_ref()?;
        if *ty == Type::TIMESTAMPTZ {
            // DataFusion's TIMESTAMP WITH TIME ZONE follows the session's
            // time zone setting, unset here: name the zone.
            return expr(&format!(
                "arrow_cast({name}, 'Timestamp(Microsecond, Some(\"UTC\"))')"
            ));
        }
        expr(&format!("CAST({name} AS {})", sql_type(ty)?))
    }

    /// `(SELECT max(e) FROM …)` for a non-aggregate `(SELECT e FROM …)`.
    fn aggregate(&self, query: &Query) -> Option<Expr> {
        let SetExpr::Select(select) = query.body.as_ref() else {
            return None;
        };
        let [SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. }] =
            select.projection.as_slice()
        else {
            return None;
        };
        if let Expr::Function(f) = e
            && AGGREGATES.contains(&f.name.to_string().to_lowercase().as_str())
        {
            return None;
        }
        let is_grouped = !matches!(
            &select.group_by,
            datafusion::sql::sqlparser::ast::GroupByExpr::Expressions(g, _) if g.is_empty()
        );
        if is_grouped || select.distinct.is_some() || query.with.is_some() {
            return None;
        }
        let mut query = query.clone();
        query.limit_clause = None;
        query.order_by = None;
        if let SetExpr::Select(select) = query.body.as_mut() {
            select.projection = vec![SelectItem::UnnamedExpr(expr(&format!("max({e})"))?)];
        }
        Some(Expr::Subquery(Box::new(query)))
    }
}

impl VisitorMut for Rules<'_> {
    type Break = ();

    fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
        let replacement = match e {
            Expr::Like {
                pattern,
                escape_char: escape @ Some(_),
                ..
            }
            | Expr::ILike {
                pattern,
                escape_char: escape @ Some(_),
                ..
            } => {
                let c = escape.as_ref().map(|v| v.to_string()).unwrap_or_default();
                if c == "'\\'" {
                    return ControlFlow::Continue(());
                }
                if let Some(p) = expr(&format!("pg_like_escape({pattern}, {c})")) {
                    **pattern = p;
                    *escape = None;
                    self.changed = true;
                }
                return ControlFlow::Continue(());
            }
            Expr::Cast {
                expr: inner,
                data_type: datafusion::sql::sqlparser::ast::DataType::Date,
                ..
            } => {
                let date = string_literal(inner)
                    .and_then(date_without_zone)
                    .and_then(|date| expr(&format!("'{date}'")));
                if let Some(date) = date {
                    **inner = date;
                    self.changed = true;
                }
                None
            }
            Expr::AnyOp { right, .. } | Expr::AllOp { right, .. } => {
                if let Some(array) = string_literal(right).and_then(array_literal) {
                    **right = array;
                    self.changed = true;
                }
                None
            }
            // `generate_subscripts(a, 1)` beside `unnest(a)`: DataFusion
            // unnests side by side, so 1..n lines up with the elements.
            Expr::Function(f)
                if self.on_catalog
                    && f.name
                        .to_string()
                        .eq_ignore_ascii_case("generate_subscripts") =>
            {
                let args = f.args.to_string();
                let parts = args
                    .trim_start_matches('(')
                    .trim_end_matches(')')
                    .rsplit_once(',')
                    .map(|(a, d)| (a.trim().to_string(), d.trim().to_string()));
                // The dimension stays in the text: it may be a parameter,
                // and parameters are numbered.
                parts.and_then(|(a, d)| {
                    expr(&format!(
                        "unnest(range(1, CAST(cardinality({a}) AS BIGINT) + 1 \
                         + 0 * CAST({d} AS BIGINT)))"
                    ))
                })
            }
            // pgjdbc's keys: `information_schema._pg_expandarray(a)` is a
            // set of `(x, n)` records, `(keys).x` a field of one.
            Expr::Function(f)
                if self.on_catalog
                    && f.name
                        .to_string()
                        .to_lowercase()
                        .ends_with("_pg_expandarray") =>
            {
                expr(&format!("unnest(pg_expandarray{})", f.args))
            }
            Expr::CompoundFieldAccess { root, access_chain }
                if self.on_catalog && matches!(root.as_ref(), Expr::Nested(_)) =>
            {
                match (root.as_ref(), access_chain.as_slice()) {
                    (
                        Expr::Nested(inner),
                        [
                            datafusion::sql::sqlparser::ast::AccessExpr::Dot(Expr::Identifier(
                                field,
                            )),
                        ],
                    ) => expr(&format!(
                        "get_field({inner}, '{}')",
                        field.value.to_lowercase()
                    )),
                    _ => None,
                }
            }
            Expr::Value(v) => match &v.value {
                Value::Placeholder(name) => self.placeholder(name),
                _ => None,
            },
            Expr::Subquery(query) if self.on_catalog && reads_only_empty_catalogs(query) => {
                let counts = matches!(query.body.as_ref(), SetExpr::Select(s)
                    if s.projection.iter().any(|p| p.to_string().to_lowercase().starts_with("count(")));
                if counts {
                    None
                } else {
                    null_keeping_placeholders(query)
                }
            }
            Expr::Subquery(query) if self.on_catalog => self.aggregate(query),
            _ => None,
        };
        if let Some(new) = replacement {
            *e = new;
            self.changed = true;
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_with_another_escape_character_is_translated() {
        let sql = "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE $1 || '%' ESCAPE '/'";
        let out = rewrite(sql, &[]).unwrap();
        assert!(
            out.contains("NOT LIKE pg_like_escape($1 || '%', '/')"),
            "{out}"
        );
        assert!(!out.contains("ESCAPE"), "{out}");
        assert_eq!(
            rewrite("SELECT 1 WHERE 'a' LIKE 'a' ESCAPE '\\'", &[]),
            None
        );
    }

    #[test]
    fn declared_parameter_types_are_kept_except_in_limit() {
        let types = [Some(Type::FLOAT8), None, Some(Type::INT8)];
        let out = rewrite(
            "SELECT * FROM raw.orders WHERE amount > $1 AND status = $2 LIMIT $3",
            &types,
        )
        .unwrap();
        assert!(
            out.contains("amount > CAST($1 AS DOUBLE PRECISION)"),
            "{out}"
        );
        assert!(out.contains("status = $2"), "{out}");
        assert!(out.contains("LIMIT $3"), "{out}");
        assert_eq!(rewrite("SELECT $1", &[None]), None);
    }

    #[test]
    fn pgjdbc_simple_mode_literals_read_as_postgres_reads_them() {
        let out = rewrite(
            "SELECT CAST(('2024-02-29 +00') AS DATE) WHERE c = ANY(('{\"C1\",\"a,b\",NULL}'))",
            &[],
        )
        .unwrap();
        assert!(out.contains("CAST('2024-02-29' AS DATE)"), "{out}");
        assert!(out.contains("ANY(ARRAY['C1', 'a,b', NULL])"), "{out}");
        let out = rewrite("SELECT 1 WHERE n = ANY('{1, 2}')", &[]).unwrap();
        assert!(out.contains("ANY(ARRAY[1, 2])"), "{out}");
        assert_eq!(rewrite("SELECT CAST('2024-02-29' AS DATE)", &[]), None);
        assert_eq!(rewrite("SELECT 1 WHERE n = ANY('{{1},{2}}')", &[]), None);
    }

    #[test]
    fn correlated_catalog_subqueries_take_max_and_others_are_left() {
        let sql = "SELECT t.typname FROM pg_catalog.pg_type t WHERE t.typrelid = 0 OR \
                   (SELECT c.relkind = 'c' FROM pg_catalog.pg_class c WHERE c.oid = t.typrelid)";
        let out = rewrite(sql, &[]).unwrap();
        assert!(
            out.contains("(SELECT max(c.relkind = 'c') FROM pg_catalog.pg_class"),
            "{out}"
        );
        // Not a catalog query: PostgreSQL's error for two rows stays.
        assert_eq!(
            rewrite(
                "SELECT (SELECT o.amount FROM raw.orders o WHERE o.customer_id = c.customer_id) \
                 FROM raw.customers c",
                &[]
            ),
            None
        );
        // Only always-empty catalogs: NULL, which DataFusion cannot plan
        // under CASE.
        let out = rewrite(
            "SELECT CASE WHEN a.atthasdef THEN (SELECT pg_get_expr(d.adbin, d.adrelid) \
             FROM pg_catalog.pg_attrdef d WHERE a.atthasdef AND d.adrelid = a.attrelid) \
             ELSE NULL END FROM pg_catalog.pg_attribute a",
            &[],
        )
        .unwrap();
        assert!(out.contains("THEN NULL ELSE NULL"), "{out}");
        // Already an aggregate.
        assert_eq!(
            rewrite(
                "SELECT (SELECT count(*) FROM pg_class c WHERE c.relnamespace = n.oid) \
                 FROM pg_namespace n",
                &[]
            ),
            None
        );
    }
}
