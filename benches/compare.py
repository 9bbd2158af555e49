#!/usr/bin/env python3
"""Side-by-side benchmark: Panorama vs DuckDB on the same Parquet lake.

Steps:
  1. generate a synthetic lake with `panorama generate` (unless it is there);
  2. start `panorama serve` on a free loopback port;
  3. for every sql/bench/*.sql: one warm-up run, then --runs timed runs in
     Panorama (over the PostgreSQL protocol, psycopg 3) and in DuckDB
     (in-process, views over the same Parquet files), all rows fetched;
  4. print a markdown table of the median wall times and write it to
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
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import (MARKER, OUT_DIR, REPO, default_panorama, generate_lake,
                     install_signal_handlers, log, panorama_version, parquet_files,
                     raw_size_mb, require_binary, sql_string)

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
TABLES = [
    "events",
    "customers",
    "orders",
    "order_items",
    "products",
    "survey_responses",
    "consents",
]
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

    def __init__(self, binary: Path, lake: Path, port: int, log_path: Path):
        self.binary = binary
        self.lake = lake
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self._log_file = None

    def start(self, timeout: float = STARTUP_TIMEOUT_S) -> psycopg.Connection:
        command = [str(self.binary), "--lake", str(self.lake), "serve",
                   "--listen", f"127.0.0.1:{self.port}", "--no-seed"]
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
        pattern = sql_string(str(lake / "raw" / table / "*" / "*.parquet"))
        con.execute(
            f"CREATE VIEW raw.{table} AS SELECT * FROM read_parquet({pattern}, "
            f"hive_partitioning = true, hive_types = {{'date': 'DATE'}})"
        )
    return con


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

    @property
    def median_ms(self) -> float | None:
        return statistics.median(self.times) * 1000 if self.times and not self.error else None


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


def run_panorama(conn: psycopg.Connection, sql: str) -> int:
    with conn.cursor() as cur:
        cur.execute(sql)
        return len(cur.fetchall())


def run_duckdb(con: "duckdb.DuckDBPyConnection", sql: str) -> int:
    return len(con.execute(sql).fetchall())


def measure(run, runs: int, label: str) -> Timing:
    """One warm-up, then `runs` timed runs of `run()` (which returns a row count)."""
    timing = Timing()
    try:
        timing.rows = run()  # warm-up
        for _ in range(runs):
            started = time.perf_counter()
            rows = run()
            timing.times.append(time.perf_counter() - started)
            if rows != timing.rows:
                log(f"warning: {label}: {rows} rows, {timing.rows} in the warm-up")
    except Exception as exc:  # noqa: BLE001 - reported, then the next query runs
        timing.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        log(f"error: {label}: {timing.error}")
    return timing


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------

def fmt_ms(value: float | None) -> str:
    if value is None:
        return "error"
    return f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"


def report(args, queries, results, meta, warnings) -> str:
    lines = [
        f"# Panorama vs DuckDB, scale {args.scale}",
        "",
        (f"{meta['date']} · scale {args.scale} (seed {args.seed}) · lake {meta['lake_mb']:,.1f} MB on disk"
         f" · raw.events {meta['events']} rows · raw.orders {meta['orders']} rows"
         f" · {meta['cores']} cores ({meta['machine']}) · DuckDB {duckdb.__version__}"
         f" (threads {args.duckdb_threads}) · Panorama {meta['panorama_version']}"
         f" · median of {args.runs} runs after 1 warm-up, all rows fetched"),
        "",
        "| query | Panorama ms | DuckDB ms | ratio (Panorama/DuckDB) |",
        "| --- | ---: | ---: | ---: |",
    ]
    ratios = []
    for query in queries:
        pano, duck = results[query.name]
        p_ms, d_ms = pano.median_ms, duck.median_ms
        ratio = "n/a"
        if p_ms is not None and d_ms is not None and d_ms > 0:
            ratios.append(p_ms / d_ms)
            ratio = f"{p_ms / d_ms:.2f}"
        lines.append(f"| {query.name} | {fmt_ms(p_ms)} | {fmt_ms(d_ms)} | {ratio} |")
    if ratios:
        geomean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
        lines.append(f"| geometric mean | | | {geomean:.2f} |")
    if warnings:
        lines += ["", "Warnings:", ""] + [f"- {w}" for w in warnings]
    lines += ["", "Queries (sql/bench/):", ""]
    for query in queries:
        pano, duck = results[query.name]
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

def main(argv: list[str] | None = None) -> int:
    # SIGINT (even when started in the background, where it is ignored by
    # default), SIGTERM and SIGHUP all unwind through the `finally` below,
    # which stops the server.
    install_signal_handlers()
    args = parse_args(argv)
    require_binary(args.panorama)
    queries = load_queries(args.only)
    ensure_lake(args)

    duck = duckdb_connect(args.lake, args.duckdb_threads)
    meta = {
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "lake_mb": raw_size_mb(args.lake),
        "events": f"{count_rows(duck, 'events') or 0:,}",
        "orders": f"{count_rows(duck, 'orders') or 0:,}",
        "cores": os.cpu_count(),
        "machine": f"{platform.system()} {platform.machine()}",
        "panorama_version": panorama_version(args.panorama),
    }

    port = args.port or free_port()
    server = Server(args.panorama, args.lake, port,
                    args.out.parent / f"serve-scale{args.scale}.log")
    results: dict[str, tuple[Timing, Timing]] = {}
    warnings: list[str] = []
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
                           f"{query.name} (Panorama)")
            log(f"{query.name}: DuckDB ...")
            duck_t = measure(lambda: run_duckdb(duck, query.sql), args.runs,
                             f"{query.name} (DuckDB)")
            results[query.name] = (pano, duck_t)
            log(f"{query.name}: Panorama {fmt_ms(pano.median_ms)}, "
                f"DuckDB {fmt_ms(duck_t.median_ms)} (ms)")
            if pano.error:
                warnings.append(f"{query.name}: Panorama failed: {pano.error}")
            if duck_t.error:
                warnings.append(f"{query.name}: DuckDB failed: {duck_t.error}")
            if (pano.rows is not None and duck_t.rows is not None
                    and pano.rows != duck_t.rows):
                message = (f"{query.name}: row counts differ: "
                           f"Panorama {pano.rows}, DuckDB {duck_t.rows}")
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

    markdown = report(args, queries, results, meta, warnings)
    print(markdown)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown)
    log(f"wrote {args.out}")
    failed = any(p.error or d.error for p, d in results.values())
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as exc:  # server start-up problems, already explained
        sys.exit(f"error: {exc}")
    except KeyboardInterrupt:
        sys.exit(130)
