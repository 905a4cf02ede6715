"""Support for the reliability tests: copies of the tiny mock, and ``dexdb ingest`` with a kill switch.

:class:`KillSwitch` runs ``python -m dexdb.cli ARGS`` that sends itself SIGKILL at a chosen point; the
ingest code is unchanged, the switch wraps library calls it makes. Each run is forked from a server
process (this module run as a program) that has imported dexdb and its dependencies once, which saves
2-3 s of imports per run; the child then runs ``dexdb.cli`` as ``python -m`` does.
``python tests/reliability_support.py read ...`` is a reader process (:func:`read_until_stopped`).

A point is ``context:event:n:when``: the n-th (from 1) ``event`` of the run while ``context`` is being
written, killed ``before`` or ``after`` the call. Contexts are catalog names (while
``pipeline.write_catalog`` writes that catalog) and ``publish`` outside them, where the watched calls
are those of the publication: the manifest, the entry point, the switch of ``current``. Events:

* ``h5_read``: ``tables.Table.read``, the reads of the detection databases;
* ``parquet_write``: ``pyarrow.parquet.ParquetWriter.write_table``, a row group of a partition, margin
  or index file (``before`` the first one, the file holds only its header);
* ``rename``: ``os.rename`` / ``os.replace``, the publication of a catalog, the manifest, ``current``.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import runpy
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Self

PUBLISH = "publish"
EVENTS = ("h5_read", "parquet_write", "rename")
# Between two queries of a reader: a query takes ~0.1 s of a core, and the ingest needs one too.
READER_PAUSE = 0.3


def release_copy(tiny_pdr1: Path, destination: Path) -> Path:
    """The mock release without its cubes (the ingest does not read them), every file with a new mtime,
    so that an ingest of it is a new version with the same content."""
    shutil.copytree(tiny_pdr1, destination, ignore=shutil.ignore_patterns("datacubes"),
                    copy_function=shutil.copyfile)
    return destination


def variant_release(tiny_pdr1: Path, destination: Path) -> Path:
    """A copy whose HPSC2 sources differ: ``flux`` and every catalog spectrum doubled. Rows, ids and
    positions stay, so its catalogs have the same partitions and files as the mock's, other bytes."""
    import numpy as np
    from astropy.io import fits

    release_copy(tiny_pdr1, destination)
    directory = destination / "hetdex_source_catalog_2"
    with fits.open(directory / "hetdex_sc2_v1.5.fits", mode="update") as hdul:
        hdul[1].data["flux"] = hdul[1].data["flux"] * np.float32(2)
    with fits.open(directory / "hetdex_sc2_spec_v1.5.fits", mode="update") as hdul:
        hdul["SPEC"].data = hdul["SPEC"].data * np.float32(2)
    return destination


@dataclass(frozen=True, order=True)
class KillPoint:
    context: str
    event: str
    n: int
    when: str  # "before" or "after" the call

    def __str__(self) -> str:
        return f"{self.context}:{self.event}:{self.n}:{self.when}"

    @classmethod
    def parse(cls, text: str) -> KillPoint:
        context, event, n, when = text.split(":")
        return cls(context, event, int(n), when)


#: Called as (context, event, n, when) around every watched call.
Observer = Callable[[str, str, int, str], None]


@contextmanager
def watching(observer: Observer) -> Iterator[Counter]:
    """Wrap the watched library calls while the block runs; yields the event counts per (context, event)."""
    import pyarrow.parquet as pq
    import tables

    from dexdb.ingest import pipeline

    counts: Counter = Counter()
    context = [PUBLISH]
    lock = threading.Lock()

    def watched(event: str, function: Callable) -> Callable:
        def call(*args, **kwargs):
            with lock:
                counts[context[0], event] += 1
                n = counts[context[0], event]
            observer(context[0], event, n, "before")
            result = function(*args, **kwargs)
            observer(context[0], event, n, "after")
            return result

        return call

    def write_catalog(batches, spec, *args, **kwargs):
        context[0] = spec.name
        try:
            return original["write_catalog"](batches, spec, *args, **kwargs)
        finally:
            context[0] = PUBLISH

    targets = {
        "read": (tables.Table, "h5_read"),
        "write_table": (pq.ParquetWriter, "parquet_write"),
        "rename": (os, "rename"),
        "replace": (os, "rename"),
    }
    original = {name: getattr(owner, name) for name, (owner, _) in targets.items()}
    original["write_catalog"] = pipeline.write_catalog
    try:
        for name, (owner, event) in targets.items():
            setattr(owner, name, watched(event, original[name]))
        pipeline.write_catalog = write_catalog
        yield counts
    finally:
        for name, (owner, _) in targets.items():
            setattr(owner, name, original[name])
        pipeline.write_catalog = original["write_catalog"]


class KillSwitch:
    """Runs of ``python -m dexdb.cli`` killed at a point, forked from one server process.

    >>> with KillSwitch() as switch:
    ...     exit_code, output = switch.run(KillPoint.parse("sources:rename:1:before"), ["ingest", "a", "b"])
    """

    def __init__(self):
        self.server = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       text=True, start_new_session=True)

    def run(self, point: KillPoint | None, cli_args: list[str], timeout: float = 300) -> tuple[int, str]:
        """(exit code, negative for a signal as in subprocess; stdout and stderr of the run). No point: a
        plain run. A run that outlives ``timeout`` seconds is killed with the server: TimeoutError."""
        with tempfile.NamedTemporaryFile("r", suffix=".log") as log:
            request = {"point": None if point is None else str(point), "args": cli_args, "log": log.name}
            self.server.stdin.write(json.dumps(request) + "\n")
            self.server.stdin.flush()
            if not select.select([self.server.stdout], [], [], timeout)[0]:
                os.killpg(self.server.pid, signal.SIGKILL)
                raise TimeoutError(f"dexdb {' '.join(cli_args)} (kill point {point}) ran {timeout} s:\n{log.read()}")
            exit_code = json.loads(self.server.stdout.readline())
            return exit_code, log.read()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        if self.server.poll() is None:
            self.server.stdin.close()
            self.server.wait(timeout=60)


def _serve() -> None:
    """Fork one run per request line on stdin; answer with its exit code on stdout."""
    for module in ("dexdb.cli.build", "dexdb.ingest.pipeline", "hats.io.validation"):
        if find_spec(module.split(".")[0]) is not None:  # hats is optional; the writer validates with it
            importlib.import_module(module)  # once here, inherited by every run

    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            point = None if request["point"] is None else KillPoint.parse(request["point"])
            _run_child(point, request["args"], request["log"])
        _, status = os.waitpid(pid, 0)
        print(json.dumps(os.waitstatus_to_exitcode(status)), flush=True)


def _run_child(point: KillPoint | None, cli_args: list[str], log: str) -> None:
    """``python -m dexdb.cli ARGS`` with the kill switch, output to ``log``; never returns."""
    exit_code = 1
    try:
        fd = os.open(log, os.O_WRONLY | os.O_TRUNC)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        sys.stdin.close()

        def observer(context: str, event: str, n: int, when: str) -> None:
            if KillPoint(context, event, n, when) == point:
                sys.stdout.flush()
                os.kill(os.getpid(), signal.SIGKILL)

        sys.argv = ["dexdb", *cli_args]
        with watching(observer):
            runpy.run_module("dexdb.cli", run_name="__main__", alter_sys=True)
        exit_code = 0
    except SystemExit as exc:
        exit_code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - the run's failure goes to its log, as the interpreter would print it
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exit_code)


def result_digest(rows: list[tuple]) -> str:
    """A digest of a query result that differs whenever a value does."""
    return hashlib.sha256(repr(rows).encode()).hexdigest()


def read_until_stopped(out_dir: str, stop_file: str, queries_file: str, results_file: str) -> None:
    """A reader: runs the queries of ``queries_file`` (JSON list of [sql, params]) in turn on
    ``connect(out_dir)``, with a new session every few rounds, until ``stop_file`` exists. Appends a line
    ``[query index, digest or "error: ...", version, version]`` to ``results_file`` per query, the version
    being the one the session reads (``versions/<id>``, pinned when it opened, whatever ``current`` does
    meanwhile)."""
    from dexdb.sqlload import connect

    queries = json.loads(Path(queries_file).read_text())
    with open(results_file, "a") as results:
        while not os.path.exists(stop_file):
            with connect(out_dir) as con:  # a new session now and then, as notebook kernels open them
                search_path = con.execute("SELECT current_setting('file_search_path')").fetchone()[0]
                version = f"versions/{Path(search_path).name}"
                for _ in range(3):
                    for index, (sql, params) in enumerate(queries):
                        try:
                            outcome = result_digest(con.execute(sql, params).fetchall())
                        except Exception as exc:  # noqa: BLE001 - every failure is reported to the test
                            outcome = f"error: {exc!r}"
                        results.write(json.dumps([index, outcome, version, version]) + "\n")
                        results.flush()
                        time.sleep(READER_PAUSE)


if __name__ == "__main__":
    if sys.argv[1:2] == ["read"]:
        read_until_stopped(*sys.argv[2:])
    else:
        _serve()
