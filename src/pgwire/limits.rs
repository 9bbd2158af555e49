//! `statement_timeout` and the cancel request (Ctrl-C in psql) for the
//! whole of a statement, not only its planning (and, on the extended
//! protocol, the analyst role's read-only rule).
//!
//! DataFusion runs a query while its result is streamed to the client,
//! after the protocol handler has returned; `datafusion-postgres` and
//! pgwire only watch that handler. Here every result stream is wrapped so
//! that each row waits at most until the statement's deadline and until a
//! cancel request for the connection: either ends the statement with
//! SQLSTATE 57014, drops the DataFusion stream (which stops its work), and
//! leaves the connection ready for the next statement.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion_postgres::DfSessionService;
use datafusion_postgres::pgwire::api::PgWireConnectionState;
use datafusion_postgres::pgwire::api::Type;
use datafusion_postgres::pgwire::api::portal::Format;
use datafusion_postgres::pgwire::api::portal::Portal;
use datafusion_postgres::pgwire::api::portal::PortalExecutionState;
use datafusion_postgres::pgwire::api::query::ExtendedQueryHandler;
use datafusion_postgres::pgwire::api::results::Tag;
use datafusion_postgres::pgwire::api::results::{DescribePortalResponse, FieldInfo};
use datafusion_postgres::pgwire::api::results::{QueryResponse, Response};
use datafusion_postgres::pgwire::api::stmt::QueryParser;
use datafusion_postgres::pgwire::api::store::Entry;
use datafusion_postgres::pgwire::api::store::PortalStore;
use datafusion_postgres::pgwire::api::{ClientInfo, ClientPortalStore, ConnectionHandle};
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::PgWireBackendMessage;
use datafusion_postgres::pgwire::messages::data::DataRow;
use datafusion_postgres::pgwire::messages::extendedquery::Execute;
use datafusion_postgres::pgwire::messages::response::EmptyQueryResponse;
use futures::stream::{BoxStream, StreamExt};

use super::connection::ConnectionSessions;
use super::statements::error;

/// The connection's `statement_timeout` (as `datafusion-postgres` stores it).
pub(super) fn timeout(client: &(impl ClientInfo + ?Sized)) -> Option<Duration> {
    client
        .metadata()
        .get("statement_timeout_ms")
        .and_then(|ms| ms.parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
}

/// `work` (the handler part of a statement: planning, and whatever a
/// handler runs before its rows stream), stopped with 57014 when the
/// connection's `statement_timeout` passes.
pub(super) async fn within_timeout<T>(
    limit: Option<Duration>,
    work: impl std::future::Future<Output = PgWireResult<T>>,
) -> PgWireResult<T> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
            Err(error(
                "57014",
                "canceling statement due to statement timeout".into(),
            ))
        }),
        None => work.await,
    }
}

/// Wrap a response's rows with the connection's deadline and cancel; the
/// rows are produced on the query runtime (`runtime`), the deadline and
/// the cancel are watched here, on the protocol's.
pub(super) fn guard(
    response: Response,
    client: &(impl ClientInfo + ?Sized),
    runtime: Option<&crate::executor::QueryHandle>,
) -> Response {
    let Response::Query(mut query) = response else {
        return response;
    };
    let handle = client
        .session_extensions()
        .get::<Arc<ConnectionHandle>>()
        .map(|h| Arc::clone(&*h));
    let timeout = timeout(client);
    let tag = query.command_tag().to_string();
    let rows = std::mem::replace(query.data_rows(), Box::pin(futures::stream::empty()));
    let mut rows: BoxStream<'static, PgWireResult<DataRow>> =
        crate::executor::stream(runtime, super::panics::contained_rows(rows));
    let zone = client.metadata().get(super::session::TIME_ZONE_KEY);
    let respelled = super::text_values::columns(&query.row_schema(), zone.map(String::as_str));
    if !respelled.is_empty() {
        rows = Box::pin(rows.map(move |row| super::text_values::respell(row?, &respelled)));
    }
    let schema = match super::naming::described(&query.row_schema()) {
        Some(fields) => Arc::new(fields),
        None => query.row_schema(),
    };
    let mut guarded = QueryResponse::new(schema, guarded(rows, timeout, handle));
    guarded.set_command_tag(&tag);
    Response::Query(guarded)
}

struct State {
    rows: BoxStream<'static, PgWireResult<DataRow>>,
    timeout: Option<Duration>,
    handle: Option<Arc<ConnectionHandle>>,
    deadline: Option<tokio::time::Instant>,
    cancel: Option<futures::channel::oneshot::Receiver<()>>,
    started: bool,
    done: bool,
}

fn guarded(
    rows: BoxStream<'static, PgWireResult<DataRow>>,
    timeout: Option<Duration>,
    handle: Option<Arc<ConnectionHandle>>,
) -> BoxStream<'static, PgWireResult<DataRow>> {
    let state = State {
        rows,
        timeout,
        handle,
        deadline: None,
        cancel: None,
        started: false,
        done: false,
    };
    futures::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        if !s.started {
            // The statement runs from here: the handler has returned, and
            // pgwire no longer listens for a cancel.
            s.started = true;
            s.deadline = s.timeout.map(|t| tokio::time::Instant::now() + t);
            if let Some(handle) = &s.handle {
                s.cancel = Some(handle.start_query().await);
            }
        }
        let deadline = s.deadline;
        let State { rows, cancel, .. } = &mut s;
        let expired = async move {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let cancelled = async move {
            match cancel {
                // A dropped sender (a later statement took over) is no cancel.
                Some(rx) => {
                    if rx.await.is_err() {
                        std::future::pending::<()>().await
                    }
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            row = rows.next() => row.map(|row| (row, s)),
            () = expired => {
                s.done = true;
                Some((Err(error("57014", "canceling statement due to statement timeout".into())), s))
            }
            () = cancelled => {
                s.done = true;
                s.cancel = None;
                Some((Err(error("57014", "canceling statement due to user request".into())), s))
            }
        }
    })
    .boxed()
}

/// The extended protocol of `datafusion-postgres`, with guarded results,
/// each role on its own session of this connection (statements are
/// planned by the session of the role that runs them).
pub(super) struct Guarded {
    sessions: Arc<ConnectionSessions>,
    parser: Arc<RoleParser>,
}

impl Guarded {
    pub(super) fn new(sessions: Arc<ConnectionSessions>) -> Self {
        let parser = Arc::new(RoleParser {
            sessions: Arc::clone(&sessions),
        });
        Guarded { sessions, parser }
    }
}

type DfStatement = <DfSessionService as ExtendedQueryHandler>::Statement;

/// Plans with the session of the client's role.
pub(super) struct RoleParser {
    sessions: Arc<ConnectionSessions>,
}

#[async_trait]
impl QueryParser for RoleParser {
    type Statement = DfStatement;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        super::complexity::check(sql)?;
        // On the query runtime, as planning is (see `statements.rs`); the
        // rewrite names the columns too (`super::naming`).
        let rewritten = crate::executor::run(self.sessions.runtime(), async {
            super::rewrite::rewrite(sql, types)
        })
        .await;
        let sql = rewritten.as_deref().unwrap_or(sql);
        let role = super::auth::Role::of(client);
        if role == super::auth::Role::Analyst {
            // Refused at Parse, before anything is planned.
            super::statements::check_analyst_query(sql)?;
        }
        let session = self.sessions.of(role);
        let parser = session.service.query_parser();
        let parsed = crate::executor::run(
            self.sessions.runtime(),
            parser.parse_sql(client, sql, types),
        )
        .await?;
        Ok(match parsed {
            // Only a statement with parameters can have untyped ones.
            Some((text, Some((statement, plan)))) if sql.contains('$') => {
                let plan = super::rewrite::untyped_parameters_as_text(plan, types)
                    .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
                Some((text, Some((statement, plan))))
            }
            other => other,
        })
    }

    fn get_parameter_types(&self, stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        self.sessions
            .any()
            .service
            .query_parser()
            .get_parameter_types(stmt)
    }

    fn get_result_schema(
        &self,
        stmt: &Self::Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        let fields = self
            .sessions
            .any()
            .service
            .query_parser()
            .get_result_schema(stmt, column_format)?;
        Ok(super::naming::described(&fields).unwrap_or(fields))
    }
}

#[async_trait]
impl ExtendedQueryHandler for Guarded {
    type Statement = DfStatement;
    type QueryParser = RoleParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::clone(&self.parser)
    }

    /// A `FETCH` portal returns the rows of its cursor: describe those.
    async fn do_describe_portal<C>(
        &self,
        client: &mut C,
        target: &Portal<Self::Statement>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo
            + ClientPortalStore
            + futures::Sink<PgWireBackendMessage>
            + Unpin
            + Send
            + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        let cursor = super::cursors::fetched_cursor(&target.statement.statement)
            .and_then(|name| client.portal_store().get_portal(name))
            .and_then(|entry| entry.value().cloned());
        let (statement, format) = match &cursor {
            Some(cursor) => (&cursor.statement.statement, &cursor.result_column_format),
            None => (&target.statement.statement, &target.result_column_format),
        };
        let fields = self.parser.get_result_schema(statement, Some(format))?;
        Ok(DescribePortalResponse::new(fields))
    }

    /// pgwire's own Execute collects every row of an unlimited Execute
    /// (`max_rows = 0`) in memory before sending the first (`Portal::fetch`).
    /// A fresh portal of a query is streamed here instead, row by row;
    /// everything else (row limits, resumed portals, other statements) takes
    /// pgwire's path.
    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo
            + ClientPortalStore
            + futures::Sink<PgWireBackendMessage>
            + Unpin
            + Send
            + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message
            .name
            .as_deref()
            .unwrap_or(datafusion_postgres::pgwire::api::DEFAULT_NAME);
        let portal = match client.portal_store().get_portal(name) {
            Some(Entry::Value(portal)) => Some(portal),
            _ => None,
        };
        let streamable = match &portal {
            Some(portal) if message.max_rows == 0 => {
                matches!(client.state(), PgWireConnectionState::ReadyForQuery)
                    && matches!(
                        &portal.statement.statement,
                        (
                            _,
                            Some((datafusion::sql::sqlparser::ast::Statement::Query(_), _))
                        )
                    )
                    && matches!(*portal.state().lock().await, PortalExecutionState::Initial)
            }
            _ => false,
        };
        let (Some(portal), true) = (portal, streamable) else {
            return self._on_execute(client, message).await;
        };
        client.set_state(PgWireConnectionState::QueryInProgress);
        let response = self.do_query(client, portal.as_ref(), 0).await?;
        // A completed portal executed again returns no rows, as in PostgreSQL.
        *portal.state().lock().await = PortalExecutionState::Finished;
        match response {
            Response::Query(mut query) => {
                use futures::SinkExt;
                let tag = query.command_tag().to_owned();
                let mut rows = 0;
                while let Some(row) = query.data_rows().next().await {
                    client.feed(PgWireBackendMessage::DataRow(row?)).await?;
                    rows += 1;
                }
                client
                    .send(PgWireBackendMessage::CommandComplete(
                        Tag::new(&tag).with_rows(rows).into(),
                    ))
                    .await?;
            }
            Response::Execution(tag) => {
                use futures::SinkExt;
                client
                    .send(PgWireBackendMessage::CommandComplete(tag.into()))
                    .await?;
            }
            Response::EmptyQuery => {
                use futures::SinkExt;
                client
                    .send(PgWireBackendMessage::EmptyQueryResponse(
                        EmptyQueryResponse::new(),
                    ))
                    .await?;
            }
            _ => {
                return Err(error(
                    "XX000",
                    "a query answered with a response Panorama cannot stream".into(),
                ));
            }
        }
        client.set_state(PgWireConnectionState::ReadyForQuery);
        Ok(())
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo
            + ClientPortalStore
            + futures::Sink<PgWireBackendMessage>
            + Unpin
            + Send
            + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        super::panics::contained(self.query_portal(client, portal, max_rows)).await
    }
}

impl Guarded {
    /// [`ExtendedQueryHandler::do_query`], before a panic is contained.
    async fn query_portal<C>(
        &self,
        client: &mut C,
        portal: &Portal<DfStatement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo
            + ClientPortalStore
            + futures::Sink<PgWireBackendMessage>
            + Unpin
            + Send
            + Sync,
        C::PortalStore: PortalStore<Statement = DfStatement>,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        let role = super::auth::Role::of(client);
        if role == super::auth::Role::Analyst
            && let (_, Some((statement, _))) = &portal.statement.statement
        {
            super::auth::check_analyst(statement)?;
        }
        if let (_, Some((datafusion::sql::sqlparser::ast::Statement::Query(_), _))) =
            &portal.statement.statement
        {
            let wire_types = self
                .parser
                .get_parameter_types(&portal.statement.statement)?;
            let executor = &self.sessions.of(role).executor;
            let limit = timeout(client);
            let answer = crate::executor::run(
                self.sessions.runtime(),
                within_timeout(limit, async {
                    Ok(executor.query(client, portal, &wire_types).await)
                }),
            )
            .await?;
            if let Some(answer) = answer {
                return Ok(guard(answer?, client, self.sessions.runtime()));
            }
        }
        let service = &self.sessions.of(role).service;
        let response = crate::executor::run(
            self.sessions.runtime(),
            service.do_query(client, portal, max_rows),
        )
        .await?;
        Ok(guard(response, client, self.sessions.runtime()))
    }
}
