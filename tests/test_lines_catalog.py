"""``dexdb classify`` on the tiny mock: the line_solutions catalog and its SQL, published as a new version
without touching the previous one, and agreeing with the mock's true source types."""

from __future__ import annotations

import hashlib
import os
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from dexdb.ingest.verify import verify

from dexdb.cli import main
from dexdb.lines.classify import CATALOG, ClassifyError, analyse_spectra, classify_catalog, spectra_arrays
from dexdb.lines.solutions import expected_lines
from dexdb.lines.table import classification_lines, line_table
from dexdb.sqlload import connect

TRUTH = """
WITH s AS (SELECT source_id, detectid, shotid, RA, DEC, source_type, z_hetdex FROM sources),
     other_lines AS (  -- other line detections of the same object at a line of the table at its z
         SELECT s.source_id, count(*) AS n
         FROM s JOIN detections AS d
           ON d.shotid = s.shotid AND d.det_type = 'line' AND d.detectid <> s.detectid
          AND abs(d.ra - s.RA) * cos(radians(s.DEC)) < 1.5 / 3600 AND abs(d.dec - s.DEC) < 1.5 / 3600
         JOIN line_table AS t ON t.classify AND abs(d.wave - t.rest_wave * (1 + s.z_hetdex)) < 10
         GROUP BY s.source_id)
SELECT s.detectid, s.source_type, s.z_hetdex, coalesce(o.n, 0) > 0 AS multi_line, l.accepted, l.z
FROM s JOIN line_solutions AS l USING (detectid) LEFT JOIN other_lines AS o USING (source_id)
"""


def tree_digest(root):
    digest = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as handle:
                digest[os.path.relpath(path, root)] = hashlib.sha256(handle.read()).hexdigest()
    return digest


@pytest.fixture(scope="module")
def classified(tiny_catalogs, tmp_path_factory):
    out = tmp_path_factory.mktemp("lines") / "catalogs"
    shutil.copytree(tiny_catalogs, out, symlinks=True)
    before_version = os.readlink(out / "current")
    before = tree_digest(out / before_version)
    reader = connect(out)  # a session opened on the previous version
    report = classify_catalog(out, log=lambda _: None)
    return out, before_version, before, reader, report


def test_publishes_a_new_version_and_leaves_the_previous_one_intact(classified):
    out, before_version, before, reader, report = classified
    assert os.readlink(out / "current") == f"versions/{report.version}" != before_version
    assert tree_digest(out / before_version) == before
    assert reader.sql("SELECT count(*) FROM detections").fetchall()[0][0] > 0  # still readable
    old = next(p for p in (out / before_version / "detections").rglob("*.parquet"))
    new = out / "versions" / report.version / old.relative_to(out / before_version)
    assert os.stat(old).st_ino == os.stat(new).st_ino  # shared, not copied
    assert (out / CATALOG).resolve() == (out / "versions" / report.version / CATALOG).resolve()
    assert not [p.name for p in out.iterdir() if p.name.endswith(".staging")]
    assert verify(out) == []


def test_one_row_per_line_detection_with_a_spectrum(classified):
    out, *_, report = classified
    con = connect(out)
    expected = con.sql("SELECT count(*) FROM detections JOIN detection_spectra USING (detectid) "
                       "WHERE detections.det_type = 'line'").fetchall()[0][0]
    assert report.rows == expected == con.sql("SELECT count(DISTINCT detectid) FROM line_solutions").fetchall()[0][0]
    rows = con.sql("SELECT best_line, z, line_wave, accepted, solution, n_lines, len(lines), score_fraction "
                   "FROM line_solutions").fetchall()
    table = line_table()
    for best, z, line_wave, accepted, solution, n_lines, n_listed, fraction in rows:
        assert n_lines == n_listed and solution == (best if accepted else None)
        if best is not None:
            assert z == pytest.approx(line_wave / table.rest_wave[table.index(best)] - 1, rel=1e-12)
            assert 0 < fraction <= 1


def test_catalog_rows_equal_the_analysis_of_their_spectra(classified):
    out, *_ = classified
    con = connect(out)
    batch = con.sql("SELECT d.detectid, d.wave::DOUBLE AS wave, s.spec, s.spec_err FROM detections AS d "
                    "JOIN detection_spectra AS s USING (detectid) WHERE d.det_type = 'line' ORDER BY detectid "
                    "LIMIT 40").to_arrow_table()
    spec, err = spectra_arrays(batch)
    analysis = analyse_spectra(batch["wave"].to_numpy(), spec, err)
    stored = con.sql("SELECT detectid, line_flux, plae_poii, score FROM line_solutions ORDER BY detectid "
                     "LIMIT 40").fetchall()
    assert [r[0] for r in stored] == batch["detectid"].to_pylist()
    np.testing.assert_array_equal([r[1] for r in stored], analysis.classification.main.flux)
    np.testing.assert_array_equal([r[3] for r in stored], analysis.classification.best_score)
    np.testing.assert_array_equal(np.array([r[2] for r in stored], dtype=float), analysis.plae.ratio)


def test_solutions_agree_with_the_true_source_types(classified):
    out, *_ = classified
    rows = connect(out).sql(TRUTH).fetchall()
    multi = [r for r in rows if r[3]]
    assert len(multi) >= 10 and {r[1] for r in multi} == {"oii", "agn"}
    for detectid, source_type, z_true, _, accepted, z in rows:
        if accepted:  # an accepted solution is the object's redshift, never another
            assert abs(z - z_true) / (1 + z_true) < 3e-3, (detectid, source_type)
        if source_type == "lae":
            assert not accepted
    assert all(r[4] for r in multi if r[1] == "agn")
    assert sum(bool(r[4]) for r in multi) >= 0.85 * len(multi)


def test_line_hypotheses_macro_equals_the_classifier(classified):
    out, *_ = classified
    con = connect(out)
    lines = classification_lines()
    for wave in (3500.0, 3727.8, 4102.25, 4861.33, 5300.0):
        expected = expected_lines(np.array([wave]), lines)
        sql = con.sql("SELECT line, z, other_lines FROM line_hypotheses(?)", params=[wave]).fetchall()
        hypotheses = [lines.names[h] for h in range(len(lines)) if wave / lines.rest_wave[h] - 1 >= 0]
        assert [r[0] for r in sql] == hypotheses
        for line, z, others in sql:
            h = lines.index(line)
            assert z == pytest.approx(wave / lines.rest_wave[h] - 1, rel=1e-15)
            pick = expected.hypothesis == h
            assert [o["line"] for o in others] == [lines.names[o] for o in expected.line[pick]]
            np.testing.assert_allclose([o["wave"] for o in others], expected.wave[pick], rtol=1e-12)
    table = con.sql("SELECT * FROM line_table").to_arrow_table()
    assert table.to_pylist() == line_table().to_arrow().to_pylist()


def test_line_hypotheses_refuses_bad_wavelengths(classified):
    out, *_ = classified
    con = connect(out)
    for bad in ("NULL", "-4000", "'abc'", "'nan'::DOUBLE"):
        with pytest.raises(Exception, match="line_hypotheses: wave must be a positive wavelength"):
            con.sql(f"FROM line_hypotheses({bad})").fetchall()


def test_cli_where_filter_and_errors(tiny_catalogs, tmp_path):
    out = tmp_path / "catalogs"
    shutil.copytree(tiny_catalogs, out, symlinks=True)
    runner = CliRunner()
    result = runner.invoke(main, ["classify", str(out), "--where", "wave > 5000", "--no-progress"])
    assert result.exit_code == 0, result.output
    con = connect(out)
    count = con.sql("SELECT count(*) FROM detections JOIN detection_spectra USING (detectid) "
                    "WHERE detections.det_type = 'line' AND detections.wave > 5000").fetchall()[0][0]
    assert con.sql("SELECT count(*), min(wave) FROM line_solutions").fetchall()[0][0] == count
    assert f"{count:,} detections" in result.output
    bad = runner.invoke(main, ["classify", str(out), "--where", "no_such_column > 1", "--no-progress"])
    assert bad.exit_code != 0 and "--where 'no_such_column > 1' is not a valid filter on detections" in bad.output
    empty = runner.invoke(main, ["classify", str(out), "--where", "wave < 0", "--no-progress"])
    assert empty.exit_code != 0 and "no line detection with a spectrum matches --where" in empty.output
    threshold = runner.invoke(main, ["classify", str(out), "--min-fraction", "2"])
    assert threshold.exit_code != 0 and "min_fraction" in threshold.output
    (tmp_path / "empty").mkdir()
    with pytest.raises(ClassifyError, match="needs the catalogs detections and detection_spectra"):
        classify_catalog(tmp_path / "empty")
