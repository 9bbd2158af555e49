//! Writing the `cdp` views of one refresh: `cdp.identity_links`,
//! `cdp.identity_rejections`, `cdp.profile_merges` and `cdp.profiles`,
//! whole (a base) or, after an incremental refresh, only the rows that
//! changed and the keys of the rows that went away (a delta layer).

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use uuid::Uuid;

use super::config::IdentityConfig;
use super::graph::{Graph, NodeId, Rejection, Resolution, profile_id_array};
use super::profiles;
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::lake::parquet::{
    ParquetFileWriter, bulk_properties, bulk_properties_repeated, write_file,
};
use crate::schema::{cdp, utc_timestamps};

/// Everything the writers read.
pub(super) struct Sources<'a> {
    pub lake: &'a Lake,
    pub config: &'a IdentityConfig,
    pub graph: &'a Graph,
    pub resolution: &'a Resolution,
    /// The configured blocked values (lower-cased).
    pub blocked: &'a HashSet<String>,
    pub now_micros: i64,
}

impl Sources<'_> {
    fn type_name(&self, n: NodeId) -> &str {
        &self.config.types[self.graph.id_type(n) as usize].name
    }

    /// The type and value columns of the identifiers `nodes`.
    fn identifiers(&self, nodes: impl Iterator<Item = NodeId> + Clone) -> [ArrayRef; 2] {
        [
            Arc::new(StringArray::from_iter_values(
                nodes.clone().map(|n| self.type_name(n)),
            )),
            Arc::new(StringArray::from_iter_values(
                nodes.map(|n| self.graph.value(n)),
            )),
        ]
    }
}

fn batch(schema: &SchemaRef, columns: Vec<ArrayRef>) -> Result<RecordBatch> {
    RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| Error::arrow("building a view batch", e))
}

/// The removed keys of a `cdp.identity_links` layer.
pub(super) fn removed_links_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id_type", DataType::Utf8, false),
        Field::new("id_value", DataType::Utf8, false),
    ]))
}

/// The removed keys of a `cdp.profiles` layer.
pub(super) fn removed_profiles_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        "profile_id",
        DataType::Utf8,
        false,
    )]))
}

/// `cdp.identity_links` rows of `nodes` (each has a profile) in `dir`.
pub(super) async fn links(s: &Sources<'_>, nodes: &[NodeId], dir: &Path) -> Result<()> {
    let schema = cdp::identity_links();
    let mut writer = ParquetFileWriter::create_with(
        s.lake,
        &dir.clone().join("part-0.parquet"),
        schema.clone(),
        bulk_properties_repeated(&["id_type"]),
    )?;
    let (graph, resolution) = (s.graph, s.resolution);
    for chunk in nodes.chunks(64 * 1024) {
        let [types, values] = s.identifiers(chunk.iter().copied());
        let batch = batch(
            &schema,
            vec![
                types,
                values,
                Arc::new(profile_id_array(
                    chunk.iter().map(|&n| resolution.profile(n)),
                )),
                utc_timestamps(chunk.iter().map(|&n| graph.first_seen[n as usize])),
                utc_timestamps(chunk.iter().map(|&n| graph.last_seen[n as usize])),
            ],
        )?;
        writer.write(&batch).await?;
    }
    writer.finish().await?;
    Ok(())
}

/// The keys (type, value) of link rows that went away, in `dir`.
pub(super) async fn removed_links(s: &Sources<'_>, nodes: &[NodeId], dir: &Path) -> Result<()> {
    let schema = removed_links_schema();
    let b = batch(&schema, s.identifiers(nodes.iter().copied()).to_vec())?;
    write_file(s.lake, &dir.clone().join("part-0.parquet"), schema, &[b]).await?;
    Ok(())
}

/// The ids of profile rows that went away, in `dir`.
pub(super) async fn removed_profiles(lake: &Lake, ids: &[Uuid], dir: &Path) -> Result<()> {
    let schema = removed_profiles_schema();
    let b = batch(
        &schema,
        vec![Arc::new(profile_id_array(ids.iter().copied().map(Some)))],
    )?;
    write_file(lake, &dir.clone().join("part-0.parquet"), schema, &[b]).await?;
    Ok(())
}

/// `cdp.identity_rejections`, whole, in `dir`.
pub(super) async fn rejections(s: &Sources<'_>, dir: &Path) -> Result<()> {
    let schema = cdp::identity_rejections();
    let (config, graph) = (s.config, s.graph);
    let type_name = |n: NodeId| s.type_name(n).to_string();
    let value = |n: NodeId| graph.value(n).to_string();
    let mut cols: [Vec<Option<String>>; 6] = Default::default();
    for r in &s.resolution.rejections {
        let row: [Option<String>; 6] = match r {
            Rejection::BlockedValue { node } => [
                Some("blocked_value".into()),
                Some(type_name(*node)),
                Some(value(*node)),
                None,
                None,
                Some(
                    if super::refresh::is_blocked(s.blocked, graph.value(*node)) {
                        "on the blocked_values list"
                    } else {
                        "blocked by an administrator"
                    }
                    .into(),
                ),
            ],
            Rejection::BlockedLink { a, b } => [
                Some("blocked_link".into()),
                Some(type_name(*a)),
                Some(value(*a)),
                Some(type_name(*b)),
                Some(value(*b)),
                Some("link blocked by an administrator".into()),
            ],
            Rejection::TooManyNeighbours {
                node,
                other_type,
                count,
            } => [
                Some("too_many_neighbours".into()),
                Some(type_name(*node)),
                Some(value(*node)),
                Some(config.types[*other_type as usize].name.clone()),
                None,
                Some(format!(
                    "seen with {count} distinct {} values (limit {})",
                    config.types[*other_type as usize].name, config.max_distinct_neighbours
                )),
            ],
            Rejection::LimitExceeded { a, b, limited_type } => [
                Some("limit_exceeded".into()),
                Some(type_name(*a)),
                Some(value(*a)),
                Some(type_name(*b)),
                Some(value(*b)),
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
    let n = s.resolution.rejections.len();
    let mut arrays: Vec<ArrayRef> = cols
        .into_iter()
        .map(|c| Arc::new(StringArray::from(c)) as ArrayRef)
        .collect();
    arrays.push(utc_timestamps(std::iter::repeat_n(s.now_micros, n)));
    let b = batch(&schema, arrays)?;
    write_file(s.lake, &dir.clone().join("part-0.parquet"), schema, &[b]).await?;
    Ok(())
}

/// `cdp.profile_merges` in `dir`: the files of the last version (`old`)
/// and this refresh's merges and splits, stamped `version`.
pub(super) async fn merges(
    s: &Sources<'_>,
    old: Option<&str>,
    version: u64,
    dir: &Path,
) -> Result<()> {
    if let Some(old) = old {
        for object in s.lake.list(&Path::from(old)).await? {
            let name = object
                .location
                .filename()
                .unwrap_or("part.parquet")
                .to_string();
            s.lake
                .store()
                .copy(
                    &object.location,
                    &s.lake.path(&dir.clone().join(name.as_str())),
                )
                .await
                .map_err(|e| Error::store("copying the merge history", e))?;
        }
    }
    let m = &s.resolution.merges;
    if m.is_empty() {
        return Ok(());
    }
    let schema = cdp::profile_merges();
    let [cause_types, cause_values] = s.identifiers(m.iter().map(|e| e.cause));
    let b = batch(
        &schema,
        vec![
            Arc::new(StringArray::from_iter_values(m.iter().map(|e| e.kind))),
            Arc::new(profile_id_array(m.iter().map(|e| Some(e.from_profile)))),
            Arc::new(profile_id_array(m.iter().map(|e| Some(e.to_profile)))),
            cause_types,
            cause_values,
            utc_timestamps(std::iter::repeat_n(s.now_micros, m.len())),
        ],
    )?;
    let name = format!("part-v{version:08}.parquet");
    write_file(s.lake, &dir.clone().join(name.as_str()), schema, &[b]).await?;
    Ok(())
}

/// `cdp.profiles` rows of `assembled` in `dir`.
pub(super) async fn profiles(
    s: &Sources<'_>,
    assembled: profiles::Assembled<'_>,
    dir: &Path,
) -> Result<()> {
    // Merging each profile's facts is most of the work: two files, each
    // built on a thread of its own, once there are enough profiles.
    let n = assembled.len();
    let half = match n >= s.config.parallel_profiles_from.max(2) {
        true => n / 2,
        false => n,
    };
    let part = |name: &'static str, range: std::ops::Range<usize>| {
        let assembled = &assembled;
        async move {
            let mut writer = ParquetFileWriter::create_with(
                s.lake,
                &dir.clone().join(name),
                assembled.schema(),
                bulk_properties(&["profile_id"]),
            )?;
            for batch in assembled.batches(range) {
                writer.write(&batch?).await?;
            }
            writer.finish().await.map(|_| ())
        }
    };
    if half == n {
        return part("part-0.parquet", 0..n).await;
    }
    super::refresh::both(
        part("part-0.parquet", 0..half),
        part("part-1.parquet", half..n),
    )
    .await?;
    Ok(())
}
