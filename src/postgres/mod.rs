//! PostgreSQL as clients see it in the catalogs: `pg_catalog` with
//! PostgreSQL's rows where `datafusion-pg-catalog`'s differ ([`catalog`]),
//! the catalog functions drivers call ([`functions`]) and the server-wide
//! parameters ([`settings`]). Installed in every SQL session by
//! [`crate::engine`]; the wire protocol (`crate::pgwire`) answers `SHOW`
//! from the same settings.

pub mod catalog;
pub mod functions;
pub mod settings;
