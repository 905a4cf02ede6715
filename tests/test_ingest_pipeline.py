"""``dexdb ingest`` / ``dexdb verify`` end to end on the tiny mock."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import healpy as hp
import numpy as np
import pytest
from astropy.io import fits
from click.testing import CliRunner

from dexdb.cli import main
from dexdb.ingest.pipeline import ALL_PRODUCTS, ingest
from dexdb.ingest.product import IngestError
from dexdb.ingest.verify import verify


DERIVED = {"source_groups", "source_group_members"}


def quiet(*_):
    pass


def manifest(out: Path) -> dict:
    return json.loads((out / "current" / "manifest.json").read_text())


def file_digests(out: Path) -> dict[str, dict[str, str]]:
    return {name: entry["files"] for name, entry in manifest(out)["products"].items()}


def parquet_glob(out: Path, name: str) -> str:
    return str(out / name / name / "dataset" / "*" / "*" / "*" / "*.parquet")


@pytest.fixture(scope="module")
def catalogs(tiny_catalogs):
    return tiny_catalogs


def test_every_product_is_published_with_source_row_counts(tiny_pdr1, catalogs):
    m = manifest(catalogs)
    assert set(m["products"]) == set(ALL_PRODUCTS) | DERIVED and m["missing"] == []
    main_rows = fits.getheader(tiny_pdr1 / "hetdex_source_catalog_2/hetdex_sc2_v1.5.fits", 1)["NAXIS2"]
    ifu_rows = fits.getheader(tiny_pdr1 / "ifu-index.fits", 1)["NAXIS2"]
    assert m["products"]["sources"]["rows"] == main_rows
    assert m["products"]["ifu_index"]["rows"] == ifu_rows
    con = duckdb.connect()
    assert m["products"]["source_group_members"]["rows"] == main_rows
    for name in m["products"]:
        n = con.execute(f"SELECT count(*) FROM read_parquet('{parquet_glob(catalogs, name)}')").fetchone()[0]
        assert n == m["products"][name]["rows"] > 0


def test_catalogs_are_valid_hats(catalogs):
    from hats.io.validation import is_valid_catalog

    for name in (*ALL_PRODUCTS, *DERIVED):
        assert is_valid_catalog(catalogs / name / name, strict=True), name


def test_hive_keys_and_healpix_29(catalogs):
    con = duckdb.connect()
    rows = con.execute(
        f"SELECT Norder, Npix, _healpix_29, RA, DEC FROM read_parquet('{parquet_glob(catalogs, 'sources')}', "
        "hive_partitioning = true)"
    ).fetchnumpy()
    expected = hp.ang2pix(2**29, rows["RA"].astype(float), rows["DEC"].astype(float), nest=True, lonlat=True)
    np.testing.assert_array_equal(rows["_healpix_29"], expected)
    np.testing.assert_array_equal(rows["_healpix_29"] >> (2 * (29 - rows["Norder"].astype(np.int64))), rows["Npix"])


def test_lsdb_cone_search_equals_brute_force(tiny_pdr1, catalogs):
    import lsdb

    main = fits.getdata(tiny_pdr1 / "hetdex_source_catalog_2/hetdex_sc2_v1.5.fits")
    ra0, dec0, radius = 150.23189, 2.363963, 60.0
    r1, d1, r2, d2 = map(np.deg2rad, (main["RA"].astype(float), main["DEC"].astype(float), ra0, dec0))
    sep = 2 * np.arcsin(np.sqrt(np.sin((d2 - d1) / 2) ** 2 + np.cos(d1) * np.cos(d2) * np.sin((r2 - r1) / 2) ** 2))
    expected = set(main["source_id"][np.rad2deg(sep) * 3600 < radius].tolist())
    found = lsdb.open_catalog(catalogs / "sources").cone_search(ra0, dec0, radius).compute()
    assert set(found["source_id"].tolist()) == expected and len(expected) >= 9


def test_same_input_same_files(tiny_pdr1, catalogs, tmp_path):
    again = tmp_path / "again"
    ingest(tiny_pdr1, again, log=quiet)
    assert file_digests(again) == file_digests(catalogs)


def test_rerun_is_a_no_op_and_verify_passes(tiny_pdr1, catalogs):
    before = file_digests(catalogs)
    report = ingest(tiny_pdr1, catalogs, log=quiet)
    assert all(p.skipped for p in report.products)
    assert file_digests(catalogs) == before
    assert verify(catalogs, tiny_pdr1) == []


def test_rerun_after_the_switch_keeps_the_previous_version(tiny_pdr1, catalogs, tmp_path):
    """Re-running an ingest that had already switched ``current`` (killed before it dropped old
    versions, or simply run twice) must not drop the version before it, which readers may still use."""
    out = tmp_path / "catalogs"
    shutil.copytree(catalogs, out, symlinks=True)
    published = Path(os.readlink(out / "current")).name
    previous = out / "versions" / "0123456789abcdef"
    shutil.copytree(out / "versions" / published, previous, copy_function=os.link)
    ingest(tiny_pdr1, out, log=quiet)
    assert Path(os.readlink(out / "current")).name == published
    assert previous.is_dir() and (previous / "manifest.json").is_file()


def test_killed_ingest_resumes_to_the_same_content(tiny_pdr1, catalogs, tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "dexdb.cli", "ingest", str(tiny_pdr1), str(out), "--no-progress"],
                            stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:  # kill it once the second product has started
        if line.startswith("detinfo:"):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    assert not (out / "current").exists()  # nothing published
    ingest(tiny_pdr1, out, log=quiet)
    assert file_digests(out) == file_digests(catalogs)


def test_partial_release_ingests_what_is_there(tiny_pdr1, tmp_path):
    partial = tmp_path / "pdr1"
    partial.mkdir()
    shutil.copy(tiny_pdr1 / "ifu-index.fits", partial)
    shutil.copytree(tiny_pdr1 / "hetdex_source_catalog_2", partial / "hetdex_source_catalog_2")
    lines: list[str] = []
    report = ingest(partial, tmp_path / "out", log=lines.append)
    assert {p.name for p in report.products} == {"ifu_index", "sources", "source_spectra", "detinfo"} | DERIVED
    assert set(report.missing) == {"detections", "detection_spectra", "fibers", "detect_index"}
    assert any(line.startswith("missing: detections") for line in lines)


def test_bad_input_publishes_nothing_and_keeps_the_old_version(tiny_pdr1, catalogs, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(catalogs, out, symlinks=True)
    before = os.readlink(out / "current")
    bad = tmp_path / "pdr1"
    shutil.copytree(tiny_pdr1, bad, ignore=shutil.ignore_patterns("datacubes"))
    with fits.open(bad / "ifu-index.fits", mode="update") as hdul:
        hdul[1].data["dec_cen"][2] = np.nan
    result = CliRunner().invoke(main, ["ingest", str(bad), str(out), "--no-progress"])
    assert result.exit_code == 1
    assert "ifu-index.fits" in result.output and "dec_cen" in result.output and "row 2" in result.output
    assert os.readlink(out / "current") == before
    assert verify(out) == []


def test_verify_names_a_flipped_byte_and_a_deleted_partition(catalogs, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(catalogs, out, symlinks=True)
    files = sorted((out / "current").glob("sources/sources/dataset/*/*/*/*.parquet"))
    data = bytearray(files[0].read_bytes())
    data[len(data) // 2] ^= 0xFF
    files[0].write_bytes(bytes(data))
    files[-1].unlink()
    problems = verify(out)
    assert any(str(files[0].relative_to(out / "current")) in p and "changed" in p for p in problems)
    assert any(str(files[-1].relative_to(out / "current")) in p and "missing" in p for p in problems)
    result = CliRunner().invoke(main, ["verify", str(out)])
    assert result.exit_code == 1


def test_ingest_of_a_missing_release_is_a_clear_error(tmp_path):
    with pytest.raises(IngestError, match="no PDR1 product found"):
        ingest(tmp_path, tmp_path / "out", log=quiet)
