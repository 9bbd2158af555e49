//! Resolved settings shared by the commands: where the lake is and where the
//! server listens. Raw command-line flags are turned into these in one step
//! (`src/main.rs`); library code only ever sees the resolved values.

use std::net::SocketAddr;

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::identity::IdentityConfig;
use crate::lake::DEFAULT_LAKE_DIR;

/// Environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "PANORAMA_CONFIG";

/// The configuration file read when none is named, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "panorama.toml";

/// The contents of `panorama.toml`; every section is optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub identity: IdentityConfig,
    pub collector: crate::collect::CollectorConfig,
    /// `[ingest.<table>]`: the column mapping and defaults `panorama
    /// ingest` uses for that table (command-line flags add to them).
    pub ingest: std::collections::BTreeMap<String, IngestTableConfig>,
    /// `[[users]]`: who may connect over the Postgres protocol, with a
    /// SCRAM-SHA-256 verifier and a role. None: connections are trusted
    /// (only allowed on a loopback address).
    pub users: Vec<crate::pgwire::auth::UserConfig>,
    /// `[tls]`: certificate and key for TLS on the Postgres protocol.
    pub tls: Option<crate::pgwire::tls::TlsConfig>,
    /// `[lookup]`: raw-table key columns indexed for point lookups.
    pub lookup: crate::catalog::lookup::LookupConfig,
    /// `[masking]`: what analysts may read inside JSON columns.
    pub masking: crate::catalog::masking::MaskingConfig,
    /// `[consent]`: the purposes consent is asked for (see
    /// [`crate::identity::consent`]).
    pub consent: crate::identity::consent::ConsentConfig,
    /// `[retention]`: how long rows are kept (see
    /// [`crate::identity::retention`]).
    pub retention: crate::identity::retention::RetentionConfig,
    /// `[console]`: the web console and profile API (see [`crate::console`]).
    pub console: crate::console::ConsoleConfig,
    /// `[tables.<name>]`: raw tables of the user's own (see
    /// [`crate::schema::declared`]).
    pub tables: std::collections::BTreeMap<String, crate::schema::declared::TableConfig>,
    /// `[cluster]`: the workers a front end sends queries to.
    pub cluster: ClusterConfig,
    /// The checked declarations of `tables`, which every command declares
    /// in the lake it opens ([`crate::lake::Lake::declare_table`]).
    #[serde(skip)]
    pub declared: Vec<crate::schema::declared::Declaration>,
}

/// `[cluster]`: the workers (`panorama worker`) a front end sends the
/// stages of its larger queries to, and the secret they share.
#[derive(Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// The workers, as `host:port` (`panorama serve --workers` adds to
    /// them).
    pub workers: Vec<String>,
    /// The secret the workers and front ends of the cluster share
    /// (`PANORAMA_CLUSTER_SECRET` overrides it); required on a worker that
    /// listens beyond loopback.
    pub secret: Option<String>,
    /// Bytes of files one task scans (default 64 MiB): smaller scans run
    /// on the front end.
    pub bytes_per_task: Option<usize>,
}

/// The environment variable holding the cluster's secret.
pub const CLUSTER_SECRET_ENV: &str = "PANORAMA_CLUSTER_SECRET";

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("workers", &self.workers)
            .field("secret", &self.secret.as_ref().map(|_| "(set)"))
            .field("bytes_per_task", &self.bytes_per_task)
            .finish()
    }
}

impl Config {
    /// What the environment overrides: the cluster's secret.
    fn apply_environment(&mut self) {
        if let Ok(secret) = std::env::var(CLUSTER_SECRET_ENV)
            && !secret.is_empty()
        {
            self.cluster.secret = Some(secret);
        }
    }

    /// The query engine's settings these call for (identity rules, point
    /// lookups, masking, the cluster); memory and partitions stay at their
    /// defaults.
    pub fn engine_options(&self) -> crate::engine::EngineOptions {
        let defaults = crate::engine::EngineOptions::default();
        let cluster = crate::engine::distributed::ClusterOptions {
            workers: self.cluster.workers.clone(),
            secret: self.cluster.secret.clone(),
            bytes_per_task: self
                .cluster
                .bytes_per_task
                .unwrap_or(defaults.cluster.bytes_per_task),
            ..Default::default()
        };
        crate::engine::EngineOptions {
            identity: self.identity.clone(),
            lookup: self.lookup.clone(),
            masking: self.masking.clone(),
            cluster,
            ..defaults
        }
    }
}

/// How files for one raw table are read by `panorama ingest`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestTableConfig {
    /// Table column → field name in the files.
    pub map: std::collections::BTreeMap<String, String>,
    /// Table column → value for rows that lack it.
    pub defaults: std::collections::BTreeMap<String, String>,
    /// File fields to leave out; every other field no column holds is
    /// kept in the table's `extra` JSON column.
    pub drop: Vec<String>,
}

impl Config {
    /// Read `path`, or `./panorama.toml` if it exists, or the defaults.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        let (path, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (Path::new(DEFAULT_CONFIG_FILE).to_path_buf(), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                let mut config = Config::default();
                config.apply_environment();
                return Ok(config);
            }
            Err(source) => {
                return Err(Error::Io {
                    what: "reading the configuration".into(),
                    path,
                    source,
                });
            }
        };
        // Declared tables first: the other sections may name them.
        let declared = declared_tables(&text)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        let mut config: Config =
            toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        config.declared = declared;
        config.apply_environment();
        config.identity = config.identity.with_builtins();
        config
            .consent
            .validate()
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        config.identity.consent = config.consent.clone();
        config.identity.retention = config.retention.clone();
        // The sources' tables are checked when the lake is open (it may
        // declare tables of its own).
        config.identity.validate_settings()?;
        config.collector.validate()?;
        config
            .console
            .validate()
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        config
            .lookup
            .validate()
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        crate::pgwire::auth::Users::from_config(&config.users)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        for table in config.ingest.keys() {
            if crate::schema::RawTable::from_name(table).is_none() {
                return Err(Error::Config(format!(
                    "{}: [ingest.{table}] names no raw table",
                    path.display()
                )));
            }
        }
        Ok(config)
    }
}

/// The `[tables.<name>]` of a configuration text, checked and known to
/// [`crate::schema::RawTable::from_name`] from then on. A column that an
/// `[identity]` source reads as an email or a phone is personal (masked
/// for analysts) whether or not it says so.
fn declared_tables(
    text: &str,
) -> std::result::Result<Vec<crate::schema::declared::Declaration>, String> {
    use crate::schema::declared::{Declaration, TableConfig};
    let value: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let Some(tables) = value.get("tables") else {
        return Ok(Vec::new());
    };
    let tables: std::collections::BTreeMap<String, TableConfig> = tables
        .clone()
        .try_into()
        .map_err(|e| format!("[tables]: {e}"))?;
    let identity = value.get("identity");
    let list = |key: &str| {
        identity
            .and_then(|i| i.get(key))
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_default()
    };
    let text_of =
        |v: &toml::Value, key: &str| v.get(key).and_then(|s| s.as_str()).map(String::from);
    // Identifier types whose values are emails or phones.
    let mut contact_types = vec!["email".to_string(), "phone".to_string()];
    for t in list("types") {
        if matches!(text_of(&t, "normalize").as_deref(), Some("email" | "phone")) {
            contact_types.extend(text_of(&t, "name"));
        }
    }
    let mut out = Vec::new();
    for (name, table) in &tables {
        let mut declaration = Declaration::from_config(name, table)?;
        for source in list("sources") {
            if text_of(&source, "table").as_deref() != Some(name)
                || !text_of(&source, "id_type").is_some_and(|t| contact_types.contains(&t))
            {
                continue;
            }
            let column = text_of(&source, "column");
            for c in &mut declaration.columns {
                if Some(&c.name) == column.as_ref() {
                    c.personal = true;
                }
            }
        }
        crate::schema::RawTable::declare(&declaration);
        out.push(declaration);
    }
    Ok(out)
}

/// Environment variable naming the lake URL.
pub const LAKE_ENV: &str = "PANORAMA_LAKE";

/// Default address of the Postgres front end (loopback only).
pub const DEFAULT_PG_ADDR: &str = "127.0.0.1:5433";

/// The lake used when neither `--lake` nor `PANORAMA_LAKE` is given.
pub fn default_lake() -> String {
    DEFAULT_LAKE_DIR.to_string()
}

/// Parse a listen address, with a message that says what was expected.
pub fn parse_listen(value: &str) -> Result<SocketAddr, String> {
    value
        .parse()
        .map_err(|e| format!("'{value}' is not an address like 127.0.0.1:5433 ({e})"))
}
