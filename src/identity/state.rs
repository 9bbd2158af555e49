//! The refresh state: every identifier seen (`nodes`), every row key (the
//! identifiers seen together on a row, with the first and last time and
//! its event counts) and the other profile facts of each key (`cells`),
//! stored as Parquet beside each committed version (`cdp/_state/v=…/`).
//! Node times and links are derived from the keys, so they are not stored.
//! The next refresh starts from it and reads only raw files landed since;
//! a full rebuild starts from nothing and must arrive at the same state.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeListArray, Int32Array, Int64Array, ListBuilder, RecordBatch,
    StringArray, UInt32Array, UInt32Builder,
};
use datafusion::arrow::datatypes::{
    DataType, Field, Int32Type, Int64Type, Schema, SchemaRef, UInt32Type,
};
use object_store::ObjectStoreExt;
use object_store::path::Path;

use super::facts::{COUNTED, Cell, Facts, KeyStats};
use super::graph::{Graph, TypeRule};
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::lake::parquet::{self, ParquetFileWriter, bulk_properties};

/// Version of the layout below; a refresh that finds another rebuilds.
pub const FORMAT: u32 = 4;

/// Name of the state in the manifest's table map.
pub const STATE_TABLE: &str = "_state";

const CHUNK: usize = 64 * 1024;

fn nodes_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id_type", DataType::Utf8, false),
        Field::new("value", DataType::Utf8, false),
    ]))
}

fn keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(
            "nodes",
            DataType::List(Arc::new(Field::new("item", DataType::UInt32, true))),
            false,
        ),
        Field::new("first_seen", DataType::Int64, false),
        Field::new("last_seen", DataType::Int64, false),
        Field::new(
            "counts",
            DataType::FixedSizeList(count_item(), COUNTED as i32),
            false,
        ),
    ]))
}

/// The item of a key's `counts` list.
fn count_item() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::UInt32, false))
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

fn batch(schema: &SchemaRef, columns: Vec<ArrayRef>) -> Result<RecordBatch> {
    RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| Error::arrow("building the refresh state", e))
}

/// Write the graph and facts under `dir` (a new version folder).
pub async fn save(lake: &Lake, dir: &Path, graph: &Graph, facts: &Facts) -> Result<()> {
    let schema = nodes_schema();
    let mut w = ParquetFileWriter::create_with(
        lake,
        &dir.clone().join("nodes.parquet"),
        schema.clone(),
        bulk_properties(&["value"]),
    )?;
    for chunk in graph.nodes.chunks(CHUNK) {
        let b = batch(
            &schema,
            vec![
                Arc::new(StringArray::from_iter_values(
                    chunk
                        .iter()
                        .map(|n| graph.types[n.id_type as usize].name.as_str()),
                )),
                Arc::new(StringArray::from_iter_values(
                    chunk.iter().map(|n| &*n.value),
                )),
            ],
        )?;
        w.write(&b).await?;
    }
    w.finish().await?;

    let schema = keys_schema();
    let mut w = ParquetFileWriter::create_with(
        lake,
        &dir.clone().join("keys.parquet"),
        schema.clone(),
        bulk_properties(&[]),
    )?;
    for start in (0..facts.len()).step_by(CHUNK) {
        let end = (start + CHUNK).min(facts.len());
        let stats = &facts.stats[start..end];
        let mut list = ListBuilder::new(UInt32Builder::new());
        for key in (start..end).map(|k| facts.key_nodes(k)) {
            list.values().append_slice(key);
            list.append(true);
        }
        let b = batch(
            &schema,
            vec![
                Arc::new(list.finish()),
                Arc::new(Int64Array::from_iter_values(stats.iter().map(|s| s.first))),
                Arc::new(Int64Array::from_iter_values(stats.iter().map(|s| s.last))),
                Arc::new(FixedSizeListArray::new(
                    count_item(),
                    COUNTED as i32,
                    Arc::new(UInt32Array::from_iter_values(
                        stats.iter().flat_map(|s| s.counts),
                    )),
                    None,
                )),
            ],
        )?;
        w.write(&b).await?;
    }
    w.finish().await?;

    let schema = cells_schema();
    let mut w = ParquetFileWriter::create_with(
        lake,
        &dir.clone().join("cells.parquet"),
        schema.clone(),
        bulk_properties(&[]),
    )?;
    // Cells of whole keys, about CHUNK at a time: never all in one list.
    let mut chunk: Vec<(u32, &Cell)> = Vec::with_capacity(CHUNK + 64);
    for (k, partial) in facts.partials.iter().enumerate() {
        chunk.extend(partial.iter().map(|c| (k as u32, c)));
        if chunk.len() >= CHUNK || k + 1 == facts.partials.len() {
            let b = batch(
                &schema,
                vec![
                    Arc::new(UInt32Array::from_iter_values(chunk.iter().map(|c| c.0))),
                    Arc::new(StringArray::from_iter_values(
                        chunk.iter().map(|c| facts.fields.name(c.1.field)),
                    )),
                    Arc::new(Int32Array::from_iter_values(chunk.iter().map(|c| c.1.rank))),
                    Arc::new(Int64Array::from_iter_values(chunk.iter().map(|c| c.1.at))),
                    Arc::new(Int64Array::from_iter_values(chunk.iter().map(|c| c.1.num))),
                    Arc::new(StringArray::from_iter(
                        chunk.iter().map(|c| c.1.text.as_deref()),
                    )),
                ],
            )?;
            w.write(&b).await?;
            chunk.clear();
        }
    }
    w.finish().await?;
    Ok(())
}

/// Call `each` with every batch of the state file `dir/name`.
async fn read(
    lake: &Lake,
    dir: &Path,
    name: &str,
    each: impl FnMut(&RecordBatch) -> Result<()>,
) -> Result<()> {
    let path = lake.path(&dir.clone().join(name));
    let meta = lake
        .store()
        .head(&path)
        .await
        .map_err(|e| Error::store(format!("reading the refresh state {path}"), e))?;
    parquet::for_each_batch(lake, &meta, each).await
}

/// Load the state written by [`save`] for identifier types `types`.
///
/// The identifiers are read on another task while this one reads the keys
/// and then their cells: on two cores the two halves take about as long.
pub async fn load(lake: &Lake, dir: &Path, types: Vec<TypeRule>) -> Result<(Graph, Facts)> {
    let nodes = tokio::spawn({
        let (lake, dir) = (lake.clone(), dir.clone());
        async move { load_nodes(&lake, &dir, types).await }
    });
    let keys = load_keys(lake, dir).await;
    let graph = nodes
        .await
        .map_err(|e| Error::Config(format!("reading the refresh state stopped: {e}")))??;
    let (facts, highest_node) = keys?;
    if highest_node.is_some_and(|h| h as usize >= graph.nodes.len()) {
        return Err(stale(dir, "has a key with an unknown identifier"));
    }
    Ok((graph, facts))
}

fn stale(dir: &Path, what: impl std::fmt::Display) -> Error {
    Error::Config(format!("the refresh state in {dir} {what}"))
}

/// The identifiers of the state, as a graph without links.
async fn load_nodes(lake: &Lake, dir: &Path, types: Vec<TypeRule>) -> Result<Graph> {
    let mut graph = Graph::new(types);
    read(lake, dir, "nodes.parquet", |b| {
        let (t, v) = (
            b.column(0).as_string::<i32>(),
            b.column(1).as_string::<i32>(),
        );
        for row in 0..b.num_rows() {
            let ti = graph
                .types
                .iter()
                .position(|r| r.name == t.value(row))
                .ok_or_else(|| {
                    stale(
                        dir,
                        format!("has unknown identifier type '{}'", t.value(row)),
                    )
                })?;
            let id = graph.intern(ti as u16, v.value(row));
            if id as usize != graph.nodes.len() - 1 {
                return Err(stale(dir, format!("lists {} twice", v.value(row))));
            }
        }
        Ok(())
    })
    .await?;
    Ok(graph)
}

/// The row keys of the state with their stats and cells, and the highest
/// node number a key holds (checked against the identifiers by the caller).
async fn load_keys(lake: &Lake, dir: &Path) -> Result<(Facts, Option<u32>)> {
    let mut facts = Facts::default();
    let mut highest: Option<u32> = None;
    read(lake, dir, "keys.parquet", |b| {
        let lists = b.column(0).as_list::<i32>();
        let offsets = lists.offsets();
        let members = lists.values().as_primitive::<UInt32Type>().values();
        let first = b.column(1).as_primitive::<Int64Type>();
        let last = b.column(2).as_primitive::<Int64Type>();
        let counts = b.column(3).as_fixed_size_list();
        let counts = counts.values().as_primitive::<UInt32Type>().values();
        if counts.len() != b.num_rows() * COUNTED {
            return Err(stale(dir, "has keys without their counts"));
        }
        for row in 0..b.num_rows() {
            let nodes = &members[offsets[row] as usize..offsets[row + 1] as usize];
            if let Some(&h) = nodes.iter().max() {
                highest = highest.max(Some(h));
            }
            let k = facts.key(nodes);
            if k as usize != facts.len() - 1 {
                return Err(stale(dir, "lists a key twice"));
            }
            let mut stats = KeyStats {
                first: first.value(row),
                last: last.value(row),
                counts: [0; COUNTED],
            };
            stats
                .counts
                .copy_from_slice(&counts[row * COUNTED..(row + 1) * COUNTED]);
            facts.absorb_stats(k, &stats);
        }
        Ok(())
    })
    .await?;
    let keys = facts.len() as u32;
    // Field names repeat row after row: look each one up once per run.
    let mut last_name: Option<(String, u16)> = None;
    read(lake, dir, "cells.parquet", |b| {
        let key = b.column(0).as_primitive::<UInt32Type>();
        let name = b.column(1).as_string::<i32>();
        let rank = b.column(2).as_primitive::<Int32Type>();
        let at = b.column(3).as_primitive::<Int64Type>();
        let num = b.column(4).as_primitive::<Int64Type>();
        let text = b.column(5).as_string::<i32>();
        for row in 0..b.num_rows() {
            let k = key.value(row);
            if k >= keys {
                return Err(stale(dir, "has facts of an unknown key"));
            }
            let field = match &last_name {
                Some((last, field)) if last == name.value(row) => *field,
                _ => {
                    let Some(field) = facts.fields.by_name(name.value(row)) else {
                        return Err(stale(
                            dir,
                            format!("has unknown field '{}'", name.value(row)),
                        ));
                    };
                    last_name = Some((name.value(row).to_string(), field));
                    field
                }
            };
            facts.add(
                k,
                Cell {
                    field,
                    rank: rank.value(row),
                    at: at.value(row),
                    num: num.value(row),
                    text: (!text.is_null(row)).then(|| text.value(row).into()),
                },
            );
        }
        Ok(())
    })
    .await?;
    Ok((facts, highest))
}
