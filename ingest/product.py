"""What every converter hands the ingest pipeline: a product, its source files, its batches.

A converter module (one per source file kind) exposes ``products(pdr1_dir) -> list[Product]``,
returning only the products whose files are present. Reading is deferred to ``batches()`` so
the pipeline decides when (and whether) to stream each product.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from dexdb.ingest.hats_writer import CatalogSpec


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
