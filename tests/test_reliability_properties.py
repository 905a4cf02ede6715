"""Property-based tests of the spatial SQL on inputs chosen to hurt: cone, xmatch, fof_groups and
healpix_nest against astropy, healpy and scipy.

One catalog is written once per module by the ingest's own writer, with a partition budget small enough
that dense places split into partitions of several orders; its rows sit where geometry is delicate:
both poles (and exactly on them), RA 0 and exactly 360, the belt/cap boundary of HEALPix (|z| = 2/3),
the corners and edges of its own partitions, and repeated positions. Hypothesis then draws query
positions biased to the same places and to the partitions' corners, with RA also outside [0, 360)
(the macros take any finite RA), radii from 1e-4" to the 10 deg maximum, cross-match tables, and point
sets for friends-of-friends laid as chains whose steps straddle the linking length.

Distances computed by DuckDB and by astropy agree to ~1e-10"; a row or pair within 1e-6" of a radius
or linking length may fall either way, so comparisons leave those out. Examples are derandomized
(the same in every run) and stored nowhere.
"""

from __future__ import annotations

import astropy.units as u
import healpy as hp
import numpy as np
import pyarrow as pa
import pytest
from astropy.coordinates import SkyCoord, search_around_sky
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from dexdb import sqlload
from dexdb.ingest.hats_writer import CatalogSpec, write_catalog

CATALOG = "fuzz"
BORDER_ARCSEC = 1e-6
DEC_Z_TWO_THIRDS = float(np.degrees(np.arcsin(2 / 3)))  # where HEALPix switches between belt and caps
PROPERTIES = settings(deadline=None, derandomize=True, database=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
PLACES = [(0.0, 0.0), (360.0, 10.0), (0.0, 90.0), (217.0, -90.0), (45.0, DEC_Z_TWO_THIRDS),
          (135.0, -DEC_Z_TWO_THIRDS), (359.999, -45.0), (150.23189, 2.363963)]


def separation_arcsec(ra1, dec1, ra2, dec2) -> np.ndarray:
    return SkyCoord(ra1, dec1, unit="deg").separation(SkyCoord(ra2, dec2, unit="deg")).arcsec


def fold_over_poles(ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions past a pole continue on the other side of it."""
    over = np.abs(dec) > 90
    dec = np.where(over, np.sign(dec) * 180 - dec, dec)
    return np.where(over, ra + 180, ra) % 360, dec


def catalog_positions(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    ra = [rng.uniform(0, 360, 3000), np.array([0.0, 360.0, 0.0, 360.0, 12.0, 250.0, 0.0, 360.0])]
    dec = [np.degrees(np.arcsin(rng.uniform(-1, 1, 3000))), np.array([0.0, 0.0, 89.0, -89.0, 90, -90, 90, -90])]
    for place_ra, place_dec in PLACES:
        for spread in (0.5, 0.01, 1e-5):
            offset = rng.normal(0, spread, (2, 300))
            ra.append(place_ra + offset[0] / max(np.cos(np.radians(place_dec)), 1e-3))
            dec.append(place_dec + offset[1])
    # Corners and edge midpoints of the order-3 pixels around the places: HEALPix pixel boundaries.
    for place_ra, place_dec in PLACES:
        own = hp.ang2pix(8, place_ra, place_dec, nest=True, lonlat=True)
        for pixel in [own, *hp.get_all_neighbours(8, own, nest=True)]:
            if pixel >= 0:
                corner_ra, corner_dec = hp.vec2ang(hp.boundaries(8, pixel, step=2, nest=True).T, lonlat=True)
                ra.append(corner_ra)
                dec.append(corner_dec)
    ra, dec = fold_over_poles(np.concatenate(ra), np.concatenate(dec))
    ra[:2] = [0.0, 360.0]  # RA exactly 360 is valid input (float32 rounding of RA just below it)
    ra, dec = ra.astype(np.float32), np.clip(dec, -90, 90).astype(np.float32)
    repeated = rng.choice(len(ra), 200)
    return np.concatenate([ra, ra[repeated]]), np.concatenate([dec, dec[repeated]])


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory):
    """(connection, ids, ra and dec as float64, partitions as (order, pixel)) of the catalog written by
    the ingest's writer."""
    root = tmp_path_factory.mktemp("fuzz")
    ra, dec = catalog_positions(np.random.default_rng(11))
    ids = np.arange(len(ra), dtype=np.int64) * 7 + 1000
    spec = CatalogSpec(name=CATALOG, ra_column="ra", dec_column="dec", sort_tiebreak="id", id_columns=("id",),
                       partition_bytes=24_000, row_group_rows=64)
    info = write_catalog([pa.table({"id": ids, "ra": ra, "dec": dec})], spec, root, workers=1)
    assert len({p.order for p in info.partitions}) >= 3  # partitions of several orders meet
    con = sqlload.connect(root)
    con.execute(f"CREATE TEMP VIEW {CATALOG} AS SELECT * FROM "
                f"read_parquet('{CATALOG}/{CATALOG}/dataset/*/*/*/*.parquet', hive_partitioning = true)")
    partitions = [(p.order, p.pixel) for p in info.partitions]
    yield con, ids, ra.astype(np.float64), dec.astype(np.float64), partitions
    con.close()


# --------------------------------------------------------------------------------------------------
# strategies

special_ra = st.sampled_from([0.0, -0.0, 360.0, 1e-9, 360 - 1e-9, -1e-7, 360 + 1e-7, 720.0, -360.0, 180.0, 45.0])
special_dec = st.sampled_from([90.0, -90.0, 90 - 1e-9, -90 + 1e-9, DEC_Z_TWO_THIRDS, -DEC_Z_TWO_THIRDS, 0.0])
small_offset = st.floats(-0.02, 0.02)


@st.composite
def near_places(draw) -> tuple[float, float]:
    place_ra, place_dec = draw(st.sampled_from(PLACES))
    ra = place_ra + draw(small_offset) + draw(st.sampled_from([0.0, 360.0, -360.0]))
    dec = float(np.clip(place_dec + draw(small_offset), -90, 90))
    return ra, dec


def on_partition_edges(partitions: list[tuple[int, int]]):
    """Corners and edge points of the catalog's partitions, nudged by at most ~1e-9 deg."""

    @st.composite
    def draw_point(draw) -> tuple[float, float]:
        order, pixel = draw(st.sampled_from(partitions))
        edge = hp.boundaries(1 << order, pixel, step=4, nest=True).T
        ra, dec = hp.vec2ang(edge[draw(st.integers(0, len(edge) - 1))], lonlat=True)
        nudge = draw(st.sampled_from([0.0, 1e-9, -1e-9]))
        return float(ra[0]) + nudge, float(np.clip(dec[0] + nudge, -90, 90))

    return draw_point()


def positions(partitions: list[tuple[int, int]]):
    return st.one_of(st.tuples(special_ra, special_dec), near_places(), on_partition_edges(partitions),
                     st.tuples(st.floats(-360, 720), st.floats(-90, 90)))


radii = st.one_of(st.floats(1e-4, 1.0), st.floats(1.0, 600.0), st.floats(600.0, 36000.0),
                  st.sampled_from([1e-4, 36000.0]))


# --------------------------------------------------------------------------------------------------
# cone


@settings(PROPERTIES, max_examples=70)
@given(data=st.data(), radius=radii)
def test_cone_equals_astropy(fuzz, data, radius):
    con, ids, cat_ra, cat_dec, partitions = fuzz
    ra, dec = data.draw(positions(partitions))
    rows = con.execute(f"SELECT id, dist_arcsec FROM cone('{CATALOG}', $ra, $dec, $radius)",
                       {"ra": ra, "dec": dec, "radius": radius}).fetchall()
    distance = separation_arcsec(ra, dec, cat_ra, cat_dec)
    clear = np.abs(distance - radius) > BORDER_ARCSEC
    got = [row_id for row_id, _ in rows]
    assert len(got) == len(set(got))
    assert set(got) & set(ids[clear]) == set(ids[clear & (distance <= radius)])
    expected = dict(zip(ids.tolist(), distance.tolist()))
    np.testing.assert_allclose([d for _, d in rows], [expected[i] for i in got], rtol=1e-9, atol=1e-6)
    assert [d for _, d in rows] == sorted(d for _, d in rows)


# --------------------------------------------------------------------------------------------------
# cross-match


@settings(PROPERTIES, max_examples=30)
@given(data=st.data(), radius=st.one_of(st.floats(1e-3, 5.0), st.floats(5.0, 3600.0)), nearest=st.booleans())
def test_xmatch_equals_astropy_search_around_sky(fuzz, data, radius, nearest):
    con, ids, cat_ra, cat_dec, partitions = fuzz
    targets = data.draw(st.lists(positions(partitions), min_size=1, max_size=12))
    user_ra, user_dec = (np.array(values, dtype=np.float64) for values in zip(*targets))
    con.register("targets", pa.table({"name": np.arange(len(targets)), "ra": user_ra, "dec": user_dec}))
    query = f"SELECT name, id, dist_arcsec FROM xmatch('targets', '{CATALOG}', $radius, nearest := $nearest)"
    rows = con.execute(query, {"radius": radius, "nearest": nearest}).fetchall()
    con.unregister("targets")

    users = SkyCoord(user_ra % 360, user_dec, unit="deg")
    catalog = SkyCoord(cat_ra, cat_dec, unit="deg")
    i, j, sep, _ = search_around_sky(users, catalog, (radius + BORDER_ARCSEC) * u.arcsec)
    sep = sep.arcsec
    border = np.abs(sep - radius) <= BORDER_ARCSEC
    assert [name for name, _, _ in rows] == sorted(name for name, _, _ in rows)
    if not nearest:
        clear = set(zip(i[~border].tolist(), ids[j[~border]].tolist()))
        assert {(name, row_id) for name, row_id, _ in rows} - set(zip(i[border].tolist(), ids[j[border]].tolist())) \
            == clear
        return
    assume(not border.any())  # the nearest may be any of rows equally far within rounding
    closest = {}
    for user, distance in zip(i.tolist(), sep.tolist()):
        closest[user] = min(distance, closest.get(user, np.inf))
    assert sorted(name for name, _, _ in rows) == sorted(closest)
    np.testing.assert_allclose([d for _, _, d in rows], [closest[name] for name, _, _ in rows], rtol=1e-9, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# friends-of-friends


def step_from(ra: float, dec: float, bearing: float, arcsec: float) -> tuple[float, float]:
    """The point ``arcsec`` away from (ra, dec) towards ``bearing`` (radians east of north)."""
    moved = SkyCoord(ra, dec, unit="deg").directional_offset_by(bearing * u.rad, arcsec * u.arcsec)
    return float(moved.ra.deg), float(moved.dec.deg)


@st.composite
def chains(draw):
    """(linking length, source ids, ra, dec): chains of points whose steps straddle the linking length,
    started at the hard places, with ids in random order."""
    linking = draw(st.one_of(st.floats(0.05, 5.0), st.floats(5.0, 60.0), st.just(1.5)))
    ra, dec = [], []
    for _ in range(draw(st.integers(1, 4))):
        point = draw(st.one_of(near_places(), st.tuples(special_ra, special_dec)))
        for _ in range(draw(st.integers(1, 12))):
            ra.append(point[0] % 360)
            dec.append(point[1])
            factor = draw(st.one_of(st.floats(0.0, 2.0), st.sampled_from([0.999, 1.001, 0.0])))
            point = step_from(ra[-1], dec[-1], draw(st.floats(0, 2 * np.pi)), factor * linking)
    ids = draw(st.permutations(range(10, 10 + 3 * len(ra), 3)))
    return linking, np.array(ids[: len(ra)], dtype=np.int64), np.array(ra), np.array(dec)


def scipy_groups(ids: np.ndarray, ra: np.ndarray, dec: np.ndarray, linking: float) -> tuple[dict[int, int], bool]:
    """{source_id: smallest source_id of its component} from astropy separations and scipy's
    connected components, and whether some pair lies within BORDER_ARCSEC of the linking length."""
    sep = separation_arcsec(ra[:, None], dec[:, None], ra[None, :], dec[None, :])
    first, second = np.nonzero(np.triu(sep <= linking, k=1))
    graph = coo_matrix((np.ones(len(first)), (first, second)), shape=(len(ids), len(ids)))
    _, labels = connected_components(graph, directed=False)
    smallest = {label: ids[labels == label].min() for label in set(labels.tolist())}
    ambiguous = bool((np.abs(np.triu(sep, k=1) - linking) <= BORDER_ARCSEC)[np.triu_indices(len(ids), 1)].any())
    return {int(i): int(smallest[label]) for i, label in zip(ids, labels)}, ambiguous


@settings(PROPERTIES, max_examples=45)
@given(chain=chains())
def test_fof_groups_equals_scipy_connected_components(fuzz, chain):
    con = fuzz[0]
    linking, ids, ra, dec = chain
    expected, ambiguous = scipy_groups(ids, ra, dec, linking)
    assume(not ambiguous)
    con.register("points", pa.table({"source_id": ids, "ra": ra, "dec": dec}))
    rows = con.execute("SELECT source_id, group_id, group_size FROM fof_groups('points', $linking)",
                       {"linking": linking}).fetchall()
    con.unregister("points")
    assert {source_id: group_id for source_id, group_id, _ in rows} == expected
    sizes = {group: list(expected.values()).count(group) for group in set(expected.values())}
    assert {source_id: size for source_id, _, size in rows} == {i: sizes[g] for i, g in expected.items()}


# --------------------------------------------------------------------------------------------------
# HEALPix in SQL


@st.composite
def on_pixel_edges(draw) -> tuple[int, float, float]:
    """(order, ra, dec): a point on an edge of a pixel of that order, or one ulp off it, at any order."""
    order = draw(st.integers(0, 29))
    pixel = draw(st.integers(0, 12 * 4**order - 1))
    edge = hp.boundaries(1 << order, pixel, step=3, nest=True).T
    ra, dec = hp.vec2ang(edge[draw(st.integers(0, len(edge) - 1))], lonlat=True)
    ra, dec = float(ra[0]) % 360, float(np.clip(dec[0], -90, 90))
    ulps = draw(st.tuples(st.integers(-2, 2), st.integers(-2, 2)))
    for _ in range(abs(ulps[0])):
        ra = float(np.nextafter(ra, np.inf * ulps[0]))
    for _ in range(abs(ulps[1])):
        dec = float(np.clip(np.nextafter(dec, np.inf * ulps[1]), -90, 90))
    return order, ra, dec


# Each query takes ~0.3 s to plan whatever its size: few examples of many points.
@settings(PROPERTIES, max_examples=15)
@given(points=st.lists(st.one_of(on_pixel_edges(),
                                 st.tuples(st.integers(0, 29), special_ra, special_dec),
                                 st.tuples(st.integers(0, 29), st.floats(-720, 720), st.floats(-90, 90))),
                       min_size=10, max_size=100))
def test_healpix_nest_equals_healpy_at_every_order(fuzz, points):
    con = fuzz[0]
    _, ra, dec = (np.array(values) for values in zip(*points))
    con.register("points", pa.table({"i": np.arange(len(ra)), "ra": ra, "dec": dec}))
    got = con.sql("SELECT healpix_nest(k, ra, dec) FROM points, range(30) AS orders(k) ORDER BY k, i").fetchall()
    con.unregister("points")
    expected = np.concatenate([hp.ang2pix(1 << k, ra, dec, nest=True, lonlat=True) for k in range(30)])
    assert [value for (value,) in got] == expected.tolist()
