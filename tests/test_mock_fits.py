"""Tests of the mock PDR1 FITS writers: schemas against the data-model reference, byte equality
with astropy's own writer, the HPSC2 spectra layout, and bounded memory while streaming."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from dexdb.constants import N_WAVE, WAVE
from dexdb.mock.fits_tables import (
    DETINFO_DTYPE,
    DETINFO_UNITS,
    HPSC2_DTYPE,
    HPSC2_UNITS,
    IFU_INDEX_DTYPE,
    IFU_INDEX_UNITS,
    BinTableWriter,
    Hpsc2SpecWriter,
    write_detinfo,
    write_hpsc2_main,
    write_ifu_index,
)

FLUX = "1e-17 erg s-1 cm-2"
FLUX_DENSITY = "1e-17 erg s-1 cm-2 Angstrom-1"

# Typed from pdr1-data-model.md section 1 (2025-06 order, fluxlimit_4600 after exptime).
IFU_INDEX_EXPECTED = """
shotid i8 | ifuslot S3 | ra_cen f4 deg | dec_cen f4 deg | flag f4 | flag_badamp f4 | flag_badfib f4
flag_meteor f4 | flag_satellite f4 | flag_shot f4 | flag_throughput f4 | field S12 | objid S18
date i4 | obsid i4 | ra_shot f8 deg | dec_shot f8 deg | pa f8 deg | n_ifu i4 | fwhm_virus f4 arcsec
fwhm_virus_err f4 arcsec | response_4540 f4 | ambtemp f4 deg_C | datevobs S12 | dewpoint f4 deg_C
exptime f4 s | fluxlimit_4600 f4 FLUX | humidity f4 % | mjd f4 d | nstars_fit_fwhm i4 | obsind i4
pressure f4 | structaz f4 deg | time S7 | trajcdec f4 deg | trajcpa f4 deg | trajcra f4 deg
"""

# Section 2.1: the 34 v1.3 columns, RA_det/DEC_det after DEC (v1.4), ifuslot appended (v1.5).
HPSC2_EXPECTED = """
source_name S26 | source_id i8 | shotid i8 | RA f4 deg | DEC f4 deg | RA_det f4 deg | DEC_det f4 deg
gmag f4 | Av f4 | z_hetdex f4 | z_hetdex_src S8 | z_hetdex_conf f4 | source_type S10 | n_members i8
detectid i8 | field S12 | flux f4 FLUX | flux_err f4 FLUX | flux_aper f4 FLUX
flux_aper_err f4 FLUX | flag_aper i8 | major f4 arcsec | minor f4 arcsec | theta f4
lum_lya f8 erg_s-1 | lum_lya_err f8 erg_s-1 | lum_oii f8 erg_s-1 | lum_oii_err f8 erg_s-1
flux_lya f4 FLUX | flux_lya_err f4 FLUX | flux_oii f4 FLUX | flux_oii_err f4 FLUX | sn f4 | apcor f4
p_conf f4 | p_cnn f4 | ifuslot S3
"""

# Section 2.3, left block top to bottom, then the right block. The reference text says 86 columns
# but its table, like the printed v1.3 schema it was taken from, lists 87 (apcor included).
DETINFO_EXPECTED = """
source_id i8 | source_name S26 | RA f4 deg | DEC f4 deg | z_hetdex f4 | z_hetdex_src S8
z_hetdex_conf f4 | source_type S10 | detectid i8 | selected_det b1 | det_type S4 | line_id S20
p_conf f4 | p_cnn f4 | RA_det f4 deg | DEC_det f4 deg | src_separation f4 deg | n_members i8
gmag f4 | Av f4 | ebv f4 | wave f4 Angstrom | wave_err f4 Angstrom | flux f4 FLUX | flux_err f4 FLUX
flux_obs f4 FLUX | flux_obs_err f4 FLUX | flux_aper f4 FLUX | flux_aper_err f4 FLUX
flux_aper_obs f4 FLUX | flux_aper_obs_err f4 FLUX | flag_aper i8 | sigma f4 Angstrom
sigma_err f4 Angstrom | continuum f4 FLUXD | continuum_err f4 FLUXD | continuum_obs f4 FLUXD
continuum_obs_err f4 FLUXD | sn f4 | sn_err f4 | chi2 f4 | chi2_err f4
flux_noise_1sigma_obs f4 FLUX | flux_noise_1sigma f4 FLUX | apcor f4
counterpart_mag f4 | counterpart_mag_err f4 | counterpart_dist f4 | counterpart_catalog_name S16
counterpart_filter_name S16 | plya_classification f4 | z_elixer f4 | best_pz f4 | z_diagnose f4
cls_diagnose S7 | stellartype S1 | agn_flag f4 | wave_group_id i8 | wave_group_a f4 deg
wave_group_b f4 deg | wave_group_pa f4 | wave_group_ra f4 | wave_group_dec f4 | wave_group_wave f4
fwhm f4 | throughput f4 | shotid i8 | field S12 | date i4 | obsid i4 | multiframe S20 | fiber_id S38
weight f4 | x_raw i4 | y_raw i4 | x_ifu f4 | y_ifu f4 | ra_aper f4 | dec_aper f4
catalog_name_aper S16 | filter_name_aper S16 | dist_aper f4 | mag_aper f4 | mag_aper_err f4
major f4 arcsec | minor f4 arcsec | theta f4
"""


def parse_expected(text: str) -> list[tuple[str, str, str | None]]:
    """(name, kind+itemsize, unit) triples; '_' in a unit stands for a space."""
    aliases = {"FLUX": FLUX, "FLUXD": FLUX_DENSITY}
    columns = []
    for entry in text.replace("\n", " | ").split("|"):
        parts = entry.split()
        if not parts:
            continue
        name, kind, *unit = parts
        unit = aliases.get(unit[0], unit[0].replace("_", " ")) if unit else None
        columns.append((name, kind, unit))
    return columns


def kind_code(dtype: np.dtype) -> str:
    return f"{dtype.kind}{dtype.itemsize}"


@pytest.mark.parametrize(
    ("dtype", "units", "expected", "ncols"),
    [
        (IFU_INDEX_DTYPE, IFU_INDEX_UNITS, IFU_INDEX_EXPECTED, 37),
        (HPSC2_DTYPE, HPSC2_UNITS, HPSC2_EXPECTED, 37),
        (DETINFO_DTYPE, DETINFO_UNITS, DETINFO_EXPECTED, 87),
    ],
    ids=["ifu_index", "hpsc2", "detinfo"],
)
def test_schema_matches_reference(dtype, units, expected, ncols):
    columns = parse_expected(expected)
    assert len(columns) == ncols
    assert list(dtype.names) == [name for name, _, _ in columns]
    assert [kind_code(dtype[name]) for name in dtype.names] == [kind for _, kind, _ in columns]
    assert units == {name: unit for name, _, unit in columns if unit is not None}
    # FITS is big-endian: multi-byte numeric columns must say so in the public dtypes.
    assert all(dtype[name].byteorder == ">" for name in dtype.names if dtype[name].kind in "if")


def make_rows(dtype: np.dtype, nrows: int, seed: int = 0) -> np.ndarray:
    """Random rows of every column kind, strings of varying length up to the full width."""
    rng = np.random.default_rng(seed)
    rows = np.zeros(nrows, dtype)
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz0123456789-_", np.uint8)
    for name in dtype.names:
        field = dtype[name]
        if field.kind == "S":
            lengths = rng.integers(0, field.itemsize + 1, nrows)
            codes = rng.choice(letters, (nrows, field.itemsize))
            codes[np.arange(field.itemsize) >= lengths[:, None]] = 0
            rows[name] = codes.view(f"S{field.itemsize}").ravel()
        elif field.kind == "b":
            rows[name] = rng.random(nrows) < 0.5
        elif field.kind == "i":
            rows[name] = rng.integers(-(2**30), 2**30, nrows)
        else:
            rows[name] = rng.normal(0, 1e3, nrows)
            rows[name][::7] = np.nan  # bad values must pass through untouched
    return rows


def same_values(actual, expected) -> bool:
    actual = np.asarray(actual)
    return np.array_equal(actual, expected, equal_nan=actual.dtype.kind == "f")


FITS_FORMATS = {"b1": "L", "i4": "J", "i8": "K", "f4": "E", "f8": "D"}


def astropy_table_hdu(rows: np.ndarray, units: dict[str, str],
                      extname: str | None) -> fits.BinTableHDU:
    """The same table written by astropy in one go, the reference for byte comparisons."""
    columns = []
    for name in rows.dtype.names:
        field = rows.dtype[name]
        fmt = f"{field.itemsize}A" if field.kind == "S" else FITS_FORMATS[kind_code(field)]
        columns.append(fits.Column(name=name, format=fmt, unit=units.get(name), array=rows[name]))
    return fits.BinTableHDU.from_columns(columns, name=extname)


def read_table(path, hdu=1) -> Table:
    """The table as stored: bytes strings, no masking of NaN or empty strings."""
    return Table.read(path, hdu=hdu, mask_invalid=False, unit_parse_strict="silent")


def test_chunked_table_is_byte_identical_to_astropy(tmp_path):
    rows = make_rows(DETINFO_DTYPE, 57)
    ours = tmp_path / "ours.fits"
    with BinTableWriter(ours, DETINFO_DTYPE, len(rows), DETINFO_UNITS, "DETINFO") as writer:
        writer.write(rows[:20])
        writer.write(rows[20:20])
        # Other accepted inputs: a Table, and a dict of little-endian / unicode columns.
        writer.write(Table(rows[20:40]))
        tail = rows[40:]
        writer.write({name: (tail[name].astype(str) if tail.dtype[name].kind == "S"
                             else tail[name].astype(tail.dtype[name].newbyteorder("=")))
                      for name in tail.dtype.names})
    theirs = tmp_path / "theirs.fits"
    reference = astropy_table_hdu(rows, DETINFO_UNITS, "DETINFO")
    fits.HDUList([fits.PrimaryHDU(), reference]).writeto(theirs)
    assert ours.read_bytes() == theirs.read_bytes()

    with fits.open(ours) as hdul:
        hdul.verify("exception")
    table = read_table(ours)
    assert table.colnames == list(DETINFO_DTYPE.names)
    for name in DETINFO_DTYPE.names:
        assert same_values(table[name], rows[name]), name
    assert str(table["wave"].unit) == "Angstrom"


def test_table_writer_checks_row_count(tmp_path):
    rows = make_rows(HPSC2_DTYPE, 10)
    writer = BinTableWriter(tmp_path / "short.fits", HPSC2_DTYPE, 12, HPSC2_UNITS, None)
    writer.write(rows)
    with pytest.raises(ValueError, match="declares 12 rows but 10 were written"):
        writer.close()

    with BinTableWriter(tmp_path / "long.fits", HPSC2_DTYPE, 5, HPSC2_UNITS, None) as writer:
        with pytest.raises(ValueError, match="exceed the 5 declared"):
            writer.write(rows)
        writer.write(rows[:5])


def test_table_writer_rejects_bad_columns(tmp_path):
    rows = make_rows(IFU_INDEX_DTYPE, 4)
    with BinTableWriter(tmp_path / "t.fits", IFU_INDEX_DTYPE, 4, IFU_INDEX_UNITS, None) as writer:
        with pytest.raises(ValueError, match=r"missing \['trajcra'\]"):
            writer.write({name: rows[name] for name in IFU_INDEX_DTYPE.names[:-1]})
        too_long = {name: rows[name] for name in IFU_INDEX_DTYPE.names}
        too_long["ifuslot"] = np.array(["0345"] * 4)
        with pytest.raises(ValueError, match="longer than 3 bytes"):
            writer.write(too_long)
        as_floats = dict(too_long, ifuslot=rows["ifuslot"], shotid=rows["shotid"] + 0.5)
        with pytest.raises(TypeError):
            writer.write(as_floats)
        writer.write(rows)
    with pytest.raises(ValueError, match="not in the table"):
        BinTableWriter(tmp_path / "u.fits", IFU_INDEX_DTYPE, 0, {"nope": "deg"}, None)


def test_plain_table_files(tmp_path):
    ifu = make_rows(IFU_INDEX_DTYPE, 30, seed=1)
    write_ifu_index(tmp_path / "ifu-index.fits", ifu)
    det = make_rows(DETINFO_DTYPE, 25, seed=2)
    write_detinfo(tmp_path / "detinfo.fits", (det[i:i + 10] for i in range(0, 25, 10)), nrows=25)
    for name, rows, units in [("ifu-index.fits", ifu, IFU_INDEX_UNITS),
                              ("detinfo.fits", det, DETINFO_UNITS)]:
        with fits.open(tmp_path / name) as hdul:
            hdul.verify("exception")
            assert [type(hdu) for hdu in hdul] == [fits.PrimaryHDU, fits.BinTableHDU]
            assert "EXTNAME" not in hdul[1].header
            columns = hdul[1].columns
            assert columns.names == list(rows.dtype.names)
            assert {c.name: c.unit for c in columns if c.unit} == units
        table = read_table(tmp_path / name)
        for column in rows.dtype.names:
            assert same_values(table[column], rows[column]), column
    with pytest.raises(TypeError, match="nrows is required"):
        write_hpsc2_main(tmp_path / "main.fits", iter([make_rows(HPSC2_DTYPE, 3)]))


def make_spectra(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spectra that encode their row and wavelength index, so any misplacement shows."""
    ids = rows["source_id"].astype(np.float32)[:, None]
    wave_index = np.arange(N_WAVE, dtype=np.float32)
    return ids * 1e-3 + wave_index, -(ids + wave_index * 1e-4)


def test_spec_file_layout_and_content(tmp_path):
    nrows = 97
    rows = make_rows(HPSC2_DTYPE, nrows, seed=3)
    rows["source_id"] = np.arange(nrows)
    spec, spec_err = make_spectra(rows)
    bounds = [0, 7, 30, 31, 64, 97]
    chunks = list(zip(bounds[:-1], bounds[1:]))
    order = np.random.default_rng(4).permutation(len(chunks))
    path = tmp_path / "hetdex_sc2_spec_v1.5.fits"
    with Hpsc2SpecWriter(path, nrows) as writer:
        for position, index in enumerate(order):
            start, stop = chunks[index]
            writer.write_spectra(start, spec[start:stop], spec_err[start:stop].astype(np.float64))
            if position == 2:
                writer.write_info(rows[:50])
        writer.write_info(rows[50:])
    main_path = tmp_path / "hetdex_sc2_v1.5.fits"
    write_hpsc2_main(main_path, (rows[i:i + 40] for i in range(0, nrows, 40)), nrows)

    with fits.open(path) as hdul:
        hdul.verify("exception")
        summary = [(hdu.name, type(hdu), hdu.shape if hdu.is_image else len(hdu.data))
                   for hdu in hdul]
        assert summary == [
            ("PRIMARY", fits.PrimaryHDU, ()),
            ("INFO", fits.BinTableHDU, nrows),
            ("SPEC", fits.ImageHDU, (N_WAVE, nrows)),
            ("SPEC_ERR", fits.ImageHDU, (N_WAVE, nrows)),
            ("WAVELENGTH", fits.ImageHDU, (N_WAVE,)),
        ]
        # Card counts as in the printed v1.3 hdul.info(): SPEC carries one COMMENT, SPEC_ERR none.
        assert [len(hdu.header) for hdu in hdul[2:]] == [10, 9, 8]
        assert len(hdul[0].header) == 4
        for name in ("SPEC", "SPEC_ERR"):
            header = hdul[name].header
            assert (header["BITPIX"], header["NAXIS1"], header["NAXIS2"]) == (-32, nrows, N_WAVE)
            assert header["BUNIT"] == FLUX_DENSITY
        comment = " ".join(hdul["SPEC"].header["COMMENT"])
        for word in ("Dust-corrected", "PSF-extracted", "aperture-corrected"):
            assert word in comment
        assert hdul["WAVELENGTH"].header["BUNIT"] == "Angstrom"
        assert hdul["WAVELENGTH"].data.dtype == np.dtype(">f4")
        assert np.array_equal(hdul["WAVELENGTH"].data, WAVE)
        for i in range(nrows):
            assert np.array_equal(hdul["SPEC"].data[:, i], spec[i])
            assert np.array_equal(hdul["SPEC_ERR"].data[:, i], spec_err[i])
    info = read_table(path, hdu="INFO")
    main = read_table(main_path)
    assert info.colnames == main.colnames == list(HPSC2_DTYPE.names)
    for name in info.colnames:
        assert same_values(info[name], main[name]), name
        assert same_values(info[name], rows[name]), name


def test_spec_file_is_byte_identical_to_astropy(tmp_path):
    nrows = 11
    rows = make_rows(HPSC2_DTYPE, nrows, seed=5)
    spec, spec_err = make_spectra(rows)
    ours = tmp_path / "ours.fits"
    with Hpsc2SpecWriter(ours, nrows) as writer:
        writer.write_spectra(6, spec[6:], spec_err[6:])
        writer.write_info(rows)
        writer.write_spectra(0, spec[:6], spec_err[:6])

    def image(data, name, bunit, comment=None):
        hdu = fits.ImageHDU(data, name=name)
        hdu.header["BUNIT"] = bunit
        if comment:
            hdu.header["COMMENT"] = comment
        return hdu

    theirs = tmp_path / "theirs.fits"
    fits.HDUList([
        fits.PrimaryHDU(),
        astropy_table_hdu(rows, HPSC2_UNITS, "INFO"),
        image(np.ascontiguousarray(spec.T), "SPEC", FLUX_DENSITY,
              "Dust-corrected, 1D PSF-extracted, aperture-corrected spectra"),
        image(np.ascontiguousarray(spec_err.T), "SPEC_ERR", FLUX_DENSITY),
        image(WAVE, "WAVELENGTH", "Angstrom"),
    ]).writeto(theirs)
    assert ours.read_bytes() == theirs.read_bytes()


def test_spec_writer_checks_rows(tmp_path):
    spec = np.zeros((5, N_WAVE), np.float32)
    rows = make_rows(HPSC2_DTYPE, 8)
    writer = Hpsc2SpecWriter(tmp_path / "missing.fits", 8)
    writer.write_info(rows)
    writer.write_spectra(0, spec, spec)
    with pytest.raises(ValueError, match="overlap|already written"):
        writer.write_spectra(4, spec[:2], spec[:2])
    with pytest.raises(IndexError):
        writer.write_spectra(6, spec[:3], spec[:3])
    with pytest.raises(ValueError, match=r"\(n, 1036\)"):
        writer.write_spectra(5, spec[:3, :-1], spec[:3, :-1])
    with pytest.raises(ValueError, match="3 of 8 spectra rows were never written .first: row 5"):
        writer.close()

    writer = Hpsc2SpecWriter(tmp_path / "no_info.fits", 8)
    writer.write_spectra(0, np.zeros((8, N_WAVE), np.float32), np.zeros((8, N_WAVE), np.float32))
    with pytest.raises(ValueError, match="declares 8 rows but 0 were written"):
        writer.close()


def test_spec_writer_memory_stays_bounded(tmp_path):
    nrows, chunk = 20_000, 1_000
    image_bytes = nrows * N_WAVE * 4
    rows = make_rows(HPSC2_DTYPE, chunk, seed=6)
    tracemalloc.start()
    try:
        with Hpsc2SpecWriter(tmp_path / "big.fits", nrows) as writer:
            for start in range(0, nrows, chunk):
                spec = np.full((chunk, N_WAVE), start, np.float32)
                writer.write_info(rows)
                writer.write_spectra(start, spec, spec)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Per chunk: the caller's spectrum plus one transposed copy (~4 MB each), vs 83 MB per image.
    assert peak < image_bytes / 5, peak
    with fits.open(tmp_path / "big.fits", memmap=True) as hdul:
        column = np.asarray(hdul["SPEC_ERR"].data[:, 12_345])
        assert np.array_equal(column, np.full(N_WAVE, 12_000, np.float32))
