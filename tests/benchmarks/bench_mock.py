"""Benchmark: write a mock PDR1 tree at a scale and record time, size and peak memory.

    python tests/benchmarks/bench_mock.py --scale large --out /data/mock-large

Peak memory is sampled every 0.2 s over the whole process tree: the largest RSS of a single
process, and the tree's proportional set size (PSS: shared pages, such as the plan the forked
workers inherit, counted once across processes), which is what the tree really occupies.
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

RESULTS = Path(__file__).with_name("RESULTS.md")


def tree_memory(proc: psutil.Process) -> tuple[int, int]:
    """(largest RSS of one process, summed PSS of the tree)."""
    rss, pss = [], []
    for p in [proc] + proc.children(recursive=True):
        try:
            info = p.memory_full_info()
        except psutil.Error:
            continue
        rss.append(info.rss)
        pss.append(info.pss)
    return max(rss, default=0), sum(pss)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", default="large")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--keep", action="store_true", help="keep the tree (e.g. for the ingest benchmark)")
    args = ap.parse_args()

    shutil.rmtree(args.out, ignore_errors=True)
    cmd = [sys.executable, "-m", "dexdb.cli", "mock", str(args.out), "--scale", args.scale, "--seed", str(args.seed)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    ps = psutil.Process(proc.pid)
    peak_single = peak_sum = 0
    while proc.poll() is None:
        single, total = tree_memory(ps)
        peak_single, peak_sum = max(peak_single, single), max(peak_sum, total)
        time.sleep(0.2)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"dexdb mock failed with exit status {proc.returncode}")
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    line = (
        f"| {datetime.date.today()} | mock `{args.scale}` seed {args.seed} | {seconds:.0f} s | {size / 1e9:.2f} GB | "
        f"{peak_single / 2**30:.2f} GiB in one process, {peak_sum / 2**30:.2f} GiB PSS of the tree |"
    )
    print(line)
    with RESULTS.open("a") as fh:
        fh.write(line + "\n")
    if not args.keep:
        shutil.rmtree(args.out, ignore_errors=True)


if __name__ == "__main__":
    main()
