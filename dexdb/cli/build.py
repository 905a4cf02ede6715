"""Commands that build and check catalogs: ``mock``, ``ingest``, ``verify``, ``demo``."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--scale", type=click.Choice(["tiny", "small", "medium", "large"]), default="tiny", show_default=True,
              help="tiny: seconds, all cubes; large: the benchmark scale (~30 GB).")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same content.")
@click.option("--overwrite", is_flag=True, help="Replace OUT_DIR if it already holds files.")
@click.option("--workers", type=click.IntRange(1, 64), default=None, help="Processes (default: 2).")
@click.option("--cubes", "cubes", default=None, metavar="all|N",
              help="Cubes per shot besides the example objects' IFUs: 'all' or N (default: the scale's).")
def mock(out_dir: Path, scale: str, seed: int, overwrite: bool, workers: int | None, cubes: str | None) -> None:
    """Write a faithful mock PDR1 tree to OUT_DIR.

    \b
    The tree has the real relative paths and formats: ifu-index.fits,
    hetdex_source_catalog_2/*.fits, detect/*.h5 + wdcor.txt, datacubes/<shotid>/*.fits.
    It appears in OUT_DIR only once complete.

    \b
    Examples:
      dexdb mock /tmp/pdr1                       # tiny, seed 0
      dexdb mock /data/pdr1 --scale large --seed 1
      dexdb mock /tmp/pdr1 --overwrite           # replace an earlier mock
      dexdb mock /tmp/pdr1 --scale small --cubes all   # a cube for every IFU
    """
    from dexdb.mock.generate import MockError, generate

    if cubes is None:
        per_shot: int | None | str = "scale"
    elif cubes == "all":
        per_shot = None
    elif cubes.isdigit():
        per_shot = int(cubes)
    else:
        raise click.BadParameter(f"expected 'all' or a whole number, got {cubes!r}", param_hint="--cubes")
    try:
        generate(out_dir, scale, seed, overwrite=overwrite, workers=workers, cubes_per_shot=per_shot, log=click.echo)
    except MockError as exc:
        raise click.ClickException(str(exc)) from exc


@click.command()
@click.argument("pdr1_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True)
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar per product.")
def ingest(pdr1_dir: Path, out_dir: Path, workers: int, progress: bool) -> None:
    """Convert a PDR1 tree into HEALPix-partitioned Parquet (HATS) catalogs in OUT_DIR.

    \b
    Catalogs: ifu_index, sources (HPSC2 + spectra), detinfo, detections,
    detection_spectra, fibers, detect_index; missing source files are reported
    and skipped. The result is published only once complete; running the same
    command again resumes an interrupted run.

    \b
    Examples:
      dexdb ingest /data/pdr1 /data/dexdb
      dexdb ingest pdr1 catalogs --workers 2 --no-progress
    """
    from dexdb.ingest.pipeline import ingest as run_ingest
    from dexdb.ingest.product import IngestError

    try:
        report = run_ingest(pdr1_dir, out_dir, workers=workers, progress=progress, log=click.echo)
    except IngestError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"published version {report.version} in {report.out_dir} ({report.seconds:.1f} s)")


@click.command()
@click.argument("out_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("pdr1_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=False)
def verify(out_dir: Path, pdr1_dir: Path | None) -> None:
    """Check a published ingest: checksums, row counts, HATS validity (and the source, if given).

    \b
    Examples:
      dexdb verify /data/dexdb
      dexdb verify /data/dexdb /data/pdr1
    """
    from dexdb.ingest.verify import verify as run_verify

    problems = run_verify(out_dir, pdr1_dir)
    for problem in problems:
        click.echo(problem, err=True)
    if problems:
        raise SystemExit(1)
    click.echo(f"{out_dir}: all catalogs intact")


@click.command()
@click.argument("work_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("dexdb-demo"))
@click.option("--seed", type=int, default=0, show_default=True)
def demo(work_dir: Path, seed: int) -> None:
    """Mock release -> ingest -> queries, in WORK_DIR (default ./dexdb-demo).

    \b
    Example:
      dexdb demo
      dexdb demo /tmp/dexdb-demo
    """
    from dexdb.demo import run_demo
    from dexdb.ingest.product import IngestError
    from dexdb.mock.generate import MockError

    try:
        run_demo(work_dir, seed, log=click.echo)
    except (MockError, IngestError) as exc:
        raise click.ClickException(str(exc)) from exc


commands = [mock, ingest, verify, demo]
