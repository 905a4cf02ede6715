"""Mock PDR1 IFU datacubes ``dex_cube_<shotid>_<ifuslot>.fits`` (data model section 5).

A cube holds DATA and ERROR (float32, 1e-17 erg/s/cm2 per 0.5" spaxel per 2 A bin) and MASK
(uint16 bits) on a (1036, 104, 104) = (wave, y, x) grid whose spatial axes are rotated by the
shot PA. Headers, compression and the uncovered-spaxel convention follow the release generation
so that ingest code and the section 6 aperture extraction can be exercised on them.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from dexdb.constants import MASK_BITS, N_WAVE, WAVE, WAVE_START, WAVE_STEP
from dexdb.geometry import cube_footprint, cube_rotation_deg

N_PIX = 104
CUBE_SHAPE = (N_WAVE, N_PIX, N_PIX)
PIXEL_SCALE_ARCSEC = 0.5
#: 0-based pixel coordinate of the IFU centre (CRPIX1/2 = 52.5 in FITS 1-based terms).
CENTRE_PIXEL = (N_PIX - 1) / 2
TILE_SHAPE = (16, 32, 32)
EXTNAMES = ("DATA", "ERROR", "MASK")

#: The release generation was written on this date; a fixed value keeps mock files reproducible.
RELEASE_FILETIME = "2025-08-21T00:00:00"
BUNIT = "1e-17 erg s^-1 cm^-2"
HISTORY_LINE = "BUNIT updated: flux per pixel (removed arcsec^-2)."

#: Card order of the WCS part of the release header (section 5.2).
WCS_KEYS = (
    "WCSAXES", "CRPIX1", "CRPIX2", "CRPIX3", "PC1_1", "PC1_2", "PC2_1", "PC2_2",
    "CDELT1", "CDELT2", "CDELT3", "CUNIT1", "CUNIT2", "CUNIT3", "CTYPE1", "CTYPE2", "CTYPE3",
    "CRVAL1", "CRVAL2", "CRVAL3", "LONPOLE", "LATPOLE", "MJDREF", "RADESYS",
)  # fmt: skip

#: Cards between the WCS block and the Survey copy, with their fixed release values.
PROCESSING_CARDS = (
    ("SURVEY", "hdr5"),
    ("MASK", "True"),
    ("CONVOLVE", "False"),
    ("INTERP", "linear"),
    ("FFSKY", "False"),
    ("FFSKYRC", "False"),
)

#: Survey-row copy: (card, shot key, element index for the per-exposure triplets).
SURVEY_CARDS = (
    ("SHOTID", "shotid", None), ("FIELD", "field", None), ("OBJID", "objid", None),
    ("DATE", "date", None), ("OBSID", "obsid", None), ("RA", "ra", None), ("DEC", "dec", None),
    ("PA", "pa", None), ("N_IFU", "n_ifu", None), ("FWHM", "fwhm_virus", None),
    ("FWHM_ERR", "fwhm_virus_err", None), ("RESPONSE", "response_4540", None),
    ("RELFLUX1", "relflux_virus", 0), ("RELFLUX2", "relflux_virus", 1),
    ("RELFLUX3", "relflux_virus", 2), ("AMBTEMP", "ambtemp", None),
    ("DATEVOBS", "datevobs", None), ("DEWPOINT", "dewpoint", None),
    ("EXPNUM1", "expnum", 0), ("EXPNUM2", "expnum", 1), ("EXPNUM3", "expnum", 2),
    ("EXPTIME1", "exptime", 0), ("EXPTIME2", "exptime", 1), ("EXPTIME3", "exptime", 2),
    ("HUMIDITY", "humidity", None), ("MJD1", "mjd", 0), ("MJD2", "mjd", 1), ("MJD3", "mjd", 2),
    ("OBSIND", "obsind", None), ("PRESSURE", "pressure", None), ("STRUCTAZ", "structaz", None),
    ("TIME", "time", None), ("TRAJCDEC", "trajcdec", None), ("TRAJCPA", "trajcpa", None),
    ("TRAJCRA", "trajcra", None),
)  # fmt: skip

# Fibre coverage: the dithered fibre pattern stops short of the outermost spaxel ring and of
# the grid corners. Offsets are measured from the IFU centre along the pixel axes.
COVERAGE_HALF_WIDTH_ARCSEC = 25.5
COVERAGE_CORNER_CUT_ARCSEC = 46.0  # limit on |dx| + |dy|

#: ERROR varies from spaxel to spaxel (fibre throughput, dither overlap) by up to this fraction.
SPAXEL_NOISE_SPREAD = 0.05

BADCAL_WAVE_RANGE = (3534.0, 3556.0)
#: Spatial footprint of one flagged fibre after dithering and nearest-fibre masking (2" square).
FIBRE_CELL_PIX = 4
#: Random voxels that get PIXMASK / MAIN (Poisson means per cube).
MEAN_PIXMASK_VOXELS = 20
MEAN_MAIN_VOXELS = 5
#: Meteor/satellite tracks cross the IFU at most this far (arcsec) from its centre.
TRACK_MAX_OFFSET_ARCSEC = 10.0
BADDET_HALF_BOX = 2


def _pixel_offsets_arcsec() -> tuple[np.ndarray, np.ndarray]:
    """(dy, dx) of every spaxel centre from the IFU centre along the pixel axes, arcsec."""
    offsets = (np.arange(N_PIX) - CENTRE_PIXEL) * PIXEL_SCALE_ARCSEC
    return np.meshgrid(offsets, offsets, indexing="ij")


def _coverage() -> np.ndarray:
    dy, dx = _pixel_offsets_arcsec()
    return (
        (np.abs(dx) <= COVERAGE_HALF_WIDTH_ARCSEC)
        & (np.abs(dy) <= COVERAGE_HALF_WIDTH_ARCSEC)
        & (np.abs(dx) + np.abs(dy) <= COVERAGE_CORNER_CUT_ARCSEC)
    )


#: (y, x) spaxels reached by fibres; everything else is DATA = ERROR = 0.
COVERED = _coverage()


@functools.cache
def _nearest_covered() -> tuple[np.ndarray, np.ndarray]:
    """Flat indices of the uncovered spaxels and of the covered spaxel nearest to each."""
    uncovered = np.flatnonzero(~COVERED)
    # A nearest covered spaxel always has an uncovered 4-neighbour (otherwise the neighbour
    # towards the query spaxel would be nearer), so only the coverage rim is searched.
    padded = np.pad(COVERED, 1, constant_values=True)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    covered = np.flatnonzero(COVERED & ~interior)
    uy, ux = np.divmod(uncovered, N_PIX)
    cy, cx = np.divmod(covered, N_PIX)
    distance2 = (uy[:, None] - cy[None, :]) ** 2 + (ux[:, None] - cx[None, :]) ** 2
    return uncovered, covered[np.argmin(distance2, axis=1)]


def cube_wcs_header(ra_cen: float, dec_cen: float, pa: float) -> fits.Header:
    """WCS cards of the release DATA header, in release order (section 5.2).

    The header is emitted by astropy from CROTA2 = 360 - (90 + PA + 1.55) so the PC values carry
    astropy's printed precision; the spectral axis is then forced back to Angstrom values, which
    leaves astropy's "[m]" comments on CDELT3/CRVAL3 as in the real files. CRVAL1/2 keep the
    given centre exactly (the ifu-index ra_cen/dec_cen must equal them).
    """
    wcs = WCS(naxis=3)
    wcs.wcs.crpix = [CENTRE_PIXEL + 1, CENTRE_PIXEL + 1, 1.0]
    wcs.wcs.cdelt = [-PIXEL_SCALE_ARCSEC / 3600, PIXEL_SCALE_ARCSEC / 3600, WAVE_STEP]
    wcs.wcs.cunit = ["deg", "deg", "Angstrom"]
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN", "WAVE"]
    wcs.wcs.crval = [float(ra_cen), float(dec_cen), WAVE_START]
    wcs.wcs.crota = [0.0, cube_rotation_deg(float(pa)), 0.0]
    emitted = wcs.to_header()

    forced = {
        "CRVAL1": float(ra_cen),
        "CRVAL2": float(dec_cen),
        "CRPIX3": 1.0,
        "CDELT3": WAVE_STEP,
        "CUNIT3": "Angstrom",
        "CTYPE3": "WAVE",
        "CRVAL3": WAVE_START,
        "LATPOLE": float(dec_cen),
        "MJDREF": 0.0,
    }
    # astropy leaves out PC elements equal to the identity (e.g. PA where rho is a multiple of 90).
    identity = {"PC1_1": 1.0, "PC1_2": 0.0, "PC2_1": 0.0, "PC2_2": 1.0}
    header = fits.Header()
    for key in WCS_KEYS:
        value = forced.get(key, emitted.get(key, identity.get(key)))
        comment = emitted.comments[key] if key in emitted else ""
        header[key] = (value, comment)
    return header


def _card_value(value):
    """FITS-friendly Python scalar from a numpy scalar, bytes or Python value."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode()
    return value


def cube_header(shot: dict, ra_cen: float, dec_cen: float, extname: str) -> fits.Header:
    """Full DATA / ERROR / MASK header of the release generation, without CHECKSUM/DATASUM."""
    if extname not in EXTNAMES:
        raise ValueError(f"extname must be one of {EXTNAMES}, got {extname!r}")
    header = cube_wcs_header(ra_cen, dec_cen, shot["pa"])
    header["FILETIME"] = RELEASE_FILETIME
    for key, value in PROCESSING_CARDS:
        header[key] = value
    for card, shot_key, index in SURVEY_CARDS:
        value = shot[shot_key] if index is None else shot[shot_key][index]
        header[card] = _card_value(value)
    if extname != "MASK":
        header["BUNIT"] = BUNIT
    header["SPECBW"] = WAVE_STEP
    header["EXTNAME"] = extname
    header.add_history(HISTORY_LINE)
    return header


def footprint_corners(ra_cen: float, dec_cen: float, pa: float) -> np.ndarray:
    """(4, 2) RA/Dec (deg) of the outer pixel-edge corners of the 104 x 104 grid, in pixel order
    (-0.5, -0.5), (103.5, -0.5), (103.5, 103.5), (-0.5, 103.5)."""
    return cube_footprint(ra_cen, dec_cen, pa)[0]


def _pixel_fractions(centres: np.ndarray, sigma_pix: float) -> np.ndarray:
    """(n, N_PIX) fraction of a 1-D Gaussian centred at each 0-based centre in each pixel."""
    edges = np.arange(N_PIX + 1) - 0.5
    scaled = (edges[None, :] - centres[:, None]) / (sigma_pix * math.sqrt(2.0))
    cdf = 0.5 * (1.0 + np.vectorize(math.erf, otypes=[float])(scaled))
    return np.diff(cdf, axis=1)


def _point_source_signal(
    x: np.ndarray, y: np.ndarray, flux: np.ndarray, fwhm_arcsec: float
) -> np.ndarray:
    """Per-spaxel, per-2 A bin flux of point sources seen through a circular Gaussian PSF.

    A circular Gaussian is separable along any pair of orthogonal axes, and the spaxels are
    square, so integrating over a rotated pixel is a product of two 1-D erf differences.
    """
    sigma_pix = fwhm_arcsec / (2.0 * math.sqrt(2.0 * math.log(2.0))) / PIXEL_SCALE_ARCSEC
    fraction_y = _pixel_fractions(y, sigma_pix)
    fraction_x = _pixel_fractions(x, sigma_pix)
    spatial = (fraction_y[:, :, None] * fraction_x[:, None, :]).reshape(len(x), N_PIX * N_PIX)
    per_bin = WAVE_STEP * flux.T.astype(np.float32)
    return (per_bin @ spatial.astype(np.float32)).reshape(CUBE_SHAPE)


def _flag_fraction(flags: dict, name: str) -> float:
    """Flagged (bad) fraction from an ifu-index 'fraction good' value."""
    return float(np.clip(1.0 - float(flags.get(name, 1.0)), 0.0, 1.0))


def _bad_amp_quadrants(bad_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """One spatial quadrant per bad amplifier (each amp feeds about a quarter of the IFU)."""
    n_bad_amps = int(bad_fraction * 4 + 0.5)  # half up: 0.875 good still means one bad amp
    flagged = np.zeros((N_PIX, N_PIX), bool)
    half = N_PIX // 2
    for quadrant in rng.choice(4, size=n_bad_amps, replace=False):
        row, col = divmod(int(quadrant), 2)
        flagged[row * half : (row + 1) * half, col * half : (col + 1) * half] = True
    return flagged


def _bad_fibre_spots(bad_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Fibre-sized cells, disjoint, covering about bad_fraction of the covered area."""
    n_cells = N_PIX // FIBRE_CELL_PIX
    cells_of_pixels = COVERED.reshape(n_cells, FIBRE_CELL_PIX, n_cells, FIBRE_CELL_PIX)
    candidates = np.flatnonzero(cells_of_pixels.all(axis=(1, 3)))
    cell_area = FIBRE_CELL_PIX**2
    n_spots = min(len(candidates), max(1, round(bad_fraction * COVERED.sum() / cell_area)))
    chosen = np.zeros(n_cells * n_cells, bool)
    chosen[rng.choice(candidates, size=n_spots, replace=False)] = True
    cells = chosen.reshape(n_cells, n_cells)
    return cells.repeat(FIBRE_CELL_PIX, axis=0).repeat(FIBRE_CELL_PIX, axis=1)


def _track(bad_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Straight band across the IFU whose width makes it cover bad_fraction of the covered area."""
    angle = rng.uniform(0.0, math.pi)
    offset = rng.uniform(-TRACK_MAX_OFFSET_ARCSEC, TRACK_MAX_OFFSET_ARCSEC)
    dy, dx = _pixel_offsets_arcsec()
    distance = np.abs(dx * math.sin(angle) - dy * math.cos(angle) - offset)
    return distance <= np.quantile(distance[COVERED], bad_fraction)


def _flag_random_voxels(
    mask: np.ndarray, bit: int, mean_count: int, rng: np.random.Generator
) -> None:
    count = rng.poisson(mean_count)
    spaxels = rng.choice(np.flatnonzero(COVERED), size=count)
    planes = rng.integers(0, N_WAVE, size=count)
    mask.reshape(N_WAVE, -1)[planes, spaxels] |= bit


def _fibre_mask(flags: dict, rng: np.random.Generator) -> np.ndarray:
    """MASK bits carried by the fibres (everything but BADDET), nearest-fibre filled outside."""
    spatial = np.zeros((N_PIX, N_PIX), np.uint16)
    bad_amp = _flag_fraction(flags, "flag_badamp")
    if bad_amp > 0:
        spatial[_bad_amp_quadrants(bad_amp, rng)] |= MASK_BITS["BADAMP"]
    bad_fibre = _flag_fraction(flags, "flag_badfib")
    if bad_fibre > 0:
        spatial[_bad_fibre_spots(bad_fibre, rng)] |= MASK_BITS["BADFIB"]
    for flag_name, bit_name in (("flag_meteor", "METEOR"), ("flag_satellite", "SAT")):
        bad_track = _flag_fraction(flags, flag_name)
        if bad_track > 0:
            spatial[_track(bad_track, rng)] |= MASK_BITS[bit_name]

    mask = np.empty(CUBE_SHAPE, np.uint16)
    mask[:] = spatial
    badcal_planes = (WAVE >= BADCAL_WAVE_RANGE[0]) & (WAVE <= BADCAL_WAVE_RANGE[1])
    mask[badcal_planes] |= MASK_BITS["BADCAL"]
    _flag_random_voxels(mask, MASK_BITS["PIXMASK"], MEAN_PIXMASK_VOXELS, rng)
    _flag_random_voxels(mask, MASK_BITS["MAIN"], MEAN_MAIN_VOXELS, rng)

    uncovered, nearest = _nearest_covered()
    flat = mask.reshape(N_WAVE, -1)
    flat[:, uncovered] = flat[:, nearest]
    return mask


def _add_baddet_boxes(mask: np.ndarray, wcs: WCS, detections: np.ndarray) -> None:
    """OR BADDET into the 5x5x5 voxel box around each rejected detection, clipped at the edges."""
    if len(detections) == 0:
        return
    ra, dec, wave_aa = np.asarray(detections, float).T
    # astropy normalises the WAVE axis to metres whatever CUNIT3 says.
    z, y, x = wcs.world_to_array_index_values(ra, dec, wave_aa * 1e-10)
    for centre in zip(z, y, x):
        box = tuple(
            slice(max(c - BADDET_HALF_BOX, 0), max(min(c + BADDET_HALF_BOX + 1, n), 0))
            for c, n in zip(centre, CUBE_SHAPE)
        )
        mask[box] |= MASK_BITS["BADDET"]


def _image_hdu(data: np.ndarray, header: fits.Header, compressed: bool):
    if compressed:
        return fits.CompImageHDU(
            data, header=header, compression_type="RICE_1", tile_shape=TILE_SHAPE
        )
    return fits.ImageHDU(data, header=header)


def write_cube(
    path,
    shot: dict,
    ra_cen: float,
    dec_cen: float,
    *,
    sources_radec: np.ndarray,
    sources_flux: np.ndarray,
    noise_per_bin: np.ndarray,
    flags: dict,
    rejected_detections: np.ndarray,
    rng: np.random.Generator,
    compressed: bool = True,
) -> None:
    """Write one mock IFU cube (overwriting ``path``).

    sources_radec (n, 2) deg and sources_flux (n, 1036) true flux density in 1e-17 erg/s/cm2/A;
    noise_per_bin (1036,) the 1-sigma ERROR of one spaxel per 2 A bin (times a per-spaxel factor
    within +-SPAXEL_NOISE_SPREAD); flags the IFU's ifu-index fractions (1 = good, missing = 1);
    rejected_detections (m, 3) ra, dec, wave (A). DATA = PSF-integrated signal + N(0, ERROR).
    """
    sources_radec = np.asarray(sources_radec, float).reshape(-1, 2)
    sources_flux = np.asarray(sources_flux, np.float32).reshape(-1, N_WAVE)
    noise_per_bin = np.asarray(noise_per_bin, np.float32)
    if len(sources_radec) != len(sources_flux) or noise_per_bin.shape != (N_WAVE,):
        raise ValueError("need sources_radec (n, 2), sources_flux (n, 1036), noise_per_bin (1036,)")

    headers = {name: cube_header(shot, ra_cen, dec_cen, name) for name in EXTNAMES}
    wcs = WCS(headers["DATA"])
    x, y = wcs.celestial.all_world2pix(sources_radec[:, 0], sources_radec[:, 1], 0)
    # Sources on the far side of the tangent plane have no pixel position and add nothing.
    on_plane = np.isfinite(x) & np.isfinite(y)
    signal = _point_source_signal(
        x[on_plane], y[on_plane], sources_flux[on_plane], float(shot["fwhm_virus"])
    )

    spaxel_noise_factor = rng.uniform(
        1.0 - SPAXEL_NOISE_SPREAD, 1.0 + SPAXEL_NOISE_SPREAD, size=(N_PIX, N_PIX)
    ).astype(np.float32)
    error = noise_per_bin[:, None, None] * (spaxel_noise_factor * COVERED)
    data = signal + rng.standard_normal(CUBE_SHAPE, dtype=np.float32) * error
    data[:, ~COVERED] = 0.0

    mask = _fibre_mask(flags, rng)
    _add_baddet_boxes(mask, wcs, np.asarray(rejected_detections, float).reshape(-1, 3))

    hdus = [fits.PrimaryHDU()]
    for name, array in (("DATA", data), ("ERROR", error), ("MASK", mask)):
        hdus.append(_image_hdu(array, headers[name], compressed))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fits.HDUList(hdus).writeto(path, overwrite=True, checksum=True)


def decompress_cube(src, dst) -> None:
    """Rewrite every CompImageHDU of ``src`` as a plain ImageHDU with the same header in ``dst``.

    This is what users do to make cube reads fast; MASK stays uint16 (BITPIX 16, BZERO 32768).
    """
    with fits.open(src) as hdul:
        out = fits.HDUList([fits.PrimaryHDU(header=hdul[0].header)])
        for hdu in hdul[1:]:
            if isinstance(hdu, fits.CompImageHDU):
                out.append(fits.ImageHDU(hdu.data, header=hdu.header))
            else:
                out.append(hdu.copy())
        out.writeto(dst, overwrite=True, checksum=True)
