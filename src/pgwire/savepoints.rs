//! `SAVEPOINT`, `RELEASE [SAVEPOINT]` and `ROLLBACK TO [SAVEPOINT]` inside a
//! read-only transaction, which `datafusion-postgres` does not know (it
//! refuses the first two and takes the third for a plain `ROLLBACK`).
//!
//! Drivers wrap probes in savepoints so a failing probe does not abort the
//! user's transaction: psycopg 3 (and so SQLAlchemy's first connect) runs
//! `SAVEPOINT "_pg3_1"; SELECT … to_regtype('hstore') …; RELEASE "_pg3_1"`.
//! Nothing here writes, so a savepoint has no data to restore: what it
//! keeps is the transaction's *state*. `ROLLBACK TO` a savepoint brings a
//! transaction that a failed statement aborted back into use, as in
//! PostgreSQL. The names are kept per connection to give PostgreSQL's
//! errors for an unknown savepoint or one used outside a transaction.

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{Ident, Statement};
use datafusion_postgres::QueryHook;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire::api::ClientInfo;
use datafusion_postgres::pgwire::api::results::{Response, Tag};
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::response::TransactionStatus;

use super::statements::{answered_without_rows, error};

/// Client metadata key of the open savepoints, oldest first, one per line.
/// (Not reachable by `SHOW`, which only reads `panorama.<name>` keys.)
const SAVEPOINTS_KEY: &str = "panorama/savepoints";

/// What a statement does to the savepoints.
enum Op<'a> {
    Set(&'a Ident),
    Release(&'a Ident),
    RollbackTo(&'a Ident),
    /// COMMIT or ROLLBACK: the transaction ends, its savepoints with it.
    End,
}

fn op(statement: &Statement) -> Option<Op<'_>> {
    match statement {
        Statement::Savepoint { name } => Some(Op::Set(name)),
        Statement::ReleaseSavepoint { name } => Some(Op::Release(name)),
        Statement::Rollback {
            savepoint: Some(name),
            ..
        } => Some(Op::RollbackTo(name)),
        Statement::Commit { .. } | Statement::Rollback { .. } => Some(Op::End),
        _ => None,
    }
}

/// Whether `query` is a `ROLLBACK TO [SAVEPOINT] name`.
pub(super) fn is_rollback_to(query: &str) -> bool {
    let dialect = datafusion::sql::sqlparser::dialect::PostgreSqlDialect {};
    datafusion::sql::sqlparser::parser::Parser::parse_sql(&dialect, query).is_ok_and(|s| {
        matches!(
            s.as_slice(),
            [Statement::Rollback {
                savepoint: Some(_),
                ..
            }]
        )
    })
}

fn open(client: &dyn HookClient) -> Vec<String> {
    client
        .metadata()
        .get(SAVEPOINTS_KEY)
        .map(|s| s.lines().map(String::from).collect())
        .unwrap_or_default()
}

fn keep(client: &mut dyn HookClient, names: &[String]) {
    client
        .metadata_mut()
        .insert(SAVEPOINTS_KEY.into(), names.join("\n"));
}

fn outside(command: &str) -> PgWireError {
    error(
        "25P01",
        format!("{command} can only be used in transaction blocks"),
    )
}

/// The newest open savepoint called `name` (identifiers compare as
/// PostgreSQL folds them: quoted as written, unquoted lower-cased).
fn find(names: &[String], name: &Ident) -> PgWireResult<usize> {
    let wanted = match name.quote_style {
        Some(_) => name.value.clone(),
        None => name.value.to_lowercase(),
    };
    names
        .iter()
        .rposition(|n| *n == wanted)
        .ok_or_else(|| error("3B001", format!("savepoint \"{wanted}\" does not exist")))
}

fn answer(statement: &Statement, client: &mut dyn HookClient) -> Option<PgWireResult<Response>> {
    let op = op(statement)?;
    let status = client.transaction_status();
    let mut names = open(client);
    let result = match op {
        Op::End => {
            client.metadata_mut().remove(SAVEPOINTS_KEY);
            return None;
        }
        // An aborted transaction takes nothing but ROLLBACK (TO) or COMMIT:
        // the transaction hook after this one says so.
        _ if status == TransactionStatus::Error && !matches!(op, Op::RollbackTo(_)) => {
            return None;
        }
        _ if status == TransactionStatus::Idle => Err(outside(match op {
            Op::Set(_) => "SAVEPOINT",
            Op::Release(_) => "RELEASE SAVEPOINT",
            _ => "ROLLBACK TO SAVEPOINT",
        })),
        Op::Set(name) => {
            names.push(match name.quote_style {
                Some(_) => name.value.clone(),
                None => name.value.to_lowercase(),
            });
            keep(client, &names);
            Ok(Response::Execution(Tag::new("SAVEPOINT")))
        }
        Op::Release(name) => find(&names, name).map(|at| {
            names.truncate(at);
            keep(client, &names);
            Response::Execution(Tag::new("RELEASE"))
        }),
        Op::RollbackTo(name) => find(&names, name).map(|at| {
            names.truncate(at + 1);
            keep(client, &names);
            client.set_transaction_status(TransactionStatus::Transaction);
            Response::Execution(Tag::new("ROLLBACK"))
        }),
    };
    Some(result)
}

/// The hook; install it before datafusion-postgres' transaction hook.
#[derive(Debug)]
pub(super) struct SavepointHook;

#[async_trait]
impl QueryHook for SavepointHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        answer(statement, client)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        match op(statement)? {
            Op::End => None,
            _ => Some(Ok(answered_without_rows())),
        }
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        answer(statement, client)
    }
}
