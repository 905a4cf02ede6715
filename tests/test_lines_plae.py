"""P(LAE)/P(OII) after Leung et al. 2017 (dexdb.lines.plae): the limiting cases the method implies, the
ratio against a straightforward computation (numerical integrals of the Schechter functions, astropy
comoving volumes of narrow wavelength bins), and the synthetic g photometry against speclite."""

from __future__ import annotations

import numpy as np
import pytest
import speclite.filters
from astropy.cosmology import FlatLambdaCDM
from scipy import integrate

from dexdb.constants import WAVE
from dexdb.lines import plae

X = WAVE.astype(np.float64)


def schechter_integral(alpha, low, high):
    """The integral of x**alpha exp(-x) from low to high, numerically."""
    return integrate.quad(lambda x: x**alpha * np.exp(-x), low, high, epsabs=0, epsrel=1e-10)[0]


def lae_parameters(z):
    """Ciardullo et al. 2012 at z = 2.063 and 3.104, linear in z: L*, phi*, w0."""
    t = (z - 2.063) / (3.104 - 2.063)
    return 10 ** (42.33 + t * (42.76 - 42.33)), 10 ** (-2.86 + t * (-3.17 + 2.86)), 50.0 + t * (64.0 - 50.0)


def oii_parameters(z):
    """Ciardullo et al. 2013 Table 1 (first segment below z = 0.2625, last above 0.3875): L*, phi*, w0."""
    nodes = np.array([0.1, 0.2625, 0.3875, 0.505])
    segment = min(max(int(np.searchsorted(nodes, z)) - 1, 0), 2)
    t = (z - nodes[segment]) / (nodes[segment + 1] - nodes[segment])

    def at(values):
        return values[segment] + t * (values[segment + 1] - values[segment])

    lstar = 10 ** at([41.07, 41.29, 41.50, 41.68])
    phistar = 10 ** at([-2.30, -2.12, -2.07, -2.07]) / schechter_integral(-1.2, 10**40.5 / lstar, np.inf)
    return lstar, phistar, at([8.0, 11.5, 16.6, 21.5])


def straightforward_ratio(wave, flux, ew_obs, bin_half_width=0.5):
    """Leung et al.'s ratio written out: for each kind, the number density of objects whose luminosity
    is within 5% of the measured one (a Schechter integral done numerically) times the comoving volume
    of the redshift slice of a narrow bin of observed wavelength, times the EW likelihood."""
    cosmology = FlatLambdaCDM(H0=70, Om0=0.3, Tcmb0=0)
    terms = []
    for rest, alpha, parameters in ((1215.67, -1.65, lae_parameters), (3727.8, -1.2, oii_parameters)):
        z = wave / rest - 1
        lstar, phistar, w0 = parameters(z)
        x = 4 * np.pi * cosmology.luminosity_distance(z).to_value("cm") ** 2 * flux * 1e-17 / lstar
        number = phistar * schechter_integral(alpha, 0.95 * x, 1.05 * x)
        z_lo, z_hi = (wave - bin_half_width) / rest - 1, (wave + bin_half_width) / rest - 1
        volume = (cosmology.comoving_volume(z_hi) - cosmology.comoving_volume(z_lo)).to_value("Mpc3")
        ew_rest = ew_obs / (1 + z)
        terms.append(number * volume * (np.exp(-0.95 * ew_rest / w0) - np.exp(-1.05 * ew_rest / w0)))
    return terms[0] / terms[1]


@pytest.mark.parametrize(("wave", "flux", "ew_obs"), [
    (3900.0, 12.0, 40.0), (4300.0, 30.0, 80.0), (4700.0, 8.0, 25.0), (5100.0, 60.0, 150.0), (5500.0, 15.0, 60.0),
])  # fmt: skip
def test_ratio_equals_a_straightforward_computation(wave, flux, ew_obs):
    assert plae.plae_poii(wave, flux, ew_obs) == pytest.approx(straightforward_ratio(wave, flux, ew_obs), rel=1e-4)


def test_large_equivalent_width_means_lae_small_means_oii():
    # From 4000 Angstrom: bluer, [O II] would be at z < 0.07, a volume too small to be likely either way.
    wave = np.linspace(4000, 5500, 16)
    large = plae.plae_poii(wave, 20.0, 400.0)
    small = plae.plae_poii(wave, 20.0, 5.0)
    assert np.all(large > 10) and np.all(small < 0.1)
    ratios = plae.plae_poii(4500.0, 20.0, np.array([5.0, 20.0, 50.0, 100.0, 200.0]))
    assert np.all(np.diff(ratios) > 0)


def test_bluer_than_oii_at_rest_is_lya_and_bad_input_is_nan():
    assert plae.plae_poii(3700.0, 20.0, 1.0) == plae.RATIO_LIMIT
    assert np.isnan(plae.plae_poii(np.array([4500.0, 4500.0, 4500.0]), np.array([-1.0, np.nan, 5.0]),
                                   np.array([50.0, 50.0, 0.0]))).all()


def test_bright_continuum_spectrum_is_oii_faint_one_is_lae():
    wave = 4400.0
    err = np.full((2, X.size), 0.05)
    bright, faint = 3.0, 0.0
    without_line = np.array([np.full(X.size, bright), np.full(X.size, faint)])
    result = plae.plae_from_spectra([wave, wave], [30.0, 30.0], [1.0, 1.0], [bright, faint], [0.05, 0.05],
                                    without_line, err)
    assert result.ratio[0] < 0.01 and result.ratio[1] > 10
    # The faint continuum is below both limits: the EW uses them.
    assert result.ew_near[1] == pytest.approx(30.0 / plae.ab_flux_density(plae.NEAR_LIMIT_MAG, wave))
    assert result.ew_g[1] == pytest.approx(30.0 / plae.ab_flux_density(plae.GBAND_LIMIT_MAG, wave))
    assert 0 < result.p_lae[0] < 0.01 and 0.9 < result.p_lae[1] < 1


def test_combination_is_inverse_variance_weighted_in_log():
    wave, flux, flux_err = 4600.0, 25.0, 2.0
    spec = np.full((1, X.size), 0.4)
    err = np.full((1, X.size), 0.3)
    result = plae.plae_from_spectra([wave], [flux], [flux_err], [0.3], [0.1], spec, err)
    var = [((flux_err / flux) ** 2 + (e / max(c, plae.ab_flux_density(m, wave))) ** 2) / np.log(10) ** 2
           for c, e, m in ((0.3, 0.1, plae.NEAR_LIMIT_MAG),
                           (result.continuum_g[0], result.continuum_g_err[0], plae.GBAND_LIMIT_MAG))]
    logs = np.log10([result.ratio_near[0], result.ratio_g[0]])
    expected = 10 ** (np.sum(logs / var) / np.sum(1 / np.array(var)))
    assert result.ratio[0] == pytest.approx(expected, rel=1e-12)
    pair = (result.ratio_near[0], result.ratio_g[0])
    assert min(pair) <= result.ratio[0] <= max(pair)


def test_upper_gamma_equals_the_integral():
    for s in (-0.65, -0.2, 0.35, 1.8):
        for x in (0.01, 0.7, 5.0, 40.0):
            assert plae.upper_gamma(s, x) == pytest.approx(schechter_integral(s - 1, x, np.inf), rel=1e-8)


def test_synthetic_g_magnitude_equals_speclite():
    band = speclite.filters.load_filter("sdss2010-g")
    flat = plae.ab_flux_density(21.3, X)  # flat f_nu: any normalisation gives the magnitude back
    assert plae.g_band(flat[None], np.full((1, X.size), 0.01)).mag[0] == pytest.approx(21.3, abs=1e-9)
    # A red power law: speclite over the whole filter (the law continued beyond 5540 Angstrom) agrees
    # with the truncated normalisation to the few millimag the uncovered tail holds.
    wide = np.arange(3000.0, 6000.0, 1.0)
    f_lambda = 0.8 * (wide / 4500.0) ** 1.5
    maggies = band.get_ab_maggies(f_lambda * 1e-17, wide)
    ours = plae.g_band((0.8 * (X / 4500.0) ** 1.5)[None], np.full((1, X.size), 0.01)).mag[0]
    assert ours == pytest.approx(-2.5 * np.log10(maggies), abs=0.01)


def test_g_band_error_propagates_pixel_errors():
    rng = np.random.default_rng(3)
    err = np.full((2000, X.size), 0.5)
    spec = 1.0 + err * rng.standard_normal(err.shape)
    result = plae.g_band(spec, err)
    assert np.std(result.f_nu) == pytest.approx(result.f_nu_err[0], rel=0.05)
