"""Mock detection databases: layouts checked against the data model (section 3), independently of
the writer's own dtypes, plus the raw flux convention, ids, HEALPix and wdcor.txt."""

from __future__ import annotations

import re

import healpy
import numpy as np
import pytest
import tables as tb

from dexdb.mock.detect import (
    CORE_DTYPE,
    DetectFileWriter,
    DetectIndexWriter,
    read_wdcor,
    write_wdcor,
)

GRID = 3470.0 + 2.0 * np.arange(1036)

# On-disk layouts typed from pdr1-data-model.md section 3: (name, dtype, shape).
DETECTIONS_HEAD = [
    ("detectid", "i8", ()),
    ("shotid", "i8", ()),
    ("ra", "f4", ()),
    ("dec", "f4", ()),
    ("date", "i4", ()),
    ("obsid", "i4", ()),
    ("wave", "f4", ()),
    ("wave_err", "f4", ()),
    ("flux", "f4", ()),
    ("flux_err", "f4", ()),
    ("linewidth", "f4", ()),
    ("linewidth_err", "f4", ()),
    ("continuum", "f4", ()),
    ("continuum_err", "f4", ()),
    ("sn", "f4", ()),
    ("sn_err", "f4", ()),
    ("chi2", "f4", ()),
    ("chi2_err", "f4", ()),
    ("multiframe", "S20", ()),
    ("fibnum", "i4", ()),
    ("x_raw", "i4", ()),
    ("y_raw", "i4", ()),
    ("amp", "S2", ()),
]
LINE_DETECTIONS = DETECTIONS_HEAD + [
    ("apcor", "f4", ()),
    ("chi2fib", "f4", ()),
    ("expnum", "i4", ()),
    ("fiber_id", "S38", ()),
    ("flux_noise_1sigma", "f4", ()),
    ("ifuid", "S3", ()),
    ("ifuslot", "S3", ()),
    ("inputid", "S40", ()),
    ("mc_file", "S32", ()),
    ("mc_file_idx", "i4", ()),
    ("noise_ratio", "f4", ()),
    ("sn_3fib", "f4", ()),
    ("sn_3fib_cen", "f4", ()),
    ("sn_cen", "f4", ()),
    ("specid", "S3", ()),
    ("weight", "f4", ()),
    ("x_ifu", "f4", ()),
    ("y_ifu", "f4", ()),
]
CONT_DETECTIONS = DETECTIONS_HEAD + [
    ("chi2fib", "f4", ()),
    ("detectname", "S40", ()),
    ("expnum", "i4", ()),
    ("fiber_id", "S38", ()),
    ("ifuid", "S3", ()),
    ("ifuslot", "S3", ()),
    ("inputid", "S40", ()),
    ("noise_ratio", "f4", ()),
    ("specid", "S3", ()),
    ("weight", "f4", ()),
    ("x_ifu", "f4", ()),
    ("y_ifu", "f4", ()),
]
FIBERS = [
    ("detectid", "i8", ()),
    ("ra", "f4", ()),
    ("dec", "f4", ()),
    ("multiframe", "S20", ()),
    ("fiber_id", "S38", ()),
    ("x_ifu", "f4", ()),
    ("y_ifu", "f4", ()),
    ("date", "i4", ()),
    ("obsid", "i4", ()),
    ("expnum", "i4", ()),
    ("distance", "f4", ()),
    ("timestamp", "S17", ()),
    ("wavein", "f4", ()),
    ("flag", "i4", ()),
    ("weight", "f4", ()),
    ("ADC", "f4", (5,)),
    ("amp", "S2", ()),
    ("fibnum", "i4", ()),
    ("ifuid", "S3", ()),
    ("ifuslot", "S3", ()),
    ("specid", "S3", ()),
    ("x_raw", "i4", ()),
    ("y_raw", "i4", ()),
]
SPECTRA = [("detectid", "i8", ())] + [
    (name, "f4", (1036,))
    for name in (
        "wave1d",
        "spec1d",
        "spec1d_err",
        "counts1d",
        "counts1d_err",
        "apsum_counts",
        "apsum_counts_err",
        "apcor",
        "flag_pix",
        "spec1d_ffsky",
        "spec1d_nc",
        "spec1d_nc_err",
    )
]
DETECT_INDEX = [
    ("detectid", "i8", ()),
    ("shotid", "i8", ()),
    ("ra", "f4", ()),
    ("dec", "f4", ()),
    ("wave", "f4", ()),
    ("sn", "f4", ()),
    ("healpix", "i8", ()),
    ("det_type", "S4", ()),
    ("survey", "S4", ()),
    ("fiber_id", "S38", ()),
]

MULTIFRAME_RE = re.compile(rb"^multi_\d{3}_\d{3}_\d{3}_(LL|LU|RL|RU)$")
FIBER_ID_RE = re.compile(rb"^(\d{11})_([1-3])_(multi_\d{3}_\d{3}_\d{3}_(?:LL|LU|RL|RU))_(\d{3})$")
SPECTRA_NOTE = "(spectra for 1 of 100 detections at this mock scale)"


def layout(table: tb.Table) -> list[tuple[str, str, tuple[int, ...]]]:
    return [
        (name, table.coldtypes[name].base.str[1:], tuple(int(k) for k in table.coldescrs[name].shape))
        for name in table.colnames
    ]


def expected_layout(columns: list[tuple[str, str, tuple[int, ...]]]) -> list[tuple[str, str, tuple[int, ...]]]:
    return [(name, np.dtype(code).str[1:], shape) for name, code, shape in columns]


def make_core(rng: np.random.Generator, det_type: bytes, shotid: int, first_id: int, n: int) -> np.ndarray:
    core = np.zeros(n, dtype=CORE_DTYPE)
    core["detectid"] = first_id + np.arange(n)
    core["shotid"] = shotid
    core["date"] = shotid // 1000
    core["obsid"] = shotid % 1000
    core["ra"] = 195.0 + rng.uniform(-0.5, 0.5, n)
    core["dec"] = 51.0 + rng.uniform(-0.5, 0.5, n)
    core["det_type"] = det_type
    ifu = rng.integers(0, 5, n)
    core["ifuslot"] = np.array([b"034", b"045", b"095", b"105", b"106"])[ifu]
    core["ifuid"] = np.array([b"028", b"051", b"303", b"017", b"086"])[ifu]
    core["specid"] = np.array([b"032", b"051", b"085", b"013", b"021"])[ifu]
    # Cover quadrant boundaries and the IFU edges as well as the interior.
    core["x_ifu"] = np.concatenate([[0.05, -0.05, 25.4, -25.4], rng.uniform(-25.5, 25.5, n - 4)])
    core["y_ifu"] = np.concatenate([[-0.05, 0.05, 25.4, -25.4], rng.uniform(-25.5, 25.5, n - 4)])
    core["wave"] = rng.uniform(3480.0, 5530.0, n)
    core["wave_err"] = rng.uniform(0.2, 1.0, n)
    core["flux"] = rng.uniform(3.0, 80.0, n)
    core["flux_err"] = rng.uniform(1.0, 5.0, n)
    core["linewidth"] = rng.uniform(1.8, 6.0, n)
    core["linewidth_err"] = 0.3
    core["continuum"] = rng.uniform(-0.5, 3.0, n)
    core["continuum_err"] = rng.uniform(0.05, 0.2, n)
    core["sn"] = rng.uniform(4.8, 30.0, n)
    core["sn_err"] = 0.8
    core["chi2"] = rng.uniform(0.8, 2.0, n)
    core["chi2_err"] = 0.1
    core["apcor"] = rng.uniform(0.75, 0.95, n)
    core["flux_noise_1sigma"] = rng.uniform(2.0, 8.0, n)
    if det_type == b"cont":
        core["detectname"] = b"HETDEX J130000.00+510000.0"
    return core


def calibrated_spectra(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    flux = (0.05 + rng.normal(0.0, 0.1, (n, 1036))).astype(np.float32)
    err = rng.uniform(0.05, 0.2, (n, 1036)).astype(np.float32)
    return flux, err


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A tiny hdr5 release: line and continuum files of two shots plus the detection index."""
    root = tmp_path_factory.mktemp("pdr1")
    wdcor = write_wdcor(root / "detect" / "wdcor.txt")
    rng = np.random.default_rng(20240101)
    line_chunks, cont_chunks, spectra = [], [], {}
    for k, shotid in enumerate((20230905012, 20231011007)):
        line_chunks.append(make_core(rng, b"line", shotid, 5_000_000_001 + 40 * k, 40))
        cont_chunks.append(make_core(rng, b"cont", shotid, 5_090_000_001 + 6 * k, 6))
    with DetectFileWriter(root / "detect" / "detect_hdr5.h5", "hdr5", "line", wdcor, SPECTRA_NOTE) as writer:
        for core in line_chunks:
            rows = np.zeros(len(core), bool)
            rows[::3] = True
            rows[:4] = True
            flux, err = calibrated_spectra(rng, int(rows.sum()))
            spectra.update({d: (f, e) for d, f, e in zip(core["detectid"][rows], flux, err)})
            writer.append(core, flux, err, rows, rng)
    with DetectFileWriter(root / "detect" / "cont_hdr5.h5", "hdr5", "cont", wdcor, None) as writer:
        for core in cont_chunks:
            rows = np.ones(len(core), bool)
            flux, err = calibrated_spectra(rng, len(core))
            spectra.update({d: (f, e) for d, f, e in zip(core["detectid"], flux, err)})
            writer.append(core, flux, err, rows, rng)
    with DetectIndexWriter(root / "detect" / "detect_index_hdr5.h5") as index:
        for core in line_chunks + cont_chunks:
            index.append(core)
    return {
        "root": root,
        "wdcor": wdcor,
        "line": np.concatenate(line_chunks),
        "cont": np.concatenate(cont_chunks),
        "spectra": spectra,
    }


def read_tables(path) -> dict:
    with tb.open_file(path) as h5:
        return {
            "title": h5.title,
            **{name: getattr(h5.root, name).read() for name in ("Detections", "Fibers", "Spectra")},
        }


def test_wdcor_file(release):
    lines = (release["root"] / "detect" / "wdcor.txt").read_text().splitlines()
    assert len(lines) == 1036
    assert lines[0] == "3470 0.911436"
    fields = [line.split() for line in lines]
    assert all(len(f) == 2 and re.fullmatch(r"\d{4}", f[0]) for f in fields)
    assert [int(f[0]) for f in fields] == list(range(3470, 5541, 2))
    factor = np.array([float(f[1]) for f in fields])
    assert all(len(f[1].replace(".", "").lstrip("0")) <= 6 for f in fields)
    np.testing.assert_array_equal(release["wdcor"], factor)
    np.testing.assert_array_equal(read_wdcor(release["root"] / "detect" / "wdcor.txt"), factor)
    assert 0.911 <= factor.min() < 0.912 and 1.097 < factor.max() <= 1.0985
    assert (factor[GRID >= 4600] == 1.0).all()
    assert np.abs(np.diff(factor)).max() < 0.005


@pytest.mark.parametrize(
    "name, columns, titles",
    [
        (
            "detect_hdr5.h5",
            LINE_DETECTIONS,
            ("HDR5 Detections Database", "HETDEX Line Detection Catalog", "Fiber info for each detection"),
        ),
        (
            "cont_hdr5.h5",
            CONT_DETECTIONS,
            ("HDR5 Continuum Source Database", "HETDEX Continuum Source Catalog", "Fiber info for each source"),
        ),
    ],
)
def test_detection_file_layout(release, name, columns, titles):
    assert len(columns) == (41 if name.startswith("detect") else 35)
    with tb.open_file(release["root"] / "detect" / name) as h5:
        assert h5.title == titles[0]
        assert sorted(node._v_name for node in h5.root) == ["Detections", "Fibers", "Spectra"]
        assert layout(h5.root.Detections) == expected_layout(columns)
        assert layout(h5.root.Fibers) == expected_layout(FIBERS)
        assert layout(h5.root.Spectra) == expected_layout(SPECTRA)
        assert h5.root.Detections.title == titles[1]
        assert h5.root.Fibers.title == titles[2]
        spectra_title = "1D Spectra for each Line Detection"
        if name.startswith("detect"):
            spectra_title += " " + SPECTRA_NOTE
        assert h5.root.Spectra.title == spectra_title
        indexed = {
            "Detections": {"detectid", "shotid"},
            "Fibers": {"detectid"},
            "Spectra": {"detectid"},
        }
        for table_name, columns_indexed in indexed.items():
            table = getattr(h5.root, table_name)
            assert {c for c in table.colnames if table.colindexed[c]} == columns_indexed
            for column in columns_indexed:
                index = table.colinstances[column].index
                assert index.is_csi and index.nelements == table.nrows


def test_detect_index(release):
    core = np.concatenate([release["line"], release["cont"]])
    with tb.open_file(release["root"] / "detect" / "detect_index_hdr5.h5") as h5:
        assert h5.title == "HDR5 Detect Index file "
        assert [node._v_name for node in h5.root] == ["DetectIndex"]
        table = h5.root.DetectIndex
        assert layout(table) == expected_layout(DETECT_INDEX)
        for column in ("detectid", "healpix", "ra", "shotid"):
            assert table.colinstances[column].index.is_csi
        rows = table.read()
    np.testing.assert_array_equal(rows["detectid"], core["detectid"])
    expected_pixels = healpy.ang2pix(32768, rows["ra"].astype(float), rows["dec"].astype(float), lonlat=True)
    np.testing.assert_array_equal(rows["healpix"], expected_pixels)
    np.testing.assert_array_equal(rows["det_type"], core["det_type"])
    assert set(rows["survey"]) == {b"hdr5"}
    np.testing.assert_array_equal(rows["ra"], core["ra"].astype(np.float32))
    np.testing.assert_array_equal(rows["wave"], core["wave"])
    np.testing.assert_array_equal(rows["sn"], core["sn"])
    # The index names the same highest-weight fibre as the detection files.
    files = [read_tables(release["root"] / "detect" / f) for f in ("detect_hdr5.h5", "cont_hdr5.h5")]
    detections = np.concatenate([f["Detections"]["fiber_id"] for f in files])
    np.testing.assert_array_equal(rows["fiber_id"], detections)


@pytest.mark.parametrize("kind", ["line", "cont"])
def test_raw_flux_convention(release, kind):
    tables = read_tables(release["root"] / "detect" / f"{'detect' if kind == 'line' else 'cont'}_hdr5.h5")
    core, det = release[kind], tables["Detections"]
    np.testing.assert_array_equal(det["detectid"], core["detectid"])
    factor = np.interp(det["wave"].astype(float), GRID, release["wdcor"])
    quantities = ["flux", "flux_err", "continuum", "continuum_err"]
    if kind == "line":
        quantities.append("flux_noise_1sigma")
    for name in quantities:
        np.testing.assert_allclose(det[name] / factor, core[name], rtol=2e-7, err_msg=name)
    for name in ("wave", "wave_err", "linewidth", "sn", "chi2", "x_ifu", "y_ifu"):
        np.testing.assert_array_equal(det[name], core[name])
    if kind == "line":
        np.testing.assert_array_equal(det["apcor"], core["apcor"])
    else:
        np.testing.assert_array_equal(det["detectname"], core["detectname"])

    spectra = tables["Spectra"]
    assert len(spectra) == len(set(spectra["detectid"]))
    for row in spectra:
        flux, err = release["spectra"][row["detectid"]]
        np.testing.assert_array_equal(row["wave1d"], GRID)
        np.testing.assert_allclose(row["spec1d"] / 2 / release["wdcor"], flux, rtol=2e-7)
        np.testing.assert_allclose(row["spec1d_err"] / 2 / release["wdcor"], err, rtol=2e-7)
        np.testing.assert_allclose(row["spec1d_nc"] / row["apcor"], row["spec1d"], rtol=1e-6)
        np.testing.assert_allclose(row["spec1d_nc_err"] / row["apcor"], row["spec1d_err"], rtol=1e-6)
        assert 0.5 <= row["apcor"].min() and row["apcor"].max() <= 1.0
        assert np.abs(np.diff(row["apcor"])).max() < 0.002
        ratio = row["counts1d"] / row["spec1d_nc"]
        np.testing.assert_allclose(row["counts1d_err"] / row["spec1d_nc_err"], ratio, rtol=1e-5)
        apsum = row["apsum_counts"] / row["counts1d"]
        np.testing.assert_allclose(apsum, apsum[0], rtol=1e-5)


@pytest.mark.parametrize("name", ["detect_hdr5.h5", "cont_hdr5.h5"])
def test_ids_and_fibres(release, name):
    tables = read_tables(release["root"] / "detect" / name)
    det, fibers = tables["Detections"], tables["Fibers"]
    for rows in (det, fibers):
        for row in rows:
            mf = row["multiframe"]
            assert MULTIFRAME_RE.match(mf), mf
            assert (mf[6:9], mf[10:13], mf[14:17], mf[18:20]) == (
                row["specid"],
                row["ifuslot"],
                row["ifuid"],
                row["amp"],
            )
            match = FIBER_ID_RE.match(row["fiber_id"])
            assert match, row["fiber_id"]
            shotid = int(row["date"]) * 1000 + int(row["obsid"])
            expected = (str(shotid).encode(), str(row["expnum"]).encode(), mf, b"%03d" % row["fibnum"])
            assert match.groups() == expected
            assert 1 <= row["fibnum"] <= 112
            assert 1 <= row["x_raw"] <= 1032 and 1 <= row["y_raw"] <= 1032

    # The amplifier is the IFU quadrant of the detection.
    quadrant = [(b"L" if x < 0 else b"R") + (b"L" if y < 0 else b"U") for x, y in zip(det["x_ifu"], det["y_ifu"])]
    assert det["amp"].tolist() == quadrant

    if name.startswith("detect"):
        pattern = re.compile(rb"^(\d{8})v(\d{3})_(\d{3})_(\d{3})_(\d{3})_(LL|LU|RL|RU)(_\d{3}|\.mc)$")
        for row in det:
            for value in (row["inputid"], row["mc_file"]):
                match = pattern.match(value)
                assert match, value
                assert match.group(6) == row["amp"] and match.group(4) == row["ifuslot"]
            assert row["inputid"].endswith(b"_%03d" % (row["mc_file_idx"] + 1))
        assert len(set(det["inputid"])) == len(det)

    # Fibres: 3 exposures of nearby fibres; the detection row names the highest-weight one.
    by_detection = {d: fibers[fibers["detectid"] == d] for d in np.unique(fibers["detectid"])}
    spectra_ids = set(tables["Spectra"]["detectid"])
    assert set(by_detection) == spectra_ids
    for detectid, rows in by_detection.items():
        main = det[det["detectid"] == detectid][0]
        assert set(rows["expnum"]) == {1, 2, 3}
        assert len(set(rows["fiber_id"])) == len(rows)
        heaviest = rows[np.argmax(rows["weight"])]
        assert heaviest["fiber_id"] == main["fiber_id"]
        assert heaviest["weight"] == main["weight"]
        assert 0.1 < rows["weight"].sum() < 1.2
        assert rows["distance"].max() < 8.0  # within a few arcsec, farthest at IFU corners
        np.testing.assert_allclose(
            rows["distance"], np.hypot(rows["x_ifu"] - main["x_ifu"], rows["y_ifu"] - main["y_ifu"]), atol=1e-4
        )
        d_ra = (rows["ra"] - main["ra"]) * np.cos(np.radians(main["dec"]))
        offset = np.hypot(d_ra, rows["dec"] - main["dec"]) * 3600
        np.testing.assert_allclose(offset, rows["distance"], atol=0.05)
        assert (rows["wavein"] == main["wave"]).all()
        assert (rows["date"] == main["date"]).all() and (rows["obsid"] == main["obsid"]).all()
        for expnum in (1, 2, 3):
            stamps = set(rows["timestamp"][rows["expnum"] == expnum])
            assert len(stamps) == 1
            stamp = stamps.pop()
            assert re.fullmatch(rb"\d{8}T\d{6}\.\d", stamp) and stamp[:8] == str(main["date"]).encode()


def test_deterministic(tmp_path, release):
    def write(path):
        rng = np.random.default_rng(7)
        core = make_core(np.random.default_rng(1), b"line", 20230905012, 5_000_000_001, 20)
        flux, err = calibrated_spectra(np.random.default_rng(2), 20)
        with DetectFileWriter(path, "hdr5", "line", release["wdcor"], None) as writer:
            writer.append(core, flux, err, np.ones(20, bool), rng)
        return read_tables(path)

    first, second = write(tmp_path / "a.h5"), write(tmp_path / "b.h5")
    for name in ("Detections", "Fibers", "Spectra"):
        assert first[name].tobytes() == second[name].tobytes()


def test_rejects_wrong_detectid_ranges(tmp_path, release):
    rng = np.random.default_rng(0)
    line = make_core(rng, b"line", 20230905012, 5_000_000_001, 8)
    with DetectFileWriter(tmp_path / "cont.h5", "hdr5", "cont", release["wdcor"], None) as writer:
        with pytest.raises(ValueError, match="line"):
            writer.append(line, None, None, None, rng)
        mislabelled = line.copy()
        mislabelled["det_type"] = b"cont"
        with pytest.raises(ValueError, match="line detectid range"):
            writer.append(mislabelled, None, None, None, rng)
    with DetectFileWriter(tmp_path / "hdr4.h5", "hdr4", "line", release["wdcor"], None) as writer:
        with pytest.raises(ValueError, match="hdr4"):
            writer.append(line, None, None, None, rng)
