//! Panorama's own statements, in PostgreSQL spelling, so any SQL client can
//! drive it: `REFRESH MATERIALIZED VIEW cdp.<view>` runs a refresh and
//! `CALL panorama.<procedure>('arg', ...)` runs an administrative procedure
//! (identity blocks).
//!
//! The SQL parser DataFusion uses has no `REFRESH MATERIALIZED VIEW`, so
//! this layer recognises the statement by its leading keywords (ignoring
//! case, spacing and comments) before handing everything else to
//! `datafusion-postgres`. The action itself is injected: this module knows
//! nothing of identity resolution or the lake.

use std::fmt::Debug;
use std::sync::Arc;

use super::connection::ConnectionSessions;
use async_trait::async_trait;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use datafusion_postgres::pgwire::api::query::SimpleQueryHandler;
use datafusion_postgres::pgwire::api::results::{Response, Tag};
use datafusion_postgres::pgwire::api::store::PortalStore;
use datafusion_postgres::pgwire::api::{ClientInfo, ClientPortalStore};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::PgWireBackendMessage;
use datafusion_postgres::pgwire::messages::response::TransactionStatus;
use futures::future::BoxFuture;

/// An action a statement triggers: a summary for the log, or the error
/// shown to the client (its SQLSTATE from its variant, `super::errors`).
pub type AdminAction =
    Arc<dyn Fn() -> BoxFuture<'static, crate::error::Result<String>> + Send + Sync>;

/// A procedure run by `CALL panorama.<name>('arg', ...)`: gets the
/// procedure name and the text arguments.
pub type CallAction = Arc<
    dyn Fn(String, Vec<String>) -> BoxFuture<'static, crate::error::Result<String>> + Send + Sync,
>;

/// The actions Panorama's statements run; `None` = not available here.
#[derive(Clone, Default)]
pub struct Actions {
    pub refresh: Option<AdminAction>,
    pub call: Option<CallAction>,
}

/// `(procedure, arguments)` of a `CALL panorama.<procedure>(...)`
/// statement; `Some(Err)` for a CALL that is malformed.
pub(super) fn call_target(sql: &str) -> Option<Result<(String, Vec<String>), String>> {
    use datafusion::sql::sqlparser::ast::{
        Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Statement, Value,
    };
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    let head = sql.trim_start();
    if !head
        .get(..5)
        .is_some_and(|h| h.eq_ignore_ascii_case("call "))
    {
        return None;
    }
    let parsed = match Parser::parse_sql(&PostgreSqlDialect {}, sql) {
        Ok(mut statements) if statements.len() == 1 => statements.remove(0),
        Ok(_) => return Some(Err("send one CALL statement at a time".into())),
        Err(e) => return Some(Err(e.to_string())),
    };
    let Statement::Call(function) = parsed else {
        return None;
    };
    let name: Vec<String> = function
        .name
        .0
        .iter()
        .map(|p| p.to_string().trim_matches('"').to_lowercase())
        .collect();
    let procedure = match name.as_slice() {
        [schema, p] if schema == "panorama" => p.clone(),
        [p] => p.clone(),
        _ => return Some(Err(format!("unknown procedure {}", function.name))),
    };
    let mut args = Vec::new();
    if let FunctionArguments::List(list) = &function.args {
        for arg in &list.args {
            match arg {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v))) => match &v.value {
                    Value::SingleQuotedString(s) => args.push(s.clone()),
                    Value::Number(n, _) => args.push(n.clone()),
                    other => {
                        return Some(Err(format!(
                            "argument {other} of {procedure} must be a string"
                        )));
                    }
                },
                other => {
                    return Some(Err(format!(
                        "argument {other} of {procedure} must be a literal"
                    )));
                }
            }
        }
    }
    Some(Ok((procedure, args)))
}

/// The simple-query handler of one connection: Panorama's statements,
/// then datafusion-postgres.
pub(super) struct PanoramaStatements {
    sessions: Arc<ConnectionSessions>,
    actions: Actions,
}

impl PanoramaStatements {
    pub(super) fn new(sessions: Arc<ConnectionSessions>, actions: Actions) -> Self {
        PanoramaStatements { sessions, actions }
    }
}

/// The view named by a `REFRESH MATERIALIZED VIEW` statement, if `sql` is one.
pub(super) fn refresh_target(sql: &str) -> Option<String> {
    let words: Vec<String> = sql
        .lines()
        .map(|l| l.split("--").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join(" ")
        .split_whitespace()
        .map(|w| w.trim_end_matches(';').to_string())
        .filter(|w| !w.is_empty())
        .collect();
    let upper: Vec<String> = words.iter().map(|w| w.to_uppercase()).collect();
    match upper.as_slice() {
        [a, b, c, rest @ ..] if a == "REFRESH" && b == "MATERIALIZED" && c == "VIEW" => {
            let name = rest.iter().find(|w| *w != "CONCURRENTLY")?;
            Some(name.to_lowercase().trim_matches('"').to_string())
        }
        _ => None,
    }
}

/// Refuse (42501) a query of the analyst role (simple, or a Parse of the
/// extended protocol) unless every statement in it is one the role may
/// run; what cannot be parsed is refused too (fail closed).
pub(super) fn check_analyst_query(query: &str) -> PgWireResult<()> {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    if refresh_target(query).is_some() {
        return Err(super::auth::read_only("REFRESH"));
    }
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, query)
        .map_err(|_| super::auth::read_only("a statement that is not a query"))?;
    statements.iter().try_for_each(super::auth::check_analyst)
}

/// The plan a hook gives at Parse for a statement it answers itself
/// without rows (its answer comes at Execute).
pub(super) fn answered_without_rows() -> datafusion::logical_expr::LogicalPlan {
    datafusion::logical_expr::LogicalPlan::EmptyRelation(datafusion::logical_expr::EmptyRelation {
        produce_one_row: false,
        schema: Arc::new(datafusion::common::DFSchema::empty()),
    })
}

pub(super) fn error(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        code.into(),
        message,
    )))
}

#[async_trait]
impl SimpleQueryHandler for PanoramaStatements {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo
            + ClientPortalStore
            + futures::Sink<PgWireBackendMessage>
            + Unpin
            + Send
            + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        // PostgreSQL runs a multi-statement query one statement at a time:
        // the results before a failing statement are sent, then its error,
        // and nothing after it runs. Each statement sees the transaction
        // state the ones before it left (`BEGIN; SAVEPOINT a`).
        let mut responses = Vec::new();
        for statement in split_statements(query) {
            match super::panics::contained(self.one_statement(client, statement)).await {
                Ok(done) => {
                    for response in &done {
                        let status = client.transaction_status();
                        client.set_transaction_status(match response {
                            Response::TransactionStart(_) => status.to_in_transaction_state(),
                            Response::TransactionEnd(_) => status.to_idle_state(),
                            Response::Error(_) => status.to_error_state(),
                            _ => status,
                        });
                    }
                    responses.extend(done);
                }
                Err(e) if responses.is_empty() => return Err(e),
                Err(e) => {
                    responses.push(Response::Error(Box::new(super::errors::to_info(e))));
                    break;
                }
            }
        }
        Ok(responses)
    }

    /// `ROLLBACK TO` a savepoint takes an aborted transaction back into
    /// use; pgwire's bookkeeping only knows that ROLLBACK ends one, so the
    /// state is set before the statement runs (an unknown savepoint then
    /// aborts it again).
    async fn on_query<C>(
        &self,
        client: &mut C,
        query: datafusion_postgres::pgwire::messages::simplequery::Query,
    ) -> PgWireResult<()>
    where
        C: ClientInfo
            + ClientPortalStore
            + futures::Sink<PgWireBackendMessage>
            + Unpin
            + Send
            + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        if client.transaction_status() == TransactionStatus::Error
            && super::savepoints::is_rollback_to(&query.query)
        {
            client.set_transaction_status(TransactionStatus::Transaction);
        }
        self._on_query(client, query).await
    }
}

impl PanoramaStatements {
    async fn one_statement<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo
            + ClientPortalStore
            + futures::Sink<PgWireBackendMessage>
            + Unpin
            + Send
            + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
    {
        super::complexity::check(query)?;
        let role = super::auth::Role::of(client);
        if role == super::auth::Role::Analyst {
            check_analyst_query(query)?;
        }
        let session = self.sessions.of(role);
        let runtime = self.sessions.runtime();
        if let Some(copy) = super::copy::copy_to_stdout(query) {
            let (query, format) = copy?;
            let response =
                crate::executor::run(runtime, super::copy::run(&session.ctx, &query, format))
                    .await?;
            return Ok(vec![super::limits::guard(response, client, runtime)]);
        }
        if let Some(call) = call_target(query) {
            let (procedure, args) = call.map_err(|e| error("42601", e))?;
            let Some(action) = &self.actions.call else {
                return Err(error(
                    "0A000",
                    "CALL is not available on this server".into(),
                ));
            };
            return match action(procedure.clone(), args).await {
                Ok(summary) => {
                    tracing::info!("CALL {procedure}: {summary}");
                    Ok(vec![Response::Execution(Tag::new("CALL"))])
                }
                Err(e) => Err(super::errors::of_lake(&e, "")),
            };
        }
        let Some(view) = refresh_target(query) else {
            // Parsing and rewriting a long text is CPU work: on the query
            // runtime, as planning is, not on the one that answers others.
            let rewritten =
                crate::executor::run(runtime, async { super::rewrite::rewrite(query, &[]) }).await;
            let query = rewritten.as_deref().unwrap_or(query);
            let limit = super::limits::timeout(client);
            let responses = crate::executor::run(
                runtime,
                super::limits::within_timeout(limit, session.service.do_query(client, query)),
            )
            .await?;
            return Ok(responses
                .into_iter()
                .map(|r| super::session::show_named(query, r))
                .map(|r| super::limits::guard(r, client, runtime))
                .collect());
        };
        if !view.starts_with("cdp.") {
            return Err(error(
                "42809",
                format!("\"{view}\" is not a materialized view (the cdp.* views are)"),
            ));
        }
        let Some(refresh) = &self.actions.refresh else {
            return Err(error(
                "0A000",
                "refresh is not available on this server".into(),
            ));
        };
        match refresh().await {
            Ok(summary) => {
                tracing::info!("REFRESH MATERIALIZED VIEW {view}: {summary}");
                Ok(vec![Response::Execution(Tag::new(
                    "REFRESH MATERIALIZED VIEW",
                ))])
            }
            Err(e) => Err(super::errors::of_lake(&e, "refresh failed: ")),
        }
    }
}

/// The statements of a simple query, as text, split at the semicolons the
/// SQL tokenizer finds outside strings, identifiers and comments. Text the
/// tokenizer cannot read stays whole, for the parser to report.
fn split_statements(query: &str) -> Vec<&str> {
    if !query.contains(';') {
        return vec![query];
    }
    let dialect = PostgreSqlDialect {};
    let Ok(tokens) = Tokenizer::new(&dialect, query).tokenize_with_location() else {
        return vec![query];
    };
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(query.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    // Locations are 1-based lines and columns counted in characters.
    let offset = |line: u64, column: u64| -> Option<usize> {
        let start = *line_starts.get(usize::try_from(line).ok()?.checked_sub(1)?)?;
        let column = usize::try_from(column).ok()?.checked_sub(1)?;
        Some(
            query[start..]
                .char_indices()
                .nth(column)
                .map_or(query.len(), |(i, _)| start + i),
        )
    };
    let mut statements = Vec::new();
    let mut from = 0;
    for token in &tokens {
        if token.token == Token::SemiColon {
            let Some(at) = offset(token.span.start.line, token.span.start.column) else {
                return vec![query];
            };
            statements.push(&query[from..at]);
            from = at + 1;
        }
    }
    statements.push(&query[from..]);
    let kept: Vec<&str> = statements
        .into_iter()
        .filter(|s| {
            // Only whitespace and comments: nothing to run.
            Tokenizer::new(&dialect, s)
                .tokenize()
                .map(|t| t.iter().any(|t| !matches!(t, Token::Whitespace(_))))
                .unwrap_or(true)
        })
        .collect();
    if kept.is_empty() { vec![query] } else { kept }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_queries_split_at_semicolons_outside_strings_and_comments() {
        assert_eq!(
            split_statements("BEGIN; SELECT ';' AS \"a;b\" -- c;d\n; SAVEPOINT x;"),
            vec!["BEGIN", " SELECT ';' AS \"a;b\" -- c;d\n", " SAVEPOINT x"]
        );
        assert_eq!(
            split_statements("SELECT 'é;'; /* ; */ SELECT 2"),
            vec!["SELECT 'é;'", " /* ; */ SELECT 2"]
        );
        assert_eq!(split_statements("SELECT 1"), vec!["SELECT 1"]);
        assert_eq!(split_statements("SELECT 'open"), vec!["SELECT 'open"]);
    }

    #[test]
    fn refresh_statements_are_recognised_in_any_spelling() {
        assert_eq!(
            refresh_target("REFRESH MATERIALIZED VIEW cdp.profiles;").as_deref(),
            Some("cdp.profiles")
        );
        assert_eq!(
            refresh_target("  refresh materialized view\n concurrently CDP.Profiles").as_deref(),
            Some("cdp.profiles")
        );
        assert_eq!(refresh_target("SELECT 'REFRESH MATERIALIZED VIEW x'"), None);
        assert_eq!(refresh_target("REFRESH"), None);
    }

    #[test]
    fn call_statements_give_procedure_and_text_arguments() {
        let (p, args) = call_target("CALL panorama.block_identifier('email', 'a''b@x.com')")
            .unwrap()
            .unwrap();
        assert_eq!(p, "block_identifier");
        assert_eq!(args, vec!["email".to_string(), "a'b@x.com".to_string()]);
        assert!(call_target("SELECT 1").is_none());
        assert!(
            call_target("CALL panorama.block_identifier(email)")
                .unwrap()
                .is_err()
        );
        assert!(call_target("CALL other.thing('x')").unwrap().is_err());
    }
}
