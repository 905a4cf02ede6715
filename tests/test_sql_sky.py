"""The sky macros of sql/20_sky.sql against independent computations: distances against astropy,
HEALPix indices and neighbours against healpy, cones against brute force, cross-matches against
astropy's search_around_sky, cube coverage against the WCS of the cube FITS headers, and partition and
row-group pruning read from DuckDB's profiler. Besides the ingested tiny mock, a synthetic catalog puts
rows where the mock has none: across RA 0/360, at both poles and where partitions of different orders
meet."""

from __future__ import annotations

import json
import re
from pathlib import Path

import astropy.units as u
import duckdb
import healpy as hp
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.coordinates import SkyCoord, search_around_sky
from astropy.io import fits
from astropy.wcs import WCS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dexdb import sqlload
from dexdb.ingest.hats_layout import (
    PARTITION_BOUNDS,
    cone_partition_files,
    partition_file,
    partition_files,
    write_partition_bounds,
    write_partition_info,
)
from dexdb.ingest.hats_sky import healpix29

COSMOS_AGN = (150.23189, 2.363963)
DEC_Z_TWO_THIRDS = float(np.degrees(np.arcsin(2 / 3)))  # where healpy switches between belt and caps
RESOL0_ARCSEC = hp.nside2resol(1, arcmin=True) * 60
HYPOTHESIS = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# Distances computed by DuckDB and by astropy from the same float64 values agree to ~1e-10"; pairs this
# close to the radius may fall on either side, so comparisons leave them out.
BORDER_ARCSEC = 1e-6


@pytest.fixture(scope="module")
def con(tiny_catalogs):
    connection = sqlload.connect(tiny_catalogs)
    yield connection
    connection.close()


def column(con, query: str) -> list:
    return [row[0] for row in con.sql(query).fetchall()]


def register(con, table_name: str, **columns) -> None:
    con.register(table_name, pa.table({key: np.asarray(value) for key, value in columns.items()}))


def separation_arcsec(ra1, dec1, ra2, dec2) -> np.ndarray:
    return SkyCoord(ra1, dec1, unit="deg").separation(SkyCoord(ra2, dec2, unit="deg")).arcsec


# --------------------------------------------------------------------------------------------------
# strategies: positions biased to the poles, RA 0/360, the belt/cap boundary and pixel corners

special_ra = st.sampled_from([0.0, 360.0, 1e-12, 360 - 1e-12, 45.0, 90.0, 180.0, 270.0, 315.0])
special_dec = st.sampled_from([90.0, -90.0, 90 - 1e-9, -90 + 1e-9, DEC_Z_TWO_THIRDS, -DEC_Z_TWO_THIRDS, 0.0])
any_ra = st.one_of(st.floats(0, 360), special_ra, special_ra.flatmap(lambda v: st.floats(v - 1e-3, v + 1e-3)))
any_dec = st.one_of(
    st.floats(-90, 90),
    special_dec,
    special_dec.flatmap(lambda v: st.floats(max(-90.0, v - 1e-3), min(90.0, v + 1e-3))),
)


@st.composite
def pixel_corners(draw):
    """A corner of a random pixel: a point on the boundary of up to four pixels of every finer order."""
    order = draw(st.integers(0, 29))
    pixel = draw(st.integers(0, 12 * 4**order - 1))
    corner = draw(st.integers(0, 3))
    ra, dec = hp.vec2ang(hp.boundaries(1 << order, pixel, step=1, nest=True)[:, corner], lonlat=True)
    return float(ra[0]) % 360, float(np.clip(dec[0], -90, 90))


positions = st.one_of(st.tuples(any_ra, any_dec), pixel_corners())


# --------------------------------------------------------------------------------------------------
# angular distance


@HYPOTHESIS
@given(first=positions, offset=st.one_of(st.tuples(st.floats(-1e-4, 1e-4), st.floats(-1e-4, 1e-4)),
                                         st.tuples(st.floats(-360, 360), st.floats(-180, 180))))
def test_distance_equals_astropy(con, first, offset):
    ra1, dec1 = first
    ra2, dec2 = (ra1 + offset[0]) % 360, float(np.clip(dec1 + offset[1], -90, 90))
    got = column(con, f"SELECT ang_dist_arcsec({ra1!r}, {dec1!r}, {ra2!r}, {dec2!r})")[0]
    expected = separation_arcsec(ra1, dec1, ra2, dec2)
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-7)


def test_distance_of_many_pairs_and_nulls(con):
    rng = np.random.default_rng(1)
    ra1, ra2 = rng.uniform(0, 360, (2, 100_000))
    dec1, dec2 = np.degrees(np.arcsin(rng.uniform(-1, 1, (2, 100_000))))
    register(con, "pairs", ra1=ra1, dec1=dec1, ra2=ra2, dec2=dec2)
    got = np.array(column(con, "SELECT ang_dist_arcsec(ra1, dec1, ra2, dec2) FROM pairs"))
    np.testing.assert_allclose(got, separation_arcsec(ra1, dec1, ra2, dec2), rtol=1e-12, atol=1e-7)
    assert column(con, "SELECT ang_dist_arcsec(NULL, 0, 0, 0)") == [None]


# --------------------------------------------------------------------------------------------------
# HEALPix


@settings(HYPOTHESIS, max_examples=40)
@given(points=st.lists(positions, min_size=1, max_size=20))
def test_healpix_nest_equals_healpy(con, points):
    ra, dec = np.array(points).T
    register(con, "points", i=np.arange(len(ra)), ra=ra, dec=dec)
    got = con.sql("SELECT healpix_nest(k, ra, dec) FROM points, range(30) AS orders(k) ORDER BY k, i").fetchall()
    expected = [hp.ang2pix(1 << k, ra, dec, nest=True, lonlat=True) for k in range(30)]
    assert [row[0] for row in got] == np.concatenate(expected).tolist()


def test_healpix_nest_equals_healpy_on_many_points(con):
    """Random points, pixel corners of every order and the special places, at several orders."""
    rng = np.random.default_rng(2)
    ra = rng.uniform(0, 360, 200_000)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, 200_000)))
    orders = rng.integers(0, 30, 20_000)
    pixels = (rng.random(20_000) * 12 * 4.0**orders).astype(np.int64)
    corners = np.concatenate([hp.boundaries(1 << int(k), int(p), step=1, nest=True).T for k, p in zip(orders, pixels)])
    corner_ra, corner_dec = hp.vec2ang(corners, lonlat=True)
    grid_ra, grid_dec = np.meshgrid([0, 1e-13, 45, 90, 135, 180, 225, 270, 315, 360 - 1e-13, 360, -1e-9, 400],
                                    [-90, -89.99999, -DEC_Z_TWO_THIRDS, 0, DEC_Z_TWO_THIRDS, 89.99999, 90])
    ra = np.concatenate([ra, corner_ra % 360, grid_ra.ravel()])
    dec = np.concatenate([dec, np.clip(corner_dec, -90, 90), grid_dec.ravel()])
    register(con, "points", ra=ra, dec=dec)
    at29 = np.array(column(con, "SELECT healpix_nest(29, ra, dec) FROM points"))
    np.testing.assert_array_equal(at29, hp.ang2pix(1 << 29, ra, dec, nest=True, lonlat=True))
    for order in (0, 5, 13, 28):
        got = np.array(column(con, f"SELECT healpix_nest({order}, ra, dec) FROM points"))
        np.testing.assert_array_equal(got, hp.ang2pix(1 << order, ra, dec, nest=True, lonlat=True))
    assert column(con, "SELECT healpix_nest(3, NULL, 0)") == [None]


def test_cells_are_the_pixel_and_its_healpy_neighbours(con):
    rng = np.random.default_rng(3)
    for order in range(30):
        ra = np.concatenate([rng.uniform(0, 360, 300), rng.choice([0, 45, 90, 180, 359.9999], 300)])
        dec = np.concatenate([np.degrees(np.arcsin(rng.uniform(-1, 1, 300))),
                              rng.choice([-90, -DEC_Z_TWO_THIRDS, 0, DEC_Z_TWO_THIRDS, 90], 300)])
        dec = np.clip(dec + rng.normal(0, 1e-4, 600), -90, 90)
        register(con, "points", _sky_ra=ra, _sky_dec=dec, i=np.arange(600))
        rows = con.sql(f"SELECT i, list(_sky_cell ORDER BY _sky_cell) FROM _sky_cells('points', {order}) "
                       "GROUP BY i ORDER BY i").fetchall()
        own = hp.ang2pix(1 << order, ra, dec, nest=True, lonlat=True)
        neighbours = hp.get_all_neighbours(1 << order, own, nest=True).T
        expected = [sorted({int(p), *(int(n) for n in ns if n >= 0)}) for p, ns in zip(own, neighbours)]
        assert [cells for _, cells in rows] == expected, order


@HYPOTHESIS
@given(order=st.integers(1, 29), centre=positions, bearing=st.floats(0, 2 * np.pi))
def test_disc_of_half_a_pixel_lies_in_the_cells(order, centre, bearing):
    """The geometric fact cone and xmatch rest on: every point within 0.5 nside2resol(order) of a
    point lies in the point's pixel or one of its 8 neighbours (healpy only)."""
    nside = 1 << order
    own = hp.ang2pix(nside, *centre, nest=True, lonlat=True)
    cells = {int(own), *(int(n) for n in hp.get_all_neighbours(nside, own, nest=True) if n >= 0)}
    radius = 0.5 * hp.nside2resol(nside)
    theta, phi = np.radians(90 - centre[1]), np.radians(centre[0])
    centre_vec = hp.ang2vec(theta, phi)
    east = np.array([-np.sin(phi), np.cos(phi), 0.0])
    north = np.cross(centre_vec, east)
    angles = bearing + np.linspace(0, 2 * np.pi, 64, endpoint=False)
    for r in (radius, radius * 0.7, radius * 0.3):
        ring = np.cos(r) * centre_vec + np.sin(r) * (np.outer(np.cos(angles), east) + np.outer(np.sin(angles), north))
        assert set(hp.vec2pix(nside, *ring.T, nest=True).tolist()) <= cells


# --------------------------------------------------------------------------------------------------
# a synthetic catalog in the layout of the ingest: rows across RA 0/360, at the poles, around pixel
# corners; partitions of orders 0-3 (face % 4) meeting at both poles and around RA 0; 50-row row groups

SYNTH = "synth"
CLUSTERS = [(0.0, 0.0), (359.99, 30.0), (0.0, 89.95), (123.0, -89.95), (90.0, DEC_Z_TWO_THIRDS),
            (45.0, 0.0), (180.0, -DEC_Z_TWO_THIRDS), COSMOS_AGN]


def synthetic_positions(rng) -> tuple[np.ndarray, np.ndarray]:
    ra = [rng.uniform(0, 360, 4000)]
    dec = [np.degrees(np.arcsin(rng.uniform(-1, 1, 4000)))]
    for cra, cdec in CLUSTERS:
        for spread in (0.3, 0.01):
            offset = rng.normal(0, spread, (2, 1000))
            ra.append(cra + offset[0] / max(np.cos(np.radians(cdec)), 0.01))
            dec.append(cdec + offset[1])
    dec = np.concatenate(dec)
    ra = np.concatenate(ra)
    over_pole = np.abs(dec) > 90
    dec[over_pole] = np.sign(dec[over_pole]) * 180 - dec[over_pole]
    ra[over_pole] += 180
    return (ra % 360).astype(np.float32), dec.astype(np.float32)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """(connection, table of the rows, root directory) of the synthetic catalog."""
    root = tmp_path_factory.mktemp("synth")
    catalog_dir = root / SYNTH / SYNTH
    ra, dec = synthetic_positions(np.random.default_rng(4))
    h29 = healpix29(ra.astype(np.float64), dec.astype(np.float64))
    by_pixel = np.argsort(h29, kind="stable")
    table = pa.table({"_healpix_29": h29[by_pixel], "id": np.arange(len(ra))[by_pixel],
                      "ra": ra[by_pixel], "dec": dec[by_pixel]})
    face = table["_healpix_29"].to_numpy() >> 58
    order = face % 4
    pixel = table["_healpix_29"].to_numpy() >> (2 * (29 - order))
    partitions = sorted({(int(k), int(p)) for k, p in zip(order, pixel)})
    for k, p in partitions:
        rows = table.filter(pa.array((order == k) & (pixel == p)))
        path = partition_file(catalog_dir, k, p)
        path.parent.mkdir(parents=True)
        pq.write_table(rows, path, row_group_size=50)
    write_partition_info(catalog_dir, partitions)
    write_partition_bounds(catalog_dir, partitions, "ra", "dec")
    connection = sqlload.connect(root)
    connection.execute(f"CREATE TEMP VIEW {SYNTH} AS SELECT * FROM "
                       f"read_parquet('{SYNTH}/{SYNTH}/dataset/*/*/*/*.parquet', hive_partitioning = true)")
    yield connection, table, root
    connection.close()


def cone_ids(con, catalog: str, ra: float, dec: float, radius: float) -> tuple[list[int], list[float]]:
    id_column = {"sources": "source_id", "detections": "detectid", SYNTH: "id"}[catalog]
    rows = con.sql(f"SELECT {id_column}, dist_arcsec FROM cone('{catalog}', {ra!r}, {dec!r}, {radius!r})").fetchall()
    return [r[0] for r in rows], [r[1] for r in rows]


def assert_cone_is_brute_force(con, catalog, ids, ra_all, dec_all, ra, dec, radius):
    got_ids, got_dist = cone_ids(con, catalog, ra, dec, radius)
    assert got_dist == sorted(got_dist)
    dist = separation_arcsec(ra, dec, ra_all.astype(np.float64), dec_all.astype(np.float64))
    clear = np.abs(dist - radius) > BORDER_ARCSEC
    assert set(got_ids) & set(ids[clear]) == set(ids[clear & (dist <= radius)])
    expected_dist = dict(zip(ids.tolist(), dist.tolist()))
    np.testing.assert_allclose(got_dist, [expected_dist[i] for i in got_ids], rtol=1e-9, atol=1e-6)
    return got_ids


# cones around the synthetic catalog's clusters: wrap, poles, partition edges
CONES = dict(
    centre=st.builds(lambda cluster, dra, ddec: ((cluster[0] + dra) % 360, float(np.clip(cluster[1] + ddec, -90, 90))),
                     st.sampled_from(CLUSTERS), st.floats(-0.5, 0.5), st.floats(-0.5, 0.5)),
    radius=st.one_of(st.sampled_from([0.5, 3.0, 37.0, 1800.0, 36000.0]), st.floats(0.01, 36000)),
)


@settings(HYPOTHESIS, max_examples=60)
@given(**CONES)
def test_cone_equals_brute_force_at_wrap_poles_and_partition_edges(synth, centre, radius):
    con, table, _ = synth
    ra, dec = centre
    assert_cone_is_brute_force(con, SYNTH, table["id"].to_numpy(), table["ra"].to_numpy(), table["dec"].to_numpy(),
                               ra, dec, radius)


@settings(HYPOTHESIS, max_examples=40)
@given(**CONES)
def test_cone_in_the_files_query_disc_picks_equals_cone(synth, centre, radius):
    """The Python API's path: healpy picks the partition files, cone_in_files reads only those."""
    con, _, root = synth
    ra, dec = centre
    files = [str(p.path) for p in cone_partition_files(partition_files(root / SYNTH / SYNTH), ra, dec, radius)]
    expected = con.execute(f"SELECT id, dist_arcsec FROM cone('{SYNTH}', $ra, $dec, $radius)",
                           {"ra": ra, "dec": dec, "radius": radius}).fetchall()
    got = (con.execute("SELECT id, dist_arcsec FROM cone_in_files($files, $ra, $dec, $radius)",
                       {"files": files, "ra": ra, "dec": dec, "radius": radius}).fetchall() if files else [])
    assert sorted(got) == sorted(expected)
    assert [dist for _, dist in got] == sorted(dist for _, dist in got)


@pytest.mark.parametrize("ra, dec, radius, message", [
    (10.0, 95.0, 3.0, "cone_in_files: dec must lie in [-90, 90] degrees, got 95"),
    (float("nan"), 0.0, 3.0, "cone_in_files: ra must be a number of degrees, got NaN"),
    (10.0, 0.0, -1.0, "cone_in_files: radius_arcsec must lie in (0, 36000] arcsec"),
])
def test_cone_in_files_names_a_bad_argument(synth, ra, dec, radius, message):
    con, _, root = synth
    files = [str(p.path) for p in partition_files(root / SYNTH / SYNTH)][:1]
    with pytest.raises(duckdb.Error, match=re.escape(message)):
        con.execute("SELECT * FROM cone_in_files($files, $ra, $dec, $radius)",
                    {"files": files, "ra": ra, "dec": dec, "radius": radius}).fetchall()


@pytest.mark.parametrize("catalog, ra_column, dec_column", [("sources", "RA", "DEC"), ("detections", "ra", "dec")])
@pytest.mark.parametrize("ra, dec, radius, found", [
    (*COSMOS_AGN, 3.0, True), (*COSMOS_AGN, 37.0, True), (*COSMOS_AGN, 1800.0, True),
    (10.0, -50.0, 37.0, False), (0.0, 90.0, 36000.0, False), (359.9, 0.0, 3600.0, False)])
def test_cone_on_the_tiny_mock_equals_brute_force(con, catalog, ra_column, dec_column, ra, dec, radius, found):
    id_column = {"sources": "source_id", "detections": "detectid"}[catalog]
    ids, ra_all, dec_all = (np.array(column(con, f"SELECT {c} FROM {catalog} ORDER BY {id_column}"))
                            for c in (id_column, ra_column, dec_column))
    got = assert_cone_is_brute_force(con, catalog, ids, ra_all, dec_all, ra, dec, radius)
    assert bool(got) == found


def test_cone_rows_keep_every_catalog_column(con):
    row = con.sql(f"SELECT * FROM cone('source_spectra', {COSMOS_AGN[0]}, {COSMOS_AGN[1]}, 3) LIMIT 1")
    assert row.columns == [*con.sql("SELECT * FROM source_spectra LIMIT 0").columns, "dist_arcsec"]
    assert len(row.fetchall()[0][row.columns.index("spec")]) == 1036


# --------------------------------------------------------------------------------------------------
# pruning, read from DuckDB's profiler


def parquet_scan(con, query: str) -> dict:
    """The query's one scan of catalog data (not of a partition table) as the profiler reports it:
    its extra_info and row-group counts."""
    def walk(node):
        if isinstance(node, list):
            return [scan for item in node for scan in walk(item)]
        if not isinstance(node, dict):
            return []
        info = node.get("extra_info", {})
        own = []
        if info.get("Function") == "READ_PARQUET" and PARTITION_BOUNDS not in info.get("Filename(s)", ""):
            own = [{**info, "row_groups_scanned": node["row_groups_scanned"],
                    "total_row_groups_to_scan": node["total_row_groups_to_scan"]}]
        return own + [scan for value in node.values() for scan in walk(value)]

    (scan,) = walk(json.loads(con.sql(f"EXPLAIN (ANALYZE, FORMAT json) {query}").fetchall()[0][1]))
    return scan


def pixels_pushed_down(scan: dict) -> set[int]:
    """The Npix values of the dynamic filter that the partition join pushed into the scan: the
    profiler names the files only when there is one."""
    (pushed,) = [f for f in scan["Dynamic Filters"] if "Npix" in f]
    listed = re.search(r"Npix IN \(([\d, ]+)\)|Npix = (\d+)", pushed)
    return {int(v) for v in (listed.group(1) or listed.group(2)).split(", ")}


@pytest.mark.parametrize("ra, dec, radius", [(0.001, 0.001, 37.0), (1.0, 89.99, 600.0), (123.0, -89.99, 7200.0),
                                             (90.0, DEC_Z_TWO_THIRDS, 3.0)])
def test_cone_reads_only_the_partitions_and_row_groups_near_it(synth, ra, dec, radius):
    con, table, root = synth
    scan = parquet_scan(con, f"SELECT * FROM cone('{SYNTH}', {ra}, {dec}, {radius})")

    # the partitions whose rows' RA/Dec box meets the cone's RA/Dec box, computed here in numpy
    h29 = table["_healpix_29"].to_numpy()
    row_ra, row_dec = table["ra"].to_numpy().astype(float), table["dec"].to_numpy().astype(float)
    lines = (root / SYNTH / SYNTH / "partition_info.csv").read_text().split()[1:]
    partitions = [tuple(int(v) for v in line.split(",")) for line in lines]
    r_deg = radius / 3600
    half_width = 180.0 if abs(dec) + r_deg >= 90 else np.degrees(np.arcsin(min(1.0, np.sin(np.radians(r_deg))
                                                                            / np.cos(np.radians(dec)))))
    near = set()
    for k, p in partitions:
        rows = h29 >> 2 * (29 - k) == p
        ra_lo, ra_hi, dec_lo, dec_hi = row_ra[rows].min(), row_ra[rows].max(), row_dec[rows].min(), row_dec[rows].max()
        meets_ra = any(ra_hi >= ra - half_width + shift and ra_lo <= ra + half_width + shift for shift in (-360, 0, 360))
        if meets_ra and dec_hi >= dec - r_deg and dec_lo <= dec + r_deg:
            near.add((k, p))
    assert pixels_pushed_down(scan) == {p for _, p in near}
    # DuckDB filters Norder and Npix separately: a partition of another order whose Npix is one of
    # those opens too
    orders = {k for k, _ in near}
    opened = {(k, p) for k, p in partitions if min(orders) <= k <= max(orders) and p in {p for _, p in near}}
    catalog_dir = root / SYNTH / SYNTH
    row_groups = sum(pq.ParquetFile(partition_file(catalog_dir, k, p)).num_row_groups for k, p in opened)
    assert scan["total_row_groups_to_scan"] == row_groups
    # with several pixels DuckDB also counts one file that it opens before the pushed-down filter applies
    assert int(scan["Total Files Read"]) <= len(opened) + (len(opened) > 1) < len(partitions)

    dist = separation_arcsec(ra, dec, row_ra, row_dec)
    holding = {(k, p) for k, p in partitions if np.any((dist <= radius) & (h29 >> 2 * (29 - k) == p))}
    assert holding and holding <= near
    assert scan["row_groups_scanned"] < scan["total_row_groups_to_scan"]


@pytest.mark.parametrize("catalog", ["sources", "detections"])
def test_cone_on_the_tiny_mock_opens_one_of_its_partitions(con, tiny_catalogs, catalog):
    scan = parquet_scan(con, f"SELECT * FROM cone('{catalog}', {COSMOS_AGN[0]}, {COSMOS_AGN[1]}, 37)")
    pixel = int(hp.ang2pix(1, *COSMOS_AGN, nest=True, lonlat=True))
    assert scan["Total Files Read"] == "1"
    assert scan["Filename(s)"].endswith(partition_file(Path(catalog), 0, pixel).as_posix())
    assert len(list((tiny_catalogs / catalog / catalog / "dataset").glob("*/*/*/*.parquet"))) == 3


@pytest.mark.parametrize("select", ["count(*)", "source_id, dist_arcsec"])
def test_cone_reads_only_the_columns_a_query_uses(con, select):
    scan = parquet_scan(con, f"SELECT {select} FROM cone('source_spectra', {COSMOS_AGN[0]}, {COSMOS_AGN[1]}, 37)")
    assert not {"spec", "spec_err"} & set(scan["Projections"])


# --------------------------------------------------------------------------------------------------
# cross-match


def astropy_pairs(user_ra, user_dec, cat_ra, cat_dec, radius) -> tuple[dict, set]:
    """Pairs (user index, catalog index) from astropy: {pair: separation} within the radius, and the
    set of pairs within BORDER_ARCSEC of it."""
    users = SkyCoord(user_ra, user_dec, unit="deg")
    catalog = SkyCoord(cat_ra.astype(np.float64), cat_dec.astype(np.float64), unit="deg")
    i, j, sep, _ = search_around_sky(users, catalog, (radius + BORDER_ARCSEC) * u.arcsec)
    border = np.abs(sep.arcsec - radius) <= BORDER_ARCSEC
    clear = dict(zip(zip(i[~border].tolist(), j[~border].tolist()), sep.arcsec[~border].tolist()))
    return clear, set(zip(i[border].tolist(), j[border].tolist()))


@pytest.mark.parametrize("radius", [1.5, 40.0, 300.0])
def test_xmatch_equals_astropy_search_around_sky(synth, radius):
    con, table, _ = synth
    rng = np.random.default_rng(int(radius))
    cat_ra, cat_dec, ids = (table[c].to_numpy() for c in ("ra", "dec", "id"))
    near = rng.choice(len(ids), 1500)
    bearing, distance = rng.uniform(0, 2 * np.pi, 1500), rng.uniform(0, 2 * radius, 1500)
    around = SkyCoord(cat_ra[near].astype(float), cat_dec[near].astype(float), unit="deg").directional_offset_by(
        bearing * u.rad, distance * u.arcsec)
    user_ra = np.concatenate([around.ra.deg, rng.uniform(0, 360, 500)])
    user_dec = np.concatenate([around.dec.deg, np.degrees(np.arcsin(rng.uniform(-1, 1, 500)))])
    register(con, "positions", name=np.arange(len(user_ra)), RA=user_ra, Dec=user_dec)
    clear, border = astropy_pairs(user_ra, user_dec, cat_ra, cat_dec, radius)
    index_of = {int(i): k for k, i in enumerate(ids)}

    rows = con.sql(f"SELECT name, id, dist_arcsec FROM xmatch('positions', '{SYNTH}', {radius})").fetchall()
    assert {(name, index_of[i]) for name, i, _ in rows} - border == clear.keys()
    assert len(clear) > 1000
    assert [name for name, _, _ in rows] == sorted(name for name, _, _ in rows)
    np.testing.assert_allclose([d for name, i, d in rows if (name, index_of[i]) in clear],
                               [clear[name, index_of[i]] for name, i, _ in rows if (name, index_of[i]) in clear],
                               rtol=1e-9, atol=1e-6)

    nearest = con.sql(f"SELECT name, dist_arcsec FROM xmatch('positions', '{SYNTH}', {radius}, nearest := true)")
    closest = {}
    for (name, _), d in clear.items():
        closest[name] = min(d, closest.get(name, np.inf))
    got = dict(nearest.fetchall())
    assert closest.keys() <= got.keys() <= closest.keys() | {name for name, _ in border}
    np.testing.assert_allclose([got[name] for name in closest], list(closest.values()), rtol=1e-9, atol=1e-6)


def test_xmatch_on_the_tiny_mock_finds_the_epochs_of_the_cosmos_agn(con):
    expected = column(con, f"SELECT source_id FROM cone('sources', {COSMOS_AGN[0]}, {COSMOS_AGN[1]}, 1.5)")
    rows = con.sql(f"""
        WITH targets AS (SELECT 'agn' AS target, {COSMOS_AGN[0]} AS ra, {COSMOS_AGN[1]} AS dec
                         UNION ALL SELECT 'nothing', 10.0, -50.0)
        SELECT target, source_id, RA_1 FROM xmatch('targets', 'sources', 1.5)""").fetchall()
    assert len(expected) >= 6
    assert [r[1] for r in rows] == expected and {r[0] for r in rows} == {"agn"}


# --------------------------------------------------------------------------------------------------
# cube coverage


@pytest.fixture(scope="module")
def cube_wcs(con, tiny_pdr1):
    """path -> celestial WCS of every cube of ifu_index, from the DATA header of its FITS file."""
    found = {}
    for (path,) in con.sql("SELECT path FROM ifu_index ORDER BY path").fetchall():
        with fits.open(tiny_pdr1 / path) as hdus:
            found[path] = WCS(hdus["DATA"].header).celestial
    return found


def cube_test_positions(cube_wcs, rng) -> tuple[np.ndarray, np.ndarray]:
    """Per cube: points inside, outside but within 37" of its centre, and within 0.01" of its edges."""
    ra, dec = [], []
    for wcs in cube_wcs.values():
        inside = rng.uniform(0, 103, (2, 40))
        outside = np.stack([rng.choice([-12.0, -2.0, 105.0, 115.0], 40), rng.uniform(-10, 113, 40)])
        edge = np.stack([rng.choice([-0.5, 103.5], 80) + rng.choice([-0.02, 0.02], 80), rng.uniform(-0.5, 103.5, 80)])
        x, y = np.concatenate([inside, outside, edge, edge[::-1]], axis=1)
        world = wcs.pixel_to_world_values(x, y)
        ra.append(world[0])
        dec.append(world[1])
    return np.concatenate(ra), np.concatenate(dec)


def cubes_holding(cube_wcs, ra, dec) -> set[tuple[int, str]]:
    """(position, path) pairs from astropy: WCS.footprint_contains, except near the edges. It takes
    the pixel coordinates 0 < x < 104 (0-based) as the footprint while the spaxels cover -0.5 .. 103.5;
    where the two differ (and 0.35 pixel around) the pixel coordinates are compared with the spaxel edges."""
    held = set()
    points = SkyCoord(ra, dec, unit="deg")
    for path, wcs in cube_wcs.items():
        x, y = wcs.world_to_pixel_values(ra, dec)
        near_edge = np.minimum.reduce([np.abs(v - e) for v in (x, y) for e in (-0.25, 103.75)]) < 0.6
        within_spaxels = (x >= -0.5) & (x <= 103.5) & (y >= -0.5) & (y <= 103.5)
        inside = np.where(near_edge, within_spaxels, wcs.footprint_contains(points))
        held |= {(int(i), path) for i in np.flatnonzero(inside)}
    return held


def test_cubes_covering_equals_the_cube_headers(con, cube_wcs):
    ra, dec = cube_test_positions(cube_wcs, np.random.default_rng(6))
    register(con, "positions", i=np.arange(len(ra)), ra=ra, dec=dec)
    got = set(con.sql("SELECT i, path FROM cubes_covering('positions')").fetchall())
    expected = cubes_holding(cube_wcs, ra, dec)
    assert got == expected
    assert {path for _, path in expected} == set(cube_wcs)
    assert len({i for i, _ in expected}) < len(ra)


def test_cubes_at_equals_the_cube_headers(con, cube_wcs):
    ra, dec = cube_test_positions(cube_wcs, np.random.default_rng(7))
    expected = cubes_holding(cube_wcs, ra, dec)
    for i in range(0, len(ra), 97):
        rows = con.sql(f"SELECT path, url, dist_arcsec FROM cubes_at({float(ra[i])!r}, {float(dec[i])!r})").fetchall()
        assert {path for path, _, _ in rows} == {path for j, path in expected if j == i}
        assert all(url.endswith("/" + path) for path, url, _ in rows)
        assert [d for _, _, d in rows] == sorted(d for _, _, d in rows)


def test_the_cosmos_agn_lies_in_several_cubes(con):
    rows = con.sql(f"SELECT shotid FROM cubes_at({COSMOS_AGN[0]}, {COSMOS_AGN[1]})").fetchall()
    assert len(rows) >= 6


# --------------------------------------------------------------------------------------------------
# argument checks


@pytest.mark.parametrize("query, message", [
    ("SELECT * FROM cone('sources', 150, 2, 0)", "cone: radius_arcsec must lie in (0, 36000]"),
    ("SELECT * FROM cone('sources', 150, 2, 36001)", "cone: radius_arcsec must lie in (0, 36000]"),
    ("SELECT * FROM cone('sources', 150, 2, NULL)", "cone: radius_arcsec must be a number, got NULL"),
    ("SELECT * FROM cone('sources', 150, 90.5, 3)", "cone: dec must lie in [-90, 90] degrees, got 90.5"),
    ("SELECT * FROM cone('sources', 'nan'::DOUBLE, 2, 3)", "cone: ra must be a number of degrees, got NaN"),
    ("SELECT * FROM cone('sources', 'inf'::DOUBLE, 2, 3)", "cone: ra must be finite"),
    ("SELECT * FROM cone('sources', NULL, 2, 3)", "cone: ra must not be NULL"),
    ("SELECT * FROM cubes_at(150, -91)", "cubes_at: dec must lie in [-90, 90]"),
    ("SELECT * FROM xmatch('sources', 'detections', -1)", "xmatch: radius_arcsec must lie in (0, 36000]"),
    ("WITH t AS (SELECT 1.0 AS ra, 'nan'::DOUBLE AS dec) SELECT * FROM xmatch('t', 'sources', 3)",
     "xmatch: t.dec must be a number of degrees, got NaN"),
    ("WITH t AS (SELECT NULL::DOUBLE AS ra, 0.0 AS dec) SELECT * FROM cubes_covering('t')",
     "cubes_covering: t.ra must not be NULL"),
    ("SELECT healpix_nest(30, 1, 2)", "healpix_nest: order must be an integer in [0, 29], got 30"),
    ("SELECT healpix_nest(2.5, 1, 2)", "healpix_nest: order must be an integer in [0, 29], got 2.5"),
    ("SELECT healpix_nest(3, 1, -95)", "healpix_nest: dec must lie in [-90, 90] degrees, got -95"),
    ("SELECT ang_dist_arcsec(0, 0, 'nan'::DOUBLE, 0)", "ang_dist_arcsec: ra2 must be a number of degrees, got NaN"),
    ("SELECT ang_dist_arcsec(0, 0, 0, 100)", "ang_dist_arcsec: dec2 must lie in [-90, 90] degrees, got 100"),
])
def test_bad_arguments_raise_errors_naming_them(con, query, message):
    with pytest.raises(duckdb.Error) as caught:
        con.sql(query).fetchall()
    assert message in str(caught.value)


def test_checks_fire_where_no_row_is_read(synth):
    con, _, _ = synth
    with pytest.raises(duckdb.Error, match="cone: dec must lie"):
        con.sql(f"SELECT count(*) FROM cone('{SYNTH}', 0, 100, 3)").fetchall()
    con.execute("CREATE OR REPLACE TEMP TABLE far_away AS SELECT 0.0 AS ra, 95.0 AS dec")
    with pytest.raises(duckdb.Error, match=r"xmatch: far_away\.dec must lie"):
        con.sql(f"SELECT count(*) FROM xmatch('far_away', '{SYNTH}', 3)").fetchall()
