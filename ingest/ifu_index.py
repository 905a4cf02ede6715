"""``ifu-index.fits`` -> the ``ifu_index`` catalog: one row per IFU datacube (data model section 1).

Every column of the file is kept (strings without their FITS padding), and each row gains
``cube_id``, the cube's ``path`` under the release root and its ``url``, and the sky footprint
``corner_ra`` / ``corner_dec`` (4 corners of the cube grid, from the cube WCS).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dexdb.constants import PDR1_BASE_URL
from dexdb.ingest.fits_stream import FitsFile, FitsTable, UniqueIds, check_sky, row_ranges
from dexdb.ingest.hats_writer import CatalogSpec
from dexdb.ingest.product import HASH_MAX_BYTES, Product, catalog_metadata
from dexdb.geometry import cube_footprint

PRODUCT = "ifu_index"
FILE_NAME = "ifu-index.fits"

CHUNK_ROWS = 65_536
# ~430k rows of ~300 Arrow bytes: 32k-row groups are ~10 MB, so a cone decodes one or two.
ROW_GROUP_ROWS = 32_768
# The whole index is ~130 MB in Arrow; 64 MiB partitions split it by field, so a query touching
# one field opens one or two small files.
PARTITION_BYTES = 64 << 20

# Columns in both documented column sets (the 2025-06 notebook and the 2026 context file), by kind.
REQUIRED = {
    "shotid": "i", "ifuslot": "S", "ra_cen": "f", "dec_cen": "f",
    "flag": "f", "flag_badamp": "f", "flag_badfib": "f", "flag_meteor": "f", "flag_satellite": "f",
    "flag_shot": "f", "flag_throughput": "f", "field": "S", "ra_shot": "f", "dec_shot": "f",
    "pa": "f", "n_ifu": "i", "fwhm_virus": "f", "response_4540": "f", "ambtemp": "f",
    "datevobs": "S", "dewpoint": "f", "exptime": "f", "humidity": "f", "mjd": "f",
    "pressure": "f", "structaz": "f", "time": "S", "trajcdec": "f", "trajcpa": "f", "trajcra": "f",
}  # fmt: skip
# Columns only one of the two sets lists.
OPTIONAL = {
    "objid": "S", "date": "i", "obsid": "i", "fwhm_virus_err": "f", "fluxlimit_4600": "f",
    "nstars_fit_fwhm": "i", "obsind": "i",
}  # fmt: skip
DERIVED = ("cube_id", "path", "url", "corner_ra", "corner_dec")
DERIVED_UNITS = {"corner_ra": "deg", "corner_dec": "deg"}

NOTES = [
    (
        "cube_id = shotid * 1000 + int(ifuslot): one int64 key for the unique pair (shotid, ifuslot); "
        "it breaks ties in the HEALPix sort order."
    ),
    (
        "path is relative to the release root (datacubes/<shotid>/dex_cube_<shotid>_<ifuslot>.fits); "
        "url = PDR1 base URL + '/' + path."
    ),
    (
        "corner_ra / corner_dec: the cube grid's outer corners, pixel (x, y) = (-0.5, -0.5), (103.5, -0.5), "
        "(103.5, 103.5), (-0.5, 103.5) (0-based), from the cube WCS built from ra_cen, dec_cen and the shot pa."
    ),
    "flag* columns are the fraction of the IFU that is good (1 = fully usable).",
    "Values are as in the file: sentinels such as pressure -99898 are kept; strings lose only FITS trailing blanks.",
]


def products(pdr1_dir: Path, *, hash_max_bytes: int = HASH_MAX_BYTES, chunk_rows: int = CHUNK_ROWS) -> list[Product]:
    """``ifu_index`` if ``pdr1_dir/ifu-index.fits`` is present; it is hashed into the metadata if at most
    ``hash_max_bytes`` (see :func:`~dexdb.ingest.product.catalog_metadata`)."""
    pdr1_dir = Path(pdr1_dir)
    path = pdr1_dir / FILE_NAME
    if not path.exists():
        return []
    with FitsFile(path, PRODUCT) as file:
        table = _open_table(file)
        units = table.units | DERIVED_UNITS
        nrows = table.nrows
    metadata = catalog_metadata(pdr1_dir, [path], units, NOTES, hash_max_bytes=hash_max_bytes)
    spec = CatalogSpec(
        name=PRODUCT,
        ra_column="ra_cen",
        dec_column="dec_cen",
        sort_tiebreak="cube_id",
        partition_bytes=PARTITION_BYTES,
        row_group_rows=ROW_GROUP_ROWS,
        metadata=metadata,
    )
    batches = partial(_batches, path, chunk_rows)
    return [Product(spec, [path], batches, expected_rows=nrows, input_bytes=path.stat().st_size, notes=list(NOTES))]


def _open_table(file: FitsFile) -> FitsTable:
    table = file.table(1)
    table.require(REQUIRED, OPTIONAL)
    clashing = [name for name in DERIVED if name in table.columns]
    if clashing:
        raise file.error(f"column(s) {', '.join(clashing)} clash with derived columns of the same name")
    return table


def _batches(path: Path, chunk_rows: int) -> Iterator[pa.RecordBatch]:
    # Reopened (and re-checked) here: the stream may start long after products() looked.
    with FitsFile(path, PRODUCT) as file:
        table = _open_table(file)
        cube_ids = UniqueIds(table.nrows, "(shotid, ifuslot)")
        for start, stop in row_ranges(table.nrows, chunk_rows):
            records = table.records(start, stop)
            check_sky(table, records["ra_cen"], records["dec_cen"], "ra_cen", "dec_cen", start)
            batch = table.to_arrow(records)
            cube_id = _cube_ids(table, batch, start)
            cube_ids.add(cube_id)
            yield _with_derived(batch, cube_id, records)
        cube_ids.check(table, describe=lambda cube: f"shotid {cube // 1000} ifuslot {cube % 1000:03d}")


def _cube_ids(table: FitsTable, batch: pa.RecordBatch, first_row: int) -> np.ndarray:
    ifuslot = batch.column("ifuslot")
    numeric = pc.match_substring_regex(ifuslot, r"^[0-9]{1,3}$")
    if not pc.all(numeric).as_py():
        row = pc.index(numeric, False).as_py()
        raise table.file.error(
            f"ifuslot {ifuslot[row].as_py()!r} is not a number of 1-3 digits", f"row {first_row + row}, column ifuslot"
        )
    shotid = batch.column("shotid").to_numpy().astype(np.int64)
    return shotid * 1000 + pc.cast(ifuslot, pa.int64()).to_numpy()


def _with_derived(batch: pa.RecordBatch, cube_id: np.ndarray, records: np.ndarray) -> pa.RecordBatch:
    shotid = pc.cast(batch.column("shotid"), pa.string())
    ifuslot = pc.utf8_lpad(batch.column("ifuslot"), 3, "0")  # file names always carry 3 digits
    path = pc.binary_join_element_wise("datacubes/", shotid, "/dex_cube_", shotid, "_", ifuslot, ".fits", "")
    url = pc.binary_join_element_wise(PDR1_BASE_URL, path, "/")
    corners = cube_footprint(records["ra_cen"], records["dec_cen"], records["pa"]).reshape(len(records), 4, 2)
    derived = {
        "cube_id": pa.array(cube_id),
        "path": path,
        "url": url,
        "corner_ra": pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(corners[:, :, 0]).reshape(-1)), 4),
        "corner_dec": pa.FixedSizeListArray.from_arrays(
            pa.array(np.ascontiguousarray(corners[:, :, 1]).reshape(-1)), 4
        ),
    }
    return pa.RecordBatch.from_arrays([*batch.columns, *derived.values()], names=[*batch.schema.names, *derived])
