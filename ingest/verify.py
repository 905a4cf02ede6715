"""``dexdb verify``: is a published ingest intact, and does it still match its source files?"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from dexdb.ingest.hats_layout import CollectionLayout, partition_files
from dexdb.ingest.hpsc2 import SOURCES
from dexdb.ingest.pipeline import MANIFEST, discover
from dexdb.ingest.product import IngestError, sha256_of
from dexdb.ingest.source_groups import GROUPS, MEMBERS


def verify(out_dir: str | Path, pdr1_dir: str | Path | None = None) -> list[str]:
    """Problems found (empty when all is well): missing or altered files, row counts, HATS validity."""
    out_dir = Path(out_dir)
    current = out_dir / "current"
    if not (current / MANIFEST).is_file():
        return [f"{out_dir}: no published ingest (missing current/{MANIFEST})"]
    manifest = json.loads((current / MANIFEST).read_text())
    problems: list[str] = []
    for name, entry in sorted(manifest["products"].items()):
        collection = current / name
        if not (collection / "collection.properties").is_file():
            problems.append(f"{name}: catalog missing at {collection}")
            continue
        altered = _altered_files(name, current, entry.get("other_files", {}))
        if altered:  # the readers below would fail on them, or trust them
            problems += altered
            continue
        try:
            problems += _catalog_problems(name, entry, current, collection)
        except Exception as exc:  # a damaged file that no checksum covers: report it, do not crash
            problems.append(f"{name}: unreadable ({type(exc).__name__}: {exc})")
    for name, entry in sorted(manifest.get("tables", {}).items()):
        problems += _altered_files(name, current, entry["files"])
    if pdr1_dir is not None:
        problems += _source_problems(manifest, Path(pdr1_dir))
    return problems


def _altered_files(name: str, current: Path, files: dict[str, str]) -> list[str]:
    problems = []
    for rel, digest in sorted(files.items()):
        path = current / rel
        if not path.is_file():
            problems.append(f"{name}: file {rel} is missing")
        elif sha256_of(path) != digest:
            problems.append(f"{name}: file {rel} has changed (checksum mismatch)")
    return problems


def _catalog_problems(name: str, entry: dict, current: Path, collection: Path) -> list[str]:
    problems = []
    listed = {str(f.path.relative_to(current)) for f in partition_files(collection)}
    for rel in sorted(set(entry["files"]) - listed):
        problems.append(f"{name}: partition {rel} is recorded in the manifest but not in partition_info.csv")
    rows = 0
    for rel, digest in sorted(entry["files"].items()):
        path = current / rel
        if not path.is_file():
            problems.append(f"{name}: partition file {rel} is missing")
            continue
        if sha256_of(path) != digest:
            problems.append(f"{name}: partition file {rel} has changed (checksum mismatch)")
            continue
        rows += pq.ParquetFile(path).metadata.num_rows
    if rows != entry["rows"] and not problems:
        problems.append(f"{name}: {rows} rows on disk, {entry['rows']} recorded")
    problems += _hats_problems(name, collection)
    return problems


def _hats_problems(name: str, collection: Path) -> list[str]:
    try:
        from hats.io.validation import is_valid_catalog
    except ImportError:  # hats is optional at run time; the checksums above still apply
        return []
    catalog = CollectionLayout.read(collection).catalog
    return [] if is_valid_catalog(catalog, strict=True) else [f"{name}: not a valid HATS catalog ({catalog})"]


def _source_problems(manifest: dict, pdr1_dir: Path) -> list[str]:
    problems = []
    try:
        products = {p.name: p for p in discover(pdr1_dir)}
    except IngestError as exc:
        return [str(exc)]
    entries = manifest["products"]
    for name, entry in sorted(entries.items()):
        if entry.get("derived_from"):  # computed by dexdb classify, not read from the release
            continue
        if name in (GROUPS, MEMBERS):  # derived from sources, not read from the release
            if name == MEMBERS and SOURCES in entries and entry["rows"] != entries[SOURCES]["rows"]:
                problems.append(f"{name}: {entry['rows']} rows, but sources has {entries[SOURCES]['rows']}")
            continue
        product = products.get(name)
        if product is None:
            problems.append(f"{name}: its source files are no longer in {pdr1_dir}")
        elif product.expected_rows != entry["rows"]:
            problems.append(f"{name}: source has {product.expected_rows} rows, catalog has {entry['rows']}")
    return problems
