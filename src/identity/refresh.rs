//! One refresh, start to commit.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use futures::StreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use uuid::Uuid;

use super::config::IdentityConfig;
use super::graph::{Graph, NodeId, Rejection, TypeRule};
use super::normalize;
use super::profiles_sql::{NEW_LINKS, profiles_sql};
use crate::catalog::folder_table;
use crate::engine::{self, EngineOptions};
use crate::error::{Error, Result};
use crate::lake::manifest::{MANIFEST_FORMAT, Manifest, version_dir};
use crate::lake::parquet::{ParquetFileWriter, write_file};
use crate::lake::{Lake, paths};
use crate::schema::{RawTable, cdp, timestamp_type};

/// What a refresh did (also the row it adds to `system.refreshes`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RefreshReport {
    pub version: u64,
    pub raw_files: usize,
    pub raw_rows: usize,
    pub identifiers: usize,
    pub links: usize,
    pub profiles: usize,
    pub new_profiles: usize,
    pub merges: usize,
    pub splits: usize,
    pub refused_links: usize,
    pub blocked_values: usize,
    /// Milliseconds spent reading identifiers and resolving the graph.
    pub graph_ms: u64,
    /// Milliseconds spent writing the views (links, profiles, ...).
    pub views_ms: u64,
}

/// Folder of `system.refreshes`.
pub fn refreshes_dir() -> Path {
    Path::from("system/refreshes")
}

/// Run a full refresh of the identity graph and profiles at time `now`.
pub async fn refresh(
    lake: &Lake,
    config: &IdentityConfig,
    options: &EngineOptions,
    now: DateTime<Utc>,
    mut progress: impl FnMut(&str),
) -> Result<RefreshReport> {
    config.validate()?;
    let started = now;
    let outcome = run(lake, config, options, now, &mut progress).await;
    let finished = Utc::now().max(started);
    let (report, status, error) = match &outcome {
        Ok(r) => (r.clone(), "committed", None),
        Err(e) => (RefreshReport::default(), "failed", Some(e.to_string())),
    };
    record(lake, &report, started, finished, status, error.as_deref()).await?;
    outcome
}

async fn run(
    lake: &Lake,
    config: &IdentityConfig,
    options: &EngineOptions,
    now: DateTime<Utc>,
    progress: &mut impl FnMut(&str),
) -> Result<RefreshReport> {
    let phase = std::time::Instant::now();
    let ctx = engine::session(lake, options)?;
    let country = normalize::country(&config.default_country)
        .ok_or_else(|| Error::Config("bad default_country".into()))?;
    let previous = Manifest::load(lake).await?;
    let version = previous.as_ref().map_or(1, |m| m.version + 1);
    let run = Uuid::new_v4().simple().to_string()[..8].to_string();
    let mut report = RefreshReport {
        version,
        ..RefreshReport::default()
    };

    // 1. Every identifier of every configured source, normalised.
    let types: Vec<TypeRule> = config
        .types
        .iter()
        .map(|t| TypeRule {
            name: t.name.clone(),
            priority: t.priority,
            max_per_profile: t.max_per_profile,
        })
        .collect();
    let mut graph = Graph::new(types);
    for table in RawTable::ALL {
        let sources: Vec<_> = config
            .sources
            .iter()
            .filter(|s| s.table == table.name())
            .collect();
        if sources.is_empty() {
            continue;
        }
        progress(&format!("reading identifiers of raw.{table}"));
        report.raw_files += lake.list(&paths::raw_table_dir(table)).await?.len();
        let columns: Vec<String> = sources
            .iter()
            .map(|s| format!("\"{}\"", s.column))
            .collect();
        let sql = format!(
            "SELECT \"{}\", {} FROM raw.{table}",
            table.time_column(),
            columns.join(", ")
        );
        let kinds: Vec<(u16, normalize::Normalize, Option<Vec<String>>)> = sources
            .iter()
            .map(|s| {
                let ti = config
                    .types
                    .iter()
                    .position(|t| t.name == s.id_type)
                    .unwrap_or(0);
                let path = s
                    .json_path
                    .as_ref()
                    .map(|p| p.split('.').map(String::from).collect());
                (ti as u16, config.types[ti].normalize, path)
            })
            .collect();
        let mut stream = ctx.sql(&sql).await?.execute_stream().await?;
        let mut row_ids: Vec<NodeId> = Vec::with_capacity(kinds.len());
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            report.raw_rows += batch.num_rows();
            let times = cast(batch.column(0), &timestamp_type())
                .map_err(|e| Error::arrow(format!("reading times of raw.{table}"), e))?;
            let times = times
                .as_any()
                .downcast_ref::<TimestampMicrosecondArray>()
                .ok_or_else(|| Error::Config("time column is not a timestamp".into()))?;
            let values: Vec<ArrayRef> = (1..batch.num_columns())
                .map(|i| cast(batch.column(i), &DataType::Utf8))
                .collect::<Result<_, _>>()
                .map_err(|e| Error::arrow(format!("reading identifiers of raw.{table}"), e))?;
            let values: Vec<&StringArray> = values
                .iter()
                .map(|a| a.as_any().downcast_ref::<StringArray>())
                .collect::<Option<_>>()
                .ok_or_else(|| Error::Config("identifier column is not text".into()))?;
            for row in 0..batch.num_rows() {
                if times.is_null(row) {
                    continue;
                }
                let at = times.value(row);
                row_ids.clear();
                for ((id_type, kind, path), column) in kinds.iter().zip(&values) {
                    if column.is_null(row) {
                        continue;
                    }
                    let raw = column.value(row);
                    let extracted;
                    let raw = match path {
                        Some(path) => match json_path(raw, path) {
                            Some(v) => {
                                extracted = v;
                                extracted.as_str()
                            }
                            None => continue,
                        },
                        None => raw,
                    };
                    if let Some(value) = normalize::normalize(*kind, raw, country) {
                        row_ids.push(graph.observe(*id_type, &value, at));
                    }
                }
                for i in 1..row_ids.len() {
                    graph.link(row_ids[0], row_ids[i], at);
                }
            }
        }
    }
    report.identifiers = graph.nodes.len();
    report.links = graph.edges.len();

    // 2. The previous assignment, for stable ids.
    let mut previous_ids: HashMap<NodeId, String> = HashMap::new();
    if previous
        .as_ref()
        .is_some_and(|m| m.tables.contains_key("identity_links"))
    {
        progress("reading the previous identity links");
        let mut stream = ctx
            .sql("SELECT id_type, id_value, profile_id FROM cdp.identity_links")
            .await?
            .execute_stream()
            .await?;
        let type_index: HashMap<&str, u16> = config
            .types
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.as_str(), i as u16))
            .collect();
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let col = |i: usize| -> Result<StringArray> {
                let a = cast(batch.column(i), &DataType::Utf8)
                    .map_err(|e| Error::arrow("reading previous links", e))?;
                Ok(a.as_any()
                    .downcast_ref::<StringArray>()
                    .cloned()
                    .unwrap_or_else(|| StringArray::from(Vec::<Option<&str>>::new())))
            };
            let (t, v, p) = (col(0)?, col(1)?, col(2)?);
            for row in 0..batch.num_rows() {
                if let Some(&ti) = type_index.get(t.value(row))
                    && let Some(node) = graph.find(ti, v.value(row))
                {
                    previous_ids.insert(node, p.value(row).to_string());
                }
            }
        }
    }

    // 3. Resolve.
    progress("resolving identities");
    let blocked: std::collections::HashSet<String> = config
        .blocked_values
        .iter()
        .map(|v| v.trim().to_lowercase())
        .collect();
    let resolution = graph.resolve(
        |node| blocked.contains(&node.value.to_lowercase()),
        config.max_distinct_neighbours,
        |node| previous_ids.get(&node).cloned(),
    );
    report.profiles = resolution.profiles;
    report.new_profiles = resolution.new_profiles;
    report.merges = resolution
        .merges
        .iter()
        .filter(|m| m.kind == "merge")
        .count();
    report.splits = resolution
        .merges
        .iter()
        .filter(|m| m.kind == "split")
        .count();
    for r in &resolution.rejections {
        match r {
            Rejection::LimitExceeded { .. } => report.refused_links += 1,
            _ => report.blocked_values += 1,
        }
    }

    report.graph_ms = phase.elapsed().as_millis() as u64;
    let phase = std::time::Instant::now();

    // 4. Write the new version.
    let now_micros = now.timestamp_micros();
    let mut tables = std::collections::BTreeMap::new();
    let type_name = |n: NodeId| {
        config.types[graph.nodes[n as usize].id_type as usize]
            .name
            .as_str()
    };
    let value = |n: NodeId| &*graph.nodes[n as usize].value;

    progress("writing identity links");
    let links_dir = version_dir("identity_links", version, &run);
    {
        let schema = cdp::identity_links();
        let mut writer = ParquetFileWriter::create(
            lake,
            &links_dir.clone().join("part-0.parquet"),
            schema.clone(),
        )?;
        let ids: Vec<NodeId> = (0..graph.nodes.len() as NodeId)
            .filter(|&n| resolution.profile_of[n as usize].is_some())
            .collect();
        for chunk in ids.chunks(64 * 1024) {
            let batch = batch(
                &schema,
                vec![
                    Arc::new(StringArray::from_iter_values(
                        chunk.iter().map(|&n| type_name(n)),
                    )),
                    Arc::new(StringArray::from_iter_values(
                        chunk.iter().map(|&n| value(n)),
                    )),
                    Arc::new(StringArray::from_iter(
                        chunk
                            .iter()
                            .map(|&n| resolution.profile_of[n as usize].as_deref()),
                    )),
                    timestamps(chunk.iter().map(|&n| graph.nodes[n as usize].first_seen)),
                    timestamps(chunk.iter().map(|&n| graph.nodes[n as usize].last_seen)),
                ],
            )?;
            writer.write(&batch).await?;
        }
        writer.finish().await?;
    }
    tables.insert("identity_links".to_string(), links_dir.to_string());

    let rejections_dir = version_dir("identity_rejections", version, &run);
    {
        let schema = cdp::identity_rejections();
        let mut cols: [Vec<Option<String>>; 6] = Default::default();
        for r in &resolution.rejections {
            let row: [Option<String>; 6] = match r {
                Rejection::BlockedValue { node } => [
                    Some("blocked_value".into()),
                    Some(type_name(*node).into()),
                    Some(value(*node).into()),
                    None,
                    None,
                    Some("on the blocked_values list".into()),
                ],
                Rejection::TooManyNeighbours {
                    node,
                    other_type,
                    count,
                } => [
                    Some("too_many_neighbours".into()),
                    Some(type_name(*node).into()),
                    Some(value(*node).into()),
                    Some(config.types[*other_type as usize].name.clone()),
                    None,
                    Some(format!(
                        "seen with {count} distinct {} values (limit {})",
                        config.types[*other_type as usize].name, config.max_distinct_neighbours
                    )),
                ],
                Rejection::LimitExceeded { a, b, limited_type } => [
                    Some("limit_exceeded".into()),
                    Some(type_name(*a).into()),
                    Some(value(*a).into()),
                    Some(type_name(*b).into()),
                    Some(value(*b).into()),
                    Some(format!(
                        "the profile would hold more than {} {}",
                        config.types[*limited_type as usize]
                            .max_per_profile
                            .unwrap_or(0),
                        config.types[*limited_type as usize].name
                    )),
                ],
            };
            for (c, v) in cols.iter_mut().zip(row) {
                c.push(v);
            }
        }
        let n = resolution.rejections.len();
        let mut arrays: Vec<ArrayRef> = cols
            .into_iter()
            .map(|c| Arc::new(StringArray::from(c)) as ArrayRef)
            .collect();
        arrays.push(timestamps(std::iter::repeat_n(now_micros, n)));
        let b = batch(&schema, arrays)?;
        write_file(
            lake,
            &rejections_dir.clone().join("part-0.parquet"),
            schema,
            &[b],
        )
        .await?;
    }
    tables.insert(
        "identity_rejections".to_string(),
        rejections_dir.to_string(),
    );

    // Merge history: the previous files plus this refresh's events.
    let merges_dir = version_dir("profile_merges", version, &run);
    if let Some(old) = previous
        .as_ref()
        .and_then(|m| m.tables.get("profile_merges"))
    {
        for object in lake.list(&Path::from(old.as_str())).await? {
            let name = object
                .location
                .filename()
                .unwrap_or("part.parquet")
                .to_string();
            lake.store()
                .copy(
                    &object.location,
                    &lake.path(&merges_dir.clone().join(name.as_str())),
                )
                .await
                .map_err(|e| Error::store("copying the merge history", e))?;
        }
    }
    if !resolution.merges.is_empty() {
        let schema = cdp::profile_merges();
        let m = &resolution.merges;
        let b = batch(
            &schema,
            vec![
                Arc::new(StringArray::from_iter_values(m.iter().map(|e| e.kind))),
                Arc::new(StringArray::from_iter_values(
                    m.iter().map(|e| e.from_profile.as_str()),
                )),
                Arc::new(StringArray::from_iter_values(
                    m.iter().map(|e| e.to_profile.as_str()),
                )),
                Arc::new(StringArray::from_iter_values(
                    m.iter().map(|e| type_name(e.cause)),
                )),
                Arc::new(StringArray::from_iter_values(
                    m.iter().map(|e| value(e.cause)),
                )),
                timestamps(std::iter::repeat_n(now_micros, m.len())),
            ],
        )?;
        let name = format!("part-v{version:08}.parquet");
        write_file(lake, &merges_dir.clone().join(name.as_str()), schema, &[b]).await?;
    }
    tables.insert("profile_merges".to_string(), merges_dir.to_string());

    // 5. Profiles, from the new links and the raw tables.
    progress("computing profiles");
    ctx.register_table(
        NEW_LINKS,
        folder_table(lake, &links_dir, cdp::identity_links())?,
    )?;
    let type_names: Vec<String> = config.types.iter().map(|t| t.name.clone()).collect();
    let schema = cdp::profiles(&type_names);
    let profiles_dir = version_dir("profiles", version, &run);
    let mut writer = ParquetFileWriter::create(
        lake,
        &profiles_dir.clone().join("part-0.parquet"),
        schema.clone(),
    )?;
    let mut stream = ctx
        .sql(&profiles_sql(config, now_micros))
        .await?
        .execute_stream()
        .await?;
    while let Some(b) = stream.next().await {
        let b = conform(&schema, &b?)?;
        writer.write(&b).await?;
    }
    writer.finish().await?;
    tables.insert("profiles".to_string(), profiles_dir.to_string());

    // 6. Commit: one atomic switch of the manifest.
    Manifest {
        format: MANIFEST_FORMAT,
        version,
        committed_at: now.to_rfc3339(),
        tables,
    }
    .commit(lake)
    .await?;
    report.views_ms = phase.elapsed().as_millis() as u64;
    progress("committed");
    Ok(report)
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

fn timestamps(values: impl Iterator<Item = i64>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from_iter_values(values).with_timezone("UTC"))
}

fn batch(schema: &SchemaRef, columns: Vec<ArrayRef>) -> Result<RecordBatch> {
    RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| Error::arrow("building a view batch", e))
}

/// Cast a query result to the declared schema of a view, column by column.
fn conform(schema: &SchemaRef, batch: &RecordBatch) -> Result<RecordBatch> {
    if batch.num_columns() != schema.fields().len() {
        return Err(Error::Config(format!(
            "the profile query returned {} columns, cdp.profiles has {}",
            batch.num_columns(),
            schema.fields().len()
        )));
    }
    let columns = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(f, c)| cast(c, f.data_type()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::arrow("shaping cdp.profiles", e))?;
    self::batch(schema, columns)
}

/// Append one row to `system.refreshes`.
async fn record(
    lake: &Lake,
    r: &RefreshReport,
    started: DateTime<Utc>,
    finished: DateTime<Utc>,
    status: &str,
    error: Option<&str>,
) -> Result<()> {
    let schema = cdp::refreshes();
    let int = |v: usize| Arc::new(Int64Array::from(vec![v as i64])) as ArrayRef;
    let b = batch(
        &schema,
        vec![
            Arc::new(StringArray::from(vec![Uuid::new_v4().to_string()])),
            timestamps(std::iter::once(started.timestamp_micros())),
            timestamps(std::iter::once(finished.timestamp_micros())),
            Arc::new(StringArray::from(vec![status])),
            Arc::new(StringArray::from(vec![error])),
            Arc::new(BooleanArray::from(vec![true])),
            int(r.version as usize),
            int(r.raw_files),
            int(r.raw_rows),
            int(r.identifiers),
            int(r.links),
            int(r.profiles),
            int(r.new_profiles),
            int(r.merges),
            int(r.splits),
            int(r.refused_links),
            int(r.blocked_values),
        ],
    )?;
    let path = refreshes_dir().join(format!(
        "part-{}-{}.parquet",
        started.format("%Y%m%dT%H%M%S"),
        Uuid::new_v4()
    ));
    write_file(lake, &path, schema, &[b]).await?;
    Ok(())
}
