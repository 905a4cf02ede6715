"""Commands on IFU datacubes: ``extract`` (aperture spectra to Parquet), ``download`` (cube files)."""

from __future__ import annotations

from pathlib import Path

import click

from dexdb.constants import PDR1_BASE_URL


def _bits(value: str | None, option: str):
    """'ALL_NONZERO', an integer, or comma-separated bit names, as dexdb.cube takes them."""
    if value is None or value.strip().lower() in ("", "none"):
        return None
    text = value.strip()
    if text.isdigit():
        return int(text)
    if text.upper() == "ALL_NONZERO":
        return "ALL_NONZERO"
    names = [name.strip() for name in text.split(",") if name.strip()]
    from dexdb.cube import bit_value

    try:
        bit_value(names, option)
    except (ValueError, TypeError) as exc:
        raise click.BadParameter(str(exc), param_hint=option) from exc
    return names


@click.command()
@click.argument("catalog_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("targets", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--pdr", "pdr1_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="PDR1 tree holding datacubes/<shotid>/dex_cube_*.fits.")
@click.option("-o", "--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output Parquet file.")
@click.option("--radius", type=float, default=3.5, show_default=True, help="Aperture radius (arcsec).")
@click.option("--id", "id_column", default=None, help="Target id column (default: source_id, detectid or id).")
@click.option("--exclude-bits", default="ALL_NONZERO", show_default=True,
              help="MASK bits that reject a voxel: ALL_NONZERO, none, an integer or names (BADCAL,BADAMP).")
@click.option("--keep-bits", default=None, help="MASK bits that re-admit a voxel (names, integer or ALL_NONZERO).")
@click.option("--include-only-bits", default=None,
              help="Use only voxels with these bits (overrides --exclude-bits/--keep-bits).")
@click.option("--min-coverage", type=float, default=0.20, show_default=True,
              help="Wavelengths where less of the aperture has data become NaN.")
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True, help="Processes.")
@click.option("--skip-missing", is_flag=True, help="Skip covering cubes not under --pdr instead of failing.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@click.option("--progress/--no-progress", default=True, show_default=True)
def extract(catalog_dir: Path, targets: Path, pdr1_dir: Path, out_path: Path, radius: float, id_column: str | None,
            exclude_bits: str, keep_bits: str | None, include_only_bits: str | None, min_coverage: float,
            workers: int, skip_missing: bool, overwrite: bool, progress: bool) -> None:
    """Aperture spectra of TARGETS in every cube covering them, to one Parquet file.

    \b
    TARGETS is a .parquet, .csv or .fits table with columns ra, dec (deg) and
    an id (source_id, detectid, id or --id) that joins back to the catalogs.
    Covering cubes come from CATALOG_DIR's ifu_index (SQL cubes_covering).
    Output: one row per (target, cube): target_row, the id, ra, dec, shotid,
    ifuslot, spec, spec_err (1e-17 erg/s/cm2/A) and apcor, each
    FixedSizeList<float32>[1036]. Run the same command again to resume an
    interrupted extraction.

    \b
    Examples:
      dexdb extract catalogs targets.parquet --pdr pdr1 -o spectra.parquet
      dexdb extract catalogs lae.csv --pdr pdr1 --radius 2.5 --id name -o lae.parquet
      dexdb extract catalogs t.fits --pdr pdr1 --keep-bits BADCAL -o t.parquet --workers 4
    """
    from dexdb.cube import CubeError
    from dexdb.extract import ExtractError, Options
    from dexdb.extract import extract as run_extract

    options = Options(radius, _bits(exclude_bits, "--exclude-bits"), _bits(keep_bits, "--keep-bits"),
                      _bits(include_only_bits, "--include-only-bits"), min_coverage)
    try:
        report = run_extract(catalog_dir, targets, pdr1_dir, out_path, options, id_column=id_column,
                             workers=workers, skip_missing=skip_missing, overwrite=overwrite, progress=progress,
                             log=click.echo)
    except (ExtractError, CubeError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{out_path}: {report.rows} spectra of {report.covered} targets from {report.cubes} cubes "
               f"({report.seconds:.1f} s)")


@click.command()
@click.argument("url_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--to", "to_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="PDR1 directory; files land at their release paths below it.")
@click.option("--workers", type=click.IntRange(1, 64), default=4, show_default=True, help="Parallel transfers.")
@click.option("--base-url", default=PDR1_BASE_URL, show_default=True, help="The URL that --to stands for.")
@click.option("--retries", type=click.IntRange(0, 100), default=3, show_default=True,
              help="Attempts per file after the first; each resumes the partial file.")
@click.option("--progress/--no-progress", default=True, show_default=True)
def download(url_file: Path, to_dir: Path, workers: int, base_url: str, retries: int, progress: bool) -> None:
    """Download the files listed in URL_FILE (one URL a line, # comments) into --to.

    \b
    Resumable: complete files are skipped, partial ones continue where they
    stopped. Each FITS file is checked (opens, checksums, size) before it
    appears under its final name. Paths never leave --to.

    \b
    Examples:
      dexdb cubes catalogs --near 150.2319 2.3640 --urls urls.txt
      dexdb download urls.txt --to /data/pdr1 --workers 4
      dexdb download urls.txt --to pdr1 --base-url http://mirror.example.org/pdr1
    """
    from dexdb.download import DownloadError
    from dexdb.download import download as run_download

    try:
        run_download(url_file, to_dir, workers=workers, base_url=base_url, retries=retries, progress=progress,
                     log=click.echo)
    except DownloadError as exc:
        raise click.ClickException(str(exc)) from exc


commands = [extract, download]
