"""Commands that query the catalogs, mirroring the Python API (``dexdb.open``): ``cone``, ``xmatch``,
``spectrum``, ``groups``, ``cubes``, ``sql``.

Each takes CATALOG_DIR (the output directory of ``dexdb ingest``) first and writes its result as a
readable table, CSV or Parquet (``--format``, ``-o``; the format follows the suffix of ``-o`` unless
given). Tables and CSV leave out the 1036-sample spectra (Parquet keeps them); shorter lists are
written as text.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    import polars as pl

    from dexdb.catalog import Catalog

FORMATS = ("table", "csv", "parquet")
#: Size of one released cube, RICE-compressed (data model 5.1: ~19 MB); the catalogs do not record sizes.
CUBE_BYTES = 19_000_000
# Commands taking RA DEC arguments: a negative Dec ("-2.5") is a value, not an unknown option.
_NUMBERS_AS_ARGUMENTS = {"ignore_unknown_options": True}

_catalog_dir = click.argument("catalog_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))


def _output_options(command: Callable[..., None]) -> Callable[..., None]:
    command = click.option("-o", "--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
                           help="Write to this file instead of the terminal.")(command)
    return click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
                        help="table, csv or parquet (default: by the suffix of -o, else table).")(command)


def _reports_errors(command: Callable[..., None]) -> Callable[..., None]:
    """Bad arguments and failed queries end the command with their message and exit status 1."""

    @wraps(command)
    def run(*args: Any, **kwargs: Any) -> None:
        from dexdb.catalog import DexdbError

        try:
            command(*args, **kwargs)
        except DexdbError as exc:
            raise click.ClickException(str(exc)) from exc

    return run


@contextmanager
def _open(catalog_dir: Path) -> Iterator[Catalog]:
    import dexdb

    catalog = dexdb.open(catalog_dir)
    try:
        yield catalog
    finally:
        catalog.close()


# -- output ------------------------------------------------------------------------------------------


def _resolve_format(fmt: str | None, out_path: Path | None) -> str:
    if fmt is not None:
        chosen = fmt
    elif out_path is not None and out_path.suffix.lower() in (".parquet", ".pq"):
        chosen = "parquet"
    elif out_path is not None and out_path.suffix.lower() == ".csv":
        chosen = "csv"
    else:
        chosen = "table"
    if chosen == "parquet" and out_path is None:
        raise click.UsageError("--format parquet needs -o FILE")
    return chosen


def _flat(frame: pl.DataFrame) -> pl.DataFrame:
    """The frame without spectrum columns, other list columns as text ("[1, 2]"): what CSV can hold."""
    import polars as pl

    spectra = [name for name, dtype in frame.schema.items() if isinstance(dtype, pl.Array) and dtype.size >= 1036]
    if spectra:
        click.echo(f"(spectrum columns {', '.join(spectra)} left out; --format parquet keeps them)", err=True)
    frame = frame.drop(spectra)
    nested = [name for name, dtype in frame.schema.items() if isinstance(dtype, (pl.Array, pl.List))]
    return frame.with_columns(
        pl.concat_str(pl.lit("["), pl.col(name).cast(pl.List(frame.schema[name].inner))
                      .list.eval(pl.element().cast(pl.String)).list.join(", "), pl.lit("]")).alias(name)
        for name in nested
    )


def _emit(frame: pl.DataFrame, fmt: str | None, out_path: Path | None, *, all_rows: bool = True) -> None:
    """Write ``frame`` in the chosen format; files appear complete or not at all."""
    import polars as pl

    chosen = _resolve_format(fmt, out_path)
    if chosen == "parquet":
        _publish(out_path, frame.write_parquet)
        click.echo(f"{frame.height} rows -> {out_path}", err=True)
        return
    flat = _flat(frame)
    if chosen == "csv":
        if out_path is None:
            click.echo(flat.write_csv(), nl=False)
        else:
            _publish(out_path, flat.write_csv)
            click.echo(f"{frame.height} rows -> {out_path}", err=True)
        return
    # the terminal table leaves out the partitioning columns, which CSV and Parquet keep
    shown = flat.drop([name for name in ("_healpix_29", "Norder", "Dir", "Npix") if name in flat.columns])
    with pl.Config(tbl_rows=-1 if all_rows else 20, tbl_cols=12, tbl_hide_dataframe_shape=True,
                   tbl_width_chars=250, fmt_str_lengths=120, fmt_table_cell_list_len=10):
        text = str(shown)
    if out_path is None:
        click.echo(text)
        click.echo(f"{frame.height} rows", err=True)
    else:
        _publish(out_path, lambda path: Path(path).write_text(text + "\n", encoding="utf-8"))


def _publish(out_path: Path, write: Callable[[Path], object]) -> None:
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)


def read_targets(path: Path) -> Any:
    """A targets file as the API takes it: CSV or Parquet through polars; FITS, ECSV or VOTable through
    astropy (angle units on ra/dec are converted by the API)."""
    import polars as pl

    from dexdb.catalog import DexdbError

    name = path.name.lower()
    try:
        if name.endswith(".csv"):
            return pl.read_csv(path)
        if name.endswith((".parquet", ".pq")):
            return pl.read_parquet(path)
        if name.endswith((".fits", ".fit", ".fits.gz", ".ecsv", ".vot", ".xml")):
            from astropy.table import Table

            return Table.read(path)
    except Exception as exc:  # any reader's failure is the file's problem, told with its name
        raise DexdbError(f"{path}: cannot read the table: {exc}") from exc
    raise DexdbError(f"{path}: unknown table format (expected .csv, .parquet, .fits, .ecsv or .vot)")


def _checked(table: Any, path: Path, run: Callable[[Any], pl.DataFrame]) -> pl.DataFrame:
    """``run(table)``, with a message that names the targets file."""
    from dexdb.catalog import DexdbError

    try:
        return run(table)
    except DexdbError as exc:
        raise DexdbError(f"{path}: {exc}") from exc


# -- commands ----------------------------------------------------------------------------------------


@click.command(context_settings=_NUMBERS_AS_ARGUMENTS)
@_catalog_dir
@click.argument("ra", type=float)
@click.argument("dec", type=float)
@click.option("-r", "--radius", type=float, default=3.0, show_default=True, help="Radius in arcsec.")
@click.option("-c", "--catalog", default="sources", show_default=True, help="Catalog to search.")
@click.option("--columns", default=None, help="Comma-separated columns to keep (default: all).")
@_output_options
@_reports_errors
def cone(catalog_dir: Path, ra: float, dec: float, radius: float, catalog: str, columns: str | None,
         fmt: str | None, out_path: Path | None) -> None:
    """Rows of a catalog within RADIUS arcsec of RA DEC (degrees), nearest first.

    Python: cat.cone(catalog, ra, dec, radius_arcsec).

    \b
    Examples:
      dexdb cone catalogs 150.23189 2.363963 -r 3
      dexdb cone catalogs 228.78581 51.268036 -r 37 -c detections --columns detectid,wave,sn
      dexdb cone catalogs 35.9 -1.8 -r 60 -o near.parquet
    """
    with _open(catalog_dir) as cat:
        names = None if columns is None else [name.strip() for name in columns.split(",") if name.strip()]
        _emit(cat.cone(catalog, ra, dec, radius, columns=names), fmt, out_path)


@click.command()
@_catalog_dir
@click.argument("targets", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-r", "--radius", type=float, default=1.5, show_default=True, help="Match radius in arcsec.")
@click.option("-c", "--catalog", default="sources", show_default=True, help="Catalog to match against.")
@click.option("--nearest", is_flag=True, help="Only the nearest match of each target.")
@_output_options
@_reports_errors
def xmatch(catalog_dir: Path, targets: Path, radius: float, catalog: str, nearest: bool, fmt: str | None,
           out_path: Path | None) -> None:
    """Cross-match a TARGETS table (columns ra, dec in degrees) with a catalog.

    TARGETS: .csv, .parquet, .fits, .ecsv or .vot. Output: the targets' columns,
    the catalog's (a name the targets already use gets the suffix _1) and
    dist_arcsec; targets without a match are left out.

    Python: cat.xmatch(table, catalog, radius_arcsec, nearest=...).

    \b
    Examples:
      dexdb xmatch catalogs targets.csv -r 1.5
      dexdb xmatch catalogs targets.fits -c detections -r 2 --nearest -o matches.parquet
    """
    table = read_targets(targets)
    with _open(catalog_dir) as cat:
        frame = _checked(table, targets, lambda t: cat.xmatch(t, catalog, radius, nearest=nearest))
        _emit(frame, fmt, out_path)


@click.command()
@_catalog_dir
@click.argument("ids", nargs=-1, required=True, type=int)
@click.option("--source-id", "by_source_id", is_flag=True,
              help="IDS are HPSC2 source_ids (catalog spectra) rather than detectids.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also draw the spectra to this image (.png, .pdf, .svg).")
@_output_options
@_reports_errors
def spectrum(catalog_dir: Path, ids: tuple[int, ...], by_source_id: bool, plot_path: Path | None,
             fmt: str | None, out_path: Path | None) -> None:
    """Calibrated 1-D spectra by detectid (or --source-id), 1e-17 erg/s/cm^2/Angstrom.

    Table and CSV: 1036 rows per id (id, k, wave, flux, err). Parquet: one row
    per id with wave, spec, spec_err as fixed-size float32[1036] arrays.

    Python: cat.spectra(detectids=...) or cat.spectrum_rows(source_ids=...).

    \b
    Examples:
      dexdb spectrum catalogs 3000000001 --plot spec.png
      dexdb spectrum catalogs 2100000001 2100000002 --source-id -o agn.csv
      dexdb spectrum catalogs 3000000001 3000000017 -o spectra.parquet
    """
    from dexdb.catalog import plot_spectra

    key = "source_ids" if by_source_id else "detectids"
    with _open(catalog_dir) as cat:
        arrays = cat.spectra(**{key: list(ids)})
        missing = arrays.filter(arrays["spec"].is_null())[arrays.columns[0]].to_list()
        if missing:
            click.echo(f"not in the catalog: {', '.join(map(str, missing))}", err=True)
        if _resolve_format(fmt, out_path) == "parquet":
            _emit(arrays, "parquet", out_path)
        else:
            _emit(cat.spectrum_rows(**{key: list(ids)}), fmt, out_path, all_rows=out_path is not None)
    if plot_path is not None:
        plot_spectra(arrays, plot_path, title=f"{key[:-1]} {', '.join(map(str, ids))}")
        click.echo(f"plot -> {plot_path}", err=True)


@click.command(context_settings=_NUMBERS_AS_ARGUMENTS)
@_catalog_dir
@click.argument("ra", type=float)
@click.argument("dec", type=float)
@click.option("-r", "--radius", type=float, default=3.0, show_default=True, help="Radius in arcsec.")
@click.option("--members", is_flag=True, help="One row per member (epoch) instead of one per group.")
@click.option("--linking", type=float, default=None,
              help='Regroup the sources within RADIUS with this linking length (arcsec) instead of the 1.5" groups.')
@_output_options
@_reports_errors
def groups(catalog_dir: Path, ra: float, dec: float, radius: float, members: bool, linking: float | None,
           fmt: str | None, out_path: Path | None) -> None:
    """Multi-epoch groups near RA DEC: the same source observed in several shots.

    Default: groups (friends-of-friends at 1.5") whose mean position lies within
    RADIUS, with n_epochs and member source_ids/shotids. --members lists their
    HPSC2 rows. --linking L regroups the HPSC2 rows within RADIUS at L arcsec.

    Python: cat.groups(ra, dec, r), cat.group_members(ids), cat.regroup(table, L).

    \b
    Examples:
      dexdb groups catalogs 150.2318 2.364 -r 3
      dexdb groups catalogs 150.2318 2.364 -r 3 --members -o epochs.csv
      dexdb groups catalogs 150.2318 2.364 -r 120 --linking 3
    """
    with _open(catalog_dir) as cat:
        if linking is not None:
            near = cat.cone("sources", ra, dec, radius, columns=["source_id", "source_name", "shotid", "RA", "DEC"])
            if near.is_empty():
                _emit(near, fmt, out_path)
                return
            frame = cat.regroup(near, linking)
        else:
            frame = cat.groups(ra, dec, radius)
            if members and not frame.is_empty():
                frame = cat.group_members(frame["group_id"], columns=[
                    "source_id", "source_name", "shotid", "RA", "DEC", "z_hetdex", "source_type", "detectid"])
        _emit(frame, fmt, out_path)


@click.command()
@_catalog_dir
@click.option("--near", type=float, nargs=2, default=None, metavar="RA DEC", help="One position (degrees).")
@click.option("--targets", "targets_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="A table of positions (ra, dec): .csv, .parquet, .fits, .ecsv, .vot.")
@click.option("--urls", "urls_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the cubes' URLs here, one per line, for `dexdb download`.")
@_output_options
@_reports_errors
def cubes(catalog_dir: Path, near: tuple[float, float] | None, targets_path: Path | None, urls_path: Path | None,
          fmt: str | None, out_path: Path | None) -> None:
    """IFU cubes whose footprint contains a position (--near) or the rows of a table (--targets).

    Prints the cubes and their total download size; --urls writes the download
    list (absolute URLs, one per line, '#' lines are comments) that
    `dexdb download` reads.

    Python: cat.cubes_at(ra, dec), cat.cubes_covering(table).

    \b
    Examples:
      dexdb cubes catalogs --near 228.78581 51.268036
      dexdb cubes catalogs --targets lae.csv --urls urls.txt
      dexdb download urls.txt --to pdr1
    """
    if (near is None) == (targets_path is None):
        raise click.UsageError("give either --near RA DEC or --targets FILE")
    with _open(catalog_dir) as cat:
        if near is not None:
            found = cat.cubes_at(*near)
            described = f"position ({near[0]}, {near[1]})"
        else:
            table = read_targets(targets_path)
            found = _checked(table, targets_path, cat.cubes_covering)
            described = f"targets of {targets_path}"
        ifu_index = set(cat.columns("ifu_index"))
    target_columns = [name for name in found.columns if name not in ifu_index and name != "dist_arcsec"]
    _emit(found.select(*target_columns, "shotid", "ifuslot", "ra_cen", "dec_cen", "dist_arcsec", "url"), fmt, out_path)
    urls = list(dict.fromkeys(found["url"].to_list()))
    size = f"{len(urls)} cube{'' if len(urls) == 1 else 's'}, about {len(urls) * CUBE_BYTES / 1e9:.2f} GB to download (~19 MB per cube)"
    click.echo(size, err=True)
    if urls_path is not None:
        lines = [f"# dexdb cubes: {described}", f"# {size}", *urls]
        _publish(urls_path, lambda path: Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8"))
        click.echo(f"URLs -> {urls_path}", err=True)


@click.command()
@_catalog_dir
@click.option("-c", "--command", "query", default=None, help="Run this query and print its result.")
@click.option("--builtin", is_flag=True, help="Use the built-in prompt even when the DuckDB CLI is installed.")
@_output_options
@_reports_errors
def sql(catalog_dir: Path, query: str | None, builtin: bool, fmt: str | None, out_path: Path | None) -> None:
    """SQL on the catalogs: the views and macros of dexdb (cone, xmatch, spectra_by_detectid, ...).

    Without -c: the DuckDB shell CATALOG_DIR/dexdb-shell when the `duckdb` CLI is
    on PATH (pip install duckdb-cli), else a small prompt (statements end with
    ';', .quit to leave).

    Python: cat.sql(query, params).

    \b
    Examples:
      dexdb sql catalogs
      dexdb sql catalogs -c "SELECT source_type, count(*) FROM sources GROUP BY ALL"
      dexdb sql catalogs -c "FROM spectrum_rows_by_detectid(3000000001)" -o spec.csv
    """
    if query is not None:
        with _open(catalog_dir) as cat:
            _emit(cat.sql(query), fmt, out_path)
        return
    import dexdb
    from dexdb import sqlload

    launcher = catalog_dir / sqlload.LAUNCHER
    if not builtin and shutil.which("duckdb") and launcher.is_file():
        try:
            if sqlload.refresh_entry_point(catalog_dir):
                click.echo(f"updated {catalog_dir / sqlload.ENTRY_POINT} to the macros of dexdb {dexdb.__version__}", err=True)
        except OSError as exc:  # a read-only catalog directory: its entry point stays as written
            click.echo(f"warning: could not update {catalog_dir / sqlload.ENTRY_POINT}: {exc}", err=True)
        raise SystemExit(subprocess.run([str(launcher.absolute())], check=False).returncode)
    _prompt(catalog_dir)


def _prompt(catalog_dir: Path) -> None:
    """Read statements ending with ';' from stdin and print each result as a table until .quit or EOF."""
    from dexdb.catalog import DexdbError

    stdin = click.get_text_stream("stdin")
    with _open(catalog_dir) as cat:
        click.echo(f"dexdb {catalog_dir}: catalogs {', '.join(cat.catalogs)}")
        click.echo("SQL statements end with ';'. .tables lists the catalogs, .quit leaves.")
        lines: list[str] = []
        while True:
            click.echo("   ...> " if lines else "dexdb> ", nl=False)
            line = stdin.readline()
            if not line:
                click.echo()
                return
            text = line.strip()
            if not lines and text in (".quit", ".exit", "\\q"):
                return
            if not lines and text == ".tables":
                click.echo("\n".join(cat.catalogs))
                continue
            lines.append(line)
            if not text.endswith(";"):
                continue
            statement, lines = "".join(lines), []
            try:
                _emit(cat.sql(statement), "table", None)
            except DexdbError as exc:
                click.echo(f"Error: {exc}", err=True)


commands = [cone, xmatch, spectrum, groups, cubes, sql]
