//! Who is asking: console sessions (a login form checked against the
//! Postgres users' SCRAM verifiers, then an `HttpOnly; SameSite=Strict`
//! cookie holding a random token), a CSRF token per session that every
//! form must send back, failed logins slowed down per user name, and the
//! profile API's bearer tokens (kept as SHA-256 hashes).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::ApiToken;
use crate::pgwire::auth::{Role, Users};

/// The session cookie's name.
pub(super) const COOKIE: &str = "panorama_session";
/// A session unused this long is forgotten.
const IDLE: Duration = Duration::from_secs(8 * 3600);
/// After this many failed logins of one name, each try waits.
const FREE_FAILURES: u32 = 3;

/// A signed-in user.
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub name: String,
    pub role: Role,
    /// The token every form of this session must carry.
    pub csrf: String,
}

struct Session {
    user: User,
    used: Instant,
}

/// Sessions, users and API tokens.
pub(crate) struct Auth {
    users: Users,
    tokens: Vec<([u8; 32], String, Role)>,
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Auth {
    pub(crate) fn new(users: Users, tokens: &[ApiToken]) -> Auth {
        let tokens = tokens
            .iter()
            .filter_map(|t| {
                let mut hash = [0u8; 32];
                let hex = t.token_sha256.trim();
                for (i, byte) in hash.iter_mut().enumerate() {
                    *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
                }
                Some((hash, t.name.clone(), t.role))
            })
            .collect();
        Auth {
            users,
            tokens,
            sessions: Mutex::default(),
            failures: Mutex::default(),
        }
    }

    /// No users are configured: no login, everyone is an administrator.
    pub(crate) fn open(&self) -> bool {
        self.users.is_empty()
    }

    /// Check `name` and `password`; a new session's token on success. A
    /// name that failed more than a few times waits longer at each try.
    pub(crate) async fn login(&self, name: &str, password: &str) -> Option<String> {
        let delay = {
            let failures = lock(&self.failures);
            failures.get(name).map_or(Duration::ZERO, |(n, _)| {
                Duration::from_millis(250 * u64::from(n.saturating_sub(FREE_FAILURES)).min(20))
            })
        };
        tokio::time::sleep(delay).await;
        let Some(role) = self.users.check_password(name, password) else {
            let mut failures = lock(&self.failures);
            let entry = failures
                .entry(name.to_string())
                .or_insert((0, Instant::now()));
            *entry = (entry.0 + 1, Instant::now());
            tracing::warn!(user = name, "console login failed");
            return None;
        };
        lock(&self.failures).remove(name);
        let token = random_token();
        let user = User {
            name: name.to_string(),
            role,
            csrf: random_token(),
        };
        let mut sessions = lock(&self.sessions);
        sessions.retain(|_, s| s.used.elapsed() < IDLE);
        sessions.insert(
            token.clone(),
            Session {
                user,
                used: Instant::now(),
            },
        );
        Some(token)
    }

    /// The user of the request's session cookie; with no users
    /// configured, the local administrator.
    pub(crate) fn user(&self, headers: &HeaderMap) -> Option<User> {
        if self.open() {
            return Some(User {
                name: "local".into(),
                role: Role::Admin,
                csrf: "local".into(),
            });
        }
        let token = cookie(headers, COOKIE)?;
        let mut sessions = lock(&self.sessions);
        let session = sessions.get_mut(&token)?;
        if session.used.elapsed() > IDLE {
            sessions.remove(&token);
            return None;
        }
        session.used = Instant::now();
        Some(session.user.clone())
    }

    /// Forget the request's session.
    pub(crate) fn logout(&self, headers: &HeaderMap) {
        if let Some(token) = cookie(headers, COOKIE) {
            lock(&self.sessions).remove(&token);
        }
    }

    /// The role of the API bearer token in `headers`, if it is one of the
    /// configured tokens (or a console session's cookie, for the console's
    /// own use of the API).
    pub(crate) fn api_role(&self, headers: &HeaderMap) -> Option<Role> {
        let bearer = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match bearer {
            Some(token) => {
                let hash: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
                self.tokens
                    .iter()
                    .find(|(known, _, _)| same(known, &hash))
                    .map(|(_, _, role)| *role)
            }
            None if self.tokens.is_empty() && self.open() => Some(Role::Admin),
            None => self.user(headers).map(|u| u.role),
        }
    }
}

/// Whether the two hashes are equal, in time independent of where they
/// differ.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The value of cookie `name` in `headers`.
pub(super) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// The `Set-Cookie` value that holds a session token.
pub(super) fn session_cookie(token: &str) -> String {
    format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict")
}

/// The `Set-Cookie` value that ends a session.
pub(super) fn expired_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
