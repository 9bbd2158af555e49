//! The web console and the profile API that `panorama serve` also serves
//! (default `http://127.0.0.1:8080`): server-rendered HTML ([`pages`],
//! maud templates compiled in, one embedded stylesheet, charts drawn as
//! SVG by [`charts`]; no JavaScript build), for marketers who do not write
//! SQL — find a person, their 360° page, segments and a segment builder,
//! the voice of the customer, operations — and `GET
//! /api/v1/profiles/{id_type}/{value}` for websites ([`api`]).
//!
//! Custody is the Postgres front end's: the same users, passwords and
//! roles ([`auth`]); every page reads through the role's SQL session, so
//! an analyst sees personal data masked exactly as over SQL, and rows read
//! by identifier (the timeline) are masked by the same rules before they
//! are shown ([`data`]). Without configured users it only listens on
//! loopback and everyone is an administrator, as `serve` does.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use datafusion::prelude::SessionContext;
use serde::Deserialize;

use crate::catalog::masking::MaskPolicy;
use crate::collect::CollectorStats;
use crate::collect::recent::Recent;
use crate::identity::IdentityConfig;
use crate::lake::Lake;
use crate::pgwire::auth::{Role, Users};

mod api;
mod auth;
mod builder;
mod cache;
mod charts;
mod data;
mod pages;

/// Default address of the console (loopback only).
pub const DEFAULT_CONSOLE_ADDR: &str = "127.0.0.1:8080";

/// `[console]` in `panorama.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Serve the console with `serve` (`--no-console` turns it off).
    pub enabled: bool,
    pub listen: SocketAddr,
    /// `[[console.tokens]]`: one per application calling the profile API.
    pub tokens: Vec<ApiToken>,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            enabled: true,
            listen: DEFAULT_CONSOLE_ADDR
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8080))),
            tokens: Vec::new(),
        }
    }
}

/// An application's token for the profile API: only its SHA-256 is kept
/// (`printf %s "$TOKEN" | sha256sum`), with the role its answers are
/// masked for.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    pub name: String,
    pub token_sha256: String,
    pub role: Role,
}

impl ConsoleConfig {
    pub fn validate(&self) -> Result<(), String> {
        for token in &self.tokens {
            let hex = token.token_sha256.trim();
            if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(format!(
                    "[[console.tokens]] {}: token_sha256 must be 64 hex digits (printf %s \"$TOKEN\" | sha256sum)",
                    token.name
                ));
            }
        }
        Ok(())
    }
}

/// What the console reads from and answers with.
pub struct Console {
    pub(crate) lake: Lake,
    pub(crate) identity: IdentityConfig,
    /// The administrators' session and the analysts' (masked) one.
    pub(crate) admin: Arc<SessionContext>,
    pub(crate) analyst: Arc<SessionContext>,
    pub(crate) policy: Arc<MaskPolicy>,
    pub(crate) auth: auth::Auth,
    /// The collector's recent events and counters, when it runs here.
    pub(crate) recent: Option<Arc<Recent>>,
    pub(crate) collector: Option<Box<dyn Fn() -> CollectorStats + Send + Sync>>,
    /// The profile API's in-memory copy of the profiles.
    pub(crate) cache: Arc<cache::ProfileCache>,
}

impl Console {
    /// A console over these sessions; `users` empty: no login, everyone
    /// is an administrator (only allowed on loopback, see [`serve`]).
    pub fn new(
        lake: Lake,
        identity: IdentityConfig,
        admin: Arc<SessionContext>,
        analyst: Arc<SessionContext>,
        users: Users,
        config: &ConsoleConfig,
    ) -> Console {
        let policy = MaskPolicy::of_session(&analyst.state());
        Console {
            lake,
            identity,
            admin,
            analyst,
            policy,
            auth: auth::Auth::new(users, &config.tokens),
            recent: None,
            collector: None,
            cache: Arc::default(),
        }
    }

    /// Show the events the collector running in this process accepts.
    pub fn with_collector(
        mut self,
        recent: Arc<Recent>,
        stats: impl Fn() -> CollectorStats + Send + Sync + 'static,
    ) -> Console {
        self.recent = Some(recent);
        self.collector = Some(Box::new(stats));
        self
    }

    /// The SQL session of `role`.
    pub(crate) fn session(&self, role: Role) -> &SessionContext {
        match role {
            Role::Admin => &self.admin,
            Role::Analyst => &self.analyst,
        }
    }
}

/// Serve the console on `listener` until `shutdown` resolves. Refuses a
/// non-loopback address without configured users.
pub async fn serve(
    listener: tokio::net::TcpListener,
    console: Arc<Console>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    if console.auth.open() && !addr.ip().is_loopback() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "refusing to serve the console on {addr} without users: add [[users]] to panorama.toml or listen on 127.0.0.1"
            ),
        ));
    }
    axum::serve(listener, router(console))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Every route of the console and the API.
pub fn router(console: Arc<Console>) -> Router {
    pages::routes()
        .merge(api::routes())
        .layer(axum::middleware::map_response(security_headers))
        .with_state(console)
}

/// Headers on every answer: no framing, no sniffing, no referrer, a
/// content security policy that allows only this origin's styles and
/// images (the pages run no script).
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let set = |value: &'static str| HeaderValue::from_static(value);
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        set("default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    );
    headers.insert(header::X_FRAME_OPTIONS, set("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, set("nosniff"));
    headers.insert(header::REFERRER_POLICY, set("no-referrer"));
    headers.insert(header::CACHE_CONTROL, set("no-store"));
    response
}

/// An answer for a failure: the page (or JSON for the API) says what went
/// wrong without quoting a value.
pub(crate) fn failure(status: axum::http::StatusCode, message: &str) -> Response {
    let message = crate::redact::values(message);
    (status, pages::error_page(status, &message)).into_response()
}
