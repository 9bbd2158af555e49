//! What BI and SQL tools send when they connect and browse a schema —
//! psql, pgcli, DBeaver, DataGrip, Metabase, Grafana and pgAdmin, replayed
//! from `tests/clients/bi/<client>.sql` (each file's header says where its
//! statements come from) — must answer on Panorama as on PostgreSQL.
//!
//! Each statement runs on Panorama serving the bundled sample and on a real
//! PostgreSQL loaded with `tests/clients/golden_schema.sql`, over the simple
//! protocol and over the extended one (prepared, then executed), each client
//! on its own connections, its statements in order. Where PostgreSQL runs a
//! statement, Panorama must run it too, name the result columns alike, type
//! them alike (extended protocol: the type OIDs of the row description) and
//! return rows exactly when PostgreSQL does. The failures are listed in one
//! table; the statements a dependency keeps from matching are listed in
//! [`KNOWN_DIFFERENCES`] with the difference they must still show.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use tokio_postgres::SimpleQueryMessage;

use crate::postgres::golden_port;
use crate::support::*;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/bi");
const CLIENTS: [&str; 7] = [
    "psql", "pgcli", "dbeaver", "datagrip", "metabase", "grafana", "pgadmin",
];
/// A statement still running after this fails (a hang is a failure too).
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Types a result column of PostgreSQL's may have that Panorama cannot
/// announce, and the type it announces instead: `arrow-pg` maps every Arrow
/// string to `text` and has no field metadata that would make one `name`
/// (nor `name[]`) or `varchar` (`information_schema`'s text columns), nor
/// an integer `xid` (a row's `xmin`).
const SAME_TYPES: &[(u32, u32)] = &[(19, 25), (1003, 1009), (1043, 25), (28, 20)];

/// Statements that do not answer as on PostgreSQL because of a limit of a
/// dependency, each with what its difference (as the failure table prints
/// it) still contains, and why; `docs/upstream.md` ("Known differences")
/// says what would lift each. A listed statement whose difference no
/// longer contains that text (it answers as on PostgreSQL, or fails for
/// another reason) fails the test, so that the list only shrinks.
const KNOWN_DIFFERENCES: &[(&str, usize, Protocol, &str)] = {
    use Protocol::{Extended, Simple};
    &[
        // `arrow-pg` cannot encode an empty `"char"` in binary: the
        // `"char"` columns that may be empty stay `text`.
        (
            "psql",
            10,
            Extended,
            "types attidentity text (PostgreSQL char), attgenerated text (PostgreSQL char)",
        ),
        (
            "psql",
            17,
            Extended,
            "types attidentity text (PostgreSQL char), attgenerated text (PostgreSQL char), attcompression text (PostgreSQL char)",
        ),
        (
            "psql",
            25,
            Extended,
            "types attidentity text (PostgreSQL char), attgenerated text (PostgreSQL char)",
        ),
        (
            "psql",
            29,
            Extended,
            "types attidentity text (PostgreSQL char), attgenerated text (PostgreSQL char)",
        ),
        (
            "metabase",
            14,
            Extended,
            "types attidentity text (PostgreSQL char), attgenerated text (PostgreSQL char)",
        ),
        // `arrow-pg` has no way to announce `int2vector`, `oidvector`,
        // `pg_node_tree`, `aclitem[]`, `anyarray`, `regproc` or `xid`, which
        // `t.*`, `c.*`, `a.*`, `i.*` and `con.*` bring along.
        (
            "dbeaver",
            15,
            Extended,
            "typdefaultbin text (PostgreSQL pg_node_tree)",
        ),
        (
            "dbeaver",
            16,
            Extended,
            "relacl _text (PostgreSQL _aclitem)",
        ),
        (
            "dbeaver",
            17,
            Extended,
            "attmissingval text (PostgreSQL anyarray)",
        ),
        (
            "dbeaver",
            19,
            Extended,
            "indkey _int4 (PostgreSQL int2vector)",
        ),
        (
            "dbeaver",
            20,
            Extended,
            "conbin text (PostgreSQL pg_node_tree)",
        ),
        // DataFusion's cast keeps its operand's field metadata, so
        // `x::regclass` is announced as the `oid` it casts.
        ("psql", 14, Extended, "types oid oid (PostgreSQL regclass)"),
        ("psql", 15, Extended, "types oid oid (PostgreSQL regclass)"),
        // datafusion-pg-catalog answers these by a stand-in statement,
        // whose columns have other names or types; the first (`\du`) by
        // turning the correlated `ARRAY(SELECT …)` into NULL.
        (
            "psql",
            7,
            Extended,
            "types memberof text (PostgreSQL _name)",
        ),
        ("psql", 11, Simple, "\"pg_get_expr_1\", \"pg_get_expr_2\""),
        ("psql", 11, Extended, "\"pg_get_expr_1\", \"pg_get_expr_2\""),
        ("psql", 12, Extended, "stxrelid text (PostgreSQL regclass)"),
        ("psql", 13, Simple, "columns [\"pubname\", \"_1\", \"_2\"]"),
        (
            "psql",
            13,
            Extended,
            "columns [\"pubname\", \"_1\", \"_2\"]",
        ),
        // DataFusion cannot plan a set-returning function or recursive CTE
        // correlated to the outer row inside a subquery.
        ("psql", 16, Simple, "No field named x."),
        ("psql", 16, Extended, "table function 'unnest' not found"),
        ("psql", 28, Simple, "No field named x."),
        ("psql", 28, Extended, "table function 'unnest' not found"),
        (
            "pgcli",
            11,
            Simple,
            "does not support logical expression ScalarSubquery",
        ),
        (
            "pgcli",
            11,
            Extended,
            "does not support logical expression ScalarSubquery",
        ),
        (
            "pgadmin",
            7,
            Simple,
            "Non-recursive term and recursive term must have the same number of columns",
        ),
        (
            "pgadmin",
            7,
            Extended,
            "Non-recursive term and recursive term must have the same number of columns",
        ),
        // datafusion-pg-catalog keeps `pg_proc.proargtypes` (an `oidvector`)
        // as text, which `::regtype[]` cannot cast.
        (
            "pgcli",
            8,
            Simple,
            "Cannot cast string '[2276]' to value of Int32 type",
        ),
        (
            "pgcli",
            8,
            Extended,
            "Cannot cast string '[2276]' to value of Int32 type",
        ),
        // DataFusion: `extract` is `double precision` (PostgreSQL 14+:
        // `numeric`); `information_schema.columns.ordinal_position` is
        // `UInt64` (announced `numeric`) and `- 1` a `bigint`.
        (
            "datagrip",
            7,
            Extended,
            "types startup_time float8 (PostgreSQL numeric)",
        ),
        (
            "metabase",
            13,
            Extended,
            "types database-position numeric (PostgreSQL int4)",
        ),
    ]
};

/// Differences that come from the PostgreSQL the test compares with, not
/// from a dependency: Panorama answers as PostgreSQL 16 (the version it
/// announces), whose `pg_database` has `daticurules`; an older server has
/// not. Listed (as [`KNOWN_DIFFERENCES`]) only against an older server.
const OLDER_SERVER_DIFFERENCES: &[(&str, usize, Protocol, &str)] = &[
    ("dbeaver", 9, Protocol::Simple, "\"daticurules\""),
    ("dbeaver", 9, Protocol::Extended, "\"daticurules\""),
];

/// One statement of a client's file.
struct Entry {
    client: &'static str,
    /// Position in the client's file, from 1.
    index: usize,
    /// The statement, its placeholders (`{{oid:raw.customers}}`,
    /// `{{nsp:raw}}`) not yet filled.
    template: String,
}

/// The statements of `client`'s file: entries after the header, separated
/// by a line `-- next`, their leading comment lines dropped.
fn entries(client: &'static str) -> Vec<Entry> {
    let path = Path::new(CORPUS).join(format!("{client}.sql"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.split("\n-- next\n")
        .skip(1)
        .enumerate()
        .map(|(i, entry)| {
            let statement: Vec<&str> = entry.lines().skip_while(|l| l.starts_with("--")).collect();
            Entry {
                client,
                index: i + 1,
                template: statement.join("\n").trim().to_string(),
            }
        })
        .collect()
}

/// What a server answered to one statement over one protocol.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Failed(String),
    Ran {
        /// Column names, and (extended protocol) type OIDs.
        columns: Vec<(String, Option<u32>)>,
        rows: usize,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Protocol {
    Simple,
    Extended,
}

async fn connect(port: u16) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user=panorama dbname=panorama"),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap_or_else(|e| panic!("connecting to 127.0.0.1:{port}: {e}"));
    tokio::spawn(connection);
    client
}

fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

/// The first value of the first row of `sql`, as text.
async fn text_value(client: &tokio_postgres::Client, sql: &str) -> Option<String> {
    let messages = client.simple_query(sql).await.ok()?;
    messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => r.get(0).map(String::from),
        _ => None,
    })
}

/// The OIDs the placeholders stand for on the server `client` is connected
/// to: `oid:schema.table` of a relation, `nsp:schema` of a schema.
async fn placeholders(client: &tokio_postgres::Client) -> BTreeMap<String, String> {
    let mut values = BTreeMap::new();
    for relation in ["raw.customers", "analytics.rfm"] {
        let (schema, table) = relation.split_once('.').unwrap();
        let oid = text_value(
            client,
            &format!(
                "SELECT c.oid FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = '{schema}' AND c.relname = '{table}'"
            ),
        )
        .await
        .unwrap_or_else(|| panic!("no pg_class row for {relation}"));
        values.insert(format!("{{{{oid:{relation}}}}}"), oid);
    }
    let oid = text_value(
        client,
        "SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = 'raw'",
    )
    .await
    .expect("a pg_namespace row for raw");
    values.insert("{{nsp:raw}}".to_string(), oid);
    values
}

fn fill(template: &str, values: &BTreeMap<String, String>) -> String {
    values
        .iter()
        .fold(template.to_string(), |sql, (k, v)| sql.replace(k, v))
}

async fn run(client: &tokio_postgres::Client, sql: &str, protocol: Protocol) -> Answer {
    let answer = async {
        match protocol {
            Protocol::Simple => {
                let messages = client.simple_query(sql).await.map_err(|e| describe(&e))?;
                let mut columns = Vec::new();
                let mut rows = 0;
                for message in messages {
                    match message {
                        SimpleQueryMessage::RowDescription(c) => {
                            columns = c.iter().map(|c| (c.name().to_string(), None)).collect();
                        }
                        SimpleQueryMessage::Row(_) => rows += 1,
                        _ => {}
                    }
                }
                Ok(Answer::Ran { columns, rows })
            }
            Protocol::Extended => {
                let statement = client.prepare(sql).await.map_err(|e| describe(&e))?;
                let columns = statement
                    .columns()
                    .iter()
                    .map(|c| (c.name().to_string(), Some(c.type_().oid())))
                    .collect();
                let rows = client
                    .query(&statement, &[])
                    .await
                    .map_err(|e| describe(&e))?
                    .len();
                Ok(Answer::Ran { columns, rows })
            }
        }
    };
    match tokio::time::timeout(STATEMENT_TIMEOUT, answer).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => Answer::Failed(e),
        Err(_) => Answer::Failed(format!("no answer in {STATEMENT_TIMEOUT:?}")),
    }
}

fn type_name(oid: Option<u32>) -> String {
    match oid {
        None => "?".into(),
        Some(oid) => match tokio_postgres::types::Type::from_oid(oid) {
            Some(t) => t.name().to_string(),
            None => oid.to_string(),
        },
    }
}

/// How Panorama's answer differs from PostgreSQL's; `None` when it does
/// not (or PostgreSQL itself refuses the statement).
fn difference(expected: &Answer, got: &Answer) -> Option<String> {
    let Answer::Ran {
        columns: want,
        rows: want_rows,
    } = expected
    else {
        return None;
    };
    let (columns, rows) = match got {
        Answer::Failed(e) => return Some(format!("error {e}")),
        Answer::Ran { columns, rows } => (columns, rows),
    };
    let mut out = Vec::new();
    let names = |c: &[(String, Option<u32>)]| c.iter().map(|c| c.0.clone()).collect::<Vec<_>>();
    if names(want) != names(columns) {
        out.push(format!(
            "columns {:?}, PostgreSQL {:?}",
            names(columns),
            names(want)
        ));
    } else {
        let types: Vec<String> = want
            .iter()
            .zip(columns)
            .filter(|((_, w), (_, g))| {
                w != g && !matches!((w, g), (Some(w), Some(g)) if SAME_TYPES.contains(&(*w, *g)))
            })
            .map(|((name, w), (_, g))| {
                format!("{name} {} (PostgreSQL {})", type_name(*g), type_name(*w))
            })
            .collect();
        if !types.is_empty() {
            out.push(format!("types {}", types.join(", ")));
        }
    }
    if (*want_rows == 0) != (*rows == 0) {
        out.push(format!("{rows} rows, PostgreSQL {want_rows}"));
    }
    (!out.is_empty()).then(|| out.join("; "))
}

/// The first 80 characters of a statement, its white space folded.
fn head(sql: &str) -> String {
    let folded = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    folded.chars().take(80).collect()
}

/// Every client's statements over `protocol`, on both servers: the
/// failures, keyed by (client, index).
async fn replay(
    panorama: u16,
    golden: u16,
    protocol: Protocol,
) -> BTreeMap<(usize, usize), (String, String)> {
    let mut failures = BTreeMap::new();
    for (c, client) in CLIENTS.iter().enumerate() {
        let (ours, theirs) = (connect(panorama).await, connect(golden).await);
        let (our_values, their_values) = (placeholders(&ours).await, placeholders(&theirs).await);
        for entry in entries(client) {
            if std::env::var_os("BI_CATALOG_TRACE").is_some() {
                eprintln!("{} {} {protocol:?}", entry.client, entry.index);
            }
            let expected = run(&theirs, &fill(&entry.template, &their_values), protocol).await;
            let got = run(&ours, &fill(&entry.template, &our_values), protocol).await;
            if let Some(what) = difference(&expected, &got) {
                failures.insert((c, entry.index), (head(&entry.template), what));
            }
        }
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bi_tools_see_what_postgres_answers() {
    let server = TestServer::start(&sample_lake().await).await;
    let golden = golden_port().await;
    let panorama = server.addr.port();
    let simple = replay(panorama, golden, Protocol::Simple).await;
    let extended = replay(panorama, golden, Protocol::Extended).await;

    let version: u32 = text_value(&connect(golden).await, "SHOW server_version_num")
        .await
        .and_then(|v| v.parse().ok())
        .expect("the golden server's version");
    let mut listed = KNOWN_DIFFERENCES.to_vec();
    if version < 160_000 {
        listed.extend_from_slice(OLDER_SERVER_DIFFERENCES);
    }
    let known = |client: &str, index: usize, protocol: Protocol| {
        listed
            .iter()
            .find(|(c, i, p, _)| *c == client && *i == index && *p == protocol)
            .map(|(.., what)| *what)
    };
    let mut table = String::new();
    let mut summary = Vec::new();
    let (mut matching, mut all) = (0, 0);
    for (c, client) in CLIENTS.iter().enumerate() {
        let total = entries(client).len();
        let failing = (1..=total)
            .filter(|i| simple.contains_key(&(c, *i)) || extended.contains_key(&(c, *i)))
            .count();
        summary.push(format!("{client} {}/{total}", total - failing));
        (matching, all) = (matching + total - failing, all + total);
        for (protocol, failures) in [(Protocol::Simple, &simple), (Protocol::Extended, &extended)] {
            let name = format!("{protocol:?}").to_lowercase();
            for ((_, index), (sql, what)) in failures.range((c, 0)..(c + 1, 0)) {
                if known(client, *index, protocol).is_some_and(|k| what.contains(k)) {
                    continue;
                }
                let _ = writeln!(
                    table,
                    "{client:<8} | {index:>2} | {name:<8} | {sql:<80} | {what}"
                );
            }
            for (_, index, _, what) in listed
                .iter()
                .filter(|(k, _, p, _)| k == client && *p == protocol)
            {
                if !failures
                    .get(&(c, *index))
                    .is_some_and(|f| f.1.contains(what))
                {
                    let _ = writeln!(
                        table,
                        "{client:<8} | {index:>2} | {name:<8} | {:<80} | listed as known, now {}",
                        "",
                        failures
                            .get(&(c, *index))
                            .map_or("the same as PostgreSQL", |f| f.1.as_str())
                    );
                }
            }
        }
    }
    let summary = format!(
        "statements that answer as on PostgreSQL: {matching}/{all} ({}); {} known differences",
        summary.join(", "),
        listed.len()
    );
    println!("{summary}");
    assert!(
        table.is_empty(),
        "{summary}\n{:<8} | {:>2} | {:<8} | {:<80} | difference (Panorama vs PostgreSQL)\n{table}",
        "client",
        "#",
        "protocol",
        "statement"
    );
    server.stop().await;
}
