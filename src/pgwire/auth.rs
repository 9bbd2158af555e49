//! Who may connect, and as which role: users with SCRAM-SHA-256 verifiers
//! (PostgreSQL's own format, `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`,
//! so a verifier can be copied from `pg_authid` or made with
//! `panorama passwd`), the SCRAM-SHA-256 exchange on the wire (RFC 5802 /
//! 7677, without channel binding), and the two built-in roles.
//!
//! pgwire ships a SCRAM handler, but it needs the *salted password* of each
//! user, which lets whoever reads the configuration log in; the verifier
//! kept here (StoredKey, ServerKey) only lets the server check a proof.
//! The arithmetic is small and written out below with `sha2`. Without
//! users, connections are trusted as `admin` (the loopback default).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use datafusion_postgres::pgwire::api::auth::{
    DefaultServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use datafusion_postgres::pgwire::api::{
    ClientInfo, ConnectionGuard, ConnectionHandle, ConnectionManager, PgWireConnectionState,
    PidSecretKeyGenerator, RandomPidSecretKeyGenerator,
};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::startup::Authentication;
use datafusion_postgres::pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use futures::{Sink, SinkExt};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::functions;

/// Who a connection authenticated as. Kept in the connection's typed
/// extensions, which nothing a client sends can write (start-up
/// parameters, `SET`, `RESET` and `DISCARD` only reach its text metadata).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    pub role: Role,
}

/// The built-in roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything: DDL, refresh, jobs, procedures.
    Admin,
    /// Read-only.
    Analyst,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Analyst => "analyst",
        }
    }

    /// `admin` or `analyst`, whichever belongs to this role.
    pub fn pick<'a, T: ?Sized>(self, admin: &'a T, analyst: &'a T) -> &'a T {
        match self {
            Role::Admin => admin,
            Role::Analyst => analyst,
        }
    }

    /// The role a connected client authenticated as (admin when no users
    /// are configured). A connection without one fails closed: it gets
    /// the least privileged role.
    pub fn of(client: &(impl ClientInfo + ?Sized)) -> Role {
        client
            .session_extensions()
            .get::<Authenticated>()
            .map_or(Role::Analyst, |a| a.role)
    }
}

/// One `[[users]]` entry of `panorama.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// A SCRAM-SHA-256 verifier (`panorama passwd` prints one).
    pub password: String,
    pub role: Role,
}

/// A parsed SCRAM-SHA-256 verifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl Verifier {
    /// Parse PostgreSQL's text form.
    pub fn parse(text: &str) -> Result<Verifier, String> {
        let bad = || {
            "not a SCRAM-SHA-256 verifier (expected \
             SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>; `panorama passwd` makes one)"
                .to_string()
        };
        let rest = text.strip_prefix("SCRAM-SHA-256$").ok_or_else(bad)?;
        let (params, keys) = rest.split_once('$').ok_or_else(bad)?;
        let (iterations, salt) = params.split_once(':').ok_or_else(bad)?;
        let (stored, server) = keys.split_once(':').ok_or_else(bad)?;
        let decode = |s: &str| STANDARD.decode(s).map_err(|_| bad());
        let verifier = Verifier {
            iterations: iterations.parse().map_err(|_| bad())?,
            salt: decode(salt)?,
            stored_key: decode(stored)?,
            server_key: decode(server)?,
        };
        if verifier.stored_key.len() != 32 || verifier.server_key.len() != 32 {
            return Err(bad());
        }
        Ok(verifier)
    }

    /// The verifier of `password` with `salt` (16 random bytes in practice).
    pub fn make(password: &str, salt: &[u8], iterations: u32) -> Verifier {
        let salted = hi(password.as_bytes(), salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        Verifier {
            iterations,
            salt: salt.to_vec(),
            stored_key: Sha256::digest(client_key).to_vec(),
            server_key: hmac(&salted, b"Server Key").to_vec(),
        }
    }

    /// PostgreSQL's text form.
    pub fn to_text(&self) -> String {
        format!(
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(&self.stored_key),
            STANDARD.encode(&self.server_key)
        )
    }
}

use crate::keyed::hmac_sha256 as hmac;

/// `Hi()` of RFC 5802: PBKDF2 with HMAC-SHA-256, one block.
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut first = salt.to_vec();
    first.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(password, &first);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &u);
        for (o, b) in out.iter_mut().zip(u) {
            *o ^= b;
        }
    }
    out
}

/// The configured users, by name.
#[derive(Debug, Clone, Default)]
pub struct Users(BTreeMap<String, (Verifier, Role)>);

impl Users {
    pub fn from_config(users: &[UserConfig]) -> Result<Users, String> {
        let mut map = BTreeMap::new();
        for u in users {
            let verifier =
                Verifier::parse(&u.password).map_err(|e| format!("user '{}': {e}", u.name))?;
            if map.insert(u.name.clone(), (verifier, u.role)).is_some() {
                return Err(format!("user '{}' is declared twice", u.name));
            }
        }
        Ok(Users(map))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The role of `name` if `password` is theirs (checked against the
    /// same verifier as a SCRAM login: the web console's login form).
    pub fn check_password(&self, name: &str, password: &str) -> Option<Role> {
        let (verifier, role) = self.0.get(name)?;
        let tried = Verifier::make(password, &verifier.salt, verifier.iterations);
        let same = tried
            .stored_key
            .iter()
            .zip(&verifier.stored_key)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
        same.then_some(*role)
    }
}

/// Whether the read-only `analyst` role may run `statement`: queries,
/// `EXPLAIN`, `SHOW`, `SET`, transactions and cursors, `COPY … TO STDOUT`.
pub fn analyst_may(statement: &datafusion::sql::sqlparser::ast::Statement) -> bool {
    use datafusion::sql::sqlparser::ast::{CopyTarget, Statement as S};
    matches!(
        statement,
        S::Query(_)
            | S::Explain { .. }
            | S::ExplainTable { .. }
            | S::ShowVariable { .. }
            | S::ShowVariables { .. }
            | S::ShowTables { .. }
            | S::ShowColumns { .. }
            | S::ShowFunctions { .. }
            | S::ShowSchemas { .. }
            | S::Set(_)
            | S::StartTransaction { .. }
            | S::Commit { .. }
            | S::Rollback { .. }
            | S::Discard { .. }
            | S::Declare { .. }
            | S::Fetch { .. }
            | S::Close { .. }
            | S::Deallocate { .. }
            | S::Copy {
                to: true,
                target: CopyTarget::Stdout,
                ..
            }
    )
}

/// `Ok` when the analyst role may run `statement`, else the 42501 error
/// naming the statement by its first two words.
pub fn check_analyst(statement: &datafusion::sql::sqlparser::ast::Statement) -> PgWireResult<()> {
    if analyst_may(statement) {
        return Ok(());
    }
    let text = statement.to_string();
    let head: Vec<&str> = text.split_whitespace().take(2).collect();
    Err(read_only(&head.join(" ")))
}

/// The error an analyst gets for anything else.
pub fn read_only(what: &str) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        "42501".into(),
        format!("permission denied: the analyst role is read-only ({what})"),
    )))
}

fn fatal(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".into(),
        code.into(),
        message,
    )))
}

/// Start-up parameters a client may send that mean something here (what
/// libpq, pgjdbc, Npgsql, psycopg and ODBC send). Every other one is
/// dropped before the connection's metadata is used: nothing a client
/// names at start-up may reach Panorama's own per-connection state.
const STARTUP_PARAMETERS: &[&str] = &[
    "user",
    "database",
    "application_name",
    "client_encoding",
    "datestyle",
    "timezone",
    "extra_float_digits",
    "intervalstyle",
    "bytea_output",
    "search_path",
];

fn keep_known_startup_parameters(client: &mut (impl ClientInfo + ?Sized)) {
    client.metadata_mut().retain(|key, _| {
        let known = STARTUP_PARAMETERS.contains(&key.to_ascii_lowercase().as_str());
        if !known {
            tracing::debug!(parameter = %key, "ignored an unknown start-up parameter");
        }
        known
    });
}

/// How logins are policed: TLS required or not, and the throttle of
/// failed password attempts.
#[derive(Debug, Default)]
pub struct LoginPolicy {
    /// Refuse connections that did not negotiate TLS (`[tls] require`).
    pub tls_required: bool,
    pub throttle: Throttle,
}

/// Failed logins per client address. After a failure, every further
/// attempt from that address waits before its password is checked: 100 ms
/// after one failure, doubling with each one up to 10 s, forgotten 10
/// minutes after the last failure or at a successful login. Connections in
/// parallel share the wait, so one address tries a few passwords a second
/// at most, not hundreds.
#[derive(Debug, Default)]
pub struct Throttle {
    failures:
        std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, (u32, std::time::Instant)>>,
}

impl Throttle {
    const FORGET_AFTER: std::time::Duration = std::time::Duration::from_secs(600);
    const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
    /// Addresses remembered at most (the oldest are forgotten first).
    const MAX_ADDRESSES: usize = 100_000;

    /// How long the next attempt from `ip` waits.
    pub fn penalty(&self, ip: std::net::IpAddr) -> std::time::Duration {
        let Ok(failures) = self.failures.lock() else {
            return Self::MAX_WAIT;
        };
        match failures.get(&ip) {
            Some((n, at)) if at.elapsed() < Self::FORGET_AFTER && *n > 0 => {
                let exponent = (*n - 1).min(10);
                (std::time::Duration::from_millis(100) * (1 << exponent)).min(Self::MAX_WAIT)
            }
            _ => std::time::Duration::ZERO,
        }
    }

    pub fn failed(&self, ip: std::net::IpAddr) {
        let Ok(mut failures) = self.failures.lock() else {
            return;
        };
        if failures.len() >= Self::MAX_ADDRESSES {
            failures.retain(|_, (_, at)| at.elapsed() < Self::FORGET_AFTER);
        }
        if failures.len() >= Self::MAX_ADDRESSES
            && let Some(oldest) = failures
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| *k)
        {
            failures.remove(&oldest);
        }
        let entry = failures.entry(ip).or_insert((0, std::time::Instant::now()));
        if entry.1.elapsed() >= Self::FORGET_AFTER {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = std::time::Instant::now();
    }

    pub fn succeeded(&self, ip: std::net::IpAddr) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(&ip);
        }
    }
}

/// Where one connection's SCRAM exchange stands.
enum Exchange {
    Start,
    /// server-first sent; what the proof is checked against.
    ServerFirstSent {
        user: String,
        role: Role,
        verifier: Verifier,
        auth_message: String,
        nonce: String,
    },
}

/// The start-up of one connection: trust (no users) or SCRAM-SHA-256.
pub struct Startup {
    users: Arc<Users>,
    policy: Arc<LoginPolicy>,
    connections: Arc<ConnectionManager>,
    pids: Arc<RandomPidSecretKeyGenerator>,
    exchange: tokio::sync::Mutex<Exchange>,
}

impl Startup {
    /// SCRAM's server-first message for `user`'s client-first, and the
    /// exchange it leaves to check the proof against. An unknown user goes
    /// through the same steps with a made-up verifier, so the answer does
    /// not tell.
    fn server_first(
        &self,
        user: &str,
        first: datafusion_postgres::pgwire::messages::startup::SASLInitialResponse,
        refused: impl Fn() -> PgWireError,
    ) -> PgWireResult<(String, Exchange)> {
        if first.auth_method != "SCRAM-SHA-256" {
            return Err(fatal(
                "28000",
                format!("unsupported SASL mechanism {}", first.auth_method),
            ));
        }
        let data = first.data.unwrap_or_default();
        let text = std::str::from_utf8(&data).map_err(|_| refused())?;
        // gs2-header "n,," (no channel binding) then the bare part.
        let bare = text
            .strip_prefix("n,,")
            .or_else(|| text.strip_prefix("y,,"))
            .ok_or_else(|| fatal("28000", "SCRAM channel binding is not offered".into()))?;
        let client_nonce = bare
            .split(',')
            .find_map(|p| p.strip_prefix("r="))
            .ok_or_else(&refused)?;
        let (verifier, role) = match self.users.0.get(user) {
            Some((v, r)) => (v.clone(), *r),
            None => (
                Verifier::make(
                    &uuid::Uuid::new_v4().to_string(),
                    b"unknown-user-salt",
                    4096,
                ),
                Role::Analyst,
            ),
        };
        let nonce = format!(
            "{client_nonce}{}",
            STANDARD.encode(uuid::Uuid::new_v4().as_bytes())
        );
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(&verifier.salt),
            verifier.iterations
        );
        let next = Exchange::ServerFirstSent {
            user: user.to_string(),
            role,
            verifier,
            auth_message: format!("{bare},{server_first}"),
            nonce,
        };
        Ok((server_first, next))
    }

    pub fn new(
        users: Arc<Users>,
        policy: Arc<LoginPolicy>,
        connections: Arc<ConnectionManager>,
        pids: Arc<RandomPidSecretKeyGenerator>,
    ) -> Startup {
        Startup {
            users,
            policy,
            connections,
            pids,
            exchange: tokio::sync::Mutex::new(Exchange::Start),
        }
    }

    /// Register for cancel requests and send AuthenticationOk and the rest.
    async fn admit<C>(&self, client: &mut C, role: Role) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        client.session_extensions().insert(Authenticated { role });
        let (pid, secret_key) = self.pids.generate(client);
        client.set_pid_and_secret_key(pid, secret_key.clone());
        let user = client.metadata().get("user").cloned();
        // Outside a connection task (never in serve) there is nothing to fill.
        let _ = functions::session::CONNECTION.try_with(|cell| {
            if let Ok(mut connection) = cell.lock() {
                connection.user = user;
                connection.backend_pid = Some(pid);
            }
        });
        let (handle, guard): (Arc<ConnectionHandle>, ConnectionGuard) =
            self.connections.register(pid, secret_key);
        client.session_extensions().insert(handle);
        client.session_extensions().insert(guard);
        finish_authentication(client, &DefaultServerParameterProvider::default()).await
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                if self.policy.tls_required && !client.is_secure() {
                    return Err(fatal(
                        "28000",
                        "this server accepts TLS connections only: connect with sslmode=require"
                            .into(),
                    ));
                }
                save_startup_parameters_to_metadata(client, startup);
                keep_known_startup_parameters(client);
                if self.users.is_empty() {
                    return self.admit(client, Role::Admin).await;
                }
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                client
                    .send(PgWireBackendMessage::Authentication(Authentication::SASL(
                        vec!["SCRAM-SHA-256".into()],
                    )))
                    .await?;
            }
            PgWireFrontendMessage::PasswordMessageFamily(message) => {
                let mut exchange = self.exchange.lock().await;
                let user = client.metadata().get("user").cloned().unwrap_or_default();
                let refused = || {
                    fatal(
                        "28P01",
                        format!("password authentication failed for user \"{user}\""),
                    )
                };
                match &*exchange {
                    Exchange::Start => {
                        let first = message.into_sasl_initial_response()?;
                        let (server_first, next) = self.server_first(&user, first, refused)?;
                        client
                            .send(PgWireBackendMessage::Authentication(
                                Authentication::SASLContinue(server_first.into()),
                            ))
                            .await?;
                        *exchange = next;
                    }
                    Exchange::ServerFirstSent {
                        user: expected,
                        role,
                        verifier,
                        auth_message,
                        nonce,
                    } => {
                        let last = message.into_sasl_response()?;
                        let text = std::str::from_utf8(&last.data).map_err(|_| refused())?;
                        let (without_proof, proof) = text.rsplit_once(",p=").ok_or_else(refused)?;
                        if without_proof.split(',').find_map(|p| p.strip_prefix("r="))
                            != Some(nonce.as_str())
                        {
                            return Err(refused());
                        }
                        // Every guess from an address that failed lately
                        // waits, so passwords cannot be tried at speed.
                        let ip = client.socket_addr().ip();
                        tokio::time::sleep(self.policy.throttle.penalty(ip)).await;
                        let refused = || {
                            self.policy.throttle.failed(ip);
                            refused()
                        };
                        let proof = STANDARD.decode(proof).map_err(|_| refused())?;
                        let auth_message = format!("{auth_message},{without_proof}");
                        let signature = hmac(&verifier.stored_key, auth_message.as_bytes());
                        if proof.len() != 32 {
                            return Err(refused());
                        }
                        let client_key: Vec<u8> =
                            proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
                        let known = self.users.0.contains_key(expected.as_str());
                        if !known || Sha256::digest(&client_key).as_slice() != verifier.stored_key {
                            return Err(refused());
                        }
                        self.policy.throttle.succeeded(ip);
                        let server_signature = hmac(&verifier.server_key, auth_message.as_bytes());
                        client
                            .send(PgWireBackendMessage::Authentication(
                                Authentication::SASLFinal(
                                    format!("v={}", STANDARD.encode(server_signature)).into(),
                                ),
                            ))
                            .await?;
                        let role = *role;
                        drop(exchange);
                        self.admit(client, role).await?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifiers_match_postgresql() {
        // RFC 7677's example: user "user", password "pencil".
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let v = Verifier::make("pencil", &salt, 4096);
        let client_key = {
            let salted = hi(b"pencil", &salt, 4096);
            hmac(&salted, b"Client Key")
        };
        let auth = "n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let proof: Vec<u8> = client_key
            .iter()
            .zip(hmac(&v.stored_key, auth.as_bytes()))
            .map(|(a, b)| a ^ b)
            .collect();
        assert_eq!(
            STANDARD.encode(proof),
            "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        assert_eq!(
            STANDARD.encode(hmac(&v.server_key, auth.as_bytes())),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        assert_eq!(Verifier::parse(&v.to_text()).unwrap(), v);
        assert!(Verifier::parse("md5abc").is_err());
    }
}
