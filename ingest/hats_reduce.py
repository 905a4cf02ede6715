"""Second pass of the HATS writer: one sorted Parquet file per partition and per margin tile.

Tasks run on a thread pool: Arrow's sort, take, IPC reads and Parquet encoding release the GIL, and
threads need no pickling, no re-import of the caller's ``__main__`` (as spawned processes do) and no
second copy of shared state.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from dexdb.ingest.hats_sky import HEALPIX_COLUMN, SkyTiling, margin_members, pixel_range


def parquet_options(
    schema: pa.Schema,
    *,
    tiebreak: str,
    compression: str,
    compression_level: int | None,
    column_compression: Mapping[str, str],
    byte_stream_split: bool | Sequence[str],
) -> dict:
    """``pq.ParquetWriter`` options.

    pyarrow keys per-column options by leaf path (``spec.list.element``) and silently ignores the
    top-level name of a nested column, so every option is expanded to leaf paths here.
    """
    buffer = pa.BufferOutputStream()
    pq.write_table(schema.empty_table(), buffer)
    parquet_schema = pq.read_metadata(pa.BufferReader(buffer.getvalue())).schema
    leaves = [parquet_schema.column(i) for i in range(len(parquet_schema))]
    leaves = [(leaf.path.split(".")[0], leaf.path, leaf.physical_type) for leaf in leaves]

    named = set(column_compression) | (set() if byte_stream_split is True else set(byte_stream_split))
    unknown = named - set(schema.names)
    if unknown:
        raise ValueError(f"compression options name unknown columns {sorted(unknown)}")
    if byte_stream_split is True:
        split = {path for _, path, physical in leaves if physical in ("FLOAT", "DOUBLE")}
    else:
        split = {path for top, path, _ in leaves if top in byte_stream_split}
    options = {
        "compression": {path: column_compression.get(top, compression) for top, path, _ in leaves},
        # Dictionary encoding would take precedence over BYTE_STREAM_SPLIT; on _healpix_29 and the id
        # (nearly every value distinct) it only costs time: most of an id index's write time.
        "use_dictionary": [path for _, path, _ in leaves if path not in split | {HEALPIX_COLUMN, tiebreak}],
        "use_byte_stream_split": sorted(split),
        # Min/max of list elements prune nothing and bloat the footers and _metadata.
        "write_statistics": [path for top, path, _ in leaves if path == top],
        "sorting_columns": [pq.SortingColumn(0), pq.SortingColumn(schema.get_field_index(tiebreak))],
        "version": "2.6",
        "store_schema": True,
    }
    if compression_level is not None:
        options["compression_level"] = compression_level
    return options


@dataclass(frozen=True)
class PartitionTask:
    order: int
    pixel: int
    arrow_bytes: int
    sources: tuple[tuple[str, int], ...]  # (run file, batch number)
    out_file: Path


@dataclass(frozen=True)
class MarginSpill:
    order: int
    pixel: int
    path: Path


@dataclass(frozen=True)
class PartitionResult:
    rows: int
    file_bytes: int
    margins: tuple[MarginSpill, ...]


@dataclass(frozen=True)
class MarginTask:
    order: int
    pixel: int
    arrow_bytes: int
    sources: tuple[Path, ...]
    out_file: Path


@dataclass(frozen=True)
class Reducer:
    """Everything the tasks share."""

    schema: pa.Schema
    ra_column: str
    dec_column: str
    tiebreak: str
    row_group_rows: int
    parquet_options: dict
    tiling: SkyTiling
    search_order: int
    margin_arcsec: float
    margin_spill: Path
    # Id columns whose index entries each partition spills (see index_run), and where.
    index_columns: tuple[str, ...] = ()
    index_spill: Path | None = None

    def index_run(self, column: str, order: int, pixel: int) -> Path:
        """The spilled index entries of one partition: distinct ``(column, _healpix_29)``, sorted by both."""
        return self.index_spill / column / f"{order}-{pixel}.arrow"

    def partition(self, task: PartitionTask) -> PartitionResult:
        """Write one partition, spill its rows that lie in the margin of other tiles and its index entries."""
        lo, hi = pixel_range(task.order, task.pixel)
        table = _gather_runs(task.sources, lo, hi, self.schema)
        order = self._sort_order(table)
        file_bytes = self._write_parquet(table, order, task.out_file)

        def sorted_column(name: str) -> np.ndarray:
            return table.column(name).take(order).to_numpy()

        healpix = sorted_column(HEALPIX_COLUMN)
        for column in self.index_columns:
            path = self.index_run(column, task.order, task.pixel)
            path.parent.mkdir(parents=True, exist_ok=True)
            entries = index_entries(table.column(column).take(order).combine_chunks(), healpix)
            with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, entries.schema) as writer:
                writer.write_table(entries)

        rows, tiles = margin_members(
            healpix,
            sorted_column(self.ra_column).astype(np.float64, copy=False),
            sorted_column(self.dec_column).astype(np.float64, copy=False),
            self.tiling,
            self.search_order,
            self.margin_arcsec,
        )
        margins = []
        starts = np.flatnonzero(np.diff(tiles, prepend=-1))
        for start, stop in zip(starts, np.r_[starts[1:], len(tiles)]):
            tile_order = int(self.tiling.orders[tiles[start]])
            tile_pixel = int(self.tiling.pixels[tiles[start]])
            path = self.margin_spill / f"{tile_order}-{tile_pixel}" / f"{task.order}-{task.pixel}.arrow"
            path.parent.mkdir(parents=True, exist_ok=True)
            with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, self.schema) as writer:
                writer.write_table(table.take(order.take(pa.array(rows[start:stop]))))
            margins.append(MarginSpill(tile_order, tile_pixel, path))
        return PartitionResult(table.num_rows, file_bytes, tuple(margins))

    def margin(self, task: MarginTask) -> int:
        """Write one margin partition from the rows its neighbours spilled; returns its row count."""
        tables = [pa.ipc.open_file(pa.memory_map(str(path))).read_all() for path in task.sources]
        table = pa.concat_tables(tables).combine_chunks()
        self._write_parquet(table, self._sort_order(table), task.out_file)
        return table.num_rows

    def _sort_order(self, table: pa.Table) -> pa.Array:
        return pc.sort_indices(table, sort_keys=[(HEALPIX_COLUMN, "ascending"), (self.tiebreak, "ascending")])

    def _write_parquet(self, table: pa.Table, order: pa.Array, path: Path) -> int:
        path.parent.mkdir(parents=True, exist_ok=True)
        step = self.row_group_rows
        with pq.ParquetWriter(path, self.schema, **self.parquet_options) as writer:
            for start in range(0, len(order), step):
                writer.write_table(table.take(order.slice(start, step)), row_group_size=step)
        return path.stat().st_size


def stable_sort_indices(values: pa.Array) -> np.ndarray:
    """Indices that sort ``values`` (no nulls) stably: numpy's timsort for integers, fast on the presorted
    runs of concatenated partitions; Arrow's (stable, bytewise for strings) otherwise."""
    if pa.types.is_integer(values.type):
        return np.argsort(values.to_numpy(), kind="stable")
    return pc.sort_indices(values).to_numpy()


def index_entries(ids: pa.Array, healpix: np.ndarray) -> pa.Table:
    """Distinct ``(id, _healpix_29)`` of the non-null ``ids``, sorted by id then ``_healpix_29``, from
    columns in ``_healpix_29`` order (so a stable sort by id leaves equal ids in that order)."""
    if ids.null_count:
        valid = ids.is_valid()
        ids, healpix = ids.filter(valid), healpix[valid.to_numpy(zero_copy_only=False)]
    by_id = stable_sort_indices(ids)
    ids, healpix = ids.take(by_id), healpix[by_id]
    if len(ids) > 1:
        repeated = pc.equal(ids.slice(1), ids.slice(0, len(ids) - 1)).to_numpy(zero_copy_only=False)
        repeated &= healpix[1:] == healpix[:-1]
        if repeated.any():
            first = np.r_[True, ~repeated]
            ids, healpix = ids.filter(pa.array(first)), healpix[first]
    return pa.table({"id": ids, HEALPIX_COLUMN: pa.array(healpix, pa.int64())})


def _gather_runs(sources, lo: int, hi: int, schema: pa.Schema) -> pa.Table:
    """The rows with ``lo <= _healpix_29 < hi`` from memory-mapped run batches, as one contiguous table:
    Arrow's take on a chunked table would concatenate all chunks on every call."""
    readers = {}
    slices = []
    for path, batch_no in sources:
        if path not in readers:
            readers[path] = pa.ipc.open_file(pa.memory_map(path))
        batch = readers[path].get_batch(batch_no)
        start, stop = np.searchsorted(batch.column(0).to_numpy(), [lo, hi])
        if stop > start:
            slices.append(batch.slice(start, stop - start))
    return pa.Table.from_batches(slices, schema).combine_chunks()


def margin_tasks(results: Sequence[PartitionResult], margin_dir_of: Callable[[int, int], Path]) -> list[MarginTask]:
    """One task per tile that received margin rows, its sources in partition order (for determinism)."""
    by_tile: dict[tuple[int, int], list[Path]] = {}
    for result in results:
        for spill in result.margins:
            by_tile.setdefault((spill.order, spill.pixel), []).append(spill.path)
    return [
        MarginTask(order, pixel, sum(os.path.getsize(p) for p in sources), tuple(sources), margin_dir_of(order, pixel))
        for (order, pixel), sources in by_tile.items()
    ]


def run_tasks(pool: ThreadPoolExecutor, fn: Callable, tasks: Sequence, progress_label: str | None) -> list:
    """Run tasks largest first (to balance the workers); results come back in task order."""
    futures = {}
    for i in sorted(range(len(tasks)), key=lambda i: -tasks[i].arrow_bytes):
        futures[pool.submit(fn, tasks[i])] = i
    results = [None] * len(tasks)
    total = sum(task.arrow_bytes for task in tasks)
    with tqdm(total=total, desc=progress_label, unit="B", unit_scale=True, disable=progress_label is None) as bar:
        try:
            for future in as_completed(futures):
                i = futures[future]
                results[i] = future.result()
                bar.update(tasks[i].arrow_bytes)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return results
