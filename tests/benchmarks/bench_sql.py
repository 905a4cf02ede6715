"""Benchmark: the SQL layer (cone search, spectra by id, cross-match, grouping) against the ways the
HETDEX tools and notebooks do the same today.

    python tests/benchmarks/bench_sql.py --out /data/catalogs --pdr1 /data/mock-large --scale large

``--out`` is the output directory of ``dexdb ingest`` (views and macros from ``dexdb.sqlload`` and the
``OUT/dexdb-shell`` launcher), ``--pdr1`` the tree it was ingested from (the HDF5 files that PyTables
reads). Nothing under either is written: inputs, EXPLAIN ANALYZE profiles and the scratch write of the
grouping go to ``--work`` (a temporary directory by default, deleted at the end).

Every comparison uses the same inputs in the same run: one cone centre (a detection drawn with
``--seed``), 1,000 detectids drawn among the rows of ``/Spectra`` in ``detect/detect_hdr*.h5``,
100,000 positions drawn within 1.2" of random detections (so that most match), one HPSC2 position for
the grouping cone. Each query runs once to warm the caches ("first") and then ``--runs`` times; the
table reports the median of those runs. Each group of methods runs in its own Python process, so
that one method's memory (astropy's 21M-row arrays, DuckDB's buffers, dask) neither inflates another's
figure nor adds up; the peak RSS of each process is reported. DuckDB runs with its default threads (the
machine's cores) and ``memory_limit = DUCKDB_MEMORY_LIMIT``, in Python and in the CLI.

Methods:

* SQL, Python: ``dexdb.sqlload.connect(OUT)``, ``con.sql(query).to_arrow_table()`` (or numpy);
* SQL, CLI ``.timer``: one ``OUT/dexdb-shell`` session reading the queries from stdin with ``.timer on``
  and ``.mode trash``; the figure is the CLI's own "Run Time real";
* SQL, CLI ``-c``: wall time of ``OUT/dexdb-shell -c QUERY`` minus the median wall time of
  ``OUT/dexdb-shell -c "SELECT 1"`` (the shell's start and the reading of ``dexdb.sql``); each call is a
  new DuckDB process, so DuckDB's own caches are cold and only the OS page cache is warm;
* the cone's ``EXPLAIN`` alone, in Python and in the CLI: binding and planning the macro, which every
  cone pays before it reads a byte;
* the CLI and Python must time the same macros: when ``OUT/dexdb.sql`` (written by the ingest) no longer
  has the code of ``sql/*.sql``, the CLI runs what the launcher runs with an entry point regenerated from
  the package into the work directory; the table's header says which, and whether ``sql/`` changed
  during the run;
* astropy: ``SkyCoord.separation`` over every row (arrays loaded once as float64, SkyCoord built once;
  timed: separation + filter), ``search_around_sky`` (timed with a new catalogue SkyCoord per run, so
  that its KD-tree is built in the call as in a one-off script, and again with the tree cached);
* PyTables cone: as ``hetdex_api.detections.Detections.query_by_coord`` on the DetectIndex: healpy
  ``query_disc`` (RING, Nside 2**15) with radius + 6", ``read_where('healpix == p')`` per pixel (the
  ``healpix`` column has a CSI index), then the exact astropy separation; the per-pixel tables are
  concatenated once rather than ``vstack``-ed one by one as hetdex_api does, which only favours it;
* PyTables spectra: ``Spectra.read_coordinates`` per file with row numbers from a detectid -> (file,
  row) map built from each file's CSI detectid index before timing; also with ``get_where_list`` per id;
* lsdb: ``lsdb.open_catalog(OUT/detections)`` once, then ``cone_search(...).compute()``; cross-match with
  ``lsdb.from_dataframe`` of the positions + ``crossmatch(..., n_neighbors=...)`` (the margin catalog
  written by the ingest is used);
* grouping: ``dexdb.ingest.source_groups`` on the ingested ``sources`` (read, FoF, tables; and the
  whole write of both catalogs to the work directory), the ``fof_groups`` macro over a cone of
  ``sources``, and the greedy per-row loop of the PDR1 notes (``SkyCoord.separation`` of each row against
  all rows) on subsets of the nearest HPSC2 rows, extrapolated to all rows.

The machine's load average is recorded at the start and the end. The markdown table is printed and,
unless ``--no-append``, added to RESULTS.md under the heading "SQL layer" with the date and scale.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import logging
import math
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
HEADING = "## SQL layer (`tests/benchmarks/bench_sql.py`)"
DUCKDB_MEMORY_LIMIT = "3GB"
N_WAVE = 1036
CONES_ARCSEC = (3.0, 37.0, 1800.0)
N_SPECTRA = 1000
N_POSITIONS = 100_000
XMATCH_ARCSEC = 1.5
POSITION_JITTER_ARCSEC = 1.2
LINKING_ARCSEC = 1.5
GROUP_CONE_ARCSEC = (3600.0, 1800.0)  # radius 1 deg, and 0.5 deg (a cone 1 deg across)
GREEDY_SUBSETS = (1000, 2000)
LSDB_ALL_PAIRS_NEIGHBOURS = 64
HETDEX_NSIDE = 2**15
HETDEX_PAD_ARCSEC = 6.0

# The SQL under test (macros of sql/20_sky.sql, 30_spectra.sql, 50_groups.sql). {name} fields are filled in.
MACROS = {
    "cone": "cone",
    "xmatch": "xmatch",
    "spectra": "spectra_by_detectid",
    "spectrum": "spectrum_by_detectid",
    "fof": "fof_groups",
}
CONE_SQL = "SELECT * FROM cone('detections', {ra!r}, {dec!r}, {radius!r})"
SPECTRUM_SQL = "SELECT * FROM spectrum_by_detectid({detectid})"
SPECTRA_LIST_SQL = "SELECT detectid, spec, spec_err FROM spectra_by_detectid({id_list})"
SPECTRA_TABLE_SQL = (
    "SELECT detectid, spec, spec_err FROM spectra_by_detectid((SELECT list(detectid ORDER BY ord) FROM bench_ids))"
)
XMATCH_SQL = "SELECT pos_id, detectid, dist_arcsec FROM xmatch('bench_positions', 'detections', {radius!r})"
XMATCH_NEAREST_SQL = (
    "SELECT pos_id, detectid, dist_arcsec FROM xmatch('bench_positions', 'detections', {radius!r}, nearest := true)"
)
GROUP_CONE_SQL = (
    "WITH bench_cone AS (SELECT source_id, RA, DEC FROM cone('sources', {ra!r}, {dec!r}, {radius!r})) "
    "SELECT source_id, group_id, group_size FROM fof_groups('bench_cone', {linking!r})"
)
GROUP_CONE_ONLY_SQL = "SELECT source_id, RA, DEC FROM cone('sources', {ra!r}, {dec!r}, {radius!r})"
GROUP_TABLE_SQL = "SELECT source_id, group_id, group_size FROM fof_groups('bench_cone_rows', {linking!r})"

_RESULT_MARK = "@@bench_sql_result@@ "
_CLI_TIME = re.compile(r"Run Time \(s\): real ([0-9.]+)")


# ---------------------------------------------------------------------------------------------------
# Measuring


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def measure(fn, runs: int) -> dict:
    """Run ``fn`` once (first) and then ``runs`` times; ``fn`` returns the number of result rows."""
    started = time.perf_counter()
    n = fn()
    first = time.perf_counter() - started
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        n_again = fn()
        times.append(time.perf_counter() - started)
        if n_again != n:
            n = f"{n} / {n_again}"  # a method whose result changes between runs is reported, not hidden
    return {"rows": n, "first_s": first, "runs_s": times, "median_s": statistics.median(times)}


def row(query: str, method: str, result: dict | None = None, **extra) -> dict:
    entry = {"query": query, "method": method}
    entry.update(result or {})
    entry.update(extra)
    return entry


def failed(query: str, method: str, error: BaseException | str) -> dict:
    text = " ".join(str(error).split())
    return row(query, method, status="failed", note=text[:300])


def connect(out: Path):
    from dexdb import sqlload

    con = sqlload.connect(out)
    con.execute(f"SET memory_limit = '{DUCKDB_MEMORY_LIMIT}'")
    return con


def missing_macros(con, names) -> list[str]:
    present = {r[0] for r in con.sql("SELECT DISTINCT function_name FROM duckdb_functions()").fetchall()}
    return [n for n in names if n not in present]


def explain(con, sql: str, work: Path, label: str) -> None:
    """EXPLAIN ANALYZE of ``sql`` into work/profiles/label.txt (for the queries that miss a goal)."""
    target = work / "profiles"
    target.mkdir(exist_ok=True)
    try:
        text = "\n".join(str(r[-1]) for r in con.sql(f"EXPLAIN ANALYZE {sql}").fetchall())
    except Exception as exc:  # noqa: BLE001 - a failing profile is reported in the file
        text = f"EXPLAIN ANALYZE failed: {exc}"
    (target / f"{label}.txt").write_text(sql + "\n\n" + text + "\n")


def sql_method(con, sql: str, runs: int) -> dict:
    return measure(lambda: con.sql(sql).to_arrow_table().num_rows, runs)


def cli_env() -> dict:
    env = dict(os.environ)
    env.pop("DUCKDB_NO_COLOR", None)
    return env


def cli_command(cfg: dict) -> list[str]:
    """``OUT/dexdb-shell``; or, when ``OUT/dexdb.sql`` (written at ingest) no longer has the code of
    ``sql/*.sql`` that Python loads, what the launcher runs with an entry point regenerated from the
    package into the work directory, so that the CLI and Python time the same macros."""
    out = Path(cfg["out"])
    if not cfg.get("cli_entry"):
        return [str(out / "dexdb-shell")]
    quoted = str(out).replace("'", "''")
    return ["duckdb", "-cmd", f"SET file_search_path = '{quoted}'", "-cmd", f'.read "{cfg["cli_entry"]}"']


def cli_timer(cmd: list[str], queries: dict[str, str], runs: int) -> dict[str, dict]:
    """One CLI session: each query 1 + runs times under .timer on; the CLI's real times."""
    lines = [f"SET memory_limit = '{DUCKDB_MEMORY_LIMIT}';", ".mode trash", ".timer on"]
    for sql in queries.values():
        lines += [sql.rstrip(";") + ";"] * (1 + runs)
    proc = subprocess.run(
        cmd, input="\n".join(lines) + "\n", capture_output=True, text=True, env=cli_env(), check=False
    )
    times = [float(t) for t in _CLI_TIME.findall(proc.stdout + proc.stderr)]
    if proc.returncode != 0 or len(times) != len(queries) * (1 + runs):
        message = (proc.stderr or proc.stdout).strip().splitlines()
        raise RuntimeError(f"dexdb-shell exit {proc.returncode}, {len(times)} timings: {' | '.join(message[:3])}")
    found = {}
    for k, name in enumerate(queries):
        mine = times[k * (1 + runs) : (k + 1) * (1 + runs)]
        found[name] = {"first_s": mine[0], "runs_s": mine[1:], "median_s": statistics.median(mine[1:])}
    return found


def cli_wall(cmd: list[str], sql: str) -> float:
    started = time.perf_counter()
    proc = subprocess.run(
        [*cmd, "-cmd", f"SET memory_limit = '{DUCKDB_MEMORY_LIMIT}'", "-c", sql],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=cli_env(), check=False,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"dexdb-shell -c exit {proc.returncode}: {proc.stderr.strip()[:200]}")
    return elapsed


def cli_minus_startup(cmd: list[str], queries: dict[str, str], runs: int) -> dict[str, dict]:
    startup = [cli_wall(cmd, "SELECT 1") for _ in range(1 + runs)][1:]
    base = statistics.median(startup)
    found = {"_startup": {"median_s": base, "runs_s": startup}}
    for name, sql in queries.items():
        walls = [cli_wall(cmd, sql) for _ in range(1 + runs)]
        net = [w - base for w in walls]
        found[name] = {"first_s": net[0], "runs_s": net[1:], "median_s": statistics.median(net[1:])}
    return found


def load_detection_positions(out: Path):
    """ra, dec of every detection as float64 numpy arrays (the catalog's float32 values), read file by
    file with pyarrow so that no second copy of 21M rows is held by a query engine."""
    import numpy as np
    import pyarrow.parquet as pq
    from dexdb.ingest.hats_layout import partition_files

    files = [f.path for f in partition_files(out / "detections")]
    sizes = [pq.ParquetFile(path).metadata.num_rows for path in files]
    ra, dec = np.empty(sum(sizes)), np.empty(sum(sizes))
    start = 0
    for path, size in zip(files, sizes, strict=True):
        part = pq.read_table(path, columns=["ra", "dec"])
        ra[start : start + size] = part["ra"].to_numpy()
        dec[start : start + size] = part["dec"].to_numpy()
        start += size
    return ra, dec


# ---------------------------------------------------------------------------------------------------
# Inputs, shared by every method


def prepare(cfg: dict) -> dict:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import tables

    out, work, seed = Path(cfg["out"]), Path(cfg["work"]), cfg["seed"]
    con = connect(out)
    counts = {
        name: con.sql(f"SELECT count(*) FROM {name}").fetchall()[0][0]
        for name in ("detections", "detection_spectra", "sources")
    }
    # Deterministic draws: the rows with the smallest hash of (id, seed).
    ra, dec = con.sql(
        f"SELECT ra::DOUBLE, dec::DOUBLE FROM detections ORDER BY hash(detectid, {seed}) LIMIT 1"
    ).fetchall()[0]
    src_ra, src_dec = con.sql(
        f"SELECT RA::DOUBLE, DEC::DOUBLE FROM sources ORDER BY hash(source_id, {seed}) LIMIT 1"
    ).fetchall()[0]
    drawn = con.sql(
        f"SELECT ra::DOUBLE AS ra, dec::DOUBLE AS dec FROM detections ORDER BY hash(detectid, {seed + 1}) "
        f"LIMIT {N_POSITIONS}"
    ).fetchnumpy()
    con.close()

    rng = np.random.default_rng(seed)
    offset = np.radians(rng.uniform(0.0, POSITION_JITTER_ARCSEC, N_POSITIONS) / 3600.0)
    angle = rng.uniform(0.0, 2 * np.pi, N_POSITIONS)
    pos_ra, pos_dec = offset_positions(drawn["ra"], drawn["dec"], offset, angle)
    positions = pa.table({"pos_id": np.arange(N_POSITIONS, dtype=np.int64), "ra": pos_ra, "dec": pos_dec})
    pq.write_table(positions, work / "positions.parquet")

    ids = []
    for path in sorted(glob.glob(str(Path(cfg["pdr1"]) / "detect" / "detect_hdr*.h5"))):
        with tables.open_file(path) as h5:
            ids.append(h5.root.Spectra.cols.detectid.index.read_sorted())
    ids = np.unique(np.concatenate(ids))
    picked = rng.choice(ids, N_SPECTRA, replace=False)
    np.save(work / "detectids.npy", picked)
    digest, cli_entry = sql_for_cli(out, work)
    return {
        "sql_code": digest,
        "cli_entry": cli_entry,
        "counts": counts,
        "cone_centre": [ra, dec],
        "group_centre": [src_ra, src_dec],
        "n_spectra_ids_in_h5": int(ids.size),
    }


def sql_digest(out: Path) -> str:
    """A digest of the code of the statements Python loads for OUT (sql/*.sql, comments dropped)."""
    import hashlib

    from dexdb import sqlload

    loaded = [s.code for s in sqlload.applicable(sqlload.catalogs_in(out))]
    return hashlib.sha256("\n".join(loaded).encode()).hexdigest()[:12]


def sql_for_cli(out: Path, work: Path) -> tuple[str, str | None]:
    """The SQL digest, and None when OUT/dexdb.sql (written at ingest) has the code Python loads, else
    the path of an entry point regenerated from the package for the CLI: the macro files may change
    after an ingest, and the CLI must time the same code as Python."""
    from dexdb import sqlload

    loaded = [s.code for s in sqlload.applicable(sqlload.catalogs_in(out))]
    entry = [s.code for s in sqlload.split_statements((out / sqlload.ENTRY_POINT).read_text(encoding="utf-8"))]
    if loaded == entry:
        return sql_digest(out), None
    regenerated = work / sqlload.ENTRY_POINT
    regenerated.write_text(sqlload.entry_point_sql(sqlload.catalogs_in(out)), encoding="utf-8")
    return sql_digest(out), str(regenerated)


def offset_positions(ra, dec, offset_rad, angle):
    """Points offset_rad away from (ra, dec) in direction angle (exact on the sphere)."""
    import numpy as np

    lat, lon = np.radians(dec), np.radians(ra)
    new_lat = np.arcsin(np.sin(lat) * np.cos(offset_rad) + np.cos(lat) * np.sin(offset_rad) * np.cos(angle))
    new_lon = lon + np.arctan2(
        np.sin(angle) * np.sin(offset_rad) * np.cos(lat), np.cos(offset_rad) - np.sin(lat) * np.sin(new_lat)
    )
    return np.degrees(new_lon) % 360.0, np.degrees(new_lat)


# ---------------------------------------------------------------------------------------------------
# Cone search


def cone_label(radius: float) -> str:
    return f'cone {radius:g}"' if radius < 60 else f"cone {radius / 3600:g}°"


def cone_sql(cfg: dict) -> list[dict]:
    out, runs, work = Path(cfg["out"]), cfg["runs"], Path(cfg["work"])
    ra, dec = cfg["cone_centre"]
    con = connect(out)
    rows = []
    if missing := missing_macros(con, [MACROS["cone"]]):
        return [failed(cone_label(r), "SQL macro, Python", f"macro missing: {missing}") for r in CONES_ARCSEC]
    for radius in CONES_ARCSEC:
        sql = CONE_SQL.format(ra=ra, dec=dec, radius=radius)
        try:
            rows.append(row(cone_label(radius), "SQL `cone`, Python", sql_method(con, sql, runs), sql=sql))
            rows.append(
                row(cone_label(radius), "SQL `cone`, Python, `EXPLAIN` only (bind + plan)",
                    measure(lambda sql=sql: len(con.sql("EXPLAIN " + sql).fetchall()) and None, runs))
            )  # fmt: skip
            explain(con, sql, work, f"cone_{radius:g}")
        except Exception as exc:  # noqa: BLE001 - a broken macro is a result
            rows.append(failed(cone_label(radius), "SQL `cone`, Python", exc))
    return rows


def cone_cli(cfg: dict) -> list[dict]:
    runs = cfg["runs"]
    ra, dec = cfg["cone_centre"]
    queries = {cone_label(r): CONE_SQL.format(ra=ra, dec=dec, radius=r) for r in CONES_ARCSEC}
    rows = run_cli(cfg, queries, runs, "SQL `cone`")
    plans = {cone_label(r): "EXPLAIN " + CONE_SQL.format(ra=ra, dec=dec, radius=r) for r in CONES_ARCSEC}
    try:
        timed = cli_timer(cli_command(cfg), plans, runs)
        rows += [row(name, "SQL `cone`, CLI `.timer`, `EXPLAIN` only (bind + plan)", timed[name]) for name in plans]
    except Exception as exc:  # noqa: BLE001
        rows += [failed(name, "SQL `cone`, CLI `.timer`, `EXPLAIN` only (bind + plan)", exc) for name in plans]
    return rows


def run_cli(cfg: dict, queries: dict[str, str], runs: int, what: str) -> list[dict]:
    cmd = cli_command(cfg)
    rows = []
    try:
        timed = cli_timer(cmd, queries, runs)
        rows += [row(name, f"{what}, CLI `.timer`", timed[name]) for name in queries]
    except Exception as exc:  # noqa: BLE001
        rows += [failed(name, f"{what}, CLI `.timer`", exc) for name in queries]
    try:
        walls = cli_minus_startup(cmd, queries, runs)
        startup = walls.pop("_startup")["median_s"]
        rows += [
            row(name, f"{what}, CLI `-c` − startup", walls[name], note=f"startup {startup * 1000:.0f} ms")
            for name in queries
        ]
    except Exception as exc:  # noqa: BLE001
        rows += [failed(name, f"{what}, CLI `-c` − startup", exc) for name in queries]
    return rows


def cone_astropy(cfg: dict) -> list[dict]:
    import astropy.units as u
    import numpy as np
    from astropy.coordinates import SkyCoord

    ra, dec = load_detection_positions(Path(cfg["out"]))
    coords = SkyCoord(ra, dec, unit="deg")
    del ra, dec
    centre = SkyCoord(cfg["cone_centre"][0], cfg["cone_centre"][1], unit="deg")
    rows = []
    for radius in CONES_ARCSEC:
        limit = radius * u.arcsec

        def run(limit=limit):
            return int(np.flatnonzero(coords.separation(centre) <= limit).size)

        rows.append(row(cone_label(radius), "astropy `separation`, all rows", measure(run, cfg["runs"])))
    return rows


def cone_pytables(cfg: dict) -> list[dict]:
    import astropy.units as u
    import healpy as hp
    import numpy as np
    import tables
    from astropy.coordinates import SkyCoord

    ra, dec = cfg["cone_centre"]
    centre = SkyCoord(ra, dec, unit="deg")
    rows = []
    with tables.open_file(Path(cfg["pdr1"]) / "detect" / "detect_index_hdr5.h5") as h5:
        index = h5.root.DetectIndex
        for radius in CONES_ARCSEC:

            def run(radius=radius):
                vec = hp.ang2vec(ra, dec, lonlat=True)
                pixels = hp.query_disc(HETDEX_NSIDE, vec, np.radians((radius + HETDEX_PAD_ARCSEC) / 3600.0))
                found = np.concatenate([index.read_where("healpix == p", condvars={"p": p}) for p in pixels])
                sep = SkyCoord(found["ra"].astype(np.float64), found["dec"].astype(np.float64), unit="deg").separation(
                    centre
                )
                return int(found[sep <= radius * u.arcsec].size)

            n_pixels = hp.query_disc(
                HETDEX_NSIDE, hp.ang2vec(ra, dec, lonlat=True), np.radians((radius + HETDEX_PAD_ARCSEC) / 3600.0)
            ).size
            rows.append(
                row(
                    cone_label(radius),
                    "PyTables `read_where` per pixel (hetdex_api)",
                    measure(run, cfg["runs"]),
                    note=f"{n_pixels:,} Nside-32768 pixels",
                )
            )
    return rows


def cone_lsdb(cfg: dict) -> list[dict]:
    import lsdb

    ra, dec = cfg["cone_centre"]
    path = Path(cfg["out"]) / "detections"

    def open_only():
        lsdb.open_catalog(path)
        return 1

    opened = measure(open_only, cfg["runs"])
    catalog = lsdb.open_catalog(path)
    rows = []
    for radius in CONES_ARCSEC:

        def run(radius=radius):
            return len(catalog.cone_search(ra, dec, radius).compute(progress_bar=False))

        rows.append(
            row(
                cone_label(radius),
                "lsdb `cone_search`",
                measure(run, cfg["runs"]),
                note=f"open_catalog once, {opened['median_s'] * 1000:.0f} ms",
            )
        )
    return rows


# ---------------------------------------------------------------------------------------------------
# Spectra


def spectra_arrays(table):
    import numpy as np

    spec = table["spec"].combine_chunks()
    err = table["spec_err"].combine_chunks()
    return (
        np.asarray(spec.flatten().to_numpy(zero_copy_only=False)).reshape(-1, N_WAVE),
        np.asarray(err.flatten().to_numpy(zero_copy_only=False)).reshape(-1, N_WAVE),
    )


def spectra_sql(cfg: dict) -> list[dict]:
    import numpy as np
    import pyarrow as pa

    out, runs, work = Path(cfg["out"]), cfg["runs"], Path(cfg["work"])
    ids = np.load(work / "detectids.npy")
    con = connect(out)
    if missing := missing_macros(con, [MACROS["spectra"], MACROS["spectrum"]]):
        return [failed(q, "SQL, Python", f"macro missing: {missing}") for q in ("1 spectrum", "1,000 spectra")]
    rows = []
    one = SPECTRUM_SQL.format(detectid=int(ids[0]))
    rows.append(row("1 spectrum by detectid", "SQL `spectrum_by_detectid`, Python", sql_method(con, one, runs)))
    explain(con, one, work, "spectrum_one")

    id_list = "[" + ", ".join(str(int(i)) for i in ids) + "]"
    by_list = SPECTRA_LIST_SQL.format(id_list=id_list)

    def run_list():
        spec, err = spectra_arrays(con.sql(by_list).to_arrow_table())
        assert spec.shape == (N_SPECTRA, N_WAVE) and err.shape == spec.shape
        return int(np.isfinite(spec[:, 0]).sum())

    rows.append(
        row(
            "1,000 spectra → numpy (1000, 1036)",
            "SQL `spectra_by_detectid([...])`, Python",
            measure(run_list, runs),
            note="list literal; spec + spec_err; rows = ids found",
        )
    )
    explain(con, by_list, work, "spectra_1000_list")

    con.register("bench_ids_arrow", pa.table({"ord": np.arange(ids.size), "detectid": ids}))
    con.execute("CREATE TEMP TABLE bench_ids AS SELECT * FROM bench_ids_arrow")

    def run_table():
        spec, err = spectra_arrays(con.sql(SPECTRA_TABLE_SQL).to_arrow_table())
        assert spec.shape == (N_SPECTRA, N_WAVE) and err.shape == spec.shape
        return int(np.isfinite(spec[:, 0]).sum())

    rows.append(
        row(
            "1,000 spectra → numpy (1000, 1036)",
            "SQL `spectra_by_detectid((SELECT list(...)))`, Python",
            measure(run_table, runs),
            note="ids in a temp table",
        )
    )
    explain(con, SPECTRA_TABLE_SQL, work, "spectra_1000_table")
    return rows


def spectra_cli(cfg: dict) -> list[dict]:
    import numpy as np

    ids = np.load(Path(cfg["work"]) / "detectids.npy")
    queries = {
        "1 spectrum by detectid": SPECTRUM_SQL.format(detectid=int(ids[0])),
        "1,000 spectra → numpy (1000, 1036)": SPECTRA_LIST_SQL.format(
            id_list="[" + ", ".join(str(int(i)) for i in ids) + "]"
        ),
    }
    rows = run_cli(cfg, queries, cfg["runs"], "SQL spectra macro")
    for r in rows:
        if r["query"].startswith("1,000"):
            r["note"] = (r.get("note", "") + "; arrays rendered by the CLI, not numpy").lstrip("; ")
    return rows


def spectra_pytables(cfg: dict) -> list[dict]:
    import numpy as np
    import tables

    ids = np.load(Path(cfg["work"]) / "detectids.npy")
    files = sorted(glob.glob(str(Path(cfg["pdr1"]) / "detect" / "detect_hdr*.h5")))
    handles = [tables.open_file(path) for path in files]
    try:
        # detectid -> (file, row) from the CSI index of every file: built before timing.
        sorted_ids, where = [], []
        for k, h5 in enumerate(handles):
            index = h5.root.Spectra.cols.detectid.index
            values = index.read_sorted()
            sorted_ids.append(values)
            where.append(np.column_stack((np.full(values.size, k), index.read_indices().astype(np.int64))))
        sorted_ids, where = np.concatenate(sorted_ids), np.concatenate(where)
        order = np.argsort(sorted_ids, kind="stable")
        sorted_ids, where = sorted_ids[order], where[order]
        located = where[np.searchsorted(sorted_ids, ids)]
        assert (sorted_ids[np.searchsorted(sorted_ids, ids)] == ids).all()

        def read(rows_of_file):
            spec = np.empty((ids.size, N_WAVE), np.float32)
            err = np.empty((ids.size, N_WAVE), np.float32)
            for k, h5 in enumerate(handles):
                mine = np.flatnonzero(located[:, 0] == k)
                if mine.size == 0:
                    continue
                coords = rows_of_file(k, mine)
                by_row = np.argsort(coords)
                records = h5.root.Spectra.read_coordinates(coords[by_row])
                spec[mine[by_row]] = records["spec1d"]
                err[mine[by_row]] = records["spec1d_err"]
            return spec, err

        def run_map():
            spec, _ = read(lambda k, mine: located[mine, 1])
            return int(np.isfinite(spec[:, 0]).sum())

        def run_csi():
            def rows_of_file(k, mine):
                table = handles[k].root.Spectra
                return np.array([table.get_where_list("detectid == v", condvars={"v": ids[i]})[0] for i in mine])

            spec, _ = read(rows_of_file)
            return int(np.isfinite(spec[:, 0]).sum())

        one = ids[:1]

        def run_one():
            k, r = located[0]
            record = handles[k].root.Spectra.read_coordinates(np.array([r]))
            return int(record.size) if record["detectid"][0] == one[0] else 0

        return [
            row("1 spectrum by detectid", "PyTables `read_coordinates` (id→row map)", measure(run_one, cfg["runs"])),
            row("1,000 spectra → numpy (1000, 1036)", "PyTables `read_coordinates` (id→row map)",
                measure(run_map, cfg["runs"]), note="spec1d + spec1d_err; map built before timing"),
            row("1,000 spectra → numpy (1000, 1036)", "PyTables `get_where_list` per id (CSI) + `read_coordinates`",
                measure(run_csi, cfg["runs"])),
        ]  # fmt: skip
    finally:
        for h5 in handles:
            h5.close()


# ---------------------------------------------------------------------------------------------------
# Cross-match


def xmatch_sql(cfg: dict) -> list[dict]:
    import pyarrow.parquet as pq

    out, runs, work = Path(cfg["out"]), cfg["runs"], Path(cfg["work"])
    con = connect(out)
    query = f'cross-match 100k × detections {XMATCH_ARCSEC:g}"'
    if missing := missing_macros(con, [MACROS["xmatch"]]):
        return [failed(query, "SQL `xmatch`, Python", f"macro missing: {missing}")]
    con.register("bench_positions_arrow", pq.read_table(work / "positions.parquet"))
    con.execute("CREATE TEMP TABLE bench_positions AS SELECT * FROM bench_positions_arrow")
    rows = []
    for sql, method in (
        (XMATCH_SQL.format(radius=XMATCH_ARCSEC), "SQL `xmatch`, all pairs, Python"),
        (XMATCH_NEAREST_SQL.format(radius=XMATCH_ARCSEC), "SQL `xmatch`, nearest, Python"),
    ):
        try:
            rows.append(row(query, method, sql_method(con, sql, runs), note="positions in a temp table"))
            explain(con, sql, work, "xmatch_" + ("nearest" if "nearest" in sql else "all"))
        except Exception as exc:  # noqa: BLE001
            rows.append(failed(query, method, exc))
    return rows


def xmatch_astropy(cfg: dict) -> list[dict]:
    import astropy.units as u
    import pyarrow.parquet as pq
    from astropy.coordinates import SkyCoord, search_around_sky

    positions = pq.read_table(Path(cfg["work"]) / "positions.parquet")
    mine = SkyCoord(positions["ra"].to_numpy(), positions["dec"].to_numpy(), unit="deg")
    ra, dec = load_detection_positions(Path(cfg["out"]))
    catalog = SkyCoord(ra, dec, unit="deg")
    del ra, dec
    limit = XMATCH_ARCSEC * u.arcsec
    query = f'cross-match 100k × detections {XMATCH_ARCSEC:g}"'

    def fresh():
        # As a new SkyCoord would: no cached cartesian representation and no KD-tree (astropy keeps
        # both in .cache), so the call builds them; the previous ones are freed first.
        catalog.cache.clear()
        mine.cache.clear()
        return int(search_around_sky(mine, catalog, limit)[0].size)

    rows = [row(query, "astropy `search_around_sky` (KD-tree built in the call)", measure(fresh, cfg["runs"]))]
    rows.append(
        row(query, "astropy `search_around_sky` (KD-tree cached)",
            measure(lambda: int(search_around_sky(mine, catalog, limit)[0].size), cfg["runs"]))
    )  # fmt: skip
    return rows


def xmatch_lsdb(cfg: dict) -> list[dict]:
    import lsdb
    import pyarrow.parquet as pq

    frame = pq.read_table(Path(cfg["work"]) / "positions.parquet").to_pandas()
    detections = lsdb.open_catalog(Path(cfg["out"]) / "detections", columns=["detectid", "ra", "dec"])
    query = f'cross-match 100k × detections {XMATCH_ARCSEC:g}"'
    rows = []
    for neighbours, label in ((1, "nearest"), (LSDB_ALL_PAIRS_NEIGHBOURS, "all pairs")):

        def run(neighbours=neighbours):
            left = lsdb.from_dataframe(frame, ra_column="ra", dec_column="dec", catalog_name="positions")
            matched = left.crossmatch(
                detections, radius_arcsec=XMATCH_ARCSEC, n_neighbors=neighbours, suffixes=("", "_det"),
                suffix_method="overlapping_columns",
            )  # fmt: skip
            return len(matched.compute(progress_bar=False))

        rows.append(
            row(
                query,
                f"lsdb `from_dataframe` + `crossmatch`, {label}",
                measure(run, cfg["runs"]),
                note=f"n_neighbors={neighbours}",
            )
        )
    return rows


# ---------------------------------------------------------------------------------------------------
# Grouping


def groups_ingest(cfg: dict) -> list[dict]:
    from dexdb.ingest import source_groups
    from dexdb.ingest.hats_writer import write_catalog

    sources = Path(cfg["out"]) / "sources"
    scratch = Path(cfg["work"]) / "groups-write"
    query = f'FoF whole HPSC2 at {LINKING_ARCSEC:g}"'
    timings = {"read": [], "fof_tables": []}

    def run():
        started = time.perf_counter()
        positions = source_groups.read_positions(sources)
        read = time.perf_counter()
        groups, _ = source_groups.group_tables(positions, LINKING_ARCSEC)
        timings["read"].append(read - started)
        timings["fof_tables"].append(time.perf_counter() - read)
        return groups.num_rows

    compute = measure(run, cfg["runs"])
    split = (
        f"read {statistics.median(timings['read'][1:]):.2f} s + FoF and tables "
        f"{statistics.median(timings['fof_tables'][1:]):.2f} s; rows = groups"
    )

    def write_all():
        shutil.rmtree(scratch, ignore_errors=True)
        written = 0
        for product in source_groups.products_from_sources(sources, LINKING_ARCSEC):
            written += write_catalog(product.batches(), product.spec, scratch, workers=2).rows
        return written

    try:
        whole = row(
            query,
            "`source_groups`: products + `write_catalog` of both",
            measure(write_all, cfg["runs"]),
            note="written to the work directory; rows = groups + members",
        )
    except Exception as exc:  # noqa: BLE001
        whole = failed(query, "`source_groups`: products + `write_catalog` of both", exc)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return [row(query, "`source_groups`: read + FoF + tables", compute, note=split), whole]


def groups_macro(cfg: dict) -> list[dict]:
    out, runs, work = Path(cfg["out"]), cfg["runs"], Path(cfg["work"])
    ra, dec = cfg["group_centre"]
    con = connect(out)
    if missing := missing_macros(con, [MACROS["fof"], MACROS["cone"]]):
        return [failed("regroup 1° cone", "SQL `fof_groups`", f"macro missing: {missing}")]
    rows = []
    for radius in GROUP_CONE_ARCSEC:
        label = f"regroup cone r = {radius / 3600:g}° of `sources`"
        sql = GROUP_CONE_SQL.format(ra=ra, dec=dec, radius=radius, linking=LINKING_ARCSEC)
        try:
            rows.append(row(label, "SQL `cone` + `fof_groups`, Python", sql_method(con, sql, runs)))
            explain(con, sql, work, f"fof_cone_{radius:g}")
            rows.append(
                row(label, "SQL `cone` alone (its share)",
                    sql_method(con, GROUP_CONE_ONLY_SQL.format(ra=ra, dec=dec, radius=radius), runs))
            )  # fmt: skip
            con.execute(
                "CREATE OR REPLACE TEMP TABLE bench_cone_rows AS "
                + GROUP_CONE_ONLY_SQL.format(ra=ra, dec=dec, radius=radius)
            )
            rows.append(
                row(label, "SQL `fof_groups` on the cone's rows in a temp table",
                    sql_method(con, GROUP_TABLE_SQL.format(linking=LINKING_ARCSEC), runs))
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001
            rows.append(failed(label, "SQL `cone` + `fof_groups`, Python", exc))
    return rows


def greedy_groups(coords, linking) -> int:
    """The per-row loop of the PDR1 notes: each row's separation against all rows; an unassigned row
    opens a group, and the unassigned rows within the linking length join it. Returns the group count."""
    import numpy as np

    group = np.full(len(coords), -1, dtype=np.int64)
    n_groups = 0
    for i in range(len(coords)):
        near = coords[i].separation(coords) < linking
        if group[i] < 0:
            group[i] = n_groups
            n_groups += 1
        group[near & (group < 0)] = group[i]
    return n_groups


def groups_greedy(cfg: dict) -> list[dict]:
    import astropy.units as u
    import numpy as np
    from astropy.coordinates import SkyCoord

    con = connect(Path(cfg["out"]))
    src = con.sql("SELECT RA::DOUBLE AS ra, DEC::DOUBLE AS dec FROM sources").fetchnumpy()
    con.close()
    n_all = src["ra"].size
    everything = SkyCoord(src["ra"], src["dec"], unit="deg")
    centre = SkyCoord(*cfg["group_centre"], unit="deg")
    nearest_first = np.argsort(everything.separation(centre).deg, kind="stable")
    linking = LINKING_ARCSEC * u.arcsec
    query = f'greedy loop, {LINKING_ARCSEC:g}"'
    rows, per_row = [], {}
    for n in GREEDY_SUBSETS:
        subset = everything[np.sort(nearest_first[:n])]
        result = measure(lambda subset=subset: greedy_groups(subset, linking), cfg["runs"])
        per_row[n] = result["median_s"] / n
        quadratic = result["median_s"] * (n_all / n) ** 2
        rows.append(
            row(
                f"{query}, {n:,} rows nearest the group centre",
                "astropy `separation` per row (PDR1 notes)",
                result,
                note=f"rows = groups; × ({n_all:,}/{n:,})² = {fmt_time(quadratic)}",
                extrapolated_s=quadratic,
            )
        )
    # One row against every row: the loop's per-row cost at full size.
    one = measure(lambda: int((everything[0].separation(everything) < linking).sum()), cfg["runs"])
    (n1, t1), (n2, t2) = sorted(per_row.items())
    slope = (t2 - t1) / (n2 - n1)  # per-row cost = a + b n, from the two subsets
    fitted = n_all * (t1 + slope * (n_all - n1))
    rows.append(
        row(
            f"{query}, 1 row against all {n_all:,}",
            "astropy `separation` per row (PDR1 notes)",
            one,
            note=(
                f"× {n_all:,} rows = {fmt_time(one['median_s'] * n_all)}; per-row cost a + b·n fitted on "
                f"the subsets, × {n_all:,} rows = {fmt_time(fitted)}"
            ),
            extrapolated_s=one["median_s"] * n_all,
        )
    )
    return rows


# ---------------------------------------------------------------------------------------------------
# Orchestration

SECTIONS = {
    "prepare": prepare,
    "cone_sql": cone_sql,
    "cone_cli": cone_cli,
    "cone_astropy": cone_astropy,
    "cone_pytables": cone_pytables,
    "cone_lsdb": cone_lsdb,
    "spectra_sql": spectra_sql,
    "spectra_cli": spectra_cli,
    "spectra_pytables": spectra_pytables,
    "xmatch_sql": xmatch_sql,
    "xmatch_astropy": xmatch_astropy,
    "xmatch_lsdb": xmatch_lsdb,
    "groups_ingest": groups_ingest,
    "groups_macro": groups_macro,
    "groups_greedy": groups_greedy,
}
GROUPS = {
    "cone": ["cone_sql", "cone_cli", "cone_astropy", "cone_pytables", "cone_lsdb"],
    "spectra": ["spectra_sql", "spectra_cli", "spectra_pytables"],
    "xmatch": ["xmatch_sql", "xmatch_astropy", "xmatch_lsdb"],
    "groups": ["groups_ingest", "groups_macro", "groups_greedy"],
}


def worker_main(name: str, config_path: Path) -> None:
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)  # lsdb logs every column it renames
    cfg = json.loads(config_path.read_text())
    try:
        result = SECTIONS[name](cfg)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as a failed section
        import traceback

        traceback.print_exc()
        result = [failed(name, name, f"{type(exc).__name__}: {exc}")]
    print(_RESULT_MARK + json.dumps({"result": result, "peak_rss_gib": peak_rss_gib()}, default=str), flush=True)


def run_section(name: str, config_path: Path) -> tuple[object, float, float]:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", name, "--config", str(config_path)],
        stdout=subprocess.PIPE, text=True, check=False,
    )  # fmt: skip
    marked = [line for line in proc.stdout.splitlines() if line.startswith(_RESULT_MARK)]
    if not marked:
        return [failed(name, name, f"worker exit {proc.returncode}, no result")], float("nan"), 0.0
    payload = json.loads(marked[-1][len(_RESULT_MARK) :])
    return payload["result"], payload["peak_rss_gib"], time.perf_counter() - started


# ---------------------------------------------------------------------------------------------------
# Goals and the table


def by(rows, query_prefix, method_prefix):
    for r in rows:
        if r["query"].startswith(query_prefix) and r["method"].startswith(method_prefix) and "median_s" in r:
            return r
    return None


def short_name(method: str) -> str:
    """A method's name in the ratio notes."""
    for prefix, name in (
        ("astropy `search_around_sky` (KD-tree built", "astropy (tree built in the call)"),
        ("astropy `search_around_sky` (KD-tree cached", "astropy (tree cached)"),
        ("astropy", "astropy"),
        ("PyTables `read_where`", "PyTables"),
        ("PyTables `read_coordinates`", "PyTables (id→row map)"),
        ("lsdb", "lsdb"),
    ):
        if method.startswith(prefix):
            return name
    return method


def judge(rows: list[dict]) -> None:
    """Set r['goal'] and r['verdict'] on the rows that carry a goal."""

    def limit(r, seconds, text):
        r["goal"] = text
        r["verdict"] = "met" if r["median_s"] <= seconds else "missed"

    def ratio(r, other, factor, text):
        if other is None:
            return
        speedup = other["median_s"] / r["median_s"]
        shown = f"{speedup:.1f}" if speedup >= 1 else f"{speedup:.2g}"
        r.setdefault("ratios", []).append(f"{shown}× vs {short_name(other['method'])}")
        if factor is not None:
            r["goal"] = (r.get("goal", "") + "; " if r.get("goal") else "") + text
            ok = speedup >= factor
            r["verdict"] = "met" if ok and r.get("verdict", "met") == "met" else "missed"

    for r in rows:
        if "median_s" not in r:
            continue
        q, m = r["query"], r["method"]
        if q.startswith("cone") and m.startswith("SQL `cone`") and "EXPLAIN" not in m:
            limit(r, 0.050, "≤ 50 ms")
        elif q.startswith("1 spectrum") and m.startswith("SQL"):
            limit(r, 0.010, "≤ 10 ms")
        elif q.startswith("1,000 spectra") and m.startswith("SQL"):
            limit(r, 0.300, "≤ 300 ms")
            ratio(r, by(rows, q, "PyTables `read_coordinates`"), 1.0, "not slower than PyTables")
        elif q.startswith("cross-match") and m.startswith("SQL `xmatch`, all pairs"):
            ratio(r, by(rows, q, "astropy `search_around_sky` (KD-tree built"), 5.0, "≥ 5× astropy")
            ratio(r, by(rows, q, "astropy `search_around_sky` (KD-tree cached"), None, "")
            ratio(r, by(rows, q, "lsdb `from_dataframe` + `crossmatch`, all pairs"), 2.0, "≥ 2× lsdb")
        elif q.startswith("cross-match") and m.startswith("SQL `xmatch`, nearest"):
            ratio(r, by(rows, q, "lsdb `from_dataframe` + `crossmatch`, nearest"), 2.0, "≥ 2× lsdb")
        elif q.startswith("FoF whole") and m.endswith("read + FoF + tables"):
            limit(r, 5.0, "≤ 5 s")
        elif q.startswith("regroup cone r = 1°") and m == "SQL `cone` + `fof_groups`, Python":
            limit(r, 0.200, "≤ 200 ms")
    for r in rows:  # the sky's SQL figures are also compared with the other methods of their query
        q, m = r["query"], r["method"]
        if q.startswith("cone") and m.startswith("SQL `cone`") and "EXPLAIN" not in m and "median_s" in r:
            for other in ("astropy", "PyTables", "lsdb"):
                ratio(r, by(rows, q, other), None, "")


def fmt_time(seconds) -> str:
    if seconds is None or math.isnan(seconds):
        return ""
    if seconds >= 3600:
        return f"{seconds / 3600:,.1f} h"
    if seconds >= 10:
        return f"{seconds:,.1f} s"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds < 0.001:
        return f"{seconds * 1000:.2f} ms"
    return f"{seconds * 1000:.1f} ms" if seconds < 0.1 else f"{seconds * 1000:.0f} ms"


def fmt_rows(n) -> str:
    return f"{n:,}" if isinstance(n, int) else ("" if n is None else str(n))


def markdown(rows: list[dict], header: dict) -> str:
    lines = [
        f"### {header['date']}, scale `{header['scale']}`",
        "",
        (
            f"Data: {header['counts_text']}. {header['machine']}. Load average (1/5/15 min) at start "
            f"{header['load_start']}, at end {header['load_end']}. {header['versions']}. "
            f'Median of {header["runs"]} runs after one warm-up run ("first"); DuckDB memory_limit '
            f"{DUCKDB_MEMORY_LIMIT}, default threads. Cone centre {header['cone_centre']}; grouping centre "
            f"{header['group_centre']}; seed {header['seed']}. SQL: {header['sql_code']}. Total {header['total']}."
        ),
        "",
        "Ratios in the notes: the other method's median divided by this row's (above 1: this row is faster).",
        "",
        "| query | method | rows | median | first | goal | verdict | notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        notes = "; ".join([*r.get("ratios", []), *([r["note"]] if r.get("note") else [])])
        if r.get("status") == "failed":
            lines.append(f"| {r['query']} | {r['method']} | | | | | **failed** | {notes} |")
            continue
        verdict = r.get("verdict", "")
        verdict = f"**{verdict}**" if verdict == "missed" else verdict
        lines.append(
            f"| {r['query']} | {r['method']} | {fmt_rows(r.get('rows'))} | {fmt_time(r.get('median_s'))} | "
            f"{fmt_time(r.get('first_s'))} | {r.get('goal', '')} | {verdict} | {notes} |"
        )
    lines += ["", "Peak RSS per process: " + ", ".join(f"{k} {v:.2f} GiB" for k, v in header["rss"].items()) + "."]
    return "\n".join(lines) + "\n"


def append_results(block: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    if HEADING not in text:
        RESULTS.write_text(text.rstrip("\n") + f"\n\n{HEADING}\n\n{block}")
        return
    start = text.index(HEADING) + len(HEADING)
    following = text.find("\n## ", start)
    end = len(text) if following < 0 else following + 1
    section = text[:end].rstrip("\n") + f"\n\n{block}"
    RESULTS.write_text(section + ("\n" + text[end:] if following >= 0 else ""))


def sql_note(cfg: dict, out: Path) -> str:
    text = f"code digest {cfg['sql_code']}"
    if cfg.get("cli_entry"):
        text += (
            " (`OUT/dexdb.sql`, written at ingest, has older macros: the CLI ran the launcher's command "
            "with an entry point regenerated from `sql/`)"
        )
    else:
        text += " (the CLI ran `OUT/dexdb-shell`)"
    if (now := sql_digest(out.absolute())) != cfg["sql_code"]:
        text += f"; **`sql/` changed during the run** (now {now}): sections may have run different macros"
    return text


def versions() -> str:
    import duckdb

    try:
        cli = subprocess.run(["duckdb", "--version"], capture_output=True, text=True, check=False).stdout.split()[0]
    except (OSError, IndexError):
        cli = "?"
    import astropy
    import lsdb
    import tables

    return (
        f"DuckDB Python {duckdb.__version__}, CLI {cli}; astropy {astropy.__version__}, PyTables "
        f"{tables.__version__}, lsdb {lsdb.__version__}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="output directory of dexdb ingest")
    parser.add_argument("--pdr1", type=Path, help="the PDR1 tree it was ingested from")
    parser.add_argument("--scale", default="large", help="mock scale, for the record (default: large)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs after the warm-up (default 5, at least 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--only", default="cone,spectra,xmatch,groups",
        help="comma-separated groups (" + ", ".join(GROUPS) + ") or single sections (cone_sql, xmatch_lsdb, ...)",
    )  # fmt: skip
    parser.add_argument("--work", type=Path, help="scratch directory (kept); default a temporary one (deleted)")
    parser.add_argument("--no-append", action="store_true", help="print the table without touching RESULTS.md")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args.worker, args.config)
        return
    if args.out is None or args.pdr1 is None:
        parser.error("--out and --pdr1 are required")
    if args.runs < 5:
        parser.error("--runs must be at least 5")
    wanted = [g.strip() for g in args.only.split(",") if g.strip()]
    if unknown := [g for g in wanted if g not in GROUPS and (g not in SECTIONS or g == "prepare")]:
        parser.error(f"unknown --only {unknown}")

    load_start = os.getloadavg()
    started = time.perf_counter()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_sql."))
    work.mkdir(parents=True, exist_ok=True)
    cfg = {
        "out": str(args.out.absolute()),
        "pdr1": str(args.pdr1.absolute()),
        "runs": args.runs,
        "seed": args.seed,
        "work": str(work.absolute()),
    }
    config_path = work / "config.json"
    config_path.write_text(json.dumps(cfg))
    rss = {}
    try:
        prepared, rss["prepare"], _ = run_section("prepare", config_path)
        if isinstance(prepared, list):
            raise SystemExit(f"preparing the inputs failed: {prepared}")
        cfg.update(prepared)
        config_path.write_text(json.dumps(cfg))
        rows = []
        for group in wanted:
            for name in GROUPS.get(group, [group]):
                print(f"[bench_sql] {name} ...", file=sys.stderr, flush=True)
                result, rss[name], seconds = run_section(name, config_path)
                print(f"[bench_sql] {name}: {seconds:.0f} s, peak RSS {rss[name]:.2f} GiB", file=sys.stderr, flush=True)
                rows += result
        judge(rows)
        order = {g: i for i, g in enumerate(['cone 3"', 'cone 37"', "cone 0.5°"])}
        rows.sort(key=lambda r: order.get(r["query"], 99) if r["query"].startswith("cone") else 50)
        load_end = os.getloadavg()
        counts = cfg["counts"]
        header = {
            "date": datetime.date.today().isoformat(),
            "scale": args.scale,
            "counts_text": (
                f"`{args.out}` from `{args.pdr1}`: {counts['detections']:,} detections, "
                f"{counts['detection_spectra']:,} detection spectra, {counts['sources']:,} HPSC2 rows"
            ),
            "machine": f"{os.cpu_count()} cores, {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB, "
            f"{platform.python_implementation()} {platform.python_version()}",
            "load_start": "/".join(f"{x:.2f}" for x in load_start),
            "load_end": "/".join(f"{x:.2f}" for x in load_end),
            "versions": versions(),
            "runs": args.runs,
            "seed": args.seed,
            "cone_centre": "({:.5f}, {:.5f})".format(*cfg["cone_centre"]),
            "group_centre": "({:.5f}, {:.5f})".format(*cfg["group_centre"]),
            "total": fmt_time(time.perf_counter() - started),
            "sql_code": sql_note(cfg, args.out),
            "rss": rss,
        }
        block = markdown(rows, header)
        print(block)
        (work / "rows.json").write_text(json.dumps(rows, indent=1, default=str))
        if not args.no_append:
            append_results(block)
            print(f"appended to {RESULTS}", file=sys.stderr)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
