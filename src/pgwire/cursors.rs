//! SQL cursors as drivers use them: `DECLARE name CURSOR FOR …` keeps the
//! query's plan with the cursor, so a protocol-level Describe of the
//! cursor's portal (psycopg 3's named cursors) or of a `FETCH` portal
//! (pgjdbc) returns its columns, and `FETCH` completes with PostgreSQL's
//! `FETCH n` tag. `datafusion-postgres`' cursor hook (kept for `CLOSE`)
//! stores no plan, so both Describes said NoData and the drivers could not
//! read the rows that followed.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{Declare, DeclareType, FetchDirection, Statement, Value};
use datafusion_postgres::QueryHook;
use datafusion_postgres::arrow_pg::datatypes::df::encode_dataframe;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire::api::ClientInfo;
use datafusion_postgres::pgwire::api::portal::{Format, Portal};
use datafusion_postgres::pgwire::api::results::{Response, Tag};
use datafusion_postgres::pgwire::api::stmt::StoredStatement;
use datafusion_postgres::pgwire::api::store::PortalStore;
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};

use super::statements::{answered_without_rows, error};

/// The statement type of the portal store: SQL text and its plan.
pub(super) type DfStatement = (String, Option<(Statement, LogicalPlan)>);

/// The name of the cursor a `FETCH` statement reads, if it is one.
pub(super) fn fetched_cursor(statement: &DfStatement) -> Option<&str> {
    match &statement.1 {
        Some((Statement::Fetch { name, .. }, _)) => Some(name.value.as_str()),
        _ => None,
    }
}

async fn declare(
    client: &mut dyn HookClient,
    declares: &[Declare],
    ctx: &SessionContext,
) -> PgWireResult<Response> {
    for declare in declares {
        if declare.declare_type != Some(DeclareType::Cursor) {
            return Err(error(
                "42601",
                format!("unsupported DECLARE type: {:?}", declare.declare_type),
            ));
        }
        let Some(name) = declare.names.first() else {
            return Err(error("42601", "cursor name is required".into()));
        };
        let Some(query) = &declare.for_query else {
            return Err(error("42601", "DECLARE CURSOR requires a FOR query".into()));
        };
        let text = query.to_string();
        let df = ctx
            .sql(&text)
            .await
            .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
        let plan = df.logical_plan().clone();
        let rows = encode_dataframe(df, &Format::UnifiedText, None).await?;
        let statement = Arc::new(StoredStatement::new(
            name.value.clone(),
            (text, Some((Statement::Query(query.clone()), plan))),
            vec![],
        ));
        let portal = Portal::new_cursor(name.value.clone(), statement);
        portal.start(rows).await;
        client.portal_store().put_portal(Arc::new(portal));
    }
    Ok(Response::Execution(Tag::new("DECLARE CURSOR")))
}

async fn fetch(
    client: &mut dyn HookClient,
    name: &str,
    direction: &FetchDirection,
) -> PgWireResult<Response> {
    let count = |v: &Value| match v {
        Value::Number(n, _) => n.parse::<usize>().ok(),
        _ => None,
    };
    let max_rows = match direction {
        FetchDirection::Next | FetchDirection::Forward { limit: None } => 1,
        FetchDirection::Forward { limit: Some(v) } | FetchDirection::Count { limit: v } => {
            count(v).ok_or_else(|| error("42601", format!("FETCH count {v} is not a number")))?
        }
        // pgwire's portal: 0 = every remaining row.
        FetchDirection::ForwardAll | FetchDirection::All => 0,
        _ => {
            return Err(error("55000", "cursor can only scan forward".into()));
        }
    };
    let portal = client
        .portal_store()
        .get_portal(name)
        .and_then(|entry| entry.value().cloned())
        .ok_or_else(|| error("34000", format!("cursor \"{name}\" does not exist")))?;
    let mut fetched = portal.fetch(max_rows).await?.response;
    fetched.set_command_tag("FETCH");
    Ok(Response::Query(fetched))
}

/// The hook; install it before datafusion-postgres' cursor hook.
#[derive(Debug)]
pub(super) struct CursorHook;

impl CursorHook {
    async fn run(
        statement: &Statement,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        match statement {
            Statement::Declare { stmts } => Some(declare(client, stmts, ctx).await),
            Statement::Fetch {
                name, direction, ..
            } => Some(fetch(client, &name.value, direction).await),
            _ => None,
        }
    }
}

#[async_trait]
impl QueryHook for CursorHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        Self::run(statement, ctx, client).await
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        matches!(
            statement,
            Statement::Declare { .. } | Statement::Fetch { .. }
        )
        .then(|| Ok(answered_without_rows()))
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        Self::run(statement, ctx, client).await
    }
}
