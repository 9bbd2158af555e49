//! Scale-out: a front end with workers on loopback answers every shipped
//! query exactly as one machine does — for an administrator and for a
//! masked analyst, errors included — shows its stages in `EXPLAIN`, and
//! when a worker dies mid-query the client gets a clear error and the
//! next query runs on the workers left.

use std::net::SocketAddr;
use std::time::Duration;

use panorama::engine::EngineOptions;
use panorama::engine::distributed::{ClusterOptions, PROBE};
use panorama::lake::Lake;
use panorama::pgwire::auth::Role;

use crate::s3::{S3Server, s3_options};
use crate::support::*;

/// A query's answer: its rows sorted, or its SQLSTATE and message.
type Answer = Result<Vec<Vec<Option<String>>>, (String, String)>;

async fn answer(client: &tokio_postgres::Client, sql: &str) -> Answer {
    match client.simple_query(sql).await {
        Ok(messages) => {
            let mut rows: Vec<Vec<Option<String>>> = messages
                .iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => {
                        Some((0..r.len()).map(|i| r.get(i).map(String::from)).collect())
                    }
                    _ => None,
                })
                .collect();
            rows.sort();
            Ok(rows)
        }
        Err(e) => {
            let db = e
                .as_db_error()
                .expect("a server error, not a lost connection");
            Err((db.code().code().to_string(), db.message().to_string()))
        }
    }
}

/// Whether two answers are the same, floating-point numbers to a relative
/// 1e-6: sums differ in their last digits (their order of addition depends
/// on how rows were split), and the views that measure ages from `now()`
/// (churn risk) move by the seconds between the two runs.
fn same(a: &Answer, b: &Answer) -> bool {
    let cell = |x: &Option<String>, y: &Option<String>| match (x, y) {
        (Some(x), Some(y)) if x != y => match (x.parse::<f64>(), y.parse::<f64>()) {
            (Ok(x), Ok(y)) => (x - y).abs() <= 1e-6 * x.abs().max(1.0),
            _ => false,
        },
        _ => x == y,
    };
    match (a, b) {
        (Ok(a), Ok(b)) => {
            a.len() == b.len()
                && a.iter()
                    .zip(b)
                    .all(|(r, s)| r.len() == s.len() && r.iter().zip(s).all(|(x, y)| cell(x, y)))
        }
        _ => a == b,
    }
}

/// Every query Panorama ships: `sql/bench` and each `sql/analytics` view.
fn shipped_queries() -> Vec<(String, String)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sql");
    let mut queries = Vec::new();
    for dir in ["bench", "analytics"] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "sql"))
            .collect();
        files.sort();
        for file in files {
            let name = file.file_stem().unwrap().to_string_lossy().to_string();
            let sql = match dir {
                "bench" => std::fs::read_to_string(&file).unwrap(),
                _ => format!("SELECT * FROM analytics.{name}"),
            };
            queries.push((format!("{dir}/{name}"), sql));
        }
    }
    assert!(
        queries.len() >= 20,
        "found {} shipped queries",
        queries.len()
    );
    queries
}

/// Engine options sending every scan to `workers` (one byte per task:
/// the sample's small files are split as far as the workers allow).
fn over(workers: &[SocketAddr]) -> EngineOptions {
    EngineOptions {
        target_partitions: 2,
        cluster: ClusterOptions {
            workers: workers.iter().map(|a| a.to_string()).collect(),
            bytes_per_task: 1,
            secret: None,
            ..Default::default()
        },
        ..EngineOptions::default()
    }
}

fn one_machine() -> EngineOptions {
    EngineOptions {
        target_partitions: 2,
        ..EngineOptions::default()
    }
}

fn ada_and_ana() -> Vec<panorama::pgwire::auth::UserConfig> {
    vec![
        user("ada", "admin-secret", Role::Admin),
        user("ana", "analyst-secret", Role::Analyst),
    ]
}

/// The text of `EXPLAIN sql`.
async fn explain(client: &tokio_postgres::Client, sql: &str) -> String {
    simple_rows(client, &format!("EXPLAIN {sql}"))
        .await
        .into_iter()
        .flatten()
        .flatten()
        .collect::<Vec<_>>()
        .join("\n")
}

/// `n` workers over `lake` in this process, on loopback.
async fn in_process_workers(lake: &Lake, n: usize) -> Vec<panorama::cluster::RunningWorker> {
    let mut workers = Vec::new();
    for _ in 0..n {
        let listen = "127.0.0.1:0".parse().unwrap();
        let worker = panorama::cluster::start(lake, &one_machine(), listen, None).await;
        workers.push(worker.unwrap());
    }
    workers
}

/// Stop `workers`: each stops once its tasks have, so this also checks
/// that no task of an earlier query still runs.
async fn stop_workers(workers: Vec<panorama::cluster::RunningWorker>) {
    for worker in workers {
        tokio::time::timeout(Duration::from_secs(20), worker.stop())
            .await
            .expect("no task of a stopped query still runs")
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_over_an_s3_bucket_answers_every_shipped_query_as_one_machine_does() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("cdp-bucket")).unwrap();
    let s3 = S3Server::start(root.path()).await;
    let lake = Lake::open_with_options("s3://cdp-bucket/lake", &s3_options(s3.addr)).unwrap();
    panorama::seed::seed(&lake, |_, _| {}).await.unwrap();
    refresh_now(&lake).await;

    let workers = in_process_workers(&lake, 2).await;
    let addrs: Vec<SocketAddr> = workers.iter().map(|w| w.addr).collect();
    let actions = || panorama::pgwire::Actions::default();
    let single = TestServer::start_secure(&lake, actions(), one_machine(), ada_and_ana()).await;
    let cluster = TestServer::start_secure(&lake, actions(), over(&addrs), ada_and_ana()).await;

    let queries = shipped_queries();
    for (role, user, password) in [
        ("admin", "ada", "admin-secret"),
        ("analyst", "ana", "analyst-secret"),
    ] {
        let one = connect_as(&single, user, password).await.unwrap();
        let many = connect_as(&cluster, user, password).await.unwrap();
        let mut checks: Vec<(String, String)> = queries.clone();
        checks.extend([
            // The analytics functions over raw rows.
            (
                "functions".into(),
                "SELECT channel, nps(score), csat(score), ces(score), count(*) \
                 FROM raw.survey_responses GROUP BY channel"
                    .into(),
            ),
            // Personal columns: masked for the analyst, on both.
            (
                "personal".into(),
                "SELECT email, phone, first_name, traits FROM raw.customers".into(),
            ),
            // An error raised where the rows are: the same SQLSTATE and
            // message.
            (
                "error".into(),
                "SELECT sum(1 / (length(type) - length(type))) FROM raw.events".into(),
            ),
        ]);
        for (name, sql) in &checks {
            let expected = answer(&one, sql).await;
            let got = answer(&many, sql).await;
            assert!(
                same(&expected, &got),
                "{role}, {name}: one machine answered {expected:?}, the cluster {got:?}"
            );
            if name == "error" {
                assert!(expected.is_err(), "division by zero fails: {expected:?}");
            }
        }
    }

    // Where each part ran: the stages and their tasks on the workers.
    let admin = connect_as(&cluster, "ada", "admin-secret").await.unwrap();
    let mut distributed = Vec::new();
    for (name, sql) in queries.iter().filter(|(n, _)| n.starts_with("bench/")) {
        let plan = explain(&admin, sql).await;
        if plan.contains("Stage") && plan.contains("tasks=") {
            distributed.push(name.clone());
        }
    }
    assert!(
        distributed.len() >= 8,
        "most sql/bench queries run on the workers, only these did: {distributed:?}"
    );
    // An analyst's scan is split over the workers, each part masked on
    // the worker that reads it.
    let analyst = connect_as(&cluster, "ana", "analyst-secret").await.unwrap();
    let plan = explain(&analyst, "SELECT count(DISTINCT email) FROM raw.customers").await;
    let stage_with_mask = plan
        .split("Stage ")
        .any(|stage| stage.contains("── tasks=2") && stage.contains("MaskExec"));
    assert!(stage_with_mask, "masked where read, on two workers: {plan}");
    // Nor does any plan or statistic of the analyst's, distributed, show
    // a personal value.
    let email = simple_rows(
        &admin,
        "SELECT email FROM raw.customers WHERE email IS NOT NULL LIMIT 1",
    )
    .await[0][0]
        .clone()
        .unwrap();
    let filtered = format!("SELECT count(*) FROM raw.customers WHERE email = '{email}'");
    for shown in [
        explain(&analyst, &filtered).await,
        explain(&analyst, &format!("ANALYZE {filtered}")).await,
        explain(&analyst, "ANALYZE SELECT email, phone FROM raw.customers").await,
    ] {
        assert!(shown.contains("MaskExec"), "{shown}");
        let domain = email.split('@').nth(1).unwrap();
        let leaked = shown
            .lines()
            .filter(|l| !l.contains("SELECT") && !l.contains("Filter"));
        for line in leaked {
            assert!(!line.contains(&email) && !line.contains(domain), "{line}");
        }
    }
    let plan = explain(&admin, "SELECT 1").await;
    assert!(
        !plan.contains("Stage"),
        "SELECT 1 stays on the front end: {plan}"
    );

    cluster.stop().await;
    single.stop().await;
    stop_workers(workers).await;
}

/// `panorama worker` in a process of its own, killed when dropped.
struct WorkerProcess {
    child: std::process::Child,
    addr: SocketAddr,
}

impl WorkerProcess {
    fn start(lake: &std::path::Path) -> WorkerProcess {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_panorama"))
            .args(["--lake".as_ref(), lake.as_os_str()])
            .args([
                "worker",
                "--listen",
                "127.0.0.1:0",
                "--memory-limit-mb",
                "512",
            ])
            .env_remove("PANORAMA_CONFIG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("worker listening on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("the worker says where it listens: {line:?}"));
        WorkerProcess { child, addr }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_query_gives_a_clear_error_and_the_next_query_runs_on_the_others() {
    let lake = sample_lake().await;
    let path = std::path::PathBuf::from(lake.url().path());
    // Three: a stage is cut into as many tasks as there are workers, and
    // the two left must still share the next query.
    let mut doomed = WorkerProcess::start(&path);
    let kept = [WorkerProcess::start(&path), WorkerProcess::start(&path)];
    // The front end as `panorama serve --workers` starts it, every scan
    // split as far as the workers allow.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("panorama.toml");
    std::fs::write(&config, "[cluster]\nbytes_per_task = 1\n").unwrap();
    let workers = format!("{},{},{}", doomed.addr, kept[0].addr, kept[1].addr);
    let args: Vec<&std::ffi::OsStr> = vec![
        "--lake".as_ref(),
        path.as_os_str(),
        "--config".as_ref(),
        config.as_os_str(),
        "serve".as_ref(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--no-seed".as_ref(),
        "--no-collect".as_ref(),
        "--no-console".as_ref(),
        "--workers".as_ref(),
        workers.as_ref(),
    ];
    let cluster = Served::start(&args).await;
    let single = TestServer::start_with_options(&lake, Default::default(), one_machine()).await;
    let sql = "SELECT channel, count(*), sum(amount) FROM raw.orders GROUP BY channel";
    let expected = answer(&single.client().await, sql).await;
    let client = cluster.client().await;
    assert!(same(&answer(&client, sql).await, &expected));

    // A query long enough to be running on both workers when one dies.
    let heavy = "SELECT count(*) FROM raw.events a JOIN raw.events b ON a.type = b.type";
    let running = {
        let client = cluster.client().await;
        tokio::spawn(async move { answer(&client, heavy).await })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    doomed.kill();
    let outcome = tokio::time::timeout(Duration::from_secs(60), running)
        .await
        .expect("the query ends soon after the worker died")
        .unwrap();
    let (code, message) = outcome.expect_err("a query cut short is not answered");
    assert!(
        code == "58000" && message.contains("a worker of the cluster stopped answering"),
        "the error says a worker stopped ({code}): {message}"
    );

    // The front end keeps serving, on the workers left.
    tokio::time::sleep(PROBE * 3).await;
    for _ in 0..3 {
        let got = answer(&client, sql).await;
        assert!(same(&got, &expected), "after the worker died: {got:?}");
    }
    let plan = explain(&client, sql).await;
    assert!(plan.contains("tasks=2"), "two workers share it: {plan}");
    drop(cluster);
    single.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_timeout_stops_a_distributed_query_on_every_worker() {
    let lake = sample_lake().await;
    let workers = in_process_workers(&lake, 2).await;
    let addrs: Vec<SocketAddr> = workers.iter().map(|w| w.addr).collect();
    let cluster = TestServer::start_with_options(&lake, Default::default(), over(&addrs)).await;
    let client = cluster.client().await;
    let heavy = "SELECT count(*) FROM raw.events a JOIN raw.events b ON a.type = b.type";
    assert!(
        explain(&client, heavy).await.contains("Stage"),
        "the query runs on the workers"
    );
    client
        .batch_execute("SET statement_timeout = '1s'")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let (code, message) = answer(&client, heavy).await.expect_err("stopped");
    assert_eq!(code, "57014", "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "stopped at the timeout, not at the end: {:?}",
        started.elapsed()
    );
    // The workers are free again: a query that needs both answers.
    client
        .batch_execute("SET statement_timeout = 0")
        .await
        .unwrap();
    let sql = "SELECT type, count(*) FROM raw.events GROUP BY type";
    let single = TestServer::start_with_options(&lake, Default::default(), one_machine()).await;
    let expected = answer(&single.client().await, sql).await;
    assert!(same(&answer(&client, sql).await, &expected));
    cluster.stop().await;
    single.stop().await;
    stop_workers(workers).await;
}
