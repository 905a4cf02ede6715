"""Converter of the detection databases ``detect/detect_hdrN.h5`` (lines) and ``detect/cont_hdrN.h5``
(continuum) into the catalogs ``detections``, ``detection_spectra`` and ``fibers`` (data model section 3.1).

Every file is a PyTables database with the tables ``/Detections``, ``/Spectra`` and ``/Fibers`` linked by
``detectid``. Files are read in a fixed order (hdr3 line, hdr3 cont, hdr4 line, ..., hdr5 cont) in row
chunks, so memory is one chunk plus the sorted detectids of the files read so far (8 bytes per detection,
for the duplicate check) and, for spectra, the positions of one file's detections: under 1 GB for a
14M-row file. Output columns keep the source names and values (byte strings become UTF-8 strings with
the trailing NULs removed) and gain ``survey`` ('hdr3'..'hdr5') and ``det_type`` ('line'/'cont').

Calibration (data model sections 3.3 and 4), applied to every release and both detection kinds:

* ``detections``: ``X_cal = X / w(wave)`` for ``flux, flux_err, continuum, continuum_err,
  flux_noise_1sigma``, with ``w`` the ``wdcor.txt`` factor interpolated linearly at ``wave`` (the end
  value outside 3470-5540 A, NaN for a NaN ``wave``); null where the source column is absent;
* ``detection_spectra``: ``spec = spec1d / 2 / wdcor`` and ``spec_err = spec1d_err / 2 / wdcor`` per pixel,
  in 1e-17 erg/s/cm2/A (``spec1d`` is per 2 A bin).

Both are computed in float64 and rounded once to float32. hetdex_api's HDR3-only 1.07 inflation of the
noise of edge fibres is not applied; the raw columns (``amp``, ``fibnum``) allow applying it.

The helpers above the catalog definitions are shared with :mod:`dexdb.ingest.detect_index`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import tables as tb
from dexdb.ingest.hats_writer import DEFAULT_PARTITION_BYTES, CatalogSpec
from dexdb.ingest.product import HASH_MAX_BYTES, IngestError, Product, catalog_metadata
from dexdb.ingest.wdcor import factor_at, read_wdcor

from dexdb.constants import FLUX_DENSITY_UNIT, FLUX_UNIT, N_WAVE, WAVE_START, WAVE_STEP

log = logging.getLogger(__name__)

SURVEYS = ("hdr3", "hdr4", "hdr5")
DET_TYPES = ("line", "cont")
DETECTIONS, SPECTRA, FIBERS = "detections", "detection_spectra", "fibers"
WDCOR_FILE = "wdcor.txt"

#: Rows per read of a scalar table (/Detections ~280 B/row, /Fibers ~170 B/row): ~85-140 MB per chunk.
SCALAR_CHUNK_ROWS = 500_000
#: Rows per read of one field of a table (the /Detections ids that fibers checks against): PyTables reads
#: whole rows into a buffer, and a 28 MB one (100k rows) read the large mock's ids ~2x faster than 140 MB.
FIELD_CHUNK_ROWS = 100_000
#: Rows per read of /Spectra (~50 KB/row): ~100 MB per chunk, plus the same again for the Arrow columns.
SPECTRA_CHUNK_ROWS = 2_000

# Partition budgets, in uncompressed Arrow bytes. The writer holds a partition and its sorted copy per
# worker, so these bound its memory: 512 MiB peaked at 2.8 GiB on the large mock, the writer's 256 MiB
# default keeps the ingest under 2 GB (~0.75M detections, ~1.2M fibres or ~4.5k spectra per partition).
DETECTIONS_PARTITION_BYTES = DEFAULT_PARTITION_BYTES
SPECTRA_PARTITION_BYTES = DEFAULT_PARTITION_BYTES
FIBERS_PARTITION_BYTES = DEFAULT_PARTITION_BYTES
# One spectrum fetched by id decodes one row group (the id index gives its _healpix_29). Measured on a
# large-mock partition: 1000 rows 15.6 ms per id, 256 rows 10.0, 128 rows 6.2, 64 rows 8.8 (footers grow);
# file size and a full scan of spec stay within 2% from 1000 to 128 rows.
SPECTRA_ROW_GROUP_ROWS = 128
SCALAR_ROW_GROUP_ROWS = 100_000

WAVELENGTH_GRID = json.dumps({"start": WAVE_START, "step": WAVE_STEP, "n": N_WAVE, "unit": "Angstrom", "medium": "air"})


# ---------------------------------------------------------------------------------------------------
# Source layouts (data model section 3), shared reading and checking helpers


@dataclass(frozen=True)
class Col:
    """A required source column: numpy dtype ("S" = byte string of any width) and per-row shape."""

    name: str
    dtype: str
    shape: tuple[int, ...] = ()

    @property
    def arrow_type(self) -> pa.DataType:
        return arrow_type(np.dtype("S1" if self.dtype == "S" else self.dtype), self.shape)


def _cols(dtype: str, *names: str) -> list[Col]:
    return [Col(name, dtype) for name in names]


_DETECTIONS_HEAD = [
    *_cols("i8", "detectid", "shotid"),
    *_cols("f4", "ra", "dec"),
    *_cols("i4", "date", "obsid"),
    *_cols("f4", "wave", "wave_err", "flux", "flux_err", "linewidth", "linewidth_err"),
    *_cols("f4", "continuum", "continuum_err", "sn", "sn_err", "chi2", "chi2_err"),
    Col("multiframe", "S"),
    *_cols("i4", "fibnum", "x_raw", "y_raw"),
    Col("amp", "S"),
]
LINE_DETECTIONS = [
    *_DETECTIONS_HEAD,
    *_cols("f4", "apcor", "chi2fib"),
    Col("expnum", "i4"),
    Col("fiber_id", "S"),
    Col("flux_noise_1sigma", "f4"),
    *_cols("S", "ifuid", "ifuslot", "inputid", "mc_file"),
    Col("mc_file_idx", "i4"),
    *_cols("f4", "noise_ratio", "sn_3fib", "sn_3fib_cen", "sn_cen"),
    Col("specid", "S"),
    *_cols("f4", "weight", "x_ifu", "y_ifu"),
]
CONT_DETECTIONS = [
    *_DETECTIONS_HEAD,
    Col("chi2fib", "f4"),
    Col("detectname", "S"),
    Col("expnum", "i4"),
    *_cols("S", "fiber_id", "ifuid", "ifuslot", "inputid"),
    Col("noise_ratio", "f4"),
    Col("specid", "S"),
    *_cols("f4", "weight", "x_ifu", "y_ifu"),
]
SPECTRUM_ARRAYS = (
    "wave1d",
    "spec1d",
    "spec1d_err",
    "counts1d",
    "counts1d_err",
    "apsum_counts",
    "apsum_counts_err",
    "apcor",
    "flag_pix",
    "spec1d_ffsky",
    "spec1d_nc",
    "spec1d_nc_err",
)
SPECTRA_COLUMNS = [Col("detectid", "i8"), *(Col(name, "f4", (N_WAVE,)) for name in SPECTRUM_ARRAYS)]
FIBERS_COLUMNS = [
    Col("detectid", "i8"),
    *_cols("f4", "ra", "dec"),
    *_cols("S", "multiframe", "fiber_id"),
    *_cols("f4", "x_ifu", "y_ifu"),
    *_cols("i4", "date", "obsid", "expnum"),
    Col("distance", "f4"),
    Col("timestamp", "S"),
    Col("wavein", "f4"),
    Col("flag", "i4"),
    Col("weight", "f4"),
    Col("ADC", "f4", (5,)),
    Col("amp", "S"),
    Col("fibnum", "i4"),
    *_cols("S", "ifuid", "ifuslot", "specid"),
    *_cols("i4", "x_raw", "y_raw"),
]


def arrow_type(dtype: np.dtype, shape: tuple[int, ...] = ()) -> pa.DataType:
    """Arrow type of a source column: byte strings become strings, a (k,) subarray a FixedSizeList."""
    if dtype.kind == "S":
        value_type = pa.string()
    elif dtype.kind in "biuf":
        value_type = pa.from_numpy_dtype(dtype.newbyteorder("="))
    else:
        raise TypeError(f"unsupported dtype {dtype}")
    if not shape:
        return value_type
    if len(shape) != 1 or dtype.kind == "S":
        raise TypeError(f"unsupported per-row shape {shape} of {dtype}")
    return pa.list_(value_type, shape[0])


def _describe(dtype: np.dtype | str, shape: tuple[int, ...]) -> str:
    dtype = np.dtype("S1" if isinstance(dtype, str) and dtype == "S" else dtype)
    kind = "byte string" if dtype.kind == "S" else dtype.name
    return f"{kind} of shape {shape}" if shape else kind


@dataclass(frozen=True)
class SourceTable:
    """One table of one HDF5 file, as inspected before reading: record dtype, rows, bytes on disk."""

    path: Path
    node: str
    dtype: np.dtype
    nrows: int
    nbytes: int

    def field(self, name: str) -> tuple[np.dtype, tuple[int, ...]]:
        sub = self.dtype.fields[name][0]
        return sub.base, sub.shape


def _hdf5_reason(exc: Exception) -> str:
    """The innermost message of a PyTables/HDF5 error (its back trace ends with the cause)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if "End of HDF5 error back trace" in lines:
        trace = lines[: lines.index("End of HDF5 error back trace")]
        causes = [line for line in trace if not line.startswith("File ")]
        if causes:
            return causes[-1]
    return lines[-1] if lines else type(exc).__name__


@contextmanager
def open_h5(path: Path, product: str) -> Iterator[tb.File]:
    """Open an HDF5 file read-only; anything that keeps it from being read is an IngestError."""
    if path.is_dir():
        raise IngestError(path, product, "is a directory, expected an HDF5 file")
    if not path.is_file():
        raise IngestError(path, product, "missing or not a regular file")
    if path.stat().st_size == 0:
        raise IngestError(path, product, "empty file (0 bytes)")
    try:
        h5 = tb.open_file(os.fspath(path), mode="r")
    except (tb.HDF5ExtError, OSError) as exc:
        raise IngestError(path, product, f"not a readable HDF5 file: {_hdf5_reason(exc)}") from exc
    try:
        yield h5
    finally:
        h5.close()


def inspect_table(h5: tb.File, path: Path, product: str, node: str, required: Sequence[Col]) -> SourceTable:
    """Check that ``node`` is a table holding every ``required`` column with its dtype and shape."""
    if node not in h5:
        raise IngestError(path, product, f"missing table node {node}")
    table = h5.get_node(node)
    if not isinstance(table, tb.Table):
        raise IngestError(path, product, f"{node} is a {type(table).__name__}, expected a table")
    dtype = table.dtype
    missing = [col.name for col in required if col.name not in dtype.names]
    if missing:
        raise IngestError(path, product, f"missing required column(s): {', '.join(missing)}", where=node)
    source = SourceTable(path, node, dtype, int(table.nrows), int(table.size_on_disk))
    for col in required:
        base, shape = source.field(col.name)
        expected = np.dtype(col.dtype) if col.dtype != "S" else None
        same_kind = (
            base.kind == "S" if expected is None else (base.kind, base.itemsize) == (expected.kind, expected.itemsize)
        )
        if not same_kind or shape != col.shape:
            raise IngestError(
                path,
                product,
                f"column {col.name} is {_describe(base, shape)}, expected {_describe(col.dtype, col.shape)}",
                where=f"{node} column {col.name}",
            )
    for name in dtype.names:
        try:
            arrow_type(*source.field(name))
        except TypeError as exc:
            raise IngestError(path, product, f"column {name}: {exc}", where=f"{node} column {name}") from exc
    return source


def read_chunks(
    h5: tb.File, source: SourceTable, product: str, chunk_rows: int, field: str | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, records) for consecutive row ranges of a table, or of one ``field`` of it; a failed
    read names the rows."""
    table = h5.get_node(source.node)
    for start in range(0, source.nrows, chunk_rows):
        stop = min(start + chunk_rows, source.nrows)
        try:
            records = table.read(start, stop, field=field)
        except (tb.HDF5ExtError, OSError) as exc:
            where = f"{source.node} rows {start}-{stop - 1}"
            raise IngestError(source.path, product, f"HDF5 read failed: {_hdf5_reason(exc)}", where=where) from exc
        yield start, records


def column_array(
    values: np.ndarray, arrow_type_: pa.DataType, source: SourceTable, product: str, name: str, start: int
) -> pa.Array:
    """Arrow array of one (possibly strided) record field ``name`` of the chunk starting at row ``start``;
    copies once into contiguous memory."""
    if pa.types.is_string(arrow_type_):
        try:
            return _strings(values)
        except pa.ArrowInvalid:
            i = next(i for i, value in enumerate(values) if not _is_utf8(value))
            where = f"{source.node} row {start + i}, column {name}"
            raise IngestError(source.path, product, f"not UTF-8 text: {bytes(values[i])!r}", where=where) from None
    contiguous = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("="))
    if pa.types.is_fixed_size_list(arrow_type_):
        return pa.FixedSizeListArray.from_arrays(pa.array(contiguous.reshape(-1)), arrow_type_.list_size)
    return pa.array(contiguous)


def _strings(values: np.ndarray) -> pa.Array:
    """Fixed-width byte strings -> UTF-8 strings without their trailing NULs (numpy's reading of them).
    Built from the buffer: ``pa.array`` would stop at the first NUL and return a chunked array for
    large inputs."""
    width = values.dtype.itemsize
    padded = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), len(values), [None, pa.py_buffer(np.ascontiguousarray(values))]
    )
    # The cast to string validates UTF-8 (ArrowInvalid otherwise).
    return pc.utf8_rtrim(padded.cast(pa.binary()).cast(pa.string()), characters="\x00")


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def fixed_size_list(values: np.ndarray) -> pa.FixedSizeListArray:
    """(n, k) contiguous numpy array -> FixedSizeList<k> without a copy."""
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


def constant_strings(value: str, n: int) -> pa.Array:
    return pa.repeat(pa.scalar(value, pa.string()), n)


def record_batch(
    schema: pa.Schema,
    records: np.ndarray,
    derived: Mapping[str, pa.Array],
    source: SourceTable,
    product: str,
    start: int,
) -> pa.RecordBatch:
    """A batch in ``schema`` order: derived columns, source fields, and nulls for columns the source lacks."""
    arrays = []
    for field in schema:
        if field.name in derived:
            arrays.append(derived[field.name])
        elif field.name in records.dtype.names:
            arrays.append(column_array(records[field.name], field.type, source, product, field.name, start))
        else:
            arrays.append(pa.nulls(len(records), field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def union_schema(
    product: str, sources: Sequence[SourceTable], layouts: Sequence[Sequence[Col]], derived: Sequence[pa.Field]
) -> tuple[pa.Schema, list[str]]:
    """The columns of ``layouts`` in order, then columns some source carries beyond them (in order of
    appearance), then ``derived``. Returns the schema and the names of those extra columns."""
    fields: dict[str, pa.Field] = {}
    origin: dict[str, str] = {}  # where each column's type was first defined, for error messages
    for layout in layouts:
        for col in layout:
            fields.setdefault(col.name, pa.field(col.name, col.arrow_type))
            origin.setdefault(col.name, "the data model")
    extras = []
    derived_names = {f.name for f in derived}
    for source in sources:
        for name in source.dtype.names:
            type_ = arrow_type(*source.field(name))
            if name in derived_names:
                raise IngestError(
                    source.path, product, f"column {name} clashes with a column the ingest adds", where=source.node
                )
            if name not in fields:
                fields[name] = pa.field(name, type_)
                origin[name] = source.path.name
                extras.append(name)
            elif fields[name].type != type_:
                raise IngestError(
                    source.path,
                    product,
                    f"column {name} is {type_} here but {fields[name].type} in {origin[name]}",
                    where=f"{source.node} column {name}",
                )
    return pa.schema([*fields.values(), *derived]), extras


def check_positions(ra: np.ndarray, dec: np.ndarray, source: SourceTable, product: str, start: int) -> None:
    for name, values, low, high in (("ra", ra, 0.0, 360.0), ("dec", dec, -90.0, 90.0)):
        bad = ~((values >= low) & (values <= high))  # NaN compares False
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise IngestError(
                source.path,
                product,
                f"{name} = {values[i]} is NaN or outside [{low:g}, {high:g}] degrees",
                where=f"{source.node} row {start + i}, column {name}",
            )


def check_release(detectid: np.ndarray, survey: str, source: SourceTable, product: str, start: int) -> None:
    """detectid has 10 digits and its leading digit is the internal release (3 for hdr3, ...)."""
    release = int(survey.removeprefix("hdr"))
    bad = detectid // 1_000_000_000 != release
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise IngestError(
            source.path,
            product,
            f"detectid {detectid[i]} does not belong to {survey}: its leading digit must be {release}",
            where=f"{source.node} row {start + i}, column detectid",
        )


class DetectidLedger:
    """The detectids of every file read so far (sorted, 8 bytes each), to report duplicates within a
    file and across files."""

    def __init__(self, product: str):
        self.product = product
        self._files: list[tuple[Path, np.ndarray]] = []

    def add(self, source: SourceTable, detectid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Record the ``detectid`` column of ``source`` (in row order); return its sorting order and the
        sorted ids (kept by the ledger: read-only)."""
        order = np.argsort(detectid, kind="stable")
        ids = detectid[order]
        repeated = np.flatnonzero(ids[1:] == ids[:-1])
        if repeated.size:
            i = repeated[0]
            raise IngestError(
                source.path,
                self.product,
                f"duplicate detectid {ids[i]}",
                where=f"{source.node} rows {order[i]} and {order[i + 1]}",
            )
        for other_path, other in self._files:
            at = np.minimum(np.searchsorted(other, ids), max(len(other) - 1, 0))
            shared = np.flatnonzero(other[at] == ids) if len(other) else np.empty(0, np.int64)
            if shared.size:
                i = shared[0]
                raise IngestError(
                    source.path,
                    self.product,
                    f"duplicate detectid {ids[i]}: also in {other_path.name}",
                    where=f"{source.node} row {order[i]}",
                )
        self._files.append((source.path, ids))
        return order, ids


# ---------------------------------------------------------------------------------------------------
# The catalogs

CALIBRATED = ("flux", "flux_err", "continuum", "continuum_err", "flux_noise_1sigma")
_CAL = "_cal"

_POSITION_UNITS = {"ra": "deg", "dec": "deg"}
_IFU_UNITS = {"x_ifu": "arcsec", "y_ifu": "arcsec", "x_raw": "pixel", "y_raw": "pixel"}
DETECTIONS_UNITS = {
    **_POSITION_UNITS,
    **_IFU_UNITS,
    **dict.fromkeys(("wave", "wave_err", "linewidth", "linewidth_err"), "Angstrom"),
    **dict.fromkeys(("flux", "flux_err", "flux_noise_1sigma"), FLUX_UNIT),
    **dict.fromkeys(("continuum", "continuum_err"), FLUX_DENSITY_UNIT),
    **dict.fromkeys(("flux_cal", "flux_err_cal", "flux_noise_1sigma_cal"), FLUX_UNIT),
    **dict.fromkeys(("continuum_cal", "continuum_err_cal"), FLUX_DENSITY_UNIT),
}
_PER_BIN = f"{FLUX_UNIT} per 2 Angstrom bin"
SPECTRA_UNITS = {
    **_POSITION_UNITS,
    "wave1d": "Angstrom",
    **dict.fromkeys(("spec1d", "spec1d_err", "spec1d_ffsky", "spec1d_nc", "spec1d_nc_err"), _PER_BIN),
    **dict.fromkeys(("counts1d", "counts1d_err", "apsum_counts", "apsum_counts_err"), "counts"),
    **dict.fromkeys(("spec", "spec_err"), FLUX_DENSITY_UNIT),
}
FIBERS_UNITS = {**_POSITION_UNITS, **_IFU_UNITS, "distance": "arcsec", "wavein": "Angstrom"}

DETECTIONS_CALIBRATION = (
    "X_cal = X / w(wave) for X in flux, flux_err, continuum, continuum_err, flux_noise_1sigma; "
    "w = detect/wdcor.txt factor interpolated linearly at wave (end values outside 3470-5540 A); "
    "float64 arithmetic rounded to float32; applied to all releases and both det_types; null where X is absent; "
    "HDR3 1.07 edge-fibre noise inflation not applied"
)
SPECTRA_CALIBRATION = (
    "spec = spec1d / 2 / wdcor, spec_err = spec1d_err / 2 / wdcor per pixel (detect/wdcor.txt), in "
    f"{FLUX_DENSITY_UNIT}; float64 arithmetic rounded to float32; applied to all releases and both det_types; "
    "HDR3 1.07 edge-fibre noise inflation not applied"
)
STRINGS_NOTE = "HDF5 byte strings are decoded as UTF-8 with trailing NULs removed"


@dataclass(frozen=True)
class DetectFile:
    """One present database and its inspected tables."""

    path: Path
    survey: str
    det_type: str
    detections: SourceTable
    spectra: SourceTable
    fibers: SourceTable


def file_name(survey: str, det_type: str) -> str:
    return f"{'detect' if det_type == 'line' else 'cont'}_{survey}.h5"


def _inspect(path: Path, survey: str, det_type: str) -> DetectFile:
    layout = LINE_DETECTIONS if det_type == "line" else CONT_DETECTIONS
    with open_h5(path, DETECTIONS) as h5:
        return DetectFile(
            path,
            survey,
            det_type,
            detections=inspect_table(h5, path, DETECTIONS, "/Detections", layout),
            spectra=inspect_table(h5, path, SPECTRA, "/Spectra", SPECTRA_COLUMNS),
            fibers=inspect_table(h5, path, FIBERS, "/Fibers", FIBERS_COLUMNS),
        )


def products(
    pdr1_dir: Path,
    *,
    hash_max_bytes: int = HASH_MAX_BYTES,
    chunk_rows: int = SCALAR_CHUNK_ROWS,
    spectra_chunk_rows: int = SPECTRA_CHUNK_ROWS,
) -> list[Product]:
    """``detections``, ``detection_spectra`` and ``fibers`` from the databases present under
    ``pdr1_dir/detect``.

    Absent databases are listed in each product's notes. Without ``wdcor.txt`` the two calibrated
    catalogs are left out (the notes of ``fibers`` and a warning say so); a catalog whose tables hold
    no rows is left out too. Malformed inputs raise :class:`IngestError`: layouts here, contents
    (positions, ids, strings) while the batches are read. Inputs larger than ``hash_max_bytes`` are recorded
    in the metadata by size and mtime instead of their sha256 (see :func:`~dexdb.ingest.product.catalog_metadata`).
    """
    root = Path(pdr1_dir)
    detect_dir = root / "detect"
    files, absent = [], []
    for survey in SURVEYS:
        for det_type in DET_TYPES:
            path = detect_dir / file_name(survey, det_type)
            if path.exists() or path.is_symlink():
                files.append(_inspect(path, survey, det_type))
            else:
                absent.append(path.relative_to(root).as_posix())
    if not files:
        log.warning("no detection databases under %s: detections, detection_spectra and fibers not built", detect_dir)
        return []
    wdcor_path = detect_dir / WDCOR_FILE
    wdcor = read_wdcor(wdcor_path, f"{DETECTIONS}, {SPECTRA}") if wdcor_path.exists() else None

    builders = {DETECTIONS: _detections_product, SPECTRA: _spectra_product, FIBERS: _fibers_product}
    rows = {
        DETECTIONS: sum(f.detections.nrows for f in files),
        SPECTRA: sum(f.spectra.nrows for f in files),
        FIBERS: sum(f.fibers.nrows for f in files),
    }
    left_out = []
    if wdcor is None:
        left_out.append(f"{DETECTIONS} and {SPECTRA} not built: {WDCOR_FILE} is missing (needed for calibration)")
        del builders[DETECTIONS], builders[SPECTRA]
    for name in list(builders):
        if rows[name] == 0:
            left_out.append(f"{name} not built: its source tables hold no rows")
            del builders[name]
    for reason in left_out:
        log.warning("%s: %s", detect_dir, reason)

    notes = [STRINGS_NOTE, *left_out]
    if absent:
        notes.append(f"input not present, its rows are absent: {', '.join(absent)}")
    inputs = _Inputs(
        tuple(files), root, wdcor_path, wdcor, tuple(notes), hash_max_bytes, chunk_rows, spectra_chunk_rows
    )
    return [build(inputs) for build in builders.values()]


@dataclass(frozen=True)
class _Inputs:
    """What the catalog builders share."""

    files: tuple[DetectFile, ...]
    root: Path
    wdcor_path: Path
    wdcor: np.ndarray | None
    notes: tuple[str, ...]  # common to every catalog
    hash_max_bytes: int
    chunk_rows: int
    spectra_chunk_rows: int

    def paths(self, calibrated: bool) -> list[Path]:
        return [f.path for f in self.files] + ([self.wdcor_path] if calibrated else [])


def extras_note(extras: list[str]) -> list[str]:
    return [f"columns beyond the data model carried as found: {', '.join(extras)}"] if extras else []


def _detections_product(inputs: _Inputs) -> Product:
    sources = [f.detections for f in inputs.files]
    derived = [
        pa.field("survey", pa.string()),
        pa.field("det_type", pa.string()),
        *(pa.field(name + _CAL, pa.float32()) for name in CALIBRATED),
    ]
    schema, extras = union_schema(DETECTIONS, sources, [LINE_DETECTIONS, CONT_DETECTIONS], derived)
    notes = [
        *inputs.notes,
        "line and continuum detections share one table; columns of only one kind are null for the other",
        DETECTIONS_CALIBRATION,
        *extras_note(extras),
    ]
    paths = inputs.paths(calibrated=True)
    metadata = catalog_metadata(
        inputs.root,
        paths,
        DETECTIONS_UNITS,
        notes,
        hash_max_bytes=inputs.hash_max_bytes,
        calibration=DETECTIONS_CALIBRATION,
        wavelength_grid=WAVELENGTH_GRID,
    )
    spec = CatalogSpec(
        name=DETECTIONS,
        ra_column="ra",
        dec_column="dec",
        sort_tiebreak="detectid",
        id_columns=("detectid",),
        partition_bytes=DETECTIONS_PARTITION_BYTES,
        row_group_rows=SCALAR_ROW_GROUP_ROWS,
        metadata=metadata,
    )
    return Product(
        spec=spec,
        inputs=paths,
        batches=functools.partial(_detection_batches, inputs.files, schema, inputs.wdcor, inputs.chunk_rows),
        expected_rows=sum(s.nrows for s in sources),
        input_bytes=sum(s.nbytes for s in sources),
        notes=notes,
    )


def _detection_batches(
    files: Sequence[DetectFile], schema: pa.Schema, wdcor: np.ndarray, chunk_rows: int
) -> Iterator[pa.RecordBatch]:
    ledger = DetectidLedger(DETECTIONS)
    for f in files:
        source = f.detections
        ids = np.empty(source.nrows, dtype=np.int64)
        with open_h5(f.path, DETECTIONS) as h5:
            for start, records in read_chunks(h5, source, DETECTIONS, chunk_rows):
                check_release(records["detectid"], f.survey, source, DETECTIONS, start)
                check_positions(records["ra"], records["dec"], source, DETECTIONS, start)
                n = len(records)
                ids[start : start + n] = records["detectid"]
                factor = factor_at(records["wave"], wdcor)
                derived = {"survey": constant_strings(f.survey, n), "det_type": constant_strings(f.det_type, n)}
                for name in CALIBRATED:
                    if name in records.dtype.names:
                        derived[name + _CAL] = pa.array((records[name] / factor).astype(np.float32))
                yield record_batch(schema, records, derived, source, DETECTIONS, start)
        ledger.add(source, ids)


def rows_in(sorted_ids: np.ndarray, detectid: np.ndarray, source: SourceTable, product: str, start: int) -> np.ndarray:
    """Index of each ``detectid`` in ``sorted_ids`` (the file's /Detections ids); absent ids are errors."""
    at = np.minimum(np.searchsorted(sorted_ids, detectid), max(len(sorted_ids) - 1, 0))
    found = sorted_ids[at] == detectid if len(sorted_ids) else np.zeros(len(detectid), bool)
    if not found.all():
        i = int(np.flatnonzero(~found)[0])
        raise IngestError(
            source.path,
            product,
            f"detectid {detectid[i]} is absent from /Detections",
            where=f"{source.node} row {start + i}",
        )
    return at


@dataclass(frozen=True)
class _Positions:
    """ra/dec of a file's detections, sorted by detectid."""

    detectid: np.ndarray
    ra: np.ndarray
    dec: np.ndarray


def _detection_positions(h5: tb.File, f: DetectFile, product: str, chunk_rows: int) -> _Positions:
    """Read /Detections once for its ids and positions, checked as in ``detections`` except for duplicates
    across files (the spectra's own ids are checked across files)."""
    source = f.detections
    detectid = np.empty(source.nrows, dtype=np.int64)
    ra = np.empty(source.nrows, dtype=np.float32)
    dec = np.empty(source.nrows, dtype=np.float32)
    for start, records in read_chunks(h5, source, product, chunk_rows):
        check_release(records["detectid"], f.survey, source, product, start)
        check_positions(records["ra"], records["dec"], source, product, start)
        rows = slice(start, start + len(records))
        detectid[rows], ra[rows], dec[rows] = records["detectid"], records["ra"], records["dec"]
    order, sorted_ids = DetectidLedger(product).add(source, detectid)
    return _Positions(sorted_ids, ra[order], dec[order])


def _spectra_product(inputs: _Inputs) -> Product:
    sources = [f.spectra for f in inputs.files]
    derived = [
        pa.field("ra", pa.float32()),
        pa.field("dec", pa.float32()),
        pa.field("survey", pa.string()),
        pa.field("det_type", pa.string()),
        pa.field("spec", pa.list_(pa.float32(), N_WAVE)),
        pa.field("spec_err", pa.list_(pa.float32(), N_WAVE)),
    ]
    schema, extras = union_schema(SPECTRA, sources, [SPECTRA_COLUMNS], derived)
    notes = [
        *inputs.notes,
        "ra and dec are those of the detection in /Detections of the same file",
        SPECTRA_CALIBRATION,
        *extras_note(extras),
    ]
    paths = inputs.paths(calibrated=True)
    metadata = catalog_metadata(
        inputs.root,
        paths,
        SPECTRA_UNITS,
        notes,
        hash_max_bytes=inputs.hash_max_bytes,
        calibration=SPECTRA_CALIBRATION,
        wavelength_grid=WAVELENGTH_GRID,
    )
    spec = CatalogSpec(
        name=SPECTRA,
        ra_column="ra",
        dec_column="dec",
        sort_tiebreak="detectid",
        id_columns=("detectid",),
        partition_bytes=SPECTRA_PARTITION_BYTES,
        row_group_rows=SPECTRA_ROW_GROUP_ROWS,
        metadata=metadata,
    )
    return Product(
        spec=spec,
        inputs=paths,
        batches=functools.partial(
            _spectra_batches, inputs.files, schema, inputs.wdcor, inputs.chunk_rows, inputs.spectra_chunk_rows
        ),
        expected_rows=sum(s.nrows for s in sources),
        input_bytes=sum(f.spectra.nbytes + f.detections.nbytes for f in inputs.files),
        notes=notes,
    )


def _spectra_batches(
    files: Sequence[DetectFile], schema: pa.Schema, wdcor: np.ndarray, chunk_rows: int, spectra_chunk_rows: int
) -> Iterator[pa.RecordBatch]:
    ledger = DetectidLedger(SPECTRA)
    per_pixel = 2.0 * wdcor  # spec1d is per 2 A bin
    for f in files:
        source = f.spectra
        if source.nrows == 0:
            continue
        ids = np.empty(source.nrows, dtype=np.int64)
        with open_h5(f.path, SPECTRA) as h5:
            positions = _detection_positions(h5, f, SPECTRA, chunk_rows)
            for start, records in read_chunks(h5, source, SPECTRA, spectra_chunk_rows):
                detectid = records["detectid"]
                at = rows_in(positions.detectid, detectid, source, SPECTRA, start)
                n = len(records)
                ids[start : start + n] = detectid
                derived = {
                    "ra": pa.array(positions.ra[at]),
                    "dec": pa.array(positions.dec[at]),
                    "survey": constant_strings(f.survey, n),
                    "det_type": constant_strings(f.det_type, n),
                    "spec": fixed_size_list((records["spec1d"] / per_pixel).astype(np.float32)),
                    "spec_err": fixed_size_list((records["spec1d_err"] / per_pixel).astype(np.float32)),
                }
                yield record_batch(schema, records, derived, source, SPECTRA, start)
        ledger.add(source, ids)


def _fibers_product(inputs: _Inputs) -> Product:
    sources = [f.fibers for f in inputs.files]
    derived = [
        pa.field("survey", pa.string()),
        pa.field("det_type", pa.string()),
        pa.field("fiber_row", pa.int64()),
    ]
    schema, extras = union_schema(FIBERS, sources, [FIBERS_COLUMNS], derived)
    order = ", ".join(file_name(f.survey, f.det_type) for f in inputs.files)
    notes = [
        *inputs.notes,
        "one row per (detection, contributing fibre); ra and dec are the fibre's",
        f"fiber_row numbers the rows of the /Fibers tables concatenated in the order {order} (0-based); "
        "it is unique, orders rows sharing a position, and changes if an input is added or removed",
        *extras_note(extras),
    ]
    paths = inputs.paths(calibrated=False)
    metadata = catalog_metadata(inputs.root, paths, FIBERS_UNITS, notes, hash_max_bytes=inputs.hash_max_bytes)
    spec = CatalogSpec(
        name=FIBERS,
        ra_column="ra",
        dec_column="dec",
        sort_tiebreak="fiber_row",
        partition_bytes=FIBERS_PARTITION_BYTES,
        row_group_rows=SCALAR_ROW_GROUP_ROWS,
        metadata=metadata,
    )
    return Product(
        spec=spec,
        inputs=paths,
        batches=functools.partial(_fiber_batches, inputs.files, schema, inputs.chunk_rows),
        expected_rows=sum(s.nrows for s in sources),
        input_bytes=sum(f.fibers.nbytes + f.detections.nbytes for f in inputs.files),
        notes=notes,
    )


def _fiber_batches(files: Sequence[DetectFile], schema: pa.Schema, chunk_rows: int) -> Iterator[pa.RecordBatch]:
    first_row = 0
    for f in files:
        source = f.fibers
        if source.nrows == 0:
            continue
        with open_h5(f.path, FIBERS) as h5:
            detection_ids = np.empty(f.detections.nrows, dtype=np.int64)
            for start, ids in read_chunks(h5, f.detections, FIBERS, FIELD_CHUNK_ROWS, field="detectid"):
                detection_ids[start : start + len(ids)] = ids
            detection_ids.sort()
            for start, records in read_chunks(h5, source, FIBERS, chunk_rows):
                check_release(records["detectid"], f.survey, source, FIBERS, start)
                check_positions(records["ra"], records["dec"], source, FIBERS, start)
                rows_in(detection_ids, records["detectid"], source, FIBERS, start)
                n = len(records)
                derived = {
                    "survey": constant_strings(f.survey, n),
                    "det_type": constant_strings(f.det_type, n),
                    "fiber_row": pa.array(np.arange(first_row + start, first_row + start + n, dtype=np.int64)),
                }
                yield record_batch(schema, records, derived, source, FIBERS, start)
        first_row += source.nrows
