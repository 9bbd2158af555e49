//! Planning that a `statement_timeout` or a cancel request can interrupt.
//!
//! DataFusion plans synchronously: a pathological statement (thousands of
//! chained CTEs, a `VALUES` list of a hundred thousand rows) keeps a core
//! for seconds without yielding, so a timeout polled beside it never
//! fires. [`PlannedHook`], the last query hook, takes every statement no
//! other hook answered — on the simple protocol its planning and the start
//! of its execution, at Parse its logical plan — and runs that work as a
//! task of its own on the query runtime ([`crate::executor::spawn_within`]),
//! waiting for it at most the connection's `statement_timeout`. Execute of
//! a prepared query does the same through [`run_planned`]. What the hook
//! does otherwise is what datafusion-postgres' own tail does: plan with
//! the connection's session, count an `INSERT`'s rows, encode the rest.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{DataFrame, SessionContext};
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::QueryHook;
use datafusion_postgres::arrow_pg::datatypes::df;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire::api::ClientInfo;
use datafusion_postgres::pgwire::api::portal::Format;
use datafusion_postgres::pgwire::api::results::{Response, Tag};
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};
use datafusion_postgres::pgwire::types::format::FormatOptions;

use crate::executor::{QueryHandle, Unfinished};
use crate::functions::session::CONNECTION;

/// The last hook: plans in a task the statement's deadline can abandon.
pub(super) struct PlannedHook {
    pub runtime: Option<QueryHandle>,
}

#[async_trait]
impl QueryHook for PlannedHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        session_context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        let ctx = session_context.clone();
        let sql = statement.to_string();
        let insert = matches!(statement, Statement::Insert(_));
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        let work = async move {
            let frame = ctx.sql(&sql).await.map_err(api)?;
            respond(frame, insert, &Format::UnifiedText, options).await
        };
        Some(run_planned(self.runtime.as_ref(), &*client, work).await)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        session_context: &SessionContext,
        client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        let state = session_context.state();
        let statement = datafusion::sql::parser::Statement::Statement(Box::new(statement.clone()));
        let work = async move { state.statement_to_plan(statement).await.map_err(api) };
        Some(run_planned(self.runtime.as_ref(), client, work).await)
    }

    async fn handle_extended_query(
        &self,
        _statement: &Statement,
        _logical_plan: &LogicalPlan,
        _params: &ParamValues,
        _session_context: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        // Execute needs the portal's result formats, which a hook is not
        // given: `super::execute` runs queries through `run_planned`.
        None
    }
}

/// `work` on the query runtime, answered within `client`'s
/// `statement_timeout` or with PostgreSQL's 57014 at its deadline.
///
/// A cancel request is not watched here: pgwire races the handler with
/// the connection's one cancel receiver, and taking that receiver over
/// would end the statement the moment this returns to pgwire.
pub(super) async fn run_planned<T: Send + 'static>(
    runtime: Option<&QueryHandle>,
    client: &(dyn ClientInfo + Send + Sync),
    work: impl std::future::Future<Output = PgWireResult<T>> + Send + 'static,
) -> PgWireResult<T> {
    let limit = super::limits::timeout(client);
    // The connection's user and pid, which planning fixes into the plan
    // (`crate::functions::session`), go along to the planning task.
    let connection = CONNECTION.try_with(Arc::clone).ok();
    let work = async move {
        match connection {
            Some(connection) => CONNECTION.scope(connection, work).await,
            None => work.await,
        }
    };
    match crate::executor::spawn_within(runtime, limit, work).await {
        Ok(answer) => answer,
        Err(Unfinished::TimedOut) => Err(super::statements::error(
            "57014",
            "canceling statement due to statement timeout".into(),
        )),
        Err(Unfinished::Stopped) => Err(super::statements::error(
            "57P01",
            "terminating connection because the server is shutting down".into(),
        )),
    }
}

/// A planned statement's response: an `INSERT`'s row count, or the rows,
/// encoded in `format` (their execution starts here: physical planning).
pub(super) async fn respond(
    frame: DataFrame,
    insert: bool,
    format: &Format,
    options: Arc<FormatOptions>,
) -> PgWireResult<Response> {
    if insert {
        let batches = frame.collect().await.map_err(api)?;
        let rows = batches
            .first()
            .and_then(|batch| batch.column_by_name("count"))
            .and_then(|column| {
                column
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::UInt64Array>()
            })
            .filter(|counts| !counts.is_empty())
            .map_or(0, |counts| counts.value(0) as usize);
        return Ok(Response::Execution(
            Tag::new("INSERT").with_oid(0).with_rows(rows),
        ));
    }
    let encoded = df::encode_dataframe(frame, format, Some(options)).await?;
    Ok(Response::Query(encoded))
}

fn api(e: datafusion::error::DataFusionError) -> PgWireError {
    PgWireError::ApiError(Box::new(e))
}
