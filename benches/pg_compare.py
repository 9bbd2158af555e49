#!/usr/bin/env python3
"""Panorama vs PostgreSQL on the wire: streaming a large result, and a small
parameterised lookup from many connections, the same tables in both.

Steps:
  1. write the bench tables with DuckDB (in-process) as Parquet and CSV in a
     temporary folder under --work-dir: raw.orders with --rows rows (the
     streaming table) and raw.customers with --customers rows keyed by
     customer_id 'C<n>' (the lookup table), both with the columns of
     sql/schema.sql;
  2. land them in a Panorama lake the documented way (`panorama ingest
     orders|customers <file>.parquet`, then `panorama refresh`), kept in
     --lake (default benches/out/pg-lake-<rows>) and reused by the next run
     with the same sizes;
  3. start a private PostgreSQL 15 (initdb in the temporary folder, as the
     `postgres` user when run as root, loopback only, default settings) and
     COPY the same rows in (psql \\copy of the CSV files), with a primary key
     on raw.customers(customer_id) and VACUUM ANALYZE: PostgreSQL's normal
     setup;
  4. start `panorama serve --no-seed --no-collect` on the lake;
  5. streaming: `SELECT item_count FROM raw.orders` (a narrow integer) and
     `SELECT order_id, customer_id, amount FROM raw.orders`, every row
     fetched by three libpq clients (psql -A -t to /dev/null, psql COPY
     (...) TO STDOUT to /dev/null, psycopg 3 fetchmany in this process):
     one warm-up, then the median of --runs runs, rows/s; the Panorama
     server's peak RSS during each run (VmHWM after resetting it through
     /proc/PID/clear_refs, else the largest sampled VmRSS);
  6. lookup: pgbench with a custom script (\\set cid random(1, customers),
     SELECT ... FROM raw.customers WHERE customer_id = 'C' || :cid), -n,
     -M prepared and -M simple, -c 1 and -c 16 -j 2, --seconds each; tps,
     latency average, and p50/p99 from pgbench's per-transaction log; the
     same with `SELECT 1` (-M prepared, -c 1) for the fixed per-query cost;
     EXPLAIN ANALYZE of one lookup in both;
  7. print a markdown table (metric, PostgreSQL, Panorama, ratio) and write
     it to benches/out/pg-compare-<rows>.md.

Usage:
  /var/tmp/panorama-bench-venv/bin/python benches/pg_compare.py --rows 1000000 \\
      --panorama target/release/panorama

Ports: 55600-55699 only (the first free ones of that range unless
--pg-port / --panorama-port say). Both servers are stopped at the end, even
on error or Ctrl-C, and the temporary folder is removed unless --keep.
Before measuring it waits while another benchmark of benches/ (or cargo,
rustc) runs (--no-wait: do not).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from harness import (MARKER, OUT_DIR, REPO, default_panorama, install_signal_handlers, log, mb,
                    panorama_version, parquet_files, publish, require_binary, run, sql_string,
                    warm_page_cache)

try:
    import duckdb
    import psycopg
except ImportError as exc:  # pragma: no cover - only a hint for the user
    sys.exit(
        f"missing Python package ({exc.name}); install the pinned ones with:\n"
        f"  pip install -r {Path(__file__).resolve().parent / 'requirements.txt'}"
    )

from compare import Server  # noqa: E402
from ingest_compare import (FILE_LINE, machine, measure_quietly,  # noqa: E402
                            wait_for_other_benchmarks)

PORT_RANGE = range(55600, 55700)
PG_BIN = Path("/usr/lib/postgresql/15/bin")
TABLES = ["orders", "customers"]
# Both tables as in sql/schema.sql (without the `date` partition column).
PG_DDL = """
CREATE SCHEMA raw;
CREATE TABLE raw.orders (
    order_id      text          NOT NULL,
    customer_id   text,
    email         text,
    anonymous_id  text,
    ordered_at    timestamptz   NOT NULL,
    amount        numeric(12,2) NOT NULL,
    currency      text          NOT NULL,
    status        text          NOT NULL,
    channel       text          NOT NULL,
    item_count    bigint        NOT NULL
);
CREATE TABLE raw.customers (
    customer_id   text        NOT NULL,
    email         text,
    phone         text,
    first_name    text,
    last_name     text,
    street        text,
    city          text,
    postal_code   text,
    country       text,
    birth_date    date,
    loyalty_tier  text,
    newsletter    boolean,
    source        text        NOT NULL,
    created_at    timestamptz,
    updated_at    timestamptz NOT NULL
);
"""
STREAM_QUERIES = [
    ("narrow", "SELECT item_count FROM raw.orders"),
    ("three", "SELECT order_id, customer_id, amount FROM raw.orders"),
]
STREAM_CLIENTS = ["psql", "copy", "psycopg"]
CLIENT_LABEL = {
    "psql": "psql -A -t > /dev/null",
    "copy": "psql COPY (…) TO STDOUT > /dev/null",
    "psycopg": "psycopg 3 fetchmany(100k)",
}
LOOKUP_COLUMNS = "customer_id, email, first_name, last_name, city, loyalty_tier"
LOOKUP_SCRIPT = ("\\set cid random(1, {customers})\n"
                 f"SELECT {LOOKUP_COLUMNS} FROM raw.customers WHERE customer_id = 'C' || :cid;\n")
SELECT1_SCRIPT = "SELECT 1;\n"
# (protocol, clients, threads) of the pgbench lookup runs.
LOOKUP_RUNS = [("prepared", 1, 1), ("prepared", 16, 2), ("simple", 1, 1), ("simple", 16, 2)]
# Goals of the issue: streaming within 2x of PostgreSQL, lookup p50 under 1 ms.
STREAM_GOAL = 0.5
LOOKUP_P50_GOAL_MS = 1.0
RSS_POLL_S = 0.02


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Panorama vs PostgreSQL over the wire: streaming and a parameterised lookup.",
    )
    parser.add_argument("--rows", type=int, default=10_000_000,
                        help="rows of raw.orders, the streamed table (default 10,000,000)")
    parser.add_argument("--customers", type=int, default=1_000_000,
                        help="rows of raw.customers, the lookup table (default 1,000,000)")
    parser.add_argument("--runs", type=int, default=3,
                        help="timed streaming runs per query, client and engine, after one "
                             "warm-up; the median is reported (default 3)")
    parser.add_argument("--seconds", type=int, default=15,
                        help="pgbench -T for each lookup run (default 15)")
    parser.add_argument("--select1-seconds", type=int, default=5,
                        help="pgbench -T for the SELECT 1 runs (default 5; 0 leaves them out)")
    parser.add_argument("--panorama", type=Path, default=Path("/var/tmp/helper/panorama-release"),
                        help="panorama binary (default /var/tmp/helper/panorama-release; the "
                             "project's build is ${CARGO_TARGET_DIR:-target}/release/panorama, "
                             "used when that default does not exist)")
    parser.add_argument("--lake", type=Path, default=None,
                        help="Panorama lake with the bench tables, made if missing "
                             "(default benches/out/pg-lake-<rows>)")
    parser.add_argument("--pg-bin", type=Path, default=PG_BIN,
                        help=f"PostgreSQL server binaries (default {PG_BIN})")
    parser.add_argument("--pg-port", type=int, default=0,
                        help="PostgreSQL port (default: the first free one of 55600-55699)")
    parser.add_argument("--panorama-port", type=int, default=0,
                        help="Panorama port (default: the next free one of 55600-55699)")
    parser.add_argument("--only", choices=["stream", "lookup"], default=None,
                        help="measure only the streaming or only the lookup")
    parser.add_argument("--clients", default=",".join(STREAM_CLIENTS),
                        help="streaming clients among psql, copy, psycopg (default all)")
    parser.add_argument("--work-dir", type=Path, default=Path("/var/tmp"),
                        help="where the temporary folder (data files, PostgreSQL cluster, "
                             "pgbench logs) goes (default /var/tmp)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary folder (its path is printed)")
    parser.add_argument("--no-wait", action="store_true",
                        help="do not wait for other benchmarks of benches/ (or cargo, rustc) to finish")
    parser.add_argument("--out", type=Path, default=None,
                        help="markdown report (default benches/out/pg-compare-<rows>.md)")
    args = parser.parse_args(argv)
    if args.rows < 1 or args.customers < 1:
        parser.error("--rows and --customers must be at least 1")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    for name in ("pg_port", "panorama_port"):
        port = getattr(args, name)
        if port and port not in PORT_RANGE:
            parser.error(f"--{name.replace('_', '-')} must be in 55600-55699")
    args.clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    if not args.clients or any(c not in STREAM_CLIENTS for c in args.clients):
        parser.error(f"--clients: pick among {', '.join(STREAM_CLIENTS)}")
    if not args.panorama.exists() and args.panorama == Path("/var/tmp/helper/panorama-release"):
        args.panorama = default_panorama()
    args.panorama = args.panorama.resolve()
    args.lake = (args.lake or OUT_DIR / f"pg-lake-{args.rows}").resolve()
    args.out = (args.out or OUT_DIR / f"pg-compare-{args.rows}.md").resolve()
    return args


def free_port(taken: set[int]) -> int:
    """The first port of PORT_RANGE nothing listens on (and not in `taken`)."""
    for port in PORT_RANGE:
        if port in taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    sys.exit("no free port in 55600-55699")


# --------------------------------------------------------------------------
# The data: DuckDB writes it once, both engines load the same rows
# --------------------------------------------------------------------------

def orders_sql(rows: int, customers: int) -> str:
    # Spread over 2025 in id order, so each 100,000-row chunk of `panorama
    # ingest` lands in one or two day partitions.
    return f"""
        SELECT 'O' || n AS order_id,
               'C' || ((n * 7919) % {customers} + 1) AS customer_id,
               CAST(NULL AS VARCHAR) AS email,
               CAST(NULL AS VARCHAR) AS anonymous_id,
               TIMESTAMPTZ '2025-01-01 00:00:00+00'
                   + to_microseconds(CAST(CAST(n - 1 AS HUGEINT) * 31535999000000
                                          // {rows} AS BIGINT))
                   AS ordered_at,
               CAST(((n * 37) % 50000) / 100.0 AS DECIMAL(12, 2)) AS amount,
               'EUR' AS currency,
               CASE WHEN n % 20 = 0 THEN 'returned' WHEN n % 50 = 1 THEN 'cancelled'
                    ELSE 'completed' END AS status,
               ['web', 'app', 'store'][n % 3 + 1] AS channel,
               CAST(1 + (n * 13) % 5 AS BIGINT) AS item_count
        FROM range(1, {rows} + 1) t(n)"""


def customers_sql(customers: int) -> str:
    return f"""
        SELECT 'C' || n AS customer_id,
               'customer' || n || '@example.com' AS email,
               '+336' || lpad(CAST(n AS VARCHAR), 8, '0') AS phone,
               ['Jane', 'Sofia', 'Zoe', 'Louis', 'Hugo', 'Emma'][n % 6 + 1] AS first_name,
               ['Moreau', 'Johnson', 'Brown', 'Martin', 'Dubois'][n % 5 + 1] AS last_name,
               n || ' rue de la Paix' AS street,
               ['Paris', 'Lyon', 'Lille', 'Nantes'][n % 4 + 1] AS city,
               CAST(10000 + n % 90000 AS VARCHAR) AS postal_code,
               'FR' AS country,
               DATE '1950-01-01' + CAST(n % 18000 AS INTEGER) AS birth_date,
               ['bronze', 'silver', 'gold', 'platinum'][n % 4 + 1] AS loyalty_tier,
               n % 3 = 0 AS newsletter,
               'crm' AS source,
               TIMESTAMPTZ '2024-01-01 00:00:00+00' + to_seconds(n) AS created_at,
               TIMESTAMPTZ '2025-01-01 00:00:00+00'
                   + to_microseconds(CAST(CAST(n - 1 AS HUGEINT) * 31535999000000
                                          // {customers} AS BIGINT))
                   AS updated_at
        FROM range(1, {customers} + 1) t(n)"""


def write_data(args, folder: Path) -> dict[str, dict[str, Path]]:
    """Parquet (for Panorama) and CSV (for PostgreSQL) of both tables."""
    con = duckdb.connect()
    con.execute("SET threads TO 2")
    con.execute("SET TimeZone = 'UTC'")
    files: dict[str, dict[str, Path]] = {}
    try:
        for table, sql in (("orders", orders_sql(args.rows, args.customers)),
                           ("customers", customers_sql(args.customers))):
            started = time.perf_counter()
            parquet, csv = folder / f"{table}.parquet", folder / f"{table}.csv"
            con.execute(f"COPY ({sql}) TO {sql_string(str(parquet))} "
                        f"(FORMAT parquet, COMPRESSION zstd)")
            con.execute(f"COPY (SELECT * FROM read_parquet({sql_string(str(parquet))})) "
                        f"TO {sql_string(str(csv))} (FORMAT csv, HEADER true)")
            files[table] = {"parquet": parquet, "csv": csv}
            log(f"wrote raw.{table} in {time.perf_counter() - started:.1f} s: "
                f"Parquet {parquet.stat().st_size / 1e6:,.1f} MB, "
                f"CSV {csv.stat().st_size / 1e6:,.1f} MB")
    finally:
        con.close()
    return files


# --------------------------------------------------------------------------
# The Panorama lake
# --------------------------------------------------------------------------

def lake_is_ready(args) -> bool:
    try:
        made = json.loads((args.lake / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return made.get("pg_compare") == {"rows": args.rows, "customers": args.customers}


def make_lake(args, files: dict[str, dict[str, Path]]) -> dict:
    """`panorama ingest` both tables into a new lake, then `panorama refresh`."""
    if args.lake.exists():
        if any(parquet_files(args.lake, t) for t in TABLES) and not (args.lake / MARKER).exists():
            sys.exit(f"{args.lake} holds data this harness did not finish landing (no {MARKER}); "
                     f"delete it or pick another --lake")
        shutil.rmtree(args.lake)
    args.lake.mkdir(parents=True)
    made: dict = {"pg_compare": {"rows": args.rows, "customers": args.customers}}
    expected = {"orders": args.rows, "customers": args.customers}
    for table in TABLES:
        command = [str(args.panorama), "--lake", str(args.lake), "ingest", table,
                   str(files[table]["parquet"])]
        log("$ " + " ".join(command))
        started = time.perf_counter()
        out = subprocess.run(command, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        match = next((m for m in map(FILE_LINE.search, out.stderr.splitlines()) if m), None)
        if out.returncode != 0 or match is None:
            sys.exit(f"panorama ingest {table} failed (exit {out.returncode}):\n"
                     f"{out.stderr.strip()[-2000:]}")
        read, landed, n_files, rejected = map(int, match.groups())
        if landed != expected[table] or rejected:
            sys.exit(f"panorama ingest {table}: {landed:,} landed, {rejected:,} rejected, "
                     f"expected {expected[table]:,} landed")
        log(f"  {landed:,} rows landed in {n_files} files in {seconds:.1f} s")
        made[f"ingest_{table}"] = {"rows": landed, "files": n_files, "seconds": round(seconds, 1)}
    command = [str(args.panorama), "--lake", str(args.lake), "refresh"]
    log("$ " + " ".join(command))
    started = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"panorama refresh failed (exit {out.returncode}):\n{out.stderr.strip()[-2000:]}")
    made["refresh_seconds"] = round(time.perf_counter() - started, 1)
    made["made_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    (args.lake / MARKER).write_text(json.dumps(made) + "\n")
    return made


# --------------------------------------------------------------------------
# The servers
# --------------------------------------------------------------------------

class Panorama(Server):
    """`panorama serve --no-seed --no-collect` (compare.Server, without the
    HTTP collector, whose default port other work may use)."""

    def __init__(self, binary: Path, lake: Path, port: int, log_path: Path):
        super().__init__(binary, lake, port, log_path, extra_args=("--no-collect",))

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


class Postgres:
    """A private PostgreSQL cluster in `folder`, loopback only, default settings."""

    def __init__(self, bin_dir: Path, folder: Path, port: int):
        self.bin_dir = bin_dir
        self.folder = folder
        self.data = folder / "data"
        self.socket_dir = folder / "socket"
        self.log_path = folder / "postgresql.log"
        self.port = port
        self.started = False
        # initdb refuses to run as root: the cluster belongs to `postgres` then.
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _run(self, command: list[str]) -> None:
        log("$ " + " ".join(command))
        out = subprocess.run(self.as_user + command, capture_output=True, text=True,
                             cwd=self.folder)
        if out.returncode != 0:
            raise RuntimeError(f"{Path(command[0]).name} failed (exit {out.returncode}):\n"
                               f"{(out.stdout + out.stderr).strip()[-2000:]}")

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if self.as_user:
            for path in (self.folder, self.socket_dir):
                shutil.chown(path, "postgres", "postgres")
        self._run([str(self.bin_dir / "initdb"), "-D", str(self.data), "-A", "trust",
                   "-U", "panorama", "-E", "UTF8"])
        self._run([str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log_path),
                   "-w", "-t", "120",
                   "-o", f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1",
                   "start"])
        self.started = True
        with psycopg.connect(self.conninfo("postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE panorama")
        log(f"PostgreSQL is ready on 127.0.0.1:{self.port} (data {self.data})")

    def conninfo(self, dbname: str = "panorama") -> str:
        return (f"host=127.0.0.1 port={self.port} user=panorama dbname={dbname} "
                f"sslmode=disable connect_timeout=5 application_name=panorama-bench")

    def version(self) -> str:
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            return conn.execute("SHOW server_version").fetchone()[0]

    def settings(self) -> str:
        names = ["shared_buffers", "work_mem", "jit", "max_parallel_workers_per_gather",
                 "lc_collate"]
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            values = [conn.execute(f"SHOW {n}").fetchone()[0] for n in names]
        return ", ".join(f"{n}={v}" for n, v in zip(names, values))

    def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        try:
            self._run([str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w",
                       "stop"])
            log("stopped PostgreSQL")
        except RuntimeError as exc:
            log(f"warning: could not stop PostgreSQL: {exc}")


def load_postgres(pg: Postgres, files: dict[str, dict[str, Path]]) -> float:
    """COPY both CSV files in (psql \\copy), primary key, VACUUM ANALYZE; seconds."""
    started = time.perf_counter()
    with psycopg.connect(pg.conninfo(), autocommit=True) as conn:
        conn.execute(PG_DDL)
    for table in TABLES:
        command = psql(pg.port) + [
            "-v", "ON_ERROR_STOP=1",
            "-c", f"\\copy raw.{table} FROM {sql_string(str(files[table]['csv']))} "
                  f"WITH (FORMAT csv, HEADER true)"]
        log(f"PostgreSQL: \\copy raw.{table} FROM {files[table]['csv']}")
        out = subprocess.run(command, capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"\\copy raw.{table} failed: {out.stderr.strip()[-2000:]}")
    with psycopg.connect(pg.conninfo(), autocommit=True) as conn:
        log("PostgreSQL: primary key on raw.customers(customer_id), VACUUM ANALYZE")
        conn.execute("ALTER TABLE raw.customers ADD PRIMARY KEY (customer_id)")
        conn.execute("VACUUM ANALYZE")
    seconds = time.perf_counter() - started
    log(f"loaded PostgreSQL in {seconds:.1f} s")
    return seconds


def psql(port: int) -> list[str]:
    return ["psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(port), "-U", "panorama",
            "-d", "panorama"]


def check_same_rows(pg_conn, pano_conn) -> list[str]:
    """The same rows in both engines, by a few aggregates; a list of differences."""
    checks = [
        "SELECT count(*), sum(item_count), sum(amount), min(order_id), max(order_id), "
        "count(DISTINCT customer_id) FROM raw.orders",
        "SELECT count(*), min(customer_id), max(customer_id), count(DISTINCT email), "
        "sum(length(street)) FROM raw.customers",
    ]
    differences = []
    for sql in checks:
        a = pg_conn.execute(sql).fetchone()
        b = pano_conn.execute(sql).fetchone()
        def norm(row):
            return [Decimal(str(v)) if isinstance(v, (int, float, Decimal)) else v for v in row]

        if norm(a) != norm(b):
            differences.append(f"`{sql}`: PostgreSQL {a}, Panorama {b}")
        else:
            log(f"same in both: {sql} -> {a}")
    return differences


# --------------------------------------------------------------------------
# Peak RSS of the Panorama server
# --------------------------------------------------------------------------

def status_kb(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


class RssWatch:
    """Peak RSS of `pid` over a block: VmHWM after resetting it (writing 5 to
    /proc/PID/clear_refs), and the largest VmRSS sampled every RSS_POLL_S."""

    def __init__(self, pid: int | None):
        self.pid = pid
        self.sampled = 0
        self.hwm_reset = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self):
        if self.pid is None:
            return self
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
            self.hwm_reset = True
        except OSError:
            self.hwm_reset = False
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.sampled = max(self.sampled, status_kb(self.pid, "VmRSS") or 0)
            self._stop.wait(RSS_POLL_S)

    def __exit__(self, *exc):
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        return False

    @property
    def peak_kb(self) -> int | None:
        if self.pid is None:
            return None
        hwm = status_kb(self.pid, "VmHWM") if self.hwm_reset else None
        return max(hwm or 0, self.sampled) or None


# --------------------------------------------------------------------------
# Streaming
# --------------------------------------------------------------------------

@dataclass
class Stream:
    times: list[float] = field(default_factory=list)
    rss_kb: list[int] = field(default_factory=list)
    rows: int | None = None
    error: str | None = None

    @property
    def median_s(self) -> float | None:
        return statistics.median(self.times) if self.times and not self.error else None


def stream_once(client: str, port: int, sql: str, count: bool) -> int | None:
    """Fetch every row of `sql` with `client`; the row count if `count` (or
    for psycopg, which counts anyway). Raises RuntimeError on failure."""
    if client == "psycopg":
        rows = 0
        with psycopg.connect(conninfo_for(port), autocommit=True, prepare_threshold=None) as conn:
            cur = conn.execute(sql)
            while batch := cur.fetchmany(100_000):
                rows += len(batch)
        return rows
    if client == "psql":
        command = psql(port) + ["-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql]
    else:
        command = psql(port) + ["-v", "ON_ERROR_STOP=1", "-c", f"COPY ({sql}) TO STDOUT"]
    if not count:
        out = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
        if out.returncode != 0:
            raise RuntimeError(out.stderr.strip() or f"exit code {out.returncode}")
        return None
    # The warm-up counts the lines (through wc -l, outside the timed runs).
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wc = subprocess.run(["wc", "-l"], stdin=proc.stdout, capture_output=True, text=True)
    proc.stdout.close()
    err = proc.stderr.read().decode(errors="replace")
    if proc.wait() != 0:
        raise RuntimeError(err.strip() or f"exit code {proc.returncode}")
    return int(wc.stdout.split()[0])


def conninfo_for(port: int) -> str:
    return (f"host=127.0.0.1 port={port} user=panorama dbname=panorama "
            f"sslmode=disable connect_timeout=5 application_name=panorama-bench")


def measure_stream(client: str, port: int, sql: str, runs: int, pid: int | None,
                   label: str, result: Stream) -> bool:
    """A warm-up, then `runs` timed runs, appended to `result`; False on error."""
    result.error = None
    try:
        with RssWatch(pid) as watch:
            result.rows = stream_once(client, port, sql, count=True)  # warm-up
        log(f"  {label}: warm-up {result.rows:,} rows"
            + (f", peak RSS {mb(watch.peak_kb)}" if pid else ""))
        for _ in range(runs):
            with RssWatch(pid) as watch:
                started = time.perf_counter()
                stream_once(client, port, sql, count=False)
                seconds = time.perf_counter() - started
            result.times.append(seconds)
            if watch.peak_kb:
                result.rss_kb.append(watch.peak_kb)
            log(f"  {label}: {seconds:.2f} s, {result.rows / seconds:,.0f} rows/s"
                + (f", peak RSS {mb(watch.peak_kb)}" if pid else ""))
    except (RuntimeError, psycopg.Error) as exc:
        result.error = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
        log(f"error: {label}: {result.error}")
    return result.error is None


# --------------------------------------------------------------------------
# Lookup: pgbench
# --------------------------------------------------------------------------

@dataclass
class Bench:
    tps: float | None = None
    latency_ms: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    transactions: int | None = None
    failed: int | None = None
    error: str | None = None
    command: str = ""


def run_pgbench(port: int, script: Path, protocol: str, clients: int, threads: int,
                seconds: int, log_dir: Path, tag: str) -> Bench:
    prefix = log_dir / tag
    for old in log_dir.glob(f"{tag}.*"):
        old.unlink()
    command = ["pgbench", "-h", "127.0.0.1", "-p", str(port), "-U", "panorama", "-n",
               "-M", protocol, "-c", str(clients), "-j", str(threads), "-T", str(seconds),
               "-f", str(script), "--log", f"--log-prefix={prefix}", "panorama"]
    bench = Bench(command=" ".join(["pgbench", "-n", "-M", protocol, "-c", str(clients), "-j",
                                    str(threads), "-T", str(seconds), "-f", script.name,
                                    "--log"]))
    log("$ " + " ".join(command))
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 180,
                             cwd=log_dir)
    except subprocess.TimeoutExpired:
        bench.error = f"pgbench did not finish within {seconds + 180} s"
        return bench
    text = out.stdout + "\n" + out.stderr

    def grab(pattern: str) -> str | None:
        match = re.search(pattern, text, re.MULTILINE)
        return match.group(1) if match else None

    tps = grab(r"^tps = ([\d.]+)")
    latency = grab(r"^latency average = ([\d.]+) ms")
    processed = grab(r"^number of transactions actually processed: (\d+)")
    failed = grab(r"^number of failed transactions: (\d+)")
    bench.tps = float(tps) if tps else None
    bench.latency_ms = float(latency) if latency else None
    bench.transactions = int(processed) if processed else None
    bench.failed = int(failed) if failed else None
    latencies = []
    for path in log_dir.glob(f"{tag}.*"):
        for line in path.read_text().splitlines():
            parts = line.split()
            # client_id transaction_no time script_no time_epoch time_us
            if len(parts) >= 6 and parts[2].isdigit():
                latencies.append(int(parts[2]))
    if latencies:
        latencies.sort()
        bench.p50_ms = latencies[len(latencies) // 2] / 1000
        bench.p99_ms = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] / 1000
    errors = [line.strip() for line in out.stderr.splitlines()
              if "error" in line.lower() or "abort" in line.lower() or "FATAL" in line]
    if out.returncode != 0 or not bench.transactions:
        bench.error = "; ".join(dict.fromkeys(errors)) or f"pgbench exit code {out.returncode}"
        bench.error = bench.error[:1500]
    elif errors:
        bench.error = "; ".join(dict.fromkeys(errors))[:1500]
    log(f"  tps {tps}, latency average {latency} ms, p50 "
        f"{bench.p50_ms if bench.p50_ms is not None else '?'} ms, p99 "
        f"{bench.p99_ms if bench.p99_ms is not None else '?'} ms, "
        f"{processed} transactions, failed {failed}"
        + (f"\n  error: {bench.error}" if bench.error else ""))
    return bench


def explain(conn, sql: str) -> str:
    try:
        rows = conn.execute(f"EXPLAIN ANALYZE {sql}").fetchall()
    except psycopg.Error as exc:
        return f"error: {str(exc).strip()}"
    return "\n".join("  ".join(str(v) for v in row) for row in rows)


def timed_queries(conn, sql: str, n: int) -> float:
    """Median milliseconds of `sql` run n times on one connection (simple protocol)."""
    times = []
    for _ in range(n):
        started = time.perf_counter()
        conn.execute(sql).fetchall()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------

def fmt(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "error"
    return f"{value:,.{digits}f}"


def ratio(pano: float | None, pg: float | None) -> str:
    if not pano or not pg:
        return "n/a"
    r = pano / pg
    # Two significant digits below 0.1 (tps ratios of 0.0004 are not 0.00).
    return f"{r:,.0f}" if r >= 100 else f"{r:.2f}" if r >= 0.1 else f"{r:.2g}"


def report(args, meta, streams, benches, notes, failures, plans) -> str:
    lines = [
        f"# Panorama vs PostgreSQL on the wire, raw.orders {args.rows:,} rows, "
        f"raw.customers {args.customers:,} rows",
        "",
        (f"{meta['date']} · {meta['machine']} · Panorama {meta['panorama_version']} "
         f"(`serve --no-seed --no-collect`, {args.panorama}) · PostgreSQL {meta['pg_version']} "
         f"(default settings: {meta['pg_settings']}) · both on 127.0.0.1, clients on the same "
         f"machine · streaming: median of {args.runs} runs after a warm-up · lookup: pgbench "
         f"-T {args.seconds}"),
        "",
        f"Command: `{meta['command']}`",
        "",
        "| metric | PostgreSQL | Panorama | ratio Panorama/PostgreSQL | goal |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for (name, sql), per_client in streams.items():
        for client, (pg, pano) in per_client.items():
            rows = pano.rows or pg.rows or 0
            pg_rate = rows / pg.median_s if pg.median_s else None
            pano_rate = rows / pano.median_s if pano.median_s else None
            r = pano_rate / pg_rate if pano_rate and pg_rate else None
            goal = ("n/a" if r is None else
                    f"≥ {STREAM_GOAL} (within 2×): {'met' if r >= STREAM_GOAL else '**missed**'}")
            lines.append(f"| `{sql}`, {CLIENT_LABEL[client]}, rows/s | {fmt(pg_rate, 0)} "
                         f"| {fmt(pano_rate, 0)} | {ratio(pano_rate, pg_rate)} | {goal} |")
    for (name, sql), per_client in streams.items():
        peaks = [max(pano.rss_kb) for _c, (_pg, pano) in per_client.items() if pano.rss_kb]
        if peaks:
            lines.append(f"| Panorama server peak RSS while streaming `{sql}` | | "
                         f"{mb(max(peaks))} | | |")
    for key, (pg, pano) in benches.items():
        what, protocol, clients, threads = key
        label = (f"lookup by customer_id" if what == "lookup" else "`SELECT 1`")
        conf = f"-M {protocol} -c {clients}" + (f" -j {threads}" if threads > 1 else "")
        lines.append(f"| {label}, {conf}: tps | {fmt(pg.tps, 0)} | {fmt(pano.tps, 0)} "
                     f"| {ratio(pano.tps, pg.tps)} | |")
        lines.append(f"| {label}, {conf}: latency average, ms | {fmt(pg.latency_ms, 3)} "
                     f"| {fmt(pano.latency_ms, 3)} | {ratio(pano.latency_ms, pg.latency_ms)} | |")
        goal = ""
        if what == "lookup" and protocol == "prepared" and clients == 1:
            goal = ("n/a" if pano.p50_ms is None else
                    f"< {LOOKUP_P50_GOAL_MS:g} ms: "
                    f"{'met' if pano.p50_ms < LOOKUP_P50_GOAL_MS else '**missed**'}")
        lines.append(f"| {label}, {conf}: p50 / p99, ms "
                     f"| {fmt(pg.p50_ms, 3)} / {fmt(pg.p99_ms, 3)} "
                     f"| {fmt(pano.p50_ms, 3)} / {fmt(pano.p99_ms, 3)} "
                     f"| {ratio(pano.p50_ms, pg.p50_ms)} | {goal} |")
    if failures:
        lines += ["", "Failures:", ""] + [f"- {f}" for f in failures]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    if plans:
        lines += ["", "Plans of one lookup (`EXPLAIN ANALYZE`, literal key):", ""]
        for engine, text in plans.items():
            lines += [f"{engine}:", "", "```", text, "```", ""]
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    install_signal_handlers()
    args = parse_args(argv)
    require_binary(args.panorama)
    for tool in ("psql", "pgbench", "wc"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not on PATH (apt-get install postgresql-client)")
    if not (args.pg_bin / "initdb").exists():
        sys.exit(f"no initdb in {args.pg_bin} (apt-get install postgresql-15, or --pg-bin)")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="panorama-pgcompare-", dir=args.work_dir))
    os.chmod(folder, 0o755)
    log(f"working in {folder}")
    pg_port = args.pg_port or free_port({args.panorama_port})
    pano_port = args.panorama_port or free_port({pg_port})
    pg = Postgres(args.pg_bin, folder / "postgres", pg_port)
    server = Panorama(args.panorama, args.lake, pano_port,
                      args.out.parent / f"pg-compare-serve-{args.rows}.log")
    notes: list[str] = []
    retried: list[str] = []
    failures: list[str] = []
    streams: dict = {}
    benches: dict = {}
    plans: dict[str, str] = {}
    meta = {
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "machine": machine(),
        "panorama_version": panorama_version(args.panorama),
        "command": " ".join(
            [os.path.relpath(sys.argv[0], REPO) if sys.argv[0] else "pg_compare.py"]
            + (sys.argv[1:] if argv is None else argv)),
    }
    pg_conn = pano_conn = None
    try:
        files = write_data(args, folder)
        if lake_is_ready(args):
            log(f"reusing the lake at {args.lake}")
            made = json.loads((args.lake / MARKER).read_text())
        else:
            made = make_lake(args, files)
        notes.append(
            f"Panorama lake {args.lake}: raw.orders {made['ingest_orders']['files']} files, "
            f"raw.customers {made['ingest_customers']['files']} files (`panorama ingest`, "
            f"{made['ingest_orders']['seconds']} s + {made['ingest_customers']['seconds']} s; "
            f"`panorama refresh` {made['refresh_seconds']} s)")
        pg.start()
        load_seconds = load_postgres(pg, files)
        meta["pg_version"] = pg.version()
        meta["pg_settings"] = pg.settings()
        notes.append(f"PostgreSQL: \\copy of the CSV files, primary key, VACUUM ANALYZE in "
                     f"{load_seconds:.1f} s")
        for table in TABLES:
            files[table]["csv"].unlink()
        log(f"warmed the page cache: {warm_page_cache(args.lake, TABLES):,.0f} MB of Parquet")
        pano_conn = server.start()
        pg_conn = psycopg.connect(pg.conninfo(), autocommit=True, prepare_threshold=None)
        idle = status_kb(server.pid, "VmRSS")
        notes.append(f"Panorama server RSS when idle after start-up: {mb(idle)}")
        differences = check_same_rows(pg_conn, pano_conn)
        if differences:
            failures += ["**rows differ**: " + d for d in differences]
        else:
            notes.append("both engines hold the same rows (count, sums, min/max, distinct "
                         "counts of both tables)")
        if not args.no_wait:
            wait_for_other_benchmarks()

        if args.only in (None, "stream"):
            for name, sql in STREAM_QUERIES:
                per_client = streams.setdefault((name, sql), {})
                for client in args.clients:
                    log(f"--- streaming `{sql}` with {client}")
                    pg_r, pano_r = Stream(), Stream()
                    measure_quietly(
                        args, f"PostgreSQL, `{sql}`, {client}",
                        lambda: measure_stream(client, pg.port, sql, args.runs, None,
                                               f"PostgreSQL {client}", pg_r),
                        [pg_r.times, pg_r.rss_kb], retried)
                    if not server.alive():
                        raise RuntimeError(f"panorama serve died:\n{server.log_tail()}")
                    measure_quietly(
                        args, f"Panorama, `{sql}`, {client}",
                        lambda: measure_stream(client, server.port, sql, args.runs, server.pid,
                                               f"Panorama {client}", pano_r),
                        [pano_r.times, pano_r.rss_kb], retried)
                    per_client[client] = (pg_r, pano_r)
                    for engine, r in (("PostgreSQL", pg_r), ("Panorama", pano_r)):
                        if r.error:
                            failures.append(f"{engine}, `{sql}` with {CLIENT_LABEL[client]}: "
                                            f"{r.error}")
                    if pg_r.rows is not None and pano_r.rows is not None \
                            and pg_r.rows != pano_r.rows:
                        failures.append(f"`{sql}` with {client}: PostgreSQL {pg_r.rows:,} rows, "
                                        f"Panorama {pano_r.rows:,}")

        if args.only in (None, "lookup"):
            log_dir = folder / "pgbench"
            log_dir.mkdir()
            lookup = log_dir / "lookup.sql"
            lookup.write_text(LOOKUP_SCRIPT.format(customers=args.customers))
            select1 = log_dir / "select1.sql"
            select1.write_text(SELECT1_SCRIPT)
            runs = [("lookup", p, c, j, lookup, args.seconds) for p, c, j in LOOKUP_RUNS]
            if args.select1_seconds > 0:
                runs += [("select1", "prepared", 1, 1, select1, args.select1_seconds),
                         ("select1", "simple", 1, 1, select1, args.select1_seconds)]
            # The first lookup builds Panorama's key index (README, *Point
            # lookups*): time it apart, outside the pgbench runs.
            warm_sql = f"SELECT {LOOKUP_COLUMNS} FROM raw.customers WHERE customer_id = 'C1'"
            for engine, conn in (("PostgreSQL", pg_conn), ("Panorama", pano_conn)):
                started = time.perf_counter()
                conn.execute(warm_sql).fetchall()
                notes.append(f"{engine}: the first lookup (warm-up"
                             + (", which builds the key index" if engine == "Panorama" else "")
                             + f") took {(time.perf_counter() - started) * 1000:,.1f} ms")
            notes.append("lookup script (pgbench -f):\n\n  ```\n  "
                         + lookup.read_text().strip().replace("\n", "\n  ") + "\n  ```")
            for what, protocol, clients, threads, script, seconds in runs:
                tag = f"{what}-{protocol}-c{clients}"
                log(f"--- pgbench {tag}")
                measured = {}
                for engine, port in (("pg", pg.port), ("pano", server.port)):
                    if engine == "pano" and not server.alive():
                        raise RuntimeError(f"panorama serve died:\n{server.log_tail()}")
                    held: list[Bench] = []

                    def step(port=port, engine=engine, held=held) -> bool:
                        held.append(run_pgbench(port, script, protocol, clients, threads,
                                                seconds, log_dir, f"{engine}-{tag}"))
                        return held[-1].error is None

                    measure_quietly(args, f"pgbench {engine} {tag}", step, [held], retried)
                    measured[engine] = held[-1]
                pg_b, pano_b = measured["pg"], measured["pano"]
                benches[(what, protocol, clients, threads)] = (pg_b, pano_b)
                for engine, b in (("PostgreSQL", pg_b), ("Panorama", pano_b)):
                    if b.error:
                        failures.append(f"{engine}, `{b.command}`: {b.error}")
                    elif b.failed:
                        failures.append(f"{engine}, `{b.command}`: {b.failed} failed "
                                        f"transactions")
            key_sql = (f"SELECT {LOOKUP_COLUMNS} FROM raw.customers "
                       f"WHERE customer_id = 'C{args.customers // 2 + 1}'")
            for engine, conn in (("PostgreSQL", pg_conn), ("Panorama", pano_conn)):
                plans[engine] = explain(conn, key_sql)
                one = timed_queries(conn, "SELECT 1", 50)
                planned = timed_queries(conn, f"EXPLAIN {key_sql}", 20)
                looked = timed_queries(conn, key_sql, 20)
                notes.append(f"{engine}, one psycopg connection, simple protocol, median of "
                             f"50 / 20 / 20: `SELECT 1` {one:.3f} ms; `EXPLAIN` of the lookup "
                             f"(parse, plan, no execution) {planned:.3f} ms; the lookup with a "
                             f"literal key {looked:.3f} ms")
        notes += retried
    finally:
        for conn in (pg_conn, pano_conn):
            if conn is not None:
                try:
                    conn.close()
                except Exception:  # noqa: BLE001 - the servers are stopped next anyway
                    pass
        server.stop()
        pg.stop()
        if args.keep:
            log(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)

    markdown = report(args, meta, streams, benches, notes, failures, plans)
    publish(markdown, args.out)
    return 1 if failures else 0


if __name__ == "__main__":
    run(main)
