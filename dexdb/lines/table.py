"""The line table: every rest wavelength dexdb uses, in one data file (``lines.csv`` beside this module).

The mock's emission and stellar absorption lines (:mod:`dexdb.constants`, :mod:`dexdb.mock.spectra`) and
the classifier's line hypotheses all read it. Columns:

* ``name``: the key used in code, SQL and the ``line_solutions`` catalog (``Lya``, ``[OII]``,
  ``[OIII]5007``); ``label``: for figures;
* ``rest_wave``: Angstrom, in ``medium`` (``vacuum`` for the UV lines, ``air`` for the optical ones, as
  usually quoted). A redshift is ``observed / rest_wave - 1`` with no air/vacuum conversion, as the mock
  places its lines; the offset this leaves for a UV line seen in air (~3e-4 relative) is well inside
  the classifier's wavelength tolerance;
* ``weight``: how much a match of the line counts in a multi-line solution's score (1.0 for the strong,
  commonly seen lines; 0.5 for weak or rarely seen ones);
* ``broad``: the line can come from the broad-line region of an AGN (thousands of km/s wide); the
  others (forbidden lines, Ca II, Na I, the high Balmer lines) are narrow;
* ``classify``: the line is tried as the identity of a detected emission line and looked for as an
  other line of a hypothesis; ``stellar_absorption``: the mock's stars carry it in absorption;
* ``note``: where the entry departs from ELiXer's table or needs a word.

The SQL layer sees the same rows: ``dexdb classify`` publishes them as ``line_table`` next to its
``line_solutions`` catalog (``sql/60_lines.sql``).

>>> rest_wave("[OII]")
3727.8
>>> line_table().names[:3]
('Lya', 'NV', 'SiII')
"""

from __future__ import annotations

import csv
import functools
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

DATA_FILE = "lines.csv"
#: The two identities of P(LAE)/P(OII).
LYA_NAME, OII_NAME = "Lya", "[OII]"
COLUMNS = ("name", "label", "rest_wave", "medium", "weight", "broad", "classify", "stellar_absorption", "note")
MEDIA = ("vacuum", "air")
_BOOLEANS = {"true": True, "false": False}


@dataclass(frozen=True)
class LineTable:
    """The rows of the line table, one tuple or array per column, sorted by rest wavelength."""

    names: tuple[str, ...]
    labels: tuple[str, ...]
    rest_wave: np.ndarray  # float64, Angstrom
    media: tuple[str, ...]
    weight: np.ndarray  # float64
    broad: np.ndarray  # bool
    classify: np.ndarray  # bool
    stellar_absorption: np.ndarray  # bool
    notes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        """Row of ``name``; a KeyError lists the known names."""
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"{name!r} is not in the line table; known: {', '.join(self.names)}") from None

    def select(self, rows: np.ndarray) -> LineTable:
        """The rows where the boolean mask ``rows`` is true, in table order."""
        keep = np.flatnonzero(rows)

        def pick(values):
            return tuple(values[i] for i in keep)

        return LineTable(
            pick(self.names), pick(self.labels), self.rest_wave[keep], pick(self.media), self.weight[keep],
            self.broad[keep], self.classify[keep], self.stellar_absorption[keep], pick(self.notes),
        )  # fmt: skip

    def to_arrow(self):
        """The table as a ``pyarrow.Table`` with the CSV's column names (for Parquet and SQL)."""
        import pyarrow as pa

        return pa.table({
            "name": pa.array(self.names, pa.string()),
            "label": pa.array(self.labels, pa.string()),
            "rest_wave": pa.array(self.rest_wave, pa.float64()),
            "medium": pa.array(self.media, pa.string()),
            "weight": pa.array(self.weight, pa.float64()),
            "broad": pa.array(self.broad, pa.bool_()),
            "classify": pa.array(self.classify, pa.bool_()),
            "stellar_absorption": pa.array(self.stellar_absorption, pa.bool_()),
            "note": pa.array(self.notes, pa.string()),
        })  # fmt: skip


class LineTableError(ValueError):
    """A malformed line table: names the file, the row and the column."""


def read_line_table(path: str | Path | None = None) -> LineTable:
    """Parse and check a line table file (default: the packaged ``lines.csv``)."""
    if path is None:
        source = resources.files("dexdb.lines").joinpath(DATA_FILE)
        where, text = str(source), source.read_text(encoding="utf-8")
    else:
        where, text = str(path), Path(path).read_text(encoding="utf-8")
    reader = csv.DictReader(text.splitlines())
    if tuple(reader.fieldnames or ()) != COLUMNS:
        raise LineTableError(f"{where}: header must be {','.join(COLUMNS)}, got {','.join(reader.fieldnames or [])}")
    rows = [_parse_row(where, number, row) for number, row in enumerate(reader, start=2)]
    if not rows:
        raise LineTableError(f"{where}: no rows")
    names = [r["name"] for r in rows]
    for number, name in enumerate(names, start=2):
        if names.index(name) + 2 != number:
            raise LineTableError(f"{where}: row {number}: name {name!r} repeats row {names.index(name) + 2}")
    for number in range(3, len(rows) + 2):
        if rows[number - 2]["rest_wave"] < rows[number - 3]["rest_wave"]:
            raise LineTableError(f"{where}: row {number}: rest_wave must not decrease (rows are sorted by it)")
    def column(key):
        return tuple(r[key] for r in rows)

    return LineTable(
        names=column("name"), labels=column("label"), rest_wave=np.array(column("rest_wave"), dtype=np.float64),
        media=column("medium"), weight=np.array(column("weight"), dtype=np.float64),
        broad=np.array(column("broad"), dtype=bool),
        classify=np.array(column("classify"), dtype=bool),
        stellar_absorption=np.array(column("stellar_absorption"), dtype=bool), notes=column("note"),
    )  # fmt: skip


def _parse_row(where: str, number: int, row: dict[str, str | None]) -> dict[str, object]:
    def fail(column: str, problem: str) -> LineTableError:
        return LineTableError(f"{where}: row {number}, column {column}: {problem}, got {row.get(column)!r}")

    if None in row or any(row[c] is None for c in COLUMNS):
        raise LineTableError(f"{where}: row {number}: expected {len(COLUMNS)} fields")
    parsed: dict[str, object] = {"note": row["note"]}
    for column in ("name", "label"):
        if not row[column] or row[column] != row[column].strip():
            raise fail(column, "must be non-empty without surrounding blanks")
        parsed[column] = row[column]
    for column in ("rest_wave", "weight"):
        try:
            value = float(row[column])
        except ValueError:
            raise fail(column, "must be a number") from None
        if not (math.isfinite(value) and value > 0):
            raise fail(column, "must be a positive number")
        parsed[column] = value
    if row["medium"] not in MEDIA:
        raise fail("medium", f"must be one of {', '.join(MEDIA)}")
    parsed["medium"] = row["medium"]
    for column in ("broad", "classify", "stellar_absorption"):
        if row[column] not in _BOOLEANS:
            raise fail(column, "must be true or false")
        parsed[column] = _BOOLEANS[row[column]]
    return parsed


@functools.cache
def line_table() -> LineTable:
    """The packaged line table (read once)."""
    return read_line_table()


def rest_wave(name: str) -> float:
    """Rest wavelength (Angstrom) of the line called ``name``."""
    table = line_table()
    return float(table.rest_wave[table.index(name)])


def classification_lines() -> LineTable:
    """The lines tried as identities of a detected line, in rest-wavelength order."""
    table = line_table()
    return table.select(table.classify)


def stellar_absorption_lines() -> tuple[float, ...]:
    """Rest wavelengths of the mock stars' absorption lines, ascending."""
    table = line_table()
    return tuple(float(w) for w in table.rest_wave[table.stellar_absorption])


#: Where the line table lives in an output directory, for SQL (view line_table, macro line_hypotheses).
LINE_TABLE = "line_table"
LINE_TABLE_FILE = "line_table.parquet"


def write_line_table(version_dir: Path) -> dict[str, object]:
    """Write the line table as ``version_dir/line_table/line_table.parquet``; return its manifest entry
    (``rows`` and ``files`` with their sha256)."""
    import hashlib

    import pyarrow.parquet as pq

    table_dir = version_dir / LINE_TABLE
    table_dir.mkdir(exist_ok=True)
    path = table_dir / LINE_TABLE_FILE
    pq.write_table(line_table().to_arrow(), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return {"rows": len(line_table()), "files": {f"{LINE_TABLE}/{LINE_TABLE_FILE}": digest}}
