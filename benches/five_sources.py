#!/usr/bin/env python3
"""Five sources, ten million rows: Panorama against the DuckDB pipeline of
the public `sql-identity-resolution` project (anilkulkarni87), same data.

The project's generator (benchmarks/duckdb/idr_scale_test.py, --scale=2M
--seed=42: 2,000,000 rows in each of customer, transactions,
loyalty_accounts, web_events and store_visits) writes a DuckDB database;
its five source tables are exported to Parquet (one file each) beforehand.

Steps, in one run on the same machine:
  1. Panorama: a new, empty lake; `panorama ingest <table> <table>.parquet`
     for each table with benches/five_sources.toml (the five tables declared
     as sources of their own, email / phone / loyalty_id as identifier
     types), then `panorama refresh`; wall time and peak RSS of each
     process (/usr/bin/time), and the profiles the refresh reports;
  2. the peer: the command given with --peer (the project's
     sql/duckdb/core/idr_run.py --run-mode=FULL on its database, run from
     the project's folder), timed the same way; the edges and clusters it
     prints are quoted.
  3. with --peer-membership (the peer's idr_out.identity_resolved_membership
     exported to Parquet: table_id, record_key, resolved_id) and the
     `duckdb` module: every row's Panorama profile, read from
     `resolved.<table>` (COPY … TO Parquet), compared with the peer's
     cluster of the same row: the two partitions of the rows that have an
     identifier must be the same (as many peer clusters as profiles as
     distinct pairs), and each row without a profile must be alone in its
     peer cluster;
  4. a markdown table on stdout.

The two sides count differently: the peer's clusters are components of
entities (rows), rows without any identifier each a cluster of their own;
Panorama's profiles are components of identifiers; step 3 checks that
the two are the same partition of the rows that carry an identifier.

Usage:
  python3 benches/five_sources.py --data /var/tmp/sir/data \\
      --panorama target/release/panorama \\
      --peer-membership /var/tmp/sir/duckdb_membership.parquet \\
      --peer-dir /var/tmp/sir/repo \\
      --peer "/var/tmp/sir/venv/bin/python sql/duckdb/core/idr_run.py \\
              --db=/var/tmp/sir/scale_test_2M.duckdb --run-mode=FULL --max-iters=50"
"""

from __future__ import annotations

import argparse
import pathlib
import re
import shlex
import shutil
import subprocess
import tempfile

TABLES = ["customer", "transactions", "loyalty_accounts", "web_events", "store_visits"]
HERE = pathlib.Path(__file__).resolve().parent
# The peer's record key of each table's rows.
RECORD_KEYS = {
    "customer": "customer_id",
    "transactions": "order_id || '-' || line_id",
    "loyalty_accounts": "loyalty_account_id",
    "web_events": "event_id",
    "store_visits": "visit_id",
}


def timed(cmd: list[str], cwd: pathlib.Path) -> tuple[float, float, str]:
    """Run `cmd`; (wall seconds, peak RSS GiB, its stdout and stderr)."""
    out = subprocess.run(
        ["/usr/bin/time", "-f", "@@ %e %M"] + cmd,
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    text = out.stdout + out.stderr
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{text}")
    wall, rss = re.findall(r"@@ ([\d.]+) (\d+)", text)[-1]
    return float(wall), int(rss) / 1024 / 1024, text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, type=pathlib.Path)
    ap.add_argument("--panorama", required=True, type=pathlib.Path)
    ap.add_argument("--peer", help="the peer's command line (run after Panorama)")
    ap.add_argument("--peer-dir", type=pathlib.Path, default=pathlib.Path("."))
    ap.add_argument("--peer-membership", type=pathlib.Path)
    args = ap.parse_args()

    work = pathlib.Path(tempfile.mkdtemp(prefix="five-sources-"))
    shutil.copy(HERE / "five_sources.toml", work / "panorama.toml")
    panorama = str(args.panorama.resolve())
    rows = []
    ingest_wall, ingest_rss = 0.0, 0.0
    for table in TABLES:
        wall, rss, text = timed(
            [panorama, "ingest", table, str(args.data / f"{table}.parquet"), "--lake", "lake"],
            work,
        )
        if " 0 rejected" not in text:
            raise SystemExit(f"rows of {table} were rejected:\n{text}")
        ingest_wall += wall
        ingest_rss = max(ingest_rss, rss)
    wall, refresh_rss, text = timed([panorama, "refresh", "--lake", "lake"], work)
    profiles = re.search(r"→ (\d+) profiles", text).group(1)
    rows.append(
        ("Panorama ingest (5 Parquet files → Delta)", ingest_wall, ingest_rss, "10,000,000 rows landed")
    )
    rows.append(("Panorama refresh (full)", wall, refresh_rss, f"{int(profiles):,} profiles"))
    rows.append(("Panorama ingest + refresh", ingest_wall + wall, max(ingest_rss, refresh_rss), ""))
    compared = compare(panorama, work, args.peer_membership) if args.peer_membership else None
    if args.peer:
        peer_wall, peer_rss, text = timed(shlex.split(args.peer), args.peer_dir)
        edges = re.search(r"Edges:\s+([\d,]+)", text)
        clusters = re.search(r"Clusters:\s+([\d,]+)", text)
        rows.append(
            (
                "DuckDB pipeline (idr_run.py, FULL)",
                peer_wall,
                peer_rss,
                f"{edges.group(1) if edges else '?'} edges, "
                f"{clusters.group(1) if clusters else '?'} clusters",
            )
        )
    print("| step | wall s | peak RSS GiB | result |")
    print("| --- | ---: | ---: | --- |")
    for name, wall, rss, result in rows:
        print(f"| {name} | {wall:.1f} | {rss:.2f} | {result} |")
    if args.peer:
        total = ingest_wall + rows[1][1]
        print(f"\nratio (peer / Panorama ingest + refresh): {peer_wall / total:.1f}×")
    if compared:
        print("\nrow memberships against the peer's:")
        for name, value in compared.items():
            print(f"- {name}: {value:,}")
    shutil.rmtree(work, ignore_errors=True)


def compare(panorama: str, work: pathlib.Path, peer: pathlib.Path) -> dict[str, int]:
    """Each row's profile (resolved.<table>) against the peer's cluster."""
    import duckdb

    for table, key in RECORD_KEYS.items():
        out = work / f"profiles_{table}.parquet"
        sql = (
            f"COPY (SELECT '{table}' AS table_id, {key} AS record_key, profile_id "
            f"FROM resolved.{table}) TO '{out}' STORED AS PARQUET"
        )
        timed([panorama, "sql", sql, "--lake", "lake"], work)
    con = duckdb.connect()
    row = con.execute(
        f"""
        WITH ours AS (SELECT * FROM read_parquet('{work}/profiles_*.parquet')),
        theirs AS (
            SELECT table_id, record_key, resolved_id,
                   count(*) OVER (PARTITION BY resolved_id) AS cluster_rows
            FROM read_parquet('{peer}')),
        both_ AS (SELECT * FROM ours FULL JOIN theirs USING (table_id, record_key))
        SELECT
            count(*),
            count(*) FILTER (WHERE profile_id IS NULL AND resolved_id IS NOT NULL
                             AND cluster_rows = 1),
            count(*) FILTER (WHERE profile_id IS NULL AND (resolved_id IS NULL
                             OR cluster_rows > 1)),
            count(*) FILTER (WHERE resolved_id IS NULL),
            count(DISTINCT profile_id),
            count(DISTINCT resolved_id) FILTER (WHERE profile_id IS NOT NULL),
            count(DISTINCT (profile_id, resolved_id)) FILTER (WHERE profile_id IS NOT NULL)
        FROM both_
        """
    ).fetchone()
    names = [
        "rows",
        "rows without a profile, alone in their peer cluster",
        "rows without a profile the peer clusters with others (must be 0)",
        "rows the peer does not have (must be 0)",
        "profiles",
        "peer clusters of those rows",
        "distinct (profile, peer cluster) pairs (= both: the same partition)",
    ]
    return dict(zip(names, row))


if __name__ == "__main__":
    main()
