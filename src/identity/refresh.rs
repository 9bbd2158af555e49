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
use super::changes::{self, Visibility};
use super::config::IdentityConfig;
use super::facts::Facts;
use super::graph::{
    Edge, Graph, NONE as NO_PROFILE, NodeId, Previous, Rejection, Resolution, TypeRule, Usable,
};
use super::interner::Interner;
use super::partial;
use super::profiles;
use super::scan::{RawFile, Scan};
use super::state::{self, STATE_TABLE};
use super::views;
use crate::error::{Error, Result};
use crate::lake::manifest::{
    Delta, MANIFEST_FORMAT, Manifest, VIEWS_FORMAT, removed_dir, version_dir,
};
use crate::lake::parquet;
use crate::lake::{Lake, delta, paths};
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
    /// Identifier values a rule turned into nothing (an email without `@`,
    /// a phone that does not parse), per source (`raw.<table>.<column>
    /// (<type>)`) and file. Recorded in `system.refreshes.refused_values`.
    pub refused_values: std::collections::BTreeMap<String, Refusals>,
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
    /// Whether only what changed was written (a delta layer of each view),
    /// and how many profiles it wrote.
    pub delta: bool,
    pub rewritten_profiles: usize,
}

/// Folder of `system.refreshes`.
pub(super) fn refreshes_dir() -> Path {
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
    let _one_at_a_time = RUNNING.lock().await;
    record_abandoned(lake).await?;
    let started = now;
    let marker = super::running::Marker::start(lake, started, mode == Mode::Full).await?;
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
            // What failed, never a value of the data it failed on.
            Some(crate::redact::values(&e.to_string())),
        ),
    };
    record(lake, &report, started, finished, status, error.as_deref()).await?;
    marker.finish(lake).await?;
    outcome
}

/// One refresh at a time in this process (a REFRESH from two clients, a
/// job asking for one): the second waits and then sees the first's commit,
/// instead of both building version n+1.
static RUNNING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Give every refresh whose process died before it finished its row in
/// `system.refreshes` (status `interrupted`); how many. `serve` calls it at
/// start.
pub async fn record_interrupted(lake: &Lake) -> Result<usize> {
    let _one_at_a_time = RUNNING.lock().await;
    record_abandoned(lake).await
}

async fn record_abandoned(lake: &Lake) -> Result<usize> {
    let now = Utc::now();
    let abandoned = super::running::abandoned_markers(lake, now).await?;
    for marker in &abandoned {
        let report = RefreshReport {
            full: marker.full,
            ..RefreshReport::default()
        };
        record(
            lake,
            &report,
            marker.started,
            now.max(marker.started),
            "interrupted",
            Some("the process stopped before the refresh committed; the previous version stayed in place"),
        )
        .await?;
        marker.clone().finish(lake).await?;
    }
    Ok(abandoned.len())
}

/// The identity settings that shape the stored state (the rest apply at
/// resolution and can change between incremental refreshes).
fn state_settings(config: &IdentityConfig) -> String {
    serde_json::json!({
        "state_format": state::FORMAT,
        "profile_ids": PROFILE_ID_SCHEME,
        "views_format": VIEWS_FORMAT,
        "default_country": config.default_country,
        "source_priority": config.source_priority,
        "types": config.types,
        "sources": config.sources,
    })
    .to_string()
}

/// The lake secret profile ids are derived with ([`graph::founding_id`]).
const PROFILE_ID_KEY: &str = "profile_ids";
/// How profile ids are made, recorded with the stored state. A lake whose
/// ids were made otherwise (UUID v5 of the identifier under a namespace
/// fixed in the source, before this release: anyone could recompute them)
/// is rebuilt once without its previous ids, so every profile gets a keyed
/// id; from then on ids are stable again.
const PROFILE_ID_SCHEME: &str = "hmac-sha256-v1";

/// Whether the profile ids stored with `m` are keyed ones worth keeping.
fn keyed_ids(m: &Manifest) -> bool {
    m.identity_settings
        .as_deref()
        .is_some_and(|s| s.contains(PROFILE_ID_SCHEME))
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
    if m.raw_versions.is_empty() && !m.raw_files.is_empty() && !files.is_empty() {
        return Some("the raw tables became Delta tables".into());
    }
    None
}

/// The raw files committed since the versions `m` folded (`Err`: why
/// everything must be read again instead).
async fn committed_since(
    lake: &Lake,
    m: &Manifest,
    tables: &[RawTable],
    versions: &BTreeMap<String, u64>,
    files: &BTreeMap<String, RawFile>,
) -> Result<std::result::Result<Vec<RawFile>, String>> {
    let changes = futures::future::try_join_all(tables.iter().map(|&table| {
        let since = m.raw_versions.get(table.name()).copied();
        let until = versions.get(table.name()).copied();
        async move {
            match until {
                Some(until) => {
                    let dir = paths::raw_table_dir(table);
                    delta::changes_since(lake, &dir, since, Some(until)).await
                }
                None => Ok(delta::Changes::default()),
            }
        }
    }))
    .await?;
    let mut new = Vec::new();
    for (table, changes) in tables.iter().zip(changes) {
        if changes.rows_removed {
            return Ok(Err(format!("rows were removed from raw.{table}")));
        }
        for added in changes.added {
            let path = lake.relative(&added).to_string();
            match files.get(&path) {
                Some(file) => new.push(file.clone()),
                // Added, then compacted into a file that is not "new":
                // its rows can only be found by reading everything.
                None => {
                    return Ok(Err(format!(
                        "raw.{table} was compacted before its new rows were read"
                    )));
                }
            }
        }
    }
    Ok(Ok(new))
}

/// What a refresh resolves: the graph and facts of everything read, the
/// previous profile ids, and (incremental) the committed version to
/// compare with.
struct Loaded {
    /// Shared with the task writing them ([`Loaded::saving`]), if any.
    graph: Arc<Graph>,
    facts: Arc<Facts>,
    previous: Previous,
    before: Option<Stored>,
    /// A full rebuild's identifiers, keys and links being written to the
    /// new state folder meanwhile ([`state::save_graph`]).
    saving: Option<Saving>,
}

/// A task writing part of the refresh state alongside the refresh; if the
/// refresh fails first, it is stopped where it can be (what it wrote is
/// garbage of a version never committed).
struct Saving(tokio::task::JoinHandle<Result<()>>);

impl Saving {
    /// Write `graph` and `facts` (layer 0) under `dir`: on a thread of its
    /// own where the runtime has several (a spawned task could wait behind
    /// the refresh on the spawning worker), or as a task.
    fn start(lake: &Lake, dir: &Path, graph: &Arc<Graph>, facts: &Arc<Facts>) -> Saving {
        let (lake, dir, graph, facts) = (lake.clone(), dir.clone(), graph.clone(), facts.clone());
        let work = async move {
            let layer = state::Layer {
                nodes_from: 0,
                keys_from: 0,
                edges: &graph.edges,
            };
            state::save_graph(&lake, &dir, &graph, &facts, layer).await
        };
        let handle = tokio::runtime::Handle::current();
        Saving(match handle.runtime_flavor() {
            tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::spawn_blocking(move || handle.block_on(work))
            }
            _ => tokio::spawn(work),
        })
    }

    async fn done(mut self) -> Result<()> {
        (&mut self.0)
            .await
            .map_err(|e| Error::Internal(format!("writing the refresh state stopped: {e}")))?
    }
}

impl Drop for Saving {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The committed version as an incremental refresh loaded it.
struct Stored {
    nodes: usize,
    keys: usize,
    layers: Vec<Path>,
    /// Links new since, or seen earlier than recorded.
    new_edges: Vec<Edge>,
}

/// The folders of the stored state: its base, then its layers.
fn state_layers(m: &Manifest) -> Vec<Path> {
    m.tables
        .get(STATE_TABLE)
        .map(|base| Path::from(base.as_str()))
        .into_iter()
        .chain(
            m.deltas_of(STATE_TABLE)
                .iter()
                .map(|d| Path::from(d.rows.as_str())),
        )
        .collect()
}

/// The `state_format` a manifest's stored state was written in.
fn stored_format(m: &Manifest) -> Option<u64> {
    let settings: serde_json::Value = serde_json::from_str(m.identity_settings.as_deref()?).ok()?;
    settings.get("state_format")?.as_u64()
}

/// One refresh, carried through its phases ([`run`]): list the inputs,
/// load them, resolve, write the new version's views, commit.
struct Refresh<'a> {
    lake: &'a Lake,
    config: &'a IdentityConfig,
    now: DateTime<Utc>,
    previous: Option<Manifest>,
    version: u64,
    /// Names this attempt's folders apart from an earlier attempt's.
    run: String,
    settings: String,
    /// Each identity table's Delta version as listed.
    raw_versions: BTreeMap<String, u64>,
    report: RefreshReport,
}

/// The raw files a refresh reads.
struct Inputs {
    /// Every file of the identity tables, by path.
    files: BTreeMap<String, RawFile>,
    /// Why every file is read; `None`: only `new_files`.
    reason: Option<String>,
    new_files: Vec<RawFile>,
}

/// What resolution decided, for the writes.
struct Resolved {
    resolution: Resolution,
    /// Only what changed, when a delta layer of each view is written.
    changes: Option<changes::Changes>,
    /// The stored cells read while a part was resolved again.
    prefetched: Option<Vec<(usize, RecordBatch)>>,
    /// The configured blocked values (lower-cased), and sorted.
    blocked: HashSet<String>,
    blocked_values: Vec<String>,
    cutoff: i64,
}

/// The folders the new version's tables are written to.
struct Folders {
    links: Path,
    profiles: Path,
    state: Path,
    rejections: Path,
    merges: Path,
    removed_links: Path,
    removed_profiles: Path,
}

async fn run(
    lake: &Lake,
    config: &IdentityConfig,
    mode: Mode,
    now: DateTime<Utc>,
    progress: &mut impl FnMut(&str),
) -> Result<RefreshReport> {
    let started = std::time::Instant::now();
    let previous = Manifest::load(lake).await?;
    let mut refresh = Refresh {
        lake,
        config,
        now,
        version: previous.as_ref().map_or(1, |m| m.version + 1),
        run: Uuid::new_v4().simple().to_string()[..8].to_string(),
        settings: state_settings(config),
        previous,
        raw_versions: BTreeMap::new(),
        report: RefreshReport::default(),
    };
    // 1. Which raw files to read: all, or those landed since the last commit.
    let inputs = refresh.list_inputs(mode).await?;
    let Loaded {
        graph,
        facts,
        previous: previous_ids,
        before,
        saving,
    } = refresh.load(inputs, progress).await?;
    refresh.report.identifiers = graph.len();
    refresh.report.links = graph.edges.len();
    // 2. Resolve, with the configured and the administrators' blocks.
    let resolved = refresh
        .resolve(&graph, &facts, previous_ids, before.as_ref(), progress)
        .await?;
    refresh.report.graph_ms = started.elapsed().as_millis() as u64;
    let writing = std::time::Instant::now();
    // 3. and 4. Plan and write the new version's views.
    let manifest = refresh
        .write(&graph, facts, before.as_ref(), saving, resolved, progress)
        .await?;
    // 5. Commit: one atomic switch of the manifest.
    manifest.commit(lake).await?;
    progress("committed");
    collect_garbage(lake, manifest.folders(), manifest.version).await?;
    refresh.report.views_ms = writing.elapsed().as_millis() as u64;
    Ok(refresh.report)
}

impl Refresh<'_> {
    /// List the identity tables' files; decide whether every one is read
    /// (and why) or only those committed since the last refresh.
    async fn list_inputs(&mut self, mode: Mode) -> Result<Inputs> {
        let lake = self.lake;
        let probe = Scan::new(self.config, Interner::default(), Facts::default())?;
        // The tables listed together: on a local disk whose metadata the
        // kernel no longer caches (after a full refresh, say), each listing
        // mostly waits on the disk, for a second or more at scale 1,000.
        let tables: Vec<RawTable> = lake
            .raw_tables()
            .into_iter()
            .filter(|&t| probe.reads(t))
            .collect();
        let listed =
            futures::future::try_join_all(tables.iter().map(|&table| async move {
                delta::files(lake, &paths::raw_table_dir(table)).await
            }))
            .await?;
        let mut files: BTreeMap<String, RawFile> = BTreeMap::new();
        for (&table, listed) in tables.iter().zip(listed) {
            if let Some(version) = listed.version {
                self.raw_versions.insert(table.name().to_string(), version);
            }
            for file in listed.files {
                let path = lake.relative(&file.meta.location).to_string();
                files.insert(
                    path,
                    RawFile {
                        table,
                        meta: file.meta,
                    },
                );
            }
        }
        let mut reason = match mode {
            Mode::Full => Some("requested".to_string()),
            Mode::Incremental => {
                full_rebuild_reason(self.previous.as_ref(), &self.settings, &files)
            }
        };
        let mut new_files = Vec::new();
        if let (None, Some(m)) = (&reason, &self.previous) {
            match committed_since(lake, m, &tables, &self.raw_versions, &files).await? {
                Ok(new) => new_files = new,
                Err(why) => reason = Some(why),
            }
        }
        self.report = RefreshReport {
            version: self.version,
            full: reason.is_some(),
            full_reason: reason.clone(),
            ..RefreshReport::default()
        };
        Ok(Inputs {
            files,
            reason,
            new_files,
        })
    }

    /// Read the inputs: the new files on top of the stored state, or every
    /// file into a new state.
    async fn load(&mut self, inputs: Inputs, progress: &mut impl FnMut(&str)) -> Result<Loaded> {
        let (lake, config) = (self.lake, self.config);
        match (&inputs.reason, &self.previous) {
            (None, Some(m)) => {
                load_incremental(
                    lake,
                    config,
                    m,
                    inputs.new_files,
                    progress,
                    &mut self.report,
                )
                .await
            }
            _ => {
                progress(&format!(
                    "rebuilding from all raw data ({})",
                    inputs.reason.as_deref().unwrap_or("full")
                ));
                let all = inputs.files.into_values().collect();
                let state_dir = version_dir(STATE_TABLE, self.version, &self.run);
                let previous = self.previous.as_ref();
                load_full(
                    lake,
                    config,
                    previous,
                    all,
                    &state_dir,
                    progress,
                    &mut self.report,
                )
                .await
            }
        }
    }

    /// Resolve the graph, with the configured and the administrators'
    /// blocks: again only what the new rows can change when a delta layer
    /// is written, else everything; and find what changed.
    async fn resolve(
        &mut self,
        graph: &Graph,
        facts: &Facts,
        previous_ids: Previous,
        before: Option<&Stored>,
        progress: &mut impl FnMut(&str),
    ) -> Result<Resolved> {
        let (lake, config) = (self.lake, self.config);
        let previous = self.previous.as_ref();
        // Shared with a partial resolution: the identifiers outside its
        // part kept these ids.
        let previous_ids = Arc::new(previous_ids);
        progress("resolving identities");
        let blocked: HashSet<String> = config
            .blocked_values
            .iter()
            .map(|v| v.trim().to_lowercase())
            .collect();
        let admin = blocks::load(lake).await?;
        let resolving = std::time::Instant::now();
        let mut blocked_values: Vec<String> = blocked.iter().cloned().collect();
        blocked_values.sort_unstable();
        let stored = (before, previous, &*previous_ids);
        let usable = usable_links(config, graph, &admin, &blocked, &blocked_values, stored);
        // An incremental refresh that writes a delta resolves again only
        // what the new rows can change; a compaction, or a cut-off moved
        // back (idle profiles could come back into view), resolves
        // everything.
        let cutoff = profiles::anonymous_cutoff(config, self.now.timestamp_micros());
        let layer_room =
            |m: &Manifest| m.deltas_of("profiles").len() < config.max_delta_layers as usize;
        let writes_delta =
            |m: &Manifest| layer_room(m) && m.anonymous_cutoff.is_none_or(|c| c <= cutoff);
        let part = match (before, previous) {
            (Some(b), Some(m)) if writes_delta(m) => {
                let seeds = (b.keys..facts.len()).flat_map(|k| facts.key_nodes(k).iter().copied());
                partial::touched_part(graph, &usable, &previous_ids, b.nodes, seeds)
            }
            _ => None,
        };
        // What to write: only what changed (a delta layer of each view),
        // or everything (a full refresh, a compaction).
        let visibility = Visibility::new(config, cutoff);
        let compared = |resolution: &Resolution, touching: Option<&[bool]>| match (before, previous)
        {
            (Some(b), Some(m)) if layer_room(m) => {
                let changes = changes::compare(
                    graph,
                    facts,
                    resolution,
                    &changes::Before {
                        nodes: b.nodes,
                        keys: b.keys,
                        cutoff: m.anonymous_cutoff.unwrap_or(cutoff),
                        previous: &previous_ids,
                        touching,
                    },
                    visibility,
                );
                let share = changes.rewritten() as f64 / resolution.profiles.max(1) as f64;
                (share <= config.max_delta_share).then_some(changes)
            }
            _ => None,
        };
        let report = &mut self.report;
        let (mut resolution, changes, prefetched) = match (part, before) {
            (Some(scope), Some(b)) => {
                progress(&format!(
                    "resolving again the {} of {} identifiers the new data can change",
                    scope.nodes.len(),
                    graph.len()
                ));
                // The stored cells of the keys touching the part (those of
                // the changed profiles among them) are read meanwhile.
                let touching = scope.touching_keys(facts, b.keys);
                let reading = async {
                    let keep = |k: u32| touching.get(k as usize).copied().unwrap_or(false);
                    state::read_cells(lake, &b.layers, facts.len(), keep).await
                };
                let working = async {
                    let resolution = partial::resolve_within(graph, &usable, &previous_ids, scope);
                    report.resolve_ms = resolving.elapsed().as_millis() as u64;
                    let changes = compared(&resolution, Some(&touching));
                    Ok::<_, Error>((resolution, changes))
                };
                let ((resolution, changes), kept) = both(working, reading).await?;
                (resolution, changes, Some(kept))
            }
            _ => {
                let resolution = graph.resolve_allowed(&usable, &previous_ids);
                report.resolve_ms = resolving.elapsed().as_millis() as u64;
                let changes = compared(&resolution, None);
                (resolution, changes, None)
            }
        };
        if changes.is_none() && resolution.scope().is_some() {
            // Too much changed for a delta: whole views need every profile.
            progress("resolving every identity (too much changed for a delta)");
            resolution = graph.resolve_allowed(&usable, &previous_ids);
        }
        count(report, &resolution);
        Ok(Resolved {
            resolution,
            changes,
            prefetched,
            blocked,
            blocked_values,
            cutoff,
        })
    }

    /// Where the new version's tables go.
    fn folders(&self) -> Folders {
        let dir = |table: &str| version_dir(table, self.version, &self.run);
        let removed = |table: &str| removed_dir(table, self.version, &self.run);
        Folders {
            links: dir("identity_links"),
            profiles: dir("profiles"),
            state: dir(STATE_TABLE),
            rejections: dir("identity_rejections"),
            merges: dir("profile_merges"),
            removed_links: removed("identity_links"),
            removed_profiles: removed("profiles"),
        }
    }

    /// The new version's manifest, before its tables are named.
    fn manifest(&mut self, cutoff: i64, blocked_values: Vec<String>) -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            version: self.version,
            committed_at: self.now.to_rfc3339(),
            tables: BTreeMap::new(),
            raw_files: BTreeMap::new(),
            raw_versions: std::mem::take(&mut self.raw_versions),
            identity_settings: Some(self.settings.clone()),
            views_format: VIEWS_FORMAT,
            deltas: BTreeMap::new(),
            anonymous_cutoff: Some(cutoff),
            blocked_values: Some(blocked_values),
        }
    }

    /// Write the new version's views and state — only what changed (a
    /// delta layer of each), or everything — and return the manifest that
    /// commits them.
    async fn write(
        &mut self,
        graph: &Graph,
        mut facts: Arc<Facts>,
        before: Option<&Stored>,
        saving: Option<Saving>,
        resolved: Resolved,
        progress: &mut impl FnMut(&str),
    ) -> Result<Manifest> {
        let (lake, config, version) = (self.lake, self.config, self.version);
        let now_micros = self.now.timestamp_micros();
        let Resolved {
            resolution,
            changes,
            prefetched,
            blocked,
            blocked_values,
            cutoff,
        } = resolved;
        let sources = views::Sources {
            lake,
            config,
            graph,
            resolution: &resolution,
            blocked: &blocked,
            now_micros,
        };
        let folders = self.folders();
        let mut manifest = self.manifest(cutoff, blocked_values);
        let previous = self.previous.as_ref();
        let old_merges = previous
            .and_then(|m| m.tables.get("profile_merges"))
            .map(String::as_str);
        // Only what changed (a delta layer), or everything.
        let delta = match (&changes, before, previous) {
            (Some(c), Some(b), Some(m)) => Some((c, b, m)),
            _ => None,
        };
        self.report.delta = delta.is_some();
        self.report.rewritten_profiles = changes
            .as_ref()
            .map_or(resolution.profiles, |c| c.rewritten());
        if before.is_some() {
            progress("reading the stored facts of the changed profiles");
        }
        let Writes {
            linked,
            select,
            layer,
            assignment,
        } = writes(graph, &resolution, delta, progress);
        let main_work = async {
            views::links(&sources, &linked, &folders.links).await?;
            if let Some((c, _, _)) = delta {
                views::removed_links(&sources, &c.unlinked, &folders.removed_links).await?;
            }
            views::rejections(&sources, &folders.rejections).await?;
            views::merges(&sources, old_merges, version, &folders.merges).await
        };
        // The profiles and the state need the facts, topped up first (after
        // an incremental refresh) with the stored cells of the keys whose
        // profiles are written (all of them for whole views): that runs
        // while the links are written, and while the profiles written again
        // are sorted and their keys gathered.
        let facts_work = async {
            let plan = |keys| profiles::plan(config, graph, &resolution, now_micros, keys);
            let planned = match (before, select) {
                (None, _) => plan(profiles::Keys::All(&facts))?,
                (Some(b), Some(select)) => {
                    let facts = only_owner(&mut facts)?;
                    let top_up = top_up(lake, b, facts, changes.as_ref(), prefetched);
                    let selected = async { plan(profiles::Keys::Selected(select)) };
                    both(selected, top_up).await?.0
                }
                (Some(b), None) => {
                    let owned = only_owner(&mut facts)?;
                    top_up(lake, b, owned, changes.as_ref(), prefetched).await?;
                    plan(profiles::Keys::All(&facts))?
                }
            };
            let facts: &Facts = &facts;
            let profiles_work = async {
                views::profiles(&sources, planned.with(facts), &folders.profiles).await?;
                match delta {
                    Some((c, _, _)) => {
                        views::removed_profiles(
                            lake,
                            &c.removed_profiles,
                            &folders.removed_profiles,
                        )
                        .await
                    }
                    None => Ok(()),
                }
            };
            let state_work = async {
                match saving {
                    Some(saving) => {
                        state::save_assignment(lake, &folders.state, &assignment).await?;
                        saving.done().await
                    }
                    None => {
                        state::save(lake, &folders.state, graph, facts, layer, &assignment).await
                    }
                }
            };
            both(profiles_work, state_work).await.map(|_| ())
        };
        let early_garbage = collect_unused(lake, previous, version);
        let (main_done, side_done) = alongside(
            main_work,
            vec![Box::pin(facts_work), Box::pin(early_garbage)],
        )
        .await;
        main_done?;
        side_done.into_iter().collect::<Result<Vec<()>>>()?;
        record_tables(&mut manifest, delta.map(|(_, _, m)| m), &folders);
        Ok(manifest)
    }
}

/// Which identifiers and links resolution may use: not those on the
/// configured blocked list (under the list of the last commit, identifiers
/// that had a profile are not on it: only the others, and new ones, are
/// compared with it), nor those the administrators blocked, nor a link past
/// the neighbour limit.
fn usable_links(
    config: &IdentityConfig,
    graph: &Graph,
    admin: &blocks::Blocks,
    blocked: &HashSet<String>,
    blocked_values: &[String],
    (before, previous, previous_ids): (Option<&Stored>, Option<&Manifest>, &Previous),
) -> Usable {
    let ident = |n: NodeId| {
        (
            config.types[graph.id_type(n) as usize].name.clone(),
            graph.value(n).to_string(),
        )
    };
    let on_blocked_list = blocked_list_test(blocked);
    let had_profile: &[u32] = match (before, previous) {
        (Some(b), Some(m)) if m.blocked_values.as_deref() == Some(blocked_values) => {
            let numbers = previous_ids.numbers();
            &numbers[..b.nodes.min(numbers.len())]
        }
        _ => &[],
    };
    graph.usable(
        |node| {
            let listed = || {
                had_profile
                    .get(node as usize)
                    .is_none_or(|&p| p == NO_PROFILE)
                    && on_blocked_list(graph.value(node))
            };
            listed() || (!admin.values.is_empty() && admin.values.contains(&ident(node)))
        },
        |a, b| !admin.links.is_empty() && admin.link_blocked(ident(a), ident(b)),
        config.max_distinct_neighbours,
    )
}

/// What [`Refresh::write`] writes of the graph: the linked identifiers,
/// the profiles (all, or a selection), the state's layer and each
/// identifier's profile.
struct Writes<'a> {
    linked: std::borrow::Cow<'a, [NodeId]>,
    select: Option<profiles::Selection<'a>>,
    layer: state::Layer<'a>,
    assignment: state::Assignment,
}

/// Only what changed (`delta`: the changes, the stored state and the last
/// manifest), or everything.
fn writes<'a>(
    graph: &'a Graph,
    resolution: &Resolution,
    delta: Option<(&'a changes::Changes, &'a Stored, &Manifest)>,
    progress: &mut impl FnMut(&str),
) -> Writes<'a> {
    match delta {
        Some((c, b, _)) => {
            progress(&format!(
                "writing what changed: {} identifiers, {} profiles",
                c.links.len(),
                c.rewritten()
            ));
            Writes {
                linked: std::borrow::Cow::Borrowed(&c.links),
                select: Some(profiles::Selection {
                    profiles: &c.rewrite,
                    owners: &c.owners,
                }),
                layer: state::Layer {
                    nodes_from: b.nodes,
                    keys_from: b.keys,
                    edges: &b.new_edges,
                },
                assignment: state::Assignment::of_pairs(&c.assignment),
            }
        }
        None => {
            progress("writing identity links, profiles and the identity graph");
            Writes {
                linked: (0..graph.len() as NodeId)
                    .filter(|&n| resolution.profile(n).is_some())
                    .collect(),
                select: None,
                layer: state::Layer {
                    nodes_from: 0,
                    keys_from: 0,
                    edges: &graph.edges,
                },
                assignment: state::Assignment::of_profiles(graph.len(), resolution.components()),
            }
        }
    }
}

/// Delete the old versions the last commit does not use. Deleting files
/// is mostly waiting on the disk (a second for a whole version on this VM)
/// and the last commit stays readable whatever happens next, so this runs
/// while a refresh writes; what the new version stops using goes after its
/// commit.
async fn collect_unused(lake: &Lake, previous: Option<&Manifest>, version: u64) -> Result<()> {
    if let Some(m) = previous {
        // An error here is met again, and reported, after the commit.
        let _ = collect_garbage(lake, m.folders(), version).await;
    }
    Ok(())
}

/// The resolution's counts, into the report.
fn count(report: &mut RefreshReport, resolution: &Resolution) {
    report.union_find_ms = resolution.union_find_ms;
    report.profiles = resolution.profiles;
    report.new_profiles = resolution.new_profiles;
    let kinds = |kind: &str| resolution.merges.iter().filter(|m| m.kind == kind).count();
    report.merges = kinds("merge");
    report.splits = kinds("split");
    for r in &resolution.rejections {
        match r {
            Rejection::LimitExceeded { .. } | Rejection::BlockedLink { .. } => {
                report.refused_links += 1
            }
            _ => report.blocked_values += 1,
        }
    }
}

/// Name the written folders in `manifest`: as a delta layer on top of
/// `delta_of`'s tables, or as whole tables.
fn record_tables(manifest: &mut Manifest, delta_of: Option<&Manifest>, folders: &Folders) {
    match delta_of {
        Some(m) => {
            manifest.tables = m.tables.clone();
            manifest.deltas = m.deltas.clone();
            for (table, rows, removed) in [
                (
                    "identity_links",
                    &folders.links,
                    Some(&folders.removed_links),
                ),
                (
                    "profiles",
                    &folders.profiles,
                    Some(&folders.removed_profiles),
                ),
                (STATE_TABLE, &folders.state, None),
            ] {
                manifest
                    .deltas
                    .entry(table.to_string())
                    .or_default()
                    .push(Delta {
                        rows: rows.to_string(),
                        removed: removed.map(|r| r.to_string()),
                    });
            }
        }
        None => {
            for (table, dir) in [
                ("identity_links", &folders.links),
                ("profiles", &folders.profiles),
                (STATE_TABLE, &folders.state),
            ] {
                manifest.tables.insert(table.into(), dir.to_string());
            }
        }
    }
    manifest
        .tables
        .insert("identity_rejections".into(), folders.rejections.to_string());
    manifest
        .tables
        .insert("profile_merges".into(), folders.merges.to_string());
}

/// The resolution's rules of each configured identifier type.
fn type_rules(config: &IdentityConfig) -> Vec<TypeRule> {
    let rule = |t: &super::config::IdentifierType| TypeRule {
        name: t.name.clone(),
        priority: t.priority,
        max_per_profile: t.max_per_profile,
    };
    config.types.iter().map(rule).collect()
}

/// Read every raw file into a new graph; the previous ids come from the
/// stored state (or, from an older layout, the committed links).
async fn load_full(
    lake: &Lake,
    config: &IdentityConfig,
    previous: Option<&Manifest>,
    files: Vec<RawFile>,
    state_dir: &Path,
    progress: &mut impl FnMut(&str),
    report: &mut RefreshReport,
) -> Result<Loaded> {
    let (nodes, mut facts) = scan(lake, config, files, progress, report).await?;
    // Keys are looked up only while reading: free their index now.
    facts.drop_key_index();
    let mut graph = Graph::new(type_rules(config), nodes);
    graph.id_key = lake.secret(PROFILE_ID_KEY).await?;
    // Node times and links come from the keys, on a thread of their own
    // while the previous ids are looked up by value.
    let derive = async { Ok(facts.derive_graph(graph.len())) };
    let reading = async {
        match previous {
            Some(m) if !keyed_ids(m) => {
                progress("giving every profile a keyed id (once, for this lake)");
                Ok(Previous::new(graph.len()))
            }
            Some(m) if stored_format(m) == Some(u64::from(state::FORMAT)) => {
                progress("reading the previous profile ids");
                state::previous(lake, &state_layers(m), &graph.types, &graph).await
            }
            Some(m) if m.deltas.is_empty() && m.tables.contains_key("identity_links") => {
                progress("reading the previous identity links");
                let folder = Path::from(m.tables["identity_links"].as_str());
                read_previous(lake, &folder, config, &graph).await
            }
            _ => Ok(Previous::new(graph.len())),
        }
    };
    let (previous_ids, derived) = both(reading, derive).await?;
    (graph.first_seen, graph.last_seen, graph.edges) =
        (derived.first_seen, derived.last_seen, derived.edges);
    // Identifiers are looked up by value only to find the previous ids.
    graph.nodes.drop_index();
    // The identifiers, keys and links are final: they are written to the
    // state while the resolution runs (they do not depend on it).
    let (graph, facts) = (Arc::new(graph), Arc::new(facts));
    let saving = Saving::start(lake, state_dir, &graph, &facts);
    Ok(Loaded {
        graph,
        facts,
        previous: previous_ids,
        before: None,
        saving: Some(saving),
    })
}

/// Read `files` into a new graph's identifiers and facts, counting them in
/// `report`.
async fn scan(
    lake: &Lake,
    config: &IdentityConfig,
    files: Vec<RawFile>,
    progress: &mut impl FnMut(&str),
    report: &mut RefreshReport,
) -> Result<(Interner, Facts)> {
    let mut scan = Scan::new(config, Interner::new(), Facts::new())?;
    scan.read(lake, files, progress).await?;
    report.raw_files = scan.files;
    report.raw_rows = scan.rows;
    let name = |source: &super::config::IdentifierSource| {
        let path = source
            .json_path
            .as_ref()
            .map(|p| format!(".{p}"))
            .unwrap_or_default();
        format!(
            "raw.{}.{}{path} ({})",
            source.table, source.column, source.id_type
        )
    };
    for (file, counts) in &scan.refused_in {
        for (source, &count) in config.sources.iter().zip(counts) {
            if count > 0 {
                let refusals = report.refused_values.entry(name(source)).or_default();
                refusals.total += count;
                *refusals.files.entry(file.clone()).or_default() += count;
            }
        }
    }
    Ok((scan.nodes, scan.facts))
}

/// Read the raw files landed since the last commit, and the stored state
/// they top up.
async fn load_incremental(
    lake: &Lake,
    config: &IdentityConfig,
    m: &Manifest,
    files: Vec<RawFile>,
    progress: &mut impl FnMut(&str),
    report: &mut RefreshReport,
) -> Result<Loaded> {
    let (new_nodes, mut new_facts) = scan(lake, config, files, progress, report).await?;
    progress("loading the stored identity graph");
    let layers = state_layers(m);
    let new_keys = (new_facts.len(), new_facts.key_node_count());
    let types = type_rules(config);
    let (stored, found) = state::load(lake, &layers, &types, &new_nodes, new_keys).await?;
    let state::Stored {
        mut nodes,
        mut facts,
        edges,
        mut previous,
        mut first_seen,
        mut last_seen,
    } = stored;
    let (old_nodes, old_keys) = (nodes.len(), facts.len());
    // The new files' identifiers: those already stored keep their number,
    // the others are appended; their keys go after the stored ones.
    let map: Vec<NodeId> = (0..new_nodes.len() as NodeId)
        .map(|l| {
            found[l as usize].unwrap_or_else(|| nodes.push(new_nodes.kind(l), new_nodes.get(l)))
        })
        .collect();
    drop(new_nodes);
    facts.append(&mut new_facts, &map);
    drop(new_facts);
    first_seen.resize(nodes.len(), i64::MAX);
    last_seen.resize(nodes.len(), i64::MIN);
    facts.fold_node_times(old_keys, &mut first_seen, &mut last_seen);
    previous.extend_to(nodes.len());
    let mut merged = edges;
    let new_edges = state::merge_edges_into(&mut merged, &facts.links(old_keys));
    let graph = Graph {
        types,
        nodes,
        first_seen,
        last_seen,
        edges: merged,
        id_key: lake.secret(PROFILE_ID_KEY).await?,
    };
    Ok(Loaded {
        graph: Arc::new(graph),
        facts: Arc::new(facts),
        previous,
        saving: None,
        before: Some(Stored {
            nodes: old_nodes,
            keys: old_keys,
            layers,
            new_edges,
        }),
    })
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
    let mut previous = Previous::new(graph.len());
    for (node, id) in here.into_iter().chain(there) {
        previous.set(node, id);
    }
    Ok(previous)
}

/// The facts to top up, which nothing else may hold meanwhile.
fn only_owner(facts: &mut Arc<Facts>) -> Result<&mut Facts> {
    Arc::get_mut(facts)
        .ok_or_else(|| Error::Internal("the stored facts are being written while topped up".into()))
}

/// Top up the stored `facts` with the cells of the keys whose profiles are
/// written: those of `changes`, from the batches `prefetched` for them if
/// any, or every key's (whole views).
async fn top_up(
    lake: &Lake,
    before: &Stored,
    facts: &mut Facts,
    changes: Option<&changes::Changes>,
    prefetched: Option<Vec<(usize, RecordBatch)>>,
) -> Result<()> {
    match (changes, prefetched) {
        (Some(c), Some(kept)) => state::fold_cells(&before.layers, &kept, facts, &c.wanted_keys),
        _ => {
            let wanted = match changes {
                Some(c) => c.wanted_keys.clone(),
                None => vec![true; before.keys],
            };
            state::load_cells(lake, &before.layers, facts, &wanted).await
        }
    }
}

/// Run `a` here and `b` on a thread of its own, both to completion; the
/// first error of either.
pub(super) async fn both<A, B, E>(
    a: impl std::future::Future<Output = std::result::Result<A, E>>,
    b: impl std::future::Future<Output = std::result::Result<B, E>> + Send,
) -> std::result::Result<(A, B), E>
where
    B: Send,
    E: Send + From<Error>,
{
    let mut other = None;
    let (here, _) = alongside(
        a,
        vec![Box::pin(async {
            other = Some(b.await);
            Ok(())
        })],
    )
    .await;
    let there = other.ok_or_else(|| E::from(Error::Internal("a state reader stopped".into())))?;
    Ok((here?, there?))
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
                    t.join().unwrap_or_else(|_| {
                        Err(Error::Internal("writing the views panicked".into()))
                    })
                })
                .collect();
            (a, done)
        })
    })
}

/// Delete the files under `cdp/` outside the `live` folders (those of a
/// committed manifest), but for those of the version before `version`
/// (queries still planned against that one keep working) and later ones
/// (the runs of this version).
async fn collect_garbage<'a>(
    lake: &Lake,
    live: impl Iterator<Item = &'a str>,
    version: u64,
) -> Result<()> {
    remove_outside(lake, live, |v| v.is_none_or(|v| v + 1 >= version))
        .await
        .map(|_| ())
}

/// Delete every file under `cdp/` but the committed version's (views and
/// refresh state), queries still planned on an older version included:
/// after an erasure no older version may keep the rows it removed. How
/// many files went.
pub async fn remove_old_versions(lake: &Lake) -> Result<usize> {
    let Some(manifest) = Manifest::load(lake).await? else {
        return Ok(0);
    };
    remove_outside(lake, manifest.folders(), |v| v.is_none()).await
}

/// Delete the files under `cdp/` outside the `live` folders whose version
/// (`None`: not in a version folder, like the manifest) `keep` refuses.
async fn remove_outside<'a>(
    lake: &Lake,
    live: impl Iterator<Item = &'a str>,
    keep: impl Fn(Option<u64>) -> bool,
) -> Result<usize> {
    let live: Vec<String> = live.map(|f| format!("{f}/")).collect();
    let mut removed = 0;
    for meta in lake.list(&Path::from("cdp")).await? {
        let relative = lake.relative(&meta.location);
        let path = relative.as_ref();
        if live.iter().any(|f| path.starts_with(f.as_str())) {
            continue;
        }
        let relative_version = relative.parts().find_map(|p| {
            p.as_ref()
                .strip_prefix("v=")
                .and_then(|v| v.split('-').next())
                .and_then(|v| v.parse::<u64>().ok())
        });
        if !keep(relative_version) {
            lake.store()
                .delete(&meta.location)
                .await
                .map_err(|e| Error::store(format!("removing {}", meta.location), e))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// [`is_blocked`] for every identifier of a graph: an ASCII value of a
/// length no entry has (most of them) is not compared at all.
fn blocked_list_test(blocked: &HashSet<String>) -> impl Fn(&str) -> bool + '_ {
    // Bit `l` for entries of `l` bytes; bit 63 for every longer one.
    let lengths = blocked
        .iter()
        .fold(0u64, |mask, b| mask | 1 << b.len().min(63));
    move |value: &str| {
        let possible = !value.is_ascii() || lengths & (1 << value.len().min(63)) != 0;
        possible && is_blocked(blocked, value)
    }
}

/// Whether `value` is on the (lower-cased) blocked list, ignoring case:
/// without allocating for the ASCII values of a length no entry has.
pub(super) fn is_blocked(blocked: &HashSet<String>, value: &str) -> bool {
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

/// The values one identifier source's rule refused in a refresh: how
/// many, and how many in each raw file (its path in the lake).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Refusals {
    pub total: u64,
    pub files: std::collections::BTreeMap<String, u64>,
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
            Arc::new(StringArray::from(vec![
                (!r.refused_values.is_empty())
                    .then(|| serde_json::to_string(&r.refused_values).unwrap_or_default()),
            ])),
        ],
    )?;
    delta::append_record(lake, &refreshes_dir(), b, "refresh", None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_assignment_names_each_identifier_in_node_order_and_each_id_once() {
        let mut g = super::super::graph::tests::graph();
        for (a, b) in [
            ("c1", "u1"),
            ("c2", "u1"),
            ("c3", "u2"),
            ("c4", "test@test.com"),
        ] {
            let (a, b) = (g.observe(0, a, 1), g.observe(2, b, 1));
            g.link(a, b, 1);
        }
        g.settle_edges();
        let previous = Previous::new(g.len());
        let resolution = g.resolve(
            |n| g.value(n) == "test@test.com",
            |_, _| false,
            3,
            &previous,
        );
        let assignment = state::Assignment::of_profiles(g.len(), resolution.components());
        let nodes: Vec<NodeId> = assignment.nodes.iter().map(|a| a.0).collect();
        assert_eq!(nodes, (0..g.len() as NodeId).collect::<Vec<_>>());
        for &(n, number) in &assignment.nodes {
            let id = assignment.ids.get(number as usize).copied();
            assert_eq!(id, resolution.profile(n), "node {n}");
        }
        let mut distinct = assignment.ids.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), assignment.ids.len(), "{assignment:?}");
        assert_eq!(assignment.ids.len(), resolution.profiles);
        let email = g.find(2, "test@test.com").expect("observed");
        assert!(
            assignment.nodes[email as usize].1 == u32::MAX,
            "the blocked email is in no profile"
        );
        // The same from identifiers and ids, in any order.
        let mut pairs: Vec<(NodeId, Option<Uuid>)> = (0..g.len() as NodeId)
            .map(|n| (n, resolution.profile(n)))
            .collect();
        pairs.reverse();
        let again = state::Assignment::of_pairs(&pairs);
        assert_eq!(again.nodes.len(), assignment.nodes.len());
        for (a, b) in again.nodes.iter().zip(&assignment.nodes) {
            assert_eq!(a.0, b.0);
            let id = |x: &state::Assignment, p: u32| x.ids.get(p as usize).copied();
            assert_eq!(id(&again, a.1), id(&assignment, b.1), "node {}", a.0);
        }
    }

    #[test]
    fn the_blocked_list_test_agrees_with_the_list() {
        let long = "x".repeat(70);
        let blocked: HashSet<String> = ["null", "test@test.com", "émile", long.as_str()]
            .iter()
            .map(|v| v.to_string())
            .collect();
        let test = blocked_list_test(&blocked);
        let other_long = "y".repeat(70);
        for (value, expected) in [
            ("NULL", true),
            ("nul", false),
            ("nulls", false),
            ("Test@Test.com", true),
            ("best@test.com", false),
            ("ÉMILE", true),
            ("émilie", false),
            (long.as_str(), true),
            (other_long.as_str(), false),
            ("", false),
        ] {
            assert_eq!(test(value), expected, "{value}");
            assert_eq!(is_blocked(&blocked, value), expected, "{value}");
        }
    }
}
