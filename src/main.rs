//! The `panorama` binary: parse the command line, resolve settings, wire
//! the library's parts together and report progress. All behaviour lives in
//! the library; this file only decides what to run.

#![cfg_attr(test, allow(clippy::unwrap_used))]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use panorama::config::{self, DEFAULT_PG_ADDR, LAKE_ENV};
use panorama::engine::{self, EngineOptions};
use panorama::generate::{self, GenerateOptions, Output};
use panorama::identity::blocks;
use panorama::jobs;
use panorama::lake::Lake;
use panorama::{host, query, seed};

/// mimalloc rather than glibc's malloc: a point lookup or `SELECT 1` spends
/// a fifth of its CPU allocating (plans, session state clones, Parquet
/// readers); mimalloc cuts `SELECT 1` from 0.39 to 0.32 ms.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Panorama: an open-source Customer Data Platform.
///
/// Keeps customer data (events, CRM rows, orders, surveys, consents) as
/// Parquet in a lake (a local folder or an S3 bucket) and serves it in SQL
/// over the PostgreSQL protocol, so psql and any BI tool can query it.
/// Run without a command, it serves a local lake seeded with sample data.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Cli {
    /// Where the lake is: a folder, file:///abs/path, s3://bucket/prefix
    /// (S3 settings come from AWS_ENDPOINT, AWS_REGION, AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_ALLOW_HTTP) or memory://.
    #[arg(long, global = true, env = LAKE_ENV, default_value_t = config::default_lake())]
    lake: String,

    /// Configuration file (identity rules, ...); default: ./panorama.toml if
    /// it exists, else built-in defaults.
    #[arg(long, global = true, env = config::CONFIG_ENV)]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the lake over the PostgreSQL protocol (the default command).
    ///
    /// An empty lake is first seeded with the bundled sample data. Connect
    /// with: psql -h 127.0.0.1 -p 5433 -U panorama panorama
    Serve(ServeArgs),

    /// Run one worker of a cluster: it runs the stages of queries a front
    /// end (`serve --workers`) sends it, reading the lake directly.
    ///
    /// Start it with the front end's lake and panorama.toml; beyond
    /// loopback it needs the cluster's secret ([cluster] secret or
    /// PANORAMA_CLUSTER_SECRET).
    Worker {
        /// Address the worker listens on.
        #[arg(long, env = "PANORAMA_WORKER_LISTEN", default_value = "127.0.0.1:7077", value_parser = config::parse_listen)]
        listen: SocketAddr,
        /// Memory the worker's tasks may use together, in MiB.
        #[arg(long, default_value_t = 4096)]
        memory_limit_mb: usize,
    },

    /// Write a deterministic synthetic CDP (customers, events, orders, ...).
    ///
    /// Scale N gives N×1,000 known customers, N×300 anonymous visitors and a
    /// year of their activity. The same scale and seed always give the same
    /// rows.
    Generate {
        /// Thousands of known customers.
        #[arg(long, default_value_t = 1)]
        scale: u32,
        /// Random seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Write one compact <table>.parquet per table into this folder
        /// instead of the lake (how datasets/sample is made).
        #[arg(long)]
        files: Option<PathBuf>,
    },

    /// Resolve identities and update the unified profiles (cdp.*).
    ///
    /// Reads the raw files landed since the last refresh (on top of the
    /// stored identity graph), links the identifiers seen together
    /// (union-find with the rules of the [identity] configuration and the
    /// administrators' blocks) and commits a new version of
    /// cdp.identity_links, cdp.profiles, cdp.profile_merges and
    /// cdp.identity_rejections. Profile ids stay stable across refreshes.
    /// Each run is recorded in system.refreshes.
    Refresh {
        /// Forget the stored graph and rebuild from all raw data (gives the
        /// same profiles and ids as the incremental refreshes did).
        #[arg(long)]
        full: bool,
    },

    /// Unmerge: block or unblock an identifier value or one link.
    ///
    /// Takes effect at the next refresh, which splits the profile: the part
    /// with the oldest identifiers keeps the profile id, the other part
    /// gets a new one, and the split is recorded in cdp.profile_merges.
    /// Decisions are listed in system.identity_blocks.
    Identity {
        #[command(subcommand)]
        action: IdentityAction,
    },

    /// Load CSV, NDJSON or Parquet files (.gz and .zst too) into a raw table.
    ///
    /// Rows that cannot be used go to rejects/<table>/ in the lake with
    /// their file, line, field and reason (system.rejects); every good row
    /// lands. A file already loaded is skipped; an interrupted load can be
    /// run again. Exits non-zero when any row was rejected.
    Ingest {
        /// The raw table: events, customers, orders, order_items, products,
        /// survey_responses, consents, or one declared ([tables.<name>] in
        /// panorama.toml, or CREATE TABLE raw.<name> over SQL).
        table: String,
        /// Files, folders or URLs (https://…, s3://bucket/key) to load.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Column mapping (repeatable): `column=field` renames a field
        /// (`--map email=Email_Address`); `column=<SQL expression>` computes
        /// the column from the file's fields, read as text
        /// (`--map "order_id=OrderNo || '-' || Line"`, `CAST(…)`, `CASE`,
        /// `json_build_object('tier', Tier)`).
        #[arg(long = "map", value_name = "COLUMN=FIELD|EXPRESSION")]
        map: Vec<String>,
        /// A value for rows that lack a column, `column=value` (repeatable),
        /// e.g. `--default source=crm`.
        #[arg(long = "default", value_name = "COLUMN=VALUE")]
        defaults: Vec<String>,
        /// A file field to leave out (repeatable). Without it, every field
        /// no column holds is kept in the table's `extra` JSON column.
        #[arg(long = "drop", value_name = "FIELD")]
        drop: Vec<String>,
    },

    /// Print the SCRAM-SHA-256 verifier of a password (read from standard
    /// input), to paste into a [[users]] entry of panorama.toml.
    Passwd,

    /// List the scheduled jobs (shipped and the lake's jobs/ folder) with
    /// their next run time.
    Jobs,

    /// Run one job now (for cron, Airflow or Kubernetes CronJobs); exits
    /// non-zero when it fails. The run is recorded in system.job_runs.
    RunJob {
        /// The job's name (its file name without .sql).
        name: String,
    },

    /// Write an audience: the profiles of a saved segment that granted
    /// consent for the purpose (for an opt-out purpose: did not refuse it).
    Export {
        /// The saved segment (a view of the analytics schema).
        #[arg(long)]
        segment: String,
        /// csv or parquet.
        #[arg(long, default_value = "csv")]
        format: ExportFormat,
        /// Where to write: a local path, or a path inside the lake's bucket
        /// (s3://bucket/...).
        #[arg(long)]
        to: String,
        /// The consent purpose the audience is for.
        #[arg(long, default_value = "email_marketing")]
        purpose: String,
    },

    /// Compact raw tables: rewrite their small files (a collector flush or
    /// an ingest chunk each adds some) into files of about 128 MiB, as one
    /// Delta commit per table. Queries keep their answers and keep running;
    /// the replaced files are deleted by `panorama vacuum` later.
    Compact {
        /// Raw tables to compact (all when none is named).
        tables: Vec<String>,
    },

    /// Delete the files of raw tables that no recent version reads (those
    /// replaced by compaction).
    Vacuum {
        /// Raw tables to vacuum (all when none is named).
        tables: Vec<String>,
        /// Keep the files versions of the last N hours still read.
        #[arg(long, default_value_t = panorama::maintenance::DEFAULT_RETENTION_HOURS)]
        retain_hours: u32,
    },

    /// Lake upkeep: `panorama lake upgrade` converts a lake written by an
    /// older Panorama in place.
    Lake {
        #[command(subcommand)]
        action: LakeAction,
    },

    /// The rights of the people in the lake (GDPR): `panorama privacy
    /// forget email jane@example.com` erases a person from every table.
    Privacy {
        #[command(subcommand)]
        action: PrivacyAction,
    },

    /// Run one SQL statement against the lake and print the result table.
    Sql {
        /// The statement, e.g. "SELECT count(*) FROM raw.events".
        query: String,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum ExportFormat {
    Csv,
    Parquet,
}

#[derive(Subcommand, Debug)]
enum PrivacyAction {
    /// Erase people (GDPR art. 17): every identifier the identity graph
    /// links to the ones named, and every row about them in every raw
    /// table, rejected rows and the profiles; older versions of what
    /// changed are deleted from disk. Recorded in system.privacy_requests
    /// with salted hashes, never the values.
    Forget {
        /// Identifier type and value pairs, e.g. `email jane@example.com
        /// phone "06 12 34 56 78"`.
        identifiers: Vec<String>,
        /// A CSV file of identifiers, with the header `id_type,value`
        /// (thousands in one request).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Do not suppress the people's identifiers: new data about them
        /// may land again (by default nothing new about them is kept).
        #[arg(long)]
        no_suppress: bool,
    },
    /// Stop collecting data about identifiers (exactly those named):
    /// `panorama ingest` and the collector drop rows carrying one, and
    /// count them. The list keeps salted hashes only.
    Suppress {
        /// Identifier type and value pairs.
        identifiers: Vec<String>,
        /// A CSV file of identifiers, with the header `id_type,value`.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Lift a suppression: new data carrying the identifiers lands again
    /// (erased data never comes back).
    Unsuppress {
        /// Identifier type and value pairs.
        identifiers: Vec<String>,
        /// A CSV file of identifiers, with the header `id_type,value`.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Show what a privacy request did (its certificate): each state it
    /// reached, rows removed per table, files rewritten, and the salted
    /// hashes of the identifiers it named.
    Status {
        /// The request id `forget` or `export` printed.
        request: String,
    },
    /// Write everything the lake holds about people (GDPR art. 15 and
    /// 20) to one JSON file: identifiers, profiles, merges, and every raw
    /// row about them, consents included.
    Export {
        /// Identifier type and value pairs, e.g. `email jane@example.com`.
        identifiers: Vec<String>,
        /// A CSV file of identifiers, with the header `id_type,value`.
        #[arg(long)]
        file: Option<PathBuf>,
        /// The JSON file to write.
        #[arg(long)]
        to: PathBuf,
        /// Also write one CSV file per table into this folder.
        #[arg(long)]
        csv: Option<PathBuf>,
    },
    /// Show the proof of consent of people (GDPR art. 7): for each
    /// purpose their answer and every record behind it — source, time,
    /// notice version — from raw.consents and from SDK events.
    Proof {
        /// Identifier type and value pairs, e.g. `email jane@example.com`.
        identifiers: Vec<String>,
        /// A CSV file of identifiers, with the header `id_type,value`.
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum LakeAction {
    /// Move every raw table of a lake written by an older Panorama into a
    /// Delta table (rows re-landed in large commits, old files deleted
    /// after). Safe to run again; an interrupted run resumes.
    Upgrade,
}

#[derive(Subcommand, Debug)]
enum IdentityAction {
    /// Block a value (it links nothing) or, with --link, one link.
    Block(BlockArgs),
    /// Lift an earlier block.
    Unblock(BlockArgs),
}

#[derive(clap::Args, Debug)]
struct BlockArgs {
    /// Identifier type, e.g. email, anonymous_id, customer_id.
    id_type: String,
    /// The value (normalised like the identity rules do).
    value: String,
    /// Only the link between the value and this other identifier
    /// (`--link user_id u-42`).
    #[arg(long, num_args = 2, value_names = ["TYPE", "VALUE"])]
    link: Option<Vec<String>>,
    /// Why (kept in system.identity_blocks).
    #[arg(long)]
    reason: Option<String>,
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Address the PostgreSQL protocol listens on.
    #[arg(long, env = "PANORAMA_LISTEN", default_value = DEFAULT_PG_ADDR, value_parser = config::parse_listen)]
    listen: SocketAddr,
    /// Do not seed an empty lake with the sample data.
    #[arg(long)]
    no_seed: bool,
    /// Memory all running queries may use together, in MiB.
    #[arg(long, default_value_t = 4096)]
    memory_limit_mb: usize,
    /// Address of the Segment-compatible HTTP collector (overrides
    /// [collector] listen in panorama.toml; default 127.0.0.1:8088).
    #[arg(long, env = "PANORAMA_COLLECT_LISTEN", value_parser = config::parse_listen)]
    collect_listen: Option<SocketAddr>,
    /// Folder of the collector's write-ahead log (overrides [collector]
    /// wal_dir; default ./panorama-wal). One per server process.
    #[arg(long, env = "PANORAMA_WAL_DIR")]
    wal_dir: Option<PathBuf>,
    /// Do not run the HTTP collector.
    #[arg(long)]
    no_collect: bool,
    /// Address of the web console and profile API (overrides [console]
    /// listen in panorama.toml; default 127.0.0.1:8080).
    #[arg(long, env = "PANORAMA_CONSOLE_LISTEN", value_parser = config::parse_listen)]
    console_listen: Option<SocketAddr>,
    /// Do not serve the web console and profile API.
    #[arg(long)]
    no_console: bool,
    /// Workers (`panorama worker`) to send the stages of larger queries
    /// to, as host:port,host:port (added to [cluster] workers).
    #[arg(long, env = "PANORAMA_WORKERS", value_delimiter = ',')]
    workers: Vec<String>,
}

fn main() -> Result<()> {
    // Large stacks: deeply nested SQL is parsed and planned on these
    // threads (see panorama::executor).
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(panorama::executor::THREAD_STACK_BYTES)
        .build()
        .context("starting the async runtime")?
        .block_on(run())
}

async fn run() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                "info,pgwire=warn,buoyant_kernel=warn,deltalake_core=warn".into()
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    panorama::pgwire::panics::install_hook();
    let cli = Cli::parse();
    let settings =
        config::Config::load(cli.config.as_deref()).context("loading the configuration")?;
    let command = cli.command.unwrap_or(Command::Serve(ServeArgs {
        listen: config::parse_listen(DEFAULT_PG_ADDR).map_err(anyhow::Error::msg)?,
        no_seed: false,
        memory_limit_mb: 4096,
        collect_listen: None,
        wal_dir: None,
        no_collect: false,
        console_listen: None,
        no_console: false,
        workers: Vec::new(),
    }));
    match command {
        Command::Serve(args) => serve(&cli.lake, &settings, args).await,
        Command::Worker {
            listen,
            memory_limit_mb,
        } => run_worker(&cli.lake, &settings, listen, memory_limit_mb).await,
        Command::Refresh { full } => run_refresh(&cli.lake, &settings, full).await,
        Command::Identity { action } => run_identity(&cli.lake, &settings, action).await,
        Command::Generate { scale, seed, files } => {
            run_generate(&cli.lake, &settings, GenerateOptions { scale, seed }, files).await
        }
        Command::Sql { query } => run_sql(&cli.lake, &settings, &query).await,
        Command::Jobs => list_jobs(&cli.lake, &settings).await,
        Command::Passwd => passwd(),
        Command::Ingest {
            table,
            paths,
            map,
            defaults,
            drop,
        } => {
            let flags = IngestFlags {
                map: &map,
                defaults: &defaults,
                drop: &drop,
            };
            run_ingest(&cli.lake, &settings, &table, &paths, flags).await
        }
        Command::RunJob { name } => run_job(&cli.lake, &settings, &name).await,
        Command::Compact { tables } => run_compact(&cli.lake, &settings, &tables).await,
        Command::Vacuum {
            tables,
            retain_hours,
        } => run_vacuum(&cli.lake, &settings, &tables, retain_hours).await,
        Command::Lake {
            action: LakeAction::Upgrade,
        } => run_upgrade(&cli.lake).await,
        Command::Privacy { action } => run_privacy(&cli.lake, &settings, action).await,
        Command::Export {
            segment,
            format,
            to,
            purpose,
        } => run_export(&cli.lake, &settings, &segment, format, &to, &purpose).await,
    }
}

/// `panorama privacy …`: the rights of erasure, restriction, access and
/// the proof of consent.
async fn run_privacy(
    location: &str,
    settings: &config::Config,
    action: PrivacyAction,
) -> Result<()> {
    match action {
        PrivacyAction::Forget {
            identifiers,
            file,
            no_suppress,
        } => {
            let options = panorama::privacy::ForgetOptions {
                suppress: !no_suppress,
            };
            run_forget(location, settings, &identifiers, file.as_deref(), options).await
        }
        PrivacyAction::Status { request } => privacy_status(location, settings, &request).await,
        PrivacyAction::Suppress { identifiers, file } => {
            run_suppress(location, settings, &identifiers, file.as_deref(), false).await
        }
        PrivacyAction::Unsuppress { identifiers, file } => {
            run_suppress(location, settings, &identifiers, file.as_deref(), true).await
        }
        PrivacyAction::Export {
            identifiers,
            file,
            to,
            csv,
        } => {
            let requested = identifiers_to_forget(&identifiers, file.as_deref())?;
            let lake = open_current_lake(location, settings).await?;
            let done = panorama::privacy::export(
                &lake,
                &settings.identity,
                &requested,
                &to,
                csv.as_deref(),
            )
            .await
            .context("exporting")?;
            println!(
                "request {}: {} identifiers of {} profiles; wrote {}",
                done.request_id,
                done.identifiers,
                done.profiles,
                to.display()
            );
            for (table, rows) in &done.rows {
                println!("  {table}: {rows} rows");
            }
            if let Some(csv) = csv {
                println!("and one CSV file per table in {}", csv.display());
            }
            Ok(())
        }
        PrivacyAction::Proof { identifiers, file } => {
            let requested = identifiers_to_forget(&identifiers, file.as_deref())?;
            let lake = open_current_lake(location, settings).await?;
            let proof = panorama::privacy::proof(&lake, &settings.identity, &requested)
                .await
                .context("gathering the proof of consent")?;
            print_proof(&proof, &settings.consent);
            Ok(())
        }
    }
}

/// `panorama privacy status <request>`: the request's rows of
/// `system.privacy_requests`.
async fn privacy_status(location: &str, settings: &config::Config, request: &str) -> Result<()> {
    let id = uuid::Uuid::parse_str(request.trim())
        .with_context(|| format!("'{request}' is not a request id (a UUID)"))?;
    let sql = format!(
        "SELECT status, kind, id_type, value_hash, requested_at, due_at, completed_at, \
         identifiers, profiles, rows_removed, files_rewritten, tables, error \
         FROM system.privacy_requests WHERE request_id = '{id}' \
         ORDER BY completed_at NULLS FIRST, id_type"
    );
    let lake = open_current_lake(location, settings).await?;
    let ctx = engine::session(&lake, &settings.engine_options())?;
    let batches = query::run(&ctx, &sql).await?;
    if batches.iter().all(|b| b.num_rows() == 0) {
        anyhow::bail!("no privacy request {id} in system.privacy_requests");
    }
    println!("{}", query::render(&batches)?);
    Ok(())
}

/// A proof of consent, purpose by purpose.
fn print_proof(
    proof: &panorama::privacy::Proof,
    consent: &panorama::identity::consent::ConsentConfig,
) {
    println!(
        "request {}: {} profile(s) {}",
        proof.request_id,
        proof.profiles.len(),
        proof.profiles.join(", ")
    );
    for (purpose, answers) in &proof.answers {
        let answer = match answers.as_slice() {
            [] if consent.needs_opt_in(purpose) => "no answer (not granted: opt-in)".to_string(),
            [] => "no answer (granted: opt-out purpose)".to_string(),
            answers => answers.join(", "),
        };
        println!("{purpose}: {answer}");
        for e in proof.evidence.iter().filter(|e| &e.purpose == purpose) {
            println!(
                "  {}  {:<8} source {}  {}{}",
                e.recorded_at,
                e.status,
                e.source,
                e.record,
                e.notice_version
                    .as_deref()
                    .map(|v| format!("  notice {v}"))
                    .unwrap_or_default()
            );
        }
    }
}

/// (type, value) pairs from the command line and from a CSV file, for a
/// privacy request.
fn identifiers_to_forget(pairs: &[String], file: Option<&Path>) -> Result<Vec<(String, String)>> {
    if !pairs.len().is_multiple_of(2) {
        anyhow::bail!(
            "identifiers come in pairs of type and value (e.g. `email jane@example.com`); \
             {} words were given",
            pairs.len()
        );
    }
    let mut out: Vec<(String, String)> = pairs
        .chunks(2)
        .map(|p| (p[0].clone(), p[1].clone()))
        .collect();
    if let Some(file) = file {
        let mut reader =
            csv::Reader::from_path(file).with_context(|| format!("opening {}", file.display()))?;
        let headers = reader
            .headers()
            .with_context(|| format!("reading the header of {}", file.display()))?
            .clone();
        let (Some(t), Some(v)) = (
            headers.iter().position(|h| h.trim() == "id_type"),
            headers.iter().position(|h| h.trim() == "value"),
        ) else {
            anyhow::bail!("{}: the header must name id_type and value", file.display());
        };
        for (i, record) in reader.records().enumerate() {
            // Line numbers only: the values are personal data.
            let record = record
                .with_context(|| format!("{}: line {} is unreadable", file.display(), i + 2))?;
            match (record.get(t), record.get(v)) {
                (Some(t), Some(v)) if !t.trim().is_empty() && !v.trim().is_empty() => {
                    out.push((t.trim().to_string(), v.to_string()))
                }
                _ => anyhow::bail!("{}: line {} lacks id_type or value", file.display(), i + 2),
            }
        }
    }
    if out.is_empty() {
        anyhow::bail!("name the identifiers (`email jane@example.com`, or --file ids.csv)");
    }
    Ok(out)
}

async fn run_suppress(
    location: &str,
    settings: &config::Config,
    pairs: &[String],
    file: Option<&Path>,
    lift: bool,
) -> Result<()> {
    let requested = identifiers_to_forget(pairs, file)?;
    let lake = open_current_lake(location, settings).await?;
    let n = panorama::privacy::suppress(&lake, &settings.identity, &requested, lift)
        .await
        .context("recording the suppression")?;
    if lift {
        println!("{n} identifiers no longer suppressed: new data carrying them lands again");
    } else {
        println!(
            "{n} identifiers suppressed: ingest and the collector drop new rows carrying them \
             (see system.ingests.rows_suppressed)"
        );
    }
    Ok(())
}

async fn run_forget(
    location: &str,
    settings: &config::Config,
    pairs: &[String],
    file: Option<&Path>,
    options: panorama::privacy::ForgetOptions,
) -> Result<()> {
    let requested = identifiers_to_forget(pairs, file)?;
    let lake = open_current_lake(location, settings).await?;
    let bar = ProgressBar::new_spinner().with_style(ProgressStyle::with_template(
        "{spinner} {elapsed_precise} {msg}",
    )?);
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let done = panorama::privacy::forget(&lake, &settings.identity, &requested, options, |step| {
        bar.set_message(step.to_string())
    })
    .await
    .context("erasing")?;
    bar.finish_and_clear();
    println!(
        "request {}: {} identifiers of {} profiles erased; {} rows removed, {} files rewritten, \
         {} old files deleted",
        done.request_id,
        done.identifiers,
        done.profiles,
        done.rows(),
        done.files_rewritten,
        done.files_purged
    );
    for (table, rows) in &done.rows_removed {
        println!("  {table}: {rows} rows");
    }
    Ok(())
}

async fn run_compact(location: &str, settings: &config::Config, names: &[String]) -> Result<()> {
    let lake = open_current_lake(location, settings).await?;
    let tables = panorama::maintenance::raw_tables(&lake, names)?;
    let total = panorama::maintenance::compact(&lake, &tables, |table, done| {
        eprintln!(
            "raw.{table}: {} files rewritten into {}",
            done.files_removed, done.files_added
        );
    })
    .await
    .context("compacting")?;
    println!(
        "compacted {} files into {} (run `panorama vacuum` after {} hours to delete the old ones)",
        total.files_removed,
        total.files_added,
        panorama::maintenance::DEFAULT_RETENTION_HOURS
    );
    Ok(())
}

async fn run_vacuum(
    location: &str,
    settings: &config::Config,
    names: &[String],
    retain_hours: u32,
) -> Result<()> {
    let lake = open_current_lake(location, settings).await?;
    let tables = panorama::maintenance::raw_tables(&lake, names)?;
    let deleted = panorama::maintenance::vacuum(&lake, &tables, retain_hours)
        .await
        .context("vacuuming")?;
    println!("deleted {deleted} files no version of the last {retain_hours} hours reads");
    Ok(())
}

async fn run_upgrade(location: &str) -> Result<()> {
    let lake = open_lake(location)?;
    let upgraded = panorama::maintenance::upgrade(
        &lake,
        |table, files| {
            eprintln!("raw.{table}: moving the rows of {files} files into its Delta table");
        },
        |dir, rows| eprintln!("{dir}: {rows} records moved into its Delta table"),
    )
    .await
    .context("upgrading the lake")?;
    if upgraded.is_empty() {
        println!("the lake is up to date");
    } else {
        let rows: usize = upgraded.iter().map(|(_, landed)| landed.rows).sum();
        println!(
            "upgraded {} raw tables ({rows} rows); `panorama refresh` rebuilds the profiles from them",
            upgraded.len()
        );
    }
    Ok(())
}

fn passwd() -> Result<()> {
    use std::io::BufRead;
    eprintln!("password (read from standard input, one line):");
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password")?;
    let password = line.trim_end_matches(['\n', '\r']);
    anyhow::ensure!(!password.is_empty(), "an empty password cannot be used");
    let salt = *uuid::Uuid::new_v4().as_bytes();
    let verifier = panorama::pgwire::auth::Verifier::make(password, &salt, 4096);
    println!("{}", verifier.to_text());
    Ok(())
}

fn open_lake(location: &str) -> Result<Lake> {
    Lake::open(location).with_context(|| format!("opening the lake at {location}"))
}

/// The lake, refused when it still needs `panorama lake upgrade`.
/// Open the lake at `location`, refuse one an older release wrote, and
/// know its declared tables and those `settings` declares.
async fn open_current_lake(location: &str, settings: &config::Config) -> Result<Lake> {
    let lake = open_lake(location)?;
    panorama::maintenance::check_upgraded(&lake).await?;
    lake.load_declared_tables()
        .await
        .context("reading the lake's declared tables")?;
    for declaration in &settings.declared {
        let (table, changed) = lake
            .declare_table(declaration)
            .await
            .with_context(|| format!("declaring raw.{} from [tables]", declaration.name))?;
        if changed {
            eprintln!("raw.{table}: declared in the lake (panorama.toml [tables.{table}])");
        }
    }
    // Now that the lake's own tables are known too.
    settings.identity.validate()?;
    Ok(lake)
}

async fn run_identity(
    location: &str,
    settings: &config::Config,
    action: IdentityAction,
) -> Result<()> {
    let lake = open_current_lake(location, settings).await?;
    let (block, args) = match action {
        IdentityAction::Block(a) => (true, a),
        IdentityAction::Unblock(a) => (false, a),
    };
    let ident = |t: &str, v: &str| blocks::identifier(&settings.identity, t, v);
    let decision = blocks::Block {
        block,
        identifier: ident(&args.id_type, &args.value)?,
        other: match &args.link {
            Some(pair) => Some(ident(&pair[0], &pair[1])?),
            None => None,
        },
        reason: args.reason,
    };
    blocks::record(&lake, &decision, chrono::Utc::now()).await?;
    eprintln!(
        "{} {}; run `panorama refresh` to apply it",
        if block { "blocked" } else { "unblocked" },
        blocks::describe(&decision)
    );
    Ok(())
}

/// Tell the allocator to keep the memory it frees instead of returning it
/// to the system after 10 ms: a refresh's tables grow by doubling and each
/// file's scratch tables come and go, and every page given back is zeroed
/// again by the kernel when it is taken back (a tenth of a scale-1,000
/// refresh). For batch commands only: `serve` should give memory back.
fn keep_freed_memory() {
    // `mi_option_purge_delay` (16th in `mi_option_e` of mimalloc 2 and 3;
    // libmimalloc-sys does not name it): -1 = never purge.
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: sets a global option; mimalloc reads it on each purge.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

/// A refresh touches gigabytes of fresh memory once: on a host that
/// takes freed memory back, 4 KiB pages fault in five times cheaper than
/// huge ones (see [`panorama::host`]), so huge pages are turned off there,
/// unless `MIMALLOC_ALLOW_THP` says otherwise.
fn choose_page_size() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() || !host::reclaims_freed_memory() {
        return;
    }
    match host::avoid_huge_pages() {
        Ok(()) => tracing::debug!("the host reclaims freed memory: huge pages off"),
        Err(e) => tracing::debug!("could not turn huge pages off: {e}"),
    }
}

async fn run_refresh(location: &str, settings: &config::Config, full: bool) -> Result<()> {
    keep_freed_memory();
    choose_page_size();
    let lake = open_current_lake(location, settings).await?;
    let started = Instant::now();
    let bar = ProgressBar::new_spinner().with_style(ProgressStyle::with_template(
        "{spinner} {elapsed_precise} {msg}",
    )?);
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let mode = if full {
        panorama::identity::Mode::Full
    } else {
        panorama::identity::Mode::Incremental
    };
    let report = panorama::identity::refresh(
        &lake,
        &settings.identity,
        mode,
        chrono::Utc::now(),
        |step| {
            tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "{step}");
            bar.set_message(step.to_string())
        },
    )
    .await
    .context("refreshing identities and profiles")?;
    bar.finish_and_clear();
    eprintln!(
        "{} refresh {} committed in {:.1} s (identity graph {:.1} s, of which resolution {:.2} s, union-find {:.2} s; views {:.1} s): {} raw rows from {} files, {} identifiers, {} links → {} profiles ({} new), {} merges, {} splits, {} links refused, {} values blocked",
        match &report.full_reason {
            Some(why) => format!("full ({why})"),
            None => "incremental".to_string(),
        },
        report.version,
        started.elapsed().as_secs_f64(),
        report.graph_ms as f64 / 1000.0,
        report.resolve_ms as f64 / 1000.0,
        report.union_find_ms as f64 / 1000.0,
        report.views_ms as f64 / 1000.0,
        report.raw_rows,
        report.raw_files,
        report.identifiers,
        report.links,
        report.profiles,
        report.new_profiles,
        report.merges,
        report.splits,
        report.refused_links,
        report.blocked_values
    );
    for (source, refused) in &report.refused_values {
        let files = match refused.files.len() {
            1 => format!(
                "in {}",
                refused.files.keys().next().map_or("", |f| f.as_str())
            ),
            n => format!("in {n} files"),
        };
        eprintln!(
            "{source}: {} values its rule could not normalise linked nothing, {files} \
             (system.refreshes.refused_values lists them per file; set invalid = \"keep\" \
             on the type to keep them as sent)",
            refused.total
        );
    }
    Ok(())
}

async fn serve(location: &str, settings: &config::Config, args: ServeArgs) -> Result<()> {
    let mut settings = settings.clone();
    if let Some(listen) = args.collect_listen {
        settings.collector.listen = listen;
    }
    if let Some(dir) = &args.wal_dir {
        settings.collector.wal_dir = dir.clone();
    }
    settings.collector.enabled &= !args.no_collect;
    if let Some(listen) = args.console_listen {
        settings.console.listen = listen;
    }
    settings.console.enabled &= !args.no_console;
    settings
        .cluster
        .workers
        .extend(args.workers.iter().cloned());
    let lake = open_current_lake(location, &settings).await?;
    let mut server = panorama::server::Server::builder(lake.clone(), settings.clone())
        .listen(args.listen)
        .engine(EngineOptions {
            memory_limit: args.memory_limit_mb << 20,
            ..settings.engine_options()
        });
    // Refused before anything long runs.
    server.check()?;
    prepare(&lake, &settings, &args).await?;
    let running = server.start().await?;
    tracing::info!(
        lake = %lake.url(),
        "ready: psql -h {} -p {} -U panorama panorama",
        running.addr.ip(),
        running.addr.port()
    );
    running
        .until(async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("Ctrl-C received");
        })
        .await
        .context("serving")
}

/// `panorama worker`: serve tasks until Ctrl-C.
async fn run_worker(
    location: &str,
    settings: &config::Config,
    listen: SocketAddr,
    memory_limit_mb: usize,
) -> Result<()> {
    let lake = open_current_lake(location, settings).await?;
    let options = EngineOptions {
        memory_limit: memory_limit_mb << 20,
        ..settings.engine_options()
    };
    let secret = settings.cluster.secret.clone();
    let worker = panorama::cluster::start(&lake, &options, listen, secret).await?;
    // The address on stdout, for scripts that start workers on port 0.
    println!("worker listening on {}", worker.addr);
    tokio::select! {
        served = worker.until() => served.context("the worker stopped"),
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("Ctrl-C received");
            Ok(())
        }
    }
}

/// Ready the lake for serving, showing progress: seed an empty lake with
/// the sample data (unless `--no-seed`), build the first profiles of a lake
/// never refreshed, record refreshes an earlier process left unfinished,
/// and complete an erasure a crash interrupted before anyone can query the
/// rows it was removing.
async fn prepare(lake: &Lake, settings: &config::Config, args: &ServeArgs) -> Result<()> {
    if !args.no_seed {
        let bar = ProgressBar::new(panorama::schema::RawTable::ALL.len() as u64).with_style(
            ProgressStyle::with_template("seeding sample data {bar:30} {pos}/{len} {msg}")?,
        );
        let seeded = seed::seed_if_empty(lake, |table, landed| {
            bar.set_message(format!("raw.{table}: {} rows", landed.rows));
            bar.inc(1);
        })
        .await
        .context("seeding the lake with the sample data")?;
        bar.finish_and_clear();
        if let Some(landed) = seeded {
            tracing::info!(
                rows = landed.rows,
                files = landed.files,
                "seeded the empty lake with the bundled sample data"
            );
        }
    }
    if panorama::lake::manifest::Manifest::load(lake)
        .await?
        .is_none()
        && lake.has_raw_data().await?
    {
        let bar = ProgressBar::new_spinner().with_style(ProgressStyle::with_template(
            "{spinner} building profiles: {msg}",
        )?);
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        let report = panorama::identity::refresh(
            lake,
            &settings.identity,
            panorama::identity::Mode::Incremental,
            chrono::Utc::now(),
            |step| bar.set_message(step.to_string()),
        )
        .await
        .context("building the first profiles")?;
        bar.finish_and_clear();
        tracing::info!(
            profiles = report.profiles,
            "built the unified profiles (cdp.profiles); REFRESH MATERIALIZED VIEW cdp.profiles updates them"
        );
    }
    let interrupted = panorama::identity::record_interrupted(lake)
        .await
        .context("recording refreshes an earlier process left unfinished")?;
    if interrupted > 0 {
        tracing::warn!(
            interrupted,
            "earlier refreshes stopped before committing: recorded as interrupted in system.refreshes"
        );
    }
    let bar = ProgressBar::new_spinner().with_style(ProgressStyle::with_template(
        "{spinner} {elapsed_precise} {msg}",
    )?);
    let resumed = panorama::privacy::resume(lake, &settings.identity, &mut |step: &str| {
        bar.set_message(step.to_string())
    })
    .await
    .map_err(|e| anyhow::anyhow!(panorama::redact::values(&e.to_string())))
    .context("completing an interrupted erasure")?;
    bar.finish_and_clear();
    for done in resumed {
        tracing::info!(request = %done.request_id, rows = done.rows(), "completed an interrupted erasure");
    }
    Ok(())
}

async fn run_generate(
    location: &str,
    settings: &config::Config,
    options: GenerateOptions,
    files: Option<PathBuf>,
) -> Result<()> {
    let lake;
    let output = match &files {
        Some(dir) => Output::Files(dir.clone()),
        None => {
            lake = open_current_lake(location, settings).await?;
            Output::Lake(&lake)
        }
    };
    let target = files
        .as_ref()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|| location.to_string());
    eprintln!(
        "generating scale {} (seed {}) into {target}",
        options.scale, options.seed
    );
    let started = Instant::now();
    let bar = ProgressBar::new(u64::from(generate::model::DAYS)).with_style(
        ProgressStyle::with_template("{elapsed_precise} {bar:40} day {pos}/{len} {msg}")?,
    );
    let summary = generate::generate(options, output, |p| {
        bar.set_position(u64::from(p.days_done));
        bar.set_message(format!("{} rows", p.rows));
    })
    .await
    .context("generating data")?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    for (table, landed) in &summary.tables {
        eprintln!(
            "  raw.{table:<17} {:>12} rows {:>6} files",
            landed.rows, landed.files
        );
    }
    eprintln!(
        "done: {} rows in {secs:.1} s ({:.0} rows/s)",
        summary.rows(),
        summary.rows() as f64 / secs.max(1e-9)
    );
    Ok(())
}

fn pairs(values: &[String], what: &str) -> Result<std::collections::BTreeMap<String, String>> {
    values
        .iter()
        .map(|v| {
            v.split_once('=')
                .map(|(a, b)| (a.trim().to_string(), b.trim().to_string()))
                .with_context(|| format!("--{what} {v}: expected COLUMN=VALUE"))
        })
        .collect()
}

/// `panorama ingest`'s options as given on the command line.
struct IngestFlags<'a> {
    map: &'a [String],
    defaults: &'a [String],
    drop: &'a [String],
}

async fn run_ingest(
    location: &str,
    settings: &config::Config,
    table: &str,
    paths: &[PathBuf],
    flags: IngestFlags<'_>,
) -> Result<()> {
    let IngestFlags {
        map,
        defaults,
        drop,
    } = flags;
    use panorama::ingest::fetch as files_fetch;
    use panorama::ingest::files;
    let lake = open_current_lake(location, settings).await?;
    let Some(raw) = lake.raw_table(table) else {
        let names: Vec<&str> = lake.raw_tables().iter().map(|t| t.name()).collect();
        anyhow::bail!("no raw table '{table}' (tables: {})", names.join(", "));
    };
    // panorama.toml's [ingest.<table>], then the command line's flags.
    let configured = settings.ingest.get(table).cloned().unwrap_or_default();
    let mut mapping = configured.map;
    mapping.extend(pairs(map, "map")?);
    let mut default_values = configured.defaults;
    default_values.extend(pairs(defaults, "default")?);
    let options = files::IngestOptions {
        mapping,
        defaults: default_values,
        drop: configured.drop.iter().chain(drop).cloned().collect(),
        ..Default::default()
    }
    .normalizing(raw, &settings.identity)?;
    for column in options.mapping.keys().chain(options.defaults.keys()) {
        if raw.file_schema().field_with_name(column).is_err() {
            anyhow::bail!("raw.{table} has no column '{column}'");
        }
    }
    let (urls, local): (Vec<&PathBuf>, Vec<&PathBuf>) = paths
        .iter()
        .partition(|p| p.to_str().is_some_and(files_fetch::is_url));
    let local: Vec<PathBuf> = local.into_iter().cloned().collect();
    // (local path to read, source name to record)
    let mut inputs: Vec<(PathBuf, String)> = files::expand(&local)?
        .into_iter()
        .map(|p| {
            let name = p.display().to_string();
            (p, name)
        })
        .collect();
    let downloads = std::env::temp_dir().join(format!("panorama-ingest-{}", std::process::id()));
    if !urls.is_empty() {
        std::fs::create_dir_all(&downloads).context("creating a folder for downloads")?;
    }
    let (mut landed, mut rejected) = (0u64, 0u64);
    let result = async {
        for url in urls {
            let url = url.display().to_string();
            let bar = ProgressBar::new_spinner().with_style(ProgressStyle::with_template(
                "{spinner} {elapsed_precise} downloading {msg}",
            )?);
            bar.enable_steady_tick(std::time::Duration::from_millis(200));
            let dir = downloads.join(inputs.len().to_string());
            std::fs::create_dir_all(&dir).context("creating a folder for downloads")?;
            let path = files_fetch::download(&url, &dir, |bytes| {
                bar.set_message(format!("{url}: {} MB", bytes >> 20))
            })
            .await
            .with_context(|| format!("downloading {url}"))?;
            bar.finish_and_clear();
            inputs.push((path, url));
        }
        for (file, name) in &inputs {
            let bar = ProgressBar::new_spinner().with_style(ProgressStyle::with_template(
                "{spinner} {elapsed_precise} {msg}",
            )?);
            bar.enable_steady_tick(std::time::Duration::from_millis(200));
            let report = files::load_file_as(&lake, raw, file, name, &options, |read| {
                bar.set_message(format!("{name}: {read} rows read"))
            })
            .await
            .with_context(|| format!("loading {name}"))?;
            bar.finish_and_clear();
            if report.skipped {
                eprintln!("{name}: already loaded (same content and options), skipped");
                continue;
            }
            print_file_report(name, table, &report);
            landed += report.rows_landed;
            rejected += report.rows_rejected;
        }
        anyhow::Ok(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&downloads);
    result?;
    eprintln!(
        "raw.{table}: {landed} rows landed, {rejected} rejected{}",
        if rejected > 0 {
            " (see SELECT * FROM system.rejects)"
        } else {
            ""
        }
    );
    if rejected > 0 {
        std::process::exit(2);
    }
    Ok(())
}

/// What loading one file did, for the person who ran `panorama ingest`.
fn print_file_report(name: &str, table: &str, report: &panorama::ingest::files::FileReport) {
    eprintln!(
        "{name}: {} rows read, {} landed in {} files, {} rejected",
        report.rows_read, report.rows_landed, report.files_written, report.rows_rejected
    );
    let list = |set: &std::collections::BTreeSet<String>| {
        set.iter().cloned().collect::<Vec<_>>().join(", ")
    };
    if !report.kept_in_extra.is_empty() {
        eprintln!(
            "{name}: fields with no column of raw.{table}, kept in its extra column \
             (JSON: json_get_str(extra, 'field')): {}",
            list(&report.kept_in_extra)
        );
    }
    if !report.dropped.is_empty() {
        eprintln!(
            "{name}: fields left out (--drop): {}",
            list(&report.dropped)
        );
    }
    if report.rows_suppressed > 0 {
        eprintln!(
            "{name}: {} rows not kept: they carry a suppressed identifier",
            report.rows_suppressed
        );
    }
}

async fn list_jobs(location: &str, settings: &config::Config) -> Result<()> {
    let lake = open_current_lake(location, settings).await?;
    let jobs = jobs::load(&lake).await.context("reading the jobs")?;
    let now = chrono::Utc::now();
    println!(
        "{:<20} {:<16} {:<34} {:<8} {:<8} {:<18} origin",
        "job", "schedule (UTC)", "target", "mode", "refresh", "next run"
    );
    for job in jobs {
        println!(
            "{:<20} {:<16} {:<34} {:<8} {:<8} {:<18} {}",
            job.name,
            job.schedule_text,
            format!("analytics.{}", job.target),
            format!("{:?}", job.mode).to_lowercase(),
            job.refresh,
            job.next_after(now)
                .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                .unwrap_or_else(|| "never".into()),
            job.origin
        );
    }
    Ok(())
}

async fn run_job(location: &str, settings: &config::Config, name: &str) -> Result<()> {
    let lake = open_current_lake(location, settings).await?;
    let all = jobs::load(&lake).await.context("reading the jobs")?;
    let Some(job) = all.iter().find(|j| j.name == name) else {
        let names: Vec<&str> = all.iter().map(|j| j.name.as_str()).collect();
        anyhow::bail!("no job named '{name}' (jobs: {})", names.join(", "));
    };
    let ctx = engine::session(&lake, &settings.engine_options())?;
    eprintln!("running job {name} → analytics.{}", job.target);
    let run = jobs::run(&ctx, &lake, &settings.identity, job, chrono::Utc::now()).await?;
    match run.error {
        None => {
            eprintln!(
                "job {name} succeeded: {} rows, analytics.{} version {} ({:.1} s)",
                run.rows_written,
                run.target,
                run.version.unwrap_or_default(),
                (run.finished_at - run.started_at).num_milliseconds() as f64 / 1000.0
            );
            Ok(())
        }
        Some(e) => anyhow::bail!(
            "job {name} failed (the previous analytics.{} is kept): {e}",
            run.target
        ),
    }
}

async fn run_export(
    location: &str,
    settings: &config::Config,
    segment: &str,
    format: ExportFormat,
    to: &str,
    purpose: &str,
) -> Result<()> {
    let lake = open_current_lake(location, settings).await?;
    let ctx = engine::session(&lake, &settings.engine_options())?;
    let summary = panorama::export::export(
        &ctx,
        &settings.consent,
        segment,
        purpose,
        match format {
            ExportFormat::Csv => panorama::export::Format::Csv,
            ExportFormat::Parquet => panorama::export::Format::Parquet,
        },
        to,
    )
    .await
    .with_context(|| format!("exporting segment {segment}"))?;
    eprintln!(
        "exported {} profiles of analytics.{segment} to {to}; left out {} without a granted {purpose} consent",
        summary.written, summary.left_out
    );
    Ok(())
}

async fn run_sql(location: &str, settings: &config::Config, sql: &str) -> Result<()> {
    let lake = open_current_lake(location, settings).await?;
    let ctx = engine::session(&lake, &settings.engine_options())?;
    let batches = query::run(&ctx, sql).await?;
    println!("{}", query::render(&batches)?);
    Ok(())
}
