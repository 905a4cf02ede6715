"""Survey-wide constants of HETDEX PDR1: the wavelength grid, units, fields, mask bits, URLs."""

from __future__ import annotations

import numpy as np

from dexdb.lines.table import rest_wave

#: Every HETDEX spectrum is sampled at 3470 + 2k Angstrom (air), k = 0..1035.
N_WAVE = 1036
WAVE_START = 3470.0
WAVE_STEP = 2.0
WAVE = (WAVE_START + WAVE_STEP * np.arange(N_WAVE)).astype(np.float32)

#: Units as written in the release files.
FLUX_UNIT = "1e-17 erg s-1 cm-2"
FLUX_DENSITY_UNIT = "1e-17 erg s-1 cm-2 Angstrom-1"

PDR1_BASE_URL = "https://web.corral.tacc.utexas.edu/hetdex/HETDEX/pdr/pdr1"

#: Survey fields: centre (deg) and the number of IFU cubes in PDR1.
FIELDS: dict[str, tuple[float, float, int]] = {
    "dex-spring": (195.00, 51.00, 244_176),
    "dex-fall": (22.50, 0.00, 136_829),
    "nep": (270.00, 66.00, 34_269),
    "cosmos": (150.12, 2.21, 11_271),
    "ssa22": (336.50, 0.00, 4_393),
    "goods-n": (189.18, 62.24, 775),
}

#: Internal data releases inside PDR1 and the dates (YYYYMMDD) each covers.
RELEASES: dict[str, tuple[int, int]] = {
    "hdr3": (20170101, 20210831),
    "hdr4": (20210901, 20230831),
    "hdr5": (20230901, 20240731),
}

#: Datacube MASK bits (0 = good).
MASK_BITS: dict[str, int] = {
    "MAIN": 1,
    "FTF": 2,
    "CHI2FIB": 4,
    "BADPIX": 8,
    "BADAMP": 16,
    "LARGEGAL": 32,
    "METEOR": 64,
    "BADSHOT": 128,
    "THROUGHPUT": 256,
    "BADFIB": 512,
    "SAT": 1024,
    "BADCAL": 2048,
    "PIXMASK": 4096,
    "BADDET": 8192,
}

#: Rest wavelengths (Angstrom) of the lines the mock and the classifier use, from the line table
#: (dexdb/lines/lines.csv, their one home).
LYA = rest_wave("Lya")  # vacuum
NV = rest_wave("NV")
OII = rest_wave("[OII]")  # air, doublet centroid
OIII_5007 = rest_wave("[OIII]5007")
OIII_4959 = rest_wave("[OIII]4959")
HBETA = rest_wave("Hbeta")
HGAMMA = rest_wave("Hgamma")
HDELTA = rest_wave("Hdelta")
NEIII = rest_wave("[NeIII]3869")
CIV = rest_wave("CIV")
HEII = rest_wave("HeII")
CIII = rest_wave("CIII]")
MGII = rest_wave("MgII")

#: Fixed instrument rotation (deg) added to the shot PA to get the cube orientation.
SYSTEM_ROTATION = 1.55
