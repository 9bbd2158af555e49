//! Optional TLS for the Postgres front end, from a PEM certificate chain
//! and private key named in `panorama.toml` (`[tls] cert`, `key`). Clients
//! ask for it with `sslmode=require` (libpq) or `ssl=true` (JDBC); with
//! `require = true` a client that does not is refused (`28000`); a
//! configuration that cannot be loaded stops the server — it never falls
//! back to plaintext.

use std::path::Path;
use std::sync::Arc;

use datafusion_postgres::pgwire::tokio::TlsAcceptor;
use datafusion_postgres::pgwire::tokio::tokio_rustls::rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

/// The `[tls]` section of `panorama.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the server certificate (then its chain).
    pub cert: std::path::PathBuf,
    /// PEM file with the private key.
    pub key: std::path::PathBuf,
    /// Refuse clients that do not negotiate TLS (`sslmode=disable` or
    /// `prefer` against a server without it) instead of serving them in
    /// plain text.
    #[serde(default)]
    pub require: bool,
}

/// The acceptor for `config`, or why it cannot be made.
pub fn acceptor(config: &TlsConfig) -> Result<TlsAcceptor, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&config.cert)
        .map_err(|e| unreadable(&config.cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| unreadable(&config.cert, e))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", config.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&config.key).map_err(|e| unreadable(&config.key, e))?;
    // The provider named: rustls is built with both `ring` and `aws-lc-rs`
    // (delta-rs's kernel asks for the latter), so it picks no default.
    let provider =
        datafusion_postgres::pgwire::tokio::tokio_rustls::rustls::crypto::ring::default_provider();
    let mut server = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("the TLS certificate and key do not make a server identity: {e}"))?;
    server.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

fn unreadable(path: &Path, e: impl std::fmt::Display) -> String {
    format!("{}: not a readable PEM file ({e})", path.display())
}
