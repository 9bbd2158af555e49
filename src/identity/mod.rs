//! Identity resolution and the unified profiles (`panorama refresh`).
//!
//! A refresh reads every identifier of the raw tables (the configured
//! sources, normalised), builds the identity [`graph`] and resolves it by
//! union-find with the rules of [`config`], keeping profile ids stable
//! against the last committed version. It then writes a new version of
//! `cdp.identity_links`, `cdp.identity_rejections`, `cdp.profile_merges`
//! and `cdp.profiles` ([`profiles_sql`]) and switches the manifest: readers
//! see the old version until the switch and the new one after. Every
//! refresh, failed or not, is recorded in `system.refreshes`.

pub mod config;
pub mod graph;
pub mod normalize;
pub mod profiles_sql;
mod refresh;

pub use config::IdentityConfig;
pub use refresh::{RefreshReport, refresh};
