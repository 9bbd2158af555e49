//! Resolved settings shared by the commands: where the lake is and where the
//! server listens. Raw command-line flags are turned into these in one step
//! (`src/main.rs`); library code only ever sees the resolved values.

use std::net::SocketAddr;

use crate::lake::DEFAULT_LAKE_DIR;

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
