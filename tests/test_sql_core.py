"""The SQL loader, and every macro of 10_views.sql, 30_spectra.sql and 40_masks_urls.sql checked against an
independent computation: spectra against the raw HDF5 and FITS files, mask names against a Python bit
loop, URLs against the constants. (Partition pruning is checked in both engines in test_sql_regression.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb
import numpy as np
import pytest
import tables
from astropy.io import fits

from dexdb import constants, sqlload


@pytest.fixture(scope="module")
def con(tiny_catalogs):
    connection = sqlload.connect(tiny_catalogs)
    yield connection
    connection.close()


def column(con, query: str) -> list:
    return [row[0] for row in con.sql(query).fetchall()]


# --------------------------------------------------------------------------------------------------
# loader


def test_split_statements_respects_quotes_comments_and_requirements():
    text = """-- header of the file
-- requires: a, b
CREATE VIEW x AS SELECT ';' AS "semi;colon"; -- a comment; with a semicolon
/* block; */ SELECT 2;
  --requires: c
SELECT 'it''s; fine';
-- a trailing comment;
"""
    found = sqlload.split_statements(text, "t.sql")
    assert [s.requires for s in found] == [{"a", "b"}, set(), {"c"}]
    assert found[0].sql.endswith("""SELECT ';' AS "semi;colon\"""")
    assert found[1].sql == "-- a comment; with a semicolon\n/* block; */ SELECT 2"
    assert found[2].sql.endswith("SELECT 'it''s; fine'")
    assert {s.file for s in found} == {"t.sql"}


def test_every_view_and_macro_is_defined_once():
    create = re.compile(r"CREATE (?:OR REPLACE )?(?:TEMP |TEMPORARY )?(?:VIEW|MACRO|FUNCTION|TABLE) ([\w.\"]+)",
                        re.IGNORECASE)
    homes: dict[str, list[str]] = {}
    for statement in sqlload.statements():
        for name in create.findall(statement.code):
            homes.setdefault(name.lower(), []).append(statement.file)
    assert {"sources", "wave_grid", "spectra_by_detectid", "mask_has", "cube_url"} <= homes.keys()
    assert {name: files for name, files in homes.items() if len(files) > 1} == {}


def test_sql_files_ship_in_the_package_with_an_explicit_load_order():
    names = [f.name for f in sqlload.sql_files()]
    assert {"10_views.sql", "30_spectra.sql", "40_masks_urls.sql"} <= set(names)
    assert [name for name in names if not re.fullmatch(r"\d\d_\w+\.sql", name)] == []


def test_no_extension_is_installed_or_loaded(con):
    code = " ".join(statement.code for statement in sqlload.statements())
    assert not re.search(r"\b(INSTALL|LOAD)\b", code, re.IGNORECASE)
    loaded = "SELECT extension_name FROM duckdb_extensions() WHERE loaded ORDER BY 1"
    assert con.sql(loaded).fetchall() == duckdb.connect().sql(loaded).fetchall()


def test_connect_needs_an_existing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        sqlload.connect(tmp_path / "absent")


# --------------------------------------------------------------------------------------------------
# views and wavelength


def test_views_hold_every_row_of_the_manifest(con, tiny_catalogs):
    manifest = json.loads((tiny_catalogs / "current" / "manifest.json").read_text())
    for name in ("ifu_index", "sources", "source_spectra", "detinfo", "detections", "detection_spectra", "fibers", "detect_index"):
        assert column(con, f"SELECT count(*) FROM {name}") == [manifest["products"][name]["rows"]], name


def test_wavelength_grid_is_the_release_grid(con):
    assert np.array_equal(np.array(column(con, "SELECT wave FROM wave_grid() ORDER BY k"), np.float32), constants.WAVE)
    assert column(con, "SELECT k FROM wave_grid() ORDER BY k") == list(range(constants.N_WAVE))
    assert np.array_equal(np.array(column(con, "SELECT wave_array()")[0], np.float32), constants.WAVE)
    assert column(con, "SELECT wave_at(1035)") == [constants.WAVE[-1]]


# --------------------------------------------------------------------------------------------------
# spectra


def raw_detection_spectra(pdr1: Path) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """spec1d / 2 / wdcor and spec1d_err / 2 / wdcor of every /Spectra row, read with PyTables."""
    wdcor = np.loadtxt(pdr1 / "detect" / "wdcor.txt", usecols=1)
    spectra = {}
    for path in sorted((pdr1 / "detect").glob("*_hdr?.h5")):
        if path.name.startswith("detect_index"):
            continue
        with tables.open_file(path) as h5:
            rows = h5.root.Spectra.read()
        for detectid, spec1d, spec1d_err, wave1d in zip(rows["detectid"], rows["spec1d"], rows["spec1d_err"],
                                                         rows["wave1d"]):
            assert np.array_equal(wave1d, constants.WAVE)
            spectra[int(detectid)] = ((spec1d.astype(np.float64) / 2 / wdcor).astype(np.float32),
                                      (spec1d_err.astype(np.float64) / 2 / wdcor).astype(np.float32))
    return spectra


def test_detection_spectra_equal_the_raw_hdf5_calibrated(con, tiny_pdr1):
    expected = raw_detection_spectra(tiny_pdr1)
    ids = sorted(expected)
    rows = con.sql(f"SELECT detectid, wave, spec, spec_err FROM spectra_by_detectid({ids})").fetchall()
    assert [row[0] for row in rows] == ids
    for detectid, wave, spec, spec_err in rows:
        assert np.array_equal(np.array(wave, np.float32), constants.WAVE)
        np.testing.assert_allclose(np.array(spec, np.float32), expected[detectid][0], rtol=1e-6, err_msg=str(detectid))
        np.testing.assert_allclose(np.array(spec_err, np.float32), expected[detectid][1], rtol=1e-6)


def test_source_spectra_equal_the_hpsc2_spectra_file(con, tiny_pdr1):
    (path,) = (tiny_pdr1 / "hetdex_source_catalog_2").glob("hetdex_sc2_spec_v*.fits")
    with fits.open(path) as hdus:
        source_ids = [int(s) for s in hdus["INFO"].data["source_id"]]
        spec, spec_err = hdus["SPEC"].data.T.astype(np.float32), hdus["SPEC_ERR"].data.T.astype(np.float32)
    rows = con.sql(f"SELECT source_id, spec, spec_err FROM spectra_by_source_id({source_ids})").fetchall()
    assert [row[0] for row in rows] == source_ids
    for i, (_, got, got_err) in enumerate(rows):
        assert np.array_equal(np.array(got, np.float32), spec[i])
        assert np.array_equal(np.array(got_err, np.float32), spec_err[i])


@pytest.mark.parametrize("kind", ["detectid", "source_id"])
def test_row_form_is_the_array_form_unnested(con, kind):
    catalog = "detection_spectra" if kind == "detectid" else "sources"
    some_id = column(con, f"SELECT min({kind}) FROM {catalog}")[0]
    (one,) = con.sql(f"SELECT * FROM spectrum_by_{kind}({some_id})").fetchall()
    rows = con.sql(f"SELECT * FROM spectrum_rows_by_{kind}({some_id})").fetchall()
    assert [r[0] for r in rows] == [some_id] * constants.N_WAVE
    assert [r[1] for r in rows] == list(range(constants.N_WAVE))
    assert [tuple(r[2:]) for r in rows] == list(zip(*one[1:]))


def test_unknown_ids_give_null_arrays_and_no_rows(con):
    assert con.sql("SELECT detectid, spec, spec_err FROM spectrum_by_detectid(12)").fetchall() == [(12, None, None)]
    assert column(con, "SELECT count(*) FROM spectrum_rows_by_source_id(12)") == [0]


# --------------------------------------------------------------------------------------------------
# masks and URLs


def test_mask_bits_table_is_the_constants_table(con):
    assert {name: value for _, value, name in con.sql("SELECT * FROM mask_bits()").fetchall()} == constants.MASK_BITS
    assert column(con, "SELECT bit FROM mask_bits() ORDER BY bit") == list(range(len(constants.MASK_BITS)))


def test_mask_bit_names_and_mask_has_match_a_python_bit_loop(con):
    every_mask = range(2 ** len(constants.MASK_BITS))
    expected = [[name for name, value in constants.MASK_BITS.items() if mask & value] for mask in every_mask]
    assert column(con, "SELECT mask_bit_names(v) FROM range(16384) AS t(v) ORDER BY v") == expected
    for name, value in constants.MASK_BITS.items():
        for spelled in (name, name.lower()):
            got = column(con, f"SELECT mask_has(v::SMALLINT, '{spelled}') FROM range(16384) AS t(v) ORDER BY v")
            assert got == [bool(mask & value) for mask in every_mask], spelled


def test_urls_follow_the_release_patterns(con):
    assert column(con, "SELECT pdr1_base_url()") == [constants.PDR1_BASE_URL]
    for detectid, url in con.sql("SELECT detectid, elixer_url(detectid) FROM detections").fetchall():
        assert url == f"{constants.PDR1_BASE_URL}/detect/elixer/{str(detectid)[:5]}/{detectid}.jpg"
    for shotid, ifuslot, url in con.sql("SELECT shotid, ifuslot, cube_url(shotid, ifuslot::INTEGER) "
                                        "FROM ifu_index").fetchall():
        assert url == f"{constants.PDR1_BASE_URL}/datacubes/{shotid}/dex_cube_{shotid}_{ifuslot}.fits"


@pytest.mark.parametrize("expression, message", [
    ("wave_at(-1)", "wave_at: k must be an integer in 0..1035, got -1"),
    ("wave_at(2.5)", "wave_at: k must be an integer in 0..1035, got 2.5"),
    ("(SELECT count(*) FROM spectra_by_detectid([3000000001, 3.5]))",
     "spectra_by_detectid: detectid must be an integer id, got 3.5"),
    ("(SELECT count(*) FROM spectrum_by_source_id('x'))",
     "spectra_by_source_id: source_id must be an integer id, got x"),
    ("mask_bit_names(-1)", "mask_bit_names: mask must be an integer in 0..16383"),
    ("mask_has(2.5, 'MAIN')", "mask_has: mask must be an integer in 0..16383 (PDR1 MASK bits), got 2.5"),
    ("mask_has(1, NULL)", "mask_has: unknown mask bit name NULL"),
    ("elixer_url(123)", "elixer_url: detectid must be a 10-digit integer, got 123"),
    ("elixer_url('nan'::DOUBLE)", "elixer_url: detectid must be a 10-digit integer, got nan"),
    ("cube_url('nan'::DOUBLE, '034')", "cube_url: shotid must be an 11-digit integer"),
    ("cube_url(20190405020, NULL)", "cube_url: ifuslot must be a number of up to 3 digits, got NULL"),
])
def test_bad_arguments_raise_errors_naming_them(con, expression, message):
    with pytest.raises(duckdb.Error) as caught:
        con.sql(f"SELECT {expression}").fetchall()
    assert message in str(caught.value)
