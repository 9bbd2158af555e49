//! The `panorama` binary as a script uses it.

use crate::support::*;

fn panorama(args: &[&str]) -> (bool, String, String) {
    run_panorama(std::path::Path::new("."), args)
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

/// The subcommands `panorama <path> --help` lists.
fn subcommands(path: &[&str]) -> Vec<String> {
    let mut args = path.to_vec();
    args.push("--help");
    let (ok, out, err) = panorama(&args);
    assert!(ok, "panorama {} --help: {err}", path.join(" "));
    out.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect()
}

/// Every `panorama …` line README shows names a real command, and every
/// flag on it is one that command takes: the README cannot drift from
/// the binary.
#[test]
fn every_command_readme_shows_exists_with_its_flags() {
    let readme = include_str!("../README.md");
    let mut checked = 0;
    for line in readme.lines() {
        let Some(rest) = line.trim_start().strip_prefix("panorama ") else {
            continue;
        };
        // The command words: subcommands as long as the binary knows them.
        let words: Vec<&str> = rest
            .split_whitespace()
            .take_while(|w| *w != "#")
            .map(|w| w.trim_matches(|c| c == '[' || c == ']'))
            .collect();
        let mut path: Vec<&str> = Vec::new();
        for word in &words {
            if subcommands(&path).iter().any(|c| c == word) {
                path.push(word);
            } else {
                break;
            }
        }
        assert!(!path.is_empty(), "README names no command: {line}");
        let mut args = path.clone();
        args.push("--help");
        let (ok, help, err) = panorama(&args);
        assert!(ok, "{line}: {err}");
        for flag in words.iter().filter(|w| w.starts_with("--")) {
            let flag = flag.split('=').next().unwrap();
            assert!(
                help.contains(flag),
                "{line}: `panorama {}` takes no {flag}",
                path.join(" ")
            );
        }
        checked += 1;
    }
    assert!(
        checked >= 25,
        "README shows {checked} panorama command lines"
    );
}

#[test]
fn an_unusable_lake_url_is_a_clear_error() {
    let (ok, _, err) = panorama(&["sql", "--lake", "ftp://host/x", "SELECT 1"]);
    assert!(!ok);
    assert!(err.contains("unsupported scheme 'ftp'"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_seeds_an_empty_lake_builds_profiles_and_answers() {
    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().join("wal");
    let lake = dir.path().join("lake");
    let served = Served::start(&[
        "serve".as_ref(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--collect-listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--wal-dir".as_ref(),
        wal.as_os_str(),
        "--lake".as_ref(),
        lake.as_os_str(),
    ])
    .await;
    assert_ne!(served.pg_port, 0, "the log names the port actually bound");
    assert_ne!(served.collector.unwrap().port(), 0);
    let client = served.client().await;
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
