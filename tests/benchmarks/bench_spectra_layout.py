"""Benchmark: HPSC2 spectra in the ``sources`` catalog, or in a sibling ``source_spectra`` catalog.

    python tests/benchmarks/bench_spectra_layout.py --pdr1 /data/mock-large --out /data/bench-layouts

* co-located: ``sources`` as dexdb writes it (scalars + ``spec``/``spec_err``, 1,024-row groups,
  256 MiB partitions);
* sibling: ``sources`` without spectra (65,536-row groups, 32 MiB partitions) and ``source_spectra``
  (source_id, RA, DEC, spec, spec_err; 1,024-row groups, 256 MiB partitions). Both are partitioned on
  RA/DEC, so every ``source_spectra`` partition lies inside one ``sources`` partition and a row keeps
  its ``_healpix_29``: a join by source_id is restricted by the same ``_healpix_29`` ranges on both sides.

Both layouts are written from the same rows (the first ``--batches`` converter batches if given) with
2 workers, the input files evicted from the page cache before each write; the scalar-only ``sources``
reads only the HPSC2 main table. One layout is on disk at a time: written, queried, deleted. Queries run in DuckDB (2 threads, 1 GB) over
``read_parquet(glob, hive_partitioning = true)`` views ``sources`` and ``spectra`` (the same catalog
when co-located). cold = first run on a new connection with every output file evicted from the page
cache (posix_fadvise DONTNEED); warm = median of the next ``--runs`` runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import itertools
import os
import resource
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dexdb.constants import N_WAVE
from dexdb.ingest.hats_layout import INDEX_FILE_NAME, CollectionLayout, partition_files
from dexdb.ingest.hats_sky import HEALPIX_ORDER, cone_pixels
from dexdb.ingest.hats_writer import CatalogSpec, write_catalog
from dexdb.ingest.hpsc2 import CATALOG_DIR, SOURCES, products

RESULTS = Path(__file__).with_name("RESULTS.md")
HEADING = "## Spectra: same catalog or sibling"
SPECTRA_COLUMNS = ("spec", "spec_err")
DUCKDB_CONFIG = {"threads": 2, "memory_limit": "1GB"}
CONES_ARCSEC = (3.0, 37.0, 1800.0)
N_RANDOM_IDS = 1000
LAE_STACK = "z_hetdex BETWEEN 2.0 AND 2.2 AND p_conf >= 0.5"
SCALAR_SCAN = "source_type = 'lae' AND p_conf >= 0.5 AND p_cnn >= 0.5"


def files_under(root: Path) -> list[Path]:
    return [p for p in Path(root).rglob("*") if p.is_file()]


def evict(paths) -> None:
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def sources_product(pdr1: Path):
    return next(p for p in products(pdr1) if p.name == SOURCES)


def scalar_only_tree(pdr1: Path, main_table: Path, root: Path) -> Path:
    """A PDR1 tree holding only a link to the HPSC2 main table: ``sources`` without spectra."""
    directory = root / CATALOG_DIR
    directory.mkdir(parents=True, exist_ok=True)
    (directory / main_table.name).symlink_to(main_table.resolve())
    return root


@dataclasses.dataclass
class Written:
    name: str
    seconds: float
    catalog_bytes: int  # the catalog's Parquet files
    total_bytes: int  # the collection: catalog, margin, indexes, metadata
    partitions: int
    row_group_rows: int
    rows: int


def write(batches, spec: CatalogSpec, out: Path, inputs: list[Path]) -> Written:
    evict(inputs)
    info = write_catalog(batches, spec, out, workers=2)
    size = lambda root: sum(p.stat().st_size for p in files_under(root))
    written = Written(spec.name, info.seconds, size(info.layout.catalog / "dataset"), size(info.layout.collection),
                      len(info.partitions), info.row_group_rows, info.rows)
    print(f"{out.name}/{spec.name}: {info.rows:,} rows, {written.partitions} partitions, {info.seconds:.1f} s, "
          f"{written.total_bytes / 1e9:.2f} GB, peak RSS {peak_rss_gib():.2f} GiB", flush=True)
    return written


@dataclasses.dataclass
class Layout:
    name: str
    sources: Path  # the collection holding the scalar columns
    spectra: Path  # the collection holding spec / spec_err (the same one when co-located)
    scalar_columns: list[str]

    @property
    def sibling(self) -> bool:
        return self.sources != self.spectra

    @property
    def index(self) -> Path:
        return CollectionLayout.read(self.spectra).indexes["source_id"] / "dataset" / INDEX_FILE_NAME

    def connect(self) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect(config=DUCKDB_CONFIG)
        for view, collection in (("sources", self.sources), ("spectra", self.spectra)):
            glob = CollectionLayout.read(collection).catalog / "dataset" / "Norder=*" / "Dir=*" / "Npix=*" / "*.parquet"
            con.execute(f"CREATE VIEW {view} AS SELECT * FROM read_parquet('{glob}', hive_partitioning = true)")
        return con


def as_numpy(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A list<float> column of spectra as an (n, N_WAVE) float32 array."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, N_WAVE)


def healpix_ranges(ra: float, dec: float, radius_arcsec: float) -> list[tuple[int, int]]:
    """Inclusive ``_healpix_29`` ranges covering a cone, from pixels ~1/4 of the radius."""
    order = int(np.clip(np.log2(np.sqrt(np.pi / 3) / np.radians(radius_arcsec / 3600)) + 2, 0, HEALPIX_ORDER))
    shift = 2 * (HEALPIX_ORDER - order)
    ranges: list[list[int]] = []
    for pixel in cone_pixels(order, ra, dec, radius_arcsec).tolist():
        if ranges and ranges[-1][1] == pixel << shift:
            ranges[-1][1] = (pixel + 1) << shift
        else:
            ranges.append([pixel << shift, (pixel + 1) << shift])
    return [(lo, hi - 1) for lo, hi in ranges]


def cone_filter(ra: float, dec: float, radius_arcsec: float) -> tuple[str, str]:
    """(``_healpix_29`` ranges, exact great-circle distance test) for a cone."""
    ranges = " OR ".join(f"_healpix_29 BETWEEN {lo} AND {hi}" for lo, hi in healpix_ranges(ra, dec, radius_arcsec))
    distance = (
        f"2 * asin(sqrt(pow(sin(radians(DEC - {dec}) / 2), 2) + cos(radians({dec})) * cos(radians(DEC))"
        f" * pow(sin(radians(RA - {ra}) / 2), 2))) <= radians({radius_arcsec} / 3600)"
    )
    return f"({ranges})", distance


Query = Callable[[duckdb.DuckDBPyConnection, Layout], tuple[int, float]]  # -> (rows, checksum)


def scalar_scan(con, layout: Layout):
    n, mean = con.execute(f"SELECT count(*), avg(flux) FROM sources WHERE {SCALAR_SCAN}").fetchone()
    return n, mean or 0.0


def cone(ra: float, dec: float, radius_arcsec: float, with_spectra: bool) -> Query:
    ranges, distance = cone_filter(ra, dec, radius_arcsec)

    def run(con, layout: Layout):
        columns = ", ".join(f'"{c}"' for c in layout.scalar_columns)
        if not with_spectra:
            sql = f"SELECT {columns} FROM sources WHERE {ranges} AND {distance}"
        elif not layout.sibling:
            sql = f"SELECT {columns}, spec, spec_err FROM sources WHERE {ranges} AND {distance}"
        else:
            sql = f"""SELECT c.*, p.spec, p.spec_err
                      FROM (SELECT {columns} FROM sources WHERE {ranges} AND {distance}) c
                      JOIN (SELECT source_id, spec, spec_err FROM spectra WHERE {ranges}) p USING (source_id)"""
        table = con.sql(sql).to_arrow_table()
        checksum = float(np.nansum(table["flux"].to_numpy()))
        if with_spectra:
            checksum += float(np.nansum(as_numpy(table["spec"]), dtype=np.float64))
        return table.num_rows, checksum

    return run


def partition_filter(con, layout: Layout, ids: str) -> str:
    """Look the ids up in the spectra catalog's source_id index: the partitions that hold them."""
    pairs = con.sql(f"SELECT DISTINCT Norder, Npix FROM read_parquet('{layout.index}') WHERE source_id IN ({ids})").fetchall()
    by_order = itertools.groupby(sorted(pairs), key=lambda pair: pair[0])
    return " OR ".join(f"(Norder = {o} AND Npix IN ({', '.join(str(p) for _, p in group)}))" for o, group in by_order)


def one_spectrum(source_id: int) -> Query:
    def run(con, layout: Layout):
        where = partition_filter(con, layout, str(source_id))
        table = con.sql(f"SELECT spec, spec_err FROM spectra WHERE ({where}) AND source_id = {source_id}").to_arrow_table()
        spec, err = as_numpy(table["spec"]), as_numpy(table["spec_err"])
        assert spec.shape == err.shape == (1, N_WAVE)
        return 1, float(np.nansum(spec, dtype=np.float64))

    return run


def many_spectra(source_ids: np.ndarray) -> Query:
    ids = ", ".join(str(i) for i in np.sort(source_ids))

    def run(con, layout: Layout):
        where = partition_filter(con, layout, ids)
        sql = f"SELECT source_id, spec FROM spectra WHERE ({where}) AND source_id IN ({ids}) ORDER BY source_id"
        spectra = as_numpy(con.sql(sql).to_arrow_table()["spec"])
        assert spectra.shape == (len(source_ids), N_WAVE)
        return len(spectra), float(np.nansum(spectra, dtype=np.float64))

    return run


def lae_stack(con, layout: Layout):
    """Inverse-variance weighted mean of the selected spectra, streamed a few thousand rows at a time."""
    if layout.sibling:
        sql = f"SELECT spec, spec_err FROM spectra WHERE source_id IN (SELECT source_id FROM sources WHERE {LAE_STACK})"
    else:
        sql = f"SELECT spec, spec_err FROM sources WHERE {LAE_STACK}"
    weighted, weights, rows = np.zeros(N_WAVE), np.zeros(N_WAVE), 0
    for batch in con.sql(sql).to_arrow_reader(4096):
        spec, err = as_numpy(batch.column("spec")), as_numpy(batch.column("spec_err"))
        good = np.isfinite(spec) & np.isfinite(err) & (err > 0)
        w = np.where(good, 1.0 / np.where(good, err, 1.0) ** 2, 0.0)
        weighted += (w * np.where(good, spec, 0.0)).sum(axis=0)
        weights += w.sum(axis=0)
        rows += len(spec)
    stack = weighted / np.where(weights > 0, weights, np.nan)
    return rows, float(np.nansum(stack))


def measure(layout: Layout, queries: list[tuple[str, Query]], runs: int) -> list[tuple[int, float, float, float]]:
    """Per query: (rows, checksum, cold seconds, median warm seconds)."""
    outputs = files_under(layout.sources) + (files_under(layout.spectra) if layout.sibling else [])
    cells = []
    for name, query in queries:
        evict(outputs)
        with layout.connect() as con:
            t0 = time.perf_counter()
            rows, checksum = query(con, layout)
            cold = time.perf_counter() - t0
            warm = []
            for _ in range(runs):
                t0 = time.perf_counter()
                assert query(con, layout)[0] == rows
                warm.append(time.perf_counter() - t0)
        cells.append((rows, checksum, cold, statistics.median(warm)))
        print(f"{layout.name}: {name}: {rows:,} rows, cold {seconds(cold)}, warm {seconds(cells[-1][3])}", flush=True)
    return cells


def seconds(s: float) -> str:
    return f"{s * 1e3:.0f} ms" if s < 1 else f"{s:.2f} s"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pdr1", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--scale", default="large", help="label for the results table")
    ap.add_argument("--batches", type=int, help="write only the first N converter batches (16,384 rows each)")
    ap.add_argument("--runs", type=int, default=5, help="warm runs per query")
    ap.add_argument("--scalar-row-group-rows", type=int, default=65_536)
    ap.add_argument("--scalar-partition-mib", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep the written layouts")
    ap.add_argument("--results", type=Path, default=RESULTS, help="markdown file the table is appended to")
    args = ap.parse_args()

    load = os.getloadavg()[0]
    product = sources_product(args.pdr1)
    main_table = next(p for p in product.inputs if "_spec_" not in p.name)
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    free = shutil.disk_usage(args.out).free
    fraction = 1.0 if args.batches is None else min(1.0, args.batches * 16_384 / product.expected_rows)
    if free < 2 * fraction * product.input_bytes:
        raise SystemExit(f"{free / 1e9:.0f} GB free under {args.out}: too little for 2 x the input, use --batches")

    def limit(batches):
        return batches if args.batches is None else itertools.islice(batches, args.batches)

    colo = write(limit(product.batches()), product.spec, args.out / "colocated", product.inputs)
    colo_catalog = args.out / "colocated" / SOURCES
    schema = pq.read_schema(CollectionLayout.read(colo_catalog).catalog / "dataset" / "_common_metadata")
    scalar_columns = [name for name in schema.names if name not in SPECTRA_COLUMNS]
    colo_layout = Layout("co-located", colo_catalog, colo_catalog, scalar_columns)

    with colo_layout.connect() as con:
        ids = con.sql("SELECT source_id, RA, DEC FROM sources ORDER BY source_id").to_arrow_table()
    rng = np.random.default_rng(args.seed)
    source_ids = ids["source_id"].to_numpy()
    centre = int(rng.integers(len(ids)))
    ra, dec = float(ids["RA"][centre].as_py()), float(ids["DEC"][centre].as_py())
    one_id = int(rng.choice(source_ids))
    random_ids = rng.choice(source_ids, size=min(N_RANDOM_IDS, len(source_ids)), replace=False)
    del ids, source_ids

    label = lambda r: f'{r:g}"' if r < 60 else f"{r / 3600:g} deg"
    queries: list[tuple[str, Query]] = [("scalar scan: count, avg(flux) of LAEs, p_conf, p_cnn >= 0.5", scalar_scan)]
    queries += [(f"cone {label(r)}, scalars", cone(ra, dec, r, False)) for r in CONES_ARCSEC]
    queries += [(f"cone {label(r)}, scalars + spectra", cone(ra, dec, r, True)) for r in CONES_ARCSEC]
    queries += [
        ("one spectrum by source_id (index, then its partition)", one_spectrum(one_id)),
        (f"{len(random_ids):,} random source_ids -> ({len(random_ids)}, {N_WAVE}) array", many_spectra(random_ids)),
        (f"LAE stack: spectra of {LAE_STACK}", lae_stack),
    ]
    colo_cells = measure(colo_layout, queries, args.runs)
    if not args.keep:
        shutil.rmtree(args.out / "colocated")

    scalar_product = sources_product(scalar_only_tree(args.pdr1, main_table, args.out / "scalar-pdr1"))
    scalar_spec = dataclasses.replace(product.spec, row_group_rows=args.scalar_row_group_rows,
                                      partition_bytes=args.scalar_partition_mib << 20)
    sib_scalars = write(limit(scalar_product.batches()), scalar_spec, args.out / "sibling", [main_table])
    spectra_spec = dataclasses.replace(product.spec, name="source_spectra", id_columns=("source_id",))
    keep = ["source_id", "RA", "DEC", *SPECTRA_COLUMNS]
    sib_spectra = write((b.select(keep) for b in limit(product.batches())), spectra_spec, args.out / "sibling",
                        product.inputs)
    write_rss = peak_rss_gib()
    assert colo.rows == sib_scalars.rows == sib_spectra.rows
    sib_layout = Layout("sibling", args.out / "sibling" / SOURCES, args.out / "sibling" / "source_spectra", scalar_columns)
    scalar_parts = {(p.order, p.pixel) for p in partition_files(sib_layout.sources)}
    nested = all(any((o - k, p >> 2 * k) in scalar_parts for k in range(o + 1))
                 for o, p in ((q.order, q.pixel) for q in partition_files(sib_layout.spectra)))
    sib_cells = measure(sib_layout, queries, args.runs)
    for (name, _), (n0, c0, *_), (n1, c1, *_) in zip(queries, colo_cells, sib_cells):
        if n0 != n1 or not np.isclose(c0, c1, rtol=1e-5):
            raise RuntimeError(f"{name}: co-located gives {n0} rows ({c0}), sibling {n1} rows ({c1})")

    gb = lambda b: f"{b / 1e9:.2f} GB" if b >= 1e8 else f"{b / 1e6:.1f} MB"
    lines = [
        "",
        f"### mock `{args.scale}`, {datetime.date.today()}: {colo.rows:,} sources"
        + ("" if args.batches is None else f" (the first {args.batches} batches)"),
        "",
        "| layout | catalog | row groups | partitions | write time | catalog Parquet | with margin + indexes |",
        "|---|---|---|---|---|---|---|",
    ]
    for layout, catalogs in (("co-located", [colo]), ("sibling", [sib_scalars, sib_spectra])):
        for w in catalogs:
            lines.append(f"| {layout} | {w.name} | {w.row_group_rows:,} rows | {w.partitions} | {w.seconds:.1f} s | "
                         f"{gb(w.catalog_bytes)} | {gb(w.total_bytes)} |")
    sib = (sib_scalars, sib_spectra)
    lines += [
        (f"| **sibling total** | | | | **{sum(w.seconds for w in sib):.1f} s** | {gb(sum(w.catalog_bytes for w in sib))} "
        f"| {gb(sum(w.total_bytes for w in sib))} |"),
        "",
        (f"Queries (DuckDB {duckdb.__version__}, {DUCKDB_CONFIG['threads']} threads, {DUCKDB_CONFIG['memory_limit']}; "
        f"cones around RA {ra:.5f}, Dec {dec:.5f}); one layout on disk at a time; cold = new connection, "
        f"files evicted from the page cache; warm = median of {args.runs}; 1-min load average {load:.1f} at the start:"),
        "",
        "| query | rows | co-located cold | co-located warm | sibling cold | sibling warm | sibling / co-located (warm) |",
        "|---|---|---|---|---|---|---|",
    ]
    for (name, _), (n, _, c_cold, c_warm), (_, _, s_cold, s_warm) in zip(queries, colo_cells, sib_cells):
        lines.append(f"| {name} | {n:,} | {seconds(c_cold)} | {seconds(c_warm)} | {seconds(s_cold)} | "
                     f"{seconds(s_warm)} | {s_warm / c_warm:.2f} |")
    lines += [
        "",
        (f"Sibling: scalar `sources` in {args.scalar_partition_mib} MiB partitions; every `source_spectra` partition "
        f"lies inside one `sources` partition: {'yes' if nested else 'NO'}. Peak RSS of the benchmark process "
        f"{peak_rss_gib():.2f} GiB ({write_rss:.2f} GiB by the end of the writes)."),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    existing = args.results.read_text() if args.results.exists() else ""
    with args.results.open("a") as fh:
        fh.write(text if HEADING in existing else f"\n{HEADING}\n{text}")
    if not args.keep:
        shutil.rmtree(args.out)


if __name__ == "__main__":
    main()
