//! The client libraries BI tools and notebooks are built on, against
//! Panorama serving the bundled sample: psycopg 3, pandas and SQLAlchemy
//! (Superset, notebooks), pyodbc over psqlODBC (Tableau, Excel), pgjdbc
//! (DBeaver, Tableau) and the batch Npgsql (Power BI) sends first.
//!
//! Each client runs its behaviour checks (`tests/clients/`), and for what
//! it lists of the catalog, its output from Panorama must equal its output
//! from a real PostgreSQL loaded with `tests/clients/golden_schema.sql`.
//! ./tests/run.sh installs the clients and exports where they are.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio_postgres::SimpleQueryMessage;

use crate::postgres::golden_port;
use crate::support::*;

const CLIENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients");
/// A client that has not finished by then is killed and the test fails.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_pandas_and_sqlalchemy_work() {
    behaves("python_clients.py", |port| {
        python("python_clients.py", port)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlalchemy_inspector_sees_the_golden_catalog() {
    same_as_postgres("python_clients.py --golden", |port| {
        let mut command = python("python_clients.py", port);
        command.arg("--golden");
        command
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odbc_works() {
    behaves("odbc_catalog.py", odbc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odbc_catalog_functions_see_the_golden_catalog() {
    same_as_postgres("odbc_catalog.py --golden", |port| {
        let mut command = odbc(port);
        command.arg("--golden");
        command
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jdbc_works() {
    let classes = jdbc_classes().await;
    behaves("JdbcClient", |port| jdbc(&classes, port)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jdbc_metadata_sees_the_golden_catalog() {
    let classes = jdbc_classes().await;
    same_as_postgres("JdbcClient --golden", |port| {
        let mut command = jdbc(&classes, port);
        command.arg("--golden");
        command
    })
    .await;
}

/// Types Npgsql maps to .NET types; it refuses to read a column whose type
/// it did not load, and matches arrays to their element by `elemtypoid`.
const NPGSQL_TYPES: [&str; 18] = [
    "bool",
    "int2",
    "int4",
    "int8",
    "float4",
    "float8",
    "numeric",
    "text",
    "varchar",
    "date",
    "timestamp",
    "timestamptz",
    "interval",
    "json",
    "jsonb",
    "uuid",
    "_text",
    "_int8",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn npgsql_loads_the_types_postgres_has() {
    let batch =
        std::fs::read_to_string(Path::new(CLIENTS).join("npgsql_type_loading.sql")).unwrap();
    let server = TestServer::start(&sample_lake().await).await;
    let golden = connect(golden_port().await).await;
    let expected = result_sets(&golden, &batch)
        .await
        .unwrap_or_else(|e| panic!("Npgsql's type-loading batch failed on PostgreSQL: {e}"));
    let got = result_sets(&server.client().await, &batch)
        .await
        .unwrap_or_else(|e| panic!("Npgsql's type-loading batch failed on Panorama: {e}"));
    assert_eq!(
        got.len(),
        expected.len(),
        "Npgsql's type-loading batch: result sets from Panorama vs PostgreSQL"
    );
    // The third and fourth list the fields of free-standing composite types
    // and the labels of enums: none on either server.
    assert_eq!(
        got[2..],
        expected[2..],
        "composite type fields and enum labels from Panorama vs PostgreSQL"
    );
    // The second lists the types: nspname, oid, typname, typtype,
    // typnotnull, elemtypoid.
    let (expected, got) = (types(&expected[1]), types(&got[1]));
    let mut wrong = Vec::new();
    for name in NPGSQL_TYPES {
        let want = expected
            .get(name)
            .unwrap_or_else(|| panic!("PostgreSQL lists no pg_catalog.{name}"));
        match got.get(name) {
            Some(row) if row == want => {}
            Some(row) => wrong.push(format!("{name}: {row:?}, PostgreSQL has {want:?}")),
            None => wrong.push(format!("{name}: missing, PostgreSQL has {want:?}")),
        }
    }
    assert!(
        wrong.is_empty(),
        "types Npgsql loads, as (oid, typtype, elemtypoid), differ from PostgreSQL's:\n{}",
        wrong.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn npgsql_pool_reset_leaves_a_usable_connection() {
    let reset = std::fs::read_to_string(Path::new(CLIENTS).join("npgsql_pool_reset.sql")).unwrap();
    let server = TestServer::start(&sample_lake().await).await;
    let client = server.client().await;
    let zone = simple_rows(&client, "SHOW TimeZone").await;
    client
        .simple_query("SET TIME ZONE 'Asia/Tokyo'")
        .await
        .unwrap_or_else(|e| panic!("SET TIME ZONE failed: {}", describe(&e)));
    client
        .simple_query(&reset)
        .await
        .unwrap_or_else(|e| panic!("Npgsql's pool reset ({reset}) failed: {}", describe(&e)));
    assert_eq!(
        simple_rows(&client, "SHOW TimeZone").await,
        zone,
        "{reset} resets the time zone"
    );
    let customers = client
        .query_one(
            "SELECT count(*) FROM raw.customers WHERE customer_id <> $1",
            &[&"C0000000"],
        )
        .await
        .unwrap_or_else(|e| panic!("a query after {reset} failed: {}", describe(&e)));
    assert!(customers.get::<_, i64>(0) > 0);
}

/// The client built by `command(port)` passes its behaviour checks against
/// Panorama on the sample lake.
async fn behaves(name: &str, command: impl Fn(u16) -> Command) {
    let server = TestServer::start(&sample_lake().await).await;
    let output = run(command(server.addr.port())).await;
    assert!(
        output.status.success(),
        "{name} against Panorama failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        last_lines(&output.stderr)
    );
}

/// The end of a client's error output, where a traceback names the error.
fn last_lines(output: &[u8]) -> String {
    const SHOWN: usize = 25;
    let text = String::from_utf8_lossy(output);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(SHOWN);
    let cut = if start > 0 { "…\n" } else { "" };
    format!("{cut}{}", lines[start..].join("\n"))
}

/// The client built by `command(port)` prints the same against Panorama as
/// against the golden PostgreSQL.
async fn same_as_postgres(name: &str, command: impl Fn(u16) -> Command) {
    let server = TestServer::start(&sample_lake().await).await;
    let golden = golden_port().await;
    let (expected, got) = tokio::join!(run(command(golden)), run(command(server.addr.port())));
    for (output, against) in [(&expected, "PostgreSQL"), (&got, "Panorama")] {
        assert!(
            output.status.success(),
            "{name} against {against} failed ({}):\n{}",
            output.status,
            last_lines(&output.stderr)
        );
    }
    let (expected, got) = (
        String::from_utf8(expected.stdout).unwrap(),
        String::from_utf8(got.stdout).unwrap(),
    );
    assert!(
        !expected.trim().is_empty(),
        "{name} printed nothing against PostgreSQL"
    );
    if expected != got {
        panic!(
            "{name}: Panorama's output differs from PostgreSQL's (- PostgreSQL, + Panorama):\n{}",
            diff(name, &expected, &got)
        );
    }
}

/// Where both outputs of a differing golden comparison are kept, and the
/// first 40 changed lines of `diff -U 1` between them, each run of removed
/// lines interleaved with the added lines that replace them so the two
/// versions of a line sit together. Each hunk header names the relation
/// (`  "schema.table":`, indented two spaces in the Python scripts' JSON) or
/// the JDBC row (`{"kind":…,"key":…`) it is in.
fn diff(name: &str, expected: &str, got: &str) -> String {
    const SHOWN: usize = 40;
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("clients-golden");
    std::fs::create_dir_all(&dir).unwrap();
    let stem: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let (a, b) = (
        dir.join(format!("{stem}.postgresql")),
        dir.join(format!("{stem}.panorama")),
    );
    std::fs::write(&a, expected).unwrap();
    std::fs::write(&b, got).unwrap();
    let output = Command::new("diff")
        .args(["-U", "1", "-F", r#"^  "\|^{"kind""#])
        .arg(&a)
        .arg(&b)
        .output()
        .expect("diff (Debian's diffutils) is installed");
    let text = String::from_utf8_lossy(&output.stdout);
    let mut shown = vec![format!("diff {} {}", a.display(), b.display())];
    let (mut removed, mut added) = (Vec::new(), Vec::new());
    let mut changed = 0;
    let total = text
        .lines()
        .skip(2)
        .filter(|l| l.starts_with('-') || l.starts_with('+'))
        .count();
    for line in text.lines().skip(2).chain(["@@ end"]) {
        match line.chars().next() {
            Some('-') => removed.push(line),
            Some('+') => added.push(line),
            _ => {
                for i in 0..removed.len().max(added.len()) {
                    for side in [&removed, &added] {
                        if let Some(l) = side.get(i) {
                            changed += 1;
                            if changed > SHOWN {
                                shown.push(format!("… and {} more changed lines", total - SHOWN));
                                return shown.join("\n");
                            }
                            shown.push(l.to_string());
                        }
                    }
                }
                removed.clear();
                added.clear();
                if line != "@@ end" {
                    shown.push(line.to_string());
                }
            }
        }
    }
    shown.join("\n")
}

/// Run a client to completion (or kill it after [`CLIENT_TIMEOUT`]).
async fn run(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || {
        let what = format!("{command:?}");
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting {what}: {e}; ./tests/run.sh installs the clients")
            });
        // Drain both pipes while waiting, so a chatty client never blocks.
        let mut stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let out = std::thread::spawn(move || {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut stdout, &mut buf).map(|_| buf)
        });
        let err = std::thread::spawn(move || {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut stderr, &mut buf).map(|_| buf)
        });
        let deadline = Instant::now() + CLIENT_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let stdout = out.join().unwrap().unwrap_or_default();
                panic!(
                    "{what} did not finish in {CLIENT_TIMEOUT:?}; it printed:\n{}",
                    String::from_utf8_lossy(&stdout)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        Output {
            status,
            stdout: out.join().unwrap().unwrap(),
            stderr: err.join().unwrap().unwrap(),
        }
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// The venv's Python, which has the libraries of tests/clients/requirements.txt.
fn python(script: &str, port: u16) -> Command {
    let python = std::env::var_os("PANORAMA_TEST_PYTHON").unwrap_or_else(|| {
        panic!(
            "PANORAMA_TEST_PYTHON is not set: run ./tests/run.sh, which creates the client venv \
             ($CARGO_TARGET_DIR/clients-venv) and sets it, or after it once \
             `export PANORAMA_TEST_PYTHON=$CARGO_TARGET_DIR/clients-venv/bin/python`"
        )
    });
    assert!(
        Path::new(&python).exists(),
        "PANORAMA_TEST_PYTHON={} does not exist: run ./tests/run.sh",
        python.to_string_lossy()
    );
    let mut command = Command::new(python);
    command
        .arg(Path::new(CLIENTS).join(script))
        .args(["127.0.0.1", &port.to_string()]);
    command
}

/// odbc_catalog.py, with the psqlODBC driver it loads by path.
fn odbc(port: u16) -> Command {
    let driver = std::env::var("PSQLODBC_DRIVER").unwrap_or_else(|_| {
        panic!(
            "PSQLODBC_DRIVER is not set: run ./tests/run.sh, which installs odbc-postgresql and \
             sets it to the path of psqlodbcw.so"
        )
    });
    assert!(
        Path::new(&driver).exists(),
        "PSQLODBC_DRIVER={driver} does not exist: run ./tests/run.sh (installs odbc-postgresql)"
    );
    python("odbc_catalog.py", port)
}

/// pgjdbc as Debian's libpostgresql-jdbc-java installs it.
const PGJDBC: &str = "/usr/share/java/postgresql.jar";

/// JdbcClient.java compiled once per run, into a folder removed at the end.
async fn jdbc_classes() -> PathBuf {
    static CLASSES: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    tokio::task::spawn_blocking(|| CLASSES.get_or_init(compile_jdbc_client).clone())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn compile_jdbc_client() -> Result<PathBuf, String> {
    if !Path::new(PGJDBC).exists() {
        return Err(format!(
            "{PGJDBC} is missing: run ./tests/run.sh (installs libpostgresql-jdbc-java)"
        ));
    }
    let dir = tempfile::Builder::new()
        .prefix("panorama-jdbc-client")
        .tempdir()
        .map_err(|e| e.to_string())?
        .keep();
    let remove = dir.clone();
    at_exit(move || {
        let _ = std::fs::remove_dir_all(remove);
    });
    let output = Command::new("javac")
        .args(["-encoding", "UTF-8", "-cp", PGJDBC, "-d"])
        .arg(&dir)
        .arg(Path::new(CLIENTS).join("JdbcClient.java"))
        .output()
        .map_err(|e| {
            format!("running javac: {e}; run ./tests/run.sh (installs default-jdk-headless)")
        })?;
    if !output.status.success() {
        return Err(format!(
            "javac JdbcClient.java failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(dir)
}

fn jdbc(classes: &Path, port: u16) -> Command {
    let mut command = Command::new("java");
    command
        .arg("-cp")
        .arg(format!("{}:{PGJDBC}", classes.display()))
        .args(["JdbcClient", "127.0.0.1", &port.to_string()]);
    command
}

async fn connect(port: u16) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user=panorama dbname=panorama"),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    client
}

/// The rows of each statement of a simple query, by column name.
async fn result_sets(
    client: &tokio_postgres::Client,
    sql: &str,
) -> Result<Vec<Vec<BTreeMap<String, Option<String>>>>, String> {
    let messages = client.simple_query(sql).await.map_err(|e| describe(&e))?;
    let mut sets = Vec::new();
    let mut rows = Vec::new();
    for message in messages {
        match message {
            SimpleQueryMessage::Row(row) => rows.push(
                row.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name().to_string(), row.get(i).map(String::from)))
                    .collect(),
            ),
            SimpleQueryMessage::CommandComplete(_) => sets.push(std::mem::take(&mut rows)),
            _ => {}
        }
    }
    Ok(sets)
}

/// pg_catalog's types of Npgsql's type query: typname → (oid, typtype, elemtypoid).
fn types(rows: &[BTreeMap<String, Option<String>>]) -> BTreeMap<String, [Option<String>; 3]> {
    let cell = |row: &BTreeMap<String, Option<String>>, name: &str| {
        row.get(name)
            .unwrap_or_else(|| panic!("the type query returned no column {name}: {row:?}"))
            .clone()
    };
    rows.iter()
        .filter(|row| cell(row, "nspname").as_deref() == Some("pg_catalog"))
        .map(|row| {
            (
                cell(row, "typname").unwrap_or_default(),
                [
                    cell(row, "oid"),
                    cell(row, "typtype"),
                    cell(row, "elemtypoid"),
                ],
            )
        })
        .collect()
}

/// A server's error as SQLSTATE and message, or the client's error.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}
