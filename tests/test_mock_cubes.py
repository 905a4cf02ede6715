"""Mock IFU datacubes against data model section 5; flux recovery with the section 6 extraction."""

from __future__ import annotations

import warnings

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales
from section6 import extract_spectrum

from dexdb.constants import N_WAVE, WAVE
from dexdb.mock.cubes import (
    cube_header,
    cube_wcs_header,
    decompress_cube,
    footprint_corners,
    write_cube,
)

VERIFIED_PA = 68.823284
RA_CEN, DEC_CEN = 195.21875, 51.40625
NPIX = 104
BADAMP, METEOR, BADFIB, SAT, BADCAL, PIXMASK, BADDET = 16, 64, 512, 1024, 2048, 4096, 8192

# Section 5.2, in the order of the real header.
WCS_KEYS = [
    "WCSAXES", "CRPIX1", "CRPIX2", "CRPIX3", "PC1_1", "PC1_2", "PC2_1", "PC2_2",
    "CDELT1", "CDELT2", "CDELT3", "CUNIT1", "CUNIT2", "CUNIT3", "CTYPE1", "CTYPE2", "CTYPE3",
    "CRVAL1", "CRVAL2", "CRVAL3", "LONPOLE", "LATPOLE", "MJDREF", "RADESYS",
]  # fmt: skip
NON_WCS_KEYS = [
    "FILETIME", "SURVEY", "MASK", "CONVOLVE", "INTERP", "FFSKY", "FFSKYRC",
    "SHOTID", "FIELD", "OBJID", "DATE", "OBSID", "RA", "DEC", "PA", "N_IFU", "FWHM", "FWHM_ERR",
    "RESPONSE", "RELFLUX1", "RELFLUX2", "RELFLUX3", "AMBTEMP", "DATEVOBS", "DEWPOINT",
    "EXPNUM1", "EXPNUM2", "EXPNUM3", "EXPTIME1", "EXPTIME2", "EXPTIME3", "HUMIDITY",
    "MJD1", "MJD2", "MJD3", "OBSIND", "PRESSURE", "STRUCTAZ", "TIME", "TRAJCDEC", "TRAJCPA",
    "TRAJCRA",
]  # fmt: skip
HISTORY_TEXT = "BUNIT updated: flux per pixel (removed arcsec^-2)."
STRUCTURAL_KEYS = {"XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "PCOUNT", "GCOUNT"}


def make_shot(**overrides) -> dict:
    shot = {
        "shotid": 20190405020, "field": "dex-spring", "objid": "DEXsp6210", "date": 20190405,
        "obsid": 20, "ra": 195.1234567, "dec": 51.3456789, "pa": VERIFIED_PA, "n_ifu": 71,
        "fwhm_virus": 1.6, "fwhm_virus_err": 0.08, "response_4540": 0.125,
        "relflux_virus": np.array([1.0, 0.985, 1.012]), "ambtemp": 11.5,
        "datevobs": "20190405v020", "dewpoint": -4.25, "expnum": np.array([1, 2, 3]),
        "exptime": [367.4, 367.3, 367.5], "humidity": 31.5, "mjd": [58578.21, 58578.216, 58578.222],
        "obsind": 1, "pressure": 801.25, "structaz": 55.5, "time": "0541459",
        "trajcdec": 51.345, "trajcpa": 68.75, "trajcra": 195.123,
    }  # fmt: skip
    shot.update(overrides)
    return shot


def header_keys(header: fits.Header) -> list[str]:
    return [key for key in header.keys() if key != "HISTORY"]


def native(dtype: np.dtype) -> np.dtype:
    """FITS arrays read back big-endian; compare types irrespective of byte order."""
    return np.dtype(dtype).newbyteorder("=")


def pixel_to_radec(header: fits.Header, x: float, y: float) -> tuple[float, float]:
    sky = WCS(header).celestial.pixel_to_world(x, y)
    return float(sky.ra.deg), float(sky.dec.deg)


# Rejected detections of the flagged cube: (x, y, plane) in 0-based pixels; the second sits in a
# corner of the cube so its box is clipped to 4 x 4 x 3 voxels.
BADDET_PIXELS = [(60, 40, 500), (1, 102, 1035)]
FLAGS = {"flag_badamp": 0.75, "flag_badfib": 0.9, "flag_meteor": 0.92, "flag_satellite": 0.95}

# Point source of the clean cube: flat continuum plus a Gaussian emission line.
LINE_WAVE, LINE_SIGMA, LINE_FLUX, CONTINUUM = 4800.0, 4.0, 400.0, 3.0
SOURCE_OFFSET_PIX = (6.3, -4.7)  # (x, y) from the IFU centre


def flagged_cube_arguments(wcs_header: fits.Header) -> dict:
    rejected = [
        (*pixel_to_radec(wcs_header, x, y), 3470.0 + 2 * k + 0.4) for x, y, k in BADDET_PIXELS
    ]
    return {
        "sources_radec": np.empty((0, 2)), "sources_flux": np.empty((0, N_WAVE), np.float32),
        "noise_per_bin": np.full(N_WAVE, 0.1, np.float32), "flags": FLAGS,
        "rejected_detections": np.array(rejected), "rng": np.random.default_rng(11),
    }  # fmt: skip


def clean_noise() -> np.ndarray:
    """Per-spaxel ERROR falling from 0.12 at the blue end to 0.04 at the red end."""
    return (0.08 * (1.5 - (WAVE - WAVE[0]) / (WAVE[-1] - WAVE[0]))).astype(np.float32)


def source_spectrum() -> np.ndarray:
    line = LINE_FLUX / (LINE_SIGMA * np.sqrt(2 * np.pi))
    line *= np.exp(-0.5 * ((WAVE - LINE_WAVE) / LINE_SIGMA) ** 2)
    return (CONTINUUM + line).astype(np.float32)


@pytest.fixture(scope="module")
def cubes(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cubes")
    shot = make_shot()
    wcs_header = cube_wcs_header(RA_CEN, DEC_CEN, shot["pa"])
    flagged = directory / "flagged.fits"
    write_cube(flagged, shot, RA_CEN, DEC_CEN, **flagged_cube_arguments(wcs_header))
    decompressed = directory / "flagged_decompressed.fits"
    decompress_cube(flagged, decompressed)

    source_radec = pixel_to_radec(wcs_header, *(51.5 + np.array(SOURCE_OFFSET_PIX)))
    clean_kwargs = dict(
        sources_radec=np.array([source_radec]), sources_flux=source_spectrum()[None, :],
        flags={name: 1.0 for name in FLAGS}, rejected_detections=np.empty((0, 3)),
    )  # fmt: skip
    clean = directory / "clean.fits"
    write_cube(
        clean, shot, RA_CEN, DEC_CEN, noise_per_bin=clean_noise(), rng=np.random.default_rng(5),
        **clean_kwargs,
    )  # fmt: skip
    noiseless = directory / "noiseless.fits"
    write_cube(
        noiseless, shot, RA_CEN, DEC_CEN, noise_per_bin=np.zeros(N_WAVE, np.float32),
        rng=np.random.default_rng(6), compressed=False, **clean_kwargs,
    )  # fmt: skip
    return {
        "flagged": flagged, "decompressed": decompressed, "clean": clean, "noiseless": noiseless,
        "source_radec": source_radec, "shot": shot,
    }  # fmt: skip


@pytest.fixture(scope="module")
def flagged_arrays(cubes):
    with fits.open(cubes["flagged"]) as hdul:
        return hdul["DATA"].data, hdul["ERROR"].data, hdul["MASK"].data


# ---------------------------------------------------------------- headers


def test_wcs_header_matches_release_cards():
    header = cube_wcs_header(RA_CEN, DEC_CEN, VERIFIED_PA)
    assert list(header.keys()) == WCS_KEYS
    expected = {
        "WCSAXES": 3, "CRPIX1": 52.5, "CRPIX2": 52.5, "CRPIX3": 1.0,
        "CDELT1": -0.00013888888888889, "CDELT2": 0.00013888888888889, "CDELT3": 2.0,
        "CUNIT1": "deg", "CUNIT2": "deg", "CUNIT3": "Angstrom",
        "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CTYPE3": "WAVE",
        "CRVAL1": RA_CEN, "CRVAL2": DEC_CEN, "CRVAL3": 3470.0, "LONPOLE": 180.0,
        "LATPOLE": DEC_CEN, "MJDREF": 0.0, "RADESYS": "ICRS",
    }  # fmt: skip
    for key, value in expected.items():
        assert header[key] == value, key
    # Exactly the digits of the real header (section 5.2).
    assert header["PC1_1"] == header["PC2_2"] == -0.94190093529883
    assert header["PC1_2"] == -0.33589079785428
    assert header["PC2_1"] == 0.33589079785428
    # Quirk of the real files: the spectral comments still say metres.
    assert header.comments["CDELT3"].startswith("[m]")
    assert header.comments["CRVAL3"].startswith("[m]")


def test_wcs_header_keeps_centre_exactly():
    ra, dec = float(np.float32(195.123457)), float(np.float32(-0.0123457))
    header = cube_wcs_header(ra, dec, VERIFIED_PA)
    assert (header["CRVAL1"], header["CRVAL2"], header["LATPOLE"]) == (ra, dec, dec)


@pytest.mark.parametrize("pa", [0.0, 88.45, 178.45, 268.45, 301.7])
def test_wcs_header_rotation_for_any_pa(pa):
    header = cube_wcs_header(RA_CEN, DEC_CEN, pa)
    assert list(header.keys()) == WCS_KEYS
    rho = np.radians(360.0 - (90.0 + pa + 1.55))
    assert header["PC1_1"] == pytest.approx(np.cos(rho), abs=1e-13)
    assert header["PC1_2"] == pytest.approx(np.sin(rho), abs=1e-13)
    assert header["PC2_1"] == pytest.approx(-np.sin(rho), abs=1e-13)
    assert header["PC2_2"] == pytest.approx(np.cos(rho), abs=1e-13)


def test_wcs_round_trip():
    wcs = WCS(cube_wcs_header(RA_CEN, DEC_CEN, VERIFIED_PA))
    sky, wave = wcs.pixel_to_world(51.5, 51.5, np.arange(N_WAVE))
    assert np.allclose(sky.ra.deg, RA_CEN, rtol=0, atol=1e-10)
    assert np.allclose(sky.dec.deg, DEC_CEN, rtol=0, atol=1e-10)
    assert np.allclose(wave.to_value(u.AA), 3470.0 + 2.0 * np.arange(N_WAVE), rtol=0, atol=1e-6)
    assert np.array_equal(WAVE, (3470.0 + 2.0 * np.arange(N_WAVE)).astype(np.float32))
    scales = proj_plane_pixel_scales(wcs.celestial) * 3600
    assert np.allclose(scales, 0.5)


@pytest.mark.parametrize("extname", ["DATA", "ERROR", "MASK"])
def test_cube_header_cards(extname):
    shot = make_shot()
    header = cube_header(shot, RA_CEN, DEC_CEN, extname)
    tail = ["SPECBW", "EXTNAME"] if extname == "MASK" else ["BUNIT", "SPECBW", "EXTNAME"]
    assert header_keys(header) == WCS_KEYS + NON_WCS_KEYS + tail
    assert list(header["HISTORY"]) == [HISTORY_TEXT]
    assert list(header.keys())[-1] == "HISTORY"
    fixed = {
        "SURVEY": "hdr5", "MASK": "True", "CONVOLVE": "False", "INTERP": "linear",
        "FFSKY": "False", "FFSKYRC": "False", "SPECBW": 2.0, "EXTNAME": extname,
    }  # fmt: skip
    for key, value in fixed.items():
        assert header[key] == value, key
    assert header["FILETIME"].startswith("2025-08-21")
    if extname != "MASK":
        assert header["BUNIT"] == "1e-17 erg s^-1 cm^-2"
    survey = {
        "SHOTID": 20190405020, "FIELD": "dex-spring", "OBJID": "DEXsp6210", "DATE": 20190405,
        "OBSID": 20, "RA": 195.1234567, "DEC": 51.3456789, "PA": VERIFIED_PA, "N_IFU": 71,
        "FWHM": 1.6, "FWHM_ERR": 0.08, "RESPONSE": 0.125, "RELFLUX1": 1.0, "RELFLUX2": 0.985,
        "RELFLUX3": 1.012, "AMBTEMP": 11.5, "DATEVOBS": "20190405v020", "DEWPOINT": -4.25,
        "EXPNUM1": 1, "EXPNUM2": 2, "EXPNUM3": 3, "EXPTIME1": 367.4, "EXPTIME2": 367.3,
        "EXPTIME3": 367.5, "HUMIDITY": 31.5, "MJD1": 58578.21, "MJD2": 58578.216,
        "MJD3": 58578.222, "OBSIND": 1, "PRESSURE": 801.25, "STRUCTAZ": 55.5, "TIME": "0541459",
        "TRAJCDEC": 51.345, "TRAJCPA": 68.75, "TRAJCRA": 195.123,
    }  # fmt: skip
    for key, value in survey.items():
        assert header[key] == value and type(header[key]) is type(value), key
    assert header["CRVAL1"] == RA_CEN and header["CRVAL2"] == DEC_CEN


def test_cube_header_rejects_unknown_extname():
    with pytest.raises(ValueError):
        cube_header(make_shot(), RA_CEN, DEC_CEN, "SPEC")


# ---------------------------------------------------------------- footprint


def test_footprint_corners_are_pixel_edge_corners():
    corners = footprint_corners(RA_CEN, DEC_CEN, VERIFIED_PA)
    assert corners.shape == (4, 2)
    edges = [(-0.5, -0.5), (103.5, -0.5), (103.5, 103.5), (-0.5, 103.5)]
    header = cube_wcs_header(RA_CEN, DEC_CEN, VERIFIED_PA)
    expected = [pixel_to_radec(header, x, y) for x, y in edges]
    assert np.allclose(corners, expected, rtol=0, atol=1e-11)
    centre = SkyCoord(RA_CEN, DEC_CEN, unit="deg")
    sky = SkyCoord(corners[:, 0], corners[:, 1], unit="deg")
    assert np.allclose(centre.separation(sky).arcsec, 26.0 * np.sqrt(2), atol=1e-3)
    sides = sky.separation(np.roll(sky, -1)).arcsec
    assert np.allclose(sides, 52.0, atol=1e-3)


@pytest.mark.parametrize("pa", [0.0, VERIFIED_PA, 200.0])
def test_footprint_corners_rotate_with_pa(pa):
    centre = SkyCoord(RA_CEN, DEC_CEN, unit="deg")
    corners = footprint_corners(RA_CEN, DEC_CEN, pa)
    angles = centre.position_angle(SkyCoord(corners[:, 0], corners[:, 1], unit="deg")).deg
    expected = (pa + 1.55 + 225.0 + 90.0 * np.arange(4)) % 360.0
    difference = (angles - expected + 180.0) % 360.0 - 180.0
    assert np.allclose(difference, 0.0, atol=1e-4)


# ---------------------------------------------------------------- file structure


def test_hdu_layout_and_compression(cubes):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a bad checksum only warns
        with fits.open(cubes["flagged"], checksum=True) as hdul:
            assert [hdu.name for hdu in hdul] == ["PRIMARY", "DATA", "ERROR", "MASK"]
            assert type(hdul[0]) is fits.PrimaryHDU and hdul[0].data is None
            primary_keys = ["SIMPLE", "BITPIX", "NAXIS", "EXTEND", "CHECKSUM", "DATASUM"]
            assert list(hdul[0].header.keys()) == primary_keys
            for name, dtype in (("DATA", np.float32), ("ERROR", np.float32), ("MASK", np.uint16)):
                hdu = hdul[name]
                assert isinstance(hdu, fits.CompImageHDU)
                assert hdu.data.shape == (N_WAVE, NPIX, NPIX) and native(hdu.data.dtype) == dtype
    with fits.open(cubes["flagged"], disable_image_compression=True) as raw:
        for name, zbitpix in (("DATA", -32), ("ERROR", -32), ("MASK", 16)):
            header = raw[name].header
            assert header["ZCMPTYPE"] == "RICE_1"
            assert (header["ZTILE1"], header["ZTILE2"], header["ZTILE3"]) == (32, 32, 16)
            assert header["ZBITPIX"] == zbitpix
            assert "CHECKSUM" in header and "DATASUM" in header
            assert not [key for key in header if key.startswith("PC") and "3" in key]
        assert raw["MASK"].header["BZERO"] == 32768


def test_written_headers_keep_release_cards(cubes):
    shot = cubes["shot"]
    with fits.open(cubes["flagged"]) as hdul:
        for name in ("DATA", "ERROR", "MASK"):
            written = hdul[name].header
            expected = cube_header(shot, RA_CEN, DEC_CEN, name)
            # astropy's tile compression places EXTNAME (and BSCALE/BZERO) itself.
            placed_by_astropy = STRUCTURAL_KEYS | {"EXTNAME", "BSCALE", "BZERO"}
            written_keys = [k for k in header_keys(written) if k not in placed_by_astropy]
            assert written_keys == [k for k in header_keys(expected) if k != "EXTNAME"]
            for key in header_keys(expected):
                assert written[key] == expected[key], (name, key)
            assert written["EXTNAME"] == name
            assert list(written["HISTORY"]) == [HISTORY_TEXT]
        assert "BUNIT" not in hdul["MASK"].header
        assert hdul["MASK"].header["BZERO"] == 32768 and hdul["MASK"].header["BITPIX"] == 16


def test_decompressed_variant_has_equal_content(cubes, flagged_arrays):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with fits.open(cubes["decompressed"], checksum=True) as plain:
            assert [hdu.name for hdu in plain] == ["PRIMARY", "DATA", "ERROR", "MASK"]
            assert all(type(hdu) is fits.ImageHDU for hdu in plain[1:])
            for name, array in zip(("DATA", "ERROR", "MASK"), flagged_arrays):
                assert native(plain[name].data.dtype) == native(array.dtype)
                assert np.array_equal(plain[name].data, array)
            assert plain["MASK"].header["BITPIX"] == 16 and plain["MASK"].header["BZERO"] == 32768
            with fits.open(cubes["flagged"]) as compressed:
                # Same cards in the same order; astropy places BSCALE/BZERO itself.
                scaling = {"BSCALE", "BZERO"}
                for name in ("DATA", "ERROR", "MASK"):
                    plain_keys = [k for k in header_keys(plain[name].header) if k not in scaling]
                    compressed_keys = [
                        k for k in header_keys(compressed[name].header) if k not in scaling
                    ]
                    assert plain_keys[-2:] == ["CHECKSUM", "DATASUM"]
                    assert plain_keys[:-2] == compressed_keys
            # The release headers hold 80 cards once decompressed (section 5.1).
            assert len(plain["DATA"].header) == 80
    with fits.open(cubes["decompressed"], do_not_scale_image_data=True) as raw:
        assert native(raw["MASK"].data.dtype) == np.int16


def test_decompressing_a_plain_cube_keeps_it(tmp_path, cubes, flagged_arrays):
    again = tmp_path / "again.fits"
    decompress_cube(cubes["decompressed"], again)
    with fits.open(again) as hdul:
        assert [hdu.name for hdu in hdul] == ["PRIMARY", "DATA", "ERROR", "MASK"]
        for name, array in zip(("DATA", "ERROR", "MASK"), flagged_arrays):
            assert np.array_equal(hdul[name].data, array)


# ---------------------------------------------------------------- content


def test_uncovered_spaxels_are_exact_zero(flagged_arrays):
    data, error, mask = flagged_arrays
    uncovered = (error == 0).all(axis=0)
    assert (data[:, uncovered] == 0).all()
    # Coverage is spatial: a spaxel is either empty in every plane or filled in every plane.
    assert np.array_equal((error == 0).any(axis=0), uncovered)
    ring = np.ones((NPIX, NPIX), bool)
    ring[1:-1, 1:-1] = False
    assert uncovered[ring].all()
    for y, x in ((1, 1), (1, 102), (102, 1), (102, 102), (3, 3)):  # cut corners
        assert uncovered[y, x]
    offsets = (np.arange(NPIX) - 51.5) * 0.5
    distance_l1 = np.abs(offsets[:, None]) + np.abs(offsets[None, :])
    assert not uncovered[1:-1, 1:-1][distance_l1[1:-1, 1:-1] < 40].any()
    assert 404 <= uncovered.sum() <= 800
    # MASK outside coverage repeats the nearest covered spaxel.
    assert np.array_equal(mask[:, 0, 30:70], mask[:, 1, 30:70])
    assert np.array_equal(mask[:, 30:70, -1], mask[:, 30:70, -2])


def test_error_is_noise_per_bin_within_spaxel_factor(flagged_arrays):
    _, error, _ = flagged_arrays
    covered = error[0] > 0
    ratio = error[:, covered] / 0.1
    assert ratio.min() > 0.94 and ratio.max() < 1.06
    assert np.allclose(error[:, covered], error[0, covered][None, :], rtol=1e-3)


def test_badcal_planes(flagged_arrays):
    mask = flagged_arrays[2]
    badcal = (mask & BADCAL) != 0
    expected_planes = (WAVE >= 3534) & (WAVE <= 3556)
    assert expected_planes.sum() == 12
    assert badcal[expected_planes].all()
    assert not badcal[~expected_planes].any()


def test_baddet_boxes(flagged_arrays):
    mask = flagged_arrays[2]
    expected = np.zeros(mask.shape, bool)
    for x, y, k in BADDET_PIXELS:
        expected[max(k - 2, 0) : k + 3, max(y - 2, 0) : y + 3, max(x - 2, 0) : x + 3] = True
    assert expected.sum() == 125 + 3 * 4 * 4
    assert np.array_equal((mask & BADDET) != 0, expected)


def test_fibre_flags_follow_ifu_index_fractions(flagged_arrays):
    _, error, mask = flagged_arrays
    covered = error[0] > 0
    for bit in (BADAMP, BADFIB, METEOR, SAT):
        flagged = (mask & bit) != 0
        assert np.array_equal(flagged.all(axis=0), flagged.any(axis=0)), bit  # same in every plane
    spatial = mask[0]
    badamp = (spatial & BADAMP) != 0
    halves = (slice(0, 52), slice(52, 104))
    quadrants = [(rows, cols) for rows in halves for cols in halves]
    assert badamp.sum() == 52 * 52  # round((1 - 0.75) * 4) = 1 bad amplifier
    assert sum(badamp[q].all() for q in quadrants) == 1
    for bit, flag in ((BADFIB, "flag_badfib"), (METEOR, "flag_meteor"), (SAT, "flag_satellite")):
        fraction = ((spatial & bit) != 0)[covered].mean()
        assert fraction == pytest.approx(1 - FLAGS[flag], abs=0.01), flag
    for bit in (METEOR, SAT):
        # A straight band: long across the IFU, narrow across its own direction.
        ys, xs = np.nonzero(((spatial & bit) != 0) & covered)
        spreads = np.sqrt(np.linalg.eigvalsh(np.cov(np.vstack([xs, ys])))) * 0.5  # arcsec
        assert spreads[1] > 10.0 and spreads[0] < 0.25 * spreads[1], bit
    pixmask_voxels = ((mask & PIXMASK) != 0)[:, covered].sum()
    assert 0 < pixmask_voxels < 100


def test_clean_ifu_has_only_calibration_bits(cubes):
    with fits.open(cubes["clean"]) as hdul:
        mask = hdul["MASK"].data
    assert not (mask & (BADAMP | BADFIB | METEOR | SAT | BADDET)).any()


def test_point_source_units_and_position(cubes):
    """Noise-free cube: spaxels sum to 2 A x F(lambda) and the PSF sits at the WCS position."""
    with fits.open(cubes["noiseless"]) as hdul:
        data = hdul["DATA"].data.astype(np.float64)
        wcs = WCS(hdul["DATA"].header)
    truth = source_spectrum()
    assert np.allclose(data.sum(axis=(1, 2)), 2.0 * truth, rtol=1e-5)
    image = data[N_WAVE // 2] / data[N_WAVE // 2].sum()
    yy, xx = np.mgrid[:NPIX, :NPIX]
    x_mean, y_mean = (image * xx).sum(), (image * yy).sum()
    x_src, y_src = wcs.celestial.world_to_pixel(SkyCoord(*cubes["source_radec"], unit="deg"))
    assert (x_mean, y_mean) == pytest.approx((float(x_src), float(y_src)), abs=1e-3)
    assert (x_src - 51.5, y_src - 51.5) == pytest.approx(SOURCE_OFFSET_PIX, abs=1e-6)
    # Integrating a Gaussian over 1-pixel bins adds 1/12 pixel^2 of variance.
    sigma_pix = 1.6 / (2 * np.sqrt(2 * np.log(2))) / 0.5
    assert ((image * (xx - x_mean) ** 2).sum()) == pytest.approx(sigma_pix**2 + 1 / 12, rel=1e-3)
    assert ((image * (yy - y_mean) ** 2).sum()) == pytest.approx(sigma_pix**2 + 1 / 12, rel=1e-3)


def test_aperture_extraction_recovers_injected_spectrum(cubes):
    extracted = extract_spectrum(cubes["clean"], *cubes["source_radec"])
    assert np.allclose(extracted["wave"], WAVE)
    spectrum, error, apcor = extracted["spectrum"], extracted["error"], extracted["apcor"]
    truth = source_spectrum()
    assert np.isnan(spectrum[(WAVE >= 3534) & (WAVE <= 3556)]).all()  # BADCAL planes
    unmasked = extracted["good_fraction"] == 1
    assert unmasked.sum() >= N_WAVE - 20  # BADCAL and a few random PIXMASK/MAIN voxels

    # The aperture sum itself (spectrum x apcor) is unbiased: chi ~ N(0, 1).
    chi = ((spectrum * apcor - truth) / (error * apcor))[unmasked]
    assert np.abs(chi).max() < 5.5
    assert abs(chi.mean()) < 0.15
    assert 0.9 < chi.std() < 1.1
    # Unit weights over ~pi r^2 aperture pixels, then divided by the 2 A bin width.
    expected_error = clean_noise() * np.sqrt(np.pi * 7.0**2) / 2
    assert np.median((error * apcor / expected_error)[unmasked]) == pytest.approx(1.0, abs=0.03)

    # RICE quantisation (NO_DITHER, level 16) decodes noise values within half a step of zero to
    # exactly 0.0, which section 6 counts as "no data": apcor drops by ~2.4% of the noise-dominated
    # aperture area and the section 6 spectrum comes out high by about as much.
    assert 0.96 < np.median(apcor[unmasked]) < 0.995
    chi_section6 = ((spectrum - truth) / error)[unmasked]
    assert np.abs(chi_section6).max() < 5.5
    assert np.median(spectrum[unmasked] / truth[unmasked]) == pytest.approx(1.0, abs=0.05)
    # Line flux (2 A bins): exact from the aperture sum, within the zero-decoding bias otherwise.
    line = unmasked & (np.abs(WAVE - LINE_WAVE) <= 5 * LINE_SIGMA)
    aperture_line = 2.0 * (spectrum * apcor - CONTINUUM)[line].sum()
    aperture_line_err = 2.0 * np.sqrt(((error * apcor)[line] ** 2).sum())
    assert abs(aperture_line - LINE_FLUX) < 4 * aperture_line_err
    assert 2.0 * (spectrum - CONTINUUM)[line].sum() == pytest.approx(LINE_FLUX, rel=0.05)


def test_uncompressed_write_matches_compressed_within_quantisation(
    tmp_path, cubes, flagged_arrays
):
    """Same arguments and seed: identical MASK, DATA/ERROR differing only by RICE quantisation."""
    plain = tmp_path / "flagged_plain.fits"
    wcs_header = cube_wcs_header(RA_CEN, DEC_CEN, cubes["shot"]["pa"])
    write_cube(
        plain, cubes["shot"], RA_CEN, DEC_CEN, compressed=False,
        **flagged_cube_arguments(wcs_header),
    )  # fmt: skip
    data, error, mask = flagged_arrays
    with fits.open(plain) as hdul:
        assert [type(hdu) for hdu in hdul[1:]] == [fits.ImageHDU] * 3
        assert hdul["MASK"].header["BITPIX"] == 16 and hdul["MASK"].header["BZERO"] == 32768
        assert native(hdul["DATA"].data.dtype) == np.float32
        assert hdul["MASK"].data.dtype == np.uint16
        assert np.array_equal(hdul["MASK"].data, mask)
        assert np.array_equal(hdul["ERROR"].data == 0, error == 0)
        # Quantisation steps are ~1/16 of each tile's noise: ERROR (0.1 x spaxel factor) keeps
        # ~0.1% except in the small mostly uncovered edge tiles; DATA keeps half a step of sigma.
        error_change = np.abs(hdul["ERROR"].data - error)
        assert np.median(error_change[error > 0]) < 1e-4 and error_change.max() < 0.0025
        assert np.abs(hdul["DATA"].data - data).max() < 0.1 / 16
