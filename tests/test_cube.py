"""dexdb.cube against a per-slice implementation written from data model section 6, against
tests/section6.py, against direct sums (maps) and astropy (WCS); flux recovery; broken files."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales
from photutils.aperture import CircularAperture
from section6 import extract_spectrum

from dexdb.constants import MASK_BITS, N_WAVE, WAVE
from dexdb.cube import (
    ALL_BITS,
    CubeError,
    aperture_spectra,
    aperture_spectrum,
    bit_value,
    continuum_map,
    cube_path,
    cutout,
    good_voxels,
    line_map,
    narrowband_map,
    observed_wave,
    open_cube,
    rgb_composite,
)
from dexdb.mock.cubes import EXTNAMES, cube_header, decompress_cube, write_cube

RA_CEN, DEC_CEN, PA = 150.1234, 2.2345, 68.823284
NPIX = 104
SOURCE_PIX = (40.3, 57.8)  # (x, y)
LINE_WAVE, LINE_SIGMA, LINE_FLUX, CONTINUUM = 4800.0, 4.0, 400.0, 3.0
BADDET_PIX = [(60, 40, 500), (1, 102, 1035), (37, 65, 665)]  # (x, y, plane)


def make_shot() -> dict:
    return {
        "shotid": 20200101012, "field": "cosmos", "objid": "COS", "date": 20200101, "obsid": 12,
        "ra": RA_CEN, "dec": DEC_CEN, "pa": PA, "n_ifu": 70, "fwhm_virus": 1.7,
        "fwhm_virus_err": 0.1, "response_4540": 0.12, "relflux_virus": [1.0, 1.0, 1.0],
        "ambtemp": 10.0, "datevobs": "20200101v012", "dewpoint": -3.0, "expnum": [1, 2, 3],
        "exptime": [367.0, 367.0, 367.0], "humidity": 30.0, "mjd": [58849.1, 58849.11, 58849.12],
        "obsind": 1, "pressure": 800.0, "structaz": 50.0, "time": "0300000", "trajcdec": DEC_CEN,
        "trajcpa": PA, "trajcra": RA_CEN,
    }  # fmt: skip


def source_spectrum() -> np.ndarray:
    line = LINE_FLUX / (LINE_SIGMA * np.sqrt(2 * np.pi)) * np.exp(-0.5 * ((WAVE - LINE_WAVE) / LINE_SIGMA) ** 2)
    return (CONTINUUM + line).astype(np.float32)


def to_sky(header: fits.Header, x, y) -> tuple[float, float]:
    sky = WCS(header).celestial.pixel_to_world(x, y)
    return float(sky.ra.deg), float(sky.dec.deg)


@pytest.fixture(scope="module")
def cubes(tmp_path_factory):
    """A flagged cube (every kind of MASK bit, a source with an emission line) as released, and a
    decompressed copy with NaN and near-zero voxels and extra bits written in."""
    directory = tmp_path_factory.mktemp("cube")
    shot = make_shot()
    header = cube_header(shot, RA_CEN, DEC_CEN, "DATA")
    rejected = [(*to_sky(header, x, y), 3470.0 + 2 * k) for x, y, k in BADDET_PIX]
    compressed = directory / "flagged.fits"
    write_cube(
        compressed, shot, RA_CEN, DEC_CEN, sources_radec=np.array([to_sky(header, *SOURCE_PIX)]),
        sources_flux=source_spectrum()[None], noise_per_bin=np.full(N_WAVE, 0.1, np.float32),
        flags={"flag_badamp": 0.75, "flag_badfib": 0.9, "flag_meteor": 0.92, "flag_satellite": 0.95},
        rejected_detections=np.array(rejected), rng=np.random.default_rng(3),
    )  # fmt: skip
    with fits.open(compressed) as hdul:
        data, error, mask = (hdul[name].data.copy() for name in ("DATA", "ERROR", "MASK"))
        headers = [hdul[name].header.copy() for name in ("DATA", "ERROR", "MASK")]
    rng = np.random.default_rng(8)
    # bits the mock never sets, in patches, so that every bit of every selection is met
    for bit in ("FTF", "CHI2FIB", "BADPIX", "LARGEGAL", "BADSHOT", "THROUGHPUT"):
        x, y, k = rng.integers(0, NPIX - 12), rng.integers(0, NPIX - 12), rng.integers(0, N_WAVE - 200)
        mask[k : k + 200, y : y + 12, x : x + 12] |= MASK_BITS[bit]
    mask[:, 30:45, 30:45] |= MASK_BITS["LARGEGAL"]
    voxels = lambda n: tuple(rng.integers(0, s, n) for s in data.shape)
    data[voxels(3000)] = np.nan
    data[voxels(3000)] = 3e-9  # below the no-data level, not zero
    error[voxels(2000)] = np.nan
    data[:, 50:55, 50:52] = np.nan  # NaN columns inside the central aperture
    plain = directory / "edited.fits"
    hdus = [fits.PrimaryHDU()] + [fits.ImageHDU(a, header=h) for a, h in zip((data, error, mask), headers)]
    fits.HDUList(hdus).writeto(plain, checksum=True)
    decompressed = directory / "decompressed.fits"
    decompress_cube(compressed, decompressed)
    clean = directory / "clean.fits"  # no flags, no quantisation: every voxel but a few has data
    write_cube(
        clean, shot, RA_CEN, DEC_CEN, sources_radec=np.array([to_sky(header, *SOURCE_PIX)]),
        sources_flux=source_spectrum()[None], noise_per_bin=np.full(N_WAVE, 0.1, np.float32), flags={},
        rejected_detections=np.empty((0, 3)), rng=np.random.default_rng(4), compressed=False,
    )  # fmt: skip
    return {"compressed": compressed, "plain": plain, "decompressed": decompressed, "clean": clean,
            "header": header}  # fmt: skip


@pytest.fixture(scope="module")
def arrays(cubes):
    """Full DATA/ERROR/MASK of each file as astropy reads them, in native byte order."""
    out = {}
    for name in ("compressed", "plain"):
        with fits.open(cubes[name]) as hdul:
            out[name] = tuple(hdul[n].data.astype(hdul[n].data.dtype.newbyteorder("=")) for n in EXTNAMES)
    return out


# ---------------------------------------------------------------- the reference, slice by slice


def reference_bits(value):
    """Step 6: None -> 0, 'ALL_NONZERO', an int, a name or a list of names or ints."""
    if value is None:
        return 0
    if isinstance(value, str) and value.upper() == "ALL_NONZERO":
        return "ALL_NONZERO"
    if isinstance(value, int):
        return value
    total = 0
    for item in [value] if isinstance(value, str) else value:
        total |= MASK_BITS[item.upper()] if isinstance(item, str) else item
    return total


def reference_good(mask_slice, exclude, keep, include):
    if include:
        return mask_slice != 0 if include == "ALL_NONZERO" else (mask_slice & include) != 0
    if exclude == "ALL_NONZERO":
        base = mask_slice == 0
    elif exclude:
        base = (mask_slice & exclude) == 0
    else:
        base = np.ones(mask_slice.shape, bool)
    if keep == "ALL_NONZERO":
        return np.ones(mask_slice.shape, bool)
    return base | ((mask_slice & keep) != 0) if keep else base


def per_slice_reference(arrays, wcs, spec_bw, ra, dec, radius=3.5, padding=2, exclude_bits="ALL_NONZERO",
                        keep_bits=None, include_only_bits=None, min_coverage=0.2, magnitude=True):
    """Section 6 step by step, one wavelength slice at a time, on the full arrays of a cube and its
    WCS (astropy.wcs.WCS of the DATA header) and SPECBW. With ``magnitude``, also the sum of the
    absolute flux terms on the output scale, against which float32 rounding of a sum of positive
    and negative terms is judged."""
    data, error, mask = arrays
    x, y = (float(v) for v in wcs.celestial.world_to_pixel(SkyCoord(ra, dec, unit="deg")))
    r = radius / (proj_plane_pixel_scales(wcs.celestial)[0] * 3600)
    n_wave, ny, nx = data.shape
    if not (math.isfinite(x) and math.isfinite(y)) or x + r < 0 or x - r > nx - 1 or y + r < 0 or y - r > ny - 1:
        return None
    x_lo, x_hi = max(math.floor(x - r) - padding, 0), min(math.ceil(x + r) + padding + 1, nx)
    y_lo, y_hi = max(math.floor(y - r) - padding, 0), min(math.ceil(y + r) + padding + 1, ny)
    if x_lo >= x_hi or y_lo >= y_hi:
        return None
    shape = (y_hi - y_lo, x_hi - x_lo)
    weights = CircularAperture((x - x_lo, y - y_lo), r).to_mask(method="exact").to_image(shape).astype(np.float32)
    total = weights.sum()
    exclude, keep, include = map(reference_bits, (exclude_bits, keep_bits, include_only_bits))
    out = {name: np.full(n_wave, np.nan, np.float32) for name in ("spectrum", "error", "apcor", "magnitude")}
    if total <= 0:
        return out
    for k in range(n_wave):
        d = data[k, y_lo:y_hi, x_lo:x_hi]
        e = error[k, y_lo:y_hi, x_lo:x_hi]
        good = reference_good(mask[k, y_lo:y_hi, x_lo:x_hi], exclude, keep, include)
        has_data = good & (e != 0) & (np.abs(d) >= 1e-8)
        apcor = np.float32((weights * has_data).sum() / total)
        if not (np.isfinite(apcor) and apcor > 0 and apcor >= min_coverage):
            continue
        flux = np.nansum(np.where(good, weights * d, np.nan))
        variance = np.nansum(np.where(good, weights**2 * e**2, np.nan))
        out["spectrum"][k] = flux / apcor / spec_bw
        out["error"][k] = np.sqrt(variance) / apcor / spec_bw
        out["apcor"][k] = apcor
        if magnitude:
            out["magnitude"][k] = np.nansum(np.where(good, np.abs(weights * d), np.nan)) / apcor / spec_bw
    return out


def frame(header: fits.Header) -> tuple[WCS, float]:
    """What the reference reads from the DATA header: the WCS and the bin width."""
    return WCS(header), header.get("SPECBW", 2.0)


def assert_matches(result, expected, where=""):
    if expected is None:
        assert result is None, where
        return
    assert result is not None, where
    for name in ("spectrum", "error", "apcor"):
        np.testing.assert_array_equal(np.isnan(getattr(result, name)), np.isnan(expected[name]), err_msg=where)
        assert getattr(result, name).dtype == np.float32
    ok = ~np.isnan(expected["apcor"])
    np.testing.assert_allclose(result.apcor[ok], expected["apcor"][ok], rtol=1e-6, err_msg=where)
    np.testing.assert_allclose(result.error[ok], expected["error"][ok], rtol=1e-6, err_msg=where)
    # rtol 1e-6 of the sum's magnitude: a sum of +- terms near zero keeps only absolute precision
    difference = np.abs(result.spectrum[ok] - expected["spectrum"][ok])
    allowed = 1e-6 * np.maximum(np.abs(expected["spectrum"][ok]), expected["magnitude"][ok])
    assert (difference <= allowed).all(), (where, (difference / allowed).max())


R_PIX = 7.0  # 3.5" at 0.5" per pixel
# (x, y) pixel positions: inside, uncovered corners, flagged regions, every edge just inside and
# just outside the reference's footprint test, and far away.
POSITIONS = [
    (51.5, 51.5), (37.23, 64.81), SOURCE_PIX, (60.0, 40.0), (37.0, 37.0), (10.4, 12.7), (1.5, 101.8),
    (-R_PIX + 0.05, 50.2), (NPIX - 1 + R_PIX - 0.05, 30.3), (60.0, -R_PIX + 0.3), (44.4, NPIX - 1 + R_PIX - 0.3),
    (-R_PIX - 0.05, 50.2), (NPIX - 1 + R_PIX + 0.05, 30.3), (60.0, -R_PIX - 0.02), (-50.0, -50.0),
]  # fmt: skip
# For the sweep over selections: NaN columns, the source, LARGEGAL and BADDET, two partial edges, outside.
SWEEP_POSITIONS = [(51.5, 51.5), SOURCE_PIX, (37.0, 37.0), (-R_PIX + 0.05, 50.2), (44.4, NPIX - 1 + R_PIX - 0.3),
                   (-R_PIX - 0.05, 50.2), (60.0, -R_PIX - 0.02)]
EXCLUDE = ["ALL_NONZERO", None, 0, "BADCAL", ["badamp", "METEOR"], 2048 | 16, 8192, "BADDET"]
KEEP = [None, "ALL_NONZERO", "BADCAL", 8192]
INCLUDE = ["ALL_NONZERO", "BADAMP", ["BADFIB", 1024]]
MIN_COVERAGE = [0.2, 0.0, 0.6]
COMBINATIONS = (
    [(e, k, None) for e, k in itertools.product(EXCLUDE, KEEP)]
    + [(e, k, i) for i in INCLUDE for e, k in (("ALL_NONZERO", None), ("BADCAL", "ALL_NONZERO"))]
    + [("BADCAL", None, 0)]
)


def compare_with_reference(cubes, arrays, positions, exclude, keep, include, min_coverage):
    options = {"exclude_bits": exclude, "keep_bits": keep, "include_only_bits": include, "min_coverage": min_coverage}
    with open_cube(cubes["plain"]) as cube:
        for x, y in positions:
            ra, dec = to_sky(cubes["header"], x, y)
            expected = per_slice_reference(arrays["plain"], *frame(cubes["header"]), ra, dec, **options)
            assert_matches(aperture_spectrum(cube, ra, dec, **options), expected, f"{(x, y)} {options}")


@pytest.mark.parametrize("number", range(len(COMBINATIONS)))
def test_aperture_equals_per_slice_reference(cubes, arrays, number):
    """Every selection at the positions where masks, NaN and edges meet the aperture."""
    min_coverage = MIN_COVERAGE[number % len(MIN_COVERAGE)]
    compare_with_reference(cubes, arrays, SWEEP_POSITIONS, *COMBINATIONS[number], min_coverage)


@pytest.mark.parametrize("selection", [("ALL_NONZERO", None, None), (None, "BADCAL", None), (0, None, "ALL_NONZERO")])
def test_aperture_equals_per_slice_reference_everywhere(cubes, arrays, selection):
    compare_with_reference(cubes, arrays, POSITIONS, *selection, 0.2)


@pytest.mark.parametrize("radius", [1.0, 6.0])
def test_aperture_radii_and_compressed_cube(cubes, arrays, radius):
    with open_cube(cubes["compressed"]) as cube:
        assert cube.hdul is not None  # read tile by tile
        for x, y in POSITIONS[:9]:
            ra, dec = to_sky(cubes["header"], x, y)
            expected = per_slice_reference(arrays["compressed"], *frame(cubes["header"]), ra, dec, radius=radius)
            assert_matches(aperture_spectrum(cube, ra, dec, radius=radius), expected, f"{(x, y)} r={radius}")


def test_aperture_equals_section6_module(cubes):
    """tests/section6.py, an independent vectorised reading of section 6 (default selection)."""
    sky = [to_sky(cubes["header"], x, y) for x, y in POSITIONS[:11:2]]
    for path in (cubes["compressed"],):
        with open_cube(path) as cube:
            results = aperture_spectra(cube, [s[0] for s in sky], [s[1] for s in sky])
            for (ra, dec), result in zip(sky, results):
                expected = extract_spectrum(path, ra, dec)
                np.testing.assert_allclose(cube.wave, expected["wave"], rtol=0, atol=1e-4)
                for name in ("spectrum", "error", "apcor"):
                    scale = np.abs(np.nan_to_num(expected[name])).max()  # near-zero sums: absolute precision
                    np.testing.assert_allclose(getattr(result, name), expected[name], rtol=1e-6, atol=2e-6 * scale,
                                               equal_nan=True)


def test_off_cube_is_none(cubes):
    header = cubes["header"]
    with open_cube(cubes["plain"]) as cube:
        far_side = SkyCoord(RA_CEN + 180, -DEC_CEN, unit="deg")
        assert aperture_spectrum(cube, far_side.ra.deg, far_side.dec.deg) is None
        for x, y in [(-7.05, 50.0), (110.05, 50.0), (50.0, -7.05), (50.0, 110.05), (300.0, 300.0)]:
            assert aperture_spectrum(cube, *to_sky(header, x, y)) is None
        assert aperture_spectrum(cube, *to_sky(header, -1.05, 50.0), radius=0.5) is None  # r = 1 pixel
        assert aperture_spectrum(cube, *to_sky(header, -0.95, 50.0), radius=0.5) is not None
        with pytest.raises(ValueError, match="radius"):
            aperture_spectrum(cube, RA_CEN, DEC_CEN, radius=0)


def test_flux_recovery(cubes):
    """The injected source comes back within the noise: chi ~ N(0, 1), the line flux within 4 sigma."""
    with open_cube(cubes["clean"]) as cube:
        result = aperture_spectrum(cube, *to_sky(cubes["header"], *SOURCE_PIX))
    truth = source_spectrum()
    assert np.isnan(result.spectrum[(WAVE >= 3534) & (WAVE <= 3556)]).all()  # BADCAL planes
    used = result.apcor == 1  # planes without a masked voxel in the aperture
    assert used.sum() > N_WAVE - 40
    chi = ((result.spectrum - truth) / result.error)[used]
    assert abs(chi.mean()) < 0.15 and 0.9 < chi.std() < 1.1 and np.abs(chi).max() < 5
    # ERROR 0.1 (within the +-5% spaxel spread) through the exact weights, per 2 A bin -> per A
    weights = CircularAperture(SOURCE_PIX, 7.0).to_mask(method="exact").data
    assert np.median(result.error[used]) == pytest.approx(0.1 * np.sqrt((weights**2).sum()) / 2, rel=0.01)
    line = np.abs(WAVE - LINE_WAVE) <= 5 * LINE_SIGMA
    assert used[line].all()
    measured = 2.0 * (result.spectrum - CONTINUUM)[line].sum()  # per A x 2 A bins
    assert abs(measured - LINE_FLUX) < 4 * 2.0 * np.sqrt((result.error[line] ** 2).sum())


# ---------------------------------------------------------------- opening, bits


def test_open_reads_compressed_and_plain_alike(cubes, arrays):
    with open_cube(cubes["compressed"]) as packed, open_cube(cubes["decompressed"]) as plain:
        assert plain.hdul is None and isinstance(plain.data, np.memmap)  # the fast path
        assert packed.shape == plain.shape == (N_WAVE, NPIX, NPIX)
        np.testing.assert_array_equal(packed.wave, WAVE)
        np.testing.assert_array_equal(plain.wave, WAVE)
        assert packed.spec_bw == plain.spec_bw == 2.0
        assert packed.pixel_scale_arcsec == pytest.approx(0.5, rel=1e-12)
        window = (slice(100, 300), slice(3, 40), slice(60, 104))
        for got_packed, got_plain, full in zip(packed.read(*window), plain.read(*window), arrays["compressed"]):
            assert got_packed.dtype == got_plain.dtype == full.dtype
            np.testing.assert_array_equal(got_packed, full[window])
            np.testing.assert_array_equal(got_plain, full[window])
        assert plain.read()[2].max() == arrays["compressed"][2].max() >= MASK_BITS["BADDET"]
        loaded = packed.load()
        for got, full in zip(loaded.read(), arrays["compressed"]):
            np.testing.assert_array_equal(got, full)


def test_cube_path():
    assert cube_path("/d", 20190405020, 34).as_posix() == "/d/datacubes/20190405020/dex_cube_20190405020_034.fits"
    assert cube_path("/d", 20190405020, "34") == cube_path("/d", 20190405020, "034")


def test_bit_selection_for_every_mask_value():
    """Every 14-bit MASK value under every selection, against the rule applied value by value."""
    masks = np.arange(ALL_BITS + 1, dtype=np.uint16)
    for exclude, keep, include in COMBINATIONS:
        e, k, i = map(reference_bits, (exclude, keep, include))
        expected = []
        for m in range(ALL_BITS + 1):
            if i == "ALL_NONZERO":
                expected.append(m != 0)
            elif i:
                expected.append(bool(m & i))
            elif k == "ALL_NONZERO":
                expected.append(True)
            else:
                base = m == 0 if e == "ALL_NONZERO" else not (m & (e or 0))
                expected.append(base or bool(m & (k or 0)))
        got = good_voxels(masks, exclude_bits=exclude, keep_bits=keep, include_only_bits=include)
        np.testing.assert_array_equal(got, expected, err_msg=str((exclude, keep, include)))
    # a keep bit re-admits a voxel that also carries excluded bits
    assert good_voxels(np.array([2048 | 16], np.uint16), keep_bits="BADCAL")[0]


def test_bit_arguments():
    assert bit_value(None) == 0 and bit_value([]) == 0
    assert bit_value("all_nonzero") == "ALL_NONZERO"
    assert bit_value(["badcal", "BadAmp"]) == 2048 | 16
    assert bit_value("BADDET") == bit_value(8192) == bit_value(np.int64(8192)) == 8192
    assert bit_value(ALL_BITS) == sum(MASK_BITS.values())
    for bad, error in [("BADX", ValueError), (["MAIN", "NOPE"], ValueError), (16384, ValueError), (-1, ValueError),
                       (True, TypeError), (2.0, TypeError), ([["MAIN"]], TypeError)]:
        with pytest.raises(error, match="keep_bits"):
            bit_value(bad, "keep_bits")
    with pytest.raises(ValueError, match="unknown MASK bit name 'NOPE'"):
        good_voxels(np.zeros(3, np.uint16), exclude_bits="NOPE")


# ---------------------------------------------------------------- maps and cutouts


def planes_in(low: float, high: float) -> np.ndarray:
    return np.flatnonzero((WAVE >= low) & (WAVE < high))


def direct_sums(arrays, planes, **selection):
    """Per-spaxel sum of usable DATA and count of usable planes, plane by plane."""
    data, error, mask = arrays
    total, count = np.zeros((NPIX, NPIX)), np.zeros((NPIX, NPIX), int)
    names = ("exclude_bits", "keep_bits", "include_only_bits")
    exclude, keep, include = (reference_bits(selection.get(n)) for n in names)
    if "exclude_bits" not in selection:
        exclude = "ALL_NONZERO"
    for k in planes:
        usable = reference_good(mask[k], exclude, keep, include) & (error[k] != 0) & ~np.isnan(data[k])
        total += np.where(usable, data[k], 0.0)
        count += usable
    return total, count


@pytest.mark.parametrize("selection", [{}, {"keep_bits": "BADCAL"}, {"exclude_bits": None}])
def test_maps_equal_direct_sums(cubes, arrays, selection):
    wave, width, gap, side = 4800.0, 10.0, 10.0, 50.0
    band = planes_in(wave - 5, wave + 5)
    assert len(band) == 5
    blue, red = planes_in(wave - 5 - gap - side, wave - 5 - gap), planes_in(wave + 5 + gap, wave + 5 + gap + side)
    assert len(blue) == len(red) == 25
    with open_cube(cubes["plain"]) as cube:
        narrow = narrowband_map(cube, wave, width, **selection)
        continuum = continuum_map(cube, wave, width, gap, side, **selection)
        line = line_map(cube, wave, width, gap, side, **selection)
    total, count = direct_sums(arrays["plain"], band, **selection)
    with np.errstate(invalid="ignore", divide="ignore"):
        expected_narrow = np.where(count > 0, total * len(band) / count, np.nan)
        c_total, c_count = (a + b for a, b in zip(direct_sums(arrays["plain"], blue, **selection),
                                                  direct_sums(arrays["plain"], red, **selection)))
        expected_continuum = np.where(c_count > 0, c_total / c_count / 2.0, np.nan)
    np.testing.assert_allclose(narrow.image, expected_narrow, rtol=1e-6, atol=1e-6, equal_nan=True)
    np.testing.assert_allclose(continuum.image, expected_continuum, rtol=1e-6, atol=1e-7, equal_nan=True)
    np.testing.assert_allclose(line.image, expected_narrow - expected_continuum * 10.0, rtol=1e-5, atol=1e-5,
                               equal_nan=True)
    assert narrow.unit == "1e-17 erg s-1 cm-2" and continuum.unit.endswith("Angstrom-1")
    assert np.isnan(narrow.image[0, 0]) and np.isnan(continuum.image[0, 0])  # uncovered corner


def test_line_map_finds_the_source_and_its_flux(cubes):
    with open_cube(cubes["clean"]) as cube:
        image = line_map(cube, LINE_WAVE, width=40.0).image
        wcs = line_map(cube, LINE_WAVE).wcs
    y, x = np.unravel_index(np.nanargmax(image), image.shape)
    assert abs(x - SOURCE_PIX[0]) <= 1 and abs(y - SOURCE_PIX[1]) <= 1
    yy, xx = np.mgrid[:NPIX, :NPIX]
    inside = np.hypot(xx - SOURCE_PIX[0], yy - SOURCE_PIX[1]) < 12  # 6": all of a 1.7" FWHM source
    assert np.nansum(image[inside]) == pytest.approx(LINE_FLUX, rel=0.1)
    assert wcs.naxis == 2 and wcs.wcs.ctype[0] == "RA---TAN"


def test_map_and_cutout_wcs(cubes, arrays):
    header = cubes["header"]
    reference = WCS(header).celestial
    with open_cube(cubes["compressed"]) as cube:
        image = narrowband_map(cube, observed_wave(2.9486, 1215.67), 20.0)
        pixels = np.array([[0, 0], [103, 0], [17.5, 88.25], [51.5, 51.5]])
        np.testing.assert_allclose(image.wcs.pixel_to_world_values(pixels[:, 0], pixels[:, 1]),
                                   reference.pixel_to_world_values(pixels[:, 0], pixels[:, 1]), rtol=0, atol=1e-12)
        ra, dec = to_sky(header, 70.2, 20.7)
        small = cutout(cube, ra, dec, size=9.0, wave_range=(4000.0, 4200.0))
        # spaxel centres within 4.5" (9 pixels) of x = 70.2, y = 20.7: x 62..79, y 12..29
        assert small.shape == (100, 18, 18)
        np.testing.assert_array_equal(small.wave, WAVE[265:365])
        for got, full in zip(small.read(), arrays["compressed"]):
            np.testing.assert_array_equal(got, full[265:365, 12:30, 62:80])
        i, j, k = np.array([0, 17, 5.5]), np.array([0, 17, 3.25]), np.array([0, 99, 42])
        got = small.wcs.pixel_to_world_values(i, j, k)
        expected = WCS(header).pixel_to_world_values(i + 62, j + 12, k + 265)
        for a, b in zip(got, expected):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
        # an aperture inside the cutout gives the parent's spectrum over the cutout's planes
        inner = aperture_spectrum(small, ra, dec, radius=2.0)
        outer = aperture_spectrum(cube, ra, dec, radius=2.0)
        for a, b in zip(inner, outer):
            np.testing.assert_allclose(a, b[265:365], rtol=1e-6, atol=1e-6, equal_nan=True)
        edge = cutout(cube, *to_sky(header, 1.2, 50.3), size=10.0)
        assert edge.shape == (N_WAVE, 20, 12)  # x 0..11 (clipped at the edge), y 41..60
        assert cutout(cube, *to_sky(header, -30.0, 50.0), size=10.0) is None
        with pytest.raises(ValueError, match="wave_range"):
            cutout(cube, ra, dec, wave_range=(6000.0, 6100.0))
        with pytest.raises(ValueError, match="narrow band"):
            narrowband_map(cube, 3000.0)
        with pytest.raises(ValueError, match="no continuum planes"):
            continuum_map(cube, 3000.0)


def test_rgb_composite(cubes):
    waves = (5000.0, 4800.0, 4000.0)
    with open_cube(cubes["plain"]) as cube:
        rgb = rgb_composite(cube, waves, width=30.0, percentiles=(5.0, 95.0))
        channels = [narrowband_map(cube, w, 30.0).image.astype(float) for w in waves]
    assert rgb.image.shape == (NPIX, NPIX, 3) and rgb.image.dtype == np.float32
    for c, channel in enumerate(channels):
        low, high = np.percentile(channel[np.isfinite(channel)], [5.0, 95.0])
        expected = np.nan_to_num(np.clip((channel - low) / (high - low), 0, 1), nan=0.0)
        np.testing.assert_allclose(rgb.image[..., c], expected, rtol=1e-6, atol=1e-6)
    assert rgb.image.min() == 0.0 and rgb.image.max() == 1.0


# ---------------------------------------------------------------- broken files


def test_missing_truncated_and_corrupt_cubes(cubes, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.fits"):
        open_cube(tmp_path / "nope.fits")
    raw = cubes["compressed"].read_bytes()
    with fits.open(cubes["compressed"]) as layout:
        mask_header_at = layout.fileinfo(3)["hdrLoc"]
    cases = {
        "headless.fits": (raw[:1000], "not a readable FITS file"),
        "two_hdus.fits": (raw[: mask_header_at + 100], "no MASK image"),
        "short_heap.fits": (raw[:-50_000], "truncated"),
        "short_padding.fits": (raw[:-2880], "truncated"),
        "page.fits": (b"<html><body>404</body></html>", "not a readable FITS file"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(CubeError, match=message) as caught:
            open_cube(path)
        assert str(path) in str(caught.value)
    # damaged compressed tiles show when they are read
    damaged = bytearray(raw)
    with fits.open(cubes["compressed"]) as hdul:
        start = hdul.fileinfo(1)["datLoc"]
    damaged[start + 4_000_000 : start + 4_000_400] = b"\xff" * 400
    path = tmp_path / "damaged.fits"
    path.write_bytes(bytes(damaged))
    with open_cube(path) as cube, pytest.raises(CubeError, match="corrupt") as caught:
        cube.load()
    assert str(path) in str(caught.value)
