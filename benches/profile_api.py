"""The profile API for real time against PostgreSQL's primary-key lookup.

    /var/tmp/bench-venv/bin/python benches/profile_api.py --lake LAKE \
        [--panorama target/release/panorama] [--seconds 20] [--clients 1,16]

LAKE is a refreshed lake (for instance the one `erasure_compare.py --keep`
or `compare.py` generated at scale 1,000); `serve` runs on it with the
collector off (it only reads, but for the interrupted-work records every
start writes). Both sides are measured in the same run:

- Panorama: `GET /api/v1/profiles/email/<value>` over HTTP/1.1 keep-alive
  from asyncio clients (one connection each), cycling over a fixed sample
  of emails from `cdp.identity_links`; p50, p99 and requests/s at each
  client count, after one call that loads the in-memory copy (its time and
  the server's RSS are reported). Also the console's person page
  (`/person/<id>`, server-rendered, all its SQL) p50/p95, sequentially.
- PostgreSQL (the physical anchor, no HTTP): the same `cdp.profiles` rows
  copied into a private cluster (`COPY ... TO STDOUT` from Panorama, every
  column as text, an integer primary key), `pgbench -M prepared` selecting
  one random row by its key, per-transaction logs for p50/p99.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

import harness
from harness import log
from pg_compare import Postgres, free_port, run_pgbench


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lake", type=Path, required=True)
    p.add_argument("--panorama", type=Path, default=harness.default_panorama())
    p.add_argument("--pg-bin", type=Path, default=Path("/usr/lib/postgresql/15/bin"))
    p.add_argument("--seconds", type=int, default=20)
    p.add_argument("--clients", default="1,16")
    p.add_argument("--keys", type=int, default=20000, help="emails sampled")
    p.add_argument("--pages", type=int, default=100, help="person pages timed")
    p.add_argument("--out", type=Path, default=harness.OUT_DIR / "profile_api.md")
    return p.parse_args(argv)


def start_panorama(args, work: Path):
    taken: set[int] = set()
    pg_port = free_port(taken)
    taken.add(pg_port)
    console_port = free_port(taken)
    command = [str(args.panorama), "--lake", str(args.lake), "serve", "--no-seed", "--no-collect",
               "--listen", f"127.0.0.1:{pg_port}", "--console-listen", f"127.0.0.1:{console_port}"]
    log("$ " + " ".join(command))
    stderr = open(work / "serve.log", "w")
    child = subprocess.Popen(command, cwd=work, stdout=subprocess.DEVNULL, stderr=stderr,
                             env={**os.environ, "RUST_LOG": "info"})
    deadline = time.time() + 600
    while time.time() < deadline:
        text = (work / "serve.log").read_text()
        if "console ready" in text:
            return child, pg_port, console_port
        if child.poll() is not None:
            sys.exit(f"serve stopped:\n{text[-3000:]}")
        time.sleep(0.5)
    sys.exit("serve did not become ready")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def one_client(port: int, paths: list[bytes], until: float, latencies: list[int]):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = 0
    while time.perf_counter() < until:
        path = paths[i % len(paths)]
        i += 1
        started = time.perf_counter_ns()
        writer.write(b"GET " + path + b" HTTP/1.1\r\nHost: bench\r\n\r\n")
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        body = await reader.readexactly(length)
        latencies.append(time.perf_counter_ns() - started)
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"{path!r}: {head[:40]!r} {body[:200]!r}")
    writer.close()


def percentile(values: list[int], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))] / 1e6


async def load(port: int, paths: list[bytes], clients: int, seconds: int) -> dict:
    latencies: list[int] = []
    until = time.perf_counter() + seconds
    shares = [paths[i::clients] for i in range(clients)]
    started = time.perf_counter()
    await asyncio.gather(*(one_client(port, s, until, latencies) for s in shares))
    elapsed = time.perf_counter() - started
    return {"requests": len(latencies), "rps": len(latencies) / elapsed,
            "p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99)}


def person_pages_or_api(port: int, path: str) -> None:
    """One GET of `path`, which must answer 200."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    if response.status != 200:
        raise RuntimeError(f"{path}: {response.status} {body[:200]!r}")


def person_pages(port: int, ids: list[str], n: int) -> dict:
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port)
    times = []
    for profile_id in ids[:n]:
        started = time.perf_counter_ns()
        conn.request("GET", f"/person/{profile_id}")
        response = conn.getresponse()
        response.read()
        times.append(time.perf_counter_ns() - started)
        if response.status != 200:
            raise RuntimeError(f"/person/{profile_id}: {response.status}")
    return {"pages": len(times), "p50": percentile(times, 0.5), "p95": percentile(times, 0.95)}


def main(argv=None) -> int:
    args = parse_args(argv)
    harness.require_binary(args.panorama)
    clients = [int(c) for c in args.clients.split(",")]
    work = Path(tempfile.mkdtemp(prefix="profile-api-"))
    work.chmod(0o755)  # the PostgreSQL cluster inside belongs to `postgres`
    child, pg_port, console_port = start_panorama(args, work)
    results = {}
    try:
        pano = f"host=127.0.0.1 port={pg_port} user=panorama dbname=panorama sslmode=disable"
        with psycopg.connect(pano, autocommit=True) as conn:
            profiles = conn.execute("SELECT count(*) FROM cdp.profiles").fetchone()[0]
            rows = conn.execute(
                "SELECT id_value, profile_id FROM cdp.identity_links WHERE id_type = 'email'"
            ).fetchall()
        step = max(1, len(rows) // args.keys)
        sample = rows[::step][: args.keys]
        paths = [f"/api/v1/profiles/email/{email}".encode() for email, _ in sample]
        started = time.perf_counter()
        person_pages_or_api(console_port, paths[0].decode())
        first = time.perf_counter() - started
        results["first_call_s"] = first
        results["rss_mb"] = rss_mb(child.pid)
        log(f"first call (loads the copy): {first:.1f} s, serve RSS {results['rss_mb']:,.0f} MB")
        for c in clients:
            results[f"api_{c}"] = r = asyncio.run(load(console_port, paths, c, args.seconds))
            log(f"API, {c} clients: p50 {r['p50']:.3f} ms, p99 {r['p99']:.3f} ms, {r['rps']:,.0f}/s")
        if args.pages:
            results["page"] = person_pages(console_port, [p for _, p in sample], args.pages)
            log(f"person page: p50 {results['page']['p50']:.1f} ms, "
                f"p95 {results['page']['p95']:.1f} ms")
        csv = work / "profiles.csv"
        with open(csv, "w") as out:
            subprocess.run(["psql", "-X", "-h", "127.0.0.1", "-p", str(pg_port), "-U", "panorama",
                            "panorama", "-c",
                            "COPY (SELECT * FROM cdp.profiles) TO STDOUT WITH (FORMAT csv, HEADER true)"],
                           stdout=out, check=True)
    finally:
        child.terminate()
        child.wait(timeout=60)
    header = csv.open().readline().strip().split(",")
    pg = Postgres(args.pg_bin, work / "pg", free_port({pg_port, console_port}))
    try:
        pg.start()
        columns = ", ".join(f'"{c}" text' for c in header)
        with psycopg.connect(pg.conninfo(), autocommit=True) as conn:
            conn.execute(f"CREATE TABLE profiles ({columns})")
        subprocess.run(["psql", "-X", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "panorama",
                        "panorama", "-v", "ON_ERROR_STOP=1", "-c",
                        f"\\copy profiles FROM '{csv}' WITH (FORMAT csv, HEADER true)"], check=True)
        with psycopg.connect(pg.conninfo(), autocommit=True) as conn:
            conn.execute("ALTER TABLE profiles ADD COLUMN n bigserial PRIMARY KEY")
            conn.execute("VACUUM ANALYZE profiles")
        script = work / "lookup.sql"
        script.write_text(f"\\set n random(1, {profiles})\nSELECT * FROM profiles WHERE n = :n;\n")
        for c in clients:
            bench = run_pgbench(pg.port, script, "prepared", c, min(c, 2), args.seconds, work, f"pg{c}")
            results[f"pg_{c}"] = {"p50": bench.p50_ms, "p99": bench.p99_ms, "rps": bench.tps}
    finally:
        pg.stop()
    lines = [f"Profile API at {profiles:,} profiles ({args.lake}), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
             f"{harness.panorama_version(args.panorama)}",
             "",
             f"First call (loads the in-memory copy): {results['first_call_s']:.1f} s; serve RSS after it "
             f"{results['rss_mb']:,.0f} MB."
             + (f" Person page (server time, {results['page']['pages']} pages): "
                f"p50 {results['page']['p50']:.1f} ms, p95 {results['page']['p95']:.1f} ms."
                if "page" in results else ""),
             "",
             "| clients | API p50 ms | API p99 ms | API req/s | PostgreSQL p50 ms | PostgreSQL p99 ms | PostgreSQL tps | p50 ratio |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for c in clients:
        a, p = results[f"api_{c}"], results[f"pg_{c}"]
        ratio = a["p50"] / p["p50"] if p["p50"] else float("nan")
        lines.append(f"| {c} | {a['p50']:.3f} | {a['p99']:.3f} | {a['rps']:,.0f} | "
                     f"{p['p50'] or 0:.3f} | {p['p99'] or 0:.3f} | {p['rps'] or 0:,.0f} | {ratio:.2f} |")
    harness.publish("\n".join(lines) + "\n", args.out)
    return 0


if __name__ == "__main__":
    harness.run(main)
