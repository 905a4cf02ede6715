"""Friends-of-friends grouping: the ingest's ``source_groups`` / ``source_group_members`` and the SQL
macro ``fof_groups``, both against a brute force written here (every pairwise separation + union-find)."""

from __future__ import annotations

import json
import shutil
import subprocess
from importlib.resources import files

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy import units as u
from astropy.coordinates import CartesianRepresentation, SkyCoord

from dexdb.ingest.source_groups import GROUPS, MEMBERS, fof_group_ids, group_tables

GROUPS_SQL = (files("dexdb.sql") / "50_groups.sql").read_text()
COSMOS_AGN = (150.23189, 2.363963)
DUCKDB_CLI = shutil.which("duckdb")


def separation_arcsec(ra1, dec1, ra2, dec2):
    """Vincenty's formula (degrees in, arcsec out): accurate at every separation, no unit vectors."""
    ra1, dec1, ra2, dec2 = (np.radians(np.asarray(a, dtype=np.float64)) for a in (ra1, dec1, ra2, dec2))
    dra = ra2 - ra1
    num = np.hypot(np.cos(dec2) * np.sin(dra), np.cos(dec1) * np.sin(dec2) - np.sin(dec1) * np.cos(dec2) * np.cos(dra))
    den = np.sin(dec1) * np.sin(dec2) + np.cos(dec1) * np.cos(dec2) * np.cos(dra)
    return np.degrees(np.arctan2(num, den)) * 3600.0


def brute_force_group_ids(ra, dec, ids, linking_arcsec):
    """Smallest id of each row's group: all pairs within the linking length, joined by union-find."""
    ra, dec, ids = np.asarray(ra, dtype=np.float64), np.asarray(dec, dtype=np.float64), np.asarray(ids)
    sep = separation_arcsec(ra[:, None], dec[:, None], ra[None, :], dec[None, :])
    parent = list(range(ids.size))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(np.triu(sep <= linking_arcsec, k=1))):
        a, b = root(i), root(j)
        if a != b:
            parent[max(a, b)] = min(a, b)
    roots = np.array([root(i) for i in range(ids.size)])
    smallest = {}
    for r, source_id in zip(roots, ids):
        smallest[r] = min(smallest.get(r, source_id), source_id)
    return np.array([smallest[r] for r in roots], dtype=np.int64)


def offset(ra, dec, east_arcsec, north_arcsec):
    """A point displaced from (ra, dec) on the tangent plane (valid away from the poles)."""
    return ra + east_arcsec / 3600.0 / np.cos(np.radians(dec)), dec + north_arcsec / 3600.0


def synthetic_positions(seed=1):
    """Sources with 1-6 epochs jittered by 0.3" in three crowded patches (straddling RA 0/360, around
    each pole; neighbours a few arcsec apart, so groups merge as the linking length grows), the exact
    poles, and a chain. Returns source_id, RA, DEC, shotid with ids in random order."""
    rng = np.random.default_rng(seed)
    n = 200
    centres = [
        (rng.uniform(-0.01, 0.01, n) % 360.0, rng.uniform(4.99, 5.01, n)),
        (rng.uniform(0, 360, n), 90 - np.degrees(np.sqrt(rng.uniform(0, np.radians(0.01) ** 2, n)))),
        (rng.uniform(0, 360, n), -90 + np.degrees(np.sqrt(rng.uniform(0, np.radians(0.01) ** 2, n)))),
    ]
    ra, dec = [], []
    for c_ra, c_dec in centres:
        epochs = rng.integers(1, 7, n)
        centre = SkyCoord(np.repeat(c_ra, epochs) * u.deg, np.repeat(c_dec, epochs) * u.deg)
        moved = centre.directional_offset_by(rng.uniform(0, 360, epochs.sum()) * u.deg,
                                           np.abs(rng.normal(0, 0.3, epochs.sum())) * u.arcsec)
        ra.append(moved.ra.deg % 360.0)
        dec.append(moved.dec.deg)
    chain = [offset(120.0, 30.0, 1.4 * k, 0.0) for k in range(3)]
    ra.append(np.array([0.0, 359.99999, 10.0, 200.0, 45.0] + [p[0] for p in chain]))
    dec.append(np.array([-90.0, -90.0, 90.0, 90.0, 0.0] + [p[1] for p in chain]))
    ra, dec = np.concatenate(ra), np.concatenate(dec)
    source_id = rng.permutation(ra.size).astype(np.int64) + 2_100_000_000
    shotid = rng.integers(20170101001, 20170101020, ra.size)
    return pa.table({"source_id": source_id, "RA": ra, "DEC": dec, "shotid": shotid})


@pytest.fixture(scope="module")
def synthetic():
    return synthetic_positions()


@pytest.fixture
def con():
    connection = duckdb.connect()
    connection.execute(GROUPS_SQL)
    return connection


def sql_group_ids(con, table, linking_arcsec):
    con.register("points_arrow", table)
    con.execute("CREATE OR REPLACE TEMP TABLE points AS FROM points_arrow")
    rows = con.sql(f"SELECT source_id, group_id FROM fof_groups('points', {linking_arcsec})").fetchnumpy()
    return dict(zip(rows["source_id"].tolist(), rows["group_id"].tolist()))


def by_id(table, group_ids):
    return dict(zip(table["source_id"].to_pylist(), np.asarray(group_ids).tolist()))


# --------------------------------------------------------------------------------------------------
# Python friends-of-friends


@pytest.mark.parametrize("linking_arcsec", [0.5, 1.5, 4.0, 20.0])
def test_fof_equals_brute_force(synthetic, linking_arcsec):
    ra, dec, ids = (synthetic[c].to_numpy() for c in ("RA", "DEC", "source_id"))
    expected = brute_force_group_ids(ra, dec, ids, linking_arcsec)
    assert 1 < len(set(expected)) < ids.size  # real groups, not all singletons nor one blob
    np.testing.assert_array_equal(fof_group_ids(ra, dec, ids, linking_arcsec), expected)


def test_wrap_poles_and_chains_link_as_expected(con):
    a, b, c = (offset(120.0, 30.0, 1.4 * k, 0.0) for k in range(3))
    far = offset(120.0, 30.0, 0.0, 1.6)
    ra = [359.9999, 0.0001, 10.0, 190.0, 0.0, 180.0, a[0], b[0], c[0], far[0]]
    dec = [10.0, 10.0, 89.99995, 89.99995, -90.0, -89.99999, a[1], b[1], c[1], far[1]]
    ids = np.arange(10, 0, -1)
    assert separation_arcsec(a[0], a[1], c[0], c[1]) == pytest.approx(2.8, abs=1e-6)
    groups = fof_group_ids(ra, dec, ids, 1.5)
    # RA 0/360 (0.71" apart), across the north pole (0.36"), south pole, a chain of three
    assert groups.tolist() == [9, 9, 7, 7, 5, 5, 2, 2, 2, 1]
    np.testing.assert_array_equal(groups, brute_force_group_ids(ra, dec, ids, 1.5))
    table = pa.table({"source_id": ids, "ra": ra, "dec": dec})
    assert sql_group_ids(con, table, 1.5) == by_id(table, groups)


def test_group_ids_do_not_depend_on_row_order(synthetic):
    groups, members = group_tables(synthetic)
    shuffled = synthetic.take(np.random.default_rng(7).permutation(synthetic.num_rows))
    groups_again, members_again = group_tables(shuffled)
    assert groups_again.equals(groups)
    assert by_id(members_again, members_again["group_id"]) == by_id(members, members["group_id"])


def test_group_table_columns(synthetic):
    groups, members = group_tables(synthetic)
    assert groups["n_members"].to_numpy().sum() == members.num_rows == synthetic.num_rows
    position = {s: (r, d) for s, r, d in zip(*(synthetic[c].to_pylist() for c in ("source_id", "RA", "DEC")))}
    shot = dict(zip(synthetic["source_id"].to_pylist(), synthetic["shotid"].to_pylist()))
    for row in groups.to_pylist():
        ids = row["source_ids"]
        assert ids == sorted(ids) and row["group_id"] == ids[0] == min(ids)
        assert row["shotids"] == [shot[s] for s in ids]
        assert row["n_members"] == len(ids) and row["n_epochs"] == len(set(row["shotids"]))
        member = SkyCoord([position[s][0] for s in ids] * u.deg, [position[s][1] for s in ids] * u.deg)
        xyz = member.cartesian.xyz.value.mean(axis=1)
        mean = SkyCoord(CartesianRepresentation(*xyz), representation_type="unitspherical")
        centre = SkyCoord(row["ra"] * u.deg, row["dec"] * u.deg)
        assert centre.separation(mean).arcsec < 1e-6
        assert row["radius_arcsec"] == pytest.approx(centre.separation(member).arcsec.max(), abs=1e-6)
        assert 0.0 <= row["ra"] < 360.0


def test_mean_position_across_ra_zero():
    table = pa.table({"source_id": [1, 2], "RA": [359.9999, 0.0003], "DEC": [0.0, 0.0], "shotid": [7, 8]})
    groups, _ = group_tables(table)
    assert groups.num_rows == 1
    assert groups["ra"][0].as_py() == pytest.approx(0.0001, abs=1e-9)


def test_python_errors():
    with pytest.raises(ValueError, match=r"linking_arcsec must lie in \(0, 60\]"):
        fof_group_ids([0.0], [0.0], [1], 0.0)
    with pytest.raises(ValueError, match="linking_arcsec"):
        fof_group_ids([0.0], [0.0], [1], 61.0)
    with pytest.raises(ValueError, match="source_id must be unique"):
        fof_group_ids([0.0, 1.0], [0.0, 0.0], [1, 1])


# --------------------------------------------------------------------------------------------------
# The ingested tiny mock


def test_tiny_mock_source_groups(tiny_catalogs):
    con = duckdb.connect()
    glob = str(tiny_catalogs / "{0}" / "{0}" / "dataset" / "*" / "*" / "*" / "*.parquet")
    sources = con.sql(f"SELECT source_id, RA, DEC FROM read_parquet('{glob.format('sources')}')").to_arrow_table()
    expected = by_id(sources, brute_force_group_ids(sources["RA"], sources["DEC"], sources["source_id"], 1.5))
    members = con.sql(f"SELECT source_id, group_id FROM read_parquet('{glob.format(MEMBERS)}')").fetchnumpy()
    assert dict(zip(members["source_id"].tolist(), members["group_id"].tolist())) == expected

    groups = con.sql(f"SELECT group_id, ra, dec, n_epochs, n_members FROM read_parquet('{glob.format(GROUPS)}')")
    groups = groups.fetchnumpy()
    assert sorted(groups["group_id"].tolist()) == sorted(set(expected.values()))
    agn = SkyCoord(*COSMOS_AGN, unit="deg")
    nearest = np.argmin(SkyCoord(groups["ra"], groups["dec"], unit="deg").separation(agn).arcsec)
    assert groups["n_epochs"][nearest] == groups["n_members"][nearest] == 9

    manifest = json.loads((tiny_catalogs / "current" / "manifest.json").read_text())
    assert manifest["products"][GROUPS]["rows"] == groups["group_id"].size
    assert manifest["products"][MEMBERS]["rows"] == sources.num_rows
    # the macro regroups the published sources (float32 RA/DEC) exactly as the ingest grouped them
    con.execute(GROUPS_SQL)
    con.execute(f"CREATE VIEW sources AS FROM read_parquet('{glob.format('sources')}')")
    regrouped = con.sql("SELECT source_id, group_id FROM fof_groups('sources', 1.5)").fetchnumpy()
    assert dict(zip(regrouped["source_id"].tolist(), regrouped["group_id"].tolist())) == expected


# --------------------------------------------------------------------------------------------------
# The SQL macro


@pytest.mark.parametrize("linking_arcsec", [0.5, 1.5, 4.0, 20.0, 60.0])
def test_sql_regroup_equals_python(con, synthetic, linking_arcsec):
    ra, dec, ids = (synthetic[c].to_numpy() for c in ("RA", "DEC", "source_id"))
    expected = by_id(synthetic, fof_group_ids(ra, dec, ids, linking_arcsec))
    assert sql_group_ids(con, synthetic, linking_arcsec) == expected


def test_sql_returns_every_input_column_and_group_size(con, synthetic):
    con.register("points_arrow", synthetic)
    rows = con.sql("SELECT * FROM fof_groups('points_arrow')").to_arrow_table()
    assert rows.column_names == [*synthetic.column_names, "group_id", "group_size"]
    sizes = {}
    for group_id in rows["group_id"].to_pylist():
        sizes[group_id] = sizes.get(group_id, 0) + 1
    assert rows["group_size"].to_pylist() == [sizes[g] for g in rows["group_id"].to_pylist()]


BAD_INPUTS = [
    ("SELECT 1 AS source_id, 10.0 AS ra, 0.0 AS dec", "0", "linking_arcsec must lie in (0, 60] arcsec, got 0"),
    ("SELECT 1 AS source_id, 10.0 AS ra, 0.0 AS dec", "-1.5", "linking_arcsec must lie in (0, 60] arcsec, got -1.5"),
    ("SELECT 1 AS source_id, 10.0 AS ra, 0.0 AS dec", "61", "linking_arcsec must lie in (0, 60] arcsec, got 61"),
    ("SELECT 1 AS source_id, 10.0 AS ra, 0.0 AS dec", "NULL", "linking_arcsec must lie in (0, 60] arcsec, got NULL"),
    ("SELECT 1 AS source_id, 10.0 AS ra, 0.0 AS dec", "'nan'::DOUBLE", "linking_arcsec must lie in (0, 60] arcsec"),
    ("SELECT 1 AS source_id, 10.0 AS ra, 90.5 AS dec", "1.5", "bad.dec must lie in [-90, 90], got 90.5"),
    ("SELECT 1 AS source_id, 'nan'::DOUBLE AS ra, 0.0 AS dec", "1.5", "bad.ra is NULL or not finite"),
    ("SELECT 1 AS source_id, 1.0 AS ra, NULL::DOUBLE AS dec", "1.5", "bad.dec must lie in [-90, 90], got NULL"),
    ("SELECT NULL::BIGINT AS source_id, 1.0 AS ra, 0.0 AS dec", "1.5", "bad has a NULL source_id"),
    ("SELECT * FROM (VALUES (1, 0.0, 0.0), (1, 1.0, 0.0)) t(source_id, ra, dec)", "1.5",
     "source_id is not unique in bad"),
]  # fmt: skip


@pytest.mark.parametrize(("table", "linking", "message"), BAD_INPUTS)
def test_sql_errors_name_the_bad_argument(con, table, linking, message):
    con.execute(f"CREATE TEMP TABLE bad AS {table}")
    with pytest.raises(duckdb.Error, match="fof_groups: " + message.replace("(", r"\(").replace("[", r"\[")):
        con.sql(f"FROM fof_groups('bad', {linking})").fetchall()


@pytest.mark.skipif(DUCKDB_CLI is None, reason="needs the DuckDB CLI (pip install duckdb-cli)")
def test_cli_regroup_equals_python_and_checks_input(synthetic, tmp_path):
    pq.write_table(synthetic, tmp_path / "points.parquet")
    (tmp_path / "groups.sql").write_text(GROUPS_SQL)
    script = (
        ".read groups.sql\n"
        "CREATE VIEW points AS FROM 'points.parquet';\n"
        "COPY (SELECT source_id, group_id FROM fof_groups('points', 1.5)) TO 'at_1.5.csv';\n"
        "COPY (SELECT source_id, group_id FROM fof_groups('points', linking_arcsec := 4)) TO 'at_4.csv';\n"
        "FROM fof_groups('points', 0);\n"
    )
    run = subprocess.run([DUCKDB_CLI, "-batch"], input=script, cwd=tmp_path, capture_output=True, text=True,
                         timeout=60, check=False)  # the last statement fails on purpose
    assert "fof_groups: linking_arcsec must lie in (0, 60] arcsec, got 0" in run.stderr + run.stdout
    ra, dec, ids = (synthetic[c].to_numpy() for c in ("RA", "DEC", "source_id"))
    for linking in (1.5, 4):
        rows = np.loadtxt(tmp_path / f"at_{linking}.csv", delimiter=",", skiprows=1, dtype=np.int64)
        assert dict(zip(rows[:, 0].tolist(), rows[:, 1].tolist())) == by_id(
            synthetic, fof_group_ids(ra, dec, ids, linking)
        )
