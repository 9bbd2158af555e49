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
//! - `information_schema.columns` gains PostgreSQL's `udt_schema`,
//!   `udt_name`, `is_identity` and `is_generated` (Metabase's field sync);
//!   `pg_show_all_settings()` is `pg_catalog.pg_settings` (pgAdmin); an
//!   integer literal beside an `integer` cast is an `integer` (`x::int /
//!   100` stays `integer`, as in PostgreSQL; Grafana); `row_number()` and
//!   the other ranks are `bigint`; `col_description(…)` and its kin are
//!   NULL in catalog queries (Panorama has no comments).
//!
//! The statement is printed again only when a rule applied. After
//! planning, [`untyped_parameters_as_text`] gives a parameter that neither
//! the client nor its context typed PostgreSQL's type for it, `text`.

use std::collections::HashSet;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, LimitClause, ObjectName, Query, SelectItem, SetExpr, TableFactor, Value, VisitMut,
    VisitorMut,
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
    // Names first (`super::naming`), from the statement as the client wrote
    // it: a rule below may replace an item (an always-empty subquery by
    // NULL) whose name PostgreSQL takes from what was written.
    let renamed = super::naming::rename(sql);
    let named = renamed.as_deref().unwrap_or(sql);
    apply_rules(named, types).or(renamed)
}

fn apply_rules(sql: &str, types: &[Option<Type>]) -> Option<String> {
    let dialect = PostgreSqlDialect {};
    let mut statements = Parser::parse_sql(&dialect, sql).ok()?;
    let [statement] = statements.as_mut_slice() else {
        return None;
    };
    // psql's row policies and extended statistics (`\d`): datafusion-
    // postgres recognizes them by their text and answers a stand-in.
    if let datafusion::sql::sqlparser::ast::Statement::Query(query) = statement
        && let SetExpr::Select(select) = query.body.as_ref()
        && super::naming::reads_only_empty_catalogs(select)
    {
        return None;
    }
    let mut rules = Rules {
        types,
        on_catalog: false,
        reads_pg_columns: false,
        limit_params: HashSet::new(),
        catalog_names: HashSet::new(),
        changed: false,
    };
    // A first pass finds catalog relations and LIMIT parameters.
    let _ = statement.visit(&mut Survey(&mut rules));
    let _ = statement.visit(&mut rules);
    rules.changed |= int4_literals(statement);
    rules.changed.then(|| statement.to_string())
}

/// An integer literal standing as a select item of the statement's query
/// is `integer` to PostgreSQL when it fits (`SELECT 1` is `int4`), where
/// DataFusion makes every integer literal `bigint`.
fn int4_literals(statement: &mut datafusion::sql::sqlparser::ast::Statement) -> bool {
    let datafusion::sql::sqlparser::ast::Statement::Query(query) = statement else {
        return false;
    };
    let SetExpr::Select(select) = query.body.as_mut() else {
        return false;
    };
    let mut changed = false;
    for item in &mut select.projection {
        let (SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. }) = item else {
            continue;
        };
        if let Expr::Value(v) = e
            && let Value::Number(n, false) = &v.value
            && n.parse::<i32>().is_ok()
            && let Some(cast) = expr(&format!("CAST({n} AS INTEGER)"))
        {
            *e = cast;
            changed = true;
        }
    }
    changed
}

struct Rules<'a> {
    types: &'a [Option<Type>],
    on_catalog: bool,
    /// Whether the statement names a column of PostgreSQL's
    /// `information_schema.columns` that DataFusion's lacks.
    reads_pg_columns: bool,
    limit_params: HashSet<String>,
    /// The names by which the statement refers to `pg_catalog` relations
    /// (their aliases, or their own names), lower case.
    catalog_names: HashSet<String>,
    changed: bool,
}

struct Survey<'r, 'a>(&'r mut Rules<'a>);

/// The last part of a relation's name, unquoted, lower case.
fn last_part(name: &ObjectName) -> String {
    name.0
        .last()
        .and_then(|p| p.as_ident())
        .map(|i| i.value.to_lowercase())
        .unwrap_or_default()
}

/// `pg_catalog.x` or an unqualified `pg_x`.
fn is_catalog_relation(name: &ObjectName) -> bool {
    let first = name.0.first().and_then(|p| p.as_ident());
    match name.0.len() {
        1 => last_part(name).starts_with("pg_"),
        2 => first.is_some_and(|i| i.value.eq_ignore_ascii_case("pg_catalog")),
        _ => false,
    }
}

/// The columns [`columns_with_types`] adds to `information_schema.columns`.
const PG_COLUMNS: &[&str] = &["udt_schema", "udt_name", "is_identity", "is_generated"];

impl VisitorMut for Survey<'_, '_> {
    type Break = ();

    fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
        let name = match &*e {
            Expr::Identifier(i) => Some(i),
            Expr::CompoundIdentifier(parts) => parts.last(),
            _ => None,
        };
        if name.is_some_and(|i| PG_COLUMNS.contains(&i.value.to_lowercase().as_str())) {
            self.0.reads_pg_columns = true;
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &mut ObjectName) -> ControlFlow<()> {
        if is_catalog_relation(relation) {
            self.0.on_catalog = true;
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table { name, alias, .. } = factor
            && is_catalog_relation(name)
        {
            let referred = match alias {
                Some(alias) => alias.name.value.to_lowercase(),
                None => last_part(name),
            };
            self.0.catalog_names.insert(referred);
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

/// The query of an `ARRAY(SELECT …)` constructor.
fn array_subquery(e: &Expr) -> Option<&Query> {
    match e {
        Expr::Nested(inner) => array_subquery(inner),
        Expr::Function(f) if f.name.to_string().eq_ignore_ascii_case("array") => match &f.args {
            datafusion::sql::sqlparser::ast::FunctionArguments::Subquery(query) => Some(query),
            _ => None,
        },
        _ => None,
    }
}

/// `(SELECT array_agg(e ORDER BY …) FROM …)` for `SELECT e FROM … ORDER BY
/// …` (an `ORDER BY` by position is by `e`).
fn array_agg(query: &Query) -> Option<Expr> {
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    let [SelectItem::UnnamedExpr(item) | SelectItem::ExprWithAlias { expr: item, .. }] =
        select.projection.as_slice()
    else {
        return None;
    };
    let order = match &query.order_by {
        Some(order_by) => match &order_by.kind {
            datafusion::sql::sqlparser::ast::OrderByKind::Expressions(exprs) => {
                let keys: Vec<String> = exprs
                    .iter()
                    .map(|o| {
                        let key = match &o.expr {
                            Expr::Value(v) if matches!(v.value, Value::Number(..)) => {
                                item.to_string()
                            }
                            other => other.to_string(),
                        };
                        format!("{key}{}", o.options)
                    })
                    .collect();
                format!(" ORDER BY {}", keys.join(", "))
            }
            _ => return None,
        },
        None => String::new(),
    };
    if query.limit_clause.is_some() || query.fetch.is_some() {
        return None;
    }
    let mut aggregated = query.clone();
    aggregated.order_by = None;
    if let SetExpr::Select(select) = aggregated.body.as_mut() {
        select.projection = vec![SelectItem::UnnamedExpr(expr(&format!(
            "array_agg({item}{order})"
        ))?)];
    }
    Some(Expr::Subquery(Box::new(aggregated)))
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

/// Window functions that count rows: `bigint` in PostgreSQL.
const RANKS: &[&str] = &["row_number", "rank", "dense_rank"];

/// The comment functions, NULL for every object here.
const DESCRIPTIONS: &[&str] = &["col_description", "obj_description", "shobj_description"];

/// Whether a function's arguments hold a parameter (`$1`).
fn has_placeholders(args: &datafusion::sql::sqlparser::ast::FunctionArguments) -> bool {
    let mut found = false;
    let _ = datafusion::sql::sqlparser::ast::visit_expressions(args, |e| {
        if let Expr::Value(v) = e
            && matches!(v.value, Value::Placeholder(_))
        {
            found = true;
        }
        ControlFlow::<()>::Continue(())
    });
    found
}

fn is_arithmetic(op: &datafusion::sql::sqlparser::ast::BinaryOperator) -> bool {
    use datafusion::sql::sqlparser::ast::BinaryOperator as B;
    matches!(op, B::Plus | B::Minus | B::Multiply | B::Divide | B::Modulo)
}

/// `CAST(… AS INTEGER)` / `…::int4`.
fn is_int4_cast(e: &Expr) -> bool {
    use datafusion::sql::sqlparser::ast::DataType as T;
    matches!(
        e,
        Expr::Cast {
            data_type: T::Int(_) | T::Integer(_) | T::Int4(_),
            ..
        }
    )
}

/// An integer literal that fits an `integer`.
fn small_integer(e: &Expr) -> bool {
    matches!(e, Expr::Value(v) if matches!(&v.value, Value::Number(n, false) if n.parse::<i32>().is_ok()))
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

/// `information_schema` views about constraints, which DataFusion's
/// `information_schema` lacks and which are empty here (Panorama's tables
/// have no keys): their PostgreSQL columns, all text.
const EMPTY_INFORMATION_SCHEMA: &[(&str, &[&str])] = &[
    (
        "table_constraints",
        &[
            "constraint_catalog",
            "constraint_schema",
            "constraint_name",
            "table_catalog",
            "table_schema",
            "table_name",
            "constraint_type",
            "is_deferrable",
            "initially_deferred",
            "enforced",
            "nulls_distinct",
        ],
    ),
    (
        "key_column_usage",
        &[
            "constraint_catalog",
            "constraint_schema",
            "constraint_name",
            "table_catalog",
            "table_schema",
            "table_name",
            "column_name",
            "ordinal_position",
            "position_in_unique_constraint",
        ],
    ),
    (
        "referential_constraints",
        &[
            "constraint_catalog",
            "constraint_schema",
            "constraint_name",
            "unique_constraint_catalog",
            "unique_constraint_schema",
            "unique_constraint_name",
            "match_option",
            "update_rule",
            "delete_rule",
        ],
    ),
    (
        "constraint_column_usage",
        &[
            "table_catalog",
            "table_schema",
            "table_name",
            "column_name",
            "constraint_catalog",
            "constraint_schema",
            "constraint_name",
        ],
    ),
];

/// The first relation of `sql`'s `FROM`.
fn relation_of(sql: &str) -> Option<TableFactor> {
    let statement = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?.pop()?;
    let datafusion::sql::sqlparser::ast::Statement::Query(query) = statement else {
        return None;
    };
    let SetExpr::Select(select) = *query.body else {
        return None;
    };
    select.from.into_iter().next().map(|t| t.relation)
}

/// The alias of `information_schema.columns` inside [`columns_with_types`].
const COLUMNS_BASE: &str = "pg_columns_base";

/// `information_schema.columns` with the columns of PostgreSQL's that
/// DataFusion's lacks and clients read (Metabase's field sync): the
/// column's type as `udt_schema` / `udt_name` (from `pg_attribute`), and
/// `is_identity` / `is_generated` (never, here). Named `alias`.
fn columns_with_types(alias: &str) -> Option<TableFactor> {
    let sql = format!(
        "SELECT * FROM (SELECT {COLUMNS_BASE}.*, \
         CASE WHEN udt_t.typname IS NULL THEN NULL ELSE 'pg_catalog' END AS udt_schema, \
         udt_t.typname AS udt_name, 'NO' AS is_identity, 'NEVER' AS is_generated \
         FROM information_schema.columns AS {COLUMNS_BASE} \
         LEFT JOIN pg_catalog.pg_namespace AS udt_n ON udt_n.nspname = {COLUMNS_BASE}.table_schema \
         LEFT JOIN pg_catalog.pg_class AS udt_c \
           ON udt_c.relnamespace = udt_n.oid AND udt_c.relname = {COLUMNS_BASE}.table_name \
         LEFT JOIN pg_catalog.pg_attribute AS udt_a \
           ON udt_a.attrelid = udt_c.oid AND udt_a.attname = {COLUMNS_BASE}.column_name \
         LEFT JOIN pg_catalog.pg_type AS udt_t ON udt_t.oid = udt_a.atttypid) AS {alias}"
    );
    relation_of(&sql)
}

/// An empty derived table with `columns` (text), named `alias`.
fn empty_derived(columns: &[&str], alias: &str) -> Option<TableFactor> {
    let items: Vec<String> = columns
        .iter()
        .map(|c| format!("CAST(NULL AS TEXT) AS {c}"))
        .collect();
    let sql = format!(
        "SELECT * FROM (SELECT {} WHERE FALSE) AS {alias}",
        items.join(", ")
    );
    let statement = Parser::parse_sql(&PostgreSqlDialect {}, &sql).ok()?.pop()?;
    let datafusion::sql::sqlparser::ast::Statement::Query(query) = statement else {
        return None;
    };
    let SetExpr::Select(select) = *query.body else {
        return None;
    };
    select.from.into_iter().next().map(|t| t.relation)
}

impl VisitorMut for Rules<'_> {
    type Break = ();

    /// `information_schema.table_constraints` and its kin
    /// ([`EMPTY_INFORMATION_SCHEMA`]): an empty table of their columns
    /// (Metabase's field sync joins them for primary keys).
    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        // `FROM unnest(a)`: its column is `unnest`, or the table alias if
        // there is one, as PostgreSQL names a function's one column
        // (pgcli's `SELECT * FROM unnest(current_schemas(true))`).
        if let TableFactor::UNNEST {
            alias,
            array_exprs,
            with_offset: false,
            with_ordinality: false,
            ..
        } = factor
            && let [array] = array_exprs.as_slice()
            && alias.as_ref().is_none_or(|a| a.columns.is_empty())
        {
            let name = alias
                .as_ref()
                .map(|a| a.name.to_string())
                .unwrap_or_else(|| "unnest".into());
            if let Some(named) =
                relation_of(&format!("SELECT * FROM unnest({array}) AS {name}({name})"))
            {
                *factor = named;
                self.changed = true;
            }
            return ControlFlow::Continue(());
        }
        // `pg_show_all_settings()`, the function behind `pg_settings`
        // (pgAdmin's start-up): the view.
        if let TableFactor::Table { name, args, .. } = factor
            && args.as_ref().is_some_and(|a| a.args.is_empty())
            && last_part(name) == "pg_show_all_settings"
        {
            *name = ObjectName::from(vec![
                datafusion::sql::sqlparser::ast::Ident::new("pg_catalog"),
                datafusion::sql::sqlparser::ast::Ident::new("pg_settings"),
            ]);
            *args = None;
            self.changed = true;
        }
        if let TableFactor::Table {
            name, alias, args, ..
        } = factor
            && args.is_none()
            && name.0.len() == 2
            && name.0[0]
                .as_ident()
                .is_some_and(|i| i.value.eq_ignore_ascii_case("information_schema"))
        {
            let view = last_part(name);
            let base = alias.as_ref().is_some_and(|a| a.name.value == COLUMNS_BASE);
            // Only where a statement needs them: datafusion-postgres
            // recognizes some statements on `columns` by their text.
            if view == "columns" && !base && self.reads_pg_columns {
                let alias = alias.as_ref().map(|a| a.name.to_string()).unwrap_or(view);
                if let Some(derived) = columns_with_types(&alias) {
                    *factor = derived;
                    self.changed = true;
                }
                return ControlFlow::Continue(());
            }
            if let Some((_, columns)) = EMPTY_INFORMATION_SCHEMA.iter().find(|(v, _)| *v == view) {
                let alias = alias.as_ref().map(|a| a.name.to_string()).unwrap_or(view);
                if let Some(derived) = empty_derived(columns, &alias) {
                    *factor = derived;
                    self.changed = true;
                }
            }
        }
        ControlFlow::Continue(())
    }

    /// `pg_locks` and the other relations Panorama adds to `pg_catalog`
    /// (`crate::postgres::catalog::EXTRA_TABLES`), named without their schema:
    /// `datafusion-pg-catalog` qualifies only its own.
    fn pre_visit_relation(&mut self, relation: &mut ObjectName) -> ControlFlow<()> {
        if relation.0.len() == 1
            && crate::postgres::catalog::EXTRA_TABLES.contains(&last_part(relation).as_str())
        {
            relation.0.insert(
                0,
                datafusion::sql::sqlparser::ast::ObjectNamePart::Identifier(
                    datafusion::sql::sqlparser::ast::Ident::new("pg_catalog"),
                ),
            );
            self.changed = true;
        }
        ControlFlow::Continue(())
    }

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
                self.changed |= backslash_escape(pattern, escape);
                None
            }
            // `row_number() OVER (…)` and the other ranks are `bigint` to
            // PostgreSQL; DataFusion's `UInt64` would be announced as
            // `numeric` (pgjdbc's `getColumns` numbers columns with it).
            Expr::Function(f) if f.over.is_some() && f.name.0.len() == 1 && named(f, RANKS) => {
                expr(&format!("CAST({f} AS BIGINT)"))
            }
            // `col_description(…)` and its kin are always NULL here (no
            // comments): NULL without evaluating the arguments, which
            // may cast a computed name to `regclass` (Metabase), which
            // datafusion-pg-catalog resolves only for a literal.
            Expr::Function(f)
                if self.on_catalog && named(f, DESCRIPTIONS) && !has_placeholders(&f.args) =>
            {
                expr("CAST(NULL AS TEXT)")
            }
            Expr::Cast {
                expr: inner,
                data_type,
                ..
            } if self.on_catalog && !matches!(inner.as_ref(), Expr::Value(_)) => {
                unmarked_cast(inner, data_type)
            }
            Expr::Cast {
                expr: inner,
                data_type: datafusion::sql::sqlparser::ast::DataType::Date,
                ..
            } => {
                self.changed |= zoneless_date(inner);
                None
            }
            // `x = ANY(ARRAY(SELECT …))` is `x IN (SELECT …)` (pgAdmin's
            // role probe).
            Expr::AnyOp {
                left,
                compare_op: datafusion::sql::sqlparser::ast::BinaryOperator::Eq,
                right,
                ..
            } if self.on_catalog && array_subquery(right).is_some() => {
                array_subquery(right).and_then(|query| expr(&format!("{left} IN ({query})")))
            }
            Expr::AnyOp { right, .. } | Expr::AllOp { right, .. } => {
                if let Some(array) = string_literal(right).and_then(array_literal) {
                    (**right, self.changed) = (array, true);
                }
                None
            }
            Expr::Function(f) if self.on_catalog && named(f, &["generate_subscripts"]) => {
                subscripts(f)
            }
            // pgjdbc's keys: `information_schema._pg_expandarray(a)` is a
            // set of `(x, n)` records, `(keys).x` a field of one.
            Expr::Function(f) if self.on_catalog && named(f, &["_pg_expandarray"]) => {
                expr(&format!("unnest(pg_expandarray{})", f.args))
            }
            Expr::CompoundFieldAccess { root, access_chain } if self.on_catalog => {
                record_field(root, access_chain)
            }
            // `ARRAY(SELECT e FROM … [ORDER BY …])`, which DataFusion cannot
            // plan: the scalar subquery `(SELECT array_agg(e ORDER BY …)
            // FROM …)` (psql's `\du`), NULL rather than `{}` for no rows.
            Expr::Function(_) if self.on_catalog && array_subquery(e).is_some() => {
                array_subquery(e).and_then(array_agg)
            }
            Expr::Value(v) => match &v.value {
                Value::Placeholder(name) => self.placeholder(name),
                _ => None,
            },
            // The system column `xmin` of a catalog row (DataGrip's
            // `state_number`): Panorama's rows were all written at once, by
            // the first transaction, as PostgreSQL's bootstrap rows are.
            Expr::CompoundIdentifier(parts)
                if parts.len() == 2
                    && parts[1].value.eq_ignore_ascii_case("xmin")
                    && self.catalog_names.contains(&parts[0].value.to_lowercase()) =>
            {
                expr("CAST(1 AS BIGINT)")
            }
            Expr::Subquery(query) if self.on_catalog && reads_only_empty_catalogs(query) => {
                of_no_rows(query)
            }
            Expr::Function(f) if self.on_catalog && named(f, &["pg_table_is_visible"]) => {
                on_search_path(f)
            }
            Expr::Subquery(query) if self.on_catalog => self.aggregate(query),
            Expr::BinaryOp { left, op, right } if is_arithmetic(op) => {
                self.changed |= integer_beside_integer(left, right);
                None
            }
            _ => None,
        };
        if let Some(new) = replacement {
            *e = new;
            self.changed = true;
        }
        ControlFlow::Continue(())
    }
}

/// `'2026-01-15 10:00'::date`: the literal cut to its date (DataFusion
/// refuses a time in a date literal); whether it changed.
fn zoneless_date(inner: &mut Box<Expr>) -> bool {
    let date = string_literal(inner)
        .and_then(date_without_zone)
        .and_then(|date| expr(&format!("'{date}'")));
    match date {
        Some(date) => {
            **inner = date;
            true
        }
        None => false,
    }
}

/// `(keys).x`, a field of a record (pgjdbc's keys, from
/// `information_schema._pg_expandarray`): `get_field(keys, 'x')`.
fn record_field(
    root: &Expr,
    access_chain: &[datafusion::sql::sqlparser::ast::AccessExpr],
) -> Option<Expr> {
    use datafusion::sql::sqlparser::ast::AccessExpr;
    match (root, access_chain) {
        (Expr::Nested(inner), [AccessExpr::Dot(Expr::Identifier(field))]) => expr(&format!(
            "get_field({inner}, '{}')",
            field.value.to_lowercase()
        )),
        _ => None,
    }
}

/// Whether `f`'s name (its last part, in any case) is one of `names`
/// (lower case).
fn named(f: &datafusion::sql::sqlparser::ast::Function, names: &[&str]) -> bool {
    f.name
        .0
        .last()
        .and_then(|p| p.as_ident())
        .is_some_and(|i| names.contains(&i.value.to_lowercase().as_str()))
}

/// `LIKE … ESCAPE c` with another escape character than the backslash:
/// the pattern respelled with `pg_like_escape`, which DataFusion's `LIKE`
/// understands; whether it changed.
fn backslash_escape(
    pattern: &mut Box<Expr>,
    escape: &mut Option<datafusion::sql::sqlparser::ast::ValueWithSpan>,
) -> bool {
    let c = escape.as_ref().map(|v| v.to_string()).unwrap_or_default();
    if c == "'\\'" {
        return false;
    }
    match expr(&format!("pg_like_escape({pattern}, {c})")) {
        Some(p) => {
            **pattern = p;
            *escape = None;
            true
        }
        None => false,
    }
}

/// `inner::type` on the catalogs, as an `arrow_cast` to a new, unmarked
/// column: DataFusion's cast keeps the column's metadata, so `N.oid::bigint`
/// was still announced as `oid` (and `atttypid::regtype::text`, pgcli's,
/// as the alias instead of `text`).
fn unmarked_cast(
    inner: &Expr,
    data_type: &datafusion::sql::sqlparser::ast::DataType,
) -> Option<Expr> {
    use datafusion::sql::sqlparser::ast::DataType as T;
    let arrow = match data_type {
        T::Text | T::Varchar(_) => "Utf8",
        T::BigInt(_) | T::Int8(_) => "Int64",
        T::Int(_) | T::Integer(_) | T::Int4(_) => "Int32",
        T::SmallInt(_) | T::Int2(_) => "Int16",
        _ => return None,
    };
    expr(&format!("arrow_cast({inner}, '{arrow}')"))
}

/// `generate_subscripts(a, d)` beside `unnest(a)`: `1..n`, which lines up
/// with the elements DataFusion unnests side by side.
fn subscripts(f: &datafusion::sql::sqlparser::ast::Function) -> Option<Expr> {
    // From the parsed arguments, not the text: the dimension
    // may hold a comma (`arrow_cast($1, 'Int32')`, the rule for
    // `$1::INTEGER` above having run first).
    let parts = match &f.args {
        datafusion::sql::sqlparser::ast::FunctionArguments::List(list) => {
            match list.args.as_slice() {
                [a, d] => Some((a.to_string(), d.to_string())),
                _ => None,
            }
        }
        _ => None,
    };
    // The dimension stays in the text: it may be a parameter,
    // and parameters are numbered.
    parts.and_then(|(a, d)| {
        expr(&format!(
            "unnest(range(1, CAST(cardinality({a}) AS BIGINT) + 1 \
             + 0 * CAST({d} AS BIGINT)))"
        ))
    })
}

/// A subquery that reads only catalogs Panorama keeps empty: what it
/// answers on no rows. A count is 0, a bigint (pgAdmin's trigger counts);
/// anything else NULL, keeping its parameters numbered.
fn of_no_rows(query: &datafusion::sql::sqlparser::ast::Query) -> Option<Expr> {
    let counts = matches!(query.body.as_ref(), SetExpr::Select(s)
        if s.projection.iter().any(|p| p.to_string().to_lowercase().starts_with("count(")));
    let has_placeholders = null_keeping_placeholders(query) != expr("NULL");
    match (counts, has_placeholders) {
        (true, false) => expr("CAST(0 AS BIGINT)"),
        (true, true) => None,
        (false, _) => null_keeping_placeholders(query),
    }
}

/// `x::int / 100`: an integer literal beside an `integer` is an `integer`,
/// as PostgreSQL types it, where DataFusion makes it a `bigint` and the
/// result too (Grafana's version probe); whether it changed.
fn integer_beside_integer(left: &mut Box<Expr>, right: &mut Box<Expr>) -> bool {
    let literal = if is_int4_cast(left) && small_integer(right) {
        right
    } else if is_int4_cast(right) && small_integer(left) {
        left
    } else {
        return false;
    };
    match expr(&format!("CAST({literal} AS INTEGER)")) {
        Some(cast) => {
            **literal = cast;
            true
        }
        None => false,
    }
}

/// `pg_table_is_visible(relation)`: whether the search path `"$user",
/// public` finds it (psql's `\d`), that is whether it is in `public` or
/// `pg_catalog`.
fn on_search_path(f: &datafusion::sql::sqlparser::ast::Function) -> Option<Expr> {
    let args = f.args.to_string();
    let relation = args.trim_start_matches('(').trim_end_matches(')');
    expr(&format!(
        "{relation} IN (SELECT c.oid FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname IN ('public', 'pg_catalog'))"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_before_the_rules_and_literals_are_int4() {
        // The always-empty subquery becomes NULL after it was named.
        let out = rewrite(
            "SELECT 1, (SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_catalog.pg_attrdef d \
             WHERE d.adrelid = a.attrelid) FROM pg_catalog.pg_attribute a",
            &[],
        )
        .unwrap();
        assert!(
            out.starts_with("SELECT CAST(1 AS INTEGER) AS \"?column?\", NULL AS \"pg_get_expr\""),
            "{out}"
        );
    }

    #[test]
    fn generate_subscripts_takes_its_arguments_from_the_ast() {
        // SQLAlchemy's `get_pk_constraint`: the dimension a typed
        // parameter cast to `INTEGER`, which becomes `arrow_cast(…, …)`.
        let out = apply_rules(
            "SELECT unnest(i.indkey) AS attnum, generate_subscripts(i.indkey, $1::INTEGER) AS ord \
             FROM pg_catalog.pg_index i",
            &[Some(Type::INT8)],
        )
        .unwrap();
        assert!(
            out.contains("unnest(range(1, CAST(cardinality(i.indkey) AS BIGINT) + 1"),
            "{out}"
        );
        assert!(!out.contains("generate_subscripts"), "{out}");
    }

    #[test]
    fn an_integer_literal_beside_an_integer_is_an_integer() {
        let out = apply_rules(
            "SELECT current_setting('server_version_num')::int / 100",
            &[],
        )
        .unwrap();
        assert!(out.contains("/ CAST(100 AS INTEGER)"), "{out}");
    }

    #[test]
    fn like_with_another_escape_character_is_translated() {
        let sql = "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE $1 || '%' ESCAPE '/'";
        let out = apply_rules(sql, &[]).unwrap();
        assert!(
            out.contains("NOT LIKE pg_like_escape($1 || '%', '/')"),
            "{out}"
        );
        assert!(!out.contains("ESCAPE"), "{out}");
        assert_eq!(
            apply_rules("SELECT x FROM t WHERE 'a' LIKE 'a' ESCAPE '\\'", &[]),
            None
        );
    }

    #[test]
    fn declared_parameter_types_are_kept_except_in_limit() {
        let types = [Some(Type::FLOAT8), None, Some(Type::INT8)];
        let out = apply_rules(
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
        assert_eq!(apply_rules("SELECT $1", &[None]), None);
    }

    #[test]
    fn pgjdbc_simple_mode_literals_read_as_postgres_reads_them() {
        let out = apply_rules(
            "SELECT CAST(('2024-02-29 +00') AS DATE) WHERE c = ANY(('{\"C1\",\"a,b\",NULL}'))",
            &[],
        )
        .unwrap();
        assert!(out.contains("CAST('2024-02-29' AS DATE)"), "{out}");
        assert!(out.contains("ANY(ARRAY['C1', 'a,b', NULL])"), "{out}");
        let out = apply_rules("SELECT 1 WHERE n = ANY('{1, 2}')", &[]).unwrap();
        assert!(out.contains("ANY(ARRAY[1, 2])"), "{out}");
        assert_eq!(apply_rules("SELECT CAST('2024-02-29' AS DATE)", &[]), None);
        assert_eq!(
            apply_rules("SELECT x FROM t WHERE n = ANY('{{1},{2}}')", &[]),
            None
        );
    }

    #[test]
    fn correlated_catalog_subqueries_take_max_and_others_are_left() {
        let sql = "SELECT t.typname FROM pg_catalog.pg_type t WHERE t.typrelid = 0 OR \
                   (SELECT c.relkind = 'c' FROM pg_catalog.pg_class c WHERE c.oid = t.typrelid)";
        let out = apply_rules(sql, &[]).unwrap();
        assert!(
            out.contains("(SELECT max(c.relkind = 'c') FROM pg_catalog.pg_class"),
            "{out}"
        );
        // Not a catalog query: PostgreSQL's error for two rows stays.
        assert_eq!(
            apply_rules(
                "SELECT (SELECT o.amount FROM raw.orders o WHERE o.customer_id = c.customer_id) \
                 FROM raw.customers c",
                &[]
            ),
            None
        );
        // Only always-empty catalogs: NULL, which DataFusion cannot plan
        // under CASE.
        let out = apply_rules(
            "SELECT CASE WHEN a.atthasdef THEN (SELECT pg_get_expr(d.adbin, d.adrelid) \
             FROM pg_catalog.pg_attrdef d WHERE a.atthasdef AND d.adrelid = a.attrelid) \
             ELSE NULL END FROM pg_catalog.pg_attribute a",
            &[],
        )
        .unwrap();
        assert!(out.contains("THEN NULL ELSE NULL"), "{out}");
        // Already an aggregate.
        assert_eq!(
            apply_rules(
                "SELECT (SELECT count(*) FROM pg_class c WHERE c.relnamespace = n.oid) \
                 FROM pg_namespace n",
                &[]
            ),
            None
        );
    }
}
