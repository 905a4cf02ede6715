"""PDR1 IFU datacubes in numpy: open, select voxels by MASK bits, aperture spectra, maps, cutouts.

    >>> from dexdb.cube import aperture_spectrum, cube_path, open_cube
    >>> with open_cube(cube_path("pdr1", 20190405020, 34)) as cube:
    ...     result = aperture_spectrum(cube, 199.4913, 51.7012, radius=3.5)
    >>> result.spectrum, result.error, result.apcor   # float32[1036] each; None off the cube

A cube is (wave, y, x) = (1036, 104, 104): DATA and ERROR in 1e-17 erg/s/cm2 per 0.5" spaxel per
2 A bin, MASK bits (0 = good) as in ``dexdb.constants.MASK_BITS``, spaxels outside fibre coverage
with DATA = ERROR = 0. Files are read as released (RICE-compressed, only the tiles a window touches
are decompressed) or decompressed (memory-mapped: the fast path).

The aperture extraction is the PDR1 reference algorithm (dexcube ``get_spectra``): exact circular
pixel weights, the weighted fraction of the aperture with data at each wavelength (``apcor``) as
the correction for masked and uncovered area, NaN where it falls below ``min_coverage``, output
per Angstrom. It is vectorised over wavelength and equals the reference to float32 rounding.
Two extensions to the reference arguments: ``BADDET`` is accepted as a name (the reference only
takes its value 8192), and numpy integers are accepted; values with undefined bits are refused.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple, Self

import astropy.units as u
import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales
from photutils.aperture import CircularAperture

from dexdb.constants import FLUX_DENSITY_UNIT, FLUX_UNIT, MASK_BITS

ALL_NONZERO = "ALL_NONZERO"
#: Every defined MASK bit set; a value with any other bit is refused.
ALL_BITS = sum(MASK_BITS.values())
EXTENSIONS = ("DATA", "ERROR", "MASK")
#: A voxel with |DATA| below this holds no data when coverage is measured (reference step 8).
NO_DATA_LEVEL = 1e-8
#: A bit selection: None, an int, a name, names (or ints), or "ALL_NONZERO".
Bits = int | str | Iterable[str | int] | None


class CubeError(ValueError):
    """A file that cannot be read as a PDR1 cube: truncated, corrupt or of another layout."""


def cube_path(pdr1_dir: str | os.PathLike, shotid: int, ifuslot: int | str) -> Path:
    """``pdr1_dir/datacubes/<shotid>/dex_cube_<shotid>_<ifuslot>.fits``; ifuslot 34, '34' or '034'.

    >>> cube_path("pdr1", 20190405020, 34).as_posix()
    'pdr1/datacubes/20190405020/dex_cube_20190405020_034.fits'
    """
    slot = f"{ifuslot:03d}" if isinstance(ifuslot, int) else str(ifuslot).zfill(3)
    return Path(pdr1_dir) / "datacubes" / str(shotid) / f"dex_cube_{shotid}_{slot}.fits"


@dataclass(eq=False)
class Cube:
    """An open cube. ``data``/``error``/``mask`` are sliceable in (wave, y, x): numpy arrays,
    memory maps of a decompressed file or astropy sections. ``mask_bzero``: a memory-mapped MASK
    holds int16 with BZERO = 32768 (how FITS stores uint16), whose top bit is flipped on reading."""

    path: Path
    wcs: WCS
    spec_bw: float  # width of one wavelength bin (A): DATA / spec_bw is per A
    shape: tuple[int, int, int]
    data: Any
    error: Any
    mask: Any
    mask_bzero: bool = False
    hdul: fits.HDUList | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        if self.hdul is not None:
            self.hdul.close()
            self.hdul = None

    @cached_property
    def celestial(self) -> WCS:
        return self.wcs.celestial

    @cached_property
    def wave(self) -> np.ndarray:
        """Bin centres in Angstrom (float32). astropy holds the WAVE axis in metres."""
        planes = np.arange(self.shape[0])
        return self.wcs.spectral.pixel_to_world(planes).to_value(u.AA).astype(np.float32)

    @cached_property
    def pixel_scale_arcsec(self) -> float:
        return float(proj_plane_pixel_scales(self.celestial)[0] * 3600.0)

    def pixel(self, ra, dec) -> tuple[np.ndarray, np.ndarray]:
        """0-based (x, y) of sky positions (deg); NaN on the far side of the tangent plane."""
        x, y = self.celestial.wcs_world2pix(np.atleast_1d(ra), np.atleast_1d(dec), 0)
        return x, y

    def read(self, planes: slice = slice(None), rows: slice = slice(None), cols: slice = slice(None)):
        """(data float32, error float32, mask uint16) of a window, in memory."""
        return self._read(lambda source: source[planes, rows, cols])

    def read_pixels(self, rows: slice, cols: slice, pixels: np.ndarray):
        """(data, error, mask), each (wave, len(pixels)), of the window's pixels at the flat
        (row-major) indices ``pixels``: arrays and memory maps gather only those."""
        n_wave, _, nx = self.shape
        width = cols.stop - cols.start
        flat = (pixels // width + rows.start) * nx + pixels % width + cols.start

        def take(source):
            if isinstance(source, np.ndarray) and source.flags.c_contiguous:
                return source.reshape(n_wave, -1)[:, flat]
            return source[:, rows, cols].reshape(n_wave, -1)[:, pixels]

        return self._read(take)

    def _read(self, take):
        try:
            data = np.asarray(take(self.data), dtype=np.float32)
            error = np.asarray(take(self.error), dtype=np.float32)
            mask = take(self.mask)
            if self.mask_bzero:
                mask = mask ^ np.uint16(0x8000)
            mask = np.asarray(mask, dtype=np.uint16)
        except Exception as exc:
            raise CubeError(f"{self.path}: cannot read the cube, the file is corrupt ({exc})") from exc
        return data, error, mask

    def load(self) -> Cube:
        """The whole cube in memory: faster than windows when many positions share a compressed cube."""
        data, error, mask = self.read()
        return Cube(self.path, self.wcs, self.spec_bw, self.shape, data, error, mask)


def open_cube(path: str | os.PathLike) -> Cube:
    """Open a cube, compressed or not, after checking its layout and size.

    Raises FileNotFoundError for a missing file and CubeError, naming the file, for one that is
    truncated, corrupt or lacks the DATA/ERROR/MASK images.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such cube file")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyUserWarning)  # truncation is reported below
        try:
            hdul = fits.open(path)
            hdul.readall()
        except Exception as exc:
            raise CubeError(f"{path}: not a readable FITS file ({exc})") from exc
    try:
        hdus = _cube_hdus(path, hdul)
        header = hdus[0].header
        try:
            wcs = WCS(header)
        except Exception as exc:
            raise CubeError(f"{path}: DATA header has no usable WCS ({exc})") from exc
        if wcs.naxis != 3 or not wcs.has_celestial or not wcs.has_spectral:
            raise CubeError(f"{path}: DATA WCS is not celestial x spectral (naxis {wcs.naxis})")
        shape = tuple(hdus[0].shape)
        spec_bw = float(header.get("SPECBW", 2.0))
        # The fast path: plain float32 images and a uint16 MASK as FITS stores it, memory-mapped.
        layout = [(type(hdu), hdu.header["BITPIX"], hdu.header.get("BSCALE", 1), hdu.header.get("BZERO", 0))
                  for hdu in hdus]  # fmt: skip
        plain = fits.ImageHDU
        if layout != [(plain, -32, 1, 0), (plain, -32, 1, 0), (plain, 16, 1, 32768)]:
            return Cube(path, wcs, spec_bw, shape, *(hdu.section for hdu in hdus), hdul=hdul)
        arrays = [
            np.memmap(path, dtype=dtype, mode="r", offset=hdul.fileinfo(hdul.index(hdu))["datLoc"], shape=shape)
            for hdu, dtype in zip(hdus, (">f4", ">f4", ">u2"))
        ]
    except BaseException:
        hdul.close()
        raise
    hdul.close()
    return Cube(path, wcs, spec_bw, shape, *arrays, mask_bzero=True)


def _cube_hdus(path: Path, hdul: fits.HDUList) -> list:
    names = [hdu.name for hdu in hdul]
    missing = [name for name in EXTENSIONS if name not in names]
    if missing:
        raise CubeError(f"{path}: no {'/'.join(missing)} image (HDUs found: {names}); truncated or not a PDR1 cube")
    hdus = [hdul[name] for name in EXTENSIONS]
    shapes = {tuple(hdu.shape or ()) for hdu in hdus}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise CubeError(f"{path}: DATA/ERROR/MASK must be 3-D images of one shape, got {[hdu.shape for hdu in hdus]}")
    expected = max(info["datLoc"] + info["datSpan"] for info in map(hdul.fileinfo, range(len(hdul))))
    size = path.stat().st_size
    if size < expected:
        raise CubeError(f"{path}: truncated: {size} bytes, its HDUs need {expected}")
    return hdus


# ---------------------------------------------------------------------------------------------------
# MASK bit selection (reference step 6)


def bit_value(bits: Bits, argument: str = "bits") -> int | str:
    """The OR of a bit selection, or ALL_NONZERO; None -> 0. Names are case-insensitive.

    >>> bit_value(["badcal", "BADAMP"]), bit_value(8192), bit_value("all_nonzero")
    (2064, 8192, 'ALL_NONZERO')
    """
    if bits is None:
        return 0
    if isinstance(bits, str) and bits.upper() == ALL_NONZERO:
        return ALL_NONZERO
    items = [bits] if isinstance(bits, str | int | np.integer) else bits
    if not isinstance(items, Iterable):
        raise TypeError(f"{argument}: expected None, an int, a bit name, names or {ALL_NONZERO!r}, got {bits!r}")
    value = 0
    for item in items:
        if isinstance(item, str):
            if item.upper() not in MASK_BITS:
                known = ", ".join([*MASK_BITS, ALL_NONZERO])
                raise ValueError(f"{argument}: unknown MASK bit name {item!r}; known: {known}")
            value |= MASK_BITS[item.upper()]
        elif isinstance(item, int | np.integer) and not isinstance(item, bool | np.bool_):
            if not 0 <= int(item) <= ALL_BITS:
                raise ValueError(f"{argument}: {int(item)} is not a combination of PDR1 MASK bits (0..{ALL_BITS})")
            value |= int(item)
        else:
            raise TypeError(f"{argument}: expected bit names or ints, got {item!r}")
    return value


def good_voxels(mask: np.ndarray, exclude_bits: Bits = ALL_NONZERO, keep_bits: Bits = None,
                include_only_bits: Bits = None) -> np.ndarray:
    """Voxels to use, as the reference selects them.

    include_only_bits (when non-zero) alone decides: voxels with any of its bits (ALL_NONZERO: any
    bit). Otherwise voxels without the exclude bits (ALL_NONZERO: MASK == 0; None/0: all), plus
    those with any keep bit, even when they also carry excluded bits (keep ALL_NONZERO: all).

    >>> good_voxels(np.array([0, 16, 2048, 2064]), keep_bits="BADCAL").tolist()
    [True, False, True, True]
    """
    exclude = bit_value(exclude_bits, "exclude_bits")
    keep = bit_value(keep_bits, "keep_bits")
    include = bit_value(include_only_bits, "include_only_bits")
    if include == ALL_NONZERO:
        return mask != 0
    if include:
        return (mask & include) != 0
    if keep == ALL_NONZERO:
        return np.ones(mask.shape, bool)
    good = mask == 0 if exclude == ALL_NONZERO else (mask & exclude) == 0
    if keep:
        good |= (mask & keep) != 0
    return good


# ---------------------------------------------------------------------------------------------------
# Aperture spectra (reference steps 2-11)


class ApertureSpectrum(NamedTuple):
    """float32 arrays over the cube's wavelengths; spectrum and error in 1e-17 erg/s/cm2/A."""

    spectrum: np.ndarray
    error: np.ndarray
    apcor: np.ndarray


def aperture_spectrum(cube: Cube, ra: float, dec: float, radius: float = 3.5, *,
                      exclude_bits: Bits = ALL_NONZERO, keep_bits: Bits = None, include_only_bits: Bits = None,
                      min_coverage: float = 0.20) -> ApertureSpectrum | None:
    """The aperture spectrum of radius ``radius`` arcsec at (ra, dec) deg; None when off the cube.

    >>> result = aperture_spectrum(cube, 199.4913, 51.7012, keep_bits="BADCAL", min_coverage=0.5)
    """
    return aperture_spectra(cube, [ra], [dec], radius, exclude_bits=exclude_bits, keep_bits=keep_bits,
                            include_only_bits=include_only_bits, min_coverage=min_coverage)[0]


def aperture_spectra(cube: Cube, ra, dec, radius: float = 3.5, *, exclude_bits: Bits = ALL_NONZERO,
                     keep_bits: Bits = None, include_only_bits: Bits = None,
                     min_coverage: float = 0.20) -> list[ApertureSpectrum | None]:
    """:func:`aperture_spectrum` at many positions of one cube (pixel positions computed at once)."""
    if not radius > 0:
        raise ValueError(f"radius must be a positive number of arcsec, got {radius}")
    selection = {"exclude_bits": exclude_bits, "keep_bits": keep_bits, "include_only_bits": include_only_bits}
    for name, bits in selection.items():
        bit_value(bits, name)
    r_pix = radius / cube.pixel_scale_arcsec
    xs, ys = cube.pixel(ra, dec)
    return [_extract(cube, float(x), float(y), r_pix, selection, min_coverage) for x, y in zip(xs, ys)]


def _extract(cube: Cube, x: float, y: float, r: float, selection: dict, min_coverage: float):
    _, ny, nx = cube.shape
    if not (math.isfinite(x) and math.isfinite(y)) or x + r < 0 or x - r > nx - 1 or y + r < 0 or y - r > ny - 1:
        return None
    aperture = CircularAperture((x, y), r).to_mask(method="exact")
    in_cube, in_mask = aperture.get_overlap_slices((ny, nx))
    if in_cube is None:
        return None
    weights = aperture.data[in_mask].astype(np.float32)
    # Pixels of zero weight add nothing to any sum, so only the others are read into the sums.
    pixels = np.flatnonzero(weights > 0)
    w = weights.reshape(-1)[pixels]
    data, error, mask = cube.read_pixels(*in_cube, pixels)
    n_wave = cube.shape[0]
    total = w.sum(dtype=np.float32)
    if not total > 0:
        nan = np.full(n_wave, np.nan, np.float32)
        return ApertureSpectrum(nan, nan.copy(), nan.copy())

    good = good_voxels(mask, **selection)
    has_data = good & (error != 0) & (np.abs(data) >= NO_DATA_LEVEL)
    apcor = (has_data.astype(np.float32) @ w) / total
    # The reference's nansum skips NaN voxels; zeros do the same inside a matrix product.
    flux = np.where(good & ~np.isnan(data), data, np.float32(0)) @ w
    variance = np.where(good & ~np.isnan(error), error * error, np.float32(0)) @ (w * w)
    with np.errstate(divide="ignore", invalid="ignore"):
        spectrum = flux / apcor / np.float32(cube.spec_bw)
        spectrum_err = np.sqrt(variance) / apcor / np.float32(cube.spec_bw)
    low = ~(np.isfinite(apcor) & (apcor > 0) & (apcor >= min_coverage))
    spectrum[low] = spectrum_err[low] = apcor[low] = np.nan
    return ApertureSpectrum(spectrum, spectrum_err, apcor)


# ---------------------------------------------------------------------------------------------------
# Maps and cutouts


@dataclass(frozen=True)
class SkyImage:
    """A map: ``image`` (y, x) or (y, x, 3) with the cube's celestial WCS."""

    image: np.ndarray
    wcs: WCS
    unit: str


def observed_wave(z: float, rest_wave: float) -> float:
    """Observed wavelength of a line, rest x (1 + z), the convention of the release's redshifts.

    >>> from dexdb.constants import LYA
    >>> round(observed_wave(2.53, LYA), 2)
    4291.32
    """
    return rest_wave * (1.0 + z)


def _planes(cube: Cube, low: float, high: float) -> slice:
    """The planes whose centre lies in [low, high) A (the wave grid increases)."""
    wave = cube.wave
    return slice(int(np.searchsorted(wave, low, "left")), int(np.searchsorted(wave, high, "left")))


def _usable(cube: Cube, planes: slice, selection: dict) -> tuple[np.ndarray, np.ndarray]:
    """DATA of a block of planes and where it holds data: selected, covered (ERROR != 0), not NaN."""
    data, error, mask = cube.read(planes)
    return data, good_voxels(mask, **selection) & (error != 0) & ~np.isnan(data)


def _sum_over_planes(data: np.ndarray, usable: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.where(usable, data, 0).sum(axis=0, dtype=np.float64), usable.sum(axis=0)


def narrowband_map(cube: Cube, wave: float, width: float = 10.0, *, exclude_bits: Bits = ALL_NONZERO,
                   keep_bits: Bits = None, include_only_bits: Bits = None) -> SkyImage:
    """Flux per spaxel (1e-17 erg/s/cm2) in the planes centred in [wave - width/2, wave + width/2).

    A spaxel sums its usable voxels (selected, covered, not NaN) and scales the sum by planes /
    usable planes, so masked planes count as the mean of the others; NaN where none is usable.

    >>> line = narrowband_map(cube, observed_wave(2.53, LYA), width=10.0)
    """
    planes = _checked_planes(cube, wave - width / 2, wave + width / 2, "narrow band")
    selection = {"exclude_bits": exclude_bits, "keep_bits": keep_bits, "include_only_bits": include_only_bits}
    total, count = _sum_over_planes(*_usable(cube, planes, selection))
    with np.errstate(divide="ignore", invalid="ignore"):
        image = np.where(count > 0, total * (planes.stop - planes.start) / count, np.nan)
    return SkyImage(image.astype(np.float32), cube.celestial, FLUX_UNIT)


def continuum_map(cube: Cube, wave: float, width: float = 10.0, gap: float = 10.0, continuum_width: float = 50.0, *,
                  exclude_bits: Bits = ALL_NONZERO, keep_bits: Bits = None,
                  include_only_bits: Bits = None) -> SkyImage:
    """Mean flux density per spaxel (1e-17 erg/s/cm2/A) in two side bands of ``continuum_width`` A,
    ``gap`` A beyond each edge of the band [wave - width/2, wave + width/2); NaN with no usable voxel.

    >>> continuum = continuum_map(cube, 4291.3, width=10.0, gap=10.0, continuum_width=50.0)
    """
    edge = width / 2 + gap
    selection = {"exclude_bits": exclude_bits, "keep_bits": keep_bits, "include_only_bits": include_only_bits}
    sides = [_planes(cube, wave - edge - continuum_width, wave - edge),
             _planes(cube, wave + edge, wave + edge + continuum_width)]  # fmt: skip
    sides = [planes for planes in sides if planes.stop > planes.start]
    if not sides:
        raise ValueError(f"{cube.path}: no continuum planes within {edge + continuum_width} A of {wave} A")
    sums = [_sum_over_planes(*_usable(cube, planes, selection)) for planes in sides]
    total, count = sum(s[0] for s in sums), sum(s[1] for s in sums)
    with np.errstate(divide="ignore", invalid="ignore"):
        image = np.where(count > 0, total / count / cube.spec_bw, np.nan)
    return SkyImage(image.astype(np.float32), cube.celestial, FLUX_DENSITY_UNIT)


def line_map(cube: Cube, wave: float, width: float = 10.0, gap: float = 10.0, continuum_width: float = 50.0,
             **selection) -> SkyImage:
    """Continuum-subtracted line flux per spaxel (1e-17 erg/s/cm2): the narrow band minus the
    continuum density times the band's width in A.

    >>> lya = line_map(cube, observed_wave(2.53, LYA))
    """
    planes = _checked_planes(cube, wave - width / 2, wave + width / 2, "narrow band")
    band = narrowband_map(cube, wave, width, **selection).image
    continuum = continuum_map(cube, wave, width, gap, continuum_width, **selection).image
    image = band - continuum * np.float32((planes.stop - planes.start) * cube.spec_bw)
    return SkyImage(image, cube.celestial, FLUX_UNIT)


def rgb_composite(cube: Cube, waves: tuple[float, float, float], width: float = 10.0,
                  percentiles: tuple[float, float] = (1.0, 99.0), **selection) -> SkyImage:
    """(y, x, 3) image in [0, 1]: narrow bands at ``waves`` (red, green, blue), each stretched
    linearly between its own ``percentiles`` of the finite values; NaN spaxels are black.

    >>> rgb = rgb_composite(cube, (5000.0, 4500.0, 4000.0), width=100.0)
    """
    channels = []
    for wave in waves:
        band = narrowband_map(cube, wave, width, **selection).image.astype(np.float64)
        finite = band[np.isfinite(band)]
        low, high = np.percentile(finite, percentiles) if finite.size else (0.0, 0.0)
        scaled = (band - low) / (high - low) if high > low else np.zeros_like(band)
        channels.append(np.nan_to_num(np.clip(scaled, 0.0, 1.0), nan=0.0))
    return SkyImage(np.stack(channels, axis=-1).astype(np.float32), cube.celestial, "")


def cutout(cube: Cube, ra: float, dec: float, size: float = 10.0,
           wave_range: tuple[float, float] | None = None) -> Cube | None:
    """A sub-cube in memory with its own WCS: the spaxels whose centres lie in the square of side
    ``size`` arcsec along the cube's axes around (ra, dec), and the planes centred in
    [wave_range[0], wave_range[1]) A (all by default); None when no spaxel falls inside.

    >>> small = cutout(cube, 199.4913, 51.7012, size=8.0, wave_range=(4200, 4400))
    >>> aperture_spectrum(small, 199.4913, 51.7012, radius=3.5)
    """
    (x,), (y,) = cube.pixel(ra, dec)
    if not (math.isfinite(x) and math.isfinite(y)):
        return None
    half = size / 2 / cube.pixel_scale_arcsec
    _, ny, nx = cube.shape
    cols = slice(max(math.ceil(x - half), 0), min(math.floor(x + half) + 1, nx))
    rows = slice(max(math.ceil(y - half), 0), min(math.floor(y + half) + 1, ny))
    planes = slice(None) if wave_range is None else _checked_planes(cube, *wave_range, "wave_range")
    if cols.start >= cols.stop or rows.start >= rows.stop:
        return None
    data, error, mask = (np.ascontiguousarray(a) for a in cube.read(planes, rows, cols))
    return Cube(cube.path, cube.wcs.slice((planes, rows, cols)), cube.spec_bw, data.shape, data, error, mask)


def _checked_planes(cube: Cube, low: float, high: float, what: str) -> slice:
    planes = _planes(cube, low, high)
    if planes.stop <= planes.start:
        wave = cube.wave
        raise ValueError(f"{what} [{low}, {high}) A holds no plane of {cube.path} ({wave[0]}-{wave[-1]} A)")
    return planes
