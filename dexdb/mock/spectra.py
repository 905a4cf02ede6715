"""Spectral models of the mock: source spectra, noise, extinction.

All spectra here are calibrated flux densities in 1e-17 erg/s/cm2/A on the PDR1 grid. Noise is
drawn from a counter-based hash of (seed, detectid, pixel), so the same detection gets the same
noise whichever product (raw database, catalog) and whichever chunk computes it.
"""

from __future__ import annotations

import numpy as np

from dexdb import constants as C
from dexdb.lines.table import stellar_absorption_lines

WAVE64 = C.WAVE.astype(np.float64)

#: Source types in HPSC2 spelling, indexed by the ``otype`` code used in the mock.
TYPES = ("lae", "oii", "agn", "lzg", "star")
LAE, OII, AGN, LZG, STAR = range(5)

#: Emission lines per type: (rest wavelength A, flux relative to the main line, broad?).
LINES: dict[int, tuple[tuple[float, float], ...]] = {
    LAE: ((C.LYA, 1.0),),
    OII: (
        (C.OII, 1.0),
        (C.NEIII, 0.12),
        (C.HDELTA, 0.08),
        (C.HGAMMA, 0.16),
        (C.HBETA, 0.35),
        (C.OIII_4959, 0.25),
        (C.OIII_5007, 0.75),
    ),
    AGN: ((C.LYA, 1.0), (C.NV, 0.15), (C.CIV, 0.45), (C.HEII, 0.1), (C.CIII, 0.3), (C.MGII, 0.35)),
}
MAX_LINES = max(len(v) for v in LINES.values())

#: Stellar absorption lines (rest A): Balmer series and Ca II H and K.
STAR_ABSORPTION = stellar_absorption_lines()


def error_at(noise_scale, wave) -> np.ndarray:
    """1-sigma error per A of a 3.5" point-source aperture spectrum; rises steeply in the blue."""
    blue = 1.0 + 1.5 * np.exp(-(np.asarray(wave, dtype=np.float64) - C.WAVE_START) / 250.0)
    return 0.35 * np.asarray(noise_scale, dtype=np.float64) * blue


def error_curve(noise_scale) -> np.ndarray:
    """:func:`error_at` on the whole grid: (n, 1036) float32 for n noise scales."""
    return error_at(np.asarray(noise_scale, dtype=np.float64)[..., None], WAVE64).astype(np.float32)


def ccm_extinction_ratio(wave_a: np.ndarray) -> np.ndarray:
    """A(lambda)/A(V) of Cardelli, Clayton & Mathis (1989), optical branch, R_V = 3.1."""
    y = 1.0 / (wave_a / 1e4) - 1.82
    a = 1 + 0.17699 * y - 0.50447 * y**2 - 0.02427 * y**3 + 0.72085 * y**4 + 0.01979 * y**5 - 0.77530 * y**6 + 0.32999 * y**7
    b = 1.41338 * y + 2.28305 * y**2 + 1.07233 * y**3 - 5.38434 * y**4 - 0.62251 * y**5 + 5.30260 * y**6 - 2.09002 * y**7
    return a + b / 3.1


def dust_correction(av) -> np.ndarray:
    """Multiplicative factor (n, 1036) that removes Galactic extinction A_V from observed spectra."""
    ratio = ccm_extinction_ratio(WAVE64)
    return (10.0 ** (0.4 * np.asarray(av, dtype=np.float64)[..., None] * ratio)).astype(np.float32)


def dust_correction_at(av, wave_a) -> np.ndarray:
    """The same factor at given wavelengths (for line fluxes)."""
    return 10.0 ** (0.4 * np.asarray(av, dtype=np.float64) * ccm_extinction_ratio(np.asarray(wave_a, dtype=np.float64)))


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def hashed_normal(seed: int, keys: np.ndarray, n: int = C.N_WAVE) -> np.ndarray:
    """Standard normal deviates (len(keys), n) that depend only on (seed, key, column)."""
    keys = np.asarray(keys, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        base = _splitmix64(keys * np.uint64(0x100000001B3) + np.uint64(seed & 0xFFFFFFFF) * np.uint64(0x9E3779B1))
        col = np.arange(n, dtype=np.uint64)
        h1 = _splitmix64(base[:, None] ^ (col * np.uint64(2) + np.uint64(1)) * np.uint64(0xD6E8FEB86659FD93))
        h2 = _splitmix64(h1 ^ np.uint64(0xA0761D6478BD642F))
    u1 = ((h1 >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0**53
    u2 = (h2 >> np.uint64(11)).astype(np.float64) / 2.0**53
    return (np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)).astype(np.float32)


def gaussian_lines(centers: np.ndarray, sigmas: np.ndarray, fluxes: np.ndarray) -> np.ndarray:
    """Sum of Gaussian lines (n, L) -> flux density (n, 1036); zero flux entries are skipped."""
    out = np.zeros((centers.shape[0], C.N_WAVE), dtype=np.float64)
    for j in range(centers.shape[1]):
        live = fluxes[:, j] != 0
        if not live.any():
            continue
        c, s, f = centers[live, j, None], sigmas[live, j, None], fluxes[live, j, None]
        out[live] += f / (np.sqrt(2 * np.pi) * s) * np.exp(-0.5 * ((WAVE64 - c) / s) ** 2)
    return out


def object_spectra(objects: np.ndarray) -> np.ndarray:
    """Noise-free observed (extincted) spectra of mock objects, float32 (n, 1036)."""
    n = len(objects)
    otype, z = objects["otype"], objects["z"].astype(np.float64)
    cont = objects["cont_4500"].astype(np.float64)[:, None] * (WAVE64 / 4500.0) ** objects["cont_slope"][:, None]

    rest = WAVE64[None, :] / (1.0 + z[:, None])
    # Lyman-alpha forest absorption blueward of Lya for high-z objects.
    forest = np.where(rest < C.LYA, 0.65, 1.0)
    # 4000 A break of evolved galaxies.
    brk = np.where((otype[:, None] == LZG) & (rest < 4000.0), 0.55, 1.0)
    cont = cont * forest * brk

    star = otype == STAR
    if star.any():
        t = objects["temperature"][star].astype(np.float64)[:, None]
        bb = 1.0 / (WAVE64**5 * np.expm1(1.4388e8 / (WAVE64 * t)))
        bb_ref = 1.0 / (4500.0**5 * np.expm1(1.4388e8 / (4500.0 * t)))
        shape = bb / bb_ref
        depth = np.clip(0.6 * np.exp(-((t - 9000.0) / 3000.0) ** 2), 0.05, 0.6)
        for line in STAR_ABSORPTION:
            c = line * (1.0 + z[star, None])
            shape = shape * (1.0 - depth * np.exp(-0.5 * ((WAVE64 - c) / 6.0) ** 2))
        cont[star] = objects["cont_4500"][star, None] * shape

    centers = objects["line_rest"] * (1.0 + z[:, None])
    sigmas = np.maximum(objects["line_sigma"], 0.5)
    fluxes = objects["line_flux"]
    spec = cont + gaussian_lines(centers, sigmas, fluxes)
    return spec.astype(np.float32).reshape(n, C.N_WAVE)


def line_flux_error(err_at_line, sigma):
    """1-sigma error of a Gaussian line flux fitted to a spectrum with per-A errors ``err_at_line``."""
    return err_at_line * np.sqrt(2.0 * np.sqrt(np.pi) * np.asarray(sigma) * C.WAVE_STEP)

