//! Turns engine errors into PostgreSQL errors with the right SQLSTATE, so
//! clients can tell a typo (42601) from a missing table (42P01), a missing
//! column (42703), an unsupported feature (0A000), a memory limit (53200)
//! or a broken file in the lake (58030). Without this every error would be
//! reported as an internal error (XX000).

use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::parser::ParserError;
use datafusion_postgres::pgwire::api::{ClientInfo, ErrorHandler};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError};

/// Rewrites API errors into user errors carrying a SQLSTATE.
pub struct SqlStateErrors;

impl ErrorHandler for SqlStateErrors {
    fn on_error<C>(&self, _client: &C, error: &mut PgWireError)
    where
        C: ClientInfo,
    {
        with_sqlstate(error);
    }
}

/// Give an engine error its SQLSTATE (other errors already have one).
fn with_sqlstate(error: &mut PgWireError) {
    if let PgWireError::ApiError(source) = error {
        let (code, message) = classify(source.as_ref());
        tracing::debug!(code, "query failed: {message}");
        *error = PgWireError::UserError(Box::new(ErrorInfo::new(
            "ERROR".to_string(),
            code.to_string(),
            message,
        )));
    }
}

/// The error response for `error`, with the SQLSTATE [`SqlStateErrors`]
/// gives (for an error sent among the results of a multi-statement query).
pub fn to_info(mut error: PgWireError) -> ErrorInfo {
    with_sqlstate(&mut error);
    ErrorInfo::from(error)
}

/// The SQLSTATE and message for an error raised while running a statement.
pub fn classify(error: &(dyn std::error::Error + 'static)) -> (&'static str, String) {
    if let Some(e) = error.downcast_ref::<DataFusionError>() {
        return (sqlstate(e), e.to_string());
    }
    if let Some(e) = error.downcast_ref::<crate::error::Error>() {
        return (lake_sqlstate(e), lake_message(e));
    }
    if error.downcast_ref::<ParserError>().is_some() {
        return ("42601", error.to_string());
    }
    ("XX000", error.to_string())
}

/// The SQLSTATE of the library's error, by whose fault it is: the user's
/// request (22023), the configuration (F0000), storage (58030), data
/// Panorama stored that reads back damaged (XX001), our own bug (XX000).
pub fn lake_sqlstate(error: &crate::error::Error) -> &'static str {
    use crate::error::Error;
    match error {
        Error::Input(_) => "22023",
        Error::Config(_) | Error::LakeUrl { .. } => "F0000",
        Error::Store { .. }
        | Error::Delta { .. }
        | Error::Parquet { .. }
        | Error::Io { .. }
        | Error::Collector(_) => "58030",
        Error::RawFile { .. } | Error::Arrow { .. } => "22000",
        Error::Corrupt { .. } => "XX001",
        Error::DataFusion(e) => sqlstate(e),
        Error::Internal(_) => "XX000",
    }
}

/// The client's error for a failed admin statement (`REFRESH`, `CALL`):
/// `prefix` and [`lake_message`], with the SQLSTATE of its variant.
pub fn of_lake(error: &crate::error::Error, prefix: &str) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_string(),
        lake_sqlstate(error).to_string(),
        format!("{prefix}{}", lake_message(error)),
    )))
}

/// What the client is told: our own messages about the request and the
/// configuration as they are (they name types, tables and settings, never
/// a value), anything raised while reading data without the values it may
/// quote.
fn lake_message(error: &crate::error::Error) -> String {
    use crate::error::Error;
    match error {
        Error::Input(_) | Error::Config(_) => error.to_string(),
        _ => crate::redact::values(&error.to_string()),
    }
}

/// The SQLSTATE of a DataFusion error, looking through context wrappers.
pub fn sqlstate(error: &DataFusionError) -> &'static str {
    match error.find_root() {
        DataFusionError::SQL(..) => "42601",
        DataFusionError::SchemaError(e, _) => {
            let text = e.to_string();
            if text.contains("No field named") || text.contains("not found") {
                "42703"
            } else {
                "42P18"
            }
        }
        DataFusionError::Plan(text) => {
            if text.contains("table") && text.contains("not found") {
                "42P01"
            } else if text.contains("function") || text.contains("Invalid function") {
                "42883"
            } else {
                "42601"
            }
        }
        DataFusionError::NotImplemented(_) => "0A000",
        DataFusionError::ResourcesExhausted(_) => "53200",
        DataFusionError::ParquetError(_)
        | DataFusionError::ObjectStore(_)
        | DataFusionError::IoError(_) => "58030",
        DataFusionError::ArrowError(..) | DataFusionError::Execution(_) => "22000",
        DataFusionError::External(e) if e.is::<crate::engine::distributed::WorkerLost>() => "58000",
        _ => "XX000",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_errors_map_to_postgres_codes() {
        let missing = DataFusionError::Plan("table 'panorama.raw.nope' not found".into());
        assert_eq!(sqlstate(&missing), "42P01");
        let wrapped = DataFusionError::Context("planning".into(), Box::new(missing));
        assert_eq!(sqlstate(&wrapped), "42P01");
        let oom = DataFusionError::ResourcesExhausted("too big".into());
        assert_eq!(sqlstate(&oom), "53200");
    }

    #[test]
    fn the_library_errors_sqlstate_says_whose_fault_and_data_values_stay_out() {
        use crate::error::Error;
        let input = Error::Input("unknown identifier type 'colour'".into());
        assert_eq!(lake_sqlstate(&input), "22023");
        // Our own words about the request are kept whole.
        assert_eq!(lake_message(&input), "unknown identifier type 'colour'");
        let corrupt = Error::Corrupt {
            what: "the refresh state lists links out of order".into(),
            path: "cdp/identity_state/v3".into(),
        };
        assert_eq!(lake_sqlstate(&corrupt), "XX001");
        assert_eq!(
            lake_sqlstate(&Error::Internal("a task stopped".into())),
            "XX000"
        );
        assert_eq!(
            lake_sqlstate(&Error::Config("[identity] x".into())),
            "F0000"
        );
        // Raised while reading data: the value it quotes is dropped.
        let read = Error::DataFusion(DataFusionError::Execution(
            "cannot cast 'jane@example.com' to timestamp".into(),
        ));
        assert_eq!(lake_sqlstate(&read), "22000");
        let (code, message) = classify(&read);
        assert_eq!(code, "22000");
        assert!(!message.contains("jane"), "{message}");
    }
}
