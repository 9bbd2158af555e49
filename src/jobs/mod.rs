//! Scheduled scoring queries. A job is a SQL file with a header:
//!
//! ```sql
//! -- schedule: 0 2 * * *      (cron, UTC: minute hour day month weekday)
//! -- target: rfm_scores       (the table it writes, in analytics)
//! -- mode: replace            (or append)
//! -- refresh: true            (run an incremental profile refresh first)
//! -- kind: segment_snapshot   (optional: snapshot every saved segment)
//! -- purpose: email_marketing (optional: an activation feed, see below)
//! SELECT ...
//! ```
//!
//! A job with a `purpose` feeds activation: its query must return a
//! `profile_id` column, and only the rows of profiles whose consent admits
//! the purpose are written ([`crate::identity::consent`]); the others are
//! counted in `system.job_runs.rows_left_out`.
//!
//! Maintenance jobs name raw tables as their target and have no query:
//! `kind: compact`, `kind: vacuum`, and `kind: retention` (rows older than
//! `[retention]` says, or than `keep_days: N`, are erased for good).
//!
//! Panorama ships the jobs of `sql/jobs/`; users add theirs to the lake's
//! `jobs/` folder (one with a shipped job's name replaces it). A run writes
//! a new version of its table and switches it atomically
//! ([`crate::analytics::tables`]); a failed run keeps the previous version.
//! Every run is recorded in `system.job_runs`. [`scheduler`] decides when.

use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{ArrayRef, AsArray, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::DataType;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use object_store::path::Path;
use uuid::Uuid;

use crate::analytics::{self, tables};
use crate::error::{Error, Result};
use crate::identity::{self, IdentityConfig};
use crate::lake::Lake;
use crate::lake::parquet::{ParquetFileWriter, write_file};
use crate::schema::{cdp, utc_timestamps};

pub mod scheduler;

/// The jobs Panorama ships.
const SHIPPED: [(&str, &str); 6] = [
    ("rfm_scores", include_str!("../../sql/jobs/rfm_scores.sql")),
    (
        "nps_by_segment",
        include_str!("../../sql/jobs/nps_by_segment.sql"),
    ),
    (
        "segment_snapshots",
        include_str!("../../sql/jobs/segment_snapshots.sql"),
    ),
    (
        "compact_raw",
        include_str!("../../sql/jobs/compact_raw.sql"),
    ),
    ("vacuum_raw", include_str!("../../sql/jobs/vacuum_raw.sql")),
    ("retention", include_str!("../../sql/jobs/retention.sql")),
];

/// Folder of the jobs users add.
pub fn jobs_dir() -> Path {
    Path::from("jobs")
}

/// Folder of `system.job_runs`.
pub fn runs_dir() -> Path {
    Path::from("system/job_runs")
}

/// How a run's rows replace the table's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    Replace,
    Append,
}

/// What a job computes.
#[derive(Debug, Clone, PartialEq)]
pub enum Work {
    Sql(String),
    /// The members of every saved segment, as `segment_membership` rows.
    SegmentSnapshot,
    /// Compact the raw tables ([`crate::maintenance::compact`]); writes no
    /// table.
    Compact,
    /// Vacuum the raw tables ([`crate::maintenance::vacuum`]); writes no
    /// table.
    Vacuum,
    /// Delete the rows of the raw tables older than their period, for good
    /// ([`crate::privacy::retain`]): `keep_days` for the target tables if
    /// the job says, `[retention]` otherwise; writes no table.
    Retention {
        keep_days: Option<u32>,
    },
}

/// One job, parsed from its file.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub schedule_text: String,
    pub schedule: cron::Schedule,
    pub target: String,
    pub mode: WriteMode,
    pub refresh: bool,
    pub work: Work,
    /// The consent purpose the rows are for (checked when it runs).
    pub purpose: Option<String>,
    /// `shipped` or the file's path in the lake.
    pub origin: String,
}

impl Job {
    /// Parse a job file; errors name the job and the line.
    pub fn parse(name: &str, origin: &str, text: &str) -> Result<Job> {
        let bad = |line: usize, msg: String| {
            Error::Config(format!("job {name} ({origin}), line {line}: {msg}"))
        };
        let (mut schedule, mut target, mut mode, mut refresh, mut kind) =
            (None, None, WriteMode::Replace, false, "sql".to_string());
        let mut keep_days = None;
        let mut purpose = None;
        let mut body = Vec::new();
        // The header is the leading run of `-- key: value` lines.
        let mut in_header = true;
        for (i, line) in text.lines().enumerate() {
            let header = line
                .trim()
                .strip_prefix("--")
                .and_then(|rest| rest.split_once(':'))
                .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
                .filter(|(k, _)| {
                    !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                });
            if header.is_none() {
                in_header = false;
            }
            match header {
                Some((key, value)) if in_header => match key.as_str() {
                    "schedule" => schedule = Some((i + 1, value)),
                    "target" => target = Some(value),
                    "mode" => {
                        mode = match value.as_str() {
                            "replace" => WriteMode::Replace,
                            "append" => WriteMode::Append,
                            other => {
                                return Err(bad(
                                    i + 1,
                                    format!("mode '{other}' (use replace or append)"),
                                ));
                            }
                        }
                    }
                    "refresh" => {
                        refresh = value.parse().map_err(|_| {
                            bad(i + 1, format!("refresh '{value}' (use true or false)"))
                        })?
                    }
                    "kind" => kind = value,
                    "purpose" => purpose = Some(value),
                    "keep_days" => {
                        keep_days = Some(value.parse::<u32>().ok().filter(|d| *d > 0).ok_or_else(
                            || {
                                bad(
                                    i + 1,
                                    format!("keep_days '{value}' (a number of days, at least 1)"),
                                )
                            },
                        )?)
                    }
                    other => return Err(bad(i + 1, format!("unknown header '{other}'"))),
                },
                _ if line.trim_start().starts_with("--") || line.trim().is_empty() => {}
                _ => body.push(line),
            }
        }
        let (line, schedule_text) =
            schedule.ok_or_else(|| bad(1, "no '-- schedule:' header".into()))?;
        let target = target.ok_or_else(|| bad(1, "no '-- target:' header".into()))?;
        // Maintenance names raw tables (`raw`, `raw.events`), checked when
        // it runs; other jobs name the analytics table they write.
        let maintenance = matches!(kind.as_str(), "compact" | "vacuum" | "retention");
        if target.is_empty()
            || !target
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || maintenance && c == '.')
        {
            return Err(bad(
                1,
                format!("target '{target}' must be a plain table name"),
            ));
        }
        let fields = schedule_text.split_whitespace().count();
        let full = if fields == 5 {
            format!("0 {schedule_text}")
        } else {
            schedule_text.clone()
        };
        let schedule = cron::Schedule::from_str(&full)
            .map_err(|e| bad(line, format!("schedule '{schedule_text}': {e}")))?;
        let work = match kind.as_str() {
            "sql" if body.is_empty() => return Err(bad(1, "no query after the header".into())),
            "sql" => Work::Sql(body.join("\n")),
            "segment_snapshot" => Work::SegmentSnapshot,
            "compact" => Work::Compact,
            "vacuum" => Work::Vacuum,
            "retention" => Work::Retention { keep_days },
            other => return Err(bad(1, format!("unknown kind '{other}'"))),
        };
        Ok(Job {
            name: name.to_string(),
            schedule_text,
            schedule,
            target,
            mode,
            refresh,
            work,
            purpose,
            origin: origin.to_string(),
        })
    }

    /// The first scheduled time after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule.after(&after).next()
    }
}

/// Every job: the shipped ones and those in the lake's `jobs/` folder.
pub async fn load(lake: &Lake) -> Result<Vec<Job>> {
    let mut jobs: Vec<Job> = SHIPPED
        .iter()
        .map(|(name, text)| Job::parse(name, "shipped", text))
        .collect::<Result<_>>()?;
    for (name, meta) in lake.files_named(&jobs_dir(), ".sql").await? {
        let relative = lake.relative(&meta.location);
        let bytes = lake.get_bytes(&relative).await?.unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        let job = Job::parse(&name, relative.as_ref(), &text)?;
        jobs.retain(|j| j.name != name);
        jobs.push(job);
    }
    jobs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(jobs)
}

/// One run of a job (a row of `system.job_runs`).
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub job: String,
    pub scheduled_for: DateTime<Utc>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// `succeeded`, `failed` or `skipped`.
    pub status: &'static str,
    pub rows_written: u64,
    /// Rows of a job with a purpose left out for want of consent.
    pub rows_left_out: u64,
    pub error: Option<String>,
    pub target: String,
    pub version: Option<u64>,
}

/// Run `job` now (for the time it was `scheduled_for`) and record the run.
pub async fn run(
    ctx: &SessionContext,
    lake: &Lake,
    identity: &IdentityConfig,
    job: &Job,
    scheduled_for: DateTime<Utc>,
) -> Result<Run> {
    let started_at = Utc::now();
    let outcome = execute(ctx, lake, identity, job, started_at).await;
    let (status, written, error) = match outcome {
        Ok(written) => ("succeeded", written, None),
        // The error names what failed, never a value of the data.
        Err(e) => (
            "failed",
            Written::default(),
            Some(crate::redact::values(&e.to_string())),
        ),
    };
    let (rows, version) = (written.rows, written.version);
    let run = Run {
        job: job.name.clone(),
        scheduled_for,
        started_at,
        finished_at: Utc::now(),
        status,
        rows_written: rows,
        rows_left_out: written.left_out,
        error,
        target: job.target.clone(),
        version,
    };
    record(lake, &run).await?;
    Ok(run)
}

/// What a run wrote.
#[derive(Debug, Clone, Copy, Default)]
struct Written {
    /// Rows; for a maintenance job the files it rewrote or deleted.
    rows: u64,
    /// Rows left out for want of consent (jobs with a purpose).
    left_out: u64,
    /// The table's new version (none for maintenance).
    version: Option<u64>,
}

/// The column a job with a purpose adds to say whether a row may be
/// written.
const ADMITTED: &str = "_panorama_admitted";

/// `sql` with a last boolean column [`ADMITTED`]: whether the row's
/// profile's consent admits `purpose`.
fn gated_by_consent(sql: &str, purpose: &str, identity: &IdentityConfig) -> Result<String> {
    let consent = &identity.consent;
    if !consent.is_purpose(purpose) {
        return Err(Error::Config(format!(
            "purpose \"{purpose}\" is not one of the consent purposes ({})",
            consent.purposes.join(", ")
        )));
    }
    let admits = consent.admits_sql(purpose, "c._consent");
    Ok(format!(
        "SELECT a.*, c._pid IS NOT NULL AND coalesce({admits}, false) AS {ADMITTED} \
         FROM ({}) a LEFT JOIN (SELECT profile_id AS _pid, consent_{purpose} AS _consent \
         FROM cdp.profiles) c ON c._pid = CAST(a.profile_id AS VARCHAR)",
        sql.trim().trim_end_matches(';')
    ))
}

/// Compute and switch in a new version of the job's table; a maintenance
/// job reports the files it rewrote or deleted and no version.
async fn execute(
    ctx: &SessionContext,
    lake: &Lake,
    identity: &IdentityConfig,
    job: &Job,
    now: DateTime<Utc>,
) -> Result<Written> {
    if job.refresh {
        identity::refresh(lake, identity, identity::Mode::Incremental, now, |_| {}).await?;
    }
    if let Some(done) = maintain(lake, identity, job, now).await? {
        return Ok(done);
    }
    let previous = tables::current(lake, &job.target).await?;
    let version = previous.as_ref().map_or(1, |c| c.version + 1);
    let folder = tables::root().join(job.target.as_str()).join(format!(
        "v={version:08}-{}",
        &Uuid::new_v4().simple().to_string()[..8]
    ));
    let file = folder.clone().join("part-0.parquet");
    let mut masks = std::collections::BTreeMap::new();
    let mut left_out = 0;
    let rows = match &job.work {
        Work::Sql(sql) => {
            let df = match &job.purpose {
                Some(purpose) => {
                    let df = ctx.sql(&gated_by_consent(sql, purpose, identity)?).await;
                    df.map_err(|e| {
                        Error::Config(format!(
                            "job {} has a purpose, so its query must return a profile_id column: {e}",
                            job.name
                        ))
                    })?
                }
                None => ctx.sql(sql).await?,
            };
            let mut schema = df.schema().as_arrow().clone();
            let gated = job.purpose.is_some();
            if gated {
                schema = schema
                    .project(&(0..schema.fields().len() - 1).collect::<Vec<_>>())
                    .map_err(|e| Error::arrow("dropping the consent column", e))?;
            }
            let schema = Arc::new(schema);
            // A column computed from personal data is personal in the
            // table it is written to, whatever its name.
            let policy = crate::catalog::masking::MaskPolicy::of_session(&ctx.state());
            let lineage = crate::catalog::lineage::plan_masks(df.logical_plan(), &policy);
            masks = schema
                .fields()
                .iter()
                .zip(lineage)
                .filter_map(|(field, mask)| Some((field.name().clone(), mask?)))
                .collect();
            let mut stream = df.execute_stream().await?;
            let mut writer = ParquetFileWriter::create(lake, &file, schema)?;
            while let Some(batch) = stream.next().await {
                let mut batch = batch?;
                if gated {
                    let last = batch.num_columns() - 1;
                    let admitted = batch.column(last).as_boolean().clone();
                    let rows = batch.num_rows();
                    batch = batch
                        .project(&(0..last).collect::<Vec<_>>())
                        .and_then(|b| filter_record_batch(&b, &admitted))
                        .map_err(|e| Error::arrow("leaving out rows without consent", e))?;
                    left_out += (rows - batch.num_rows()) as u64;
                }
                writer.write(&batch).await?;
            }
            writer.finish().await?
        }
        Work::SegmentSnapshot => {
            let batches = snapshot_segments(ctx, lake, now, &mut left_out).await?;
            write_file(lake, &file, cdp::segment_membership(), &batches).await?
        }
        Work::Compact | Work::Vacuum | Work::Retention { .. } => 0,
    };
    let mut folders = match (job.mode, previous) {
        (WriteMode::Append, Some(p)) => p.folders,
        _ => Vec::new(),
    };
    folders.push(folder.to_string());
    let current = tables::Current {
        version,
        folders,
        masks,
    };
    tables::switch(lake, &job.target, &current).await?;
    Ok(Written {
        rows: rows as u64,
        left_out,
        version: Some(version),
    })
}

/// Run a maintenance job (compaction, vacuum, retention) on its raw
/// tables: what it removed, or `None` for a job that writes a table.
async fn maintain(
    lake: &Lake,
    identity: &IdentityConfig,
    job: &Job,
    now: DateTime<Utc>,
) -> Result<Option<Written>> {
    let tables = || crate::maintenance::raw_tables(lake, std::slice::from_ref(&job.target));
    match &job.work {
        Work::Compact => {
            let done = crate::maintenance::compact(lake, &tables()?, |_, _| {}).await?;
            Ok(Some(Written {
                rows: done.files_removed,
                ..Written::default()
            }))
        }
        Work::Vacuum => {
            let retention = crate::maintenance::DEFAULT_RETENTION_HOURS;
            let deleted = crate::maintenance::vacuum(lake, &tables()?, retention).await?;
            Ok(Some(Written {
                rows: deleted as u64,
                ..Written::default()
            }))
        }
        Work::Retention { keep_days } => {
            use crate::identity::retention::Period;
            let rules = match keep_days {
                Some(days) => crate::privacy::Rules {
                    tables: tables()?
                        .into_iter()
                        .map(|t| (t, Period::Days(*days)))
                        .collect(),
                    anonymous: None,
                },
                None => crate::privacy::Rules::configured(identity, &tables()?),
            };
            let removed = crate::privacy::retain(lake, identity, &rules, now).await?;
            Ok(Some(Written {
                rows: removed,
                ..Written::default()
            }))
        }
        Work::Sql(_) | Work::SegmentSnapshot => Ok(None),
    }
}

/// `(segment, profile_id, snapshot_at)` of every saved segment; adds to
/// `left_out` the profiles that segments saved for a consent purpose
/// leave out.
async fn snapshot_segments(
    ctx: &SessionContext,
    lake: &Lake,
    now: DateTime<Utc>,
    left_out: &mut u64,
) -> Result<Vec<RecordBatch>> {
    let mut batches = Vec::new();
    for (segment, _) in lake.files_named(&analytics::views_dir(), ".sql").await? {
        let distinct = |from: &str| {
            format!("SELECT DISTINCT CAST(profile_id AS VARCHAR) AS profile_id FROM {from}")
        };
        let no_profile_id = |e: datafusion::error::DataFusionError| {
            Error::Config(format!("segment {segment} has no profile_id column: {e}"))
        };
        let members = ctx
            .sql(&distinct(&format!("analytics.\"{segment}\"")))
            .await
            .map_err(no_profile_id)?
            .collect()
            .await?;
        let definition = analytics::saved_definition(lake, &segment).await?;
        if definition
            .as_deref()
            .and_then(analytics::purpose_of)
            .is_some()
        {
            let query = analytics::view_query(definition.as_deref().unwrap_or_default())?;
            let all = ctx
                .sql(&distinct(&format!("({query}) _all")))
                .await
                .map_err(no_profile_id)?
                .count()
                .await?;
            let kept: usize = members.iter().map(RecordBatch::num_rows).sum();
            *left_out += all.saturating_sub(kept) as u64;
        }
        for b in members {
            let n = b.num_rows();
            let columns: Vec<ArrayRef> = vec![
                Arc::new(StringArray::from(vec![segment.as_str(); n])),
                datafusion::arrow::compute::cast(b.column(0), &DataType::Utf8)
                    .map_err(|e| Error::arrow("reading segment members", e))?,
                utc_timestamps(std::iter::repeat_n(now.timestamp_micros(), n)),
            ];
            batches.push(
                RecordBatch::try_new(cdp::segment_membership(), columns)
                    .map_err(|e| Error::arrow("building a segment snapshot", e))?,
            );
        }
    }
    Ok(batches)
}

/// Append one row to `system.job_runs`.
pub async fn record(lake: &Lake, run: &Run) -> Result<()> {
    let ts = |t: DateTime<Utc>| utc_timestamps([t.timestamp_micros()]);
    let text = |v: Option<&str>| Arc::new(StringArray::from(vec![v])) as ArrayRef;
    let batch = RecordBatch::try_new(
        cdp::job_runs(),
        vec![
            text(Some(&run.job)),
            ts(run.scheduled_for),
            ts(run.started_at),
            ts(run.finished_at),
            text(Some(run.status)),
            Arc::new(Int64Array::from(vec![run.rows_written as i64])),
            text(run.error.as_deref()),
            text(Some(&run.target)),
            Arc::new(Int64Array::from(vec![run.version.map(|v| v as i64)])),
            Arc::new(Int64Array::from(vec![run.rows_left_out as i64])),
        ],
    )
    .map_err(|e| Error::arrow("recording a job run", e))?;
    crate::lake::delta::append_record(lake, &runs_dir(), batch, "job run", None).await?;
    Ok(())
}
