"""Gaussian emission-line fits to many HETDEX spectra at once, with no Python loop over spectra.

A fit is one Gaussian line plus a constant continuum, least squares weighted by ``1 / spec_err**2``, over a
window of pixels around an expected wavelength, the centre free within a tolerance:

    model(x) = flux * exp(-(x - wave)**2 / (2 sigma**2)) / (sqrt(2 pi) sigma) + continuum

sampled at the pixel centres, like the spectra's flux densities (1e-17 erg/s/cm^2/Angstrom), so that
``flux`` is the integrated line flux (1e-17 erg/s/cm^2). Pixels whose error is not a positive finite
number, or whose value is not finite, have no weight. Emission and absorption are both fitted (the
sign of ``flux`` tells); callers decide what a match is.

Two stages, both vectorised over every requested fit:

1. coarse (:func:`coarse_map`): for every spectrum, every centre on a 1-Angstrom grid (pixel centres and
   half pixels) and every width of :data:`SIGMA_GRID`, the best flux and constant continuum are linear
   least squares in closed form; their window sums are correlations of ``1/err**2`` and
   ``spec/err**2`` with the Gaussian, computed for a whole batch of spectra with FFTs. The map keeps, per
   centre, the largest flux S/N over the widths. A fit starts at the best centre of the map within its
   tolerance;
2. refinement (:func:`fit_lines`): Levenberg-Marquardt on (flux, wave, sigma, continuum) for all fits
   together, the centre kept within its tolerance and sigma within [:data:`SIGMA_MIN`,
   :data:`SIGMA_MAX`] (and a third of the fixed window); the errors are the square roots of the diagonal
   of the inverse of J^T W J at the solution.

>>> import numpy as np
>>> from dexdb.constants import WAVE
>>> truth = gaussian(WAVE, 50.0, 4500.0, 3.0) + 1.0
>>> fits = fit_lines(truth[None, :], np.full((1, WAVE.size), 0.2), [0], [4502.0], [5.0])
>>> round(float(fits.flux[0]), 6), round(float(fits.wave[0]), 6), round(float(fits.sigma[0]), 6)
(50.0, 4500.0, 3.0)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft

from dexdb.constants import N_WAVE, WAVE_START, WAVE_STEP

#: Line widths (Gaussian sigma, Angstrom) of the coarse stage: from unresolved narrow lines to the
#: broadest AGN lines (FWHM ~5,000 km/s at 5,500 Angstrom), in steps of 1.6x.
SIGMA_GRID = 1.0 * 1.6 ** np.arange(9)
#: Bounds of sigma in the refinement (Angstrom).
SIGMA_MIN, SIGMA_MAX = 0.8, 50.0
#: Half-width of a fit's window: four sigma, and at least this many Angstrom for the continuum.
MIN_HALF_WINDOW = 16.0
#: Spacing of the coarse grid of line centres (Angstrom): half a pixel.
CENTRE_STEP = WAVE_STEP / 2
#: Levenberg-Marquardt: iterations at most; a fit has converged when a full Gauss-Newton step would
#: lower chi^2 by less than CONVERGED_CHI2 (chi^2 rises by 1 at one sigma: 1e-4 is ~1% of an error).
MAX_ITERATIONS = 50
CONVERGED_CHI2 = 1e-4
N_CENTRES = 2 * N_WAVE - 1  # coarse centres 3470, 3471, ..., 5540


@dataclass(frozen=True)
class CoarseMap:
    """Per spectrum and coarse centre (3470 + k Angstrom): the best flux S/N over :data:`SIGMA_GRID`
    (``-inf`` where no width has a usable window) and the index of that width."""

    sn: np.ndarray  # (n, N_CENTRES) float64
    sigma_index: np.ndarray  # (n, N_CENTRES) int8


@dataclass(frozen=True)
class LineFits:
    """One fitted Gaussian per requested fit; NaN where the window held too few usable pixels."""

    flux: np.ndarray
    flux_err: np.ndarray
    wave: np.ndarray
    wave_err: np.ndarray
    sigma: np.ndarray
    sigma_err: np.ndarray
    continuum: np.ndarray
    continuum_err: np.ndarray
    chi2: np.ndarray
    n_pixels: np.ndarray  # pixels with weight in the window

    @property
    def sn(self) -> np.ndarray:
        """flux / flux_err."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.flux / self.flux_err

    def take(self, index) -> LineFits:
        """The fits at ``index`` (any numpy index)."""
        return LineFits(**{name: getattr(self, name)[index] for name in self.__dataclass_fields__})


def gaussian(x, flux, centre, sigma) -> np.ndarray:
    """A Gaussian line of integrated ``flux`` sampled at ``x`` (broadcasting)."""
    x, flux, centre, sigma = (np.asarray(v, dtype=np.float64) for v in (x, flux, centre, sigma))
    return flux * np.exp(-0.5 * ((x - centre) / sigma) ** 2) / (np.sqrt(2.0 * np.pi) * sigma)


def weights_of(spec: np.ndarray, err: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(1/err**2, spec/err**2)`` as float64, zero where a pixel is unusable."""
    spec = np.asarray(spec, dtype=np.float64)
    err = np.asarray(err, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        usable = np.isfinite(spec) & np.isfinite(err) & (err > 0)
        w = np.where(usable, 1.0 / np.where(usable, err, 1.0) ** 2, 0.0)
    return w, np.where(usable, w * np.where(usable, spec, 0.0), 0.0)


def half_window_pixels(sigma) -> np.ndarray:
    """Half-width in pixels of the window of a line of width ``sigma`` (Angstrom)."""
    return np.ceil(np.maximum(4.0 * np.asarray(sigma, dtype=np.float64), MIN_HALF_WINDOW) / WAVE_STEP).astype(np.int64)


def coarse_map(spec: np.ndarray, err: np.ndarray) -> CoarseMap:
    """The coarse stage for a batch of spectra ``(n, 1036)``."""
    spec = np.atleast_2d(spec)
    n = spec.shape[0]
    w, wy = weights_of(spec, err)
    n_fft = _fft_length(N_WAVE + int(half_window_pixels(SIGMA_GRID[-1])) + 1)
    fw, fwy = scipy.fft.rfft(w.astype(np.float32), n_fft, axis=1), scipy.fft.rfft(wy.astype(np.float32), n_fft, axis=1)
    zero = np.zeros((n, 1))
    count_cum = np.concatenate([zero, np.cumsum(w > 0, axis=1)], axis=1)
    w_cum = np.concatenate([zero, np.cumsum(w, axis=1)], axis=1)
    wy_cum = np.concatenate([zero, np.cumsum(wy, axis=1)], axis=1)
    best_sn = np.full((n, N_CENTRES), -np.inf, dtype=np.float32)
    best_sigma = np.zeros((n, N_CENTRES), dtype=np.int8)
    k = np.arange(N_WAVE)
    for s, sigma in enumerate(SIGMA_GRID):
        h = int(half_window_pixels(sigma))
        lo, hi = np.clip(k - h, 0, N_WAVE), np.clip(k + h + 1, 0, N_WAVE)
        sum_w = (w_cum[:, hi] - w_cum[:, lo]).astype(np.float32)
        sum_wy = (wy_cum[:, hi] - wy_cum[:, lo]).astype(np.float32)
        too_few = (count_cum[:, hi] - count_cum[:, lo]) < MIN_PIXELS
        for phase in (0, 1):  # centre at the pixel, or half a pixel redward
            g = gaussian(WAVE_STEP * np.arange(-h, h + 1), 1.0, phase * CENTRE_STEP, sigma)
            sum_wg = _correlate(fw, g, h, n_fft)
            sum_wgg = _correlate(fw, g * g, h, n_fft)
            sum_wgy = _correlate(fwy, g, h, n_fft)
            # flux = num / det and var(flux) = sum_w / det, so S/N = num / sqrt(det * sum_w);
            # det <= 0 (a degenerate window) gives NaN, which never counts as better.
            with np.errstate(invalid="ignore", divide="ignore"):
                sn = (sum_wgy * sum_w - sum_wg * sum_wy) / np.sqrt((sum_wgg * sum_w - sum_wg * sum_wg) * sum_w)
            sn[too_few] = -np.inf
            if phase:  # the last pixel has no half-pixel centre redward of it
                sn = sn[:, :-1]
            target_sn, target_sigma = best_sn[:, phase::2], best_sigma[:, phase::2]
            better = sn > target_sn
            np.copyto(target_sn, sn, where=better)
            np.copyto(target_sigma, s, where=better)
    return CoarseMap(best_sn, best_sigma)


def _fft_length(need: int) -> int:
    """The smallest 2**a * 3**b >= need: lengths with a large prime factor are several times slower."""
    return min(2**a * 3**b for a in range(need.bit_length() + 1) for b in range(12) if 2**a * 3**b >= need)


MIN_PIXELS = 5  # a window needs this many usable pixels for four parameters and a dof


def _correlate(f_data: np.ndarray, kernel: np.ndarray, h: int, n_fft: int) -> np.ndarray:
    """``out[:, k] = sum_j data[:, k + j] * kernel[j + h]`` for j in [-h, h], zero outside the data, from
    the data's rFFT of length ``n_fft`` (at least 1036 + h, so the circular wrap only reads zeros)."""
    reversed_kernel = np.zeros(n_fft)
    reversed_kernel[(-np.arange(-h, h + 1)) % n_fft] = kernel
    f_kernel = scipy.fft.rfft(reversed_kernel.astype(f_data.real.dtype))
    return scipy.fft.irfft(f_data * f_kernel, n_fft, axis=1)[:, :N_WAVE]


def fit_lines(
    spec: np.ndarray,
    err: np.ndarray,
    rows,
    expected,
    tolerance,
    coarse: CoarseMap | None = None,
    min_coarse_sn: float = -np.inf,
) -> LineFits:
    """Fit one Gaussian per element of ``rows`` (index into ``spec``), near ``expected`` (Angstrom)
    within ``tolerance`` (Angstrom). ``coarse``: :func:`coarse_map` of ``spec`` when already computed.
    Fits whose best coarse S/N within the tolerance is below ``min_coarse_sn`` are not refined: NaN."""
    spec, err = np.atleast_2d(spec), np.atleast_2d(err)
    rows = np.asarray(rows, dtype=np.int64)
    expected = np.asarray(expected, dtype=np.float64)
    tolerance = np.broadcast_to(np.asarray(tolerance, dtype=np.float64), expected.shape)
    if coarse is None:
        coarse = coarse_map(spec, err)
    start_sn, centre0, sigma0 = coarse_starts(coarse, rows, expected, tolerance)
    out = {name: np.full(rows.shape, np.nan) for name in LineFits.__dataclass_fields__}
    out["n_pixels"] = np.zeros(rows.shape, dtype=np.int64)
    refine = np.flatnonzero(~(start_sn < min_coarse_sn))
    half = refine_half_window(sigma0[refine], tolerance[refine])
    w_all, wy_all = weights_of(spec, err)
    for h in np.unique(half):  # one batch per window class: a handful, whatever the number of spectra
        pick = refine[half == h]
        window = _Window(w_all, wy_all, rows[pick], centre0[pick], int(h))
        result = _levenberg_marquardt(window, centre0[pick], sigma0[pick], expected[pick], tolerance[pick])
        for name, values in result.items():
            out[name][pick] = values
    return LineFits(**out)


#: Half-widths (pixels) of the refinement windows: each fit takes the smallest that holds its start's
#: window and its tolerance (:func:`refine_half_window`), so that fits batch by a few sizes.
WINDOW_CLASSES = np.unique(np.rint(8 * 1.25 ** np.arange(20)).astype(np.int64))


def refine_half_window(sigma, tolerance) -> np.ndarray:
    """Half-width (pixels) of the refinement window of a fit starting at width ``sigma`` (Angstrom)
    whose centre may move by ``tolerance`` (Angstrom). The window is centred on the start's pixel and
    bounds sigma to a third of its half-width."""
    need = half_window_pixels(sigma) + np.ceil(np.asarray(tolerance) / WAVE_STEP).astype(np.int64) + 1
    return WINDOW_CLASSES[np.searchsorted(WINDOW_CLASSES, need)]


def coarse_starts(coarse: CoarseMap, rows, expected, tolerance) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best coarse S/N within each fit's tolerance, its centre and width (-inf, the expected centre and
    the middle width when the map has nothing there)."""
    lo = np.clip(np.ceil((expected - tolerance - WAVE_START) / CENTRE_STEP), 0, N_CENTRES - 1).astype(np.int64)
    hi = np.clip(np.floor((expected + tolerance - WAVE_START) / CENTRE_STEP), 0, N_CENTRES - 1).astype(np.int64)
    hi = np.maximum(hi, lo)
    col, best_sn = lo.copy(), np.full(len(rows), -np.inf)
    width = np.ceil(np.log2(hi - lo + 1)).astype(np.int64)  # fits gathered by span class (few): 2**width
    for w in np.unique(width):
        pick = np.flatnonzero(width == w)
        cols = lo[pick, None] + np.arange(2**w)
        sn = np.where(cols <= hi[pick, None], coarse.sn[rows[pick, None], np.minimum(cols, hi[pick, None])], -np.inf)
        best = sn.argmax(axis=1)
        col[pick], best_sn[pick] = cols[np.arange(len(pick)), best], sn[np.arange(len(pick)), best]
    found = np.isfinite(best_sn)
    last = WAVE_START + CENTRE_STEP * (N_CENTRES - 1)
    centre = np.where(found, WAVE_START + CENTRE_STEP * col, np.clip(expected, WAVE_START, last))
    sigma = np.where(found, SIGMA_GRID[coarse.sigma_index[rows, col]], SIGMA_GRID[len(SIGMA_GRID) // 2])
    return best_sn.astype(np.float64), centre, sigma


class _Window:
    """The pixels of each fit's window: x (Angstrom), y, w (zero outside the grid or where unusable)."""

    def __init__(self, w_all: np.ndarray, wy_all: np.ndarray, rows: np.ndarray, centre: np.ndarray, half: int):
        k0 = np.rint((centre - WAVE_START) / WAVE_STEP).astype(np.int64)
        pix = k0[:, None] + np.arange(-half, half + 1)
        inside = (pix >= 0) & (pix < N_WAVE)
        pix = np.clip(pix, 0, N_WAVE - 1)
        self.x = WAVE_START + WAVE_STEP * pix.astype(np.float64)
        self.w = np.where(inside, w_all[rows[:, None], pix], 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            self.y = np.where(self.w > 0, wy_all[rows[:, None], pix] / self.w, 0.0)
        self.half_width = WAVE_STEP * half
        self.n_pixels = (self.w > 0).sum(axis=1)


def _levenberg_marquardt(win: _Window, centre, sigma, expected, tolerance) -> dict[str, np.ndarray]:
    lo = np.array([-np.inf, 0, 0, -np.inf]) + np.zeros((len(centre), 4))
    lo[:, 1], lo[:, 2] = expected - tolerance, SIGMA_MIN
    hi = np.array([np.inf, 0, 0, np.inf]) + np.zeros((len(centre), 4))
    hi[:, 1], hi[:, 2] = expected + tolerance, min(SIGMA_MAX, win.half_width / 3.0)
    hi[:, 2] = np.maximum(hi[:, 2], SIGMA_MIN)
    flux, cont = _linear_fit(win, centre, np.clip(sigma, lo[:, 2], hi[:, 2]))
    params = np.clip(np.column_stack([flux, centre, sigma, cont]), lo, hi)
    usable = win.n_pixels >= MIN_PIXELS
    params[~usable] = np.nan
    chi2 = _chi2(win, params)
    damping = np.full(len(centre), 1e-3)
    active = usable & np.isfinite(chi2)
    for _ in range(MAX_ITERATIONS):
        if not active.any():
            break
        idx = np.flatnonzero(active)
        sub = _take_window(win, idx)
        jtwj, jtwr = _normal_equations(sub, params[idx])
        # A parameter on a bound that chi^2 pushes further out is held there this step (projected LM),
        # so that clipping never spoils the step of the others.
        held = ((params[idx] <= lo[idx]) & (jtwr < 0)) | ((params[idx] >= hi[idx]) & (jtwr > 0))
        free = ~held
        jtwj = jtwj * (free[:, :, None] & free[:, None, :]) + held[:, :, None] * np.eye(4)
        jtwr = np.where(held, 0.0, jtwr)
        # Newton decrement: the chi^2 an undamped step would still gain; below CONVERGED_CHI2 the fit is
        # at its minimum (to ~1% of an error) and stops after this step.
        newton = np.einsum("ni,ni->n", jtwr, _solve(jtwj, jtwr))
        at_minimum = ~(newton >= CONVERGED_CHI2)
        diag = np.einsum("nii->ni", jtwj)
        lhs = jtwj + damping[idx, None, None] * diag[:, :, None] * np.eye(4)
        step = _solve(lhs, jtwr)
        trial = np.clip(params[idx] + step, lo[idx], hi[idx])
        trial_chi2 = _chi2(sub, trial)
        better = trial_chi2 < chi2[idx]
        params[idx[better]] = trial[better]
        chi2[idx[better]] = trial_chi2[better]
        damping[idx] = np.where(better, np.maximum(damping[idx] / 10.0, 1e-9), damping[idx] * 10.0)
        done = at_minimum | (damping[idx] > 1e8) | ~np.isfinite(trial_chi2)
        active[idx[done]] = False
    jtwj, _ = _normal_equations(win, params)
    variances = np.einsum("nii->ni", _inverse(jtwj))
    errors = np.sqrt(np.where(variances > 0, variances, np.nan))  # not positive: a degenerate fit
    return {
        "flux": params[:, 0], "wave": params[:, 1], "sigma": params[:, 2], "continuum": params[:, 3],
        "flux_err": errors[:, 0], "wave_err": errors[:, 1], "sigma_err": errors[:, 2],
        "continuum_err": errors[:, 3], "chi2": chi2, "n_pixels": win.n_pixels,
    }  # fmt: skip


def _take_window(win: _Window, idx: np.ndarray) -> _Window:
    sub = object.__new__(_Window)
    sub.x, sub.y, sub.w = win.x[idx], win.y[idx], win.w[idx]
    sub.half_width, sub.n_pixels = win.half_width, win.n_pixels[idx]
    return sub


def _linear_fit(win: _Window, centre, sigma) -> tuple[np.ndarray, np.ndarray]:
    """Flux and continuum at fixed centre and width (closed-form weighted least squares)."""
    g = gaussian(win.x, 1.0, centre[:, None], sigma[:, None])
    sw, swg, swgg = win.w.sum(1), (win.w * g).sum(1), (win.w * g * g).sum(1)
    swy, swgy = (win.w * win.y).sum(1), (win.w * g * win.y).sum(1)
    det = swgg * sw - swg**2
    with np.errstate(invalid="ignore", divide="ignore"):
        return (swgy * sw - swg * swy) / det, (swgg * swy - swg * swgy) / det


def _chi2(win: _Window, params: np.ndarray) -> np.ndarray:
    model = gaussian(win.x, params[:, 0, None], params[:, 1, None], params[:, 2, None]) + params[:, 3, None]
    return (win.w * (win.y - model) ** 2).sum(axis=1)


def _normal_equations(win: _Window, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """J^T W J (n, 4, 4) and J^T W r (n, 4) for parameters (flux, wave, sigma, continuum)."""
    flux, centre, sigma, cont = (params[:, i, None] for i in range(4))
    d = win.x - centre
    g = gaussian(win.x, 1.0, centre, sigma)
    jac = np.stack([g, flux * g * d / sigma**2, flux * g * (d**2 / sigma**3 - 1.0 / sigma), np.ones_like(g)], axis=-1)
    resid = win.y - (flux * g + cont)
    jw = jac * win.w[..., None]
    return np.matmul(jw.transpose(0, 2, 1), jac), np.matmul(jw.transpose(0, 2, 1), resid[..., None])[..., 0]


def _solve(lhs: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Batched solve; NaN for singular systems."""
    out = np.full(rhs.shape, np.nan)
    ok = np.isfinite(lhs).all(axis=(1, 2)) & np.isfinite(rhs).all(axis=1)
    ok[ok] = np.abs(np.linalg.det(lhs[ok])) > 0
    if ok.any():
        out[ok] = np.linalg.solve(lhs[ok], rhs[ok][..., None])[..., 0]
    return out


def _inverse(matrices: np.ndarray) -> np.ndarray:
    out = np.full(matrices.shape, np.nan)
    ok = np.isfinite(matrices).all(axis=(1, 2))
    ok[ok] = np.abs(np.linalg.det(matrices[ok])) > 0
    if ok.any():
        out[ok] = np.linalg.inv(matrices[ok])
    return out
