//! An erasure killed with `kill -9` at several points of its work is
//! completed by the next run — the next `privacy forget`, or the start of
//! `serve` — and, in between, every table stays readable (a Delta commit is
//! whole or absent: no reader meets a missing file). Afterwards the lake is
//! exactly what an uninterrupted erasure leaves: the same rows per table,
//! and no byte of the people's identifiers anywhere.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use panorama::identity::IdentityConfig;
use panorama::lake::Lake;

use crate::support::*;

const PEOPLE: usize = 100;

fn panorama(lake: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_panorama"));
    command
        .args(args)
        .arg("--lake")
        .arg(lake)
        .current_dir(lake)
        .env_remove("PANORAMA_LAKE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Number of whole commits in a Delta table's log (the local store stages
/// a file as `name#n` before renaming it).
fn commits(table: &Path) -> usize {
    std::fs::read_dir(table.join("_delta_log")).map_or(0, |d| {
        d.flatten()
            .filter(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                name.ends_with(".json") && !name.contains('#')
            })
            .count()
    })
}

fn modified(file: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(file).and_then(|m| m.modified()).ok()
}

/// Rows per raw table, and the count of profiles.
async fn counts(lake: &Lake) -> Vec<String> {
    let mut out = Vec::new();
    for table in [
        "raw.customers",
        "raw.orders",
        "raw.order_items",
        "raw.events",
        "raw.survey_responses",
        "raw.consents",
        "cdp.profiles",
    ] {
        let n = sql_lines(lake, &format!("SELECT count(*) FROM {table}")).await;
        out.push(format!("{table} {}", n[0]));
    }
    out
}

/// Where an erasure is killed: when the file or table named has changed.
enum KillWhen {
    /// The people's identifiers are recorded (salted), nothing removed yet.
    Recorded,
    /// A raw table was rewritten without their rows; others are not yet.
    RawTableRewritten(&'static str),
    /// The views were rebuilt; old versions and history not yet purged.
    ViewsRebuilt,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_killed_at_any_point_is_completed_by_the_next_run() {
    let base = tempfile::tempdir().unwrap();
    let generated = panorama(base.path(), &["generate", "--scale", "1"])
        .output()
        .unwrap();
    assert!(generated.status.success(), "{generated:?}");
    let refreshed = panorama(base.path(), &["refresh"]).output().unwrap();
    assert!(refreshed.status.success(), "{refreshed:?}");

    // A hundred people, and every long identifier they have (short ids
    // such as customer numbers are substrings of others'; emails, cookies
    // and user ids are not).
    let lake = Lake::open(base.path().to_str().unwrap()).unwrap();
    let emails = sql_lines(
        &lake,
        &format!(
            "SELECT id_value FROM cdp.identity_links WHERE id_type = 'email' \
             ORDER BY md5(id_value) LIMIT {PEOPLE}"
        ),
    )
    .await;
    assert_eq!(emails.len(), PEOPLE);
    let list = emails
        .iter()
        .map(|e| format!("'{e}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let needles: Vec<String> = sql_lines(
        &lake,
        &format!(
            "SELECT DISTINCT lower(b.id_value) FROM cdp.identity_links a \
             JOIN cdp.identity_links b ON a.profile_id = b.profile_id \
             WHERE a.id_type = 'email' AND a.id_value IN ({list}) AND length(b.id_value) >= 12"
        ),
    )
    .await;
    assert!(needles.len() > PEOPLE, "{} identifiers", needles.len());
    // The request sits outside the lakes searched byte by byte.
    let work = tempfile::tempdir().unwrap();
    let ids = work.path().join("ids.csv");
    let csv: String = emails.iter().map(|e| format!("email,{e}\n")).collect();
    std::fs::write(&ids, format!("id_type,value\n{csv}")).unwrap();
    let ids = ids.to_str().unwrap().to_string();

    // The reference: the same erasure, not interrupted.
    let reference = work.path().join("reference");
    copy_tree(base.path(), &reference);
    let done = panorama(&reference, &["privacy", "forget", "--file", &ids])
        .output()
        .unwrap();
    assert!(done.status.success(), "{done:?}");
    let expected = counts(&Lake::open(reference.to_str().unwrap()).unwrap()).await;
    assert!(found_in_lake(&reference, &needles).is_empty());

    for (n, when) in [
        KillWhen::Recorded,
        KillWhen::RawTableRewritten("order_items"),
        KillWhen::RawTableRewritten("customers"),
        KillWhen::ViewsRebuilt,
    ]
    .into_iter()
    .enumerate()
    {
        let root = work.path().join(format!("killed-{n}"));
        copy_tree(base.path(), &root);
        let watched = match when {
            KillWhen::Recorded => root.join("system/suppressions"),
            KillWhen::RawTableRewritten(table) => root.join("raw").join(table),
            KillWhen::ViewsRebuilt => root.join("cdp/_manifest.json"),
        };
        let customers = root.join("raw/customers");
        let (before, customers_before) = (commits(&watched), commits(&customers));
        let mut manifest = modified(&watched);
        let mut erasure = panorama(&root, &["privacy", "forget", "--file", &ids])
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(300);
        if matches!(when, KillWhen::ViewsRebuilt) {
            // The refresh that brings the graph up to date first also
            // writes the manifest: wait for the last raw tables' turn.
            while commits(&customers) == customers_before {
                assert!(erasure.try_wait().unwrap().is_none(), "ended too soon");
                assert!(Instant::now() < deadline, "customers never rewritten");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            manifest = modified(&watched);
        }
        loop {
            let reached = match when {
                KillWhen::ViewsRebuilt => modified(&watched) != manifest,
                _ => commits(&watched) > before,
            };
            if reached {
                break;
            }
            assert!(
                erasure.try_wait().unwrap().is_none(),
                "point {n}: the erasure ended before it could be killed"
            );
            assert!(Instant::now() < deadline, "point {n} never reached");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        erasure.kill().unwrap();
        erasure.wait().unwrap();

        // Between the crash and the next run every table reads whole.
        let lake = Lake::open(root.to_str().unwrap()).unwrap();
        counts(&lake).await;
        let statuses = sql_lines(
            &lake,
            "SELECT status FROM system.privacy_requests WHERE kind = 'erasure'",
        )
        .await;
        assert!(
            statuses.iter().all(|s| s == "started"),
            "point {n}: {statuses:?}"
        );

        // The next run: `serve` for one point, a later erasure of someone
        // else for the others.
        if n == 0 {
            let served = serve_lake(&root).await;
            drop(served);
        } else {
            let next = panorama(&root, &["privacy", "forget", "email", "nobody@example.org"])
                .output()
                .unwrap();
            assert!(next.status.success(), "point {n}: {next:?}");
        }
        let lake = Lake::open(root.to_str().unwrap()).unwrap();
        let completed = sql_lines(
            &lake,
            "SELECT count(DISTINCT request_id) FROM system.privacy_requests \
             WHERE kind = 'erasure' AND status = 'completed'",
        )
        .await;
        assert_eq!(completed, [if n == 0 { "1" } else { "2" }], "point {n}");
        assert_eq!(counts(&lake).await, expected, "point {n}");
        let left = found_in_lake(&root, &needles);
        assert!(left.is_empty(), "point {n}: {left:?}");
        // Nothing left to resume.
        let again = panorama::privacy::resume(&lake, &IdentityConfig::default(), &mut |_: &str| {})
            .await
            .unwrap();
        assert!(again.is_empty(), "point {n}");
    }
}
