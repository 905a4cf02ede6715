"""The ``dexdb`` command line."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from dexdb import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dexdb")
def main() -> None:
    """dexdb: HETDEX PDR1 as HEALPix-partitioned Parquet, queried with DuckDB.

    \b
    Start here:
      dexdb demo                      # mock release -> summary, in ./dexdb-demo
      dexdb mock pdr1 --scale small   # a mock PDR1 tree to experiment with
    """


@main.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--scale", type=click.Choice(["tiny", "small", "medium", "large"]), default="tiny", show_default=True,
              help="tiny: seconds, all cubes; large: the benchmark scale (~30 GB).")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same content.")
@click.option("--overwrite", is_flag=True, help="Replace OUT_DIR if it already holds files.")
@click.option("--workers", type=click.IntRange(1, 64), default=None, help="Processes (default: 2).")
def mock(out_dir: Path, scale: str, seed: int, overwrite: bool, workers: int | None) -> None:
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
    """
    from dexdb.mock.generate import MockError, generate

    try:
        generate(out_dir, scale, seed, overwrite=overwrite, workers=workers, log=click.echo)
    except MockError as exc:
        raise click.ClickException(str(exc)) from exc


@main.command()
@click.argument("work_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("dexdb-demo"))
@click.option("--seed", type=int, default=0, show_default=True)
def demo(work_dir: Path, seed: int) -> None:
    """Run the whole path on a tiny mock in WORK_DIR (default ./dexdb-demo).

    \b
    Example:
      dexdb demo
      dexdb demo /tmp/dexdb-demo
    """
    from dexdb.mock.generate import MockError, generate
    from dexdb.mock.summary import summarize

    pdr1 = work_dir / "pdr1"
    try:
        generate(pdr1, "tiny", seed, overwrite=True, log=click.echo)
    except MockError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo()
    click.echo(summarize(pdr1))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
