//! The crate's error type: one enum for the library boundary, split by cause
//! (the user's input, storage, the query engine, our own bug) so callers can
//! decide what to show and the pgwire layer can pick a SQLSTATE. Sources are
//! kept as `#[source]`, never flattened into strings.

use std::path::PathBuf;

/// Result alias used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong inside Panorama's library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A lake URL that cannot be used (bad syntax, unsupported scheme, ...).
    #[error("invalid lake URL '{url}': {reason}")]
    LakeUrl { url: String, reason: String },

    /// An object-store operation failed; `what` says what was being done.
    #[error("{what}: {source}")]
    Store {
        what: String,
        #[source]
        source: object_store::Error,
    },

    /// Reading or committing to a Delta table failed (the log, a commit,
    /// compaction); `what` names the table and the operation.
    #[error("{what}: {source}")]
    Delta {
        what: String,
        #[source]
        source: Box<deltalake::DeltaTableError>,
    },

    /// Writing or reading a Parquet file failed.
    #[error("{what}: {source}")]
    Parquet {
        what: String,
        #[source]
        source: datafusion::parquet::errors::ParquetError,
    },

    /// The query engine rejected or failed a query.
    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),

    /// Building an Arrow batch failed (our bug or a schema mismatch).
    #[error("{what}: {source}")]
    Arrow {
        what: String,
        #[source]
        source: datafusion::arrow::error::ArrowError,
    },

    /// Local file-system I/O outside the lake (config files, sample files).
    #[error("{what} ({path})")]
    Io {
        what: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A raw data file that cannot be used as it is.
    #[error("raw file {file}: column '{column}' {reason}")]
    RawFile {
        file: String,
        column: String,
        reason: String,
    },

    /// The HTTP collector could not keep a promise (log write, flush).
    #[error("collector: {0}")]
    Collector(String),

    /// Invalid configuration or command-line settings.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// Our own fault: a task that panicked, a thread or runtime that could
    /// not start or stopped early.
    #[error("internal error: {0}")]
    Internal(String),

    /// A request the user sent that cannot be carried out as sent (an
    /// unknown procedure, a wrong number of arguments, a value its type's
    /// rule refuses). The message never repeats the value.
    #[error("{0}")]
    Input(String),

    /// Data Panorama stored that does not read back as it was written:
    /// `what` says what is wrong, `path` where (a refresh rebuilds from the
    /// raw data).
    #[error("{what} ({path} is damaged or from another version)")]
    Corrupt { what: String, path: String },
}

impl Error {
    pub(crate) fn store(what: impl Into<String>, source: object_store::Error) -> Self {
        Error::Store {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn parquet(
        what: impl Into<String>,
        source: datafusion::parquet::errors::ParquetError,
    ) -> Self {
        Error::Parquet {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn arrow(
        what: impl Into<String>,
        source: datafusion::arrow::error::ArrowError,
    ) -> Self {
        Error::Arrow {
            what: what.into(),
            source,
        }
    }
}
