"""The mock sky: physical objects, their observations in shots, and the detections they give.

One physical object observed in N shots gives N HPSC2 rows (source observations) with positions
jittered by the astrometric error. Each observation yields line detections (every line bright
enough, the main line always) or a continuum detection, plus low-S/N candidates; the raw
databases also hold many noise detections that never reach the catalog. All ids are assigned per
shot in shotid order, so any shot's detections can be rebuilt on their own from the plan.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dexdb import constants as C
from dexdb.geometry import frame_to_radec, radec_to_frame
from dexdb.mock import spectra as S
from dexdb.mock.scales import Scale
from dexdb.mock.survey import EXAMPLES, SLOT_INDEX, SLOTS, Survey

ASTROMETRIC_JITTER_ARCSEC = 0.3
IFU_HALF_WIDTH_ARCSEC = 24.0  # where fibres give full coverage
RELEASE_DIGIT = {b"hdr3": 3, b"hdr4": 4, b"hdr5": 5}
TYPE_FRACTIONS = np.array([0.393, 0.453, 0.017, 0.018, 0.139])  # lae oii agn lzg star (HPSC2 counts)

OBJECT_DTYPE = np.dtype(
    [
        ("otype", "u1"), ("z", "f8"), ("ra", "f8"), ("dec", "f8"), ("gmag", "f4"), ("av", "f4"),
        ("cont_4500", "f4"), ("cont_slope", "f4"), ("temperature", "f4"),
        ("line_rest", "f4", (S.MAX_LINES,)), ("line_sigma", "f4", (S.MAX_LINES,)),
        ("line_flux", "f4", (S.MAX_LINES,)), ("main_line", "i1"), ("pointing", "i4"), ("example", "S20"),
    ]
)

OBS_DTYPE = np.dtype(
    [
        ("source_id", "i8"), ("object", "i8"), ("shot_index", "i4"), ("ifu_index", "i8"),
        ("ra", "f8"), ("dec", "f8"), ("x_ifu", "f4"), ("y_ifu", "f4"),
    ]
)

#: Detections that belong to catalog sources. kind: 0 line of the object, 1 continuum, 2 candidate.
SRCDET_DTYPE = np.dtype(
    [
        ("obs", "i8"), ("kind", "i1"), ("line", "i1"), ("wave", "f8"), ("flux", "f4"), ("sigma", "f4"),
        ("selected", "?"), ("detectid", "i8"),
    ]
)


@dataclass
class Sky:
    objects: np.ndarray  # OBJECT_DTYPE
    observations: np.ndarray  # OBS_DTYPE, sorted by shot then IFU
    srcdets: np.ndarray  # SRCDET_DTYPE, sorted by shot, then line before continuum, then obs
    shot_obs: np.ndarray  # observations of shot i: shot_obs[i]:shot_obs[i+1]
    shot_srcdets: np.ndarray  # the same for srcdets
    noise_lines: np.ndarray  # per shot, number of noise line detections
    noise_conts: np.ndarray  # per shot, number of noise continuum detections
    line_id0: np.ndarray  # per shot, first line detectid
    cont_id0: np.ndarray  # per shot, first continuum detectid
    n_src_lines: np.ndarray  # per shot, source line detections
    n_src_conts: np.ndarray


def gmag_to_flambda(gmag, wave=4700.0):
    """AB magnitude -> flux density in 1e-17 erg/s/cm2/A at ``wave``."""
    fnu = 10.0 ** (-0.4 * (np.asarray(gmag, dtype=np.float64) + 48.6))
    return fnu * 2.99792458e18 / wave**2 / 1e-17


def _object_params(rng, otype: np.ndarray, objects: np.ndarray) -> None:
    n = len(otype)
    z = np.zeros(n)
    gmag = np.zeros(n)
    slope = np.zeros(n)
    main_flux = np.zeros(n)
    sig_kms = rng.uniform(80, 250, n)  # line widths of star-forming galaxies
    for code, (zlo, zhi), (glo, ghi), (slo, shi) in (
        (S.LAE, (1.92, 3.48), (24.0, 27.0), (-2.5, -1.0)),
        (S.OII, (0.02, 0.47), (20.0, 24.0), (-1.0, 1.0)),
        (S.AGN, (1.9, 3.4), (18.5, 22.0), (-2.0, -1.0)),
        (S.LZG, (0.05, 0.45), (19.5, 22.5), (1.0, 2.0)),
        (S.STAR, (0.0, 0.0), (15.0, 21.0), (0.0, 0.0)),
    ):
        sel = otype == code
        k = int(sel.sum())
        z[sel] = rng.uniform(zlo, zhi, k)
        gmag[sel] = rng.uniform(glo, ghi, k)
        slope[sel] = rng.uniform(slo, shi, k)
    star = otype == S.STAR
    z[star] = rng.normal(0, 1e-4, star.sum())
    agn = otype == S.AGN
    low_agn = agn & (rng.random(n) < 0.2)  # MgII-selected AGN
    z[low_agn] = rng.uniform(0.3, 0.95, low_agn.sum())
    sig_kms[agn] = rng.uniform(850, 2100, agn.sum())  # FWHM 2000-5000 km/s

    lae, oii = otype == S.LAE, otype == S.OII
    main_flux[lae] = np.minimum(8.0 * (1 - rng.random(lae.sum())) ** (-1 / 1.5), 400)
    main_flux[oii] = rng.lognormal(np.log(18), 0.7, oii.sum())
    main_flux[agn] = rng.lognormal(np.log(120), 0.6, agn.sum())

    objects["otype"], objects["z"], objects["gmag"] = otype, z, gmag
    objects["cont_slope"] = slope
    objects["cont_4500"] = gmag_to_flambda(gmag) * (4500 / 4700) ** slope
    objects["temperature"] = np.where(star, rng.uniform(3800, 11000, n), 0)
    objects["av"] = rng.uniform(0.02, 0.09, n)
    objects["main_line"] = -1
    ratio_jitter = rng.uniform(0.6, 1.4, (n, S.MAX_LINES))
    for code, lines in S.LINES.items():
        sel = np.flatnonzero(otype == code)
        for j, (rest, ratio) in enumerate(lines):
            obs_wave = rest * (1 + z[sel])
            inside = (obs_wave > C.WAVE[0] + 10) & (obs_wave < C.WAVE[-1] - 10)
            r = ratio * ratio_jitter[sel, j] if j else np.ones(len(sel))
            if code == S.OII and rest in (C.OIII_4959, C.OIII_5007):
                r = r * rng.uniform(0.3, 2.5, len(sel))
            objects["line_rest"][sel, j] = rest
            objects["line_sigma"][sel, j] = obs_wave * sig_kms[sel] / 2.99792458e5
            objects["line_flux"][sel, j] = np.where(inside, main_flux[sel] * r, 0.0)
    # The main line is the brightest one on the grid (MgII for low-z AGN).
    has_line = objects["line_flux"].max(axis=1) > 0
    objects["main_line"][has_line] = objects["line_flux"][has_line].argmax(axis=1)


def _example_params(objects: np.ndarray, index: int, key: str) -> None:
    o = objects[index]
    o["example"] = key
    if key == "lyman_alpha_blob":  # bright, spatially extended in reality; here a bright Lya line
        o["line_flux"][0] = 150.0
        o["line_sigma"][0] = 5.5
        o["main_line"] = 0
    elif key == "cosmos_agn":
        o["gmag"] = 19.8
        o["cont_4500"] = gmag_to_flambda(19.8) * (4500 / 4700) ** o["cont_slope"]
    elif key == "oii_galaxy":
        o["gmag"] = 18.2
        o["cont_4500"] = gmag_to_flambda(18.2) * (4500 / 4700) ** o["cont_slope"]
    objects[index] = o


def make_sky(survey: Survey, scale: Scale, seed: int) -> Sky:
    rng = np.random.default_rng([seed, 2])
    shots, ifus = survey.shots, survey.ifus

    # Objects live per pointing, inside the IFUs of its first epoch.
    first_shot_of_pointing: dict[int, int] = {}
    for i, p in enumerate(shots["pointing"]):
        first_shot_of_pointing.setdefault(int(p), i)
    ifu_start = np.searchsorted(ifus["shot_index"], np.arange(len(shots) + 1))
    obj_pointing, obj_dx, obj_dy, obj_example = [], [], [], []
    examples_by_shot = {rows[0]: key for key, rows in survey.example_shots.items()}
    for p, i in first_shot_of_pointing.items():
        slots = ifus["ifuslot"][ifu_start[i] : ifu_start[i + 1]]
        counts = rng.poisson(scale.sources_per_ifu, len(slots))
        for slot, k in zip(slots, counts):
            _, sdx, sdy = SLOTS[SLOT_INDEX[slot.decode()]]
            obj_dx.append(sdx + rng.uniform(-IFU_HALF_WIDTH_ARCSEC, IFU_HALF_WIDTH_ARCSEC, k))
            obj_dy.append(sdy + rng.uniform(-IFU_HALF_WIDTH_ARCSEC, IFU_HALF_WIDTH_ARCSEC, k))
            obj_pointing.append(np.full(k, p))
            obj_example.append(np.full(k, b""))
        if i in examples_by_shot:
            key = examples_by_shot[i]
            ex = next(e for e in EXAMPLES if e.key == key)
            dx, dy = radec_to_frame(shots["ra"][i], shots["dec"][i], shots["pa"][i], ex.ra, ex.dec)
            obj_dx.append(np.atleast_1d(dx))
            obj_dy.append(np.atleast_1d(dy))
            obj_pointing.append(np.array([p]))
            obj_example.append(np.array([key.encode()]))

    pointing = np.concatenate(obj_pointing).astype(np.int32)
    dx, dy = np.concatenate(obj_dx), np.concatenate(obj_dy)
    example = np.concatenate(obj_example)
    objects = np.zeros(len(pointing), dtype=OBJECT_DTYPE)
    objects["pointing"] = pointing
    first = np.array([first_shot_of_pointing[int(p)] for p in pointing], dtype=np.int64)
    for i in np.unique(first):
        sel = first == i
        objects["ra"][sel], objects["dec"][sel] = frame_to_radec(
            shots["ra"][i], shots["dec"][i], shots["pa"][i], dx[sel], dy[sel]
        )
    otype = rng.choice(len(S.TYPES), len(objects), p=TYPE_FRACTIONS / TYPE_FRACTIONS.sum()).astype(np.uint8)
    is_example = example != b""
    for k in np.flatnonzero(is_example):
        ex = next(e for e in EXAMPLES if e.key == example[k].decode())
        otype[k] = S.TYPES.index(ex.otype)
    # Every scale shows every HPSC2 type, however few objects it has.
    free = np.flatnonzero(~is_example)
    for code in range(len(S.TYPES)):
        if not (otype == code).any() and len(free) > code:
            otype[free[code]] = code
    _object_params(rng, otype, objects)
    for k in np.flatnonzero(is_example):
        ex = next(e for e in EXAMPLES if e.key == example[k].decode())
        objects["ra"][k], objects["dec"][k] = ex.ra, ex.dec
        objects["z"][k] = ex.z
        _recompute_lines(objects, k)
        _example_params(objects, k, ex.key)

    observations = _observe(rng, survey, objects)
    return _plan_detections(rng, survey, scale, objects, observations, seed)


def _recompute_lines(objects: np.ndarray, k: int) -> None:
    """Re-place the lines of object k after its redshift was set by hand."""
    o = objects[k]
    main = max(1.0, float(o["line_flux"].max()))
    for j, (rest, ratio) in enumerate(S.LINES.get(int(o["otype"]), ())):
        obs_wave = rest * (1 + o["z"])
        o["line_rest"][j] = rest
        o["line_sigma"][j] = obs_wave * (1500.0 if o["otype"] == S.AGN else 150.0) / 2.99792458e5
        o["line_flux"][j] = main * ratio if C.WAVE[0] + 10 < obs_wave < C.WAVE[-1] - 10 else 0.0
    o["main_line"] = int(o["line_flux"].argmax()) if o["line_flux"].max() > 0 else -1
    objects[k] = o


def _observe(rng, survey: Survey, objects: np.ndarray) -> np.ndarray:
    """One observation per (object, shot of its pointing) where the object falls in an IFU."""
    shots, ifus = survey.shots, survey.ifus
    ifu_start = np.searchsorted(ifus["shot_index"], np.arange(len(shots) + 1))
    order = np.argsort(objects["pointing"], kind="stable")
    obj_start = np.searchsorted(objects["pointing"][order], np.arange(shots["pointing"].max() + 2))
    chunks = []
    for i in range(len(shots)):
        p = shots["pointing"][i]
        members = order[obj_start[p] : obj_start[p + 1]]
        if len(members) == 0:
            continue
        sx, sy = radec_to_frame(shots["ra"][i], shots["dec"][i], shots["pa"][i], objects["ra"][members], objects["dec"][members])
        lo, hi = ifu_start[i], ifu_start[i + 1]
        offs = survey.slot_offsets[lo:hi]
        # nearest IFU centre in the frame, then keep objects inside its covered square
        d = (sx[:, None] - offs[None, :, 0]) ** 2 + (sy[:, None] - offs[None, :, 1]) ** 2
        nearest = d.argmin(axis=1)
        x_ifu = sx - offs[nearest, 0]
        y_ifu = sy - offs[nearest, 1]
        inside = (np.abs(x_ifu) < 25.0) & (np.abs(y_ifu) < 25.0)
        k = int(inside.sum())
        if not k:
            continue
        obs = np.zeros(k, dtype=OBS_DTYPE)
        obs["object"] = members[inside]
        obs["shot_index"] = i
        obs["ifu_index"] = lo + nearest[inside]
        jitter = rng.normal(0, ASTROMETRIC_JITTER_ARCSEC, (k, 2))
        obs["ra"], obs["dec"] = frame_to_radec(
            objects["ra"][obs["object"]], objects["dec"][obs["object"]], shots["pa"][i], jitter[:, 0], jitter[:, 1]
        )
        obs["x_ifu"], obs["y_ifu"] = x_ifu[inside] + jitter[:, 0], y_ifu[inside] + jitter[:, 1]
        chunks.append(obs[np.argsort(obs["ifu_index"], kind="stable")])
    observations = np.concatenate(chunks)
    observations["source_id"] = 2_100_000_000 + np.arange(1, len(observations) + 1)
    return observations


def shot_error_curve(shots: np.ndarray, shot_index) -> np.ndarray:
    return S.error_curve(shots["noise_scale"][shot_index])


def _plan_detections(rng, survey, scale, objects, observations, seed) -> Sky:
    shots, ifus = survey.shots, survey.ifus
    n_obs = len(observations)
    obj = objects[observations["object"]]
    noise = shots["noise_scale"][observations["shot_index"]]

    rows = []
    # line detections: every line of the object on the grid at S/N >= 5, the main line always
    for j in range(S.MAX_LINES):
        flux = obj["line_flux"][:, j]
        wave = obj["line_rest"][:, j] * (1 + obj["z"])
        live = flux > 0
        if not live.any():
            continue
        ferr = S.line_flux_error(S.error_at(noise, wave), obj["line_sigma"][:, j])
        with np.errstate(invalid="ignore", divide="ignore"):
            keep = live & ((flux / ferr >= 5.0) | (obj["main_line"] == j))
        idx = np.flatnonzero(keep)
        r = np.zeros(len(idx), dtype=SRCDET_DTYPE)
        r["obs"], r["kind"], r["line"] = idx, 0, j
        r["wave"], r["flux"], r["sigma"] = wave[idx], flux[idx], obj["line_sigma"][idx, j]
        r["selected"] = obj["main_line"][idx] == j
        rows.append(r)
    cont = np.flatnonzero(np.isin(obj["otype"], (S.STAR, S.LZG)))
    r = np.zeros(len(cont), dtype=SRCDET_DTYPE)
    r["obs"], r["kind"], r["line"], r["selected"] = cont, 1, -1, True
    r["wave"], r["sigma"] = 4500.0, 0.0
    rows.append(r)
    # low-S/N candidates around LAEs (members of the source group, never selected)
    n_cand = np.where(obj["otype"] == S.LAE, rng.poisson(0.8, n_obs), 0)
    cand_obs = np.repeat(np.arange(n_obs), n_cand)
    r = np.zeros(len(cand_obs), dtype=SRCDET_DTYPE)
    r["obs"], r["kind"], r["line"] = cand_obs, 2, -1
    r["wave"] = rng.uniform(3500, 5510, len(cand_obs))
    r["sigma"] = rng.uniform(1.5, 3.5, len(cand_obs))
    r["flux"] = 4.5 * S.line_flux_error(S.error_at(noise[cand_obs], r["wave"]), r["sigma"]) * rng.uniform(0.9, 1.3, len(cand_obs))
    rows.append(r)
    srcdets = np.concatenate(rows)
    shot_of = observations["shot_index"][srcdets["obs"]]
    is_cont = (srcdets["kind"] == 1).astype(np.int8)
    order = np.lexsort((srcdets["line"], srcdets["kind"], srcdets["obs"], is_cont, shot_of))
    srcdets, shot_of, is_cont = srcdets[order], shot_of[order], is_cont[order]

    n_shots = len(shots)
    n_ifu = np.bincount(ifus["shot_index"], minlength=n_shots)
    noise_rng = np.random.default_rng([seed, 4])
    noise_lines = noise_rng.poisson(scale.noise_detections_per_ifu * n_ifu)
    noise_conts = noise_rng.poisson(0.05 * scale.noise_detections_per_ifu * n_ifu)
    n_src_lines = np.bincount(shot_of[is_cont == 0], minlength=n_shots)
    n_src_conts = np.bincount(shot_of[is_cont == 1], minlength=n_shots)

    # detectids: per release, line ids from release*1e9 + 1, continuum from release*1e9 + 9e7 + 1
    line_id0 = np.zeros(n_shots, dtype=np.int64)
    cont_id0 = np.zeros(n_shots, dtype=np.int64)
    for release, digit in RELEASE_DIGIT.items():
        sel = shots["survey"] == release
        n_line = (n_src_lines + noise_lines)[sel]
        n_cont = (n_src_conts + noise_conts)[sel]
        line_id0[sel] = digit * 1_000_000_000 + 1 + np.concatenate([[0], np.cumsum(n_line)[:-1]])
        cont_id0[sel] = digit * 1_000_000_000 + 90_000_000 + 1 + np.concatenate([[0], np.cumsum(n_cont)[:-1]])
    shot_srcdets = np.searchsorted(shot_of, np.arange(n_shots + 1))
    for i in range(n_shots):
        lo, hi = shot_srcdets[i], shot_srcdets[i + 1]
        nl = n_src_lines[i]
        srcdets["detectid"][lo : lo + nl] = line_id0[i] + np.arange(nl)
        srcdets["detectid"][lo + nl : hi] = cont_id0[i] + np.arange(hi - lo - nl)
    shot_obs = np.searchsorted(observations["shot_index"], np.arange(n_shots + 1))
    return Sky(objects, observations, srcdets, shot_obs, shot_srcdets, noise_lines, noise_conts,
               line_id0, cont_id0, n_src_lines, n_src_conts)
