"""Read every raw table of a Panorama lake with other engines' Delta readers
and print what each sees, as JSON, for tests/delta.rs to compare with
Panorama's own answers.

Usage: delta_readers.py <lake folder> <table:key column> ...

For each table and engine: the row count, the rows per `date` partition,
and a SHA-256 of the sorted values of the key column (so the same rows,
not only as many). Engines: the `deltalake` package (delta-rs's Python
binding, via pyarrow), polars (`scan_delta`) and DuckDB with its delta
extension (`delta_scan`, loaded from the duckdb-extension-delta wheel).
"""

import glob
import hashlib
import json
import os
import sys

import duckdb
import duckdb_extension_delta
import polars as pl
from deltalake import DeltaTable


def fingerprint(values):
    digest = hashlib.sha256()
    for value in sorted("" if v is None else str(v) for v in values):
        digest.update(value.encode())
        digest.update(b"\n")
    return digest.hexdigest()


def summary(keys, dates):
    per_day = {}
    for day in dates:
        per_day[str(day)] = per_day.get(str(day), 0) + 1
    return {"rows": len(keys), "per_day": per_day, "keys": fingerprint(keys)}


def with_deltalake(path, key):
    table = DeltaTable(path).to_pyarrow_table(columns=[key, "date"])
    return summary(table.column(key).to_pylist(), table.column("date").to_pylist())


def with_polars(path, key):
    frame = pl.scan_delta(path).select([key, "date"]).collect()
    return summary(frame[key].to_list(), frame["date"].to_list())


def with_duckdb(connection, path, key):
    rows = connection.execute(
        f'SELECT "{key}", "date" FROM delta_scan(?)', [path]
    ).fetchall()
    return summary([r[0] for r in rows], [r[1] for r in rows])


def main():
    lake = sys.argv[1]
    extension = glob.glob(
        os.path.join(os.path.dirname(duckdb_extension_delta.__file__), "extensions", "*", "delta.duckdb_extension")
    )[0]
    connection = duckdb.connect()
    connection.execute(f"LOAD '{extension}'")
    out = {}
    for spec in sys.argv[2:]:
        table, key = spec.split(":")
        path = os.path.join(lake, "raw", table)
        out[table] = {
            "deltalake": with_deltalake(path, key),
            "polars": with_polars(path, key),
            "duckdb": with_duckdb(connection, path, key),
        }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
