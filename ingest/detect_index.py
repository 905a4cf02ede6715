"""Converter of the master detection index ``detect/detect_index_hdr5.h5`` (table ``/DetectIndex``, data
model section 3.2) into the catalog ``detect_index``: one row per line and continuum detection of every
release, all columns as stored (byte strings decoded), including the source's own ``healpix`` (RING,
Nside 32768); the writer adds the nested ``_healpix_29`` used for partitioning.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
from dexdb.ingest.detect import (
    DET_TYPES,
    SCALAR_CHUNK_ROWS,
    SCALAR_ROW_GROUP_ROWS,
    STRINGS_NOTE,
    SURVEYS,
    Col,
    DetectidLedger,
    SourceTable,
    check_positions,
    extras_note,
    inspect_table,
    open_h5,
    read_chunks,
    record_batch,
    union_schema,
)
from dexdb.ingest.hats_writer import DEFAULT_PARTITION_BYTES, CatalogSpec
from dexdb.ingest.product import HASH_MAX_BYTES, IngestError, Product, catalog_metadata

log = logging.getLogger(__name__)

DETECT_INDEX = "detect_index"
INDEX_FILE = "detect_index_hdr5.h5"
#: ~90 B per row: 40M rows are ~3.6 GB, about fifteen partitions at the writer's default budget.
DETECT_INDEX_PARTITION_BYTES = DEFAULT_PARTITION_BYTES

DETECT_INDEX_COLUMNS = [
    Col("detectid", "i8"),
    Col("shotid", "i8"),
    Col("ra", "f4"),
    Col("dec", "f4"),
    Col("wave", "f4"),
    Col("sn", "f4"),
    Col("healpix", "i8"),
    Col("det_type", "S"),
    Col("survey", "S"),
    Col("fiber_id", "S"),
]
DETECT_INDEX_UNITS = {"ra": "deg", "dec": "deg", "wave": "Angstrom"}
HEALPIX_NOTE = (
    "healpix is the source's HEALPix pixel of (ra, dec): RING ordering, Nside 32768 (order 15), kept as given; "
    "the catalog is partitioned on the writer's _healpix_29 (NESTED, order 29)"
)


def products(
    pdr1_dir: Path, *, hash_max_bytes: int = HASH_MAX_BYTES, chunk_rows: int = SCALAR_CHUNK_ROWS
) -> list[Product]:
    """``detect_index`` if ``pdr1_dir/detect/detect_index_hdr5.h5`` is present and holds rows; the file is
    hashed into the metadata if at most ``hash_max_bytes`` (see :func:`~dexdb.ingest.product.catalog_metadata`)."""
    root = Path(pdr1_dir)
    path = root / "detect" / INDEX_FILE
    if not (path.exists() or path.is_symlink()):
        log.warning("%s is missing: %s not built", path, DETECT_INDEX)
        return []
    with open_h5(path, DETECT_INDEX) as h5:
        source = inspect_table(h5, path, DETECT_INDEX, "/DetectIndex", DETECT_INDEX_COLUMNS)
    if source.nrows == 0:
        log.warning("%s holds no rows: %s not built", path, DETECT_INDEX)
        return []
    schema, extras = union_schema(DETECT_INDEX, [source], [DETECT_INDEX_COLUMNS], [])
    notes = [
        STRINGS_NOTE,
        HEALPIX_NOTE,
        *extras_note(extras),
    ]
    metadata = catalog_metadata(root, [path], DETECT_INDEX_UNITS, notes, hash_max_bytes=hash_max_bytes)
    spec = CatalogSpec(
        name=DETECT_INDEX,
        ra_column="ra",
        dec_column="dec",
        sort_tiebreak="detectid",
        id_columns=("detectid",),
        partition_bytes=DETECT_INDEX_PARTITION_BYTES,
        row_group_rows=SCALAR_ROW_GROUP_ROWS,
        metadata=metadata,
    )
    return [
        Product(
            spec=spec,
            inputs=[path],
            batches=functools.partial(_batches, source, schema, chunk_rows),
            expected_rows=source.nrows,
            input_bytes=source.nbytes,
            notes=notes,
        )
    ]


def _check_labels(records: np.ndarray, source: SourceTable, start: int) -> None:
    """det_type is line/cont, survey is hdr3..hdr5 and agrees with the detectid's release digit."""
    for name, allowed in (("det_type", DET_TYPES), ("survey", SURVEYS)):
        bad = ~np.isin(records[name], [value.encode() for value in allowed])
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise IngestError(
                source.path,
                DETECT_INDEX,
                f"{name} {records[name][i]!r} is not one of {', '.join(allowed)}",
                where=f"{source.node} row {start + i}, column {name}",
            )
    release = np.zeros(len(records), dtype=np.int64)
    for survey in SURVEYS:
        release[records["survey"] == survey.encode()] = int(survey.removeprefix("hdr"))
    bad = records["detectid"] // 1_000_000_000 != release
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise IngestError(
            source.path,
            DETECT_INDEX,
            f"detectid {records['detectid'][i]} does not belong to survey {records['survey'][i].decode()}: "
            f"its leading digit must be {release[i]}",
            where=f"{source.node} row {start + i}, column detectid",
        )


def _batches(source: SourceTable, schema: pa.Schema, chunk_rows: int) -> Iterator[pa.RecordBatch]:
    ids = np.empty(source.nrows, dtype=np.int64)
    with open_h5(source.path, DETECT_INDEX) as h5:
        for start, records in read_chunks(h5, source, DETECT_INDEX, chunk_rows):
            _check_labels(records, source, start)
            check_positions(records["ra"], records["dec"], source, DETECT_INDEX, start)
            ids[start : start + len(records)] = records["detectid"]
            yield record_batch(schema, records, {}, source, DETECT_INDEX, start)
    DetectidLedger(DETECT_INDEX).add(source, ids)
