"""Benchmark: emission-line classification (multi-line solutions + P(LAE)/P(OII)) of catalog spectra,
batched (dexdb.lines) against a straightforward per-spectrum loop (dexdb.lines.reference), in one run.

    python tests/benchmarks/bench_classify.py --catalogs /data/catalogs --limit 20000 --loop 20

``--catalogs`` is the output directory of ``dexdb ingest``; nothing in it is written (the analysis is the
one ``dexdb classify`` runs, without publishing). The spectra are ``--limit`` line detections of
``detection_spectra`` drawn by a hash of detectid and ``--seed`` (the same ones in every run), read once
as Arrow and converted to numpy before timing. Then:

* batched: :func:`dexdb.lines.classify.analyse_spectra` over all of them in batches of ``--batch``;
* loop: :func:`dexdb.lines.reference.classify_one` plus :func:`dexdb.lines.plae.plae_from_spectra` on
  one spectrum at a time, over the first ``--loop`` of them (the loop costs seconds per spectrum).

Figures: wall and CPU seconds, spectra per second per core (spectra / CPU seconds of this process), the
speed-up per spectrum, and how often both agree on the best hypothesis and its acceptance. The machine's
load average is printed at the start and the end: the machine is shared, so compare the ratio.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from dexdb.lines import reference
from dexdb.lines.classify import analyse_spectra, spectra_arrays
from dexdb.lines.plae import plae_from_spectra
from dexdb.sqlload import connect


def load(catalogs: Path, limit: int, seed: int):
    con = connect(catalogs)
    con.execute("SET enable_progress_bar = false")
    query = (
        "SELECT d.detectid, d.wave::DOUBLE AS wave, s.spec, s.spec_err "
        "FROM detections AS d JOIN detection_spectra AS s USING (detectid) "
        "WHERE d.det_type = 'line' ORDER BY hash(d.detectid + ?) LIMIT ?"
    )
    started = time.perf_counter()
    table = con.sql(query, params=[seed, limit]).to_arrow_table()
    spec, err = spectra_arrays(table)
    return table["wave"].to_numpy(), spec, err, time.perf_counter() - started


def timed(function):
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--catalogs", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=5000, help="spectra for the batched run")
    parser.add_argument("--loop", type=int, default=20, help="spectra for the per-spectrum loop")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print(f"load average at start: {os.getloadavg()}")
    wave, spec, err, read_seconds = load(args.catalogs, args.limit, args.seed)
    n = wave.size
    print(f"{n:,} spectra read in {read_seconds:.1f} s from {args.catalogs}")

    def batched():
        return [analyse_spectra(wave[i:i + args.batch], spec[i:i + args.batch], err[i:i + args.batch])
                for i in range(0, n, args.batch)]

    analyses, batch_wall, batch_cpu = timed(batched)
    m = min(args.loop, n)

    def loop():
        out = []
        for i in range(m):
            solved = reference.classify_one(wave[i], spec[i], err[i])
            main_fit = solved["main"]
            plae_from_spectra([wave[i]], [main_fit["flux"]], [main_fit["flux_err"]], [main_fit["continuum"]],
                              [main_fit["continuum_err"]], spec[i:i + 1], err[i:i + 1])
            out.append(solved)
        return out

    looped, loop_wall, loop_cpu = timed(loop)
    best = np.concatenate([a.classification.best for a in analyses])
    accepted = np.concatenate([a.classification.accepted for a in analyses])
    agree = sum(r["best"] == best[i] and r["accepted"] == accepted[i] for i, r in enumerate(looped))

    rows = [
        ("batched (dexdb.lines)", n, batch_wall, batch_cpu),
        ("per-spectrum loop (reference)", m, loop_wall, loop_cpu),
    ]
    print()
    print("| method | spectra | wall s | CPU s | spectra/s/core | ms/spectrum (CPU) |")
    print("|---|---|---|---|---|---|")
    for name, count, wall, cpu in rows:
        print(f"| {name} | {count:,} | {wall:.1f} | {cpu:.1f} | {count / cpu:,.1f} | {1e3 * cpu / count:,.2f} |")
    print()
    print(f"speed-up per spectrum (CPU): {(loop_cpu / m) / (batch_cpu / n):,.0f}x")
    print(f"agreement on best hypothesis and acceptance: {agree}/{m}")
    print(f"accepted multi-line solutions in the batched run: {int(accepted.sum()):,} of {n:,}")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
