//! Who is asking: `current_user` / `session_user` (sqlparser turns
//! `current_user` into `session_user`) and `pg_backend_pid()` answer for
//! the connection whose statement is being planned, not with
//! `datafusion-pg-catalog`'s constant `postgres` and `1`.
//!
//! One `SessionContext` serves every connection of a role, so the answer
//! cannot live in the session: the protocol front end runs each connection
//! in its own task inside [`CONNECTION`]'s scope and fills in the user and
//! backend pid once the client is admitted. Planning runs in that task, and
//! both functions simplify to a literal there, so the plan that executes
//! (on whatever thread) carries the value of the connection that planned
//! it. Outside a connection (the CLI, jobs) the user is `panorama`.

use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::error::Result;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// What a connection's statements may ask about the connection.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    pub user: Option<String>,
    pub backend_pid: Option<i32>,
}

/// Shared by the connection's task and its start-up handler.
pub type ConnectionCell = Arc<Mutex<Connection>>;

tokio::task_local! {
    /// The connection the current task serves (set by the protocol front end).
    pub static CONNECTION: ConnectionCell;
}

/// The user of a task outside any connection.
const NO_CONNECTION_USER: &str = "panorama";

fn current() -> Connection {
    CONNECTION
        .try_with(|cell| cell.lock().map(|c| c.clone()).unwrap_or_default())
        .unwrap_or_default()
}

/// The backend pid `pg_backend_pid()` answers in the current task (the
/// rows of `pg_stat_ssl` and `pg_stat_gssapi` are the connection's).
pub fn backend_pid() -> i32 {
    current()
        .backend_pid
        .unwrap_or_else(|| std::process::id() as i32)
}

/// The user `current_user` answers in the current task.
pub fn user() -> String {
    current()
        .user
        .unwrap_or_else(|| NO_CONNECTION_USER.to_string())
}

/// Which fact of the connection a function answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Fact {
    User,
    BackendPid,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct ConnectionFunction {
    name: &'static str,
    fact: Fact,
    signature: Signature,
}

impl ConnectionFunction {
    fn value(&self) -> ScalarValue {
        let connection = current();
        match self.fact {
            Fact::User => ScalarValue::Utf8(Some(
                connection
                    .user
                    .unwrap_or_else(|| NO_CONNECTION_USER.to_string()),
            )),
            Fact::BackendPid => ScalarValue::Int32(Some(
                connection
                    .backend_pid
                    .unwrap_or_else(|| std::process::id() as i32),
            )),
        }
    }
}

impl ScalarUDFImpl for ConnectionFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(match self.fact {
            Fact::User => DataType::Utf8,
            Fact::BackendPid => DataType::Int32,
        })
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(self.value()))
    }

    /// Fixed at planning, in the connection's own task.
    fn simplify(&self, _args: Vec<Expr>, _info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        Ok(ExprSimplifyResult::Simplified(Expr::Literal(
            self.value(),
            None,
        )))
    }
}

fn function(name: &'static str, fact: Fact) -> ScalarUDF {
    ScalarUDF::new_from_impl(ConnectionFunction {
        name,
        fact,
        signature: Signature::exact(vec![], Volatility::Stable),
    })
}

/// `session_user` (what `current_user` and `user` become) and
/// `pg_backend_pid()`; registered after `datafusion-pg-catalog`'s, which
/// they replace.
pub fn functions() -> Vec<ScalarUDF> {
    vec![
        function("session_user", Fact::User),
        function("pg_backend_pid", Fact::BackendPid),
    ]
}
