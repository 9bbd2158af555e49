//! PostgreSQL catalog functions that drivers call while they look around
//! and `datafusion-pg-catalog` lacks or answers wrongly:
//!
//! - `pg_get_expr(expr, relation [, pretty])`: NULL for NULL (JDBC's
//!   `COLUMN_DEF` of a column without default), not `''`;
//! - `to_regtype(text)`: the OID of a built-in type by any of its names
//!   (`integer`, `int4`, `pg_catalog.text`, `text[]`), NULL for an unknown
//!   one — psycopg 3 asks for `hstore` when SQLAlchemy connects;
//! - `pg_get_serial_sequence(table, column)`: NULL (Panorama has no
//!   sequences), and `pg_collation_is_visible(oid)`: true — both in
//!   SQLAlchemy's `get_columns`; `pg_get_indexdef(oid …)`: NULL — Panorama's
//!   tables have no indexes (the rows `pg_index` copies from PostgreSQL's
//!   own catalogs get no definition either);
//! - `pg_expandarray(array)`: a list of `(x, n)` structs, the elements
//!   and their positions (`information_schema._pg_expandarray` becomes
//!   `unnest(pg_expandarray(…))`, see `crate::pgwire::rewrite`);
//! - `pg_like_escape(pattern, escape)`: a `LIKE` pattern written with
//!   another escape character, in backslash form (see `crate::pgwire::rewrite`);
//! - what BI tools ask when they connect (`tests/bi_catalog.rs`):
//!   `pg_postmaster_start_time()`, `pg_is_in_recovery()` and
//!   `pg_is_wal_replay_paused()` (false), `txid_current()`, `age(xid)` (0),
//!   `pg_tablespace_location(oid)` (''), `pg_function_is_visible` /
//!   `pg_type_is_visible` (true), `current_setting(name [, missing_ok])`
//!   (the settings `SHOW` answers), `set_config(name, value, is_local)` (only
//!   to the value the setting has: a function cannot change the connection), `format(fmt, …)` (`%s`, `%I`, `%L`),
//!   `pg_size_pretty(bigint)`, `pg_table_size`, `pg_relation_size`,
//!   `pg_total_relation_size`, `pg_indexes_size` and `pg_stat_get_numscans`
//!   (0, a `bigint` as in PostgreSQL), and NULL for what
//!   Panorama has none of: `obj_description`, `col_description`,
//!   `shobj_description`, `pg_get_viewdef`, `pg_get_ruledef`,
//!   `pg_get_function_result` / `_arguments`.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int32Array, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion_postgres::pgwire::api::Type;

/// The functions, to register after `datafusion-pg-catalog`'s.
pub fn functions() -> Vec<ScalarUDF> {
    LazyLock::force(&STARTED);
    [
        Function::GetExpr,
        Function::ToRegtype,
        Function::SerialSequence,
        Function::IndexDef,
        Function::CollationVisible,
        Function::LikeEscape,
        Function::ExpandArray,
        Function::PostmasterStartTime,
        Function::IsInRecovery,
        Function::IsWalReplayPaused,
        Function::TxidCurrent,
        Function::Age,
        Function::TablespaceLocation,
        Function::ProcIsVisible,
        Function::TypeIsVisible,
        Function::ProcResult,
        Function::ProcArguments,
        Function::ObjDescription,
        Function::ColDescription,
        Function::ShobjDescription,
        Function::SizePretty,
        Function::Size("pg_table_size"),
        Function::Size("pg_relation_size"),
        Function::Size("pg_total_relation_size"),
        Function::Size("pg_indexes_size"),
        Function::Size("pg_stat_get_numscans"),
        Function::GetViewdef,
        Function::RuleDef,
        Function::CurrentSetting,
        Function::SetConfig,
        Function::Format,
    ]
    .into_iter()
    .map(|function| {
        let signature = match function {
            Function::PostmasterStartTime
            | Function::IsInRecovery
            | Function::IsWalReplayPaused
            | Function::TxidCurrent => Signature::exact(vec![], Volatility::Stable),
            _ => Signature::variadic_any(Volatility::Stable),
        };
        ScalarUDF::new_from_impl(Udf {
            function,
            signature,
        })
    })
    .collect()
}

/// When this server started, for `pg_postmaster_start_time()` (microseconds
/// since the epoch; fixed by the first call of [`functions`]).
static STARTED: LazyLock<i64> = LazyLock::new(|| chrono::Utc::now().timestamp_micros());

/// `txid_current()`'s last answer: each call takes the next number, as each
/// of PostgreSQL's transactions that asks gets a new transaction ID.
static TXID: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(1_000);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Function {
    GetExpr,
    ToRegtype,
    SerialSequence,
    IndexDef,
    CollationVisible,
    LikeEscape,
    ExpandArray,
    PostmasterStartTime,
    IsInRecovery,
    IsWalReplayPaused,
    TxidCurrent,
    Age,
    TablespaceLocation,
    ProcIsVisible,
    TypeIsVisible,
    ProcResult,
    ProcArguments,
    ObjDescription,
    ColDescription,
    ShobjDescription,
    SizePretty,
    /// A relation's size or scan count: 0, a `bigint` (`datafusion-pg-catalog`
    /// answers `pg_relation_size` and its kin as `integer`).
    Size(&'static str),
    GetViewdef,
    RuleDef,
    CurrentSetting,
    /// `set_config(name, value, is_local)`: the value, when it is the
    /// setting's value already (pgAdmin asks for `bytea_output` `hex`); a
    /// change is refused, since a function cannot reach the connection:
    /// `SET` changes settings.
    SetConfig,
    Format,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Udf {
    function: Function,
    signature: Signature,
}

/// Built-in type names (PostgreSQL's `typname`s and the SQL spellings
/// `format_type` prints) to OIDs.
static TYPES: LazyLock<HashMap<String, u32>> = LazyLock::new(|| {
    let mut names: HashMap<String, u32> = (0..20_000)
        .filter_map(|oid| Type::from_oid(oid).map(|t| (t.name().to_string(), oid)))
        .collect();
    for (alias, name) in [
        ("smallint", "int2"),
        ("integer", "int4"),
        ("int", "int4"),
        ("bigint", "int8"),
        ("real", "float4"),
        ("double precision", "float8"),
        ("boolean", "bool"),
        ("decimal", "numeric"),
        ("character varying", "varchar"),
        ("character", "bpchar"),
        ("char", "bpchar"),
        ("timestamp without time zone", "timestamp"),
        ("timestamp with time zone", "timestamptz"),
        ("time without time zone", "time"),
        ("time with time zone", "timetz"),
    ] {
        if let Some(oid) = names.get(name).copied() {
            names.insert(alias.to_string(), oid);
            if let Some(array) = names.get(&format!("_{name}")).copied() {
                names.insert(format!("{alias}[]"), array);
            }
        }
    }
    let arrays: Vec<(String, u32)> = names
        .iter()
        .filter_map(|(name, oid)| Some((format!("{}[]", name.strip_prefix('_')?), *oid)))
        .collect();
    names.extend(arrays);
    names
});

fn type_oid(name: &str) -> Option<i32> {
    let name = name.trim().to_lowercase();
    let name = name.strip_prefix("pg_catalog.").unwrap_or(&name);
    let name = name.trim_matches('"');
    TYPES.get(name).and_then(|oid| i32::try_from(*oid).ok())
}

fn rows(args: &[ColumnarValue]) -> usize {
    args.iter()
        .find_map(|a| match a {
            ColumnarValue::Array(a) => Some(a.len()),
            ColumnarValue::Scalar(_) => None,
        })
        .unwrap_or(1)
}

impl ScalarUDFImpl for Udf {
    fn name(&self) -> &str {
        match self.function {
            Function::GetExpr => "pg_get_expr",
            Function::ToRegtype => "to_regtype",
            Function::SerialSequence => "pg_get_serial_sequence",
            Function::IndexDef => "pg_get_indexdef",
            Function::CollationVisible => "pg_collation_is_visible",
            Function::LikeEscape => "pg_like_escape",
            Function::ExpandArray => "pg_expandarray",
            Function::PostmasterStartTime => "pg_postmaster_start_time",
            Function::IsInRecovery => "pg_is_in_recovery",
            Function::IsWalReplayPaused => "pg_is_wal_replay_paused",
            Function::TxidCurrent => "txid_current",
            Function::Age => "age",
            Function::TablespaceLocation => "pg_tablespace_location",
            Function::ProcIsVisible => "pg_function_is_visible",
            Function::TypeIsVisible => "pg_type_is_visible",
            Function::ProcResult => "pg_get_function_result",
            Function::ProcArguments => "pg_get_function_arguments",
            Function::ObjDescription => "obj_description",
            Function::ColDescription => "col_description",
            Function::ShobjDescription => "shobj_description",
            Function::SizePretty => "pg_size_pretty",
            Function::Size(name) => name,
            Function::GetViewdef => "pg_get_viewdef",
            Function::RuleDef => "pg_get_ruledef",
            Function::CurrentSetting => "current_setting",
            Function::SetConfig => "set_config",
            Function::Format => "format",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(match self.function {
            Function::ExpandArray => DataType::new_list(DataType::Struct(expanded_fields()), true),
            Function::ToRegtype | Function::Age => DataType::Int32,
            Function::CollationVisible
            | Function::IsInRecovery
            | Function::IsWalReplayPaused
            | Function::ProcIsVisible
            | Function::TypeIsVisible => DataType::Boolean,
            Function::TxidCurrent | Function::Size(_) => DataType::Int64,
            Function::PostmasterStartTime => DataType::Timestamp(
                datafusion::arrow::datatypes::TimeUnit::Microsecond,
                Some("UTC".into()),
            ),
            _ => DataType::Utf8,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let args = args.args;
        let n = rows(&args);
        let arity = |min: usize, max: usize| -> Result<()> {
            if args.len() < min || args.len() > max {
                return Err(DataFusionError::Plan(format!(
                    "{} takes {min} to {max} arguments, not {}",
                    self.name(),
                    args.len()
                )));
            }
            Ok(())
        };
        let array: ArrayRef = match self.function {
            Function::GetExpr => {
                arity(2, 3)?;
                ColumnarValue::values_to_arrays(&args[..1])?
                    .pop()
                    .map(|a| datafusion::arrow::compute::cast(&a, &DataType::Utf8))
                    .transpose()?
                    .unwrap_or_else(|| Arc::new(StringArray::new_null(n)))
            }
            Function::ToRegtype => {
                arity(1, 1)?;
                to_regtype(&args)?
            }
            Function::SerialSequence => {
                arity(2, 2)?;
                Arc::new(StringArray::new_null(n))
            }
            Function::IndexDef => {
                arity(1, 3)?;
                Arc::new(StringArray::new_null(n))
            }
            Function::CollationVisible => {
                arity(1, 1)?;
                Arc::new(datafusion::arrow::array::BooleanArray::from(vec![true; n]))
            }
            Function::ExpandArray => {
                arity(1, 1)?;
                let lists = ColumnarValue::values_to_arrays(&args)?;
                expand_array(&lists[0])?
            }
            Function::PostmasterStartTime => Arc::new(
                datafusion::arrow::array::TimestampMicrosecondArray::from(vec![*STARTED; n])
                    .with_timezone("UTC"),
            ),
            // A primary, never replaying WAL.
            Function::IsInRecovery | Function::IsWalReplayPaused => {
                Arc::new(datafusion::arrow::array::BooleanArray::from(vec![false; n]))
            }
            Function::TxidCurrent => {
                let txid = TXID.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                Arc::new(datafusion::arrow::array::Int64Array::from(vec![txid; n]))
            }
            // Every row is as old as the oldest: Panorama's catalog rows
            // carry no transaction IDs.
            Function::Age => {
                arity(1, 1)?;
                Arc::new(Int32Array::from(vec![0; n]))
            }
            // The default tablespaces, whose location PostgreSQL gives as ''.
            Function::TablespaceLocation => {
                arity(1, 1)?;
                Arc::new(StringArray::from(vec![""; n]))
            }
            Function::ProcIsVisible | Function::TypeIsVisible => {
                arity(1, 1)?;
                Arc::new(datafusion::arrow::array::BooleanArray::from(vec![true; n]))
            }
            // No function of Panorama's has SQL arguments to describe, no
            // object a comment, no view a definition it could print.
            Function::ProcResult | Function::ProcArguments => {
                arity(1, 1)?;
                Arc::new(StringArray::new_null(n))
            }
            Function::ObjDescription | Function::ShobjDescription => {
                arity(1, 2)?;
                Arc::new(StringArray::new_null(n))
            }
            Function::ColDescription => {
                arity(2, 2)?;
                Arc::new(StringArray::new_null(n))
            }
            Function::GetViewdef | Function::RuleDef => {
                arity(1, 2)?;
                Arc::new(StringArray::new_null(n))
            }
            // The lake's files are not a relation's pages: no size to give.
            Function::Size(_) => {
                arity(1, 2)?;
                Arc::new(datafusion::arrow::array::Int64Array::from(vec![0; n]))
            }
            Function::SizePretty => {
                arity(1, 1)?;
                size_pretty_of(&args)?
            }
            Function::CurrentSetting => {
                arity(1, 2)?;
                current_setting(&args, n)?
            }
            Function::SetConfig => {
                arity(3, 3)?;
                set_config(&args, n)?
            }
            Function::Format => format_rows(&args, n)?,
            Function::LikeEscape => {
                arity(2, 2)?;
                like_escapes(&args)?
            }
        };
        Ok(
            if args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
                ColumnarValue::Scalar(ScalarValue::try_from_array(&array, 0)?)
            } else {
                ColumnarValue::Array(array)
            },
        )
    }
}

/// `pg_size_pretty(size)`: bytes as PostgreSQL spells them (`8192 bytes`, `12 MB`).
fn size_pretty_of(args: &[ColumnarValue]) -> Result<ArrayRef> {
    let sizes = ColumnarValue::values_to_arrays(args)?;
    let sizes = datafusion::arrow::compute::cast(&sizes[0], &DataType::Int64)?;
    let sizes = sizes
        .as_any()
        .downcast_ref::<datafusion::arrow::array::Int64Array>()
        .ok_or_else(|| DataFusionError::Internal("pg_size_pretty: not int8".into()))?;
    Ok(Arc::new(
        sizes
            .iter()
            .map(|s| s.map(size_pretty))
            .collect::<StringArray>(),
    ))
}

/// `current_setting(name [, missing_ok])`: a server-wide parameter's value.
fn current_setting(args: &[ColumnarValue], n: usize) -> Result<ArrayRef> {
    let arrays = ColumnarValue::values_to_arrays(args)?;
    let names = text(&arrays[0])?;
    let settings = super::settings::fixed_settings();
    let mut out = Vec::with_capacity(n);
    for name in names.iter() {
        let Some(name) = name else {
            out.push(None);
            continue;
        };
        match setting(&settings, name) {
            Some(v) => out.push(Some(v.to_string())),
            // `current_setting(name, true)`: NULL when unknown.
            None if args.len() == 2 => out.push(None),
            None => return Err(unrecognized(name)),
        }
    }
    Ok(Arc::new(StringArray::from(out)))
}

/// `set_config(name, value, local)`: accepted only when it changes nothing
/// (`SET` sets a connection's parameters).
fn set_config(args: &[ColumnarValue], n: usize) -> Result<ArrayRef> {
    let arrays = ColumnarValue::values_to_arrays(args)?;
    let (names, values) = (text(&arrays[0])?, text(&arrays[1])?);
    let settings = super::settings::fixed_settings();
    let mut out = Vec::with_capacity(n);
    for (name, value) in names.iter().zip(values.iter()) {
        let (Some(name), Some(value)) = (name, value) else {
            out.push(None);
            continue;
        };
        match setting(&settings, name) {
            Some(current) if current == value => out.push(Some(value.to_string())),
            Some(_) => {
                return Err(DataFusionError::Execution(format!(
                    "set_config cannot change \"{name}\" here; use SET"
                )));
            }
            None => return Err(unrecognized(name)),
        }
    }
    Ok(Arc::new(StringArray::from(out)))
}

/// `format(text, args…)`, row by row.
fn format_rows(args: &[ColumnarValue], n: usize) -> Result<ArrayRef> {
    if args.is_empty() {
        return Err(DataFusionError::Plan(
            "format takes a format string and its arguments".into(),
        ));
    }
    let arrays = ColumnarValue::values_to_arrays(args)?;
    let mut out = Vec::with_capacity(n);
    for row in 0..n {
        let values = arrays
            .iter()
            .map(|a| ScalarValue::try_from_array(a, row))
            .collect::<Result<Vec<_>>>()?;
        out.push(format_values(&values)?);
    }
    Ok(Arc::new(StringArray::from(out)))
}

/// `to_regtype(name)`: the OID of a built-in type by any of its names.
fn to_regtype(args: &[ColumnarValue]) -> Result<ArrayRef> {
    let names = text(&ColumnarValue::values_to_arrays(args)?[0])?;
    Ok(Arc::new(
        names
            .iter()
            .map(|name| name.and_then(type_oid))
            .collect::<Int32Array>(),
    ))
}

/// `pg_like_escape(pattern, escape)`, row by row.
fn like_escapes(args: &[ColumnarValue]) -> Result<ArrayRef> {
    let arrays = ColumnarValue::values_to_arrays(args)?;
    let (patterns, escapes) = (text(&arrays[0])?, text(&arrays[1])?);
    Ok(Arc::new(
        patterns
            .iter()
            .zip(escapes.iter())
            .map(|(p, e)| Some(like_escape(p?, e?)))
            .collect::<StringArray>(),
    ))
}

/// An argument as text.
fn text(a: &ArrayRef) -> Result<StringArray> {
    let a = datafusion::arrow::compute::cast(a, &DataType::Utf8)?;
    Ok(a.as_string::<i32>().clone())
}

/// The server-wide value of the parameter `name` (in any case).
fn setting<'a>(settings: &'a [(&str, String)], name: &str) -> Option<&'a str> {
    settings
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn unrecognized(name: &str) -> DataFusionError {
    DataFusionError::Execution(format!("unrecognized configuration parameter \"{name}\""))
}

fn expanded_fields() -> datafusion::arrow::datatypes::Fields {
    vec![
        datafusion::arrow::datatypes::Field::new("x", DataType::Int32, true),
        datafusion::arrow::datatypes::Field::new("n", DataType::Int32, false),
    ]
    .into()
}

/// Each list of `lists` as a list of `{x: element, n: position from 1}`.
fn expand_array(lists: &ArrayRef) -> Result<ArrayRef> {
    use datafusion::arrow::array::{AsArray, ListArray, StructArray};
    let lists = match lists.data_type() {
        DataType::List(_) => lists.as_list::<i32>().clone(),
        DataType::Null => ListArray::new_null(
            Arc::new(datafusion::arrow::datatypes::Field::new_list_field(
                DataType::Int32,
                true,
            )),
            lists.len(),
        ),
        other => {
            return Err(DataFusionError::Plan(format!(
                "_pg_expandarray takes an array, not {other}"
            )));
        }
    };
    let values = datafusion::arrow::compute::cast(lists.values(), &DataType::Int32)?;
    let offsets = lists.offsets();
    let positions: Int32Array = offsets.windows(2).flat_map(|w| 1..=(w[1] - w[0])).collect();
    let start = usize::try_from(offsets[0]).unwrap_or(0);
    let end = usize::try_from(offsets[offsets.len() - 1]).unwrap_or(0);
    let values = values.slice(start, end - start);
    let rebased = datafusion::arrow::buffer::OffsetBuffer::new(
        offsets
            .iter()
            .map(|o| o - offsets[0])
            .collect::<Vec<_>>()
            .into(),
    );
    let structs = StructArray::try_new(
        expanded_fields(),
        vec![values, Arc::new(positions) as ArrayRef],
        None,
    )?;
    Ok(Arc::new(ListArray::try_new(
        Arc::new(datafusion::arrow::datatypes::Field::new_list_field(
            DataType::Struct(expanded_fields()),
            true,
        )),
        rebased,
        Arc::new(structs),
        lists.nulls().cloned(),
    )?))
}

/// PostgreSQL's `pg_size_pretty(bigint)`: bytes up to 10 kB, then kB, MB,
/// GB, TB, PB, each unit used below 10240 of itself, rounded half up.
fn size_pretty(bytes: i64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    let mut size = bytes;
    if size.abs() < 10 * 1024 {
        return format!("{size} bytes");
    }
    for (i, unit) in UNITS.iter().enumerate() {
        // Halve, round, then compare, as PostgreSQL does for each step.
        let half = size / 512;
        let rounded = (half + half.signum()) / 2;
        if rounded.abs() < 10 * 1024 || i == UNITS.len() - 1 {
            return format!("{rounded} {unit}");
        }
        size /= 1024;
    }
    unreachable!("the last unit returns")
}

/// An identifier as `quote_ident` writes it: bare when it is lower case
/// letters, digits and underscores not starting with a digit.
fn quote_ident(name: &str) -> String {
    let bare = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if bare {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// `format(fmt, args…)` for one row: `%s` (text, NULL as nothing), `%I`
/// (an identifier), `%L` (a literal, NULL as `NULL`) and `%%`; NULL when
/// the format is NULL.
fn format_values(values: &[ScalarValue]) -> Result<Option<String>> {
    let Some((fmt, rest)) = values.split_first() else {
        return Ok(None);
    };
    if fmt.is_null() {
        return Ok(None);
    }
    let fmt = fmt.to_string();
    let mut rest = rest.iter();
    let mut out = String::with_capacity(fmt.len());
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let spec = chars.next();
        if spec == Some('%') {
            out.push('%');
            continue;
        }
        let value = rest
            .next()
            .ok_or_else(|| DataFusionError::Execution("too few arguments for format()".into()))?;
        let text = (!value.is_null()).then(|| value.to_string());
        match (spec, text) {
            (Some('s'), text) => out.push_str(text.as_deref().unwrap_or("")),
            (Some('I'), Some(text)) => out.push_str(&quote_ident(&text)),
            (Some('I'), None) => {
                return Err(DataFusionError::Execution(
                    "null values cannot be formatted as an SQL identifier".into(),
                ));
            }
            (Some('L'), Some(text)) => {
                out.push('\'');
                out.push_str(&text.replace('\'', "''"));
                out.push('\'');
            }
            (Some('L'), None) => out.push_str("NULL"),
            (other, _) => {
                return Err(DataFusionError::Execution(format!(
                    "unrecognized format() type specifier \"{}\"",
                    other.map(String::from).unwrap_or_default()
                )));
            }
        }
    }
    Ok(Some(out))
}

/// `pattern` (escape character `escape`, none if empty) with the
/// backslash as escape character instead.
fn like_escape(pattern: &str, escape: &str) -> String {
    let escape = escape.chars().next();
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if Some(c) == escape {
            match chars.next() {
                Some(next @ ('%' | '_' | '\\')) => {
                    out.push('\\');
                    out.push(next);
                }
                Some(next) => out.push(next),
                None => {}
            }
        } else if c == '\\' {
            out.push_str("\\\\");
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_move_to_the_backslash_escape() {
        assert_eq!(like_escape("pg/_%", "/"), "pg\\_%");
        assert_eq!(like_escape("a\\b//c", "/"), "a\\\\b/c");
        assert_eq!(like_escape("100%", ""), "100%");
        assert_eq!(like_escape("x\\y", ""), "x\\\\y");
    }

    #[test]
    fn sizes_and_formats_print_as_postgres_prints_them() {
        assert_eq!(size_pretty(0), "0 bytes");
        assert_eq!(size_pretty(10_239), "10239 bytes");
        assert_eq!(size_pretty(10_240), "10 kB");
        assert_eq!(size_pretty(1_000_000), "977 kB");
        assert_eq!(size_pretty(123_456_789), "118 MB");
        let text = |s: &str| ScalarValue::Utf8(Some(s.into()));
        assert_eq!(
            format_values(&[text("%I.%I"), text("raw"), text("Order Items")]).unwrap(),
            Some("raw.\"Order Items\"".into())
        );
        assert_eq!(
            format_values(&[text("%s=%L, 100%%"), text("a"), ScalarValue::Utf8(None)]).unwrap(),
            Some("a=NULL, 100%".into())
        );
    }

    #[test]
    fn type_names_resolve_as_postgres_resolves_them() {
        assert_eq!(type_oid("integer"), Some(23));
        assert_eq!(type_oid("int4"), Some(23));
        assert_eq!(type_oid("pg_catalog.text"), Some(25));
        assert_eq!(type_oid("text[]"), Some(1009));
        assert_eq!(type_oid("double precision"), Some(701));
        assert_eq!(type_oid("timestamp with time zone"), Some(1184));
        assert_eq!(type_oid("hstore"), None);
    }
}
