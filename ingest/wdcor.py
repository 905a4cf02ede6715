"""``detect/wdcor.txt``: the PDR1 spectral calibration correction (data model section 4).

1036 lines ``<wavelength> <factor>`` on the grid 3470, 3472, ..., 5540 Angstrom; calibrated values are
``raw / factor``, per pixel for spectra and interpolated linearly at ``wave`` for line quantities.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from dexdb.constants import N_WAVE, WAVE_START, WAVE_STEP
from dexdb.ingest.product import IngestError

#: float64 copy of the grid: the factors are interpolated in float64.
GRID = WAVE_START + WAVE_STEP * np.arange(N_WAVE, dtype=np.float64)


def read_wdcor(path: Path, product: str) -> np.ndarray:
    """The factors of ``path`` as float64, shape (1036,); any deviation from the format is an
    :class:`IngestError` naming ``product`` (the catalog that needed the file) and the line."""
    path = Path(path)
    if not path.is_file():
        raise IngestError(path, product, "not a regular file")
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise IngestError(path, product, f"unreadable: {exc}") from exc
    rows = [(number, line.split()) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if len(rows) != N_WAVE:
        raise IngestError(path, product, f"{len(rows)} data lines, expected {N_WAVE} (one per pixel)")
    factors = np.empty(N_WAVE)
    for k, (number, fields) in enumerate(rows):
        where = f"line {number}"
        if len(fields) != 2:
            raise IngestError(
                path, product, f"expected 2 fields '<wavelength> <factor>', found {len(fields)}", where=where
            )
        try:
            wave, factor = float(fields[0]), float(fields[1])
        except ValueError as exc:
            raise IngestError(path, product, f"not a number: {exc}", where=where) from exc
        if wave != GRID[k]:
            raise IngestError(
                path, product, f"wavelength {fields[0]}, expected {GRID[k]:g} (grid 3470 + 2k)", where=where
            )
        if not (math.isfinite(factor) and factor > 0):
            raise IngestError(path, product, f"factor {fields[1]} is not a positive finite number", where=where)
        factors[k] = factor
    return factors


def factor_at(wave: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """The factor interpolated linearly at ``wave`` (float64). Outside 3470-5540 Angstrom it is the end
    value (``np.interp``); a NaN wavelength gives NaN."""
    return np.interp(np.asarray(wave, dtype=np.float64), GRID, factors)
