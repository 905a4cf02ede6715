"""Batch extraction (dexdb.extract, ``dexdb extract``) on the tiny mock: coverage against the cube
WCS, values against dexdb.cube and tests/section6.py, the join back to the catalog with flux
recovery, target formats, errors, missing cubes, and resuming a killed run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from click.testing import CliRunner
from section6 import extract_spectrum

from dexdb.cli import main
from dexdb.constants import N_WAVE, WAVE
from dexdb.cube import aperture_spectrum, open_cube
from dexdb.extract import ExtractError, Options, extract
from dexdb.sqlload import connect


def assert_same_table(got: pa.Table, expected: pa.Table) -> None:
    """Equal schemas (with metadata) and values, NaN equal to NaN."""
    assert got.schema.equals(expected.schema, check_metadata=True)
    for name in got.column_names:
        column = got[name].combine_chunks()
        if pa.types.is_fixed_size_list(column.type):
            assert column.is_null().equals(expected[name].combine_chunks().is_null())
            expected_values = expected[name].combine_chunks().flatten().to_numpy()
            np.testing.assert_array_equal(column.flatten().to_numpy(), expected_values)
        else:
            assert column.equals(expected[name].combine_chunks()), name


@pytest.fixture(scope="module")
def targets(tiny_catalogs, tmp_path_factory):
    """Every HPSC2 row as a target: source_id, RA, DEC, in Parquet."""
    con = connect(tiny_catalogs)
    table = con.sql("SELECT source_id, RA, DEC, shotid AS epoch FROM sources ORDER BY source_id").to_arrow_table()
    con.close()
    path = tmp_path_factory.mktemp("targets") / "targets.parquet"
    pq.write_table(table, path)
    return path


@pytest.fixture(scope="module")
def batch(tiny_catalogs, tiny_pdr1, targets, tmp_path_factory):
    """One run in a process pool of two workers."""
    out = tmp_path_factory.mktemp("batch") / "spectra.parquet"
    report = extract(tiny_catalogs, targets, tiny_pdr1, out, workers=2, progress=False)
    return out, report, pq.read_table(out)


def test_output_schema(batch):
    out, report, table = batch
    spectrum = pa.list_(pa.float32(), N_WAVE)
    names = ["target_row", "source_id", "ra", "dec", "shotid", "ifuslot", "spec", "spec_err", "apcor"]
    assert table.schema.names == names
    assert [table.schema.field(n).type for n in ("spec", "spec_err", "apcor")] == [spectrum] * 3
    assert table.schema.field("shotid").type == pa.int64() and table.schema.field("ifuslot").type == pa.string()
    options = json.loads(pq.read_schema(out).metadata[b"dexdb.extract"])
    assert options["radius"] == 3.5 and options["exclude_bits"] == "ALL_NONZERO" and options["id_column"] == "source_id"
    assert report.rows == len(table) and report.targets == report.covered == len(set(table["target_row"].to_pylist()))
    assert not list(out.parent.glob(".*"))  # no parts directory or temporary file left


def test_rows_are_the_covering_cubes(batch, tiny_pdr1, targets):
    """Every (target, cube) pair whose spaxel grid contains the target, from each cube's own WCS."""
    _, _, table = batch
    positions = pq.read_table(targets)
    ra, dec = positions["RA"].to_numpy().astype(float), positions["DEC"].to_numpy().astype(float)
    expected = set()
    for path in sorted(Path(tiny_pdr1, "datacubes").glob("*/dex_cube_*.fits")):
        header = fits.getheader(path, "DATA")
        x, y = WCS(header).celestial.wcs_world2pix(ra, dec, 0)
        inside = (x >= -0.5) & (x <= 103.5) & (y >= -0.5) & (y <= 103.5)
        shotid, ifuslot = path.stem.split("_")[2:]
        expected |= {(int(row), int(shotid), ifuslot) for row in np.flatnonzero(inside)}
    got = set(zip(table["target_row"].to_pylist(), table["shotid"].to_pylist(), table["ifuslot"].to_pylist()))
    assert got == expected and len(got) == len(table)
    assert len(expected) > len(positions)  # repeat epochs: targets in several cubes


def test_values_equal_the_cube_module_and_section6(batch, tiny_pdr1):
    _, _, table = batch
    rows = table.to_pylist()[::4]  # each cube file read window by window costs ~0.1 s
    for number, row in enumerate(rows):
        path = Path(tiny_pdr1, f"datacubes/{row['shotid']}/dex_cube_{row['shotid']}_{row['ifuslot']}.fits")
        with open_cube(path) as cube:
            expected = aperture_spectrum(cube, row["ra"], row["dec"])
        for name, values in zip(("spec", "spec_err", "apcor"), expected):
            np.testing.assert_array_equal(np.asarray(row[name], np.float32), values)
        if number % 3 == 0:  # the independent vectorised reading of section 6
            reference = extract_spectrum(path, row["ra"], row["dec"])
            scale = np.abs(np.nan_to_num(reference["spectrum"])).max()
            np.testing.assert_allclose(np.asarray(row["spec"], float), reference["spectrum"], rtol=1e-6,
                                       atol=2e-6 * scale, equal_nan=True)
            np.testing.assert_allclose(np.asarray(row["apcor"], float), reference["apcor"], rtol=1e-6, equal_nan=True)


def test_joins_back_to_the_catalog_and_recovers_its_spectra(batch, tiny_catalogs):
    """Each source's own epoch joins on (source_id, shotid, ifuslot); away from the cube edge its
    spectrum is the catalog's within the noise (after one scale factor for bright sources: the
    cube is extincted, the catalog dereddened)."""
    out = batch[0]
    con = connect(tiny_catalogs)
    joined = con.execute(
        """WITH catalog AS (SELECT source_id, spec AS cat, spec_err AS cat_err
                            FROM spectra_by_source_id((SELECT list(source_id) FROM sources)))
           SELECT s.source_id, s.source_type, o.spec, o.spec_err, o.apcor, c.cat, c.cat_err
           FROM read_parquet(?) o
           JOIN sources s ON o.source_id = s.source_id AND o.shotid = s.shotid AND o.ifuslot = s.ifuslot
           JOIN catalog c ON c.source_id = s.source_id""",
        [str(out)],
    ).fetchall()
    n_sources = con.sql("SELECT count(*) FROM sources").fetchall()[0][0]
    con.close()
    assert len(joined) == n_sources  # every source once, in its own epoch's cube
    window = (WAVE > 4000) & (WAVE < 5400)
    checked = 0
    for source_id, source_type, *arrays in joined:
        spec, spec_err, apcor, cat, cat_err = (np.asarray(a, float) for a in arrays)
        if np.nanmedian(apcor) < 0.9:  # the aperture reaches past the cube edge, which apcor cannot correct
            continue
        use = window & np.isfinite(spec)
        signal_to_noise = np.median(cat[use] / cat_err[use])
        ratio = np.median(spec[use]) / np.median(cat[use]) if signal_to_noise > 3 else 1.0
        if signal_to_noise > 3:
            assert 0.85 < ratio < 1.05, source_id
        pull = (spec[use] - ratio * cat[use]) / np.hypot(spec_err[use], ratio * cat_err[use])
        # a S/N ~200 star also shows the extinction curve's slope across the band
        assert abs(np.median(pull)) < 0.3 and 0.7 < pull.std() < (2.0 if source_type == "star" else 1.3), source_id
        checked += 1
    assert checked >= 0.8 * n_sources


def test_target_formats_and_id_column(batch, tiny_catalogs, tiny_pdr1, targets, tmp_path):
    _, _, table = batch
    chosen = pq.read_table(targets).slice(10, 4)
    csv_path = tmp_path / "few.csv"
    csv_path.write_text("name,Dec,ra\n" + "".join(
        f"src{sid},{d!r},{r!r}\n" for sid, r, d in
        zip(chosen["source_id"].to_pylist(), chosen["RA"].to_pylist(), chosen["DEC"].to_pylist())))  # fmt: skip
    fits_path = tmp_path / "few.fits"
    Table({"DETECTID": np.array(chosen["source_id"].to_pylist()), "RA": chosen["RA"].to_numpy(),
           "DEC": chosen["DEC"].to_numpy(), "SPEC": np.zeros((4, 5))}).write(fits_path)  # fmt: skip
    by_pair = {(r["ra"], r["dec"], r["shotid"], r["ifuslot"]): r for r in table.to_pylist()}
    for path, id_column, expected_id in ((csv_path, "name", "name"), (fits_path, None, "DETECTID")):
        out = tmp_path / f"{path.stem}_{path.suffix[1:]}.parquet"
        report = extract(tiny_catalogs, path, tiny_pdr1, out, id_column=id_column, workers=1, progress=False)
        result = pq.read_table(out)
        assert result.schema.names[:2] == ["target_row", expected_id] and report.targets == 4
        for row in result.to_pylist():
            # CSV keeps the digits Python printed, so positions equal the float32 values exactly
            same = by_pair[(row["ra"], row["dec"], row["shotid"], row["ifuslot"])]
            for name in ("spec", "spec_err", "apcor"):
                np.testing.assert_array_equal(np.asarray(row[name]), np.asarray(same[name]))
            assert str(row[expected_id]).removeprefix("src") == str(same["source_id"])
            assert row["target_row"] == same["target_row"] - 10


def test_bad_targets(tiny_catalogs, tiny_pdr1, tmp_path):
    out = tmp_path / "out.parquet"
    cases = {
        "nodec.csv": ("ra,x\n1,2\n", "no column named 'dec'"),
        "twice.csv": ("ra,RA,dec\n1,2,3\n", r"2 \(ra, RA\) column named 'ra'"),
        "nan.csv": ("ra,dec\n150.1,2.2\n150.2,2.3\nnan,2.4\n", r"row 2 \(0-based\), column 'ra'"),
        "pole.csv": ("RA,DEC\n150.1,92.0\n", r"row 0 \(0-based\), column 'DEC': must be a number in \[-90, 90\]"),
        "text.csv": ("ra,dec\nabc,2\n", "column 'ra' must hold numbers"),
        "targets.txt": ("ra dec\n", "unknown targets format"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_text(content)
        with pytest.raises(ExtractError, match=message) as caught:
            extract(tiny_catalogs, path, tiny_pdr1, out, progress=False)
        assert str(path) in str(caught.value)
        result = CliRunner().invoke(main, ["extract", str(tiny_catalogs), str(path), "--pdr", str(tiny_pdr1),
                                           "-o", str(out), "--no-progress"])  # fmt: skip
        assert result.exit_code == 1 and str(path) in result.output
    good = tmp_path / "good.csv"
    good.write_text("ra,dec,name\n150.1,2.2,a\n")
    with pytest.raises(ExtractError, match="no id column 'source_id'"):
        extract(tiny_catalogs, good, tiny_pdr1, out, id_column="source_id", progress=False)
    with pytest.raises(ExtractError, match="clash"):
        extract(tiny_catalogs, good, tiny_pdr1, out, id_column="ra", progress=False)
    with pytest.raises(ExtractError, match="no ifu_index catalog"):
        extract(tmp_path, good, tiny_pdr1, out, progress=False)
    result = CliRunner().invoke(main, ["extract", str(tiny_catalogs), str(good), "--pdr", str(tiny_pdr1), "-o",
                                       str(out), "--keep-bits", "BADCAL,NOPE"])  # fmt: skip
    assert result.exit_code == 2 and "NOPE" in result.output
    assert not out.exists()


def test_missing_cubes(batch, tiny_catalogs, tiny_pdr1, targets, tmp_path):
    """A partial tree: the covering cubes linked from the mock except two."""
    partial = tmp_path / "pdr1"
    table = batch[2]
    cubes = sorted({Path(tiny_pdr1, f"datacubes/{s}/dex_cube_{s}_{i}.fits")
                    for s, i in zip(table["shotid"].to_pylist(), table["ifuslot"].to_pylist())})
    for path in cubes[2:]:
        link = partial / path.relative_to(tiny_pdr1)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(path)
    out = tmp_path / "out.parquet"
    with pytest.raises(ExtractError, match=f"2 of {len(cubes)} covering cubes are not under") as caught:
        extract(tiny_catalogs, targets, partial, out, progress=False)
    assert str(partial / cubes[0].relative_to(tiny_pdr1)) in str(caught.value) and "--skip-missing" in str(caught.value)
    report = extract(tiny_catalogs, targets, partial, out, skip_missing=True, workers=1, progress=False)
    assert sorted(report.missing_cubes) == sorted(str(p.relative_to(tiny_pdr1)) for p in cubes[:2])
    result = pq.read_table(out)
    names = {f"dex_cube_{s}_{i}.fits" for s, i in zip(result["shotid"].to_pylist(), result["ifuslot"].to_pylist())}
    assert names == {p.name for p in cubes[2:]} and report.cubes == len(cubes) - 2
    with pytest.raises(ExtractError, match="already exists"):
        extract(tiny_catalogs, targets, partial, out, skip_missing=True, progress=False)


def test_resume_after_kill(batch, tiny_catalogs, tiny_pdr1, targets, tmp_path):
    out = tmp_path / "spectra.parquet"
    parts = tmp_path / ".spectra.parquet.parts"
    code = (
        "from dexdb.extract import extract; "
        f"extract({str(tiny_catalogs)!r}, {str(targets)!r}, {str(tiny_pdr1)!r}, {str(out)!r}, workers=1, "
        "targets_per_task=4, progress=False)"
    )
    process = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while len(list(parts.glob("part-*.parquet"))) < 2 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert process.poll() is None, "the extraction ended before it could be killed"
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    assert not out.exists()
    finished = {p.name: p.stat().st_mtime_ns for p in parts.glob("part-*.parquet")}
    assert len(finished) >= 2 and json.loads((parts / "job.json").read_text())["targets_per_task"] == 4

    messages = []
    report = extract(tiny_catalogs, targets, tiny_pdr1, out, workers=1, progress=False, log=messages.append)
    assert report.resumed_tasks >= len(finished) and any("resuming" in m for m in messages)
    assert_same_table(pq.read_table(out), batch[2])  # same rows, same order as one run in 2 workers
    assert not parts.exists()


def test_parts_of_another_job_are_discarded(batch, tiny_catalogs, tiny_pdr1, tmp_path):
    good = tmp_path / "one.csv"
    good.write_text("ra,dec\n150.23189,2.363963\n")  # the COSMOS AGN
    out = tmp_path / "out.parquet"
    parts = tmp_path / ".out.parquet.parts"
    parts.mkdir()
    (parts / "job.json").write_text(json.dumps({"fingerprint": "other", "targets_per_task": 1}))
    pq.write_table(batch[2].slice(0, 1), parts / "part-000000.parquet")
    messages = []
    report = extract(tiny_catalogs, good, tiny_pdr1, out, Options(radius=2.0), workers=1, progress=False,
                     log=messages.append)
    assert any("different job" in m for m in messages) and report.resumed_tasks == 0
    result = pq.read_table(out)
    assert len(result) == report.rows >= 9  # nine epochs
    first = result.to_pylist()[0]
    path = Path(tiny_pdr1, f"datacubes/{first['shotid']}/dex_cube_{first['shotid']}_{first['ifuslot']}.fits")
    with open_cube(path) as cube:
        np.testing.assert_array_equal(np.asarray(first["spec"], np.float32),
                                      aperture_spectrum(cube, 150.23189, 2.363963, radius=2.0).spectrum)


def test_targets_outside_every_cube(tiny_catalogs, tiny_pdr1, tmp_path):
    path = tmp_path / "nowhere.csv"
    path.write_text("ra,dec,id\n10.0,-80.0,1\n200.0,10.0,2\n")
    out = tmp_path / "out.parquet"
    report = extract(tiny_catalogs, path, tiny_pdr1, out, progress=False)
    table = pq.read_table(out)
    assert (report.targets, report.covered, report.rows, len(table)) == (2, 0, 0, 0)
    assert table.schema.names[:2] == ["target_row", "id"]
