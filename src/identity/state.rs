//! The refresh state: what the next refresh starts from instead of the raw
//! files already read. Stored as Parquet beside each committed version
//! (`cdp/_state/v=…/`), in layers like the views: a full refresh writes a
//! base, each incremental refresh a layer of what it added or changed.
//!
//! A layer holds seven files:
//! - `nodes.parquet`: identifiers interned since the layer below (node
//!   numbers continue from it), type and value;
//! - `keys.parquet`: the row keys read since (identifiers seen together on a
//!   row): the number of their identifiers, first and last time and event
//!   counts; key numbers continue too, and a key may repeat an older one:
//!   their facts add up;
//! - `key_nodes.parquet`: those keys' identifiers, end to end (flat, not a
//!   list column: a list's levels cost a third of reading the keys);
//! - `cells.parquet`: the other profile facts of those keys;
//! - `edges.parquet`: links new since, or seen earlier than recorded;
//! - `profile_ids.parquet`: the profile ids the layer's assignment names,
//!   each once, numbered by their row;
//! - `assignment.parquet`: the profile of each identifier whose profile
//!   changed (its number in `profile_ids.parquet`; none: it links nobody
//!   now), in node order.
//!
//! Everything but the cells is numbers or short values and is read whole by
//! an incremental refresh; the cells are read only for the keys of the
//! profiles it rewrites.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, FixedSizeBinaryArray, Int32Array, Int64Array,
    RecordBatch, StringArray, UInt32Array,
};
use datafusion::arrow::buffer::BooleanBuffer;
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{
    DataType, Field, Int32Type, Int64Type, Schema, SchemaRef, UInt32Type,
};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use uuid::Uuid;

use super::facts::{COUNTED, Cell, Facts, KeyStats, NO_TEXT};
use super::graph::{Edge, Graph, NodeId, Previous, TypeRule, in_two_halves};
use super::interner::Interner;
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::lake::parquet::{self, ParquetFileWriter, bulk_properties_ascending};

/// Version of the layout below; a refresh that finds another rebuilds.
pub(super) const FORMAT: u32 = 7;

/// Name of the state in the manifest's table map.
pub(super) const STATE_TABLE: &str = "_state";

const CHUNK: usize = 64 * 1024;

/// No node or profile.
const NONE: u32 = u32::MAX;

fn nodes_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id_type", DataType::Utf8, false),
        Field::new("value", DataType::Utf8, false),
    ]))
}

/// The columns of a key's counts of fields `0..COUNTED`.
const COUNT_COLUMNS: [&str; COUNTED] = ["events", "page_views", "tracks", "identifies"];

fn keys_schema() -> SchemaRef {
    let mut fields = vec![
        Field::new("size", DataType::UInt32, false),
        Field::new("first_seen", DataType::Int64, false),
        Field::new("last_seen", DataType::Int64, false),
    ];
    fields.extend(
        COUNT_COLUMNS
            .iter()
            .map(|name| Field::new(*name, DataType::UInt32, false)),
    );
    Arc::new(Schema::new(fields))
}

fn key_nodes_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        "node",
        DataType::UInt32,
        false,
    )]))
}

fn cells_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::UInt32, false),
        Field::new("field", DataType::Utf8, false),
        Field::new("rank", DataType::Int32, false),
        Field::new("at", DataType::Int64, false),
        Field::new("num", DataType::Int64, false),
        Field::new("text", DataType::Utf8, true),
    ]))
}

fn edges_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("a", DataType::UInt32, false),
        Field::new("b", DataType::UInt32, false),
        Field::new("at", DataType::Int64, false),
    ]))
}

fn assignment_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("node", DataType::UInt32, false),
        Field::new("profile", DataType::UInt32, true),
    ]))
}

fn profile_ids_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        "profile_id",
        DataType::FixedSizeBinary(16),
        false,
    )]))
}

/// One layer's assignment as stored: the profile ids it names, each once,
/// and the listed identifiers (in node order) with the number of their
/// profile's id, or `NONE` for none. Loading it numbers each id once and
/// then writes the nodes' numbers in order (the profile ids of a whole
/// graph as `(node, id)` pairs cost a lookup per profile and a write to a
/// random place per identifier).
#[derive(Debug, Default, PartialEq)]
pub(super) struct Assignment {
    pub ids: Vec<Uuid>,
    pub nodes: Vec<(NodeId, u32)>,
}

impl Assignment {
    /// The profile of each of `nodes` identifiers, from the profiles' ids
    /// and members (nodes in none are listed without one).
    pub(super) fn of_profiles<'a>(
        nodes: usize,
        profiles: impl Iterator<Item = (Uuid, &'a [NodeId])>,
    ) -> Assignment {
        let mut number = vec![NONE; nodes];
        let mut ids = Vec::new();
        for (id, members) in profiles {
            for &m in members {
                number[m as usize] = ids.len() as u32;
            }
            ids.push(id);
        }
        let nodes = number.into_iter().enumerate();
        Assignment {
            ids,
            nodes: nodes.map(|(n, p)| (n as NodeId, p)).collect(),
        }
    }

    /// The assignment of `pairs` (identifiers and profile ids, any order).
    pub(super) fn of_pairs(pairs: &[(NodeId, Option<Uuid>)]) -> Assignment {
        let mut numbers: std::collections::HashMap<Uuid, u32> = Default::default();
        let mut ids = Vec::new();
        let mut nodes: Vec<(NodeId, u32)> = pairs
            .iter()
            .map(|&(node, id)| {
                let number = id.map_or(NONE, |id| {
                    *numbers.entry(id).or_insert_with(|| {
                        ids.push(id);
                        ids.len() as u32 - 1
                    })
                });
                (node, number)
            })
            .collect();
        nodes.sort_unstable();
        Assignment { ids, nodes }
    }
}

fn batch(schema: &SchemaRef, columns: Vec<ArrayRef>) -> Result<RecordBatch> {
    RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| Error::arrow("building the refresh state", e))
}

/// What one layer of the state holds besides its assignments: the nodes
/// and keys from these numbers on (with the keys' cells) and these links.
#[derive(Debug, Clone, Copy)]
pub(super) struct Layer<'a> {
    pub nodes_from: usize,
    pub keys_from: usize,
    pub edges: &'a [Edge],
}

/// Write one layer of `graph` and `facts`, with the profile of each
/// identifier `assignment` lists, under `dir` (a new folder).
pub(super) async fn save(
    lake: &Lake,
    dir: &Path,
    graph: &Graph,
    facts: &Facts,
    layer: Layer<'_>,
    assignment: &Assignment,
) -> Result<()> {
    save_graph(lake, dir, graph, facts, layer).await?;
    save_assignment(lake, dir, assignment).await
}

/// A state file `dir/name` being written. Ids, numbers and times: a
/// dictionary only for the few `repeated` values, sorted numbers
/// (`ascending`) delta-encoded.
fn state_file(
    lake: &Lake,
    dir: &Path,
    name: &str,
    schema: &SchemaRef,
    repeated: &[&str],
    ascending: &[&str],
) -> Result<ParquetFileWriter> {
    ParquetFileWriter::create_with(
        lake,
        &dir.clone().join(name),
        schema.clone(),
        bulk_properties_ascending(repeated, ascending),
    )
}

/// The part of [`save`] that needs no resolution: identifiers, keys with
/// their facts, and links. A full rebuild writes it while it resolves.
pub(super) async fn save_graph(
    lake: &Lake,
    dir: &Path,
    graph: &Graph,
    facts: &Facts,
    layer: Layer<'_>,
) -> Result<()> {
    let file = |name: &str, schema: &SchemaRef, repeated: &[&str], ascending: &[&str]| {
        state_file(lake, dir, name, schema, repeated, ascending)
    };
    let schema = nodes_schema();
    let mut w = file("nodes.parquet", &schema, &["id_type"], &[])?;
    for start in (layer.nodes_from..graph.len()).step_by(CHUNK) {
        let chunk = start as u32..(start + CHUNK).min(graph.len()) as u32;
        let b = batch(
            &schema,
            vec![
                Arc::new(StringArray::from_iter_values(
                    chunk
                        .clone()
                        .map(|n| graph.types[graph.id_type(n) as usize].name.as_str()),
                )),
                Arc::new(StringArray::from_iter_values(chunk.map(|n| graph.value(n)))),
            ],
        )?;
        w.write(&b).await?;
    }
    w.finish().await?;

    let schema = keys_schema();
    // Key sizes and event counts are mostly small and repeat: runs of a
    // dictionary.
    let repeated: Vec<&str> = std::iter::once("size").chain(COUNT_COLUMNS).collect();
    let mut w = file("keys.parquet", &schema, &repeated, &[])?;
    for start in (layer.keys_from..facts.len()).step_by(CHUNK) {
        let end = (start + CHUNK).min(facts.len());
        let stats = &facts.stats[start..end];
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from_iter_values(
                (start..end).map(|k| facts.key_nodes(k).len() as u32),
            )),
            Arc::new(Int64Array::from_iter_values(stats.iter().map(|s| s.first))),
            Arc::new(Int64Array::from_iter_values(stats.iter().map(|s| s.last))),
        ];
        columns.extend((0..COUNTED).map(|c| {
            Arc::new(UInt32Array::from_iter_values(
                stats.iter().map(|s| s.counts[c]),
            )) as ArrayRef
        }));
        w.write(&batch(&schema, columns)?).await?;
    }
    w.finish().await?;
    let schema = key_nodes_schema();
    let mut w = file("key_nodes.parquet", &schema, &[], &[])?;
    for chunk in facts.key_nodes_from(layer.keys_from).chunks(CHUNK) {
        let nodes = UInt32Array::from_iter_values(chunk.iter().copied());
        w.write(&batch(&schema, vec![Arc::new(nodes)])?).await?;
    }
    w.finish().await?;

    let schema = cells_schema();
    // Cells are stored by key, most of them with rank 0: the keys
    // delta-encoded, the ranks by dictionary (runs), so that reading them
    // back decompresses only times, numbers and texts.
    let mut w = file(
        "cells.parquet",
        &schema,
        &["field", "rank", "text"],
        &["key"],
    )?;
    // Cells of whole keys, about CHUNK at a time: never all in one list.
    let mut chunk: Vec<(u32, &Cell)> = Vec::with_capacity(CHUNK + 64);
    let keys = layer.keys_from..facts.len();
    let last = facts.len();
    for k in keys {
        chunk.extend(facts.cells(k).iter().map(|c| (k as u32, c)));
        if chunk.len() >= CHUNK || k + 1 == last {
            let b = batch(
                &schema,
                vec![
                    Arc::new(UInt32Array::from_iter_values(chunk.iter().map(|c| c.0))),
                    Arc::new(StringArray::from_iter_values(
                        chunk.iter().map(|c| facts.fields.name(c.1.field)),
                    )),
                    Arc::new(Int32Array::from_iter_values(
                        chunk.iter().map(|c| i32::from(c.1.rank)),
                    )),
                    Arc::new(Int64Array::from_iter_values(chunk.iter().map(|c| c.1.at))),
                    Arc::new(Int64Array::from_iter_values(chunk.iter().map(|c| c.1.num))),
                    Arc::new(StringArray::from_iter(chunk.iter().map(|c| {
                        (c.1.text != NO_TEXT).then(|| facts.texts.get(c.1.text))
                    }))),
                ],
            )?;
            w.write(&b).await?;
            chunk.clear();
        }
    }
    w.finish().await?;

    let schema = edges_schema();
    let mut w = file("edges.parquet", &schema, &[], &[])?;
    for chunk in layer.edges.chunks(CHUNK) {
        let b = batch(
            &schema,
            vec![
                Arc::new(UInt32Array::from_iter_values(chunk.iter().map(|e| e.a))),
                Arc::new(UInt32Array::from_iter_values(chunk.iter().map(|e| e.b))),
                Arc::new(Int64Array::from_iter_values(chunk.iter().map(|e| e.at))),
            ],
        )?;
        w.write(&b).await?;
    }
    w.finish().await?;
    Ok(())
}

/// Write the assignment of one layer under `dir`.
pub(super) async fn save_assignment(
    lake: &Lake,
    dir: &Path,
    assignment: &Assignment,
) -> Result<()> {
    let schema = profile_ids_schema();
    let mut w = state_file(lake, dir, "profile_ids.parquet", &schema, &[], &[])?;
    for chunk in assignment.ids.chunks(CHUNK) {
        let ids = FixedSizeBinaryArray::try_from_iter(chunk.iter().map(|id| id.as_bytes()))
            .map_err(|e| Error::arrow("building the refresh state", e))?;
        w.write(&batch(&schema, vec![Arc::new(ids)])?).await?;
    }
    w.finish().await?;
    let schema = assignment_schema();
    let mut w = state_file(lake, dir, "assignment.parquet", &schema, &[], &["node"])?;
    for chunk in assignment.nodes.chunks(CHUNK) {
        let numbers = chunk.iter().map(|&(_, p)| (p != NONE).then_some(p));
        let b = batch(
            &schema,
            vec![
                Arc::new(UInt32Array::from_iter_values(chunk.iter().map(|c| c.0))),
                Arc::new(UInt32Array::from_iter(numbers)),
            ],
        )?;
        w.write(&b).await?;
    }
    w.finish().await?;
    Ok(())
}

/// Call `each` with every batch of the state file `dir/name`, reading one
/// of `part.1` shares of its row groups.
async fn read(
    lake: &Lake,
    dir: &Path,
    name: &str,
    part: (usize, usize),
    each: impl FnMut(&RecordBatch) -> Result<()>,
) -> Result<()> {
    let meta = head(lake, dir, name).await?;
    parquet::for_each_batch_part(lake, &meta, None, part, each).await
}

/// The object of the state file `dir/name`.
async fn head(lake: &Lake, dir: &Path, name: &str) -> Result<object_store::ObjectMeta> {
    let path = lake.path(&dir.clone().join(name));
    lake.store()
        .head(&path)
        .await
        .map_err(|e| Error::store(format!("reading the refresh state {path}"), e))
}

fn stale(dir: &Path, what: impl std::fmt::Display) -> Error {
    Error::Corrupt {
        what: format!("the refresh state {what}"),
        path: dir.to_string(),
    }
}

/// The stored state but for the cells: what an incremental refresh reads
/// whole.
#[derive(Debug, Default)]
pub(super) struct Stored {
    /// Every identifier (without a lookup index).
    pub nodes: Interner,
    /// Every row key with its stats; no cells.
    pub facts: Facts,
    /// Every link, sorted by ends.
    pub edges: Vec<Edge>,
    /// Each identifier's profile in the committed version, numbered for a
    /// resolution.
    pub previous: Previous,
    /// Each identifier's first and last sighting, from the keys.
    pub first_seen: Vec<i64>,
    pub last_seen: Vec<i64>,
}

/// What the footer of the state file `dir/name` says: its rows, and per
/// column its leaf values and their uncompressed bytes (upper bounds of
/// what reading it takes, to size the vectors once).
async fn footer(lake: &Lake, dir: &Path, name: &str) -> Result<(usize, Vec<(usize, usize)>)> {
    let meta = head(lake, dir, name).await?;
    let file = parquet::open(lake, &meta).await?;
    let metadata = file.metadata();
    let rows = usize::try_from(metadata.file_metadata().num_rows()).unwrap_or(0);
    let mut columns = vec![(0, 0); metadata.file_metadata().schema_descr().num_columns()];
    for group in metadata.row_groups() {
        for (sum, column) in columns.iter_mut().zip(group.columns()) {
            sum.0 += usize::try_from(column.num_values()).unwrap_or(0);
            sum.1 += usize::try_from(column.uncompressed_size()).unwrap_or(0);
        }
    }
    Ok((rows, columns))
}

/// The sums of [`footer`] over the layers `layers` (read all at once: on
/// S3 each is a round trip).
async fn footers(lake: &Lake, layers: &[Path], name: &str) -> Result<(usize, Vec<(usize, usize)>)> {
    let each = futures::future::try_join_all(layers.iter().map(|dir| footer(lake, dir, name)));
    let mut total = (0, Vec::new());
    for (rows, columns) in each.await? {
        total.0 += rows;
        total.1.resize(columns.len().max(total.1.len()), (0, 0));
        for (sum, c) in total.1.iter_mut().zip(columns) {
            *sum = (sum.0 + c.0, sum.1 + c.1);
        }
    }
    Ok(total)
}

/// Read the layers `layers` (base first) of the state, finding on the way
/// which of the identifiers of `probe` (the new files' identifiers) it
/// holds: `found[n]` is the stored node of `probe`'s node `n`, or `None`.
/// The vectors have room for `probe` and `new_keys` (keys and their node
/// numbers) to be appended without moving them.
///
/// Two tasks of about equal work: one reads the identifiers and their
/// assignments (numbering the previous ids); the other reads the keys,
/// derives every identifier's first and last sighting, and reads the
/// links.
pub(super) async fn load(
    lake: &Lake,
    layers: &[Path],
    types: &[TypeRule],
    probe: &Interner,
    new_keys: (usize, usize),
) -> Result<(Stored, Vec<Option<NodeId>>)> {
    // Every vector sized once from the footers: growing them by doubling
    // would write (and fault in) about twice the memory.
    let ((n, node_columns), (key_count, _), (key_nodes, _), (edge_count, _)) = futures::try_join!(
        footers(lake, layers, "nodes.parquet"),
        footers(lake, layers, "keys.parquet"),
        footers(lake, layers, "key_nodes.parquet"),
        footers(lake, layers, "edges.parquet"),
    )?;
    let dir = layers.last().cloned().unwrap_or_default();
    let nodes = async {
        let text_bytes = node_columns.get(1).map_or(0, |c| c.1);
        let mut nodes =
            Interner::unindexed_with_capacity(n + probe.len(), text_bytes + probe.text_len());
        let mut found = vec![None; probe.len()];
        let probe = probe.probe();
        for dir in layers {
            let mut next = nodes.len() as NodeId;
            load_nodes(lake, dir, types, &mut next, |from, kinds, values| {
                for (i, &kind) in kinds.iter().enumerate() {
                    let value = values.value(i);
                    nodes.push(kind, value);
                    if let Some(p) = probe.find(kind, value) {
                        found[p as usize] = Some(from + i as NodeId);
                    }
                }
            })
            .await?;
        }
        if nodes.len() != n {
            return Err(stale(
                &dir,
                "lists other identifiers than its footers count",
            ));
        }
        let mut previous = Previous::new(n);
        // Profiles have several identifiers: a third as many ids is ample.
        previous.reserve_ids(n / 3);
        for dir in layers {
            load_assignment(lake, dir, &mut previous, |previous, node, number| {
                if node as usize >= n {
                    return Err(stale(dir, "assigns an identifier it does not list"));
                }
                previous.set_number(node, number);
                Ok(())
            })
            .await?;
        }
        previous.finish();
        Ok::<_, Error>((nodes, found, previous))
    };
    let rest = async {
        let mut facts = Facts::new();
        facts.reserve(key_count + new_keys.0, key_nodes + new_keys.1);
        let mut highest: Option<u32> = None;
        for dir in layers {
            load_keys(lake, dir, &mut facts, &mut highest).await?;
        }
        if highest.is_some_and(|h| h as usize >= n) {
            return Err(stale(&dir, "refers to an identifier it does not list"));
        }
        let room = n + probe.len();
        let (mut first_seen, mut last_seen) = (Vec::with_capacity(room), Vec::with_capacity(room));
        first_seen.resize(n, i64::MAX);
        last_seen.resize(n, i64::MIN);
        facts.fold_node_times(0, &mut first_seen, &mut last_seen);
        // The links here: the identifiers' side, which numbers every
        // identifier and id, is the longer one.
        let mut edges: Vec<Edge> = Vec::new();
        for dir in layers {
            // The base with room for every layer's links and the new
            // rows' (at most one per node of a new key), merged into it
            // in place.
            let room = match edges.is_empty() {
                true => edge_count + new_keys.1,
                false => 0,
            };
            let layer = load_edges(lake, dir, room).await?;
            match edges.is_empty() {
                true => edges = layer,
                false => _ = merge_edges_into(&mut edges, &layer),
            }
        }
        if edges.iter().any(|e| e.b as usize >= n) {
            return Err(stale(&dir, "links an identifier it does not list"));
        }
        Ok::<_, Error>((facts, first_seen, last_seen, edges))
    };
    let ((nodes, found, previous), (facts, first_seen, last_seen, edges)) =
        super::refresh::both(nodes, rest).await?;
    Ok((
        Stored {
            nodes,
            facts,
            edges,
            previous,
            first_seen,
            last_seen,
        },
        found,
    ))
}

/// The profile each identifier of `graph` had in the stored state of
/// `layers` (for stable ids across a full rebuild, whose node numbers are
/// its own).
pub(super) async fn previous(
    lake: &Lake,
    layers: &[Path],
    types: &[TypeRule],
    graph: &Graph,
) -> Result<Previous> {
    let mut of_stored: Vec<u32> = Vec::new();
    let mut next: NodeId = 0;
    for dir in layers {
        // Looked up by value on two threads, a batch at a time.
        load_nodes(lake, dir, types, &mut next, |_, kinds, values| {
            let from = of_stored.len();
            of_stored.resize(from + kinds.len(), NONE);
            in_two_halves(&mut of_stored[from..], |part, at| {
                for (i, found) in part.iter_mut().enumerate() {
                    let row = at + i;
                    *found = graph.find(kinds[row], values.value(row)).unwrap_or(NONE);
                }
            });
        })
        .await?;
    }
    let mut previous = Previous::new(graph.len());
    for dir in layers {
        load_assignment(lake, dir, &mut previous, |previous, node, number| {
            match of_stored.get(node as usize) {
                Some(&g) if g != NONE => previous.set_number(g, number),
                Some(_) => {}
                None => return Err(stale(dir, "assigns an identifier it does not list")),
            }
            Ok(())
        })
        .await?;
    }
    // Ids only nodes missing from this graph held are no previous ids.
    previous.finish();
    Ok(previous)
}

/// Tell `each` the identifiers of layer `dir` a batch at a time: the
/// number of the first (counted on from `next`), their types and values.
async fn load_nodes(
    lake: &Lake,
    dir: &Path,
    types: &[TypeRule],
    next: &mut NodeId,
    mut each: impl FnMut(NodeId, &[u16], &StringArray),
) -> Result<()> {
    let mut last: Option<(String, u16)> = None;
    let mut kinds = Vec::new();
    read(lake, dir, "nodes.parquet", (0, 1), |b| {
        let (t, v) = (
            b.column(0).as_string::<i32>(),
            b.column(1).as_string::<i32>(),
        );
        kinds.clear();
        for row in 0..b.num_rows() {
            let name = t.value(row);
            let kind = match &last {
                Some((n, k)) if n == name => *k,
                _ => {
                    let k = types.iter().position(|r| r.name == name).ok_or_else(|| {
                        stale(dir, format!("has unknown identifier type '{name}'"))
                    })? as u16;
                    last = Some((name.to_string(), k));
                    k
                }
            };
            kinds.push(kind);
        }
        each(*next, &kinds, v);
        *next += kinds.len() as NodeId;
        Ok(())
    })
    .await
}

/// Append the row keys of layer `dir` (with their stats) to `facts`,
/// keeping the highest node number one holds.
async fn load_keys(
    lake: &Lake,
    dir: &Path,
    facts: &mut Facts,
    highest: &mut Option<u32>,
) -> Result<()> {
    read(lake, dir, "key_nodes.parquet", (0, 1), |b| {
        let nodes = b.column(0).as_primitive::<UInt32Type>().values();
        if let Some(&h) = nodes.iter().max() {
            *highest = (*highest).max(Some(h));
        }
        facts.extend_key_nodes(nodes);
        Ok(())
    })
    .await?;
    read(lake, dir, "keys.parquet", (0, 1), |b| {
        let size = b.column(0).as_primitive::<UInt32Type>().values();
        let first = b.column(1).as_primitive::<Int64Type>().values();
        let last = b.column(2).as_primitive::<Int64Type>().values();
        let counts: Vec<&[u32]> = (0..COUNTED)
            .map(|c| {
                b.column(3 + c)
                    .as_primitive::<UInt32Type>()
                    .values()
                    .as_ref()
            })
            .collect();
        for row in 0..b.num_rows() {
            let stats = KeyStats {
                first: first[row],
                last: last[row],
                counts: std::array::from_fn(|c| counts[c][row]),
            };
            if !facts.push_stored_key(size[row], stats) {
                return Err(stale(dir, "lists keys with more identifiers than it holds"));
            }
        }
        Ok(())
    })
    .await?;
    match facts.keys_hold_every_node() {
        true => Ok(()),
        false => Err(stale(dir, "lists identifiers of no key")),
    }
}

/// The links of layer `dir` (room made for `capacity`).
async fn load_edges(lake: &Lake, dir: &Path, capacity: usize) -> Result<Vec<Edge>> {
    let mut edges = Vec::with_capacity(capacity);
    read(lake, dir, "edges.parquet", (0, 1), |b| {
        let a = b.column(0).as_primitive::<UInt32Type>();
        let bs = b.column(1).as_primitive::<UInt32Type>();
        let at = b.column(2).as_primitive::<Int64Type>();
        edges.extend((0..b.num_rows()).map(|r| Edge {
            a: a.value(r),
            b: bs.value(r),
            at: at.value(r),
        }));
        Ok(())
    })
    .await?;
    if edges
        .windows(2)
        .any(|w| (w[0].a, w[0].b) >= (w[1].a, w[1].b))
    {
        return Err(stale(dir, "lists links out of order"));
    }
    Ok(edges)
}

/// The assignment of layer `dir`: `each` is called with every listed
/// identifier and the number of its profile in `previous` (`None`: none),
/// the layer's ids numbered there first.
async fn load_assignment(
    lake: &Lake,
    dir: &Path,
    previous: &mut Previous,
    mut each: impl FnMut(&mut Previous, NodeId, Option<u32>) -> Result<()>,
) -> Result<()> {
    let mut numbers: Vec<u32> = Vec::new();
    read(lake, dir, "profile_ids.parquet", (0, 1), |b| {
        let ids: &FixedSizeBinaryArray = b.column(0).as_fixed_size_binary();
        for row in 0..b.num_rows() {
            let id = Uuid::from_slice(ids.value(row))
                .map_err(|e| stale(dir, format!("has a profile id that is not a UUID ({e})")))?;
            numbers.push(previous.number(id));
        }
        Ok(())
    })
    .await?;
    read(lake, dir, "assignment.parquet", (0, 1), |b| {
        let nodes = b.column(0).as_primitive::<UInt32Type>();
        let profiles = b.column(1).as_primitive::<UInt32Type>();
        for row in 0..b.num_rows() {
            let number = match profiles.is_null(row) {
                true => None,
                false => match numbers.get(profiles.value(row) as usize) {
                    Some(&number) => Some(number),
                    None => return Err(stale(dir, "assigns a profile it does not list")),
                },
            };
            each(previous, nodes.value(row), number)?;
        }
        Ok(())
    })
    .await
}

/// Merge `new` (links sorted by ends, one per pair) into `edges` (the
/// same), in place: one link per pair, at the earlier time. Returns the
/// links of `new` that were not in `edges` as they are (new pairs, or
/// earlier times): what a layer must record. `edges` grows by the new
/// pairs only, from its end backwards (no second copy of the graph's
/// links when it has the room).
pub(super) fn merge_edges_into(edges: &mut Vec<Edge>, new: &[Edge]) -> Vec<Edge> {
    let ends = |e: &Edge| (e.a, e.b);
    let (mut changed, mut added) = (Vec::new(), Vec::new());
    let mut i = 0;
    for n in new {
        // A sequential walk: the new links are spread over all the old
        // ones, where binary searches would miss the cache at every step.
        while i < edges.len() && ends(&edges[i]) < ends(n) {
            i += 1;
        }
        match edges.get_mut(i) {
            Some(o) if ends(o) == ends(n) => {
                if n.at < o.at {
                    o.at = n.at;
                    changed.push(*n);
                }
            }
            _ => {
                added.push(*n);
                changed.push(*n);
            }
        }
    }
    let old = edges.len();
    edges.resize(old + added.len(), Edge { a: 0, b: 0, at: 0 });
    let (mut i, mut j) = (old, added.len());
    for k in (0..edges.len()).rev() {
        if j == 0 {
            break;
        }
        if i > 0 && ends(&edges[i - 1]) > ends(&added[j - 1]) {
            edges[k] = edges[i - 1];
            i -= 1;
        } else {
            edges[k] = added[j - 1];
            j -= 1;
        }
    }
    changed
}

/// [`cells_schema`] with the repeated texts (field names, texts) read as
/// the dictionaries they are stored as: no string copied per row, and
/// each distinct one looked up once per batch.
fn cells_read_schema() -> SchemaRef {
    let dictionary = || DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    let fields = cells_schema()
        .fields()
        .iter()
        .map(|f| match f.name().as_str() {
            "field" | "text" => f.as_ref().clone().with_data_type(dictionary()),
            _ => f.as_ref().clone(),
        })
        .collect::<Vec<_>>();
    Arc::new(Schema::new(fields))
}

/// Read the cells of the keys `wanted[k]` from the layers `layers` into
/// `facts` (keys beyond `wanted` are not read).
pub(super) async fn load_cells(
    lake: &Lake,
    layers: &[Path],
    facts: &mut Facts,
    wanted: &[bool],
) -> Result<()> {
    let keep = |k: u32| wanted.get(k as usize).copied().unwrap_or(false);
    let kept = read_cells(lake, layers, facts.len(), keep).await?;
    fold_cells(layers, &kept, facts, wanted)
}

/// The stored cells of the layers `layers` (of `keys` keys in all) whose
/// key `keep` keeps, by layer: what [`fold_cells`] folds.
///
/// Two readers share each file's row groups and keep only those rows
/// (decoding is most of the work).
pub(super) async fn read_cells(
    lake: &Lake,
    layers: &[Path],
    keys: usize,
    keep: impl Fn(u32) -> bool + Sync,
) -> Result<Vec<(usize, RecordBatch)>> {
    let keys = keys as u32;
    let schema = cells_read_schema();
    let mut kept: Vec<(usize, RecordBatch)> = Vec::new();
    for (layer, dir) in layers.iter().enumerate() {
        let meta = head(lake, dir, "cells.parquet").await?;
        let pick = |part: usize| {
            let (meta, schema, keep) = (&meta, schema.clone(), &keep);
            async move {
                let mut kept: Vec<RecordBatch> = Vec::new();
                parquet::for_each_batch_part_as(lake, meta, Some(schema), None, (part, 2), |b| {
                    let key = b.column(0).as_primitive::<UInt32Type>().values();
                    if key.iter().any(|&k| k >= keys) {
                        return Err(stale(dir, "has facts of an unknown key"));
                    }
                    let mask = BooleanArray::from(BooleanBuffer::collect_bool(key.len(), |i| {
                        keep(key[i])
                    }));
                    let b = filter_record_batch(b, &mask)
                        .map_err(|e| Error::arrow("reading the refresh state", e))?;
                    if b.num_rows() > 0 {
                        kept.push(b);
                    }
                    Ok(())
                })
                .await?;
                Ok::<_, Error>(kept)
            }
        };
        let (here, there) = super::refresh::both(pick(0), pick(1)).await?;
        kept.extend(here.into_iter().chain(there).map(|b| (layer, b)));
    }
    Ok(kept)
}

/// Fold into `facts` the cells of `kept` (from [`read_cells`] of
/// `layers`) whose key is `wanted`.
pub(super) fn fold_cells(
    layers: &[Path],
    kept: &[(usize, RecordBatch)],
    facts: &mut Facts,
    wanted: &[bool],
) -> Result<()> {
    for (layer, b) in kept {
        fold_batch(&layers[*layer], b, facts, wanted)?;
    }
    Ok(())
}

/// Fold the cells of batch `b` (of [`cells_read_schema`], from layer
/// `dir`) whose key is `wanted` into `facts`.
fn fold_batch(dir: &Path, b: &RecordBatch, facts: &mut Facts, wanted: &[bool]) -> Result<()> {
    let key = b.column(0).as_primitive::<UInt32Type>();
    let names = b.column(1).as_dictionary::<Int32Type>();
    let rank = b.column(2).as_primitive::<Int32Type>();
    let at = b.column(3).as_primitive::<Int64Type>();
    let num = b.column(4).as_primitive::<Int64Type>();
    let texts = b.column(5).as_dictionary::<Int32Type>();
    let (name_values, text_values) = (
        names.values().as_string::<i32>(),
        texts.values().as_string::<i32>(),
    );
    // Each distinct field name and text looked up when first used.
    let mut fields = vec![None; name_values.len()];
    let mut text_numbers = vec![NO_TEXT; text_values.len()];
    // The cells of one key come together, in field order: folded a key
    // at a time.
    let mut run: Vec<Cell> = Vec::new();
    let mut run_key = 0;
    for row in 0..b.num_rows() {
        let k = key.value(row);
        if !wanted.get(k as usize).copied().unwrap_or(false) {
            continue;
        }
        if k != run_key && !run.is_empty() {
            facts.add_run(run_key, &run);
            run.clear();
        }
        run_key = k;
        let name = names.keys().value(row) as usize;
        let field = match fields.get(name).copied().flatten() {
            Some(field) => field,
            None => {
                let value = name_values.value(name);
                let Some(field) = facts.fields.by_name(value) else {
                    return Err(stale(dir, format!("has unknown field '{value}'")));
                };
                fields[name] = Some(field);
                field
            }
        };
        let text = match texts.is_null(row) {
            true => NO_TEXT,
            false => {
                let t = texts.keys().value(row) as usize;
                if text_numbers[t] == NO_TEXT {
                    text_numbers[t] = facts.text(text_values.value(t));
                }
                text_numbers[t]
            }
        };
        run.push(Cell {
            field,
            rank: u16::try_from(rank.value(row)).unwrap_or(u16::MAX),
            at: at.value(row),
            num: num.value(row),
            text,
        });
    }
    if !run.is_empty() {
        facts.add_run(run_key, &run);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(a: u32, b: u32, at: i64) -> Edge {
        Edge { a, b, at }
    }

    #[test]
    fn merged_links_keep_the_earliest_time_and_report_what_changed() {
        let old = [e(0, 1, 10), e(0, 2, 5), e(3, 4, 7)];
        let new = [e(0, 1, 12), e(0, 2, 3), e(1, 2, 9), e(5, 6, 1)];
        let mut merged = old.to_vec();
        let changed = merge_edges_into(&mut merged, &new);
        assert_eq!(
            merged,
            [e(0, 1, 10), e(0, 2, 3), e(1, 2, 9), e(3, 4, 7), e(5, 6, 1)]
        );
        assert_eq!(changed, [e(0, 2, 3), e(1, 2, 9), e(5, 6, 1)]);
    }

    #[test]
    fn merging_in_place_equals_merging_the_pairs_by_a_map() {
        use rand::{Rng, SeedableRng};
        use std::collections::BTreeMap;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut links = |n: usize| {
            let map: BTreeMap<(u32, u32), i64> = (0..n)
                .map(|_| {
                    let ends = (rng.random_range(0..12), rng.random_range(0..12));
                    (ends, rng.random_range(0..50))
                })
                .collect();
            map.into_iter()
                .map(|((a, b), at)| e(a, b, at))
                .collect::<Vec<_>>()
        };
        for _ in 0..200 {
            let (old, new) = (links(30), links(15));
            let mut expected: BTreeMap<(u32, u32), i64> =
                old.iter().map(|l| ((l.a, l.b), l.at)).collect();
            let mut expected_changed = Vec::new();
            for l in &new {
                let at = expected.entry((l.a, l.b)).or_insert(i64::MAX);
                if l.at < *at {
                    *at = l.at;
                    expected_changed.push(*l);
                }
            }
            let mut merged = old.clone();
            let changed = merge_edges_into(&mut merged, &new);
            let expected: Vec<Edge> = expected
                .into_iter()
                .map(|((a, b), at)| e(a, b, at))
                .collect();
            assert_eq!(merged, expected);
            assert_eq!(changed, expected_changed);
        }
    }
}
