#!/usr/bin/env python3
"""Scale-out: the sql/bench queries through workers vs the local engine.

What a two-core machine can measure honestly (a real speed-up needs more
machines than this one):

  1. overhead: `panorama serve` alone vs `panorama serve --workers A,B`
     with two `panorama worker`s (the same binary, same lake) on the same
     two cores: every query's median time, and the ratio cluster / local.
     (One worker would measure nothing: a stage has at most one task per
     worker, and a plan of one-task stages runs on the front end.)
  2. scaling: the same two workers both pinned to core 0 (`taskset -c 0`)
     vs pinned to a core each (`taskset -c 0`, `taskset -c 1`), the front
     end unpinned: the same plans with one core or two for the workers;
     the ratio of times, one core / two;
  3. bytes shuffled per query: the `bytes_transferred` metrics of
     `EXPLAIN ANALYZE` on the cluster of two cores.

Each configuration checks it returns the rows the local engine returns.

Usage:
  /var/tmp/panorama-bench-venv/bin/python benches/cluster_compare.py --scale 100
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import re
import subprocess
import tempfile
import time
from pathlib import Path

from harness import (MARKER, OUT_DIR, REPO, default_panorama, generate_lake, install_signal_handlers,
                     log, median, panorama_version, publish, raw_size_mb, require_binary, run)
from compare import Server, free_port

QUERIES = sorted((REPO / "sql" / "bench").glob("*.sql"))


class Worker:
    """`panorama worker` as a child process, optionally pinned to cores."""

    def __init__(self, binary: Path, lake: Path, cores: str | None, log_path: Path):
        command = [str(binary), "--lake", str(lake), "worker", "--listen", "127.0.0.1:0",
                   "--memory-limit-mb", "4096"]
        if cores is not None:
            command = ["taskset", "-c", cores, *command]
        log("$ " + " ".join(command))
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self.log, start_new_session=True, text=True)
        line = self.proc.stdout.readline().strip()
        prefix = "worker listening on "
        if not line.startswith(prefix):
            raise RuntimeError(f"panorama worker did not start: {line!r} (log: {log_path})")
        self.addr = line[len(prefix):]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def rows_of(conn, sql: str) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall() if cur.description else []


def timed(conn, sql: str, runs: int) -> tuple[float, list[tuple]]:
    rows = rows_of(conn, sql)  # warm-up
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        rows = rows_of(conn, sql)
        times.append(time.perf_counter() - started)
    return median(times), rows


def same_rows(a: list[tuple], b: list[tuple]) -> bool:
    def norm(rows):
        return sorted((tuple(str(v) for v in r) for r in rows))

    if len(a) != len(b):
        return False
    for r, s in zip(norm(a), norm(b)):
        for x, y in zip(r, s):
            if x == y:
                continue
            try:
                fx, fy = float(x), float(y)
            except ValueError:
                return False
            # Sums differ in their last digits with the order of addition,
            # and churn risk's ages in days move with now() by the minutes
            # between the configurations' runs.
            if not math.isclose(fx, fy, rel_tol=1e-4, abs_tol=1e-9):
                return False
    return True


UNITS = {"": 1, "B": 1, "K": 1e3, "KB": 1e3, "M": 1e6, "MB": 1e6, "G": 1e9, "GB": 1e9}


def bytes_shuffled(conn, sql: str) -> float:
    """Sum of the `bytes_transferred` metrics of EXPLAIN ANALYZE."""
    text = "\n".join(str(cell) for row in rows_of(conn, "EXPLAIN ANALYZE " + sql) for cell in row)
    total = 0.0
    for number, unit in re.findall(r"bytes_transferred=([\d.]+)\s?([KMG]?B?)", text):
        total += float(number) * UNITS.get(unit, 1)
    return total


def measure(binary: Path, lake: Path, config: Path, workers: list[Worker] | None, runs: int,
            logs: Path, name: str) -> dict[str, tuple[float, list[tuple]]]:
    extra = ("--no-collect", "--no-console")
    if workers:
        extra += ("--workers", ",".join(w.addr for w in workers))
    server = Server(binary, lake, free_port(), logs / f"serve-{name}.log", extra)
    results = {}
    try:
        conn = server.start()
        conn.execute("SELECT 1")
        for query in QUERIES:
            results[query.stem] = timed(conn, query.read_text(), runs)
            log(f"{name}: {query.stem} {results[query.stem][0] * 1000:.0f} ms")
        if name == "2 cores":
            for query in QUERIES:
                sql = query.read_text()
                shuffled = bytes_shuffled(conn, sql)
                plan = "\n".join(str(c) for r in rows_of(conn, "EXPLAIN " + sql) for c in r)
                results[query.stem] = (*results[query.stem], shuffled, "Stage" in plan)
        conn.close()
    finally:
        server.stop()
    return results


def main() -> int:
    install_signal_handlers()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--panorama", type=Path, default=default_panorama())
    parser.add_argument("--scale", type=int, default=100)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--lake", type=Path, default=None,
                        help="default: /var/tmp/panorama-bench-scale<N>")
    parser.add_argument("--bytes-per-task", type=int, default=16 << 20,
                        help="[cluster] bytes_per_task of the front end")
    args = parser.parse_args()
    binary = args.panorama.resolve()
    require_binary(binary)
    lake = args.lake or Path(f"/var/tmp/panorama-bench-scale{args.scale}")
    if not (lake / MARKER).is_file():
        generate_lake(binary, lake, args.scale, args.seed)
    if not (lake / "cdp" / "_manifest.json").is_file():
        subprocess.run([str(binary), "--lake", str(lake), "refresh"], check=True)
    logs = Path(tempfile.mkdtemp(prefix="panorama-cluster-bench-"))
    config = logs / "panorama.toml"
    config.write_text(f"[cluster]\nbytes_per_task = {args.bytes_per_task}\n")
    import os
    os.environ["PANORAMA_CONFIG"] = str(config)
    started = dt.datetime.now(dt.timezone.utc)

    local = measure(binary, lake, config, None, args.runs, logs, "local")
    configs = {"2 workers": [None, None], "1 core": ["0", "0"], "2 cores": ["0", "1"]}
    results = {}
    for name, pins in configs.items():
        workers = [Worker(binary, lake, pin, logs / f"worker-{name}-{i}.log")
                   for i, pin in enumerate(pins)]
        try:
            results[name] = measure(binary, lake, config, workers, args.runs, logs, name)
        finally:
            for w in workers:
                w.stop()

    lines = [
        f"### Latest: {started:%Y-%m-%d %H:%M} UTC, scale {args.scale} (seed {args.seed}), "
        f"{raw_size_mb(lake):,.0f} MB raw, {panorama_version(binary)}, "
        f"bytes_per_task {args.bytes_per_task >> 20} MiB, median of {args.runs} runs",
        "",
        "| query | local | 2 workers | overhead | workers on 1 core | workers on 2 cores "
        "| scaling | shuffled | on the workers | results |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for query in QUERIES:
        q = query.stem
        t_local, rows = local[q]
        one, one_rows = results["2 workers"][q][:2]
        p1, p1_rows = results["1 core"][q][:2]
        p2, p2_rows = results["2 cores"][q][:2]
        shuffled = results["2 cores"][q][2]
        stages = "yes" if results["2 cores"][q][3] else "no (runs on the front end)"
        same = all(same_rows(rows, r) for r in (one_rows, p1_rows, p2_rows))
        lines.append(
            f"| {q} | {t_local * 1000:.0f} ms | {one * 1000:.0f} ms | {one / t_local:.2f}× "
            f"| {p1 * 1000:.0f} ms | {p2 * 1000:.0f} ms | {p1 / p2:.2f}× "
            f"| {shuffled / 1e3:,.1f} KB | {stages} | {'same' if same else '**differ**'} |")
        if not same:
            log(f"{q}: local {sorted(map(str, rows))[:3]} / cluster "
                f"{[sorted(map(str, r))[:3] for r in (one_rows, p1_rows, p2_rows)]}")
    publish("\n".join(lines) + "\n", OUT_DIR / f"cluster-scale{args.scale}.md")
    return 0


if __name__ == "__main__":
    run(main)
