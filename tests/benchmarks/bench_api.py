"""Benchmark: a 37" cone on the detections through the Python API against astropy and lsdb, in one run.

    python tests/benchmarks/bench_api.py --out /data/catalogs --pdr1 /data/mock-large

``--out`` is the output directory of ``dexdb ingest``, ``--pdr1`` the mock tree it was ingested from.
Nothing under either is written. Methods, each warmed once ("first") and then timed ``--runs`` times
(median reported):

* API: ``dexdb.open(OUT).cone("detections", ra, dec, 37)``, every column, as a polars DataFrame (macro
  ``cone_in_files`` over the partition files healpy picks); and
  with ``columns=`` (five columns), which leaves the others unread;
* SQL: the ``cone`` macro on a connection from ``dexdb.sqlload.connect``, to polars: what the API adds;
  and its ``EXPLAIN`` alone, the binding and planning every cone pays before it reads a byte;
* astropy: the way a PDR1 user does it without an index: ra/dec of every row of ``/Detections`` in
  ``detect/*.h5`` and ``cont/*.h5`` (PyTables, loaded once, not timed) in one SkyCoord, then
  ``separation`` + the radius filter per query;
* lsdb: ``lsdb.open_catalog(OUT/detections)`` once, then ``cone_search(...).compute()``.

The cone centre is a detection drawn with ``--seed`` (seed 0 is the centre of bench_sql.py). The
methods must return the same detectids, or the run fails. Goals (issue 5): API median <= 10 ms,
>= 200x astropy, >= 20x lsdb. Prints a markdown table; ``--append`` adds it to RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).with_name("RESULTS.md")
HEADING = "## Python API (`tests/benchmarks/bench_api.py`)"
RADIUS_ARCSEC = 37.0
FEW_COLUMNS = ["detectid", "ra", "dec", "wave", "sn"]
GOAL_MS, GOAL_ASTROPY, GOAL_LSDB = 10.0, 200.0, 20.0


def measure(fn: Callable[[], set[int] | None], runs: int) -> dict:
    """``fn`` once (first), then ``runs`` times; ``fn`` returns the detectids it found (None: no rows)."""
    started = time.perf_counter()
    ids = fn()
    first = time.perf_counter() - started
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        again = fn()
        times.append(time.perf_counter() - started)
        if again != ids:
            raise RuntimeError("a method returned different rows on a repeated run")
    return {"ids": ids, "first": first, "median": statistics.median(times), "runs": len(times)}


def cone_centre(out: Path, seed: int) -> tuple[float, float]:
    """A detection's position: the row with the smallest hash of (detectid, seed)."""
    import dexdb

    with dexdb.open(out) as cat:
        centre = cat.sql("SELECT ra::DOUBLE AS ra, dec::DOUBLE AS dec FROM detections "
                         "ORDER BY hash(detectid, $seed) LIMIT 1", {"seed": seed})
    return float(centre["ra"][0]), float(centre["dec"][0])


def api_methods(out: Path, ra: float, dec: float, runs: int) -> dict[str, dict]:
    import dexdb
    from dexdb import sqlload

    results = {}
    with dexdb.open(out) as cat:
        results["API `cat.cone`, all columns"] = measure(
            lambda: set(cat.cone("detections", ra, dec, RADIUS_ARCSEC)["detectid"].to_list()), runs)
        results[f"API `cat.cone`, columns={FEW_COLUMNS}"] = measure(
            lambda: set(cat.cone("detections", ra, dec, RADIUS_ARCSEC, columns=FEW_COLUMNS)["detectid"].to_list()), runs)
    con = sqlload.connect(out)
    query = "SELECT * FROM cone('detections', $ra, $dec, $r)"
    params = {"ra": ra, "dec": dec, "r": RADIUS_ARCSEC}
    results["SQL `cone` macro, sqlload connection, `.pl()`"] = measure(
        lambda: set(con.sql(query, params=params).pl()["detectid"].to_list()), runs)
    results["SQL `cone` macro, `EXPLAIN` only (bind + plan)"] = measure(
        lambda: con.sql("EXPLAIN " + query, params=params).fetchall() and None, runs)
    con.close()
    return results


def astropy_method(pdr1: Path, ra: float, dec: float, runs: int) -> tuple[dict, int]:
    import astropy.units as u
    import tables
    from astropy.coordinates import SkyCoord

    ids, ras, decs = [], [], []
    for path in sorted((pdr1 / "detect").glob("*_hdr*.h5")):
        with tables.open_file(path) as h5:
            if "Detections" in h5.root:
                table = h5.root.Detections
                ids.append(table.col("detectid"))
                ras.append(table.col("ra").astype(np.float64))
                decs.append(table.col("dec").astype(np.float64))
    detectids = np.concatenate(ids)
    rows = SkyCoord(np.concatenate(ras) * u.deg, np.concatenate(decs) * u.deg)
    centre = SkyCoord(ra * u.deg, dec * u.deg)

    def run() -> set[int]:
        return set(detectids[rows.separation(centre).arcsec <= RADIUS_ARCSEC].tolist())

    return measure(run, runs), detectids.size


def lsdb_method(out: Path, ra: float, dec: float, runs: int) -> dict:
    import lsdb

    catalog = lsdb.open_catalog(out / "detections")
    return measure(lambda: set(catalog.cone_search(ra, dec, RADIUS_ARCSEC).compute()["detectid"].tolist()), runs)


def markdown(results: dict[str, dict], header: str) -> str:
    api = results["API `cat.cone`, all columns"]["median"]
    lines = [header, "", "| method | rows | median | first | runs | notes |", "|---|---|---|---|---|---|"]
    for method, result in results.items():
        ratio = result["median"] / api
        note = "" if method.startswith("API `cat.cone`, all") else f"{ratio:.1f}x the API's median"
        rows = "" if result["ids"] is None else len(result["ids"])
        lines.append(f"| {method} | {rows} | {result['median'] * 1e3:.1f} ms | "
                     f"{result['first'] * 1e3:.1f} ms | {result['runs']} | {note} |")
    astropy = results["astropy `SkyCoord.separation`, every row"]["median"] / api
    lsdb = results["lsdb `cone_search`"]["median"] / api
    def verdict(met: bool) -> str:
        return "met" if met else "**missed**"

    lines += ["", (f"Goals: API median {api * 1e3:.1f} ms (<= {GOAL_MS:.0f} ms: {verdict(api * 1e3 <= GOAL_MS)}); "
                   f"{astropy:.0f}x astropy (>= {GOAL_ASTROPY:.0f}x: {verdict(astropy >= GOAL_ASTROPY)}); "
                   f"{lsdb:.1f}x lsdb (>= {GOAL_LSDB:.0f}x: {verdict(lsdb >= GOAL_LSDB)}).")]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output directory of dexdb ingest")
    parser.add_argument("--pdr1", type=Path, required=True, help="the mock PDR1 tree it was ingested from")
    parser.add_argument("--runs", type=int, default=20, help="timed runs of the API and SQL (default 20)")
    parser.add_argument("--slow-runs", type=int, default=3, help="timed runs of astropy and lsdb (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--append", action="store_true", help="add the table to RESULTS.md")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    load_start = os.getloadavg()
    ra, dec = cone_centre(args.out, args.seed)
    print(f"cone centre ({ra:.5f}, {dec:.5f}), radius {RADIUS_ARCSEC}\"", file=sys.stderr)

    results = api_methods(args.out, ra, dec, args.runs)
    astropy, n_rows = astropy_method(args.pdr1, ra, dec, args.slow_runs)
    results["astropy `SkyCoord.separation`, every row"] = astropy
    results["lsdb `cone_search`"] = lsdb_method(args.out, ra, dec, args.slow_runs)
    expected = results["API `cat.cone`, all columns"]["ids"]
    disagree = [method for method, result in results.items() if result["ids"] not in (None, expected)]
    if disagree:
        raise SystemExit(f"methods disagree with the API's rows: {disagree}")

    import duckdb
    import lsdb
    import polars

    header = (
        f"### {datetime.date.today().isoformat()}, cone {RADIUS_ARCSEC:g}\" on `detections`\n\n"
        f"Data: `{args.out}` ({n_rows:,} detections) from `{args.pdr1}`; centre ({ra:.5f}, {dec:.5f}), seed "
        f"{args.seed}. {os.cpu_count()} cores, Python {platform.python_version()}, DuckDB {duckdb.__version__}, "
        f"polars {polars.__version__}, lsdb {lsdb.__version__}. Load average (1 min) "
        f"{load_start[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end."
    )
    text = markdown(results, header)
    print(text)
    if args.append:
        existing = RESULTS.read_text(encoding="utf-8")
        if HEADING not in existing:
            existing = existing.rstrip("\n") + f"\n\n{HEADING}\n"
        tmp = RESULTS.with_name(f".{RESULTS.name}.tmp")
        tmp.write_text(existing.rstrip("\n") + "\n\n" + text + "\n", encoding="utf-8")
        os.replace(tmp, RESULTS)


if __name__ == "__main__":
    main()
