"""Multi-line solutions (dexdb.lines.solutions) on synthetic spectra with known lines and the mock's noise:
the right solution for [O II] emitters and broad-line AGN, honestly none for single lines and noise; the
batched classifier agrees with the per-spectrum loop of dexdb.lines.reference."""

from __future__ import annotations

import numpy as np
import pytest

from dexdb import constants
from dexdb.lines import reference
from dexdb.lines.fit import gaussian
from dexdb.lines.solutions import LIGHT_SPEED_KMS, WAVE_MAX, WAVE_MIN, Thresholds, classify_spectra, expected_lines
from dexdb.lines.table import classification_lines, rest_wave
from dexdb.mock import spectra as mock_spectra

X = constants.WAVE.astype(np.float64)
OII_LINES = (("[OII]", 30.0), ("[NeIII]3869", 5.0), ("Hgamma", 6.0), ("Hbeta", 12.0), ("[OIII]4959", 10.0),
             ("[OIII]5007", 30.0))  # fmt: skip
AGN_LINES = (("Lya", 150.0), ("NV", 25.0), ("CIV", 70.0), ("HeII", 15.0), ("CIII]", 45.0))


def spectrum(rng, z, lines, sigma_kms, continuum=0.3, noise_scale=1.0):
    """Lines (name, flux) at redshift z with velocity width sigma_kms on a flat continuum, with the
    mock's error curve and noise."""
    err = mock_spectra.error_curve(noise_scale).astype(np.float64)
    spec = np.full(X.size, continuum)
    for name, flux in lines:
        centre = rest_wave(name) * (1 + z)
        spec += gaussian(X, flux, centre, centre * sigma_kms / LIGHT_SPEED_KMS)
    return spec + err * rng.standard_normal(X.size), err


@pytest.fixture(scope="module")
def cases():
    """(detected wave, spectrum, error, true line, true z) for [O II] emitters detected at [O II] and at
    [O III] 5007, AGN detected at Lya and at C IV, LAEs, and pure noise with a fake detection."""
    rng = np.random.default_rng(2026)
    out = []
    for z in rng.uniform(0.02, 0.09, 6):
        for main in ("[OII]", "[OIII]5007"):
            out.append((rest_wave(main) * (1 + z), *spectrum(rng, z, OII_LINES, 120.0), main, z))
    for z in rng.uniform(1.9, 2.4, 6):
        for main in ("Lya", "CIV"):
            out.append((rest_wave(main) * (1 + z), *spectrum(rng, z, AGN_LINES, 1500.0, continuum=2.0), main, z))
    for z in rng.uniform(1.95, 3.45, 10):
        out.append((rest_wave("Lya") * (1 + z), *spectrum(rng, z, (("Lya", 40.0),), 150.0, continuum=0.02), None, z))
    for wave in rng.uniform(3550, 5450, 20):
        out.append((wave, *spectrum(rng, 0.0, (), 100.0), None, None))
    wave, spec, err, truth, z = zip(*out)
    return np.array(wave), np.array(spec), np.array(err), truth, z


@pytest.fixture(scope="module")
def solved(cases):
    wave, spec, err, _, _ = cases
    return classify_spectra(wave, spec, err)


def test_multi_line_objects_get_their_solution(cases, solved):
    _, _, _, truth, z = cases
    for i, (line, true_z) in enumerate(zip(truth, z)):
        if line is None:
            continue
        assert solved.accepted[i] and solved.best_name(i) == line, (i, line, solved.best_name(i))
        # Broad lines blend (Lya with N V 85 Angstrom away at z ~ 2.3): ~900 km/s; narrow lines ~150 km/s.
        assert abs(solved.z[i] - true_z) / (1 + true_z) < (3e-3 if line in ("Lya", "CIV") else 5e-4)


def test_single_lines_and_noise_get_none(cases, solved):
    _, _, _, truth, _ = cases
    single = np.array([line is None for line in truth])
    assert not solved.accepted[single].any()


def test_matched_lines_are_the_injected_ones(cases, solved):
    _, _, _, truth, z = cases
    i = truth.index("[OII]")
    names = {solved.lines.names[solved.expected.line[k]] for k in solved.solution_lines(i)}
    assert names <= {name for name, _ in OII_LINES} and {"[OIII]5007", "Hbeta"} <= names
    for k in solved.solution_lines(i):
        injected = dict(OII_LINES)[solved.lines.names[solved.expected.line[k]]]
        assert abs(solved.fits.flux[k] - injected) < 4 * solved.fits.flux_err[k]
        centre = solved.lines.rest_wave[solved.expected.line[k]] * (1 + z[i])
        assert abs(solved.fits.wave[k] - centre) < 4 * solved.fits.wave_err[k]


def test_acceptance_follows_the_thresholds(cases, solved):
    strict = classify_spectra(*cases[:3], Thresholds(min_score=1e6))
    assert not strict.accepted.any()
    np.testing.assert_allclose(strict.scores, solved.scores)
    fraction = solved.best_score / np.where(solved.total_score > 0, solved.total_score, np.nan)
    np.testing.assert_allclose(solved.fraction[solved.total_score > 0], fraction[solved.total_score > 0])
    assert np.array_equal(solved.accepted, (solved.fraction > 0.5) & (solved.best_score >= 6.0))


def test_batched_classifier_equals_the_per_spectrum_loop(cases, solved):
    wave, spec, err, truth, _ = cases
    for i in (0, 12, len(truth) - 1):  # an [O II] emitter, an AGN, noise
        ref = reference.classify_one(wave[i], spec[i], err[i])
        assert ref["best"] == solved.best[i] and ref["accepted"] == solved.accepted[i], i
        np.testing.assert_allclose(ref["scores"], solved.scores[i], rtol=0.02, atol=0.05)
        assert [name for name, _, _ in ref["lines"]] == [solved.lines.names[solved.expected.line[k]]
                                                         for k in solved.solution_lines(i)]


def test_expected_lines_equal_a_brute_force_loop():
    lines = classification_lines()
    waves = np.array([3470.0, 3727.8, 4102.3, 4861.33, 5006.84 * 1.08, 5540.0])
    got = expected_lines(waves, lines)
    brute = []
    for d, wave in enumerate(waves):
        for h in range(len(lines)):
            z = wave / lines.rest_wave[h] - 1
            for o in range(len(lines)):
                position = lines.rest_wave[o] * (1 + z)
                if z >= 0 and o != h and WAVE_MIN <= position <= WAVE_MAX:
                    brute.append((d, h, o, position))
    assert list(zip(got.detection, got.hypothesis, got.line)) == [b[:3] for b in brute]
    np.testing.assert_allclose(got.wave, [b[3] for b in brute], rtol=1e-15)


def test_bad_thresholds_and_shapes_are_refused():
    with pytest.raises(ValueError, match="min_fraction"):
        Thresholds(min_fraction=1.5)
    with pytest.raises(ValueError, match="min_score must be a finite number"):
        Thresholds(min_score=float("nan"))
    with pytest.raises(ValueError, match=r"spec and err must be \(2, 1036\)"):
        classify_spectra([4000.0, 4100.0], np.zeros((1, 1036)), np.ones((1, 1036)))
