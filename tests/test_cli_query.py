"""The query commands (``dexdb cone/xmatch/spectrum/groups/cubes/sql``) on the tiny mock: each output
format against the Python API's result, which tests/test_api.py checks against independent
computations; bad arguments exit non-zero with a message."""

from __future__ import annotations

import io
import shutil
import subprocess

import astropy.units as u
import numpy as np
import polars as pl
import pytest
from astropy.table import Table
from click.testing import CliRunner

import dexdb
from dexdb import sqlload
from dexdb.cli import main
from dexdb.cli.query import CUBE_BYTES
from dexdb.constants import N_WAVE
from dexdb.ingest.hats_layout import partition_files

COSMOS_AGN = (150.23189, 2.363963)
LAB = (228.78581, 51.268036)


@pytest.fixture(scope="module")
def cat(tiny_catalogs):
    catalog = dexdb.open(tiny_catalogs)
    yield catalog
    catalog.close()


def run(*args, input: str | None = None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


def csv_of(text: str) -> pl.DataFrame:
    return pl.read_csv(io.StringIO(text))


def test_cone_table_csv_and_parquet_hold_the_api_rows(cat, tiny_catalogs, tmp_path):
    expected = cat.cone("sources", *COSMOS_AGN, 3.0)
    table = run("cone", tiny_catalogs, *COSMOS_AGN, "-r", 3)
    assert table.exit_code == 0, table.output
    assert all(str(i) in table.stdout for i in expected["source_id"].to_list())
    assert f"{expected.height} rows" in table.stderr
    csv = run("cone", tiny_catalogs, *COSMOS_AGN, "-r", 3, "--format", "csv", "--columns", "source_id,z_hetdex")
    got = csv_of(csv.stdout)
    assert got.columns == ["source_id", "z_hetdex", "dist_arcsec"]
    assert got["source_id"].to_list() == expected["source_id"].to_list()
    for column in ("z_hetdex", "dist_arcsec"):
        np.testing.assert_allclose(got[column].to_numpy(), expected[column].to_numpy(), rtol=1e-6)
    run("cone", tiny_catalogs, *COSMOS_AGN, "-r", 3, "-o", tmp_path / "near.parquet")
    assert pl.read_parquet(tmp_path / "near.parquet").equals(expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["near.parquet"]


def test_cone_takes_a_negative_dec_and_reports_a_bad_radius(cat, tiny_catalogs):
    south = run("cone", tiny_catalogs, 10.0, -40.5, "-r", 5, "-c", "detections")
    assert south.exit_code == 0 and "0 rows" in south.stderr
    bad = run("cone", tiny_catalogs, *COSMOS_AGN, "-r", -3)
    assert bad.exit_code == 1 and "cone: radius_arcsec must lie in (0, 36000]" in bad.output
    unknown = run("cone", tiny_catalogs, *COSMOS_AGN, "-c", "nosuch")
    assert unknown.exit_code == 1 and "unknown catalog 'nosuch'" in unknown.output


def test_xmatch_of_csv_and_fits_targets(cat, tiny_catalogs, tmp_path):
    targets = pl.DataFrame({"name": ["agn", "lab", "nothing"], "ra": [COSMOS_AGN[0], LAB[0], 10.0],
                            "dec": [COSMOS_AGN[1], LAB[1], -40.0]})
    targets.write_csv(tmp_path / "targets.csv")
    ra, dec = targets["ra"].to_numpy() * u.deg, targets["dec"].to_numpy() * u.deg
    Table({"name": targets["name"].to_list(), "ra": ra.to(u.rad), "dec": dec}).write(tmp_path / "targets.fits")
    Table({"name": targets["name"].to_list(), "ra": ra.to(u.hourangle), "dec": dec.to(u.arcmin)}).write(
        tmp_path / "targets.ecsv")
    expected = cat.xmatch(targets, "sources", 2.0, nearest=True)
    for name in ("targets.csv", "targets.fits", "targets.ecsv"):
        result = run("xmatch", tiny_catalogs, tmp_path / name, "-r", 2, "--nearest", "-o", tmp_path / "m.parquet")
        assert result.exit_code == 0, result.output
        got = pl.read_parquet(tmp_path / "m.parquet")
        assert got["name"].to_list() == ["agn", "lab"]
        assert got["source_id"].to_list() == expected["source_id"].to_list()
        np.testing.assert_allclose(got["dist_arcsec"].to_numpy(), expected["dist_arcsec"].to_numpy(), atol=1e-6)


def test_xmatch_names_the_file_it_cannot_use(tiny_catalogs, tmp_path):
    (tmp_path / "bad.csv").write_text("name,x,y\na,1,2\n")
    result = run("xmatch", tiny_catalogs, tmp_path / "bad.csv")
    assert result.exit_code == 1 and f"{tmp_path / 'bad.csv'}: xmatch: the table needs one column ra" in result.output
    (tmp_path / "t.txt").write_text("ra dec\n1 2\n")
    result = run("xmatch", tiny_catalogs, tmp_path / "t.txt")
    assert result.exit_code == 1 and "unknown table format" in result.output


def test_spectrum_rows_arrays_and_plot(cat, tiny_catalogs, tmp_path):
    ids = cat.sql("SELECT detectid FROM detection_spectra ORDER BY detectid LIMIT 2")["detectid"].to_list()
    result = run("spectrum", tiny_catalogs, *ids, 1, "--plot", tmp_path / "spec.png", "-o", tmp_path / "s.csv")
    assert result.exit_code == 0, result.output
    assert "not in the catalog: 1" in result.stderr
    assert (tmp_path / "spec.png").read_bytes()[:4] == b"\x89PNG"
    rows = pl.read_csv(tmp_path / "s.csv")
    assert rows.height == 2 * N_WAVE
    expected = cat.spectrum_rows(detectids=ids)
    np.testing.assert_array_equal(rows["flux"].to_numpy().astype(np.float32), expected["flux"].to_numpy())
    run("spectrum", tiny_catalogs, *ids, "-o", tmp_path / "s.parquet")
    arrays = pl.read_parquet(tmp_path / "s.parquet")
    assert arrays.schema["spec"] == pl.Array(pl.Float32, N_WAVE)
    assert arrays.equals(cat.spectra(detectids=ids))


def test_spectrum_by_source_id_as_a_table(cat, tiny_catalogs):
    (source_id,) = cat.cone("sources", *COSMOS_AGN, 0.05, columns=["source_id"])["source_id"].to_list()
    result = run("spectrum", tiny_catalogs, source_id, "--source-id")
    assert result.exit_code == 0 and str(source_id) in result.stdout and "3470.0" in result.stdout


def test_groups_members_and_regrouping(cat, tiny_catalogs):
    groups = run("groups", tiny_catalogs, *COSMOS_AGN, "-r", 3, "--format", "csv")
    assert groups.exit_code == 0, groups.output
    found = csv_of(groups.stdout)
    assert found["group_id"].to_list() == cat.groups(*COSMOS_AGN, 3.0)["group_id"].to_list()
    assert found["n_epochs"].to_list() == [9] and found["source_ids"][0].startswith("[")
    members = csv_of(run("groups", tiny_catalogs, *COSMOS_AGN, "-r", 3, "--members", "--format", "csv").stdout)
    assert sorted(members["source_id"].to_list()) == sorted(cat.group_members(found["group_id"])["source_id"].to_list())
    regrouped = csv_of(run("groups", tiny_catalogs, *COSMOS_AGN, "-r", 600, "--linking", 3, "--format", "csv").stdout)
    near = cat.cone("sources", *COSMOS_AGN, 600.0, columns=["source_id", "source_name", "shotid", "RA", "DEC"])
    assert regrouped["group_id"].to_list() == cat.regroup(near, 3.0)["group_id"].to_list()


def test_cubes_near_a_position_write_the_download_list(cat, tiny_catalogs, tmp_path):
    expected = cat.cubes_at(*COSMOS_AGN)["url"].to_list()
    assert len(expected) >= 2
    result = run("cubes", tiny_catalogs, "--near", *COSMOS_AGN, "--urls", tmp_path / "urls.txt")
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "urls.txt").read_text().splitlines()
    urls = [line for line in lines if not line.startswith("#")]
    assert urls == expected and all(url.startswith("https://") and url.endswith(".fits") for url in urls)
    size = f"{len(expected)} cubes, about {len(expected) * CUBE_BYTES / 1e9:.2f} GB"
    assert size in result.stderr and any(size in line for line in lines if line.startswith("#"))


def test_cubes_of_a_targets_file_list_each_cube_once(cat, tiny_catalogs, tmp_path):
    targets = pl.DataFrame({"name": ["agn", "agn again", "lab"], "ra": [COSMOS_AGN[0], COSMOS_AGN[0] + 1e-5, LAB[0]],
                            "dec": [COSMOS_AGN[1], COSMOS_AGN[1], LAB[1]]})
    targets.write_parquet(tmp_path / "targets.parquet")
    result = run("cubes", tiny_catalogs, "--targets", tmp_path / "targets.parquet", "--urls", tmp_path / "urls.txt",
                 "--format", "csv")
    assert result.exit_code == 0, result.output
    covering = cat.cubes_covering(targets)
    listed = pl.read_csv(io.StringIO(result.stdout), schema_overrides={"ifuslot": pl.String})
    assert listed.select("name", "shotid", "ifuslot").equals(covering.select("name", "shotid", "ifuslot"))
    urls = [line for line in (tmp_path / "urls.txt").read_text().splitlines() if not line.startswith("#")]
    assert sorted(urls) == sorted(set(covering["url"].to_list())) and len(urls) < covering.height


def test_cubes_needs_exactly_one_source_of_positions(tiny_catalogs, tmp_path):
    assert run("cubes", tiny_catalogs).exit_code == 2
    both = run("cubes", tiny_catalogs, "--near", 1, 2, "--targets", __file__)
    assert both.exit_code == 2 and "either --near RA DEC or --targets FILE" in both.output


def test_sql_query_and_builtin_prompt(cat, tiny_catalogs):
    query = "SELECT source_type, count(*) AS n FROM sources GROUP BY ALL ORDER BY n DESC, source_type"
    result = run("sql", tiny_catalogs, "-c", query, "--format", "csv")
    assert result.exit_code == 0 and csv_of(result.stdout).equals(cat.sql(query))
    session = run("sql", tiny_catalogs, "--builtin",
                  input=".tables\nSELECT count(*)\n AS n FROM detections;\nSELECT * FROM nosuch;\n.quit\n")
    assert session.exit_code == 0, session.output
    assert "source_spectra" in session.stdout and str(cat.sql("SELECT count(*) AS n FROM detections")["n"][0]) in session.stdout
    assert "nosuch does not exist" in session.stderr


@pytest.mark.skipif(shutil.which("duckdb") is None, reason="needs the DuckDB CLI (pip install duckdb-cli)")
def test_sql_opens_the_duckdb_shell_with_the_macros(cat, tiny_catalogs):
    shell = subprocess.run(["dexdb", "sql", str(tiny_catalogs)], input="SELECT count(*) FROM cone('sources', 150.23189, 2.363963, 3);\n",
                           capture_output=True, text=True, timeout=120, check=False)
    assert shell.returncode == 0, shell.stderr
    assert str(cat.cone("sources", *COSMOS_AGN, 3.0).height) in shell.stdout


@pytest.mark.skipif(shutil.which("duckdb") is None, reason="needs the DuckDB CLI (pip install duckdb-cli)")
def test_sql_brings_an_entry_point_written_by_an_older_dexdb_up_to_date(tiny_catalogs, tmp_path):
    out = tmp_path / "catalogs"
    shutil.copytree(tiny_catalogs, out, symlinks=True)
    entry_point = out / sqlload.ENTRY_POINT
    fresh = entry_point.read_text()
    # an entry point from before the macro cone_in_files existed
    entry_point.write_text(fresh.replace("CREATE OR REPLACE TEMP MACRO cone_in_files", "CREATE OR REPLACE TEMP MACRO old_name"))
    files = [str(p.path) for p in partition_files(out / "sources" / "sources")]
    query = f"SELECT count(*) FROM cone_in_files({files!r}, 150.23189, 2.363963, 3);\n"
    shell = subprocess.run(["dexdb", "sql", str(out)], input=query, capture_output=True, text=True, timeout=120, check=False)
    assert shell.returncode == 0, shell.stderr
    assert "updated" in shell.stderr and entry_point.read_text() == fresh
    again = subprocess.run(["dexdb", "sql", str(out)], input=query, capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 0 and "updated" not in again.stderr
    assert shell.stdout == again.stdout
    with dexdb.open(out) as cat:
        assert str(cat.cone("sources", 150.23189, 2.363963, 3.0).height) in shell.stdout


def test_help_shows_examples():
    for command in ("cone", "xmatch", "spectrum", "groups", "cubes", "sql"):
        result = run(command, "--help")
        assert result.exit_code == 0 and "Examples:" in result.output and "Python: cat." in result.output
