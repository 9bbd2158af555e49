//! Panorama's integration tests, in one binary so DataFusion is linked once.
//! Each module is one behaviour a user relies on, tested through real
//! clients (`tokio-postgres`, the `psql` binary, psycopg, psqlODBC, pgjdbc)
//! and real object stores (a local folder, an S3-compatible server on
//! loopback).

#![allow(clippy::unwrap_used, unreachable_pub)]

mod postgres;
mod support;

mod analytics;
mod attack;
mod auth;
mod bad_input;
mod bi_catalog;
mod catalog_live;
mod cli;
mod clients;
mod cluster;
mod collect;
mod consent;
mod console;
mod corpus;
mod delta;
mod erasure_crash;
mod generator;
mod house;
mod identity;
mod incremental;
mod ingest;
mod layers;
mod lookup;
mod privacy;
mod psql;
mod resolved;
mod s3;
mod session;
mod sources;
mod wire;
