//! Session statements answered as PostgreSQL answers them, ahead of
//! `datafusion-postgres`' own hooks (which accept any `SET` silently and
//! answer unknown `SHOW`s with an empty row).
//!
//! - `SET name = value` of a parameter PostgreSQL does not have is an error
//!   (`42704 unrecognized configuration parameter`), as BI tools expect;
//!   the parameters clients send at connect time that DataFusion has no use
//!   for (`client_encoding`, `client_min_messages`, ...) are kept per
//!   connection and shown back.
//! - `SHOW` answers in PostgreSQL's spelling: `transaction_isolation` is
//!   `read committed`, and `server_version_num`,
//!   `standard_conforming_strings`, `max_identifier_length`, ... exist.
//! - `CREATE VIEW` / `DROP VIEW` / `CREATE TABLE … AS` answer with their
//!   command tag rather than an empty result set; `CREATE TABLE raw.<name>`
//!   and `ALTER TABLE raw.<name> ADD COLUMN` declare and widen a raw table
//!   in the lake ([`super::create_raw`]).
//!
//! Both the simple and the extended protocol go through here.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::timezone::Tz;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::{DFSchema, ParamValues};
use datafusion::logical_expr::{EmptyRelation, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    CreateTableOptions, CreateView, DiscardObject, Reset, ResetStatement, Set, SqlOption, Statement,
};
use datafusion_postgres::QueryHook;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire::api::ClientInfo;
use datafusion_postgres::pgwire::api::Type;
use datafusion_postgres::pgwire::api::results::{
    DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response, Tag,
};
use datafusion_postgres::pgwire::api::store::PortalStore;
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::PgWireBackendMessage;
use datafusion_postgres::pgwire::messages::response::TransactionStatus;
use datafusion_postgres::pgwire::messages::startup::ParameterStatus;

use super::auth::Role;
use super::statements::error;
use crate::postgres::settings::fixed;

/// Parameters `datafusion-postgres` stores and shows itself.
const DELEGATED: &[&str] = &[
    "statement_timeout",
    "datestyle",
    "bytea_output",
    "intervalstyle",
    "application_name",
    "extra_float_digits",
    "search_path",
    "timezone",
];

/// Parameters clients set that change nothing here: kept per connection.
const KEPT: &[&str] = &[
    "client_encoding",
    "client_min_messages",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "idle_session_timeout",
    "default_transaction_isolation",
    "default_transaction_read_only",
    "transaction_read_only",
    "standard_conforming_strings",
    "lc_messages",
    "lc_monetary",
    "lc_numeric",
    "lc_time",
    "jit",
    "work_mem",
    "geqo",
    "join_collapse_limit",
    "from_collapse_limit",
    "max_parallel_workers_per_gather",
    "synchronous_commit",
    "row_security",
    "plan_cache_mode",
    "enable_seqscan",
    "enable_indexscan",
    "enable_bitmapscan",
    "enable_nestloop",
    "enable_hashjoin",
    "enable_mergejoin",
    "timezone_abbreviations",
];

/// Where a `SHOW` or `SET` goes.
enum Route {
    /// Answered here with this (column, value).
    Show(String, String),
    /// Stored here for the connection.
    Set(String, String),
    Refuse(PgWireError),
    /// `SET TIME ZONE` / `SET timezone`, for this connection only.
    TimeZone(String),
    /// `DISCARD ALL` (a pool's reset): back to the connection's start.
    DiscardAll,
    /// `RESET name` (the metadata key) or `RESET ALL` (`None`): back to the
    /// start-up value.
    Reset(Option<String>),
    /// `SET datafusion.<key> = value`, for this connection only.
    Engine(String, String),
    /// `SHOW datafusion.<key>`: this connection's value.
    ShowEngine(String),
    /// `RESET datafusion.<key>`.
    ResetEngine(String),
    /// Left to datafusion-postgres (or DataFusion).
    Delegate,
}

fn route(statement: &Statement, client: &(dyn ClientInfo + Send + Sync)) -> Route {
    match statement {
        Statement::ShowVariable { variable } => {
            let words: Vec<String> = variable.iter().map(|v| v.value.to_lowercase()).collect();
            let dotted = words.join(".");
            if dotted.starts_with("datafusion.") {
                return Route::ShowEngine(dotted);
            }
            let name = match words
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .as_slice()
            {
                ["transaction", "isolation", "level"] => "transaction_isolation".to_string(),
                ["time", "zone"] => "timezone".to_string(),
                [one] => one.to_string(),
                _ => words.join(" "),
            };
            if name == "timezone" {
                let zone = [TIME_ZONE_KEY, "TimeZone"]
                    .iter()
                    .find_map(|key| client.metadata().get(*key).cloned())
                    .unwrap_or_else(|| "UTC".into());
                return Route::Show("TimeZone".into(), zone);
            }
            if DELEGATED.contains(&name.as_str())
                || name.starts_with("datafusion.")
                || name == "all"
            {
                return Route::Delegate;
            }
            match client
                .metadata()
                .get(&format!("panorama.{name}"))
                .cloned()
                .or_else(|| fixed(&name))
            {
                Some(value) => Route::Show(name, value),
                None => Route::Refuse(unknown(&name)),
            }
        }
        Statement::Set(Set::SetTimeZone {
            local: false,
            value,
        }) => time_zone(&value.to_string()),
        Statement::Discard {
            object_type: DiscardObject::ALL,
        } => Route::DiscardAll,
        Statement::Reset(ResetStatement { reset }) => match reset {
            Reset::ALL => Route::Reset(None),
            Reset::ConfigurationParameter(name) => {
                let name = name.to_string().to_lowercase();
                let name = if name == "time zone" {
                    "timezone".into()
                } else {
                    name
                };
                if name.starts_with("datafusion.") {
                    return match engine_permission(&name, Role::of(client)) {
                        Ok(()) => Route::ResetEngine(name),
                        Err(e) => Route::Refuse(e),
                    };
                }
                if name == "timezone"
                    || KEPT.contains(&name.as_str())
                    || DELEGATED.contains(&name.as_str())
                {
                    Route::Reset(Some(metadata_key(&name)))
                } else {
                    Route::Refuse(unknown(&name))
                }
            }
        },
        Statement::Set(Set::SingleAssignment {
            variable, values, ..
        }) => {
            let name = variable.to_string().to_lowercase();
            if name == "timezone" {
                let value = values.iter().map(|v| v.to_string()).collect::<Vec<_>>();
                return time_zone(&value.join(", "));
            }
            if name.starts_with("datafusion.") {
                let value = values
                    .iter()
                    .map(|v| v.to_string().trim_matches('\'').to_string())
                    .collect::<Vec<_>>()
                    .join(",");
                return match engine_permission(&name, Role::of(client)) {
                    Ok(()) => Route::Engine(name, value),
                    Err(e) => Route::Refuse(e),
                };
            }
            if DELEGATED.contains(&name.as_str()) {
                return Route::Delegate;
            }
            if !KEPT.contains(&name.as_str()) {
                return Route::Refuse(unknown(&name));
            }
            let value = values
                .iter()
                .map(|v| v.to_string().trim_matches('\'').to_string())
                .collect::<Vec<_>>()
                .join(", ");
            if name == "client_encoding"
                && !["utf8", "utf-8", "unicode"].contains(&value.to_lowercase().as_str())
            {
                return Route::Refuse(error(
                    "22023",
                    format!("client encoding \"{value}\" is not supported: Panorama speaks UTF8"),
                ));
            }
            Route::Set(name, value)
        }
        _ => Route::Delegate,
    }
}

/// Whether `role` may change the engine setting `name` on its connection.
/// `datafusion.runtime.*` (memory pool, spill space) is the server's, for
/// nobody to change over SQL; analysts may change only how plans and
/// values are shown (`datafusion.explain.*`, `datafusion.format.*`).
fn engine_permission(name: &str, role: Role) -> PgWireResult<()> {
    if name.starts_with("datafusion.runtime.") {
        return Err(error(
            "42501",
            format!(
                "permission denied to set parameter \"{name}\": it is server-wide; \
                 set it where the server starts (for the memory limit, --memory-limit-mb)"
            ),
        ));
    }
    let shown = ["datafusion.explain.", "datafusion.format."];
    if role == Role::Analyst && !shown.iter().any(|p| name.starts_with(p)) {
        return Err(error(
            "42501",
            format!(
                "permission denied to set parameter \"{name}\" (the analyst role may set datafusion.explain.* and datafusion.format.*)"
            ),
        ));
    }
    Ok(())
}

/// Set engine setting `name` on this connection's session only.
fn set_engine(ctx: &SessionContext, name: &str, value: Option<&str>) -> PgWireResult<()> {
    let key = name.trim_start_matches("datafusion.");
    let known = ctx
        .state()
        .config()
        .options()
        .entries()
        .iter()
        .any(|entry| entry.key == name);
    if !known {
        return Err(unknown(name));
    }
    let state = ctx.state_ref();
    let mut state = state.write();
    let value = match value {
        Some(v) => v.to_string(),
        None => {
            // RESET: the value the connection started with.
            let base = super::connection::base_value(&state, name);
            match base {
                Some(v) => v,
                None => return Ok(()),
            }
        }
    };
    state
        .config_mut()
        .options_mut()
        .set(name, &value)
        .map_err(|_| {
            error(
                "22023",
                format!(
                    "invalid value for parameter \"{name}\" ({key} takes another kind of value)"
                ),
            )
        })
}

/// A time zone PostgreSQL would accept and Arrow can render: an IANA name
/// or a `±hh:mm` offset (`LOCAL` and `DEFAULT` are UTC, the server's zone).
fn time_zone(value: &str) -> Route {
    let zone = value.trim().trim_matches('\'').trim_matches('"');
    if zone.eq_ignore_ascii_case("local") || zone.eq_ignore_ascii_case("default") {
        return Route::TimeZone("UTC".into());
    }
    match zone.parse::<Tz>() {
        Ok(_) => Route::TimeZone(zone.to_string()),
        Err(_) => Route::Refuse(error(
            "22023",
            format!("invalid value for parameter \"TimeZone\": \"{zone}\""),
        )),
    }
}

/// The client metadata key a `SET` of `name` writes (datafusion-postgres'
/// keys for the parameters it keeps, ours for the rest).
fn metadata_key(name: &str) -> String {
    match name {
        "statement_timeout" => "statement_timeout_ms".into(),
        "timezone" => TIME_ZONE_KEY.into(),
        name if DELEGATED.contains(&name) => name.into(),
        name => format!("panorama.{name}"),
    }
}

/// Where datafusion-postgres keeps the connection's time zone (`SHOW`
/// reads it there).
pub(super) const TIME_ZONE_KEY: &str = "timezone";
/// Before a connection first changes a parameter, its value at start-up is
/// kept under this prefix (`ABSENT` when it had none), for `DISCARD ALL`.
const DEFAULT_PREFIX: &str = "panorama.default.";
const ABSENT: &str = "\u{0}";

/// Tell the client its time zone now (a `ParameterStatus`, as PostgreSQL
/// sends after a change).
async fn announce_time_zone(client: &mut dyn HookClient) -> PgWireResult<()> {
    let zone = client
        .metadata()
        .get(TIME_ZONE_KEY)
        .cloned()
        .unwrap_or_else(|| "UTC".into());
    let status = ParameterStatus::new("TimeZone".into(), zone);
    client
        .send_message(PgWireBackendMessage::ParameterStatus(status))
        .await
}

/// Remember `key`'s start-up value before its first change.
fn keep_default(client: &mut dyn HookClient, key: &str) {
    let saved = format!("{DEFAULT_PREFIX}{key}");
    if !client.metadata().contains_key(&saved) {
        let value = client
            .metadata()
            .get(key)
            .cloned()
            .unwrap_or_else(|| ABSENT.to_string());
        client.metadata_mut().insert(saved, value);
    }
}

/// `DISCARD ALL`: every parameter back to its start-up value, every portal
/// and cursor closed.
fn discard_all(client: &mut dyn HookClient) {
    reset(client, None);
    client.portal_store().clear_portals();
}

/// The parameter at metadata key `only` (or every one) back to its
/// start-up value.
fn reset(client: &mut dyn HookClient, only: Option<&str>) {
    let saved: Vec<(String, String)> = client
        .metadata()
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(DEFAULT_PREFIX)?.to_string(), v.clone())))
        .filter(|(k, _)| only.is_none_or(|o| o == k))
        .collect();
    let metadata = client.metadata_mut();
    for (key, value) in saved {
        metadata.remove(&format!("{DEFAULT_PREFIX}{key}"));
        if value == ABSENT {
            metadata.remove(&key);
        } else {
            metadata.insert(key, value);
        }
    }
}

fn unknown(name: &str) -> PgWireError {
    error(
        "42704",
        format!("unrecognized configuration parameter \"{name}\""),
    )
}

/// The command tag of a DDL statement DataFusion runs, if `statement` is one.
fn ddl_tag(statement: &Statement) -> Option<&'static str> {
    match statement {
        Statement::CreateView { .. } => Some("CREATE VIEW"),
        Statement::Drop { object_type, .. } => Some(match object_type.to_string().as_str() {
            "VIEW" => "DROP VIEW",
            _ => return None,
        }),
        _ => None,
    }
}

/// The column PostgreSQL names the answer to a `SHOW` that
/// datafusion-postgres answers: the parameter as PostgreSQL spells it
/// (`DateStyle`), where datafusion-postgres says `show` (extended protocol)
/// or the name in lower case.
fn delegated_show_column(statement: &Statement) -> Option<&'static str> {
    let Statement::ShowVariable { variable } = statement else {
        return None;
    };
    let [name] = variable.as_slice() else {
        return None;
    };
    Some(match name.value.to_lowercase().as_str() {
        "datestyle" => "DateStyle",
        "intervalstyle" => "IntervalStyle",
        "search_path" => "search_path",
        "bytea_output" => "bytea_output",
        "application_name" => "application_name",
        "extra_float_digits" => "extra_float_digits",
        "statement_timeout" => "statement_timeout",
        _ => return None,
    })
}

/// `response` with its column named as PostgreSQL names it, when `sql` is a
/// `SHOW` datafusion-postgres answered (simple protocol).
pub(super) fn show_named(sql: &str, response: Response) -> Response {
    let column = datafusion::sql::sqlparser::parser::Parser::parse_sql(
        &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
        sql,
    )
    .ok()
    .and_then(|statements| match statements.as_slice() {
        [statement] => delegated_show_column(statement),
        _ => None,
    });
    let Some(column) = column else {
        return response;
    };
    let Response::Query(mut query) = response else {
        return response;
    };
    let fields: Vec<FieldInfo> = query
        .row_schema()
        .iter()
        .map(|f| {
            FieldInfo::new(
                column.to_string(),
                f.table_id(),
                f.column_id(),
                Type::TEXT,
                f.format(),
            )
        })
        .collect();
    let tag = query.command_tag().to_string();
    let rows = std::mem::replace(query.data_rows(), Box::pin(futures::stream::empty()));
    let mut named = QueryResponse::new(Arc::new(fields), rows);
    named.set_command_tag(&tag);
    Response::Query(named)
}

fn show_response(name: &str, value: &str) -> PgWireResult<Response> {
    let fields = Arc::new(vec![FieldInfo::new(
        name.to_string(),
        None,
        None,
        Type::TEXT,
        FieldFormat::Text,
    )]);
    let mut encoder = DataRowEncoder::new(fields.clone());
    encoder.encode_field(&Some(value))?;
    let row = encoder.take_row();
    Ok(Response::Query(QueryResponse::new(
        fields,
        Box::pin(futures::stream::once(async move { Ok(row) })),
    )))
}

/// Run a DDL statement with the session and answer with its tag.
async fn run_ddl(ctx: &SessionContext, sql: &str, tag: &str) -> PgWireResult<Response> {
    let df = ctx
        .sql(sql)
        .await
        .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    df.collect()
        .await
        .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    Ok(Response::Execution(Tag::new(tag)))
}

/// The hook; install it before datafusion-postgres' own.
#[derive(Debug)]
pub(super) struct SessionHook;

#[async_trait]
impl QueryHook for SessionHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        handle(statement, ctx, client).await
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        let saved_for_purpose = matches!(statement, Statement::CreateView(view)
            if view.options != CreateTableOptions::None)
            || super::create_raw::handles(statement);
        let fields = match route(statement, client) {
            // Planned and run at execution ([`create_view_with_options`]).
            _ if saved_for_purpose => vec![],
            Route::Show(name, _) | Route::ShowEngine(name) => {
                vec![Field::new(name, DataType::Utf8, false)]
            }
            Route::Set(..)
            | Route::TimeZone(_)
            | Route::DiscardAll
            | Route::Reset(_)
            | Route::Engine(..)
            | Route::ResetEngine(_) => vec![],
            Route::Refuse(e) => return Some(Err(e)),
            Route::Delegate => match delegated_show_column(statement) {
                // Answered by datafusion-postgres; described here.
                Some(column) => vec![Field::new(column, DataType::Utf8, false)],
                None => return None,
            },
        };
        Some(
            DFSchema::try_from(Schema::new(fields))
                .map(|schema| {
                    LogicalPlan::EmptyRelation(EmptyRelation {
                        produce_one_row: true,
                        schema: Arc::new(schema),
                    })
                })
                .map_err(|e| PgWireError::ApiError(Box::new(e))),
        )
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        handle(statement, ctx, client).await
    }
}

/// Both protocols: DDL with its tag, or a session statement.
async fn handle(
    statement: &Statement,
    ctx: &SessionContext,
    client: &mut dyn HookClient,
) -> Option<PgWireResult<Response>> {
    if let Statement::CreateView(view) = statement
        && view.options != CreateTableOptions::None
    {
        return Some(create_view_with_options(ctx, view).await);
    }
    if super::create_raw::handles(statement) {
        return Some(super::create_raw::run(ctx, statement).await);
    }
    if let Some(tag) = ddl_tag(statement) {
        return Some(run_ddl(ctx, &statement.to_string(), tag).await);
    }
    answer(statement, ctx, client).await
}

/// `CREATE VIEW analytics.<name> WITH (purpose = '<purpose>') AS …`: a
/// segment saved for a consent purpose ([`crate::analytics`]); no other
/// view option exists here.
async fn create_view_with_options(
    ctx: &SessionContext,
    view: &CreateView,
) -> PgWireResult<Response> {
    let options = match &view.options {
        CreateTableOptions::With(options) => options.as_slice(),
        _ => &[],
    };
    let mut purpose = None;
    for option in options {
        match option {
            SqlOption::KeyValue { key, value } if key.value.eq_ignore_ascii_case("purpose") => {
                let text = value.to_string();
                purpose = Some(text.trim_matches('\'').to_string());
            }
            other => {
                return Err(error(
                    "22023",
                    format!("unrecognized parameter \"{other}\" (views take only purpose)"),
                ));
            }
        }
    }
    let Some(purpose) = purpose else {
        return Err(error(
            "22023",
            "views take only WITH (purpose = '<consent purpose>')".into(),
        ));
    };
    let parts = &view.name.0;
    let in_analytics = parts.len() == 2
        && parts[0]
            .as_ident()
            .is_some_and(|i| i.value.eq_ignore_ascii_case("analytics"));
    let Some(name) = parts
        .last()
        .and_then(|p| p.as_ident())
        .filter(|_| in_analytics)
    else {
        return Err(error(
            "0A000",
            "a view with a purpose is a segment: name it analytics.<name>".into(),
        ));
    };
    let mut plain = view.clone();
    plain.options = CreateTableOptions::None;
    let definition = Statement::CreateView(plain).to_string();
    crate::analytics::save_for_purpose(ctx, &name.value, &definition, &purpose, view.or_replace)
        .await
        .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    Ok(Response::Execution(Tag::new("CREATE VIEW")))
}

async fn answer(
    statement: &Statement,
    ctx: &SessionContext,
    client: &mut dyn HookClient,
) -> Option<PgWireResult<Response>> {
    // An aborted transaction refuses everything but its end, or a
    // ROLLBACK TO a savepoint (the hooks after this one answer those).
    if client.transaction_status() == TransactionStatus::Error {
        if matches!(
            statement,
            Statement::Commit { .. } | Statement::Rollback { .. }
        ) {
            return None;
        }
        return Some(Err(error(
            "25P02",
            "current transaction is aborted, commands ignored until end of transaction block"
                .into(),
        )));
    }
    match route(statement, client) {
        Route::Show(name, value) => Some(show_response(&name, &value)),
        Route::Set(name, value) => {
            let key = metadata_key(&name);
            keep_default(client, &key);
            client.metadata_mut().insert(key, value);
            Some(Ok(Response::Execution(Tag::new("SET"))))
        }
        Route::TimeZone(zone) => {
            keep_default(client, TIME_ZONE_KEY);
            client.metadata_mut().insert(TIME_ZONE_KEY.into(), zone);
            Some(
                announce_time_zone(client)
                    .await
                    .map(|()| Response::Execution(Tag::new("SET"))),
            )
        }
        Route::DiscardAll => {
            discard_all(client);
            super::connection::reset_options(ctx);
            Some(Ok(Response::Execution(Tag::new("DISCARD ALL"))))
        }
        Route::ShowEngine(name) => {
            let value = ctx
                .state()
                .config()
                .options()
                .entries()
                .into_iter()
                .find(|entry| entry.key == name)
                .map(|entry| entry.value.unwrap_or_default());
            Some(match value {
                Some(value) => show_response(&name, &value),
                None => Err(unknown(&name)),
            })
        }
        Route::Engine(name, value) => Some(
            set_engine(ctx, &name, Some(&value)).map(|()| Response::Execution(Tag::new("SET"))),
        ),
        Route::ResetEngine(name) => {
            Some(set_engine(ctx, &name, None).map(|()| Response::Execution(Tag::new("RESET"))))
        }
        Route::Reset(key) => {
            if key.is_none() {
                super::connection::reset_options(ctx);
            }
            reset(client, key.as_deref());
            if key.as_deref().is_none_or(|k| k == TIME_ZONE_KEY)
                && let Err(e) = announce_time_zone(client).await
            {
                return Some(Err(e));
            }
            Some(Ok(Response::Execution(Tag::new("RESET"))))
        }
        Route::Refuse(e) => Some(Err(e)),
        Route::Delegate => {
            // A parameter datafusion-postgres sets: keep its start-up value.
            if let Statement::Set(Set::SingleAssignment { variable, .. }) = statement {
                let name = variable.to_string().to_lowercase();
                if DELEGATED.contains(&name.as_str()) {
                    keep_default(client, &metadata_key(&name));
                }
            }
            None
        }
    }
}
