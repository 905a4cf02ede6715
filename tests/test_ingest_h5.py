"""HDF5 converters (dexdb.ingest.detect, dexdb.ingest.detect_index) on the tiny mock release: every source
value comes back exactly (checked against independent PyTables reads), the calibrations equal a numpy
computation from wdcor.txt, optional inputs may be absent, and bad inputs raise IngestError naming the
file and the problem."""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tables as tb

from dexdb.ingest import detect, detect_index
from dexdb.ingest.hats_writer import write_catalog
from dexdb.ingest.product import IngestError, Product, sha256_of

FILES = [
    (survey, det_type, f"{'detect' if det_type == 'line' else 'cont'}_{survey}.h5")
    for survey in ("hdr3", "hdr4", "hdr5")
    for det_type in ("line", "cont")
]
CALIBRATED = ("flux", "flux_err", "continuum", "continuum_err", "flux_noise_1sigma")


def by_name(products: list[Product]) -> dict[str, Product]:
    return {p.name: p for p in products}


def drain(product: Product) -> pa.Table:
    return pa.Table.from_batches(list(product.batches()))


def read_table(path: Path, node: str) -> np.ndarray:
    with tb.open_file(path) as h5:
        return h5.get_node(node).read()


def wdcor_of(pdr1: Path) -> np.ndarray:
    """(1036, 2): wavelength, factor."""
    return np.loadtxt(pdr1 / "detect" / "wdcor.txt")


def as_numpy(column: pa.ChunkedArray) -> np.ndarray:
    array = column.combine_chunks()
    if pa.types.is_fixed_size_list(array.type):
        return array.flatten().to_numpy().reshape(len(array), array.type.list_size)
    return array.to_numpy(zero_copy_only=False)


def assert_same(column: pa.ChunkedArray, expected: np.ndarray, name: str) -> None:
    """Bit-exact for numbers (NaN and -0.0 included), decoded text for byte strings."""
    if expected.dtype.kind == "S":
        assert column.to_pylist() == [value.decode() for value in expected], name
        return
    got = as_numpy(column)
    assert got.dtype == expected.dtype and got.shape == expected.shape, name
    assert got.tobytes() == np.ascontiguousarray(expected).tobytes(), name


@pytest.fixture(scope="module")
def built(tiny_pdr1) -> dict[str, tuple[Product, pa.Table]]:
    products = detect.products(tiny_pdr1) + detect_index.products(tiny_pdr1)
    return {p.name: (p, drain(p)) for p in products}


def test_products_and_specs(built):
    assert sorted(built) == ["detect_index", "detection_spectra", "detections", "fibers"]
    specs = {name: product.spec for name, (product, _) in built.items()}
    assert specs["detections"].id_columns == ("detectid",) and specs["detections"].sort_tiebreak == "detectid"
    assert specs["detection_spectra"].id_columns == ("detectid",)
    assert specs["detection_spectra"].row_group_rows == detect.SPECTRA_ROW_GROUP_ROWS
    assert specs["fibers"].id_columns == () and specs["fibers"].sort_tiebreak == "fiber_row"
    assert specs["detect_index"].id_columns == ("detectid",)
    for product, table in built.values():
        assert table.num_rows == product.expected_rows > 0
        assert (product.spec.ra_column, product.spec.dec_column) == ("ra", "dec")


def test_detections_round_trip(built, tiny_pdr1):
    product, table = built["detections"]
    wdcor = wdcor_of(tiny_pdr1)
    line_only = {"apcor", "flux_noise_1sigma", "mc_file", "mc_file_idx", "sn_3fib", "sn_3fib_cen", "sn_cen"}
    line_only.add("flux_noise_1sigma_cal")
    offset = 0
    for survey, det_type, name in FILES:
        rows = read_table(tiny_pdr1 / "detect" / name, "/Detections")
        part = table.slice(offset, len(rows))
        offset += len(rows)
        for column in rows.dtype.names:
            assert_same(part[column], rows[column], f"{name} {column}")
        for column in line_only if det_type == "cont" else {"detectname"}:
            assert part[column].null_count == len(rows), f"{name} {column}"
        assert set(part["survey"].to_pylist()) <= {survey} and set(part["det_type"].to_pylist()) <= {det_type}
        factor = np.interp(rows["wave"].astype(np.float64), wdcor[:, 0], wdcor[:, 1])
        for column in CALIBRATED:
            if column in rows.dtype.names:
                expected = (rows[column].astype(np.float64) / factor).astype(np.float32)
                assert_same(part[column + "_cal"], expected, f"{name} {column}_cal")
    assert offset == table.num_rows == product.expected_rows
    assert len(table.schema) == 41 + 1 + 2 + 5  # line columns, detectname, survey/det_type, calibrated


def test_spectra_round_trip(built, tiny_pdr1):
    product, table = built["detection_spectra"]
    wdcor = wdcor_of(tiny_pdr1)[:, 1]
    offset = 0
    for survey, det_type, name in FILES:
        path = tiny_pdr1 / "detect" / name
        rows, detections = read_table(path, "/Spectra"), read_table(path, "/Detections")
        part = table.slice(offset, len(rows))
        offset += len(rows)
        for column in rows.dtype.names:
            assert_same(part[column], rows[column], f"{name} {column}")
        for column, raw in (("spec", "spec1d"), ("spec_err", "spec1d_err")):
            expected = (rows[raw].astype(np.float64) / 2 / wdcor).astype(np.float32)
            assert_same(part[column], expected, f"{name} {column}")
        row_of = {detectid: i for i, detectid in enumerate(detections["detectid"])}
        rows_in_detections = [row_of[detectid] for detectid in rows["detectid"]]
        assert_same(part["ra"], detections["ra"][rows_in_detections], "ra")
        assert_same(part["dec"], detections["dec"][rows_in_detections], "dec")
        assert set(part["survey"].to_pylist()) <= {survey} and set(part["det_type"].to_pylist()) <= {det_type}
    assert offset == table.num_rows == product.expected_rows
    assert table.schema.field("spec").type == pa.list_(pa.float32(), 1036)


def test_fibers_round_trip(built, tiny_pdr1):
    product, table = built["fibers"]
    offset = 0
    for survey, det_type, name in FILES:
        rows = read_table(tiny_pdr1 / "detect" / name, "/Fibers")
        part = table.slice(offset, len(rows))
        for column in rows.dtype.names:
            assert_same(part[column], rows[column], f"{name} {column}")
        assert_same(part["fiber_row"], np.arange(offset, offset + len(rows), dtype=np.int64), "fiber_row")
        assert set(part["survey"].to_pylist()) <= {survey} and set(part["det_type"].to_pylist()) <= {det_type}
        offset += len(rows)
    assert offset == table.num_rows == product.expected_rows
    assert table.schema.field("ADC").type == pa.list_(pa.float32(), 5)


def test_detect_index_round_trip(built, tiny_pdr1):
    product, table = built["detect_index"]
    rows = read_table(tiny_pdr1 / "detect" / "detect_index_hdr5.h5", "/DetectIndex")
    assert table.column_names == list(rows.dtype.names)
    for column in rows.dtype.names:
        assert_same(table[column], rows[column], column)
    assert table.num_rows == product.expected_rows


def test_small_chunks_and_repeated_reads_give_the_same_batches(built, tiny_pdr1):
    """Chunk boundaries (and the row numbers derived across them) do not change the content."""
    small = by_name(detect.products(tiny_pdr1, chunk_rows=7, spectra_chunk_rows=3))
    small |= by_name(detect_index.products(tiny_pdr1, chunk_rows=7))
    for name, (product, table) in built.items():
        batches = list(small[name].batches())
        assert len(batches) > 6
        assert pa.Table.from_batches(batches).equals(table), name
        assert drain(product).equals(table), name


def test_metadata(built, tiny_pdr1):
    product, _ = built["detection_spectra"]
    metadata = dict(product.spec.metadata)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    names = json.loads(metadata["source_files"])
    assert names == [f"detect/{name}" for *_, name in FILES] + ["detect/wdcor.txt"]
    assert json.loads(metadata["sha256"]) == {name: sha256_of(tiny_pdr1 / name) for name in names}
    units = json.loads(metadata["units"])
    assert units["spec"] == "1e-17 erg s-1 cm-2 Angstrom-1" and units["ra"] == "deg"
    assert json.loads(metadata["wavelength_grid"])["n"] == 1036
    assert "spec1d / 2 / wdcor" in metadata["calibration"]
    assert json.loads(metadata["notes"]) == product.notes

    cap = 1_000_000
    big = by_name(detect.products(tiny_pdr1, hash_max_bytes=cap))["detections"].spec.metadata
    sizes = {name: (tiny_pdr1 / name).stat().st_size for name in names}
    unhashed = json.loads(big["unhashed_files"])
    assert {name: entry["bytes"] for name, entry in unhashed.items()} == {n: s for n, s in sizes.items() if s > cap}
    assert all("mtime" in entry for entry in unhashed.values())
    assert set(json.loads(big["sha256"])) == {n for n, s in sizes.items() if s <= cap}
    assert unhashed and "detect/wdcor.txt" not in unhashed


def test_hashes_are_deferred_until_the_metadata_is_read(tiny_pdr1, monkeypatch):
    calls = []
    monkeypatch.setattr("dexdb.ingest.product._sha256_json", lambda files: calls.append(files) or "{}")
    metadata = by_name(detect.products(tiny_pdr1))["fibers"].spec.metadata
    metadata = pickle.loads(pickle.dumps(metadata))
    assert "sha256" in list(metadata) and calls == []
    assert metadata["sha256"] == "{}" and metadata["sha256"] == "{}"
    assert len(calls) == 1


def test_long_string_columns_become_one_array():
    """pa.array splits large fixed-width byte arrays into chunks and cuts strings at the first NUL."""
    values = np.array([b"20170209025_3_multi_046_073_153_RU_015", b"a\x00b", b""], dtype="S38").repeat(200_000)
    source = detect.SourceTable(Path("detect_hdr3.h5"), "/Detections", values.dtype, len(values), 0)
    array = detect.column_array(values, pa.string(), source, "detections", "fiber_id", 0)
    assert isinstance(array, pa.StringArray) and len(array) == len(values) and array.null_count == 0
    assert [array[i].as_py() for i in (0, 199_999, 200_000, 400_000)] == [
        "20170209025_3_multi_046_073_153_RU_015",
        "20170209025_3_multi_046_073_153_RU_015",
        "a\x00b",
        "",
    ]


@pytest.fixture
def copy_detect(tiny_pdr1, tmp_path) -> Path:
    """A release holding a writable copy of the tiny mock's detect/ directory."""
    shutil.copytree(tiny_pdr1 / "detect", tmp_path / "detect")
    return tmp_path


def test_missing_continuum_files(copy_detect):
    for *_, name in FILES:
        if name.startswith("cont_"):
            (copy_detect / "detect" / name).unlink()
    products = by_name(detect.products(copy_detect))
    assert sorted(products) == ["detection_spectra", "detections", "fibers"]
    for product in products.values():
        assert any("cont_hdr3.h5" in note and "cont_hdr5.h5" in note for note in product.notes)
        table = drain(product)
        assert table.num_rows == product.expected_rows and set(table["det_type"].to_pylist()) == {"line"}
    detections = drain(products["detections"])
    assert detections["detectname"].null_count == detections.num_rows


def test_missing_wdcor_leaves_out_calibrated_catalogs(copy_detect, caplog):
    (copy_detect / "detect" / "wdcor.txt").unlink()
    products = by_name(detect.products(copy_detect))
    assert sorted(products) == ["fibers"]
    assert any("wdcor.txt is missing" in note for note in products["fibers"].notes)
    assert json.loads(products["fibers"].spec.metadata["notes"]) == products["fibers"].notes
    assert "wdcor.txt is missing" in caplog.text


def test_missing_files_give_no_products(copy_detect):
    (copy_detect / "detect" / "detect_index_hdr5.h5").unlink()
    assert detect_index.products(copy_detect) == []
    for *_, name in FILES:
        (copy_detect / "detect" / name).unlink()
    assert detect.products(copy_detect) == []


def test_columns_beyond_the_data_model_are_carried(copy_detect):
    rewrite(copy_detect / "detect" / "detect_hdr4.h5", "/Detections", add_column("plae", "f4"))
    product = by_name(detect.products(copy_detect))["detections"]
    assert any("plae" in note for note in product.notes)
    table = drain(product)
    assert table.schema.field("plae").type == pa.float32()
    assert table.column_names.index("plae") < table.column_names.index("survey")
    is_hdr4_line = np.array(table["survey"].to_pylist()) == "hdr4"
    is_hdr4_line &= np.array(table["det_type"].to_pylist()) == "line"
    plae = as_numpy(table["plae"])
    assert np.isnan(plae[~is_hdr4_line]).all() and table["plae"].null_count == (~is_hdr4_line).sum()
    assert_same(pa.chunked_array([plae[is_hdr4_line]]), np.arange(is_hdr4_line.sum(), dtype=np.float32), "plae")


# ---------------------------------------------------------------------------------------------------
# Bad inputs: each case changes a copy of detect/ and names the product whose reading must fail.


def rewrite(path: Path, node: str, change: Callable[[np.ndarray], np.ndarray | None]) -> None:
    """Rewrite an HDF5 file with ``change`` applied to the records of table ``node`` (None drops it)."""
    with tb.open_file(path) as h5:
        title = h5.title
        tables = [(t.name, t.title, t.read()) for t in h5.root._f_iter_nodes("Table")]
    with tb.open_file(path, "w", title=title) as h5:
        for name, table_title, rows in tables:
            if f"/{name}" == node:
                rows = change(rows)
            if rows is not None:
                h5.create_table("/", name, obj=rows, title=table_title)


def set_value(column: str, row: int, value) -> Callable[[np.ndarray], np.ndarray]:
    def change(rows: np.ndarray) -> np.ndarray:
        rows[column][row] = value
        return rows

    return change


def drop(*columns: str) -> Callable[[np.ndarray], np.ndarray]:
    def change(rows: np.ndarray) -> np.ndarray:
        kept = [name for name in rows.dtype.names if name not in columns]
        out = np.zeros(len(rows), dtype=[(name, rows.dtype.fields[name][0]) for name in kept])
        for name in kept:
            out[name] = rows[name]
        return out

    return change


def retype(column: str, dtype: str, shape: tuple[int, ...] = ()) -> Callable[[np.ndarray], np.ndarray]:
    """Give ``column`` another dtype, or a shorter per-row shape (values truncated)."""

    def change(rows: np.ndarray) -> np.ndarray:
        new = (dtype, shape) if shape else dtype
        fields = [(name, new if name == column else rows.dtype.fields[name][0]) for name in rows.dtype.names]
        out = np.zeros(len(rows), dtype=fields)
        for name in rows.dtype.names:
            out[name] = rows[name][:, : shape[0]] if name == column and shape else rows[name]
        return out

    return change


def add_column(column: str, dtype: str) -> Callable[[np.ndarray], np.ndarray]:
    """Append ``column`` holding the row numbers."""

    def change(rows: np.ndarray) -> np.ndarray:
        out = np.zeros(
            len(rows), dtype=[*((name, rows.dtype.fields[name][0]) for name in rows.dtype.names), (column, dtype)]
        )
        for name in rows.dtype.names:
            out[name] = rows[name]
        out[column] = np.arange(len(rows))
        return out

    return change


def in_turn(*mutations: Callable[[Path], None]) -> Callable[[Path], None]:
    def mutate(path: Path) -> None:
        for mutation in mutations:
            mutation(path)

    return mutate


def truncate(path: Path) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size // 2)


def replace_by_directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


def edit(node: str, change: Callable[[np.ndarray], np.ndarray | None]) -> Callable[[Path], None]:
    return lambda path: rewrite(path, node, change)


def copy_first_detectid(row: int, node: str, from_file: str | None = None) -> Callable[[Path], None]:
    """Row ``row`` of ``node`` takes the first detectid of ``node`` in ``from_file`` (default: the same file)."""

    def mutate(path: Path) -> None:
        first = int(read_table(path if from_file is None else path.with_name(from_file), node)["detectid"][0])
        rewrite(path, node, set_value("detectid", row, first))

    return mutate


BAD_INPUTS = [
    # (id, file, mutation of that file, module, product, problem, where)
    ("truncated", "detect_hdr3.h5", truncate, detect, None, "truncated file", None),
    ("not hdf5", "cont_hdr4.h5", lambda p: p.write_text("not HDF5\n"), detect, None, "not a readable HDF5 file", None),
    ("empty file", "detect_hdr5.h5", lambda p: p.write_bytes(b""), detect, None, "empty file", None),
    ("directory", "detect_hdr4.h5", replace_by_directory, detect, None, "is a directory", None),
    ("no /Spectra", "detect_hdr4.h5", edit("/Spectra", lambda r: None), detect, None,
     "missing table node /Spectra", None),
    ("missing columns", "detect_hdr3.h5", edit("/Detections", drop("wave", "sn")), detect, None,
     "missing required column(s): wave, sn", "/Detections"),
    ("spec1d 1035", "cont_hdr3.h5", edit("/Spectra", retype("spec1d", "f4", (1035,))), detect, None,
     "column spec1d is float32 of shape (1035,), expected float32 of shape (1036,)", "/Spectra column spec1d"),
    ("ra as float64", "detect_hdr5.h5", edit("/Fibers", retype("ra", "f8")), detect, None,
     "column ra is float64, expected float32", "/Fibers column ra"),
    ("line-only column retyped", "cont_hdr3.h5", edit("/Detections", add_column("apcor", "f8")), detect, None,
     "column apcor is double here but float in the data model", "/Detections column apcor"),
    ("NaN dec", "detect_hdr4.h5", edit("/Detections", set_value("dec", 2, np.nan)), detect,
     "detections", "dec = nan is NaN or outside [-90, 90] degrees", "/Detections row 2, column dec"),
    ("ra 400 in fibres", "detect_hdr3.h5", edit("/Fibers", set_value("ra", 5, 400.0)), detect,
     "fibers", "ra = 400.0 is NaN or outside [0, 360] degrees", "/Fibers row 5, column ra"),
    ("duplicate detectid", "detect_hdr3.h5",
     copy_first_detectid(3, "/Detections"),
     detect, "detections", "duplicate detectid 3000000001", "/Detections rows 0 and 3"),
    ("duplicate across files", "cont_hdr3.h5",
     copy_first_detectid(1, "/Detections", from_file="detect_hdr3.h5"),
     detect, "detections", "duplicate detectid 3000000001: also in detect_hdr3.h5", "/Detections row 1"),
    ("duplicate spectrum", "detect_hdr4.h5",
     copy_first_detectid(4, "/Spectra"),
     detect, "detection_spectra", "duplicate detectid", "/Spectra rows 0 and 4"),
    ("duplicate spectrum across files", "cont_hdr3.h5",
     in_turn(*(copy_first_detectid(0, node, from_file="detect_hdr3.h5") for node in ("/Detections", "/Spectra"))),
     detect, "detection_spectra", "duplicate detectid 3000000001: also in detect_hdr3.h5", "/Spectra row 0"),
    ("wrong release", "detect_hdr4.h5", edit("/Detections", set_value("detectid", 3, 3_555_000_000)),
     detect, "detections", "detectid 3555000000 does not belong to hdr4", "/Detections row 3, column detectid"),
    ("spectrum without detection", "detect_hdr5.h5",
     edit("/Spectra", set_value("detectid", 1, 5_000_999_999)), detect, "detection_spectra",
     "detectid 5000999999 is absent from /Detections", "/Spectra row 1"),
    ("fibre without detection", "detect_hdr5.h5",
     edit("/Fibers", set_value("detectid", 7, 5_000_999_999)), detect, "fibers",
     "detectid 5000999999 is absent from /Detections", "/Fibers row 7"),
    ("bad UTF-8", "cont_hdr4.h5", edit("/Detections", set_value("amp", 1, b"\xff\xfe")), detect,
     "detections", "not UTF-8 text: b'\\xff\\xfe'", "/Detections row 1, column amp"),
    ("wdcor 1035 lines", "wdcor.txt", lambda p: p.write_text("".join(p.read_text().splitlines(True)[1:])), detect,
     None, "1035 data lines, expected 1036", None),
    ("wdcor off grid", "wdcor.txt", lambda p: p.write_text(p.read_text().replace("3480 ", "3481 ", 1)), detect,
     None, "wavelength 3481, expected 3480", "line 6"),
    ("index NaN ra", "detect_index_hdr5.h5", edit("/DetectIndex", set_value("ra", 9, np.nan)),
     detect_index, "detect_index", "ra = nan is NaN", "/DetectIndex row 9, column ra"),
    ("index survey", "detect_index_hdr5.h5", edit("/DetectIndex", set_value("survey", 4, b"hdr5")),
     detect_index, "detect_index", "does not belong to survey hdr5", "/DetectIndex row 4, column detectid"),
    ("index duplicate", "detect_index_hdr5.h5",
     edit("/DetectIndex", set_value("detectid", 8, 3_000_000_001)), detect_index, "detect_index",
     "duplicate detectid 3000000001", "/DetectIndex rows 0 and 8"),
    ("index empty", "detect_index_hdr5.h5", lambda p: p.write_bytes(b""), detect_index, None, "empty file", None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("file", "mutate", "module", "product", "problem", "where"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_INPUTS],
)
def test_bad_input_raises_ingest_error(copy_detect, file, mutate, module, product, problem, where):
    path = copy_detect / "detect" / file
    mutate(path)
    chunks = {"chunk_rows": 2} | ({"spectra_chunk_rows": 2} if module is detect else {})
    with pytest.raises(IngestError) as raised:
        products = by_name(module.products(copy_detect, **chunks))
        assert product is not None, "products() should have rejected the input"
        drain(products[product])
    error = raised.value
    assert Path(error.path) == path
    assert problem in error.problem
    if where is not None:
        assert error.where is not None and where in error.where
    if product is not None:
        assert error.product == product
    assert file in str(error) and problem in str(error)


def test_spectra_through_the_writer_read_back_by_duckdb(built, tmp_path):
    product, table = built["detection_spectra"]
    write_catalog(product.batches(), product.spec, tmp_path, workers=1)
    files = sorted((tmp_path / product.name / product.name / "dataset").glob("Norder=*/Dir=*/Npix=*/*.parquet"))
    assert files
    paths = ", ".join(f"'{f}'" for f in files)
    query = (
        f"SELECT detectid, spec::FLOAT[1036] AS spec, spec_err::FLOAT[1036] AS spec_err FROM read_parquet([{paths}])"
    )
    back = duckdb.sql(query).to_arrow_table().sort_by("detectid")
    expected = table.sort_by("detectid")
    assert_same(back["detectid"], as_numpy(expected["detectid"]), "detectid")
    for column in ("spec", "spec_err"):
        assert_same(back[column], as_numpy(expected[column]), column)
    metadata = pq.read_schema(files[0]).metadata
    assert json.loads(metadata[b"sha256"]) == json.loads(product.spec.metadata["sha256"])
