"""Streaming FITS writers for the mock PDR1 tables and HPSC2 spectra (layout only, no content).

Schemas follow the PDR1 data-model reference: ``ifu-index.fits`` (section 1), the HPSC2 main
table and INFO HDU (2.1), the HPSC2 spectra file (2.2) and the detinfo table (2.3). Every writer
streams: memory stays bounded by the chunk the caller hands over, whatever the row count.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any, BinaryIO

import numpy as np
from astropy.io import fits

from dexdb.constants import FLUX_DENSITY_UNIT, FLUX_UNIT, N_WAVE, WAVE

_FITS_BLOCK = 2880
_TRANSPOSE_ROWS = 256

_DEG = "deg"
_ARCSEC = "arcsec"
_ANGSTROM = "Angstrom"
_LUMINOSITY_UNIT = "erg s-1"

# (name, numpy dtype, unit or None), in file column order.
_IFU_INDEX_COLUMNS = [
    ("shotid", ">i8", None),
    ("ifuslot", "S3", None),
    ("ra_cen", ">f4", _DEG),
    ("dec_cen", ">f4", _DEG),
    ("flag", ">f4", None),
    ("flag_badamp", ">f4", None),
    ("flag_badfib", ">f4", None),
    ("flag_meteor", ">f4", None),
    ("flag_satellite", ">f4", None),
    ("flag_shot", ">f4", None),
    ("flag_throughput", ">f4", None),
    ("field", "S12", None),
    ("objid", "S18", None),
    ("date", ">i4", None),
    ("obsid", ">i4", None),
    ("ra_shot", ">f8", _DEG),
    ("dec_shot", ">f8", _DEG),
    ("pa", ">f8", _DEG),
    ("n_ifu", ">i4", None),
    ("fwhm_virus", ">f4", _ARCSEC),
    ("fwhm_virus_err", ">f4", _ARCSEC),
    ("response_4540", ">f4", None),
    ("ambtemp", ">f4", "deg C"),
    ("datevobs", "S12", None),
    ("dewpoint", ">f4", "deg C"),
    ("exptime", ">f4", "s"),
    ("fluxlimit_4600", ">f4", FLUX_UNIT),
    ("humidity", ">f4", "%"),
    ("mjd", ">f4", "d"),
    ("nstars_fit_fwhm", ">i4", None),
    ("obsind", ">i4", None),
    # The pressure unit is unconfirmed (hPa vs Torr), so no TUNIT is claimed for it.
    ("pressure", ">f4", None),
    ("structaz", ">f4", _DEG),
    ("time", "S7", None),
    ("trajcdec", ">f4", _DEG),
    ("trajcpa", ">f4", _DEG),
    ("trajcra", ">f4", _DEG),
]

_HPSC2_COLUMNS = [
    ("source_name", "S26", None),
    ("source_id", ">i8", None),
    ("shotid", ">i8", None),
    ("RA", ">f4", _DEG),
    ("DEC", ">f4", _DEG),
    ("RA_det", ">f4", _DEG),
    ("DEC_det", ">f4", _DEG),
    ("gmag", ">f4", None),
    ("Av", ">f4", None),
    ("z_hetdex", ">f4", None),
    ("z_hetdex_src", "S8", None),
    ("z_hetdex_conf", ">f4", None),
    ("source_type", "S10", None),
    ("n_members", ">i8", None),
    ("detectid", ">i8", None),
    ("field", "S12", None),
    ("flux", ">f4", FLUX_UNIT),
    ("flux_err", ">f4", FLUX_UNIT),
    ("flux_aper", ">f4", FLUX_UNIT),
    ("flux_aper_err", ">f4", FLUX_UNIT),
    ("flag_aper", ">i8", None),
    ("major", ">f4", _ARCSEC),
    ("minor", ">f4", _ARCSEC),
    ("theta", ">f4", None),
    ("lum_lya", ">f8", _LUMINOSITY_UNIT),
    ("lum_lya_err", ">f8", _LUMINOSITY_UNIT),
    ("lum_oii", ">f8", _LUMINOSITY_UNIT),
    ("lum_oii_err", ">f8", _LUMINOSITY_UNIT),
    ("flux_lya", ">f4", FLUX_UNIT),
    ("flux_lya_err", ">f4", FLUX_UNIT),
    ("flux_oii", ">f4", FLUX_UNIT),
    ("flux_oii_err", ">f4", FLUX_UNIT),
    ("sn", ">f4", None),
    ("apcor", ">f4", None),
    ("p_conf", ">f4", None),
    ("p_cnn", ">f4", None),
    ("ifuslot", "S3", None),
]

# Units in parentheses in the reference (fwhm, x_ifu, y_ifu) describe meaning, not a TUNIT label.
_DETINFO_COLUMNS = [
    ("source_id", ">i8", None),
    ("source_name", "S26", None),
    ("RA", ">f4", _DEG),
    ("DEC", ">f4", _DEG),
    ("z_hetdex", ">f4", None),
    ("z_hetdex_src", "S8", None),
    ("z_hetdex_conf", ">f4", None),
    ("source_type", "S10", None),
    ("detectid", ">i8", None),
    ("selected_det", "?", None),
    ("det_type", "S4", None),
    ("line_id", "S20", None),
    ("p_conf", ">f4", None),
    ("p_cnn", ">f4", None),
    ("RA_det", ">f4", _DEG),
    ("DEC_det", ">f4", _DEG),
    # Labelled deg in the file although the documentation says arcsec.
    ("src_separation", ">f4", _DEG),
    ("n_members", ">i8", None),
    ("gmag", ">f4", None),
    ("Av", ">f4", None),
    ("ebv", ">f4", None),
    ("wave", ">f4", _ANGSTROM),
    ("wave_err", ">f4", _ANGSTROM),
    ("flux", ">f4", FLUX_UNIT),
    ("flux_err", ">f4", FLUX_UNIT),
    ("flux_obs", ">f4", FLUX_UNIT),
    ("flux_obs_err", ">f4", FLUX_UNIT),
    ("flux_aper", ">f4", FLUX_UNIT),
    ("flux_aper_err", ">f4", FLUX_UNIT),
    ("flux_aper_obs", ">f4", FLUX_UNIT),
    ("flux_aper_obs_err", ">f4", FLUX_UNIT),
    ("flag_aper", ">i8", None),
    ("sigma", ">f4", _ANGSTROM),
    ("sigma_err", ">f4", _ANGSTROM),
    ("continuum", ">f4", FLUX_DENSITY_UNIT),
    ("continuum_err", ">f4", FLUX_DENSITY_UNIT),
    ("continuum_obs", ">f4", FLUX_DENSITY_UNIT),
    ("continuum_obs_err", ">f4", FLUX_DENSITY_UNIT),
    ("sn", ">f4", None),
    ("sn_err", ">f4", None),
    ("chi2", ">f4", None),
    ("chi2_err", ">f4", None),
    ("flux_noise_1sigma_obs", ">f4", FLUX_UNIT),
    ("flux_noise_1sigma", ">f4", FLUX_UNIT),
    ("apcor", ">f4", None),
    ("counterpart_mag", ">f4", None),
    ("counterpart_mag_err", ">f4", None),
    ("counterpart_dist", ">f4", None),
    ("counterpart_catalog_name", "S16", None),
    ("counterpart_filter_name", "S16", None),
    ("plya_classification", ">f4", None),
    ("z_elixer", ">f4", None),
    ("best_pz", ">f4", None),
    ("z_diagnose", ">f4", None),
    ("cls_diagnose", "S7", None),
    ("stellartype", "S1", None),
    ("agn_flag", ">f4", None),
    ("wave_group_id", ">i8", None),
    ("wave_group_a", ">f4", _DEG),
    ("wave_group_b", ">f4", _DEG),
    ("wave_group_pa", ">f4", None),
    ("wave_group_ra", ">f4", None),
    ("wave_group_dec", ">f4", None),
    ("wave_group_wave", ">f4", None),
    ("fwhm", ">f4", None),
    ("throughput", ">f4", None),
    ("shotid", ">i8", None),
    ("field", "S12", None),
    ("date", ">i4", None),
    ("obsid", ">i4", None),
    ("multiframe", "S20", None),
    ("fiber_id", "S38", None),
    ("weight", ">f4", None),
    ("x_raw", ">i4", None),
    ("y_raw", ">i4", None),
    ("x_ifu", ">f4", None),
    ("y_ifu", ">f4", None),
    ("ra_aper", ">f4", None),
    ("dec_aper", ">f4", None),
    ("catalog_name_aper", "S16", None),
    ("filter_name_aper", "S16", None),
    ("dist_aper", ">f4", None),
    ("mag_aper", ">f4", None),
    ("mag_aper_err", ">f4", None),
    ("major", ">f4", _ARCSEC),
    ("minor", ">f4", _ARCSEC),
    ("theta", ">f4", None),
]


def _schema(columns: list[tuple[str, str, str | None]]) -> tuple[np.dtype, dict[str, str]]:
    dtype = np.dtype([(name, fmt) for name, fmt, _ in columns])
    units = {name: unit for name, _, unit in columns if unit is not None}
    return dtype, units


IFU_INDEX_DTYPE, IFU_INDEX_UNITS = _schema(_IFU_INDEX_COLUMNS)
HPSC2_DTYPE, HPSC2_UNITS = _schema(_HPSC2_COLUMNS)
DETINFO_DTYPE, DETINFO_UNITS = _schema(_DETINFO_COLUMNS)

# The release's SPEC header has exactly one COMMENT card and SPEC_ERR none (v1.3 card counts
# 10 and 9); the text is the one the maintainers' spec-file writer sets.
SPEC_COMMENT = "Dust-corrected, 1D PSF-extracted, aperture-corrected spectra"

_TFORM_BY_KIND = {"b1": "L", "u1": "B", "i2": "I", "i4": "J", "i8": "K", "f4": "E", "f8": "D"}

Rows = Any
"""A block of rows: a structured array, or a mapping of column name to 1-D array (dict, Table)."""


def _padded(nbytes: int) -> int:
    return -(-nbytes // _FITS_BLOCK) * _FITS_BLOCK


def _tform(field: np.dtype) -> str:
    if field.kind == "S":
        return f"{field.itemsize}A"
    try:
        return _TFORM_BY_KIND[f"{field.kind}{field.itemsize}"]
    except KeyError:
        raise TypeError(f"no FITS binary-table format for numpy dtype {field}") from None


def _disk_dtype(dtype: np.dtype) -> np.dtype:
    """Row layout in the file: big-endian numbers, and FITS logicals as the bytes 'T'/'F'."""
    fields = []
    for name in dtype.names:
        field = dtype[name]
        if field.kind == "b":
            fields.append((name, "S1"))
        elif field.kind == "S":
            fields.append((name, field))
        else:
            fields.append((name, field.newbyteorder(">")))
    return np.dtype(fields)


def _bintable_header(dtype: np.dtype, nrows: int, units: Mapping[str, str],
                    extname: str | None) -> fits.Header:
    """The BINTABLE header astropy would write for ``nrows`` rows of ``dtype``."""
    unknown = set(units) - set(dtype.names)
    if unknown:
        raise ValueError(f"units given for columns not in the table: {sorted(unknown)}")
    columns = [fits.Column(name=name, format=_tform(dtype[name]), unit=units.get(name))
               for name in dtype.names]
    # Built empty so no row data is allocated; NAXIS2 is the only card that depends on nrows.
    header = fits.BinTableHDU.from_columns(columns, nrows=0, name=extname).header
    header["NAXIS2"] = nrows
    return header


def _image_header(shape: tuple[int, ...], extname: str, bunit: str,
                 comments: Iterable[str] = ()) -> fits.Header:
    """The float32 IMAGE header astropy would write for a numpy array of ``shape``."""
    # A one-pixel stand-in of the right rank; only the NAXISn values differ from the real image.
    header = fits.ImageHDU(data=np.zeros((1,) * len(shape), np.float32), name=extname).header
    # FITS axes run fastest-first, the reverse of numpy's order.
    for axis, length in enumerate(reversed(shape), start=1):
        header[f"NAXIS{axis}"] = length
    header["BUNIT"] = bunit
    for comment in comments:
        header.add_comment(comment)
    return header


def _header_bytes(header: fits.Header) -> bytes:
    return header.tostring().encode("ascii")


def _column_arrays(rows: Rows, dtype: np.dtype) -> tuple[dict[str, np.ndarray], int]:
    names = rows.dtype.names if isinstance(rows, np.ndarray) else tuple(rows.keys())
    missing = [name for name in dtype.names if name not in names]
    extra = [name for name in names if name not in dtype.names]
    if missing or extra:
        raise ValueError(f"row columns do not match the table: missing {missing}, "
                         f"unexpected {extra}")
    arrays = {name: np.asarray(rows[name]) for name in dtype.names}
    lengths = {array.shape for array in arrays.values()}
    if len(lengths) != 1 or len(next(iter(lengths))) != 1:
        raise ValueError(f"columns must be 1-D and of equal length, got shapes {sorted(lengths)}")
    return arrays, len(arrays[dtype.names[0]])


def _to_disk(rows: Rows, dtype: np.dtype, disk_dtype: np.dtype) -> np.ndarray:
    arrays, nrows = _column_arrays(rows, dtype)
    out = np.empty(nrows, disk_dtype)
    for name, src in arrays.items():
        field = dtype[name]
        if field.kind == "b":
            if src.dtype.kind != "b":
                raise TypeError(f"column {name!r} is logical, got dtype {src.dtype}")
            out[name] = np.where(src, b"T", b"F")
        elif field.kind == "S":
            if src.dtype.kind == "U":
                src = np.char.encode(src, "ascii")
            elif src.dtype.kind != "S":
                raise TypeError(f"column {name!r} is a string column, got dtype {src.dtype}")
            # numpy would silently truncate; a too-long value is a generator bug.
            too_wide = src.dtype.itemsize > field.itemsize
            if too_wide and nrows and np.char.str_len(src).max() > field.itemsize:
                raise ValueError(f"column {name!r} has values longer than {field.itemsize} bytes")
            out[name] = src
        else:
            np.copyto(out[name], src, casting="same_kind")
    return out


class BinTableWriter:
    """Write a FITS binary table row chunk by row chunk, with a header fixed up front.

    The header declares ``nrows``; ``close`` fails unless exactly that many rows were written.
    Given a path the writer owns the file; given a binary file object it writes from the current
    position and leaves the object open.
    """

    def __init__(self, fileobj_or_path: BinaryIO | str | os.PathLike, dtype: np.dtype,
                 nrows: int, units: Mapping[str, str], extname: str | None,
                 primary: bool = True):
        if nrows < 0:
            raise ValueError(f"nrows must be >= 0, got {nrows}")
        self.dtype = np.dtype(dtype)
        self.nrows = nrows
        self.rows_written = 0
        self._disk_dtype = _disk_dtype(self.dtype)
        header = _header_bytes(_bintable_header(self.dtype, nrows, units, extname))
        head = (_header_bytes(fits.PrimaryHDU().header) if primary else b"") + header
        data_bytes = nrows * self._disk_dtype.itemsize
        self._padding = _padded(data_bytes) - data_bytes
        #: Bytes the writer occupies in the file once closed, primary HDU included.
        self.nbytes = len(head) + _padded(data_bytes)
        self._owns_file = isinstance(fileobj_or_path, (str, os.PathLike))
        self._file = open(fileobj_or_path, "wb") if self._owns_file else fileobj_or_path
        self._closed = False
        self._file.write(head)

    def write(self, rows: Rows) -> None:
        """Append a block of rows (numbers are cast to the column dtype, strings must fit)."""
        if self._closed:
            raise ValueError("write to a closed BinTableWriter")
        data = _to_disk(rows, self.dtype, self._disk_dtype)
        if self.rows_written + len(data) > self.nrows:
            raise ValueError(f"{self.rows_written} + {len(data)} rows exceed the "
                             f"{self.nrows} declared")
        self._file.write(data.tobytes())
        self.rows_written += len(data)

    def close(self) -> None:
        """Pad the data to a FITS block; raise if the row count differs from the declared one."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.rows_written != self.nrows:
                raise ValueError(f"table declares {self.nrows} rows but {self.rows_written} were "
                                 f"written; the file is incomplete")
            self._file.write(b"\0" * self._padding)
            self._file.flush()
        finally:
            if self._owns_file:
                self._file.close()

    def _abandon(self) -> None:
        self._closed = True
        if self._owns_file:
            self._file.close()

    def __enter__(self) -> BinTableWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # On an exception the incomplete-file error would only mask the original one.
        if exc_type is None:
            self.close()
        else:
            self._abandon()


def _as_blocks(rows: Rows | Iterable[Rows]) -> Iterable[Rows]:
    # A structured array or a Table is itself iterable (by row), so recognise single blocks first.
    if isinstance(rows, np.ndarray) or hasattr(rows, "keys"):
        return (rows,)
    return rows


def _write_table(path: str | os.PathLike, rows: Rows | Iterable[Rows], nrows: int | None,
                 dtype: np.dtype, units: Mapping[str, str], extname: str | None) -> None:
    blocks = _as_blocks(rows)
    if nrows is None:
        if not isinstance(blocks, tuple):
            raise TypeError("nrows is required when rows are given as an iterable of blocks")
        nrows = _column_arrays(blocks[0], dtype)[1]
    with BinTableWriter(path, dtype, nrows, units, extname) as writer:
        for block in blocks:
            writer.write(block)


# The reference names no EXTNAME for the plain tables, so none is written (as a Table.write gives).
def write_ifu_index(path: str | os.PathLike, rows: Rows, nrows: int | None = None) -> None:
    """Write ``ifu-index.fits``: empty PRIMARY + one binary table of IFU_INDEX_DTYPE."""
    _write_table(path, rows, nrows, IFU_INDEX_DTYPE, IFU_INDEX_UNITS, None)


def write_hpsc2_main(path: str | os.PathLike, rows: Rows | Iterable[Rows],
                     nrows: int | None = None) -> None:
    """Write ``hetdex_sc2_vX.Y.fits`` from one block or an iterable of blocks (then give nrows)."""
    _write_table(path, rows, nrows, HPSC2_DTYPE, HPSC2_UNITS, None)


def write_detinfo(path: str | os.PathLike, rows: Rows | Iterable[Rows],
                  nrows: int | None = None) -> None:
    """Write ``hetdex_sc2_detinfo_vX.Y.fits`` from one block or an iterable of blocks."""
    _write_table(path, rows, nrows, DETINFO_DTYPE, DETINFO_UNITS, None)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        data = data[written:]
        offset += written


class Hpsc2SpecWriter:
    """Write ``hetdex_sc2_spec_vX.Y.fits``: PRIMARY, INFO, SPEC, SPEC_ERR, WAVELENGTH.

    Every HDU's offset is fixed at construction and the file is sized then, so INFO rows (in
    order) and spectra (row chunks in any order) can be interleaved freely. SPEC and SPEC_ERR are
    wavelength-major, numpy shape (N_WAVE, nrows): row i's spectrum is ``SPEC[:, i]``.
    """

    def __init__(self, path: str | os.PathLike, nrows: int):
        if nrows < 0:
            raise ValueError(f"nrows must be >= 0, got {nrows}")
        self.nrows = nrows
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        self._info_file = open(path, "r+b")
        self._info = BinTableWriter(self._info_file, HPSC2_DTYPE, nrows, HPSC2_UNITS, "INFO")
        self._rows_done = np.zeros(nrows, dtype=bool)
        self._closed = False

        image_bytes = nrows * N_WAVE * 4
        offset = self._info.nbytes
        self._image_offsets = []
        for extname, comments in (("SPEC", [SPEC_COMMENT]), ("SPEC_ERR", [])):
            header = _header_bytes(_image_header((N_WAVE, nrows), extname, FLUX_DENSITY_UNIT,
                                                 comments))
            _pwrite_all(self._fd, memoryview(header), offset)
            self._image_offsets.append(offset + len(header))
            offset += len(header) + _padded(image_bytes)
        header = _header_bytes(_image_header((N_WAVE,), "WAVELENGTH", _ANGSTROM))
        wavelength = WAVE.astype(">f4").tobytes()
        _pwrite_all(self._fd, memoryview(header + wavelength), offset)
        # Extending the file leaves every gap zero-filled, which is the FITS data padding.
        os.ftruncate(self._fd, offset + len(header) + _padded(len(wavelength)))

    def write_info(self, rows: Rows) -> None:
        """Append INFO rows; they must arrive in catalog order (the same order as the spectra)."""
        self._info.write(rows)

    def write_spectra(self, start_row: int, spec: np.ndarray, spec_err: np.ndarray) -> None:
        """Write the spectra of rows ``start_row .. start_row + n - 1``, each array (n, N_WAVE).

        Each call costs 2 x N_WAVE positioned writes, so chunks of thousands of rows are fast.
        """
        if self._closed:
            raise ValueError("write to a closed Hpsc2SpecWriter")
        spec, spec_err = np.asarray(spec), np.asarray(spec_err)
        if spec.ndim != 2 or spec.shape[1] != N_WAVE or spec_err.shape != spec.shape:
            raise ValueError(f"spec and spec_err must both be (n, {N_WAVE}), "
                             f"got {spec.shape} and {spec_err.shape}")
        if spec.dtype.kind != "f" or spec_err.dtype.kind != "f":
            raise TypeError(f"spectra must be floating point, got {spec.dtype} and "
                            f"{spec_err.dtype}")
        stop = start_row + len(spec)
        if start_row < 0 or stop > self.nrows:
            raise IndexError(f"rows {start_row}..{stop - 1} outside 0..{self.nrows - 1}")
        if self._rows_done[start_row:stop].any():
            raise ValueError(f"some of rows {start_row}..{stop - 1} were already written")
        for data_offset, block in zip(self._image_offsets, (spec, spec_err)):
            self._write_columns(data_offset, start_row, block)
        self._rows_done[start_row:stop] = True

    def _write_columns(self, data_offset: int, start_row: int, block: np.ndarray) -> None:
        # One contiguous big-endian run per wavelength: the chunk's slice of each image row.
        by_wave = np.empty((N_WAVE, len(block)), dtype=">f4")
        # Transposing a few hundred sources at a time stays in cache: ~3x faster than one
        # whole-chunk strided copy.
        for first in range(0, len(block), _TRANSPOSE_ROWS):
            by_wave[:, first:first + _TRANSPOSE_ROWS] = block[first:first + _TRANSPOSE_ROWS].T
        row_bytes = self.nrows * 4
        offset = data_offset + start_row * 4
        for values in by_wave:
            _pwrite_all(self._fd, memoryview(values.view(np.uint8)), offset)
            offset += row_bytes

    def close(self) -> None:
        """Finish the file; raise if any INFO row or spectrum row was not written."""
        if self._closed:
            return
        self._closed = True
        try:
            self._info.close()
            missing = np.flatnonzero(~self._rows_done)
            if missing.size:
                raise ValueError(f"{missing.size} of {self.nrows} spectra rows were never written "
                                 f"(first: row {missing[0]}); the file is incomplete")
        finally:
            self._info_file.close()
            os.close(self._fd)

    def _abandon(self) -> None:
        self._closed = True
        self._info._abandon()
        self._info_file.close()
        os.close(self._fd)

    def __enter__(self) -> Hpsc2SpecWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abandon()
