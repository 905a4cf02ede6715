"""Benchmark: the cube module's aperture spectra, per call and in batch.

    python tests/benchmarks/bench_cube.py --pdr1 /data/mock-tiny [--catalogs /data/mock-tiny-catalogs]

``--pdr1`` is a mock (or real) PDR1 tree and ``--catalogs`` its ingest by the current dexdb. Without
``--catalogs`` the tree is ingested into the work directory; without ``--pdr1`` a tiny mock is generated
there first (the work directory is a temporary one by default, deleted at the end; nothing under
``--pdr1`` or ``--catalogs`` is written).

Per call (one cube, ``--positions`` random positions inside it, the same in every method, default
selection and radius 3.5"): ``dexdb.cube.aperture_spectrum`` on the decompressed cube (memory-mapped,
each call reads its window), on the cube in memory and on the released RICE-compressed file (each call
decompresses the tiles its window touches), against

* the per-slice implementation of the tests (``per_slice_reference`` in tests/test_cube.py: section 6
  step by step, one wavelength slice at a time, on the cube's arrays already in memory, so it pays no
  reading at all; WCS built once);
* tests/section6.py: the reference vectorised over the window with numpy, opening the file and reading
  the window through astropy ``.section`` on each call, as the notebooks do.

The goal is the per-slice time over the dexdb time on the decompressed file, >= 3.

Batch: ``--targets`` positions drawn uniformly inside the cubes' covered areas (a random cube each),
run through ``dexdb.extract.extract`` with 1 and 2 worker processes, on the released (compressed)
cubes and on a decompressed copy of the tree; throughput in spectra (target, cube rows) per second and
per second per worker. Each run starts with the OS page cache warm (the cubes were read before).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from astropy.io import fits
from astropy.wcs import WCS

from dexdb.cube import aperture_spectrum, open_cube
from dexdb.extract import extract
from dexdb.mock.cubes import COVERED, EXTNAMES, decompress_cube

TESTS = Path(__file__).resolve().parents[1]
EXAMPLE_CUBE = "datacubes/20190405020/dex_cube_20190405020_034.fits"


def timed(function, items, repeat: int = 1) -> float:
    """Median over ``repeat`` passes of the mean seconds per item."""
    passes = []
    for _ in range(repeat):
        started = time.perf_counter()
        for item in items:
            function(item)
        passes.append((time.perf_counter() - started) / len(items))
    return statistics.median(passes)


def covered_positions(path: Path, n: int, rng: np.random.Generator) -> list[tuple[float, float]]:
    """n sky positions at random covered spaxel positions (sub-pixel) of a cube."""
    ys, xs = np.nonzero(COVERED)
    pick = rng.integers(0, len(xs), n)
    x, y = xs[pick] + rng.uniform(-0.5, 0.5, n), ys[pick] + rng.uniform(-0.5, 0.5, n)
    ra, dec = WCS(fits.getheader(path, "DATA")).celestial.wcs_pix2world(x, y, 0)
    return list(zip(ra.tolist(), dec.tolist()))


def per_call(pdr1: Path, work: Path, n_positions: int, rng: np.random.Generator) -> list[tuple[str, float]]:
    sys.path.insert(0, str(TESTS))  # the references live with the tests
    from section6 import extract_spectrum
    from test_cube import per_slice_reference

    compressed = pdr1 / EXAMPLE_CUBE
    plain = work / "example_decompressed.fits"
    decompress_cube(compressed, plain)
    positions = covered_positions(compressed, n_positions, rng)
    with fits.open(plain) as hdul:
        header = hdul["DATA"].header
        arrays = tuple(hdul[name].data.astype(hdul[name].data.dtype.newbyteorder("=")) for name in EXTNAMES)
    wcs, spec_bw = WCS(header), header["SPECBW"]
    few = positions[: max(10, n_positions // 5)]
    rows = []
    with open_cube(plain) as cube:
        aperture_spectrum(cube, *positions[0])  # caches the WCS and wave grid, as any session would
        rows.append(("dexdb, decompressed file (memory-mapped)",
                     timed(lambda p: aperture_spectrum(cube, *p), positions, 3)))
        loaded = cube.load()
        rows.append(("dexdb, cube in memory", timed(lambda p: aperture_spectrum(loaded, *p), positions, 3)))
    with open_cube(compressed) as packed:
        rows.append(("dexdb, released RICE-compressed file", timed(lambda p: aperture_spectrum(packed, *p), few)))
    rows += [
        ("per-slice reference (tests), arrays in memory",
         timed(lambda p: per_slice_reference(arrays, wcs, spec_bw, *p, magnitude=False), few)),
        ("tests/section6.py, decompressed file via .section", timed(lambda p: extract_spectrum(plain, *p), few)),
        ("tests/section6.py, compressed file via .section", timed(lambda p: extract_spectrum(compressed, *p), few)),
    ]  # fmt: skip
    return rows


def batch(pdr1: Path, catalogs: Path, work: Path, n_targets: int, rng: np.random.Generator) -> list[tuple]:
    cubes = sorted(pdr1.glob("datacubes/*/dex_cube_*.fits"))
    choice = rng.integers(0, len(cubes), n_targets)
    positions = [covered_positions(cubes[c], 1, rng)[0] for c in choice]
    targets = work / "targets.parquet"
    pq.write_table(pa.table({"id": np.arange(n_targets), "ra": [p[0] for p in positions],
                             "dec": [p[1] for p in positions]}), targets)  # fmt: skip
    plain_tree = work / "pdr1-decompressed"
    for cube in cubes:
        target = plain_tree / cube.relative_to(pdr1)
        target.parent.mkdir(parents=True, exist_ok=True)
        decompress_cube(cube, target)
    rows = []
    for label, tree in (("released (compressed)", pdr1), ("decompressed", plain_tree)):
        for workers in (1, 2):
            out = work / f"spectra_{workers}.parquet"
            report = extract(catalogs, targets, tree, out, workers=workers, overwrite=True, progress=False)
            rate = report.rows / report.seconds
            rows.append((label, workers, report.covered, report.rows, report.cubes, report.seconds, rate,
                         rate / workers))  # fmt: skip
            out.unlink()
    shutil.rmtree(plain_tree)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pdr1", type=Path, help="PDR1 tree (default: a tiny mock in the work directory)")
    parser.add_argument("--catalogs", type=Path, help="its ingest (default: ingested into the work directory)")
    parser.add_argument("--work", type=Path, help="scratch directory (default: a temporary one, deleted)")
    parser.add_argument("--positions", type=int, default=200)
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_cube_"))
    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    load = os.getloadavg()[0]
    try:
        pdr1, catalogs = args.pdr1, args.catalogs
        if pdr1 is None:
            from dexdb.mock import generate

            pdr1 = generate(work / "pdr1", "tiny", 0, log=lambda *_: None)
        if catalogs is None:
            from dexdb.ingest.pipeline import ingest

            catalogs = work / "catalogs"
            ingest(pdr1, catalogs, log=lambda *_: None)
        calls = per_call(pdr1, work, args.positions, rng)
        runs = batch(pdr1, catalogs, work, args.targets, rng)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    dexdb_file = calls[0][1]
    print(f"\nload average {load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end; {os.cpu_count()} cores\n")
    print(f"Per call, {args.positions} positions in {EXAMPLE_CUBE} (radius 3.5\", default selection)\n")
    print("| method | ms per call | vs dexdb on the decompressed file |\n|---|---|---|")
    for label, seconds in calls:
        print(f"| {label} | {seconds * 1e3:.2f} | {seconds / dexdb_file:.1f}x |")
    print(f"\nBatch, {args.targets} targets (`dexdb.extract.extract`, radius 3.5\")\n")
    print("| cubes | workers | targets covered | spectra | cubes read | wall s | spectra/s | per worker |\n"
          "|---|---|---|---|---|---|---|---|")  # fmt: skip
    for label, workers, covered, rows, cubes, seconds, rate, per_worker in runs:
        print(f"| {label} | {workers} | {covered} | {rows} | {cubes} | {seconds:.1f} | {rate:.0f} | {per_worker:.0f} |")


if __name__ == "__main__":
    main()
