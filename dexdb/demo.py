"""``dexdb demo``: mock release -> ingest -> a few queries, on a fresh machine."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import duckdb

from dexdb.ingest.pipeline import ingest
from dexdb.mock import generate
from dexdb.mock.summary import summarize

COSMOS_AGN = (150.23189, 2.363963)


def catalog_glob(out_dir: Path, name: str) -> str:
    return str(out_dir / name / name / "dataset" / "*" / "*" / "*" / "*.parquet")


def run_demo(work_dir: Path, seed: int = 0, log: Callable[[str], None] = print) -> None:
    pdr1, catalogs = work_dir / "pdr1", work_dir / "catalogs"
    log(f"1. mock PDR1 release (tiny, seed {seed}) -> {pdr1}")
    generate(pdr1, "tiny", seed, overwrite=True, log=log)
    log("")
    log(summarize(pdr1))
    log("")
    log(f"2. ingest -> {catalogs}")
    ingest(pdr1, catalogs, progress=False, log=log)
    log("")
    log("3. queries (DuckDB over the Parquet catalogs)")
    con = duckdb.connect()
    sources = f"read_parquet('{catalog_glob(catalogs, 'sources')}', hive_partitioning = true)"
    log("HPSC2 rows by source type:")
    log(str(con.sql(f"SELECT source_type, count(*) AS n FROM {sources} GROUP BY ALL ORDER BY n DESC")))
    ra, dec = COSMOS_AGN
    log(f"All epochs of the COSMOS AGN within 1.5\" of ({ra}, {dec}):")
    log(str(con.sql(
        f"""SELECT source_name, shotid, round(z_hetdex, 4) AS z,
                   round(3600 * degrees(2 * asin(sqrt(
                       sin(radians(DEC - $dec) / 2) ^ 2
                       + cos(radians(DEC)) * cos(radians($dec)) * sin(radians(RA - $ra) / 2) ^ 2))), 2) AS dist_arcsec
            FROM {sources}
            WHERE DEC BETWEEN $dec - 0.001 AND $dec + 0.001
            ORDER BY shotid""",
        params={"ra": ra, "dec": dec},
    ).filter("dist_arcsec < 1.5")))
    log(f"Catalogs are in {catalogs}; check them with: dexdb verify {catalogs} {pdr1}")
    log(f"Open them in the DuckDB shell (views and macros loaded): {catalogs / 'dexdb-shell'}")
