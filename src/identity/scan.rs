//! Reading raw files into the identity graph and the profile facts.
//!
//! The refresh decides which files to read (all of them for a full
//! rebuild, only those landed since the last commit otherwise); this module
//! reads each one straight from Parquet with just the columns it needs: the
//! time column, the configured identifier sources and the columns of the
//! profile facts. A file that lacks one of those columns, or holds it with
//! a type that cannot be read as the raw schema's type, is an error naming
//! the file and the column. Decoding runs in its own task, one file after
//! the other, while this one folds rows into the graph: on two cores that
//! keeps both busy.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Decimal128Array, RecordBatch, StringArray};
use datafusion::arrow::compute::{can_cast_types, cast};
use datafusion::arrow::datatypes::{DataType, Date32Type, Decimal128Type, Int64Type};
use datafusion::common::HashMap;
use datafusion::parquet::arrow::ProjectionMask;
use futures::StreamExt;
use object_store::ObjectMeta;
use phonenumber::country::Id as Country;
use tokio::sync::mpsc;

use super::config::IdentityConfig;
use super::facts::{Cell, Facts, field};
use super::graph::{Graph, NodeId};
use super::normalize::{self, Normalize};
use crate::error::{Error, Result};
use crate::lake::{Lake, parquet};
use crate::schema::RawTable;

/// A raw data file to read.
#[derive(Debug, Clone)]
pub struct RawFile {
    pub table: RawTable,
    pub meta: ObjectMeta,
}

/// One identifier source of a table, resolved against the configuration.
#[derive(Debug, Clone)]
struct Source {
    id_type: u16,
    normalize: Normalize,
    column: usize,
    json_path: Option<Vec<String>>,
}

/// What is read from one raw table: columns (name, type to read as) and
/// the identifier sources, strongest type first.
#[derive(Debug, Clone)]
struct Plan {
    columns: Vec<(String, DataType)>,
    sources: Vec<Source>,
}

impl Plan {
    fn new(table: RawTable, config: &IdentityConfig) -> Option<Plan> {
        let mut sources: Vec<_> = config
            .sources
            .iter()
            .enumerate()
            .filter(|(_, s)| s.table == table.name())
            .filter_map(|(i, s)| {
                let t = config.types.iter().position(|t| t.name == s.id_type)?;
                Some((config.types[t].priority, i, t, s))
            })
            .collect();
        if sources.is_empty() {
            return None;
        }
        sources.sort_by_key(|&(priority, i, _, _)| (priority, i));
        let mut plan = Plan {
            columns: Vec::new(),
            sources: Vec::new(),
        };
        plan.column(table, table.time_column());
        for name in fact_columns(table) {
            plan.column(table, name);
        }
        for (_, _, t, s) in sources {
            let column = plan.column(table, &s.column);
            plan.sources.push(Source {
                id_type: t as u16,
                normalize: config.types[t].normalize,
                column,
                json_path: s
                    .json_path
                    .as_ref()
                    .map(|p| p.split('.').map(String::from).collect()),
            });
        }
        Some(plan)
    }

    /// Position of column `name` in the read batches, adding it if new.
    fn column(&mut self, table: RawTable, name: &str) -> usize {
        if let Some(i) = self.columns.iter().position(|(n, _)| n == name) {
            return i;
        }
        let data_type = table
            .file_schema()
            .field_with_name(name)
            .map(|f| f.data_type().clone())
            .unwrap_or(DataType::Utf8);
        self.columns.push((name.to_string(), data_type));
        self.columns.len() - 1
    }
}

/// The columns each table's facts need, right after the time column (so
/// they are columns 1.. of every batch, in this order).
fn fact_columns(table: RawTable) -> &'static [&'static str] {
    match table {
        RawTable::Events => &["type"],
        RawTable::Orders => &["amount", "status", "channel"],
        RawTable::Customers => &[
            "source",
            "first_name",
            "last_name",
            "street",
            "city",
            "postal_code",
            "country",
            "birth_date",
            "loyalty_tier",
            "newsletter",
        ],
        RawTable::SurveyResponses => &["survey", "score"],
        RawTable::Consents => &["purpose", "status"],
        RawTable::OrderItems | RawTable::Products => &[],
    }
}

/// Whether a file column of type `found` can be read as `wanted`.
fn readable(found: &DataType, wanted: &DataType) -> bool {
    use DataType::*;
    match wanted {
        Utf8 => matches!(found, Utf8 | LargeUtf8 | Utf8View | Dictionary(_, _)),
        Timestamp(_, _) => matches!(found, Timestamp(_, _)),
        Int64 => found.is_integer(),
        Decimal128(_, _) => matches!(found, Decimal128(_, _)) || found.is_integer(),
        _ => found == wanted || can_cast_types(found, wanted) && found != &Utf8,
    }
}

/// What the reader task sends to the folding one.
enum Message {
    Batch(RawTable, RecordBatch),
    FileDone,
    Failed(Error),
}

/// Stream the planned columns of one file, cast to the raw schema's types.
async fn read_file(
    lake: &Lake,
    file: &RawFile,
    plan: &Plan,
    tx: &mpsc::Sender<Message>,
) -> Result<()> {
    let name = lake.relative(&file.meta.location);
    let builder = parquet::open(lake, &file.meta).await?;
    let schema = builder.schema().clone();
    let mut roots = Vec::with_capacity(plan.columns.len());
    for (column, wanted) in &plan.columns {
        let bad = |reason: String| Error::RawFile {
            file: name.to_string(),
            column: column.clone(),
            reason,
        };
        let (i, found) = schema
            .column_with_name(column)
            .ok_or_else(|| bad("missing (the identity rules read it)".into()))?;
        if !readable(found.data_type(), wanted) {
            return Err(bad(format!(
                "has type {}, expected {wanted}",
                found.data_type()
            )));
        }
        roots.push(i);
    }
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots.iter().copied());
    let mut stream = builder
        .with_projection(mask)
        .with_batch_size(8192)
        .build()
        .map_err(|e| Error::parquet(format!("reading {name}"), e))?;
    // The projected batch keeps file order; map planned columns onto it.
    let mut order: Vec<usize> = roots.clone();
    order.sort_unstable();
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| Error::parquet(format!("reading {name}"), e))?;
        let mut columns = Vec::with_capacity(plan.columns.len());
        for ((column, wanted), root) in plan.columns.iter().zip(&roots) {
            let at = order.binary_search(root).unwrap_or_default();
            let array = cast(batch.column(at), wanted).map_err(|e| Error::RawFile {
                file: name.to_string(),
                column: column.clone(),
                reason: e.to_string(),
            })?;
            columns.push(array);
        }
        let fields: Vec<_> = plan
            .columns
            .iter()
            .map(|(n, t)| datafusion::arrow::datatypes::Field::new(n, t.clone(), true))
            .collect();
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(fields));
        let batch = RecordBatch::try_new(schema, columns)
            .map_err(|e| Error::arrow(format!("reading {name}"), e))?;
        if tx.send(Message::Batch(file.table, batch)).await.is_err() {
            break;
        }
    }
    Ok(())
}

/// Everything a refresh learns from raw files.
#[derive(Debug)]
pub struct Scan {
    pub graph: Graph,
    pub facts: Facts,
    pub rows: usize,
    pub files: usize,
    country: Country,
    source_rank: HashMap<String, i32>,
    plans: HashMap<RawTable, Plan>,
}

impl Scan {
    pub fn new(config: &IdentityConfig, graph: Graph, facts: Facts) -> Result<Scan> {
        let country = normalize::country(&config.default_country).ok_or_else(|| {
            Error::Config(format!(
                "default_country '{}' is not an ISO country code",
                config.default_country
            ))
        })?;
        let plans = RawTable::ALL
            .into_iter()
            .filter_map(|t| Plan::new(t, config).map(|p| (t, p)))
            .collect();
        let source_rank = config
            .source_priority
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i as i32))
            .collect();
        Ok(Scan {
            graph,
            facts,
            rows: 0,
            files: 0,
            country,
            source_rank,
            plans,
        })
    }

    /// Whether a table's files are read at all (it feeds some identifier).
    pub fn reads(&self, table: RawTable) -> bool {
        self.plans.contains_key(&table)
    }

    /// Read `files` and fold every row into the graph and the facts.
    pub async fn read(
        &mut self,
        lake: &Lake,
        files: Vec<RawFile>,
        progress: &mut impl FnMut(&str),
    ) -> Result<()> {
        let files: Vec<RawFile> = files.into_iter().filter(|f| self.reads(f.table)).collect();
        let total = files.len();
        let (tx, mut rx) = mpsc::channel(8);
        let reader = {
            let lake = lake.clone();
            let plans = self.plans.clone();
            tokio::spawn(async move {
                for file in &files {
                    let Some(plan) = plans.get(&file.table) else {
                        continue;
                    };
                    if let Err(e) = read_file(&lake, file, plan, &tx).await {
                        let _ = tx.send(Message::Failed(e)).await;
                        return;
                    }
                    if tx.send(Message::FileDone).await.is_err() {
                        return;
                    }
                }
            })
        };
        let mut nodes: Vec<NodeId> = Vec::with_capacity(8);
        let mut last_table = None;
        while let Some(message) = rx.recv().await {
            let (table, batch) = match message {
                Message::Batch(table, batch) => (table, batch),
                Message::FileDone => {
                    self.files += 1;
                    if self.files.is_multiple_of(50) || self.files == total {
                        progress(&format!("read {}/{total} raw files", self.files));
                    }
                    continue;
                }
                Message::Failed(e) => return Err(e),
            };
            if last_table != Some(table) {
                progress(&format!("reading raw.{table}"));
                last_table = Some(table);
            }
            self.fold(table, &batch, &mut nodes)?;
        }
        reader
            .await
            .map_err(|e| Error::Config(format!("the raw file reader stopped: {e}")))?;
        Ok(())
    }

    /// Fold one batch of `table` (columns as planned) into graph and facts.
    fn fold(
        &mut self,
        table: RawTable,
        batch: &RecordBatch,
        nodes: &mut Vec<NodeId>,
    ) -> Result<()> {
        let plan = &self.plans[&table];
        self.rows += batch.num_rows();
        let times = batch
            .column(0)
            .as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>();
        let text = |i: usize| batch.column(i).as_string::<i32>();
        let sources: Vec<(&Source, &StringArray)> =
            plan.sources.iter().map(|s| (s, text(s.column))).collect();
        for row in 0..batch.num_rows() {
            if times.is_null(row) {
                continue;
            }
            let at = times.value(row);
            nodes.clear();
            for (source, column) in &sources {
                if column.is_null(row) {
                    continue;
                }
                let raw = column.value(row);
                let extracted;
                let raw = match &source.json_path {
                    Some(path) => match json_path(raw, path) {
                        Some(v) => {
                            extracted = v;
                            extracted.as_str()
                        }
                        None => continue,
                    },
                    None => raw,
                };
                let Some(value) = normalize::normalize_cow(source.normalize, raw, self.country)
                else {
                    continue;
                };
                let node = self.graph.observe(source.id_type, &value, at);
                if !nodes.contains(&node) {
                    nodes.push(node);
                }
            }
            for i in 1..nodes.len() {
                self.graph.link(nodes[0], nodes[i], at);
            }
            if nodes.is_empty() {
                continue;
            }
            let key = self.facts.key(nodes);
            fold_facts(
                &mut self.facts,
                &self.source_rank,
                table,
                batch,
                row,
                at,
                key,
            );
        }
        Ok(())
    }
}

/// Fold the profile facts of one row of `table` into key `key`.
fn fold_facts(
    facts: &mut Facts,
    source_rank: &HashMap<String, i32>,
    table: RawTable,
    batch: &RecordBatch,
    row: usize,
    at: i64,
    key: u32,
) {
    {
        let text = |i: usize| {
            let a = batch.column(i).as_string::<i32>();
            (!a.is_null(row)).then(|| a.value(row))
        };
        let count = |facts: &mut Facts, f: u16| facts.add(key, Cell::sum(f, 1));
        match table {
            RawTable::Events => {
                count(facts, field::EVENTS);
                match text(1) {
                    Some("page" | "screen") => count(facts, field::PAGE_VIEWS),
                    Some("track") => count(facts, field::TRACKS),
                    Some("identify") => count(facts, field::IDENTIFIES),
                    _ => {}
                }
            }
            RawTable::Orders => {
                let amounts: &Decimal128Array = batch.column(1).as_primitive::<Decimal128Type>();
                let cents = if amounts.is_null(row) {
                    0
                } else {
                    amounts.value(row) as i64
                };
                count(facts, field::ORDERS);
                facts.add(key, Cell::sum(field::GROSS_CENTS, cents));
                if !matches!(text(2), Some("returned" | "cancelled")) {
                    count(facts, field::NET_ORDERS);
                    facts.add(key, Cell::sum(field::NET_CENTS, cents));
                }
                facts.add(
                    key,
                    Cell {
                        at,
                        ..Cell::sum(field::LAST_ORDER_AT, 0)
                    },
                );
                if let Some(channel) = text(3) {
                    let f = facts.fields.channel(channel);
                    count(facts, f);
                }
            }
            RawTable::Customers => {
                let rank = text(1)
                    .and_then(|s| source_rank.get(s).copied())
                    .unwrap_or(source_rank.len() as i32);
                for (i, name) in field::TRAITS.iter().enumerate() {
                    let column = batch.column(2 + i);
                    if column.is_null(row) {
                        continue;
                    }
                    let (num, text) = match *name {
                        "birth_date" => (
                            i64::from(column.as_primitive::<Date32Type>().value(row)),
                            None,
                        ),
                        "newsletter" => (i64::from(column.as_boolean().value(row)), None),
                        _ => (0, Some(Arc::from(column.as_string::<i32>().value(row)))),
                    };
                    facts.add(
                        key,
                        Cell {
                            field: field::TRAIT + i as u16,
                            rank,
                            at,
                            num,
                            text,
                        },
                    );
                }
            }
            RawTable::SurveyResponses => {
                let scores = batch.column(2).as_primitive::<Int64Type>();
                if let Some(i) = text(1).and_then(|s| field::SURVEYS.iter().position(|k| *k == s))
                    && !scores.is_null(row)
                {
                    facts.add(
                        key,
                        Cell {
                            at,
                            num: scores.value(row),
                            ..Cell::sum(field::SURVEY + i as u16, 0)
                        },
                    );
                }
            }
            RawTable::Consents => {
                if let Some(i) = text(1).and_then(|p| field::PURPOSES.iter().position(|k| *k == p))
                    && let Some(status) = text(2)
                {
                    facts.add(
                        key,
                        Cell {
                            at,
                            text: Some(status.into()),
                            ..Cell::sum(field::CONSENT + i as u16, 0)
                        },
                    );
                }
            }
            RawTable::OrderItems | RawTable::Products => {}
        }
    }
}

/// Extract a string at a dotted path of a JSON object.
fn json_path(json: &str, path: &[String]) -> Option<String> {
    let mut value: serde_json::Value = serde_json::from_str(json).ok()?;
    for key in path {
        value = value.get_mut(key)?.take();
    }
    match value {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}
