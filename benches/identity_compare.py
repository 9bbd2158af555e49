#!/usr/bin/env python3
"""Identity resolution: Panorama's union-find against the "warehouse way".

Panorama resolves identities in `panorama refresh`: it reads every
identifier of the raw tables, normalises it, links the identifiers seen on
one row, and finds the connected components with a union-find (with
per-type limits, a cardinality guard and stable profile ids), then rebuilds
cdp.profiles.

Warehouse CDPs (RudderStack Profiles, the dbt identity-resolution packages)
do the same in SQL with iterative min-label propagation: every identifier
starts with its own id as label, and each pass sets
    label = min(label, min(label of every neighbour))
with CREATE OR REPLACE TABLE, until no label changes. This harness runs that
algorithm in DuckDB over the same Parquet files and compares:

  * Panorama: wall time and peak RSS of the whole `panorama refresh`
    process (which also rebuilds cdp.profiles: the comparison is
    conservative, Panorama does more work);
  * DuckDB: time to build the edge list (read + normalise + intern + star
    links), time of the label propagation (and its number of passes), peak
    RSS of the Python process that ran DuckDB (a child of this harness, so
    the figure is DuckDB's own).

The SQL mirrors Panorama's default identity rules (src/identity/config.rs,
src/identity/normalize.rs) as closely as plain SQL allows: the same
identifier types and sources, the same normalisation (phones by rule plus
libphonenumber's French number patterns instead of libphonenumber itself),
the same blocked values, one star of links per raw row from its first
identifier; identifier and link counts are printed for both engines. It
does NOT apply the per-type limits (max_per_profile) nor the cardinality
guard (max_distinct_neighbours): that is the plain warehouse algorithm. Component counts may therefore
differ a little from Panorama's profile count; both are printed, with the
number of DuckDB components that a limit would have split and the values
the guard would have dropped, so the difference can be explained.

The Panorama side runs `panorama refresh --full` (a rebuild from all raw
data, whatever the binary does by default).

Incremental refresh (--incremental-share S, off by default): to simulate
"a share S of new data lands", the harness moves the newest day partitions
(raw/<table>/date=YYYY-MM-DD/, the same last K dates for every table, K
chosen so they hold about S of the raw bytes) aside into a sibling folder
of the lake (<lake>.held-back/), runs `panorama refresh --full` on what is
left, moves the folders back (setting their files' modification time to
now, as for files that just landed), then runs `panorama refresh` (the
incremental one: it should read only the raw files landed since the last
committed refresh). Both wall times, peak RSS and the ratio
incremental / full are reported, per run. The folders are always moved
back, on error or interrupt too; a <lake>.held-back/ left by a killed run
is moved back at the next start. --skip-duckdb leaves out the DuckDB label
propagation (e.g. to rerun only the refresh measurements).

Note: every run of `panorama refresh` commits a new version of the cdp.*
views in the lake (as the command always does).

Usage:
  /var/tmp/panorama-bench-venv/bin/python benches/identity_compare.py \\
      --lake /var/tmp/lake-10 [--scale 10] [--panorama PATH] [--runs 1] \\
      [--incremental-share 0.01] [--skip-duckdb]

With --scale N and a lake folder without raw/, the lake is first generated
with `panorama generate --scale N --seed 42`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import (MARKER, OUT_DIR, default_panorama, generate_lake, install_signal_handlers,
                    log, mb, median, panorama_version, parquet_files, publish, require_binary,
                    run, run_measured, signals_deferred, sql_string, warm_page_cache)

# --------------------------------------------------------------------------
# Panorama's default identity rules, mirrored (src/identity/config.rs)
# --------------------------------------------------------------------------

# Identifier types in declaration order: the index is the type id.
TYPES = ["customer_id", "user_id", "email", "phone", "anonymous_id"]
NORMALIZE = {
    "customer_id": "norm_text",
    "user_id": "norm_text",
    "email": "norm_email",
    "phone": "norm_phone",
    "anonymous_id": "norm_lower",
}
# (table, business-time column, [(column, identifier type), ...]) in the
# order of the configured sources: the first identifier of a row is the hub
# of its star of links, as in Panorama.
SOURCES = [
    ("events", "timestamp", [("anonymous_id", "anonymous_id"), ("user_id", "user_id"),
                             ("previous_id", "anonymous_id"), ("email", "email")]),
    ("customers", "updated_at", [("customer_id", "customer_id"), ("email", "email"),
                                 ("phone", "phone")]),
    ("orders", "ordered_at", [("customer_id", "customer_id"), ("email", "email"),
                              ("anonymous_id", "anonymous_id")]),
    ("survey_responses", "responded_at", [("customer_id", "customer_id"), ("email", "email"),
                                          ("anonymous_id", "anonymous_id")]),
    ("consents", "recorded_at", [("customer_id", "customer_id"), ("email", "email"),
                                 ("anonymous_id", "anonymous_id")]),
]
BLOCKED_VALUES = [
    "null", "undefined", "none", "0", "n/a", "na", "unknown", "anonymous", "test",
    "test@test.com", "none@none.com", "noreply@example.com", "email@example.com",
    "00000000-0000-0000-0000-000000000000",
]
# Not applied by the SQL baseline; only used to explain count differences.
MAX_PER_PROFILE = {"customer_id": 1, "user_id": 1}
MAX_DISTINCT_NEIGHBOURS = 50

REFRESH_LINE = re.compile(
    r"refresh (?P<version>\d+) committed in (?P<seconds>[\d.]+) s"
    r"(?: \(identity graph (?P<graph_seconds>[\d.]+) s"
    r"(?:, of which resolution (?P<resolve_seconds>[\d.]+) s"
    r"(?:, union-find (?P<union_find_seconds>[\d.]+) s)?;|,) views (?P<views_seconds>[\d.]+) s\))?: "
    r"(?P<raw_rows>\d+) raw rows from (?P<raw_files>\d+) files, "
    r"(?P<identifiers>\d+) identifiers, (?P<links>\d+) links \S+ "
    r"(?P<profiles>\d+) profiles \((?P<new_profiles>\d+) new\), "
    r"(?P<merges>\d+) merges, (?P<splits>\d+) splits, "
    r"(?P<refused>\d+) links refused, (?P<blocked>\d+) values blocked"
)


# --------------------------------------------------------------------------
# DuckDB side (runs in a child process: `--duckdb-only`)
# --------------------------------------------------------------------------

# The national numbers libphonenumber accepts as valid for France (fixed
# line, mobile, toll free, premium, shared cost, VoIP, UAN), from the
# PhoneNumberMetadata.xml shipped with the phonenumber crate (0.3.10+9.0.33).
FR_NATIONAL = (
    r"(?:26[013-9]|59[1-35-9])\d{6}|(?:[13]\d|2[0-57-9]|4[1-9]|5[0-8])\d{7}"
    r"|(?:6(?:[0-24-8]\d|3[0-8]|9[589])|7[3-9]\d)\d{6}"
    r"|80[0-5]\d{6}"
    r"|836(?:0[0-36-9]|[1-9]\d)\d{4}|8(?:1[2-9]|2[2-47-9]|3[0-57-9]|[569]\d|8[0-35-9])\d{6}"
    r"|8(?:1[01]|2[0156]|4[024]|84)\d{6}"
    r"|9\d{8}"
    r"|80[6-9]\d{6}"
)

MACROS = [
    # Rust's str::trim also trims tabs and newlines; DuckDB's trim() only
    # spaces. The generator only pads with spaces.
    "CREATE MACRO norm_text(x) AS nullif(trim(x), '')",
    "CREATE MACRO norm_lower(x) AS nullif(lower(trim(x)), '')",
    # One '@' with text on both sides, no space.
    "CREATE MACRO norm_email(x) AS CASE WHEN regexp_full_match(lower(trim(x)), '[^@ ]+@[^@ ]+') "
    "THEN lower(trim(x)) END",
    # Phones by rule (Panorama uses libphonenumber, default country FR):
    # drop separators, 00 -> +, 0 + 9 digits -> +33 + 9 digits, keep
    # E.164-looking values; French numbers must also be valid French
    # numbers (FR_NATIONAL, as libphonenumber's is_valid checks them).
    r"CREATE MACRO phone_clean(x) AS regexp_replace(trim(x), '[ .()/-]', '', 'g')",
    r"CREATE MACRO phone_intl(c) AS CASE WHEN starts_with(c, '00') THEN '+' || c[3:] "
    r"WHEN regexp_full_match(c, '0[0-9]{9}') THEN '+33' || c[2:] ELSE c END",
    "CREATE MACRO phone_e164(p) AS CASE "
    f"WHEN starts_with(p, '+33') THEN CASE WHEN regexp_full_match(p[4:], '{FR_NATIONAL}') THEN p END "
    r"WHEN regexp_full_match(p, '\+[1-9][0-9]{7,14}') THEN p END",  # no country code starts with 0
    "CREATE MACRO norm_phone(x) AS phone_e164(phone_intl(phone_clean(x)))",
]


def table_glob(lake: Path, table: str) -> str:
    return sql_string(str(lake / "raw" / table / "*" / "*.parquet"))


def observations_sql(lake: Path) -> str:
    """One row per raw row: the list of its normalised identifiers."""
    parts = []
    for table, time_column, columns in SOURCES:
        if not parquet_files(lake, table):
            continue
        items = ", ".join(
            f"{{'t': {TYPES.index(id_type)}::UTINYINT, 'v': {NORMALIZE[id_type]}(\"{column}\")}}"
            for column, id_type in columns
        )
        parts.append(
            f"SELECT list_filter([{items}], lambda x: x.v IS NOT NULL) AS ids "
            f"FROM read_parquet({table_glob(lake, table)}, hive_partitioning = false) "
            f"WHERE \"{time_column}\" IS NOT NULL"
        )
    if not parts:
        raise SystemExit(f"no Parquet files of the identity source tables under {lake}/raw/")
    return "\nUNION ALL\n".join(parts)


# Edge list: interned identifiers and one star of links per raw row.
# Blocked values are interned and linked like the others (as Panorama does:
# its identifier and link counts include them), then left out of the graph.
def build_steps(lake: Path) -> list[tuple[str, str]]:
    blocked = ", ".join(sql_string(v) for v in BLOCKED_VALUES)
    return [
        ("observations", f"CREATE TABLE obs AS SELECT ids FROM ({observations_sql(lake)}) "
                         f"WHERE len(ids) > 0"),
        ("intern identifiers", f"""
            CREATE TABLE nodes AS
            SELECT (row_number() OVER (ORDER BY t, v))::INTEGER AS id, t, v,
                   lower(v) IN ({blocked}) AS blocked
            FROM (SELECT DISTINCT x.t AS t, x.v AS v FROM (SELECT unnest(ids) AS x FROM obs))"""),
        ("star links", """
            CREATE TABLE links AS
            SELECT DISTINCT least(na.id, nb.id) AS a, greatest(na.id, nb.id) AS b
            FROM (SELECT ids[1] AS hub, unnest(ids[2:]) AS other FROM obs WHERE len(ids) > 1) p
            JOIN nodes na ON na.t = p.hub.t AND na.v = p.hub.v
            JOIN nodes nb ON nb.t = p.other.t AND nb.v = p.other.v
            WHERE na.id <> nb.id"""),
        ("edges (both directions)", """
            CREATE TABLE edges AS
            WITH usable AS (
                SELECT l.a, l.b FROM links l
                JOIN nodes x ON x.id = l.a AND NOT x.blocked
                JOIN nodes y ON y.id = l.b AND NOT y.blocked)
            SELECT a AS src, b AS dst FROM usable
            UNION ALL
            SELECT b AS src, a AS dst FROM usable"""),
        ("initial labels", "CREATE TABLE labels AS SELECT id, id AS label FROM nodes WHERE NOT blocked"),
    ]


PROPAGATE = """
CREATE OR REPLACE TABLE labels_next AS
SELECT l.id,
       least(l.label, coalesce(m.label, l.label)) AS label,
       coalesce(m.label, l.label) < l.label AS changed
FROM labels l
LEFT JOIN (SELECT e.src AS id, min(n.label) AS label
           FROM edges e JOIN labels n ON n.id = e.dst
           GROUP BY e.src) m ON m.id = l.id
"""


def duckdb_main(lake: Path, threads: int, max_passes: int) -> int:
    baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    import duckdb  # imported here so the baseline RSS excludes nothing of the run

    con = duckdb.connect()  # in memory
    con.execute(f"SET threads TO {int(threads)}")
    for macro in MACROS:
        con.execute(macro)
    after_import_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out: dict = {"duckdb_version": duckdb.__version__, "threads": threads,
                 "rss_before_run_kb": after_import_kb, "rss_python_start_kb": baseline_kb}

    # Edge list.
    steps = {}
    started = time.perf_counter()
    for name, sql in build_steps(lake):
        t0 = time.perf_counter()
        con.execute(sql)
        steps[name] = time.perf_counter() - t0
    out["build_s"] = time.perf_counter() - started
    out["build_steps_s"] = steps

    # Label propagation until no label changes.
    passes = 0
    changes = []
    started = time.perf_counter()
    while True:
        passes += 1
        con.execute(PROPAGATE)
        changed = con.execute("SELECT count(*) FILTER (WHERE changed) FROM labels_next").fetchone()[0]
        con.execute("DROP TABLE labels")
        con.execute("ALTER TABLE labels_next RENAME TO labels")
        changes.append(changed)
        if changed == 0 or passes >= max_passes:
            break
    out["propagate_s"] = time.perf_counter() - started
    out["passes"] = passes
    out["converged"] = changes[-1] == 0
    out["changes_per_pass"] = changes
    out["rss_peak_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    # Counts and diagnostics (not timed).
    q = lambda sql: con.execute(sql).fetchone()[0]  # noqa: E731
    out["raw_rows"] = sum(
        q(f"SELECT count(*) FROM read_parquet({table_glob(lake, table)}, hive_partitioning = false) "
          f"WHERE \"{time_column}\" IS NOT NULL")
        for table, time_column, _ in SOURCES if parquet_files(lake, table))
    out["raw_files"] = sum(len(parquet_files(lake, table)) for table, _, _ in SOURCES)
    out["identifiers"] = q("SELECT count(*) FROM nodes")
    out["blocked_identifiers"] = q("SELECT count(*) FROM nodes WHERE blocked")
    out["links"] = q("SELECT count(*) FROM links")
    out["usable_links"] = q("SELECT count(*) FROM edges") // 2
    out["components"] = q("SELECT count(DISTINCT label) FROM labels")
    out["largest_component"] = q(
        "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM labels GROUP BY label)")
    limited = " OR ".join(
        f"count(*) FILTER (WHERE n.t = {TYPES.index(t)}) > {m}" for t, m in MAX_PER_PROFILE.items())
    out["components_over_limits"] = q(f"""
        SELECT count(*) FROM (SELECT l.label FROM labels l JOIN nodes n USING (id)
                              GROUP BY l.label HAVING {limited})""")
    out["values_over_guard"] = q(f"""
        SELECT count(DISTINCT e.src) FROM (
            SELECT e.src, n.t, count(*) AS k FROM edges e JOIN nodes n ON n.id = e.dst
            GROUP BY e.src, n.t) e
        WHERE e.k > {MAX_DISTINCT_NEIGHBOURS}""")
    out["distinct_customer_ids"] = q(f"SELECT count(*) FROM nodes WHERE t = {TYPES.index('customer_id')}")
    con.close()
    print(json.dumps(out))
    return 0


def run_duckdb_child(lake: Path, threads: int, max_passes: int) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--duckdb-only",
               "--lake", str(lake), "--duckdb-threads", str(threads),
               "--max-passes", str(max_passes)]
    log("$ " + " ".join(command))
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    stdout, _ = proc.communicate()
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"the DuckDB run failed with exit code {proc.returncode}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["process_wall_s"] = wall
    return result


# --------------------------------------------------------------------------
# Panorama side
# --------------------------------------------------------------------------

def panorama_env() -> dict:
    # The SQL mirrors the default identity rules: no configuration file.
    env = dict(os.environ)
    for name in ("PANORAMA_CONFIG", "PANORAMA_LAKE"):
        env.pop(name, None)
    return env


def run_panorama_refresh(binary: Path, lake: Path, workdir: Path, *, full: bool = True,
                         require_summary: bool = True) -> dict:
    """Run `panorama refresh [--full]`, timing it and taking its peak RSS with wait4.

    Without `require_summary`, a missing or changed summary line is not an
    error: the result then holds only the wall time, the peak RSS and the
    last line of the output.
    """
    command = [str(binary), "refresh", *(["--full"] if full else []), "--lake", str(lake)]
    log("$ " + " ".join(command))
    err_path = workdir / ("refresh-full.stderr" if full else "refresh.stderr")
    with open(err_path, "wb") as err:
        # cwd: an empty folder, so no ./panorama.toml changes the rules.
        returncode, wall, rss_kb = run_measured(command, cwd=workdir, env=panorama_env(),
                                                stderr=err)
    text = err_path.read_text(errors="replace")
    if returncode != 0:
        raise RuntimeError(f"{' '.join(command[1:3])} failed with exit code {returncode}:\n"
                           + "\n".join(text.splitlines()[-20:]))
    match = REFRESH_LINE.search(text)
    if match:
        result = {
            k: (None if v is None else float(v) if k.endswith("seconds") else int(v))
            for k, v in match.groupdict().items()
        }
        result["line"] = match.group(0)
    elif require_summary:
        raise RuntimeError(f"no summary line in the output of panorama refresh:\n{text[-2000:]}")
    else:
        lines = [line for line in text.splitlines() if line.strip()]
        result = {"line": lines[-1].strip() if lines else ""}
        log("warning: the summary line of panorama refresh was not recognised; "
            "only its time and peak RSS are reported")
    result["wall_s"] = wall
    result["rss_peak_kb"] = rss_kb
    return result


def profiles_after_idle_filter(lake: Path) -> int | None:
    """Rows of the committed cdp.profiles (after the anonymous idle filter)."""
    try:
        manifest = json.loads((lake / "cdp" / "_manifest.json").read_text())
        folder = lake / manifest["tables"]["profiles"]
        import duckdb
        con = duckdb.connect()
        pattern = sql_string(str(folder / "*.parquet"))
        n = con.execute(f"SELECT count(*) FROM read_parquet({pattern})").fetchone()[0]
        con.close()
        return n
    except Exception as exc:  # noqa: BLE001 - informative only
        log(f"warning: could not count cdp.profiles: {exc}")
        return None


# --------------------------------------------------------------------------
# The lake
# --------------------------------------------------------------------------

def lake_has_raw(lake: Path) -> bool:
    return any(parquet_files(lake, table) for table, _, _ in SOURCES)


def ensure_lake(args: argparse.Namespace) -> None:
    if lake_has_raw(args.lake):
        return
    if args.scale is None:
        sys.exit(f"{args.lake} has no raw/ Parquet files: pass --scale N to generate a lake there")
    generate_lake(args.panorama, args.lake, args.scale, args.seed, env=panorama_env())


def lake_scale(args: argparse.Namespace) -> tuple[str, str]:
    """(scale for the report, how it is known)."""
    if args.scale is not None:
        return str(args.scale), "--scale"
    marker = args.lake / MARKER
    if marker.exists():
        try:
            return str(json.loads(marker.read_text())["scale"]), MARKER
        except (ValueError, KeyError):
            pass
    m = re.search(r"(\d+)$", args.lake.name)
    if m:
        return str(int(m.group(1))), "the lake folder's name"
    return "unknown", "not known (pass --scale)"


# --------------------------------------------------------------------------
# Incremental refresh: the newest days held back, then landed again
# --------------------------------------------------------------------------

def held_back_root(lake: Path) -> Path:
    """Where held-back partitions wait: a sibling of the lake (same file
    system, so moves are renames), never inside it."""
    return lake.parent / f"{lake.name}.held-back"


def remove_empty_folders(root: Path) -> None:
    if not root.exists():
        return
    for folder, _dirs, _files in os.walk(root, topdown=False):
        try:
            os.rmdir(folder)
        except OSError:
            pass  # not empty


def parquet_rows(paths: list[Path]) -> int | None:
    """Rows of these Parquet files, from their footers (informative only)."""
    if not paths:
        return 0
    try:
        import duckdb
        con = duckdb.connect()
        listing = "[" + ", ".join(sql_string(str(p)) for p in paths) + "]"
        n = con.execute(f"SELECT sum(num_rows) FROM parquet_file_metadata({listing})").fetchone()[0]
        con.close()
        return int(n or 0)
    except Exception as exc:  # noqa: BLE001 - informative only
        log(f"warning: could not count Parquet rows: {exc}")
        return None


@dataclass
class HeldBack:
    """The newest day partitions of every raw table, moved out of the lake and back."""

    lake: Path
    aside: Path
    share: float  # as asked
    dates: list[str]  # oldest first
    folders: list[Path]  # relative to the lake: raw/<table>/date=YYYY-MM-DD
    files: list[Path]  # in the lake
    bytes: int
    total_bytes: int
    total_files: int
    rows: int | None = None
    total_rows: int | None = None
    moved: list[Path] = field(default_factory=list)  # folders aside right now

    def move_aside(self) -> None:
        if self.aside.exists() and any(self.aside.iterdir()):
            raise RuntimeError(f"{self.aside} is not empty: move its folders back into "
                               f"{self.lake} by hand")
        with signals_deferred():  # never stop halfway through the renames
            for rel in self.folders:
                target = self.aside / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                os.rename(self.lake / rel, target)
                self.moved.append(rel)

    def move_back(self) -> None:
        """Move back what is aside; its files get the current time as
        modification time, like files that just landed."""
        with signals_deferred():
            while self.moved:
                rel = self.moved[-1]
                try:
                    os.rename(self.aside / rel, self.lake / rel)
                except OSError as exc:
                    raise RuntimeError(
                        f"could not move {self.aside / rel} back to {self.lake / rel} ({exc}): "
                        f"the held-back folders are still in {self.aside}; move them back "
                        f"by hand") from exc
                self.moved.pop()
                for path in (self.lake / rel).iterdir():
                    os.utime(path)
            remove_empty_folders(self.aside)


def plan_held_back(lake: Path, share: float) -> HeldBack:
    """The newest K dates (the same for every raw table) whose files hold
    about `share` of the raw bytes (the K closest to it, at least 1)."""
    folders: dict[str, list[Path]] = {}
    files: dict[str, list[Path]] = {}
    size: dict[str, int] = {}
    all_files: list[Path] = []
    for table_dir in sorted((lake / "raw").iterdir()):
        if not table_dir.is_dir():
            continue
        for part in sorted(table_dir.iterdir()):
            if not (part.is_dir() and part.name.startswith("date=")):
                continue
            date = part.name[len("date="):]
            here = sorted(part.glob("*.parquet"))
            folders.setdefault(date, []).append(part.relative_to(lake))
            files.setdefault(date, []).extend(here)
            size[date] = size.get(date, 0) + sum(p.stat().st_size for p in here)
            all_files.extend(here)
    dates = sorted(folders)  # ISO dates: text order is time order
    total = sum(size.values())
    if len(dates) < 2 or total == 0:
        sys.exit(f"--incremental-share: {lake}/raw/ needs at least two date=YYYY-MM-DD "
                 f"partitions with data")
    target = share * total
    chosen: list[str] = []
    held = 0
    for date in reversed(dates):
        if held >= target:
            break
        chosen.append(date)
        held += size[date]
    # Keep the last date only if it brings the share closer to the target.
    if len(chosen) > 1 and held - target > target - (held - size[chosen[-1]]):
        held -= size[chosen.pop()]
    if len(chosen) == len(dates):
        sys.exit(f"--incremental-share {share}: that would hold back every date")
    chosen.reverse()
    plan = HeldBack(
        lake=lake, aside=held_back_root(lake), share=share, dates=chosen,
        folders=[f for d in chosen for f in folders[d]],
        files=[f for d in chosen for f in files[d]],
        bytes=held, total_bytes=total, total_files=len(all_files))
    plan.rows = parquet_rows(plan.files)
    plan.total_rows = parquet_rows(all_files)
    return plan


def restore_leftovers(lake: Path) -> None:
    """Move back partitions a killed run left in <lake>.held-back/."""
    aside = held_back_root(lake)
    if not aside.is_dir():
        return
    leftovers = sorted(p.relative_to(aside) for p in aside.glob("raw/*/date=*") if p.is_dir())
    clashes = [rel for rel in leftovers
               if (lake / rel).exists() and any((lake / rel).iterdir())]
    if clashes:
        sys.exit(f"{aside} holds partitions that are also in {lake} (e.g. {clashes[0]}): "
                 f"sort them out by hand")
    with signals_deferred():
        for rel in leftovers:
            (lake / rel).parent.mkdir(parents=True, exist_ok=True)
            os.rename(aside / rel, lake / rel)
        remove_empty_folders(aside)
    if leftovers:
        log(f"moved {len(leftovers)} partition folders left in {aside} by an interrupted run "
            f"back into the lake")
    if aside.exists():
        log(f"warning: {aside} still holds files this harness did not put there")


def run_incremental(args, plan: HeldBack, workdir: Path) -> list[dict]:
    """Per run: `refresh --full` without the held-back days, then `refresh` with them."""
    runs = []
    for i in range(args.runs):
        log(f"run {i + 1}/{args.runs}: holding back {len(plan.folders)} partition folders "
            f"({len(plan.files)} files, dates {plan.dates[0]} to {plan.dates[-1]}) in {plan.aside}")
        try:
            plan.move_aside()
            log(f"run {i + 1}/{args.runs}: full refresh ({pct_label(plan.share, False)}) ...")
            full = run_panorama_refresh(args.panorama, args.lake, workdir, full=True,
                                        require_summary=False)
        finally:
            plan.move_back()
        log(f"  {full['wall_s']:.2f} s, peak RSS {mb(full['rss_peak_kb'])}: {full['line']}")
        log(f"run {i + 1}/{args.runs}: held-back folders moved back; incremental refresh "
            f"({pct_label(plan.share, True)}) ...")
        inc = run_panorama_refresh(args.panorama, args.lake, workdir, full=False,
                                   require_summary=False)
        log(f"  {inc['wall_s']:.2f} s, peak RSS {mb(inc['rss_peak_kb'])}: {inc['line']}")
        runs.append({"full": full, "incremental": inc})
    return runs


def pct_label(share: float, incremental: bool) -> str:
    """'+1%' for the incremental refresh, '99%' for the full one (share 0.01)."""
    pct = round(share * 100, 4)
    return f"+{pct:g}%" if incremental else f"{round(100 - pct, 4):g}%"


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------

def secs(value: float) -> str:
    return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"


def report(args, meta, pano_runs: list[dict], duck_runs: list[dict], idle_filtered: int | None,
           plan: HeldBack | None = None, inc_runs: list[dict] | None = None) -> str:
    p = pano_runs[-1]  # counts: identical from run to run
    d = duck_runs[-1] if duck_runs else None  # None with --skip-duckdb
    p_wall = median([r["wall_s"] for r in pano_runs])
    p_inner = median([r["seconds"] for r in pano_runs])
    graph_runs = [float(r["graph_seconds"]) for r in pano_runs if r.get("graph_seconds")]
    p_graph = median(graph_runs) if graph_runs else None
    resolve_runs = [float(r["resolve_seconds"]) for r in pano_runs if r.get("resolve_seconds")]
    p_resolve = median(resolve_runs) if resolve_runs else None
    uf_runs = [float(r["union_find_seconds"]) for r in pano_runs if r.get("union_find_seconds")]
    p_uf = median(uf_runs) if uf_runs else None
    p_rss = max(r["rss_peak_kb"] for r in pano_runs)
    if d is not None:
        d_build = median([r["build_s"] for r in duck_runs])
        d_prop = median([r["propagate_s"] for r in duck_runs])
        d_total = median([r["build_s"] + r["propagate_s"] for r in duck_runs])
        d_rss = max(r["rss_peak_kb"] for r in duck_runs)
        d_rss_base = min(r["rss_before_run_kb"] for r in duck_runs)
    runs_note = "" if args.runs == 1 else f" (median of {args.runs})"
    skipped = "(skipped: --skip-duckdb)"

    def same(a, b) -> str:
        return f"{a:,}" if a == b else f"{a:,} / {b:,}"

    engines = (f"DuckDB {d['duckdb_version']} (threads {d['threads']})" if d is not None
               else "DuckDB not run (--skip-duckdb)")
    lines = [
        f"# Identity resolution: Panorama vs warehouse-style label propagation (DuckDB), scale {meta['scale']}",
        "",
        (f"{meta['date']} · lake `{args.lake}` (scale {meta['scale']}, from {meta['scale_source']})"
         f" · {meta['cores']} cores ({meta['machine']}), load average {meta['load_before']} before"
         f" / {meta['load_after']} after · Panorama {meta['panorama_version']} **{args.label}**"
         f" (`{args.panorama}`) · {engines}"
         f" · {args.runs} run(s) per engine, page cache warmed first"),
        "",
        "| | Panorama (union-find) | DuckDB (min-label propagation) |",
        "| --- | ---: | ---: |",
        f"| scale | {meta['scale']} | {meta['scale']} |",
    ]
    if d is not None:
        lines += [
            f"| raw rows (identity source tables) | {p['raw_rows']:,} | {d['raw_rows']:,} |",
            f"| identifiers (incl. blocked) | {p['identifiers']:,} | {d['identifiers']:,} |",
            f"| links | {p['links']:,} | {d['links']:,} |",
            f"| components | {p['profiles']:,} profiles | {d['components']:,} |",
        ]
    else:
        lines += [
            f"| raw rows (identity source tables) | {p['raw_rows']:,} | {skipped} |",
            f"| identifiers (incl. blocked) | {p['identifiers']:,} | |",
            f"| links | {p['links']:,} | |",
            f"| components | {p['profiles']:,} profiles | |",
        ]
    lines.append(f"| `panorama refresh --full` (whole process), s{runs_note} "
                 f"| {secs(p_wall)} ({secs(p_inner)} as it reports) | |")
    if p_graph is None:
        lines.append("| identity graph only | (not reported by this binary) | |")
    else:
        duck_cell = f"{secs(d_total)} (edge list + propagation)" if d is not None else ""
        lines.append(f"| identity graph only (read, normalise, intern, union-find), s{runs_note} "
                     f"| {secs(p_graph)} | {duck_cell} |")
    if d is not None:
        lines += [
            (f"| ratio Panorama / DuckDB, identity graph only (below 1 = Panorama faster) "
             f"| {p_graph / d_total:.2f} | |" if p_graph else "| | | |"),
            f"| edge list (read, normalise, intern, star links), s{runs_note} | | {secs(d_build)} |",
            f"| label propagation, s{runs_note} | | {secs(d_prop)} "
            f"({d['passes']} passes, the last one finding no change"
            f"{'' if d['converged'] else '; NOT converged: --max-passes reached'}) |",
            *([f"| components from the links: ordering them and union-find with limits "
               f"/ label propagation on the built edge list, s{runs_note} "
               f"| {secs(p_uf)} | {secs(d_prop)} |",
               f"| ratio label propagation / union-find (how many times faster Panorama joins) "
               f"| {d_prop / max(p_uf, 0.001):.1f}× | |"] if p_uf is not None else []),
            *([f"| whole resolution (guards, union-find, stable ids and merge history), "
               f"s{runs_note} | {secs(p_resolve)} | |",
               f"| ratio label propagation / whole resolution "
               f"| {d_prop / max(p_resolve, 0.001):.1f}× | |"] if p_resolve is not None else []),
            f"| total, s{runs_note} | {secs(p_wall)} | {secs(d_total)} |",
            f"| ratio Panorama / DuckDB, total | {p_wall / d_total:.2f} | |",
            f"| ratio Panorama / DuckDB, propagation only | {p_wall / d_prop:.1f} | |",
            f"| peak RSS | {mb(p_rss)} (refresh process) "
            f"| {mb(d_rss)} (Python + DuckDB process; {mb(d_rss_base)} before the run) |",
        ]
    else:
        lines.append(f"| peak RSS | {mb(p_rss)} (refresh process) | |")
    if plan is not None and inc_runs:
        full_label, inc_label = pct_label(plan.share, False), pct_label(plan.share, True)
        f_wall = median([r["full"]["wall_s"] for r in inc_runs])
        i_wall = median([r["incremental"]["wall_s"] for r in inc_runs])
        f_rss = max(r["full"]["rss_peak_kb"] for r in inc_runs)
        i_rss = max(r["incremental"]["rss_peak_kb"] for r in inc_runs)
        lines += [
            f"| full refresh ({full_label}): `refresh --full` without the newest "
            f"{len(plan.dates)} day(s), s{runs_note} | {secs(f_wall)} | |",
            f"| incremental refresh ({inc_label}): `refresh` once they are back, s{runs_note} "
            f"| {secs(i_wall)} | |",
            f"| ratio incremental / full ({full_label}) (below 1 = incremental faster) "
            f"| {i_wall / f_wall:.2f} | |",
            f"| peak RSS, full refresh ({full_label}) / incremental refresh ({inc_label}) "
            f"| {mb(f_rss)} / {mb(i_rss)} | |",
        ]
    lines += ["", "Components check (differences come from Panorama's per-type limits and cardinality guard, "
              "which the SQL baseline does not apply):", ""]
    lines.append(
        f"- Panorama: {p['profiles']:,} components ('profiles' in the refresh line, before the "
        f"anonymous idle filter); {'?' if idle_filtered is None else f'{idle_filtered:,}'} "
        f"rows in cdp.profiles after the filter"
        + (" (as committed by the last refresh, the incremental one)" if inc_runs else "")
        + (f", i.e. {p['profiles'] - idle_filtered:,} idle anonymous-only profiles left out"
           if idle_filtered is not None and not inc_runs else "")
        + f"; {p['refused']:,} links refused by limits, {p['blocked']:,} values blocked or guarded.")
    if d is not None:
        lines += [
            f"- DuckDB: {d['components']:,} components ({d['components'] - p['profiles']:+,} vs Panorama, "
            f"{(d['components'] - p['profiles']) / max(p['profiles'], 1):+.2%}); "
            f"{d['blocked_identifiers']:,} blocked identifiers left out; largest component "
            f"{d['largest_component']:,} identifiers; {d['components_over_limits']:,} components hold more "
            f"than one customer_id or user_id (Panorama would refuse a link there); "
            f"{d['values_over_guard']:,} values have more than {MAX_DISTINCT_NEIGHBOURS} distinct "
            f"neighbours of one type (Panorama's guard would drop them).",
            f"- Identifiers {same(p['identifiers'], d['identifiers'])}, links {same(p['links'], d['links'])}, "
            f"raw rows {same(p['raw_rows'], d['raw_rows'])} (Panorama / DuckDB when they differ; "
            f"phones are normalised by libphonenumber in Panorama, by rule in SQL).",
            "",
            "DuckDB edge-list steps (last run): "
            + ", ".join(f"{k} {v:.2f} s" for k, v in d["build_steps_s"].items())
            + f"; labels changed per pass: {', '.join(f'{c:,}' for c in d['changes_per_pass'])}.",
        ]
    else:
        lines.append("- DuckDB: not run (--skip-duckdb).")
    if plan is not None and inc_runs:
        lines += ["", *incremental_notes(plan, inc_runs, p)]
    lines += [
        "",
        "Notes:",
        "",
        "- Panorama's time is the whole `panorama refresh --full` process: reading and normalising the raw "
        "identifiers, union-find with limits and guard, stable ids, writing identity_links, "
        "rejections, merges **and rebuilding cdp.profiles**; the DuckDB side only builds the "
        "edge list and the id → component mapping in memory. The comparison is conservative "
        "(it favours DuckDB).",
        "- The SQL baseline is the plain warehouse algorithm: same identifier types, sources, "
        "normalisation and blocked values as Panorama's defaults, one star of links per raw row; "
        "no per-type limits (max_per_profile), no cardinality guard, no stable profile ids.",
        "- Peak RSS: Panorama's is ru_maxrss from wait4() on the refresh process itself (no "
        "/usr/bin/time wrapper needed)"
        + (f"; DuckDB's is ru_maxrss of the child Python process that "
           f"ran it (interpreter and DuckDB library included; in-memory database, threads "
           f"{d['threads']})." if d is not None else "."),
    ]
    if args.label_note:
        lines.append(f"- {args.label_note}")
    if meta["load_before"] and float(meta["load_before"].split()[0]) > meta["cores"] * 0.5:
        lines.append(f"- The machine was busy (load average {meta['load_before']} on "
                     f"{meta['cores']} cores): times are noisy.")
    if args.runs > 1:
        lines.append("- Per run, Panorama s: " + ", ".join(secs(r["wall_s"]) for r in pano_runs)
                     + ("; DuckDB s: " + ", ".join(secs(r["build_s"] + r["propagate_s"])
                                                   for r in duck_runs) if d is not None else "")
                     + ".")
    lines += ["", f"Panorama's summary line (last run): `{p['line']}`"]
    if inc_runs:
        lines += [f"Full refresh ({pct_label(plan.share, False)}), last run: "
                  f"`{inc_runs[-1]['full']['line']}`",
                  f"Incremental refresh ({pct_label(plan.share, True)}), last run: "
                  f"`{inc_runs[-1]['incremental']['line']}`"]
    return "\n".join(lines) + "\n"


def incremental_notes(plan: HeldBack, inc_runs: list[dict], whole: dict) -> list[str]:
    """What was held back, and what each refresh of the incremental measurement read."""
    full_label, inc_label = pct_label(plan.share, False), pct_label(plan.share, True)
    rows = ("" if plan.rows is None or not plan.total_rows else
            f", {plan.rows:,} of {plan.total_rows:,} raw rows ({plan.rows / plan.total_rows:.2%})")
    lines = [
        f"Incremental refresh (--incremental-share {plan.share:g}):",
        "",
        f"- Held back: the newest {len(plan.dates)} date(s), {plan.dates[0]} to {plan.dates[-1]}, "
        f"of every raw table: {len(plan.folders)} partition folders, {len(plan.files):,} of "
        f"{plan.total_files:,} files, {plan.bytes / 1e6:,.1f} of {plan.total_bytes / 1e6:,.1f} MB "
        f"({plan.bytes / plan.total_bytes:.2%} of the raw bytes){rows}; moved to `{plan.aside}` "
        f"for the full refresh ({full_label}), then moved back with their modification time set "
        f"to now before the incremental refresh ({inc_label}).",
    ]

    def read(r: dict) -> str:
        if r.get("raw_files") is None:
            return "(summary line not recognised)"
        return f"{r['raw_rows']:,} raw rows from {r['raw_files']:,} files, {r['profiles']:,} profiles"

    for i, r in enumerate(inc_runs, 1):
        f, n = r["full"], r["incremental"]
        lines.append(
            f"- Run {i}: full ({full_label}) {secs(f['wall_s'])} s, {mb(f['rss_peak_kb'])}, "
            f"{read(f)}; incremental ({inc_label}) {secs(n['wall_s'])} s, {mb(n['rss_peak_kb'])}, "
            f"{read(n)}; ratio {n['wall_s'] / f['wall_s']:.2f}.")
    last = inc_runs[-1]["incremental"]
    if last.get("profiles") is not None:
        verdict = ("the same" if last["profiles"] == whole["profiles"] else
                   f"DIFFERENT ({last['profiles'] - whole['profiles']:+,})")
        lines.append(f"- Profiles after the incremental refresh: {last['profiles']:,}; after the "
                     f"whole-lake `refresh --full`: {whole['profiles']:,}: {verdict}.")
    if last.get("raw_files") is not None and last["raw_files"] > len(plan.files):
        lines.append(f"- The incremental refresh read {last['raw_files']:,} raw files, more than "
                     f"the {len(plan.files):,} that landed since the previous refresh: this "
                     f"binary does not refresh incrementally yet (a full refresh each time).")
    return lines


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Compare Panorama's identity resolution with SQL label propagation in DuckDB.")
    parser.add_argument("--lake", type=Path, required=True, help="lake folder (raw/<table>/...)")
    parser.add_argument("--scale", type=int, default=None,
                        help="generator scale: used to generate the lake if it has no raw/, "
                             "and in the report (default: from the lake's marker or folder name)")
    parser.add_argument("--seed", type=int, default=42, help="generator seed (default 42)")
    parser.add_argument("--panorama", type=Path, default=None,
                        help="panorama binary (default ${CARGO_TARGET_DIR:-target}/release/panorama)")
    parser.add_argument("--label", default=None,
                        help="how to name the build in the report (default: 'release build' or "
                             "'debug build' from the binary's path)")
    parser.add_argument("--runs", type=int, default=1, help="runs per engine (default 1)")
    parser.add_argument("--duckdb-threads", type=int, default=2, help="DuckDB threads (default 2)")
    parser.add_argument("--max-passes", type=int, default=1000,
                        help="stop label propagation after this many passes (default 1000)")
    parser.add_argument("--skip-duckdb", action="store_true",
                        help="do not run the DuckDB label propagation (Panorama's refreshes only)")
    parser.add_argument("--incremental-share", type=float, default=None, metavar="SHARE",
                        help="also measure an incremental refresh: hold back the newest days "
                             "holding about SHARE of the raw bytes (e.g. 0.01), `refresh --full` "
                             "without them, move them back, then `refresh` (default: off)")
    parser.add_argument("--out", type=Path, default=None,
                        help="markdown report (default benches/out/identity-scale<N>.md, with "
                             "-incremental and/or -skip-duckdb before .md when those are used)")
    parser.add_argument("--duckdb-only", action="store_true",
                        help="internal: run only the DuckDB side and print JSON")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.incremental_share is not None and not 0 < args.incremental_share < 1:
        parser.error("--incremental-share must be between 0 and 1 (e.g. 0.01 for 1%)")
    args.lake = args.lake.resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.duckdb_only:
        return duckdb_main(args.lake, args.duckdb_threads, args.max_passes)

    install_signal_handlers()
    args.panorama = (args.panorama or default_panorama()).resolve()
    require_binary(args.panorama)
    parts = args.panorama.parts
    build = "debug build" if "debug" in parts else "release build" if "release" in parts else "build"
    args.label_note = None
    if args.label is None:
        args.label = build
    if build == "debug build":
        args.label_note = ("Panorama is a DEBUG binary (dependencies optimised, Panorama's own code "
                           "not): its times are not representative of a release build.")
    restore_leftovers(args.lake)
    ensure_lake(args)
    scale, scale_source = lake_scale(args)
    suffix = (("-incremental" if args.incremental_share else "")
              + ("-skip-duckdb" if args.skip_duckdb else ""))
    args.out = (args.out or OUT_DIR / f"identity-scale{scale}{suffix}.md").resolve()

    meta = {
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "scale": scale,
        "scale_source": scale_source,
        "cores": os.cpu_count(),
        "machine": f"{platform.system()} {platform.machine()}",
        "panorama_version": panorama_version(args.panorama, env=panorama_env()),
        "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    plan = None
    if args.incremental_share is not None:
        plan = plan_held_back(args.lake, args.incremental_share)
        log(f"incremental measurement: holding back dates {plan.dates[0]} to {plan.dates[-1]} "
            f"({len(plan.files):,} files, {plan.bytes / plan.total_bytes:.2%} of the raw bytes)")
    tables = [table for table, _, _ in SOURCES]
    log(f"warmed the page cache with {warm_page_cache(args.lake, tables):,.1f} MB of raw Parquet")

    pano_runs, duck_runs, inc_runs = [], [], []
    with tempfile.TemporaryDirectory(prefix="identity-compare-") as tmp:
        for i in range(args.runs):
            log(f"run {i + 1}/{args.runs}: Panorama refresh --full ...")
            p = run_panorama_refresh(args.panorama, args.lake, Path(tmp))
            log(f"  {p['wall_s']:.2f} s, peak RSS {mb(p['rss_peak_kb'])}: {p['line']}")
            pano_runs.append(p)
            if args.skip_duckdb:
                continue
            log(f"run {i + 1}/{args.runs}: DuckDB label propagation ...")
            d = run_duckdb_child(args.lake, args.duckdb_threads, args.max_passes)
            log(f"  edge list {d['build_s']:.2f} s + propagation {d['propagate_s']:.2f} s "
                f"({d['passes']} passes), {d['components']:,} components, peak RSS {mb(d['rss_peak_kb'])}")
            duck_runs.append(d)
        if plan is not None:
            inc_runs = run_incremental(args, plan, Path(tmp))
    meta["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    idle_filtered = profiles_after_idle_filter(args.lake)

    markdown = report(args, meta, pano_runs, duck_runs, idle_filtered, plan, inc_runs)
    publish(markdown, args.out)
    return 0


if __name__ == "__main__":
    run(main)
