"""The generated mock tree as a user opens it: paths, formats, cross-product consistency."""

from __future__ import annotations

import hashlib
from pathlib import Path

import healpy as hp
import numpy as np
import pytest
import tables
from astropy.io import fits
from click.testing import CliRunner
from section6 import extract_spectrum

from dexdb.cli import main
from dexdb.mock import generate
from dexdb.mock.detect import CONT_DETECTIONS_DTYPE, DETECT_INDEX_DTYPE, LINE_DETECTIONS_DTYPE, SPECTRA_DTYPE
from dexdb.mock.fits_tables import DETINFO_DTYPE, HPSC2_DTYPE, IFU_INDEX_DTYPE

RELEASE_FILES = {
    "ifu-index.fits",
    "hetdex_source_catalog_2/hetdex_sc2_v1.5.fits",
    "hetdex_source_catalog_2/hetdex_sc2_spec_v1.5.fits",
    "hetdex_source_catalog_2/hetdex_sc2_detinfo_v1.5.fits",
    "detect/wdcor.txt",
    "detect/detect_index_hdr5.h5",
} | {f"detect/{kind}_hdr{n}.h5" for kind in ("detect", "cont") for n in (3, 4, 5)}
FIELDS = {"dex-spring", "dex-fall", "nep", "cosmos", "ssa22", "goods-n"}
COSMOS_AGN = (150.23189, 2.363963)
LAB = (228.78581, 51.268036)
OII_GALAXY = (215.68578, 52.11736)


def sep_arcsec(ra1, dec1, ra2, dec2):
    """Haversine distance, written out here independently of the package."""
    r1, d1, r2, d2 = map(np.deg2rad, (ra1, dec1, ra2, dec2))
    a = np.sin((d2 - d1) / 2) ** 2 + np.cos(d1) * np.cos(d2) * np.sin((r2 - r1) / 2) ** 2
    return np.rad2deg(2 * np.arcsin(np.sqrt(a))) * 3600


def native(a):
    return a.astype(a.dtype.newbyteorder("="))


def text(value) -> str:
    return (value.decode() if isinstance(value, bytes) else str(value)).strip()


@pytest.fixture(scope="module")
def tree(tiny_pdr1):
    t = {"root": tiny_pdr1}
    t["ifu"] = native(fits.getdata(tiny_pdr1 / "ifu-index.fits"))
    t["main"] = fits.getdata(tiny_pdr1 / "hetdex_source_catalog_2/hetdex_sc2_v1.5.fits")
    with fits.open(tiny_pdr1 / "hetdex_source_catalog_2/hetdex_sc2_spec_v1.5.fits") as h:
        t["info"] = h["INFO"].data.copy()
        t["spec"], t["spec_err"] = h["SPEC"].data.copy(), h["SPEC_ERR"].data.copy()
        t["wave"] = h["WAVELENGTH"].data.copy()
    t["detinfo"] = fits.getdata(tiny_pdr1 / "hetdex_source_catalog_2/hetdex_sc2_detinfo_v1.5.fits")
    t["wdcor"] = np.loadtxt(tiny_pdr1 / "detect/wdcor.txt")
    dets, spectra = [], []
    for kind in ("detect", "cont"):
        for n in (3, 4, 5):
            with tables.open_file(tiny_pdr1 / f"detect/{kind}_hdr{n}.h5") as h5:
                d = h5.root.Detections.read()
                dets.append((kind, n, d))
                spectra.append(h5.root.Spectra.read())
    t["detections"] = dets
    t["raw_spectra"] = np.concatenate(spectra)
    return t


def test_release_paths(tree):
    root: Path = tree["root"]
    files = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    cubes = {f for f in files if f.startswith("datacubes/")}
    assert files - cubes == RELEASE_FILES
    expected_cubes = {
        f"datacubes/{s}/dex_cube_{s}_{text(i)}.fits" for s, i in zip(tree["ifu"]["shotid"], tree["ifu"]["ifuslot"])
    }
    assert cubes == expected_cubes  # tiny writes a cube for every IFU
    assert "datacubes/20190405020/dex_cube_20190405020_034.fits" in cubes


def test_tables_use_the_release_layouts(tree):
    """Column names and dtypes as the writers' layouts, which test_mock_fits/_detect check
    against the data model; here: the generated files really carry them."""
    for data, dtype in ((tree["ifu"], IFU_INDEX_DTYPE), (tree["main"], HPSC2_DTYPE), (tree["detinfo"], DETINFO_DTYPE)):
        assert list(data.dtype.names) == list(dtype.names)
        # FITS logical (L) columns show as int8 in the record dtype and as bool per column
        assert [data.dtype[n].kind for n in dtype.names] == [dtype[n].kind.replace("b", "i") for n in dtype.names]
    assert tree["detinfo"]["selected_det"].dtype == bool
    for kind, _, d in tree["detections"]:
        layout = LINE_DETECTIONS_DTYPE if kind == "detect" else CONT_DETECTIONS_DTYPE
        assert d.dtype == layout
    assert tree["raw_spectra"].dtype == SPECTRA_DTYPE
    assert tree["spec"].shape == (1036, len(tree["main"])) and tree["spec"].dtype.kind == "f"
    np.testing.assert_array_equal(tree["wave"], 3470 + 2 * np.arange(1036))
    # the spec file's INFO is the main table, row for row, byte for byte
    assert tree["info"].tobytes() == tree["main"].tobytes()


def test_survey_content(tree):
    ifu = tree["ifu"]
    assert {text(f) for f in ifu["field"]} == FIELDS
    header = fits.getheader(tree["root"] / "ifu-index.fits", 1)
    formats = {header[f"TTYPE{k}"]: header[f"TFORM{k}"] for k in range(1, header["TFIELDS"] + 1)}
    assert formats["ra_cen"] == "E" and formats["ifuslot"] == "3A" and formats["shotid"] == "K"
    for flag in ("flag", "flag_badamp", "flag_badfib", "flag_meteor", "flag_satellite"):
        assert ((ifu[flag] >= 0) & (ifu[flag] <= 1)).all()
    assert (ifu["flag_badamp"] < 1).any() and (ifu["flag"] == 1).mean() > 0.5  # 1 = good
    main = tree["main"]
    assert {text(t) for t in main["source_type"]} == {"lae", "oii", "agn", "lzg", "star"}
    types = np.array([text(t) for t in main["source_type"]])
    lae = main[types == "lae"]
    assert ((lae["z_hetdex"] > 1.88) & (lae["z_hetdex"] < 3.52)).all()
    oii = main[types == "oii"]
    assert (oii["z_hetdex"] < 0.48).all()
    # release bad values occur: -999 sentinels and NaN
    assert (main["flux_lya"] == -999).any() and np.isnan(main["gmag"]).any()
    # catalog sorted by z descending
    assert (np.diff(main["z_hetdex"].astype(float)) <= 0).all()


def test_example_objects(tree):
    main = tree["main"]
    agn = main[sep_arcsec(main["RA"], main["DEC"], *COSMOS_AGN) < 1.5]
    assert len(agn) == 9 and len(set(agn["shotid"])) == 9
    assert {text(t) for t in agn["source_type"]} == {"agn"} and len(set(agn["source_name"])) > 1
    offsets = sep_arcsec(agn["RA"], agn["DEC"], *COSMOS_AGN)
    assert 0.05 < np.sqrt(np.mean(offsets**2)) < 0.8  # ~0.3" jitter per axis
    lab = main[sep_arcsec(main["RA"], main["DEC"], *LAB) < 1.5]
    assert len(lab) == 1 and abs(lab["z_hetdex"][0] - 2.53) < 1e-5
    oii = main[sep_arcsec(main["RA"], main["DEC"], *OII_GALAXY) < 1.5]
    assert len(oii) == 1 and abs(oii["z_hetdex"][0] - 0.067) < 1e-5 and text(oii["source_type"][0]) == "oii"


def test_hpsc2_rows_agree_with_raw_databases_and_ifu_index(tree):
    by_id = {}
    for kind, n, d in tree["detections"]:
        for row in d:
            by_id[int(row["detectid"])] = (kind, n, row)
    ifu = {(int(s), text(i)): k for k, (s, i) in enumerate(zip(tree["ifu"]["shotid"], tree["ifu"]["ifuslot"]))}
    for src in tree["main"]:
        kind, release, det = by_id[int(src["detectid"])]
        assert str(src["detectid"])[0] == str(release)
        assert (kind == "cont") == (text(src["source_type"]) in ("star", "lzg"))
        assert det["shotid"] == src["shotid"] and text(det["ifuslot"]) == text(src["ifuslot"])
        assert sep_arcsec(det["ra"], det["dec"], src["RA_det"], src["DEC_det"]) < 0.01
        k = ifu[(int(src["shotid"]), text(src["ifuslot"]))]
        centre = tree["ifu"]["ra_cen"][k], tree["ifu"]["dec_cen"][k]
        assert sep_arcsec(src["RA"], src["DEC"], *centre) < 26 * np.sqrt(2)
        date = str(src["shotid"])[:8]
        assert {"3": "20170101" <= date <= "20210831", "4": "20210901" <= date <= "20230831",
                "5": "20230901" <= date <= "20240731"}[str(release)]
    ids = [int(d) for d in tree["main"]["detectid"]]
    assert len(set(ids)) == len(ids)


def test_catalog_spectra_are_raw_spectra_calibrated_and_dereddened(tree):
    """SPEC = spec1d / 2 / wdcor x a Galactic extinction correction 10^(0.4 A_lambda)."""
    raw = {int(r["detectid"]): r for r in tree["raw_spectra"]}
    curves = []
    for i, src in enumerate(tree["main"]):
        r = raw[int(src["detectid"])]
        calibrated = r["spec1d"].astype(np.float64) / 2 / tree["wdcor"][:, 1]
        ratio = tree["spec"][:, i] / calibrated
        curve = np.log10(ratio) / (0.4 * src["Av"])  # A_lambda / A_V
        curves.append(curve[np.abs(calibrated) > 1e-3])
        np.testing.assert_allclose(tree["spec_err"][:, i] / (r["spec1d_err"] / 2 / tree["wdcor"][:, 1]), ratio, rtol=1e-5)
        good = np.abs(calibrated) > 1e-2
        assert ((curve[good] > 0.95) & (curve[good] < 1.7)).all()
        assert np.all(np.diff(np.log10(ratio)[good]) < 1e-5 * np.abs(np.log10(ratio)[good][1:]) + 1e-6)


def test_detect_index_routes_every_detection(tree):
    with tables.open_file(tree["root"] / "detect/detect_index_hdr5.h5") as h5:
        index = h5.root.DetectIndex.read()
    assert index.dtype == DETECT_INDEX_DTYPE
    all_ids = np.concatenate([d["detectid"] for _, _, d in tree["detections"]])
    np.testing.assert_array_equal(np.sort(index["detectid"]), np.sort(all_ids))
    np.testing.assert_array_equal(index["healpix"], hp.ang2pix(32768, index["ra"].astype(float), index["dec"].astype(float), lonlat=True))
    for kind, n, d in tree["detections"]:
        rows = index[np.isin(index["detectid"], d["detectid"])]
        assert set(rows["survey"]) <= {f"hdr{n}".encode()}
        assert set(rows["det_type"]) <= {b"line" if kind == "detect" else b"cont"}


def test_cubes_match_ifu_index_and_hold_their_sources(tree):
    root, ifu = tree["root"], tree["ifu"]
    for k in range(len(ifu)):
        path = root / f"datacubes/{ifu['shotid'][k]}/dex_cube_{ifu['shotid'][k]}_{text(ifu['ifuslot'][k])}.fits"
        header = fits.getheader(path, "DATA")
        assert header["CRVAL1"] == float(ifu["ra_cen"][k]) and header["CRVAL2"] == float(ifu["dec_cen"][k])
        assert header["SHOTID"] == ifu["shotid"][k] and abs(header["PA"] - ifu["pa"][k]) < 1e-9
    # The COSMOS AGN: a 3.5" aperture on each epoch's cube gives back the catalog spectrum.
    main = tree["main"]
    for i in np.flatnonzero(sep_arcsec(main["RA"], main["DEC"], *COSMOS_AGN) < 1.5):
        src = main[i]
        path = root / f"datacubes/{src['shotid']}/dex_cube_{src['shotid']}_{text(src['ifuslot'])}.fits"
        cube = extract_spectrum(path, float(src["RA"]), float(src["DEC"]))
        catalog = tree["spec"][:, i].astype(np.float64)
        window = (cube["wave"] > 4000) & (cube["wave"] < 5400) & np.isfinite(cube["spectrum"])
        ratio = np.median(cube["spectrum"][window]) / np.median(catalog[window])
        assert 0.8 < ratio < 1.05  # extincted cube vs dereddened catalog, within noise and ~2% apcor bias
        # Beyond that one scale factor, the two spectra differ by noise alone.
        both = window & np.isfinite(cube["error"])
        pull = (cube["spectrum"][both] - ratio * catalog[both]) / np.hypot(
            cube["error"][both], ratio * tree["spec_err"][both, i]
        )
        assert abs(np.median(pull)) < 0.3 and 0.7 < np.std(pull) < 1.5


def _digest(root: Path) -> dict[str, str]:
    """Bytes of FITS and text files; table contents of HDF5 files (HDF5 stamps object times)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file() or "datacubes" in p.parts:
            continue
        h = hashlib.sha256()
        if p.suffix == ".h5":
            with tables.open_file(p) as h5:
                h.update(h5.title.encode())
                for node in h5.walk_nodes("/", "Table"):
                    h.update(node._v_pathname.encode() + node.title.encode() + node.read().tobytes())
        else:
            h.update(p.read_bytes())
        out[str(p.relative_to(root))] = h.hexdigest()
    return out


def test_same_seed_same_content(tree, tmp_path):
    again = generate(tmp_path / "again", "tiny", 0, log=lambda *_: None)
    assert _digest(again) == _digest(tree["root"])
    cube = "datacubes/20190405020/dex_cube_20190405020_034.fits"
    with fits.open(again / cube) as a, fits.open(tree["root"] / cube) as b:
        for name in ("DATA", "ERROR", "MASK"):
            np.testing.assert_array_equal(a[name].data, b[name].data)


def test_mock_command_errors(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["mock", str(tmp_path / "x"), "--scale", "huge"])
    assert result.exit_code == 2 and "huge" in result.output
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    result = runner.invoke(main, ["mock", str(tmp_path / "full")])
    assert result.exit_code == 1 and "not empty" in result.output and "--overwrite" in result.output
    assert (tmp_path / "full" / "keep.txt").read_text() == "x"
    (tmp_path / "afile").write_text("x")
    result = runner.invoke(main, ["mock", str(tmp_path / "afile" / "sub")])
    assert result.exit_code == 1 and "afile" in result.output
    result = runner.invoke(main, ["mock", str(tmp_path / "afile")])
    assert result.exit_code != 0 and "afile" in result.output
    result = runner.invoke(main, ["mock", str(tmp_path / "y"), "--cubes", "some"])
    assert result.exit_code == 2 and "--cubes" in result.output and not (tmp_path / "y").exists()


@pytest.mark.parametrize("per_shot", [0, 2, None])
def test_cube_subset_is_configurable(per_shot):
    import dataclasses

    from dexdb.mock.generate import cube_targets, make_plan
    from dexdb.mock.scales import SCALES

    mock = make_plan(dataclasses.replace(SCALES["small"], cubes_per_shot=per_shot), 0, np.ones(1036))
    targets = set(cube_targets(mock))
    ifus, sky = mock.survey.ifus, mock.sky
    example_obs = np.isin(sky.observations["object"], np.flatnonzero(sky.objects["example"] != b""))
    assert set(sky.observations["ifu_index"][example_obs].tolist()) <= targets
    per_shot_count = np.bincount(ifus["shot_index"][sorted(targets)], minlength=len(mock.survey.shots))
    if per_shot is None:
        assert targets == set(range(len(ifus)))
    else:
        n_ifu = np.bincount(ifus["shot_index"], minlength=len(mock.survey.shots))
        examples_per_shot = np.bincount(ifus["shot_index"][sky.observations["ifu_index"][example_obs]],
                                        minlength=len(mock.survey.shots)) > 0
        assert (per_shot_count[~examples_per_shot] == np.minimum(per_shot, n_ifu[~examples_per_shot])).all()
