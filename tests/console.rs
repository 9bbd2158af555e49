//! The web console and the profile API of `panorama serve`, on the bundled
//! sample with users configured: the API answers a known identifier in
//! any spelling (masked for an analyst's token), 404 for an unknown one,
//! 401 for a bad token, and counts an event the collector accepted before
//! any refresh; then a real browser (Debian's chromium through
//! chromium-driver and Selenium, `tests/clients/console_browser.py`) signs
//! in with the keyboard only, finds a person, checks their page against
//! SQL, builds and saves a segment that psql then reads, sees `***` as an
//! analyst, and finds no error in the browser's console. Screenshots of
//! each page are kept in `$CARGO_TARGET_DIR/console-screenshots/`.

use std::process::Command;

use panorama::pgwire::auth::Verifier;
use serde_json::Value;
use sha2::Digest;

use crate::support::*;

const ADMIN_TOKEN: &str = "web-token-for-the-shop";
const ANALYST_TOKEN: &str = "partner-token-for-analytics";

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let user = |name: &str, password: &str, role: &str| {
        format!(
            "[[users]]\nname = \"{name}\"\npassword = \"{}\"\nrole = \"{role}\"\n",
            Verifier::make(password, name.as_bytes(), 4096).to_text()
        )
    };
    let token = |name: &str, token: &str, role: &str| {
        let hash: String = sha2::Sha256::digest(token.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!(
            "[[console.tokens]]\nname = \"{name}\"\ntoken_sha256 = \"{hash}\"\nrole = \"{role}\"\n"
        )
    };
    let path = dir.join("panorama.toml");
    std::fs::write(
        &path,
        [
            user("ada", "ada-secret", "admin"),
            user("ann", "ann-secret", "analyst"),
            token("shop", ADMIN_TOKEN, "admin"),
            token("partner", ANALYST_TOKEN, "analyst"),
        ]
        .join("\n"),
    )
    .unwrap();
    path
}

async fn get(url: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn admin_client(served: &Served) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=ada password=ada-secret dbname=panorama",
            served.pg_port
        ),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_and_profile_api_serve_people_as_sql_does() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let lake = dir.path().join("lake");
    let wal = dir.path().join("wal");
    let served = Served::start(&[
        "--config".as_ref(),
        config.as_os_str(),
        "--lake".as_ref(),
        lake.as_os_str(),
        "serve".as_ref(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--collect-listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--wal-dir".as_ref(),
        wal.as_os_str(),
    ])
    .await;
    let console = served.console.expect("the console runs with serve");
    let client = admin_client(&served).await;
    // Someone with an email and a cookie.
    let row = client
        .query_one(
            "SELECT e.profile_id, e.id_value, a.id_value FROM cdp.identity_links e \
             JOIN cdp.identity_links a ON a.profile_id = e.profile_id AND a.id_type = 'anonymous_id' \
             WHERE e.id_type = 'email' ORDER BY e.profile_id, e.id_value, a.id_value LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    let (profile_id, email, cookie): (String, String, String) =
        (row.get(0), row.get(1), row.get(2));
    let api = |spelling: &str| format!("http://{console}/api/v1/profiles/email/{spelling}");

    // The API: any spelling of the email, the profile as SQL has it.
    let (status, body) = get(&api(&email.to_uppercase()), Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["profile_id"], profile_id.as_str());
    let emails = body["profile"]["emails"]
        .as_array()
        .expect("emails")
        .clone();
    assert!(emails.iter().any(|e| e == email.as_str()), "{body}");
    assert!(
        body["identifiers"]
            .as_array()
            .is_some_and(|ids| ids.len() >= 2)
    );
    // An analyst's token gets what an analyst's SELECT gets.
    let (status, masked) = get(&api(&email), Some(ANALYST_TOKEN)).await;
    assert_eq!(status, 200);
    assert!(
        masked["profile"]["emails"]
            .as_array()
            .is_some_and(|e| !e.is_empty() && e.iter().all(|v| v == "***")),
        "{masked}"
    );
    assert!(!masked.to_string().contains(&email), "{masked}");
    let (status, body) = get(&api(&email), Some("not-a-token")).await;
    assert_eq!(status, 401, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("token")));
    assert_eq!(get(&api(&email), None).await.0, 401);
    let (status, body) = get(&api("nobody@nowhere.example"), Some(ADMIN_TOKEN)).await;
    assert_eq!((status, body["error"].is_string()), (404, true), "{body}");
    let (status, _) = get(
        &format!("http://{console}/api/v1/profiles/shoe_size/42"),
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, 404);

    // An event the collector accepts counts before any refresh.
    let collector = served.collector.unwrap();
    let event = serde_json::json!({
        "type": "track", "event": "Viewed Console", "anonymousId": cookie,
        "messageId": "console-test-1", "timestamp": chrono::Utc::now().to_rfc3339()
    });
    let sent = reqwest::Client::new()
        .post(format!("http://{collector}/v1/track"))
        .body(event.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status().as_u16(), 200);
    let (_, body) = get(&api(&email), Some(ADMIN_TOKEN)).await;
    let recent = body["events_since_refresh"]
        .as_array()
        .expect("events")
        .clone();
    assert!(
        recent
            .iter()
            .any(|e| e["message_id"] == "console-test-1" && e["event"] == "Viewed Console"),
        "{body}"
    );

    // A refresh commits a new version: the API's in-memory copy follows
    // within seconds, without a restart.
    let before = body["version"].as_u64().expect("version");
    client
        .batch_execute("REFRESH MATERIALIZED VIEW cdp.profiles")
        .await
        .unwrap();
    let mut seen = before;
    for _ in 0..40 {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        seen = get(&api(&email), Some(ADMIN_TOKEN)).await.1["version"]
            .as_u64()
            .unwrap_or(before);
        if seen > before {
            break;
        }
    }
    assert!(seen > before, "the API still answers version {seen}");

    // A proof of consent requested for the person shows on their page.
    let proof = Command::new(env!("CARGO_BIN_EXE_panorama"))
        .arg("--lake")
        .arg(&lake)
        .args(["privacy", "proof", "email", &email])
        .env_remove("PANORAMA_LAKE")
        .output()
        .unwrap();
    assert!(
        proof.status.success(),
        "{}",
        String::from_utf8_lossy(&proof.stderr)
    );

    browser(&served, &client, &profile_id, &email).await;
}

/// The browser half: `console_browser.py` drives chromium and prints one
/// JSON object; the segment it saved is then read over psql.
async fn browser(served: &Served, client: &tokio_postgres::Client, profile_id: &str, email: &str) {
    let console = served.console.unwrap();
    let python = std::env::var("PANORAMA_TEST_PYTHON")
        .expect("PANORAMA_TEST_PYTHON is not set: run ./tests/run.sh");
    let screenshots = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir())
        .join("console-screenshots");
    std::fs::create_dir_all(&screenshots).unwrap();
    let expected_first_name: String = client
        .query_one(
            "SELECT coalesce(first_name, '') FROM cdp.profiles WHERE profile_id = $1",
            &[&profile_id],
        )
        .await
        .unwrap()
        .get(0);
    let out = Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/clients/console_browser.py"
        ))
        .arg(format!("http://{console}"))
        .arg(email)
        .arg(profile_id)
        .arg(&screenshots)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}"))
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    assert_eq!(report["keyboard_login"], true, "{report}");
    assert_eq!(
        report["person_url"],
        format!("/person/{profile_id}"),
        "{report}"
    );
    assert_eq!(
        report["admin_first_name"],
        expected_first_name.as_str(),
        "{report}"
    );
    assert!(
        report["admin_emails"]
            .as_str()
            .is_some_and(|e| e.contains(email)),
        "{report}"
    );
    assert!(
        report["identifiers"].as_u64().is_some_and(|n| n >= 2),
        "{report}"
    );
    assert!(
        report["graph_edges"].as_u64().is_some_and(|n| n >= 1),
        "{report}"
    );
    assert_eq!(report["analyst_emails"], "[***]", "{report}");
    assert_eq!(report["analyst_sees_email"], false, "{report}");
    assert_eq!(report["keyboard_nav"], "/segments", "{report}");
    assert!(
        report["requests"]
            .as_str()
            .is_some_and(|r| r.contains("proof") && r.contains("completed")),
        "{report}"
    );
    assert!(
        report["block_buttons"].as_u64().is_some_and(|n| n >= 3),
        "{report}"
    );
    assert_eq!(report["console_errors"], serde_json::json!([]), "{report}");
    for page in [
        "login",
        "person",
        "builder",
        "segment",
        "voc",
        "operations",
        "analyst_person",
    ] {
        assert!(
            screenshots.join(format!("{page}.png")).is_file(),
            "screenshot of {page}"
        );
    }
    // The segment the browser saved, read over psql as the builder's SQL
    // said.
    let saved: i64 = client
        .query_one("SELECT count(*) FROM analytics.browser_buyers", &[])
        .await
        .unwrap()
        .get(0);
    let expected: i64 = client
        .query_one("SELECT count(*) FROM cdp.profiles WHERE orders >= 2", &[])
        .await
        .unwrap()
        .get(0);
    assert!(expected > 0);
    assert_eq!(saved, expected);
    assert_eq!(report["segment_size"], expected.to_string(), "{report}");
    assert!(
        report["builder_sql"]
            .as_str()
            .is_some_and(|s| s.contains("p.orders >= 2"))
    );
}
