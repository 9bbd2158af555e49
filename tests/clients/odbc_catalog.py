#!/usr/bin/env python3
"""ODBC (pyodbc + psqlODBC, as Tableau and Excel use it) against a PostgreSQL-wire server.

    odbc_catalog.py HOST PORT            behavioural checks; needs Panorama's sample data
    odbc_catalog.py HOST PORT --golden   print SQLTables/SQLColumns rows as one JSON document

Connects as user `panorama` to database `panorama` through the psqlODBC Unicode
driver, loaded by path (no DSN or odbcinst.ini entry needed; PSQLODBC_DRIVER
overrides the path).

Without --golden every check runs; the script prints one line per failed check,
naming it, and exits 1, or prints a one-line summary and exits 0.

With --golden it prints the rows of SQLTables and SQLColumns (psqlODBC's own
catalog queries) for the schemas raw, cdp, system and analytics, less the
columns that hold OIDs, so the output for Panorama can be compared with the
output for a real PostgreSQL loaded with golden_schema.sql.
"""

import argparse
import datetime as dt
import json
import os
import sys
from decimal import Decimal

import pyodbc

SCHEMAS = ["raw", "cdp", "system", "analytics"]
DRIVER = os.environ.get("PSQLODBC_DRIVER", "/usr/lib/x86_64-linux-gnu/odbc/psqlodbcw.so")
# SQLColumns columns that hold server-assigned OIDs, which differ between servers.
OID_COLUMNS = {"table oid"}


def connect(host, port):
    password = os.environ.get("PGPASSWORD", "")
    return pyodbc.connect(
        f"Driver={DRIVER};Server={host};Port={port};Database=panorama;Uid=panorama;Pwd={password}",
        autocommit=True,
    )


def rows_as_dicts(cursor, drop=()):
    names = [d[0] for d in cursor.description]
    return [
        {n: v for n, v in zip(names, row) if n not in drop}
        for row in cursor.fetchall()
    ]


def catalog(conn):
    """SQLTables and SQLColumns rows for SCHEMAS, the way a BI tool lists them."""
    cur = conn.cursor()
    tables = {}
    columns = {}
    for schema in SCHEMAS:
        found = rows_as_dicts(cur.tables(schema=schema))
        tables[schema] = sorted(found, key=lambda r: r["table_name"])
        for table in tables[schema]:
            name = table["table_name"]
            columns[f"{schema}.{name}"] = rows_as_dicts(
                cur.columns(schema=schema, table=name), drop=OID_COLUMNS
            )
    return {"tables": tables, "columns": columns}


CHECKS = []


def check(fn):
    """Register a behavioural check; it takes a pyodbc connection and asserts."""
    CHECKS.append(fn)
    return fn


@check
def getinfo(conn):
    name = conn.getinfo(pyodbc.SQL_DBMS_NAME)
    version = conn.getinfo(pyodbc.SQL_DBMS_VER)
    assert name == "PostgreSQL", f"SQL_DBMS_NAME {name!r}"
    major = int(version.split(".")[0])
    assert major >= 12, f"SQL_DBMS_VER {version!r}, expected 12 or later"


@check
def tables(conn):
    cur = conn.cursor()
    kinds = {
        (schema, r.table_name): r.table_type
        for schema in ("raw", "analytics")
        for r in cur.tables(schema=schema).fetchall()
    }
    for relation, kind in [
        (("raw", "customers"), "TABLE"),
        (("raw", "orders"), "TABLE"),
        (("analytics", "rfm"), "VIEW"),
        (("analytics", "segment_membership"), "TABLE"),
    ]:
        got = kinds.get(relation)
        assert got == kind, f"SQLTables: {'.'.join(relation)} is {got!r}, expected {kind!r}"
    every = {(r.table_schem, r.table_name) for r in cur.tables(tableType="TABLE,VIEW").fetchall()}
    for relation in [("cdp", "profiles"), ("analytics", "rfm")]:
        assert relation in every, f"SQLTables(TABLE,VIEW) lacks {'.'.join(relation)}: {sorted(every)}"


@check
def columns(conn):
    cur = conn.cursor()
    found = {r.column_name: r for r in cur.columns(schema="cdp", table="profiles").fetchall()}
    first = list(found)[:4]
    assert first == ["profile_id", "customer_ids", "user_ids", "emails"], f"SQLColumns(cdp.profiles) starts {first}"
    for column, field, expected in [
        ("profile_id", "type_name", "text"),
        ("profile_id", "nullable", 0),
        ("emails", "type_name", "_text"),
        ("first_seen", "type_name", "timestamptz"),
        ("net_revenue", "type_name", "numeric"),
        ("net_revenue", "column_size", 18),
        ("net_revenue", "decimal_digits", 2),
        ("events", "type_name", "int8"),
    ]:
        got = getattr(found[column], field)
        assert got == expected, f"SQLColumns: cdp.profiles.{column} {field} {got!r}, expected {expected!r}"


@check
def parameterised_query(conn):
    cur = conn.cursor()
    email = cur.execute("SELECT email FROM raw.customers WHERE customer_id = ?", "C0000000").fetchval()
    assert isinstance(email, str) and "@" in email, f"email of C0000000: {email!r}"
    count = cur.execute("SELECT count(*) FROM raw.orders WHERE item_count >= ?", 2).fetchval()
    literal = cur.execute("SELECT count(*) FROM raw.orders WHERE item_count >= 2").fetchval()
    assert count == literal and count > 0, f"item_count >= ? with 2: {count} rows, {literal} with a literal"


@check
def array_timestamptz_numeric(conn):
    cur = conn.cursor()
    emails, first_seen, revenue = cur.execute(
        "SELECT emails, first_seen, net_revenue FROM cdp.profiles"
        " WHERE net_revenue IS NOT NULL ORDER BY profile_id LIMIT 1"
    ).fetchone()
    # psqlODBC hands arrays over in their text form.
    assert isinstance(emails, str) and emails.startswith("{") and "@" in emails, f"text[] as {emails!r}"
    assert isinstance(first_seen, dt.datetime), f"timestamptz as {first_seen!r}"
    assert isinstance(revenue, Decimal) and revenue > 0, f"numeric as {revenue!r}"


def run_checks(host, port):
    failures = []
    for fn in CHECKS:
        try:
            with connect(host, port) as conn:
                fn(conn)
        except Exception as exc:  # noqa: BLE001 - report every check, then fail
            failures.append((fn.__name__, exc))
    for name, exc in failures:
        print(f"FAIL odbc.{name}: {type(exc).__name__}: {' '.join(str(exc).split())}")
    print(f"odbc clients: {len(CHECKS) - len(failures)} passed, {len(failures)} failed")
    return 1 if failures else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--golden", action="store_true", help="print SQLTables/SQLColumns rows as JSON")
    args = parser.parse_args()
    if args.golden:
        with connect(args.host, args.port) as conn:
            print(json.dumps(catalog(conn), indent=1, sort_keys=True, default=str))
        return 0
    return run_checks(args.host, args.port)


if __name__ == "__main__":
    sys.exit(main())
