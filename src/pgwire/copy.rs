//! `COPY (SELECT …) TO STDOUT` and `COPY table TO STDOUT`, in PostgreSQL's
//! text and CSV formats (`WITH (FORMAT csv, HEADER)`, `DELIMITER`, `NULL`,
//! and the pre-9.0 spelling `WITH CSV HEADER`): what psql's `\copy` and
//! `COPY … TO STDOUT` send, and how pandas and ETL tools pull large results.
//!
//! DataFusion's own parser only knows `COPY … TO 'file'` (still served by
//! DataFusion, writing on the server), so these
//! statements are recognised here (with sqlparser's PostgreSQL dialect),
//! the query is planned by the session, and rows are streamed to the client
//! as `CopyData` messages batch by batch, so memory stays bounded. Values
//! are written as PostgreSQL writes them: `t`/`f` booleans, `{a,b}` arrays,
//! `2026-01-15 10:00:00+00` times, `\N` (text) or empty (CSV) NULLs.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Float32Type, Float64Type};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget, Statement,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion_postgres::pgwire::api::results::{CopyResponse, Response};
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::copy::CopyData;
use futures::StreamExt;

use super::statements::error;

/// How rows are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CopyFormat {
    pub csv: bool,
    pub header: bool,
    pub delimiter: char,
    pub null: String,
}

/// The query and format of a `COPY … TO STDOUT`, if `sql` is one;
/// `Some(Err)` for a COPY Panorama cannot run (to a file, from stdin, ...).
pub(super) fn copy_to_stdout(sql: &str) -> Option<Result<(String, CopyFormat), PgWireError>> {
    let head = sql.trim_start();
    if !head
        .get(..5)
        .is_some_and(|h| h.eq_ignore_ascii_case("copy ") || h.eq_ignore_ascii_case("copy("))
    {
        return None;
    }
    let statement = match Parser::parse_sql(&PostgreSqlDialect {}, sql) {
        Ok(mut s) if s.len() == 1 => s.remove(0),
        Ok(_) => {
            return Some(Err(error(
                "42601",
                "send one COPY statement at a time".into(),
            )));
        }
        Err(e) => return Some(Err(error("42601", e.to_string()))),
    };
    let Statement::Copy {
        source,
        to,
        target,
        options,
        legacy_options,
        ..
    } = statement
    else {
        return None;
    };
    match (to, &target) {
        (true, CopyTarget::Stdout) => {}
        // `COPY … TO 'file'` writes on the server: DataFusion's own COPY.
        (true, _) => return None,
        (false, _) => {
            return Some(Err(error(
                "0A000",
                "COPY … FROM is not supported: load files with `panorama ingest` or the \
                 HTTP collector"
                    .into(),
            )));
        }
    }
    let query = match source {
        CopySource::Query(q) => q.to_string(),
        CopySource::Table {
            table_name,
            columns,
        } => {
            let columns = if columns.is_empty() {
                "*".to_string()
            } else {
                columns
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            format!("SELECT {columns} FROM {table_name}")
        }
    };
    Some(copy_format(options, legacy_options).map(|format| (query, format)))
}

/// The output format a `COPY … TO STDOUT`'s options (and their pre-9.0
/// spellings) ask for: text or CSV, header, delimiter, NULL string.
fn copy_format(
    options: Vec<CopyOption>,
    legacy_options: Vec<CopyLegacyOption>,
) -> Result<CopyFormat, PgWireError> {
    let mut format = CopyFormat {
        csv: false,
        header: false,
        delimiter: '\t',
        null: "\\N".into(),
    };
    let mut delimiter = None;
    let mut null = None;
    for option in options {
        match option {
            CopyOption::Format(name) => match name.value.to_lowercase().as_str() {
                "csv" => format.csv = true,
                "text" => format.csv = false,
                other => {
                    return Err(error(
                        "0A000",
                        format!("COPY format \"{other}\" is not supported (text or csv)"),
                    ));
                }
            },
            CopyOption::Header(h) => format.header = h,
            CopyOption::Delimiter(d) => delimiter = Some(d),
            CopyOption::Null(n) => null = Some(n),
            CopyOption::Encoding(e) if e.eq_ignore_ascii_case("utf8") => {}
            other => {
                return Err(error(
                    "0A000",
                    format!("COPY option {other} is not supported"),
                ));
            }
        }
    }
    for option in legacy_options {
        match option {
            CopyLegacyOption::Csv(csv) => {
                format.csv = true;
                for o in csv {
                    match o {
                        CopyLegacyCsvOption::Header => format.header = true,
                        other => {
                            return Err(error(
                                "0A000",
                                format!("COPY option {other} is not supported"),
                            ));
                        }
                    }
                }
            }
            CopyLegacyOption::Header => format.header = true,
            CopyLegacyOption::Delimiter(d) => delimiter = Some(d),
            CopyLegacyOption::Null(n) => null = Some(n),
            other => {
                return Err(error(
                    "0A000",
                    format!("COPY option {other} is not supported"),
                ));
            }
        }
    }
    if format.csv {
        format.delimiter = ',';
        format.null = String::new();
    }
    if let Some(d) = delimiter {
        format.delimiter = d;
    }
    if let Some(n) = null {
        format.null = n;
    }
    if format.header && !format.csv {
        return Err(error(
            "0A000",
            "COPY HEADER is available only in CSV mode".into(),
        ));
    }
    Ok(format)
}

/// Plan `query` and stream its rows as a copy-out response.
pub(super) async fn run(
    ctx: &SessionContext,
    query: &str,
    format: CopyFormat,
) -> PgWireResult<Response> {
    let api = |e| PgWireError::ApiError(Box::new(e));
    let df = ctx.sql(query).await.map_err(api)?;
    let columns = df.schema().fields().len();
    let header: Option<Vec<String>> = format.header.then(|| {
        df.schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    });
    let stream = df.execute_stream().await.map_err(api)?;
    let format = Arc::new(format);
    let mut header = header.map(|names| {
        let cells: Vec<Option<String>> = names.into_iter().map(Some).collect();
        line(&cells, &format)
    });
    let rows = stream.flat_map(move |batch| {
        let out: Vec<PgWireResult<CopyData>> = match batch {
            Ok(batch) => match encode(&batch, &format) {
                Ok(mut lines) => {
                    // The header travels with the first row (COPY counts rows).
                    if let Some(h) = header.take() {
                        lines.insert(0, h);
                        if lines.len() > 1 {
                            let first = lines.remove(1);
                            lines[0].extend(first);
                        }
                    }
                    lines
                        .into_iter()
                        .map(|l| Ok(CopyData::new(l.into())))
                        .collect()
                }
                Err(e) => vec![Err(e)],
            },
            Err(e) => vec![Err(PgWireError::ApiError(Box::new(e)))],
        };
        futures::stream::iter(out)
    });
    Ok(Response::CopyOut(CopyResponse::new(0, columns, rows)))
}

/// How one column's cells are written.
enum Cells<'a> {
    /// Through Arrow's display formatter, straight into the line.
    Formatted(
        ArrayFormatter<'a>,
        Option<datafusion::arrow::buffer::NullBuffer>,
    ),
    /// Spelled beforehand (booleans, floats, arrays).
    Spelled(Vec<Option<String>>),
}

impl<'a> Cells<'a> {
    fn new(column: &'a ArrayRef) -> Result<Cells<'a>, datafusion::arrow::error::ArrowError> {
        Ok(match column.data_type() {
            DataType::Boolean
            | DataType::Float32
            | DataType::Float64
            | DataType::List(_)
            | DataType::LargeList(_) => Cells::Spelled(texts(column)?),
            _ => Cells::Formatted(
                ArrayFormatter::try_new(column.as_ref(), &display_options())?,
                column.logical_nulls(),
            ),
        })
    }

    /// Write row `row`'s text into `cell`; `false` for NULL.
    fn write(
        &self,
        row: usize,
        cell: &mut String,
    ) -> Result<bool, datafusion::arrow::error::ArrowError> {
        cell.clear();
        match self {
            Cells::Formatted(_, Some(nulls)) if nulls.is_null(row) => Ok(false),
            Cells::Formatted(formatter, _) => {
                formatter.value(row).write(cell)?;
                Ok(true)
            }
            Cells::Spelled(values) => Ok(match &values[row] {
                Some(v) => {
                    cell.push_str(v);
                    true
                }
                None => false,
            }),
        }
    }
}

/// Each row of `batch` as one encoded line (one reused buffer per cell, no
/// string per value).
fn encode(batch: &RecordBatch, format: &CopyFormat) -> PgWireResult<Vec<Vec<u8>>> {
    let api = |e| PgWireError::ApiError(Box::new(e));
    let columns: Vec<Cells> = batch
        .columns()
        .iter()
        .map(Cells::new)
        .collect::<Result<_, _>>()
        .map_err(api)?;
    let mut cell = String::new();
    let mut lines = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let mut out = String::with_capacity(16 * columns.len());
        for (i, column) in columns.iter().enumerate() {
            if i > 0 {
                out.push(format.delimiter);
            }
            let present = column.write(row, &mut cell).map_err(api)?;
            push_cell(&mut out, present.then_some(cell.as_str()), format);
        }
        out.push('\n');
        lines.push(out.into_bytes());
    }
    Ok(lines)
}

/// One line: cells joined by the delimiter, quoted or escaped, `\n`-ended.
fn line(cells: &[Option<String>], format: &CopyFormat) -> Vec<u8> {
    let mut out = String::new();
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            out.push(format.delimiter);
        }
        push_cell(&mut out, cell.as_deref(), format);
    }
    out.push('\n');
    out.into_bytes()
}

/// One cell, quoted (CSV) or escaped (text) as PostgreSQL writes it.
fn push_cell(out: &mut String, cell: Option<&str>, format: &CopyFormat) {
    match cell {
        None => out.push_str(&format.null),
        Some(v) if format.csv => {
            let needs_quotes =
                v.is_empty() || v == format.null || v.contains([format.delimiter, '"', '\n', '\r']);
            if needs_quotes {
                out.push('"');
                out.push_str(&v.replace('"', "\"\""));
                out.push('"');
            } else {
                out.push_str(v);
            }
        }
        Some(v) => {
            let plain = !v.contains(['\\', '\n', '\r', '\t', format.delimiter]);
            if plain {
                out.push_str(v);
                return;
            }
            for c in v.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if c == format.delimiter => {
                        out.push('\\');
                        out.push(c);
                    }
                    c => out.push(c),
                }
            }
        }
    }
}

/// How Arrow's formatter writes values, in PostgreSQL's spelling.
fn display_options() -> FormatOptions<'static> {
    FormatOptions::default()
        .with_null("")
        .with_timestamp_format(Some("%Y-%m-%d %H:%M:%S%.f"))
        .with_timestamp_tz_format(Some("%Y-%m-%d %H:%M:%S%.f%:z"))
}

/// A column's values as PostgreSQL's text output writes them.
fn texts(column: &ArrayRef) -> Result<Vec<Option<String>>, datafusion::arrow::error::ArrowError> {
    let n = column.len();
    match column.data_type() {
        DataType::Boolean => {
            let b = column.as_boolean();
            Ok((0..n)
                .map(|i| {
                    b.is_valid(i)
                        .then(|| if b.value(i) { "t" } else { "f" }.to_string())
                })
                .collect())
        }
        DataType::Float64 => {
            let f = column.as_primitive::<Float64Type>();
            Ok((0..n)
                .map(|i| f.is_valid(i).then(|| super::floats::double(f.value(i))))
                .collect())
        }
        DataType::Float32 => {
            let f = column.as_primitive::<Float32Type>();
            Ok((0..n)
                .map(|i| f.is_valid(i).then(|| super::floats::real(f.value(i))))
                .collect())
        }
        DataType::List(_) | DataType::LargeList(_) => {
            let values: Vec<ArrayRef> = match column.data_type() {
                DataType::List(_) => {
                    let l = column.as_list::<i32>();
                    (0..n).map(|i| l.value(i)).collect()
                }
                _ => {
                    let l = column.as_list::<i64>();
                    (0..n).map(|i| l.value(i)).collect()
                }
            };
            values
                .iter()
                .enumerate()
                .map(|(i, items)| {
                    if column.is_null(i) {
                        return Ok(None);
                    }
                    let inner = texts(items)?;
                    let parts: Vec<String> = inner
                        .into_iter()
                        .map(|v| match v {
                            None => "NULL".to_string(),
                            Some(v)
                                if v.is_empty()
                                    || v.eq_ignore_ascii_case("null")
                                    || v.contains([',', '{', '}', '"', '\\', ' ']) =>
                            {
                                format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
                            }
                            Some(v) => v,
                        })
                        .collect();
                    Ok(Some(format!("{{{}}}", parts.join(","))))
                })
                .collect()
        }
        _ => {
            let formatter = ArrayFormatter::try_new(column.as_ref(), &display_options())?;
            let nulls = column.logical_nulls();
            (0..n)
                .map(|i| {
                    if nulls.as_ref().is_some_and(|n| n.is_null(i)) {
                        return Ok(None);
                    }
                    formatter.value(i).try_to_string().map(Some)
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_statements_in_both_spellings() {
        let (q, f) = copy_to_stdout("COPY (SELECT 1 AS a) TO STDOUT WITH CSV HEADER")
            .unwrap()
            .unwrap();
        assert_eq!(q, "SELECT 1 AS a");
        assert!(f.csv && f.header && f.delimiter == ',' && f.null.is_empty());
        let (q, f) = copy_to_stdout(
            "copy raw.orders (order_id, amount) to stdout (format csv, header, delimiter ';')",
        )
        .unwrap()
        .unwrap();
        assert_eq!(q, "SELECT order_id, amount FROM raw.orders");
        assert_eq!(f.delimiter, ';');
        let (_, f) = copy_to_stdout("COPY raw.orders TO STDOUT")
            .unwrap()
            .unwrap();
        assert!(!f.csv && f.null == "\\N" && f.delimiter == '\t');
        assert!(copy_to_stdout("COPY raw.orders TO '/tmp/x.csv'").is_none());
        assert!(
            copy_to_stdout("COPY raw.orders FROM STDIN")
                .unwrap()
                .is_err()
        );
        assert!(copy_to_stdout("SELECT 1").is_none());
    }

    #[test]
    fn lines_quote_and_escape_as_postgres_does() {
        let csv = CopyFormat {
            csv: true,
            header: false,
            delimiter: ',',
            null: String::new(),
        };
        let cells = [
            Some("a,b".to_string()),
            None,
            Some(String::new()),
            Some("x\"y".into()),
        ];
        assert_eq!(line(&cells, &csv), b"\"a,b\",,\"\",\"x\"\"y\"\n");
        let text = CopyFormat {
            csv: false,
            header: false,
            delimiter: '\t',
            null: "\\N".into(),
        };
        let cells = [Some("a\tb\\c\nd".to_string()), None];
        assert_eq!(line(&cells, &text), b"a\\tb\\\\c\\nd\t\\N\n");
    }
}
