//! One connection's SQL sessions: each connection plans and runs its
//! statements in a `SessionContext` of its own, made from its role's
//! server-wide session when the role first runs something. Tables,
//! functions and the memory pool are shared (they live behind `Arc`s in the
//! server-wide session); settings are not, so one client's `SET
//! datafusion.…` changes its own connection only. `DISCARD ALL` and `RESET
//! ALL` take the settings back to the server-wide ones
//! ([`reset_options`]).

use std::sync::{Arc, OnceLock};

use crate::executor::QueryHandle;
use datafusion::config::ConfigOptions;
use datafusion::prelude::SessionContext;
use datafusion_postgres::DfSessionService;

use super::auth::Role;
use super::execute::Executor;

/// The server-wide session of each role, shared by every connection.
#[derive(Clone)]
pub(super) struct RoleBases {
    pub admin: Arc<SessionContext>,
    /// Personal data masked at the scan.
    pub analyst: Arc<SessionContext>,
    /// Where queries run ([`crate::executor`]); `None`: on the caller's
    /// runtime.
    pub runtime: Option<QueryHandle>,
}

/// One role's session on one connection.
pub(super) struct RoleSession {
    pub service: Arc<DfSessionService>,
    pub ctx: Arc<SessionContext>,
    pub executor: Executor,
}

/// The server-wide settings a connection started from, kept in its
/// session's config for `DISCARD ALL` / `RESET ALL`.
#[derive(Debug)]
struct BaseOptions(ConfigOptions);

impl RoleSession {
    fn new(base: &SessionContext, runtime: Option<&QueryHandle>) -> RoleSession {
        let mut state = base.state();
        let options = (**state.config().options()).clone();
        state
            .config_mut()
            .set_extension(Arc::new(BaseOptions(options)));
        let ctx = Arc::new(SessionContext::new_with_state(state));
        RoleSession {
            service: Arc::new(DfSessionService::new_with_hooks(
                Arc::clone(&ctx),
                super::hooks(runtime),
            )),
            executor: Executor {
                ctx: Arc::clone(&ctx),
                hooks: super::hooks(runtime),
                runtime: runtime.cloned(),
            },
            ctx,
        }
    }
}

/// The sessions of one connection, made on first use.
pub(super) struct ConnectionSessions {
    bases: RoleBases,
    admin: OnceLock<RoleSession>,
    analyst: OnceLock<RoleSession>,
}

impl ConnectionSessions {
    pub(super) fn new(bases: RoleBases) -> ConnectionSessions {
        ConnectionSessions {
            bases,
            admin: OnceLock::new(),
            analyst: OnceLock::new(),
        }
    }

    /// The session `role` plans and runs in on this connection.
    pub(super) fn of(&self, role: Role) -> &RoleSession {
        match role {
            Role::Admin => self
                .admin
                .get_or_init(|| RoleSession::new(&self.bases.admin, self.runtime())),
            Role::Analyst => self
                .analyst
                .get_or_init(|| RoleSession::new(&self.bases.analyst, self.runtime())),
        }
    }

    /// A session already made on this connection (for what does not depend
    /// on the role, such as describing a statement already planned).
    pub(super) fn any(&self) -> &RoleSession {
        match (self.analyst.get(), self.admin.get()) {
            (Some(session), _) | (None, Some(session)) => session,
            (None, None) => self.of(Role::Analyst),
        }
    }

    /// The query runtime, if queries run apart from the protocol.
    pub(super) fn runtime(&self) -> Option<&QueryHandle> {
        self.bases.runtime.as_ref()
    }
}

/// Take `ctx`'s settings back to those its connection started with.
pub(super) fn reset_options(ctx: &SessionContext) {
    let state = ctx.state_ref();
    let mut state = state.write();
    let Some(base) = state.config().get_extension::<BaseOptions>() else {
        return;
    };
    *state.config_mut().options_mut() = base.0.clone();
}

/// The value engine setting `name` had when the connection started.
pub(super) fn base_value(
    state: &datafusion::execution::SessionState,
    name: &str,
) -> Option<String> {
    let base = state.config().get_extension::<BaseOptions>()?;
    base.0
        .entries()
        .into_iter()
        .find(|entry| entry.key == name)
        .and_then(|entry| entry.value)
}
