"""Multi-line redshift solutions for detected emission lines, many spectra at once.

For a detected line at observed wavelength ``wave`` (its Gaussian refitted here), each line ``h`` of the
classification lines (:func:`dexdb.lines.table.classification_lines`) is a hypothesis: the detected
line is ``h``, so ``z = wave / rest_h - 1`` (hypotheses with ``z < 0`` are dropped). Every other line
``o`` of the table whose expected position ``rest_o * (1 + z)`` falls inside 3470-5540 Angstrom (the
spectra's range, bounds included) is looked for: a Gaussian is fitted there (:mod:`dexdb.lines.fit`) on
the spectrum minus the detected line's fitted Gaussian, its centre free within a tolerance of
``wave_tolerance + expected * max(velocity_offset, v_detected) / c``, where ``v_detected`` is the
velocity width (sigma) of the detected line: broad lines (AGN) have broad centroids and shifts between
lines of ~1,000 km/s. The same positions come out of the SQL macro ``line_hypotheses(wave)``
(``sql/60_lines.sql``), over the same table.

A fitted line is *matched* when it is an emission line (flux > 0) with ``S/N >= min_line_sn`` and, if
it is broad (velocity sigma above ``broad_velocity``), the line table says the line can be broad (AGN
broad-line region: Lyman alpha, C IV, Mg II, H beta, ...; never [O III] or [O II]). For the same reason
a broad detected line can only be a line that can be broad: the other hypotheses score nothing.
Fits whose coarse S/N (:func:`dexdb.lines.fit.coarse_map`, the S/N at the best grid centre and width, which the
refined S/N stays below: ~0.6x for noise, < 0.93x in 99% of noise fits) is under ``refine_sn`` are not
refined and never match. A matched line scores

    weight * min(S/N, sn_cap) * width_factor * offset_factor

* ``weight``: the line table's (1 for strong lines, 0.5 for weak ones);
* ``width_factor``: the lines of one object share their kinematics, so the velocity width
  ``sigma / wave`` of the line is compared with the detected line's: 1 within a factor
  ``width_ratio_full``, 0 beyond ``width_ratio_zero``, linear in ``|log ratio|`` between;
* ``offset_factor``: ``1 - 0.5 |fitted - expected| / tolerance``, from 1 on the expected position to
  0.5 at the edge of the tolerance.

Two lines of one hypothesis that converge on the same feature (fitted centres closer than the larger of
their sigmas and ``wave_tolerance``, e.g. [Ne III] 3967 and H epsilon) count once, the higher score.
A hypothesis scores the sum of its matched lines times the weight of the line it takes the detected
line to be: a weak line is rarely the one detected, and some ratios of weak lines mimic those of strong
ones (Na I 5153 / [O III] 5007 = 1.0292, H eta / [O II] = 1.0289). The best hypothesis is *accepted*
as the solution only if its score is more than ``min_fraction`` of the sum of all hypotheses' scores and at least
``min_score``; otherwise the detection has no multi-line solution (a single line, e.g. most LAEs).

>>> import numpy as np
>>> from dexdb.constants import WAVE
>>> from dexdb.lines.fit import gaussian
>>> z = 0.1
>>> spec = sum(gaussian(WAVE, f, r * (1 + z), 2.5) for f, r in ((60, 3727.8), (40, 4861.33), (90, 5006.84)))
>>> result = classify_spectra([3727.8 * (1 + z)], spec[None, :], np.full((1, WAVE.size), 0.5))
>>> result.best_name(0), round(float(result.z[0]), 4), bool(result.accepted[0])
('[OII]', 0.1, True)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dexdb.constants import N_WAVE, WAVE, WAVE_START, WAVE_STEP
from dexdb.lines import fit as linefit
from dexdb.lines.table import LineTable, classification_lines

LIGHT_SPEED_KMS = 299_792.458
WAVE64 = WAVE.astype(np.float64)
#: The spectra's range: other lines are looked for where they fall inside it (bounds included).
WAVE_MIN, WAVE_MAX = WAVE_START, WAVE_START + WAVE_STEP * (N_WAVE - 1)


@dataclass(frozen=True)
class Thresholds:
    """Parameters of the multi-line solutions, with their defaults (each field's ``help`` says why)."""

    wave_tolerance: float = field(default=2.0, metadata={"help": "Angstrom added to the centre tolerance: "
                                  "one pixel of wavelength error"})
    velocity_offset: float = field(default=400.0, metadata={"help": "km/s of centre tolerance: the spread of line "
                                   "velocities within a galaxy (widened to the detected line's sigma if larger)"})
    min_line_sn: float = field(default=3.0, metadata={"help": "S/N of a matched line"})
    refine_sn: float = field(default=2.4, metadata={"help": "coarse S/N below which a fit is not refined "
                             "(the refined S/N is lower: < 0.93x in 99% of noise fits)"})
    sn_cap: float = field(default=20.0, metadata={"help": "S/N above this adds nothing to a line's score"})
    width_ratio_full: float = field(default=2.0, metadata={"help": "velocity-width ratio to the detected line "
                                    "up to which a line scores in full"})
    width_ratio_zero: float = field(default=4.0, metadata={"help": "velocity-width ratio beyond which a line "
                                    "scores nothing"})
    min_fraction: float = field(default=0.5, metadata={"help": "a solution is accepted above this fraction of "
                                "the sum of all hypotheses' scores"})
    broad_velocity: float = field(default=600.0, metadata={"help": "km/s: lines with a larger velocity "
                                  "sigma (FWHM > 1,400 km/s) are broad, AGN lines only"})
    min_score: float = field(default=6.0, metadata={"help": "the least score of an accepted solution (one "
                             "strong line at S/N 6, or two weak ones at S/N 6 each)"})

    def __post_init__(self):
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"Thresholds.{name} must be a finite number >= 0, got {value!r}")
        if not 0 <= self.min_fraction < 1:
            raise ValueError(f"Thresholds.min_fraction must lie in [0, 1), got {self.min_fraction!r}")
        if not 1 <= self.width_ratio_full < self.width_ratio_zero:
            raise ValueError("Thresholds: need 1 <= width_ratio_full < width_ratio_zero")
        if self.refine_sn > self.min_line_sn:
            raise ValueError("Thresholds.refine_sn must not exceed min_line_sn")

    def tolerance(self, wave, velocity_width=0.0) -> np.ndarray:
        """Centre tolerance (Angstrom) at observed wavelength ``wave`` for lines of ``velocity_width``
        (km/s, sigma)."""
        velocity = np.maximum(self.velocity_offset, np.nan_to_num(np.asarray(velocity_width, dtype=np.float64)))
        return self.wave_tolerance + np.asarray(wave, dtype=np.float64) * velocity / LIGHT_SPEED_KMS


DEFAULT_THRESHOLDS = Thresholds()


@dataclass(frozen=True)
class Expected:
    """Every (detection, hypothesis, other line) to look for, flattened: indices and expected wavelength."""

    detection: np.ndarray
    hypothesis: np.ndarray  # row of the classification lines
    line: np.ndarray  # row of the classification lines
    wave: np.ndarray


def hypothesis_redshifts(wave, lines: LineTable | None = None) -> np.ndarray:
    """``z`` of every hypothesis (n, H) for observed wavelengths ``wave`` (n,); NaN where z < 0."""
    lines = classification_lines() if lines is None else lines
    z = np.asarray(wave, dtype=np.float64)[:, None] / lines.rest_wave[None, :] - 1.0
    return np.where(z >= 0, z, np.nan)


def expected_lines(wave, lines: LineTable | None = None) -> Expected:
    """The other lines of every hypothesis that fall inside the spectra's range."""
    lines = classification_lines() if lines is None else lines
    z = hypothesis_redshifts(wave, lines)
    position = lines.rest_wave[None, None, :] * (1.0 + z[:, :, None])
    n_lines = len(lines)
    inside = (position >= WAVE_MIN) & (position <= WAVE_MAX) & ~np.eye(n_lines, dtype=bool)[None]
    detection, hypothesis, line = np.nonzero(inside)
    return Expected(detection, hypothesis, line, position[detection, hypothesis, line])


@dataclass(frozen=True)
class Classification:
    """Multi-line solutions of n detections over the H classification lines."""

    lines: LineTable
    thresholds: Thresholds
    detected_wave: np.ndarray  # (n,) as given
    main: linefit.LineFits  # (n,) the detected line's fit
    z_hypotheses: np.ndarray  # (n, H), NaN for z < 0
    scores: np.ndarray  # (n, H)
    expected: Expected  # (m,) every other line looked for
    tolerance: np.ndarray  # (m,)
    fits: linefit.LineFits  # (m,) NaN where not refined
    matched: np.ndarray  # (m,) bool, after the one-feature-once rule
    line_scores: np.ndarray  # (m,)

    @property
    def best(self) -> np.ndarray:
        """Row of the best hypothesis (highest score; the bluer line on ties), -1 when no hypothesis
        matched any line."""
        return np.where(self.scores.max(axis=1, initial=0.0) > 0, self.scores.argmax(axis=1), -1)

    @property
    def best_score(self) -> np.ndarray:
        best = self.best
        return np.where(best >= 0, self.scores[np.arange(len(best)), np.maximum(best, 0)], 0.0)

    @property
    def total_score(self) -> np.ndarray:
        return self.scores.sum(axis=1)

    @property
    def fraction(self) -> np.ndarray:
        """Best score over the sum of all hypotheses' scores (0 when nothing matched)."""
        total = self.total_score
        return np.divide(self.best_score, total, out=np.zeros_like(total), where=total > 0)

    @property
    def accepted(self) -> np.ndarray:
        t = self.thresholds
        return (self.fraction > t.min_fraction) & (self.best_score >= t.min_score) & (self.best >= 0)

    @property
    def z(self) -> np.ndarray:
        """Redshift of the best hypothesis (NaN without any)."""
        best = self.best
        return np.where(best >= 0, self.z_hypotheses[np.arange(len(best)), np.maximum(best, 0)], np.nan)

    @property
    def n_matched(self) -> np.ndarray:
        """Matched lines of the best hypothesis."""
        in_best = self.matched & (self.expected.hypothesis == self.best[self.expected.detection])
        return np.bincount(self.expected.detection[in_best], minlength=len(self.detected_wave))

    def best_name(self, i: int) -> str | None:
        best = int(self.best[i])
        return self.lines.names[best] if best >= 0 else None

    def solution_lines(self, i: int, hypothesis: int | None = None) -> np.ndarray:
        """Indices (into ``expected`` / ``fits``) of the matched lines of detection ``i`` under
        ``hypothesis`` (default: the best), in wavelength order."""
        hypothesis = int(self.best[i]) if hypothesis is None else hypothesis
        pick = np.flatnonzero((self.expected.detection == i) & (self.expected.hypothesis == hypothesis) & self.matched)
        return pick[np.argsort(self.expected.wave[pick])]


def classify_spectra(wave, spec, err, thresholds: Thresholds = DEFAULT_THRESHOLDS,
                     lines: LineTable | None = None) -> Classification:
    """Solutions for detected lines at ``wave`` (n,) in spectra ``spec``/``err`` (n, 1036), 1e-17
    erg/s/cm^2/Angstrom per Angstrom."""
    lines = classification_lines() if lines is None else lines
    wave = np.asarray(wave, dtype=np.float64)
    spec = np.atleast_2d(np.asarray(spec, dtype=np.float64))
    err = np.atleast_2d(np.asarray(err, dtype=np.float64))
    if spec.shape != err.shape or spec.shape != (wave.size, N_WAVE):
        raise ValueError(f"spec and err must be ({wave.size}, {N_WAVE}) for {wave.size} wavelengths, "
                         f"got {spec.shape} and {err.shape}")
    n = wave.size
    rows = np.arange(n)
    main = linefit.fit_lines(spec, err, rows, wave, thresholds.tolerance(wave))
    centre = np.where(np.isfinite(main.wave), main.wave, wave)
    residual = spec - np.where(np.isfinite(main.flux)[:, None],
                               linefit.gaussian(WAVE64, main.flux[:, None], centre[:, None], main.sigma[:, None]), 0.0)

    expected = expected_lines(centre, lines)
    main_velocity = LIGHT_SPEED_KMS * main.sigma / centre
    tolerance = thresholds.tolerance(expected.wave, main_velocity[expected.detection])
    fits = linefit.fit_lines(residual, err, expected.detection, expected.wave, tolerance,
                             min_coarse_sn=thresholds.refine_sn)

    line_scores = _line_scores(fits, expected, tolerance, lines, main, centre, thresholds)
    matched = _one_feature_once(line_scores > 0, line_scores, fits, expected, len(lines), thresholds)
    line_scores = np.where(matched, line_scores, 0.0)
    n_hyp = len(lines)
    scores = np.bincount(expected.detection * n_hyp + expected.hypothesis, weights=line_scores,
                         minlength=n * n_hyp).reshape(n, n_hyp) * lines.weight[None, :]
    broad_main = main_velocity > thresholds.broad_velocity
    scores = np.where(broad_main[:, None] & ~lines.broad[None, :], 0.0, scores)
    return Classification(lines, thresholds, wave, main, hypothesis_redshifts(centre, lines), scores, expected,
                          tolerance, fits, matched, line_scores)


def _line_scores(fits, expected, tolerance, lines, main, centre, t: Thresholds) -> np.ndarray:
    sn = fits.sn
    with np.errstate(invalid="ignore", divide="ignore"):
        main_width = main.sigma / centre
        ratio = np.abs(np.log((fits.sigma / fits.wave) / main_width[expected.detection]))
        full, zero = np.log(t.width_ratio_full), np.log(t.width_ratio_zero)
        width = np.clip((zero - ratio) / (zero - full), 0.0, 1.0)
        width = np.where(np.isfinite(main_width[expected.detection]), width, 1.0)
        offset = 1.0 - 0.5 * np.abs(fits.wave - expected.wave) / tolerance
        score = lines.weight[expected.line] * np.minimum(sn, t.sn_cap) * width * offset
        broad = LIGHT_SPEED_KMS * fits.sigma / fits.wave > t.broad_velocity
        ok = (fits.flux > 0) & (sn >= t.min_line_sn) & np.isfinite(score) & (lines.broad[expected.line] | ~broad)
    return np.where(ok, score, 0.0)


def _one_feature_once(matched, score, fits, expected, n_hypotheses: int, t: Thresholds) -> np.ndarray:
    """Keep, within each hypothesis and from its highest score down, only the matched lines whose
    fitted centre is not on the feature of a line already kept."""
    idx = np.flatnonzero(matched)
    if idx.size == 0:
        return matched
    group = expected.detection[idx] * n_hypotheses + expected.hypothesis[idx]
    order = np.lexsort((expected.line[idx], -score[idx], group))
    idx, group = idx[order], group[order]
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    sizes = np.diff(np.r_[starts, idx.size])
    row = np.repeat(np.arange(starts.size), sizes)
    rank = np.arange(idx.size) - np.repeat(starts, sizes)
    wave = np.full((starts.size, sizes.max()), np.nan)
    sigma = np.full_like(wave, np.nan)
    wave[row, rank], sigma[row, rank] = fits.wave[idx], fits.sigma[idx]
    present = np.zeros(wave.shape, dtype=bool)
    present[row, rank] = True
    kept = np.zeros_like(present)
    for r in range(wave.shape[1]):  # at most the number of lines of one hypothesis
        clash = np.zeros(len(wave), dtype=bool)
        for q in range(r):
            apart = np.maximum(np.maximum(sigma[:, r], sigma[:, q]), t.wave_tolerance)
            clash |= kept[:, q] & (np.abs(wave[:, r] - wave[:, q]) < apart)
        kept[:, r] = present[:, r] & ~clash
    out = np.zeros_like(matched)
    out[idx] = kept[row, rank]
    return out
