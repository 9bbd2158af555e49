//! The `panorama` binary as a script uses it.

use std::process::Command;

use crate::support::*;

fn panorama(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_panorama"))
        .args(args)
        .env_remove("PANORAMA_LAKE")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn sql_prints_the_result_as_a_table() {
    let (dir, lake) = temp_lake();
    land_fixture(&lake).await;
    let lake_arg = dir.path().to_str().unwrap();
    let (ok, out, err) = panorama(&[
        "sql",
        "--lake",
        lake_arg,
        "SELECT channel, count(*) AS orders FROM raw.orders GROUP BY channel ORDER BY channel",
    ]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[1], "| channel | orders |", "{out}");
    assert_eq!(lines[3], "| app     | 1      |", "{out}");
    assert_eq!(lines[4], "| store   | 1      |", "{out}");
    assert_eq!(lines[5], "| web     | 2      |", "{out}");

    let (ok, _, err) = panorama(&["sql", "--lake", lake_arg, "SELECT * FROM raw.nope"]);
    assert!(!ok, "a failing query exits non-zero");
    assert!(err.contains("nope"), "the error says what is wrong: {err}");
}

#[test]
fn help_explains_every_command() {
    let (ok, out, _) = panorama(&["--help"]);
    assert!(ok);
    for command in ["serve", "generate", "sql"] {
        assert!(out.contains(command), "--help lists {command}:\n{out}");
    }
    let (ok, out, _) = panorama(&["generate", "--help"]);
    assert!(ok);
    assert!(out.contains("--scale") && out.contains("--seed"), "{out}");
}

#[test]
fn an_unusable_lake_url_is_a_clear_error() {
    let (ok, _, err) = panorama(&["sql", "--lake", "ftp://host/x", "SELECT 1"]);
    assert!(!ok);
    assert!(err.contains("unsupported scheme 'ftp'"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_seeds_an_empty_lake_builds_profiles_and_answers() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    /// Stops the server however the test ends.
    struct Server(std::process::Child);
    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_panorama"))
        .args(["serve", "--listen", "127.0.0.1:0", "--lake"])
        .arg(dir.path())
        .env_remove("PANORAMA_LAKE")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let _server = Server(child);
    // The log line "ready: psql -h 127.0.0.1 -p <port> ..." names the port;
    // the rest of the log is drained so the server never blocks on it.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split("ready: psql -h 127.0.0.1 -p ").nth(1) {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("0").to_string());
            }
        }
    });
    let port: u16 = tokio::task::spawn_blocking(move || {
        rx.recv_timeout(std::time::Duration::from_secs(120))
            .expect("serve became ready")
            .parse()
            .unwrap()
    })
    .await
    .unwrap();
    assert_ne!(port, 0, "the log names the port actually bound");
    let (client, connection) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user=panorama dbname=panorama"),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    assert_eq!(
        scalar(&client, "SELECT count(*) FROM raw.customers").await,
        1146,
        "the bundled sample: 1,146 CRM rows for its 1,000 customers"
    );
    let profiles = scalar(&client, "SELECT count(*) FROM cdp.profiles").await;
    assert!(profiles > 900, "profiles were built at start: {profiles}");
    let champions = scalar(
        &client,
        "SELECT count(*) FROM analytics.rfm WHERE segment = 'Champions'",
    )
    .await;
    assert!(champions > 0, "the shipped views have data");
}
