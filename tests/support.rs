//! Shared test fixtures: a small hand-written lake whose every value is
//! known, and a Panorama server on an ephemeral port over any lake.

use std::net::SocketAddr;
use std::sync::Arc;

use panorama::engine::{self, EngineOptions};
use panorama::ingest;
use panorama::lake::Lake;
use panorama::schema::RawTable;
use panorama::schema::rows::TableRows;

/// Microseconds of 2026-01-15T10:00:00Z.
pub const JAN_15: i64 = 1_768_471_200_000_000;
/// Microseconds in a day.
pub const DAY: i64 = 86_400_000_000;

/// A running server — the one `panorama serve` starts, without its jobs,
/// collector and console; stops when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    running: Option<panorama::server::Running>,
}

impl TestServer {
    pub async fn start(lake: &Lake) -> TestServer {
        TestServer::start_with(lake, panorama::pgwire::Actions::default()).await
    }

    /// A server whose `REFRESH MATERIALIZED VIEW` runs a real refresh.
    pub async fn start_with_refresh(lake: &Lake, now_micros: i64) -> TestServer {
        let refresh: panorama::pgwire::AdminAction = {
            let lake = lake.clone();
            Arc::new(move || {
                let lake = lake.clone();
                Box::pin(async move {
                    panorama::identity::refresh(
                        &lake,
                        &panorama::identity::IdentityConfig::default(),
                        panorama::identity::Mode::Incremental,
                        chrono::DateTime::from_timestamp_micros(now_micros).unwrap(),
                        |_| {},
                    )
                    .await
                    .map(|r| format!("version {}", r.version))
                })
            })
        };
        let call: panorama::pgwire::CallAction = {
            let lake = lake.clone();
            Arc::new(move |procedure, args| {
                let lake = lake.clone();
                Box::pin(async move {
                    use panorama::identity::blocks;
                    let config = panorama::identity::IdentityConfig::default();
                    let decision = blocks::procedure(&config, &procedure, &args)?;
                    blocks::record(&lake, &decision, chrono::Utc::now()).await?;
                    Ok(blocks::describe(&decision))
                })
            })
        };
        let actions = panorama::pgwire::Actions {
            refresh: Some(refresh),
            call: Some(call),
        };
        TestServer::start_with(lake, actions).await
    }

    async fn start_with(lake: &Lake, actions: panorama::pgwire::Actions) -> TestServer {
        let options = EngineOptions {
            target_partitions: 2,
            ..EngineOptions::default()
        };
        TestServer::start_with_options(lake, actions, options).await
    }

    /// A server with these engine options (e.g. a small memory limit).
    pub async fn start_with_options(
        lake: &Lake,
        actions: panorama::pgwire::Actions,
        options: EngineOptions,
    ) -> TestServer {
        TestServer::start_secure(lake, actions, options, Vec::new()).await
    }

    /// A server asking `users` (`[[users]]` of panorama.toml) for passwords.
    pub async fn start_secure(
        lake: &Lake,
        actions: panorama::pgwire::Actions,
        options: EngineOptions,
        users: Vec<panorama::pgwire::auth::UserConfig>,
    ) -> TestServer {
        let mut config = panorama::config::Config {
            users,
            ..Default::default()
        };
        config.console.enabled = false;
        config.collector.enabled = false;
        let running = panorama::server::Server::builder(lake.clone(), config)
            .engine(options)
            .actions(actions)
            .jobs(false)
            .start()
            .await
            .expect("server");
        TestServer {
            addr: running.addr,
            running: Some(running),
        }
    }

    pub fn conn_str(&self) -> String {
        format!(
            "host={} port={} user=panorama dbname=panorama",
            self.addr.ip(),
            self.addr.port()
        )
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.conn_str(), tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }

    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await.expect("the server stops cleanly");
        }
    }
}

/// The single `bigint` a query such as `SELECT count(*) ...` returns.
pub async fn scalar(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// The rows of a simple-protocol query, as the text the server sent.
pub async fn simple_rows(client: &tokio_postgres::Client, sql: &str) -> Vec<Vec<Option<String>>> {
    client
        .simple_query(sql)
        .await
        .unwrap()
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(String::from)).collect())
            }
            _ => None,
        })
        .collect()
}

/// The fixture lake, served, with one connected client.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub lake: Lake,
    pub server: TestServer,
    pub client: tokio_postgres::Client,
}

/// Land [`land_fixture`] in a temporary lake and serve it.
pub async fn serve_fixture() -> Fixture {
    let (dir, lake) = temp_lake();
    land_fixture(&lake).await;
    let server = TestServer::start(&lake).await;
    let client = server.client().await;
    Fixture {
        dir,
        lake,
        server,
        client,
    }
}

/// A local lake in a temporary folder.
pub fn temp_lake() -> (tempfile::TempDir, Lake) {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
    (dir, lake)
}

/// Land the fixture: three customers (messy emails and phones; Tess has the
/// junk email test@test.com), four orders
/// (one returned), all values known to the tests.
///
/// | order | customer | amount | status    | channel | day        |
/// |-------|----------|--------|-----------|---------|------------|
/// | O1    | C1       | 120.50 | completed | web     | 2026-01-15 |
/// | O2    | C1       |  30.00 | returned  | store   | 2026-01-16 |
/// | O3    | C2       |  99.99 | completed | app     | 2026-01-16 |
/// | O4    | (guest)  |  10.00 | completed | web     | 2026-01-17 |
pub async fn land_fixture(lake: &Lake) {
    let mut customers = TableRows::new(RawTable::Customers);
    for (id, email, phone, first, city) in [
        (
            "C1",
            " Jane.Doe@Example.com",
            "+33 6 12 34 56 78",
            "Jane",
            "Paris",
        ),
        ("C2", "bob@example.com", "0698765432", "Bob", "Lyon"),
        ("C3", "test@test.com", "06.11.22.33.44", "Tess", "Lille"),
    ] {
        customers
            .text(Some(id))
            .text(Some(email))
            .text(Some(phone))
            .text(Some(first))
            .text(Some("Doe"))
            .text(None)
            .text(Some(city))
            .text(None)
            .text(Some("FR"))
            .date(Some(7_000))
            .text(Some("gold"))
            .boolean(Some(true))
            .text(Some("crm"))
            .timestamp(Some(JAN_15 - 30 * DAY))
            .timestamp(Some(JAN_15));
        customers.end_row();
    }
    let mut orders = TableRows::new(RawTable::Orders);
    for (id, customer, cents, status, channel, day) in [
        ("O1", Some("C1"), 12_050, "completed", "web", 0),
        ("O2", Some("C1"), 3_000, "returned", "store", 1),
        ("O3", Some("C2"), 9_999, "completed", "app", 1),
        ("O4", None, 1_000, "completed", "web", 2),
    ] {
        orders
            .text(Some(id))
            .text(customer)
            .text(customer.is_none().then_some("guest@example.com"))
            .text(None)
            .timestamp(Some(JAN_15 + day * DAY))
            .money(Some(cents))
            .text(Some("EUR"))
            .text(Some(status))
            .text(Some(channel))
            .int(Some(1));
        orders.end_row();
    }
    let landed = ingest::land(lake, RawTable::Customers, &[customers.finish().unwrap()])
        .await
        .unwrap();
    assert_eq!((landed.files, landed.rows), (1, 3));
    let landed = ingest::land(lake, RawTable::Orders, &[orders.finish().unwrap()])
        .await
        .unwrap();
    assert_eq!((landed.files, landed.rows), (1, 4), "one commit, one file");
}

/// Land one order of `customer` (after the fixture's).
pub async fn land_order(lake: &Lake, id: &str, customer: &str) {
    let mut orders = TableRows::new(RawTable::Orders);
    orders
        .text(Some(id))
        .text(Some(customer))
        .text(None)
        .text(None)
        .timestamp(Some(JAN_15 + 20 * DAY))
        .money(Some(500))
        .text(Some("EUR"))
        .text(Some("completed"))
        .text(Some("web"))
        .int(Some(1));
    orders.end_row();
    ingest::land(lake, RawTable::Orders, &[orders.finish().unwrap()])
        .await
        .unwrap();
}

/// The rows of `sql` over `lake`, each as its cells joined by ` | `.
pub async fn sql_lines(lake: &Lake, sql: &str) -> Vec<String> {
    let ctx = engine::session(lake, &EngineOptions::default()).unwrap();
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    datafusion::arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string()
        .lines()
        .filter(|l| l.starts_with('|'))
        .skip(1)
        .map(|l| {
            l.split('|')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .collect()
}

/// `panorama serve` on the lake at `lake`, without seeding it and without
/// the collector, on a free port.
pub async fn serve_lake(lake: &std::path::Path) -> Served {
    Served::start(&[
        "--lake".as_ref(),
        lake.as_os_str(),
        "serve".as_ref(),
        "--no-seed".as_ref(),
        "--no-collect".as_ref(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
    ])
    .await
}

/// An incremental refresh at the current time, with the default rules.
pub async fn refresh_now(lake: &Lake) -> panorama::identity::RefreshReport {
    panorama::identity::refresh(
        lake,
        &panorama::identity::IdentityConfig::default(),
        panorama::identity::Mode::Incremental,
        chrono::Utc::now(),
        |_| {},
    )
    .await
    .unwrap()
}

/// `panorama serve` as a child process, killed when dropped.
pub struct Served {
    child: std::process::Child,
    /// The server's log lines not yet read (see [`Served::log`]).
    log: std::sync::Mutex<std::sync::mpsc::Receiver<String>>,
    /// Port of the Postgres front end.
    pub pg_port: u16,
    /// Address of the HTTP collector, unless `--no-collect`.
    pub collector: Option<SocketAddr>,
    /// Address of the web console, unless `--no-console`.
    pub console: Option<SocketAddr>,
    /// The server's working directory (its default write-ahead log goes
    /// there, never into the checkout).
    _cwd: tempfile::TempDir,
}

impl Served {
    /// Start `panorama <args>` (a `serve` command with `--listen
    /// 127.0.0.1:0`) and wait for its "ready" log lines.
    pub async fn start(args: &[&std::ffi::OsStr]) -> Served {
        use std::io::BufRead;
        let cwd = tempfile::tempdir().unwrap();
        // The console on a free port unless the test says otherwise (tests
        // run side by side).
        let consoles = !args.iter().any(|a| *a == "--no-console");
        let mut args = args.to_vec();
        if consoles && !args.iter().any(|a| *a == "--console-listen") {
            args.extend([
                std::ffi::OsStr::new("--console-listen"),
                std::ffi::OsStr::new("127.0.0.1:0"),
            ]);
        }
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_panorama"))
            .args(&args)
            .current_dir(cwd.path())
            .env_remove("PANORAMA_LAKE")
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let collects = !args.iter().any(|a| *a == "--no-collect");
        // The log names the bound ports; the rest is drained (and kept for
        // `log`) so the server never blocks on a full pipe.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let (pg_port, collector, console, log) = tokio::task::spawn_blocking(move || {
            let (mut pg, mut collector, mut console) = (None, None, None);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
            while pg.is_none()
                || (collects && collector.is_none())
                || (consoles && console.is_none())
            {
                let wait = deadline.saturating_duration_since(std::time::Instant::now());
                let line = rx.recv_timeout(wait).expect("serve became ready");
                if let Some(rest) = line.split("ready: psql -h 127.0.0.1 -p ").nth(1) {
                    pg = rest
                        .split_whitespace()
                        .next()
                        .and_then(|p| p.parse::<u16>().ok());
                }
                if let Some(rest) = line.split("HTTP API at http://").nth(1) {
                    collector = rest
                        .split('/')
                        .next()
                        .and_then(|a| a.parse::<SocketAddr>().ok());
                }
                if let Some(rest) = line.split("console ready: http://").nth(1) {
                    console = rest
                        .split('/')
                        .next()
                        .and_then(|a| a.parse::<SocketAddr>().ok());
                }
            }
            (pg.unwrap(), collector, console, rx)
        })
        .await
        .unwrap();
        Served {
            child,
            log: std::sync::Mutex::new(log),
            pg_port,
            collector,
            console,
            _cwd: cwd,
        }
    }

    /// The log lines the server wrote since the last call.
    pub fn log(&self) -> Vec<String> {
        let log = self.log.lock().unwrap();
        std::iter::from_fn(|| log.try_recv().ok()).collect()
    }

    /// A client of its Postgres front end.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user=panorama dbname=panorama",
                self.pg_port
            ),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap();
        tokio::spawn(connection);
        client
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`: no chance to flush or clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.kill();
    }
}

/// [`land_fixture`], then a first identity refresh (as of 2026-02-14), so
/// `cdp.*` has profiles.
pub async fn land_and_refresh_fixture(lake: &Lake) {
    land_fixture(lake).await;
    panorama::identity::refresh(
        lake,
        &panorama::identity::IdentityConfig::default(),
        panorama::identity::Mode::Incremental,
        chrono::DateTime::from_timestamp_micros(JAN_15 + 30 * DAY).unwrap(),
        |_| {},
    )
    .await
    .unwrap();
}

/// Run `job` when the test binary exits, for what lives as long as the whole
/// run (a static is never dropped): stopping a shared PostgreSQL server,
/// removing its folder. Jobs run last registered first.
pub fn at_exit(job: impl FnOnce() + Send + 'static) {
    unsafe extern "C" {
        fn atexit(callback: extern "C" fn()) -> std::ffi::c_int;
    }
    extern "C" fn run_jobs() {
        let jobs = std::mem::take(&mut *AT_EXIT.lock().unwrap_or_else(|e| e.into_inner()));
        for job in jobs.into_iter().rev() {
            job();
        }
    }
    type Job = Box<dyn FnOnce() + Send>;
    static AT_EXIT: std::sync::Mutex<Vec<Job>> = std::sync::Mutex::new(Vec::new());
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    // SAFETY: `atexit` only stores the pointer of a function with no
    // arguments, which lives as long as the program.
    REGISTERED.call_once(|| assert_eq!(unsafe { atexit(run_jobs) }, 0, "atexit"));
    AT_EXIT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Box::new(job));
}

/// A lake holding the bundled sample (what `panorama serve` seeds: 1,000
/// customers and a year of their activity) with its profiles built, shared
/// by every test of the run that reads it and removed when the run ends.
/// Tests must not write to it.
pub async fn sample_lake() -> Lake {
    static SAMPLE: std::sync::OnceLock<Result<Lake, String>> = std::sync::OnceLock::new();
    tokio::task::spawn_blocking(|| {
        SAMPLE
            .get_or_init(|| {
                let dir = tempfile::Builder::new()
                    .prefix("panorama-sample-lake")
                    .tempdir()
                    .map_err(|e| format!("creating the sample lake's folder: {e}"))?
                    .keep();
                let path = dir.clone();
                at_exit(move || {
                    let _ = std::fs::remove_dir_all(path);
                });
                let lake = Lake::open(dir.to_str().unwrap()).map_err(|e| e.to_string())?;
                // Its own runtime: the first caller's may end before another uses it.
                let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
                runtime.block_on(async {
                    panorama::seed::seed(&lake, |_, _| {})
                        .await
                        .map_err(|e| format!("seeding the sample lake: {e}"))?;
                    panorama::identity::refresh(
                        &lake,
                        &panorama::identity::IdentityConfig::default(),
                        panorama::identity::Mode::Incremental,
                        chrono::Utc::now(),
                        |_| {},
                    )
                    .await
                    .map_err(|e| format!("building the sample lake's profiles: {e}"))?;
                    Ok(lake)
                })
            })
            .clone()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Put `bytes` into raw.`table` as another engine's writer would: the file
/// in the table's folder, then a Delta commit naming it. Returns the
/// file's path in the lake.
pub async fn commit_foreign_file(
    lake: &Lake,
    table: RawTable,
    name: &str,
    bytes: bytes::Bytes,
) -> object_store::path::Path {
    use object_store::ObjectStoreExt;
    let dir = panorama::lake::paths::raw_table_dir(table);
    let path = dir.clone().join(name);
    let size = bytes.len();
    lake.store()
        .put(&lake.path(&path), bytes.into())
        .await
        .expect("data file");
    let add = serde_json::json!({"add": {
        "path": name,
        "partitionValues": {},
        "size": size,
        "modificationTime": chrono::Utc::now().timestamp_millis(),
        "dataChange": true,
    }});
    commit_foreign_action(lake, &dir, add).await;
    path
}

/// Remove a file [`commit_foreign_file`] added, as another engine's delete
/// would: a Delta commit of a `remove` action (the file stays on disk).
pub async fn remove_foreign_file(lake: &Lake, table: RawTable, name: &str) {
    let dir = panorama::lake::paths::raw_table_dir(table);
    let remove = serde_json::json!({"remove": {
        "path": name,
        "deletionTimestamp": chrono::Utc::now().timestamp_millis(),
        "dataChange": true,
    }});
    commit_foreign_action(lake, &dir, remove).await;
}

async fn commit_foreign_action(
    lake: &Lake,
    dir: &object_store::path::Path,
    action: serde_json::Value,
) {
    let version = panorama::lake::delta::files(lake, dir)
        .await
        .expect("table")
        .version
        .map_or(0, |v| v + 1);
    let commit = dir
        .clone()
        .join("_delta_log")
        .join(format!("{version:020}.json"));
    lake.store()
        .put_opts(
            &lake.path(&commit),
            format!("{action}\n").into(),
            object_store::PutMode::Create.into(),
        )
        .await
        .expect("commit");
}

/// Every file under `root`, as bytes and as decoded Parquet values
/// (lower-cased), searched for the lower-case `needles`: where each is found.
pub fn found_in_lake<S: AsRef<str>>(root: &std::path::Path, needles: &[S]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            let mut text = String::from_utf8_lossy(&bytes).to_lowercase();
            if path.extension().is_some_and(|e| e == "parquet") {
                let reader =
                    datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                        bytes::Bytes::from(bytes),
                    )
                    .unwrap()
                    .build()
                    .unwrap();
                let batches: Vec<_> = reader.map(Result::unwrap).collect();
                text.push_str(
                    &datafusion::arrow::util::pretty::pretty_format_batches(&batches)
                        .unwrap()
                        .to_string()
                        .to_lowercase(),
                );
            }
            for needle in needles {
                if text.contains(needle.as_ref()) {
                    found.push(format!("{} in {}", needle.as_ref(), path.display()));
                }
            }
        }
    }
    found
}

/// A user of `panorama.toml`'s `[[users]]` with a SCRAM verifier.
pub fn user(
    name: &str,
    password: &str,
    role: panorama::pgwire::auth::Role,
) -> panorama::pgwire::auth::UserConfig {
    panorama::pgwire::auth::UserConfig {
        name: name.into(),
        password: panorama::pgwire::auth::Verifier::make(password, name.as_bytes(), 4096).to_text(),
        role,
    }
}

/// A server over `lake` with an admin (ada / admin-secret) and an analyst
/// (ana / analyst-secret).
pub async fn ada_and_ana(lake: &Lake) -> TestServer {
    use panorama::pgwire::auth::Role;
    let users = vec![
        user("ada", "admin-secret", Role::Admin),
        user("ana", "analyst-secret", Role::Analyst),
    ];
    let options = EngineOptions {
        target_partitions: 2,
        ..EngineOptions::default()
    };
    TestServer::start_secure(lake, panorama::pgwire::Actions::default(), options, users).await
}

/// Log in to `server` as `user`.
pub async fn connect_as(
    server: &TestServer,
    user: &str,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let conn = format!(
        "host=127.0.0.1 port={} user={user} password={password} dbname=panorama",
        server.addr.port()
    );
    let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// Run the `panorama` binary in `cwd` with neither `PANORAMA_LAKE` nor
/// `PANORAMA_CONFIG` from the environment: (success, stdout, stderr).
pub fn run_panorama(cwd: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_panorama"))
        .current_dir(cwd)
        .args(args)
        .env_remove("PANORAMA_LAKE")
        .env_remove("PANORAMA_CONFIG")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
