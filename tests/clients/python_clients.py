#!/usr/bin/env python3
"""Python clients (psycopg 3, pandas, SQLAlchemy) against a PostgreSQL-wire server.

    python_clients.py HOST PORT            behavioural checks; needs Panorama's sample data
    python_clients.py HOST PORT --golden   print the SQLAlchemy metadata as one JSON document

Connects as user `panorama` to database `panorama` (password from PGPASSWORD, if any).

Without --golden every check runs; the script prints one line per failed check,
naming it, and exits 1, or prints a one-line summary and exits 0.

With --golden it prints what SQLAlchemy's inspector (as Superset uses it on
first connect) reports for the schemas raw, cdp, system and analytics, so the
output for Panorama can be compared with the output for a real PostgreSQL
loaded with golden_schema.sql.
"""

import argparse
import datetime as dt
import faulthandler
import json
import os
import sys
import traceback
from decimal import Decimal

import pandas as pd
import psycopg
import sqlalchemy as sa

SCHEMAS = ["raw", "cdp", "system", "analytics"]
UTC = dt.timezone.utc

CHECKS = []


def check(fn):
    """Register a behavioural check; it takes a psycopg connection and asserts."""
    CHECKS.append(fn)
    return fn


def one(conn, query, params=None):
    """The single value of a single-row, single-column result."""
    rows = conn.execute(query, params).fetchall()
    assert len(rows) == 1 and len(rows[0]) == 1, f"expected one value, got {rows!r}"
    return rows[0][0]


def literal_count(conn, where):
    """count(*) of raw rows by a query with no parameters at all (simple protocol)."""
    with psycopg.ClientCursor(conn) as cur:
        cur.execute(f"SELECT count(*) FROM {where}")
        return cur.fetchone()[0]


# --- psycopg 3: server-side parameters (extended protocol, Bind with real values) ---


@check
def param_text(conn):
    email = one(conn, "SELECT email FROM raw.customers WHERE customer_id = %s", ("C0000000",))
    assert isinstance(email, str) and "@" in email, f"email of C0000000: {email!r}"
    count = one(conn, "SELECT count(*) FROM raw.customers WHERE customer_id = %s", ("C0000000",))
    assert count == 1, f"{count} customers C0000000"


@check
def param_int(conn):
    # psycopg 3 sends a small Python int as int2, a larger one as int4/int8.
    for n in (2, 40000, 3_000_000_000):
        got = one(conn, "SELECT count(*) FROM raw.orders WHERE item_count >= %s", (n,))
        literal = literal_count(conn, f"raw.orders WHERE item_count >= {n}")
        assert got == literal, f"item_count >= %s with {n}: {got} rows, {literal} with a literal"
    got = one(conn, "SELECT %s + 1", (41,))
    assert got == 42, f"SELECT 41 + 1 gave {got!r}"


@check
def param_float(conn):
    got = one(conn, "SELECT count(*) FROM raw.orders WHERE amount > %s", (100.5,))
    literal = literal_count(conn, "raw.orders WHERE amount > 100.5")
    assert got == literal, f"amount > %s with 100.5: {got} rows, {literal} with a literal"
    assert 0 < got < literal_count(conn, "raw.orders"), f"amount > 100.5: {got} rows, expected some, not all"
    got = one(conn, "SELECT %s * 2", (1.25,))
    assert got == 2.5, f"SELECT 1.25 * 2 gave {got!r}"


@check
def param_bool(conn):
    got = one(conn, "SELECT count(*) FROM raw.customers WHERE newsletter = %s", (True,))
    literal = literal_count(conn, "raw.customers WHERE newsletter = true")
    assert got == literal, f"newsletter = %s with True: {got} rows, {literal} with a literal"
    assert got > 0, "no customer has newsletter = true"


@check
def param_date(conn):
    day = dt.date(1960, 1, 1)
    got = one(conn, "SELECT count(*) FROM raw.customers WHERE birth_date < %s", (day,))
    literal = literal_count(conn, "raw.customers WHERE birth_date < DATE '1960-01-01'")
    assert got == literal, f"birth_date < %s with {day}: {got} rows, {literal} with a literal"
    assert got > 0, "no customer born before 1960"
    echoed = one(conn, "SELECT %s", (day,))
    assert echoed == day, f"a date parameter came back as {echoed!r}"


@check
def param_timestamptz(conn):
    since = one(conn, "SELECT min(ordered_at) FROM raw.orders") + dt.timedelta(days=30)
    got = one(conn, "SELECT count(*) FROM raw.orders WHERE ordered_at >= %s", (since,))
    literal = literal_count(conn, f"raw.orders WHERE ordered_at >= TIMESTAMPTZ '{since.isoformat()}'")
    assert got == literal, f"{got} != {literal}"
    moment = dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    echoed = one(conn, "SELECT %s", (moment,))
    assert echoed == moment, f"a timestamptz parameter came back as {echoed!r}"


@check
def param_text_list(conn):
    ids = ["C0000000", "C0000001", "nobody"]
    got = conn.execute(
        "SELECT customer_id FROM raw.customers WHERE customer_id = ANY(%s) ORDER BY customer_id",
        (ids,),
    ).fetchall()
    assert got == [("C0000000",), ("C0000001",)], f"customer_id = ANY(%s) with {ids}: {got}"


@check
def param_null(conn):
    for query, expected in [
        ("SELECT %s::text IS NULL", True),
        ("SELECT coalesce(%s::text, 'fallback')", "fallback"),
        ("SELECT count(*) FROM raw.customers WHERE email = %s", 0),
        ("SELECT %s", None),
    ]:
        got = one(conn, query, (None,))
        assert got == expected, f"{query} with None gave {got!r}, expected {expected!r}"


@check
def prepared_statement_reuse(conn):
    query = "SELECT email FROM raw.customers WHERE customer_id = %s"
    expected = {f"C000000{i}": one(conn, query, (f"C000000{i}",)) for i in range(10)}
    for customer_id, email in expected.items():
        got = conn.execute(query, (customer_id,), prepare=True).fetchone()[0]
        assert got == email, f"{customer_id}: {got!r} != {email!r}"


@check
def binary_results(conn):
    with conn.cursor(binary=True) as cur:
        cur.execute(
            "SELECT customer_id, birth_date, newsletter, created_at, 1::bigint, 2.5::float8"
            " FROM raw.customers WHERE customer_id = %s",
            ("C0000000",),
        )
        row = cur.fetchone()
    types = [type(v).__name__ for v in row]
    assert types == ["str", "date", "bool", "datetime", "int", "float"], f"binary row {row!r}"
    assert row[3].tzinfo is not None, f"binary timestamptz without a time zone: {row[3]!r}"
    with conn.cursor(binary=True) as cur:
        cur.execute(
            "SELECT emails, net_revenue, events FROM cdp.profiles"
            " WHERE net_revenue IS NOT NULL ORDER BY profile_id LIMIT 1"
        )
        emails, revenue, events = cur.fetchone()
    assert isinstance(emails, list) and all(isinstance(e, str) for e in emails), f"binary text[]: {emails!r}"
    assert isinstance(revenue, Decimal), f"binary numeric: {revenue!r}"
    assert isinstance(events, int), f"binary bigint: {events!r}"


@check
def text_result_types(conn):
    row = conn.execute(
        "SELECT profile_id, emails, first_seen, events, net_revenue, newsletter, birth_date"
        " FROM cdp.profiles WHERE net_revenue IS NOT NULL AND birth_date IS NOT NULL"
        " AND newsletter IS NOT NULL ORDER BY profile_id LIMIT 1"
    ).fetchone()
    types = [type(v).__name__ for v in row]
    assert types == ["str", "list", "datetime", "int", "Decimal", "bool", "date"], f"text row {row!r}"
    assert row[1] and all(isinstance(e, str) for e in row[1]), f"text text[]: {row[1]!r}"
    assert row[2].utcoffset() is not None, f"text timestamptz without a time zone: {row[2]!r}"
    count = one(conn, "SELECT count(*) FROM cdp.profiles")
    assert isinstance(count, int) and count > 0, f"count(*) of cdp.profiles: {count!r}"


@check
def nulls(conn):
    row = conn.execute(
        "SELECT NULL::text, NULL::bigint, NULL::timestamptz, NULL::text[], NULL::numeric"
    ).fetchone()
    assert row == (None, None, None, None, None), f"typed NULLs came back as {row!r}"
    revenue = conn.execute(
        "SELECT net_revenue FROM cdp.profiles WHERE net_revenue IS NULL LIMIT 1"
    ).fetchone()
    assert revenue == (None,), f"a NULL net_revenue came back as {revenue!r}"


@check
def empty_result(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT customer_id, birth_date FROM raw.customers WHERE customer_id = %s", ("nobody",))
        rows = cur.fetchall()
        assert rows == [], f"customer 'nobody': {rows!r}"
        names = [c.name for c in cur.description]
        assert names == ["customer_id", "birth_date"], f"columns of an empty result: {names}"


def assert_described(cursor, names):
    """psycopg learns a named cursor's columns by a Describe of its portal; FETCHing
    rows wider than that description crashes psycopg's C code, so check it first."""
    got = [c.name for c in cursor.description or []]
    assert got == names, f"Describe of the DECLAREd portal gave columns {got}, expected {names}"


@check
def server_side_cursor_generate_series(conn):
    with conn.transaction():
        with conn.cursor(name="big_series") as cur:
            cur.itersize = 10_000
            cur.execute("SELECT x FROM generate_series(1, 200000) AS t(x)")
            assert_described(cur, ["x"])
            count = total = 0
            for (x,) in cur:
                count += 1
                total += x
    assert count == 200_000, f"{count} rows of generate_series(1, 200000)"
    assert total == 200_000 * 200_001 // 2, f"sum of generate_series(1, 200000): {total}"


@check
def server_side_cursor_events(conn):
    events = one(conn, "SELECT count(*) FROM raw.events")
    with conn.transaction():
        with conn.cursor(name="big_events") as cur:
            cur.execute(
                "SELECT e.message_id, e.timestamp FROM raw.events e"
                " CROSS JOIN (VALUES (1), (2), (3), (4)) AS v(n)"
            )
            assert_described(cur, ["message_id", "timestamp"])
            count = 0
            while rows := cur.fetchmany(5_000):
                count += len(rows)
    assert count == 4 * events, f"{count} != 4 * {events}"


# --- pandas.read_sql over SQLAlchemy ---


def engine_url(host, port):
    password = os.environ.get("PGPASSWORD", "")
    return f"postgresql+psycopg://panorama:{password}@{host}:{port}/panorama"


PANDAS_QUERY = """
SELECT o.channel,
       count(*),
       sum(o.amount)::float8 AS revenue,
       max(o.ordered_at) AS last_order,
       count(DISTINCT c.customer_id) AS customers
FROM raw.orders o
JOIN raw.customers c ON c.customer_id = o.customer_id
GROUP BY o.channel
ORDER BY o.channel
"""


def check_pandas(engine):
    frame = pd.read_sql(PANDAS_QUERY, engine)
    columns = list(frame.columns)
    assert columns == ["channel", "count", "revenue", "last_order", "customers"], f"columns {columns}"
    dtypes = {name: str(dtype) for name, dtype in frame.dtypes.items()}
    # pandas 3 (requirements.txt) gives text the "str" dtype and keeps the
    # microsecond resolution of the datetimes it builds.
    expected = {
        "channel": "str",
        "count": "int64",
        "revenue": "float64",
        "last_order": "datetime64[us, UTC]",
        "customers": "int64",
    }
    assert dtypes == expected, f"dtypes {dtypes} != {expected}"
    assert len(frame) > 0 and (frame["count"] > 0).all(), f"orders by channel:\n{frame}"


# --- SQLAlchemy inspector, as Superset runs it on first connect ---


def inspect_metadata(engine):
    """Everything the inspector reports for SCHEMAS; raises on the first failing call."""
    inspector = sa.inspect(engine)
    schemas = sorted(s for s in inspector.get_schema_names() if s in SCHEMAS)
    metadata = {"schemas": schemas, "tables": {}, "views": {}, "columns": {}, "constraints": {}}
    for schema in schemas:
        tables = sorted(inspector.get_table_names(schema=schema))
        views = sorted(inspector.get_view_names(schema=schema))
        metadata["tables"][schema] = tables
        metadata["views"][schema] = views
        for table in tables + views:
            key = f"{schema}.{table}"
            metadata["columns"][key] = [
                {
                    "name": c["name"],
                    "type": str(c["type"]),
                    "nullable": c["nullable"],
                    "default": c["default"],
                }
                for c in inspector.get_columns(table, schema=schema)
            ]
        for table in tables:
            key = f"{schema}.{table}"
            metadata["constraints"][key] = {
                "pk": inspector.get_pk_constraint(table, schema=schema),
                "foreign_keys": inspector.get_foreign_keys(table, schema=schema),
                "indexes": inspector.get_indexes(table, schema=schema),
                "unique": inspector.get_unique_constraints(table, schema=schema),
                "comment": inspector.get_table_comment(table, schema=schema),
            }
    return metadata


def check_inspector(engine):
    metadata = inspect_metadata(engine)
    assert metadata["schemas"] == sorted(SCHEMAS), f"schemas {metadata['schemas']}"
    assert "customers" in metadata["tables"]["raw"], f"tables of raw: {metadata['tables']['raw']}"
    assert "profiles" in metadata["tables"]["cdp"], f"tables of cdp: {metadata['tables']['cdp']}"
    assert "rfm" in metadata["views"]["analytics"], f"views of analytics: {metadata['views']['analytics']}"
    profiles = {c["name"]: c for c in metadata["columns"]["cdp.profiles"]}
    for column, field, expected in [
        ("emails", "type", "ARRAY"),
        ("first_seen", "type", "TIMESTAMP"),
        ("profile_id", "nullable", False),
    ]:
        got = profiles[column][field]
        assert got == expected, f"cdp.profiles.{column} {field}: {got!r}, expected {expected!r}"
    for key, found in metadata["constraints"].items():
        keys = (found["pk"]["constrained_columns"], found["foreign_keys"], found["indexes"], found["unique"])
        assert keys == ([], [], [], []), f"{key}: primary key, foreign keys, indexes, unique: {keys}"


# --- driver ---


def run_checks(host, port):
    conninfo = psycopg.conninfo.make_conninfo(host=host, port=port, user="panorama", dbname="panorama")
    engine = sa.create_engine(engine_url(host, port))

    def on_new_connection(fn):
        with psycopg.connect(conninfo, autocommit=True) as conn:
            fn(conn)

    checks = [(f"psycopg.{fn.__name__}", lambda fn=fn: on_new_connection(fn)) for fn in CHECKS]
    checks += [
        ("pandas.read_sql", lambda: check_pandas(engine)),
        ("sqlalchemy.inspector", lambda: check_inspector(engine)),
    ]
    failures = 0
    for name, run in checks:
        try:
            run()
        except Exception as exc:  # noqa: BLE001 - report every check, then fail
            failures += 1
            detail = " ".join(str(exc).split()) or traceback.format_exception_only(exc)[-1].strip()
            print(f"FAIL {name}: {type(exc).__name__}: {detail}", flush=True)
    engine.dispose()
    print(f"python clients: {len(checks) - failures} passed, {failures} failed")
    return 1 if failures else 0


def main():
    # A crash in psycopg's C code (a malformed reply) still names the check.
    faulthandler.enable()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--golden", action="store_true", help="print the inspector's metadata as JSON")
    args = parser.parse_args()
    if args.golden:
        engine = sa.create_engine(engine_url(args.host, args.port))
        print(json.dumps(inspect_metadata(engine), indent=1, sort_keys=True))
        engine.dispose()
        return 0
    return run_checks(args.host, args.port)


if __name__ == "__main__":
    sys.exit(main())
