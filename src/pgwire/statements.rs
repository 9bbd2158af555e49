//! Panorama's own statements, in PostgreSQL spelling, so any SQL client can
//! drive it: `REFRESH MATERIALIZED VIEW cdp.<view>` runs a refresh.
//!
//! The SQL parser DataFusion uses has no `REFRESH MATERIALIZED VIEW`, so
//! this layer recognises the statement by its leading keywords (ignoring
//! case, spacing and comments) before handing everything else to
//! `datafusion-postgres`. The action itself is injected: this module knows
//! nothing of identity resolution or the lake.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion_postgres::DfSessionService;
use datafusion_postgres::pgwire::api::query::SimpleQueryHandler;
use datafusion_postgres::pgwire::api::results::{Response, Tag};
use datafusion_postgres::pgwire::api::store::PortalStore;
use datafusion_postgres::pgwire::api::{ClientInfo, ClientPortalStore};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::PgWireBackendMessage;
use futures::future::BoxFuture;

/// An action a statement triggers; the error is shown to the client.
pub type AdminAction = Arc<dyn Fn() -> BoxFuture<'static, Result<String, String>> + Send + Sync>;

/// The actions Panorama's statements run; `None` = not available here.
#[derive(Clone, Default)]
pub struct Actions {
    pub refresh: Option<AdminAction>,
}

/// The simple-query handler: Panorama's statements, then datafusion-postgres.
pub struct PanoramaStatements {
    inner: Arc<DfSessionService>,
    actions: Actions,
}

impl PanoramaStatements {
    pub fn new(inner: Arc<DfSessionService>, actions: Actions) -> Self {
        PanoramaStatements { inner, actions }
    }
}

/// The view named by a `REFRESH MATERIALIZED VIEW` statement, if `sql` is one.
pub fn refresh_target(sql: &str) -> Option<String> {
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

fn error(code: &str, message: String) -> PgWireError {
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
        let Some(view) = refresh_target(query) else {
            return self.inner.do_query(client, query).await;
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
            Err(message) => Err(error("XX000", format!("refresh failed: {message}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
