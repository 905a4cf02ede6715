"""The SQL regression cases of tests/sql/ (see its README) through Python DuckDB and the DuckDB CLI,
partition pruning of id lookups in both, and the CLI entry point that `dexdb ingest` writes: from any
directory, after a move, offline, and over a partial ingest."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from dexdb import sqlload

CASES_DIR = Path(__file__).parent / "sql"
CASES = sorted(path.stem for path in CASES_DIR.glob("*.sql"))
REGENERATE = os.environ.get("DEXDB_SQL_REGEN") == "1"
ENGINES = ("python", "cli")


def as_text(query: str) -> str:
    """The query with every value cast to VARCHAR, so both engines render values the same way."""
    return f"SELECT COLUMNS(*)::VARCHAR FROM (\n{query.strip().rstrip(';')}\n)"


@pytest.fixture(scope="module")
def python_con(tiny_catalogs):
    con = sqlload.connect(tiny_catalogs)
    yield con
    con.close()


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """Runs a program the way a user of the CLI would, but isolated: an empty HOME (no ~/.duckdbrc, no
    cached extensions), no reachable proxy for any download, and a working directory outside OUT."""
    if shutil.which("duckdb") is None:
        pytest.fail("the DuckDB CLI is not on PATH: pip install -e '.[test]' installs duckdb-cli")
    home = tmp_path_factory.mktemp("cli-home")
    elsewhere = tmp_path_factory.mktemp("cli-cwd")
    dead_proxy = "http://127.0.0.1:9"
    env = {**os.environ, "HOME": str(home), "http_proxy": dead_proxy, "https_proxy": dead_proxy,
           "HTTP_PROXY": dead_proxy, "HTTPS_PROXY": dead_proxy}

    def run(*args: str | os.PathLike, cwd: Path = elsewhere) -> subprocess.CompletedProcess:
        return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=120, check=False)

    return run


def cli_rows(result: subprocess.CompletedProcess) -> list[list[str]]:
    assert result.returncode == 0, result.stderr
    return list(csv.reader(io.StringIO(result.stdout)))


def python_rows(con, query: str) -> list[list[str]]:
    relation = con.sql(query)
    return [relation.columns, *(["NULL" if v is None else v for v in row] for row in relation.fetchall())]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", CASES)
def test_case(case, engine, tiny_catalogs, python_con, cli):
    query = as_text((CASES_DIR / f"{case}.sql").read_text())
    expected_csv, expected_error = CASES_DIR / f"{case}.csv", CASES_DIR / f"{case}.error"

    if expected_error.exists():
        message = expected_error.read_text().strip()
        if engine == "python":
            with pytest.raises(duckdb.Error) as caught:
                python_con.sql(query).fetchall()
            assert message in str(caught.value)
        else:
            result = cli(tiny_catalogs / sqlload.LAUNCHER, "-csv", "-c", query)
            assert result.returncode != 0 and message in result.stderr, result.stderr
        return

    if engine == "python":
        rows = python_rows(python_con, query)
        if REGENERATE:
            with expected_csv.open("w", newline="") as f:
                csv.writer(f, lineterminator="\n").writerows(rows)
    else:
        rows = cli_rows(cli(tiny_catalogs / sqlload.LAUNCHER, "-csv", "-c", query))
    assert expected_csv.exists(), f"no {expected_csv.name} or {expected_error.name}: see tests/sql/README.md"
    with expected_csv.open(newline="") as f:
        assert rows == list(csv.reader(f))


def parquet_scans(profile) -> list[dict]:
    """The READ_PARQUET operators of a JSON profile (the layouts of DuckDB 1.5 and 2.0 differ)."""
    if isinstance(profile, list):
        return [scan for item in profile for scan in parquet_scans(item)]
    if not isinstance(profile, dict):
        return []
    own = [profile["extra_info"]] if profile.get("extra_info", {}).get("Function") == "READ_PARQUET" else []
    return own + [scan for value in profile.values() for scan in parquet_scans(value)]


def partition_files_holding(catalog_dir: Path, column: str, ids: list[int]) -> set[Path]:
    return {path.resolve() for path in (catalog_dir / "dataset").glob("Norder=*/Dir=*/Npix=*/*.parquet")
            if set(pq.read_table(path, columns=[column]).column(0).to_pylist()) & set(ids)}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kind, catalog", [("detectid", "detection_spectra"), ("source_id", "source_spectra")])
def test_lookup_reads_only_the_partitions_holding_the_ids(kind, catalog, engine, tiny_catalogs, python_con, cli):
    catalog_dir = tiny_catalogs / catalog / catalog
    partitions = sorted((catalog_dir / "dataset").glob("Norder=*/Dir=*/Npix=*/*.parquet"))
    assert len(partitions) > 2, "the tiny mock must have several partitions for this test to mean anything"
    first_ids = [pq.read_table(p, columns=[kind]).column(0)[0].as_py() for p in partitions]
    for ids in [[i] for i in first_ids] + [first_ids[:2]]:
        macro = f"spectrum_by_{kind}({ids[0]})" if len(ids) == 1 else f"spectra_by_{kind}({ids})"
        query = f"EXPLAIN (ANALYZE, FORMAT json) SELECT * FROM {macro}"
        if engine == "python":
            profile = json.loads(python_con.sql(query).fetchall()[0][1])
        else:
            profile = json.loads(cli(tiny_catalogs / sqlload.LAUNCHER, "-json", "-c", query).stdout)
        scans = [s for s in parquet_scans(profile) if "/dataset/Norder=" in s["Filename(s)"]]
        assert len(scans) == 1, scans
        read = {Path(name).resolve() for name in scans[0]["Filename(s)"].split(", ")}
        assert read == partition_files_holding(catalog_dir, kind, ids), macro
        assert int(scans[0]["Total Files Read"]) == len(read)


def test_ingest_writes_current_entry_point(tiny_catalogs):
    catalogs = sqlload.catalogs_in(tiny_catalogs)
    assert (tiny_catalogs / sqlload.ENTRY_POINT).read_text() == sqlload.entry_point_sql(catalogs)
    assert os.access(tiny_catalogs / sqlload.LAUNCHER, os.X_OK)


def test_entry_point_works_offline_after_move_from_any_directory(tiny_catalogs, tmp_path, python_con, cli):
    moved = tmp_path / "it's moved" / "catalogs"
    shutil.copytree(tiny_catalogs, tmp_path / "copy", symlinks=True)
    moved.parent.mkdir()
    (tmp_path / "copy").rename(moved)
    for path in (moved / sqlload.ENTRY_POINT, moved / sqlload.LAUNCHER):
        assert str(tiny_catalogs) not in path.read_text()

    query = ("SELECT current_setting('file_search_path') AS search_path, "
             "(SELECT count(*) FROM spectrum_rows_by_detectid(3000000001)) AS samples, "
             "(SELECT count(*) FROM detection_spectra) AS spectra")
    rows = cli_rows(cli(moved / sqlload.LAUNCHER, "-csv", "-c", query))
    spectra = python_con.sql("SELECT count(*) FROM detection_spectra").fetchall()[0][0]
    assert rows[1] == [str((moved / "current").resolve()), "1036", str(spectra)]

    loaded = "SELECT extension_name FROM duckdb_extensions() WHERE loaded ORDER BY 1"
    bare_cli = cli_rows(cli("duckdb", "-csv", "-c", loaded))
    assert cli_rows(cli(moved / sqlload.LAUNCHER, "-csv", "-c", loaded)) == bare_cli


def test_init_file_from_inside_out_dir(tiny_catalogs, python_con, cli):
    result = cli("duckdb", "-csv", "-init", sqlload.ENTRY_POINT, "-c", "SELECT count(*) AS n FROM sources",
                 cwd=tiny_catalogs)
    n = python_con.sql("SELECT count(*) FROM sources").fetchall()[0][0]
    assert cli_rows(result) == [["n"], [str(n)]]


def test_partial_ingest_skips_what_needs_absent_catalogs(tiny_catalogs, tmp_path, cli):
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("ifu_index", "sources", "source_spectra"):
        (partial / name).symlink_to((tiny_catalogs / name).resolve())

    con = sqlload.connect(partial)
    views = {row[0] for row in con.sql("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    macros = {row[0] for row in con.sql("SELECT function_name FROM duckdb_functions() "
                                        "WHERE function_type IN ('macro', 'table_macro')").fetchall()}
    assert {"ifu_index", "sources", "source_spectra", "source_spectra_source_id_index"} <= views
    assert not views & {"detinfo", "detections", "detection_spectra", "fibers", "detect_index"}
    assert {"spectrum_by_source_id", "mask_bit_names", "wave_grid"} <= macros
    assert "spectrum_by_detectid" not in macros

    sqlload.write_entry_point(partial)
    assert "read_parquet('detection_spectra/" not in (partial / sqlload.ENTRY_POINT).read_text()
    rows = cli_rows(cli(partial / sqlload.LAUNCHER, "-csv", "-c",
                        "SELECT count(*) AS n FROM spectrum_rows_by_source_id(2100000001)"))
    assert rows == [["n"], ["1036"]]
    missing = cli(partial / sqlload.LAUNCHER, "-csv", "-c", "SELECT count(*) FROM detections")
    assert missing.returncode != 0 and "detections" in missing.stderr
