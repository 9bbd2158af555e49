#!/usr/bin/env python3
"""GDPR erasure: `panorama privacy forget` against rewriting every table by hand in DuckDB.

Steps:
  1. a base lake at --scale (generated with `panorama generate` unless its
     marker says it is there), with its views built by `panorama refresh`
     if it has none (`refresh --full` if they have delta layers: the people
     are picked from the base version of cdp.identity_links);
  2. pick max(--counts) people: one normalised email per profile, from the
     emails of raw.customers that cdp.identity_links knows (blocked values
     left out), in a fixed pseudo-random order (md5 of the email and
     --seed); the first N of them are the request of size N;
  3. for each N: on a fresh copy of the base (`cp -r`), write ids.csv
     (header `id_type,value`, one `email,<value>` line per person) and time
     `panorama privacy forget --file ids.csv` (wall time and peak RSS of that
     process alone); the bytes it wrote are the Parquet files in the copy
     after it that were not there before (raw tables, and the views and
     records it rewrote), as a share of the raw tables' live data and of
     the whole lake; then it checks, with DuckDB over the files the Delta
     logs now name, that no row of any raw table carries one of the
     people's identifiers and that cdp.identity_links holds none of them,
     and that each table lost exactly the rows Panorama says it removed;
  4. the peer, on another fresh copy, in a separate process (so its peak
     RSS is its own): DuckDB (threads --duckdb-threads) doing it the way a
     user would without Panorama: resolve the emails to every identifier of
     their profiles with cdp.identity_links, then for every raw table with
     an identifier column `COPY (SELECT * FROM read_parquet(<its files>)
     WHERE NOT <any id column IN the ids>) TO <new file> (FORMAT parquet,
     COMPRESSION zstd)` (raw.order_items: WHERE order_id NOT IN the erased
     orders), i.e. a full rewrite of every such table. It does not commit
     the files to the Delta logs, vacuum, purge the logs' history or
     rebuild the profiles, which Panorama's erasure does;
  5. print a markdown table and write it to benches/out/erasure-scale<N>.md.

Panorama's time includes all of its erasure: an incremental refresh
first, the Delta deletes, a full refresh of the views, the purge of old
files and log entries, and the request records. To show how much of it is
the profile rebuild, `panorama refresh --full` is timed once on an
untouched copy (--no-refresh-reference: not).

Usage:
  /var/tmp/panorama-bench-venv/bin/pip install -r benches/requirements.txt
  /var/tmp/panorama-bench-venv/bin/python benches/erasure_compare.py \\
      --scale 1000 --lake /var/tmp/bench-lakes/erasure-1000 \\
      --panorama target/release/panorama

Copies are made under --work-dir (default /var/tmp) and each is removed as
soon as it has been measured (--keep: kept). Before each measured step it
waits (at most --max-wait seconds) while cargo/rustc, a debug test binary
or another benchmark of benches/ runs; the report gives the load average at the start of each
step and says when a build ran during one.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import (MARKER, OUT_DIR, REPO, default_panorama, generate_lake,
                    install_signal_handlers, log, panorama_version, parquet_files, publish,
                    require_binary, run, sql_string)

try:
    import duckdb
except ImportError as exc:  # pragma: no cover - only a hint for the user
    sys.exit(
        f"missing Python package ({exc.name}); install the pinned ones with:\n"
        f"  pip install -r {Path(__file__).resolve().parent / 'requirements.txt'}"
    )

from ingest_compare import machine, other_benchmarks  # noqa: E402

# The raw tables and the columns identity resolution reads in them (the
# default `[identity]` sources, src/identity/config.rs), with the identifier
# type each holds. raw.customers.phone is left out on DuckDB's side: its
# E.164 normalisation has no one-line SQL form (every customer row also
# carries the customer_id, which is matched).
SOURCES: dict[str, list[tuple[str, str]]] = {
    "events": [("anonymous_id", "anonymous_id"), ("user_id", "user_id"),
               ("previous_id", "anonymous_id"), ("email", "email")],
    "customers": [("customer_id", "customer_id"), ("email", "email")],
    "orders": [("customer_id", "customer_id"), ("email", "email"),
               ("anonymous_id", "anonymous_id")],
    "survey_responses": [("customer_id", "customer_id"), ("email", "email"),
                         ("anonymous_id", "anonymous_id")],
    "consents": [("customer_id", "customer_id"), ("email", "email"),
                 ("anonymous_id", "anonymous_id")],
}
# raw.order_items has no identifier: its rows go with their order.
CHILD = ("order_items", "order_id", "orders")
ALL_TABLES = ["events", "customers", "orders", "order_items", "products",
              "survey_responses", "consents"]
# How identity resolution normalises each type (phone aside): the SQL of a
# column's value as it is compared with cdp.identity_links.id_value.
NORMALISED = {
    "email": "lower(trim({c}))",
    "anonymous_id": "lower(trim({c}))",
    "customer_id": "trim({c})",
    "user_id": "trim({c})",
}
# The default blocked values (src/identity/config.rs): never picked.
BLOCKED = ["null", "undefined", "none", "0", "n/a", "na", "unknown", "anonymous", "test",
           "test@test.com", "none@none.com", "noreply@example.com", "email@example.com",
           "00000000-0000-0000-0000-000000000000"]
MANIFEST = Path("cdp") / "_manifest.json"
# `panorama privacy forget` prints "  raw.<table>: <n> rows" per table.
REMOVED_LINE = re.compile(r"^\s*raw\.(\w+): (\d+) rows?\s*$")
SUMMARY_LINE = re.compile(r"(\d+) identifiers of (\d+) profiles? erased; (\d+) rows removed, "
                          r"(\d+) files rewritten")
WAIT_POLL_S = 10


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time `panorama privacy forget` of N people against DuckDB rewriting "
                    "every table without them.")
    parser.add_argument("--scale", type=int, default=1000,
                        help="generator scale (N x 1,000 customers; default 1000)")
    parser.add_argument("--seed", type=int, default=42,
                        help="generator seed, also the order the people are picked in")
    parser.add_argument("--lake", type=Path, default=None,
                        help="the base lake (default benches/out/lake-scale<N>); generated "
                             "if it does not hold data, refreshed, never erased in")
    parser.add_argument("--skip-generate", action="store_true",
                        help="use the lake as it is even without the harness's marker")
    parser.add_argument("--counts", default="1,10,100,1000",
                        help="people per request, comma-separated (default 1,10,100,1000)")
    parser.add_argument("--panorama", type=Path, default=None,
                        help="panorama binary (default ${CARGO_TARGET_DIR:-target}/release/panorama)")
    parser.add_argument("--duckdb-threads", type=int, default=2,
                        help="DuckDB threads (default 2)")
    parser.add_argument("--work-dir", type=Path, default=Path("/var/tmp"),
                        help="where the copies of the lake go (default /var/tmp)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the copies (and the folder holding them)")
    parser.add_argument("--no-refresh-reference", action="store_true",
                        help="do not time `panorama refresh --full` on an untouched copy")
    parser.add_argument("--max-wait", type=float, default=600.0,
                        help="seconds to wait at most for builds or other benchmarks before "
                             "each step (default 600; 0: do not wait)")
    parser.add_argument("--out", type=Path, default=None,
                        help="markdown report (default benches/out/erasure-scale<N>.md)")
    args = parser.parse_args(argv)
    try:
        args.counts = sorted({int(x) for x in args.counts.split(",") if x.strip()})
    except ValueError:
        parser.error("--counts takes integers separated by commas")
    if not args.counts or args.counts[0] < 1:
        parser.error("--counts must name at least one count, each at least 1")
    args.lake = (args.lake or OUT_DIR / f"lake-scale{args.scale}").resolve()
    args.panorama = (args.panorama or default_panorama()).resolve()
    args.work_dir = args.work_dir.resolve()
    args.out = (args.out or OUT_DIR / f"erasure-scale{args.scale}.md").resolve()
    return args


# --------------------------------------------------------------------------
# Measuring a process on its own
# --------------------------------------------------------------------------

# Runs argv[4:] in the folder argv[3] with its standard output to argv[2],
# then writes "<exit code> <wall seconds> <peak RSS KiB>" to argv[1]. A small
# interpreter between this process and the measured one: a child of this
# process, which holds DuckDB's memory, would report at least that much as
# its peak (Linux starts a child's ru_maxrss at its parent's RSS at fork).
_TIMER = """
import os, subprocess, sys, time
with open(sys.argv[2], "wb") as out:
    started = time.perf_counter()
    proc = subprocess.Popen(sys.argv[4:], cwd=sys.argv[3], stdin=subprocess.DEVNULL, stdout=out)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
with open(sys.argv[1], "w") as f:
    f.write(f"{os.waitstatus_to_exitcode(status)} {wall} {usage.ru_maxrss}")
"""


@dataclass
class Measured:
    code: int
    seconds: float
    rss_kb: int
    stdout: str
    load: tuple[float, float, float]
    busy: list[str]


def busy_processes() -> list[str]:
    """Builds and other benchmarks (ingest_compare.other_benchmarks), and
    processes run from a debug target folder (test binaries and the debug
    `panorama` they start): anything that would share the two cores."""
    found = other_benchmarks()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            exe = os.readlink(entry / "exe")
        except OSError:
            continue
        if "/debug/deps/" in exe or exe.endswith("/debug/panorama"):
            found.append(f"{entry.name}: {exe}")
    return found


def wait_quiet(max_wait: float) -> None:
    if max_wait <= 0:
        return
    waited = 0.0
    while (busy := busy_processes()) and waited < max_wait:
        if waited == 0:
            log(f"a build or another benchmark runs; waiting up to {max_wait:.0f} s: {busy[0][:150]}")
        time.sleep(WAIT_POLL_S)
        waited += WAIT_POLL_S
    if waited:
        log(f"waited {waited:.0f} s" + (" (still busy: measuring anyway)" if busy else ""))


def run_alone(command: list[str], folder: Path, label: str, max_wait: float,
              stderr_path: Path) -> Measured:
    """Run `command` in `folder` under the timer; stdout kept, stderr to a file."""
    wait_quiet(max_wait)
    busy_before = busy_processes()
    load = os.getloadavg()
    result_path = folder / f"{label}.time"
    stdout_path = folder / f"{label}.out"
    shown = ["<DuckDB side>" if len(c) > 200 else c for c in command]
    log("$ " + " ".join(shown))
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", _TIMER, str(result_path), str(stdout_path), str(folder),
             *command],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
            start_new_session=True)
        try:
            proc.wait()
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    busy = busy_before or busy_processes()
    try:
        code, wall, rss = result_path.read_text().split()
    except (OSError, ValueError):
        code, wall, rss = proc.returncode or 1, "0", "0"
    stdout = stdout_path.read_text(errors="replace") if stdout_path.exists() else ""
    return Measured(int(code), float(wall), int(rss), stdout, load, busy)


# --------------------------------------------------------------------------
# The lake
# --------------------------------------------------------------------------

def read_manifest(lake: Path) -> dict | None:
    try:
        return json.loads((lake / MANIFEST).read_text())
    except FileNotFoundError:
        return None


def ensure_base(args: argparse.Namespace, notes: list[str]) -> None:
    lake = args.lake
    marker = lake / MARKER
    has_data = any(parquet_files(lake, t) for t in ALL_TABLES if (lake / "raw" / t).is_dir())
    if marker.exists():
        made = json.loads(marker.read_text())
        if made.get("scale") != args.scale or made.get("seed") != args.seed:
            sys.exit(f"{lake} holds scale {made.get('scale')} seed {made.get('seed')}, not "
                     f"scale {args.scale} seed {args.seed}: pick another --lake")
        log(f"reusing the lake at {lake} (scale {args.scale}, seed {args.seed})")
    elif has_data:
        if not args.skip_generate:
            sys.exit(f"{lake} holds data this harness did not generate (no {MARKER}); pass "
                     f"--skip-generate to use it as it is")
        log(f"using the lake at {lake} as it is (--skip-generate)")
    else:
        seconds = generate_lake(args.panorama, lake, args.scale, args.seed)
        notes.append(f"generated the base lake (scale {args.scale}, seed {args.seed}) in "
                     f"{seconds:.1f} s")
    if (lake / "system" / "privacy_requests").exists():
        notes.append("the base lake already holds erasure requests (system.privacy_requests)")
    manifest = read_manifest(lake)
    if manifest is None:
        command = ["refresh"]
    elif any(manifest.get("deltas", {}).values()):
        # The people are picked from the base folder of cdp.identity_links:
        # write the views whole (an incremental refresh, even one finding
        # nothing new, adds a delta layer).
        command = ["refresh", "--full"]
    else:
        notes.append(f"the base lake's views were current (cdp version "
                     f"{manifest.get('version')}, no delta layer): no refresh before the runs")
        return
    command = [str(args.panorama), "--lake", str(lake)] + command
    log("$ " + " ".join(command))
    started = time.perf_counter()
    result = subprocess.run(command, cwd=args.work_dir, stdin=subprocess.DEVNULL,
                            stdout=sys.stderr)
    if result.returncode != 0:
        sys.exit(f"`panorama refresh` of the base lake failed with exit code {result.returncode}")
    notes.append(f"`panorama {' '.join(command[3:])}` of the base lake before the runs: "
                 f"{time.perf_counter() - started:.1f} s")
    if any((read_manifest(lake) or {}).get("deltas", {}).values()):
        sys.exit("cdp.identity_links still has delta layers after the refresh")


def links_glob(lake: Path) -> str:
    folder = (read_manifest(lake) or {}).get("tables", {}).get("identity_links")
    if not folder:
        sys.exit(f"{lake / MANIFEST} names no cdp.identity_links")
    return str(lake / folder / "*.parquet")


def file_list(lake: Path, table: str) -> str:
    return "[" + ", ".join(sql_string(str(f)) for f in parquet_files(lake, table)) + "]"


def pick_emails(con, lake: Path, count: int, seed: int) -> list[str]:
    """`count` normalised emails of raw.customers, one per profile of
    cdp.identity_links, in a fixed pseudo-random order."""
    blocked = ", ".join(sql_string(v) for v in BLOCKED)
    rows = con.execute(f"""
        WITH c AS (
            SELECT DISTINCT lower(trim(email)) AS e
            FROM read_parquet({file_list(lake, 'customers')})
            WHERE email IS NOT NULL),
        l AS (
            SELECT id_value, profile_id FROM read_parquet({sql_string(links_glob(lake))})
            WHERE id_type = 'email')
        SELECT e FROM c JOIN l ON l.id_value = c.e
        WHERE e NOT IN ({blocked}) AND regexp_full_match(e, '[^@ ]+@[^@ ]+')
        QUALIFY row_number() OVER (PARTITION BY profile_id ORDER BY md5(e || ':' || {seed})) = 1
        ORDER BY md5(e || ':' || {seed})
        LIMIT {count}""").fetchall()
    if len(rows) < count:
        sys.exit(f"only {len(rows)} people to pick from, {count} asked for")
    return [r[0] for r in rows]


def write_ids(path: Path, emails: list[str]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id_type", "value"])
        for email in emails:
            writer.writerow(["email", email])


def parquet_sizes(lake: Path) -> dict[str, int]:
    """Every Parquet file under `lake`: relative path -> bytes."""
    sizes = {}
    for root, _dirs, files in os.walk(lake):
        for name in files:
            if name.endswith(".parquet"):
                path = os.path.join(root, name)
                sizes[os.path.relpath(path, lake)] = os.path.getsize(path)
    return sizes


def tree_bytes(lake: Path) -> int:
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _dirs, files in os.walk(lake) for name in files)


def raw_live_bytes(lake: Path) -> int:
    return sum(f.stat().st_size for t in ALL_TABLES if (lake / "raw" / t).is_dir()
               for f in parquet_files(lake, t))


def copy_lake(base: Path, dest: Path) -> float:
    started = time.perf_counter()
    subprocess.run(["cp", "-r", str(base), str(dest)], check=True)
    return time.perf_counter() - started


# --------------------------------------------------------------------------
# Identifiers and checks
# --------------------------------------------------------------------------

def resolve_sql(links: str, ids_csv: Path) -> str:
    """Every identifier (type, normalised value) of the profiles holding the
    emails of ids.csv, with the emails themselves."""
    return f"""
        WITH wanted AS (SELECT lower(trim(value)) AS e FROM read_csv({sql_string(str(ids_csv))},
                            header = true, all_varchar = true)),
             links AS (SELECT id_type, id_value, profile_id FROM read_parquet({sql_string(links)}))
        SELECT DISTINCT id_type, id_value FROM links
        WHERE profile_id IN (SELECT profile_id FROM links
                             WHERE id_type = 'email' AND id_value IN (SELECT e FROM wanted))
        UNION SELECT 'email', e FROM wanted"""


def match_sql(table: str) -> str:
    """A condition true for the rows of raw.<table> carrying an identifier of
    the temporary table `ids`."""
    parts = []
    for column, id_type in SOURCES[table]:
        value = NORMALISED[id_type].format(c=column)
        parts.append(f"coalesce({value} IN (SELECT id_value FROM ids WHERE id_type = "
                     f"{sql_string(id_type)}), false)")
    return "(" + " OR ".join(parts) + ")"


def row_counts(con, lake: Path) -> dict[str, int]:
    return {t: con.execute(f"SELECT count(*) FROM read_parquet({file_list(lake, t)})").fetchone()[0]
            for t in ALL_TABLES if (lake / "raw" / t).is_dir() and parquet_files(lake, t)}


def check_erased(con, lake: Path, before_rows: dict[str, int], removed: dict[str, int],
                 emails: list[str]) -> list[str]:
    """Problems found in `lake` after Panorama's erasure (empty: none).
    The temporary table `ids` holds the people's identifiers."""
    problems = []
    for table in SOURCES:
        found = con.execute(f"SELECT count(*) FROM read_parquet({file_list(lake, table)}) "
                            f"WHERE {match_sql(table)}").fetchone()[0]
        if found:
            problems.append(f"raw.{table}: {found:,} rows still carry an erased identifier")
    # Every email named, as typed anywhere in the table's email column.
    wanted = ", ".join(sql_string(e) for e in emails)
    for table in SOURCES:
        found = con.execute(f"SELECT count(*) FROM read_parquet({file_list(lake, table)}) "
                            f"WHERE lower(trim(email)) IN ({wanted})").fetchone()[0]
        if found:
            problems.append(f"raw.{table}: {found:,} rows with an erased email")
    links = con.execute(
        f"SELECT count(*) FROM read_parquet({sql_string(links_glob(lake))}) l "
        f"JOIN ids ON ids.id_type = l.id_type AND ids.id_value = l.id_value").fetchone()[0]
    if links:
        problems.append(f"cdp.identity_links: {links:,} links of erased identifiers")
    after = row_counts(con, lake)
    for table, rows in before_rows.items():
        lost = rows - after.get(table, 0)
        if lost != removed.get(table, 0):
            problems.append(f"raw.{table}: {lost:,} rows fewer, Panorama says it removed "
                            f"{removed.get(table, 0):,}")
    return problems


# --------------------------------------------------------------------------
# DuckDB's side: a separate process
# --------------------------------------------------------------------------

# argv[1]: a JSON spec. Prints one JSON line: rows written and removed per
# table, bytes written.
_DUCKDB_SIDE = """
import json, os, sys, duckdb
spec = json.load(open(sys.argv[1]))
con = duckdb.connect()
con.execute(f"SET threads TO {int(spec['threads'])}")
con.execute(f"SET temp_directory = '{spec['out']}/duckdb-tmp'")
con.execute("CREATE TEMP TABLE ids AS " + spec["resolve"])
con.execute("CREATE TEMP TABLE erased_orders AS SELECT DISTINCT order_id FROM read_parquet("
            + spec["files"]["orders"] + ") WHERE " + spec["match"]["orders"])
result = {}
for table, files in spec["files"].items():
    out = os.path.join(spec["out"], table + ".parquet")
    if table == "order_items":
        keep = "order_id NOT IN (SELECT order_id FROM erased_orders)"
    else:
        keep = "NOT " + spec["match"][table]
    written = con.execute(f"COPY (SELECT * FROM read_parquet({files}) WHERE {keep}) "
                          f"TO '{out}' (FORMAT parquet, COMPRESSION zstd)").fetchone()[0]
    total = con.execute(f"SELECT count(*) FROM read_parquet({files})").fetchone()[0]
    result[table] = {"written": written, "removed": total - written, "bytes": os.path.getsize(out)}
print(json.dumps(result))
"""


def duckdb_spec(lake: Path, ids_csv: Path, out: Path, threads: int) -> dict:
    tables = list(SOURCES) + [CHILD[0]]
    return {
        "threads": threads,
        "out": str(out),
        "resolve": resolve_sql(links_glob(lake), ids_csv),
        "files": {t: file_list(lake, t) for t in tables},
        "match": {t: match_sql(t) for t in SOURCES},
    }


# --------------------------------------------------------------------------
# One request size
# --------------------------------------------------------------------------

@dataclass
class Row:
    n: int
    profiles: int | None = None
    identifiers: int | None = None
    files_rewritten: int | None = None
    removed: dict[str, int] = field(default_factory=dict)
    pano: Measured | None = None
    pano_raw_bytes: int = 0
    pano_all_bytes: int = 0
    pano_raw_files: int = 0
    duck: Measured | None = None
    duck_bytes: int = 0
    duck_removed: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def run_count(args, con, folder: Path, emails: list[str], n: int,
              base_rows: dict[str, int], notes: list[str]) -> Row:
    row = Row(n)
    people = emails[:n]
    ids_csv = folder / f"ids-{n}.csv"
    write_ids(ids_csv, people)
    con.execute("DROP TABLE IF EXISTS ids")
    con.execute("CREATE TEMP TABLE ids AS " + resolve_sql(links_glob(args.lake), ids_csv))

    # Panorama, on a fresh copy.
    copy = folder / f"panorama-{n}"
    log(f"--- N = {n}: copying the lake for Panorama ({copy_lake(args.lake, copy):.1f} s)")
    before = parquet_sizes(copy)
    row.pano = run_alone([str(args.panorama), "--lake", str(copy), "privacy", "forget",
                          "--file", str(ids_csv)], folder, f"panorama-{n}", args.max_wait,
                         folder / f"panorama-{n}.log")
    log(row.pano.stdout.strip())
    if row.pano.code != 0:
        row.problems.append(f"`panorama privacy forget` exited with {row.pano.code}: "
                            + (folder / f"panorama-{n}.log").read_text(errors="replace")[-800:])
    else:
        after = parquet_sizes(copy)
        added = {p: s for p, s in after.items() if p not in before}
        row.pano_all_bytes = sum(added.values())
        # Data files of raw tables (not the checkpoints in _delta_log).
        data = {p: s for p, s in added.items()
                if p.startswith("raw" + os.sep) and "_delta_log" not in Path(p).parts}
        row.pano_raw_bytes = sum(data.values())
        row.pano_raw_files = len(data)
        for line in row.pano.stdout.splitlines():
            if m := REMOVED_LINE.match(line):
                row.removed[m.group(1)] = int(m.group(2))
            if m := SUMMARY_LINE.search(line):
                row.identifiers, row.profiles = int(m.group(1)), int(m.group(2))
                row.files_rewritten = int(m.group(4))
        if row.profiles is None:
            row.problems.append("could not read Panorama's summary line")
        row.problems += check_erased(con, copy, base_rows, row.removed, people)
        if not row.removed or sum(row.removed.values()) == 0:
            row.problems.append("Panorama removed no row")
    if not args.keep:
        shutil.rmtree(copy, ignore_errors=True)

    # DuckDB, on another fresh copy.
    copy = folder / f"duckdb-{n}"
    log(f"--- N = {n}: copying the lake for DuckDB ({copy_lake(args.lake, copy):.1f} s)")
    out = copy / "duckdb-out"
    out.mkdir()
    spec_path = folder / f"duckdb-{n}.json"
    spec_path.write_text(json.dumps(duckdb_spec(copy, ids_csv, out, args.duckdb_threads)))
    row.duck = run_alone([sys.executable, "-c", _DUCKDB_SIDE, str(spec_path)], folder,
                         f"duckdb-{n}", args.max_wait, folder / f"duckdb-{n}.log")
    if row.duck.code != 0:
        row.problems.append(f"DuckDB side exited with {row.duck.code}: "
                            + (folder / f"duckdb-{n}.log").read_text(errors="replace")[-800:])
    else:
        result = json.loads(row.duck.stdout.strip().splitlines()[-1])
        row.duck_bytes = sum(t["bytes"] for t in result.values())
        row.duck_removed = {t: v["removed"] for t, v in result.items()}
        emails_sql = ", ".join(sql_string(e) for e in people)
        left = sum(con.execute(
            f"SELECT count(*) FROM read_parquet({sql_string(str(out / (t + '.parquet')))}) "
            f"WHERE lower(trim(email)) IN ({emails_sql})").fetchone()[0] for t in SOURCES)
        if left:
            row.problems.append(f"DuckDB's files still hold {left} rows with an erased email")
        differ = {t: (row.removed.get(t, 0), row.duck_removed.get(t, 0))
                  for t in set(row.removed) | set(row.duck_removed)
                  if row.removed.get(t, 0) != row.duck_removed.get(t, 0)}
        if differ and row.removed:
            notes.append(f"N = {n}: rows removed differ (Panorama, DuckDB): "
                         + ", ".join(f"raw.{t} {p:,} / {d:,}" for t, (p, d) in sorted(differ.items())))
    if not args.no_refresh_reference and n == args.counts[0]:
        # The profile rebuild alone, on this copy (the DuckDB files are not
        # in any Delta log, so Panorama does not see them).
        ref = run_alone([str(args.panorama), "--lake", str(copy), "refresh", "--full"], folder,
                        "refresh-full", args.max_wait, folder / "refresh-full.log")
        notes.append(f"`panorama refresh --full` on an untouched copy (the profile rebuild every "
                     f"erasure includes): {ref.seconds:.1f} s, peak RSS "
                     f"{ref.rss_kb / 1024:,.0f} MiB (load {ref.load[0]:.2f})"
                     + ("" if ref.code == 0 else f", exit code {ref.code}"))
    if not args.keep:
        shutil.rmtree(copy, ignore_errors=True)
    return row


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------

def pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}" if whole else "?"


def report(args, rows: list[Row], meta: dict, notes: list[str]) -> str:
    lines = [
        f"# GDPR erasure, scale {args.scale}",
        "",
        (f"{meta['date']} · {meta['machine']} · Panorama {meta['panorama_version']} "
         f"(`{args.panorama}`) · DuckDB {duckdb.__version__}, threads {args.duckdb_threads}, "
         f"separate process · base lake {args.lake}: {meta['lake_bytes'] / 1e6:,.0f} MB on disk, "
         f"raw tables' live data {meta['raw_bytes'] / 1e6:,.0f} MB, raw.events "
         f"{meta['events']:,} rows · each side on its own fresh copy, one run each"),
        "",
        f"Command: `{meta['command']}`",
        "",
        "| N | profiles | Panorama s | Panorama peak MiB | Panorama raw bytes rewritten % "
        "| Panorama all bytes written % of lake | DuckDB s | DuckDB peak MiB | DuckDB bytes % "
        "| ratio (Panorama/DuckDB s) | load avg at start (P / D) | erased checked |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for r in rows:
        p, d = r.pano, r.duck
        ok_p = p is not None and p.code == 0
        ok_d = d is not None and d.code == 0
        cells = [f"{r.n:,}", str(r.profiles) if r.profiles is not None else "?"]
        if ok_p:
            cells += [f"{p.seconds:.2f}", f"{p.rss_kb / 1024:,.0f}",
                      pct(r.pano_raw_bytes, meta["raw_bytes"]),
                      pct(r.pano_all_bytes, meta["lake_bytes"])]
        else:
            cells += ["error"] * 4
        if ok_d:
            cells += [f"{d.seconds:.2f}", f"{d.rss_kb / 1024:,.0f}",
                      pct(r.duck_bytes, meta["raw_bytes"])]
        else:
            cells += ["error"] * 3
        cells.append(f"{p.seconds / d.seconds:.2f}" if ok_p and ok_d and d.seconds else "n/a")
        cells.append(" / ".join(f"{m.load[0]:.2f}" if m else "?" for m in (p, d)))
        cells.append("**no**" if r.problems else "yes")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Rows removed per table (Panorama; DuckDB where different):", ""]
    for r in rows:
        parts = []
        for t in sorted(set(r.removed) | set(r.duck_removed)):
            pr, dr = r.removed.get(t, 0), r.duck_removed.get(t)
            parts.append(f"raw.{t} {pr:,}" + (f" (DuckDB {dr:,})" if dr is not None and dr != pr else ""))
        lines.append(f"- N = {r.n:,}: {r.identifiers if r.identifiers is not None else '?'} "
                     f"identifiers; " + ", ".join(parts)
                     + (f"; Panorama rewrote {r.files_rewritten} files "
                        f"({r.pano_raw_files} new raw files, {r.pano_raw_bytes / 1e6:,.1f} MB; "
                        f"{r.pano_all_bytes / 1e6:,.1f} MB with the views and records), DuckDB "
                        f"wrote {r.duck_bytes / 1e6:,.1f} MB" if r.pano else ""))
    problems = [f"N = {r.n}: {p}" for r in rows for p in r.problems]
    if problems:
        lines += ["", "Problems:", ""] + [f"- {p}" for p in problems]
    busy = [f"N = {r.n}, {side}: a build or another benchmark ran ({m.busy[0][:120]})"
            for r in rows for side, m in (("Panorama", r.pano), ("DuckDB", r.duck))
            if m is not None and m.busy]
    notes = notes + busy + [
        "Panorama bytes: Parquet files in the copy after the erasure that were not there "
        "before; raw % is the raw tables' new data files against the raw tables' live data, "
        "the other column every new Parquet file (views, refresh state, Delta checkpoints, "
        "records) against the whole lake on disk. DuckDB bytes: its new files against the "
        "raw tables' live data.",
        "DuckDB's time is resolving the people through cdp.identity_links and rewriting every "
        "table with an identifier column (and raw.order_items); Panorama's is its whole "
        "erasure (refresh, deletes, profile rebuild, purge, records).",
    ]
    lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    install_signal_handlers()
    args = parse_args(argv)
    require_binary(args.panorama)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    ensure_base(args, notes)
    con = duckdb.connect()
    con.execute(f"SET threads TO {args.duckdb_threads}")
    emails = pick_emails(con, args.lake, max(args.counts), args.seed)
    base_rows = row_counts(con, args.lake)
    raw_bytes = raw_live_bytes(args.lake)
    lake_bytes = tree_bytes(args.lake)
    need = 2 * lake_bytes + raw_bytes
    free = shutil.disk_usage(args.work_dir).free
    if free < need:
        sys.exit(f"{args.work_dir} has {free / 1e9:.1f} GB free; the copies need about "
                 f"{need / 1e9:.1f} GB")
    folder = Path(tempfile.mkdtemp(prefix="panorama-erasure-", dir=args.work_dir))
    log(f"working in {folder}")
    rows: list[Row] = []
    try:
        for n in args.counts:
            rows.append(run_count(args, con, folder, emails, n, base_rows, notes))
            r = rows[-1]
            log(f"N = {n}: Panorama {r.pano.seconds:.2f} s, DuckDB "
                f"{r.duck.seconds if r.duck else float('nan'):.2f} s"
                + (f"; problems: {r.problems}" if r.problems else ""))
    finally:
        con.close()
        if args.keep:
            log(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    meta = {
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "machine": machine(),
        "panorama_version": panorama_version(args.panorama),
        "lake_bytes": lake_bytes,
        "raw_bytes": raw_bytes,
        "events": base_rows.get("events", 0),
        "command": " ".join(
            [os.path.relpath(sys.argv[0], REPO) if sys.argv[0] else "erasure_compare.py"]
            + (sys.argv[1:] if argv is None else argv)),
    }
    publish(report(args, rows, meta, notes), args.out)
    return 1 if any(r.problems for r in rows) else 0


if __name__ == "__main__":
    run(main)
