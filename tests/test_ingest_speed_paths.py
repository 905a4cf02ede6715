"""The ingest's fast paths give exactly what the straightforward computations give: the in-memory id
index equals DuckDB's ``SELECT DISTINCT ... ORDER BY ALL``, per-batch sorted runs give the same files as
whole-buffer ones, the margin's edge-pixel shortcut finds every pixel with an outside neighbour, and
FITS strings read from the fixed-width bytes equal the NUL-terminated, blank-trimmed values."""

from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb
import healpy as hp
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.io import fits

from dexdb.ingest import hats_scatter, hats_writer
from dexdb.ingest.fits_stream import FitsFile
from dexdb.ingest.hats_sky import on_parent_edge
from dexdb.ingest.hats_writer import CatalogSpec, write_catalog

SPEC = CatalogSpec(
    name="rows",
    ra_column="ra",
    dec_column="dec",
    sort_tiebreak="rowid",
    id_columns=("rowid", "name", "group"),
    partition_bytes=40_000,  # ~700 rows: several partitions at several orders
    row_group_rows=100,
    metadata={"source_file": "synthetic"},
)


def make_rows(seed: int = 0, n: int = 6000) -> pa.Table:
    """Two dense fields and scatter; repeated names (some null), and rows sharing a position and a name."""
    rng = np.random.default_rng(seed)
    third, rest = n // 3, n - 2 * (n // 3)
    ra = np.r_[rng.normal(150.0, 0.3, third), rng.normal(0.2, 0.2, third) % 360, rng.uniform(0, 360, rest)]
    dec = np.r_[rng.normal(2.0, 0.3, third), rng.normal(0.0, 0.2, third), rng.uniform(-60, 60, rest)]
    ra[-50:], dec[-50:] = ra[:50], dec[:50]
    names = [None if i % 97 == 0 else f"J{i % 800:05d}" for i in range(n)]
    names[-50:] = names[:50]  # same (name, position) twice: one index row
    group = rng.integers(0, 300, n).astype(np.int64)
    shuffle = rng.permutation(n)
    return pa.table({
        "rowid": np.arange(n, dtype=np.int64) * 7 + 11,
        "ra": ra,
        "dec": dec,
        "name": pa.array(names, pa.string()),
        "group": group,
        "flux": rng.normal(size=n).astype(np.float32),
    }).take(shuffle)


def tree_digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def rows() -> pa.Table:
    return make_rows()


@pytest.fixture(scope="module")
def written(rows, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fast")
    write_catalog(rows.to_batches(max_chunksize=500), SPEC, out, workers=2)
    return out / SPEC.name


def test_in_memory_index_equals_duckdb_distinct_order_by_all(rows, written, tmp_path, monkeypatch):
    monkeypatch.setattr(hats_writer, "INDEX_MEMORY_BYTES", 0)  # every index through DuckDB
    write_catalog(rows.to_batches(max_chunksize=500), SPEC, tmp_path, workers=2)
    assert tree_digests(tmp_path / SPEC.name) == tree_digests(written)

    files = sorted(str(p) for p in (written / SPEC.name / "dataset").glob("Norder=*/Dir=*/Npix=*/*.parquet"))
    assert len(files) > 3
    for column in SPEC.id_columns:
        index = pq.read_table(written / f"{SPEC.name}_{column}_index" / "dataset" / "index.parquet")
        expected = duckdb.sql(
            f'SELECT DISTINCT "{column}", Norder, Npix, _healpix_29 '
            f'FROM read_parquet($files, hive_partitioning = true) WHERE "{column}" IS NOT NULL ORDER BY ALL',
            params={"files": files},
        ).fetchall()
        assert list(zip(*(index[c].to_pylist() for c in index.column_names))) == expected
    # The repeated (name, position) rows collapse; the null names are left out.
    names = pq.read_table(written / f"{SPEC.name}_name_index" / "dataset" / "index.parquet")
    assert names.num_rows < rows.num_rows - rows["name"].null_count


def test_sorting_each_batch_gives_the_files_of_sorting_whole_buffers(rows, written, tmp_path, monkeypatch):
    monkeypatch.setattr(hats_scatter, "SORT_GROUP_BYTES", 1)  # every input batch sorted on its own
    write_catalog(rows.to_batches(max_chunksize=170), SPEC, tmp_path / "each", workers=2, sort_buffer_bytes=100_000)
    monkeypatch.setattr(hats_scatter, "SORT_GROUP_BYTES", 1 << 40)  # one sort per spilled buffer
    write_catalog(rows.to_batches(max_chunksize=170), SPEC, tmp_path / "whole", workers=2, sort_buffer_bytes=100_000)
    assert tree_digests(tmp_path / "each" / SPEC.name) == tree_digests(tmp_path / "whole" / SPEC.name)
    assert tree_digests(tmp_path / "each" / SPEC.name) == tree_digests(written)


@pytest.mark.parametrize(("order", "levels"), [(13, 0), (13, 4), (13, 13), (9, 3), (5, 5)])
def test_edge_pixels_are_exactly_those_with_a_neighbour_outside(order, levels):
    pixels = np.random.default_rng(order * 100 + levels).integers(0, 12 * 4**order, 30_000)
    neighbours = hp.get_all_neighbours(1 << order, pixels, nest=True).T
    ancestor = pixels >> (2 * levels)
    outside = ((neighbours >= 0) & ((neighbours >> (2 * levels)) != ancestor[:, None])).any(axis=1)
    assert outside.any()
    np.testing.assert_array_equal(on_parent_edge(pixels, order, levels), outside)


def test_fits_strings_end_at_nul_and_lose_trailing_blanks(tmp_path):
    raw = [b"ab  ", b"  x ", b"", b"a\x00b ", b"q\x00\x00\x00", "é ".encode(), b"abcd"]
    clean = [b"left", b" pad", b"", b"x", b"yy  ", b"z", b"abcd"]
    values = np.arange(len(raw), dtype=">f8") * 1.5
    path = tmp_path / "strings.fits"
    fits.BinTableHDU.from_columns([
        fits.Column("nul", "4A", array=np.array(raw, dtype="S4")),
        fits.Column("clean", "4A", array=np.array(clean, dtype="S4")),
        fits.Column("value", "D", array=values),
    ]).writeto(path)
    with FitsFile(path, "test") as file:
        table = file.table(1)
        batch = table.to_arrow(table.records(2, len(raw)))

    def reference(value: bytes) -> str:
        return value.split(b"\0", 1)[0].decode().rstrip(" ")
    assert batch.column("nul").to_pylist() == [reference(v) for v in raw[2:]]
    assert batch.column("clean").to_pylist() == [reference(v) for v in clean[2:]]
    assert batch.column("value").to_pylist() == values[2:].tolist()
