#!/usr/bin/env python3
"""Side-by-side benchmark: Panorama vs DuckDB on the same Parquet lake.

Steps:
  1. generate a synthetic lake with `panorama generate` (unless it is there);
  2. run `panorama refresh` if the lake has no cdp/_manifest.json, or if its
     cdp.profiles / cdp.identity_links files lack columns this Panorama build
     declares (written by an older build); see --refresh;
  3. start `panorama serve` on a free loopback port;
  4. for every sql/bench/*.sql: one warm-up run, then --runs timed runs in
     Panorama (over the PostgreSQL protocol, psycopg 3) and in DuckDB
     (in-process, views over the same Parquet files: raw.<table>, cdp.profiles
     and cdp.identity_links at the manifest's current version, and the shipped
     analytics.<view> of sql/analytics/ with DuckDB macros standing for
     Panorama's functions), all rows fetched;
  5. check both engines returned the same rows (count, then values), print a
     markdown table of the median wall times and write it to
     benches/out/compare-scale<N>.md.

Usage:
  python -m venv /var/tmp/panorama-bench-venv
  /var/tmp/panorama-bench-venv/bin/pip install -r benches/requirements.txt
  cargo build --release
  /var/tmp/panorama-bench-venv/bin/python benches/compare.py --scale 100

The server is always stopped at the end, even on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from harness import (MARKER, OUT_DIR, REPO, default_panorama, generate_lake,
                    install_signal_handlers, is_delta, log, panorama_version, parquet_files,
                    publish, raw_size_mb, require_binary, run, sql_string)

try:
    import duckdb
    import psycopg
    from psycopg.types.string import TextLoader
except ImportError as exc:  # pragma: no cover - only a hint for the user
    sys.exit(
        f"missing Python package ({exc.name}); install the pinned ones with:\n"
        f"  pip install -r {Path(__file__).resolve().parent / 'requirements.txt'}"
    )

SQL_DIR = REPO / "sql" / "bench"
ANALYTICS_DIR = REPO / "sql" / "analytics"
TABLES = [
    "events",
    "customers",
    "orders",
    "order_items",
    "products",
    "survey_responses",
    "consents",
]
# The materialised views of `panorama refresh` the shipped views read
# (cdp/_manifest.json maps each to the folder of its current version).
CDP_TABLES = ["profiles", "identity_links"]
MANIFEST = Path("cdp") / "_manifest.json"
# Relative tolerance when comparing numbers of the two engines: enough for
# float summation order and DECIMAL vs DOUBLE averages, and for the views
# that use now() (queried a few seconds apart by the two engines).
REL_TOL = 1e-6
STARTUP_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 15.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Compare Panorama and DuckDB on the same Parquet lake.",
    )
    parser.add_argument("--scale", type=int, required=True,
                        help="generator scale (N x 1,000 customers)")
    parser.add_argument("--seed", type=int, default=42, help="generator seed (default 42)")
    parser.add_argument("--lake", type=Path, default=None,
                        help="lake folder (default benches/out/lake-scale<N>)")
    parser.add_argument("--runs", type=int, default=5,
                        help="timed runs per query and engine, after one warm-up (default 5)")
    parser.add_argument("--panorama", type=Path, default=None,
                        help="panorama binary (default ${CARGO_TARGET_DIR:-target}/release/panorama)")
    parser.add_argument("--skip-generate", action="store_true",
                        help="use the lake as it is; never run `panorama generate`")
    parser.add_argument("--refresh", choices=["auto", "always", "never"], default="auto",
                        help="run `panorama refresh` on the lake first: auto (default) when "
                             "cdp/_manifest.json is missing or cdp.* lacks columns this build "
                             "declares, always, or never")
    parser.add_argument("--only", action="append", default=[], metavar="TEXT",
                        help="run only the queries whose file name contains TEXT (repeatable)")
    parser.add_argument("--duckdb-threads", type=int, default=os.cpu_count() or 1,
                        help="DuckDB threads (default: the machine's cores, like Panorama)")
    parser.add_argument("--port", type=int, default=0,
                        help="port for `panorama serve` (default: a free one)")
    parser.add_argument("--out", type=Path, default=None,
                        help="markdown report (default benches/out/compare-scale<N>.md)")
    args = parser.parse_args(argv)
    if args.scale < 1:
        parser.error("--scale must be at least 1")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    args.lake = (args.lake or OUT_DIR / f"lake-scale{args.scale}").resolve()
    args.panorama = (args.panorama or default_panorama()).resolve()
    args.out = (args.out or OUT_DIR / f"compare-scale{args.scale}.md").resolve()
    return args


# --------------------------------------------------------------------------
# The lake
# --------------------------------------------------------------------------

def lake_has_data(lake: Path) -> bool:
    return any(parquet_files(lake, table) for table in TABLES)


def ensure_lake(args: argparse.Namespace) -> None:
    lake: Path = args.lake
    marker = lake / MARKER
    if args.skip_generate:
        if not lake_has_data(lake):
            sys.exit(f"--skip-generate: no Parquet files under {lake}/raw/<table>/")
        log(f"using the lake at {lake} as it is (--skip-generate)")
        return
    if marker.exists():
        made = json.loads(marker.read_text())
        if made.get("scale") != args.scale or made.get("seed") != args.seed:
            sys.exit(
                f"{lake} holds scale {made.get('scale')} seed {made.get('seed')}, not "
                f"scale {args.scale} seed {args.seed}: pick another --lake or delete it"
            )
        log(f"reusing the lake at {lake} (scale {args.scale}, seed {args.seed})")
        return
    if lake_has_data(lake):
        sys.exit(
            f"{lake} already holds data that this harness did not finish generating "
            f"(no {MARKER}); delete it, or pass --skip-generate to use it as it is"
        )
    generate_lake(args.panorama, lake, args.scale, args.seed)


def read_manifest(lake: Path) -> dict | None:
    try:
        return json.loads((lake / MANIFEST).read_text())
    except FileNotFoundError:
        return None


def cdp_folder(lake: Path, manifest: dict | None, table: str) -> Path | None:
    """The folder of the current version of cdp.<table>, if the manifest names one."""
    folder = (manifest or {}).get("tables", {}).get(table)
    return lake / folder if folder else None


def panorama_cdp_columns(binary: Path, lake: Path) -> dict[str, set[str]] | None:
    """The columns this Panorama build declares for cdp.* (information_schema,
    through `panorama sql`), or None if that could not be read."""
    sql = ("SELECT table_name || '.' || column_name AS c FROM information_schema.columns "
           "WHERE table_schema = 'cdp'")
    try:
        out = subprocess.run([str(binary), "--lake", str(lake), "sql", "--", sql],
                             capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log(f"warning: could not list cdp columns with `panorama sql`: {exc}")
        return None
    if out.returncode != 0:
        log(f"warning: `panorama sql` listing cdp columns failed: {out.stderr.strip()[-500:]}")
        return None
    cells = [line.strip().strip("|").strip() for line in out.stdout.splitlines()
             if line.startswith("|")]
    columns: dict[str, set[str]] = {}
    for cell in cells[1:]:  # cells[0] is the header
        table, _, column = cell.partition(".")
        columns.setdefault(table, set()).add(column)
    return columns


def parquet_columns(folder: Path) -> set[str] | None:
    files = sorted(folder.glob("*.parquet"))
    if not files:
        return None
    rows = duckdb.execute(
        f"DESCRIBE SELECT * FROM read_parquet({sql_string(str(folder / '*.parquet'))}, "
        f"hive_partitioning = false)").fetchall()
    return {row[0] for row in rows}


def stale_cdp_reason(args: argparse.Namespace) -> str | None:
    """Why cdp.* must be (re)built before the benchmark, or None."""
    manifest = read_manifest(args.lake)
    if manifest is None:
        return f"the lake has no {MANIFEST}"
    declared = panorama_cdp_columns(args.panorama, args.lake)
    for table in CDP_TABLES:
        folder = cdp_folder(args.lake, manifest, table)
        if folder is None or not folder.is_dir():
            return f"{MANIFEST} names no existing folder for cdp.{table}"
        found = parquet_columns(folder)
        if found is None:
            return f"{folder} holds no Parquet file"
        missing = sorted((declared or {}).get(table, set()) - found)
        if missing:
            return (f"cdp.{table} (version {manifest.get('version')}) lacks column(s) "
                    f"{', '.join(missing)} that this Panorama build declares: it was "
                    f"written by an older build")
    return None


def ensure_cdp(args: argparse.Namespace, notes: list[str], warnings: list[str]) -> None:
    """Run `panorama refresh` when --refresh asks for it (see parse_args)."""
    if args.refresh == "never":
        reason = None
    elif args.refresh == "always":
        reason = "--refresh always"
    else:
        reason = stale_cdp_reason(args)
    if reason is None:
        manifest = read_manifest(args.lake)
        if manifest is None:
            message = (f"no {MANIFEST} in the lake (--refresh never): queries over cdp.* "
                       f"and analytics.* will fail in both engines")
            log(f"warning: {message}")
            warnings.append(message)
        else:
            log(f"cdp.* at version {manifest.get('version')} "
                f"(committed {manifest.get('committed_at')})")
        return
    command = [str(args.panorama), "--lake", str(args.lake), "refresh"]
    log(f"running `panorama refresh` first: {reason}")
    log("$ " + " ".join(command))
    started = time.perf_counter()
    # Progress goes straight through to the terminal (stderr, like the log).
    result = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=sys.stderr)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        message = (f"`panorama refresh` failed with exit code {result.returncode} after "
                   f"{seconds:.1f} s ({reason}): queries over cdp.* and analytics.* may fail")
        log(f"warning: {message}")
        warnings.append(message)
        return
    manifest = read_manifest(args.lake) or {}
    message = (f"ran `panorama refresh` first ({reason}): {seconds:.1f} s, cdp.* now at "
               f"version {manifest.get('version')}")
    log(message)
    notes.append(message)


# --------------------------------------------------------------------------
# Panorama: `panorama serve` and a psycopg connection
# --------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def conninfo(port: int) -> str:
    return (f"host=127.0.0.1 port={port} user=panorama dbname=panorama "
            f"sslmode=disable connect_timeout=5 application_name=panorama-bench")


def connect(port: int) -> psycopg.Connection:
    # autocommit: no BEGIN before the first statement. Without parameters
    # psycopg sends each statement with the simple query protocol.
    conn = psycopg.connect(conninfo(port), autocommit=True, prepare_threshold=None)
    # Temporal values are taken as text: their text form is the one place
    # where servers differ in ways a client-side parser may refuse, and the
    # result sets are small aggregates, so the cost is the same either way.
    for type_name in ("date", "time", "timetz", "timestamp", "timestamptz", "interval"):
        conn.adapters.register_loader(type_name, TextLoader)
    return conn


class Server:
    """`panorama serve` as a child process, stopped by `stop()`."""

    def __init__(self, binary: Path, lake: Path, port: int, log_path: Path,
                 extra_args: tuple[str, ...] = ()):
        self.binary = binary
        self.lake = lake
        self.port = port
        self.log_path = log_path
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen | None = None
        self._log_file = None

    def start(self, timeout: float = STARTUP_TIMEOUT_S) -> psycopg.Connection:
        command = [str(self.binary), "--lake", str(self.lake), "serve",
                   "--listen", f"127.0.0.1:{self.port}", "--no-seed", *self.extra_args]
        log("$ " + " ".join(command) + f"  (log: {self.log_path})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "wb")
        # Its own session: a Ctrl-C in the terminal reaches only this
        # script, whose `finally` stops the server.
        self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                     stdout=self._log_file, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"panorama serve exited with code {self.proc.returncode} before "
                    f"accepting connections:\n{self.log_tail()}")
            try:
                conn = connect(self.port)
                log(f"panorama serve is ready on 127.0.0.1:{self.port}")
                return conn
            except psycopg.OperationalError as exc:
                last_error = exc
                time.sleep(0.25)
        raise RuntimeError(
            f"panorama serve did not accept connections within {timeout:.0f} s "
            f"(last error: {last_error}):\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            # Ctrl-C first: panorama shuts down cleanly on SIGINT.
            for sig, wait_s in ((signal.SIGINT, STOP_TIMEOUT_S), (signal.SIGTERM, 5.0),
                                (signal.SIGKILL, 5.0)):
                try:
                    proc.send_signal(sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=wait_s)
                    break
                except subprocess.TimeoutExpired:
                    continue
            log(f"stopped panorama serve (exit code {proc.returncode})")
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


# --------------------------------------------------------------------------
# DuckDB: in-process, views over the same files
# --------------------------------------------------------------------------

def duckdb_connect(lake: Path, threads: int) -> "duckdb.DuckDBPyConnection":
    con = duckdb.connect()
    con.execute(f"SET threads TO {int(threads)}")
    # Casts and date_trunc on timestamptz follow the session time zone;
    # Panorama works in UTC.
    con.execute("SET TimeZone = 'UTC'")
    con.execute("CREATE SCHEMA raw")
    for table in TABLES:
        if not parquet_files(lake, table):
            log(f"warning: no Parquet files for raw.{table}; DuckDB gets no view for it")
            continue
        if is_delta(lake, table):
            # The same files Panorama reads (those the Delta log names),
            # read directly: DuckDB pays nothing for the format.
            files = ", ".join(sql_string(str(f)) for f in parquet_files(lake, table))
            con.execute(
                f"CREATE VIEW raw.{table} AS SELECT * FROM read_parquet([{files}])"
            )
            continue
        pattern = sql_string(str(lake / "raw" / table / "*" / "*.parquet"))
        con.execute(
            f"CREATE VIEW raw.{table} AS SELECT * FROM read_parquet({pattern}, "
            f"hive_partitioning = true, hive_types = {{'date': 'DATE'}})"
        )
    for name, definition in DUCKDB_MACROS:
        con.execute(f"CREATE MACRO {name} AS {definition}")
    return con


# Panorama's SQL functions (src/functions/), as DuckDB macros, so the shipped
# views run unchanged. Differences: the score aggregates do not refuse an
# answer outside its scale (Panorama fails the query, naming the value), and
# trim() strips spaces only (Panorama any Unicode white space); the
# generator writes neither.
DUCKDB_MACROS = [
    # DataFusion's to_unixtime: whole seconds (BIGINT), truncated.
    ("to_unixtime(ts)", "epoch_us(ts) // 1000000"),
    # The very code identity resolution matches with: trim; empty -> NULL;
    # emails lower-cased and kept only with one '@', text on both sides and
    # no space.
    ("normalize_id(x)", "nullif(trim(x), '')"),
    ("normalize_lower(x)", "nullif(lower(trim(x)), '')"),
    ("normalize_email(x)",
     "CASE WHEN regexp_full_match(lower(trim(x)), '[^@ ]+@[^@ ]+') THEN lower(trim(x)) END"),
    # Promoters 9-10, detractors 0-6; NULL answers ignored; no answer -> NULL.
    ("nps(score)",
     "100.0 * (count_if(score >= 9) / nullif(count(score), 0)"
     " - count_if(score <= 6) / nullif(count(score), 0))"),
    ("nps_moe(score)",
     "100.0 * 1.96 * sqrt(((count_if(score >= 9) + count_if(score <= 6)) / nullif(count(score), 0)"
     " - pow((count_if(score >= 9) - count_if(score <= 6)) / nullif(count(score), 0), 2))"
     " / nullif(count(score), 0))"),
    ("csat(score)", "100.0 * (count_if(score >= 4) / nullif(count(score), 0))"),
    ("ces(score)", "CAST(sum(score) AS DOUBLE) / nullif(count(score), 0)"),
    # The table of src/functions/scores.rs: R and FM = (F + M + 1) / 2.
    ("rfm_segment(r, f, m)", """CASE
        WHEN r IS NULL OR f IS NULL OR m IS NULL THEN NULL
        WHEN r = 5 AND (f + m + 1) // 2 = 1 THEN 'New Customers'
        WHEN r = 4 AND (f + m + 1) // 2 = 1 THEN 'Promising'
        WHEN r BETWEEN 4 AND 5 AND (f + m + 1) // 2 BETWEEN 2 AND 3 THEN 'Potential Loyalists'
        WHEN r = 5 AND (f + m + 1) // 2 BETWEEN 4 AND 5 THEN 'Champions'
        WHEN r BETWEEN 3 AND 4 AND (f + m + 1) // 2 BETWEEN 4 AND 5 THEN 'Loyal Customers'
        WHEN r = 3 AND (f + m + 1) // 2 = 3 THEN 'Need Attention'
        WHEN r = 3 AND (f + m + 1) // 2 BETWEEN 1 AND 2 THEN 'About To Sleep'
        WHEN r BETWEEN 1 AND 2 AND (f + m + 1) // 2 = 5 THEN 'Can''t Lose Them'
        WHEN r BETWEEN 1 AND 2 AND (f + m + 1) // 2 BETWEEN 3 AND 4 THEN 'At Risk'
        WHEN r = 2 THEN 'Hibernating'
        ELSE 'Lost'
    END"""),
]
SCORE_AGGREGATES = ("nps", "nps_moe", "csat", "ces")
# DuckDB refuses FILTER on a macro: `csat(score) FILTER (WHERE c)` becomes
# `csat(CASE WHEN c THEN score END)`, the same since NULL answers are ignored.
FILTERED_SCORE = re.compile(
    r"\b(" + "|".join(SCORE_AGGREGATES) + r")\(([^()]*)\)\s*FILTER\s*\(\s*WHERE\s+([^()]*?)\s*\)",
    re.IGNORECASE)


def duckdb_view_sql(name: str, sql: str, notes: list[str]) -> str:
    rewritten, count = FILTERED_SCORE.subn(r"\1(CASE WHEN \3 THEN \2 END)", sql)
    if count:
        notes.append(f"DuckDB: analytics.{name}: {count} `score_function(x) FILTER (WHERE c)` "
                     f"rewritten as `score_function(CASE WHEN c THEN x END)` (DuckDB allows "
                     f"no FILTER on a macro)")
    return rewritten


def shipped_views() -> dict[str, str]:
    """sql/analytics/<name>.sql -> its SELECT, without trailing semicolons."""
    views = {}
    for path in sorted(ANALYTICS_DIR.glob("*.sql")):
        sql = path.read_text().strip()
        while sql.endswith(";"):
            sql = sql[:-1].rstrip()
        views[path.stem] = sql
    return views


def dependency_order(views: dict[str, str]) -> list[str]:
    """View names, each after the analytics.<name> views it reads."""
    ordered: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in ordered or name not in views:
            return
        if name in visiting:
            raise RuntimeError(f"analytics views reference each other in a cycle at {name}")
        visiting.add(name)
        for used in re.findall(r"\banalytics\.(\w+)", views[name], re.IGNORECASE):
            visit(used.lower())
        visiting.discard(name)
        ordered.append(name)

    for name in views:
        visit(name)
    return ordered


def duckdb_cdp_and_analytics(con: "duckdb.DuckDBPyConnection", lake: Path,
                             notes: list[str], warnings: list[str]) -> None:
    """Schemas cdp (the manifest's current versions of CDP_TABLES) and
    analytics (every shipped view DuckDB can plan). Whatever cannot be
    created is a warning: the raw.* queries still run."""
    con.execute("CREATE SCHEMA cdp")
    con.execute("CREATE SCHEMA analytics")
    manifest = read_manifest(lake)
    for table in CDP_TABLES:
        folder = cdp_folder(lake, manifest, table)
        if folder is None or not any(folder.glob("*.parquet")):
            message = (f"DuckDB: no cdp.{table} ({'no ' + str(MANIFEST) if manifest is None else 'no Parquet file in its current folder'})")
            log(f"warning: {message}")
            warnings.append(message)
            continue
        # No hive_partitioning: the folder name v=<n>-<run> is no column.
        con.execute(
            f"CREATE VIEW cdp.{table} AS SELECT * FROM read_parquet("
            f"{sql_string(str(folder / '*.parquet'))}, hive_partitioning = false)")
    # analytics.segment_membership is a job table: its written version if
    # there is one, else empty with its fixed schema (as in Panorama).
    membership = lake / "analytics" / "tables" / "segment_membership" / "_current.json"
    folders = []
    if membership.exists():
        folders = [str(lake / f / "*.parquet") for f in json.loads(membership.read_text()).get("folders", [])]
    if folders:
        con.execute(
            f"CREATE VIEW analytics.segment_membership AS SELECT segment, profile_id, snapshot_at "
            f"FROM read_parquet([{', '.join(sql_string(f) for f in folders)}], hive_partitioning = false)")
    else:
        con.execute("CREATE TABLE analytics.segment_membership "
                    "(segment VARCHAR, profile_id VARCHAR, snapshot_at TIMESTAMPTZ)")
    views = shipped_views()
    failed: dict[str, str] = {}
    for name in dependency_order(views):
        try:
            con.execute(f"CREATE VIEW analytics.{name} AS\n{duckdb_view_sql(name, views[name], notes)}")
        except duckdb.Error as exc:
            failed[name] = first_line(exc)
            log(f"warning: DuckDB: could not create analytics.{name}: {failed[name]}")
    if failed:
        first = next(iter(failed))
        warnings.append(
            f"DuckDB: could not create {len(failed)} of {len(views)} shipped views "
            f"(analytics.{', analytics.'.join(failed)}); the first: {first}: {failed[first]}")
    log(f"DuckDB: {len(views) - len(failed)} of {len(views)} shipped analytics views created")


def count_rows(con: "duckdb.DuckDBPyConnection", table: str) -> int | None:
    try:
        return con.execute(f"SELECT count(*) FROM raw.{table}").fetchone()[0]
    except duckdb.Error:
        return None


# --------------------------------------------------------------------------
# Queries and timing
# --------------------------------------------------------------------------

@dataclass
class Query:
    name: str
    sql: str
    about: str


@dataclass
class Timing:
    times: list[float] = field(default_factory=list)
    rows: int | None = None
    error: str | None = None
    # The rows of one run, kept to compare the two engines' results.
    result: list[tuple] | None = None

    @property
    def median_ms(self) -> float | None:
        return statistics.median(self.times) * 1000 if self.times and not self.error else None


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_queries(only: list[str]) -> list[Query]:
    queries = []
    for path in sorted(SQL_DIR.glob("*.sql")):
        if only and not any(text in path.name for text in only):
            continue
        text = path.read_text()
        first = text.lstrip().splitlines()[0] if text.strip() else ""
        about = first[2:].strip() if first.startswith("--") else ""
        sql = text.strip()
        while sql.endswith(";"):
            sql = sql[:-1].rstrip()
        queries.append(Query(path.stem, sql, about))
    if not queries:
        sys.exit(f"no queries in {SQL_DIR}" + (f" matching {only}" if only else ""))
    return queries


def run_panorama(conn: psycopg.Connection, sql: str) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


def run_duckdb(con: "duckdb.DuckDBPyConnection", sql: str) -> list[tuple]:
    return con.execute(sql).fetchall()


def measure(run, runs: int, label: str, keep: str) -> Timing:
    """One warm-up, then `runs` timed runs of `run()` (which returns the rows).

    keep: "first" or "last", the run whose rows are kept in `result`
    (Panorama's last and DuckDB's first are nearest in time, which matters
    for the views that use now())."""
    timing = Timing()
    try:
        timing.result = run()  # warm-up
        timing.rows = len(timing.result)
        for _ in range(runs):
            started = time.perf_counter()
            result = run()
            timing.times.append(time.perf_counter() - started)
            if len(result) != timing.rows:
                log(f"warning: {label}: {len(result)} rows, {timing.rows} in the warm-up")
            if keep == "last":
                timing.result = result
    except Exception as exc:  # noqa: BLE001 - reported, then the next query runs
        timing.error = f"{type(exc).__name__}: {first_line(exc) if str(exc).strip() else ''}"
        log(f"error: {label}: {timing.error}")
    return timing


# --------------------------------------------------------------------------
# Comparing the results
# --------------------------------------------------------------------------

def as_datetime(value: Any) -> dt.datetime | dt.date | None:
    """A date or timestamp, from a value or its text (Panorama's temporal
    values arrive as text, see connect())."""
    if isinstance(value, (dt.datetime, dt.date)):
        return value
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def same_value(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    numeric = (int, float, Decimal)
    if (isinstance(a, numeric) and isinstance(b, numeric)
            and not isinstance(a, bool) and not isinstance(b, bool)):
        return math.isclose(float(a), float(b), rel_tol=REL_TOL, abs_tol=1e-9)
    if isinstance(a, (dt.date, dt.datetime)) or isinstance(b, (dt.date, dt.datetime)):
        x, y = as_datetime(a), as_datetime(b)
        if x is None or y is None:
            return False
        if isinstance(x, dt.datetime) != isinstance(y, dt.datetime):
            # A date against a timestamp: compare the timestamp's date only
            # if it is midnight.
            x = x if isinstance(x, dt.datetime) else dt.datetime(x.year, x.month, x.day)
            y = y if isinstance(y, dt.datetime) else dt.datetime(y.year, y.month, y.day)
        if isinstance(x, dt.datetime):
            # Panorama works in UTC: a naive timestamp is a UTC one.
            x = x if x.tzinfo else x.replace(tzinfo=dt.timezone.utc)
            y = y if y.tzinfo else y.replace(tzinfo=dt.timezone.utc)
        return x == y
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    return a == b


def compare_results(pano: list[tuple], duck: list[tuple]) -> str | None:
    """None if both engines returned the same rows (in order; numbers to
    REL_TOL), else what differs first and how many rows differ."""
    if len(pano) != len(duck):
        return f"row counts differ: Panorama {len(pano)}, DuckDB {len(duck)}"
    differing = [i for i, (p, d) in enumerate(zip(pano, duck))
                 if len(p) != len(d) or not all(same_value(x, y) for x, y in zip(p, d))]
    if not differing:
        return None
    i = differing[0]
    return (f"values differ in {len(differing)} of {len(pano)} rows; first at row {i + 1}: "
            f"Panorama {pano[i]!r}, DuckDB {duck[i]!r}")


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------

def fmt_ms(value: float | None) -> str:
    if value is None:
        return "error"
    return f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"


def check_cell(pano: Timing, duck: Timing, difference: str | None) -> str:
    """The "results" column: do both engines agree?"""
    if pano.error or duck.error:
        return "n/a"
    if difference is None:
        return f"same ({pano.rows:,} rows)"
    if pano.rows != duck.rows:
        return f"**rows differ** ({pano.rows:,} / {duck.rows:,})"
    return f"**values differ** ({pano.rows:,} rows)"


def report(args, queries, results, meta, notes, warnings) -> str:
    lines = [
        f"# Panorama vs DuckDB, scale {args.scale}",
        "",
        (f"{meta['date']} · scale {args.scale} (seed {args.seed}) · lake {meta['lake_mb']:,.1f} MB on disk"
         f" · raw.events {meta['events']} rows · raw.orders {meta['orders']} rows"
         f" · {meta['cdp']}"
         f" · {meta['cores']} cores ({meta['machine']}) · DuckDB {duckdb.__version__}"
         f" (threads {args.duckdb_threads}) · Panorama {meta['panorama_version']}"
         f" · median of {args.runs} runs after 1 warm-up, all rows fetched"),
        "",
        "| query | Panorama ms | DuckDB ms | ratio (Panorama/DuckDB) | results |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    ratios = []
    for query in queries:
        pano, duck, difference = results[query.name]
        p_ms, d_ms = pano.median_ms, duck.median_ms
        ratio = "n/a"
        if p_ms is not None and d_ms is not None and d_ms > 0:
            ratios.append(p_ms / d_ms)
            ratio = f"{p_ms / d_ms:.2f}"
        lines.append(f"| {query.name} | {fmt_ms(p_ms)} | {fmt_ms(d_ms)} | {ratio} "
                     f"| {check_cell(pano, duck, difference)} |")
    if ratios:
        geomean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
        lines.append(f"| geometric mean | | | {geomean:.2f} | |")
    if warnings:
        lines += ["", "Warnings:", ""] + [f"- {w}" for w in warnings]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    lines += ["", "Queries (sql/bench/):", ""]
    for query in queries:
        pano, duck, _ = results[query.name]
        if pano.rows is not None and duck.rows is not None and pano.rows != duck.rows:
            rows = f"Panorama {pano.rows} rows, DuckDB {duck.rows} rows"
        else:
            count = pano.rows if pano.rows is not None else duck.rows
            rows = f"{count if count is not None else '?'} rows"
        lines.append(f"- `{query.name}` ({rows}): {query.about}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def cdp_summary(duck: "duckdb.DuckDBPyConnection", lake: Path) -> str:
    manifest = read_manifest(lake)
    if manifest is None:
        return "no cdp.*"
    try:
        profiles = duck.execute("SELECT count(*) FROM cdp.profiles").fetchone()[0]
    except duckdb.Error:
        profiles = None
    return (f"cdp.* version {manifest.get('version')}"
            + (f" (cdp.profiles {profiles:,} rows)" if profiles is not None else ""))


def main(argv: list[str] | None = None) -> int:
    # SIGINT (even when started in the background, where it is ignored by
    # default), SIGTERM and SIGHUP all unwind through the `finally` below,
    # which stops the server.
    install_signal_handlers()
    args = parse_args(argv)
    require_binary(args.panorama)
    queries = load_queries(args.only)
    ensure_lake(args)
    notes: list[str] = []
    warnings: list[str] = []
    ensure_cdp(args, notes, warnings)

    duck = duckdb_connect(args.lake, args.duckdb_threads)
    duckdb_cdp_and_analytics(duck, args.lake, notes, warnings)
    meta = {
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "lake_mb": raw_size_mb(args.lake),
        "events": f"{count_rows(duck, 'events') or 0:,}",
        "orders": f"{count_rows(duck, 'orders') or 0:,}",
        "cdp": cdp_summary(duck, args.lake),
        "cores": os.cpu_count(),
        "machine": f"{platform.system()} {platform.machine()}",
        "panorama_version": panorama_version(args.panorama),
    }

    port = args.port or free_port()
    server = Server(args.panorama, args.lake, port,
                    args.out.parent / f"serve-scale{args.scale}.log")
    results: dict[str, tuple[Timing, Timing, str | None]] = {}
    conn = None
    try:
        conn = server.start()
        for query in queries:
            log(f"{query.name}: Panorama ...")
            if conn.closed or conn.broken:
                if not server.alive():
                    raise RuntimeError(f"panorama serve died:\n{server.log_tail()}")
                conn = connect(port)
            pano = measure(lambda: run_panorama(conn, query.sql), args.runs,
                           f"{query.name} (Panorama)", keep="last")
            log(f"{query.name}: DuckDB ...")
            duck_t = measure(lambda: run_duckdb(duck, query.sql), args.runs,
                             f"{query.name} (DuckDB)", keep="first")
            difference = None
            if pano.result is not None and duck_t.result is not None:
                difference = compare_results(pano.result, duck_t.result)
            # The rows are compared; only the counts are kept.
            pano.result = duck_t.result = None
            results[query.name] = (pano, duck_t, difference)
            log(f"{query.name}: Panorama {fmt_ms(pano.median_ms)}, "
                f"DuckDB {fmt_ms(duck_t.median_ms)} (ms)")
            if pano.error:
                warnings.append(f"{query.name}: Panorama failed: {pano.error}")
            if duck_t.error:
                warnings.append(f"{query.name}: DuckDB failed: {duck_t.error}")
            if difference is not None:
                message = f"{query.name}: {difference}"
                warnings.append(message)
                log(f"warning: {message}")
    finally:
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - the server is stopped next anyway
                pass
        server.stop()
        duck.close()

    markdown = report(args, queries, results, meta, notes, warnings)
    publish(markdown, args.out)
    failed = any(p.error or d.error or (p.rows != d.rows) for p, d, _ in results.values())
    return 1 if failed else 0


if __name__ == "__main__":
    run(main)
