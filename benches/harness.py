"""Helpers shared by the benchmark harnesses (compare.py, identity_compare.py, ...).

Standard library only, but for `deltalake` (benches/requirements.txt), which
`delta_files` imports when it runs: the scripts import this module as
`harness` (Python puts the script's own folder, benches/, first on sys.path).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote

REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "benches" / "out"
# Written at the lake root once `panorama generate` has finished, so a lake
# left half-written by an interrupted run is never benchmarked by mistake.
# Panorama only lists raw/<table>/, so this file is invisible to it.
MARKER = ".panorama-bench.json"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def median(values: list[float]) -> float:
    return statistics.median(values)


def mb(kb: int | None) -> str:
    """A size in KiB (as ru_maxrss gives it on Linux), printed in MB."""
    return "?" if kb is None else f"{kb / 1024:,.0f} MB"


# --------------------------------------------------------------------------
# The panorama binary
# --------------------------------------------------------------------------

def default_panorama() -> Path:
    target = os.environ.get("CARGO_TARGET_DIR")
    # cargo reads a relative CARGO_TARGET_DIR from the current directory;
    # without it the target folder is the repository's.
    base = Path(target) if target else REPO / "target"
    return base / "release" / "panorama"


def require_binary(binary: Path) -> None:
    if not binary.is_file() or not os.access(binary, os.X_OK):
        sys.exit(f"no panorama binary at {binary}: build it with `cargo build --release` "
                 f"or pass --panorama PATH")


def panorama_version(binary: Path, env: dict | None = None) -> str:
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                             timeout=60, env=env).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return out.split()[-1] if out else "?"


def run_measured(command: list[str], *, cwd: Path | None = None, env: dict | None = None,
                 stdout=subprocess.DEVNULL, stderr=None) -> tuple[int, float, int]:
    """Run `command`; return (exit code, wall seconds, peak RSS in KiB).

    The peak RSS is ru_maxrss from wait4() on the child itself (no
    /usr/bin/time wrapper). If this process is interrupted while waiting
    (Ctrl-C, SIGTERM), the child is killed before the exception goes on, so
    nothing keeps reading the lake behind the caller's back.
    """
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=stdout, stderr=stderr)
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, wall, usage.ru_maxrss


# --------------------------------------------------------------------------
# The lake
# --------------------------------------------------------------------------

def is_delta(lake: Path, table: str) -> bool:
    """Whether raw.<table> is a Delta table (releases since the Delta lake);
    earlier lakes have date=YYYY-MM-DD/ folders."""
    return (lake / "raw" / table / "_delta_log").is_dir()


def parquet_files(lake: Path, table: str) -> list[Path]:
    """The data files of raw.<table>. For a Delta table: those its current
    version names (a compacted-but-not-vacuumed file is still on disk)."""
    folder = lake / "raw" / table
    if not is_delta(lake, table):
        return sorted(folder.glob("*/*.parquet"))
    return delta_files(folder)


def delta_files(folder: Path) -> list[Path]:
    """The data files the current version of the Delta table at `folder`
    names, read with the `deltalake` package (checkpoint and commits).

    Reading the JSON commits alone is wrong once a checkpoint has replaced
    the commits before it: `panorama privacy forget` and the retention jobs
    write a checkpoint and delete every earlier log entry, after which the
    commits left name none of the table's files. Without `deltalake` the
    JSON commits are read, and only while the log has no checkpoint."""
    try:
        from deltalake import DeltaTable
    except ImportError:
        DeltaTable = None
    if DeltaTable is not None:
        return sorted(Path(unquote(uri.removeprefix("file://")))
                      for uri in DeltaTable(str(folder)).file_uris())
    log_dir = folder / "_delta_log"
    if (log_dir / "_last_checkpoint").exists() or any(log_dir.glob("*.checkpoint*.parquet")):
        sys.exit(f"{folder} has a Delta checkpoint: reading its files needs the `deltalake` "
                 f"package (pip install -r benches/requirements.txt)")
    live: dict[str, bool] = {}
    for commit in sorted(log_dir.glob("*.json")):
        for line in commit.read_text().splitlines():
            action = json.loads(line) if line.strip() else {}
            if "add" in action:
                live[action["add"]["path"]] = True
            elif "remove" in action:
                live.pop(action["remove"]["path"], None)
    # Paths in the log are relative URIs, percent-encoded.
    return sorted(folder / unquote(path) for path in live)


def raw_size_mb(lake: Path) -> float:
    total = 0
    for root, _dirs, files in os.walk(lake / "raw"):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total / 1e6


def warm_page_cache(lake: Path, tables: list[str]) -> float:
    """Read every raw file of `tables` once (so no engine pays for a cold cache); MB read."""
    total = 0
    for table in tables:
        for path in parquet_files(lake, table):
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    total += len(chunk)
    return total / 1e6


def generate_lake(binary: Path, lake: Path, scale: int, seed: int,
                  env: dict | None = None) -> float:
    """`panorama generate` into `lake`, then write MARKER; returns the seconds it took."""
    lake.mkdir(parents=True, exist_ok=True)
    command = [str(binary), "generate", "--scale", str(scale), "--seed", str(seed),
               "--lake", str(lake)]
    log("$ " + " ".join(command))
    started = time.perf_counter()
    # Progress goes straight through to the terminal.
    result = subprocess.run(command, env=env)
    if result.returncode != 0:
        sys.exit(f"panorama generate failed with exit code {result.returncode}")
    seconds = time.perf_counter() - started
    (lake / MARKER).write_text(json.dumps({
        "scale": scale,
        "seed": seed,
        "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(seconds, 1),
    }) + "\n")
    log(f"generated the lake in {seconds:.1f} s")
    return seconds


# --------------------------------------------------------------------------
# Signals
# --------------------------------------------------------------------------

def _exit_on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def install_signal_handlers() -> None:
    """SIGINT (even when started in the background, where it is ignored by
    default), SIGTERM and SIGHUP all raise, so `finally` blocks run."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGHUP, _exit_on_signal)


DEFERRED_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


@contextlib.contextmanager
def signals_deferred():
    """Hold SIGINT, SIGTERM and SIGHUP back while the block runs (a series of
    renames that must not stop halfway); one that came in is acted on after."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, DEFERRED_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def publish(markdown: str, out: Path) -> None:
    """Print a benchmark's markdown report and write it to `out`."""
    print(markdown)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown)
    log(f"wrote {out}")


def run(main) -> None:
    """Exit with `main()`'s status: a RuntimeError (server start-up
    problems, already explained) as one line, Ctrl-C as 130."""
    try:
        sys.exit(main())
    except RuntimeError as exc:
        sys.exit(f"error: {exc}")
    except KeyboardInterrupt:
        sys.exit(130)
