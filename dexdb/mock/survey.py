"""The mock survey: shots in the six fields and the IFUs of each shot.

Shots that observe the same pointing (repeat epochs) share their pointing, position angle and IFU
layout up to a few arcsec of dither, so a source is seen again in the same IFU, as in HETDEX.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dexdb import constants as C
from dexdb.geometry import frame_to_radec
from dexdb.mock.scales import Scale

IFU_PITCH_ARCSEC = 100.0

SHOT_DTYPE = np.dtype(
    [
        ("shotid", "i8"), ("field", "S12"), ("objid", "S18"), ("date", "i4"), ("obsid", "i4"),
        ("ra", "f8"), ("dec", "f8"), ("pa", "f8"), ("n_ifu", "i4"), ("fwhm_virus", "f4"),
        ("fwhm_virus_err", "f4"), ("response_4540", "f4"), ("relflux_virus", "f4", (3,)),
        ("ambtemp", "f4"), ("datevobs", "S12"), ("dewpoint", "f4"), ("expnum", "i4", (3,)),
        ("exptime", "f4", (3,)), ("humidity", "f4"), ("mjd", "f4", (3,)), ("obsind", "i4"),
        ("pressure", "f4"), ("structaz", "f4"), ("time", "S7"), ("trajcdec", "f4"),
        ("trajcpa", "f4"), ("trajcra", "f4"), ("nstars_fit_fwhm", "i4"), ("fluxlimit_4600", "f4"),
        ("survey", "S4"), ("pointing", "i4"), ("noise_scale", "f4"),
    ]
)

IFU_DTYPE = np.dtype(
    [
        ("shot_index", "i4"), ("shotid", "i8"), ("ifuslot", "S3"), ("ifuid", "S3"), ("specid", "S3"),
        ("ra_cen", "f4"), ("dec_cen", "f4"), ("flag", "f4"), ("flag_badamp", "f4"),
        ("flag_badfib", "f4"), ("flag_meteor", "f4"), ("flag_satellite", "f4"), ("flag_shot", "f4"),
        ("flag_throughput", "f4"),
    ]
)


def _all_slots() -> list[tuple[str, float, float]]:
    """The 78 IFU slots: (ifuslot, dx, dy) with offsets in arcsec along the cube pixel axes."""
    skipped = {(1, 1), (1, 9), (10, 1), (10, 9), (1, 5), (10, 5)} | {(c, r) for c in (5, 6) for r in (4, 5, 6)}
    return [
        (f"{col:02d}{row}", (col - 5.5) * IFU_PITCH_ARCSEC, (row - 5.0) * IFU_PITCH_ARCSEC)
        for col in range(1, 11)
        for row in range(1, 10)
        if (col, row) not in skipped
    ]


SLOTS = _all_slots()
SLOT_INDEX = {name: i for i, (name, _, _) in enumerate(SLOTS)}
_hw = np.random.default_rng(20170101)
#: Spectrograph and IFU hardware ids are fixed per slot, as on the telescope.
SLOT_SPECID = {s[0]: f"{v:03d}" for s, v in zip(SLOTS, _hw.permutation(np.arange(1, 100))[: len(SLOTS)])}
SLOT_IFUID = {s[0]: f"{v:03d}" for s, v in zip(SLOTS, _hw.permutation(np.arange(1, 600))[: len(SLOTS)])}

#: Field footprints as (RA extent on the sky, Dec extent) in degrees around the field centre.
FIELD_EXTENT = {
    "dex-spring": (28.0, 14.0),
    "dex-fall": (30.0, 5.0),
    "nep": (2.6, 2.6),
    "cosmos": (1.5, 1.5),
    "ssa22": (0.94, 0.94),
    "goods-n": (0.4, 0.4),
}


@dataclass(frozen=True)
class ExampleObject:
    """A standard object of the PDR1 notes, placed at its coordinates in ``epochs`` shots."""

    key: str
    field: str
    ra: float
    dec: float
    z: float
    otype: str
    epochs: int
    ifuslot: str
    first_shotid: int | None = None


EXAMPLES = (
    ExampleObject("cosmos_agn", "cosmos", 150.23189, 2.363963, 1.92, "agn", 9, "073"),
    ExampleObject("lyman_alpha_blob", "dex-spring", 228.78581, 51.268036, 2.53, "lae", 1, "045"),
    ExampleObject("oii_galaxy", "dex-spring", 215.68578, 52.11736, 0.067, "oii", 1, "047"),
    ExampleObject("test_cube", "dex-spring", 199.50, 51.70, 0.35, "oii", 1, "034", 20190405020),
)


@dataclass
class Survey:
    shots: np.ndarray  # SHOT_DTYPE, sorted by shotid
    ifus: np.ndarray  # IFU_DTYPE, grouped by shot
    slot_offsets: np.ndarray  # (len(ifus), 2) arcsec offsets of each IFU from its shot centre
    example_shots: dict[str, list[int]]  # example key -> shot indices


def _random_date(rng, n, lo=20170101, hi=20240731) -> np.ndarray:
    start = np.datetime64(f"{str(lo)[:4]}-{str(lo)[4:6]}-{str(lo)[6:]}")
    stop = np.datetime64(f"{str(hi)[:4]}-{str(hi)[4:6]}-{str(hi)[6:]}")
    days = start + rng.integers(0, int((stop - start).astype(int)) + 1, n).astype("timedelta64[D]")
    s = np.datetime_as_string(days)
    return np.array([int(x.replace("-", "")) for x in s], dtype=np.int32)


def _release(date: int) -> str:
    for name, (lo, hi) in C.RELEASES.items():
        if lo <= date <= hi:
            return name
    raise ValueError(f"date {date} is outside PDR1")


def _mjd(date: int) -> float:
    d = np.datetime64(f"{str(date)[:4]}-{str(date)[4:6]}-{str(date)[6:]}")
    return float((d - np.datetime64("1858-11-17")).astype(int))


def make_survey(scale: Scale, seed: int) -> Survey:
    rng = np.random.default_rng([seed, 1])
    fields = list(C.FIELDS)
    weights = np.array([C.FIELDS[f][2] for f in fields], dtype=float)
    weights /= weights.sum()

    # Pointings: (field, ra, dec, pa, n_epochs, slot names, example key)
    pointings: list[dict] = []
    for ex in EXAMPLES:
        pa = float(rng.uniform(0, 360))
        n_slots = max(scale.example_ifus_per_shot, 1)
        others = [s for s in SLOT_INDEX if s != ex.ifuslot]
        slots = [ex.ifuslot] + list(rng.choice(others, n_slots - 1, replace=False))
        # Put the object a few arcsec off the centre of its IFU.
        sdx, sdy = SLOTS[SLOT_INDEX[ex.ifuslot]][1:]
        ox, oy = rng.uniform(-8, 8, 2)
        ra0, dec0 = frame_to_radec(ex.ra, ex.dec, pa, -(sdx + ox), -(sdy + oy))
        pointings.append(dict(field=ex.field, ra=float(ra0), dec=float(dec0), pa=pa, epochs=ex.epochs,
                              slots=sorted(slots), example=ex.key, shotid=ex.first_shotid))
    shots_left = scale.survey_shots
    # Cover every field first (one epoch each), then draw fields by their share of the survey.
    unseen = [f for f in fields if f not in {ex.field for ex in EXAMPLES}]
    while shots_left > 0:
        first_of_field = bool(unseen)
        field = unseen.pop(0) if unseen else fields[rng.choice(len(fields), p=weights)]
        cra, cdec, _ = C.FIELDS[field]
        wra, wdec = FIELD_EXTENT[field]
        dec0 = float(np.clip(cdec + rng.uniform(-wdec / 2, wdec / 2), -89, 89))
        ra0 = float((cra + rng.uniform(-wra / 2, wra / 2) / np.cos(np.deg2rad(dec0))) % 360)
        epochs = 1
        if rng.random() < scale.repeat_fraction and not first_of_field:
            epochs = int(min(rng.choice([2, 2, 2, 3, 3, 4, 5, 6, 9]), shots_left))
        n_slots = int(rng.integers(scale.ifus_per_shot[0], scale.ifus_per_shot[1] + 1))
        slots = sorted(rng.choice(list(SLOT_INDEX), n_slots, replace=False))
        pointings.append(dict(field=field, ra=ra0, dec=dec0, pa=float(rng.uniform(0, 360)), epochs=epochs,
                              slots=slots, example=None, shotid=None))
        shots_left -= epochs

    shot_rows, ifu_rows, offsets, example_of_row = [], [], [], []
    used_ids: set[int] = set()
    for p_index, p in enumerate(pointings):
        for epoch in range(p["epochs"]):
            if p["shotid"] is not None and epoch == 0:
                shotid = p["shotid"]
            else:
                while True:
                    date = int(_random_date(rng, 1)[0])
                    shotid = date * 1000 + int(rng.integers(1, 30))
                    if shotid not in used_ids:
                        break
            used_ids.add(shotid)
            dither = rng.normal(0, 1.0, 2) if epoch else np.zeros(2)
            ra, dec = frame_to_radec(p["ra"], p["dec"], p["pa"], dither[0], dither[1])
            shot_rows.append((shotid, p_index, p, float(ra), float(dec)))
            example_of_row.append(p["example"])

    order = np.argsort([r[0] for r in shot_rows], kind="stable")
    shots = np.zeros(len(shot_rows), dtype=SHOT_DTYPE)
    example_shots: dict[str, list[int]] = {}
    for i, k in enumerate(order):
        shotid, p_index, p, ra, dec = shot_rows[k]
        date, obsid = divmod(shotid, 1000)
        s = shots[i]
        s["shotid"], s["date"], s["obsid"] = shotid, date, obsid
        s["field"] = p["field"]
        s["objid"] = f"DEX{p['field'][:2]}{p_index:04d}"
        s["ra"], s["dec"], s["pa"] = ra, dec, p["pa"]
        s["n_ifu"] = len(p["slots"])
        s["fwhm_virus"] = np.clip(rng.lognormal(np.log(1.8), 0.2), 1.1, 3.2)
        s["fwhm_virus_err"] = rng.uniform(0.02, 0.2)
        s["response_4540"] = np.clip(rng.normal(0.14, 0.03), 0.085, 0.22)
        s["relflux_virus"] = rng.normal(1.0, 0.03, 3)
        s["ambtemp"] = rng.uniform(-2, 28)
        s["datevobs"] = f"{date}v{obsid:03d}"
        s["dewpoint"] = s["ambtemp"] - rng.uniform(2, 20)
        s["expnum"] = (1, 2, 3)
        s["exptime"] = rng.uniform(360, 460, 3)
        mjd0 = _mjd(date) + rng.uniform(0.1, 0.45)
        s["mjd"] = mjd0 + np.array([0.0, 0.0055, 0.011])
        s["obsind"] = 1
        # Real tables carry large negative sentinels for a failed pressure reading.
        s["pressure"] = -99898.0 if rng.random() < 0.01 else rng.normal(797, 4)
        s["structaz"] = rng.choice([36.2, 323.8]) + rng.normal(0, 0.5)
        hh, mm, ss = rng.integers(1, 12), rng.integers(0, 60), rng.uniform(0, 60)
        s["time"] = f"{hh:02d}{mm:02d}{int(ss * 10):03d}"
        s["trajcra"], s["trajcdec"], s["trajcpa"] = ra, dec, p["pa"]
        s["nstars_fit_fwhm"] = rng.integers(3, 40)
        s["survey"] = _release(date)
        s["pointing"] = p_index
        s["noise_scale"] = (s["fwhm_virus"] / 1.8) * np.sqrt(0.14 / s["response_4540"])
        s["fluxlimit_4600"] = 5.5 * 0.35 * 2.7 * s["noise_scale"] / 2.0
        if p["example"]:
            example_shots.setdefault(p["example"], []).append(i)
        for slot in p["slots"]:
            _, sdx, sdy = SLOTS[SLOT_INDEX[slot]]
            ra_c, dec_c = frame_to_radec(ra, dec, p["pa"], sdx, sdy)
            flags = _ifu_flags(rng)
            ifu_rows.append((i, shotid, slot, SLOT_IFUID[slot], SLOT_SPECID[slot],
                             np.float32(ra_c), np.float32(dec_c), 1.0, *flags, 1.0, 1.0))
            offsets.append((sdx, sdy))
    ifus = np.array(ifu_rows, dtype=IFU_DTYPE)
    _ensure_flag_examples(ifus, shots, example_shots)
    ifus["flag"] = np.minimum.reduce([ifus[c] for c in ("flag_badamp", "flag_badfib", "flag_meteor", "flag_satellite")])
    return Survey(shots, ifus, np.array(offsets, dtype=np.float64), example_shots)


def _ifu_flags(rng) -> tuple[float, float, float, float]:
    """(badamp, badfib, meteor, satellite) good fractions with the published incidence."""
    badamp = 1.0 - 0.25 * rng.choice([1, 1, 1, 2]) if rng.random() < 0.078 else 1.0
    badfib = float(rng.uniform(0.9, 0.99)) if rng.random() < 0.002 else 1.0
    meteor = float(rng.uniform(0.85, 0.95)) if rng.random() < 0.0004 else 1.0
    satellite = float(rng.uniform(0.85, 0.95)) if rng.random() < 0.0012 else 1.0
    return badamp, badfib, meteor, satellite


def _ensure_flag_examples(ifus, shots, example_shots) -> None:
    """Every scale has a bad-amplifier, a meteor and a satellite IFU, away from the example objects."""
    example_rows = {i for rows in example_shots.values() for i in rows}
    candidates = [k for k in range(len(ifus)) if ifus["shot_index"][k] not in example_rows]
    if not candidates:
        candidates = list(range(len(ifus)))
    if (ifus["flag_badamp"] < 1).sum() == 0:
        ifus["flag_badamp"][candidates[0]] = 0.75
    if (ifus["flag_meteor"] < 1).sum() == 0:
        ifus["flag_meteor"][candidates[-1]] = 0.9
    if (ifus["flag_satellite"] < 1).sum() == 0:
        ifus["flag_satellite"][candidates[len(candidates) // 2]] = 0.9
