"""Commands on emission lines: ``classify`` (multi-line solutions, P(LAE)/P(OII)) and ``report``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from dexdb.lines.solutions import Thresholds


def _threshold_options(command):
    """One ``--name`` option per field of :class:`Thresholds`, with its default."""
    for field in reversed(dataclasses.fields(Thresholds)):
        command = click.option(f"--{field.name.replace('_', '-')}", field.name, type=float, default=field.default,
                               show_default=True, help=field.metadata["help"] + ".")(command)
    return command


def _thresholds(values: dict) -> Thresholds:
    try:
        return Thresholds(**values)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@click.command()
@click.argument("catalog_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--where", default=None, metavar="SQL",
              help="Filter on the columns of detections, e.g. \"wave > 4000 AND sn > 6\". It is SQL run as "
                   "written (trusted: your own expression on your own files).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Report each batch.")
@_threshold_options
def classify(catalog_dir: Path, where: str | None, progress: bool, **thresholds) -> None:
    """Classify the line detections of CATALOG_DIR into the catalog line_solutions.

    \b
    For each detection: the best multi-line redshift solution (the other lines its
    identity predicts, Gaussian fits, scores; accepted above --min-fraction of all
    scores and --min-score), and P(LAE)/P(OII) after Leung et al. 2017. The result
    is published as a new version of CATALOG_DIR (the current one is untouched
    until the switch) with the SQL view line_solutions and the line table.

    \b
    Examples:
      dexdb classify catalogs
      dexdb classify catalogs --where "shotid = 20190405020"
      dexdb classify catalogs --where "wave BETWEEN 3700 AND 4000" --min-score 8
    """
    from dexdb.ingest.product import IngestError
    from dexdb.lines.classify import ClassifyError, classify_catalog

    log = click.echo if progress else (lambda _: None)
    try:
        report = classify_catalog(catalog_dir, where, _thresholds(thresholds), log=log)
    except (ClassifyError, IngestError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"line_solutions: {report.rows:,} detections, {report.accepted:,} with an accepted multi-line "
               f"solution; version {report.version} ({report.seconds:.1f} s)")


@click.command()
@click.argument("detectid", type=int)
@click.option("--catalog", "catalog_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=Path("."), show_default=True, help="Output directory of dexdb ingest.")
@click.option("--pdr", "pdr1_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="PDR1 tree with datacubes/: adds the line map of the detection's cube when it is there.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Image file; the format follows the suffix (png, pdf, svg, jpg).")
@_threshold_options
def report(detectid: int, catalog_dir: Path, pdr1_dir: Path | None, output: Path, **thresholds) -> None:
    """Draw the report figure of one detection.

    \b
    Numbers (P(LAE)/P(OII), line fit, continuum, EW, redshifts, multi-line
    solution, ELiXer image URL), the line with its fit, the whole spectrum with sky
    lines and the expected lines of the hypotheses, and the cube's line map.

    \b
    Examples:
      dexdb report 3000000001 --catalog catalogs -o report.png
      dexdb report 3000000001 --catalog catalogs --pdr pdr1 -o report.pdf
    """
    from dexdb.lines.classify import ClassifyError
    from dexdb.lines.report import write_report

    try:
        path = write_report(catalog_dir, detectid, output, pdr1_dir, _thresholds(thresholds))
    except ClassifyError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{path}: report of detection {detectid}")


commands = [classify, report]
