"""``dexdb demo``: mock release -> ingest -> queries through the Python API -> a spectrum plot, on a
fresh machine; it ends by telling where the DuckDB shell and the notebooks are."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl

import dexdb
from dexdb.ingest.pipeline import ingest
from dexdb.mock import generate
from dexdb.mock.summary import summarize

COSMOS_AGN = (150.23189, 2.363963)
LYMAN_ALPHA_BLOB = (228.78581, 51.268036)
SPECTRUM_PLOT = "cosmos_agn_epochs.png"


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
    log("3. queries through the Python API (polars results)")
    with dexdb.open(catalogs) as cat, pl.Config(tbl_rows=20, tbl_hide_dataframe_shape=True, fmt_str_lengths=120):
        log(f">>> cat = dexdb.open({str(catalogs)!r})")
        log('>>> cat.sql("SELECT source_type, count(*) AS n FROM sources GROUP BY ALL ORDER BY n DESC")')
        log(str(cat.sql("SELECT source_type, count(*) AS n FROM sources GROUP BY ALL ORDER BY n DESC")))

        ra, dec = COSMOS_AGN
        log(f">>> groups = cat.groups({ra}, {dec}, 3.0)      # the COSMOS AGN: one source, several epochs")
        groups = cat.groups(ra, dec, 3.0)
        log(str(groups.select("group_id", "n_epochs", "ra", "dec", "dist_arcsec")))
        log('>>> epochs = cat.group_members(groups["group_id"], columns=[...])')
        epochs = cat.group_members(groups["group_id"], columns=["source_name", "source_id", "shotid", "z_hetdex"])
        log(str(epochs.drop("group_id")))

        ra, dec = LYMAN_ALPHA_BLOB
        log(f">>> cat.cubes_at({ra}, {dec})      # the IFU cubes holding the Lyman-alpha blob")
        log(str(cat.cubes_at(ra, dec).select("shotid", "ifuslot", "dist_arcsec", "url")))

        log('>>> spectra = cat.spectra(source_ids=epochs["source_id"])      # Array(Float32, 1036) columns')
        spectra = cat.spectra(source_ids=epochs["source_id"])
        plot = dexdb.plot_spectra(spectra, work_dir / SPECTRUM_PLOT, title="COSMOS AGN, every epoch")
        log(f"4. spectra of the {spectra.height} epochs plotted -> {plot}")
    log("")
    log("Next:")
    log(f"  check the catalogs:   dexdb verify {catalogs} {pdr1}")
    log(f"  DuckDB shell:         {catalogs / 'dexdb-shell'}      (pip install duckdb-cli; views and macros loaded)")
    log(f"  Python:               import dexdb; cat = dexdb.open({str(catalogs)!r})")
    log(f"  command line:         dexdb cone {catalogs} {COSMOS_AGN[0]} {COSMOS_AGN[1]} -r 3")
    log(f"  notebooks:            DEXDB_CATALOG={catalogs} jupyter lab notebooks/      (in the dexdb repository)")
