"""Write a complete mock PDR1 tree: ifu-index, HPSC2, raw detection databases, index, cubes.

Every product is rebuilt from the same plan (survey, sky, detection ids), so the products agree
with each other: an HPSC2 row's detectid is in the detect file of its release, at the position and
shot of the row, inside an IFU of the ifu-index whose cube holds the source.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dexdb import constants as C
from dexdb.cube import cube_path
from dexdb.geometry import frame_to_radec
from dexdb.mock import spectra as S
from dexdb.mock.cubes import write_cube
from dexdb.mock.detect import CORE_DTYPE, DetectFileWriter, DetectIndexWriter, detection_fiber, write_wdcor
from dexdb.mock.fits_tables import (
    DETINFO_DTYPE,
    HPSC2_DTYPE,
    IFU_INDEX_DTYPE,
    Hpsc2SpecWriter,
    write_detinfo,
    write_hpsc2_main,
    write_ifu_index,
)
from dexdb.mock.scales import SCALES, Scale
from dexdb.mock.sources import RELEASE_DIGIT, Sky, make_sky
from dexdb.mock.survey import Survey, make_survey

HPSC2_VERSION = "1.5"
HPSC2_DIR = "hetdex_source_catalog_2"
HPSC2_MAIN = f"{HPSC2_DIR}/hetdex_sc2_v{HPSC2_VERSION}.fits"
HPSC2_SPEC = f"{HPSC2_DIR}/hetdex_sc2_spec_v{HPSC2_VERSION}.fits"
HPSC2_DETINFO = f"{HPSC2_DIR}/hetdex_sc2_detinfo_v{HPSC2_VERSION}.fits"
SPECTRA_CHUNK = 2048  # rows of spectra computed at once: ~10 MB per float64 temporary
DETINFO_CHUNK = 50_000
BAD_FLOAT = -999.0
BAD_STRING = b"n/a"
#: Per-spaxel noise of a cube relative to a 3.5" aperture spectrum: sqrt(sum of w^2) for r = 7 pix.
APERTURE_NOISE_GAIN = np.sqrt(np.pi) * 7.0

#: Truth behind each raw detection row, enough to rebuild its spectrum.
TRUTH_DTYPE = np.dtype([("object", "i8"), ("wave", "f8"), ("flux", "f4"), ("sigma", "f4"), ("cont", "f4"),
                        ("noise_scale", "f4")])


@dataclass
class Mock:
    scale: Scale
    seed: int
    survey: Survey
    sky: Sky
    wdcor: np.ndarray


def make_plan(scale: Scale, seed: int, wdcor: np.ndarray) -> Mock:
    survey = make_survey(scale, seed)
    return Mock(scale, seed, survey, make_sky(survey, scale, seed), wdcor)


# --------------------------------------------------------------------------------------------
# Detections


def _release_of_shot(mock: Mock, i: int) -> str:
    return mock.survey.shots["survey"][i].decode()


def _base_core(mock: Mock, shot_index: np.ndarray, ifu_index: np.ndarray) -> np.ndarray:
    shots, ifus = mock.survey.shots, mock.survey.ifus
    core = np.zeros(len(shot_index), dtype=CORE_DTYPE)
    core["shotid"] = shots["shotid"][shot_index]
    core["date"] = shots["date"][shot_index]
    core["obsid"] = shots["obsid"][shot_index]
    for name in ("ifuslot", "ifuid", "specid"):
        core[name] = ifus[name][ifu_index]
    return core


def _offset_radec(ra, dec, dx_arcsec, dy_arcsec):
    return (ra + dx_arcsec / 3600.0 / np.cos(np.deg2rad(dec))) % 360.0, dec + dy_arcsec / 3600.0


def source_detections(mock: Mock, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Measured core records and truth of the catalog-source detections ``srcdets[idx]``."""
    sky, shots = mock.sky, mock.survey.shots
    det = sky.srcdets[idx]
    obs = sky.observations[det["obs"]]
    obj = sky.objects[obs["object"]]
    noise = shots["noise_scale"][obs["shot_index"]]
    hn = S.hashed_normal(mock.seed + 7919, det["detectid"], 8).astype(np.float64)

    core = _base_core(mock, obs["shot_index"], obs["ifu_index"])
    core["detectid"] = det["detectid"]
    jx, jy = 0.15 * hn[:, 0], 0.15 * hn[:, 1]
    core["ra"], core["dec"] = _offset_radec(obs["ra"], obs["dec"], jx, jy)
    core["x_ifu"], core["y_ifu"] = obs["x_ifu"] + jx, obs["y_ifu"] + jy
    is_cont = det["kind"] == 1
    core["det_type"] = np.where(is_cont, b"cont", b"line")

    wave = np.where(is_cont, 4500.0, det["wave"])
    sigma = np.where(is_cont, 0.0, det["sigma"])
    err = S.error_at(noise, wave)
    ferr = S.line_flux_error(err, np.maximum(sigma, 2.5))
    true_cont = obj["cont_4500"] * (wave / 4500.0) ** obj["cont_slope"]
    cont_err = err / 5.0
    flux = np.where(is_cont, 0.0, det["flux"] + ferr * hn[:, 3])
    sn = np.where(is_cont, (true_cont + cont_err * hn[:, 5]) / cont_err, flux / ferr)
    core["wave"] = wave + np.where(is_cont, 0.0, np.clip(0.6 * sigma / np.maximum(sn, 1), 0.05, 3) * hn[:, 2])
    core["wave_err"] = np.where(is_cont, 0.0, np.clip(0.6 * sigma / np.maximum(sn, 1), 0.05, 3))
    core["flux"], core["flux_err"] = flux, np.where(is_cont, 0.0, ferr)
    core["linewidth"] = sigma * (1 + 0.05 * hn[:, 4])
    core["linewidth_err"] = 0.1 * sigma
    core["continuum"], core["continuum_err"] = true_cont + cont_err * hn[:, 5], cont_err
    core["sn"], core["sn_err"] = sn, 0.1 * np.abs(sn) + 0.2
    core["chi2"], core["chi2_err"] = 1.0 + 0.15 * np.abs(hn[:, 6]), 0.1
    core["apcor"] = np.clip(0.9 - 0.04 * np.abs(hn[:, 7]), 0.6, 0.95)
    core["flux_noise_1sigma"] = S.line_flux_error(err, 2.5)
    core["detectname"] = np.where(is_cont, np.char.add(b"HETDEX_CONT_", det["detectid"].astype("S10")), b"")

    truth = np.zeros(len(idx), dtype=TRUTH_DTYPE)
    truth["object"] = np.where(det["kind"] == 2, -1, obs["object"])
    truth["wave"], truth["flux"], truth["sigma"] = det["wave"], det["flux"], det["sigma"]
    truth["cont"], truth["noise_scale"] = 0.0, noise
    return core, truth


def noise_detections(mock: Mock, i: int, det_type: str) -> tuple[np.ndarray, np.ndarray]:
    """Detections of shot i that belong to no catalog source (spurious lines, faint continuum)."""
    sky, shots, ifus = mock.sky, mock.survey.shots, mock.survey.ifus
    is_line = det_type == "line"
    n = int(sky.noise_lines[i] if is_line else sky.noise_conts[i])
    rng = np.random.default_rng([mock.seed, 6, i, int(is_line)])
    lo, hi = np.searchsorted(ifus["shot_index"], [i, i + 1])
    ifu_index = rng.integers(lo, hi, n) if hi > lo else np.zeros(0, dtype=np.int64)
    core = _base_core(mock, np.full(n, i), ifu_index)
    first = sky.line_id0[i] + sky.n_src_lines[i] if is_line else sky.cont_id0[i] + sky.n_src_conts[i]
    core["detectid"] = first + np.arange(n)
    x, y = rng.uniform(-24.5, 24.5, (2, n))
    core["x_ifu"], core["y_ifu"] = x, y
    core["ra"], core["dec"] = frame_to_radec(
        ifus["ra_cen"][ifu_index].astype(np.float64), ifus["dec_cen"][ifu_index].astype(np.float64), shots["pa"][i], x, y
    )
    core["det_type"] = det_type
    noise = float(shots["noise_scale"][i])
    wave = rng.uniform(3490, 5520, n) if is_line else np.full(n, 4500.0)
    sigma = rng.uniform(1.5, 4.0, n) if is_line else np.zeros(n)
    err = S.error_at(noise, wave)
    ferr = S.line_flux_error(err, np.maximum(sigma, 2.5))
    sn = 4.8 + rng.exponential(0.7, n)
    cont_err = err / 5.0
    cont = np.where(is_line, rng.normal(0, 1, n) * cont_err, sn * cont_err)
    core["wave"], core["wave_err"] = wave, np.where(is_line, 0.6 * sigma / sn, 0.0)
    core["flux"], core["flux_err"] = np.where(is_line, sn * ferr, 0.0), np.where(is_line, ferr, 0.0)
    core["linewidth"], core["linewidth_err"] = sigma, 0.2 * sigma
    core["continuum"], core["continuum_err"] = cont, cont_err
    core["sn"], core["sn_err"] = sn, 0.3 * sn
    core["chi2"], core["chi2_err"] = rng.uniform(0.8, 1.6, n), 0.1
    core["apcor"] = rng.uniform(0.75, 0.95, n)
    core["flux_noise_1sigma"] = S.line_flux_error(err, 2.5)
    if not is_line:
        core["detectname"] = np.char.add(b"HETDEX_CONT_", core["detectid"].astype("S10"))
    truth = np.zeros(n, dtype=TRUTH_DTYPE)
    truth["object"] = -1
    truth["wave"], truth["flux"], truth["sigma"] = wave, core["flux"], sigma
    truth["cont"], truth["noise_scale"] = cont, noise
    return core, truth


def shot_detections(mock: Mock, i: int, det_type: str) -> tuple[np.ndarray, np.ndarray]:
    """All raw detections of one shot and one kind, in detectid order."""
    sky = mock.sky
    lo, hi = sky.shot_srcdets[i], sky.shot_srcdets[i + 1]
    n_lines = int(sky.n_src_lines[i])
    idx = np.arange(lo, lo + n_lines) if det_type == "line" else np.arange(lo + n_lines, hi)
    src_core, src_truth = source_detections(mock, idx)
    noise_core, noise_truth = noise_detections(mock, i, det_type)
    return np.concatenate([src_core, noise_core]), np.concatenate([src_truth, noise_truth])


def detection_spectra(mock: Mock, detectid: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated per-A spectrum and error (observed, not dust corrected) of raw detections."""
    model = np.zeros((len(truth), C.N_WAVE), dtype=np.float32)
    has_object = truth["object"] >= 0
    if has_object.any():
        model[has_object] = S.object_spectra(mock.sky.objects[truth["object"][has_object]])
    other = ~has_object
    if other.any():
        t = truth[other]
        model[other] = (
            t["cont"][:, None]
            + S.gaussian_lines(t["wave"][:, None], np.maximum(t["sigma"], 0.5)[:, None], t["flux"][:, None])
        ).astype(np.float32)
    err = S.error_curve(truth["noise_scale"])
    return model + err * S.hashed_normal(mock.seed, detectid), err


# --------------------------------------------------------------------------------------------
# Writers, one per product


def write_ifu_index_file(mock: Mock, out: Path) -> None:
    shots, ifus = mock.survey.shots, mock.survey.ifus
    rows = np.zeros(len(ifus), dtype=IFU_INDEX_DTYPE)
    shot = shots[ifus["shot_index"]]
    for name in IFU_INDEX_DTYPE.names:
        if name in ifus.dtype.names:
            rows[name] = ifus[name]
        elif name in ("ra_shot", "dec_shot"):
            rows[name] = shot[name[:-5]]
        elif name in ("exptime", "mjd"):
            rows[name] = shot[name].mean(axis=1) if name == "exptime" else shot[name][:, 0]
        else:
            rows[name] = shot[name]
    write_ifu_index(out / "ifu-index.fits", rows)


def _source_names(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """IAU-style names: HETDEX Jhhmmss.ss+ddmmss.s (rounded in integer units, so no 60.00 s)."""
    cs = np.rint(np.asarray(ra, dtype=np.float64) / 15.0 * 3600.0 * 100.0).astype(np.int64) % (24 * 360000)
    ds = np.rint(np.abs(np.asarray(dec, dtype=np.float64)) * 36000.0).astype(np.int64)
    sign = np.where(np.asarray(dec) < 0, "-", "+")
    names = [
        f"HETDEX J{c // 360000:02d}{c // 6000 % 60:02d}{c // 100 % 60:02d}.{c % 100:02d}"
        f"{g}{d // 36000:02d}{d // 600 % 60:02d}{d // 10 % 60:02d}.{d % 10:d}"
        for c, d, g in zip(cs.tolist(), ds.tolist(), sign.tolist())
    ]
    return np.array(names, dtype="S26")


def _luminosity_distance_cm(z: np.ndarray) -> np.ndarray:
    from astropy.cosmology import Planck18
    import astropy.units as u

    grid = np.linspace(0.0, 4.0, 4001)
    dl = Planck18.luminosity_distance(grid[1:]).to_value(u.cm)
    return np.interp(z, grid, np.concatenate([[0.0], dl]))


def catalog_rows(mock: Mock) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HPSC2 rows, one per observation in observation order, with their selected detections."""
    sky, shots, ifus = mock.sky, mock.survey.shots, mock.survey.ifus
    det = sky.srcdets
    sel = np.flatnonzero(det["selected"])
    assert np.array_equal(np.sort(det["obs"][sel]), np.arange(len(sky.observations))), "one selected detection per row"
    sel = sel[np.argsort(det["obs"][sel])]
    core, truth = source_detections(mock, sel)
    obs = sky.observations
    obj = sky.objects[obs["object"]]
    n = len(obs)
    members = np.bincount(det["obs"], minlength=n)
    otype = obj["otype"]
    is_line = core["det_type"] == b"line"
    dust = S.dust_correction_at(obj["av"], core["wave"])
    flux = np.where(is_line, core["flux"] * dust, BAD_FLOAT)
    flux_err = np.where(is_line, core["flux_err"] * dust, BAD_FLOAT)
    is_lya = np.isin(otype, (S.LAE, S.AGN)) & (obj["z"] > 1.5)
    is_oii = otype == S.OII
    lum = 4 * np.pi * _luminosity_distance_cm(obj["z"]) ** 2 * 1e-17

    rows = np.zeros(n, dtype=HPSC2_DTYPE)
    rows["source_name"] = _source_names(obs["ra"], obs["dec"])
    rows["source_id"], rows["shotid"] = obs["source_id"], shots["shotid"][obs["shot_index"]]
    rows["RA"], rows["DEC"] = obs["ra"], obs["dec"]
    rows["RA_det"], rows["DEC_det"] = core["ra"], core["dec"]
    gmag = obj["gmag"] + 0.05 * S.hashed_normal(mock.seed + 1, obs["source_id"], 1)[:, 0]
    rows["gmag"] = np.where(gmag > 26.5, np.nan, gmag)  # too faint to measure: NaN, as v1.4+ writes
    rows["Av"] = obj["av"]
    rows["z_hetdex"] = obj["z"]
    rows["z_hetdex_src"] = np.where(is_line, b"elixer", b"diagnose")
    rows["z_hetdex_conf"] = np.where(otype == S.STAR, 0.99, 0.6 + 0.39 * (obs["source_id"] % 97) / 96)
    rows["source_type"] = np.array([t.encode() for t in S.TYPES])[otype]
    rows["n_members"] = members
    rows["detectid"] = core["detectid"]
    rows["field"] = shots["field"][obs["shot_index"]]
    rows["flux"], rows["flux_err"] = flux, flux_err
    aper = is_oii & (obj["z"] < 0.15)
    rows["flux_aper"] = np.where(aper, flux * 1.25, BAD_FLOAT)
    rows["flux_aper_err"] = np.where(aper, flux_err * 1.4, BAD_FLOAT)
    rows["flag_aper"] = np.where(aper, 1, -1)
    rows["major"] = np.where(aper, 3.0 + 10 * (0.15 - obj["z"]), BAD_FLOAT)
    rows["minor"] = np.where(aper, 2.0 + 5 * (0.15 - obj["z"]), BAD_FLOAT)
    rows["theta"] = np.where(aper, (obs["source_id"] % 180).astype(float), BAD_FLOAT)
    rows["lum_lya"] = np.where(is_lya, lum * flux, BAD_FLOAT)
    rows["lum_lya_err"] = np.where(is_lya, lum * flux_err, BAD_FLOAT)
    rows["lum_oii"] = np.where(is_oii, lum * flux, BAD_FLOAT)
    rows["lum_oii_err"] = np.where(is_oii, lum * flux_err, BAD_FLOAT)
    rows["flux_lya"], rows["flux_lya_err"] = np.where(is_lya, flux, BAD_FLOAT), np.where(is_lya, flux_err, BAD_FLOAT)
    rows["flux_oii"], rows["flux_oii_err"] = np.where(is_oii, flux, BAD_FLOAT), np.where(is_oii, flux_err, BAD_FLOAT)
    # Continuum sources have no line S/N: -999 in most rows, NaN in some (both occur in releases).
    rows["sn"] = np.where(is_line, core["sn"], np.where(obs["source_id"] % 5 == 0, np.nan, BAD_FLOAT))
    rows["apcor"] = core["apcor"]
    conf = 1 / (1 + np.exp(-(1.2 + S.hashed_normal(mock.seed + 2, obs["source_id"], 2))))
    rows["p_conf"] = np.where(is_line, conf[:, 0], BAD_FLOAT)
    rows["p_cnn"] = np.where(is_line, conf[:, 1], BAD_FLOAT)
    rows["ifuslot"] = ifus["ifuslot"][obs["ifu_index"]]
    return rows, core, truth


def detinfo_rows(mock: Mock, hpsc2_by_obs: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """detinfo rows of the catalog-source detections ``srcdets[idx]``."""
    det = mock.sky.srcdets[idx]
    core, _ = source_detections(mock, idx)
    obs = mock.sky.observations[det["obs"]]
    src = hpsc2_by_obs[det["obs"]]
    o = mock.sky.objects[obs["object"]]
    fibre = detection_fiber(core)
    shots = mock.survey.shots[obs["shot_index"]]
    dust = S.dust_correction_at(o["av"], core["wave"])
    is_line = core["det_type"] == b"line"
    d = np.zeros(len(det), dtype=DETINFO_DTYPE)
    values = {
        "source_id": src["source_id"], "source_name": src["source_name"], "RA": src["RA"], "DEC": src["DEC"],
        "z_hetdex": src["z_hetdex"], "z_hetdex_src": src["z_hetdex_src"], "z_hetdex_conf": src["z_hetdex_conf"],
        "source_type": src["source_type"], "detectid": core["detectid"], "selected_det": det["selected"],
        "det_type": core["det_type"],
        "line_id": np.where(det["kind"] == 2, b"n/a", np.where(is_line, _line_ids(det, o), b"cont")),
        "p_conf": np.where(det["selected"], src["p_conf"], 0.2), "p_cnn": np.where(det["selected"], src["p_cnn"], 0.1),
        "RA_det": core["ra"], "DEC_det": core["dec"],
        "src_separation": np.hypot((core["ra"] - src["RA"]) * np.cos(np.deg2rad(core["dec"])), core["dec"] - src["DEC"]),
        "n_members": src["n_members"], "gmag": src["gmag"], "Av": src["Av"], "ebv": src["Av"] / 3.1,
        "wave": core["wave"], "wave_err": core["wave_err"],
        "flux": core["flux"] * dust, "flux_err": core["flux_err"] * dust,
        "flux_obs": core["flux"], "flux_obs_err": core["flux_err"],
        "flux_aper": BAD_FLOAT, "flux_aper_err": BAD_FLOAT, "flux_aper_obs": BAD_FLOAT, "flux_aper_obs_err": BAD_FLOAT,
        "flag_aper": -1, "sigma": core["linewidth"], "sigma_err": core["linewidth_err"],
        "continuum": core["continuum"] * dust, "continuum_err": core["continuum_err"] * dust,
        "continuum_obs": core["continuum"], "continuum_obs_err": core["continuum_err"],
        "sn": core["sn"], "sn_err": core["sn_err"], "chi2": core["chi2"], "chi2_err": core["chi2_err"],
        "flux_noise_1sigma_obs": core["flux_noise_1sigma"], "flux_noise_1sigma": core["flux_noise_1sigma"] * dust,
        "apcor": core["apcor"],
        "counterpart_mag": BAD_FLOAT, "counterpart_mag_err": BAD_FLOAT, "counterpart_dist": BAD_FLOAT,
        "counterpart_catalog_name": BAD_STRING, "counterpart_filter_name": BAD_STRING,
        "plya_classification": np.where(src["source_type"] == b"lae", 0.9, 0.1),
        "z_elixer": src["z_hetdex"], "best_pz": np.where(det["selected"], 0.9, 0.3),
        "z_diagnose": np.where(is_line, BAD_FLOAT, src["z_hetdex"]),
        "cls_diagnose": np.select([src["source_type"] == b"star", src["source_type"] == b"agn", ~is_line],
                                  [b"STAR", b"QSO", b"GALAXY"], b"UNKNOWN"),
        "stellartype": np.where(src["source_type"] == b"star", b"G", b""),
        "agn_flag": np.where(src["source_type"] == b"agn", 1.0, np.where(is_line, 0.0, -1.0)),
        "wave_group_id": src["source_id"], "wave_group_a": 1.5 / 3600, "wave_group_b": 1.0 / 3600,
        "wave_group_pa": 0.0, "wave_group_ra": src["RA"], "wave_group_dec": src["DEC"], "wave_group_wave": core["wave"],
        "fwhm": shots["fwhm_virus"], "throughput": shots["response_4540"],
        "shotid": core["shotid"], "field": shots["field"], "date": core["date"], "obsid": core["obsid"],
        "multiframe": fibre.multiframe, "fiber_id": fibre.fiber_id, "weight": 0.3,
        "x_raw": (fibre.fibnum * 9).astype(np.int32), "y_raw": ((core["wave"] - 3470) / 2).astype(np.int32),
        "x_ifu": core["x_ifu"], "y_ifu": core["y_ifu"],
        "ra_aper": BAD_FLOAT, "dec_aper": BAD_FLOAT, "catalog_name_aper": BAD_STRING, "filter_name_aper": BAD_STRING,
        "dist_aper": BAD_FLOAT, "mag_aper": BAD_FLOAT, "mag_aper_err": BAD_FLOAT,
        "major": BAD_FLOAT, "minor": BAD_FLOAT, "theta": BAD_FLOAT,
    }
    missing = set(DETINFO_DTYPE.names) ^ set(values)
    assert not missing, f"detinfo columns not filled or unknown: {sorted(missing)}"
    for name, v in values.items():
        d[name] = v
    return d


def _line_ids(det: np.ndarray, obj: np.ndarray) -> np.ndarray:
    names = {1215.67: b"LyA", 3727.8: b"OII", 3868.76: b"NeIII", 4101.74: b"Hd", 4340.47: b"Hg", 4861.33: b"Hb",
             4958.91: b"OIII4959", 5006.84: b"OIII5007", 1240.81: b"NV", 1549.06: b"CIV", 1640.42: b"HeII",
             1908.73: b"CIII", 2798.75: b"MgII"}
    rest = obj["line_rest"][np.arange(len(det)), np.maximum(det["line"], 0)]
    lookup = np.array(list(names.values()), dtype="S20")
    keys = np.array(list(names.keys()), dtype=np.float32)
    k = np.abs(rest[:, None] - keys[None, :]).argmin(axis=1)
    return lookup[k]


def write_hpsc2_files(mock: Mock, out: Path) -> None:
    by_obs, core, truth = catalog_rows(mock)
    detectid = core["detectid"]
    del core  # the rest of the selected detections' records is in by_obs already
    # Catalog order: z_hetdex descending, identically in the main table and the spec file;
    # rows are taken through the order in chunks rather than copied whole.
    order = np.argsort(-by_obs["z_hetdex"].astype(np.float64), kind="stable")
    chunks = [order[a : a + SPECTRA_CHUNK] for a in range(0, len(order), SPECTRA_CHUNK)]
    (out / HPSC2_DIR).mkdir(parents=True, exist_ok=True)
    write_hpsc2_main(out / HPSC2_MAIN, (by_obs[c] for c in chunks), nrows=len(order))
    n_det = len(mock.sky.srcdets)
    blocks = (detinfo_rows(mock, by_obs, np.arange(a, min(a + DETINFO_CHUNK, n_det))) for a in range(0, n_det, DETINFO_CHUNK))
    write_detinfo(out / HPSC2_DETINFO, blocks, nrows=n_det)
    with Hpsc2SpecWriter(out / HPSC2_SPEC, len(order)) as writer:
        start = 0
        for c in chunks:
            rows = by_obs[c]
            writer.write_info(rows)
            spec, err = detection_spectra(mock, detectid[c], truth[c])
            dust = S.dust_correction(rows["Av"])
            writer.write_spectra(start, spec * dust, err * dust)
            start += len(c)


def write_detect_file(mock: Mock, out: Path, release: str, det_type: str) -> None:
    shots = mock.survey.shots
    name = f"detect_{release}.h5" if det_type == "line" else f"cont_{release}.h5"
    spectra_per_shot = mock.scale.spectra_per_shot
    with DetectFileWriter(out / "detect" / name, release, det_type, mock.wdcor, mock.scale.spectra_note) as writer:
        for i in np.flatnonzero(shots["survey"] == release.encode()):
            core, truth = shot_detections(mock, int(i), det_type)
            rows = np.ones(len(core), dtype=bool)
            if spectra_per_shot is not None:
                rows[spectra_per_shot[det_type == "cont"]:] = False  # catalog sources come first in each shot
            spec, err = detection_spectra(mock, core["detectid"][rows], truth[rows])
            writer.append(core, spec, err, rows, np.random.default_rng([mock.seed, 8, int(i), det_type == "line"]))


def write_detect_index(mock: Mock, out: Path) -> None:
    shots = mock.survey.shots
    with DetectIndexWriter(out / "detect" / "detect_index_hdr5.h5") as writer:
        for release in RELEASE_DIGIT:
            for det_type in ("line", "cont"):
                for i in np.flatnonzero(shots["survey"] == release):
                    writer.append(shot_detections(mock, int(i), det_type)[0])


def cube_targets(mock: Mock) -> list[int]:
    """IFU rows that get a cube: all at tiny; else the example IFUs plus a few per shot."""
    ifus, sky = mock.survey.ifus, mock.sky
    if mock.scale.cubes_per_shot is None:
        return list(range(len(ifus)))
    chosen: set[int] = set()
    examples = np.flatnonzero(sky.objects["example"] != b"")
    for k in np.flatnonzero(np.isin(sky.observations["object"], examples)):
        chosen.add(int(sky.observations["ifu_index"][k]))
    if mock.scale.cubes_per_shot:
        starts = np.searchsorted(ifus["shot_index"], np.arange(len(mock.survey.shots)))
        for s in starts:
            chosen.update(range(s, min(s + mock.scale.cubes_per_shot, len(ifus))))
    return sorted(chosen)


def write_cube_file(mock: Mock, out: Path, k: int) -> None:
    shots, ifus, sky = mock.survey.shots, mock.survey.ifus, mock.sky
    ifu = ifus[k]
    i = int(ifu["shot_index"])
    shot = {name: _plain(shots[name][i]) for name in shots.dtype.names}
    inside = np.flatnonzero(sky.observations["ifu_index"] == k)
    objects = sky.objects[sky.observations["object"][inside]]
    noise_core, _ = noise_detections(mock, i, "line")
    rejected = noise_core[noise_core["ifuslot"] == ifu["ifuslot"]]
    path = cube_path(out, int(ifu["shotid"]), ifu["ifuslot"].decode())
    path.parent.mkdir(parents=True, exist_ok=True)
    write_cube(
        path, shot, float(ifu["ra_cen"]), float(ifu["dec_cen"]),
        sources_radec=np.column_stack([objects["ra"], objects["dec"]]),
        sources_flux=S.object_spectra(objects),
        noise_per_bin=(2.0 * S.error_curve(shots["noise_scale"][i]) / APERTURE_NOISE_GAIN).astype(np.float32),
        flags={name: float(ifu[name]) for name in ifus.dtype.names if name.startswith("flag")},
        rejected_detections=np.column_stack([rejected["ra"], rejected["dec"], rejected["wave"]]),
        rng=np.random.default_rng([mock.seed, 9, k]),
    )


def _plain(value):
    if isinstance(value, bytes | np.bytes_):
        return value.decode()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value.item() if hasattr(value, "item") else value


# --------------------------------------------------------------------------------------------
# Orchestration

_MOCK: Mock | None = None  # inherited by forked workers


def _run_task(task: tuple) -> tuple[str, float]:
    assert _MOCK is not None
    t0 = time.perf_counter()
    kind, out, *args = task
    {"hpsc2": write_hpsc2_files, "detect": write_detect_file, "index": write_detect_index,
     "cubes": _write_cubes}[kind](_MOCK, Path(out), *args)
    label = kind if kind == "cubes" else f"{kind} {' '.join(map(str, args))}".strip()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return f"{label} (peak RSS of this worker so far {peak_mb:.0f} MB)", time.perf_counter() - t0


def _write_cubes(mock: Mock, out: Path, targets: list[int]) -> None:
    for k in targets:
        write_cube_file(mock, out, k)


class MockError(Exception):
    """A mock cannot be written where or how it was asked."""


def generate(out_dir: str | os.PathLike, scale: str = "tiny", seed: int = 0, *, overwrite: bool = False,
             workers: int | None = None, cubes_per_shot: int | None | str = "scale", log=print) -> Path:
    """Write a mock PDR1 tree to ``out_dir``; the tree appears there only once complete.

    ``cubes_per_shot``: cubes written per shot besides the example objects' IFUs (None: every IFU);
    by default the scale's choice.
    """
    global _MOCK
    if scale not in SCALES:
        raise MockError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    chosen = SCALES[scale]
    if cubes_per_shot != "scale":
        if cubes_per_shot is not None and (not isinstance(cubes_per_shot, int) or cubes_per_shot < 0):
            raise MockError(f"cubes per shot must be 'all' or a whole number >= 0, got {cubes_per_shot!r}")
        chosen = dataclasses.replace(chosen, cubes_per_shot=cubes_per_shot)
    out = Path(out_dir).absolute()
    if out.exists() and not out.is_dir():
        raise MockError(f"{out} exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise MockError(f"{out} exists and is not empty; pass --overwrite to replace it")
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MockError(f"cannot create {parent}: {exc.strerror}") from exc
    if not os.access(parent, os.W_OK):
        raise MockError(f"{parent} is not writable")
    staging = parent / f".{out.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "detect").mkdir(parents=True)

    t0 = time.perf_counter()
    wdcor = write_wdcor(staging / "detect" / "wdcor.txt")
    _MOCK = mock = make_plan(chosen, seed, wdcor)
    log(f"plan: {len(mock.survey.shots)} shots, {len(mock.survey.ifus)} IFUs, "
        f"{len(mock.sky.observations)} HPSC2 rows, "
        f"{int(mock.sky.noise_lines.sum() + mock.sky.noise_conts.sum()) + len(mock.sky.srcdets)} detections "
        f"({time.perf_counter() - t0:.1f} s)")
    write_ifu_index_file(mock, staging)

    tasks: list[tuple] = [("hpsc2", str(staging))]
    tasks += [("detect", str(staging), r.decode(), t) for r in RELEASE_DIGIT for t in ("line", "cont")]
    tasks.append(("index", str(staging)))
    targets = cube_targets(mock)
    n_cube_tasks = max(1, min(len(targets), 2 * (workers or 2)))
    tasks += [("cubes", str(staging), targets[j::n_cube_tasks]) for j in range(n_cube_tasks) if targets[j::n_cube_tasks]]
    workers = workers or min(2, os.cpu_count() or 1)
    try:
        if workers > 1:
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                for name, seconds in pool.imap_unordered(_run_task, tasks):
                    log(f"  wrote {name} ({seconds:.1f} s)")
        else:
            for task in tasks:
                name, seconds = _run_task(task)
                log(f"  wrote {name} ({seconds:.1f} s)")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        _MOCK = None

    if out.exists():
        old = parent / f".{out.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        staging.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(out)
    log(f"mock PDR1 ({scale}, seed {seed}) written to {out} in {time.perf_counter() - t0:.1f} s")
    return out
