"""HETDEX Source Catalog 2 -> the ``sources``, ``source_spectra`` and ``detinfo`` catalogs (data model section 2).

``sources``: every column of the main table ``hetdex_sc2_vX.Y.fits`` (without the main table, of the
spectra file's INFO table, its copy).

``source_spectra``: per main-table row its ``source_id``, ``detectid``, ``RA``, ``DEC`` and spectrum and
error, ``spec`` / ``spec_err`` (FixedSizeList<float32>[1036], per Angstrom as stored), from the spectra
file ``hetdex_sc2_spec_vX.Y.fits``. A sibling catalog joined by ``source_id`` rather than columns of
``sources``: spectra need row groups of ~100 rows to fetch one cheaply, scalar scans want ~100k-row
groups, and the benchmark in tests/benchmarks/RESULTS.md measured scalar queries 4-16x faster apart at
equal spectrum access and size. The file is ~10 GB and wavelength-major (row i's spectrum is
``SPEC[:, i]``, 1036 values N apart), so spectra are read a block of catalog rows at a time: one
contiguous run per wavelength, transposed in memory. Its INFO table must match the main table row by
row (source_id, detectid).

``detinfo``: every column of ``hetdex_sc2_detinfo_vX.Y.fits``.

The highest version present is used (v1.3, v1.4 and v1.5 column sets are all accepted) and recorded.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import ExitStack
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa

from dexdb.constants import FLUX_DENSITY_UNIT, N_WAVE, WAVE
from dexdb.ingest.fits_stream import (
    FitsFile,
    FitsImage,
    FitsTable,
    UniqueIds,
    check_sky,
    row_ranges,
    version_key,
)
from dexdb.ingest.hats_writer import CatalogSpec
from dexdb.ingest.product import HASH_MAX_BYTES, Product, catalog_metadata

SOURCES = "sources"
SOURCE_SPECTRA = "source_spectra"
DETINFO = "detinfo"
CATALOG_DIR = "hetdex_source_catalog_2"
_FILE_PATTERNS = {
    "main": re.compile(r"hetdex_sc2_v(\d+(?:\.\d+)*)\.fits"),
    "spec": re.compile(r"hetdex_sc2_spec_v(\d+(?:\.\d+)*)\.fits"),
    "detinfo": re.compile(r"hetdex_sc2_detinfo_v(\d+(?:\.\d+)*)\.fits"),
}

# Rows per batch. A sources batch of 16k rows holds 2 x 68 MB of spectra, and reads one 64 KB
# run per wavelength and image; detinfo rows are ~350 bytes.
SOURCES_CHUNK_ROWS = 16_384
DETINFO_CHUNK_ROWS = 65_536
# One spectrum by id decodes one row group (see detect.SPECTRA_ROW_GROUP_ROWS for the measurement).
SOURCE_SPECTRA_ROW_GROUP_ROWS = 128
DETINFO_ROW_GROUP_ROWS = 32_768
# Partition budgets (Arrow bytes): 256 MiB is ~30k spectra pairs (~200 MB on disk after zstd +
# byte-stream-split) and bounds what each writer worker holds; the scalar sources table (~1 GB) and
# the 1.1 GB detinfo table split into about a dozen 128 MiB partitions.
SOURCE_SPECTRA_PARTITION_BYTES = 256 << 20
SOURCES_PARTITION_BYTES = 128 << 20
DETINFO_PARTITION_BYTES = 128 << 20

WAVELENGTH_GRID = "3470 + 2k Angstrom, k=0..1035, air"

# The v1.3 columns every version keeps (lum_* may be replaced by logL_* in v1.5), by kind.
MAIN_REQUIRED = {
    "source_name": "S", "source_id": "i", "shotid": "i", "RA": "f", "DEC": "f", "gmag": "f",
    "Av": "f", "z_hetdex": "f", "z_hetdex_src": "S", "z_hetdex_conf": "f", "source_type": "S",
    "n_members": "i", "detectid": "i", "field": "S", "flux": "f", "flux_err": "f", "flux_aper": "f",
    "flux_aper_err": "f", "flag_aper": "i", "major": "f", "minor": "f", "theta": "f", "flux_lya": "f",
    "flux_lya_err": "f", "flux_oii": "f", "flux_oii_err": "f", "sn": "f", "apcor": "f",
    "p_conf": "f", "p_cnn": "f",
}  # fmt: skip
MAIN_OPTIONAL = {
    "RA_det": "f", "DEC_det": "f", "ifuslot": "S", "det_type": "S",
    "lum_lya": "f", "lum_lya_err": "f", "lum_oii": "f", "lum_oii_err": "f",
    "logL_lya": "f", "logL_lya_err": "f", "logL_oii": "f", "logL_oii_err": "f",
}  # fmt: skip
# detinfo's later column sets are undocumented: only the identity and position columns the
# catalog depends on are required; every other column passes through whatever its kind.
DETINFO_REQUIRED = {"source_id": "i", "source_name": "S", "detectid": "i", "shotid": "i", "RA": "f", "DEC": "f"}
SPECTRUM_COLUMNS = {"spec": "SPEC", "spec_err": "SPEC_ERR"}
# The columns source_spectra carries beside the spectra: the join key, the detection, the position.
SPECTRA_KEY_COLUMNS = ("source_id", "detectid", "RA", "DEC")

BAD_VALUES_NOTE = (
    "Bad values are kept as in the source file: -999 (floats; some rows hold NaN instead, as the v1.4+ "
    "writer fills masked values with NaN) and 'n/a' (strings). Test for both -999 and NaN."
)
STRINGS_NOTE = "Strings lose only their FITS trailing blanks."


def products(
    pdr1_dir: Path,
    *,
    hash_max_bytes: int = HASH_MAX_BYTES,
    sources_chunk_rows: int = SOURCES_CHUNK_ROWS,
    detinfo_chunk_rows: int = DETINFO_CHUNK_ROWS,
) -> list[Product]:
    """``sources``, ``source_spectra`` and ``detinfo`` from the HPSC2 files present. Inputs of at most ``hash_max_bytes`` are
    hashed into the metadata, larger ones (the spectra file) recorded by size and mtime (see
    :func:`~dexdb.ingest.product.catalog_metadata`)."""
    pdr1_dir = Path(pdr1_dir)
    files = _catalog_files(pdr1_dir / CATALOG_DIR)
    found = []
    if files["main"] or files["spec"]:
        found.append(_sources(pdr1_dir, files, hash_max_bytes, sources_chunk_rows))
    if files["spec"]:
        found.append(_source_spectra(pdr1_dir, files, hash_max_bytes, sources_chunk_rows))
    if files["detinfo"]:
        found.append(_detinfo(pdr1_dir, files, hash_max_bytes, detinfo_chunk_rows))
    return found


def _catalog_files(directory: Path) -> dict[str, dict[str, Path]]:
    """{kind: {version: path}} of the HPSC2 FITS files present."""
    files: dict[str, dict[str, Path]] = {kind: {} for kind in _FILE_PATTERNS}
    if directory.is_dir():
        for path in directory.iterdir():
            for kind, pattern in _FILE_PATTERNS.items():
                if match := pattern.fullmatch(path.name):
                    files[kind][match.group(1)] = path
    return files


def _highest(versions: dict[str, Path]) -> str:
    return max(versions, key=version_key)


# --------------------------------------------------------------------------------------------------
# sources


def _sources(pdr1_dir: Path, files: dict[str, dict[str, Path]], hash_max_bytes: int, chunk_rows: int) -> Product:
    version = _highest(files["main"] or files["spec"])
    main_path = files["main"].get(version)
    spec_path = files["spec"].get(version)
    with ExitStack() as stack:
        opened = _SourceFiles(stack, main_path, spec_path if main_path is None else None)
        units, nrows, input_path = opened.table.units, opened.table.nrows, opened.table.file.path

    notes = [
        f"HPSC2 v{version}.",
        BAD_VALUES_NOTE,
        STRINGS_NOTE,
        "source_id is unique; source_name repeats over the observations of one source.",
        f"Spectra are in the sibling catalog {SOURCE_SPECTRA}, joined by source_id.",
    ]
    if main_path is None:
        notes.append(f"No main table hetdex_sc2_v{version}.fits was present: columns from INFO of {spec_path.name}.")
    metadata = catalog_metadata(pdr1_dir, [input_path], units, notes, hash_max_bytes=hash_max_bytes,
                                hpsc2_version=version)
    spec = CatalogSpec(
        name=SOURCES,
        ra_column="RA",
        dec_column="DEC",
        sort_tiebreak="source_id",
        id_columns=("source_id", "detectid", "source_name"),
        partition_bytes=SOURCES_PARTITION_BYTES,
        metadata=metadata,
    )
    batches = partial(_source_batches, main_path, spec_path if main_path is None else None, chunk_rows)
    return Product(spec, [input_path], batches, expected_rows=nrows, input_bytes=input_path.stat().st_size,
                   notes=notes)


def _source_spectra(pdr1_dir: Path, files: dict[str, dict[str, Path]], hash_max_bytes: int,
                    chunk_rows: int) -> Product:
    version = _highest(files["spec"])
    main_path = files["main"].get(version)
    spec_path = files["spec"][version]
    with ExitStack() as stack:
        opened = _SourceFiles(stack, main_path, spec_path)
        units = {name: opened.info.units.get(name, "") for name in SPECTRA_KEY_COLUMNS}
        units |= dict.fromkeys(SPECTRUM_COLUMNS, opened.spectrum_unit)
        nrows, spectrum_unit = opened.info.nrows, opened.spectrum_unit
    notes = [
        f"HPSC2 v{version}.",
        f"One row per row of {SOURCES}: {', '.join(SPECTRA_KEY_COLUMNS)} from INFO of {spec_path.name}.",
        f"spec / spec_err: SPEC[:, i] / SPEC_ERR[:, i] of {spec_path.name} as stored: per Angstrom "
        f"({spectrum_unit}), dust-corrected, PSF-extracted, aperture-corrected, on {WAVELENGTH_GRID}.",
    ]
    metadata = catalog_metadata(pdr1_dir, [spec_path], units, notes, hash_max_bytes=hash_max_bytes,
                                hpsc2_version=version, wavelength=WAVELENGTH_GRID, spectrum_unit=spectrum_unit)
    spec = CatalogSpec(
        name=SOURCE_SPECTRA,
        ra_column="RA",
        dec_column="DEC",
        sort_tiebreak="source_id",
        id_columns=("source_id",),
        partition_bytes=SOURCE_SPECTRA_PARTITION_BYTES,
        row_group_rows=SOURCE_SPECTRA_ROW_GROUP_ROWS,
        metadata=metadata,
    )
    inputs = [p for p in (spec_path, main_path) if p is not None]
    batches = partial(_spectra_batches, main_path, spec_path, chunk_rows)
    return Product(spec, inputs, batches, expected_rows=nrows, input_bytes=spec_path.stat().st_size, notes=notes)


class _SourceFiles:
    """The main table and the spectra file of one version, opened and checked for consistency."""

    def __init__(self, stack: ExitStack, main_path: Path | None, spec_path: Path | None):
        self.main = self.info = self.spec = self.spec_err = None
        if main_path is not None:
            self.main = _checked_table(stack.enter_context(FitsFile(main_path, SOURCES)).table(1))
        if spec_path is not None:
            spec_file = stack.enter_context(FitsFile(spec_path, SOURCES))
            self.info = _checked_table(spec_file.table("INFO"))
            rows = self.info.nrows
            if self.main is not None and rows != self.main.nrows:
                raise spec_file.error(f"INFO has {rows} rows but {main_path.name} has {self.main.nrows}", "HDU 'INFO'")
            self.spec, self.spec_err = (
                _spectra_image(spec_file, extname, rows) for extname in SPECTRUM_COLUMNS.values()
            )
            wavelength = spec_file.image("WAVELENGTH")
            wavelength.check_shape((N_WAVE,), "WAVELENGTH")
            values = wavelength.read().astype(np.float64)
            if not np.array_equal(values, WAVE.astype(np.float64)):
                k = int(np.argmax(values != WAVE))
                raise spec_file.error(
                    f"WAVELENGTH is not the PDR1 grid {WAVELENGTH_GRID}: "
                    f"{float(values[k])} at k={k}, expected {float(WAVE[k])}",
                    "HDU 'WAVELENGTH'",
                )
        self.table: FitsTable = self.main if self.main is not None else self.info

    @property
    def spectrum_unit(self) -> str:
        return str(self.spec.header.get("BUNIT", FLUX_DENSITY_UNIT)) if self.spec is not None else ""


def _checked_table(table: FitsTable) -> FitsTable:
    table.require(MAIN_REQUIRED, MAIN_OPTIONAL)
    clashing = [name for name in SPECTRUM_COLUMNS if name in table.columns]
    if clashing:
        raise table.file.error(f"column(s) {', '.join(clashing)} clash with the spectrum columns", f"HDU {table.key!r}")
    return table


def _spectra_image(file: FitsFile, extname: str, rows: int) -> FitsImage:
    image = file.image(extname)
    if image.dtype != np.dtype(">f4"):
        raise file.error(f"{extname} has BITPIX {image.header['BITPIX']}, expected -32 (float32)", f"HDU {extname!r}")
    image.check_shape((N_WAVE, rows), f"{extname} must hold one spectrum per INFO row, (N_WAVE, rows)")
    return image


def _source_batches(main_path: Path | None, info_path: Path | None, chunk_rows: int) -> Iterator[pa.RecordBatch]:
    """The rows of the main table, or of INFO in ``info_path`` when there is no main table."""
    # Reopened (and re-checked) here: the stream may start long after products() looked.
    with ExitStack() as stack:
        table = _SourceFiles(stack, main_path, info_path).table
        source_ids = UniqueIds(table.nrows, "source_id")
        for start, stop in row_ranges(table.nrows, chunk_rows):
            records = table.records(start, stop)
            check_sky(table, records["RA"], records["DEC"], "RA", "DEC", start)
            source_ids.add(records["source_id"])
            yield table.to_arrow(records)
        source_ids.check(table)


def _spectra_batches(main_path: Path | None, spec_path: Path, chunk_rows: int) -> Iterator[pa.RecordBatch]:
    with ExitStack() as stack:
        files = _SourceFiles(stack, main_path, spec_path)
        info = files.info
        source_ids = UniqueIds(info.nrows, "source_id")
        for start, stop in row_ranges(info.nrows, chunk_rows):
            records = info.records(start, stop)
            check_sky(info, records["RA"], records["DEC"], "RA", "DEC", start)
            source_ids.add(records["source_id"])
            if files.main is not None:
                _check_info_matches(info, records, files.main.records(start, stop), start)
            yield _with_spectra(info.to_arrow(records).select(list(SPECTRA_KEY_COLUMNS)), files, start, stop)
        source_ids.check(info)


def _check_info_matches(info: FitsTable, info_records: np.ndarray, main_records: np.ndarray, start: int) -> None:
    for name in ("source_id", "detectid"):
        differ = info_records[name] != main_records[name]
        if differ.any():
            k = int(np.argmax(differ))
            raise info.file.error(
                f"INFO does not match the main table row by row: {name} {info_records[name][k]} here, "
                f"{main_records[name][k]} in the main table",
                f"row {start + k}, column {name}",
            )


def _with_spectra(batch: pa.RecordBatch, files: _SourceFiles, start: int, stop: int) -> pa.RecordBatch:
    columns = {}
    for name, image in (("spec", files.spec), ("spec_err", files.spec_err)):
        values = np.empty((stop - start, N_WAVE), dtype=np.float32)
        image.read_columns(start, stop, values)
        columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), N_WAVE)
    return pa.RecordBatch.from_arrays([*batch.columns, *columns.values()], names=[*batch.schema.names, *columns])


# --------------------------------------------------------------------------------------------------
# detinfo


def _detinfo(pdr1_dir: Path, files: dict[str, dict[str, Path]], hash_max_bytes: int, chunk_rows: int) -> Product:
    version = _highest(files["detinfo"])
    path = files["detinfo"][version]
    with FitsFile(path, DETINFO) as file:
        table = file.table(1)
        table.require(DETINFO_REQUIRED)
        units, nrows = table.units, table.nrows
    notes = [
        f"HPSC2 v{version}.",
        BAD_VALUES_NOTE,
        STRINGS_NOTE,
        (
            "One row per detection; detectid is unique. Partitioned on the source position RA/DEC "
            "(RA_det/DEC_det is the detection's own position), so a source's detections share its partition."
        ),
    ]
    metadata = catalog_metadata(pdr1_dir, [path], units, notes, hash_max_bytes=hash_max_bytes, hpsc2_version=version)
    spec = CatalogSpec(
        name=DETINFO,
        ra_column="RA",
        dec_column="DEC",
        sort_tiebreak="detectid",
        id_columns=("detectid",),
        partition_bytes=DETINFO_PARTITION_BYTES,
        row_group_rows=DETINFO_ROW_GROUP_ROWS,
        metadata=metadata,
    )
    batches = partial(_detinfo_batches, path, chunk_rows)
    return Product(spec, [path], batches, expected_rows=nrows, input_bytes=path.stat().st_size, notes=notes)


def _detinfo_batches(path: Path, chunk_rows: int) -> Iterator[pa.RecordBatch]:
    with FitsFile(path, DETINFO) as file:
        table = file.table(1)
        table.require(DETINFO_REQUIRED)
        detectids = UniqueIds(table.nrows, "detectid")
        for start, stop in row_ranges(table.nrows, chunk_rows):
            records = table.records(start, stop)
            check_sky(table, records["RA"], records["DEC"], "RA", "DEC", start)
            detectids.add(records["detectid"])
            yield table.to_arrow(records)
        detectids.check(table)
