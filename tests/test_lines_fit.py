"""Gaussian line fits over many spectra (dexdb.lines.fit) and the line table (dexdb.lines.table): fits of
synthetic spectra with known lines and noise recover flux, centre and width within their errors; the
batched fit agrees with the plain per-line fit of dexdb.lines.reference (scipy least_squares)."""

from __future__ import annotations

import numpy as np
import pytest

from dexdb import constants
from dexdb.lines import fit as linefit
from dexdb.lines import reference
from dexdb.lines.table import LineTableError, line_table, read_line_table, rest_wave, stellar_absorption_lines
from dexdb.mock import spectra as mock_spectra

X = constants.WAVE.astype(np.float64)


def synthetic(rng, n, sigma_range, sn_range, noise=1.0):
    """n spectra, each one Gaussian line of known flux at a random centre on a sloped continuum with
    Gaussian noise of a known, wavelength-dependent error; flux set from the target S/N."""
    centre = rng.uniform(3600, 5400, n)
    sigma = rng.uniform(*sigma_range, n)
    err = noise * (1.0 + 0.5 * rng.random((n, 1)) + 0.3 * (X - 3470) / 2070)
    flux = rng.uniform(*sn_range, n) * noise * np.sqrt(2 * np.sqrt(np.pi) * sigma * 2.0) * 1.3
    continuum = rng.uniform(-0.5, 3.0, (n, 1)) + rng.uniform(-1e-4, 1e-4, (n, 1)) * (X - 4500)
    lines = linefit.gaussian(X, flux[:, None], centre[:, None], sigma[:, None])
    spec = lines + continuum + err * rng.standard_normal((n, X.size))
    return spec, err, centre, sigma, flux


@pytest.fixture(scope="module")
def narrow():
    rng = np.random.default_rng(11)
    spec, err, centre, sigma, flux = synthetic(rng, 1500, (1.2, 6.0), (8, 40))
    guess = centre + rng.uniform(-4, 4, centre.size)
    fits = linefit.fit_lines(spec, err, np.arange(centre.size), guess, 9.0)
    return spec, err, centre, sigma, flux, guess, fits


def pulls(fitted, error, truth):
    pull = (fitted - truth) / error
    return float(np.mean(pull)), float(np.std(pull))


def test_fits_recover_flux_centre_and_width_within_their_errors(narrow):
    _, _, centre, sigma, flux, _, fits = narrow
    for fitted, error, truth in ((fits.flux, fits.flux_err, flux), (fits.wave, fits.wave_err, centre),
                                 (fits.sigma, fits.sigma_err, sigma)):
        mean, std = pulls(fitted, error, truth)
        assert abs(mean) < 0.1 and 0.85 < std < 1.15, (mean, std)
    assert np.all(np.abs(fits.flux - flux) < 5 * fits.flux_err)


def test_broad_lines_recovered_within_their_errors():
    rng = np.random.default_rng(12)
    spec, err, centre, _, flux = synthetic(rng, 400, (10.0, 35.0), (15, 40))
    fits = linefit.fit_lines(spec, err, np.arange(centre.size), centre + rng.uniform(-10, 10, centre.size), 16.0)
    for fitted, error, truth in ((fits.flux, fits.flux_err, flux), (fits.wave, fits.wave_err, centre)):
        mean, std = pulls(fitted, error, truth)
        assert abs(mean) < 0.15 and 0.8 < std < 1.2, (mean, std)


def test_noiseless_line_is_fitted_exactly_and_unusable_pixels_are_ignored():
    spec = linefit.gaussian(X, 120.0, 4321.3, 2.7) + 0.5
    err = np.full(X.size, 0.2)
    spec[[300, 420, 426]] = [np.nan, 1e6, -1e6]  # 420 and 426 (the peak) in the fit's window
    err[[420, 426]] = [0.0, np.inf]
    fits = linefit.fit_lines(spec[None], err[None], [0], [4318.0], [6.0])
    np.testing.assert_allclose([fits.flux[0], fits.wave[0], fits.sigma[0], fits.continuum[0]],
                               [120.0, 4321.3, 2.7, 0.5], rtol=1e-7)


def test_centre_is_kept_within_the_tolerance():
    spec = linefit.gaussian(X, 200.0, 4400.0, 3.0)[None] + 1.0
    fits = linefit.fit_lines(spec, np.full_like(spec, 0.3), [0], [4420.0], [5.0])
    assert 4415.0 <= fits.wave[0] <= 4425.0


def test_coarse_map_equals_plain_least_squares(narrow):
    spec, err, _, _, _, guess, _ = narrow
    coarse = linefit.coarse_map(spec[:25], err[:25])
    sn, centre, sigma = linefit.coarse_starts(coarse, np.arange(25), guess[:25], np.full(25, 9.0))
    for i in range(25):
        ref_sn, ref_centre, ref_sigma = reference.coarse_start(spec[i], err[i], guess[i], 9.0)
        assert sn[i] == pytest.approx(ref_sn, rel=1e-4)
        assert (centre[i], sigma[i]) == (ref_centre, ref_sigma)


def test_batched_fit_equals_scipy_least_squares(narrow):
    spec, err, _, _, _, guess, fits = narrow
    for i in range(0, 1500, 50):
        ref = reference.fit_line(spec[i], err[i], guess[i], 9.0)
        for name in ("flux", "wave", "sigma", "continuum"):
            assert abs(getattr(fits, name)[i] - ref[name]) < 0.02 * ref[f"{name}_err"], (i, name)
            assert getattr(fits, f"{name}_err")[i] == pytest.approx(ref[f"{name}_err"], rel=0.02)


def test_gate_leaves_weak_fits_unrefined():
    rng = np.random.default_rng(5)
    spec = rng.standard_normal((200, X.size))
    err = np.ones_like(spec)
    expected = rng.uniform(3600, 5400, 200)
    fits = linefit.fit_lines(spec, err, np.arange(200), expected, 8.0, min_coarse_sn=3.0)
    coarse_sn, _, _ = linefit.coarse_starts(linefit.coarse_map(spec, err), np.arange(200), expected, np.full(200, 8.0))
    refined = np.isfinite(fits.flux)
    assert np.array_equal(refined, coarse_sn >= 3.0) and 0 < refined.sum() < 100
    assert np.all(fits.sn[refined] < coarse_sn[refined])


def test_line_table_is_the_home_of_the_mock_wavelengths():
    table = line_table()
    assert constants.LYA == table.rest_wave[table.index("Lya")] == 1215.67
    assert constants.OII == rest_wave("[OII]") == 3727.8
    assert mock_spectra.LINES[mock_spectra.AGN][1][0] == constants.NV == rest_wave("NV")
    assert mock_spectra.STAR_ABSORPTION == stellar_absorption_lines() == (3933.66, 3968.47, 3970.07, 4101.74,
                                                                          4340.47, 4861.33)
    assert list(table.rest_wave) == sorted(table.rest_wave) and len(set(table.names)) == len(table)
    with pytest.raises(KeyError, match="not in the line table"):
        rest_wave("Halpha")


@pytest.mark.parametrize(("row", "message"), [
    ("Lya,Lyα,-1215.67,vacuum,1.0,true,true,false,", "row 2, column rest_wave: must be a positive number"),
    ("Lya,Lyα,1215.67,vacuum,1.0,true,yes,false,", "row 2, column classify: must be true or false"),
    ("Lya,Lyα,1215.67,glass,1.0,true,true,false,", "row 2, column medium: must be one of vacuum, air"),
    ("Lya,Lyα,1215.67,vacuum,1.0,true,true,false", "row 2: expected 9 fields"),
])  # fmt: skip
def test_malformed_line_table_names_file_row_and_column(tmp_path, row, message):
    path = tmp_path / "lines.csv"
    path.write_text("name,label,rest_wave,medium,weight,broad,classify,stellar_absorption,note\n" + row + "\n")
    with pytest.raises(LineTableError, match=f"{path}: {message}"):
        read_line_table(path)
