//! The PostgreSQL wire-protocol front end.
//!
//! Serves a ready `SessionContext` over a listener the caller has bound (so
//! tests bind port 0), reusing `datafusion-postgres` for the protocol
//! handlers, `pg_catalog`, `SET`/`SHOW`, transactions and type encoding
//! (`arrow-pg`). Panorama adds its own connection loop with a shutdown path,
//! cancel support, and [`errors`], which gives every failure a real SQLSTATE.
//! It knows the SQL session only: nothing of the lake or its layout.

pub mod auth;
mod complexity;
mod connection;
mod copy;
mod create_raw;
mod cursors;
pub mod errors;
mod execute;
mod floats;
mod limits;
mod naming;
pub mod panics;
mod planned;
pub mod rewrite;
mod savepoints;
mod session;
mod statements;
mod text_values;
pub mod tls;

pub use statements::{Actions, AdminAction, CallAction};

use std::future::Future;
use std::sync::Arc;

use datafusion::prelude::SessionContext;
use datafusion_postgres::pgwire::api::auth::StartupHandler;
use datafusion_postgres::pgwire::api::cancel::{CancelHandler, DefaultCancelHandler};
use datafusion_postgres::pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use datafusion_postgres::pgwire::api::{
    ConnectionManager, ErrorHandler, PgWireServerHandlers, RandomPidSecretKeyGenerator,
};
use datafusion_postgres::pgwire::tokio::process_socket;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::functions;

/// What every connection of one server shares.
struct Shared {
    bases: connection::RoleBases,
    actions: Actions,
    users: Arc<auth::Users>,
    policy: Arc<auth::LoginPolicy>,
    connections: Arc<ConnectionManager>,
    pids: Arc<RandomPidSecretKeyGenerator>,
    cancel: Arc<DefaultCancelHandler>,
}

/// The handlers of one connection: its own sessions
/// ([`connection::ConnectionSessions`]), the server's users and actions.
struct Handlers {
    shared: Arc<Shared>,
    simple: Arc<statements::PanoramaStatements>,
    session: Arc<limits::Guarded>,
}

impl Handlers {
    fn new(shared: Arc<Shared>) -> Handlers {
        let sessions = Arc::new(connection::ConnectionSessions::new(shared.bases.clone()));
        Handlers {
            simple: Arc::new(statements::PanoramaStatements::new(
                Arc::clone(&sessions),
                shared.actions.clone(),
            )),
            session: Arc::new(limits::Guarded::new(sessions)),
            shared,
        }
    }
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.simple)
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::clone(&self.session)
    }

    /// Called once per connection: each has its own SCRAM exchange.
    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::new(auth::Startup::new(
            Arc::clone(&self.shared.users),
            Arc::clone(&self.shared.policy),
            Arc::clone(&self.shared.connections),
            Arc::clone(&self.shared.pids),
        ))
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(errors::SqlStateErrors)
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::clone(&self.shared.cancel)
    }
}

/// Panorama's session answers first, then datafusion-postgres' hooks; the
/// statements none of them answers are planned on `runtime` within the
/// connection's `statement_timeout` ([`planned`]).
fn hooks(
    runtime: Option<&crate::executor::QueryHandle>,
) -> Vec<Arc<dyn datafusion_postgres::QueryHook>> {
    use datafusion_postgres::hooks::{cursor, set_show, transactions};
    vec![
        Arc::new(session::SessionHook),
        Arc::new(savepoints::SavepointHook),
        // Ahead of the cursor hooks: an aborted transaction refuses FETCH too.
        Arc::new(transactions::TransactionStatementHook),
        Arc::new(cursors::CursorHook),
        // CLOSE.
        Arc::new(cursor::CursorStatementHook),
        Arc::new(set_show::SetShowHook),
        Arc::new(planned::PlannedHook {
            runtime: runtime.cloned(),
        }),
    ]
}

/// One client's connection. pgwire 0.41.1 panics on some malformed
/// message bodies (it decodes past a message's stated length, found by
/// `tests/bad_input.rs`' fuzzing); the panic is caught here and the client
/// gets PostgreSQL's `08P01` error and a closed connection, as from
/// PostgreSQL, instead of a connection that just drops.
async fn serve_connection(
    socket: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    tls: Option<datafusion_postgres::pgwire::tokio::TlsAcceptor>,
    handlers: Handlers,
) {
    use futures::FutureExt;
    // A second handle on the socket, to answer after a panic.
    let (socket, spare) = match socket.into_std().and_then(|s| {
        let spare = s.try_clone()?;
        Ok((tokio::net::TcpStream::from_std(s)?, spare))
    }) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::warn!(%peer, "could not set up the connection: {e}");
            return;
        }
    };
    let encrypted = tls.is_some();
    let served = std::panic::AssertUnwindSafe(process_socket(socket, tls, Arc::new(handlers)))
        .catch_unwind()
        .await;
    match served {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::info!(%peer, "connection ended with an error: {e}"),
        Err(_) => {
            tracing::warn!(%peer, "closed a connection that sent a malformed message");
            // Over TLS the plain bytes would only garble the stream: close.
            if !encrypted {
                let _ = write_fatal(&spare, "08P01", "invalid frontend message format");
            }
            let _ = spare.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Write a FATAL ErrorResponse on a (non-blocking) socket, best effort.
fn write_fatal(socket: &std::net::TcpStream, code: &str, message: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut body = Vec::new();
    for (field, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', code),
        (b'M', message),
    ] {
        body.push(field);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut frame = vec![b'E'];
    frame.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    frame.extend(body);
    (&*socket).write_all(&frame)
}

/// Who may connect, and the session analysts query.
#[derive(Default)]
pub struct Access {
    /// Users asked for a SCRAM-SHA-256 password (none: every connection is
    /// trusted as `admin`).
    pub users: auth::Users,
    /// The session of the `analyst` role, with personal data masked at the
    /// scan (`EngineOptions::mask_personal_data`); without it analysts use
    /// the admin session.
    pub analyst: Option<Arc<SessionContext>>,
    /// TLS for clients that ask for it.
    pub tls: Option<datafusion_postgres::pgwire::tokio::TlsAcceptor>,
    /// Refuse clients that do not negotiate TLS.
    pub tls_required: bool,
    /// The runtime queries run on ([`crate::executor::QueryRuntime`]);
    /// `None`: the runtime `serve` is called on.
    pub query_runtime: Option<crate::executor::QueryHandle>,
}

/// Serve `ctx` (the admin role's session; `access` says who may connect
/// and gives the analysts' session) to every client that connects to
/// `listener` until `shutdown` resolves, with Panorama's own statements
/// (`REFRESH MATERIALIZED VIEW`, `CALL`) wired to `actions`; then stop
/// accepting and wait for open connections to end.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<SessionContext>,
    actions: Actions,
    access: Access,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let connections = Arc::new(ConnectionManager::new());
    let tls = access.tls;
    let shared = Arc::new(Shared {
        bases: connection::RoleBases {
            analyst: access.analyst.unwrap_or_else(|| Arc::clone(&ctx)),
            admin: ctx,
            runtime: access.query_runtime,
        },
        actions,
        users: Arc::new(access.users),
        policy: Arc::new(auth::LoginPolicy {
            tls_required: access.tls_required,
            throttle: Default::default(),
        }),
        connections: Arc::clone(&connections),
        pids: Arc::new(RandomPidSecretKeyGenerator::default()),
        cancel: Arc::new(DefaultCancelHandler::new(connections)),
    });
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let handlers = Handlers::new(Arc::clone(&shared));
                    let tls = tls.clone();
                    let connection = functions::session::ConnectionCell::default();
                    tasks.spawn(functions::session::CONNECTION.scope(
                        connection,
                        serve_connection(socket, peer, tls, handlers),
                    ));
                }
                // Out of file descriptors and the like: log, back off, go on.
                Err(e) => {
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = done
                    && e.is_panic()
                {
                    tracing::error!("a connection task panicked: {e}");
                }
            }
            () = &mut shutdown => break,
        }
    }
    tracing::info!(
        "shutting down: waiting for {} open connection(s)",
        tasks.len()
    );
    tasks.shutdown().await;
    Ok(())
}
