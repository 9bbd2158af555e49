//! What the console reads, as SQL on the role's session: a person found
//! by any identifier, their profile, identifiers, timeline, merges, links
//! and refused links, segments and RFM cell. Everything is filtered by
//! `profile_id` (never masked) and read through the role's session, except
//! the raw rows about a person, which are found by their identifiers on
//! the administrators' session and then masked by name for an analyst
//! ([`crate::catalog::masking::mask_by_name`]) — the mask an analyst's
//! `SELECT` of those columns gets.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::common::ScalarValue;
use datafusion::prelude::{SessionContext, col};

use super::Console;
use crate::catalog::profile_index::{ProfileIndex, ProfileIndexCache};
use crate::error::{Error, Result};
use crate::identity::suppression::{Sources, normalised};
use crate::pgwire::auth::Role;
use crate::privacy::people::People;

/// A query's answer as text, for display.
#[derive(Debug, Clone, Default)]
pub(super) struct Grid {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Grid {
    pub(super) fn from_batches(batches: &[RecordBatch]) -> Result<Grid> {
        let mut grid = Grid::default();
        let options = FormatOptions::default().with_null("");
        if let Some(first) = batches.first() {
            grid.columns = first
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
        }
        for batch in batches {
            let formatters = batch
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| Error::arrow("formatting a result", e))?;
            for row in 0..batch.num_rows() {
                grid.rows.push(
                    formatters
                        .iter()
                        .map(|f| f.value(row).to_string())
                        .collect(),
                );
            }
        }
        Ok(grid)
    }

    /// The value of `column` in row `row`.
    pub(super) fn get(&self, row: usize, column: &str) -> Option<&str> {
        let i = self.columns.iter().position(|c| c == column)?;
        self.rows.get(row)?.get(i).map(String::as_str)
    }
}

/// Run `sql` with `$1, $2, …` = `params` on `ctx`.
pub(super) async fn query(
    ctx: &SessionContext,
    sql: &str,
    params: &[&str],
) -> Result<Vec<RecordBatch>> {
    let mut df = ctx.sql(sql).await?;
    if !params.is_empty() {
        let values: Vec<ScalarValue> = params.iter().map(|p| ScalarValue::from(*p)).collect();
        df = df.with_param_values(values)?;
    }
    Ok(df.collect().await?)
}

/// [`query`] as a [`Grid`].
pub(super) async fn grid(ctx: &SessionContext, sql: &str, params: &[&str]) -> Result<Grid> {
    Grid::from_batches(&query(ctx, sql, params).await?)
}

/// The profiles an identifier typed in a search box belongs to:
/// normalised as the resolver does for `id_type`, or for every type when
/// none is given; a profile id finds its profile.
pub(super) async fn find(
    console: &Console,
    id_type: Option<&str>,
    value: &str,
) -> Result<Vec<String>> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(Vec::new());
    }
    let types: Vec<&str> = match id_type.filter(|t| !t.is_empty()) {
        Some(t) => vec![t],
        None => console
            .identity
            .types
            .iter()
            .map(|t| t.name.as_str())
            .collect(),
    };
    let mut ids = BTreeSet::new();
    if let Some(index) = profile_index(console).await? {
        for t in types {
            let wanted = normalised(&console.identity, t, value);
            if let Some(row) = index.find(t, &wanted) {
                ids.insert(index.profile_id(row).to_string());
            }
        }
    }
    if ids.is_empty() && uuid::Uuid::parse_str(value).is_ok() {
        let found = grid(
            &console.admin,
            "SELECT profile_id FROM cdp.profiles WHERE profile_id = $1",
            &[value],
        )
        .await?;
        ids.extend(found.rows.into_iter().filter_map(|r| r.into_iter().next()));
    }
    Ok(ids.into_iter().collect())
}

/// The identifiers of a profile, unmasked (for finding its rows).
pub(super) async fn identifiers(
    console: &Console,
    profile_id: &str,
) -> Result<Vec<(String, String)>> {
    let Some(index) = profile_index(console).await? else {
        return Ok(Vec::new());
    };
    Ok(index
        .identifiers_of(profile_id)
        .iter()
        .map(|&row| {
            let (id_type, value) = index.identifier(row);
            (id_type.to_string(), value.to_string())
        })
        .collect())
}

/// The process's identifier index at the committed version (a hash probe
/// finds a profile, a binary search its identifiers: no scan of
/// `cdp.identity_links`).
async fn profile_index(console: &Console) -> Result<Option<Arc<ProfileIndex>>> {
    ProfileIndexCache::of_session(&console.admin.state())
        .committed(&console.lake)
        .await
}

/// One entry of a person's timeline.
#[derive(Debug, Clone)]
pub(super) struct Moment {
    pub at: String,
    pub table: &'static str,
    pub what: String,
    pub detail: String,
}

/// The raw tables a timeline shows: (table, time column, columns shown).
const TIMELINE: &[(&str, &str, &[&str])] = &[
    ("events", "timestamp", &["type", "event", "name"]),
    (
        "orders",
        "ordered_at",
        &["order_id", "status", "amount", "currency", "channel"],
    ),
    (
        "survey_responses",
        "responded_at",
        &["survey", "score", "comment"],
    ),
    ("consents", "recorded_at", &["purpose", "status", "source"]),
    (
        "customers",
        "updated_at",
        &["source", "first_name", "last_name", "city"],
    ),
];

/// Rows of a timeline page.
pub(super) const PAGE: usize = 50;

/// Page `page` (from 0) of the person's timeline, newest first, as
/// `role` may read it; and whether there is a next page.
pub(super) async fn timeline(
    console: &Console,
    people: &Arc<People>,
    role: Role,
    page: usize,
) -> Result<(Vec<Moment>, bool)> {
    let wanted = (page + 1) * PAGE + 1;
    let mut all = Vec::new();
    for (table, time, shown) in TIMELINE {
        let Some(about) = people.about(table, &console.identity)? else {
            continue;
        };
        let mut columns = vec![col(format!("\"{time}\""))];
        columns.extend(shown.iter().map(|c| col(format!("\"{c}\""))));
        let batches = console
            .admin
            .table(format!("raw.{table}"))
            .await?
            .filter(about)?
            .select(columns)?
            .sort(vec![col(format!("\"{time}\"")).sort(false, false)])?
            .limit(0, Some(wanted))?
            .collect()
            .await?;
        let batches = mask_for(console, role, batches)?;
        let grid = Grid::from_batches(&batches)?;
        for row in grid.rows {
            let (what, detail) = describe(table, &grid.columns, &row);
            all.push(Moment {
                at: row[0].clone(),
                table,
                what,
                detail,
            });
        }
    }
    all.sort_by(|a, b| b.at.cmp(&a.at));
    let more = all.len() > (page + 1) * PAGE;
    let moments = all.into_iter().skip(page * PAGE).take(PAGE).collect();
    Ok((moments, more))
}

/// A timeline row's headline and details.
fn describe(table: &str, columns: &[String], row: &[String]) -> (String, String) {
    let value = |name: &str| {
        columns
            .iter()
            .position(|c| c == name)
            .map(|i| row[i].as_str())
            .unwrap_or_default()
    };
    let what = match table {
        "events" => match value("event") {
            "" => value("type").to_string(),
            event => format!("{}: {event}", value("type")),
        },
        "orders" => format!("order {}", value("status")),
        "survey_responses" => format!("{} {}", value("survey").to_uppercase(), value("score")),
        "consents" => format!("consent {} {}", value("purpose"), value("status")),
        _ => format!("CRM record ({})", value("source")),
    };
    let detail = columns
        .iter()
        .zip(row)
        .skip(1)
        .filter(|(_, v)| !v.is_empty())
        .map(|(c, v)| format!("{c}: {v}"))
        .collect::<Vec<_>>()
        .join(" · ");
    (what, detail)
}

/// `batches` as `role` may see them.
pub(super) fn mask_for(
    console: &Console,
    role: Role,
    batches: Vec<RecordBatch>,
) -> Result<Vec<RecordBatch>> {
    match role {
        Role::Admin => Ok(batches),
        Role::Analyst => batches
            .iter()
            .map(|b| {
                crate::catalog::masking::mask_by_name(b, &console.policy).map_err(Error::DataFusion)
            })
            .collect(),
    }
}

/// The identity graph of a person: identifiers (nodes), the records that
/// linked two of them (edges, with how many rows of which tables), and
/// the links the resolver refused (to identifiers outside the profile).
#[derive(Debug, Default)]
pub(super) struct Links {
    /// (type, value as unmasked) of each node.
    pub nodes: Vec<(String, String)>,
    /// (node, node) → "table × rows".
    pub edges: BTreeMap<(usize, usize), BTreeMap<&'static str, usize>>,
    /// (node, other type, reason) of refused links.
    pub refused: Vec<(usize, String, String)>,
}

/// The links of the person whose identifiers are `ids`.
pub(super) async fn links(
    console: &Console,
    people: &Arc<People>,
    ids: &[(String, String)],
) -> Result<Links> {
    let mut links = Links {
        nodes: ids.to_vec(),
        ..Links::default()
    };
    let index = |t: &str, v: &str| ids.iter().position(|(a, b)| a == t && b == v);
    for (table, _, _) in TIMELINE {
        let Some(about) = people.about(table, &console.identity)? else {
            continue;
        };
        let sources = Sources::of(table, &console.identity)?;
        let columns = sources
            .sources
            .iter()
            .map(|s| col(format!("\"{}\"", s.column)))
            .collect::<Vec<_>>();
        let batches = console
            .admin
            .table(format!("raw.{table}"))
            .await?
            .filter(about)?
            .select(columns)?
            .collect()
            .await?;
        for batch in &batches {
            let text = sources.columns(batch)?;
            for i in 0..batch.num_rows() {
                let mut nodes: Vec<usize> = sources
                    .values(&text, i)
                    .filter_map(|(t, v)| index(t, &v))
                    .collect();
                nodes.sort_unstable();
                nodes.dedup();
                for (k, &a) in nodes.iter().enumerate() {
                    for &b in &nodes[k + 1..] {
                        *links
                            .edges
                            .entry((a, b))
                            .or_default()
                            .entry(table)
                            .or_default() += 1;
                    }
                }
            }
        }
    }
    let refused = grid(
        &console.admin,
        "SELECT id_type, id_value, other_type, kind FROM cdp.identity_rejections",
        &[],
    )
    .await?;
    for row in refused.rows {
        if let Some(node) = index(&row[0], &row[1]) {
            links.refused.push((node, row[2].clone(), row[3].clone()));
        }
    }
    Ok(links)
}
