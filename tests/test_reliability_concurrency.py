"""Readers while a re-ingest publishes a new version.

An output directory holds the ingest of the tiny mock. Reader processes query it through
``dexdb.sqlload.connect`` in a loop (cones, spectra by id, a whole catalog; a new session every few
rounds) while ``python -m dexdb.cli ingest`` writes and publishes the ingest of a variant of the mock
whose sources differ (flux and catalog spectra doubled). A query that ran wholly before the switch of
``current`` must give the old catalog's answer, one that ran wholly after it the new catalog's, and no
query may fail; every reader must have seen both versions. The new answers are checked against the old
ones independently (doubled values, same rows).

A query that is running at the switch itself must see one version too: that is the second test, which
makes a query straddle the switch on purpose.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import dexdb

from dexdb.ingest.pipeline import ingest, publish_derived
from dexdb.sqlload import connect
from reliability_support import result_digest, variant_release

N_READERS = 3
COSMOS_AGN = (150.23189, 2.363963)
SUPPORT = Path(__file__).with_name("reliability_support.py")


def quiet(*_) -> None:
    pass


def reader_queries(out: Path) -> list[tuple[str, dict]]:
    """Cones, spectra by id (one, and a list spanning every partition), a whole catalog."""
    with connect(out) as con:
        ids = [row[0] for row in con.sql("SELECT min(source_id) FROM sources GROUP BY Npix ORDER BY 1").fetchall()]
        detectid = con.execute("SELECT min(detectid) FROM detection_spectra").fetchone()[0]
    assert len(ids) > 1
    ra, dec = COSMOS_AGN
    return [
        ("SELECT source_id, flux, dist_arcsec FROM cone('sources', $ra, $dec, 37) ORDER BY source_id",
         {"ra": ra, "dec": dec}),
        ("SELECT source_id, spec FROM spectrum_by_source_id($id)", {"id": ids[0]}),
        ("SELECT ord, source_id, spec, spec_err FROM spectra_by_source_id($ids)", {"ids": ids}),
        ("SELECT source_id, flux FROM sources ORDER BY source_id", {}),
        ("SELECT detectid, spec FROM spectrum_by_detectid($id)", {"id": detectid}),
        ("SELECT detectid, dist_arcsec FROM cone('detections', $ra, $dec, 60) ORDER BY detectid",
         {"ra": ra, "dec": dec}),
    ]


def answers(out: Path, queries: list[tuple[str, dict]]) -> list[list[tuple]]:
    with connect(out) as con:
        return [con.execute(sql, params).fetchall() for sql, params in queries]


def wait_for_results(files: list[Path], at_least: int, timeout: float = 120) -> None:
    """Until every reader has written ``at_least`` results."""
    deadline = time.monotonic() + timeout
    while any(len(f.read_text().splitlines()) < at_least for f in files):
        assert time.monotonic() < deadline, "readers too slow"
        time.sleep(0.05)


def test_readers_see_the_old_or_the_new_catalog_never_a_mix(tiny_catalogs, tiny_pdr1, tmp_path):
    out = tmp_path / "catalogs"
    shutil.copytree(tiny_catalogs, out, symlinks=True)
    queries = reader_queries(out)
    old = answers(out, queries)
    before = os.readlink(out / "current")
    queries_file = tmp_path / "queries.json"
    queries_file.write_text(json.dumps(queries))
    stop = tmp_path / "stop"
    results = [tmp_path / f"reader{i}.jsonl" for i in range(N_READERS)]
    readers = []
    for file in results:
        file.touch()
        readers.append(subprocess.Popen([sys.executable, str(SUPPORT), "read", str(out), str(stop), str(queries_file),
                                         str(file)]))
    try:
        wait_for_results(results, len(queries))
        release = variant_release(tiny_pdr1, tmp_path / "variant")
        run = subprocess.run([sys.executable, "-m", "dexdb.cli", "ingest", str(release), str(out), "--no-progress"],
                             capture_output=True, text=True, timeout=300, check=False)
        assert run.returncode == 0, run.stderr
        seen = [len(f.read_text().splitlines()) for f in results]
        # A session reads the version it opened on for 3 rounds; the 4th round is in a session opened after the switch.
        wait_for_results(results, max(seen) + 4 * len(queries))
    finally:
        stop.touch()
        for reader in readers:
            reader.wait(timeout=60)
    assert [reader.returncode for reader in readers] == [0] * N_READERS

    new = answers(out, queries)
    # The new answers, checked against the old: same rows, source fluxes and spectra doubled.
    assert [row[0] for row in new[0]] == [row[0] for row in old[0]] and len(old[0]) > 1
    np.testing.assert_array_equal([row[1] for row in new[0]], [2 * row[1] for row in old[0]])
    np.testing.assert_array_equal(np.array(new[2][0][2]), 2 * np.array(old[2][0][2]))
    assert new[4] == old[4] and new[5] == old[5]  # detections did not change
    old_digests, new_digests = [result_digest(a) for a in old], [result_digest(a) for a in new]

    old_version, new_version = before, os.readlink(out / "current")
    expected = {old_version: old_digests, new_version: new_digests}
    total = 0
    for file in results:
        outcomes = [json.loads(line) for line in file.read_text().splitlines()]
        settled = [(i, outcome, version) for i, outcome, version, after in outcomes if version == after]
        total += len(settled)
        assert [outcome for _, outcome, _ in settled if outcome.startswith("error")] == []
        assert all(outcome == expected[version][i] for i, outcome, version in settled)
        assert {version for _, _, version in settled} == {old_version, new_version}  # it ran across the switch
    assert total >= 2 * N_READERS * len(queries)


def test_a_query_running_across_the_switch_sees_one_version(tiny_catalogs, tiny_pdr1, tmp_path):
    """One query reads ``sources`` twice; the re-ingest publishes while its first scan runs. A slow
    function in both scans (the first call runs the whole re-ingest) stands for a long query: on the
    real catalogs a scan of ``sources`` takes seconds."""
    out = tmp_path / "catalogs"
    shutil.copytree(tiny_catalogs, out, symlinks=True)
    release = variant_release(tiny_pdr1, tmp_path / "variant")
    before = os.readlink(out / "current")
    con = connect(out)
    lock = threading.Lock()  # DuckDB calls the function from several threads

    def publish_once(source_id: int) -> int:
        with lock:
            if os.readlink(out / "current") == before:
                ingest(release, out, log=quiet)
        return source_id

    con.create_function("publish_once", publish_once, ["BIGINT"], "BIGINT", side_effects=True)
    rows = con.sql("""
        SELECT a.source_id, a.flux AS first_flux, b.flux AS second_flux
        FROM (SELECT source_id, flux FROM sources WHERE publish_once(source_id) = source_id) a
        JOIN (SELECT source_id, flux FROM sources WHERE publish_once(source_id) = source_id) b USING (source_id)
    """).fetchall()
    con.close()
    assert os.readlink(out / "current") != before  # the new version was published during the query
    assert len(rows) > 1
    assert all(first == second for _, first, second in rows)


def test_an_open_catalog_follows_new_versions_after_the_old_one_is_dropped(tiny_catalogs, tmp_path):
    """A publish keeps only the previous version: a Catalog opened two publishes earlier must move on
    to the newest one rather than query files that are gone."""
    out = tmp_path / "catalogs"
    shutil.copytree(tiny_catalogs, out, symlinks=True)
    first = os.readlink(out / "current")
    with dexdb.open(out) as cat:
        cone = cat.cone("sources", 150.23189, 2.363963, 60.0)
        spectra = cat.spectra(source_ids=cone["source_id"])
        assert len(cone) > 1

        def write_note(text: str):
            def write(staged: Path) -> dict:
                table = pa.table({"note": [text]})
                pq.write_table(table, staged / "notes.parquet")
                return {"tables": {"notes": {"rows": 1, "note": text}}}
            return write

        for label in ("first note", "second note"):
            publish_derived(out, ["notes.parquet"], label, write_note(label), log=quiet)
        assert not (out / first).exists()  # the version the catalog opened is gone

        assert cat.cone("sources", 150.23189, 2.363963, 60.0).equals(cone)
        assert cat.spectra(source_ids=cone["source_id"]).equals(spectra)
        assert cat.sql("SELECT * FROM read_parquet('notes.parquet')")["note"].to_list() == ["second note"]
