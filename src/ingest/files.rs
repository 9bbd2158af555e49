//! Batch loads: CSV, NDJSON and Parquet files (CSV and NDJSON also gzip-
//! or zstd-compressed) into a raw table (`panorama ingest`).
//!
//! A file is read a block of records at a time ([`super::read`]); each
//! record's fields, renamed by the column mapping (or computed,
//! [`super::computed`]), are coerced to the raw table's types with the
//! identity rules' checks (a required identifier present, a parseable
//! time) — a Parquet column already of the column's type is taken as it
//! is, anything else is parsed from its text, by the same rules whatever
//! the format. A row that fails goes to
//! `rejects/<table>/` in the lake with its source file, line, field and
//! reason (queryable as `system.rejects`); every good row lands. Files are
//! streamed in chunks, so memory stays bounded whatever their size; each
//! chunk lands under names derived from the file's content hash, so a load
//! interrupted midway can be run again without duplicating rows, and a file
//! already loaded is skipped. Every load is recorded in `system.ingests`.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Read;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::compute::{sort_to_indices, take_record_batch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::computed::Failure;
use super::read::{Block, Item, format_of, read_blocks};
use super::{Landed, land_once};
use crate::error::{Error, Result};
use crate::identity::IdentityConfig;
use crate::identity::normalize::{self, Country, Normalize};
use crate::lake::Lake;
use crate::schema::declared::LOADED_AT;
use crate::schema::rows::TableRows;
use crate::schema::{EXTRA_COLUMN, RawTable, utc_timestamps};

/// Rows per landed chunk: bounds memory for files of any size.
const CHUNK_ROWS: usize = 100_000;

/// Namespace of the ids derived from content hashes.
const INGEST_NAMESPACE: Uuid = Uuid::from_u128(0x7061_6e6f_7261_6d61_2d69_6e67_6573_7400);

/// How to read a load's files.
#[derive(Debug, Clone, Default)]
pub struct IngestOptions {
    /// Target column → source field, where the names differ.
    pub mapping: BTreeMap<String, String>,
    /// Target column → value for rows that lack it.
    pub defaults: BTreeMap<String, String>,
    /// Identifier column → how the identity rules normalise it (emails
    /// lower-cased, phones to E.164, ...); see [`IngestOptions::normalizing`].
    /// Not part of a load's identity: the same file is the same load.
    pub normalize: BTreeMap<String, (Normalize, Country)>,
    /// File fields to leave out (`--drop`). Every other field no column
    /// holds is kept in the table's `extra` JSON column.
    pub drop: BTreeSet<String>,
    /// The identity rules ([`IngestOptions::normalizing`] sets them): which
    /// columns are identifiers, to drop the rows of suppressed people.
    pub identity: IdentityConfig,
}

impl IngestOptions {
    /// Normalise the identifier columns of `table` as `identity` does
    /// before matching: a value the rule cannot normalise (an email
    /// without `@`) is kept as sent, never dropped.
    pub fn normalizing(mut self, table: RawTable, identity: &IdentityConfig) -> Result<Self> {
        self.identity = identity.clone();
        let country = normalize::country(&identity.default_country).ok_or_else(|| {
            Error::Config(format!("unknown country '{}'", identity.default_country))
        })?;
        for source in &identity.sources {
            if source.table != table.name() || source.json_path.is_some() {
                continue;
            }
            if let Some(kind) = identity.id_type(&source.id_type) {
                self.normalize
                    .insert(source.column.clone(), (kind.normalize, country));
            }
        }
        Ok(self)
    }
}

/// What loading one file did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileReport {
    pub source: String,
    pub rows_read: u64,
    pub rows_landed: u64,
    pub rows_rejected: u64,
    pub files_written: u64,
    /// Loaded before (same content, table and options): nothing done.
    pub skipped: bool,
    /// File fields no column holds, kept in the `extra` JSON column.
    pub kept_in_extra: BTreeSet<String>,
    /// File fields left out because the load asked (`--drop`).
    pub dropped: BTreeSet<String>,
    /// Rows not landed because they carry a suppressed identifier.
    pub rows_suppressed: u64,
}

/// One rejected row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub line: u64,
    pub field: String,
    pub reason: String,
    pub raw: String,
}

/// The files a list of paths names (folders expand to their files, sorted).
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut inner: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| Error::Io {
                    what: "listing a folder to load".into(),
                    path: p.clone(),
                    source: e,
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            inner.sort();
            out.extend(inner);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// SHA-256 of a file's bytes, the table and the load options: the identity
/// of a load.
fn load_hash(path: &FsPath, table: RawTable, options: &IngestOptions) -> Result<String> {
    let mut hasher = Sha256::new();
    let mut file = std::fs::File::open(path).map_err(|e| Error::Io {
        what: "reading a file to load".into(),
        path: path.to_path_buf(),
        source: e,
    })?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::Io {
            what: "reading a file to load".into(),
            path: path.to_path_buf(),
            source: e,
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hasher.update(format!("{table}|{:?}|{:?}", options.mapping, options.defaults).as_bytes());
    if !options.drop.is_empty() {
        hasher.update(format!("|drop {:?}", options.drop).as_bytes());
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Parse a time: RFC 3339, `YYYY-MM-DD HH:MM:SS[.f]` with an offset
/// (`+02`, `+0200`, `+02:00`) or without one (then UTC), or a date.
fn parse_time(value: &str) -> Option<i64> {
    let v = value.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Some(t.with_timezone(&Utc).timestamp_micros());
    }
    // With an offset first: a format without one must never swallow it.
    for format in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z"] {
        if let Ok(t) = DateTime::parse_from_str(v, format) {
            return Some(t.with_timezone(&Utc).timestamp_micros());
        }
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(v, format) {
            return Some(t.and_utc().timestamp_micros());
        }
    }
    NaiveDate::parse_from_str(v, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_micros())
}

/// Parse money with at most two decimals into cents.
fn parse_cents(value: &str) -> Option<i64> {
    let v = value.trim();
    let (negative, v) = match v.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, v),
    };
    let (units, fraction) = v.split_once('.').unwrap_or((v, ""));
    if units.is_empty() && fraction.is_empty()
        || !units.chars().all(|c| c.is_ascii_digit())
        || !fraction.chars().all(|c| c.is_ascii_digit())
        || fraction.len() > 2
    {
        return None;
    }
    let units: i64 = if units.is_empty() {
        0
    } else {
        units.parse().ok()?
    };
    let cents: i64 = format!("{fraction:0<2}").parse().ok()?;
    let total = units.checked_mul(100)?.checked_add(cents)?;
    Some(if negative { -total } else { total })
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_lowercase().as_str() {
        "true" | "t" | "1" | "yes" | "y" => Some(true),
        "false" | "f" | "0" | "no" | "n" => Some(false),
        _ => None,
    }
}

/// The file fields a load places in a column of `schema` (through the
/// mapping, or by name): every other field goes to `extra`, or is dropped.
fn placed_fields(schema: &SchemaRef, options: &IngestOptions) -> HashSet<String> {
    schema
        .fields()
        .iter()
        .map(|f| options.mapping.get(f.name()).unwrap_or(f.name()).clone())
        .collect()
}

/// The names of the fields a load kept in `extra` or dropped.
#[derive(Debug, Default)]
struct Unplaced {
    kept: BTreeSet<String>,
    dropped: BTreeSet<String>,
}

fn note(set: &mut BTreeSet<String>, name: &str) {
    if !set.contains(name) {
        set.insert(name.to_string());
    }
}

/// The `extra` object of row `row`: the file's own `extra` field (a JSON
/// object), plus every field of `kept` the row has, with its JSON value
/// for NDJSON and its text otherwise.
fn pack_extra(
    own: Option<&str>,
    block: &Block,
    row: usize,
    kept: &[(usize, &StringArray)],
    unplaced: &mut Unplaced,
) -> std::result::Result<Option<String>, Failure> {
    use serde_json::Value;
    let mut object = match own {
        None => serde_json::Map::new(),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(object)) => object,
            _ => return Err((EXTRA_COLUMN.into(), "not a JSON object".into())),
        },
    };
    for &(column, text) in kept {
        if text.is_null(row) || text.value(row).is_empty() {
            continue;
        }
        let name: &str = &block.names()[column];
        if object.contains_key(name) {
            return Err((
                name.to_string(),
                format!("is both a field of the file and a key of its {EXTRA_COLUMN} object"),
            ));
        }
        note(&mut unplaced.kept, name);
        let value = block
            .json(column, row)
            .cloned()
            .unwrap_or_else(|| Value::String(text.value(row).to_string()));
        object.insert(name.to_string(), value);
    }
    Ok((!object.is_empty()).then(|| Value::Object(object).to_string()))
}

/// Where one load's records go: the table, its options, the fields it
/// places, and the values the loader fills in (`received_at`, an event's
/// `message_id` from its line).
struct Target<'a> {
    table: RawTable,
    schema: &'a SchemaRef,
    options: &'a IngestOptions,
    placed: &'a HashSet<String>,
    fill: &'a (dyn Fn(&str, u64) -> Option<String> + Sync),
}

/// How the fields of one block fill the table's columns.
struct Layout<'b> {
    /// Per column: its field as text, if the block has it.
    text: Vec<Option<&'b StringArray>>,
    /// Per column: its field already of the column's type (Parquet), read
    /// without parsing.
    typed: Vec<Option<ArrayRef>>,
    /// The fields kept in `extra`.
    kept: Vec<(usize, &'b StringArray)>,
}

impl<'b> Layout<'b> {
    fn new(target: &Target<'_>, block: &'b Block, unplaced: &mut Unplaced) -> Result<Layout<'b>> {
        let options = target.options;
        let mut layout = Layout {
            text: Vec::with_capacity(target.schema.fields().len()),
            typed: Vec::with_capacity(target.schema.fields().len()),
            kept: Vec::new(),
        };
        for f in target.schema.fields() {
            let name = f.name().as_str();
            let field = options.mapping.get(name).map_or(name, String::as_str);
            let column = block.index_of(field);
            let typed = column
                .and_then(|c| block.typed(c))
                .and_then(|a| as_column_type(a, f.data_type()));
            layout.text.push(match (column, &typed) {
                (Some(c), None) => Some(block.text(c)?),
                _ => None,
            });
            layout.typed.push(typed);
        }
        for (column, name) in block.names().iter().enumerate() {
            if target.placed.contains(&**name) {
                continue;
            }
            if options.drop.contains(&**name) {
                note(&mut unplaced.dropped, name);
                continue;
            }
            layout.kept.push((column, block.text(column)?));
        }
        Ok(layout)
    }

    /// The text of column `i` at `row` (blank: none), else the load's
    /// default, else what the loader fills in.
    fn value(&self, target: &Target<'_>, i: usize, row: usize, line: u64) -> Option<Cow<'b, str>> {
        let name = target.schema.field(i).name().as_str();
        self.text[i]
            .filter(|t| t.is_valid(row))
            .map(|t| t.value(row))
            .filter(|v| !v.trim().is_empty())
            .map(Cow::Borrowed)
            .or_else(|| target.options.defaults.get(name).cloned().map(Cow::Owned))
            .or_else(|| (target.fill)(name, line).map(Cow::Owned))
    }
}

/// `array` as a column of type `wanted` when that loses nothing and needs
/// no parsing (an integer column of any width, a timestamp of any unit);
/// `None` sends the column through text.
fn as_column_type(array: &ArrayRef, wanted: &DataType) -> Option<ArrayRef> {
    use DataType::*;
    let fits = matches!(
        (array.data_type(), wanted),
        (
            Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32,
            Int64
        ) | (Float32 | Float64, Float64)
            | (Timestamp(_, _), Timestamp(_, _))
            | (Boolean, Boolean)
            | (Date32, Date32)
    );
    let strict = datafusion::arrow::compute::CastOptions {
        safe: false,
        ..Default::default()
    };
    fits.then(|| datafusion::arrow::compute::cast_with_options(array, wanted, &strict).ok())
        .flatten()
}

/// A value of a row, typed for its column.
enum Typed<'b> {
    Text(Option<Cow<'b, str>>),
    Time(Option<i64>),
    Int(Option<i64>),
    Float(Option<f64>),
    Cents(Option<i64>),
    Bool(Option<bool>),
    Date(Option<i32>),
}

/// Place the records of `block` into `rows`, each but the ones that fail
/// (`failed`: their computed mappings did) — those go to `rejects` with
/// their line, field and reason.
fn place_block(
    target: &Target<'_>,
    block: &Block,
    failed: Vec<Option<Failure>>,
    rows: &mut TableRows,
    rejects: &mut Vec<Reject>,
    unplaced: &mut Unplaced,
) -> Result<()> {
    let layout = Layout::new(target, block, unplaced)?;
    let mut typed = Vec::with_capacity(target.schema.fields().len());
    for (row, failure) in failed.into_iter().enumerate() {
        let line = block.lines[row];
        let placed = match failure {
            Some(failure) => Err(failure),
            None => typed_row(target, &layout, block, row, line, unplaced, &mut typed),
        };
        match placed {
            Ok(()) => {
                for value in typed.drain(..) {
                    match value {
                        Typed::Text(v) => rows.text(v.as_deref()),
                        Typed::Time(v) => rows.timestamp(v),
                        Typed::Int(v) => rows.int(v),
                        Typed::Float(v) => rows.float(v),
                        Typed::Cents(v) => rows.money(v),
                        Typed::Bool(v) => rows.boolean(v),
                        Typed::Date(v) => rows.date(v),
                    };
                }
                rows.end_row();
            }
            Err((field, reason)) => {
                typed.clear();
                rejects.push(Reject {
                    line,
                    field,
                    reason,
                    raw: block.raw(row).to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Type every column of row `row` into `typed`, or say which field is
/// wrong and why.
fn typed_row<'b>(
    target: &Target<'_>,
    layout: &Layout<'b>,
    block: &'b Block,
    row: usize,
    line: u64,
    unplaced: &mut Unplaced,
    typed: &mut Vec<Typed<'b>>,
) -> std::result::Result<(), Failure> {
    let schema = target.schema;
    let column = |name: &str| schema.index_of(name).ok();
    if target.table == RawTable::Events
        && ["anonymous_id", "user_id"].iter().all(|name| {
            column(name).is_none_or(|i| {
                layout.value(target, i, row, line).is_none()
                    && layout.typed[i].as_ref().is_none_or(|a| a.is_null(row))
            })
        })
    {
        return Err((
            "anonymous_id".into(),
            "an event needs an anonymous_id or a user_id".into(),
        ));
    }
    for (i, f) in schema.fields().iter().enumerate() {
        let name = f.name().as_str();
        if let Some(array) = layout.typed[i].as_ref().filter(|a| a.is_valid(row)) {
            typed.push(match f.data_type() {
                DataType::Timestamp(_, _) => Typed::Time(Some(
                    array
                        .as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>()
                        .value(row),
                )),
                DataType::Int64 => Typed::Int(Some(
                    array
                        .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                        .value(row),
                )),
                DataType::Float64 => Typed::Float(Some(
                    array
                        .as_primitive::<datafusion::arrow::datatypes::Float64Type>()
                        .value(row),
                ))
                .finite(name)?,
                DataType::Boolean => Typed::Bool(Some(array.as_boolean().value(row))),
                DataType::Date32 => Typed::Date(Some(
                    array
                        .as_primitive::<datafusion::arrow::datatypes::Date32Type>()
                        .value(row),
                )),
                other => return Err((name.into(), format!("type {other} cannot be loaded"))),
            });
            continue;
        }
        let v = layout.value(target, i, row, line);
        if v.is_none() && !f.is_nullable() {
            return Err((name.into(), "required, but missing".into()));
        }
        // The reason names the field and what it must hold, never the
        // value: the value may be personal, and reasons outlive rejected
        // rows' masking (`system.rejects.raw` keeps the row as sent).
        let bad = |what: &str| (name.to_string(), format!("not {what}"));
        typed.push(match f.data_type() {
            DataType::Utf8 if name == EXTRA_COLUMN => Typed::Text(
                pack_extra(v.as_deref(), block, row, &layout.kept, unplaced)?.map(Cow::Owned),
            ),
            DataType::Utf8 => match (&v, target.options.normalize.get(name)) {
                (Some(raw), Some((kind, country))) => Typed::Text(
                    normalize::normalize(*kind, raw, *country)
                        .map(Cow::Owned)
                        .or(v),
                ),
                _ => Typed::Text(v),
            },
            DataType::Timestamp(_, _) => {
                match &v {
                    None => Typed::Time(None),
                    Some(s) => Typed::Time(Some(parse_time(s).ok_or_else(|| {
                        bad("a time (RFC 3339, YYYY-MM-DD HH:MM:SS or YYYY-MM-DD)")
                    })?)),
                }
            }
            DataType::Int64 => match &v {
                None => Typed::Int(None),
                Some(s) => Typed::Int(Some(s.trim().parse().map_err(|_| bad("an integer"))?)),
            },
            DataType::Float64 => match &v {
                None => Typed::Float(None),
                Some(s) => Typed::Float(Some(
                    s.trim()
                        .parse::<f64>()
                        .ok()
                        .filter(|f| f.is_finite())
                        .ok_or_else(|| bad("a number"))?,
                )),
            },
            DataType::Decimal128(_, _) => match &v {
                None => Typed::Cents(None),
                Some(s) => Typed::Cents(Some(
                    parse_cents(s).ok_or_else(|| bad("an amount with at most 2 decimals"))?,
                )),
            },
            DataType::Boolean => match &v {
                None => Typed::Bool(None),
                Some(s) => Typed::Bool(Some(parse_bool(s).ok_or_else(|| bad("true or false"))?)),
            },
            DataType::Date32 => match &v {
                None => Typed::Date(None),
                Some(s) => {
                    let d = NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
                        .map_err(|_| bad("a date (YYYY-MM-DD)"))?;
                    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
                    Typed::Date(Some((d - epoch).num_days() as i32))
                }
            },
            other => return Err((name.into(), format!("type {other} cannot be loaded"))),
        });
    }
    Ok(())
}

impl Typed<'_> {
    /// A float must be finite (NaN and infinities are refused as from text).
    fn finite(self, name: &str) -> std::result::Result<Self, Failure> {
        match self {
            Typed::Float(Some(f)) if !f.is_finite() => {
                Err((name.to_string(), "not a number".into()))
            }
            other => Ok(other),
        }
    }
}

pub use crate::lake::paths::{ingests_dir, rejects_dir};
pub use crate::schema::cdp::{ingests as ingests_schema, rejects as rejects_schema};

/// Whether a load with this hash was committed before.
async fn loaded_before(lake: &Lake, hash: &str) -> Result<bool> {
    use datafusion::arrow::array::AsArray;
    let hash_column = ingests_schema().index_of("content_hash").ok();
    let status_column = ingests_schema().index_of("status").ok();
    let (Some(hash_column), Some(status_column)) = (hash_column, status_column) else {
        return Ok(false);
    };
    let mut found = false;
    for file in crate::lake::delta::files(lake, &ingests_dir()).await?.files {
        crate::lake::parquet::for_each_batch(lake, &file.meta, |batch| {
            let hashes = batch.column(hash_column).as_string_opt::<i32>();
            let statuses = batch.column(status_column).as_string_opt::<i32>();
            if let (Some(hashes), Some(statuses)) = (hashes, statuses) {
                found |= (0..batch.num_rows())
                    .any(|i| hashes.value(i) == hash && statuses.value(i) == "committed");
            }
            Ok(())
        })
        .await?;
        if found {
            break;
        }
    }
    Ok(found)
}

/// Load one file into raw `table`; `progress` gets the rows read so far.
pub async fn load_file(
    lake: &Lake,
    table: RawTable,
    path: &FsPath,
    options: &IngestOptions,
    progress: impl FnMut(u64),
) -> Result<FileReport> {
    let source = path.display().to_string();
    load_file_as(lake, table, path, &source, options, progress).await
}

/// [`load_file`], naming the input `source` (e.g. the URL it came from) in
/// `system.ingests` and `system.rejects`.
pub async fn load_file_as(
    lake: &Lake,
    table: RawTable,
    path: &FsPath,
    source: &str,
    options: &IngestOptions,
    mut progress: impl FnMut(u64),
) -> Result<FileReport> {
    let started = Utc::now();
    let source = source.to_string();
    let (format, compression) = format_of(path)?;
    let hash = load_hash(path, table, options)?;
    let mut report = FileReport {
        source: source.clone(),
        ..FileReport::default()
    };
    if loaded_before(lake, &hash).await? {
        report.skipped = true;
        return Ok(report);
    }
    let load_id = Uuid::new_v5(&INGEST_NAMESPACE, hash.as_bytes());
    let schema = table.file_schema();
    let received = started.to_rfc3339();
    let country = normalize::country(&options.identity.default_country).unwrap_or(Country::FR);
    let expressions = super::computed::Expressions::plan(&options.mapping, country)?;
    // Computed columns read their value from the record key it is stored
    // under; the fields the expressions read are placed.
    let mut options = options.clone();
    for column in expressions.columns() {
        options
            .mapping
            .insert(column.to_string(), super::computed::key(column));
    }
    // Parsing is synchronous; chunks are handed to the async writer.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(RecordBatch, Vec<Reject>, u64)>(2);
    let reader = {
        let (path, options, schema) = (path.to_path_buf(), options.clone(), schema.clone());
        tokio::task::spawn_blocking(move || -> Result<Unplaced> {
            let mut placed = placed_fields(&schema, &options);
            placed.extend(expressions.fields().map(String::from));
            let fill = filler(table, received, load_id);
            let target = Target {
                table,
                schema: &schema,
                options: &options,
                placed: &placed,
                fill: &fill,
            };
            let mut unplaced = Unplaced::default();
            let mut rows = TableRows::new(table);
            let mut rejects = Vec::new();
            let mut read = 0u64;
            read_blocks(&path, format, compression, |item| {
                match item {
                    Item::Reject(reject) => {
                        read += 1;
                        rejects.push(reject);
                    }
                    Item::Block(mut block) => {
                        read += block.len() as u64;
                        let failed = expressions.apply(&mut block)?;
                        place_block(
                            &target,
                            &block,
                            failed,
                            &mut rows,
                            &mut rejects,
                            &mut unplaced,
                        )?;
                    }
                }
                // Hand a full chunk to the writer.
                if rows.len() + rejects.len() >= CHUNK_ROWS {
                    let batch = rows.finish()?;
                    tx.blocking_send((batch, std::mem::take(&mut rejects), read))
                        .map_err(|_| Error::Internal("the load was stopped".into()))?;
                }
                Ok(())
            })?;
            let batch = rows.finish()?;
            tx.blocking_send((batch, rejects, read))
                .map_err(|_| Error::Internal("the load was stopped".into()))?;
            Ok(unplaced)
        })
    };
    let suppressions = crate::identity::suppression::Suppressions::load(lake).await?;
    let mut chunk = 0u64;
    while let Some((batch, rejects, read)) = rx.recv().await {
        let batch = sort_by_time(table, batch)?;
        let batch = without_suppressed(&suppressions, table, batch, &options, &mut report)?;
        let once = format!("ingest-{load_id}");
        let landed: Landed =
            land_once(lake, table, &[batch], Some((&once, chunk as i64 + 1))).await?;
        report.rows_landed += landed.rows as u64;
        report.files_written += landed.files as u64;
        report.rows_rejected += rejects.len() as u64;
        report.rows_read = read;
        if !rejects.is_empty() {
            write_rejects(lake, table, &source, &load_id, chunk, &rejects).await?;
        }
        chunk += 1;
        progress(read);
    }
    let unplaced = reader
        .await
        .map_err(|e| Error::Internal(format!("the file reader stopped: {e}")))??;
    report.kept_in_extra = unplaced.kept;
    report.dropped = unplaced.dropped;
    record(lake, table, &report, &hash, &load_id, started).await?;
    Ok(report)
}

/// The values a load fills in that no file carries: an event's
/// `received_at` and `message_id` (from the load and the line), and the
/// landing time of a declared table without a time column.
fn filler(
    table: RawTable,
    received: String,
    load_id: Uuid,
) -> impl Fn(&str, u64) -> Option<String> {
    move |column: &str, line: u64| match (table, column) {
        (RawTable::Events, "received_at") => Some(received.clone()),
        (RawTable::Events, "message_id") => {
            Some(Uuid::new_v5(&load_id, &line.to_le_bytes()).to_string())
        }
        (t, LOADED_AT) if t.is_declared() && t.time_column() == LOADED_AT => Some(received.clone()),
        _ => None,
    }
}

/// `batch` without the rows that carry a suppressed identifier (counted in
/// `report`).
fn without_suppressed(
    suppressions: &crate::identity::suppression::Suppressions,
    table: RawTable,
    batch: RecordBatch,
    options: &IngestOptions,
    report: &mut FileReport,
) -> Result<RecordBatch> {
    let Some(hits) = suppressions.rows_of(table.name(), &batch, &options.identity)? else {
        return Ok(batch);
    };
    report.rows_suppressed += hits.true_count() as u64;
    let keep = datafusion::arrow::compute::not(&hits)
        .map_err(|e| Error::arrow("dropping suppressed rows", e))?;
    datafusion::arrow::compute::filter_record_batch(&batch, &keep)
        .map_err(|e| Error::arrow("dropping suppressed rows", e))
}

fn sort_by_time(table: RawTable, batch: RecordBatch) -> Result<RecordBatch> {
    if batch.num_rows() < 2 {
        return Ok(batch);
    }
    let Some(times) = batch.column_by_name(table.time_column()) else {
        return Ok(batch);
    };
    let order =
        sort_to_indices(times, None, None).map_err(|e| Error::arrow("sorting a chunk", e))?;
    take_record_batch(&batch, &order).map_err(|e| Error::arrow("sorting a chunk", e))
}

pub(crate) async fn write_rejects(
    lake: &Lake,
    table: RawTable,
    source: &str,
    load_id: &Uuid,
    chunk: u64,
    rejects: &[Reject],
) -> Result<()> {
    let n = rejects.len();
    let now = Utc::now().timestamp_micros();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![load_id.to_string(); n])),
        Arc::new(StringArray::from(vec![table.name(); n])),
        Arc::new(StringArray::from(vec![source; n])),
        Arc::new(Int64Array::from_iter_values(
            rejects.iter().map(|r| r.line as i64),
        )),
        Arc::new(StringArray::from_iter(
            rejects
                .iter()
                .map(|r| (!r.field.is_empty()).then_some(r.field.as_str())),
        )),
        Arc::new(StringArray::from_iter_values(
            rejects.iter().map(|r| r.reason.as_str()),
        )),
        Arc::new(StringArray::from_iter(
            rejects
                .iter()
                .map(|r| (!r.raw.is_empty()).then_some(r.raw.as_str())),
        )),
        utc_timestamps(std::iter::repeat_n(now, n)),
    ];
    let batch = RecordBatch::try_new(rejects_schema(), columns)
        .map_err(|e| Error::arrow("recording rejected rows", e))?;
    // At most once per chunk of a load, so a load run again after a crash
    // records its rejects once.
    let once = format!("rejects-{load_id}");
    let chunk = i64::try_from(chunk).unwrap_or(i64::MAX - 1) + 1;
    crate::lake::delta::append_record(
        lake,
        &rejects_dir(table),
        batch,
        "rejects",
        Some((&once, chunk)),
    )
    .await
}

pub(crate) async fn record(
    lake: &Lake,
    table: RawTable,
    report: &FileReport,
    hash: &str,
    load_id: &Uuid,
    started: DateTime<Utc>,
) -> Result<()> {
    let ts = |t: i64| utc_timestamps([t]);
    let text = |v: &str| Arc::new(StringArray::from(vec![v])) as ArrayRef;
    let int = |v: u64| Arc::new(Int64Array::from(vec![v as i64])) as ArrayRef;
    let names = |set: &BTreeSet<String>| {
        let list = set.iter().map(String::as_str).collect::<Vec<_>>().join(",");
        Arc::new(StringArray::from(vec![(!list.is_empty()).then_some(list)])) as ArrayRef
    };
    let batch = RecordBatch::try_new(
        ingests_schema(),
        vec![
            text(&load_id.to_string()),
            text(table.name()),
            text(&report.source),
            text(hash),
            text("committed"),
            int(report.rows_read),
            int(report.rows_landed),
            int(report.rows_rejected),
            ts(started.timestamp_micros()),
            ts(Utc::now().timestamp_micros()),
            names(&report.kept_in_extra),
            names(&report.dropped),
            int(report.rows_suppressed),
        ],
    )
    .map_err(|e| Error::arrow("recording a load", e))?;
    crate::lake::delta::append_record(lake, &ingests_dir(), batch, "ingest record", None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_times_and_flags_parse_strictly() {
        assert_eq!(parse_cents("12.5"), Some(1250));
        assert_eq!(parse_cents("-0.07"), Some(-7));
        assert_eq!(parse_cents("3"), Some(300));
        assert_eq!(parse_cents("1.234"), None);
        assert_eq!(parse_cents("12,50"), None);
        assert_eq!(parse_cents(""), None);
        assert_eq!(
            parse_time("2026-01-15T10:00:00Z"),
            Some(1_768_471_200_000_000)
        );
        assert_eq!(
            parse_time("2026-01-15 11:00:00+01:00"),
            Some(1_768_471_200_000_000)
        );
        assert_eq!(
            parse_time("2026-01-15 10:00:00"),
            Some(1_768_471_200_000_000)
        );
        // Every spelling of an offset is applied, never dropped.
        for with_offset in [
            "2026-01-15 12:00:00+02",
            "2026-01-15 12:00:00+0200",
            "2026-01-15 12:00:00.000+02:00",
            "2026-01-15T12:00:00+02:00",
        ] {
            assert_eq!(
                parse_time(with_offset),
                Some(1_768_471_200_000_000),
                "{with_offset}"
            );
        }
        assert_eq!(parse_time("15/01/2026"), None);
        assert_eq!(parse_bool("Yes"), Some(true));
        assert_eq!(parse_bool("maybe"), None);
    }
}
