//! A statement that panics — a bug in Panorama or in a dependency, such as
//! an Arrow kernel or a value encoder meeting a type it does not handle —
//! stops that statement only: its client gets `XX000` and keeps a usable
//! connection, and a result stream that panics half-way ends with that
//! error instead of a short result that looks complete. The panic's own
//! message is never sent or logged (it may quote a value); the log names
//! where it happened ([`install_hook`]).

use std::future::Future;
use std::panic::AssertUnwindSafe;

use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};

/// The error a client gets for a statement that panicked.
fn internal() -> PgWireError {
    super::statements::error(
        "XX000",
        "internal error: this statement hit a bug in Panorama and was stopped (the server \
         log names where); the connection is still usable"
            .into(),
    )
}

/// `statement`, with a panic turned into `XX000`.
pub async fn contained<T>(statement: impl Future<Output = PgWireResult<T>>) -> PgWireResult<T> {
    AssertUnwindSafe(statement)
        .catch_unwind()
        .await
        .unwrap_or_else(|_| Err(internal()))
}

/// `rows`, ending with `XX000` after a panic while producing one.
pub fn contained_rows<T: Send + 'static>(
    rows: BoxStream<'static, PgWireResult<T>>,
) -> BoxStream<'static, PgWireResult<T>> {
    AssertUnwindSafe(rows)
        .catch_unwind()
        .map(|item| item.unwrap_or_else(|_| Err(internal())))
        .boxed()
}

/// Log every panic of the process as one line naming where it happened,
/// without its message: a panic message may quote the value that caused
/// it, and log lines carry no personal value.
pub fn install_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_else(|| "an unknown place".into());
        let thread = std::thread::current();
        tracing::error!(
            thread = thread.name().unwrap_or("unnamed"),
            "a bug: a panic at {location} (its message is not logged: it may quote a value); \
             the statement or task that hit it was stopped"
        );
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_statement_or_row_becomes_xx000() {
        let statement = contained(async {
            if true {
                panic!("jane@example.com is not a number");
            }
            Ok(1)
        })
        .await;
        let code = |e: PgWireError| match e {
            PgWireError::UserError(info) => info.code,
            other => format!("{other:?}"),
        };
        assert_eq!(statement.map_err(code), Err("XX000".to_string()));

        let rows = futures::stream::iter([1, 2, 3])
            .map(|n| {
                assert!(n < 3, "row {n}");
                Ok(n)
            })
            .boxed();
        let got: Vec<_> = contained_rows(rows).collect().await;
        assert_eq!(got.len(), 3, "two rows, then the error");
        assert!(matches!(got[..2], [Ok(1), Ok(2)]));
        assert!(got[2].is_err());
    }
}
