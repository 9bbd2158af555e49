//! When jobs run. [`Scheduler::due`] is a pure function of the time it is
//! given (tests drive it with any clock); [`run_forever`] asks it every
//! second with the wall clock and starts the runs it names, never two runs
//! of one job at once (a run due while the previous one is still going is
//! recorded as `skipped`). A failing job is recorded and the scheduler goes
//! on. Runs missed while the server was down are not replayed: the next
//! scheduled time is the next run.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use datafusion::prelude::SessionContext;

use super::{Job, Run, record, run};
use crate::identity::IdentityConfig;
use crate::lake::Lake;

/// Decides which jobs are due.
#[derive(Debug)]
pub struct Scheduler {
    jobs: Vec<Job>,
    /// Runs scheduled up to this time have been handed out.
    until: DateTime<Utc>,
}

impl Scheduler {
    /// A scheduler whose first runs are those scheduled after `start`.
    pub fn new(jobs: Vec<Job>, start: DateTime<Utc>) -> Scheduler {
        Scheduler { jobs, until: start }
    }

    pub fn jobs(&self) -> &[Job] {
        &self.jobs
    }

    /// The runs scheduled in `(previous call, now]`: for each job at most
    /// one, for its latest scheduled time in that window.
    pub fn due(&mut self, now: DateTime<Utc>) -> Vec<(Job, DateTime<Utc>)> {
        if now <= self.until {
            return Vec::new();
        }
        let mut due = Vec::new();
        for job in &self.jobs {
            let latest = job
                .schedule
                .after(&self.until)
                .take(100_000)
                .take_while(|t| *t <= now)
                .last();
            if let Some(at) = latest {
                due.push((job.clone(), at));
            }
        }
        self.until = now;
        due
    }
}

/// The jobs running now: a job is started only if it is not among them.
#[derive(Debug, Default, Clone)]
pub struct Running(Arc<Mutex<HashSet<String>>>);

/// Proof that a job was started; it leaves [`Running`] when dropped.
#[derive(Debug)]
pub struct Started {
    running: Running,
    job: String,
}

impl Running {
    /// Mark `job` as running, unless it already is.
    pub fn try_start(&self, job: &str) -> Option<Started> {
        let mut set = self.0.lock().ok()?;
        set.insert(job.to_string()).then(|| Started {
            running: self.clone(),
            job: job.to_string(),
        })
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        if let Ok(mut set) = self.running.0.lock() {
            set.remove(&self.job);
        }
    }
}

/// Run the scheduler until `shutdown` resolves.
pub async fn run_forever(
    ctx: Arc<SessionContext>,
    lake: Lake,
    identity: IdentityConfig,
    jobs: Vec<Job>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut scheduler = Scheduler::new(jobs, Utc::now());
    let running = Running::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tick.tick() => {}
        }
        for (job, scheduled_for) in scheduler.due(Utc::now()) {
            let started = running.try_start(&job.name);
            let (ctx, lake, identity) = (ctx.clone(), lake.clone(), identity.clone());
            tokio::spawn(async move {
                let Some(_started) = started else {
                    let now = Utc::now();
                    let skipped = Run {
                        job: job.name.clone(),
                        scheduled_for,
                        started_at: now,
                        finished_at: now,
                        status: "skipped",
                        rows_written: 0,
                        rows_left_out: 0,
                        error: Some("the previous run is still running".into()),
                        target: job.target.clone(),
                        version: None,
                    };
                    if let Err(e) = record(&lake, &skipped).await {
                        tracing::warn!(job = %job.name, "recording a skipped run: {e}");
                    }
                    return;
                };
                match run(&ctx, &lake, &identity, &job, scheduled_for).await {
                    Ok(r) if r.status == "succeeded" => {
                        tracing::info!(job = %job.name, rows = r.rows_written, "job run succeeded")
                    }
                    Ok(r) => tracing::warn!(
                        job = %job.name,
                        "job run failed: {}",
                        r.error.unwrap_or_default()
                    ),
                    Err(e) => tracing::warn!(job = %job.name, "job run not recorded: {e}"),
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(day: u32, hour: u32, minute: u32, second: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, day, hour, minute, second)
            .single()
            .unwrap()
    }

    fn nightly() -> Job {
        Job::parse(
            "nightly",
            "test",
            "-- schedule: 0 2 * * *\n-- target: t\nSELECT 1",
        )
        .unwrap()
    }

    #[test]
    fn a_job_is_due_once_at_its_scheduled_minute() {
        let mut s = Scheduler::new(vec![nightly()], at(1, 1, 59, 0));
        assert!(s.due(at(1, 1, 59, 59)).is_empty(), "not yet");
        let due = s.due(at(1, 2, 0, 1));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].1, at(1, 2, 0, 0), "scheduled for 02:00");
        assert!(s.due(at(1, 2, 0, 30)).is_empty(), "not twice");
        assert!(s.due(at(1, 23, 0, 0)).is_empty());
        let due = s.due(at(2, 2, 5, 0));
        assert_eq!(due[0].1, at(2, 2, 0, 0), "the next night");
    }

    #[test]
    fn a_job_never_runs_twice_at_once() {
        let running = Running::default();
        let first = running.try_start("nightly").expect("starts");
        assert!(running.try_start("nightly").is_none(), "still running");
        assert!(running.try_start("other").is_some(), "other jobs may run");
        drop(first);
        assert!(
            running.try_start("nightly").is_some(),
            "finished: may run again"
        );
    }

    #[test]
    fn missed_runs_collapse_into_the_latest() {
        let mut s = Scheduler::new(vec![nightly()], at(1, 12, 0, 0));
        let due = s.due(at(5, 12, 0, 0));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].1, at(5, 2, 0, 0));
    }

    #[test]
    fn job_files_are_checked_line_by_line() {
        let err = Job::parse(
            "x",
            "jobs/x.sql",
            "-- schedule: 0 99 * * *\n-- target: t\nSELECT 1",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("job x (jobs/x.sql), line 1: schedule '0 99 * * *'"),
            "{err}"
        );
        let err = Job::parse(
            "x",
            "jobs/x.sql",
            "-- schedule: 0 2 * * *\n-- taget: t\nSELECT 1",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("line 2: unknown header 'taget'"), "{err}");
        let err = Job::parse("x", "jobs/x.sql", "-- schedule: 0 2 * * *\n-- target: t\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no query after the header"), "{err}");
        let job = Job::parse(
            "x",
            "jobs/x.sql",
            "-- schedule: 0 2 * * MON-FRI\n-- target: t\n-- mode: append\n-- refresh: true\n--\n-- What it does: a note.\nSELECT 1",
        )
        .unwrap();
        assert_eq!(
            (job.mode, job.refresh, job.work),
            (
                super::super::WriteMode::Append,
                true,
                super::super::Work::Sql("SELECT 1".into())
            )
        );
    }
}
