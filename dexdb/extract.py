"""Batch aperture extraction: every target in every cube that covers it, to one Parquet file.

    >>> from dexdb.extract import extract
    >>> report = extract("catalogs", "targets.parquet", "pdr1", "spectra.parquet", radius=3.5, workers=2)

Targets: a Parquet, CSV or FITS table with columns ``ra`` and ``dec`` (degrees, any case) and an
optional id column (``id_column``; by default the first of source_id, detectid, id present), which
passes through so that the output joins back to the catalog the targets came from. The covering
cubes come from the SQL macro ``cubes_covering`` over the catalogs' ``ifu_index``; the cube files are
read under ``pdr1_dir`` in the release layout (as ``dexdb download`` writes it).

Output, one row per (target, covering cube), ordered by cube then target: ``target_row`` (0-based
row of the targets file), the id column, ``ra``, ``dec``, ``shotid``, ``ifuslot``, and ``spec``,
``spec_err`` (1e-17 erg/s/cm2/A) and ``apcor`` as FixedSizeList<float32>[1036], exactly as
:func:`dexdb.cube.aperture_spectrum` computes them (null when the aperture misses the cube). The
options are in the file's metadata under ``dexdb.extract``.

Resuming: tasks of consecutive rows each write one file into the sibling directory
``.<OUT name>.parts/`` (written aside, then renamed); running the same command again after an
interruption skips the finished tasks. OUT appears in one rename once every task is done. A
directory left by a different job (other targets, cubes or options) is discarded.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from tqdm import tqdm

from dexdb.constants import N_WAVE
from dexdb.cube import ALL_NONZERO, Bits, CubeError, aperture_spectra, bit_value, open_cube
from dexdb.sqlload import connect

ID_CANDIDATES = ("source_id", "detectid", "id")
SPECTRUM_COLUMNS = ("spec", "spec_err", "apcor")
POSITION_COLUMNS = ("target_row", "ra", "dec", "shotid", "ifuslot")
#: From this many positions on, a compressed cube is decompressed whole (~0.4 s) rather than window
#: by window (~0.05 s each, a window touching up to 4 x 65 tiles of 16 x 32 x 32 in each HDU).
LOAD_WHOLE_CUBE_AT = 8
MAX_TARGETS_PER_TASK = 256
METADATA_KEY = b"dexdb.extract"
JOB_FILE = "job.json"
WRITE_OPTIONS = {
    "compression": "zstd",
    "use_dictionary": ["ifuslot"],
    "use_byte_stream_split": ["ra", "dec", *(f"{name}.list.element" for name in SPECTRUM_COLUMNS)],
}


class ExtractError(Exception):
    """Bad targets, catalogs or cubes; the message names the file (and row or column)."""


@dataclass(frozen=True)
class Options:
    """The extraction arguments of :func:`dexdb.cube.aperture_spectrum`."""

    radius: float = 3.5
    exclude_bits: Bits = ALL_NONZERO
    keep_bits: Bits = None
    include_only_bits: Bits = None
    min_coverage: float = 0.20


@dataclass(frozen=True)
class ExtractReport:
    out_path: Path
    targets: int  # rows of the targets file
    covered: int  # targets inside at least one cube that was read
    rows: int  # (target, cube) pairs written
    cubes: int
    missing_cubes: tuple[str, ...]  # cube files absent under pdr1_dir, skipped on request
    resumed_tasks: int  # tasks found done from an earlier run
    seconds: float


def extract(catalog_dir: str | os.PathLike, targets_path: str | os.PathLike, pdr1_dir: str | os.PathLike,
            out_path: str | os.PathLike, options: Options = Options(), *, id_column: str | None = None,
            workers: int = 2, skip_missing: bool = False, overwrite: bool = False, progress: bool = True,
            targets_per_task: int | None = None, log: Callable[[str], None] = lambda _: None) -> ExtractReport:
    """Extract the aperture spectrum of every target in every cube covering it into ``out_path``.

    Raises ExtractError for unreadable targets, catalogs without ``ifu_index``, cube files missing
    under ``pdr1_dir`` (unless ``skip_missing``) and corrupt cubes, naming the file.
    """
    started = time.perf_counter()
    catalog_dir, targets_path, pdr1_dir, out_path = map(Path, (catalog_dir, targets_path, pdr1_dir, out_path))
    for name in ("exclude_bits", "keep_bits", "include_only_bits"):
        bit_value(getattr(options, name), name)
    if not options.radius > 0:
        raise ExtractError(f"radius must be a positive number of arcsec, got {options.radius}")
    if out_path.exists() and not overwrite:
        raise ExtractError(f"{out_path}: already exists; pass overwrite to replace it")
    if not pdr1_dir.is_dir():
        raise ExtractError(f"{pdr1_dir}: not a directory (expected a PDR1 tree with datacubes/)")

    targets, id_name = read_targets(targets_path, id_column)
    rows = _target_cube_rows(catalog_dir, targets, id_name)
    cube_files = pc.unique(rows["path"]).to_pylist()
    missing = tuple(path for path in cube_files if not (pdr1_dir / path).is_file())
    if missing and not skip_missing:
        shown = "\n  ".join(str(pdr1_dir / path) for path in missing[:5])
        raise ExtractError(
            f"{len(missing)} of {len(cube_files)} covering cubes are not under {pdr1_dir}, e.g.\n  {shown}\n"
            "fetch them with `dexdb cubes ... --urls urls.txt` and `dexdb download urls.txt --to PDR1_DIR`, "
            "or pass --skip-missing"
        )
    if missing:
        rows = rows.filter(pc.invert(pc.is_in(rows["path"], pa.array(missing))))
        log(f"skipping {len(missing)} cubes missing under {pdr1_dir}")
    log(f"{len(targets)} targets, {len(pc.unique(rows['target_row']))} in {len(cube_files) - len(missing)} cubes: "
        f"{len(rows)} spectra")

    parts_dir = out_path.with_name(f".{out_path.name}.parts")
    job = {"fingerprint": _fingerprint(rows, options, id_name, pdr1_dir), "targets_per_task": targets_per_task
           or min(MAX_TARGETS_PER_TASK, max(1, math.ceil(len(rows) / (4 * workers))))}
    job = _resume_or_reset(parts_dir, job, log)
    size = job["targets_per_task"]
    # take() copies: a slice would carry (and pickle to every worker) the buffers of all rows
    tasks = [rows.take(np.arange(start, min(start + size, len(rows)))) for start in range(0, len(rows), size)]
    schema = _output_schema(targets.schema.field(id_name) if id_name else None)
    done = [i for i in range(len(tasks)) if _part(parts_dir, i).exists()]
    if done:
        log(f"resuming: {len(done)} of {len(tasks)} tasks done")
    pending = sorted(set(range(len(tasks))) - set(done))
    with tqdm(total=len(rows), initial=sum(len(tasks[i]) for i in done), unit="spectrum",
              disable=not progress) as bar:
        try:
            _run(tasks, pending, str(pdr1_dir), options, schema, str(parts_dir), workers, bar.update)
        except (CubeError, FileNotFoundError) as exc:
            raise ExtractError(str(exc)) from exc

    metadata = {METADATA_KEY: json.dumps({**asdict(options), "id_column": id_name, "unit": "1e-17 erg/s/cm2/A"})}
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    with pq.ParquetWriter(tmp, schema.with_metadata(metadata), **WRITE_OPTIONS) as writer:
        for i in range(len(tasks)):
            writer.write_table(pq.read_table(_part(parts_dir, i), schema=schema))
    os.replace(tmp, out_path)
    shutil.rmtree(parts_dir)
    return ExtractReport(out_path, len(targets), len(pc.unique(rows["target_row"])), len(rows),
                         len(cube_files) - len(missing), missing, len(done), time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------------
# Targets and their cubes


def read_targets(path: Path, id_column: str | None = None) -> tuple[pa.Table, str | None]:
    """(target_row, [id], ra, dec) of a targets file, checked, and the id column's name (or None).

    >>> table, id_name = read_targets(Path("targets.csv"))      # columns RA, DEC, source_id
    """
    name = path.name.lower()
    if not path.is_file():
        raise ExtractError(f"{path}: no such targets file")
    try:
        if name.endswith((".parquet", ".pq")):
            table = pq.read_table(path)
        elif name.endswith(".csv"):
            table = pa_csv.read_csv(path)
        elif name.endswith((".fits", ".fit", ".fits.gz")):
            table = _fits_table(path)
        else:
            raise ExtractError(f"{path}: unknown targets format; expected .parquet, .csv or .fits")
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ExtractError(f"{path}: cannot read the targets table ({exc})") from exc

    ra_name, dec_name = _column(path, table, "ra"), _column(path, table, "dec")
    if id_column is None:
        id_name = next((c for c in table.column_names if c.lower() in ID_CANDIDATES and c not in (ra_name, dec_name)
                        and not _clashes(c)), None)
    elif id_column in table.column_names:
        id_name = id_column
    else:
        raise ExtractError(f"{path}: no id column {id_column!r}; columns: {', '.join(table.column_names)}")
    if id_name is not None and _clashes(id_name):
        raise ExtractError(f"{path}: id column {id_name!r} would clash with the output columns {POSITION_COLUMNS}")
    columns = {"target_row": pa.array(np.arange(len(table), dtype=np.int64))}
    if id_name is not None:
        columns[id_name] = table[id_name].combine_chunks()
    for out_name, column in (("ra", ra_name), ("dec", dec_name)):
        columns[out_name] = pa.array(_degrees(path, table, column, out_name == "dec"))
    return pa.table(columns), id_name


def _clashes(name: str) -> bool:
    return name.lower() in POSITION_COLUMNS + SPECTRUM_COLUMNS + ("path",)


def _fits_table(path: Path) -> pa.Table:
    from astropy.table import Table

    table = Table.read(path)
    columns = {}
    for name in table.colnames:
        column = table[name]
        if column.ndim != 1:
            continue  # spectra and other vectors have no use as targets
        values = np.asarray(column)
        if values.dtype.kind == "S":
            values = np.char.decode(values, "ascii").astype(str)
        mask = np.ma.getmaskarray(column) if hasattr(column, "mask") else None
        columns[name] = pa.array(values.astype(values.dtype.newbyteorder("=")), mask=mask)
    return pa.table(columns)


def _column(path: Path, table: pa.Table, wanted: str) -> str:
    found = [name for name in table.column_names if name.lower() == wanted]
    if len(found) != 1:
        what = "no" if not found else f"{len(found)} ({', '.join(found)})"
        columns = ", ".join(table.column_names)
        raise ExtractError(f"{path}: {what} column named {wanted!r} (any case); columns: {columns}")
    return found[0]


def _degrees(path: Path, table: pa.Table, column: str, is_dec: bool) -> np.ndarray:
    try:
        values = table[column].cast(pa.float64()).fill_null(np.nan).to_numpy()
    except pa.ArrowException as exc:
        raise ExtractError(f"{path}: column {column!r} must hold numbers of degrees ({exc})") from exc
    bad = ~np.isfinite(values) | (np.abs(values) > 90 if is_dec else False)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        rule = "a number in [-90, 90]" if is_dec else "a finite number"
        raise ExtractError(f"{path}: row {row} (0-based), column {column!r}: must be {rule}, got {table[column][row]}")
    return values


def _target_cube_rows(catalog_dir: Path, targets: pa.Table, id_name: str | None) -> pa.Table:
    """The targets joined to their covering cubes through the SQL macro cubes_covering."""
    try:
        con = connect(catalog_dir)
    except (FileNotFoundError, RuntimeError) as exc:
        raise ExtractError(f"{catalog_dir}: cannot open the catalogs ({exc})") from exc
    try:
        con.register("dexdb_extract_targets", targets.select(["target_row", "ra", "dec"]))
        pairs = con.sql(
            "SELECT target_row, shotid, ifuslot, path FROM cubes_covering('dexdb_extract_targets') "
            "ORDER BY path, target_row"
        ).to_arrow_table()
    except duckdb.CatalogException as exc:
        raise ExtractError(f"{catalog_dir}: no ifu_index catalog to find cubes in ({exc})") from exc
    except duckdb.Error as exc:
        raise ExtractError(f"{catalog_dir}: cannot find the covering cubes ({exc})") from exc
    finally:
        con.close()
    chosen = targets.take(pairs["target_row"])
    columns = {name: chosen[name] for name in ["target_row", *([id_name] if id_name else []), "ra", "dec"]}
    columns.update({name: pairs[name] for name in ("shotid", "ifuslot", "path")})
    return pa.table(columns).combine_chunks()


def _output_schema(id_field: pa.Field | None) -> pa.Schema:
    spectrum = pa.list_(pa.float32(), N_WAVE)
    return pa.schema(
        [pa.field("target_row", pa.int64()), *([id_field] if id_field else []), pa.field("ra", pa.float64()),
         pa.field("dec", pa.float64()), pa.field("shotid", pa.int64()), pa.field("ifuslot", pa.string()),
         *(pa.field(name, spectrum) for name in SPECTRUM_COLUMNS)]
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# Tasks, resuming


def _fingerprint(rows: pa.Table, options: Options, id_name: str | None, pdr1_dir: Path) -> str:
    digest = hashlib.sha256(json.dumps([asdict(options), id_name, str(pdr1_dir.resolve())], default=str).encode())
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, rows.schema) as writer:
        writer.write_table(rows)
    digest.update(sink.getvalue())
    return digest.hexdigest()


def _resume_or_reset(parts_dir: Path, job: dict, log: Callable[[str], None]) -> dict:
    """The job recorded in parts_dir when it is this job (its task size wins), else a fresh start."""
    job_file = parts_dir / JOB_FILE
    if job_file.is_file():
        recorded = json.loads(job_file.read_text())
        if recorded.get("fingerprint") == job["fingerprint"]:
            return recorded
        log(f"{parts_dir}: left by a different job, starting over")
    if parts_dir.exists():
        shutil.rmtree(parts_dir)
    parts_dir.mkdir(parents=True)
    tmp = job_file.with_name(f".{JOB_FILE}.tmp")
    tmp.write_text(json.dumps(job))
    os.replace(tmp, job_file)
    return job


def _part(parts_dir: Path | str, index: int) -> Path:
    return Path(parts_dir) / f"part-{index:06d}.parquet"


def _run(tasks: list[pa.Table], pending: list[int], pdr1_dir: str, options: Options, schema: pa.Schema,
         parts_dir: str, workers: int, advance: Callable[[int], object]) -> None:
    if workers == 1 or len(pending) <= 1:
        for i in pending:
            advance(_run_task(i, tasks[i], pdr1_dir, options, schema, parts_dir))
        return
    # spawn: the parent holds DuckDB's threads, which a fork would copy mid-flight.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(pending)), mp_context=context) as pool:
        futures = [pool.submit(_run_task, i, tasks[i], pdr1_dir, options, schema, parts_dir) for i in pending]
        try:
            for future in as_completed(futures):
                advance(future.result())
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _run_task(index: int, rows: pa.Table, pdr1_dir: str, options: Options, schema: pa.Schema, parts_dir: str) -> int:
    """Extract one task's rows (sorted by cube) into its part file; returns the number of rows."""
    paths = rows["path"].to_numpy(zero_copy_only=False)
    ra, dec = rows["ra"].to_numpy(), rows["dec"].to_numpy()
    arrays = {name: np.full((len(rows), N_WAVE), np.nan, np.float32) for name in SPECTRUM_COLUMNS}
    missed = np.zeros(len(rows), bool)
    starts = np.flatnonzero(np.r_[True, paths[1:] != paths[:-1]])
    for start, stop in zip(starts, [*starts[1:], len(rows)]):
        with open_cube(Path(pdr1_dir) / paths[start]) as opened:
            compressed = opened.hdul is not None
            cube = opened.load() if compressed and stop - start >= LOAD_WHOLE_CUBE_AT else opened
            results = aperture_spectra(
                cube, ra[start:stop], dec[start:stop], options.radius, exclude_bits=options.exclude_bits,
                keep_bits=options.keep_bits, include_only_bits=options.include_only_bits,
                min_coverage=options.min_coverage,
            )  # fmt: skip
        for row, result in enumerate(results, start):
            if result is None:
                missed[row] = True
                continue
            for name, values in zip(SPECTRUM_COLUMNS, result):
                arrays[name][row] = values
    columns = {name: rows[name] for name in schema.names if name not in SPECTRUM_COLUMNS}
    for name in SPECTRUM_COLUMNS:
        values = pa.array(arrays[name].reshape(-1))
        columns[name] = pa.FixedSizeListArray.from_arrays(values, N_WAVE, mask=pa.array(missed))
    out = _part(parts_dir, index)
    tmp = out.with_name(f".{out.name}.tmp")
    pq.write_table(pa.table(columns, schema=schema), tmp, **WRITE_OPTIONS)
    os.replace(tmp, out)
    return len(rows)
