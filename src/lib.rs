//! Panorama: an open-source Customer Data Platform on Apache DataFusion.
//!
//! The crate follows the data flow of `docs/architecture.md`, one module
//! per box: sources land as Parquet in the [`lake`] (object storage) with
//! the [`schema`] of each raw table, through [`ingest`] (files) or
//! [`collect`] (the HTTP collector); [`identity`] refreshes the unified
//! profiles; [`jobs`] write scoring tables into [`analytics`]; the
//! [`catalog`] exposes the lake's tables to a DataFusion session built in
//! one place by [`engine`]; the [`pgwire`] front end serves that session to
//! any PostgreSQL client; [`privacy`] erases a person from all of it.
//! [`generate`] writes a deterministic synthetic CDP
//! and [`seed`] fills an empty lake with the bundled sample; [`server`]
//! starts what `panorama serve` runs, for the binary and the tests alike.
//! Dependencies
//! point down that flow: the lake knows nothing of SQL, the catalog nothing
//! of the wire protocol.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod analytics;
pub mod catalog;
pub mod cluster;
pub mod collect;
pub mod config;
pub mod console;
pub mod engine;
pub mod error;
pub mod executor;
pub mod export;
pub mod functions;
pub mod generate;
pub mod host;
pub mod identity;
pub mod ingest;
pub mod jobs;
pub mod keyed;
pub mod lake;
pub mod maintenance;
pub mod pgwire;
pub mod postgres;
pub mod privacy;
pub mod query;
pub mod redact;
pub mod schema;
pub mod seed;
pub mod server;

pub use error::{Error, Result};
