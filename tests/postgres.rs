//! A private, real PostgreSQL server for golden comparisons: what a client
//! sees of `tests/clients/golden_schema.sql` there is what it must see of
//! Panorama's catalog.
//!
//! One server per test binary run, started by the first test that asks
//! (initdb takes seconds), on 127.0.0.1 with a free port, and stopped when
//! the run ends. The binaries come from Debian's `postgresql` package, which
//! ./tests/run.sh installs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::support::at_exit;

/// The golden server's port on 127.0.0.1; user and database `panorama`, no
/// password.
pub async fn golden_port() -> u16 {
    static GOLDEN: OnceLock<Result<u16, String>> = OnceLock::new();
    tokio::task::spawn_blocking(|| GOLDEN.get_or_init(start_golden).clone())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("starting the golden PostgreSQL server: {e}"))
}

/// initdb, start, load golden_schema.sql; the stop and the removal of its
/// folder are registered for the end of the run.
fn start_golden() -> Result<u16, String> {
    let bin = server_binaries()?;
    let dir = tempfile::Builder::new()
        .prefix("panorama-golden-pg")
        .tempdir()
        .map_err(|e| format!("creating a folder for the server: {e}"))?
        .keep();
    let data = dir.join("data");
    // initdb and postgres refuse to run as root (CI is root): then the
    // server runs as the `postgres` user the package created.
    use std::os::unix::fs::MetadataExt;
    let as_root = std::fs::metadata(&dir).map_err(|e| e.to_string())?.uid() == 0;
    let server_command = |program: &str| {
        let mut command = if as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(bin.join(program));
            c
        } else {
            Command::new(bin.join(program))
        };
        command.current_dir(&dir);
        command
    };
    {
        let (data, dir) = (data.clone(), dir.clone());
        let mut stop = server_command("pg_ctl");
        stop.arg("-D").arg(&data).args(["stop", "-m", "immediate"]);
        at_exit(move || {
            if data.join("postmaster.pid").exists() {
                let _ = stop.output();
            }
            let _ = std::fs::remove_dir_all(dir);
        });
    }
    if as_root {
        run(Command::new("chown").args(["postgres:postgres"]).arg(&dir))?;
    }
    run(server_command("initdb").arg("-D").arg(&data).args([
        "-A",
        "trust",
        "-U",
        "panorama",
        "-E",
        "UTF8",
        "--no-locale",
        "--no-sync",
    ]))?;
    let port = free_port()?;
    let options = format!(
        "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off \
             -c full_page_writes=off -c synchronous_commit=off",
        dir.display()
    );
    run(server_command("pg_ctl")
        .arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(dir.join("server.log"))
        .args(["-w", "-t", "60", "-o", &options, "start"]))
    .map_err(|e| {
        let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
        format!("{e}\nserver log:\n{log}")
    })?;
    let psql = |database: &str| {
        let mut c = Command::new(bin.join("psql"));
        c.args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-U",
            "panorama",
        ])
        .args(["-p", &port.to_string(), "-d", database]);
        c
    };
    run(psql("postgres").args(["-c", "CREATE DATABASE panorama"]))?;
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/golden_schema.sql");
    run(psql("panorama").arg("-f").arg(schema))?;
    Ok(port)
}

/// The `bin` folder of the newest PostgreSQL server installed by Debian's
/// packages (`/usr/lib/postgresql/<major>/bin`).
fn server_binaries() -> Result<PathBuf, String> {
    let missing = "no PostgreSQL server in /usr/lib/postgresql/*/bin: run ./tests/run.sh, \
                   which installs Debian's postgresql package";
    let versions = std::fs::read_dir("/usr/lib/postgresql").map_err(|_| missing.to_string())?;
    versions
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let major: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .max()
        .map(|(_, bin)| bin)
        .ok_or_else(|| missing.to_string())
}

/// A port nothing listens on now (the system's pick for port 0).
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port: {e}"))
}

/// Run `command` to completion; its output in the error when it fails.
fn run(command: &mut Command) -> Result<(), String> {
    let output = command
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("running {command:?}: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "{command:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}
