"""What every converter hands the ingest pipeline: a product, its source files, its batches.

A converter module (one per source file kind) exposes ``products(pdr1_dir) -> list[Product]``,
returning only the products whose files are present. Reading is deferred to ``batches()`` so
the pipeline decides when (and whether) to stream each product. Every catalog's key-value metadata
comes from :func:`catalog_metadata`: units, notes and the provenance of its source files.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from dexdb.ingest.hats_writer import CatalogSpec

#: Input files up to this size are hashed (sha256) into the catalog metadata when a catalog is
#: written; larger ones (the ~10 GB HPSC2 spectra file, the detection databases: 1.7 TB in all) are
#: recorded by size and mtime, since hashing them would take hours.
HASH_MAX_BYTES = 2 << 30


class IngestError(Exception):
    """Bad input: names the file, the product, where (row/column) and what is wrong."""

    def __init__(self, path: str | Path, product: str, problem: str, *, where: str | None = None):
        self.path, self.product, self.problem, self.where = str(path), product, problem, where
        location = f" ({where})" if where else ""
        super().__init__(f"{path}: {product}{location}: {problem}")


@dataclass
class Product:
    """One output catalog and how to produce it."""

    spec: CatalogSpec
    inputs: list[Path]  # source files, for provenance and verification
    batches: Callable[[], Iterator[pa.RecordBatch]]
    expected_rows: int
    input_bytes: int = 0
    notes: list[str] = field(default_factory=list)  # conventions a reader should know

    @property
    def name(self) -> str:
        return self.spec.name


def sha256_of(path: Path, chunk: int = 16 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@functools.cache
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    """Keyed by size and mtime too, so that the catalogs of one run hash each file once."""
    return sha256_of(path)


def _sha256_json(files: tuple[tuple[str, Path], ...]) -> str:
    digests = {}
    for name, path in files:
        stat = path.stat()
        digests[name] = _sha256(path, stat.st_size, stat.st_mtime_ns)
    return json.dumps(digests)


class CatalogMetadata(Mapping[str, str]):
    """Catalog key-value metadata whose ``sha256`` entry is computed on first access: ``products()``
    stays cheap and input files are hashed only when a catalog is actually written. Holds only plain
    data, so it pickles."""

    def __init__(self, entries: Mapping[str, str], hashed: tuple[tuple[str, Path], ...]):
        self._entries = dict(entries)
        self._hashed = hashed
        self._sha256: str | None = None

    def __getitem__(self, key: str) -> str:
        if key != "sha256":
            return self._entries[key]
        if self._sha256 is None:
            self._sha256 = _sha256_json(self._hashed)
        return self._sha256

    def __iter__(self) -> Iterator[str]:
        yield from self._entries
        yield "sha256"

    def __len__(self) -> int:
        return len(self._entries) + 1


def catalog_metadata(
    root: Path,
    files: Sequence[Path],
    units: Mapping[str, str],
    notes: Sequence[str],
    *,
    hash_max_bytes: int = HASH_MAX_BYTES,
    **extra: str,
) -> CatalogMetadata:
    """``units`` (JSON column -> unit), ``notes`` (JSON list), ``source_files`` (JSON list of ``files``
    relative to the release ``root``), ``sha256`` (JSON name -> digest of the files of at most
    ``hash_max_bytes``, deferred), ``unhashed_files`` (JSON name -> bytes and UTC mtime of the larger
    ones; only if there are any) and the ``extra`` entries."""
    names = [path.relative_to(root).as_posix() for path in files]
    hashed, unhashed = [], {}
    for name, path in zip(names, files, strict=True):
        stat = path.stat()
        if stat.st_size <= hash_max_bytes:
            hashed.append((name, path))
        else:
            mtime = datetime.fromtimestamp(stat.st_mtime, UTC).isoformat(timespec="seconds")
            unhashed[name] = {"bytes": stat.st_size, "mtime": mtime}
    entries = {
        "units": json.dumps(dict(units)),
        "notes": json.dumps(list(notes)),
        "source_files": json.dumps(names),
        **({"unhashed_files": json.dumps(unhashed)} if unhashed else {}),
        **extra,
    }
    return CatalogMetadata(entries, tuple(hashed))
