"""The one partitioned writer every converter uses: Arrow batches in, a HATS collection out.

Usage::

    spec = CatalogSpec(name="detections", ra_column="ra", dec_column="dec", sort_tiebreak="detectid",
                       id_columns=("detectid",), metadata={"source_file": ..., "sha256": ...})
    info = write_catalog(batches, spec, Path("out"), workers=2, progress=True)

``batches`` is any iterable of ``pyarrow.RecordBatch`` or ``pyarrow.Table`` with one schema, in any sky
order; it is read once. The result ``out/detections/`` is a HATS collection (layout in
:mod:`dexdb.ingest.hats_layout`) holding

* the catalog: one Parquet file per HEALPix partition; every row carries an int64 ``_healpix_29``
  (:func:`healpix29`); rows are sorted by ``(_healpix_29, sort_tiebreak)`` in row groups of
  ``row_group_rows``; partitions are chosen coarse to fine so that none holds more than
  ``partition_bytes`` of Arrow data unless it is already at ``max_order``;
* a margin catalog: for every partition, and every empty pixel next to one, the rows of other
  partitions within ``margin_arcsec`` of it, so that lsdb cross-matches are right at partition edges;
* one index catalog per id column: a Parquet table ``(id, Norder, Npix)`` sorted by id.

Readers: ``lsdb.open_catalog(out/NAME)`` (margin attached) and ``hats.read_hats``; DuckDB or polars
over ``out/NAME/NAME/dataset/Norder=*/Dir=*/Npix=*/*.parquet`` with hive partitioning, or over the
explicit files from :func:`partition_files` / :func:`cone_partition_files`.

Parquet: written by pyarrow (so ``FixedSizeList<float32>[n]`` stays fixed-size for pyarrow and polars),
zstd unless ``column_compression`` says otherwise, BYTE_STREAM_SPLIT and no dictionary on floating-point
columns, statistics on top-level columns only, sorting columns recorded. The caller's ``metadata`` is
the key-value metadata of every file and of ``_common_metadata``. The same rows give byte-identical
files, in any order and batching if ``sort_tiebreak`` is unique (and no column is a variable-size nested
type, whose bytes per row are averaged per batch and so can move partition boundaries).

Steps; memory stays near 2 x ``sort_buffer_bytes`` + ``workers`` x 2 x ``partition_bytes``:

1. scatter (:mod:`hats_scatter`): add ``_healpix_29``, spill sorted runs to disk, histogram bytes per pixel;
2. plan: split pixels from order 0 down while they hold more than ``partition_bytes``;
3. reduce (:mod:`hats_reduce`, ``workers`` threads): per partition, gather its rows from every run, sort,
   write Parquet and spill its margin rows; then sort and write each margin partition;
4. write metadata, properties and indexes; check the row count and, when hats is installed,
   ``hats.io.validation.is_valid_collection(strict=True)``; publish.

Crash safety: the collection is built in ``out/.NAME.staging`` and published with ``os.rename`` (a
previous one is renamed to ``out/.NAME.old`` first and deleted after), so ``out/NAME`` is always the
previous complete collection or the new one. ``out/.NAME.lock`` keeps two writers of one name apart;
the next run deletes what a killed run left and restores ``.old`` if the kill fell between the two
renames. Runs spill to ``staging_root/.NAME.spill`` (default ``out``) and need as much disk as the input.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import dexdb
from dexdb.ingest.hats_layout import (
    CATALOG_PROPERTIES,
    COLLECTION_PROPERTIES,
    HATS_VERSION,
    INDEX_FILE_NAME,
    CollectionLayout,
    PartitionFile,
    check_name,
    cone_partition_files,
    directory_kbytes,
    index_dir_name,
    margin_dir_name,
    nested_sort_key,
    partition_file,
    partition_files,
    write_dataset_metadata,
    write_partition_bounds,
    write_partition_info,
    write_properties,
)
from dexdb.ingest.hats_reduce import (
    PartitionTask,
    Reducer,
    margin_tasks,
    parquet_options,
    run_tasks,
    stable_sort_indices,
)
from dexdb.ingest.hats_scatter import scatter
from dexdb.ingest.hats_sky import (
    HEALPIX_COLUMN,
    HEALPIX_ORDER,
    N_BASE_PIXELS,
    SkyTiling,
    healpix29,
    margin_search_order,
    pixel_range,
)

__all__ = [
    "CatalogInfo",
    "CatalogSpec",
    "CollectionLayout",
    "PartitionFile",
    "WrittenPartition",
    "cone_partition_files",
    "healpix29",
    "partition_files",
    "write_catalog",
]

log = logging.getLogger(__name__)

MiB = 1 << 20
# Measured on 2 GB of two-spectra rows (noise spectra, 2 shared cores): 256 MiB partitions are ~25k rows
# and <= 150 MB of Parquet, read whole in 0.6-0.8 s, and a 3" or 37" cone opens one file; the writer
# peaked at 1.0-1.2 GB RSS. 512 MiB: 1.9 GB RSS and 2 s per file; 64 MiB: twice the files, no faster cone.
DEFAULT_PARTITION_BYTES = 256 * MiB
# Without row_group_rows a row group holds about this much Arrow data: ~1k rows of two spectra, ~80k
# scalar rows. One spectrum by id took ~10-20 ms with 512-2048-row groups and ~45 ms with 4096.
ROW_GROUP_BYTES = 8 * MiB
SORT_BUFFER_BYTES = 128 * MiB
# Id indexes whose entries take at most this much memory to sort (about 32 bytes a row: the id, its
# _healpix_29, its partition, its place in the order; ~33M rows) are merged in memory from the entries
# the partitions spill; larger ones are sorted by DuckDB out of core from the written partitions.
# On the 21M-row detect_index of the large mock: 2-3 s in memory, ~15 s with DuckDB.
INDEX_MEMORY_BYTES = 1 << 30


def index_row_group_rows(rows: int) -> int:
    """Row groups of an id index: ~16 per file, between 16k and 128k rows. An id lookup decodes one
    group but DuckDB parses the whole footer first; on the large mock one id took 3.7 ms with 16k-row
    groups in the 217k-row detection_spectra index (11 ms with 128k), and 10 ms with 128k-row groups
    in the 21M-row detections index (53 ms with 16k, where the footer is 0.65 MB)."""
    return int(np.clip(rows // 16, 1 << 14, 1 << 17))


@dataclass(frozen=True)
class CatalogSpec:
    """What to write and how.

    ``partition_bytes`` bounds the Arrow (uncompressed) size of a partition. ``row_group_rows=None``
    sizes row groups to ~8 MiB. ``max_order`` caps the partition order; its default and upper limit
    come from ``margin_arcsec`` (13 for 5", see :func:`hats_sky.margin_search_order`).
    ``compression`` applies to every column not named in ``column_compression``; ``byte_stream_split``
    is True for every floating-point column, or a tuple of column names.
    """

    name: str
    ra_column: str
    dec_column: str
    sort_tiebreak: str
    id_columns: tuple[str, ...] = ()
    partition_bytes: int = DEFAULT_PARTITION_BYTES
    row_group_rows: int | None = None
    margin_arcsec: float = 5.0
    max_order: int | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    compression: str = "zstd"
    compression_level: int | None = None
    column_compression: Mapping[str, str] = field(default_factory=dict)
    byte_stream_split: bool | tuple[str, ...] = True

    def __post_init__(self):
        check_name(self.name, "catalog name")
        for column in self.id_columns:
            check_name(column, "id column")
        if self.partition_bytes <= 0:
            raise ValueError("partition_bytes must be positive")
        if self.row_group_rows is not None and self.row_group_rows <= 0:
            raise ValueError("row_group_rows must be positive")
        if not self.margin_arcsec > 0:
            raise ValueError("margin_arcsec must be positive")
        if self.max_order is not None and not 0 <= self.max_order <= self.search_order:
            raise ValueError(f'max_order must lie in [0, {self.search_order}] for a {self.margin_arcsec}" margin')

    @property
    def search_order(self) -> int:
        return margin_search_order(self.margin_arcsec)

    @property
    def partition_max_order(self) -> int:
        return self.search_order if self.max_order is None else self.max_order


@dataclass(frozen=True)
class WrittenPartition:
    order: int
    pixel: int
    rows: int
    arrow_bytes: int
    file_bytes: int


@dataclass(frozen=True)
class CatalogInfo:
    layout: CollectionLayout
    partitions: tuple[WrittenPartition, ...]
    rows: int
    margin_rows: int
    arrow_bytes: int
    row_group_rows: int
    seconds: float


def write_catalog(
    batches: Iterable[pa.RecordBatch | pa.Table],
    spec: CatalogSpec,
    out_dir: Path | str,
    *,
    staging_root: Path | str | None = None,
    workers: int = 2,
    progress: bool = False,
    sort_buffer_bytes: int = SORT_BUFFER_BYTES,
) -> CatalogInfo:
    """Write ``batches`` as the HATS collection ``out_dir/spec.name`` and publish it atomically."""
    if workers < 1:
        raise ValueError("workers must be >= 1")
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    destination = out_dir / spec.name
    staging = out_dir / f".{spec.name}.staging"
    aside = out_dir / f".{spec.name}.old"
    spill = Path(staging_root or out_dir) / f".{spec.name}.spill"
    with _exclusive_lock(out_dir / f".{spec.name}.lock"):
        _recover_interrupted_publish(destination, aside)
        _remove(staging)
        _remove(spill)
        try:
            staging.mkdir()
            spill.mkdir(parents=True)
            built = _build(batches, spec, staging, spill, workers, progress, sort_buffer_bytes)
            _remove(spill)  # before the catalog appears: a kill after it would leave the spill for good
            _fsync_tree(staging)
            _publish(staging, destination, aside)
        finally:
            _remove(spill)
            _remove(staging)
    return CatalogInfo(layout=CollectionLayout.read(destination), seconds=time.perf_counter() - started, **built)


def _build(batches, spec: CatalogSpec, collection: Path, spill: Path, workers, progress, sort_buffer_bytes) -> dict:
    scattered = scatter(
        batches,
        ra_column=spec.ra_column,
        dec_column=spec.dec_column,
        required_columns=(spec.ra_column, spec.dec_column, spec.sort_tiebreak, *spec.id_columns),
        metadata=spec.metadata,
        histogram_order=spec.partition_max_order,
        runs_dir=spill / "runs",
        buffer_bytes=sort_buffer_bytes,
        progress_label=f"{spec.name}: read" if progress else None,
    )
    partitions, tiling = _plan_partitions(scattered.histogram, spec.partition_bytes, spec.partition_max_order)
    row_group_rows = spec.row_group_rows or int(
        np.clip(ROW_GROUP_BYTES * scattered.rows // scattered.arrow_bytes, 128, 1 << 20)
    )
    catalog_dir = collection / spec.name
    margin_dir = collection / margin_dir_name(spec.name, spec.margin_arcsec)
    index_in_memory = {
        column: scattered.rows * _index_row_bytes(scattered.schema.field(column)) <= INDEX_MEMORY_BYTES
        for column in spec.id_columns
    }
    reducer = Reducer(
        schema=scattered.schema,
        ra_column=spec.ra_column,
        dec_column=spec.dec_column,
        tiebreak=spec.sort_tiebreak,
        row_group_rows=row_group_rows,
        parquet_options=parquet_options(
            scattered.schema,
            tiebreak=spec.sort_tiebreak,
            compression=spec.compression,
            compression_level=spec.compression_level,
            column_compression=spec.column_compression,
            byte_stream_split=spec.byte_stream_split,
        ),
        tiling=tiling,
        search_order=spec.search_order,
        margin_arcsec=spec.margin_arcsec,
        margin_spill=spill / "margin",
        index_columns=tuple(column for column, in_memory in index_in_memory.items() if in_memory),
        index_spill=spill / "index",
    )
    tasks = [
        PartitionTask(
            order,
            pixel,
            arrow_bytes,
            scattered.runs.sources(*pixel_range(order, pixel)),
            partition_file(catalog_dir, order, pixel),
        )
        for order, pixel, _, arrow_bytes in partitions
    ]
    with ThreadPoolExecutor(workers, thread_name_prefix="hats-reduce") as pool:
        results = run_tasks(pool, reducer.partition, tasks, f"{spec.name}: partitions" if progress else None)
        margins = margin_tasks(results, lambda order, pixel: partition_file(margin_dir, order, pixel))
        margin_rows = run_tasks(pool, reducer.margin, margins, f"{spec.name}: margin" if progress else None)

    for (order, pixel, rows, _), result in zip(partitions, results):
        if result.rows != rows:
            raise RuntimeError(f"partition {order}/{pixel} got {result.rows} rows, {rows} expected")
    common = {
        "hats_col_ra": spec.ra_column,
        "hats_col_dec": spec.dec_column,
        "hats_col_healpix": HEALPIX_COLUMN,
        "hats_col_healpix_order": HEALPIX_ORDER,
        "hats_npix_suffix": "/",
    }
    _finish_healpix_catalog(
        catalog_dir,
        scattered.schema,
        [(task.order, task.pixel) for task in tasks],
        {"obs_collection": spec.name, "dataproduct_type": "object", "hats_nrows": scattered.rows, **common}
        | {"hats_max_bytes": spec.partition_bytes},
    )
    _finish_healpix_catalog(
        margin_dir,
        scattered.schema,
        [(task.order, task.pixel) for task in margins],
        {"obs_collection": margin_dir.name, "dataproduct_type": "margin", "hats_nrows": sum(margin_rows), **common}
        | {"hats_primary_table_url": spec.name, "hats_margin_threshold": spec.margin_arcsec},
    )
    index_dirs = {column: collection / index_dir_name(spec.name, column) for column in spec.id_columns}
    for column, index_dir in index_dirs.items():
        id_field = scattered.schema.field(column)
        schema = _index_schema(id_field)
        batch_rows = index_row_group_rows(scattered.rows)
        if index_in_memory[column]:
            runs = [(task.order, task.pixel, reducer.index_run(column, task.order, task.pixel)) for task in tasks]
            batches = _merged_index_runs(runs, schema, batch_rows)
        else:
            batches = _sorted_index_duckdb(catalog_dir, id_field, schema, spill / "duckdb", batch_rows)
        _write_index(batches, schema, index_dir, spec.name, batch_rows)

    properties = {
        "obs_collection": spec.name,
        "hats_primary_table_url": spec.name,
        "all_margins": margin_dir.name,
        "default_margin": margin_dir.name,
    }
    if index_dirs:
        properties["all_indexes"] = " ".join(f"{column} {path.name}" for column, path in index_dirs.items())
        properties["default_index"] = spec.id_columns[0]
    write_properties(collection / COLLECTION_PROPERTIES, properties | _provenance())

    _verify(collection, catalog_dir, scattered.rows)
    return {
        "partitions": tuple(
            WrittenPartition(task.order, task.pixel, result.rows, task.arrow_bytes, result.file_bytes)
            for task, result in zip(tasks, results)
        ),
        "rows": scattered.rows,
        "margin_rows": sum(margin_rows),
        "arrow_bytes": int(scattered.arrow_bytes),
        "row_group_rows": row_group_rows,
    }


def _plan_partitions(histogram, budget: int, max_order: int) -> tuple[list[tuple[int, int, int, int]], SkyTiling]:
    """Split pixels, from order 0 down, while they hold more than ``budget`` bytes (not past ``max_order``).

    ``histogram`` is (pixels, rows, bytes) at ``max_order``. Returns the partitions as (order, pixel,
    rows, bytes) in nested order, and the tiling of the sphere by them and the empty pixels met on the
    way, which the margin needs.
    """
    pixels, counts, nbytes = histogram
    cum_rows = np.r_[0, np.cumsum(counts)]
    cum_bytes = np.r_[0.0, np.cumsum(nbytes)]
    partitions, tiles = [], []
    stack = [(0, pixel) for pixel in reversed(range(N_BASE_PIXELS))]
    while stack:
        order, pixel = stack.pop()
        shift = 2 * (max_order - order)
        lo, hi = np.searchsorted(pixels, [pixel << shift, (pixel + 1) << shift])
        rows, size = int(cum_rows[hi] - cum_rows[lo]), float(cum_bytes[hi] - cum_bytes[lo])
        if rows and size > budget and order < max_order:
            stack.extend((order + 1, 4 * pixel + child) for child in reversed(range(4)))
            continue
        tiles.append((order, pixel))
        if rows:
            partitions.append((order, pixel, rows, round(size)))
            if size > budget:
                log.warning("partition %d/%d holds %.1f MiB at max_order, over the budget", order, pixel, size / MiB)
    orders, tile_pixels = zip(*tiles)
    return partitions, SkyTiling.from_pixels(orders, tile_pixels)


def _provenance() -> dict[str, str]:
    # No creation date: identical input must give an identical collection.
    return {"hats_builder": f"dexdb v{dexdb.__version__}", "hats_version": HATS_VERSION}


def _finish_healpix_catalog(catalog_dir: Path, schema: pa.Schema, pixels, properties: dict) -> None:
    dataset = catalog_dir / "dataset"
    dataset.mkdir(parents=True, exist_ok=True)
    pixels = sorted(pixels, key=lambda op: nested_sort_key(*op))
    write_partition_info(catalog_dir, pixels)
    write_partition_bounds(catalog_dir, pixels, properties["hats_col_ra"], properties["hats_col_dec"])
    write_dataset_metadata(dataset, schema, [partition_file(catalog_dir, order, pixel) for order, pixel in pixels])
    properties["hats_estsize"] = directory_kbytes(catalog_dir)
    write_properties(catalog_dir / CATALOG_PROPERTIES, properties | _provenance())


def _index_schema(id_field: pa.Field) -> pa.Schema:
    return pa.schema([id_field, pa.field("Norder", pa.int64()), pa.field("Npix", pa.int64()),
                      pa.field(HEALPIX_COLUMN, pa.int64())])


def _index_row_bytes(id_field: pa.Field) -> float:
    """Memory per row of an in-memory index sort (a variable-width id counted at 32 bytes)."""
    try:
        width = id_field.type.bit_width / 8
    except ValueError:
        width = 32
    return width + 24


def _merged_index_runs(runs: list[tuple[int, int, Path]], schema: pa.Schema,
                       batch_rows: int) -> Iterator[pa.RecordBatch]:
    """The index rows ``(id, Norder, Npix, _healpix_29)`` sorted by all four, from each partition's
    distinct ``(id, _healpix_29)`` sorted by both (:meth:`Reducer.index_run`).

    Runs are concatenated in ``(Norder, Npix)`` order and stably sorted by id, which orders equal ids by
    partition and then, within one, by ``_healpix_29``. Distinct partitions make distinct rows, so the
    result is ``SELECT DISTINCT ... ORDER BY ALL`` of the catalog's rows.
    """
    runs = sorted(runs)
    tables = [pa.ipc.open_file(pa.memory_map(str(path))).read_all() for _, _, path in runs]
    id_type = schema.field(0).type
    ids = pa.chunked_array([chunk for table in tables for chunk in table.column(0).chunks], id_type).combine_chunks()
    healpix = np.concatenate([table.column(1).to_numpy() for table in tables])
    run_of_row = np.repeat(np.arange(len(runs), dtype=np.int32), [table.num_rows for table in tables])
    orders = np.array([order for order, _, _ in runs], dtype=np.int64)
    pixels = np.array([pixel for _, pixel, _ in runs], dtype=np.int64)
    by_id = stable_sort_indices(ids)
    for start in range(0, len(by_id), batch_rows):
        rows = by_id[start : start + batch_rows]
        run = run_of_row[rows]
        yield pa.record_batch([ids.take(rows), pa.array(orders[run]), pa.array(pixels[run]), pa.array(healpix[rows])],
                              schema=schema)


def _sorted_index_duckdb(catalog_dir: Path, id_field: pa.Field, schema: pa.Schema, temp_dir: Path,
                         batch_rows: int) -> Iterator[pa.RecordBatch]:
    """The index rows read back from the written partitions and sorted by DuckDB, out of core when it must."""
    files = sorted(str(p) for p in (catalog_dir / "dataset").glob("Norder=*/Dir=*/Npix=*/*.parquet"))
    query = f"""
        SELECT DISTINCT "{id_field.name}", Norder, Npix, {HEALPIX_COLUMN}
        FROM read_parquet($files, hive_partitioning = true, hive_types = {{'Norder': BIGINT, 'Npix': BIGINT}})
        WHERE "{id_field.name}" IS NOT NULL
        ORDER BY ALL
    """
    temp_dir.mkdir(exist_ok=True)
    config = {"threads": 2, "memory_limit": "1GB", "temp_directory": str(temp_dir)}
    with duckdb.connect(config=config) as con:
        for batch in con.sql(query, params={"files": files}).to_arrow_reader(batch_rows):
            yield batch.cast(schema)


def _write_index(batches: Iterable[pa.RecordBatch], schema: pa.Schema, index_dir: Path, catalog_name: str,
                 row_group_rows: int) -> None:
    """``(id, Norder, Npix, _healpix_29)`` for every distinct row, sorted (``batches``), in row groups of
    ``row_group_rows``.

    ``_healpix_29`` lets a lookup by id meet the partition's row-group statistics: rows are sorted by
    it, so ``_healpix_29 = v`` leaves one row group to decode (the id alone is unsorted and prunes none).
    """
    dataset = index_dir / "dataset"
    dataset.mkdir(parents=True)
    rows = 0
    # No dictionary for the id and _healpix_29, whose values are nearly all distinct (see parquet_options).
    dictionary = [name for name in schema.names if name not in (schema.names[0], HEALPIX_COLUMN)]
    with pq.ParquetWriter(dataset / INDEX_FILE_NAME, schema, compression="zstd", use_dictionary=dictionary) as writer:
        pending: list[pa.RecordBatch] = []
        for batch in batches:
            pending.append(batch)
            pending_rows = sum(b.num_rows for b in pending)
            if pending_rows >= row_group_rows:
                # Whole, contiguous row groups: DuckDB's batch sizes vary from run to run.
                table = pa.Table.from_batches(pending)
                full = pending_rows - pending_rows % row_group_rows
                writer.write_table(table.slice(0, full).combine_chunks(), row_group_size=row_group_rows)
                pending = table.slice(full).to_batches()
                rows += full
        if pending:
            rest = pa.Table.from_batches(pending, schema).combine_chunks()
            writer.write_table(rest, row_group_size=row_group_rows)
            rows += rest.num_rows
    write_dataset_metadata(dataset, schema, [dataset / INDEX_FILE_NAME])
    properties = {
        "obs_collection": index_dir.name,
        "dataproduct_type": "index",
        "hats_nrows": rows,
        "hats_primary_table_url": catalog_name,
        "hats_index_column": schema.field(0).name,
    }
    write_properties(index_dir / CATALOG_PROPERTIES, properties | _provenance())


def _verify(collection: Path, catalog_dir: Path, expected_rows: int) -> None:
    written = pq.read_metadata(catalog_dir / "dataset" / "_metadata").num_rows
    if written != expected_rows:
        raise RuntimeError(f"{catalog_dir.name}: wrote {written} rows, read {expected_rows}")
    # hats is an optional (test) dependency of dexdb; when present, its strict check must pass too.
    if find_spec("hats") is not None:
        from hats.io.validation import is_valid_collection

        if not is_valid_collection(collection, strict=True):
            raise RuntimeError(f"{collection.name}: hats strict validation failed (see the logged warnings)")


@contextmanager
def _exclusive_lock(path: Path):
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another process holds {path}: a write of the same catalog is running") from None
        yield


def _remove(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)


def _recover_interrupted_publish(destination: Path, aside: Path) -> None:
    if not aside.exists():
        return
    if destination.exists():
        _remove(aside)
    else:
        log.warning("restoring %s: the last publish was interrupted between its two renames", destination)
        os.rename(aside, destination)


def _fsync_tree(root: Path) -> None:
    """Make the staged files durable before the rename that publishes them."""
    for directory, _, files in os.walk(root):
        for name in files:
            _fsync(Path(directory) / name)
        _fsync(Path(directory))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(staged: Path, destination: Path, aside: Path) -> None:
    if destination.exists():
        os.rename(destination, aside)
    os.rename(staged, destination)
    _fsync(destination.parent)
    _remove(aside)
