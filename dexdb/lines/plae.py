"""P(LAE)/P(OII): is a single emission line Lyman alpha at 1.9 < z < 3.5 or [O II] at z < 0.5?

The Bayesian ratio of Leung et al. (2017, ApJ 843, 130; arXiv:1510.07043), from the line's flux and
observed equivalent width (EW):

    P(LAE|data) / P(OII|data) = [P(LAE) P(flux|LAE) P(EW|LAE)] / [P(OII) P(flux|OII) P(EW|OII)]

* the prior P(LAE)/P(OII) is the ratio of the expected numbers of each kind above the survey's flux
  limit at the observed wavelength: the luminosity function (LF) integrated above the limit times the
  comoving volume of the redshift slice the wavelength bin maps to. The likelihood of the flux is the
  LF normalised above the same limit, so the limit cancels: the product prior x flux likelihood is
  ``phi* [Gamma(a+1, 0.95 L/L*) - Gamma(a+1, 1.05 L/L*)] dV/dz / rest_wave`` (the number of such
  objects per Angstrom of observed wavelength whose luminosity lies within 5% of the measured one;
  Leung et al. bin wavelength in ~8 Angstrom steps, this is the limit of small bins);
* P(EW|kind): an exponential rest-frame EW distribution of scale ``w0``, the probability that the
  rest-frame EW lies within 5% of the measured one: ``exp(-0.95 W/w0) - exp(-1.05 W/w0)``.

Constants and their published sources:

* cosmology of Leung et al.: flat, Omega_M = 0.3, Omega_Lambda = 0.7, H0 = 70 km/s/Mpc;
* Lyman alpha LF and EW (Ciardullo et al. 2012, ApJ 744, 110, as used by Leung et al.): Schechter
  alpha = -1.65; log L* = 42.33 and 42.76 (erg/s), log phi* = -2.86 and -3.17 (Mpc^-3), w0 = 50 and
  64 Angstrom at z = 2.063 and 3.104, linear in z between and beyond;
* [O II] LF and EW (Ciardullo et al. 2013, ApJ 769, 83, Table 1): alpha = -1.2; at z = 0.1, 0.2625,
  0.3875, 0.505 (centres of 0-0.2, 0.2-0.325, 0.325-0.45, 0.45-0.56): log L* = 41.07, 41.29, 41.50,
  41.68; log of the density above L = 10^40.5 erg/s = -2.30, -2.12, -2.07, -2.07 (Mpc^-3), which gives
  phi* = density / Gamma(a+1, 10^40.5 / L*); w0 = 8.0, 11.5, 16.6, 21.5 Angstrom; piecewise linear in z,
  the end segments extended;
* rest wavelengths: the line table's (Lya 1215.67 vacuum, [O II] 3727.8 air);
* the ratio is reported within [1/:data:`RATIO_LIMIT`, :data:`RATIO_LIMIT`] (ELiXer reports 0.001 to
  1000); a line bluer than [O II] at rest cannot be [O II]: the upper limit.

The continuum that makes the EW is estimated twice, as in ELiXer (``elixer-notes.md``): near the line
(the constant of the line's Gaussian fit) and over the whole spectrum through the SDSS g filter (the
``sdss2010-g`` response shipped by speclite), the detected line's Gaussian removed and f_nu assumed flat,
as Leung et al. do for imaging. Each estimate is floored at a limiting magnitude, ELiXer's (AB 24.0
near the line, 24.5 in g): a fainter continuum is an upper limit. Each estimate gives its own ratio;
the headline combines their log10 with inverse-variance weights, the variance of log10 EW from the
flux and continuum errors (the ratio depends on the data only through flux and EW, and both estimates
share the flux). The g response is defined from 3619 to 5621 Angstrom; the spectra end at 5540, so the
synthetic photometry is normalised over the covered part.

>>> ratio = plae_poii(np.array([4500.0, 4500.0]), np.array([20.0, 20.0]), np.array([300.0, 3.0]))
>>> bool(ratio[0] > 10), bool(ratio[1] < 0.1)
(True, True)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import special

from dexdb.constants import WAVE
from dexdb.lines.table import LYA_NAME, OII_NAME, rest_wave

LIGHT_SPEED_A = 2.99792458e18  # Angstrom/s
FLUX_SCALE = 1e-17  # the spectra's and line fluxes' unit, erg/s/cm^2(/Angstrom)
MPC_CM = 3.0856775814913673e24
LYA_REST, OII_REST = rest_wave(LYA_NAME), rest_wave(OII_NAME)

H0, OMEGA_M = 70.0, 0.3

LAE_ALPHA = -1.65
LAE_Z = np.array([2.063, 3.104])
LAE_LOG_LSTAR = np.array([42.33, 42.76])
LAE_LOG_PHISTAR = np.array([-2.86, -3.17])
LAE_W0 = np.array([50.0, 64.0])

OII_ALPHA = -1.2
OII_Z = np.array([0.1, 0.2625, 0.3875, 0.505])
OII_LOG_LSTAR = np.array([41.07, 41.29, 41.50, 41.68])
OII_LOG_DENSITY_405 = np.array([-2.30, -2.12, -2.07, -2.07])
OII_LOG_L_DENSITY = 40.5
OII_W0 = np.array([8.0, 11.5, 16.6, 21.5])

LIKELIHOOD_WINDOW = 0.05  # flux and EW within +-5% of the measured values
RATIO_LIMIT = 1000.0
NEAR_LIMIT_MAG = 24.0
GBAND_LIMIT_MAG = 24.5
GBAND_FILTER = "sdss2010-g"


def plae_poii(wave, flux, ew_obs) -> np.ndarray:
    """P(LAE)/P(OII) for lines at observed ``wave`` (Angstrom) of ``flux`` (1e-17 erg/s/cm^2) and
    observed EW ``ew_obs`` (Angstrom); NaN where flux or EW is not positive and finite."""
    wave, flux, ew_obs = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (wave, flux, ew_obs)))
    z_lae, z_oii = wave / LYA_REST - 1.0, wave / OII_REST - 1.0
    valid = np.isfinite(wave) & (flux > 0) & (ew_obs > 0) & np.isfinite(flux) & np.isfinite(ew_obs) & (z_lae > 0)
    can_be_oii = valid & (z_oii > 0)
    lae = np.full(wave.shape, np.nan)
    oii = np.full(wave.shape, np.nan)
    lae[valid] = _population_term(
        z_lae[valid], flux[valid], ew_obs[valid], LYA_REST, LAE_ALPHA,
        _linear(z_lae[valid], LAE_Z, LAE_LOG_LSTAR), _linear(z_lae[valid], LAE_Z, LAE_LOG_PHISTAR),
        _linear(z_lae[valid], LAE_Z, LAE_W0),
    )  # fmt: skip
    z = z_oii[can_be_oii]
    log_lstar = _linear(z, OII_Z, OII_LOG_LSTAR)
    density = 10.0 ** _linear(z, OII_Z, OII_LOG_DENSITY_405)
    phistar = density / upper_gamma(OII_ALPHA + 1, 10.0 ** (OII_LOG_L_DENSITY - log_lstar))
    oii[can_be_oii] = _population_term(z, flux[can_be_oii], ew_obs[can_be_oii], OII_REST, OII_ALPHA, log_lstar,
                                       np.log10(phistar), _linear(z, OII_Z, OII_W0))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(can_be_oii, lae / oii, np.inf)
    return np.where(valid, np.clip(ratio, 1.0 / RATIO_LIMIT, RATIO_LIMIT), np.nan)


def _population_term(z, flux, ew_obs, rest, alpha, log_lstar, log_phistar, w0) -> np.ndarray:
    """prior x P(flux) x P(EW) of one kind, up to factors common to both kinds."""
    distance_cm = _cosmology().luminosity_distance(z).to_value("Mpc") * MPC_CM
    x = 4.0 * np.pi * distance_cm**2 * flux * FLUX_SCALE / 10.0**log_lstar
    s = alpha + 1.0
    in_window = upper_gamma(s, (1 - LIKELIHOOD_WINDOW) * x) - upper_gamma(s, (1 + LIKELIHOOD_WINDOW) * x)
    per_angstrom = _cosmology().differential_comoving_volume(z).to_value("Mpc3 / sr") / rest
    ew_rest = ew_obs / (1.0 + z)
    ew_term = np.exp(-(1 - LIKELIHOOD_WINDOW) * ew_rest / w0) - np.exp(-(1 + LIKELIHOOD_WINDOW) * ew_rest / w0)
    return 10.0**log_phistar * in_window * per_angstrom * ew_term


def upper_gamma(s, x) -> np.ndarray:
    """The upper incomplete gamma function Gamma(s, x) for s > -1 (not regularised), x > 0; for
    -1 < s < 0 from Gamma(s, x) = (Gamma(s + 1, x) - x**s exp(-x)) / s."""
    s = float(s)
    x = np.asarray(x, dtype=np.float64)
    if s > 0:
        return special.gammaincc(s, x) * special.gamma(s)
    if -1 < s < 0:
        return (special.gammaincc(s + 1, x) * special.gamma(s + 1) - x**s * np.exp(-x)) / s
    raise ValueError(f"upper_gamma: s must be > -1 and not 0, got {s}")


def _linear(z, nodes, values) -> np.ndarray:
    """Piecewise-linear interpolation through (nodes, values), the end segments extended."""
    segment = np.clip(np.searchsorted(nodes, z) - 1, 0, len(nodes) - 2)
    z0, z1 = nodes[segment], nodes[segment + 1]
    return values[segment] + (values[segment + 1] - values[segment]) * (z - z0) / (z1 - z0)


@functools.cache
def _cosmology():
    from astropy.cosmology import FlatLambdaCDM

    return FlatLambdaCDM(H0=H0, Om0=OMEGA_M, Tcmb0=0.0)


def ab_flux_density(mag, wave) -> np.ndarray:
    """f_lambda (1e-17 erg/s/cm^2/Angstrom) at ``wave`` of a source of AB magnitude ``mag``."""
    f_nu = 10.0 ** (-0.4 * (np.asarray(mag, dtype=np.float64) + 48.6))
    return f_nu * LIGHT_SPEED_A / np.asarray(wave, dtype=np.float64) ** 2 / FLUX_SCALE


@functools.cache
def g_response() -> np.ndarray:
    """The SDSS g response (speclite's ``sdss2010-g``) on the spectra's wavelength grid, 0 outside it."""
    import speclite.filters

    band = speclite.filters.load_filter(GBAND_FILTER)
    return np.interp(WAVE.astype(np.float64), band.wavelength, band.response, left=0.0, right=0.0)


@dataclass(frozen=True)
class GBand:
    """Synthetic g photometry of spectra: f_nu's equivalent f_lambda at a wavelength, and AB mag."""

    f_nu: np.ndarray  # erg/s/cm^2/Hz
    f_nu_err: np.ndarray

    @property
    def mag(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.f_nu > 0, -2.5 * np.log10(self.f_nu) - 48.6, np.nan)

    def f_lambda_at(self, wave) -> tuple[np.ndarray, np.ndarray]:
        """Flat f_nu as f_lambda (1e-17 erg/s/cm^2/Angstrom) at ``wave`` and its error."""
        scale = LIGHT_SPEED_A / np.asarray(wave, dtype=np.float64) ** 2 / FLUX_SCALE
        return self.f_nu * scale, self.f_nu_err * scale


def g_band(spec: np.ndarray, err: np.ndarray) -> GBand:
    """Synthetic g photometry of spectra (n, 1036) in 1e-17 erg/s/cm^2/Angstrom: the photon-weighted
    mean f_nu = sum(f_lambda lambda R) / (c sum(R / lambda)) over the usable pixels."""
    spec, err = np.atleast_2d(spec).astype(np.float64), np.atleast_2d(err).astype(np.float64)
    wave = WAVE.astype(np.float64)
    with np.errstate(invalid="ignore"):
        usable = np.isfinite(spec) & np.isfinite(err) & (err > 0)
    response = g_response()[None, :] * usable
    norm = LIGHT_SPEED_A * (response / wave).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        f_nu = (np.where(usable, spec, 0.0) * wave * response).sum(axis=1) / norm * FLUX_SCALE
        f_nu_err = np.sqrt(((np.where(usable, err, 0.0) * wave * response) ** 2).sum(axis=1)) / norm * FLUX_SCALE
    return GBand(f_nu, f_nu_err)


@dataclass(frozen=True)
class PlaeResult:
    """P(LAE)/P(OII) of n lines from each continuum estimate and combined, with what made them."""

    continuum_near: np.ndarray  # measured, 1e-17 erg/s/cm^2/Angstrom
    continuum_near_err: np.ndarray
    continuum_g: np.ndarray  # from the g band, at the line
    continuum_g_err: np.ndarray
    gmag: np.ndarray  # synthetic AB g of the spectrum without the line
    ew_near: np.ndarray  # observed EW with the continuum floored at its limit
    ew_g: np.ndarray
    ratio_near: np.ndarray
    ratio_g: np.ndarray
    ratio: np.ndarray  # the combination

    @property
    def p_lae(self) -> np.ndarray:
        """ratio / (1 + ratio): the posterior probability of Lya when Lya and [O II] are the only kinds."""
        return self.ratio / (1.0 + self.ratio)


def plae_from_spectra(wave, flux, flux_err, continuum, continuum_err, spec_without_line, err) -> PlaeResult:
    """P(LAE)/P(OII) of lines at ``wave`` with fitted ``flux`` and near-line ``continuum`` (the Gaussian
    fit's constant), the g-band continuum from ``spec_without_line`` (the spectrum minus the line)."""
    wave = np.asarray(wave, dtype=np.float64)
    flux, flux_err = np.asarray(flux, dtype=np.float64), np.asarray(flux_err, dtype=np.float64)
    gband = g_band(spec_without_line, err)
    cont_g, cont_g_err = gband.f_lambda_at(wave)
    estimates = []
    for measured, error, limit_mag in ((continuum, continuum_err, NEAR_LIMIT_MAG),
                                       (cont_g, cont_g_err, GBAND_LIMIT_MAG)):
        measured = np.asarray(measured, dtype=np.float64)
        used = np.fmax(measured, ab_flux_density(limit_mag, wave))
        with np.errstate(invalid="ignore", divide="ignore"):
            ew = flux / used
            log_var = ((flux_err / flux) ** 2 + (np.asarray(error, dtype=np.float64) / used) ** 2) / np.log(10.0) ** 2
        estimates.append((ew, plae_poii(wave, flux, ew), log_var))
    (ew_near, ratio_near, var_near), (ew_g, ratio_g, var_g) = estimates
    with np.errstate(invalid="ignore", divide="ignore"):
        logs = np.stack([np.log10(ratio_near), np.log10(ratio_g)])
        weights = 1.0 / np.stack([var_near, var_g])
    usable = np.isfinite(logs) & np.isfinite(weights) & (weights > 0)
    weights = np.where(usable, weights, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        combined = 10.0 ** ((np.where(usable, logs, 0.0) * weights).sum(axis=0) / weights.sum(axis=0))
    return PlaeResult(np.asarray(continuum, dtype=np.float64), np.asarray(continuum_err, dtype=np.float64), cont_g,
                      cont_g_err, gband.mag, ew_near, ew_g, ratio_near, ratio_g, combined)
