"""Benchmark: ``dexdb ingest`` per product against a raw baseline measured in the same run.

    python tests/benchmarks/bench_ingest.py --pdr1 /data/mock-large --out /data/bench-catalogs

Baseline, per product: read the same source tables in chunks (PyTables for HDF5, memory-mapped
astropy for FITS), turn each chunk into Arrow and write one Parquet file with pyarrow (zstd +
byte-stream-split on floats, as dexdb does) with no partitioning, sorting, margins or indexes.
Throughput is the product's input bytes over wall time for both, so the ratio is a time ratio.
Peak memory of the ingest is sampled over its whole process tree.
"""

from __future__ import annotations

import argparse
import datetime
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import tables
from astropy.io import fits

RESULTS = Path(__file__).with_name("RESULTS.md")
H5_TABLES = {"detections": "Detections", "detection_spectra": "Spectra", "fibers": "Fibers"}
H5_CHUNK_BYTES = 64 << 20
REAL_RELEASE_BYTES = 1.7e12 + 11e9  # raw detection databases + HPSC2


def arrow_table(records: np.ndarray) -> pa.Table:
    """A structured numpy chunk as Arrow: sub-arrays as fixed-size lists, bytes as binary."""
    columns = {}
    for name in records.dtype.names:
        values = np.ascontiguousarray(records[name])
        if values.ndim == 2:
            columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), values.shape[1])
        else:
            columns[name] = pa.array(values.byteswap().view(values.dtype.newbyteorder()) if values.dtype.byteorder == ">" else values)
    return pa.table(columns)


def parquet_writer(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    floats = [f.name for f in schema if pa.types.is_floating(f.type)
              or (pa.types.is_fixed_size_list(f.type) and pa.types.is_floating(f.type.value_type))]
    return pq.ParquetWriter(path, schema, compression="zstd", use_byte_stream_split=floats,
                            use_dictionary=[f.name for f in schema if f.name not in floats])


def baseline_h5(files: list[Path], node: str, out: Path) -> None:
    """One Parquet file per source file (line and continuum tables differ in columns)."""
    for path in files:
        writer = None
        with tables.open_file(path) as h5:
            table = h5.get_node("/", node)
            step = max(1, H5_CHUNK_BYTES // table.rowsize)
            for start in range(0, table.nrows, step):
                chunk = arrow_table(table.read(start, min(start + step, table.nrows)))
                writer = writer or parquet_writer(out.with_name(f"{out.stem}-{path.stem}.parquet"), chunk.schema)
                writer.write_table(chunk)
        if writer:
            writer.close()


def baseline_fits_table(path: Path, out: Path, hdu: int = 1, step: int = 65536) -> None:
    with fits.open(path, memmap=True) as hdul:
        data = hdul[hdu].data
        writer = None
        for start in range(0, len(data), step):
            chunk = arrow_table(np.asarray(data[start : start + step]))
            writer = writer or parquet_writer(out, chunk.schema)
            writer.write_table(chunk)
        writer.close()


def baseline_sources(main: Path, spec: Path, out: Path, step: int = 16384) -> None:
    with fits.open(main, memmap=True) as m, fits.open(spec, memmap=True) as s:
        data, flux, err = m[1].data, s["SPEC"].data, s["SPEC_ERR"].data
        writer = None
        for start in range(0, len(data), step):
            stop = min(start + step, len(data))
            chunk = arrow_table(np.asarray(data[start:stop]))
            for name, image in (("spec", flux), ("spec_err", err)):
                block = np.ascontiguousarray(image[:, start:stop].T).astype(np.float32)
                chunk = chunk.append_column(name, pa.FixedSizeListArray.from_arrays(pa.array(block.ravel()), 1036))
            writer = writer or parquet_writer(out, chunk.schema)
            writer.write_table(chunk)
        writer.close()


def run_baselines(pdr1: Path, scratch: Path) -> tuple[dict[str, float], dict[str, int]]:
    detect = [pdr1 / "detect" / f"{kind}_hdr{n}.h5" for n in (3, 4, 5) for kind in ("detect", "cont")]
    hpsc2 = pdr1 / "hetdex_source_catalog_2"
    jobs = {name: (lambda node=node, name=name: baseline_h5(detect, node, scratch / f"{name}.parquet"))
            for name, node in H5_TABLES.items()}
    jobs["detect_index"] = lambda: baseline_h5([pdr1 / "detect/detect_index_hdr5.h5"], "DetectIndex", scratch / "di.parquet")
    jobs["ifu_index"] = lambda: baseline_fits_table(pdr1 / "ifu-index.fits", scratch / "ifu.parquet")
    jobs["detinfo"] = lambda: baseline_fits_table(next(hpsc2.glob("hetdex_sc2_detinfo_v*.fits")), scratch / "detinfo.parquet")
    main_table = next(hpsc2.glob("hetdex_sc2_v*.fits"))
    jobs["sources"] = lambda: baseline_fits_table(main_table, scratch / "src.parquet")
    jobs["source_spectra"] = lambda: baseline_sources(main_table, next(hpsc2.glob("hetdex_sc2_spec_v*.fits")),
                                                      scratch / "spec.parquet")
    seconds, sizes = {}, {}
    for name, job in jobs.items():
        t0 = time.perf_counter()
        job()
        seconds[name] = time.perf_counter() - t0
        written = list(scratch.iterdir())
        sizes[name] = sum(p.stat().st_size for p in written)
        for p in written:  # keep the disk footprint to one product at a time
            p.unlink()
        print(f"baseline {name}: {seconds[name]:.1f} s", flush=True)
    return seconds, sizes


def run_ingest(pdr1: Path, out: Path) -> tuple[dict[str, float], float, int, int]:
    cmd = [sys.executable, "-m", "dexdb.cli", "ingest", str(pdr1), str(out), "--no-progress"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    ps = psutil.Process(proc.pid)
    peak_single = peak_sum = 0
    seconds: dict[str, float] = {}

    def sample():
        nonlocal peak_single, peak_sum
        while proc.poll() is None:
            rss = []
            for p in [ps] + ps.children(recursive=True):
                try:
                    rss.append(p.memory_info().rss)
                except psutil.Error:
                    pass
            peak_single, peak_sum = max(peak_single, max(rss, default=0)), max(peak_sum, sum(rss))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for line in proc.stdout:
        print(line, end="", flush=True)
        m = re.match(r"(\w+): [\d,]+ rows in \d+ partitions, ([\d.]+) s", line)
        if m:
            seconds[m.group(1)] = float(m.group(2))
    proc.wait()
    sampler.join()
    if proc.returncode:
        sys.exit(f"dexdb ingest failed with exit status {proc.returncode}")
    return seconds, time.perf_counter() - t0, peak_single, peak_sum


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pdr1", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--scale", default="large", help="label for the results table")
    ap.add_argument("--keep", action="store_true", help="keep the catalogs for later benchmarks")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from dexdb.ingest.pipeline import discover

    products = {p.name: p for p in discover(args.pdr1)}
    # Baselines first: they leave nothing on disk, the ingest's output may be kept.
    scratch = args.out.parent / f".{args.out.name}.baseline"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        base, base_bytes = run_baselines(args.pdr1, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    shutil.rmtree(args.out, ignore_errors=True)
    seconds, total, peak_single, peak_sum = run_ingest(args.pdr1, args.out)
    out_bytes = {name: sum(f.stat().st_size for f in (args.out / "current" / name).rglob("*.parquet"))
                 for name in products}
    if not args.keep:
        shutil.rmtree(args.out)

    today = datetime.date.today()
    lines = [
        "",
        f"### Ingest, mock `{args.scale}`, {today}",
        "",
        "| product | input | dexdb | baseline | dexdb / baseline | output (catalog + margin + index) | output / input |",
        "|---|---|---|---|---|---|---|",
    ]
    total_in = 0
    for name, product in products.items():
        mb = product.input_bytes / 1e6
        total_in += product.input_bytes
        d, b = seconds.get(name, float("nan")), base[name]
        lines.append(
            f"| {name} | {mb:,.0f} MB | {mb / d:,.0f} MB/s | {mb / b:,.0f} MB/s | {b / d:.2f} | "
            f"{out_bytes[name] / 1e6:,.0f} MB | {out_bytes[name] / product.input_bytes:.2f} |"
        )
    rate = total_in / total
    lines += [
        "",
        f"Whole ingest: {total_in / 1e9:.1f} GB in {total:.0f} s = {rate / 1e6:.0f} MB/s with 2 workers; "
        f"peak RSS {peak_single / 2**30:.2f} GiB in one process ({peak_sum / 2**30:.2f} GiB summed over processes).",
        f"Extrapolated to the real release (1.7 TB detections + 11 GB HPSC2) on this machine: "
        f"{REAL_RELEASE_BYTES / rate / 3600:.1f} h; per core {REAL_RELEASE_BYTES / rate * 2 / 3600:.1f} core-hours.",
        f"(baseline Parquet sizes: {', '.join(f'{k} {v / 1e6:,.0f} MB' for k, v in sorted(base_bytes.items()))})",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    with RESULTS.open("a") as fh:
        fh.write(text)


if __name__ == "__main__":
    main()
