"""Tests of the FITS converters (``ifu_index``, ``hpsc2``): round trips against astropy's own reads
of the mock files, cube footprints, malformed inputs and the HPSC2 column-set variants."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from dexdb.constants import FLUX_DENSITY_UNIT, N_WAVE, PDR1_BASE_URL
from dexdb.geometry import tan_project
from dexdb.ingest import hpsc2, ifu_index
from dexdb.ingest.fits_stream import version_key
from dexdb.ingest.hats_writer import write_catalog
from dexdb.ingest.product import IngestError
from dexdb.mock.cubes import footprint_corners

# The release's flux units ('1e-17 erg s-1 cm-2') are not FITS-standard; astropy warns on every
# table it converts for the malformed copies.
pytestmark = pytest.mark.filterwarnings("ignore::astropy.units.UnitsWarning")

SC2 = hpsc2.CATALOG_DIR
# Small chunks so that the tiny mock (19 cubes, 41 sources, 81 detections) streams in several.
CHUNKS = {"ifu_index": 5, "sources": 7, "source_spectra": 7, "detinfo": 16}


def convert(module, root: Path) -> dict[str, tuple]:
    """{product name: (product, table of all its batches)}."""
    if module is ifu_index:
        products = ifu_index.products(root, chunk_rows=CHUNKS["ifu_index"])
    else:
        products = hpsc2.products(root, sources_chunk_rows=CHUNKS["sources"], detinfo_chunk_rows=CHUNKS["detinfo"])
    return {p.name: (p, pa.Table.from_batches(list(p.batches()))) for p in products}


def read_table(path: Path, hdu: int | str = 1) -> Table:
    return Table.read(path, hdu=hdu, mask_invalid=False, unit_parse_strict="silent")


def expected_columns(path: Path, hdu: int | str = 1) -> dict[str, np.ndarray]:
    """Column values as astropy delivers them, strings decoded without FITS trailing blanks."""
    data = fits.getdata(path, hdu)
    columns = {}
    for name in data.dtype.names:
        values = np.asarray(data[name])
        columns[name] = np.char.rstrip(np.char.decode(values, "ascii"), " ") if values.dtype.kind == "S" else values
    return columns


def assert_columns_equal(table: pa.Table, expected: dict[str, np.ndarray]) -> None:
    for name, want in expected.items():
        got = table.column(name).to_numpy(zero_copy_only=False)
        if want.dtype.kind in "biuf":
            assert got.dtype == want.dtype.newbyteorder("="), name
        if want.dtype.kind == "f":  # bitwise, so NaN and -999 must come back as they were
            assert np.array_equal(got.view(f"u{got.itemsize}"), want.astype(got.dtype).view(f"u{got.itemsize}")), name
        else:
            assert got.tolist() == want.tolist(), name


def spectra(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).combine_chunks().flatten().to_numpy().reshape(-1, N_WAVE)


def bits(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)


@pytest.fixture(scope="module")
def converted(tiny_pdr1):
    return convert(ifu_index, tiny_pdr1) | convert(hpsc2, tiny_pdr1)


def test_streams_in_chunks(converted):
    for name, (product, table) in converted.items():
        assert table.column(0).num_chunks == -(-product.expected_rows // CHUNKS[name]) > 1, name


# ---------------------------------------------------------------------------------------------
# Round trips


def test_ifu_index_round_trip(tiny_pdr1, converted):
    product, table = converted["ifu_index"]
    path = tiny_pdr1 / "ifu-index.fits"
    expected = expected_columns(path)
    assert table.num_rows == product.expected_rows == len(expected["shotid"])
    assert table.column_names == [*expected, "cube_id", "path", "url", "corner_ra", "corner_dec"]
    assert_columns_equal(table, expected)

    slots = [f"{s:0>3}" for s in expected["ifuslot"]]
    assert table.column("cube_id").to_pylist() == [int(s) * 1000 + int(f) for s, f in zip(expected["shotid"], slots)]
    paths = [f"datacubes/{s}/dex_cube_{s}_{f}.fits" for s, f in zip(expected["shotid"], slots)]
    assert table.column("path").to_pylist() == paths
    assert table.column("url").to_pylist() == [f"{PDR1_BASE_URL}/{p}" for p in paths]
    on_disk = {p.relative_to(tiny_pdr1).as_posix() for p in (tiny_pdr1 / "datacubes").glob("*/*.fits")}
    assert on_disk and on_disk <= set(paths)

    assert product.spec.ra_column == "ra_cen" and product.spec.sort_tiebreak == "cube_id"
    units = json.loads(product.spec.metadata["units"])
    assert units["ra_cen"] == units["corner_ra"] == "deg"
    assert json.loads(product.spec.metadata["source_files"]) == ["ifu-index.fits"]
    assert json.loads(product.spec.metadata["sha256"]) == {
        "ifu-index.fits": hashlib.sha256(path.read_bytes()).hexdigest()
    }


def test_ifu_index_corners(tiny_pdr1, converted):
    _, table = converted["ifu_index"]
    ra = np.stack(table.column("corner_ra").to_numpy(zero_copy_only=False))
    dec = np.stack(table.column("corner_dec").to_numpy(zero_copy_only=False))
    for i, row in enumerate(table.select(["ra_cen", "dec_cen", "pa"]).to_pylist()):
        want = footprint_corners(row["ra_cen"], row["dec_cen"], row["pa"])
        assert np.array_equal(ra[i], want[:, 0]) and np.array_equal(dec[i], want[:, 1])
        # The centre lies inside the quadrilateral: same turn direction along every edge.
        x, y = tan_project(row["ra_cen"], row["dec_cen"], ra[i], dec[i])
        turns = [x[k] * y[(k + 1) % 4] - y[k] * x[(k + 1) % 4] for k in range(4)]
        assert all(t > 0 for t in turns) or all(t < 0 for t in turns)

    # The corners are the pixel-grid corners of the cube's own WCS.
    path = next((tiny_pdr1 / "datacubes").glob("*/*.fits"))
    i = table.column("path").to_pylist().index(path.relative_to(tiny_pdr1).as_posix())
    with fits.open(path) as cube:
        celestial = WCS(cube["DATA"].header).celestial
        nx = cube["DATA"].header["NAXIS1"]
    low, high = -0.5, nx - 0.5
    world = celestial.all_pix2world([[low, low], [high, low], [high, high], [low, high]], 0)
    assert np.allclose(ra[i], world[:, 0], rtol=0, atol=1e-10) and np.allclose(dec[i], world[:, 1], rtol=0, atol=1e-10)


def test_sources_round_trip(tiny_pdr1, converted):
    product, table = converted["sources"]
    main = tiny_pdr1 / SC2 / "hetdex_sc2_v1.5.fits"
    expected = expected_columns(main)
    assert table.num_rows == product.expected_rows == len(expected["source_id"])
    assert table.column_names == list(expected)
    assert_columns_equal(table, expected)
    # Both bad-value conventions occur in the mock and survive unchanged.
    assert np.isnan(table.column("gmag").to_numpy()).any() and (table.column("flux").to_numpy() == -999).any()

    assert product.inputs == [main]
    metadata = product.spec.metadata
    assert metadata["hpsc2_version"] == "1.5"
    assert json.loads(metadata["units"])["RA"] == "deg"
    assert set(json.loads(metadata["sha256"])) == {f"{SC2}/{main.name}"}
    assert product.spec.id_columns == ("source_id", "detectid", "source_name")
    assert any("-999" in note for note in product.notes)


def test_source_spectra_round_trip(tiny_pdr1, converted):
    product, table = converted["source_spectra"]
    main = tiny_pdr1 / SC2 / "hetdex_sc2_v1.5.fits"
    spec_file = tiny_pdr1 / SC2 / "hetdex_sc2_spec_v1.5.fits"
    expected = expected_columns(main)
    assert table.num_rows == product.expected_rows == len(expected["source_id"])
    assert table.column_names == ["source_id", "detectid", "RA", "DEC", "spec", "spec_err"]
    assert table.schema.field("spec").type == pa.list_(pa.float32(), N_WAVE)
    assert_columns_equal(table, {name: expected[name] for name in ("source_id", "detectid", "RA", "DEC")})
    for name, extname in (("spec", "SPEC"), ("spec_err", "SPEC_ERR")):
        image = fits.getdata(spec_file, extname)
        assert np.array_equal(bits(spectra(table, name)), bits(image.T))

    assert product.inputs == [spec_file, main]
    metadata = product.spec.metadata
    assert metadata["wavelength"] == "3470 + 2k Angstrom, k=0..1035, air"
    assert metadata["spectrum_unit"] == FLUX_DENSITY_UNIT
    units = json.loads(metadata["units"])
    assert units["RA"] == "deg" and units["spec"] == units["spec_err"] == FLUX_DENSITY_UNIT
    assert set(json.loads(metadata["sha256"])) == {f"{SC2}/{spec_file.name}"}
    assert product.spec.id_columns == ("source_id",)


def test_inputs_above_the_hash_cap_are_listed_unhashed(tiny_pdr1):
    main = tiny_pdr1 / SC2 / "hetdex_sc2_v1.5.fits"
    spec_file = tiny_pdr1 / SC2 / "hetdex_sc2_spec_v1.5.fits"
    products = {p.name: p for p in hpsc2.products(tiny_pdr1, hash_max_bytes=main.stat().st_size)}
    assert set(json.loads(products["sources"].spec.metadata["sha256"])) == {f"{SC2}/{main.name}"}
    metadata = products["source_spectra"].spec.metadata
    assert json.loads(metadata["sha256"]) == {}
    unhashed = json.loads(metadata["unhashed_files"])
    assert list(unhashed) == [f"{SC2}/{spec_file.name}"]
    assert unhashed[f"{SC2}/{spec_file.name}"]["bytes"] == spec_file.stat().st_size


def test_detinfo_round_trip(tiny_pdr1, converted):
    product, table = converted["detinfo"]
    expected = expected_columns(tiny_pdr1 / SC2 / "hetdex_sc2_detinfo_v1.5.fits")
    assert table.num_rows == product.expected_rows
    assert table.column_names == list(expected)
    assert table.schema.field("selected_det").type == pa.bool_()
    assert_columns_equal(table, expected)
    assert product.spec.sort_tiebreak == "detectid" and product.spec.metadata["hpsc2_version"] == "1.5"


def test_source_spectra_through_writer(tmp_path, converted):
    product, table = converted["source_spectra"]
    write_catalog([table], product.spec, tmp_path, workers=1)
    files = sorted(
        str(p) for p in (tmp_path / "source_spectra" / "source_spectra" / "dataset").glob("Norder=*/Dir=*/Npix=*/*.parquet")
    )
    query = """
        SELECT * EXCLUDE (spec, spec_err), spec::FLOAT[1036] AS spec, spec_err::FLOAT[1036] AS spec_err
        FROM read_parquet($files) ORDER BY source_id
    """
    with duckdb.connect() as con:
        back = con.sql(query, params={"files": files}).to_arrow_table()
    want = table.sort_by("source_id")
    assert back.num_rows == want.num_rows
    for name in ("spec", "spec_err"):
        assert np.array_equal(bits(spectra(back, name)), bits(spectra(want, name))), name
    scalars = [name for name in want.column_names if name not in ("spec", "spec_err")]
    assert_columns_equal(back, {name: want.column(name).to_numpy(zero_copy_only=False) for name in scalars})


# ---------------------------------------------------------------------------------------------
# Malformed inputs


@pytest.fixture(scope="module")
def sc2_parts(tiny_pdr1):
    """The mock's HPSC2 pieces as editable astropy tables / arrays."""
    directory = tiny_pdr1 / SC2
    return {
        "main": read_table(directory / "hetdex_sc2_v1.5.fits"),
        "spec": fits.getdata(directory / "hetdex_sc2_spec_v1.5.fits", "SPEC"),
        "spec_err": fits.getdata(directory / "hetdex_sc2_spec_v1.5.fits", "SPEC_ERR"),
        "wavelength": fits.getdata(directory / "hetdex_sc2_spec_v1.5.fits", "WAVELENGTH"),
        "detinfo": read_table(directory / "hetdex_sc2_detinfo_v1.5.fits"),
    }


def write_sc2(root: Path, parts: dict, version: str = "1.5", *, info: Table | None = None, skip_hdus=()) -> Path:
    """Main table, spectra file (INFO = ``info`` or the main table) and detinfo under ``root``."""
    directory = root / SC2
    directory.mkdir(parents=True, exist_ok=True)
    main = parts["main"]
    fits.HDUList([fits.PrimaryHDU(), fits.table_to_hdu(main)]).writeto(directory / f"hetdex_sc2_v{version}.fits")
    hdus = {
        "INFO": fits.table_to_hdu(main if info is None else info),
        "SPEC": fits.ImageHDU(parts["spec"]),
        "SPEC_ERR": fits.ImageHDU(parts["spec_err"]),
        "WAVELENGTH": fits.ImageHDU(parts["wavelength"]),
    }
    spec_file = fits.HDUList([fits.PrimaryHDU()])
    for name, hdu in hdus.items():
        if name not in skip_hdus:
            hdu.name = name
            spec_file.append(hdu)
    spec_file.writeto(directory / f"hetdex_sc2_spec_v{version}.fits")
    fits.HDUList([fits.PrimaryHDU(), fits.table_to_hdu(parts["detinfo"])]).writeto(
        directory / f"hetdex_sc2_detinfo_v{version}.fits"
    )
    return directory


def edited(parts: dict, **changes) -> dict:
    copy = {name: value.copy() for name, value in parts.items()}
    return copy | changes


def set_value(table: Table, column: str, row: int, value) -> Table:
    table = table.copy()
    table[column][row] = value
    return table


def truncate(path: Path, fraction: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def sc2_case(name: str, root: Path, parts: dict) -> str:
    """Build malformed HPSC2 case ``name`` under ``root``; return the file the error must name."""
    spec_name, main_name = "hetdex_sc2_spec_v1.5.fits", "hetdex_sc2_v1.5.fits"
    main = parts["main"]
    if name == "truncated spec file":
        truncate(write_sc2(root, parts) / spec_name, 0.6)
        return spec_name
    if name == "missing SPEC HDU":
        write_sc2(root, parts, skip_hdus=("SPEC",))
        return spec_name
    if name == "RA as string":
        table = main.copy()
        table["RA"] = table["RA"].astype("S12")
        write_sc2(root, edited(parts, main=table))
        return main_name
    if name == "NaN DEC in row 3":
        write_sc2(root, edited(parts, main=set_value(main, "DEC", 3, np.nan)))
        return main_name
    if name == "RA 360.5 in row 0":
        write_sc2(root, edited(parts, main=set_value(main, "RA", 0, 360.5)))
        return main_name
    if name == "duplicate source_id":
        write_sc2(root, edited(parts, main=set_value(main, "source_id", 5, main["source_id"][2])))
        return main_name
    if name == "SPEC with wrong N":
        write_sc2(root, edited(parts, spec=parts["spec"][:, :-1]))
        return spec_name
    if name == "INFO rows out of order":
        write_sc2(root, parts, info=main[[0, 1, 2, 3, 5, 4, *range(6, len(main))]])
        return spec_name
    if name == "WAVELENGTH wrong":
        write_sc2(root, edited(parts, wavelength=parts["wavelength"] + 1))
        return spec_name
    if name == "empty main file":
        (write_sc2(root, parts) / main_name).write_bytes(b"")
        return main_name
    if name == "not a FITS file":
        (write_sc2(root, parts) / main_name).write_bytes(b"source_id RA DEC\n" * 400)
        return main_name
    if name == "missing main column":
        table = main.copy()
        table.remove_column("detectid")
        write_sc2(root, edited(parts, main=table))
        return main_name
    if name == "duplicate detectid in detinfo":
        detinfo = parts["detinfo"]
        write_sc2(root, edited(parts, detinfo=set_value(detinfo, "detectid", 9, detinfo["detectid"][4])))
        return "hetdex_sc2_detinfo_v1.5.fits"
    raise AssertionError(name)


SC2_CASES = {
    "truncated spec file": ["truncated", "SPEC_ERR"],
    "missing SPEC HDU": ["missing image HDU 'SPEC'"],
    "RA as string": ["column RA", "floating-point", "string"],
    "NaN DEC in row 3": ["row 3, column DEC", "NaN"],
    "RA 360.5 in row 0": ["row 0, column RA", "outside [0, 360]"],
    "duplicate source_id": ["duplicate source_id", "row 5", "first in row 2"],
    "SPEC with wrong N": ["HDU 'SPEC'", "shape (1036, 40)", "expected (1036, 41)"],
    "INFO rows out of order": ["row 4, column source_id", "INFO does not match"],
    "WAVELENGTH wrong": ["WAVELENGTH", "3471.0 at k=0"],
    "empty main file": ["empty file"],
    "not a FITS file": ["not a readable FITS file"],
    "missing main column": ["missing required column(s) detectid"],
    "duplicate detectid in detinfo": ["duplicate detectid", "row 9", "first in row 4"],
}


@pytest.mark.parametrize("case", list(SC2_CASES))
def test_bad_hpsc2_input(case, tmp_path, sc2_parts):
    bad_file = sc2_case(case, tmp_path, sc2_parts)
    with pytest.raises(IngestError) as caught:
        convert(hpsc2, tmp_path)
    message = str(caught.value)
    assert message.startswith(str(tmp_path / SC2 / bad_file)), message
    for fragment in SC2_CASES[case]:
        assert fragment in message, message


def ifu_case(name: str, table: Table) -> list[str]:
    """Edit ``table`` into malformed case ``name``; return the fragments the message must hold."""
    if name == "missing column":
        table.remove_column("pa")
        return ["missing required column(s) pa"]
    if name == "dec_cen as string":
        table["dec_cen"] = table["dec_cen"].astype("S10")
        return ["column dec_cen", "floating-point"]
    if name == "NaN ra_cen in row 2":
        table["ra_cen"][2] = np.nan
        return ["row 2, column ra_cen", "NaN"]
    if name == "duplicate cube":
        table["shotid"][7], table["ifuslot"][7] = table["shotid"][1], table["ifuslot"][1]
        return ["duplicate (shotid, ifuslot)", "row 7", "first in row 1"]
    if name == "ifuslot not numeric":
        table["ifuslot"][4] = b"x1"
        return ["row 4, column ifuslot", "'x1'"]
    raise AssertionError(name)


IFU_CASES = ["missing column", "dec_cen as string", "NaN ra_cen in row 2", "duplicate cube", "ifuslot not numeric"]


@pytest.mark.parametrize("case", IFU_CASES)
def test_bad_ifu_index(case, tmp_path, tiny_pdr1):
    table = read_table(tiny_pdr1 / "ifu-index.fits")
    fragments = ifu_case(case, table)
    path = tmp_path / "ifu-index.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.table_to_hdu(table)]).writeto(path)
    with pytest.raises(IngestError) as caught:
        convert(ifu_index, tmp_path)
    message = str(caught.value)
    assert message.startswith(str(path)), message
    for fragment in fragments:
        assert fragment in message, message


def test_truncated_and_empty_ifu_index(tmp_path, tiny_pdr1):
    path = tmp_path / "ifu-index.fits"
    path.write_bytes((tiny_pdr1 / "ifu-index.fits").read_bytes()[:-3000])
    with pytest.raises(IngestError, match="truncated"):
        convert(ifu_index, tmp_path)
    path.write_bytes(b"")
    with pytest.raises(IngestError, match="empty file"):
        convert(ifu_index, tmp_path)


# ---------------------------------------------------------------------------------------------
# Column-set and layout variants


def test_v13_column_set(tmp_path, sc2_parts):
    main = sc2_parts["main"].copy()
    main.remove_columns(["RA_det", "DEC_det", "ifuslot"])
    write_sc2(tmp_path, edited(sc2_parts, main=main), version="1.3")
    converted = convert(hpsc2, tmp_path)
    product, table = converted["sources"]
    assert product.spec.metadata["hpsc2_version"] == "1.3"
    assert table.column_names == main.colnames
    assert_columns_equal(table, expected_columns(tmp_path / SC2 / "hetdex_sc2_v1.3.fits"))
    assert converted["source_spectra"][0].spec.metadata["hpsc2_version"] == "1.3"


def test_log_luminosity_columns(tmp_path, sc2_parts):
    main = sc2_parts["main"].copy()
    for line in ("lya", "oii"):
        for suffix in ("", "_err"):
            values = np.asarray(main[f"lum_{line}{suffix}"])
            main[f"lum_{line}{suffix}"] = np.where(values > 0, np.log10(np.abs(values)), values)
            main.rename_column(f"lum_{line}{suffix}", f"logL_{line}{suffix}")
    main["det_type"] = np.full(len(main), b"line")
    write_sc2(tmp_path, edited(sc2_parts, main=main))
    _, table = convert(hpsc2, tmp_path)["sources"]
    assert "logL_lya" in table.column_names and "lum_lya" not in table.column_names
    assert_columns_equal(table, expected_columns(tmp_path / SC2 / "hetdex_sc2_v1.5.fits"))


def test_any_row_order(tmp_path, sc2_parts):
    order = np.arange(len(sc2_parts["main"]))[::-1]
    parts = edited(
        sc2_parts,
        main=sc2_parts["main"][order],
        spec=sc2_parts["spec"][:, order],
        spec_err=sc2_parts["spec_err"][:, order],
    )
    write_sc2(tmp_path, parts)
    converted = convert(hpsc2, tmp_path)
    for name in ("sources", "source_spectra"):
        table = converted[name][1]
        assert table.column("source_id").to_pylist() == list(sc2_parts["main"]["source_id"][order]), name
    assert np.array_equal(bits(spectra(table, "spec")), bits(sc2_parts["spec"][:, order].T))


def test_highest_version_and_missing_pieces(tmp_path, sc2_parts):
    assert sorted(["1.10", "1.5", "1.3"], key=version_key) == ["1.3", "1.5", "1.10"]
    directory = write_sc2(tmp_path, sc2_parts, version="1.3")
    write_sc2(tmp_path, sc2_parts, version="1.5")
    converted = convert(hpsc2, tmp_path)
    assert {name: p.spec.metadata["hpsc2_version"] for name, (p, _) in converted.items()} == {
        "sources": "1.5",
        "source_spectra": "1.5",
        "detinfo": "1.5",
    }
    assert converted["sources"][0].inputs == [directory / "hetdex_sc2_v1.5.fits"]
    assert converted["source_spectra"][0].inputs == [
        directory / "hetdex_sc2_spec_v1.5.fits",
        directory / "hetdex_sc2_v1.5.fits",
    ]

    # Without the spectra file: the main table alone, no spectrum columns.
    (directory / "hetdex_sc2_spec_v1.5.fits").unlink()
    product, table = convert(hpsc2, tmp_path)["sources"]
    assert table.column_names == sc2_parts["main"].colnames and "wavelength" not in product.spec.metadata

    # Nothing present, nothing offered.
    assert hpsc2.products(tmp_path / "nowhere") == [] and ifu_index.products(tmp_path / "nowhere") == []
