"""A catalogue of malformed PDR1 inputs, each made from the tiny mock and run through ``dexdb ingest``.

Every case breaks one file of a copy of the mock (truncated, empty, not the right format, a directory,
a missing HDU / table / column, a wrong dtype or shape, NaN or out-of-range coordinates, duplicate ids,
spectra that do not line up with their rows, ...). The command must then

* exit non-zero with exactly one ``Error:`` line that starts with the path of the broken file and holds
  the case's fragments (what is wrong and where), and no traceback;
* publish nothing: ``current``, its manifest, the catalog links and the SQL entry point of the output
  directory stay as they were, and ``dexdb verify`` still passes on the previously published catalogs.

The release of a case holds only the product group of the broken file (``ifu-index.fits``,
``hetdex_source_catalog_2/`` or ``detect/``) so that each run stops within a second; the converters read
the groups independently. The converter-level tests (tests/test_ingest_fits.py, tests/test_ingest_h5.py)
check the same messages on more variants; this table checks what a user of the command sees.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tables as tb
from astropy.io import fits
from astropy.table import Table
from click.testing import CliRunner

from test_ingest_h5 import drop

from dexdb.cli import main
from dexdb.ingest.verify import verify

# The release's flux units are not FITS-standard: astropy warns whenever it converts a table.
pytestmark = pytest.mark.filterwarnings("ignore::astropy.units.UnitsWarning")

IFU = "ifu-index.fits"
SC2 = "hetdex_source_catalog_2"
MAIN = f"{SC2}/hetdex_sc2_v1.5.fits"
SPEC = f"{SC2}/hetdex_sc2_spec_v1.5.fits"
DETINFO = f"{SC2}/hetdex_sc2_detinfo_v1.5.fits"
DETECT_HDR3 = "detect/detect_hdr3.h5"
DETECT_HDR4 = "detect/detect_hdr4.h5"
DETECT_HDR5 = "detect/detect_hdr5.h5"
CONT_HDR3 = "detect/cont_hdr3.h5"
DETECT_INDEX = "detect/detect_index_hdr5.h5"
WDCOR = "detect/wdcor.txt"

Mutation = Callable[[Path], None]


# --------------------------------------------------------------------------------------------------
# Mutations of one file of a release (each takes the file's path)


def truncate_to(fraction: float) -> Mutation:
    def mutate(path: Path) -> None:
        with open(path, "r+b") as handle:
            handle.truncate(int(path.stat().st_size * fraction))

    return mutate


def empty(path: Path) -> None:
    path.write_bytes(b"")


def text_instead(path: Path) -> None:
    path.write_text("source_id RA DEC\n" * 200)


def directory_instead(path: Path) -> None:
    path.unlink()
    path.mkdir()
    (path / "part1").write_bytes(b"\0" * 2880)


def dangling_symlink_instead(path: Path) -> None:
    path.unlink()
    path.symlink_to(path.with_name("nowhere.h5"))


def unreadable(path: Path) -> None:
    path.chmod(0)


def fits_table(change: Callable[[Table], None], hdu: int | str = 1) -> Mutation:
    """Apply ``change`` to the binary table ``hdu`` (as an astropy Table); the other HDUs stay as they are."""

    def mutate(path: Path) -> None:
        with fits.open(path) as hdul:
            hdus = [h.copy() for h in hdul]
        index = hdu if isinstance(hdu, int) else [h.name for h in hdus].index(hdu)
        table = Table(hdus[index].data, masked=False)
        change(table)
        replaced = fits.table_to_hdu(table)
        replaced.name = hdus[index].name
        hdus[index] = replaced
        fits.HDUList(hdus).writeto(path, overwrite=True)

    return mutate


def fits_hdus(change: Callable[[list], list]) -> Mutation:
    """Replace the HDU list of the file by ``change(hdus)``."""

    def mutate(path: Path) -> None:
        with fits.open(path) as hdul:
            hdus = [h.copy() for h in hdul]
        fits.HDUList(change(hdus)).writeto(path, overwrite=True)

    return mutate


def in_turn(*mutations: Mutation) -> Mutation:
    def mutate(path: Path) -> None:
        for mutation in mutations:
            mutation(path)

    return mutate


def sibling(name: str, mutation: Mutation) -> Mutation:
    """``mutation`` applied to the file ``name`` next to the broken one."""
    return lambda path: mutation(path.with_name(name))


def set_cell(column: str, row: int, value) -> Callable[[Table], None]:
    def change(table: Table) -> None:
        table[column][row] = value

    return change


def copy_cells(columns: tuple[str, ...], row: int, from_row: int) -> Callable[[Table], None]:
    def change(table: Table) -> None:
        for column in columns:
            table[column][row] = table[column][from_row]

    return change


def drop_column(column: str) -> Callable[[Table], None]:
    def change(table: Table) -> None:
        table.remove_column(column)

    return change


def as_text(column: str) -> Callable[[Table], None]:
    def change(table: Table) -> None:
        table[column] = table[column].astype("S16")

    return change


def drop_hdu(name: str) -> Callable[[list], list]:
    return lambda hdus: [h for h in hdus if h.name != name]


def replace_image(name: str, change: Callable[[np.ndarray], np.ndarray]) -> Callable[[list], list]:
    def apply(hdus: list) -> list:
        return [fits.ImageHDU(change(h.data), name=name) if h.name == name else h for h in hdus]

    return apply


def swap_rows(first: int, second: int) -> Callable[[Table], None]:
    def change(table: Table) -> None:
        order = np.arange(len(table))
        order[[first, second]] = order[[second, first]]
        rows = table[order]
        for name in table.colnames:
            table[name] = rows[name]

    return change


def drop_last_row(table: Table) -> None:
    table.remove_row(len(table) - 1)


def h5_table(node: str, change: Callable[[np.ndarray], np.ndarray | None]) -> Mutation:
    """Rewrite an HDF5 file with ``change`` applied to the records of table ``node`` (None drops it)."""

    def mutate(path: Path) -> None:
        with tb.open_file(path) as h5:
            title = h5.title
            tables = [(t.name, t.title, t.read()) for t in h5.root._f_iter_nodes("Table")]
        with tb.open_file(path, "w", title=title) as h5:
            for name, table_title, rows in tables:
                if f"/{name}" == node:
                    rows = change(rows)
                if rows is not None:
                    h5.create_table("/", name, obj=rows, title=table_title)

    return mutate


def h5_cell(column: str, row: int, value) -> Callable[[np.ndarray], np.ndarray]:
    def change(rows: np.ndarray) -> np.ndarray:
        rows[column][row] = value
        return rows

    return change


def h5_retyped(column: str, dtype: str, shape: tuple[int, ...] = ()) -> Callable[[np.ndarray], np.ndarray]:
    """``column`` with another dtype, or a shorter per-row shape (values cut)."""

    def change(rows: np.ndarray) -> np.ndarray:
        fields = [(name, (dtype, shape) if name == column else rows.dtype.fields[name][0]) for name in rows.dtype.names]
        out = np.zeros(len(rows), dtype=fields)
        for name in rows.dtype.names:
            out[name] = rows[name][:, : shape[0]] if name == column and shape else rows[name]
        return out

    return change


def h5_copy_id(row: int, from_row: int) -> Callable[[np.ndarray], np.ndarray]:
    def change(rows: np.ndarray) -> np.ndarray:
        rows["detectid"][row] = rows["detectid"][from_row]
        return rows

    return change


def wdcor_lines(change: Callable[[list[str]], list[str]]) -> Mutation:
    def mutate(path: Path) -> None:
        path.write_text("".join(change(path.read_text().splitlines(True))))

    return mutate


# --------------------------------------------------------------------------------------------------
# The catalogue


@dataclass(frozen=True)
class Case:
    name: str
    file: str  # the broken file, relative to the release: the error must start with its path
    mutate: Mutation
    expected: tuple[str, ...]  # fragments of the error message: what is wrong, and where

    @property
    def group(self) -> str:
        """The top-level entry of the release that the case copies."""
        return self.file.split("/")[0]


CASES = [
    # ifu-index.fits
    Case("ifu index truncated", IFU, truncate_to(0.7), ("truncated",)),
    Case("ifu index empty", IFU, empty, ("empty file (0 bytes)",)),
    Case("ifu index is text", IFU, text_instead, ("not a readable FITS file",)),
    Case("ifu index is a directory", IFU, directory_instead, ("not a readable FITS file", "Is a directory")),
    Case("ifu index unreadable", IFU, unreadable, ("not a readable FITS file", "Permission denied")),
    Case("ifu index without its table HDU", IFU, fits_hdus(lambda hdus: hdus[:1]),
         ("missing binary-table HDU 1",)),
    Case("ifu index without column pa", IFU, fits_table(drop_column("pa")), ("missing required column(s) pa",)),
    Case("ifu index dec_cen as text", IFU, fits_table(as_text("dec_cen")),
         ("column dec_cen", "floating-point", "string")),
    Case("ifu index NaN ra_cen", IFU, fits_table(set_cell("ra_cen", 2, np.nan)), ("row 2, column ra_cen", "NaN")),
    Case("ifu index dec_cen 91", IFU, fits_table(set_cell("dec_cen", 5, 91.0)),
         ("row 5, column dec_cen", "outside [-90, 90]")),
    Case("ifu index duplicate cube", IFU, fits_table(copy_cells(("shotid", "ifuslot"), 7, 1)),
         ("duplicate (shotid, ifuslot)", "row 7", "first in row 1")),
    # HPSC2
    Case("main table truncated", MAIN, truncate_to(0.5), ("truncated",)),
    Case("main table empty", MAIN, empty, ("empty file (0 bytes)",)),
    Case("main table without detectid", MAIN, fits_table(drop_column("detectid")),
         ("missing required column(s) detectid",)),
    Case("main table RA as text", MAIN, fits_table(as_text("RA")), ("column RA", "floating-point", "string")),
    Case("main table NaN DEC", MAIN, fits_table(set_cell("DEC", 3, np.nan)), ("row 3, column DEC", "NaN")),
    Case("main table RA 360.5", MAIN, fits_table(set_cell("RA", 0, 360.5)), ("row 0, column RA", "outside [0, 360]")),
    Case("main table RA -0.1", MAIN, fits_table(set_cell("RA", 4, -0.1)), ("row 4, column RA", "outside [0, 360]")),
    Case("main table duplicate source_id", MAIN,
         in_turn(fits_table(copy_cells(("source_id",), 5, 2)),  # INFO must match the main table row by row
                 sibling(Path(SPEC).name, fits_table(copy_cells(("source_id",), 5, 2), "INFO"))),
         ("duplicate source_id", "row 5", "first in row 2")),
    Case("spectra file truncated", SPEC, truncate_to(0.6), ("truncated",)),
    Case("spectra file is a directory", SPEC, directory_instead, ("not a readable FITS file", "Is a directory")),
    Case("spectra file without SPEC", SPEC, fits_hdus(drop_hdu("SPEC")), ("missing image HDU 'SPEC'",)),
    Case("spectra file without INFO", SPEC, fits_hdus(drop_hdu("INFO")), ("missing binary-table HDU 'INFO'",)),
    Case("spectra 1035 long", SPEC, fits_hdus(replace_image("SPEC", lambda a: a[:-1])),
         ("HDU 'SPEC'", "shape (1035, 41)", "expected (1036, 41)")),
    Case("SPEC columns fewer than INFO rows", SPEC, fits_hdus(replace_image("SPEC_ERR", lambda a: a[:, :-1])),
         ("HDU 'SPEC_ERR'", "shape (1036, 40)", "expected (1036, 41)")),
    Case("SPEC as integers", SPEC, fits_hdus(replace_image("SPEC", lambda a: a.astype(np.int32))),
         ("HDU 'SPEC'", "BITPIX 32", "expected -32")),
    Case("INFO rows swapped", SPEC, fits_table(swap_rows(4, 5), hdu="INFO"),
         ("row 4, column source_id", "INFO does not match the main table")),
    Case("INFO one row short", SPEC, fits_table(drop_last_row, hdu="INFO"),
         ("HDU 'INFO'", "INFO has 40 rows but hetdex_sc2_v1.5.fits has 41")),
    Case("wavelength grid shifted", SPEC, fits_hdus(replace_image("WAVELENGTH", lambda a: a + 1)),
         ("HDU 'WAVELENGTH'", "3471.0 at k=0")),
    Case("detinfo duplicate detectid", DETINFO, fits_table(copy_cells(("detectid",), 9, 4)),
         ("duplicate detectid", "row 9", "first in row 4")),
    # detection databases
    Case("detections truncated", DETECT_HDR3, truncate_to(0.5), ("truncated file",)),
    Case("detections empty", DETECT_HDR5, empty, ("empty file (0 bytes)",)),
    Case("detections is text", CONT_HDR3, text_instead, ("not a readable HDF5 file",)),
    Case("detections is a directory", DETECT_HDR4, directory_instead, ("is a directory",)),
    Case("detections dangling symlink", DETECT_HDR4, dangling_symlink_instead, ("missing or not a regular file",)),
    Case("detections unreadable", DETECT_HDR3, unreadable, ("not a readable HDF5 file",)),
    Case("no /Spectra table", DETECT_HDR4, h5_table("/Spectra", lambda rows: None), ("missing table node /Spectra",)),
    Case("detections without wave and sn", DETECT_HDR3, h5_table("/Detections", drop("wave", "sn")),
         ("/Detections", "missing required column(s): wave, sn")),
    Case("spec1d 1035 long", CONT_HDR3, h5_table("/Spectra", h5_retyped("spec1d", "f4", (1035,))),
         ("/Spectra column spec1d", "float32 of shape (1035,), expected float32 of shape (1036,)")),
    Case("fibre ra as float64", DETECT_HDR5, h5_table("/Fibers", h5_retyped("ra", "f8")),
         ("/Fibers column ra", "column ra is float64, expected float32")),
    Case("detection NaN dec", DETECT_HDR4, h5_table("/Detections", h5_cell("dec", 2, np.nan)),
         ("/Detections row 2, column dec", "is NaN or outside [-90, 90]")),
    Case("detection dec -90.5", DETECT_HDR3, h5_table("/Detections", h5_cell("dec", 6, -90.5)),
         ("/Detections row 6, column dec", "outside [-90, 90]")),
    Case("fibre ra 400", DETECT_HDR3, h5_table("/Fibers", h5_cell("ra", 5, 400.0)),
         ("/Fibers row 5, column ra", "outside [0, 360]")),
    Case("duplicate detectid", DETECT_HDR3, h5_table("/Detections", h5_copy_id(3, 0)),
         ("/Detections rows 0 and 3", "duplicate detectid")),
    Case("spectrum without detection", DETECT_HDR5, h5_table("/Spectra", h5_cell("detectid", 1, 5_000_999_999)),
         ("/Spectra row 1", "detectid 5000999999 is absent from /Detections")),
    Case("wdcor one line short", WDCOR, wdcor_lines(lambda lines: lines[1:]), ("1035 data lines, expected 1036",)),
    Case("wdcor is a directory", WDCOR, directory_instead, ("not a regular file",)),
    Case("detect index truncated", DETECT_INDEX, truncate_to(0.4), ("truncated file",)),
    Case("detect index NaN ra", DETECT_INDEX, h5_table("/DetectIndex", h5_cell("ra", 9, np.nan)),
         ("/DetectIndex row 9, column ra", "is NaN")),
    Case("detect index duplicate detectid", DETECT_INDEX, h5_table("/DetectIndex", h5_copy_id(8, 0)),
         ("/DetectIndex rows 0 and 8", "duplicate detectid")),
]  # fmt: skip


def test_the_catalogue_covers_every_kind_of_damage():
    names = " ".join(case.name for case in CASES)
    for kind in ("truncated", "empty", "directory", "unreadable", "without", "as text", "NaN", "duplicate",
                 "1035 long", "INFO", "symlink"):
        assert kind in names, kind
    assert len(CASES) >= 30 and len({case.name for case in CASES}) == len(CASES)
    assert {case.group for case in CASES} == {IFU, SC2, "detect"}


# --------------------------------------------------------------------------------------------------
# Running the cases


@pytest.fixture(scope="module")
def published(tiny_catalogs, tmp_path_factory) -> Path:
    """An output directory holding a published ingest of the tiny mock, shared by the cases: each must
    leave it as it was."""
    out = tmp_path_factory.mktemp("published") / "catalogs"
    shutil.copytree(tiny_catalogs, out, symlinks=True)
    return out


def published_state(out: Path) -> dict[str, str | bytes]:
    """What users of ``out`` see: where ``current`` and each catalog link point, the manifest and the
    SQL entry point."""
    state: dict[str, str | bytes] = {p.name: os.readlink(p) for p in out.iterdir() if p.is_symlink()}
    return state | {name: (out / name).read_bytes() for name in ("current/manifest.json", "dexdb.sql")}


def release_for(case: Case, tiny_pdr1: Path, root: Path) -> Path:
    """A copy of the mock's files of the case's group, new mtimes included (a new ingest version)."""
    release = root / "pdr1"
    release.mkdir()
    source = tiny_pdr1 / case.group
    if source.is_dir():
        shutil.copytree(source, release / case.group, copy_function=shutil.copyfile)
    else:
        shutil.copyfile(source, release / case.group)
    return release


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_one_clear_error_and_publishes_nothing(case, tiny_pdr1, published, tmp_path):
    release = release_for(case, tiny_pdr1, tmp_path)
    broken = release / case.file
    case.mutate(broken)
    if case.mutate is unreadable:
        try:
            broken.open("rb").close()
        except PermissionError:
            pass
        else:  # root, or a process with CAP_DAC_OVERRIDE: file modes do not stop it
            pytest.skip("this process reads files whatever their mode (running as root)")
    before = published_state(published)

    result = CliRunner().invoke(main, ["ingest", str(release), str(published), "--no-progress"])

    if case.mutate is unreadable:
        broken.chmod(stat.S_IRUSR | stat.S_IWUSR)  # so that tmp_path can be cleaned
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), f"uncaught {result.exception!r}"  # a ClickException
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    message = errors[0].removeprefix("Error: ")
    assert message.startswith(f"{broken}: "), message
    for fragment in case.expected:
        assert fragment in message, message
    assert published_state(published) == before


def test_the_command_exits_1_with_the_error_on_stderr(tiny_pdr1, published, tmp_path):
    """The same as a user's shell sees it, for one case: a separate process, its exit status, its streams."""
    (case,) = [case for case in CASES if case.name == "ifu index NaN ra_cen"]
    release = release_for(case, tiny_pdr1, tmp_path)
    case.mutate(release / case.file)
    run = subprocess.run([sys.executable, "-m", "dexdb.cli", "ingest", str(release), str(published), "--no-progress"],
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 1
    errors = [line for line in run.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [f"Error: {release / case.file}: ifu_index (row 2, column ra_cen): NaN position"]
    assert "Traceback" not in run.stderr and "Error:" not in run.stdout


def test_an_out_of_range_value_is_printed_as_a_number(tiny_pdr1, published, tmp_path):
    (case,) = [case for case in CASES if case.name == "ifu index dec_cen 91"]
    release = release_for(case, tiny_pdr1, tmp_path)
    case.mutate(release / case.file)
    result = CliRunner().invoke(main, ["ingest", str(release), str(published), "--no-progress"])
    assert "dec_cen 91.0 outside [-90, 90]" in result.output, result.output


def test_the_published_catalogs_survived_every_case(published):
    """Runs after the cases (pytest keeps the order of a module): checksums and row counts intact."""
    assert verify(published) == []
