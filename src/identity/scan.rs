//! Reading raw files into the identity graph and the profile facts.
//!
//! The refresh decides which files to read (all of them for a full
//! rebuild, only those landed since the last commit otherwise); this module
//! reads each one straight from Parquet with just the columns it needs: the
//! time column, the configured identifier sources and the columns of the
//! profile facts. A file that lacks one of those columns, or holds it with
//! a type that cannot be read as the raw schema's type, is an error naming
//! the file and the column. Each worker (one per core) decodes its files
//! in a task and folds their rows on a thread of its own into per-file
//! summaries; one more thread merges the summaries into the refresh's
//! single graph and facts.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Decimal128Array, DictionaryArray, RecordBatch, StringArray,
};
use datafusion::arrow::compute::{can_cast_types, cast};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Field, Int32Type, Int64Type, Schema,
};
use datafusion::common::HashMap;
use datafusion::parquet::arrow::ProjectionMask;
use futures::StreamExt;
use object_store::ObjectMeta;
use phonenumber::country::Id as Country;
use tokio::sync::mpsc;

use super::config::IdentityConfig;
use super::consent::ConsentConfig;
use super::facts::{Cell, Facts, NO_TEXT, field};
use super::graph::NodeId;
use super::interner::Interner;
use super::normalize::{self, Normalize};
use crate::error::{Error, Result};
use crate::lake::{Lake, parquet};
use crate::schema::RawTable;

/// A raw data file to read.
#[derive(Debug, Clone)]
pub(super) struct RawFile {
    pub table: RawTable,
    pub meta: ObjectMeta,
}

/// One identifier source of a table, resolved against the configuration.
#[derive(Debug, Clone)]
struct Source {
    id_type: u16,
    normalize: Normalize,
    invalid: normalize::Invalid,
    /// Position of the source in the configuration (its refusal counter).
    index: usize,
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
        let sources = config.sources_of(table.name());
        if sources.is_empty() {
            return None;
        }
        let mut plan = Plan {
            columns: Vec::new(),
            sources: Vec::new(),
        };
        plan.column(table, table.time_column());
        for name in fact_columns(table) {
            plan.column(table, name);
        }
        for (i, s, t, id_type) in sources {
            let column = plan.column(table, &s.column);
            plan.sources.push(Source {
                id_type: t as u16,
                normalize: id_type.normalize,
                invalid: id_type.invalid,
                index: i,
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
fn fact_columns(table: RawTable) -> Vec<&'static str> {
    match table {
        RawTable::Events => vec!["type", "context"],
        RawTable::Orders => vec!["amount", "status", "channel"],
        RawTable::Customers => std::iter::once("source").chain(field::TRAITS).collect(),
        RawTable::SurveyResponses => vec!["survey", "score"],
        RawTable::Consents => vec!["purpose", "status"],
        _ => vec![],
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
    /// The file (`raw/<table>/<name>`) was read whole.
    FileDone(String),
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
    // Identifier columns are read as dictionaries where the file stores
    // them so: each distinct value is then normalised and looked up once.
    let identifier_columns: Vec<&str> = plan
        .sources
        .iter()
        .map(|s| plan.columns[s.column].0.as_str())
        .collect();
    let builder = parquet::open_as(lake, &file.meta, |schema| {
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Utf8 if identifier_columns.contains(&f.name().as_str()) => {
                    f.as_ref().clone().with_data_type(DataType::Dictionary(
                        Box::new(DataType::Int32),
                        Box::new(DataType::Utf8),
                    ))
                }
                _ => f.as_ref().clone(),
            })
            .collect();
        Some(Arc::new(Schema::new_with_metadata(
            fields,
            schema.metadata().clone(),
        )))
    })
    .await?;
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
        .with_batch_size(64 * 1024)
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
            let array = batch.column(at);
            let keep = matches!(
                (array.data_type(), wanted),
                (DataType::Dictionary(k, v), DataType::Utf8)
                    if **k == DataType::Int32 && **v == DataType::Utf8
            );
            let array = if keep {
                array.clone()
            } else {
                cast(array, wanted).map_err(|e| Error::RawFile {
                    file: name.to_string(),
                    column: column.clone(),
                    reason: e.to_string(),
                })?
            };
            columns.push(array);
        }
        let fields: Vec<Field> = plan
            .columns
            .iter()
            .zip(&columns)
            .map(|((n, _), a)| Field::new(n, a.data_type().clone(), true))
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let batch = RecordBatch::try_new(schema, columns)
            .map_err(|e| Error::arrow(format!("reading {name}"), e))?;
        if tx.send(Message::Batch(file.table, batch)).await.is_err() {
            break;
        }
    }
    Ok(())
}

/// What every shard needs to fold rows: resolved once per refresh.
#[derive(Debug)]
struct Rules {
    country: Country,
    source_rank: HashMap<String, u16>,
    consent: ConsentConfig,
    plans: HashMap<RawTable, Plan>,
}

/// One partition of the work: identifiers and facts of its own.
#[derive(Debug)]
struct Shard {
    nodes: Interner,
    /// Hash of each node, computed by the worker for the merge
    /// ([`Interner::intern_from`] into the refresh's identifiers).
    hashes: Vec<u64>,
    facts: Facts,
    rows: usize,
    /// Per identifier source (by its position in the configuration): the
    /// values its rule refused.
    refused: Vec<u64>,
    /// The files with refused values, each with its counts as `refused`.
    refused_in: Vec<(String, Vec<u64>)>,
    /// Per table and identifier source: nodes of the current dictionary.
    caches: HashMap<RawTable, Vec<DictCache>>,
}

/// A dictionary entry not looked up yet / that gives no identifier.
const UNSEEN: NodeId = NodeId::MAX;
const NOTHING: NodeId = NodeId::MAX - 1;
/// A dictionary entry whose value the rule refuses (counted per row).
const REFUSED: NodeId = NodeId::MAX - 2;

/// The nodes of one dictionary's values, looked up on first use. Batches
/// of one column chunk share their dictionary, so a value is normalised and
/// interned once per chunk rather than once per row.
#[derive(Debug, Clone, Default)]
struct DictCache {
    values: Option<ArrayRef>,
    nodes: Vec<NodeId>,
}

impl DictCache {
    fn start(&mut self, values: &ArrayRef) {
        // Batches of one column chunk get new arrays over the same buffers.
        let same = |a: &ArrayRef, b: &ArrayRef| {
            let (a, b) = (a.as_string::<i32>(), b.as_string::<i32>());
            a.len() == b.len()
                && a.values().as_ptr() == b.values().as_ptr()
                && a.offsets().as_ptr() == b.offsets().as_ptr()
        };
        if !self.values.as_ref().is_some_and(|v| same(v, values)) {
            self.values = Some(values.clone());
            self.nodes.clear();
            self.nodes.resize(values.len(), UNSEEN);
        }
    }
}

/// A text column of a batch: plain or dictionary-encoded.
enum Text<'a> {
    Plain(&'a StringArray),
    Dict(&'a DictionaryArray<Int32Type>, &'a StringArray),
}

/// The node of a raw identifier value (JSON path, normalisation,
/// interning): `Ok(None)` when there is no value, `Err(())` when the rule
/// refuses it.
fn node_for(
    nodes: &mut Interner,
    source: &Source,
    raw: &str,
    country: Country,
) -> std::result::Result<Option<NodeId>, ()> {
    let extracted;
    let raw = match &source.json_path {
        Some(path) => match normalize::at_json_path(raw, path) {
            Some(value) => {
                extracted = value;
                extracted.as_str()
            }
            None => return Ok(None),
        },
        None => raw,
    };
    match normalize::identifier(source.normalize, source.invalid, raw, country) {
        Ok(Some(value)) => Ok(Some(nodes.intern(source.id_type, &value))),
        Ok(None) => Ok(None),
        Err(normalize::Refused) => Err(()),
    }
}

/// Everything a refresh learns from raw files.
#[derive(Debug)]
pub(super) struct Scan {
    /// Every identifier read (the interner's kind is the identifier type).
    pub nodes: Interner,
    pub facts: Facts,
    pub rows: usize,
    pub files: usize,
    /// Per identifier source (by its position in the configuration): the
    /// values its rule refused (an email without `@`, a phone that does
    /// not parse), so none disappears without a count.
    pub refused: Vec<u64>,
    /// The same counts for each file that had any: (path in the lake,
    /// counts by source).
    pub refused_in: Vec<(String, Vec<u64>)>,
    rules: Arc<Rules>,
}

impl Scan {
    pub(super) fn new(config: &IdentityConfig, nodes: Interner, facts: Facts) -> Result<Scan> {
        let country = normalize::country(&config.default_country).ok_or_else(|| {
            Error::Config(format!(
                "default_country '{}' is not an ISO country code",
                config.default_country
            ))
        })?;
        let plans = config
            .source_tables()
            .into_iter()
            .filter_map(|t| Plan::new(t, config).map(|p| (t, p)))
            .collect();
        let source_rank = config
            .source_priority
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), u16::try_from(i).unwrap_or(u16::MAX)))
            .collect();
        Ok(Scan {
            nodes,
            facts,
            rows: 0,
            refused: Vec::new(),
            refused_in: Vec::new(),
            files: 0,
            rules: Arc::new(Rules {
                country,
                source_rank,
                consent: config.consent.clone(),
                plans,
            }),
        })
    }

    /// Whether a table's files are read at all (it feeds some identifier).
    pub(super) fn reads(&self, table: RawTable) -> bool {
        self.rules.plans.contains_key(&table)
    }

    /// Read `files` and fold every row into the graph and the facts.
    ///
    /// Files are dealt to one worker per core (largest first, to the least
    /// loaded). A worker decodes each file in a task and folds its rows on
    /// a blocking thread into a summary of its own: the file's distinct
    /// identifiers and row keys with their facts, in small tables that
    /// stay in cache. One more thread merges each summary into the graph
    /// and facts of the refresh, at the cost of one lookup per distinct
    /// identifier and row key of the file rather than one per row, and
    /// with one copy of the graph in memory.
    pub(super) async fn read(
        &mut self,
        lake: &Lake,
        files: Vec<RawFile>,
        progress: &mut impl FnMut(&str),
    ) -> Result<()> {
        let mut files: Vec<RawFile> = files.into_iter().filter(|f| self.reads(f.table)).collect();
        let total = files.len();
        if total == 0 {
            return Ok(());
        }
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let workers = cores.clamp(1, 16).min(total);
        files.sort_by(|a, b| {
            b.meta
                .size
                .cmp(&a.meta.size)
                .then(a.meta.location.cmp(&b.meta.location))
        });
        let mut groups: Vec<(u64, Vec<RawFile>)> = (0..workers).map(|_| (0, Vec::new())).collect();
        for file in files {
            if let Some(g) = groups.iter_mut().min_by_key(|g| g.0) {
                g.0 += file.meta.size;
                g.1.push(file);
            }
        }
        progress(&format!("reading {total} raw files on {workers} threads"));
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<()>();
        // A few summaries may wait for the merge: memory stays bounded.
        let (summary_tx, summary_rx) = std::sync::mpsc::sync_channel::<Result<Shard>>(workers);
        // Merged summaries go back to the workers to be cleared and reused:
        // their tables keep their capacity, and are emptied off the merge.
        let spare: Spare = Arc::default();
        let mut folders = Vec::with_capacity(workers);
        for (_, group) in groups {
            let (tx, rx) = mpsc::channel(4);
            let (lake, rules) = (lake.clone(), self.rules.clone());
            let reader_rules = rules.clone();
            tokio::spawn(async move {
                for file in &group {
                    let Some(plan) = reader_rules.plans.get(&file.table) else {
                        continue;
                    };
                    if let Err(e) = read_file(&lake, file, plan, &tx).await {
                        let _ = tx.send(Message::Failed(e)).await;
                        return;
                    }
                    if tx
                        .send(Message::FileDone(format!(
                            "raw/{}/{}",
                            file.table.name(),
                            file.meta.location.filename().unwrap_or_default()
                        )))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
            let (summaries, spare) = (summary_tx.clone(), spare.clone());
            let nodes = self.nodes.sibling();
            folders.push(tokio::task::spawn_blocking(move || {
                fold_files(nodes, &rules, rx, summaries, &spare)
            }));
        }
        drop(summary_tx);
        let into = Shard::new(
            std::mem::take(&mut self.nodes),
            std::mem::take(&mut self.facts),
        );
        let merger =
            tokio::task::spawn_blocking(move || merge_summaries(into, summary_rx, done_tx, &spare));
        let mut read = 0;
        while done_rx.recv().await.is_some() {
            read += 1;
            if read % 50 == 0 || read == total {
                progress(&format!("read {read}/{total} raw files"));
            }
        }
        let stopped =
            |e: tokio::task::JoinError| Error::Internal(format!("a raw file reader stopped: {e}"));
        let merged = merger.await.map_err(stopped)?;
        for folder in folders {
            folder.await.map_err(stopped)?;
        }
        let merged = merged?;
        self.nodes = merged.nodes;
        self.facts = merged.facts;
        self.rows += merged.rows;
        add_counts(&mut self.refused, &merged.refused);
        self.refused_in.extend(merged.refused_in);
        self.files += read;
        Ok(())
    }
}

/// Add `more` to `counts`, position by position.
fn add_counts(counts: &mut Vec<u64>, more: &[u64]) {
    if counts.len() < more.len() {
        counts.resize(more.len(), 0);
    }
    for (count, more) in counts.iter_mut().zip(more) {
        *count += more;
    }
}

/// A worker's loop: fold the batches of each file its reader sends into a
/// summary of that file, and pass it on when the file is done.
fn fold_files(
    nodes: Interner,
    rules: &Rules,
    mut rx: mpsc::Receiver<Message>,
    summaries: std::sync::mpsc::SyncSender<Result<Shard>>,
    spare: &Spare,
) {
    let empty = || {
        let reused = spare.lock().ok().and_then(|mut s| s.pop());
        match reused {
            Some(mut shard) => {
                shard.clear();
                shard
            }
            None => Shard::new(nodes.sibling(), Facts::new()),
        }
    };
    let mut shard = empty();
    let mut nodes: Vec<NodeId> = Vec::with_capacity(8);
    while let Some(message) = rx.blocking_recv() {
        let sent = match message {
            Message::Batch(table, batch) => match shard.fold(rules, table, &batch, &mut nodes) {
                Ok(()) => continue,
                Err(e) => summaries.send(Err(e)),
            },
            Message::FileDone(path) => {
                if shard.refused.iter().any(|&n| n > 0) {
                    let counts = shard.refused.clone();
                    shard.refused_in.push((path, counts));
                }
                shard.hash_nodes();
                summaries.send(Ok(std::mem::replace(&mut shard, empty())))
            }
            Message::Failed(e) => summaries.send(Err(e)),
        };
        // The merge stopped (on another file's error): stop reading.
        if sent.is_err() {
            return;
        }
    }
}

/// The merging thread: fold each file's summary into `into`, telling
/// `done` after each; the first error stops it.
fn merge_summaries(
    mut into: Shard,
    summaries: std::sync::mpsc::Receiver<Result<Shard>>,
    done: mpsc::UnboundedSender<()>,
    spare: &Spare,
) -> Result<Shard> {
    for summary in summaries {
        let mut summary = summary?;
        into.absorb(&mut summary);
        if let Ok(mut s) = spare.lock() {
            s.push(summary);
        }
        let _ = done.send(());
    }
    Ok(into)
}

/// Merged summaries waiting to be reused by a worker.
type Spare = Arc<std::sync::Mutex<Vec<Shard>>>;

impl Shard {
    fn new(nodes: Interner, facts: Facts) -> Shard {
        Shard {
            nodes,
            hashes: Vec::new(),
            facts,
            rows: 0,
            refused: Vec::new(),
            refused_in: Vec::new(),
            caches: HashMap::new(),
        }
    }

    /// Forget everything, keeping the allocated capacity.
    fn clear(&mut self) {
        self.nodes.clear();
        self.hashes.clear();
        self.facts.clear();
        self.rows = 0;
        self.refused.clear();
        self.refused_in.clear();
        self.caches.clear();
    }

    /// Hash every node for the merge (on the worker's thread, not the
    /// merging one).
    fn hash_nodes(&mut self) {
        let nodes = &self.nodes;
        self.hashes.clear();
        self.hashes
            .extend((0..nodes.len() as u32).map(|n| nodes.hash(nodes.kind(n), nodes.get(n))));
    }

    /// Merge another shard (a file's summary) into this one, leaving it
    /// to be cleared.
    fn absorb(&mut self, other: &mut Shard) {
        if other.hashes.len() != other.nodes.len() {
            other.hash_nodes();
        }
        let mut map = Vec::new();
        self.nodes
            .intern_from(&other.nodes, &other.hashes, &mut map);
        self.facts.absorb(&mut other.facts, &map);
        self.rows += other.rows;
        add_counts(&mut self.refused, &other.refused);
        self.refused_in.append(&mut other.refused_in);
    }

    /// Fold one batch of `table` (columns as planned) into graph and facts.
    fn fold(
        &mut self,
        rules: &Rules,
        table: RawTable,
        batch: &RecordBatch,
        nodes: &mut Vec<NodeId>,
    ) -> Result<()> {
        let plan = &rules.plans[&table];
        self.rows += batch.num_rows();
        let times = batch
            .column(0)
            .as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>();
        let caches = self
            .caches
            .entry(table)
            .or_insert_with(|| vec![DictCache::default(); plan.sources.len()]);
        let mut columns: Vec<Text> = Vec::with_capacity(plan.sources.len());
        for (source, cache) in plan.sources.iter().zip(caches.iter_mut()) {
            let array = batch.column(source.column);
            columns.push(match array.as_dictionary_opt::<Int32Type>() {
                Some(dict) => {
                    cache.start(dict.values());
                    Text::Dict(dict, dict.values().as_string::<i32>())
                }
                None => Text::Plain(array.as_string::<i32>()),
            });
        }
        let (mut last_key, mut last_nodes) = (NOTHING, Vec::with_capacity(8));
        for row in 0..batch.num_rows() {
            if times.is_null(row) {
                continue;
            }
            let at = times.value(row);
            nodes.clear();
            for ((source, column), cache) in
                plan.sources.iter().zip(&columns).zip(caches.iter_mut())
            {
                let node = match column {
                    Text::Plain(values) => {
                        if values.is_null(row) {
                            continue;
                        }
                        node_for(&mut self.nodes, source, values.value(row), rules.country)
                    }
                    Text::Dict(dict, values) => {
                        if dict.is_null(row) {
                            continue;
                        }
                        let k = dict.keys().value(row) as usize;
                        match cache.nodes[k] {
                            UNSEEN => {
                                let node = node_for(
                                    &mut self.nodes,
                                    source,
                                    values.value(k),
                                    rules.country,
                                );
                                cache.nodes[k] = match node {
                                    Ok(Some(node)) => node,
                                    Ok(None) => NOTHING,
                                    Err(()) => REFUSED,
                                };
                                node
                            }
                            NOTHING => Ok(None),
                            REFUSED => Err(()),
                            node => Ok(Some(node)),
                        }
                    }
                };
                let node = match node {
                    Ok(Some(node)) => node,
                    Ok(None) => continue,
                    Err(()) => {
                        if self.refused.len() <= source.index {
                            self.refused.resize(source.index + 1, 0);
                        }
                        self.refused[source.index] += 1;
                        continue;
                    }
                };
                if !nodes.contains(&node) {
                    nodes.push(node);
                }
            }
            if nodes.is_empty() {
                continue;
            }
            // The key records when its identifiers were seen together;
            // node times and links are derived from keys after the scan.
            // Rows of one visit often follow each other: same key.
            if last_key == NOTHING || last_nodes[..] != nodes[..] {
                last_key = self.facts.key(nodes);
                last_nodes.clone_from(nodes);
            }
            let key = last_key;
            self.facts.seen(key, at);
            fold_facts(&mut self.facts, rules, table, batch, row, at, key);
        }
        Ok(())
    }
}

/// Fold the profile facts of one row of `table` into key `key`.
fn fold_facts(
    facts: &mut Facts,
    rules: &Rules,
    table: RawTable,
    batch: &RecordBatch,
    row: usize,
    at: i64,
    key: u32,
) {
    let r = Folding {
        batch,
        row,
        at,
        key,
    };
    match table {
        RawTable::Events => fold_event(facts, rules, r),
        RawTable::Orders => fold_order(facts, r),
        RawTable::Customers => fold_customer(facts, rules, r),
        RawTable::SurveyResponses => {
            let scores = batch.column(2).as_primitive::<Int64Type>();
            if let Some(i) = r
                .text(1)
                .and_then(|s| field::SURVEYS.iter().position(|k| *k == s))
                && !scores.is_null(row)
            {
                let cell = Cell {
                    at,
                    num: scores.value(row),
                    ..Cell::sum(field::SURVEY + i as u16, 0)
                };
                facts.add(key, cell);
            }
        }
        RawTable::Consents => {
            // Records of purposes the lake does not declare stay in
            // raw.consents (and in `privacy proof`), not in profiles.
            if let Some(purpose) = r.text(1).filter(|p| rules.consent.is_purpose(p))
                && let Some(status) = r.text(2)
            {
                let field = facts.fields.consent(purpose);
                r.stamp(facts, field, Some(status));
            }
        }
        // Declared tables give identifiers and links only; their facts
        // are computed in SQL (jobs) over the rows and profile ids.
        _ => {}
    }
}

/// The row being folded into its key's facts: its batch and place, its
/// time and its key.
#[derive(Clone, Copy)]
struct Folding<'a> {
    batch: &'a RecordBatch,
    row: usize,
    at: i64,
    key: u32,
}

impl<'a> Folding<'a> {
    /// The text of column `i`.
    fn text(&self, i: usize) -> Option<&'a str> {
        text_at(self.batch.column(i), self.row)
    }

    /// One more of `field`.
    fn count(&self, facts: &mut Facts, field: u16) {
        facts.add(self.key, Cell::sum(field, 1));
    }

    /// `field` at this row's time, with `text` if any.
    fn stamp(&self, facts: &mut Facts, field: u16, text: Option<&str>) {
        let text = text.map_or(NO_TEXT, |t| facts.text(t));
        let cell = Cell {
            at: self.at,
            text,
            ..Cell::sum(field, 0)
        };
        facts.add(self.key, cell);
    }
}

/// An event: counted by kind, with the consent an SDK sent along (most
/// events carry none).
fn fold_event(facts: &mut Facts, rules: &Rules, r: Folding<'_>) {
    r.count(facts, field::EVENTS);
    match r.text(1) {
        Some("page" | "screen") => r.count(facts, field::PAGE_VIEWS),
        Some("track") => r.count(facts, field::TRACKS),
        Some("identify") => r.count(facts, field::IDENTIFIES),
        _ => {}
    }
    for (purpose, granted) in r
        .text(2)
        .map(|c| rules.consent.sdk_answers(c))
        .unwrap_or_default()
    {
        let field = facts.fields.consent(purpose);
        r.stamp(
            facts,
            field,
            Some(if granted { "granted" } else { "denied" }),
        );
    }
}

/// An order: counts, money (net of returns and cancellations), first and
/// last order times and the channel.
fn fold_order(facts: &mut Facts, r: Folding<'_>) {
    let amounts: &Decimal128Array = r.batch.column(1).as_primitive::<Decimal128Type>();
    let cents = if amounts.is_null(r.row) {
        0
    } else {
        amounts.value(r.row) as i64
    };
    r.count(facts, field::ORDERS);
    facts.add(r.key, Cell::sum(field::GROSS_CENTS, cents));
    if !matches!(r.text(2), Some("returned" | "cancelled")) {
        r.count(facts, field::NET_ORDERS);
        facts.add(r.key, Cell::sum(field::NET_CENTS, cents));
        r.stamp(facts, field::LAST_NET_ORDER_AT, None);
    }
    r.stamp(facts, field::FIRST_ORDER_AT, None);
    r.stamp(facts, field::LAST_ORDER_AT, None);
    if let Some(channel) = r.text(3) {
        let f = facts.fields.channel(channel);
        r.count(facts, f);
    }
}

/// A customer record: each trait it holds, ranked by its source.
fn fold_customer(facts: &mut Facts, rules: &Rules, r: Folding<'_>) {
    let rank = r
        .text(1)
        .and_then(|s| rules.source_rank.get(s).copied())
        .unwrap_or(rules.source_rank.len() as u16);
    for (i, name) in field::TRAITS.iter().enumerate() {
        let column = r.batch.column(2 + i);
        if column.is_null(r.row) {
            continue;
        }
        let (num, text) = match *name {
            "birth_date" => (
                i64::from(column.as_primitive::<Date32Type>().value(r.row)),
                NO_TEXT,
            ),
            "newsletter" => (i64::from(column.as_boolean().value(r.row)), NO_TEXT),
            _ => match text_at(column, r.row) {
                Some(value) => (0, facts.text(value)),
                None => continue,
            },
        };
        let cell = Cell {
            field: field::TRAIT + i as u16,
            rank,
            at: r.at,
            num,
            text,
        };
        facts.add(r.key, cell);
    }
}

/// The text at `row` of a text column, whether the file stored it plain or
/// it was read as a dictionary: a column that is an identifier source is
/// read as a dictionary (see `read_file`), and the same column may also
/// feed a profile fact (a loyalty id kept in `postal_code`, say).
fn text_at(column: &ArrayRef, row: usize) -> Option<&str> {
    if column.is_null(row) {
        return None;
    }
    match column.as_dictionary_opt::<Int32Type>() {
        Some(dict) => {
            let key = dict.keys().value(row);
            let values = dict.values().as_string_opt::<i32>()?;
            usize::try_from(key)
                .ok()
                .filter(|k| *k < values.len())
                .map(|k| values.value(k))
        }
        None => Some(column.as_string_opt::<i32>()?.value(row)),
    }
}
