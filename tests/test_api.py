"""The Python API (``dexdb.open``) on the tiny mock: each method against the SQL macro it runs and
against an independent computation (astropy separations and search_around_sky, the Parquet files
read with pyarrow, the cube headers' WCS, a brute-force friends-of-friends, lsdb); astropy inputs
with units; polars dtypes; bad arguments; threads and processes reading at once."""

from __future__ import annotations

import multiprocessing
import pickle
import shutil
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import astropy.units as u
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.coordinates import SkyCoord, search_around_sky
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

import dexdb
from dexdb import sqlload
from dexdb.constants import FLUX_DENSITY_UNIT, N_WAVE, WAVE

COSMOS_AGN = (150.23189, 2.363963)
LAB = (228.78581, 51.268036)
# DuckDB and astropy compute distances from the same float64 values to ~1e-10"; pairs this close to
# the radius may fall on either side, so comparisons leave them out.
BORDER_ARCSEC = 1e-6
LSDB_SLACK_ARCSEC = 0.05


@pytest.fixture(scope="module")
def cat(tiny_catalogs):
    catalog = dexdb.open(tiny_catalogs)
    yield catalog
    catalog.close()


@pytest.fixture(scope="module")
def con(tiny_catalogs):
    connection = sqlload.connect(tiny_catalogs)
    yield connection
    connection.close()


def parquet_rows(out: Path, catalog: str) -> pl.DataFrame:
    """Every row of a catalog, read from its partition files with pyarrow (no DuckDB, no dexdb)."""
    files = sorted((out / catalog / catalog / "dataset").glob("Norder=*/Dir=*/Npix=*/*.parquet"))
    return pl.from_arrow(pa.concat_tables([pq.read_table(f) for f in files]))


def separation_arcsec(ra, dec, ra0, dec0) -> np.ndarray:
    return SkyCoord(ra, dec, unit="deg").separation(SkyCoord(ra0, dec0, unit="deg")).arcsec


def position_columns(catalog: str) -> tuple[str, str]:
    return {"sources": ("RA", "DEC"), "ifu_index": ("ra_cen", "dec_cen")}.get(catalog, ("ra", "dec"))


# --------------------------------------------------------------------------------------------------
# cone


@pytest.mark.parametrize(("catalog", "id_column", "ra", "dec", "radius"), [
    ("sources", "source_id", *COSMOS_AGN, 3.0),
    ("sources", "source_id", *LAB, 600.0),
    ("detections", "detectid", *COSMOS_AGN, 120.0),
    ("detection_spectra", "detectid", *LAB, 37.0),
    ("ifu_index", "cube_id", *LAB, 200.0),
    ("source_groups", "group_id", *COSMOS_AGN, 30.0),
])
def test_cone_equals_astropy_over_every_row_and_the_macro(cat, con, tiny_catalogs, catalog, id_column, ra, dec, radius):
    got = cat.cone(catalog, ra, dec, radius)
    rows = parquet_rows(tiny_catalogs, catalog)
    ra_column, dec_column = position_columns(catalog)
    dist = separation_arcsec(rows[ra_column].to_numpy().astype(np.float64), rows[dec_column].to_numpy().astype(np.float64),
                             ra, dec)
    ids = rows[id_column].to_numpy()
    clear = set(ids[np.abs(dist - radius) > BORDER_ARCSEC].tolist())
    expected = set(ids[dist <= radius].tolist())
    got_ids = got[id_column].to_list()
    assert expected and set(got_ids) & clear == expected & clear
    by_id = dict(zip(rows[id_column].to_list(), dist))
    np.testing.assert_allclose(got["dist_arcsec"].to_numpy(), [by_id[i] for i in got_ids], rtol=0, atol=1e-6)
    assert got["dist_arcsec"].is_sorted()
    # the same rows and values as the macro called in SQL
    macro = con.sql(f"SELECT * FROM cone('{catalog}', {ra!r}, {dec!r}, {radius!r})").pl()
    assert got.equals(macro)


def test_cone_takes_astropy_angles(cat):
    coord = SkyCoord(*COSMOS_AGN, unit="deg")
    in_degrees = cat.cone("sources", *COSMOS_AGN, 36.0)
    assert cat.cone("sources", coord.ra, coord.dec, 0.01 * u.deg).equals(in_degrees)
    assert cat.cone("sources", coord.ra.to(u.hourangle), coord.dec.to(u.arcmin), 0.6 * u.arcmin).equals(in_degrees)


def test_cone_columns_select_what_is_read(cat):
    full = cat.cone("sources", *COSMOS_AGN, 5.0)
    some = cat.cone("sources", *COSMOS_AGN, 5.0, columns=["source_id", "ra", "z_hetdex"])
    assert some.columns == ["source_id", "RA", "z_hetdex", "dist_arcsec"]  # the catalog's spelling
    assert some.equals(full.select(some.columns))


# --------------------------------------------------------------------------------------------------
# cross-match


@pytest.fixture(scope="module")
def targets(tiny_catalogs) -> pl.DataFrame:
    """Positions within ~2" of every HPSC2 row (so that many match at 1.5"), plus two far from any."""
    rng = np.random.default_rng(5)
    sources = parquet_rows(tiny_catalogs, "sources")
    ra, dec = sources["RA"].to_numpy().astype(np.float64), sources["DEC"].to_numpy().astype(np.float64)
    offset = rng.uniform(-1.4, 1.4, (2, ra.size)) / 3600
    ra = np.concatenate([ra + offset[0] / np.cos(np.radians(dec)), [10.0, 300.0]])
    dec = np.concatenate([dec + offset[1], [-40.0, 80.0]])
    return pl.DataFrame({"name": [f"t{i}" for i in range(ra.size)], "ra": ra, "dec": dec})


def astropy_pairs(targets: pl.DataFrame, rows: pl.DataFrame, id_column: str, radius: float) -> tuple[set, set]:
    """(pairs within the radius, pairs within BORDER_ARCSEC of it) by search_around_sky."""
    ra_column, dec_column = ("RA", "DEC") if "RA" in rows.columns else ("ra", "dec")
    left = SkyCoord(targets["ra"].to_numpy(), targets["dec"].to_numpy(), unit="deg")
    right = SkyCoord(rows[ra_column].to_numpy().astype(np.float64), rows[dec_column].to_numpy().astype(np.float64),
                     unit="deg")
    i, j, sep, _ = search_around_sky(left, right, (radius + 0.01) * u.arcsec)
    names, ids = targets["name"].to_numpy(), rows[id_column].to_numpy()
    sep = sep.arcsec
    inside = {(names[a], int(ids[b])) for a, b, s in zip(i, j, sep) if s <= radius}
    border = {(names[a], int(ids[b])) for a, b, s in zip(i, j, sep) if abs(s - radius) <= BORDER_ARCSEC}
    return inside, border


@pytest.mark.parametrize("convert", ["polars", "pandas", "arrow", "astropy", "astropy_hourangle", "lazy"])
def test_xmatch_equals_search_around_sky_for_every_input_kind(cat, tiny_catalogs, targets, convert):
    table = {
        "polars": lambda t: t,
        "pandas": lambda t: t.to_pandas(),
        "arrow": lambda t: t.to_arrow(),
        "astropy": lambda t: Table({"name": t["name"].to_list(), "ra": t["ra"].to_numpy() * u.deg,
                                    "dec": t["dec"].to_numpy() * u.deg}),
        "astropy_hourangle": lambda t: Table({"name": t["name"].to_list(),
                                              "ra": (t["ra"].to_numpy() * u.deg).to(u.hourangle),
                                              "dec": (t["dec"].to_numpy() * u.deg).to(u.arcsec)}),
        "lazy": lambda t: t.lazy(),
    }[convert](targets)
    got = cat.xmatch(table, "sources", 1.5)
    pairs = set(zip(got["name"].to_list(), got["source_id"].to_list()))
    expected, border = astropy_pairs(targets, parquet_rows(tiny_catalogs, "sources"), "source_id", 1.5)
    assert len(expected) > 20
    assert pairs - border == expected - border


def test_xmatch_takes_a_skycoord_and_keeps_the_nearest(cat, tiny_catalogs, targets):
    coords = SkyCoord(targets["ra"].to_numpy(), targets["dec"].to_numpy(), unit="deg")
    nearest = cat.xmatch(coords, "detections", 2.0, nearest=True)
    every = cat.xmatch(targets, "detections", 2.0)
    assert nearest.columns[:2] == ["ra", "dec"] and nearest.height == every["name"].n_unique()
    detections = parquet_rows(tiny_catalogs, "detections")
    dist = separation_arcsec(detections["ra"].to_numpy().astype(np.float64)[None, :],
                             detections["dec"].to_numpy().astype(np.float64)[None, :],
                             targets["ra"].to_numpy()[:, None], targets["dec"].to_numpy()[:, None])
    best = np.argmin(dist, axis=1)
    expected = {(round(targets["ra"][i], 9), int(detections["detectid"][int(best[i])]))
                for i in range(targets.height) if dist[i, best[i]] <= 2.0}
    assert {(round(r, 9), d) for r, d in zip(nearest["ra"].to_list(), nearest["detectid"].to_list())} == expected


def test_xmatch_of_two_catalogs_is_the_macro_on_their_views(cat, con):
    got = cat.xmatch("detections", "sources", 1.0)
    assert got.height > 0 and got.equals(con.sql("SELECT * FROM xmatch('detections', 'sources', 1.0)").pl())


def test_lsdb_crossmatch_of_the_same_files_equals_the_sql_xmatch(cat):
    """Detections against HPSC2 sources, both handed to lsdb with their margin caches. lsdb's distances
    are approximate (0.977" for a pair 1.0024" apart on the tiny mock), so pairs whose exact separation
    lies within LSDB_SLACK_ARCSEC of the radius may differ."""
    lsdb = pytest.importorskip("lsdb")
    detections, sources = cat.to_lsdb("detections"), cat.to_lsdb("sources")
    assert detections.margin is not None and sources.margin is not None
    matched = detections.crossmatch(sources, radius_arcsec=1.0, n_neighbors=50, suffixes=("", "_src")).compute()
    via_lsdb = set(zip(matched["detectid"].astype(int), matched["source_id_src"].astype(int)))
    sql = cat.xmatch("detections", "sources", 2.0)
    exact = dict(zip(zip(sql["detectid"].to_list(), sql["source_id"].to_list()),
                     separation_arcsec(sql["ra"].to_numpy().astype(np.float64), sql["dec"].to_numpy().astype(np.float64),
                                       sql["RA_1"].to_numpy().astype(np.float64), sql["DEC_1"].to_numpy().astype(np.float64))))
    assert via_lsdb <= set(exact)
    border = {pair for pair, dist in exact.items() if abs(dist - 1.0) <= LSDB_SLACK_ARCSEC}
    within = {pair for pair, dist in exact.items() if dist <= 1.0}
    assert len(within) > 100 and len(border) < 5
    assert via_lsdb - border == within - border
    at_radius = cat.xmatch("detections", "sources", 1.0)
    assert set(zip(at_radius["detectid"].to_list(), at_radius["source_id"].to_list())) == within


# --------------------------------------------------------------------------------------------------
# spectra


def test_spectra_are_the_parquet_arrays_in_the_given_order(cat, tiny_catalogs):
    stored = parquet_rows(tiny_catalogs, "detection_spectra")
    ids = stored["detectid"].to_list()[::-7][:12] + [1]  # reversed sample and one unknown id
    got = cat.spectra(detectids=ids)
    assert got.schema == pl.Schema({"detectid": pl.Int64, "wave": pl.Array(pl.Float32, N_WAVE),
                                    "spec": pl.Array(pl.Float32, N_WAVE), "spec_err": pl.Array(pl.Float32, N_WAVE)})
    assert got["detectid"].to_list() == ids
    by_id = {row["detectid"]: row for row in stored.select("detectid", "spec", "spec_err").iter_rows(named=True)}
    arrays = cat.spectra_arrays(detectids=ids)
    assert arrays.spec.shape == arrays.spec_err.shape == (len(ids), N_WAVE) and arrays.spec.dtype == np.float32
    np.testing.assert_array_equal(arrays.wave, WAVE)
    np.testing.assert_array_equal(arrays.ids, ids)
    for i, detectid in enumerate(ids[:-1]):
        np.testing.assert_array_equal(arrays.spec[i], np.asarray(by_id[detectid]["spec"], dtype=np.float32))
        np.testing.assert_array_equal(arrays.spec_err[i], np.asarray(by_id[detectid]["spec_err"], dtype=np.float32))
    assert got["spec"][-1] is None and np.isnan(arrays.spec[-1]).all()


def test_source_spectra_and_their_rows(cat, con, tiny_catalogs):
    stored = parquet_rows(tiny_catalogs, "source_spectra")
    ids = stored["source_id"].to_list()[:5]
    arrays = cat.spectra_arrays(source_ids=pl.Series(ids))
    by_id = dict(zip(stored["source_id"].to_list(), stored["spec"].to_numpy()))
    np.testing.assert_array_equal(arrays.spec, np.stack([by_id[i] for i in ids]))
    rows = cat.spectrum_rows(source_ids=np.array(ids))
    assert rows.columns == ["source_id", "k", "wave", "flux", "err"] and rows.height == 5 * N_WAVE
    np.testing.assert_array_equal(rows["flux"].to_numpy().reshape(5, N_WAVE), arrays.spec)
    np.testing.assert_array_equal(rows["wave"].to_numpy()[:N_WAVE], WAVE)
    assert rows.equals(con.sql(f"SELECT source_id, k, wave, flux, err FROM spectra_rows_by_source_id({ids})").pl())


def test_astropy_table_carries_units(cat):
    table = dexdb.to_astropy(cat.spectra(detectids=[cat.sql("SELECT min(detectid) AS d FROM detection_spectra")["d"][0]]))
    assert table["spec"].unit == u.Unit(FLUX_DENSITY_UNIT) and table["spec"].shape == (1, N_WAVE)
    assert table["wave"].unit == u.AA and table["spec_err"].unit == u.Unit(FLUX_DENSITY_UNIT)
    near = dexdb.to_astropy(cat.xmatch(pl.DataFrame({"ra": [COSMOS_AGN[0]], "dec": [COSMOS_AGN[1]]}), "sources", 2.0))
    assert near["RA_1"].unit == u.deg and near["ra"].unit == u.deg and near["dist_arcsec"].unit == u.arcsec
    assert near["source_id"].unit is None
    flux = (np.asarray(table["spec"][0]) * table["spec"].unit).to(u.erg / u.s / u.cm**2 / u.AA)
    np.testing.assert_allclose(flux.value, np.asarray(table["spec"][0], dtype=np.float64) * 1e-17, rtol=1e-6)


def test_plot_spectra_writes_an_image_and_no_temporary(cat, tmp_path):
    ids = cat.cone("sources", *COSMOS_AGN, 2.0, columns=["source_id"])["source_id"]
    path = dexdb.plot_spectra(cat.spectra(source_ids=ids), tmp_path / "agn.png", title="COSMOS AGN")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["agn.png"]


# --------------------------------------------------------------------------------------------------
# multi-epoch groups


def brute_force_groups(ids: np.ndarray, ra: np.ndarray, dec: np.ndarray, linking_arcsec: float) -> dict[int, int]:
    """source_id -> smallest source_id of its friends-of-friends group (all pairs, union-find)."""
    sep = separation_arcsec(ra[:, None], dec[:, None], ra[None, :], dec[None, :])
    parent = list(range(ids.size))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(np.triu(sep <= linking_arcsec, k=1))):
        parent[max(root(i), root(j))] = min(root(i), root(j))
    smallest: dict[int, int] = {}
    for i in range(ids.size):
        smallest[root(i)] = min(smallest.get(root(i), int(ids[i])), int(ids[i]))
    return {int(ids[i]): smallest[root(i)] for i in range(ids.size)}


def test_groups_and_members_of_the_cosmos_agn_equal_a_brute_force(cat, tiny_catalogs):
    sources = parquet_rows(tiny_catalogs, "sources")
    group_of = brute_force_groups(sources["source_id"].to_numpy(), sources["RA"].to_numpy().astype(np.float64),
                                  sources["DEC"].to_numpy().astype(np.float64), 1.5)
    found = cat.groups(*COSMOS_AGN, 3.0)
    assert found.height == 1 and found["n_epochs"][0] == 9
    (group_id,) = found["group_id"].to_list()
    members = cat.group_members(found["group_id"], columns=["source_id", "shotid"])
    assert members.columns == ["group_id", "source_id", "shotid"]
    assert set(members["source_id"].to_list()) == {s for s, g in group_of.items() if g == group_id}
    assert members["shotid"].n_unique() == 9 and members["shotid"].is_sorted()
    assert sorted(found["source_ids"][0].to_list()) == sorted(members["source_id"].to_list())


@pytest.mark.parametrize("linking", [0.3, 3.0, 20.0])
def test_regroup_equals_a_brute_force(cat, linking):
    near = cat.cone("sources", *COSMOS_AGN, 3600.0, columns=["source_id", "RA", "DEC"])
    got = cat.regroup(near, linking * u.arcsec)
    expected = brute_force_groups(near["source_id"].to_numpy(), near["RA"].to_numpy().astype(np.float64),
                                  near["DEC"].to_numpy().astype(np.float64), linking)
    assert dict(zip(got["source_id"].to_list(), got["group_id"].to_list())) == expected
    sizes = pd.Series(expected).value_counts()
    assert got["group_size"].to_list() == [int(sizes[g]) for g in got["group_id"].to_list()]


# --------------------------------------------------------------------------------------------------
# cube coverage


def test_cubes_equal_the_cube_headers(cat, tiny_pdr1):
    """Positions well inside each cube (pixels 5..98) and well outside (> 8 pixels beyond an edge), so
    that the footprint test of the WCS needs no edge convention."""
    rng = np.random.default_rng(11)
    index = cat.sql("SELECT path, cube_id FROM ifu_index")
    headers = {}
    for path, cube_id in index.iter_rows():
        with fits.open(tiny_pdr1 / path) as hdus:
            headers[cube_id] = WCS(hdus["DATA"].header).celestial
    ra, dec = [], []
    for wcs in headers.values():
        inside = rng.uniform(5, 98, (2, 3))
        outside = np.stack([rng.choice([-15.0, 118.0], 3), rng.uniform(0, 103, 3)])
        world = wcs.pixel_to_world_values(*np.concatenate([inside, outside], axis=1))
        ra.extend(world[0])
        dec.extend(world[1])
    ra, dec = np.array(ra), np.array(dec)
    expected = set()
    for cube_id, wcs in headers.items():
        x, y = wcs.world_to_pixel_values(ra, dec)
        assert not np.any((np.abs(x - 51.5) > 50) & (np.abs(x - 51.5) < 60))  # none near an edge
        expected |= {(int(i), cube_id) for i in np.flatnonzero((np.abs(x - 51.5) <= 52) & (np.abs(y - 51.5) <= 52))}
    covering = cat.cubes_covering(pl.DataFrame({"i": np.arange(ra.size), "ra": ra, "dec": dec}))
    assert set(zip(covering["i"].to_list(), covering["cube_id"].to_list())) == expected
    for i in range(0, ra.size, 5):
        at = cat.cubes_at(ra[i] * u.deg, dec[i] * u.deg)
        assert set(at["cube_id"].to_list()) == {c for j, c in expected if j == i}
        assert all(url.endswith("/" + path) for url, path in zip(at["url"].to_list(), at["path"].to_list()))


# --------------------------------------------------------------------------------------------------
# polars scan and the files


def test_scan_reads_every_row_with_the_hive_columns(cat, tiny_catalogs):
    scanned = cat.scan("source_spectra").collect()
    assert scanned.schema["spec"] == pl.Array(pl.Float32, N_WAVE)
    assert {"Norder", "Dir", "Npix"} <= set(scanned.columns)
    stored = parquet_rows(tiny_catalogs, "source_spectra")
    assert scanned.sort("source_id").select(stored.columns).equals(stored.sort("source_id"))


def test_scan_filters_on_hive_columns_skip_other_files(cat, tiny_catalogs, tmp_path):
    """A copy of the catalogs whose other partitions are not Parquet: a filter on Npix reads only its own."""
    copy = tmp_path / "out"
    shutil.copytree(tiny_catalogs, copy, symlinks=True)
    files = sorted((copy / "detections" / "detections" / "dataset").glob("Norder=*/Dir=*/Npix=*/*.parquet"))
    assert len(files) >= 2
    kept, *damaged = files
    for path in damaged:
        path.write_bytes(b"not parquet")
    npix = int(kept.parent.name.split("=")[1])
    with dexdb.open(copy) as broken:
        rows = broken.scan("detections").filter(pl.col("Npix") == npix).collect()
        assert rows.height == pq.read_metadata(kept).num_rows > 0
        with pytest.raises(pl.exceptions.PolarsError):
            broken.scan("detections").collect()


# --------------------------------------------------------------------------------------------------
# arguments


@pytest.mark.parametrize(("call", "message"), [
    (lambda c: c.cone("nosuch", 1, 1, 1), "cone: unknown catalog 'nosuch'; the catalogs in .* are: .*sources"),
    (lambda c: c.cone("sources'; DROP VIEW sources; --", 1, 1, 1), "cone: unknown catalog"),
    (lambda c: c.cone("sources", 1, 1, 1, columns=["source_id", "nope"]), "cone: sources has no column 'nope'"),
    (lambda c: c.cone("sources", 1, 1, 1, columns=['source_id" FROM sources; --']), "cone: sources has no column"),
    (lambda c: c.cone("sources", 1, 1, 0), r"cone: radius_arcsec must lie in \(0, 36000\]"),
    (lambda c: c.cone("sources", 1, 1, -2 * u.arcsec), r"cone: radius_arcsec must lie in \(0, 36000\]"),
    (lambda c: c.cone("sources", float("nan"), 1, 1), "cone: ra must be a number of degrees, got NaN"),
    (lambda c: c.cone("sources", 1, np.nan, 1), "cone: dec must be a number of degrees, got NaN"),
    (lambda c: c.cone("sources", 1, 95, 1), r"cone: dec must lie in \[-90, 90\]"),
    (lambda c: c.cone("sources", 1 * u.m, 1, 1), "cone: ra must be an angle"),
    (lambda c: c.cone("sources", "north", 1, 1), "cone: ra must be a number"),
    (lambda c: c.spectra(detectids=[]), "spectra: detectids is empty"),
    (lambda c: c.spectra(source_ids=np.array([], dtype=np.int64)), "spectra: source_ids is empty"),
    (lambda c: c.spectra(detectids=[3000000001, float("nan")]), "spectra_by_detectid: detectid must be an integer"),
    (lambda c: c.spectra(detectids="3000000001"), "spectra: detectids must be a list of integer ids"),
    (lambda c: c.spectra(), "spectra: give either detectids or source_ids"),
    (lambda c: c.spectra(detectids=[1], source_ids=[2]), "spectra: give either detectids or source_ids"),
    (lambda c: c.group_members([]), "group_members: group_ids is empty"),
    (lambda c: c.xmatch(pl.DataFrame({"ra": [], "dec": []}), "sources", 1), "xmatch: the table has no rows"),
    (lambda c: c.xmatch(pl.DataFrame({"x": [1.0], "dec": [1.0]}), "sources", 1), "xmatch: the table needs one column ra"),
    (lambda c: c.xmatch(pl.DataFrame({"ra": [1.0], "dec": [None]}, schema={"ra": pl.Float64, "dec": pl.Float64}),
                        "sources", 1), "xmatch: user_table.dec must not be NULL"),
    (lambda c: c.xmatch(pl.DataFrame({"ra": [1.0], "dec": [1.0]}), "sources", float("nan")),
     "xmatch: radius_arcsec must be a number"),
    (lambda c: c.xmatch([(1.0, 1.0)], "sources", 1), "xmatch: expected a polars, pandas or pyarrow table"),
    (lambda c: c.xmatch(Table({"ra": [1.0] * u.m, "dec": [1.0] * u.deg}), "sources", 1), "xmatch: column ra must be an angle"),
    (lambda c: c.regroup(pl.DataFrame({"ra": [1.0], "dec": [1.0]}), 1.5), "regroup: the table needs a column source_id"),
    (lambda c: c.regroup(pl.DataFrame({"source_id": [1], "ra": [1.0], "dec": [1.0]}), 0),
     r"fof_groups: linking_arcsec must lie in \(0, 60\]"),
    (lambda c: c.cubes_at(1, float("nan")), "cubes_at: dec must be a number of degrees, got NaN"),
    (lambda c: c.scan("nosuch"), "scan: unknown catalog"),
    (lambda c: c.columns("nosuch"), "columns: unknown catalog"),
    (lambda c: c.sql("SELECT * FROM nosuch"), "nosuch does not exist"),
])
def test_bad_arguments_raise_one_clear_error(cat, call, message):
    with pytest.raises(dexdb.DexdbError, match=message):
        call(cat)


def test_values_are_bound_never_pasted(cat):
    text = "x'); SELECT 1; --"
    assert cat.sql("SELECT $v AS v", {"v": text})["v"].to_list() == [text]
    assert cat.sql("SELECT ? + 1 AS v", [41])["v"].to_list() == [42]
    assert cat.cone("sources", *COSMOS_AGN, 2.0).height == 9  # the views are intact


def test_open_reports_what_is_wrong(tmp_path, tiny_catalogs):
    with pytest.raises(dexdb.DexdbError, match="not a directory"):
        dexdb.open(tmp_path / "missing")
    with pytest.raises(dexdb.DexdbError, match="holds no dexdb catalogs"):
        dexdb.open(tmp_path)
    closed = dexdb.open(tiny_catalogs)
    closed.close()
    with pytest.raises(dexdb.DexdbError, match="the catalog is closed"):
        closed.cone("sources", *COSMOS_AGN, 1.0)


def test_catalogs_and_columns_come_from_the_views(cat, con):
    views = {name for (name,) in con.sql("SELECT view_name FROM duckdb_views() WHERE temporary").fetchall()}
    assert {"sources", "detections", "ifu_index", "source_spectra"} <= set(cat.catalogs) <= views
    assert "source_spectra_source_id_index" not in cat.catalogs
    assert cat.columns("sources") == {row[0]: row[1] for row in con.sql("DESCRIBE sources").fetchall()}


# --------------------------------------------------------------------------------------------------
# several readers at once


def mixed_calls(catalog: dexdb.Catalog, k: int) -> tuple:
    """A cone, a cross-match, spectra and cube coverage; k varies the position."""
    ra, dec = COSMOS_AGN if k % 2 else LAB
    near = catalog.cone("sources", ra, dec, 30.0 + k)
    matched = catalog.xmatch(near.select("source_id", ra="RA", dec="DEC"), "detections", 2.0)
    spectra = catalog.spectra_arrays(source_ids=near["source_id"])
    return (near["source_id"].to_list(), matched["detectid"].to_list(), float(np.nansum(spectra.spec)),
            catalog.cubes_at(ra, dec)["cube_id"].to_list())


def test_threads_share_one_catalog(cat):
    serial = [mixed_calls(cat, k) for k in range(4)]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda k: mixed_calls(cat, k % 4), range(12)))
    assert parallel == serial * 3
    assert all(s[0] for s in serial)


def test_processes_read_at_once(cat):
    """The Catalog pickles as its path; each process opens its own DuckDB database."""
    assert pickle.loads(pickle.dumps(cat)).path == cat.path
    expected = [mixed_calls(cat, k) for k in range(2)]
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        assert list(pool.map(mixed_calls, [cat] * 2, range(2))) == expected
