//! Reading a file to load: CSV, NDJSON (both also gzip- or zstd-compressed)
//! and Parquet, a [`Block`] of records at a time, column by column.
//!
//! A block holds each field of its records as text (what CSV and NDJSON
//! are, and what the loader parses into the table's types), with the line
//! of each record and the record as sent (for the rejects table). A
//! Parquet column keeps its own type too, so a column already of the
//! table's type (a timestamp, an integer) is placed without a round trip
//! through text, and its text is made only if something reads it. A line
//! that cannot be read at all (malformed JSON, a CSV row of the wrong
//! width) is reported as a [`Reject`] in its place; the lines around it are
//! read.

use std::io::{BufRead, BufReader, Read};
use std::path::Path as FsPath;
use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit};

use super::files::Reject;
use crate::error::{Error, Result};

/// Records per block.
pub const BLOCK_ROWS: usize = 8_192;

/// A file format the loader reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Ndjson,
    Parquet,
}

/// The format and compression of `path`, from its name.
pub fn format_of(path: &FsPath) -> Result<(Format, Option<&'static str>)> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_lowercase();
    let (base, compression) = match name.rsplit_once('.') {
        Some((base, "gz")) => (base.to_string(), Some("gz")),
        Some((base, "zst")) => (base.to_string(), Some("zst")),
        _ => (name.clone(), None),
    };
    let format = match base.rsplit_once('.').map(|(_, ext)| ext) {
        Some("csv") => Format::Csv,
        Some("ndjson" | "jsonl" | "json") => Format::Ndjson,
        Some("parquet") if compression.is_none() => Format::Parquet,
        _ => {
            return Err(Error::Config(format!(
                "{}: unknown format (use .csv, .ndjson, .jsonl or .parquet, optionally .gz or .zst)",
                path.display()
            )));
        }
    };
    Ok((format, compression))
}

fn open(path: &FsPath, compression: Option<&str>) -> Result<Box<dyn Read + Send>> {
    let io = |e| Error::Io {
        what: "opening a file to load".into(),
        path: path.to_path_buf(),
        source: e,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    Ok(match compression {
        Some("gz") => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file))),
        Some("zst") => Box::new(zstd::stream::read::Decoder::new(file).map_err(io)?),
        _ => Box::new(file),
    })
}

/// Records of a file, column by column.
#[derive(Debug, Default)]
pub struct Block {
    names: Vec<Arc<str>>,
    /// Each field as text; NULL where a record lacks it.
    text: Vec<OnceLock<StringArray>>,
    /// Each field as the file typed it, when it is not text (Parquet).
    typed: Vec<Option<ArrayRef>>,
    /// The JSON value of NDJSON fields that are not strings (numbers,
    /// objects), by field and row, so a field kept in `extra` keeps its
    /// JSON type.
    json: Vec<Option<Vec<Option<serde_json::Value>>>>,
    /// The line (or row) number of each record.
    pub lines: Vec<u64>,
    /// Each record as sent (CSV, NDJSON); empty for Parquet.
    raw: Vec<String>,
}

impl Block {
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The fields' names, in column order.
    pub fn names(&self) -> &[Arc<str>] {
        &self.names
    }

    /// The column of field `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| &**n == name)
    }

    /// Column `column` as text (timestamps in RFC 3339, UTC).
    pub fn text(&self, column: usize) -> Result<&StringArray> {
        if let Some(text) = self.text[column].get() {
            return Ok(text);
        }
        let typed = self.typed[column]
            .as_ref()
            .ok_or_else(|| Error::Config("a text column of a load has no values".into()))?;
        let text = text_of(typed)?;
        Ok(self.text[column].get_or_init(|| text))
    }

    /// Column `column` as the file typed it, if not text.
    pub fn typed(&self, column: usize) -> Option<&ArrayRef> {
        self.typed[column].as_ref()
    }

    /// The JSON value of field `column` at `row`, when not a string.
    pub fn json(&self, column: usize, row: usize) -> Option<&serde_json::Value> {
        self.json[column].as_ref()?[row].as_ref()
    }

    /// Record `row` as sent (empty for Parquet).
    pub fn raw(&self, row: usize) -> &str {
        self.raw.get(row).map_or("", String::as_str)
    }

    /// A block of text columns (`None`: NULL), numbered from line 1.
    pub fn of_text(columns: &[(&str, &[Option<&str>])]) -> Block {
        let rows = columns.first().map_or(0, |(_, values)| values.len());
        let mut block = Block {
            lines: (1..=rows as u64).collect(),
            ..Block::default()
        };
        for (name, values) in columns {
            block.push_text(name, StringArray::from(values.to_vec()));
        }
        block
    }

    /// Add a text column (a computed mapping's values).
    pub fn push_text(&mut self, name: &str, values: StringArray) {
        self.names.push(Arc::from(name));
        self.text.push(OnceLock::from(values));
        self.typed.push(None);
        self.json.push(None);
    }
}

/// What reading a file yields, in file order.
pub enum Item {
    Block(Block),
    Reject(Reject),
}

/// Read `path` block by block, calling `each` with each block and with each
/// line that cannot be read at all.
pub fn read_blocks(
    path: &FsPath,
    format: Format,
    compression: Option<&str>,
    each: impl FnMut(Item) -> Result<()>,
) -> Result<()> {
    match format {
        Format::Csv => read_csv(path, compression, each),
        Format::Ndjson => read_ndjson(path, compression, each),
        Format::Parquet => read_parquet(path, each),
    }
}

fn read_csv(
    path: &FsPath,
    compression: Option<&str>,
    mut each: impl FnMut(Item) -> Result<()>,
) -> Result<()> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(open(path, compression)?);
    let headers: Vec<Arc<str>> = reader
        .headers()
        .map_err(|e| Error::Config(format!("{}: no CSV header: {e}", path.display())))?
        .iter()
        .map(|h| Arc::from(h.trim()))
        .collect();
    let builders =
        || -> Vec<StringBuilder> { headers.iter().map(|_| StringBuilder::new()).collect() };
    let mut columns = builders();
    let (mut lines, mut raws) = (Vec::new(), Vec::new());
    let flush = |columns: &mut Vec<StringBuilder>, lines: &mut Vec<u64>, raws: &mut Vec<String>| {
        let text = std::mem::replace(columns, builders())
            .into_iter()
            .map(|mut b| OnceLock::from(b.finish()))
            .collect::<Vec<_>>();
        Block {
            names: headers.clone(),
            typed: vec![None; text.len()],
            json: vec![None; text.len()],
            text,
            lines: std::mem::take(lines),
            raw: std::mem::take(raws),
        }
    };
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                each(Item::Reject(Reject {
                    line: e.position().map_or(0, |p| p.line()),
                    field: String::new(),
                    reason: format!("unreadable CSV: {e}"),
                    raw: String::new(),
                }))?;
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        let raw = record.iter().collect::<Vec<_>>().join(",");
        if record.len() != headers.len() {
            each(Item::Reject(Reject {
                line,
                field: String::new(),
                reason: format!(
                    "{} fields where the header has {}",
                    record.len(),
                    headers.len()
                ),
                raw,
            }))?;
            continue;
        }
        for (column, value) in columns.iter_mut().zip(record.iter()) {
            column.append_option((!value.is_empty()).then_some(value));
        }
        lines.push(line);
        raws.push(raw);
        if lines.len() >= BLOCK_ROWS {
            each(Item::Block(flush(&mut columns, &mut lines, &mut raws)))?;
        }
    }
    if !lines.is_empty() {
        each(Item::Block(flush(&mut columns, &mut lines, &mut raws)))?;
    }
    Ok(())
}

/// One NDJSON record waiting for its block.
type JsonRecord = (u64, String, serde_json::Map<String, serde_json::Value>);

fn read_ndjson(
    path: &FsPath,
    compression: Option<&str>,
    mut each: impl FnMut(Item) -> Result<()>,
) -> Result<()> {
    let reader = BufReader::new(open(path, compression)?);
    let mut pending: Vec<JsonRecord> = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let n = i as u64 + 1;
        let line = line.map_err(|e| Error::Io {
            what: format!("reading line {n}"),
            path: path.to_path_buf(),
            source: e,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<serde_json::Value>(&line) {
            Ok(serde_json::Value::Object(map)) => pending.push((n, line, map)),
            Ok(_) => each(Item::Reject(Reject {
                line: n,
                field: String::new(),
                reason: "not a JSON object".into(),
                raw: line,
            }))?,
            Err(e) => each(Item::Reject(Reject {
                line: n,
                field: String::new(),
                reason: format!("malformed JSON: {e}"),
                raw: line,
            }))?,
        }
        if pending.len() >= BLOCK_ROWS {
            each(Item::Block(json_block(std::mem::take(&mut pending))))?;
        }
    }
    if !pending.is_empty() {
        each(Item::Block(json_block(pending)))?;
    }
    Ok(())
}

/// NDJSON records as a block: a column per key any of them has.
fn json_block(records: Vec<JsonRecord>) -> Block {
    use serde_json::Value;
    let mut names: Vec<Arc<str>> = Vec::new();
    for (_, _, map) in &records {
        for key in map.keys() {
            if !names.iter().any(|n| &**n == key.as_str()) {
                names.push(Arc::from(key.as_str()));
            }
        }
    }
    let rows = records.len();
    let mut columns: Vec<StringBuilder> = names.iter().map(|_| StringBuilder::new()).collect();
    let mut json: Vec<Option<Vec<Option<Value>>>> = vec![None; names.len()];
    let mut block = Block::default();
    for (row, (line, raw, mut map)) in records.into_iter().enumerate() {
        for (column, name) in names.iter().enumerate() {
            match map.remove(&**name) {
                None | Some(Value::Null) => columns[column].append_null(),
                Some(Value::String(s)) => columns[column].append_value(s),
                Some(other) => {
                    columns[column].append_value(other.to_string());
                    json[column].get_or_insert_with(|| vec![None; rows])[row] = Some(other);
                }
            }
        }
        block.lines.push(line);
        block.raw.push(raw);
    }
    block.typed = vec![None; names.len()];
    block.text = columns
        .into_iter()
        .map(|mut b| OnceLock::from(b.finish()))
        .collect();
    block.json = json;
    block.names = names;
    block
}

fn read_parquet(path: &FsPath, mut each: impl FnMut(Item) -> Result<()>) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|e| Error::Io {
        what: "opening a file to load".into(),
        path: path.to_path_buf(),
        source: e,
    })?;
    let reader =
        datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| Error::parquet(format!("{} is not Parquet", path.display()), e))?
            .with_batch_size(BLOCK_ROWS)
            .build()
            .map_err(|e| Error::parquet(format!("reading {}", path.display()), e))?;
    let mut row = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| Error::arrow(format!("reading {}", path.display()), e))?;
        let mut block = Block::default();
        for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
            block.names.push(Arc::from(field.name().as_str()));
            let text = OnceLock::new();
            if let DataType::Utf8 = column.data_type() {
                let _ = text.set(column.as_string::<i32>().clone());
                block.typed.push(None);
            } else {
                block.typed.push(Some(Arc::clone(column)));
            }
            block.text.push(text);
            block.json.push(None);
        }
        block.lines = (row + 1..=row + batch.num_rows() as u64).collect();
        row += batch.num_rows() as u64;
        each(Item::Block(block))?;
    }
    Ok(())
}

/// A column as text; timestamps as RFC 3339 in UTC.
fn text_of(column: &ArrayRef) -> Result<StringArray> {
    let column = match column.data_type() {
        DataType::Timestamp(_, _) => cast(
            column,
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        )
        .map_err(|e| Error::arrow("reading a timestamp", e))?,
        _ => Arc::clone(column),
    };
    let text =
        cast(&column, &DataType::Utf8).map_err(|e| Error::arrow("reading a column as text", e))?;
    Ok(text.as_string::<i32>().clone())
}
