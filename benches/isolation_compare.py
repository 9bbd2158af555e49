#!/usr/bin/env python3
"""Does one heavy query stall everyone else? Panorama vs PostgreSQL, same run.

For each server (a private PostgreSQL and `panorama serve`, both on
loopback) and each phase:

  baseline  --clients connections (default 32, one thread each) send
            `SELECT 1` in a closed loop with --think-ms (10 ms) between
            queries, for --seconds (20); one more thread opens a new
            connection every --connect-interval-ms (250 ms): connect,
            `SELECT 1`, close, timed as a whole;
  heavy     the same, while one more connection H runs HEAVY_SQL back to
            back (`SET statement_timeout = '60s'` on it), from 0.5 s before
            the window until its end, when its query in flight is cancelled.

Reported per server and phase: `SELECT 1` latency p50/p90/p99/max (ms,
nearest rank, every query started in the window) and how many completed,
new-connection latency p50/p99, heavy queries completed in the window (and
their median time); then Panorama/PostgreSQL ratios and heavy/baseline
ratios. A markdown report is printed (ready for benches/README.md, with the
command line, the date and which binary) and written to --out.

Steps:
  1. start `panorama serve --no-collect` on --lake (default: an empty lake in
     the temporary folder, which `serve` seeds with the bundled sample and
     whose profiles it builds before listening), its working folder the
     temporary folder (so no ./panorama.toml applies: no users, defaults);
  2. start a private PostgreSQL (initdb in the temporary folder, as the
     `postgres` user when run as root, loopback only, initdb's default
     settings; as pg_compare.py does);
  3. for PostgreSQL then Panorama: baseline, then heavy;
  4. stop both servers, remove the temporary folder, print the report.

Usage:
  python3 -m venv /var/tmp/panorama-bench-venv
  /var/tmp/panorama-bench-venv/bin/pip install -r benches/requirements.txt
  /var/tmp/panorama-bench-venv/bin/python benches/isolation_compare.py \\
      --panorama target/release/panorama

Ports: the first free ones of 55600-55699, loopback only. Both servers are
stopped at the end, even on error or Ctrl-C, and the temporary folder is
removed unless --keep. Before each phase it waits while cargo/rustc or
another benchmark of benches/ runs, and measures the phase again if one
started meanwhile (--no-wait: do not).
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import (OUT_DIR, REPO, install_signal_handlers, log, panorama_version, publish,
                    require_binary, run)

try:
    import psycopg
except ImportError as exc:  # pragma: no cover - only a hint for the user
    sys.exit(
        f"missing Python package ({exc.name}); install the pinned ones with:\n"
        f"  pip install -r {Path(__file__).resolve().parent / 'requirements.txt'}"
    )

from compare import Server  # noqa: E402
from ingest_compare import machine, measure_quietly  # noqa: E402
from pg_compare import Postgres, free_port, ratio  # noqa: E402

HEAVY_SQL = ("SELECT count(*), array_length(array_agg(a.x * b.x), 1) "
             "FROM generate_series(1, 4000) a(x) CROSS JOIN generate_series(1, 4000) b(x)")
HEAVY_EXPECTED = (16_000_000, 16_000_000)
HEAVY_TIMEOUT = "60s"
HEAVY_TIMEOUT_S = 60
# The heavy loop starts this long before the window, so the whole window
# runs with the heavy query executing.
HEAVY_LEAD_S = 0.5
# Quiet time after each phase (the cancelled heavy query winds down).
SETTLE_S = 1.0
PHASES = ["baseline", "heavy"]
SERVERS = ["PostgreSQL", "Panorama"]


# --------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------

def panorama_candidates() -> list[tuple[Path, str]]:
    """Where the binary is looked for, in order, with the kind of build."""
    target = os.environ.get("CARGO_TARGET_DIR")
    found = [(REPO / "target" / "release" / "panorama", "release")]
    if target:
        found += [(Path(target) / "release" / "panorama", "release"),
                  (Path(target) / "debug" / "panorama", "debug")]
    found += [(REPO / "target" / "debug" / "panorama", "debug")]
    return found


def build_kind(binary: Path) -> str:
    parts = binary.parts
    if "release" in parts:
        return "release"
    if "debug" in parts:
        return "debug"
    return "unknown"


def default_pg_bin() -> Path | None:
    """The newest /usr/lib/postgresql/<major>/bin with initdb."""
    dirs = [Path(d) for d in glob.glob("/usr/lib/postgresql/*/bin") if Path(d, "initdb").exists()]

    def major(path: Path) -> float:
        try:
            return float(path.parent.name)
        except ValueError:
            return -1.0

    return max(dirs, key=major) if dirs else None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Does one heavy query stall the other connections? `SELECT 1` and "
                    "new-connection latency from many clients, with and without a heavy "
                    "query running, Panorama vs PostgreSQL.",
    )
    parser.add_argument("--panorama", type=Path, default=None,
                        help="panorama binary (default target/release/panorama; if absent "
                             "$CARGO_TARGET_DIR/release/panorama, then "
                             "$CARGO_TARGET_DIR/debug/panorama, then target/debug/panorama; "
                             "the report says which)")
    parser.add_argument("--lake", type=Path, default=None,
                        help="Panorama lake (default: an empty one in the temporary folder, "
                             "which `panorama serve` seeds with the bundled sample); a lake "
                             "given here is used as it is and never deleted")
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="measuring window of each phase, seconds (default 20)")
    parser.add_argument("--clients", type=int, default=32,
                        help="connections sending `SELECT 1` (default 32)")
    parser.add_argument("--think-ms", type=float, default=10.0,
                        help="pause of each client between two `SELECT 1` (default 10)")
    parser.add_argument("--connect-interval-ms", type=float, default=250.0,
                        help="a new connection (connect, `SELECT 1`, close) every this many "
                             "ms (default 250)")
    parser.add_argument("--pg-bin-dir", type=Path, default=None,
                        help="PostgreSQL server binaries (default: the newest "
                             "/usr/lib/postgresql/*/bin)")
    parser.add_argument("--skip-postgres", action="store_true",
                        help="measure Panorama only (no ratios)")
    parser.add_argument("--startup-timeout", type=float, default=600.0,
                        help="seconds `panorama serve` may take to accept connections "
                             "(seeding and the first profile build included; default 600)")
    parser.add_argument("--work-dir", type=Path, default=Path("/var/tmp"),
                        help="where the temporary folder (lake, PostgreSQL cluster, server "
                             "log) goes (default /var/tmp)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary folder (its path is printed)")
    parser.add_argument("--no-wait", action="store_true",
                        help="do not wait for other benchmarks of benches/ (or cargo, rustc) "
                             "to finish")
    parser.add_argument("--out", type=Path, default=None,
                        help="markdown report (default benches/out/isolation-compare.md)")
    args = parser.parse_args(argv)
    if args.seconds <= 0:
        parser.error("--seconds must be positive")
    if args.clients < 1:
        parser.error("--clients must be at least 1")
    if args.think_ms < 0 or args.connect_interval_ms <= 0:
        parser.error("--think-ms must be >= 0 and --connect-interval-ms > 0")
    if args.panorama is None:
        candidates = panorama_candidates()
        chosen = next(((p, k) for p, k in candidates if p.is_file()), candidates[0])
        args.panorama = chosen[0]
        tried = ", ".join(str(p) for p, _ in candidates)
        if not chosen[0].is_file():
            parser.error(f"no panorama binary at any of {tried}: build it with `cargo build "
                         f"--release` or pass --panorama PATH")
        args.panorama_choice = f"default: the first of {tried} that exists"
    else:
        args.panorama_choice = "--panorama"
    args.panorama = args.panorama.resolve()
    args.build = build_kind(args.panorama)
    if args.lake is not None:
        args.lake = args.lake.resolve()
    if not args.skip_postgres:
        args.pg_bin_dir = args.pg_bin_dir or default_pg_bin()
        if args.pg_bin_dir is None or not (args.pg_bin_dir / "initdb").exists():
            parser.error(f"no initdb in {args.pg_bin_dir or '/usr/lib/postgresql/*/bin'} "
                         f"(apt-get install postgresql, or --pg-bin-dir, or --skip-postgres)")
        args.pg_bin_dir = args.pg_bin_dir.resolve()
    args.out = (args.out or OUT_DIR / "isolation-compare.md").resolve()
    return args


def conninfo(port: int, application_name: str = "panorama-isolation") -> str:
    return (f"host=127.0.0.1 port={port} user=panorama dbname=panorama sslmode=disable "
            f"connect_timeout=30 application_name={application_name}")


def connect(port: int, name: str = "panorama-isolation") -> psycopg.Connection:
    # autocommit: no BEGIN; without parameters psycopg uses the simple protocol.
    return psycopg.connect(conninfo(port, name), autocommit=True, prepare_threshold=None)


def short(exc: BaseException) -> str:
    text = str(exc).strip()
    sqlstate = getattr(exc, "sqlstate", None)
    line = text.splitlines()[0] if text else type(exc).__name__
    return f"{sqlstate}: {line}" if sqlstate else line


# --------------------------------------------------------------------------
# The Panorama server
# --------------------------------------------------------------------------

class Panorama(Server):
    """`panorama serve --no-collect` (seeding an empty lake), run in `cwd`."""

    def __init__(self, binary: Path, lake: Path, port: int, log_path: Path, cwd: Path):
        super().__init__(binary, lake, port, log_path)
        self.cwd = cwd

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self, timeout: float) -> None:  # type: ignore[override]
        command = [str(self.binary), "--lake", str(self.lake), "serve",
                   "--listen", f"127.0.0.1:{self.port}", "--no-collect"]
        log("$ " + " ".join(command) + f"  (in {self.cwd}, log: {self.log_path})")
        self._log_file = open(self.log_path, "wb")
        # Its own session: a Ctrl-C in the terminal reaches only this
        # script, whose `finally` stops the server.
        try:
            self.proc = subprocess.Popen(command, cwd=self.cwd, stdin=subprocess.DEVNULL,
                                         stdout=self._log_file, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        except OSError as exc:  # e.g. the binary is being rebuilt ("Text file busy")
            raise RuntimeError(f"could not run {self.binary}: {exc}") from exc
        started = time.monotonic()
        last_error: Exception | None = None
        while time.monotonic() < started + timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"panorama serve exited with code {self.proc.returncode} before "
                    f"accepting connections; last lines of its log:\n{self.log_tail()}")
            try:
                with connect(self.port) as conn:
                    conn.execute("SELECT 1").fetchone()
                log(f"panorama serve is ready on 127.0.0.1:{self.port} after "
                    f"{time.monotonic() - started:.1f} s")
                return
            except psycopg.OperationalError as exc:
                last_error = exc
                time.sleep(0.25)
        raise RuntimeError(
            f"panorama serve did not accept connections within {timeout:.0f} s "
            f"(last error: {last_error}); last lines of its log:\n{self.log_tail()}")


def cpu_seconds(pid: int | None) -> float | None:
    """utime + stime of a process (all its threads), seconds."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


# --------------------------------------------------------------------------
# One phase
# --------------------------------------------------------------------------

@dataclass
class Phase:
    server: str
    phase: str
    window_s: float = 0.0
    select1_s: list[float] = field(default_factory=list)
    select1_errors: list[str] = field(default_factory=list)
    connect_s: list[float] = field(default_factory=list)
    connect_errors: list[str] = field(default_factory=list)
    heavy_s: list[float] = field(default_factory=list)   # completed within the window
    heavy_late: int = 0                                   # completed after it, before the cancel
    heavy_errors: list[str] = field(default_factory=list)
    heavy_rows: list[tuple] = field(default_factory=list)
    cancel_s: float | None = None        # cancel sent -> heavy connection free again
    client_cpu: float | None = None      # this process's CPU share over the window
    server_cpu: float | None = None      # Panorama server's CPU seconds per second

    @property
    def error(self) -> str | None:
        problems = []
        if not self.select1_s:
            problems.append("no `SELECT 1` completed")
        if self.phase == "heavy" and not self.heavy_s and self.heavy_errors:
            problems.append(f"the heavy query failed: {self.heavy_errors[0]}")
        return "; ".join(problems) or None


class Window:
    def __init__(self) -> None:
        self.go = threading.Event()
        self.start = 0.0
        self.deadline = 0.0
        self.stop_heavy = threading.Event()


def select1_client(conn: psycopg.Connection, port: int, window: Window, think_s: float,
                   latencies: list[float], errors: list[str], holder: list) -> None:
    window.go.wait()
    cur = conn.cursor()
    while time.perf_counter() < window.deadline:
        started = time.perf_counter()
        try:
            cur.execute("SELECT 1")
            cur.fetchone()
        except psycopg.Error as exc:
            errors.append(short(exc))
            if conn.broken or conn.closed:
                try:
                    conn = connect(port)
                    holder[0] = conn
                    cur = conn.cursor()
                except psycopg.Error as again:
                    errors.append(short(again))
        else:
            latencies.append(time.perf_counter() - started)
        if think_s:
            time.sleep(think_s)


def connect_client(port: int, window: Window, interval_s: float, latencies: list[float],
                   errors: list[str]) -> None:
    window.go.wait()
    next_at = window.start
    while True:
        now = time.perf_counter()
        if next_at > now:
            time.sleep(next_at - now)
        if time.perf_counter() >= window.deadline:
            return
        started = time.perf_counter()
        try:
            with connect(port, "panorama-isolation-connect") as conn:
                conn.execute("SELECT 1").fetchone()
        except psycopg.Error as exc:
            errors.append(short(exc))
        else:
            latencies.append(time.perf_counter() - started)
        # A fixed schedule; a late connection is not caught up with a burst.
        next_at = max(next_at + interval_s, time.perf_counter())


def heavy_client(holder: list, port: int, window: Window, result: Phase) -> None:
    conn = holder[0]
    cur = conn.cursor()
    failures_in_a_row = 0
    while not window.stop_heavy.is_set():
        started = time.perf_counter()
        try:
            cur.execute(HEAVY_SQL)
            row = tuple(cur.fetchone() or ())
        except psycopg.errors.QueryCanceled as exc:
            if window.stop_heavy.is_set():
                return  # our own cancel at the end of the window
            result.heavy_errors.append(short(exc))  # statement_timeout
            failures_in_a_row += 1
        except psycopg.Error as exc:
            result.heavy_errors.append(short(exc))
            failures_in_a_row += 1
            if conn.broken or conn.closed:
                try:
                    conn = connect(port, "panorama-isolation-heavy")
                    conn.execute(f"SET statement_timeout = '{HEAVY_TIMEOUT}'")
                    holder[0] = conn
                    cur = conn.cursor()
                except psycopg.Error as again:
                    result.heavy_errors.append(short(again))
                    return
        else:
            ended = time.perf_counter()
            failures_in_a_row = 0
            if not result.heavy_rows or result.heavy_rows[-1] != row:
                result.heavy_rows.append(row)
            if ended <= window.deadline:
                result.heavy_s.append(ended - started)
            else:
                result.heavy_late += 1
            continue
        if failures_in_a_row >= 3:
            log(f"  heavy query failed 3 times in a row, stopping it: {result.heavy_errors[-1]}")
            return
        time.sleep(0.2)


def run_phase(server: str, phase: str, port: int, args, server_pid: int | None) -> Phase:
    result = Phase(server, phase)
    think_s = args.think_ms / 1000
    log(f"--- {server}, {phase}: {args.clients} clients of `SELECT 1`"
        + (", one heavy query back to back" if phase == "heavy" else "")
        + f", {args.seconds:g} s")
    clients: list[list] = []
    heavy_holder: list = []
    threads: list[threading.Thread] = []
    window = Window()
    per_client: list[tuple[list[float], list[str]]] = []
    try:
        for _ in range(args.clients):
            conn = connect(port)
            conn.execute("SELECT 1").fetchone()  # warm-up, outside the window
            clients.append([conn])
        for holder in clients:
            lat: list[float] = []
            err: list[str] = []
            per_client.append((lat, err))
            threads.append(threading.Thread(
                target=select1_client, args=(holder[0], port, window, think_s, lat, err, holder),
                daemon=True))
        threads.append(threading.Thread(
            target=connect_client,
            args=(port, window, args.connect_interval_ms / 1000, result.connect_s,
                  result.connect_errors), daemon=True))
        heavy_thread = None
        if phase == "heavy":
            heavy = connect(port, "panorama-isolation-heavy")
            heavy_holder.append(heavy)
            heavy.execute(f"SET statement_timeout = '{HEAVY_TIMEOUT}'")
            heavy_thread = threading.Thread(target=heavy_client,
                                            args=(heavy_holder, port, window, result),
                                            daemon=True)
        for thread in threads:
            thread.start()
        if heavy_thread is not None:
            heavy_thread.start()
            time.sleep(HEAVY_LEAD_S)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu_before = usage.ru_utime + usage.ru_stime
        server_before = cpu_seconds(server_pid)
        window.start = time.perf_counter()
        window.deadline = window.start + args.seconds
        window.go.set()
        for thread in threads:
            thread.join(timeout=max(0.0, window.deadline - time.perf_counter()) + 120)
        elapsed = time.perf_counter() - window.start
        result.window_s = args.seconds
        usage = resource.getrusage(resource.RUSAGE_SELF)
        result.client_cpu = (usage.ru_utime + usage.ru_stime - cpu_before) / elapsed
        server_after = cpu_seconds(server_pid)
        if server_before is not None and server_after is not None:
            result.server_cpu = (server_after - server_before) / elapsed
        stuck = sum(thread.is_alive() for thread in threads)
        if stuck:
            result.select1_errors.append(f"{stuck} client threads still waiting 120 s after "
                                         f"the window")
        if heavy_thread is not None:
            window.stop_heavy.set()
            cancel_at = time.perf_counter()
            # Cancel again every 2 s: a query sent just after the first cancel
            # would miss it.
            while heavy_thread.is_alive() \
                    and time.perf_counter() - cancel_at < HEAVY_TIMEOUT_S + 10:
                try:
                    heavy_holder[0].cancel_safe(timeout=10)
                except (psycopg.Error, AttributeError) as exc:
                    log(f"  cancel of the heavy query failed: {short(exc)}")
                heavy_thread.join(timeout=2)
            if heavy_thread.is_alive():
                result.heavy_errors.append(
                    f"the heavy query was still running {HEAVY_TIMEOUT_S + 10} s after "
                    f"its cancel")
            else:
                result.cancel_s = time.perf_counter() - cancel_at
    finally:
        window.go.set()  # threads waiting for a start that never came
        window.deadline = min(window.deadline, time.perf_counter()) if window.deadline else 0.0
        window.stop_heavy.set()
        for holder in clients + ([heavy_holder] if heavy_holder else []):
            try:
                holder[0].close()
            except Exception:  # noqa: BLE001 - best effort, the server goes next anyway
                pass
    for lat, err in per_client:
        result.select1_s += lat
        result.select1_errors += err
    log(f"  {len(result.select1_s):,} `SELECT 1` (p50 {ms(pct(result.select1_s, 0.5))} ms, "
        f"p99 {ms(pct(result.select1_s, 0.99))} ms, max {ms(pct(result.select1_s, 1.0))} ms), "
        f"{len(result.select1_errors)} errors; {len(result.connect_s)} connections (p50 "
        f"{ms(pct(result.connect_s, 0.5))} ms, p99 {ms(pct(result.connect_s, 0.99))} ms), "
        f"{len(result.connect_errors)} errors"
        + (f"; heavy: {len(result.heavy_s)} completed in the window, "
           f"{len(result.heavy_errors)} errors, cancel took "
           f"{'?' if result.cancel_s is None else f'{result.cancel_s:.2f}'} s"
           if phase == "heavy" else ""))
    time.sleep(SETTLE_S)
    return result


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------

def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q=1.0: the maximum), in seconds."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def ms(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    value = seconds * 1000
    return f"{value:,.3f}" if value < 10 else f"{value:,.1f}"


def heavy_cell(p: Phase) -> str:
    if p.phase != "heavy":
        return "–"
    if not p.heavy_s:
        return "0" + (" (failed)" if p.heavy_errors else "")
    return f"{len(p.heavy_s)} ({statistics.median(p.heavy_s):,.2f} s each)"


def report(args, meta, results: dict[tuple[str, str], Phase], failures: list[str],
           notes: list[str]) -> str:
    servers = [s for s in SERVERS if s == "Panorama" or not args.skip_postgres]
    measured = [s for s in servers if any((s, ph) in results for ph in PHASES)]
    lines = [
        f"# Isolation: one heavy query against {args.clients} clients of `SELECT 1`",
        "",
        (f"{meta['date']} · {meta['machine']} · Panorama {meta['panorama_version']} "
         f"({meta['panorama_build']}, `{args.panorama}`, chosen by {args.panorama_choice}; "
         f"`serve --no-collect`, {meta['lake']}) · "
         + (f"PostgreSQL {meta.get('pg_version', '?')} (`{args.pg_bin_dir}`, default "
            f"settings: {meta.get('pg_settings', '?')}) · " if not args.skip_postgres else "")
         + f"servers on 127.0.0.1, clients in this process (one thread each) · window "
         f"{args.seconds:g} s per phase, think time {args.think_ms:g} ms, a new connection "
         f"every {args.connect_interval_ms:g} ms"),
        "",
        f"Command: `{meta['command']}`",
        "",
        f"Heavy query (phase `heavy`, one more connection, `statement_timeout = "
        f"'{HEAVY_TIMEOUT}'`, back to back from {HEAVY_LEAD_S:g} s before the window to its "
        f"end, then cancelled): `{HEAVY_SQL}`",
        "",
        "| server | phase | `SELECT 1` done | p50 ms | p90 ms | p99 ms | max ms "
        "| connect p50 ms | connect p99 ms | connections | heavy done in window |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for server in servers:
        for phase in PHASES:
            p = results.get((server, phase))
            if p is None:
                lines.append(f"| {server} | {phase} | not measured | – | – | – | – | – | – "
                             f"| – | – |")
                continue
            s = p.select1_s
            errors = (f" ({len(p.select1_errors)} errors)" if p.select1_errors else "")
            cerrors = (f" ({len(p.connect_errors)} errors)" if p.connect_errors else "")
            lines.append(
                f"| {server} | {phase} | {len(s):,}{errors} | {ms(pct(s, 0.5))} "
                f"| {ms(pct(s, 0.9))} | {ms(pct(s, 0.99))} | {ms(pct(s, 1.0))} "
                f"| {ms(pct(p.connect_s, 0.5))} | {ms(pct(p.connect_s, 0.99))} "
                f"| {len(p.connect_s):,}{cerrors} | {heavy_cell(p)} |")

    def r(a: Phase | None, b: Phase | None, attr: str, q: float) -> str:
        if a is None or b is None:
            return "n/a"
        return ratio(pct(getattr(a, attr), q), pct(getattr(b, attr), q))

    rows = []
    if "PostgreSQL" in measured and "Panorama" in measured:
        for phase in PHASES:
            rows.append((f"Panorama / PostgreSQL, {phase}", results.get(("Panorama", phase)),
                         results.get(("PostgreSQL", phase))))
    for server in measured:
        rows.append((f"{server}: heavy / baseline", results.get((server, "heavy")),
                     results.get((server, "baseline"))))
    if rows:
        lines += ["", "| ratio | `SELECT 1` p50 | `SELECT 1` p99 | connect p50 | connect p99 |",
                  "| --- | ---: | ---: | ---: | ---: |"]
    for label, a, b in rows:
        lines.append(f"| {label} | {r(a, b, 'select1_s', 0.5)} | {r(a, b, 'select1_s', 0.99)} "
                     f"| {r(a, b, 'connect_s', 0.5)} | {r(a, b, 'connect_s', 0.99)} |")
    if failures:
        lines += ["", "Failures:", ""] + [f"- {f}" for f in failures]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines).rstrip() + "\n"


def phase_notes(p: Phase) -> list[str]:
    notes = []
    cpu = [f"load generator (this process) {p.client_cpu * 100:.0f} % of a core"] \
        if p.client_cpu is not None else []
    if p.server_cpu is not None:
        cpu.append(f"`panorama serve` {p.server_cpu * 100:.0f} % of a core")
    if cpu:
        notes.append(f"{p.server}, {p.phase}: CPU over the window: {', '.join(cpu)}")
    if p.phase == "heavy":
        if p.heavy_s:
            notes.append(
                f"{p.server}: heavy query {len(p.heavy_s)} × in the window, "
                f"{min(p.heavy_s):.2f}–{max(p.heavy_s):.2f} s each"
                + (f", {p.heavy_late} more finished after the window" if p.heavy_late else "")
                + (f"; the one in flight at the end was cancelled, its connection free "
                   f"{p.cancel_s:.2f} s after the cancel" if p.cancel_s is not None else ""))
        elif p.cancel_s is not None:
            notes.append(f"{p.server}: no heavy query finished within the window; the one in "
                         f"flight was cancelled, its connection free {p.cancel_s:.2f} s after "
                         f"the cancel")
    return notes


def phase_failures(p: Phase) -> list[str]:
    failures = []
    if p.error:
        failures.append(f"{p.server}, {p.phase}: {p.error}")
    for what, errors in (("`SELECT 1`", p.select1_errors), ("new connections", p.connect_errors),
                         ("heavy query", p.heavy_errors)):
        if errors:
            distinct = list(dict.fromkeys(errors))
            failures.append(f"{p.server}, {p.phase}, {what}: {len(errors)} errors, e.g. "
                            + "; ".join(f"`{e}`" for e in distinct[:3]))
    for row in p.heavy_rows:
        if tuple(int(v) for v in row if v is not None) != HEAVY_EXPECTED:
            failures.append(f"{p.server}: the heavy query returned {row}, expected "
                            f"{HEAVY_EXPECTED}")
    return failures


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    install_signal_handlers()
    args = parse_args(argv)
    require_binary(args.panorama)
    # Short GIL slices: a client whose answer came in waits less for another
    # thread's turn (the figures are the client's view, GIL included).
    sys.setswitchinterval(0.0005)
    log(f"panorama binary: {args.panorama} ({args.build} build; chosen by {args.panorama_choice})")
    if args.build != "release":
        log("warning: not a release build; its figures do not stand for a release's")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="panorama-isolation-", dir=args.work_dir))
    os.chmod(folder, 0o755)  # PostgreSQL's user must reach its folder inside
    log(f"working in {folder}")
    lake = args.lake or folder / "lake"
    pg_port = 0 if args.skip_postgres else free_port(set())
    pano_port = free_port({pg_port})
    server = Panorama(args.panorama, lake, pano_port, folder / "panorama-serve.log", folder)
    pg = None if args.skip_postgres else Postgres(args.pg_bin_dir, folder / "postgres", pg_port)
    meta = {
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "machine": machine(),
        "panorama_version": panorama_version(args.panorama),
        "panorama_build": (f"{args.build} build" if args.build != "unknown"
                           else "build kind unknown"),
        "lake": (f"lake `{args.lake}`" if args.lake else
                 "an empty lake seeded by `serve` with the bundled sample"),
        "command": " ".join(
            [os.path.relpath(sys.argv[0], REPO) if sys.argv[0] else "isolation_compare.py"]
            + (sys.argv[1:] if argv is None else argv)),
    }
    results: dict[tuple[str, str], Phase] = {}
    failures: list[str] = []
    notes: list[str] = []
    retried: list[str] = []
    try:
        try:
            server.start(args.startup_timeout)
        except RuntimeError as exc:
            failures.append(f"**Panorama did not start** (`{args.panorama}`): "
                            + str(exc).replace("\n", "\n  "))
            log(f"error: {exc}")
            server.stop()
        if pg is not None:
            pg.start()
            meta["pg_version"] = pg.version()
            meta["pg_settings"] = pg.settings()
        targets = []
        if pg is not None:
            targets.append(("PostgreSQL", pg.port, None, lambda: True))
        if server.alive():
            targets.append(("Panorama", server.port, server.pid, server.alive))
        for name, port, pid, alive in targets:
            for phase in PHASES:
                if not alive():
                    failures.append(f"**panorama serve died** before {name}, {phase}:\n  "
                                    + server.log_tail().replace("\n", "\n  "))
                    break
                held: list[Phase] = []

                def step(name=name, port=port, pid=pid, phase=phase, held=held) -> bool:
                    try:
                        held.append(run_phase(name, phase, port, args, pid))
                    except psycopg.Error as exc:
                        held.append(Phase(name, phase, select1_errors=[short(exc)]))
                    return held[-1].error is None

                measure_quietly(args, f"{name}, {phase}", step, [held], retried)
                if held:
                    results[(name, phase)] = held[-1]
                    failures += phase_failures(held[-1])
                    notes += phase_notes(held[-1])
            if name == "Panorama" and not alive():
                failures.append("**panorama serve died** during the run:\n  "
                                + server.log_tail().replace("\n", "\n  "))
        notes += retried
    finally:
        server.stop()
        if pg is not None:
            pg.stop()
        if args.keep:
            log(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)

    markdown = report(args, meta, results, failures, notes)
    publish(markdown, args.out)
    return 1 if failures else 0


if __name__ == "__main__":
    run(main)
