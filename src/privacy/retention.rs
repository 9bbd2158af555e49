//! Storage limitation (GDPR art. 5): rows older than a period erased for
//! good, run by the `retention` jobs. Two rules: a period per raw table
//! (`[retention] events = "25 months"`), and one for the rows of visitors
//! never identified (`anonymous = "13 months"`): rows whose identifiers
//! are all anonymous ids that no known identifier is linked to in
//! `cdp.identity_links` — a cookie that later logged in keeps its history
//! as long as its person does.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash as _, Hasher as _};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use datafusion::arrow::array::StringArray;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::{col, lit};
use uuid::Uuid;

use super::Forgotten;
use super::audit::{Request, record};
use crate::error::Result;
use crate::identity::retention::Period;
use crate::identity::suppression::{Sources, text};
use crate::identity::{self, IdentityConfig};
use crate::lake::{Lake, delta, parquet, paths};
use crate::schema::RawTable;

/// The identifier type of anonymous visitors' ids.
const ANONYMOUS_TYPE: &str = "anonymous_id";

/// What a retention run applies: a period per table, and optionally the
/// one for the rows of visitors never identified.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub tables: Vec<(RawTable, Period)>,
    pub anonymous: Option<Period>,
}

impl Rules {
    /// `[retention]` (in `config`) for `tables`.
    pub fn configured(config: &IdentityConfig, tables: &[RawTable]) -> Rules {
        let retention = &config.retention;
        Rules {
            tables: tables
                .iter()
                .filter_map(|t| retention.tables.get(t).map(|p| (*t, *p)))
                .collect(),
            anonymous: Some(retention.anonymous),
        }
    }
}

/// Erase the rows `rules` say are too old at `now`, as an erasure does:
/// one Delta delete per table and rule (the predicate is a date and, for
/// anonymous rows, a function that holds the known ids, never quoting a
/// value), the tables' history purged, the profiles rebuilt without them
/// and the older view versions deleted. Each removal is recorded in
/// `system.privacy_requests` (kind `retention`, the table — with
/// "(anonymous)" for the second rule — as `id_type`). Returns the rows
/// removed.
pub async fn retain(
    lake: &Lake,
    config: &IdentityConfig,
    rules: &Rules,
    now: DateTime<Utc>,
) -> Result<u64> {
    let mut deletes: Vec<(RawTable, String, Expr)> = Vec::new();
    for &(table, period) in &rules.tables {
        if let Some(first) = period.first_day_kept(now) {
            deletes.push((table, format!("raw.{table}"), before(first)));
        }
    }
    if let Some(first) = rules.anonymous.and_then(|p| p.first_day_kept(now)) {
        let known = Arc::new(known_anonymous_ids(lake, config).await?);
        for table in lake.raw_tables() {
            let sources = Sources::of(table.name(), config)?;
            if !sources.sources.iter().any(|s| s.id_type == ANONYMOUS_TYPE) {
                continue;
            }
            let only_anonymous = Unidentified::predicate(sources, Arc::clone(&known));
            let predicate = before(first).and(only_anonymous);
            deletes.push((table, format!("raw.{table} (anonymous)"), predicate));
        }
    }
    let mut removed = 0;
    let mut changed = Vec::new();
    for (table, label, predicate) in deletes {
        let dir = paths::raw_table_dir(table);
        let properties = parquet::writer_properties_with(crate::ingest::compression(table));
        let deleted = delta::delete(lake, &dir, predicate, properties, "retention").await?;
        if deleted.rows == 0 {
            continue;
        }
        let mut done = Forgotten {
            files_rewritten: deleted.files_rewritten,
            ..Forgotten::default()
        };
        done.rows_removed.insert(label.clone(), deleted.rows);
        if !changed.contains(&table) {
            changed.push(table);
        }
        let request = Request {
            id: Uuid::new_v4().to_string(),
            kind: "retention",
            requested_at: now,
            hashes: vec![(label, String::new())],
        };
        record(lake, &request, "completed", &done, None).await?;
        removed += deleted.rows as u64;
    }
    for table in changed {
        delta::purge_history(lake, &paths::raw_table_dir(table)).await?;
    }
    if removed > 0 {
        super::refresh(lake, config, identity::Mode::Incremental).await?;
        identity::remove_old_versions(lake).await?;
    }
    Ok(removed)
}

/// Rows of a day before `first`.
fn before(first: NaiveDate) -> Expr {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    let days = i32::try_from((first - epoch).num_days()).unwrap_or(i32::MIN);
    col(crate::schema::DAY_COLUMN).lt(lit(ScalarValue::Date32(Some(days))))
}

/// Hashes of the anonymous ids linked to a known identifier, on the
/// identity graph brought up to date: their rows stay. (A hash collision
/// keeps a row it could have removed, never the other way round.)
async fn known_anonymous_ids(lake: &Lake, config: &IdentityConfig) -> Result<HashSet<u64>> {
    let (ctx, _) = super::resolve(lake, config, &[]).await?;
    let sql = format!(
        "SELECT l.id_value FROM cdp.identity_links l \
         WHERE l.id_type = '{ANONYMOUS_TYPE}' AND l.profile_id IN \
         (SELECT profile_id FROM cdp.identity_links WHERE id_type <> '{ANONYMOUS_TYPE}')"
    );
    let mut stream = ctx.sql(&sql).await?.execute_stream().await?;
    let mut known = HashSet::new();
    while let Some(batch) = futures::StreamExt::next(&mut stream).await {
        let batch = batch?;
        let values = text(batch.column(0))?;
        known.extend(values.iter().flatten().map(hash));
    }
    Ok(known)
}

fn hash(value: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// The SQL function "this row's identifiers are all anonymous ids, and
/// none is known": `unidentified_visitor(<the table's sources>)`.
#[derive(Debug)]
struct Unidentified {
    sources: Sources,
    known: Arc<HashSet<u64>>,
    signature: Signature,
}

impl Unidentified {
    fn predicate(sources: Sources, known: Arc<HashSet<u64>>) -> Expr {
        let args = sources
            .sources
            .iter()
            .map(|s| col(format!("\"{}\"", s.column)))
            .collect();
        let udf = Unidentified {
            sources,
            known,
            signature: Signature::variadic_any(Volatility::Immutable),
        };
        ScalarUDF::new_from_impl(udf).call(args)
    }

    fn row(&self, columns: &[StringArray], i: usize) -> bool {
        let mut any = false;
        for (id_type, value) in self.sources.values(columns, i) {
            if id_type != ANONYMOUS_TYPE || self.known.contains(&hash(&value)) {
                return false;
            }
            any = true;
        }
        any
    }
}

impl PartialEq for Unidentified {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.known, &other.known)
            && self.sources.sources.len() == other.sources.sources.len()
    }
}

impl Eq for Unidentified {}

impl std::hash::Hash for Unidentified {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.known).hash(state);
    }
}

impl ScalarUDFImpl for Unidentified {
    fn name(&self) -> &str {
        "unidentified_visitor"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        super::people::by_row(args, |columns, i| self.row(columns, i))
    }
}
