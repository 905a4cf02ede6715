"""The multi-line solutions computed the plain way: one spectrum, one hypothesis, one line at a time.

The tests' independent check of :mod:`dexdb.lines.solutions` and :mod:`dexdb.lines.fit`, and the
benchmark's baseline. It follows the same rules (grids, windows, bounds, gate, scores; the constants
come from those modules) with other means: the coarse stage as explicit weighted least squares per
window in float64 instead of FFT correlations in float32, and each refinement with
``scipy.optimize.least_squares`` (trust region reflective) instead of the batched Levenberg-Marquardt.

>>> import numpy as np
>>> from dexdb.constants import WAVE
>>> from dexdb.lines.fit import gaussian
>>> spec = gaussian(WAVE, 80.0, 4400.0, 3.0) + 1.0
>>> fit = fit_line(spec, np.full(WAVE.size, 0.3), 4401.0, 6.0)
>>> round(float(fit["flux"]), 4), round(float(fit["wave"]), 4)
(80.0, 4400.0)
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import least_squares

from dexdb.constants import N_WAVE, WAVE
from dexdb.lines import fit as linefit
from dexdb.lines.solutions import DEFAULT_THRESHOLDS, LIGHT_SPEED_KMS, WAVE_MAX, WAVE_MIN, Thresholds
from dexdb.lines.table import classification_lines

X = WAVE.astype(np.float64)
NAN_FIT = {"flux": math.nan, "flux_err": math.nan, "wave": math.nan, "wave_err": math.nan,
           "sigma": math.nan, "sigma_err": math.nan, "continuum": math.nan, "continuum_err": math.nan,
           "coarse_sn": -math.inf}  # fmt: skip


def coarse_start(spec, err, expected: float, tolerance: float) -> tuple[float, float, float]:
    """Best (S/N, centre, sigma) on the coarse grid within the tolerance: first best centre, then width."""
    usable = np.isfinite(spec) & np.isfinite(err) & (err > 0)
    w = np.where(usable, 1.0 / np.where(usable, err, 1.0) ** 2, 0.0)
    y = np.where(usable, spec, 0.0)
    lo = max(math.ceil((expected - tolerance - WAVE_MIN) / linefit.CENTRE_STEP), 0)
    hi = min(math.floor((expected + tolerance - WAVE_MIN) / linefit.CENTRE_STEP), linefit.N_CENTRES - 1)
    best = (-math.inf, min(max(expected, WAVE_MIN), WAVE_MAX), linefit.SIGMA_GRID[len(linefit.SIGMA_GRID) // 2])
    for u in range(lo, max(hi, lo) + 1):
        k, phase = divmod(u, 2)
        for sigma in linefit.SIGMA_GRID:
            h = int(linefit.half_window_pixels(sigma))
            pix = np.arange(max(k - h, 0), min(k + h + 1, N_WAVE))
            ww, yy = w[pix], y[pix]
            if np.count_nonzero(ww) < linefit.MIN_PIXELS:
                continue
            g = linefit.gaussian(X[pix], 1.0, X[k] + phase * linefit.CENTRE_STEP, sigma)
            design = np.column_stack([g, np.ones_like(g)]) * np.sqrt(ww)[:, None]
            normal = design.T @ design
            if np.linalg.det(normal) <= 0:
                continue
            flux = np.linalg.solve(normal, design.T @ (yy * np.sqrt(ww)))[0]
            sn = flux / math.sqrt(np.linalg.inv(normal)[0, 0])
            if sn > best[0]:
                best = (sn, X[k] + phase * linefit.CENTRE_STEP, sigma)
    return best


def fit_line(spec, err, expected: float, tolerance: float, min_coarse_sn: float = -math.inf) -> dict[str, float]:
    """One Gaussian + constant near ``expected``: the coarse start, then bounded least squares."""
    spec, err = np.asarray(spec, dtype=np.float64), np.asarray(err, dtype=np.float64)
    coarse_sn, centre0, sigma0 = coarse_start(spec, err, expected, tolerance)
    if coarse_sn < min_coarse_sn:
        return NAN_FIT | {"coarse_sn": coarse_sn}
    half = int(linefit.refine_half_window(sigma0, tolerance))
    k0 = int(np.rint((centre0 - WAVE_MIN) / 2.0))
    pix = np.arange(k0 - half, k0 + half + 1)
    pix = pix[(pix >= 0) & (pix < N_WAVE)]
    usable = np.isfinite(spec[pix]) & np.isfinite(err[pix]) & (err[pix] > 0)
    x, y, e = X[pix][usable], spec[pix][usable], err[pix][usable]
    if x.size < linefit.MIN_PIXELS:
        return NAN_FIT | {"coarse_sn": coarse_sn}
    sigma_hi = max(min(linefit.SIGMA_MAX, 2.0 * half / 3.0), linefit.SIGMA_MIN)
    lower = [-np.inf, expected - tolerance, linefit.SIGMA_MIN, -np.inf]
    upper = [np.inf, expected + tolerance, sigma_hi, np.inf]
    sigma0 = min(max(sigma0, linefit.SIGMA_MIN), sigma_hi)
    g = linefit.gaussian(x, 1.0, centre0, sigma0)
    flux0, cont0 = np.linalg.lstsq(np.column_stack([g, np.ones_like(g)]) / e[:, None], y / e, rcond=None)[0]

    def residual(p):
        return (y - linefit.gaussian(x, p[0], p[1], p[2]) - p[3]) / e

    start = np.clip([flux0, centre0, sigma0, cont0], lower, upper)
    result = least_squares(residual, start, bounds=(lower, upper), method="trf", x_scale="jac",
                           ftol=1e-12, xtol=1e-12, gtol=1e-12, max_nfev=2000)
    p = result.x
    d = x - p[1]
    gp = linefit.gaussian(x, 1.0, p[1], p[2])
    jac = np.column_stack([gp, p[0] * gp * d / p[2] ** 2, p[0] * gp * (d**2 / p[2] ** 3 - 1 / p[2]), np.ones_like(gp)])
    jac = jac / e[:, None]
    try:
        errors = np.sqrt(np.diag(np.linalg.inv(jac.T @ jac)))
    except np.linalg.LinAlgError:
        errors = np.full(4, math.nan)
    return {"flux": p[0], "flux_err": errors[0], "wave": p[1], "wave_err": errors[1], "sigma": p[2],
            "sigma_err": errors[2], "continuum": p[3], "continuum_err": errors[3], "coarse_sn": coarse_sn}


def classify_one(wave: float, spec, err, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> dict:
    """The solution of one detected line: main fit, every hypothesis' score, best, accepted."""
    lines = classification_lines()
    t = thresholds
    main = fit_line(spec, err, wave, float(t.tolerance(wave)))
    centre = main["wave"] if math.isfinite(main["wave"]) else wave
    residual = np.asarray(spec, dtype=np.float64)
    if math.isfinite(main["flux"]):
        residual = residual - linefit.gaussian(X, main["flux"], centre, main["sigma"])
    main_velocity = LIGHT_SPEED_KMS * main["sigma"] / centre
    scores = np.zeros(len(lines))
    found = {}
    for h in range(len(lines)):
        z = centre / lines.rest_wave[h] - 1.0
        if z < 0:
            continue
        matched = []
        for o in range(len(lines)):
            expected = lines.rest_wave[o] * (1.0 + z)
            if o == h or not WAVE_MIN <= expected <= WAVE_MAX:
                continue
            tolerance = float(t.tolerance(expected, main_velocity))
            fit = fit_line(residual, err, expected, tolerance, t.refine_sn)
            score = _line_score(fit, expected, tolerance, lines.weight[o], lines.broad[o], main["sigma"] / centre, t)
            if score > 0:
                matched.append((score, o, fit, expected))
        kept = []
        for score, o, fit, expected in sorted(matched, key=lambda m: (-m[0], m[1])):
            if all(abs(fit["wave"] - k[2]["wave"]) >= max(fit["sigma"], k[2]["sigma"], t.wave_tolerance) for k in kept):
                kept.append((score, o, fit, expected))
        scores[h] = sum(k[0] for k in kept) * lines.weight[h]
        if main_velocity > t.broad_velocity and not lines.broad[h]:
            scores[h] = 0.0
        found[h] = sorted(kept, key=lambda k: k[3])
    best = int(np.argmax(scores)) if scores.max() > 0 else -1
    total = scores.sum()
    fraction = scores[best] / total if best >= 0 else 0.0
    accepted = best >= 0 and fraction > t.min_fraction and scores[best] >= t.min_score
    return {"main": main, "scores": scores, "best": best, "fraction": fraction, "accepted": accepted,
            "z": centre / lines.rest_wave[best] - 1.0 if best >= 0 else math.nan,
            "lines": [(lines.names[o], fit, score) for score, o, fit, _ in found.get(best, [])]}


def _line_score(fit, expected, tolerance, weight, can_be_broad, main_width, t: Thresholds) -> float:
    if not (fit["flux"] > 0 and math.isfinite(fit["flux_err"]) and fit["flux_err"] > 0):
        return 0.0
    if LIGHT_SPEED_KMS * fit["sigma"] / fit["wave"] > t.broad_velocity and not can_be_broad:
        return 0.0
    sn = fit["flux"] / fit["flux_err"]
    if sn < t.min_line_sn:
        return 0.0
    width = 1.0
    if math.isfinite(main_width) and main_width > 0:
        ratio = abs(math.log((fit["sigma"] / fit["wave"]) / main_width))
        full, zero = math.log(t.width_ratio_full), math.log(t.width_ratio_zero)
        width = min(max((zero - ratio) / (zero - full), 0.0), 1.0)
    offset = 1.0 - 0.5 * abs(fit["wave"] - expected) / tolerance
    return weight * min(sn, t.sn_cap) * width * offset
