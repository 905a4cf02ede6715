"""``dexdb classify``: every line detection's multi-line solution and P(LAE)/P(OII), as the catalog
``line_solutions``.

    >>> report = classify_catalog("catalogs", where="wave > 4000")      # doctest: +SKIP
    >>> connect("catalogs").sql("SELECT * FROM line_solutions WHERE accepted").pl()  # doctest: +SKIP

The detections are the rows of ``detections`` with ``det_type = 'line'`` that pass ``where``, a SQL
boolean expression over the columns of ``detections``. It is pasted into the query as written: it is
code the user types on their own command line against their own files (like a ``duckdb -c`` query),
not a value, and is trusted as such. Each detection's spectrum is its ``detection_spectra`` row; a
detection without one (the release keeps spectra for the first detections of each shot only) takes the
HPSC2 spectrum of the source whose ``detectid`` it is, through the ``spectra_by_source_id`` macro;
detections with neither are not classified. Spectra are read in batches as Arrow and analysed as numpy
arrays (:func:`analyse_spectra`).

The result is published as a new version of the catalog directory (``ingest.pipeline.publish_derived``):
the current version's files hard-linked, plus the HATS catalog ``line_solutions`` and the line table
as ``line_table/line_table.parquet`` (the SQL view ``line_table`` and macro ``line_hypotheses``), then
the atomic switch of ``current``. Readers of the previous version are not disturbed.

Columns of ``line_solutions`` (fluxes 1e-17 erg/s/cm^2, flux densities 1e-17 erg/s/cm^2/Angstrom):

* ``detectid``, ``shotid``, ``ra``, ``dec``, ``wave`` (the catalog's), ``spectrum_from``
  (``detection_spectra`` or ``source_spectra``);
* the detected line refitted: ``line_wave``, ``line_flux``, ``line_sigma`` (Angstrom) with ``*_err``,
  ``line_sn``;
* ``best_line`` (line table name), ``z``, ``score``, ``score_fraction``, ``n_lines``, ``accepted``,
  ``solution`` (``best_line`` when accepted, else NULL), ``lines``: the matched lines of the best
  hypothesis, a list of ``{line, rest_wave, expected_wave, wave, wave_err, flux, flux_err, sn, sigma,
  score}`` (``score``: the line's own, before the hypothesis' weight); ``best_line`` is NULL when no
  hypothesis matched any line;
* ``z_lya``, ``z_oii``: the redshift if the line is Lyman alpha, [O II];
* ``continuum``, ``continuum_err`` (near the line), ``continuum_g``, ``continuum_g_err`` (g band,
  at the line), ``gmag`` (synthetic g of the spectrum without the line), ``ew_obs`` (with the near
  continuum, floored at its limit), ``ew_rest_lya``;
* ``plae_poii`` (combined), ``plae_poii_near``, ``plae_poii_g``, ``p_lae``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from dexdb.constants import N_WAVE, WAVE
from dexdb.lines.fit import gaussian
from dexdb.lines.plae import PlaeResult, plae_from_spectra
from dexdb.lines.solutions import DEFAULT_THRESHOLDS, Classification, Thresholds, classify_spectra
from dexdb.lines.table import LINE_TABLE, LYA_NAME, OII_NAME, line_table, rest_wave, write_line_table
from dexdb.sqlload import catalogs_in, connect

CATALOG = "line_solutions"
BATCH_ROWS = 1024
#: The catalogs line_solutions is computed from (its manifest entry's ``derived_from``: no release file).
DERIVED_FROM = ["detections", "detection_spectra", "sources", "source_spectra"]
WAVE64 = WAVE.astype(np.float64)


class ClassifyError(ValueError):
    """A catalog directory or a ``--where`` that cannot be classified; the message says why."""


@dataclass(frozen=True)
class Analysis:
    """The multi-line solutions and P(LAE)/P(OII) of n spectra."""

    classification: Classification
    plae: PlaeResult
    line_model: np.ndarray  # (n, 1036) the detected line's fitted Gaussian (0 where the fit failed)


def analyse_spectra(wave, spec, err, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> Analysis:
    """Solutions and P(LAE)/P(OII) of detected lines at ``wave`` (n,) in spectra (n, 1036)."""
    result = classify_spectra(wave, spec, err, thresholds)
    main = result.main
    fitted = np.isfinite(main.flux)
    model = np.where(fitted[:, None], gaussian(WAVE64, np.where(fitted, main.flux, 0.0)[:, None],
                                               np.where(fitted, main.wave, 1.0)[:, None],
                                               np.where(fitted, main.sigma, 1.0)[:, None]), 0.0)
    line_wave = np.where(np.isfinite(main.wave), main.wave, np.asarray(wave, dtype=np.float64))
    plae = plae_from_spectra(line_wave, main.flux, main.flux_err, main.continuum, main.continuum_err,
                             np.asarray(spec, dtype=np.float64) - model, err)
    return Analysis(result, plae, model)


@dataclass(frozen=True)
class ClassifyReport:
    version: str
    rows: int
    accepted: int
    seconds: float


def classify_catalog(out_dir: str | os.PathLike, where: str | None = None,
                     thresholds: Thresholds = DEFAULT_THRESHOLDS, batch_rows: int = BATCH_ROWS,
                     log: Callable[[str], None] = print) -> ClassifyReport:
    """Classify the line detections of the catalogs in ``out_dir`` (the output directory of ``dexdb
    ingest``) passing ``where`` and publish ``line_solutions``."""
    from dexdb.ingest.hats_layout import partition_files
    from dexdb.ingest.hats_writer import CatalogSpec, write_catalog
    from dexdb.ingest.pipeline import publish_derived
    from dexdb.ingest.product import sha256_of

    started = time.perf_counter()
    out_dir = Path(out_dir).absolute()
    con = _connection(out_dir)
    queries = _queries(con, where)
    total = sum(con.sql(f"SELECT count(*) FROM ({query})").fetchall()[0][0] for query in queries)
    if total == 0:
        matches = f" matches --where {where!r}" if where else ""
        raise ClassifyError(f"{out_dir}: no line detection with a spectrum{matches}")
    log(f"{CATALOG}: classifying {total:,} detections")
    counts = {"rows": 0, "accepted": 0}

    def batches() -> Iterator[pa.Table]:
        for query in queries:
            for batch in con.sql(query).to_arrow_reader(batch_rows):
                if batch.num_rows == 0:
                    continue
                table = solution_table(batch, thresholds)
                counts["rows"] += table.num_rows
                counts["accepted"] += int(np.count_nonzero(table["accepted"].to_numpy(zero_copy_only=False)))
                log(f"{CATALOG}: {counts['rows']:,} / {total:,}")
                yield table

    settings = {"where": where, "thresholds": asdict(thresholds)}
    metadata = {
        "derived_from": ", ".join(DERIVED_FROM),
        "classify_settings": json.dumps(settings, sort_keys=True),
        "units": json.dumps(UNITS),
        "line_table_sha256": hashlib.sha256(line_table().to_arrow().to_string().encode()).hexdigest(),
    }
    spec = CatalogSpec(name=CATALOG, ra_column="ra", dec_column="dec", sort_tiebreak="detectid",
                       id_columns=("detectid",), metadata=metadata)

    def write(version_dir: Path) -> dict[str, dict[str, dict]]:
        info = write_catalog(batches(), spec, version_dir)
        files = {str(f.path.relative_to(version_dir)): sha256_of(f.path)
                 for f in partition_files(version_dir / CATALOG)}
        return {
            "products": {CATALOG: {"rows": info.rows, "inputs": [], "derived_from": DERIVED_FROM, "files": files,
                                   "notes": [NOTE, json.dumps(settings, sort_keys=True)]}},
            "tables": {LINE_TABLE: write_line_table(version_dir)},
        }

    label = json.dumps(settings, sort_keys=True) + line_table().to_arrow().to_string()
    version = publish_derived(out_dir, [CATALOG, LINE_TABLE], label, write, log=log)
    con.close()
    return ClassifyReport(version, counts["rows"], counts["accepted"], time.perf_counter() - started)


NOTE = ("Multi-line solutions (dexdb.lines.solutions) and P(LAE)/P(OII) after Leung et al. 2017 "
        "(dexdb.lines.plae) of line detections.")
UNITS = {
    "ra": "deg", "dec": "deg", "wave": "Angstrom", "line_wave": "Angstrom", "line_sigma": "Angstrom",
    "line_flux": "1e-17 erg/s/cm^2", "continuum": "1e-17 erg/s/cm^2/Angstrom",
    "continuum_g": "1e-17 erg/s/cm^2/Angstrom", "ew_obs": "Angstrom", "ew_rest_lya": "Angstrom", "gmag": "AB mag",
}  # fmt: skip


def _connection(out_dir: Path) -> duckdb.DuckDBPyConnection:
    if not out_dir.is_dir():
        raise ClassifyError(f"{out_dir}: not a directory (expected the output directory of dexdb ingest)")
    present = catalogs_in(out_dir)
    if "detections" not in present or not ({"detection_spectra", "source_spectra"} & present):
        raise ClassifyError(f"{out_dir}: needs the catalogs detections and detection_spectra (or source_spectra); "
                            f"found {', '.join(sorted(present - {'current', 'versions'})) or 'none'}")
    con = connect(out_dir)
    con.execute("SET enable_progress_bar = false")
    return con


def _queries(con: duckdb.DuckDBPyConnection, where: str | None) -> list[str]:
    """The SQL of the detections to classify: with their own spectra, then with their source's."""
    chosen = (
        "SELECT detectid, shotid, ra::DOUBLE AS ra, dec::DOUBLE AS dec, wave::DOUBLE AS wave FROM detections "
        f"WHERE det_type = 'line' AND ({where or 'true'})"
    )
    try:
        con.sql(f"SELECT * FROM ({chosen}) LIMIT 0").fetchall()
    except duckdb.Error as exc:
        raise ClassifyError(f"--where {where!r} is not a valid filter on detections: {exc}") from exc
    views = {name for (name,) in con.sql("SELECT view_name FROM duckdb_views() WHERE temporary").fetchall()}
    macros = {name for (name,) in con.sql("SELECT function_name FROM duckdb_functions()").fetchall()}
    queries, own = [], "false"
    if "detection_spectra" in views:
        queries.append(
            f"WITH chosen AS ({chosen}) SELECT c.*, s.spec, s.spec_err, 'detection_spectra' AS spectrum_from "
            "FROM chosen AS c JOIN detection_spectra AS s USING (detectid)"
        )
        own = "detectid IN (SELECT detectid FROM detection_spectra)"
    if "sources" in views and "spectra_by_source_id" in macros:
        queries.append(
            f"WITH chosen AS ({chosen}), wanted AS (SELECT * FROM chosen WHERE NOT ({own})), "
            "picked AS (SELECT detectid, min(source_id) AS source_id FROM sources "
            "           WHERE detectid IN (SELECT detectid FROM wanted) GROUP BY detectid) "
            "SELECT w.*, s.spec, s.spec_err, 'source_spectra' AS spectrum_from "
            "FROM spectra_by_source_id((SELECT coalesce(list(source_id), []::BIGINT[]) FROM picked)) AS s "
            "JOIN picked USING (source_id) JOIN wanted AS w USING (detectid) WHERE s.spec IS NOT NULL"
        )
    return queries


def spectra_arrays(batch: pa.RecordBatch | pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """``spec`` and ``spec_err`` of a batch as float64 (n, 1036); a missing value is NaN."""
    out = []
    for name in ("spec", "spec_err"):
        column = batch.column(name)
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        values = np.full((len(column), N_WAVE), np.nan)
        valid = ~np.asarray(column.is_null().to_numpy(zero_copy_only=False))
        if valid.any():
            flat = column.filter(pa.array(valid)).flatten().to_numpy(zero_copy_only=False)
            values[valid] = np.asarray(flat, dtype=np.float64).reshape(-1, N_WAVE)
        out.append(values)
    return out[0], out[1]


def solution_table(batch: pa.RecordBatch | pa.Table, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> pa.Table:
    """The ``line_solutions`` rows of a batch with columns detectid, shotid, ra, dec, wave, spec,
    spec_err, spectrum_from."""
    spec, err = spectra_arrays(batch)
    wave = np.asarray(batch.column("wave").to_numpy(zero_copy_only=False), dtype=np.float64)
    analysis = analyse_spectra(wave, spec, err, thresholds)
    result, plae, main = analysis.classification, analysis.plae, analysis.classification.main
    best, accepted = result.best, result.accepted
    names = np.array(result.lines.names + (None,), dtype=object)
    line_wave = np.where(np.isfinite(main.wave), main.wave, wave)
    columns = {
        "detectid": batch.column("detectid"), "shotid": batch.column("shotid"),
        "ra": batch.column("ra"), "dec": batch.column("dec"), "wave": batch.column("wave"),
        "spectrum_from": batch.column("spectrum_from"),
        "line_wave": main.wave, "line_wave_err": main.wave_err, "line_flux": main.flux, "line_flux_err": main.flux_err,
        "line_sn": main.sn, "line_sigma": main.sigma, "line_sigma_err": main.sigma_err,
        "best_line": pa.array(names[best], pa.string()), "z": result.z, "score": result.best_score,
        "score_fraction": result.fraction, "n_lines": result.n_matched.astype(np.int16), "accepted": accepted,
        "solution": pa.array(np.where(accepted, names[best], None), pa.string()),
        "lines": _matched_lines(result),
        "z_lya": line_wave / rest_wave(LYA_NAME) - 1.0, "z_oii": line_wave / rest_wave(OII_NAME) - 1.0,
        "continuum": plae.continuum_near, "continuum_err": plae.continuum_near_err,
        "continuum_g": plae.continuum_g, "continuum_g_err": plae.continuum_g_err, "gmag": plae.gmag,
        "ew_obs": plae.ew_near, "ew_rest_lya": plae.ew_near * rest_wave(LYA_NAME) / line_wave,
        "plae_poii": plae.ratio, "plae_poii_near": plae.ratio_near, "plae_poii_g": plae.ratio_g, "p_lae": plae.p_lae,
    }  # fmt: skip
    return pa.table({name: _nan_to_null(value) for name, value in columns.items()})


LINE_STRUCT = pa.struct([
    ("line", pa.string()), ("rest_wave", pa.float64()), ("expected_wave", pa.float64()), ("wave", pa.float64()),
    ("wave_err", pa.float64()), ("flux", pa.float64()), ("flux_err", pa.float64()), ("sn", pa.float64()),
    ("sigma", pa.float64()), ("score", pa.float64()),
])  # fmt: skip


def _matched_lines(result: Classification) -> pa.ListArray:
    """The matched lines of each detection's best hypothesis, in wavelength order."""
    e, fits = result.expected, result.fits
    pick = np.flatnonzero(result.matched & (e.hypothesis == result.best[e.detection]))
    pick = pick[np.lexsort((e.wave[pick], e.detection[pick]))]
    offsets = np.r_[0, np.cumsum(np.bincount(e.detection[pick], minlength=len(result.detected_wave)))]
    values = pa.StructArray.from_arrays([
        pa.array([result.lines.names[i] for i in e.line[pick]], pa.string()),
        result.lines.rest_wave[e.line[pick]], e.wave[pick], fits.wave[pick], fits.wave_err[pick], fits.flux[pick],
        fits.flux_err[pick], fits.sn[pick], fits.sigma[pick], result.line_scores[pick],
    ], fields=list(LINE_STRUCT))  # fmt: skip
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values)


def _nan_to_null(value):
    """numpy floats with NaN as null (an undefined value, not a measured NaN); other columns as they are."""
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        return pa.array(value, pa.float64(), mask=~np.isfinite(value))
    return value
