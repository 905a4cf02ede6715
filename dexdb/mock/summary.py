"""A readable account of a PDR1 tree: files, sizes and row counts as a reader sees them."""

from __future__ import annotations

from pathlib import Path

import tables
from astropy.io import fits


def _rows_of(path: Path) -> str:
    if path.suffix == ".h5":
        with tables.open_file(path) as h5:
            return ", ".join(f"{node._v_name} {node.nrows:,}" for node in h5.root._f_iter_nodes("Table"))
    if path.suffix == ".fits":
        with fits.open(path) as hdul:
            parts = []
            for hdu in hdul[1:]:
                if isinstance(hdu, fits.BinTableHDU):
                    parts.append(f"{hdu.name or 'table'} {hdu.header['NAXIS2']:,} rows")
                elif hdu.header.get("NAXIS", 0) and "ZNAXIS" not in hdu.header:
                    shape = tuple(hdu.header[f"NAXIS{k}"] for k in range(hdu.header["NAXIS"], 0, -1))
                    parts.append(f"{hdu.name} {shape}")
            return ", ".join(parts)
    if path.suffix == ".txt":
        return f"{sum(1 for _ in path.open()):,} lines"
    return ""


def summarize(root: str | Path) -> str:
    root = Path(root)
    lines = [f"PDR1 tree at {root}"]
    total = 0
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "datacubes" not in p.parts):
        size = path.stat().st_size
        total += size
        lines.append(f"  {str(path.relative_to(root)):<55} {size / 1e6:9.1f} MB  {_rows_of(path)}")
    cubes = sorted((root / "datacubes").glob("*/*.fits"))
    cube_bytes = sum(p.stat().st_size for p in cubes)
    total += cube_bytes
    lines.append(f"  datacubes/<shotid>/dex_cube_<shotid>_<ifuslot>.fits  {len(cubes)} cubes, {cube_bytes / 1e6:.1f} MB")
    lines.append(f"  total {total / 1e9:.2f} GB")
    return "\n".join(lines)
