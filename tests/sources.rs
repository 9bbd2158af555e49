//! Sources of the user's own: raw tables declared in `panorama.toml`
//! (`[tables.<name>]`) or with `CREATE TABLE raw.<name>` over SQL, then
//! loaded with `panorama ingest`, resolved into profiles through custom
//! identifier types, masked for analysts where flagged personal, and
//! listed to BI tools — by the process that declared them and by every
//! later one.

use panorama::lake::Lake;

use crate::support::*;

const CONFIG: &str = r#"
[tables.loyalty_accounts]
columns = [
  "loyalty_id text not null",
  "member_email text",
  "full_name text personal",
  "points int8",
  "balance float8",
  "updated_at timestamptz",
]
time = "updated_at"

[tables.store_visits]
columns = ["visit_key text not null", "card text", "store text"]

[ingest.store_visits]
map = { visit_key = "Store || '/' || Visit", card = "Card" }

[[identity.types]]
name = "loyalty_id"
normalize = "text"
priority = 5

[[identity.sources]]
table = "loyalty_accounts"
column = "loyalty_id"
id_type = "loyalty_id"

[[identity.sources]]
table = "loyalty_accounts"
column = "member_email"
id_type = "email"

[[identity.sources]]
table = "store_visits"
column = "card"
id_type = "loyalty_id"
"#;

fn panorama(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    run_panorama(dir, args)
}

/// One CRM customer, Ann, whom the loyalty rows join by email.
const CRM_CSV: &str = "customer_id,email,source,updated_at\nC1,ann@x.com,crm,2026-01-10\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_tables_load_resolve_into_profiles_and_mask_what_is_personal() {
    let dir = tempfile::tempdir().unwrap();
    let lake_dir = dir.path().join("lake");
    let lake_arg = lake_dir.to_str().unwrap();
    std::fs::write(dir.path().join("panorama.toml"), CONFIG).unwrap();
    std::fs::write(dir.path().join("crm.csv"), CRM_CSV).unwrap();
    std::fs::write(
        dir.path().join("loyalty.csv"),
        "loyalty_id,member_email,full_name,points,balance,updated_at,tier\n\
         L1,Ann@X.com,Ann Lee,120,3.5,2026-01-12,gold\n\
         L2,bob@y.com,Bob Roy,many,0,2026-01-12,silver\n\
         L3,cy@z.com,Cy Dee,8,1e2,2026-01-13,\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("visits.csv"),
        "Store,Visit,Card\nPARIS-1,9001,L1\nLYON-2,9002,L3\n",
    )
    .unwrap();

    let (ok, _, stderr) = panorama(
        dir.path(),
        &["ingest", "customers", "crm.csv", "--lake", lake_arg],
    );
    assert!(ok, "{stderr}");
    // The first command on the lake declares the configured tables.
    assert!(
        stderr.contains("raw.loyalty_accounts: declared in the lake")
            && stderr.contains("raw.store_visits: declared in the lake"),
        "{stderr}"
    );
    // One bad row (points), rejected; the rest land, `tier` in extra.
    let (ok, _, stderr) = panorama(
        dir.path(),
        &[
            "ingest",
            "loyalty_accounts",
            "loyalty.csv",
            "--lake",
            lake_arg,
        ],
    );
    assert!(!ok, "a rejected row makes the exit code non-zero: {stderr}");
    assert!(
        !stderr.contains("declared in the lake"),
        "only once: {stderr}"
    );
    assert!(
        stderr.contains("tier"),
        "the summary names the kept field: {stderr}"
    );
    let (ok, _, stderr) = panorama(
        dir.path(),
        &["ingest", "store_visits", "visits.csv", "--lake", lake_arg],
    );
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = panorama(dir.path(), &["refresh", "--lake", lake_arg]);
    assert!(ok, "{stderr}");

    // A later process without the configuration still knows the tables.
    let elsewhere = tempfile::tempdir().unwrap();
    let (ok, stdout, stderr) = panorama(
        elsewhere.path(),
        &[
            "sql",
            "SELECT loyalty_id, points, balance, json_get_str(extra, 'tier') AS tier \
             FROM raw.loyalty_accounts ORDER BY 1",
            "--lake",
            lake_arg,
        ],
    );
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("L1") && stdout.contains("3.5") && stdout.contains("gold"),
        "{stdout}"
    );
    assert!(stdout.contains("L3") && stdout.contains("100"), "{stdout}");
    assert!(!stdout.contains("L2"), "{stdout}");

    let lake = panorama::lake::Lake::open(lake_arg).unwrap();
    lake.load_declared_tables().await.unwrap();
    assert_eq!(
        sql_lines(&lake, "SELECT line, field, reason FROM system.rejects").await,
        vec!["3 | points | not an integer"]
    );
    // Computed keys, and a landing day for a table without a time column.
    assert_eq!(
        sql_lines(
            &lake,
            "SELECT visit_key, card, loaded_at IS NOT NULL, date = CAST(loaded_at AS DATE) \
             FROM raw.store_visits ORDER BY 1"
        )
        .await,
        vec![
            "LYON-2/9002 | L3 | true | true",
            "PARIS-1/9001 | L1 | true | true"
        ]
    );
    // The CRM customer, her loyalty account (by email) and her store
    // visit (by card) are one profile; Cy's account and visit another.
    assert_eq!(
        sql_lines(
            &lake,
            "SELECT l.id_type, l.id_value, \
               l.profile_id = (SELECT profile_id FROM cdp.identity_links \
                               WHERE id_type = 'customer_id' AND id_value = 'C1') \
             FROM cdp.identity_links l \
             WHERE l.id_type IN ('loyalty_id', 'email', 'customer_id') ORDER BY 1, 2"
        )
        .await,
        vec![
            "customer_id | C1 | true",
            "email | ann@x.com | true",
            "email | cy@z.com | false",
            "loyalty_id | L1 | true",
            "loyalty_id | L3 | false",
        ]
    );

    // Analysts read flagged and identifier-fed columns masked.
    let server = ada_and_ana(&lake).await;
    let analyst = connect_as(&server, "ana", "analyst-secret").await.unwrap();
    let rows = simple_rows(
        &analyst,
        "SELECT loyalty_id, full_name, member_email FROM raw.loyalty_accounts ORDER BY 1",
    )
    .await;
    assert_eq!(rows[0][0].as_deref(), Some("L1"));
    assert_eq!(rows[0][1].as_deref(), Some("***"), "{rows:?}");
    assert_eq!(rows[0][2].as_deref(), Some("***"), "{rows:?}");

    // CREATE TABLE over SQL: administrators only, listed to every
    // session at once, refused twice, then loaded by another process.
    let e = analyst
        .simple_query("CREATE TABLE raw.support_tickets (ticket_id text)")
        .await
        .unwrap_err();
    assert_eq!(e.code().unwrap().code(), "42501");
    let admin = connect_as(&server, "ada", "admin-secret").await.unwrap();
    admin
        .simple_query(
            "CREATE TABLE raw.support_tickets (ticket_id text NOT NULL, customer_id text, \
             subject text, opened_at timestamptz) WITH (time = 'opened_at', personal = 'subject')",
        )
        .await
        .unwrap();
    let e = admin
        .simple_query("CREATE TABLE raw.support_tickets (ticket_id text)")
        .await
        .unwrap_err();
    assert_eq!(e.code().unwrap().code(), "42P07", "{e:?}");
    let e = admin
        .simple_query("CREATE TABLE raw.bad (x blob)")
        .await
        .unwrap_err();
    assert!(format!("{e:?}").contains("unknown type"), "{e:?}");
    let columns = simple_rows(
        &analyst,
        "SELECT column_name, data_type FROM information_schema.columns \
         WHERE table_schema = 'raw' AND table_name = 'support_tickets' ORDER BY ordinal_position",
    )
    .await;
    let names: Vec<&str> = columns.iter().filter_map(|r| r[0].as_deref()).collect();
    assert_eq!(
        names,
        [
            "ticket_id",
            "customer_id",
            "subject",
            "opened_at",
            "extra",
            "date"
        ]
    );
    std::fs::write(
        dir.path().join("tickets.ndjson"),
        r#"{"ticket_id":"T1","customer_id":"C1","subject":"Where is my order?","opened_at":"2026-02-01T09:00:00Z","priority":2}"#,
    )
    .unwrap();
    let (ok, _, stderr) = panorama(
        elsewhere.path(),
        &[
            "ingest",
            "support_tickets",
            dir.path().join("tickets.ndjson").to_str().unwrap(),
            "--lake",
            lake_arg,
        ],
    );
    assert!(ok, "{stderr}");
    let rows = simple_rows(
        &analyst,
        "SELECT ticket_id, subject FROM raw.support_tickets",
    )
    .await;
    assert_eq!(
        rows,
        vec![vec![Some("T1".to_string()), Some("***".to_string())]]
    );
    let rows = simple_rows(&admin, "SELECT subject, extra FROM raw.support_tickets").await;
    assert_eq!(
        rows,
        vec![vec![
            Some("Where is my order?".to_string()),
            Some(r#"{"priority":2}"#.to_string())
        ]]
    );

    // Widened over SQL; the next load fills the new column, older rows
    // read NULL, and a bad row's reject shows in the running server.
    let e = admin
        .simple_query("ALTER TABLE raw.orders ADD COLUMN loyalty_id text")
        .await
        .unwrap_err();
    assert_eq!(e.code().unwrap().code(), "0A000", "{e:?}");
    admin
        .simple_query("ALTER TABLE raw.support_tickets ADD COLUMN channel text")
        .await
        .unwrap();
    std::fs::write(
        dir.path().join("tickets2.csv"),
        "ticket_id,customer_id,subject,opened_at,channel\n\
         T2,C1,Refund,2026-02-02T09:00:00Z,phone\n\
         ,C1,No id,2026-02-02T10:00:00Z,chat\n",
    )
    .unwrap();
    let (ok, _, stderr) = panorama(
        elsewhere.path(),
        &[
            "ingest",
            "support_tickets",
            dir.path().join("tickets2.csv").to_str().unwrap(),
            "--lake",
            lake_arg,
        ],
    );
    assert!(!ok, "one row rejected: {stderr}");
    assert_eq!(
        simple_rows(
            &admin,
            "SELECT ticket_id, coalesce(channel, 'NULL') FROM raw.support_tickets ORDER BY 1"
        )
        .await,
        vec![
            vec![Some("T1".to_string()), Some("NULL".to_string())],
            vec![Some("T2".to_string()), Some("phone".to_string())]
        ]
    );
    assert_eq!(
        simple_rows(
            &admin,
            "SELECT line, field, reason FROM system.rejects WHERE table_name = 'support_tickets'"
        )
        .await,
        vec![vec![
            Some("3".to_string()),
            Some("ticket_id".to_string()),
            Some("required, but missing".to_string())
        ]]
    );
    server.stop().await;

    // Erasing Ann reaches her rows in the declared tables too: her
    // loyalty account (by email and card) and her store visit (by card).
    let (ok, _, stderr) = panorama(
        dir.path(),
        &[
            "privacy",
            "forget",
            "email",
            "ann@x.com",
            "--lake",
            lake_arg,
        ],
    );
    assert!(ok, "{stderr}");
    let lake = panorama::lake::Lake::open(lake_arg).unwrap();
    lake.load_declared_tables().await.unwrap();
    assert_eq!(
        sql_lines(
            &lake,
            "SELECT loyalty_id FROM raw.loyalty_accounts ORDER BY 1"
        )
        .await,
        vec!["L3"]
    );
    assert_eq!(
        sql_lines(&lake, "SELECT card FROM raw.store_visits ORDER BY 1").await,
        vec!["L3"]
    );
    let left = found_in_lake(&lake_dir, &["ann lee", "paris-1/9001", "ann@x.com"]);
    assert!(left.is_empty(), "no byte of hers is left: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declaration_that_cannot_work_is_refused_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let lake_dir = dir.path().join("lake");
    let lake_arg = lake_dir.to_str().unwrap();
    for (toml, reason) in [
        (
            "[tables.orders]\ncolumns = [\"a text\"]\n",
            "raw.orders is a built-in table",
        ),
        (
            "[tables.visits]\ncolumns = [\"a blob\"]\n",
            "unknown type \"blob\"",
        ),
        (
            "[tables.visits]\ncolumns = [\"a text\"]\ntime = \"a\"\n",
            "must be a timestamptz",
        ),
        (
            "[[identity.sources]]\ntable = \"visits\"\ncolumn = \"card\"\nid_type = \"email\"\n",
            "source table 'visits' is not a raw table",
        ),
    ] {
        std::fs::write(dir.path().join("panorama.toml"), toml).unwrap();
        let (ok, _, stderr) = panorama(dir.path(), &["sql", "SELECT 1", "--lake", lake_arg]);
        assert!(!ok, "{toml}");
        assert!(stderr.contains(reason), "{toml}: {stderr}");
    }
    // Widening a declared table adds nullable columns; narrowing it or
    // changing a type is refused.
    std::fs::write(
        dir.path().join("panorama.toml"),
        "[tables.visits]\ncolumns = [\"visit_id text not null\", \"card text\"]\n",
    )
    .unwrap();
    assert!(panorama(dir.path(), &["sql", "SELECT 1", "--lake", lake_arg]).0);
    std::fs::write(
        dir.path().join("panorama.toml"),
        "[tables.visits]\ncolumns = [\"visit_id text not null\", \"card text\", \"store text\"]\n",
    )
    .unwrap();
    let (ok, stdout, stderr) = panorama(
        dir.path(),
        &[
            "sql",
            "SELECT count(*) AS n FROM raw.visits WHERE store IS NULL",
            "--lake",
            lake_arg,
        ],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains('0'), "{stdout}");
    std::fs::write(
        dir.path().join("panorama.toml"),
        "[tables.visits]\ncolumns = [\"visit_id int8 not null\", \"card text\", \"store text\"]\n",
    )
    .unwrap();
    let (ok, _, stderr) = panorama(dir.path(), &["sql", "SELECT 1", "--lake", lake_arg]);
    assert!(!ok);
    assert!(
        stderr.contains("its type cannot change from text to int8"),
        "{stderr}"
    );
}

/// README's "sources of your own" example, as written there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_example_joins_a_loyalty_account_to_its_email_profile() {
    let readme = include_str!("../README.md");
    let from = readme
        .find("Sources of your own")
        .expect("README has the example");
    let block = &readme[from..];
    let start = block.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let config = &block[start..start + block[start..].find("```").expect("closed")];
    assert!(config.lines().count() <= 10, "under ten lines: {config}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("panorama.toml"), config).unwrap();
    ann_and_her_loyalty_account_are_one_profile(
        dir.path(),
        "loyalty_id,member_email,full_name,points,updated_at\n\
         L1,Ann@X.com,Ann Lee,120,2026-01-12\n",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_created_over_sql_is_an_identity_source_once_panorama_toml_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let lake_dir = dir.path().join("panorama-lake");
    // An administrator creates the table over SQL; panorama.toml never
    // declares it.
    {
        let lake = Lake::open(lake_dir.to_str().unwrap()).unwrap();
        let server = TestServer::start(&lake).await;
        let client = server.client().await;
        client
            .batch_execute(
                "CREATE TABLE raw.loyalty_accounts (loyalty_id text NOT NULL, \
                 member_email text, updated_at timestamptz) WITH (time = 'updated_at')",
            )
            .await
            .unwrap();
        server.stop().await;
    }
    std::fs::write(
        dir.path().join("panorama.toml"),
        "[identity]\n\
         types = [{ name = \"loyalty_id\", normalize = \"text\", priority = 5 }]\n\
         sources = [{ table = \"loyalty_accounts\", column = \"loyalty_id\", id_type = \"loyalty_id\" },\n\
         { table = \"loyalty_accounts\", column = \"member_email\", id_type = \"email\" }]\n",
    )
    .unwrap();
    ann_and_her_loyalty_account_are_one_profile(
        dir.path(),
        "loyalty_id,member_email,updated_at\nL1,Ann@X.com,2026-01-12\n",
    );
    // A source naming a table neither declared nor created is still
    // refused, with the ways to make one.
    std::fs::write(
        dir.path().join("panorama.toml"),
        "[[identity.sources]]\ntable = \"visits\"\ncolumn = \"card\"\nid_type = \"email\"\n",
    )
    .unwrap();
    let (ok, _, stderr) = panorama(dir.path(), &["sql", "SELECT 1"]);
    assert!(!ok);
    assert!(stderr.contains("CREATE TABLE raw.visits"), "{stderr}");
}

/// In `dir`, whose panorama.toml reads identifiers from
/// `raw.loyalty_accounts`: load Ann's CRM row and her loyalty account `L1`
/// (`loyalty_csv`) and refresh, with the commands README gives (the lake
/// is the default ./panorama-lake); the account and the customer must be
/// one profile.
fn ann_and_her_loyalty_account_are_one_profile(dir: &std::path::Path, loyalty_csv: &str) {
    std::fs::write(dir.join("crm.csv"), CRM_CSV).unwrap();
    std::fs::write(dir.join("loyalty.csv"), loyalty_csv).unwrap();
    for args in [
        &["ingest", "customers", "crm.csv"][..],
        &["ingest", "loyalty_accounts", "loyalty.csv"],
        &["refresh"],
    ] {
        let (ok, _, stderr) = panorama(dir, args);
        assert!(ok, "{args:?}: {stderr}");
    }
    let (ok, stdout, stderr) = panorama(
        dir,
        &[
            "sql",
            "SELECT count(DISTINCT profile_id) AS profiles FROM cdp.identity_links \
             WHERE (id_type = 'loyalty_id' AND id_value = 'L1') \
                OR (id_type = 'customer_id' AND id_value = 'C1')",
        ],
    );
    assert!(ok, "{stderr}");
    let count: Vec<&str> = stdout.split_whitespace().collect();
    assert!(
        count.contains(&"1") && !count.contains(&"2"),
        "one profile: {stdout}"
    );
}
