//! Identity resolution and the unified profiles (`panorama refresh`).
//!
//! A refresh reads the raw files landed since the last commit (all of them
//! for a full rebuild), folding every row into the identity [`graph`] (the
//! configured sources, normalised) and into small mergeable [`facts`] per
//! row key. It resolves the graph by union-find with the rules of
//! [`config`] and the administrators' [`blocks`], keeping profile ids
//! stable against the last committed version, then writes a new version of
//! `cdp.identity_links`, `cdp.identity_rejections`, `cdp.profile_merges`,
//! `cdp.profiles` and of the stored state, and switches the manifest:
//! readers see the old version until the switch and the new one after.
//! An incremental refresh writes only what [`changes`] says changed, as a
//! delta layer of each view and of the state; a full refresh (or, after
//! several layers, a compaction) writes them whole. Every refresh, failed
//! or not, is recorded in `system.refreshes`.

pub mod blocks;
mod changes;
pub mod config;
pub mod consent;
pub mod facts;
pub mod graph;
pub mod interner;
pub mod normalize;
mod partial;
mod profiles;
mod refresh;
pub mod retention;
mod running;
mod scan;
mod state;
pub mod suppression;
mod table;
mod views;

pub use config::IdentityConfig;
pub use refresh::{
    Mode, RefreshReport, Refusals, record_interrupted, refresh, remove_old_versions,
};
