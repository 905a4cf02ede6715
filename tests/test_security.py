"""Security hygiene: no value is pasted into SQL, and download lists cannot write outside their target.

SQL rule. Every value that reaches SQL from outside the statement's own text (a user's argument, a
path, a number, a column name read from a file) is bound as a parameter (``con.execute(sql, params)``,
``$name`` / ``?`` markers), never formatted into the statement. A static check over the Python sources
of ``dexdb/`` and ``ingest/`` enforces it: it flags

* an f-string, ``str.format`` or ``%`` formatting whose literal text reads as SQL and that inserts any
  non-constant value;
* a ``+`` concatenation of SQL text with a non-constant value;
* a call of ``execute``, ``executemany``, ``sql`` or ``query`` whose statement is built by any of these.

Module constants (names in capitals) are text of the program, not values. The only other exception is
an identifier that SQL cannot take as a parameter and that was validated
against a schema before it is inserted; each such expression is listed in ``ALLOWED`` with the reason
it is safe. Anything else needs a parameter (DuckDB binds them in ``SET``, table functions and
``read_parquet`` lists too). The check is plain AST matching, so ``python -m pytest tests/test_security.py``
names the file, line and expression of every offence.

Download rule. The paths of a download list (``dexdb.download``) are relative to the target directory
and can not leave it: ``..``, absolute paths, empty or percent-encoded segments and URLs outside the base
are refused with an error naming the line, and a symbolic link on the way (a directory or the file
itself) is never written through. Checked on an HTTP server on localhost.
"""

from __future__ import annotations

import ast
import http.server
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

REPOSITORY = Path(__file__).resolve().parent.parent
SOURCE_DIRS = ("dexdb", "ingest")
SQL_TEXT = re.compile(
    r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|ATTACH|DETACH|COPY|PRAGMA|DESCRIBE|SUMMARIZE|INSTALL|LOAD"
    r"|EXPLAIN)\b|\bSET\s+\w+\s*=|\b(read_parquet|read_csv|read_json|parquet_scan)\s*\("
)
EXECUTING_METHODS = {"execute", "executemany", "sql", "query"}

#: (file, expression inserted into SQL) -> why it is safe. Only identifiers validated against a schema.
ALLOWED = {
    ("ingest/hats_writer.py", "id_field.name"): (
        "a field of the catalog's own Arrow schema (schema.field(column) raises for any other name) whose "
        "name passed hats_layout.check_name ([A-Za-z0-9_][A-Za-z0-9_.-]*, no quote) in CatalogSpec"
    ),
    ("dexdb/catalog.py", "select"): (
        "column names that Catalog._columns found in the catalog's schema, each quoted by _quote_identifier, "
        "cast in Catalog.cone to the type DuckDB reports for the catalog's view"
    ),
    ("dexdb/catalog.py", "key"): "'detectid' or 'source_id': the id column of _SPECTRA_BY, a constant table",
}

# Files that break the rule today (a test marked xfail each); see the reasons.
KNOWN_OFFENDERS = {
    "dexdb/lines/classify.py": "the --where filter (SQL text from the command line) is pasted into the query of "
                               "the detections to classify",
}


@dataclass(frozen=True)
class Offence:
    file: str
    line: int
    expression: str
    why: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.why}: {self.expression}"


def literal_text(node: ast.AST) -> str | None:
    """The SQL-relevant literal text of a string node (an f-string's constant parts), else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
    return None


def is_named_constant(node: ast.AST) -> bool:
    """``NAME`` or ``module.NAME`` in capitals: a module constant by the naming convention."""
    name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
    return bool(re.fullmatch(r"[A-Z][A-Z0-9_]*", name))


def concatenation(node: ast.AST) -> list[ast.AST]:
    """The operands of a chain ``a + b + c``."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return concatenation(node.left) + concatenation(node.right)
    return [node]


def inserted_values(node: ast.AST) -> list[ast.AST] | None:
    """The values a string-building expression inserts into its literal text, or None if ``node`` is
    not one (an f-string, ``"...".format(...)``, ``"..." % ...``, or the top of a ``+`` chain with text)."""
    if isinstance(node, ast.JoinedStr):
        return [v.value for v in node.values if isinstance(v, ast.FormattedValue)]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format" \
            and literal_text(node.func.value) is not None:
        return [*node.args, *(k.value for k in node.keywords)]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod) and literal_text(node.left) is not None:
        return list(node.right.elts) if isinstance(node.right, ast.Tuple) else [node.right]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        operands = concatenation(node)
        if any(literal_text(operand) is not None for operand in operands):
            # f-string operands report their own values
            return [operand for operand in operands if literal_text(operand) is None]
    return None


def sql_text_of(node: ast.AST) -> str:
    """All literal text of a string-building expression."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return literal_text(node.func.value) or ""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
        return literal_text(node.left) or ""
    return "".join(literal_text(operand) or "" for operand in concatenation(node))


def offences_in(source: str, file: str) -> list[Offence]:
    """Every place of ``source`` where a non-constant value is inserted into SQL text."""
    offences: list[Offence] = []
    tree = ast.parse(source)
    executed = {id(call.args[0]) for call in ast.walk(tree) if isinstance(call, ast.Call) and call.args
                and isinstance(call.func, ast.Attribute) and call.func.attr in EXECUTING_METHODS}
    inner = {id(child) for node in ast.walk(tree) if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add)
             for child in (node.left, node.right)}  # a + b + c is visited once, at its top
    for node in ast.walk(tree):
        if id(node) in inner and isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            continue
        values = inserted_values(node)
        if not values:
            continue
        if not (SQL_TEXT.search(sql_text_of(node)) or id(node) in executed):
            continue
        for value in values:
            expression = ast.unparse(value)
            if not is_named_constant(value) and (file, expression) not in ALLOWED:
                why = "statement passed to execute/sql built from a value" if id(node) in executed else \
                    "value pasted into SQL text"
                offences.append(Offence(file, getattr(node, "lineno", 0), expression, why))
    return offences


def python_sources() -> list[str]:
    return sorted(p.relative_to(REPOSITORY).as_posix() for d in SOURCE_DIRS for p in (REPOSITORY / d).rglob("*.py"))


@pytest.mark.parametrize("file", [
    pytest.param(file, marks=pytest.mark.xfail(strict=True, reason=KNOWN_OFFENDERS[file]))
    if file in KNOWN_OFFENDERS else file
    for file in python_sources()
])
def test_no_value_is_pasted_into_sql(file):
    offences = offences_in((REPOSITORY / file).read_text(encoding="utf-8"), file)
    assert not offences, "\n".join(map(str, offences))


def test_every_allowed_expression_is_still_in_use():
    for file, expression in ALLOWED:
        tree = ast.parse((REPOSITORY / file).read_text(encoding="utf-8"))
        inserted = {ast.unparse(v) for node in ast.walk(tree) for v in (inserted_values(node) or [])}
        assert expression in inserted, (file, expression)


def test_allowed_identifiers_cannot_carry_a_quote():
    from dexdb.ingest.hats_writer import CatalogSpec

    for name in ('id" OR 1=1 --', "id'", "a b"):
        with pytest.raises(ValueError):
            CatalogSpec(name="c", ra_column="ra", dec_column="dec", sort_tiebreak="id", id_columns=(name,))


@pytest.mark.parametrize("code, flagged", [
    ('con.execute(f"SELECT * FROM t WHERE id = {user_id}")', ["user_id"]),
    ('con.sql("SELECT * FROM read_parquet(\'" + path + "\')")', ["path"]),
    ('query = "SELECT * FROM t WHERE ra > {}".format(ra)', ["ra"]),
    ('query = "SELECT * FROM t WHERE ra > %s" % ra', ["ra"]),
    ('query = "DELETE FROM t WHERE id = %s AND n = %d" % (a, b)', ["a", "b"]),
    ('con.execute(f"SET file_search_path = {quote(path)}")', ["quote(path)"]),
    ('con.sql(f"{prefix} FROM t")', ["prefix"]),
    ('con.sql(f"SELECT {HEALPIX_COLUMN}, {hats.NPIX} FROM t")', []),
    ('con.execute("SELECT * FROM t WHERE id = $id", {"id": user_id})', []),
    ('con.execute("SELECT * FROM read_parquet($files)", {"files": files})', []),
    ('message = f"{path}: SELECT failed"; log(message)', ["path"]),  # reads as SQL: rephrase or bind
    ('message = f"{name}: {rows} rows from {path}"', []),
    ('sql = "SELECT 1" + " FROM t"', []),
])
def test_the_check_flags_pasted_values(code, flagged):
    assert [o.expression for o in offences_in(code, "example.py")] == flagged


# --------------------------------------------------------------------------------------------------
# Download lists


download = pytest.importorskip("dexdb.download", reason="dexdb.download is not there yet")


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(base URL of a release served from localhost, directory served) holding datacubes/123/notes.txt."""
    served = tmp_path_factory.mktemp("served")
    (served / "pdr1" / "datacubes" / "123").mkdir(parents=True)
    (served / "pdr1" / "datacubes" / "123" / "notes.txt").write_text("payload\n")
    (served / "outside.txt").write_text("outside\n")

    def handler(*args, **kwargs):
        return QuietHandler(*args, directory=str(served), **kwargs)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/pdr1", served
    httpd.shutdown()
    thread.join()


def files_under(directory: Path) -> set[str]:
    return {p.relative_to(directory).as_posix() for p in directory.rglob("*")}


ESCAPES = [
    "/../outside.txt",
    "/datacubes/../../outside.txt",
    "/datacubes/123/../../../outside.txt",
    "//outside.txt",
    "/datacubes//123/notes.txt",
    "/%2e%2e/outside.txt",
    "/datacubes/%2E%2E/%2E%2E/outside.txt",
    "/datacubes/..%2f..%2foutside.txt",
    "/datacubes/.hidden",
    "/./datacubes/123/notes.txt",
    "/datacubes/123/notes.txt?x=/../../outside.txt",
    "/datacubes\\..\\..\\outside.txt",
]


@pytest.mark.parametrize("suffix", ESCAPES)
def test_a_list_line_that_leaves_the_target_is_refused(suffix, server, tmp_path):
    base, _ = server
    url_list = tmp_path / "urls.txt"
    url_list.write_text(f"# cubes\n{base}/datacubes/123/notes.txt\n{base}{suffix}\n")
    target = tmp_path / "pdr1"
    with pytest.raises(download.DownloadError, match=r"line 3"):
        download.download(url_list, target, base_url=base, progress=False, retries=0)
    assert not target.exists() or files_under(target) == set()
    assert files_under(tmp_path) <= {"urls.txt", "pdr1"}


@pytest.mark.parametrize("url", ["file:///etc/passwd", "http://127.0.0.2:1/pdr1/datacubes/123/notes.txt",
                                 "/etc/passwd", "datacubes/123/notes.txt"])
def test_urls_outside_the_base_are_refused(url, server, tmp_path):
    base, _ = server
    url_list = tmp_path / "urls.txt"
    url_list.write_text(url + "\n")
    with pytest.raises(download.DownloadError, match="line 1"):
        download.read_url_list(url_list, tmp_path / "pdr1", base_url=base)


@settings(max_examples=200, derandomize=True, database=None, deadline=None)
@given(segments=st.lists(st.sampled_from(["..", ".", "", "a", "b.fits", "%2e%2e", "%2F", "..%2f", "~", "/", "\\..",
                                          ".hidden", "c d", "\x00", "datacubes"]), min_size=1, max_size=6))
def test_any_accepted_path_stays_inside_the_target(segments):
    base = "https://example.org/pdr1"
    target = Path("/srv/pdr1")
    try:
        relative = download.relative_path(base + "/" + "/".join(segments), base)
    except ValueError:
        return
    resolved = (target / relative).resolve()
    assert resolved.is_relative_to(target) and resolved != target
    assert all(part not in ("..", ".", "") and "/" not in part for part in relative.parts)


def test_a_symlinked_directory_is_not_written_through(server, tmp_path):
    base, _ = server
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "pdr1"
    target.mkdir()
    (target / "datacubes").symlink_to(outside, target_is_directory=True)
    url_list = tmp_path / "urls.txt"
    url_list.write_text(f"{base}/datacubes/123/notes.txt\n")
    with pytest.raises(download.DownloadError, match="symbolic link"):
        download.download(url_list, target, base_url=base, progress=False, retries=0)
    assert files_under(outside) == set()


@pytest.mark.parametrize("link", ["notes.txt", ".notes.txt.part"])
def test_a_symlinked_file_is_not_written_through(link, server, tmp_path):
    base, _ = server
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    directory = tmp_path / "pdr1" / "datacubes" / "123"
    directory.mkdir(parents=True)
    (directory / link).symlink_to(victim)
    url_list = tmp_path / "urls.txt"
    url_list.write_text(f"{base}/datacubes/123/notes.txt\n")
    with pytest.raises(download.DownloadError, match="symbolic link"):
        download.download(url_list, tmp_path / "pdr1", base_url=base, progress=False, retries=0)
    assert victim.read_text() == "keep me\n"
    assert (directory / link).is_symlink()


def test_a_good_list_downloads_inside_the_target(server, tmp_path):
    """The refusals above are not the only outcome: a valid line lands where its path says."""
    base, served = server
    url_list = tmp_path / "urls.txt"
    url_list.write_text(f"{base}/datacubes/123/notes.txt\n")
    report = download.download(url_list, tmp_path / "pdr1", base_url=base, progress=False, retries=0)
    assert report.downloaded == 1
    assert (tmp_path / "pdr1" / "datacubes" / "123" / "notes.txt").read_bytes() == \
        (served / "pdr1" / "datacubes" / "123" / "notes.txt").read_bytes()
    assert files_under(tmp_path / "pdr1") == {"datacubes", "datacubes/123", "datacubes/123/notes.txt"}
