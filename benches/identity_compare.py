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

Note: every run of `panorama refresh` commits a new version of the cdp.*
views in the lake (as the command always does).

Usage:
  /var/tmp/panorama-bench-venv/bin/python benches/identity_compare.py \\
      --lake /var/tmp/lake-10 [--scale 10] [--panorama PATH] [--runs 1]

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
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "benches" / "out"
# Same marker as benches/compare.py: written once `panorama generate` finished.
MARKER = ".panorama-bench.json"

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
    r"(?: \(identity graph (?P<graph_seconds>[\d.]+) s, views (?P<views_seconds>[\d.]+) s\))?: "
    r"(?P<raw_rows>\d+) raw rows from (?P<raw_files>\d+) files, "
    r"(?P<identifiers>\d+) identifiers, (?P<links>\d+) links \S+ "
    r"(?P<profiles>\d+) profiles \((?P<new_profiles>\d+) new\), "
    r"(?P<merges>\d+) merges, (?P<splits>\d+) splits, "
    r"(?P<refused>\d+) links refused, (?P<blocked>\d+) values blocked"
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def parquet_files(lake: Path, table: str) -> list[Path]:
    return sorted((lake / "raw" / table).glob("*/*.parquet"))


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

def default_panorama() -> Path:
    target = os.environ.get("CARGO_TARGET_DIR")
    base = Path(target) if target else REPO / "target"
    return base / "release" / "panorama"


def panorama_env() -> dict:
    # The SQL mirrors the default identity rules: no configuration file.
    env = dict(os.environ)
    for name in ("PANORAMA_CONFIG", "PANORAMA_LAKE"):
        env.pop(name, None)
    return env


def run_panorama_refresh(binary: Path, lake: Path, workdir: Path) -> dict:
    """Run `panorama refresh`, timing it and taking its peak RSS with wait4."""
    command = [str(binary), "refresh", "--lake", str(lake)]
    log("$ " + " ".join(command))
    err_path = workdir / "refresh.stderr"
    with open(err_path, "wb") as err:
        started = time.perf_counter()
        # cwd: an empty folder, so no ./panorama.toml changes the rules.
        proc = subprocess.Popen(command, cwd=workdir, env=panorama_env(),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        # wait4 gives this very process's rusage (ru_maxrss in KiB on Linux).
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = err_path.read_text(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"panorama refresh failed with exit code {proc.returncode}:\n"
                           + "\n".join(text.splitlines()[-20:]))
    match = REFRESH_LINE.search(text)
    if not match:
        raise RuntimeError(f"no summary line in the output of panorama refresh:\n{text[-2000:]}")
    result = {
        k: (None if v is None else float(v) if k.endswith("seconds") else int(v))
        for k, v in match.groupdict().items()
    }
    result["wall_s"] = wall
    result["rss_peak_kb"] = usage.ru_maxrss
    result["line"] = match.group(0)
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


def panorama_version(binary: Path) -> str:
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                             timeout=60, env=panorama_env()).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return out.split()[-1] if out else "?"


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
    args.lake.mkdir(parents=True, exist_ok=True)
    command = [str(args.panorama), "generate", "--scale", str(args.scale),
               "--seed", str(args.seed), "--lake", str(args.lake)]
    log("$ " + " ".join(command))
    started = time.perf_counter()
    result = subprocess.run(command, env=panorama_env())
    if result.returncode != 0:
        sys.exit(f"panorama generate failed with exit code {result.returncode}")
    seconds = time.perf_counter() - started
    (args.lake / MARKER).write_text(json.dumps({
        "scale": args.scale,
        "seed": args.seed,
        "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(seconds, 1),
    }) + "\n")
    log(f"generated the lake in {seconds:.1f} s")


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


def warm_page_cache(lake: Path) -> float:
    """Read every raw file once, so neither engine pays for a cold cache."""
    total = 0
    for table, _, _ in SOURCES:
        for path in parquet_files(lake, table):
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    total += len(chunk)
    return total / 1e6


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------

def mb(kb: int | None) -> str:
    return "?" if kb is None else f"{kb / 1024:,.0f} MB"


def secs(value: float) -> str:
    return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"


def median(values: list[float]) -> float:
    return statistics.median(values)


def report(args, meta, pano_runs: list[dict], duck_runs: list[dict], idle_filtered: int | None) -> str:
    p, d = pano_runs[-1], duck_runs[-1]  # counts: identical from run to run
    p_wall = median([r["wall_s"] for r in pano_runs])
    p_inner = median([r["seconds"] for r in pano_runs])
    graph_runs = [float(r["graph_seconds"]) for r in pano_runs if r.get("graph_seconds")]
    p_graph = median(graph_runs) if graph_runs else None
    d_build = median([r["build_s"] for r in duck_runs])
    d_prop = median([r["propagate_s"] for r in duck_runs])
    d_total = median([r["build_s"] + r["propagate_s"] for r in duck_runs])
    p_rss = max(r["rss_peak_kb"] for r in pano_runs)
    d_rss = max(r["rss_peak_kb"] for r in duck_runs)
    d_rss_base = min(r["rss_before_run_kb"] for r in duck_runs)
    runs_note = "" if args.runs == 1 else f" (median of {args.runs})"

    def same(a, b) -> str:
        return f"{a:,}" if a == b else f"{a:,} / {b:,}"

    lines = [
        f"# Identity resolution: Panorama vs warehouse-style label propagation (DuckDB), scale {meta['scale']}",
        "",
        (f"{meta['date']} · lake `{args.lake}` (scale {meta['scale']}, from {meta['scale_source']})"
         f" · {meta['cores']} cores ({meta['machine']}), load average {meta['load_before']} before"
         f" / {meta['load_after']} after · Panorama {meta['panorama_version']} **{args.label}**"
         f" (`{args.panorama}`) · DuckDB {d['duckdb_version']} (threads {d['threads']})"
         f" · {args.runs} run(s) per engine, page cache warmed first"),
        "",
        "| | Panorama (union-find) | DuckDB (min-label propagation) |",
        "| --- | ---: | ---: |",
        f"| scale | {meta['scale']} | {meta['scale']} |",
        f"| raw rows (identity source tables) | {p['raw_rows']:,} | {d['raw_rows']:,} |",
        f"| identifiers (incl. blocked) | {p['identifiers']:,} | {d['identifiers']:,} |",
        f"| links | {p['links']:,} | {d['links']:,} |",
        f"| components | {p['profiles']:,} profiles | {d['components']:,} |",
        f"| `panorama refresh` (whole process), s{runs_note} "
        f"| {secs(p_wall)} ({secs(p_inner)} as it reports) | |",
        (f"| identity graph only (read, normalise, intern, union-find), s{runs_note} "
         f"| {secs(p_graph)} | {secs(d_total)} (edge list + propagation) |" if p_graph is not None else
         "| identity graph only | (not reported by this binary) | |"),
        (f"| ratio Panorama / DuckDB, identity graph only (below 1 = Panorama faster) "
         f"| {p_graph / d_total:.2f} | |" if p_graph else "| | | |"),
        f"| edge list (read, normalise, intern, star links), s{runs_note} | | {secs(d_build)} |",
        f"| label propagation, s{runs_note} | | {secs(d_prop)} "
        f"({d['passes']} passes, the last one finding no change"
        f"{'' if d['converged'] else '; NOT converged: --max-passes reached'}) |",
        f"| total, s{runs_note} | {secs(p_wall)} | {secs(d_total)} |",
        f"| ratio Panorama / DuckDB, total | {p_wall / d_total:.2f} | |",
        f"| ratio Panorama / DuckDB, propagation only | {p_wall / d_prop:.1f} | |",
        f"| peak RSS | {mb(p_rss)} (refresh process) "
        f"| {mb(d_rss)} (Python + DuckDB process; {mb(d_rss_base)} before the run) |",
        "",
        "Components check (differences come from Panorama's per-type limits and cardinality guard, "
        "which the SQL baseline does not apply):",
        "",
        f"- Panorama: {p['profiles']:,} components ('profiles' in the refresh line, before the "
        f"anonymous idle filter); {'?' if idle_filtered is None else f'{idle_filtered:,}'} "
        f"rows in cdp.profiles after the filter"
        + (f", i.e. {p['profiles'] - idle_filtered:,} idle anonymous-only profiles left out"
           if idle_filtered is not None else "")
        + f"; {p['refused']:,} links refused by limits, {p['blocked']:,} values blocked or guarded.",
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
        "",
        "Notes:",
        "",
        "- Panorama's time is the whole `panorama refresh` process: reading and normalising the raw "
        "identifiers, union-find with limits and guard, stable ids, writing identity_links, "
        "rejections, merges **and rebuilding cdp.profiles**; the DuckDB side only builds the "
        "edge list and the id → component mapping in memory. The comparison is conservative "
        "(it favours DuckDB).",
        "- The SQL baseline is the plain warehouse algorithm: same identifier types, sources, "
        "normalisation and blocked values as Panorama's defaults, one star of links per raw row; "
        "no per-type limits (max_per_profile), no cardinality guard, no stable profile ids.",
        "- Peak RSS: Panorama's is ru_maxrss from wait4() on the refresh process itself (no "
        "/usr/bin/time wrapper needed); DuckDB's is ru_maxrss of the child Python process that "
        "ran it (interpreter and DuckDB library included; in-memory database, threads "
        f"{d['threads']}).",
    ]
    if args.label_note:
        lines.append(f"- {args.label_note}")
    if meta["load_before"] and float(meta["load_before"].split()[0]) > meta["cores"] * 0.5:
        lines.append(f"- The machine was busy (load average {meta['load_before']} on "
                     f"{meta['cores']} cores): times are noisy.")
    if args.runs > 1:
        lines.append("- Per run, Panorama s: " + ", ".join(secs(r["wall_s"]) for r in pano_runs)
                     + "; DuckDB s: "
                     + ", ".join(secs(r["build_s"] + r["propagate_s"]) for r in duck_runs) + ".")
    lines += ["", f"Panorama's summary line (last run): `{p['line']}`"]
    return "\n".join(lines) + "\n"


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
    parser.add_argument("--out", type=Path, default=None,
                        help="markdown report (default benches/out/identity-scale<N>.md)")
    parser.add_argument("--duckdb-only", action="store_true",
                        help="internal: run only the DuckDB side and print JSON")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    args.lake = args.lake.resolve()
    return args


def _exit_on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.duckdb_only:
        return duckdb_main(args.lake, args.duckdb_threads, args.max_passes)

    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGHUP, _exit_on_signal)
    args.panorama = (args.panorama or default_panorama()).resolve()
    if not args.panorama.is_file() or not os.access(args.panorama, os.X_OK):
        sys.exit(f"no panorama binary at {args.panorama}: build it with `cargo build --release` "
                 f"or pass --panorama PATH")
    parts = args.panorama.parts
    build = "debug build" if "debug" in parts else "release build" if "release" in parts else "build"
    args.label_note = None
    if args.label is None:
        args.label = build
    if build == "debug build":
        args.label_note = ("Panorama is a DEBUG binary (dependencies optimised, Panorama's own code "
                           "not): its times are not representative of a release build.")
    ensure_lake(args)
    scale, scale_source = lake_scale(args)
    args.out = (args.out or OUT_DIR / f"identity-scale{scale}.md").resolve()

    meta = {
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "scale": scale,
        "scale_source": scale_source,
        "cores": os.cpu_count(),
        "machine": f"{platform.system()} {platform.machine()}",
        "panorama_version": panorama_version(args.panorama),
        "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    log(f"warmed the page cache with {warm_page_cache(args.lake):,.1f} MB of raw Parquet")

    pano_runs, duck_runs = [], []
    with tempfile.TemporaryDirectory(prefix="identity-compare-") as tmp:
        for i in range(args.runs):
            log(f"run {i + 1}/{args.runs}: Panorama refresh ...")
            p = run_panorama_refresh(args.panorama, args.lake, Path(tmp))
            log(f"  {p['wall_s']:.2f} s, peak RSS {mb(p['rss_peak_kb'])}: {p['line']}")
            pano_runs.append(p)
            log(f"run {i + 1}/{args.runs}: DuckDB label propagation ...")
            d = run_duckdb_child(args.lake, args.duckdb_threads, args.max_passes)
            log(f"  edge list {d['build_s']:.2f} s + propagation {d['propagate_s']:.2f} s "
                f"({d['passes']} passes), {d['components']:,} components, peak RSS {mb(d['rss_peak_kb'])}")
            duck_runs.append(d)
    meta["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    idle_filtered = profiles_after_idle_filter(args.lake)

    markdown = report(args, meta, pano_runs, duck_runs, idle_filtered)
    print(markdown)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown)
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as exc:
        sys.exit(f"error: {exc}")
    except KeyboardInterrupt:
        sys.exit(130)
