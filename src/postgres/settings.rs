//! The server-wide parameters Panorama reports as PostgreSQL does: the
//! read-only ones (`server_version`, `transaction_isolation`,
//! `max_identifier_length`, …) and the defaults of those a connection may
//! set, for `SHOW` on the wire and for the `pg_settings` table.

use crate::functions::{
    POSTGRES_VERSION as SERVER_VERSION, POSTGRES_VERSION_NUM as SERVER_VERSION_NUM,
};

/// Read-only parameters and what they show, unless set in the connection.
const FIXED: &[(&str, &str)] = &[
    ("server_version_num", SERVER_VERSION_NUM),
    ("transaction_isolation", "read committed"),
    ("default_transaction_isolation", "read committed"),
    ("standard_conforming_strings", "on"),
    ("integer_datetimes", "on"),
    ("max_identifier_length", "63"),
    ("client_encoding", "UTF8"),
    ("server_encoding", "UTF8"),
    ("client_min_messages", "notice"),
    ("lc_collate", "C.UTF-8"),
    ("lc_ctype", "C.UTF-8"),
    ("lc_messages", "C.UTF-8"),
    ("lc_monetary", "C.UTF-8"),
    ("lc_numeric", "C.UTF-8"),
    ("lc_time", "C.UTF-8"),
    ("block_size", "8192"),
    ("max_index_keys", "32"),
    ("default_transaction_read_only", "off"),
    ("transaction_read_only", "off"),
    ("lock_timeout", "0"),
    ("idle_in_transaction_session_timeout", "0"),
    ("idle_session_timeout", "0"),
    ("is_superuser", "on"),
];

pub fn server_version() -> String {
    format!("{SERVER_VERSION} (Panorama {})", env!("CARGO_PKG_VERSION"))
}

pub fn fixed(name: &str) -> Option<String> {
    if name == "server_version" {
        return Some(server_version());
    }
    FIXED
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_string())
}

/// Every parameter with a server-wide value, for `pg_settings`: the fixed
/// ones and the defaults of those a connection may set.
pub fn fixed_settings() -> Vec<(&'static str, String)> {
    let defaults = [
        ("TimeZone", "UTC"),
        ("DateStyle", "ISO, MDY"),
        ("search_path", "\"$user\", public"),
        ("statement_timeout", "0"),
        ("extra_float_digits", "1"),
        ("bytea_output", "hex"),
    ];
    std::iter::once(("server_version", server_version()))
        .chain(
            FIXED
                .iter()
                .chain(&defaults)
                .map(|(n, v)| (*n, v.to_string())),
        )
        .collect()
}
