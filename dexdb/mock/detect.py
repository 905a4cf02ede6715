"""Mock PDR1 detection databases: ``detect_hdrN.h5``, ``cont_hdrN.h5``, ``detect_index_hdr5.h5``
and ``wdcor.txt`` (data model sections 0, 3 and 4).

The generator hands over calibrated per-detection records (``CORE_DTYPE``); the writers expand
them into the raw on-disk tables. Everything is vectorised per chunk so that tens of millions of
rows stream through with only the current chunk in memory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import tables as tb

from dexdb.constants import N_WAVE, WAVE, WAVE_START, WAVE_STEP

SURVEYS = ("hdr3", "hdr4", "hdr5")
DET_TYPES = ("line", "cont")
HEALPIX_NSIDE = 2**15

#: Uncompressed, as the production scripts write them; blosc:lz4 would save ~20% on noisy
#: spectra but write at about half the speed.
FILTERS = tb.Filters(complevel=0)

# ---------------------------------------------------------------------------------------------
# Table layouts, in on-disk column order.

#: Calibrated per-detection record filled by the mock generator.
CORE_DTYPE = np.dtype(
    [
        ("detectid", "i8"),
        ("shotid", "i8"),
        ("date", "i4"),
        ("obsid", "i4"),
        ("ra", "f8"),
        ("dec", "f8"),
        ("det_type", "S4"),
        ("ifuslot", "S3"),
        ("ifuid", "S3"),
        ("specid", "S3"),
        ("x_ifu", "f4"),
        ("y_ifu", "f4"),
        ("wave", "f4"),
        ("wave_err", "f4"),
        ("flux", "f4"),
        ("flux_err", "f4"),
        ("linewidth", "f4"),
        ("linewidth_err", "f4"),
        ("continuum", "f4"),
        ("continuum_err", "f4"),
        ("sn", "f4"),
        ("sn_err", "f4"),
        ("chi2", "f4"),
        ("chi2_err", "f4"),
        ("apcor", "f4"),
        ("flux_noise_1sigma", "f4"),
        ("detectname", "S40"),
    ]
)

# Positioned columns first, then the unpositioned ones alphabetically (how PyTables orders the
# upstream IsDescription classes).
_DETECTIONS_HEAD = [
    ("detectid", "i8"),
    ("shotid", "i8"),
    ("ra", "f4"),
    ("dec", "f4"),
    ("date", "i4"),
    ("obsid", "i4"),
    ("wave", "f4"),
    ("wave_err", "f4"),
    ("flux", "f4"),
    ("flux_err", "f4"),
    ("linewidth", "f4"),
    ("linewidth_err", "f4"),
    ("continuum", "f4"),
    ("continuum_err", "f4"),
    ("sn", "f4"),
    ("sn_err", "f4"),
    ("chi2", "f4"),
    ("chi2_err", "f4"),
    ("multiframe", "S20"),
    ("fibnum", "i4"),
    ("x_raw", "i4"),
    ("y_raw", "i4"),
]

LINE_DETECTIONS_DTYPE = np.dtype(
    _DETECTIONS_HEAD
    + [
        ("amp", "S2"),
        ("apcor", "f4"),
        ("chi2fib", "f4"),
        ("expnum", "i4"),
        ("fiber_id", "S38"),
        ("flux_noise_1sigma", "f4"),
        ("ifuid", "S3"),
        ("ifuslot", "S3"),
        ("inputid", "S40"),
        ("mc_file", "S32"),
        ("mc_file_idx", "i4"),
        ("noise_ratio", "f4"),
        ("sn_3fib", "f4"),
        ("sn_3fib_cen", "f4"),
        ("sn_cen", "f4"),
        ("specid", "S3"),
        ("weight", "f4"),
        ("x_ifu", "f4"),
        ("y_ifu", "f4"),
    ]
)

CONT_DETECTIONS_DTYPE = np.dtype(
    _DETECTIONS_HEAD
    + [
        ("amp", "S2"),
        ("chi2fib", "f4"),
        ("detectname", "S40"),
        ("expnum", "i4"),
        ("fiber_id", "S38"),
        ("ifuid", "S3"),
        ("ifuslot", "S3"),
        ("inputid", "S40"),
        ("noise_ratio", "f4"),
        ("specid", "S3"),
        ("weight", "f4"),
        ("x_ifu", "f4"),
        ("y_ifu", "f4"),
    ]
)

FIBERS_DTYPE = np.dtype(
    [
        ("detectid", "i8"),
        ("ra", "f4"),
        ("dec", "f4"),
        ("multiframe", "S20"),
        ("fiber_id", "S38"),
        ("x_ifu", "f4"),
        ("y_ifu", "f4"),
        ("date", "i4"),
        ("obsid", "i4"),
        ("expnum", "i4"),
        ("distance", "f4"),
        ("timestamp", "S17"),
        ("wavein", "f4"),
        ("flag", "i4"),
        ("weight", "f4"),
        ("ADC", "f4", (5,)),
        ("amp", "S2"),
        ("fibnum", "i4"),
        ("ifuid", "S3"),
        ("ifuslot", "S3"),
        ("specid", "S3"),
        ("x_raw", "i4"),
        ("y_raw", "i4"),
    ]
)

_SPECTRUM_ARRAYS = (
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
SPECTRA_DTYPE = np.dtype([("detectid", "i8")] + [(name, "f4", (N_WAVE,)) for name in _SPECTRUM_ARRAYS])

DETECT_INDEX_DTYPE = np.dtype(
    [
        ("detectid", "i8"),
        ("shotid", "i8"),
        ("ra", "f4"),
        ("dec", "f4"),
        ("wave", "f4"),
        ("sn", "f4"),
        ("healpix", "i8"),
        ("det_type", "S4"),
        ("survey", "S4"),
        ("fiber_id", "S38"),
    ]
)


def table_description(dtype: np.dtype) -> dict[str, tb.Col]:
    """PyTables description with an explicit position on every column, so the on-disk order is
    exactly the order of ``dtype``."""
    return {name: tb.Col.from_dtype(dtype.fields[name][0], pos=i) for i, name in enumerate(dtype.names)}


LINE_DETECTIONS_DESCRIPTION = table_description(LINE_DETECTIONS_DTYPE)
CONT_DETECTIONS_DESCRIPTION = table_description(CONT_DETECTIONS_DTYPE)
FIBERS_DESCRIPTION = table_description(FIBERS_DTYPE)
SPECTRA_DESCRIPTION = table_description(SPECTRA_DTYPE)
DETECT_INDEX_DESCRIPTION = table_description(DETECT_INDEX_DTYPE)

# ---------------------------------------------------------------------------------------------
# wdcor.txt

_WDCOR_AT_3470 = 0.911436
_WDCOR_UNITY_FROM = 4600.0  # Angstrom; the factor is exactly 1 redward
_WDCOR_SHAPE = 0.901957  # puts the blue bump's peak at 1.098 near 3920 A


def _wdcor_text(value: float) -> str:
    """Six significant digits, printed the way Python prints the rounded float ("1.0", "0.911436")."""
    return repr(float(f"{value:.6g}"))


def write_wdcor(path: str | os.PathLike) -> np.ndarray:
    """Write ``wdcor.txt`` (1036 lines ``<int wavelength> <factor>``) and return the factors as
    written, shape (1036,) float64."""
    t = np.clip((WAVE.astype(np.float64) - WAVE_START) / (_WDCOR_UNITY_FROM - WAVE_START), 0.0, 1.0)
    bump = (1.0 - t) ** 2 * (_WDCOR_AT_3470 - 1.0 + _WDCOR_SHAPE * t)
    lines = [f"{int(w)} {_wdcor_text(1.0 + b)}\n" for w, b in zip(WAVE, bump)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines))
    return read_wdcor(path)


def read_wdcor(path: str | os.PathLike) -> np.ndarray:
    """Factors of a ``wdcor.txt``, shape (1036,) float64; checks the wavelength column."""
    table = np.loadtxt(path, dtype=np.float64, ndmin=2)
    if table.shape != (N_WAVE, 2) or not np.array_equal(table[:, 0], WAVE):
        raise ValueError(f"{path}: expected {N_WAVE} rows of '<wavelength> <factor>' on the PDR1 grid")
    return table[:, 1].copy()


def wdcor_at(wave: np.ndarray, wdcor: np.ndarray) -> np.ndarray:
    """The wdcor factor linearly interpolated at ``wave`` (how line quantities are corrected)."""
    return np.interp(np.asarray(wave, dtype=np.float64), WAVE, wdcor)


# ---------------------------------------------------------------------------------------------
# Fixed-width byte strings, assembled as uint8 matrices so that no per-row Python runs.


def _digits(values: np.ndarray, width: int) -> np.ndarray:
    values = np.asarray(values, dtype=np.int64)
    if values.size and (values.min() < 0 or values.max() >= 10**width):
        raise ValueError(f"value does not fit in {width} zero-padded digits")
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return (values[:, None] // powers % 10 + ord("0")).astype(np.uint8)


def _chars(strings: np.ndarray, width: int) -> np.ndarray:
    matrix = np.ascontiguousarray(strings, dtype=f"S{width}").view(np.uint8).reshape(-1, width)
    if (matrix == 0).any():
        raise ValueError(f"strings must be exactly {width} characters, got e.g. {strings[0]!r}")
    return matrix


def _concat(n: int, *parts: bytes | np.ndarray) -> np.ndarray:
    """Side by side: uint8 character matrices and byte constants repeated on every row."""
    columns = [
        np.broadcast_to(np.frombuffer(p, np.uint8), (n, len(p))) if isinstance(p, bytes) else p for p in parts
    ]
    return np.concatenate(columns, axis=1)


def _strings(matrix: np.ndarray) -> np.ndarray:
    matrix = np.ascontiguousarray(matrix)
    return matrix.view(f"S{matrix.shape[1]}").ravel()


def multiframe_name(specid: np.ndarray, ifuslot: np.ndarray, ifuid: np.ndarray, amp: np.ndarray) -> np.ndarray:
    """``multi_<specid>_<ifuslot>_<ifuid>_<amp>`` as S20."""
    parts = (b"multi_", _chars(specid, 3), b"_", _chars(ifuslot, 3), b"_", _chars(ifuid, 3), b"_", _chars(amp, 2))
    return _strings(_concat(len(specid), *parts))


def fiber_id_name(shotid: np.ndarray, expnum: np.ndarray, multiframe: np.ndarray, fibnum: np.ndarray) -> np.ndarray:
    """``<shotid>_<expnum>_<multiframe>_<fibnum 3 digits>`` as S38."""
    parts = (_digits(shotid, 11), b"_", _digits(expnum, 1), b"_", _chars(multiframe, 20), b"_", _digits(fibnum, 3))
    return _strings(_concat(len(shotid), *parts))


def _exposure_timestamp(date: np.ndarray, obsid: np.ndarray, expnum: np.ndarray) -> np.ndarray:
    """``YYYYMMDDTHHMMSS.S`` of an exposure: shots of a night start ~25 min apart from 01:30 UT,
    exposures of a shot 7.5 min apart, so every fibre of one exposure shares the stamp."""
    seconds = (5400 + (np.asarray(obsid, np.int64) - 1) * 1500) % 43200 + (np.asarray(expnum, np.int64) - 1) * 450
    tenths = (seconds * 10 + np.asarray(obsid, np.int64) % 10) % 864000
    hh, rest = np.divmod(tenths, 36000)
    mm, rest = np.divmod(rest, 600)
    hhmmss = (_digits(hh, 2), _digits(mm, 2), _digits(rest // 10, 2))
    parts = (_digits(date, 8), b"T", *hhmmss, b".", _digits(rest % 10, 1))
    return _strings(_concat(len(tenths), *parts))


# ---------------------------------------------------------------------------------------------
# IFU geometry. A VIRUS IFU (51" square) is modelled as a 28 x 16 grid of fibre positions; each
# quadrant is one amplifier with 112 fibres: x < 0 is the left (L) spectrograph half, y < 0 the
# lower (L) amplifier. Exposures 2 and 3 are dithered against exposure 1.

IFU_SIZE = 51.0
_N_COLS, _N_ROWS = 28, 16
_AMP_COLS, _AMP_ROWS = _N_COLS // 2, _N_ROWS // 2
_PITCH = np.array([IFU_SIZE / _N_COLS, IFU_SIZE / _N_ROWS])
_DITHERS = np.array([[0.0, 0.0], [_PITCH[0] / 2, _PITCH[1] / 3], [0.0, -_PITCH[1] / 3]])
_N_EXPOSURES = len(_DITHERS)
_AMPS = np.array([b"LL", b"LU", b"RL", b"RU"])
_FIBRE_AREA = np.pi * 0.75**2  # arcsec^2, 1.5" fibres
_NEIGHBOURS = 5  # per exposure, so 15 /Fibers rows per detection
_SEARCH = np.arange(-2, 3)  # the 5 nearest lie within +-2 grid steps of the containing cell


def _fibre_centre(col: np.ndarray, row: np.ndarray, exposure: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = -IFU_SIZE / 2 + (col + 0.5) * _PITCH[0] + _DITHERS[exposure, 0]
    y = -IFU_SIZE / 2 + (row + 0.5) * _PITCH[1] + _DITHERS[exposure, 1]
    return x, y


def _amp_and_fibnum(col: np.ndarray, row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    amp = _AMPS[2 * (col // _AMP_COLS) + row // _AMP_ROWS]
    fibnum = (row % _AMP_ROWS) * _AMP_COLS + col % _AMP_COLS + 1
    return amp, fibnum.astype(np.int32)


def _containing_cell(x: np.ndarray, y: np.ndarray, exposure: int) -> tuple[np.ndarray, np.ndarray]:
    col = np.floor((x - _DITHERS[exposure, 0] + IFU_SIZE / 2) / _PITCH[0]).astype(np.int64)
    row = np.floor((y - _DITHERS[exposure, 1] + IFU_SIZE / 2) / _PITCH[1]).astype(np.int64)
    return np.clip(col, 0, _N_COLS - 1), np.clip(row, 0, _N_ROWS - 1)


class DetectionFiber(NamedTuple):
    """The highest-weight fibre of each detection."""

    expnum: np.ndarray  # int32, 1..3
    col: np.ndarray  # grid position, used to place the neighbouring fibres
    row: np.ndarray
    amp: np.ndarray  # S2
    fibnum: np.ndarray  # int32, 1..112
    multiframe: np.ndarray  # S20
    fiber_id: np.ndarray  # S38


def _nearest_per_exposure(
    x: np.ndarray, y: np.ndarray, on_quadrant_amp: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grid cell and distance of the nearest fibre of each exposure, shape (3, n) each; with
    ``on_quadrant_amp`` only fibres of the amplifier covering the position's IFU quadrant count."""
    cols, rows, distances = [], [], []
    for exposure in range(_N_EXPOSURES):
        col, row = _containing_cell(x, y, exposure)
        if on_quadrant_amp:
            col_lo = np.where(x < 0, 0, _AMP_COLS)
            row_lo = np.where(y < 0, 0, _AMP_ROWS)
            col = np.clip(col, col_lo, col_lo + _AMP_COLS - 1)
            row = np.clip(row, row_lo, row_lo + _AMP_ROWS - 1)
        fx, fy = _fibre_centre(col, row, np.full(len(x), exposure))
        cols.append(col)
        rows.append(row)
        distances.append(np.hypot(fx - x, fy - y))
    return np.stack(cols), np.stack(rows), np.stack(distances)


def detection_fiber(core: np.ndarray) -> DetectionFiber:
    """The fibre a detection row (and its DetectIndex row) names: among the exposures, the
    nearest fibre on the amplifier of the detection's IFU quadrant. A function of the core
    record alone, so the detection file and the index agree without sharing state."""
    x, y = core["x_ifu"].astype(np.float64), core["y_ifu"].astype(np.float64)
    cols, rows, distances = _nearest_per_exposure(x, y, on_quadrant_amp=True)
    best = np.argmin(distances, axis=0)
    take = np.arange(len(core))
    col, row = cols[best, take], rows[best, take]
    amp, fibnum = _amp_and_fibnum(col, row)
    expnum = (best + 1).astype(np.int32)
    multiframe = multiframe_name(core["specid"], core["ifuslot"], core["ifuid"], amp)
    fiber_id = fiber_id_name(core["shotid"], expnum, multiframe, fibnum)
    return DetectionFiber(expnum, col, row, amp, fibnum, multiframe, fiber_id)


class _FibreSet(NamedTuple):
    """The contributing fibres of each detection, shape (n, 15) each; column 0 is the main one."""

    exposure: np.ndarray
    col: np.ndarray
    row: np.ndarray
    x: np.ndarray
    y: np.ndarray
    distance: np.ndarray
    weight: np.ndarray


def _psf_weight(distance: np.ndarray, fwhm: np.ndarray) -> np.ndarray:
    """Share of a point source's light in a fibre at ``distance`` (fibre area x Gaussian PSF)."""
    sigma = fwhm / (2 * np.sqrt(2 * np.log(2)))
    return _FIBRE_AREA * np.exp(-0.5 * (distance / sigma) ** 2) / (2 * np.pi * sigma**2)


def _highest_fibre_weight(core: np.ndarray, fwhm: np.ndarray) -> np.ndarray:
    """Weight of the nearest fibre of any exposure, which the detection row reports."""
    x, y = core["x_ifu"].astype(np.float64), core["y_ifu"].astype(np.float64)
    _, _, distances = _nearest_per_exposure(x, y, on_quadrant_amp=False)
    return _psf_weight(distances.min(axis=0), fwhm)


# Exposure order of a detection's /Fibers rows: the main fibre's exposure first.
_EXPOSURE_ORDER = np.array([[0, 1, 2], [1, 0, 2], [2, 0, 1]])


def _contributing_fibres(core: np.ndarray, main: DetectionFiber, fwhm: np.ndarray) -> _FibreSet:
    """The 5 nearest fibres of every exposure with Gaussian-PSF weights (fibre area x PSF), the
    main fibre guaranteed among them and carrying the largest weight."""
    n = len(core)
    x = core["x_ifu"].astype(np.float64)
    y = core["y_ifu"].astype(np.float64)
    exposure_order = _EXPOSURE_ORDER[main.expnum - 1]
    cells = [_containing_cell(x, y, e) for e in range(_N_EXPOSURES)]
    centre_col = np.stack([c[0] for c in cells], axis=1)
    centre_row = np.stack([c[1] for c in cells], axis=1)
    centre_col = np.take_along_axis(centre_col, exposure_order, axis=1)
    centre_row = np.take_along_axis(centre_row, exposure_order, axis=1)

    # (n, exposure, 25 candidate cells around the containing one)
    col = centre_col[:, :, None] + np.repeat(_SEARCH, _SEARCH.size)
    row = centre_row[:, :, None] + np.tile(_SEARCH, _SEARCH.size)
    exposure = np.broadcast_to(exposure_order[:, :, None], col.shape)
    fx, fy = _fibre_centre(col, row, exposure)
    distance = np.hypot(fx - x[:, None, None], fy - y[:, None, None])
    inside = (col >= 0) & (col < _N_COLS) & (row >= 0) & (row < _N_ROWS)
    is_main = (
        (exposure == (main.expnum - 1)[:, None, None])
        & (col == main.col[:, None, None])
        & (row == main.row[:, None, None])
    )
    sort_key = np.where(is_main, -1.0, np.where(inside, distance, np.inf))
    nearest = np.argsort(sort_key, axis=2)[:, :, :_NEIGHBOURS]

    def pick(a: np.ndarray) -> np.ndarray:
        return np.take_along_axis(a, nearest, axis=2).reshape(n, -1)

    distance = pick(distance)
    weight = _psf_weight(distance, fwhm[:, None])
    # Near a quadrant edge a fibre of the neighbouring amplifier can be closer; the detection
    # row must still name the highest-weight fibre, so that fibre trades weights with it.
    heaviest = np.argmax(weight, axis=1)
    take = np.arange(n)
    weight[take, heaviest], weight[take, 0] = weight[take, 0], weight[take, heaviest]
    return _FibreSet(pick(exposure), pick(col), pick(row), pick(fx), pick(fy), distance, weight)


def _ccd_position(wave: np.ndarray, fibnum: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel of a wavelength on a fibre's trace on the 1032 x 1032 amplifier (wavelength along x,
    fibres along y, with a little curvature)."""
    t = (np.asarray(wave, np.float64) - WAVE[0]) / (WAVE[-1] - WAVE[0])
    fibre = (np.asarray(fibnum, np.float64) - 0.5) / 112
    x_raw = 1 + 1031 * np.clip(t, 0, 1) + 4 * np.sin(np.pi * fibre)
    y_raw = 1032 * fibre + 3 * (t - 0.5) ** 2
    return np.rint(x_raw).astype(np.int32), np.rint(y_raw).astype(np.int32)


# ---------------------------------------------------------------------------------------------
# Checks on the generator's input.

_CONT_OFFSET = 90_000_000  # continuum detectids are release*1e9 + 0.09e9 + n


def _survey_of_detectid(detectid: np.ndarray) -> np.ndarray:
    release = detectid // 1_000_000_000
    if detectid.size and (release.min() < 3 or release.max() > 5):
        raise ValueError("detectid must have 10 digits with leading digit 3, 4 or 5 (the internal release)")
    return np.array([s.encode() for s in SURVEYS])[release - 3]


def _check_core(core: np.ndarray, survey: str | None, det_type: str | None) -> None:
    missing = [name for name in CORE_DTYPE.names if name not in (core.dtype.names or ())]
    if missing:
        raise ValueError(f"core records lack fields {missing}")
    detectid = core["detectid"]
    surveys = _survey_of_detectid(detectid)
    if survey is not None and (surveys != survey.encode()).any():
        raise ValueError(f"detectid {detectid[surveys != survey.encode()][0]} does not belong to {survey}")
    det_types = core["det_type"]
    if not np.isin(det_types, [b"line", b"cont"]).all():
        raise ValueError("det_type must be b'line' or b'cont'")
    if det_type is not None and (det_types != det_type.encode()).any():
        wrong = np.flatnonzero(det_types != det_type.encode())[0]
        raise ValueError(
            f"detectid {detectid[wrong]} is a {det_types[wrong].decode()} detection "
            f"and cannot go into a {det_type} file"
        )
    cont_range = detectid % 1_000_000_000 >= _CONT_OFFSET
    mismatch = cont_range != (det_types == b"cont")
    if mismatch.any():
        wrong = detectid[mismatch][0]
        kind = "continuum" if wrong % 1_000_000_000 >= _CONT_OFFSET else "line"
        raise ValueError(
            f"detectid {wrong} lies in the {kind} detectid range (continuum ids are release*1e9 + 0.09e9 + n) "
            f"but its det_type is {det_types[mismatch][0]!r}"
        )
    if (core["shotid"] != core["date"].astype(np.int64) * 1000 + core["obsid"]).any():
        raise ValueError("shotid must equal date * 1000 + obsid")


# ---------------------------------------------------------------------------------------------
# Writers


def _healpix(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    import healpy  # imported here: it pulls in matplotlib, which the detection files never need

    pixels = healpy.ang2pix(HEALPIX_NSIDE, ra.astype(np.float64), dec.astype(np.float64), lonlat=True)
    return pixels.astype(np.int64)


class DetectFileWriter:
    """Streams one ``detect_<survey>.h5`` (line) or ``cont_<survey>.h5`` (continuum) database.

    ``append`` takes one chunk (ideally one shot) of calibrated core records and writes raw
    /Detections rows, plus /Spectra and /Fibers rows for the chunk rows selected by
    ``spectra_rows``. ``close`` builds the completely sorted indexes.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        survey: str,
        det_type: str,
        wdcor: np.ndarray,
        spectra_note: str | None = None,
        *,
        expected_rows: int = 1_000_000,
        expected_spectra: int | None = None,
    ) -> None:
        """``expected_rows``/``expected_spectra`` (detections / spectrum rows the file will
        hold) only size the HDF5 chunks."""
        if survey not in SURVEYS:
            raise ValueError(f"survey must be one of {SURVEYS}, got {survey!r}")
        if det_type not in DET_TYPES:
            raise ValueError(f"det_type must be one of {DET_TYPES}, got {det_type!r}")
        wdcor = np.asarray(wdcor, dtype=np.float64)
        if wdcor.shape != (N_WAVE,):
            raise ValueError(f"wdcor must have shape ({N_WAVE},), got {wdcor.shape}")
        if expected_spectra is None:
            expected_spectra = expected_rows
        self.survey = survey
        self.det_type = det_type
        self.wdcor = wdcor
        is_line = det_type == "line"
        self._detections_dtype = LINE_DETECTIONS_DTYPE if is_line else CONT_DETECTIONS_DTYPE
        root_title = f"{survey.upper()} {'Detections Database' if is_line else 'Continuum Source Database'}"
        spectra_title = "1D Spectra for each Line Detection" + (f" {spectra_note}" if spectra_note else "")
        self._file = tb.open_file(os.fspath(path), mode="w", title=root_title, filters=FILTERS)
        root = self._file.root
        self.detections = self._file.create_table(
            root,
            "Detections",
            LINE_DETECTIONS_DESCRIPTION if is_line else CONT_DETECTIONS_DESCRIPTION,
            "HETDEX Line Detection Catalog" if is_line else "HETDEX Continuum Source Catalog",
            expectedrows=expected_rows,
        )
        self.fibers = self._file.create_table(
            root,
            "Fibers",
            FIBERS_DESCRIPTION,
            "Fiber info for each detection" if is_line else "Fiber info for each source",
            expectedrows=_N_EXPOSURES * _NEIGHBOURS * expected_spectra,
        )
        self.spectra = self._file.create_table(
            root, "Spectra", SPECTRA_DESCRIPTION, spectra_title, expectedrows=expected_spectra
        )

    def __enter__(self) -> DetectFileWriter:
        return self

    def __exit__(self, exc_type, exc, tb_) -> None:
        if exc_type is None:
            self.close()
        elif self._file.isopen:
            self._file.close()

    def append(
        self,
        core: np.ndarray,
        spectra_flux: np.ndarray | None,
        spectra_err: np.ndarray | None,
        spectra_rows: np.ndarray | None,
        rng: np.random.Generator,
    ) -> None:
        """Write one chunk.

        ``spectra_flux``/``spectra_err`` are calibrated per-Angstrom spectra (1e-17 erg/s/cm2/A)
        for the rows where ``spectra_rows`` is True, one row per selected detection (an array
        aligned with ``core`` is accepted too).
        """
        if len(core) == 0:
            return
        _check_core(core, self.survey, self.det_type)
        main = detection_fiber(core)
        shots, shot_of_row = np.unique(core["shotid"], return_inverse=True)
        fwhm = rng.uniform(1.3, 2.6, size=len(shots))[shot_of_row]
        weight = _highest_fibre_weight(core, fwhm)
        self.detections.append(self._detection_rows(core, main, weight, rng))
        if spectra_rows is None:
            return
        if len(spectra_rows) != len(core):
            raise ValueError("spectra_rows must have one entry per core row")
        selected = np.flatnonzero(np.asarray(spectra_rows, dtype=bool))
        if selected.size == 0:
            return
        if spectra_flux is None or spectra_err is None:
            raise ValueError("spectra_rows selects rows but spectra_flux/spectra_err are missing")
        flux = self._selected_spectra(spectra_flux, selected, len(core))
        err = self._selected_spectra(spectra_err, selected, len(core))
        fibres = _contributing_fibres(core[selected], DetectionFiber(*(a[selected] for a in main)), fwhm[selected])
        self.spectra.append(self._spectra_rows(core[selected], flux, err, rng))
        self.fibers.append(self._fiber_rows(core[selected], fibres, rng))

    @staticmethod
    def _selected_spectra(spectra: np.ndarray, selected: np.ndarray, n_core: int) -> np.ndarray:
        spectra = np.asarray(spectra)
        if spectra.shape == (selected.size, N_WAVE):
            return spectra
        if spectra.shape == (n_core, N_WAVE):
            return spectra[selected]
        raise ValueError(f"spectra must have shape ({selected.size}, {N_WAVE}); got {spectra.shape}")

    def _detection_rows(
        self, core: np.ndarray, main: DetectionFiber, weight: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        n = len(core)
        rows = np.zeros(n, dtype=self._detections_dtype)
        for name in self._detections_dtype.names:
            if name in CORE_DTYPE.names:
                rows[name] = core[name]
        # Stored raw: the files carry the flux scale before the wdcor calibration.
        factor = wdcor_at(core["wave"], self.wdcor)
        for name in ("flux", "flux_err", "continuum", "continuum_err", "flux_noise_1sigma"):
            if name in self._detections_dtype.names:
                rows[name] = core[name] * factor
        rows["multiframe"] = main.multiframe
        rows["fiber_id"] = main.fiber_id
        rows["amp"] = main.amp
        rows["fibnum"] = main.fibnum
        rows["expnum"] = main.expnum
        rows["weight"] = weight
        rows["x_raw"], rows["y_raw"] = _ccd_position(core["wave"], main.fibnum)
        rows["chi2fib"] = 0.6 + rng.gamma(2.0, 0.35, size=n)
        rows["noise_ratio"] = np.clip(rng.normal(1.0, 0.08, size=n), 0.6, None)

        # Per-amplifier detection file <date>v<obsid>_<specid>_<ifuslot>_<ifuid>_<amp>.
        amp_file = _concat(
            n,
            _digits(core["date"], 8),
            b"v",
            _digits(core["obsid"], 3),
            *(part for field in ("specid", "ifuslot", "ifuid") for part in (b"_", _chars(core[field], 3))),
            b"_",
            _chars(main.amp, 2),
        )
        src_index = self._src_index(core, main.amp)
        rows["inputid"] = _strings(_concat(n, amp_file, b"_", _digits(src_index, 3)))
        if self.det_type == "line":
            rows["mc_file"] = _strings(_concat(n, amp_file, b".mc"))
            rows["mc_file_idx"] = src_index - 1
            sn = core["sn"]
            rows["sn_cen"] = sn * rng.uniform(0.85, 1.05, size=n)
            rows["sn_3fib"] = sn * rng.uniform(0.75, 1.0, size=n)
            rows["sn_3fib_cen"] = rows["sn_3fib"] * rng.uniform(0.9, 1.05, size=n)
        return rows

    @staticmethod
    def _src_index(core: np.ndarray, amp: np.ndarray) -> np.ndarray:
        """1-based running number of each detection within its (shot, amplifier) in this chunk."""
        ifuslot = (_chars(core["ifuslot"], 3) - ord("0")).astype(np.int64) @ np.array([100, 10, 1])
        key = (core["shotid"] * 1000 + ifuslot) * len(_AMPS) + np.searchsorted(_AMPS, amp)
        _, group = np.unique(key, return_inverse=True)
        order = np.argsort(group, kind="stable")
        sizes = np.bincount(group)
        starts = np.cumsum(sizes) - sizes
        index = np.empty(len(core), dtype=np.int64)
        index[order] = np.arange(len(core)) - starts[group[order]] + 1
        return index

    def _spectra_rows(
        self, core: np.ndarray, flux: np.ndarray, err: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        n = len(core)
        rows = np.zeros(n, dtype=SPECTRA_DTYPE)
        rows["detectid"] = core["detectid"]
        rows["wave1d"] = WAVE
        # Raw pipeline spectra are per 2 A bin and before the wdcor calibration.
        raw_scale = WAVE_STEP * self.wdcor
        spec1d = flux.astype(np.float64) * raw_scale
        spec1d_err = err.astype(np.float64) * raw_scale
        rows["spec1d"] = spec1d
        rows["spec1d_err"] = spec1d_err

        # Smooth aperture correction rising to the red, pinned to the detection's apcor at its
        # wavelength (0.85 where the core record carries none, e.g. continuum sources).
        slope = rng.uniform(0.05, 0.15, size=(n, 1))

        def apcor_curve(wave: np.ndarray) -> np.ndarray:
            t = np.clip((wave - WAVE_START) / (WAVE[-1] - WAVE_START), 0.0, 1.0)
            return 0.78 + slope * t - 0.03 * np.sin(np.pi * t)

        at_line = core["apcor"].astype(np.float64)[:, None]
        at_line = np.where((at_line > 0.3) & (at_line <= 1.0), at_line, 0.85)
        curve_at_line = apcor_curve(core["wave"].astype(np.float64)[:, None])
        apcor = np.clip(apcor_curve(WAVE.astype(np.float64)) * (at_line / curve_at_line), 0.5, 1.0)
        rows["apcor"] = apcor
        rows["spec1d_nc"] = spec1d * apcor
        rows["spec1d_nc_err"] = spec1d_err * apcor

        # Counts per flux unit follow the instrument response (weak in the blue).
        t = (WAVE.astype(np.float64) - WAVE_START) / (WAVE[-1] - WAVE_START)
        response = 50.0 * (0.3 + 0.7 * np.sin(np.pi * (0.8 * t + 0.1)) ** 0.5)
        rows["counts1d"] = spec1d * apcor * response
        rows["counts1d_err"] = spec1d_err * apcor * response
        aperture_sum = rng.uniform(1.05, 1.25, size=(n, 1))
        rows["apsum_counts"] = rows["counts1d"] * aperture_sum
        rows["apsum_counts_err"] = rows["counts1d_err"] * aperture_sum

        # A few short flagged stretches (bad columns / cosmics).
        flagged = rng.random(size=(n, N_WAVE)) < 0.002
        rows["flag_pix"] = (flagged | np.roll(flagged, 1, axis=1)).astype(np.float32)
        rows["spec1d_ffsky"] = spec1d + 0.2 * spec1d_err * rng.standard_normal(size=(n, N_WAVE))
        return rows

    def _fiber_rows(self, core: np.ndarray, fibres: _FibreSet, rng: np.random.Generator) -> np.ndarray:
        n, per = fibres.distance.shape
        rows = np.zeros(n * per, dtype=FIBERS_DTYPE)

        def each(a: np.ndarray) -> np.ndarray:
            return np.repeat(a, per)

        col, row = fibres.col.ravel(), fibres.row.ravel()
        amp, fibnum = _amp_and_fibnum(col, row)
        expnum = (fibres.exposure.ravel() + 1).astype(np.int32)
        specid, ifuslot, ifuid = each(core["specid"]), each(core["ifuslot"]), each(core["ifuid"])
        shotid, date, obsid = each(core["shotid"]), each(core["date"]), each(core["obsid"])
        multiframe = multiframe_name(specid, ifuslot, ifuid, amp)
        dx = fibres.x.ravel() - each(core["x_ifu"]).astype(np.float64)
        dy = fibres.y.ravel() - each(core["y_ifu"]).astype(np.float64)
        dec = each(core["dec"])
        rows["detectid"] = each(core["detectid"])
        rows["ra"] = each(core["ra"]) + dx / 3600.0 / np.cos(np.radians(dec))
        rows["dec"] = dec + dy / 3600.0
        rows["multiframe"] = multiframe
        rows["fiber_id"] = fiber_id_name(shotid, expnum, multiframe, fibnum)
        rows["x_ifu"] = fibres.x.ravel()
        rows["y_ifu"] = fibres.y.ravel()
        rows["date"] = date
        rows["obsid"] = obsid
        rows["expnum"] = expnum
        rows["distance"] = fibres.distance.ravel()
        rows["timestamp"] = _exposure_timestamp(date, obsid, expnum)
        wave = each(core["wave"])
        rows["wavein"] = wave
        weight = fibres.weight.ravel()
        rows["weight"] = weight
        # Weight at 5 wavelengths: differential refraction moves the PSF across the fibre.
        refraction = rng.normal(0.0, 0.05, size=(n * per, 1))
        rows["ADC"] = weight[:, None] * (1.0 + refraction * np.linspace(-1.0, 1.0, 5))
        rows["amp"] = amp
        rows["fibnum"] = fibnum
        rows["ifuid"] = ifuid
        rows["ifuslot"] = ifuslot
        rows["specid"] = specid
        rows["x_raw"], rows["y_raw"] = _ccd_position(wave, fibnum)
        return rows

    def close(self) -> None:
        """Build the completely sorted indexes and close the file."""
        if not self._file.isopen:
            return
        self.detections.cols.detectid.create_csindex()
        self.detections.cols.shotid.create_csindex()
        self.fibers.cols.detectid.create_csindex()
        self.spectra.cols.detectid.create_csindex()
        self._file.flush()
        self._file.close()


class DetectIndexWriter:
    """Streams ``detect_index_hdr5.h5``: one /DetectIndex row per line and continuum detection of
    all releases, with the Nside 32768 RING HEALPix pixel of the stored (float32) position."""

    def __init__(self, path: str | os.PathLike, survey: str = "hdr5", *, expected_rows: int = 40_000_000) -> None:
        if survey not in SURVEYS:
            raise ValueError(f"survey must be one of {SURVEYS}, got {survey!r}")
        title = f"{survey.upper()} Detect Index file "
        self._file = tb.open_file(os.fspath(path), mode="w", title=title, filters=FILTERS)
        self.table = self._file.create_table(
            self._file.root, "DetectIndex", DETECT_INDEX_DESCRIPTION, expectedrows=expected_rows
        )

    def __enter__(self) -> DetectIndexWriter:
        return self

    def __exit__(self, exc_type, exc, tb_) -> None:
        if exc_type is None:
            self.close()
        elif self._file.isopen:
            self._file.close()

    def append(self, core: np.ndarray) -> None:
        if len(core) == 0:
            return
        _check_core(core, survey=None, det_type=None)
        rows = np.zeros(len(core), dtype=DETECT_INDEX_DTYPE)
        for name in ("detectid", "shotid", "ra", "dec", "wave", "sn", "det_type"):
            rows[name] = core[name]
        # From the float32 values as stored, so a reader recomputing the pixel gets the same one.
        rows["healpix"] = _healpix(rows["ra"], rows["dec"])
        rows["survey"] = _survey_of_detectid(core["detectid"])
        rows["fiber_id"] = detection_fiber(core).fiber_id
        self.table.append(rows)

    def close(self) -> None:
        """Build the completely sorted indexes and close the file."""
        if not self._file.isopen:
            return
        for name in ("detectid", "healpix", "ra", "shotid"):
            self.table.colinstances[name].create_csindex()
        self._file.flush()
        self._file.close()
