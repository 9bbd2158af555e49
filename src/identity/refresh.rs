//! One refresh, start to commit.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::HashMap;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use uuid::Uuid;

use super::blocks;
use super::config::IdentityConfig;
use super::facts::Facts;
use super::graph::{Graph, Node, NodeId, Previous, Rejection, TypeRule, profile_id_array};
use super::profiles;
use super::scan::{RawFile, Scan};
use super::state::{self, STATE_TABLE};
use crate::error::{Error, Result};
use crate::lake::manifest::{MANIFEST_FORMAT, Manifest, VIEWS_FORMAT, version_dir};
use crate::lake::parquet::{self, ParquetFileWriter, bulk_properties, write_file};
use crate::lake::{Lake, paths};
use crate::schema::{RawTable, cdp, utc_timestamps};

/// What a refresh did (also the row it adds to `system.refreshes`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RefreshReport {
    pub version: u64,
    /// Whether every raw file was read (first refresh, `--full`, or the
    /// stored state could not be used), rather than only new ones.
    pub full: bool,
    /// Why every raw file was read, when it was.
    pub full_reason: Option<String>,
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
    /// Of `graph_ms`, milliseconds spent resolving the graph (guards,
    /// ordering the links, union-find with limits, stable ids): the part
    /// that SQL label propagation does by iterating.
    pub resolve_ms: u64,
    /// Of `resolve_ms`, milliseconds spent finding the components: one
    /// union-find pass, then ordering and joining again the links of the
    /// components where order matters.
    pub union_find_ms: u64,
    /// Milliseconds spent writing the views (links, profiles, ...).
    pub views_ms: u64,
}

/// Folder of `system.refreshes`.
pub fn refreshes_dir() -> Path {
    Path::from("system/refreshes")
}

/// How a refresh reads raw data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Start from the stored state and read only raw files landed since
    /// the last commit (falls back to a full rebuild when it must).
    #[default]
    Incremental,
    /// Forget the stored state and read every raw file.
    Full,
}

/// Run a refresh of the identity graph and profiles at time `now`.
pub async fn refresh(
    lake: &Lake,
    config: &IdentityConfig,
    mode: Mode,
    now: DateTime<Utc>,
    mut progress: impl FnMut(&str),
) -> Result<RefreshReport> {
    config.validate()?;
    // One refresh at a time in this process (a REFRESH from two clients, a
    // job asking for one): the second waits and then sees the first's
    // commit, instead of both building version n+1.
    static RUNNING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one_at_a_time = RUNNING.lock().await;
    let started = now;
    let outcome = run(lake, config, mode, now, &mut progress).await;
    let finished = Utc::now().max(started);
    let (report, status, error) = match &outcome {
        Ok(r) => (r.clone(), "committed", None),
        Err(e) => (
            RefreshReport {
                full: mode == Mode::Full,
                ..RefreshReport::default()
            },
            "failed",
            Some(e.to_string()),
        ),
    };
    record(lake, &report, started, finished, status, error.as_deref()).await?;
    outcome
}

/// The identity settings that shape the stored state (the rest apply at
/// resolution and can change between incremental refreshes).
fn state_settings(config: &IdentityConfig) -> String {
    serde_json::json!({
        "state_format": state::FORMAT,
        "views_format": VIEWS_FORMAT,
        "default_country": config.default_country,
        "source_priority": config.source_priority,
        "types": config.types,
        "sources": config.sources,
    })
    .to_string()
}

/// Why the stored state cannot be topped up, if it cannot.
fn full_rebuild_reason(
    previous: Option<&Manifest>,
    settings: &str,
    files: &BTreeMap<String, RawFile>,
) -> Option<String> {
    let Some(m) = previous else {
        return Some("first refresh".into());
    };
    if !m.tables.contains_key(STATE_TABLE) {
        return Some("no stored state".into());
    }
    if m.identity_settings.as_deref() != Some(settings) {
        return Some("the identity settings changed".into());
    }
    for (path, size) in &m.raw_files {
        match files.get(path) {
            None => return Some(format!("{path} was removed")),
            Some(f) if f.meta.size != *size => return Some(format!("{path} changed")),
            Some(_) => {}
        }
    }
    None
}

async fn run(
    lake: &Lake,
    config: &IdentityConfig,
    mode: Mode,
    now: DateTime<Utc>,
    progress: &mut impl FnMut(&str),
) -> Result<RefreshReport> {
    let phase = std::time::Instant::now();
    let previous = Manifest::load(lake).await?;
    let version = previous.as_ref().map_or(1, |m| m.version + 1);
    let run = Uuid::new_v4().simple().to_string()[..8].to_string();
    let settings = state_settings(config);
    let types: Vec<TypeRule> = config
        .types
        .iter()
        .map(|t| TypeRule {
            name: t.name.clone(),
            priority: t.priority,
            max_per_profile: t.max_per_profile,
        })
        .collect();

    // 1. Which raw files to read: all, or those landed since the last commit.
    let probe = Scan::new(config, Graph::default(), Facts::default())?;
    let mut files: BTreeMap<String, RawFile> = BTreeMap::new();
    for table in RawTable::ALL.into_iter().filter(|&t| probe.reads(t)) {
        for meta in lake.list(&paths::raw_table_dir(table)).await? {
            if meta.location.as_ref().ends_with(".parquet") {
                let path = lake.relative(&meta.location).to_string();
                files.insert(path, RawFile { table, meta });
            }
        }
    }
    let reason = match mode {
        Mode::Full => Some("requested".to_string()),
        Mode::Incremental => full_rebuild_reason(previous.as_ref(), &settings, &files),
    };
    let (graph, facts, to_read) = match (&reason, &previous) {
        (None, Some(m)) => {
            progress("loading the stored identity graph");
            let dir = Path::from(m.tables[STATE_TABLE].as_str());
            let (graph, facts) = state::load(lake, &dir, types).await?;
            let new: Vec<RawFile> = files
                .iter()
                .filter(|(p, _)| !m.raw_files.contains_key(*p))
                .map(|(_, f)| f.clone())
                .collect();
            (graph, facts, new)
        }
        _ => {
            progress(&format!(
                "rebuilding from all raw data ({})",
                reason.as_deref().unwrap_or("full")
            ));
            (
                Graph::new(types),
                Facts::default(),
                files.values().cloned().collect(),
            )
        }
    };
    let mut report = RefreshReport {
        version,
        full: reason.is_some(),
        full_reason: reason.clone(),
        ..RefreshReport::default()
    };
    let mut scan = Scan::new(config, graph, facts)?;
    scan.read(lake, to_read, progress).await?;
    report.raw_files = scan.files;
    report.raw_rows = scan.rows;
    let Scan {
        mut graph,
        mut facts,
        ..
    } = scan;
    // Keys are looked up only while reading: free their index now.
    facts.drop_key_index();
    facts.derive_graph(&mut graph);
    report.identifiers = graph.nodes.len();
    report.links = graph.edges.len();

    // 2. The previous assignment, for stable ids.
    let previous_ids = match previous
        .as_ref()
        .and_then(|m| m.tables.get("identity_links"))
    {
        Some(folder) => {
            progress("reading the previous identity links");
            read_previous(lake, &Path::from(folder.as_str()), config, &graph).await?
        }
        None => Previous::new(graph.nodes.len()),
    };

    // 3. Resolve, with the configured and the administrators' blocks.
    progress("resolving identities");
    let blocked: HashSet<String> = config
        .blocked_values
        .iter()
        .map(|v| v.trim().to_lowercase())
        .collect();
    let admin = blocks::load(lake).await?;
    let ident = |n: &Node| {
        (
            config.types[n.id_type as usize].name.clone(),
            n.value.to_string(),
        )
    };
    let resolving = std::time::Instant::now();
    let resolution = graph.resolve(
        |node| {
            is_blocked(&blocked, &node.value)
                || (!admin.values.is_empty() && admin.values.contains(&ident(node)))
        },
        |a, b| !admin.links.is_empty() && admin.link_blocked(ident(a), ident(b)),
        config.max_distinct_neighbours,
        &previous_ids,
    );
    report.resolve_ms = resolving.elapsed().as_millis() as u64;
    // What only the resolution needed, freed before the views are built.
    drop(previous_ids);
    graph.drop_index_and_links();
    report.union_find_ms = resolution.union_find_ms;
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
            Rejection::LimitExceeded { .. } | Rejection::BlockedLink { .. } => {
                report.refused_links += 1
            }
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

    // Links, rejections and merge history on this thread while another
    // builds and writes the profiles and the stored state.
    progress("writing identity links, profiles and the identity graph");
    let main_work = async {
        let links_dir = version_dir("identity_links", version, &run);
        {
            let schema = cdp::identity_links();
            let mut writer = ParquetFileWriter::create_with(
                lake,
                &links_dir.clone().join("part-0.parquet"),
                schema.clone(),
                bulk_properties(&["value"]),
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
                        Arc::new(profile_id_array(
                            chunk.iter().map(|&n| resolution.profile_of[n as usize]),
                        )),
                        utc_timestamps(chunk.iter().map(|&n| graph.nodes[n as usize].first_seen)),
                        utc_timestamps(chunk.iter().map(|&n| graph.nodes[n as usize].last_seen)),
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
                        Some(
                            if is_blocked(&blocked, value(*node)) {
                                "on the blocked_values list"
                            } else {
                                "blocked by an administrator"
                            }
                            .into(),
                        ),
                    ],
                    Rejection::BlockedLink { a, b } => [
                        Some("blocked_link".into()),
                        Some(type_name(*a).into()),
                        Some(value(*a).into()),
                        Some(type_name(*b).into()),
                        Some(value(*b).into()),
                        Some("link blocked by an administrator".into()),
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
            arrays.push(utc_timestamps(std::iter::repeat_n(now_micros, n)));
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
                    Arc::new(profile_id_array(m.iter().map(|e| Some(e.from_profile)))),
                    Arc::new(profile_id_array(m.iter().map(|e| Some(e.to_profile)))),
                    Arc::new(StringArray::from_iter_values(
                        m.iter().map(|e| type_name(e.cause)),
                    )),
                    Arc::new(StringArray::from_iter_values(
                        m.iter().map(|e| value(e.cause)),
                    )),
                    utc_timestamps(std::iter::repeat_n(now_micros, m.len())),
                ],
            )?;
            let name = format!("part-v{version:08}.parquet");
            write_file(lake, &merges_dir.clone().join(name.as_str()), schema, &[b]).await?;
        }
        tables.insert("profile_merges".to_string(), merges_dir.to_string());

        Ok::<(), Error>(())
    };
    let profiles_dir = version_dir("profiles", version, &run);
    let state_dir = version_dir(STATE_TABLE, version, &run);
    let profiles_work = async {
        let assembled = profiles::build(config, &graph, &resolution, &facts, now_micros)?;
        let mut writer = ParquetFileWriter::create_with(
            lake,
            &profiles_dir.clone().join("part-0.parquet"),
            assembled.schema(),
            bulk_properties(&["profile_id"]),
        )?;
        for batch in assembled.batches() {
            writer.write(&batch?).await?;
        }
        writer.finish().await.map(|_| ())
    };
    let state_work = state::save(lake, &state_dir, &graph, &facts);
    let (main_done, side_done) = alongside(
        main_work,
        vec![Box::pin(profiles_work), Box::pin(state_work)],
    )
    .await;
    main_done?;
    side_done.into_iter().collect::<Result<Vec<()>>>()?;
    tables.insert("profiles".to_string(), profiles_dir.to_string());
    tables.insert(STATE_TABLE.to_string(), state_dir.to_string());
    let mut raw_files = match (&reason, &previous) {
        (None, Some(m)) => m.raw_files.clone(),
        _ => BTreeMap::new(),
    };
    raw_files.extend(files.iter().map(|(p, f)| (p.clone(), f.meta.size)));

    // 7. Commit: one atomic switch of the manifest.
    Manifest {
        format: MANIFEST_FORMAT,
        version,
        committed_at: now.to_rfc3339(),
        tables,
        raw_files,
        identity_settings: Some(settings),
        views_format: VIEWS_FORMAT,
    }
    .commit(lake)
    .await?;
    progress("committed");
    collect_garbage(lake, version).await?;
    report.views_ms = phase.elapsed().as_millis() as u64;
    Ok(report)
}

/// The profile id each identifier of `graph` had in the committed
/// `cdp.identity_links` (in `folder`): the row groups read on two threads,
/// the type, value and profile id columns only.
async fn read_previous(
    lake: &Lake,
    folder: &Path,
    config: &IdentityConfig,
    graph: &Graph,
) -> Result<Previous> {
    let type_index: HashMap<&str, u16> = config
        .types
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i as u16))
        .collect();
    let files = lake.list(folder).await?;
    let read = async |part: usize, found: &mut Vec<(NodeId, Uuid)>| {
        for meta in &files {
            parquet::for_each_batch_part(lake, meta, Some(3), (part, 2), |b| {
                let (t, v, p) = (
                    b.column(0).as_string::<i32>(),
                    b.column(1).as_string::<i32>(),
                    b.column(2).as_string::<i32>(),
                );
                for row in 0..b.num_rows() {
                    if let Some(&ti) = type_index.get(t.value(row))
                        && let Some(node) = graph.find(ti, v.value(row))
                        && !p.is_null(row)
                    {
                        let id = Uuid::try_parse(p.value(row)).map_err(|e| {
                            Error::Config(format!(
                                "{}: profile id '{}' is not a UUID ({e})",
                                meta.location,
                                p.value(row)
                            ))
                        })?;
                        found.push((node, id));
                    }
                }
                Ok(())
            })
            .await?;
        }
        Ok(())
    };
    let (mut here, mut there) = (Vec::new(), Vec::new());
    let (done, other) = alongside(read(0, &mut here), vec![Box::pin(read(1, &mut there))]).await;
    done?;
    other.into_iter().collect::<Result<Vec<()>>>()?;
    let mut previous = Previous::new(graph.nodes.len());
    for (node, id) in here.into_iter().chain(there) {
        previous.set(node, id);
    }
    Ok(previous)
}

/// Work run on a thread of its own by [`alongside`].
type Side<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>>;

/// Run `main` here and each of `sides` on a thread of its own, all to
/// completion (one after the other on a single-threaded runtime).
async fn alongside<A: std::future::Future>(
    main: A,
    sides: Vec<Side<'_>>,
) -> (A::Output, Vec<Result<()>>) {
    let handle = tokio::runtime::Handle::current();
    if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        let a = main.await;
        let mut done = Vec::new();
        for side in sides {
            done.push(side.await);
        }
        return (a, done);
    }
    tokio::task::block_in_place(|| {
        std::thread::scope(|scope| {
            let threads: Vec<_> = sides
                .into_iter()
                .map(|side| scope.spawn(|| handle.block_on(side)))
                .collect();
            let a = handle.block_on(main);
            let done = threads
                .into_iter()
                .map(|t| {
                    t.join()
                        .unwrap_or_else(|_| Err(Error::Config("writing the views panicked".into())))
                })
                .collect();
            (a, done)
        })
    })
}

/// Delete the files of versions older than the one before `committed`
/// (queries still planned against that one keep working) and of runs that
/// died before committing.
async fn collect_garbage(lake: &Lake, committed: u64) -> Result<()> {
    for meta in lake.list(&Path::from("cdp")).await? {
        let relative = lake.relative(&meta.location);
        let version = relative.parts().find_map(|p| {
            p.as_ref()
                .strip_prefix("v=")
                .and_then(|v| v.split('-').next())
                .and_then(|v| v.parse::<u64>().ok())
        });
        if version.is_some_and(|v| v + 1 < committed) {
            lake.store()
                .delete(&meta.location)
                .await
                .map_err(|e| Error::store(format!("removing {}", meta.location), e))?;
        }
    }
    Ok(())
}

/// Whether `value` is on the (lower-cased) blocked list, ignoring case:
/// without allocating for the ASCII values of a length no entry has.
fn is_blocked(blocked: &HashSet<String>, value: &str) -> bool {
    if value.is_ascii() {
        blocked
            .iter()
            .any(|b| b.len() == value.len() && b.eq_ignore_ascii_case(value))
    } else {
        blocked.contains(&value.to_lowercase())
    }
}

fn batch(schema: &SchemaRef, columns: Vec<ArrayRef>) -> Result<RecordBatch> {
    RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| Error::arrow("building a view batch", e))
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
            utc_timestamps(std::iter::once(started.timestamp_micros())),
            utc_timestamps(std::iter::once(finished.timestamp_micros())),
            Arc::new(StringArray::from(vec![status])),
            Arc::new(StringArray::from(vec![error])),
            Arc::new(BooleanArray::from(vec![r.full])),
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
