"""On-disk layout of a dexdb HATS collection, and readers for it.

A catalog named ``NAME`` written under ``OUT`` is a HATS *collection*, so that ``lsdb.open_catalog(OUT/NAME)``
attaches the margin by itself and ``hats.read_hats`` finds the id indexes::

    OUT/NAME/collection.properties          primary table, margins, indexes
    OUT/NAME/NAME/                          the catalog (dataproduct_type=object)
        hats.properties, partition_info.csv
        partition_bounds.parquet            per partition: the RA/Dec box of its rows (cone pruning)
        dataset/_common_metadata, dataset/_metadata
        dataset/Norder=K/Dir=D/Npix=N/part0.parquet     (D = N // 10000 * 10000)
    OUT/NAME/NAME_5arcs/                    margin catalog, same layout (dataproduct_type=margin)
    OUT/NAME/NAME_<column>_index/           one index catalog per id column (dataproduct_type=index)
        hats.properties, dataset/_common_metadata, dataset/_metadata, dataset/index.parquet

The margin and the indexes cannot live inside the catalog directory: hats' strict validation collects
every ``Norder*/Dir*/Npix*`` path below a catalog, and DuckDB globs would pick them up too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dexdb.ingest.hats_sky import HEALPIX_ORDER, cone_pixels

PARTITION_FILE_NAME = "part0.parquet"
INDEX_FILE_NAME = "index.parquet"
COLLECTION_PROPERTIES = "collection.properties"
CATALOG_PROPERTIES = "hats.properties"
PARTITION_INFO = "partition_info.csv"
PARTITION_BOUNDS = "partition_bounds.parquet"
HATS_VERSION = "v1.0"

_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def check_name(name: str, what: str) -> str:
    """Names become directory names and space-separated property values."""
    if not _SAFE_NAME.fullmatch(name):
        raise ValueError(f"{what} {name!r} must match {_SAFE_NAME.pattern}")
    return name


def margin_dir_name(catalog_name: str, threshold_arcsec: float) -> str:
    return f"{catalog_name}_{threshold_arcsec:g}arcs"


def index_dir_name(catalog_name: str, column: str) -> str:
    return f"{catalog_name}_{column}_index"


def pixel_dir(catalog_dir: Path, order: int, pixel: int) -> Path:
    return catalog_dir / "dataset" / f"Norder={order}" / f"Dir={pixel // 10000 * 10000}" / f"Npix={pixel}"


def partition_file(catalog_dir: Path, order: int, pixel: int) -> Path:
    return pixel_dir(catalog_dir, order, pixel) / PARTITION_FILE_NAME


@dataclass(frozen=True)
class CollectionLayout:
    """Paths of a collection: the catalog, its margin and its id indexes."""

    collection: Path
    catalog: Path
    margin: Path | None
    indexes: dict[str, Path]

    @classmethod
    def read(cls, collection: Path | str) -> CollectionLayout:
        collection = Path(collection)
        props = read_properties(collection / COLLECTION_PROPERTIES)
        words = props.get("all_indexes", "").split()
        return cls(
            collection=collection,
            catalog=collection / props["hats_primary_table_url"],
            margin=collection / props["default_margin"] if "default_margin" in props else None,
            indexes={column: collection / path for column, path in zip(words[::2], words[1::2])},
        )


@dataclass(frozen=True)
class PartitionFile:
    order: int
    pixel: int
    path: Path


def partition_files(catalog: Path | str) -> list[PartitionFile]:
    """The partitions of a catalog (or of a collection's catalog) in nested order, with their files."""
    catalog = Path(catalog)
    if (catalog / COLLECTION_PROPERTIES).exists():
        catalog = CollectionLayout.read(catalog).catalog
    lines = (catalog / PARTITION_INFO).read_text().split()
    if lines[0] != "Norder,Npix":
        raise ValueError(f"unexpected header in {catalog / PARTITION_INFO}: {lines[0]}")
    pairs = [tuple(int(v) for v in line.split(",")) for line in lines[1:]]
    return [PartitionFile(order, pixel, partition_file(catalog, order, pixel)) for order, pixel in pairs]


def cone_partition_files(
    partitions: list[PartitionFile], ra: float, dec: float, radius_arcsec: float
) -> list[PartitionFile]:
    """The partitions a cone may touch (never misses one; may include a neighbour it only grazes)."""
    selected = set()
    for order in {p.order for p in partitions}:
        selected.update((order, int(pixel)) for pixel in cone_pixels(order, ra, dec, radius_arcsec))
    return [p for p in partitions if (p.order, p.pixel) in selected]


def nested_sort_key(order: int, pixel: int) -> int:
    return pixel << (2 * (HEALPIX_ORDER - order))


def write_partition_info(catalog_dir: Path, pixels: list[tuple[int, int]]) -> None:
    rows = sorted(pixels, key=lambda op: nested_sort_key(*op))
    (catalog_dir / PARTITION_INFO).write_text("Norder,Npix\n" + "".join(f"{o},{p}\n" for o, p in rows))


def write_partition_bounds(catalog_dir: Path, pixels: list[tuple[int, int]], ra_column: str, dec_column: str) -> None:
    """``(Norder, Npix, ra_min, ra_max, dec_min, dec_max)`` of every partition, from the row-group statistics
    in the partition files' footers (no data is read).

    A cone search picks its partitions by these boxes in plain SQL, which DuckDB plans in well under a
    millisecond, where the HEALPix pixels of the cone take tens. A partition straddling RA 0/360 or
    holding a pole gets a box of nearly all RA, which only costs it being opened more often.
    """
    columns: dict[str, list] = {name: [] for name in ("Norder", "Npix", "ra_min", "ra_max", "dec_min", "dec_max")}
    for order, pixel in sorted(pixels, key=lambda op: nested_sort_key(*op)):
        footer = pq.read_metadata(partition_file(catalog_dir, order, pixel))
        names = footer.schema.names
        ra_index, dec_index = names.index(ra_column), names.index(dec_column)
        ra_stats, dec_stats = [], []
        for i in range(footer.num_row_groups):
            for index, into in ((ra_index, ra_stats), (dec_index, dec_stats)):
                stats = footer.row_group(i).column(index).statistics
                if stats is not None and stats.has_min_max:
                    into.append((float(stats.min), float(stats.max)))
                elif footer.row_group(i).num_rows:
                    into.append((-np.inf, np.inf))  # no statistics: never prune this partition
        columns["Norder"].append(order)
        columns["Npix"].append(pixel)
        for name, stats in (("ra", ra_stats), ("dec", dec_stats)):
            columns[f"{name}_min"].append(min((low for low, _ in stats), default=np.inf))
            columns[f"{name}_max"].append(max((high for _, high in stats), default=-np.inf))
    schema = pa.schema([("Norder", pa.int64()), ("Npix", pa.int64())]
                       + [(name, pa.float64()) for name in ("ra_min", "ra_max", "dec_min", "dec_max")])
    pq.write_table(pa.table(columns, schema=schema), catalog_dir / PARTITION_BOUNDS)


def write_properties(path: Path, properties: dict[str, object]) -> None:
    """A java-style properties file, in the given key order, without the usual timestamp comment."""
    lines = []
    for key, value in properties.items():
        text = str(value)
        if "\n" in text or "\\" in text:
            raise ValueError(f"property {key}={text!r} needs escaping, which is not supported")
        lines.append(f"{key}={text}\n")
    path.write_text("".join(lines), encoding="utf-8")


def read_properties(path: Path) -> dict[str, str]:
    props = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!")):
            key, _, value = line.partition("=")
            props[key.strip()] = value.strip()
    return props


def write_dataset_metadata(dataset_dir: Path, schema: pa.Schema, files: list[Path]) -> None:
    """``_common_metadata`` (schema and key-value metadata) and ``_metadata`` (every file's row groups)."""
    pq.write_metadata(schema, dataset_dir / "_common_metadata")
    combined = None
    for file in files:
        footer = pq.read_metadata(file)
        footer.set_file_path(file.relative_to(dataset_dir).as_posix())
        if combined is None:
            combined = footer
        else:
            combined.append_row_groups(footer)
    if combined is None:
        pq.write_metadata(schema, dataset_dir / "_metadata")
    else:
        combined.write_metadata_file(dataset_dir / "_metadata")


def directory_kbytes(path: Path) -> int:
    """Size on disk in kB, as hats' ``hats_estsize`` records it."""
    return int(np.ceil(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1024))
