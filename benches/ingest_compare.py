#!/usr/bin/env python3
"""Batch ingest throughput: `panorama ingest` against DuckDB, same files.

Steps:
  1. export the first --rows rows of raw.events (by timestamp) of an existing
     lake with DuckDB, every column of the raw table (not the `date`
     partition), to a CSV file with a header and to an NDJSON file (one
     object per line) in a temporary folder under --work-dir; the JSON text
     columns (properties, traits, context) stay strings in both; and a gzip
     copy of the CSV (--formats picks among csv, ndjson, csv.gz);
  2. for each file: `panorama ingest events <file>` into a new, empty lake
     (wall time and peak RSS of the whole process, which must report 0
     rejected and every row landed; the landed rows are then compared
     with the source rows, column by column, outside the timing); then, in
     this process, DuckDB (threads 2 by default) converting the same file to
     one zstd Parquet file with COPY (SELECT * FROM read_csv/read_json(...))
     TO ... (FORMAT parquet);
  3. print a markdown table (rows/s = rows / wall seconds; the median of
     --runs runs) and write it to benches/out/ingest-compare-<rows>.md.

The two sides do not do the same work: Panorama validates and coerces every
row to the raw table's types (rejecting bad ones), hashes the file for
idempotence, sorts each 100,000-row chunk by time and lands it as one
Parquet file per day, and records the load; DuckDB converts the file as it
is, with the types it detects, to a single Parquet file. The comparison is
what it costs to get the same rows into Parquet.

Usage:
  /var/tmp/panorama-bench-venv/bin/python benches/ingest_compare.py \\
      --lake benches/out/lake-scale100 --rows 1000000 --panorama target/release/panorama

Before measuring it waits while another benchmark of benches/ (or cargo,
rustc) is running, and measures again a step during which one started.
The temporary folder is removed at the end unless --keep is given.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import (OUT_DIR, REPO, default_panorama, install_signal_handlers, log, mb,
                    panorama_version, parquet_files, publish, require_binary, sql_string)

try:
    import duckdb
except ImportError as exc:  # pragma: no cover - only a hint for the user
    sys.exit(
        f"missing Python package ({exc.name}); install the pinned ones with:\n"
        f"  pip install -r {Path(__file__).resolve().parent / 'requirements.txt'}"
    )

TABLE = "events"
# Benchmarks of benches/ that must not run at the same time (script names),
# and the compiler (a build next to the benchmark takes a core or more).
OTHER_BENCHMARKS = {"compare.py", "identity_compare.py", "ingest_compare.py"}
COMPILERS = {"rustc", "cargo"}
# Measurements redone at most this often when other work started meanwhile.
MAX_ATTEMPTS = 3
WAIT_POLL_S = 20
# "<file>: N rows read, M landed in K files, R rejected" (stderr of ingest).
FILE_LINE = re.compile(
    r": (\d+) rows read, (\d+) landed in (\d+) files, (\d+) rejected\s*$")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Batch ingest throughput: panorama ingest vs DuckDB COPY to Parquet.",
    )
    parser.add_argument("--lake", type=Path, default=OUT_DIR / "lake-scale100",
                        help="lake whose raw.events provides the rows "
                             "(default benches/out/lake-scale100)")
    parser.add_argument("--rows", type=int, default=1_000_000,
                        help="rows to export and load: the first N by timestamp "
                             "(default 1,000,000)")
    parser.add_argument("--runs", type=int, default=1,
                        help="timed runs per file and engine; the median is reported (default 1)")
    parser.add_argument("--panorama", type=Path, default=None,
                        help="panorama binary (default ${CARGO_TARGET_DIR:-target}/release/panorama)")
    parser.add_argument("--duckdb-threads", type=int, default=2,
                        help="DuckDB threads (default 2)")
    parser.add_argument("--formats", default="csv,ndjson,csv.gz",
                        help="comma-separated input formats among csv, ndjson, csv.gz "
                             "(default all three)")
    parser.add_argument("--time-format", choices=["duckdb", "iso"], default="duckdb",
                        help="how times are written in the files: duckdb (default, DuckDB's own "
                             "'YYYY-MM-DD HH:MM:SS.ffffff+00') or iso "
                             "('YYYY-MM-DDTHH:MM:SS.ffffffZ')")
    parser.add_argument("--work-dir", type=Path, default=Path("/var/tmp"),
                        help="where the temporary folder (files, lakes, Parquet) goes "
                             "(default /var/tmp)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary folder (its path is printed)")
    parser.add_argument("--no-wait", action="store_true",
                        help="do not wait for other benchmarks of benches/ (or cargo, rustc) to finish")
    parser.add_argument("--out", type=Path, default=None,
                        help="markdown report (default benches/out/ingest-compare-<rows>.md)")
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error("--rows must be at least 1")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    args.formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    unknown = [f for f in args.formats if f not in ("csv", "ndjson", "csv.gz")]
    if unknown or not args.formats:
        parser.error(f"--formats: unknown {', '.join(unknown) or '(none given)'}")
    args.lake = args.lake.resolve()
    args.panorama = (args.panorama or default_panorama()).resolve()
    args.out = (args.out or OUT_DIR / f"ingest-compare-{args.rows}.md").resolve()
    return args


# --------------------------------------------------------------------------
# Other benchmarks
# --------------------------------------------------------------------------

def other_benchmarks() -> list[str]:
    """Command lines of running benches/ scripts other than this process
    (an argument whose file name is one of OTHER_BENCHMARKS) and of running
    cargo or rustc (COMPILERS)."""
    found = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in (me, os.getppid()):
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        names = {Path(a.decode(errors="replace")).name for a in argv if a}
        if names & OTHER_BENCHMARKS or (argv[0] and Path(argv[0].decode(errors="replace")).name
                                        in COMPILERS):
            found.append(f"{entry.name}: " + " ".join(a.decode(errors="replace") for a in argv if a))
    return found


def wait_for_other_benchmarks() -> None:
    waited = 0
    while running := other_benchmarks():
        if waited == 0:
            log("another benchmark or a build is running; waiting for it to finish:")
            for line in running:
                log(f"  {line[:200]}")
        time.sleep(WAIT_POLL_S)
        waited += WAIT_POLL_S
    if waited:
        log(f"waited {waited} s for other benchmarks")


# --------------------------------------------------------------------------
# Timing a child process
# --------------------------------------------------------------------------

# Runs argv[2:], then writes "<exit code> <wall seconds> <peak RSS KiB>" to
# argv[1]. A small interpreter between this process and the measured one:
# Linux starts a child's ru_maxrss at its parent's RSS at fork time (and
# keeps the pre-exec high-water mark through exec), so a child of this
# process, which holds DuckDB's memory, would report at least that much.
_TIMER = """
import os, subprocess, sys, time
started = time.perf_counter()
proc = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL)
_, status, usage = os.wait4(proc.pid, 0)
wall = time.perf_counter() - started
with open(sys.argv[1], "w") as f:
    f.write(f"{os.waitstatus_to_exitcode(status)} {wall} {usage.ru_maxrss}")
"""


def run_timed(command: list[str], result_path: Path, stderr) -> tuple[int, float, int]:
    """Run `command` (stderr to `stderr`); return (exit code, wall seconds,
    peak RSS in KiB) of that process alone (see _TIMER). On an interrupt the
    whole process group (timer and command) is killed before the exception
    goes on."""
    proc = subprocess.Popen([sys.executable, "-c", _TIMER, str(result_path), *command],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=stderr, start_new_session=True)
    try:
        proc.wait()
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    try:
        code, wall, rss = result_path.read_text().split()
    except (OSError, ValueError):
        return proc.returncode or 1, 0.0, 0
    return int(code), float(wall), int(rss)


# --------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------

def duckdb_connect(threads: int) -> "duckdb.DuckDBPyConnection":
    con = duckdb.connect()
    con.execute(f"SET threads TO {threads}")
    # Times are written and read in UTC, whatever the machine's zone.
    con.execute("SET TimeZone = 'UTC'")
    return con


def source_sql(lake: Path) -> str:
    pattern = str(lake / "raw" / TABLE / "*" / "*.parquet")
    return f"read_parquet({sql_string(pattern)}, hive_partitioning = true)"


def export_inputs(con, args, folder: Path) -> tuple[int, dict[str, Path]]:
    """Write the reference Parquet file, the CSV, the NDJSON (and the gzip
    copy of the CSV) into `folder`; return the row count and the files."""
    if not parquet_files(args.lake, TABLE):
        sys.exit(f"no Parquet files under {args.lake}/raw/{TABLE}/: pass --lake")
    described = con.execute(
        f"DESCRIBE SELECT * EXCLUDE (date) FROM {source_sql(args.lake)}").fetchall()
    columns = [row[0] for row in described]
    time_columns = {row[0] for row in described if row[1].startswith("TIMESTAMP")}
    reference = folder / "reference.parquet"
    started = time.perf_counter()
    # The first N rows by time (message_id breaks ties: the same rows every run).
    con.execute(
        f"COPY (SELECT {', '.join(columns)} FROM {source_sql(args.lake)} "
        f"ORDER BY timestamp, message_id LIMIT {args.rows}) "
        f"TO {sql_string(str(reference))} (FORMAT parquet, COMPRESSION zstd)")
    rows = con.execute(f"SELECT count(*) FROM read_parquet({sql_string(str(reference))})").fetchone()[0]
    if rows < args.rows:
        log(f"warning: raw.{TABLE} holds only {rows:,} rows, not {args.rows:,}")
    if args.time_format == "iso":
        select = ", ".join(
            f"strftime(timezone('UTC', {c}), '%Y-%m-%dT%H:%M:%S.%fZ') AS {c}"
            if c in time_columns else c for c in columns)
    else:
        select = "*"
    query = f"SELECT {select} FROM read_parquet({sql_string(str(reference))})"
    files: dict[str, Path] = {}
    wanted = set(args.formats)
    if {"csv", "csv.gz"} & wanted:
        files["csv"] = folder / f"{TABLE}.csv"
        con.execute(f"COPY ({query}) TO {sql_string(str(files['csv']))} (FORMAT csv, HEADER true)")
    if "ndjson" in wanted:
        files["ndjson"] = folder / f"{TABLE}.ndjson"
        # VARCHAR columns (properties, traits, context hold JSON text) are
        # written as JSON strings, NULL as null.
        con.execute(f"COPY ({query}) TO {sql_string(str(files['ndjson']))} (FORMAT json)")
    if "csv.gz" in wanted:
        files["csv.gz"] = folder / f"{TABLE}.csv.gz"
        with open(files["csv.gz"], "wb") as out:
            subprocess.run(["gzip", "-6", "-c", str(files["csv"])], stdout=out, check=True)
    if "csv" not in wanted and "csv" in files:
        files.pop("csv").unlink()
    log(f"exported {rows:,} rows ({args.time_format} times) in "
        f"{time.perf_counter() - started:.1f} s: "
        + ", ".join(f"{name} {size_mb(path):,.1f} MB" for name, path in files.items()))
    return rows, files


def size_mb(path: Path) -> float:
    return path.stat().st_size / 1e6


def warm(path: Path) -> None:
    """Read the file once so neither engine pays for a cold page cache."""
    with open(path, "rb") as f:
        while f.read(1 << 22):
            pass


# --------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------

@dataclass
class Result:
    pano_s: list[float] = field(default_factory=list)
    pano_rss_kb: list[int] = field(default_factory=list)
    pano_files: int | None = None
    duck_s: list[float] = field(default_factory=list)
    duck_parquet_mb: float | None = None
    errors: list[str] = field(default_factory=list)
    check: str | None = None


def first_rejects(binary: Path, lake: Path) -> str:
    sql = "SELECT line, field, reason, raw FROM system.rejects LIMIT 5"
    out = subprocess.run([str(binary), "--lake", str(lake), "sql", "--", sql],
                         capture_output=True, text=True, timeout=300)
    return (out.stdout + out.stderr).strip()


def run_panorama(args, path: Path, rows: int, lake: Path, log_path: Path,
                 result: Result) -> bool:
    """One `panorama ingest` into the new lake `lake`; False if it failed."""
    lake.mkdir(parents=True)
    command = [str(args.panorama), "--lake", str(lake), "ingest", TABLE, str(path)]
    log("$ " + " ".join(command))
    with open(log_path, "wb") as err:
        code, seconds, rss = run_timed(command, log_path.with_suffix(".time"), err)
    text = log_path.read_text(errors="replace")
    match = next((m for m in map(FILE_LINE.search, text.splitlines()) if m), None)
    if match is None:
        result.errors.append(f"Panorama exited with {code} and no per-file line: "
                             f"{text.strip()[-500:]}")
        log(f"error: {result.errors[-1]}")
        return False
    read, landed, files, rejected = map(int, match.groups())
    log(f"  {seconds:.2f} s, peak RSS {mb(rss)}: {read:,} rows read, {landed:,} landed "
        f"in {files} files, {rejected:,} rejected (exit {code})")
    if code != 0 or rejected or landed != rows or read != rows:
        message = (f"Panorama: exit {code}, {read:,} rows read, {landed:,} landed, "
                   f"{rejected:,} rejected, expected {rows:,} landed and 0 rejected")
        if rejected:
            message += "; first rejects:\n" + first_rejects(args.panorama, lake)
        result.errors.append(message)
        log(f"error: {message}")
        return False
    result.pano_s.append(seconds)
    result.pano_rss_kb.append(rss)
    result.pano_files = files
    return True


def check_landed(con, reference: Path, lake: Path, rows: int) -> str:
    """Compare the landed rows with the source rows, column by column (by
    message_id); a short verdict. Panorama loads a blank text value (empty
    or only whitespace) as NULL, as a missing field: those are counted
    apart."""
    ref = f"read_parquet({sql_string(str(reference))})"
    described = con.execute(f"DESCRIBE SELECT * FROM {ref}").fetchall()
    blank = lambda c: f"regexp_matches(r.{c}, '^\\s*$')"  # noqa: E731
    checks = []
    for c, kind, *_ in described:
        if c == "message_id":
            continue
        if kind == "VARCHAR":
            checks.append(f"count(*) FILTER (WHERE (CASE WHEN {blank(c)} THEN NULL ELSE r.{c} END)"
                          f" IS DISTINCT FROM l.{c}) AS {c}")
            checks.append(f"count(*) FILTER (WHERE {blank(c)} AND l.{c} IS NULL) AS \"blank {c}\"")
        else:
            checks.append(f"count(*) FILTER (WHERE r.{c} IS DISTINCT FROM l.{c}) AS {c}")
    landed_rows = con.execute(f"SELECT count(*) FROM {source_sql(lake)}").fetchone()[0]
    cursor = con.execute(
        f"SELECT count(*) AS matched, {', '.join(checks)} FROM {ref} r "
        f"JOIN {source_sql(lake)} l USING (message_id)")
    values = cursor.fetchone()
    names = [d[0] for d in cursor.description]
    matched = values[0]
    counts = {n: v for n, v in zip(names[1:], values[1:]) if v}
    blanks = {n.removeprefix("blank "): v for n, v in counts.items() if n.startswith("blank ")}
    diffs = {n: v for n, v in counts.items() if not n.startswith("blank ")}
    blank_note = ("" if not blanks else " (blank text landed as NULL: "
                  + ", ".join(f"{n} {v:,}" for n, v in blanks.items()) + ")")
    if landed_rows == rows and matched == rows and not diffs:
        return f"all {rows:,} rows landed with the same values in every column{blank_note}"
    return (f"**landed rows differ**: {landed_rows:,} landed, {matched:,} of {rows:,} found by "
            f"message_id; rows differing per column: "
            + (", ".join(f"{n} {v:,}" for n, v in diffs.items()) or "none") + blank_note)


def reader_sql(name: str, path: Path) -> str:
    if name == "ndjson":
        return f"read_json({sql_string(str(path))}, format = 'newline_delimited')"
    return f"read_csv({sql_string(str(path))}, header = true, auto_detect = true)"


def run_duckdb(con, name: str, path: Path, rows: int, out: Path, result: Result) -> bool:
    """One COPY of the file to Parquet, in this process; False if it failed."""
    sql = (f"COPY (SELECT * FROM {reader_sql(name, path)}) TO {sql_string(str(out))} "
           f"(FORMAT parquet, COMPRESSION zstd)")
    log(f"DuckDB: {sql}")
    started = time.perf_counter()
    try:
        written = con.execute(sql).fetchone()
    except duckdb.Error as exc:
        result.errors.append(f"DuckDB: {str(exc).strip().splitlines()[0]}")
        log(f"error: {result.errors[-1]}")
        return False
    seconds = time.perf_counter() - started
    count = written[0] if written else None
    if count is None:
        count = con.execute(f"SELECT count(*) FROM read_parquet({sql_string(str(out))})").fetchone()[0]
    log(f"  {seconds:.2f} s, {count:,} rows, {size_mb(out):,.1f} MB of Parquet")
    if count != rows:
        result.errors.append(f"DuckDB wrote {count:,} rows, not {rows:,}")
        log(f"error: {result.errors[-1]}")
        return False
    result.duck_s.append(seconds)
    result.duck_parquet_mb = size_mb(out)
    return True


def measure_quietly(args, label: str, step, samples: list[list], retried: list[str]) -> bool:
    """Run `step` (which appends its figures to the lists in `samples` and
    returns whether it succeeded) once nothing else runs; if another
    benchmark or a build started meanwhile, drop its figures and run it
    again (up to MAX_ATTEMPTS times). Returns what the last `step` returned."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        if not args.no_wait:
            wait_for_other_benchmarks()
        sizes = [len(sample) for sample in samples]
        ok = step()
        busy = [] if args.no_wait else other_benchmarks()
        if not busy or not ok:
            return ok
        if attempt == MAX_ATTEMPTS:
            retried.append(f"{label}: kept although other work ran during the last of "
                           f"{MAX_ATTEMPTS} attempts ({busy[0][:100]})")
            return ok
        for sample, size in zip(samples, sizes):
            del sample[size:]
        message = f"{label}: measured again, other work started meanwhile ({busy[0][:100]})"
        retried.append(message)
        log(f"warning: {message}")
    return False


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------

def rate(rows: int, seconds: float | None) -> str:
    return "error" if not seconds else f"{rows / seconds:,.0f}"


def secs(seconds: float | None) -> str:
    return "error" if seconds is None else f"{seconds:.2f}"


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal:"))
        memory = f"{kb / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        memory = "?"
    return (f"{os.cpu_count()} cores ({cpu}), {memory}, "
            f"{platform.system()} {platform.machine()}")


def report(args, rows, files, results, meta, retried) -> str:
    median = lambda xs: statistics.median(xs) if xs else None  # noqa: E731
    lines = [
        f"# Batch ingest, {rows:,} rows of raw.{TABLE}",
        "",
        (f"{meta['date']} · {meta['machine']} · Panorama {meta['panorama_version']}"
         f" (`panorama ingest {TABLE} <file>` into an empty lake, whole process)"
         f" · DuckDB {duckdb.__version__} in-process, threads {args.duckdb_threads}"
         f" (`COPY (SELECT * FROM read_csv/read_json(<file>)) TO <out>.parquet"
         f" (FORMAT parquet, COMPRESSION zstd)`)"
         f" · {'median of ' + str(args.runs) + ' runs' if args.runs > 1 else '1 run'}"
         f", page cache warm · source: first {rows:,} rows by time of {args.lake}"
         f" ({args.time_format} times)"),
        "",
        f"Command: `{meta['command']}`",
        "",
        "| format | rows | file MB | Panorama s | Panorama rows/s | Panorama peak RSS "
        "| DuckDB s | DuckDB rows/s | ratio (Panorama/DuckDB time) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, path in files.items():
        r = results[name]
        p, d = median(r.pano_s), median(r.duck_s)
        ratio = f"{p / d:.2f}" if p and d else "n/a"
        rss = mb(max(r.pano_rss_kb)) if r.pano_rss_kb else "error"
        lines.append(f"| {name} | {rows:,} | {size_mb(path):,.1f} | {secs(p)} | {rate(rows, p)} "
                     f"| {rss} | {secs(d)} | {rate(rows, d)} | {ratio} |")
    notes = []
    for name, r in results.items():
        if r.check:
            notes.append(f"{name}: {r.check}; Panorama landed {r.pano_files} Parquet files"
                         + (f", DuckDB wrote {r.duck_parquet_mb:,.1f} MB of Parquet"
                            if r.duck_parquet_mb is not None else ""))
    if args.runs > 1:
        notes.append("times are medians; peak RSS is the largest of the runs")
    notes += retried
    errors = [f"{name}: {e}" for name, r in results.items() for e in r.errors]
    if errors:
        lines += ["", "Errors:", ""] + [f"- {e}" for e in errors]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    install_signal_handlers()
    args = parse_args(argv)
    require_binary(args.panorama)
    if not args.no_wait:
        wait_for_other_benchmarks()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="panorama-ingest-", dir=args.work_dir))
    log(f"working in {folder}")
    con = duckdb_connect(args.duckdb_threads)
    results = {}
    retried: list[str] = []
    try:
        rows, files = export_inputs(con, args, folder)
        reference = folder / "reference.parquet"
        results = {name: Result() for name in files}
        for run in range(1, args.runs + 1):
            for name, path in files.items():
                result = results[name]
                tag = f"{name}-{run}"
                log(f"--- {name}, run {run} of {args.runs}")
                lake = folder / f"lake-{tag}"

                def panorama_step() -> bool:
                    shutil.rmtree(lake, ignore_errors=True)
                    warm(path)
                    return run_panorama(args, path, rows, lake, folder / f"ingest-{tag}.log",
                                        result)

                if measure_quietly(args, f"Panorama, {tag}", panorama_step,
                                   [result.pano_s, result.pano_rss_kb], retried) \
                        and result.check is None:
                    result.check = check_landed(con, reference, lake, rows)
                    log(f"  check: {result.check}")
                shutil.rmtree(lake, ignore_errors=True)
                out = folder / f"duckdb-{tag}.parquet"

                def duckdb_step() -> bool:
                    warm(path)
                    ok = run_duckdb(con, name, path, rows, out, result)
                    out.unlink(missing_ok=True)
                    return ok

                measure_quietly(args, f"DuckDB, {tag}", duckdb_step, [result.duck_s], retried)
        meta = {
            "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            "machine": machine(),
            "panorama_version": panorama_version(args.panorama),
            "command": " ".join(
                [os.path.relpath(sys.argv[0], REPO) if sys.argv[0] else "ingest_compare.py"]
                + (sys.argv[1:] if argv is None else argv)),
        }
        markdown = report(args, rows, files, results, meta, retried)
    finally:
        con.close()
        if args.keep:
            log(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    publish(markdown, args.out)
    return 1 if any(r.errors for r in results.values()) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
