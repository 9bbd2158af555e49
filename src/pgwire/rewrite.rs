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
//! The statement is printed again only when a rule applied.

use std::collections::HashSet;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, LimitClause, ObjectName, Query, SelectItem, SetExpr, Value, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion_postgres::pgwire::api::Type;

/// The statement `sql` rewritten, if any rule applies; `types` are the
/// parameter types the client declared (`None` or `unknown`: undeclared).
pub fn rewrite(sql: &str, types: &[Option<Type>]) -> Option<String> {
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

/// `pg_catalog` tables that have no rows in Panorama (the golden tests
/// check this list against the server).
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
