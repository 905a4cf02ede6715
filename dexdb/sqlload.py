"""dexdb's SQL views and macros in DuckDB: from Python, and from the DuckDB CLI through an entry point.

The definitions live in the ``.sql`` files of the package ``dexdb.sql`` (the repository's ``sql/``);
nothing is defined in Python. Conventions of those files:

* files load in file-name order, so a numeric prefix fixes the order (``10_views.sql`` before
  ``30_spectra.sql``): DuckDB binds a view or macro when it is created, so what it uses must exist;
* statements end with ``;`` and are split by :func:`split_statements` (quotes and comments respected);
* a line ``-- requires: a, b`` among the comments before a statement skips that statement unless
  the catalogs ``a`` and ``b`` are in the output directory (a partial ingest);
* paths are relative to the output directory OUT of ``dexdb ingest`` and resolve through
  ``SET file_search_path``, so OUT can be moved. A session points it at the version that ``OUT/current``
  names when the session opens, not at OUT: a query then reads one version from its first file to its
  last, even while an ingest publishes the next one (the session sees that one when reopened; the
  ingest keeps the previous version for it, and deletes older ones). Definitions are ``TEMP`` so
  that they stay in the session and never enter a database file the user works in.

:func:`connect` opens OUT in Python. :func:`write_entry_point` writes ``OUT/dexdb.sql`` (the same
statements, concatenated) and the launcher ``OUT/dexdb-shell`` for the DuckDB CLI from PyPI, which
may be a different DuckDB version than the Python package: text, unlike a database file, reads in both.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import duckdb

import dexdb

SQL_PACKAGE = "dexdb.sql"
ENTRY_POINT = "dexdb.sql"
LAUNCHER = "dexdb-shell"

_REQUIRES = re.compile(r"^[ \t]*--[ \t]*requires:(.*)$", re.MULTILINE)
# Quoted strings and identifiers, comments, then anything else up to the next candidate boundary.
_TOKENS = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/|;|[^'\";/-]+|.", re.DOTALL)

# The launcher cannot use `duckdb -init dexdb.sql`: the CLI runs the init file before any -cmd, so the
# views would be bound before file_search_path points at OUT. Its directory is computed without cd so
# that the user's relative paths keep meaning what they mean in their shell.
_LAUNCHER_TEXT = """\
#!/bin/sh
# Opens the dexdb catalogs in this directory with the DuckDB CLI (pip install duckdb-cli), offline,
# from any working directory; extra arguments go to duckdb (a database file, -c "SELECT ...", -csv).
case $0 in
    */*) here=$(dirname -- "$0") ;;
    *) here=. ;;
esac
case $here in
    /*) ;;
    *) here=$PWD/$here ;;
esac
# The version that current names now, so that every query of the session reads that one version.
pinned=$here
if [ -d "$here/current" ]; then pinned=$(cd -- "$here/current" && pwd -P); fi
quoted=$(printf '%s' "$pinned" | sed "s/'/''/g")
exec duckdb -cmd "SET file_search_path = '$quoted'" -cmd ".read \\"$here/dexdb.sql\\"" "$@"
"""


@dataclass(frozen=True)
class Statement:
    file: str
    sql: str  # with its leading comments, without the final ';'
    requires: frozenset[str]

    @property
    def code(self) -> str:
        """The statement without comments, blanks collapsed."""
        return _code(_TOKENS.findall(self.sql))


def sql_files() -> list[Traversable]:
    """The ``.sql`` files of :data:`SQL_PACKAGE` in load order."""
    files = [f for f in resources.files(SQL_PACKAGE).iterdir() if f.name.endswith(".sql")]
    return sorted(files, key=lambda f: f.name)


def split_statements(text: str, file: str = "<text>") -> list[Statement]:
    """The statements of ``text`` with their ``-- requires:`` catalogs; comments after the last
    ``;`` are dropped."""
    statements, current = [], []
    for token in _TOKENS.findall(text):
        if token != ";":
            current.append(token)
            continue
        sql, code = "".join(current).strip(), _code(current)
        current = []
        if not code:
            continue
        requires = {name.strip() for line in _REQUIRES.findall(sql) for name in line.split(",") if name.strip()}
        statements.append(Statement(file, sql, frozenset(requires)))
    return statements


def _code(tokens: list[str]) -> str:
    """The tokens without comments, blanks collapsed."""
    return " ".join("".join(t for t in tokens if not t.startswith(("--", "/*"))).split())


def statements() -> list[Statement]:
    """Every statement of every file, in load order."""
    return [s for f in sql_files() for s in split_statements(f.read_text(encoding="utf-8"), f.name)]


def catalogs_in(out_dir: str | os.PathLike) -> set[str]:
    """Names of the entries of ``out_dir`` that are (or link to) directories: the published catalogs
    (and ``current`` and ``versions``, which no statement requires)."""
    return {p.name for p in Path(out_dir).iterdir() if p.is_dir()}


def applicable(catalogs: Iterable[str]) -> list[Statement]:
    """The statements whose required catalogs are all among ``catalogs``."""
    available = set(catalogs)
    return [s for s in statements() if s.requires <= available]


def connect(out_dir: str | os.PathLike) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the views and macros over the catalogs in ``out_dir``.

    For tables of your own, ``ATTACH`` a database file to it. (DuckDB has no read-only in-memory
    database; nothing here writes.)"""
    out_dir = _existing_dir(out_dir)
    con = duckdb.connect()
    try:
        prepare(con, out_dir, applicable(catalogs_in(out_dir)))
    except RuntimeError:
        con.close()
        raise
    return con


def prepare(con: duckdb.DuckDBPyConnection, out_dir: Path, statements: Iterable[Statement]) -> None:
    """Point ``con`` (a connection or a cursor: DuckDB keeps TEMP definitions per cursor) at ``out_dir``
    and run ``statements`` in it."""
    con.execute("SET file_search_path = $path", {"path": str(pinned_version(out_dir))})
    for statement in statements:
        try:
            con.execute(statement.sql)
        except duckdb.Error as exc:
            raise RuntimeError(f"{statement.file}: {statement.code[:80]} ...: {exc}") from exc


def pinned_version(out_dir: Path) -> Path:
    """The version directory that ``out_dir/current`` names now (``out_dir`` itself when there is no
    ``current``, e.g. a directory of links to catalogs)."""
    current = out_dir / "current"
    return current.resolve() if current.is_dir() else out_dir


def entry_point_sql(catalogs: Iterable[str]) -> str:
    """The text of ``OUT/dexdb.sql`` for an output directory holding ``catalogs``."""
    header = (
        f"-- dexdb {dexdb.__version__}: views and macros over the catalogs in this directory.\n"
        f"-- Open with ./{LAUNCHER} from anywhere, or: cd <this directory> && duckdb -init {ENTRY_POINT}\n"
        "-- Paths are relative to this directory; generated from the package dexdb.sql, do not edit.\n"
    )
    return header + "".join(f"\n-- from {s.file}\n{s.sql};\n" for s in applicable(catalogs))


def write_entry_point(out_dir: str | os.PathLike, catalogs: Iterable[str] | None = None) -> tuple[Path, Path]:
    """Write ``OUT/dexdb.sql`` and the executable ``OUT/dexdb-shell``, each replaced in one rename.

    ``catalogs``: the catalogs the entry point will serve, by default those now in ``out_dir``; the
    ingest passes the ones of the version it is about to publish."""
    out_dir = _existing_dir(out_dir)
    sql_path, launcher_path = out_dir / ENTRY_POINT, out_dir / LAUNCHER
    _replace(sql_path, entry_point_sql(catalogs_in(out_dir) if catalogs is None else catalogs), mode=0o644)
    _replace(launcher_path, _LAUNCHER_TEXT, mode=0o755)
    return sql_path, launcher_path


def refresh_entry_point(out_dir: str | os.PathLike) -> bool:
    """Rewrite ``OUT/dexdb.sql`` and ``OUT/dexdb-shell`` when they differ from what this dexdb writes
    (the package was upgraded since the ingest); True when they were rewritten."""
    out_dir = _existing_dir(out_dir)
    sql_path, launcher_path = out_dir / ENTRY_POINT, out_dir / LAUNCHER
    wanted = entry_point_sql(catalogs_in(out_dir))
    current = [p.read_text(encoding="utf-8") if p.is_file() else None for p in (sql_path, launcher_path)]
    if current == [wanted, _LAUNCHER_TEXT]:
        return False
    write_entry_point(out_dir)
    return True


def _existing_dir(out_dir: str | os.PathLike) -> Path:
    path = Path(out_dir).absolute()
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: not a directory (expected the output directory of `dexdb ingest`)")
    return path


def _replace(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.chmod(mode)
    os.replace(tmp, path)
