"""``dexdb ingest``: every converter's products through the partitioned writer, published as one version.

Layout of OUT_DIR::

    OUT/versions/<version>/<catalog>/...   HATS collections of one ingest (see hats_layout)
    OUT/versions/<version>/manifest.json   rows, files and their sha256, provenance, notes
    OUT/current -> versions/<version>      switched atomically when a version is complete
    OUT/<catalog> -> current/<catalog>     stable paths for users, DuckDB and LSDB

The version id is a digest of the input files' names, sizes and mtimes and of the dexdb version, so
running the same command again on the same input resumes: products already written into that
version are kept, the rest are written, and ``current`` moves only once all are there. A failed or
killed run never moves ``current``: readers keep seeing the previous complete version.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dexdb
from dexdb.ingest import detect, detect_index, hpsc2, ifu_index, source_groups
from dexdb.ingest.hats_layout import CollectionLayout, partition_files
from dexdb.ingest.hats_writer import write_catalog
from dexdb.ingest.product import IngestError, Product, sha256_of
from dexdb.lines.table import LINE_TABLE, write_line_table
from dexdb.sqlload import write_entry_point

CONVERTERS = (ifu_index, hpsc2, detect, detect_index)
ALL_PRODUCTS = ("ifu_index", "sources", "source_spectra", "detinfo", "detections", "detection_spectra", "fibers",
                "detect_index")
MANIFEST = "manifest.json"


@dataclass
class ProductResult:
    name: str
    rows: int
    input_bytes: int
    seconds: float
    skipped: bool = False  # already complete in this version (resumed run)


@dataclass
class IngestReport:
    version: str
    out_dir: Path
    products: list[ProductResult] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    seconds: float = 0.0


def discover(pdr1_dir: Path) -> list[Product]:
    if not pdr1_dir.is_dir():
        raise IngestError(pdr1_dir, "release", "not a directory")
    found: list[Product] = []
    for converter in CONVERTERS:
        found.extend(converter.products(pdr1_dir))
    return found


def version_id(products: list[Product]) -> str:
    h = hashlib.sha256(f"dexdb {dexdb.__version__}".encode())
    for product in sorted(products, key=lambda p: p.name):
        h.update(product.name.encode())
        for path in product.inputs:
            st = path.stat()
            h.update(f"{path.name} {st.st_size} {st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def ingest(pdr1_dir: str | os.PathLike, out_dir: str | os.PathLike, *, workers: int = 2, progress: bool = False,
           log: Callable[[str], None] = print) -> IngestReport:
    started = time.perf_counter()
    pdr1_dir, out_dir = Path(pdr1_dir).absolute(), Path(out_dir).absolute()
    products = discover(pdr1_dir)
    if not products:
        raise IngestError(pdr1_dir, "release", "no PDR1 product found (expected ifu-index.fits, "
                          "hetdex_source_catalog_2/, detect/)")
    report = IngestReport(version_id(products), out_dir)
    report.missing = [name for name in ALL_PRODUCTS if name not in {p.name for p in products}]
    for name in report.missing:
        log(f"missing: {name} (its source files are not in {pdr1_dir}); ingesting the rest")

    version_dir = out_dir / "versions" / report.version
    version_dir.mkdir(parents=True, exist_ok=True)
    for product in products:
        _write_product(product, version_dir, report, workers, progress, log)
    if any(product.name == hpsc2.SOURCES for product in products):
        # Derived from the written sources catalog, so written after it.
        derived = source_groups.products_from_sources(version_dir / hpsc2.SOURCES)
        for product in derived:
            _write_product(product, version_dir, report, workers, progress, log)
        products = [*products, *derived]

    # The line table travels with the catalogs so that SQL's line_hypotheses works from the start.
    tables = {LINE_TABLE: write_line_table(version_dir)}
    _write_manifest(version_dir, products, report, tables)
    names = [p.name for p in products] + list(tables)
    write_entry_point(out_dir, names)
    _publish(out_dir, report.version, names)
    report.seconds = time.perf_counter() - started
    return report


def _write_product(product: Product, version_dir: Path, report: IngestReport, workers: int, progress: bool,
                   log: Callable[[str], None]) -> None:
    """Write one catalog into the version, or keep it when an earlier run completed it."""
    t0 = time.perf_counter()
    if (version_dir / product.name / "collection.properties").exists():
        rows = sum(_rows_of(f.path) for f in partition_files(version_dir / product.name))
        report.products.append(ProductResult(product.name, rows, product.input_bytes, 0.0, skipped=True))
        log(f"{product.name}: already complete in version {report.version}")
        return
    log(f"{product.name}: from {', '.join(p.name for p in product.inputs)}")
    try:
        info = write_catalog(product.batches(), product.spec, version_dir, workers=workers, progress=progress)
    except OSError as exc:  # e.g. a full disk under OUT: one line naming the catalog, not a traceback
        raise IngestError(version_dir / product.name, product.name, f"failed while building the catalog: {exc}") from exc
    if info.rows != product.expected_rows:
        shutil.rmtree(version_dir / product.name, ignore_errors=True)
        raise IngestError(product.inputs[0], product.name,
                          f"wrote {info.rows} rows but the source has {product.expected_rows}")
    seconds = time.perf_counter() - t0
    report.products.append(ProductResult(product.name, info.rows, product.input_bytes, seconds))
    log(f"{product.name}: {info.rows:,} rows in {len(info.partitions)} partitions, {seconds:.1f} s")


def _rows_of(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def _write_manifest(version_dir: Path, products: list[Product], report: IngestReport,
                    tables: dict[str, dict]) -> None:
    entries = {}
    for product in products:
        layout = CollectionLayout.read(version_dir / product.name)
        files = {
            str(f.path.relative_to(version_dir)): sha256_of(f.path) for f in partition_files(layout.collection)
        }
        # Everything else a reader relies on: properties, partition tables, metadata, margins, indexes.
        others = sorted(f for f in layout.collection.rglob("*") if f.is_file()
                        and str(f.relative_to(version_dir)) not in files)
        entries[product.name] = {
            "rows": sum(r.rows for r in report.products if r.name == product.name),
            "inputs": [str(p) for p in product.inputs],
            "files": files,
            "other_files": {str(f.relative_to(version_dir)): sha256_of(f) for f in others},
            "notes": product.notes,
        }
    manifest = {"dexdb": dexdb.__version__, "version": report.version, "products": entries, "tables": tables,
                "missing": report.missing}
    tmp = version_dir / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(tmp, version_dir / MANIFEST)


def _publish(out_dir: Path, version: str, names: list[str]) -> None:
    """Point ``current`` at the new version in one rename; keep the previous version for readers
    that opened it before the switch; drop older ones."""
    current = out_dir / "current"
    previous = os.readlink(current) if current.is_symlink() else None
    tmp = out_dir / ".current.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(Path("versions") / version)
    os.replace(tmp, current)
    for name in names:
        link = out_dir / name
        if not link.is_symlink():
            link.symlink_to(Path("current") / name)
    if previous is not None and Path(previous).name == version:
        # A re-run after this version was switched to: the version before it, which readers may
        # still use, is not known here, so nothing is dropped.
        return
    keep = {version, Path(previous).name if previous else None}
    for old in (out_dir / "versions").iterdir():
        if old.name not in keep:
            shutil.rmtree(old, ignore_errors=True)


def publish_derived(out_dir: str | os.PathLike, names: list[str], label: str,
                    write: Callable[[Path], dict[str, dict[str, dict]]], log: Callable[[str], None] = print) -> str:
    """Publish a new version of OUT: the current version's files, hard-linked, plus the entries ``names``
    that ``write`` computes from them (derived catalogs and tables such as ``dexdb classify``'s); returns
    the new version id.

    ``write(staged_dir)`` writes each name of ``names`` into ``staged_dir`` and returns their manifest
    entries by section: ``{"products": {name: entry}}`` for HATS collections (checked by ``dexdb
    verify``), ``{"tables": {name: entry}}`` for plain tables. An entry of the current version with one
    of those names is replaced. The version is built in ``OUT/.<version>.staging`` (outside ``versions/``,
    which a concurrent publish prunes), renamed into ``versions/`` when complete, then switched to as the
    ingest does (:func:`_publish`), with ``OUT/dexdb.sql`` rewritten first: the published version's files
    are never written. Its id is a digest of the base version, ``label`` and the dexdb version. One
    publisher at a time: a lock file ``OUT/.publish.lock`` serialises them.
    """
    import fcntl

    out_dir = Path(out_dir).absolute()
    current = out_dir / "current"
    if not (current / MANIFEST).is_file():
        raise IngestError(out_dir, "catalogs", f"no published version (missing current/{MANIFEST}); run dexdb ingest first")
    with open(out_dir / ".publish.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        base = Path(os.readlink(current)).name
        base_dir = out_dir / "versions" / base
        version = hashlib.sha256(f"{base}\n{label}\ndexdb {dexdb.__version__}".encode()).hexdigest()[:16]
        staged, final = out_dir / f".{version}.staging", out_dir / "versions" / version
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir()
        try:
            for entry in base_dir.iterdir():
                if entry.name in names or entry.name == MANIFEST:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.copytree(entry, staged / entry.name, symlinks=True, copy_function=os.link)
                else:
                    os.link(entry, staged / entry.name, follow_symlinks=False)
            written = write(staged)
            manifest = json.loads((base_dir / MANIFEST).read_text())
            for section in ("products", "tables"):
                kept = {k: v for k, v in manifest.get(section, {}).items() if k not in names}
                manifest[section] = kept | written.get(section, {})
            manifest.update(version=version, derived_from_version=base)
            (staged / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
            shutil.rmtree(final, ignore_errors=True)  # a complete attempt that was never switched to
            os.rename(staged, final)
        finally:
            shutil.rmtree(staged, ignore_errors=True)
        catalogs = sorted(p.name for p in final.iterdir() if p.is_dir())
        write_entry_point(out_dir, catalogs)
        _publish(out_dir, version, catalogs)
    log(f"published version {version} (from {base}) in {out_dir}")
    return version
