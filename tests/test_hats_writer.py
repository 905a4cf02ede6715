"""The shared HATS writer: layout, content, partitioning, margin, indexes, determinism, crash safety."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import duckdb
import healpy as hp
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from dexdb.ingest.hats_layout import read_properties
from dexdb.ingest.hats_sky import SkyTiling, margin_members, margin_search_order
from dexdb.ingest.hats_writer import (
    CatalogSpec,
    cone_partition_files,
    healpix29,
    partition_files,
    write_catalog,
)

N_WAVE = 1036
BUDGET = 600_000  # ~140 rows of one spectrum: forces splitting down to several orders
ROW_GROUP_ROWS = 50
MARGIN_ARCSEC = 5.0
SPEC = CatalogSpec(
    name="dets",
    ra_column="ra",
    dec_column="dec",
    sort_tiebreak="detectid",
    id_columns=("detectid", "source_name"),
    partition_bytes=BUDGET,
    row_group_rows=ROW_GROUP_ROWS,
    margin_arcsec=MARGIN_ARCSEC,
    metadata={"flux_unit": "1e-17 erg s-1 cm-2 Angstrom-1", "source_file": "mock.h5", "sha256": "ab" * 32},
)


def _disc(rng, n, ra0, dec0, radius_deg):
    """Uniform points in a small cap around (ra0, dec0), built in the tangent plane so poles work."""
    r = np.radians(radius_deg) * np.sqrt(rng.uniform(0, 1, n))
    theta = rng.uniform(0, 2 * np.pi, n)
    centre = sky_vectors(ra0, dec0)[0]
    east = np.array([-np.sin(np.radians(ra0)), np.cos(np.radians(ra0)), 0.0])
    north = np.cross(centre, east)
    points = centre + (r * np.cos(theta))[:, None] * east + (r * np.sin(theta))[:, None] * north
    return hp.vec2ang(points / np.linalg.norm(points, axis=1, keepdims=True), lonlat=True)


def make_source(seed=0) -> pa.Table:
    """Clusters at a dense field, across RA 0/360, around the pole and at a base-pixel corner, plus scatter."""
    rng = np.random.default_rng(seed)
    parts = [
        _disc(rng, 1600, 150.0, 2.2, 0.35),
        _disc(rng, 800, 0.0, 0.5, 0.25),
        _disc(rng, 400, 0.0, 90.0, 0.15),
        _disc(rng, 600, 90.0, 41.8103, 0.2),
        (rng.uniform(140, 160, 600), rng.uniform(-5, 10, 600)),
    ]
    ra = np.concatenate([p[0] for p in parts])
    dec = np.concatenate([p[1] for p in parts])
    # Some rows share a position, so their order rests on the tie-break column.
    ra[-20:], dec[-20:] = ra[:20], dec[:20]
    n = len(ra)
    shuffle = rng.permutation(n)
    ra, dec = ra[shuffle], dec[shuffle]
    detectid = 5_000_000_000 + rng.permutation(n).astype(np.int64)
    spectra = rng.standard_normal((n, N_WAVE), dtype=np.float32)
    return pa.table(
        {
            "detectid": detectid,
            "ra": ra,
            "dec": dec,
            "flux": rng.normal(10, 2, n).astype(np.float32),
            # Repeated names: the index holds distinct (name, Norder, Npix) pairs.
            "source_name": [f"HETDEX J{i % 2500:06d}" for i in range(n)],
            "spec": pa.FixedSizeListArray.from_arrays(pa.array(spectra.ravel()), N_WAVE),
        }
    )


def batches_of(table: pa.Table, rows=700):
    yield from table.to_batches(max_chunksize=rows)


def sha256_tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def source() -> pa.Table:
    return make_source()


@pytest.fixture(scope="module")
def written(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("hats")
    info = write_catalog(batches_of(source), SPEC, out, workers=2)
    return out, info


@pytest.fixture(scope="module")
def catalog_rows(written) -> pa.Table:
    """Every row of the catalog with the Norder/Npix of the file it came from."""
    tables = []
    for part in partition_files(written[1].layout.collection):
        table = pq.read_table(part.path)
        tables.append(
            table.append_column("Norder", pa.array(np.full(len(table), part.order))).append_column(
                "Npix", pa.array(np.full(len(table), part.pixel))
            )
        )
    return pa.concat_tables(tables)


def arrow_row_bytes(table: pa.Table) -> np.ndarray:
    """The budget's measure: fixed widths, string lengths + 4-byte offsets, 8 bytes of _healpix_29."""
    return 8 + 8 + 8 + 4 + 4 * N_WAVE + 4 + pc.binary_length(table["source_name"]).to_numpy() + 8


def sky_vectors(ra, dec) -> np.ndarray:
    return hp.ang2vec(np.asarray(ra), np.asarray(dec), lonlat=True).reshape(-1, 3)


def separation_arcsec(vectors: np.ndarray, vector: np.ndarray) -> np.ndarray:
    return np.degrees(2 * np.arcsin(np.linalg.norm(vectors - vector, axis=1) / 2)) * 3600


# --------------------------------------------------------------------------------------------------


def test_layout_is_a_valid_hats_collection(written):
    from hats.io.validation import is_valid_catalog

    out, info = written
    layout = info.layout
    assert layout.collection == out / "dets"
    assert is_valid_catalog(layout.collection, strict=True)
    assert is_valid_catalog(layout.catalog, strict=True)
    props = read_properties(layout.catalog / "hats.properties")
    assert props["hats_npix_suffix"] == "/"
    assert props["hats_col_healpix"] == "_healpix_29"
    assert int(props["hats_nrows"]) == info.rows
    for part in partition_files(layout.catalog):
        assert part.path.parent.parent.name == f"Dir={part.pixel // 10000 * 10000}"
        assert part.path.exists()
    assert sorted(p.name for p in out.iterdir()) == [".dets.lock", "dets"]


def test_every_row_once_with_equal_values(source, written, catalog_rows):
    assert catalog_rows.num_rows == source.num_rows == written[1].rows
    got = catalog_rows.sort_by("detectid")
    want = source.sort_by("detectid")
    for name in source.column_names:
        assert got.column(name).equals(want.column(name)), name
    assert got.schema.field("spec").type == pa.list_(pa.float32(), N_WAVE)

    one_file = partition_files(written[1].layout.catalog)[0].path
    assert pl.read_parquet(one_file).schema["spec"] == pl.Array(pl.Float32, N_WAVE)

    dataset_glob = f"{written[1].layout.catalog}/dataset/Norder=*/Dir=*/Npix=*/*.parquet"
    mismatched, total = duckdb.sql(
        f"""SELECT count(*) FILTER (WHERE _healpix_29 >> (2 * (29 - Norder)) != Npix), count(*)
            FROM read_parquet('{dataset_glob}', hive_partitioning = true)"""
    ).fetchall()[0]
    assert (mismatched, total) == (0, source.num_rows)


def test_sorted_rows_correct_pixels_and_budget(source, written, catalog_rows):
    healpix = catalog_rows.column("_healpix_29").to_numpy()
    ra, dec = catalog_rows.column("ra").to_numpy(), catalog_rows.column("dec").to_numpy()
    assert np.array_equal(healpix, hp.ang2pix(2**29, ra, dec, nest=True, lonlat=True))
    assert np.array_equal(healpix, healpix29(ra, dec))

    norder, npix = catalog_rows.column("Norder").to_numpy(), catalog_rows.column("Npix").to_numpy()
    assert np.array_equal(healpix >> (2 * (29 - norder)), npix)

    partitions = partition_files(written[1].layout.catalog)
    orders = {p.order for p in partitions}
    assert len(orders) >= 4, orders
    assert arrow_row_bytes(source).sum() > 10 * BUDGET
    for part in partitions:
        table = pq.read_table(part.path)
        keys = np.c_[table["_healpix_29"].to_numpy(), table["detectid"].to_numpy()]
        assert np.all(np.diff(keys[:, 0]) >= 0)
        ties = np.diff(keys[:, 0]) == 0
        assert np.all(np.diff(keys[:, 1])[ties] > 0)
        assert arrow_row_bytes(table).sum() <= BUDGET
        metadata = pq.read_metadata(part.path)
        assert metadata.num_row_groups == -(-len(table) // ROW_GROUP_ROWS)
        assert all(metadata.row_group(i).num_rows <= ROW_GROUP_ROWS for i in range(metadata.num_row_groups))


def test_parquet_encoding_and_metadata(written):
    layout = written[1].layout
    common = pq.read_schema(layout.catalog / "dataset" / "_common_metadata")
    for key, value in SPEC.metadata.items():
        assert common.metadata[key.encode()] == value.encode()
    part = partition_files(layout.catalog)[0].path
    footer = pq.read_metadata(part)
    assert footer.metadata[b"sha256"] == SPEC.metadata["sha256"].encode()
    assert pq.read_schema(part).equals(common, check_metadata=True)
    columns = {
        footer.row_group(0).column(i).path_in_schema: footer.row_group(0).column(i) for i in range(footer.num_columns)
    }
    spectrum = columns["spec.list.element"]
    assert spectrum.compression == "ZSTD"
    assert "BYTE_STREAM_SPLIT" in spectrum.encodings
    assert "BYTE_STREAM_SPLIT" in columns["ra"].encodings
    assert columns["detectid"].compression == "ZSTD"
    assert not spectrum.is_stats_set and columns["_healpix_29"].is_stats_set


def partition_of(healpix: int, partitions) -> tuple[int, int]:
    return next((p.order, p.pixel) for p in partitions if healpix >> (2 * (29 - p.order)) == p.pixel)


def edge_row_position(written):
    """A row of the dense field that lies within the margin threshold of a partition edge."""
    margin = pa.concat_tables(pq.read_table(p.path) for p in partition_files(written[1].layout.margin))
    vectors = sky_vectors(margin["ra"].to_numpy(), margin["dec"].to_numpy())
    nearest = np.argmin(separation_arcsec(vectors, sky_vectors(150.0, 2.2)[0]))
    return float(margin["ra"][nearest].as_py()), float(margin["dec"][nearest].as_py())


def test_lsdb_cone_search_matches_brute_force(source, written):
    import lsdb

    catalog = lsdb.open_catalog(written[1].layout.collection)
    assert catalog.margin is not None
    vectors = sky_vectors(source["ra"].to_numpy(), source["dec"].to_numpy())
    partitions = partition_files(written[1].layout.catalog)
    ids = source["detectid"].to_numpy()
    healpix = healpix29(source["ra"].to_numpy(), source["dec"].to_numpy())
    cones = [(*edge_row_position(written), 120.0), (0.0005, 0.5, 600.0), (10.0, 89.95, 300.0), (90.0, 41.81, 200.0)]
    for ra, dec, radius in cones:
        inside = separation_arcsec(vectors, sky_vectors(ra, dec)[0]) <= radius
        assert inside.sum() > 5
        found = catalog.cone_search(ra, dec, radius).compute()
        assert sorted(found["detectid"]) == sorted(ids[inside])
        touched = {(p.order, p.pixel) for p in cone_partition_files(partitions, ra, dec, radius)}
        assert {partition_of(h, partitions) for h in healpix[inside]} <= touched


def test_lsdb_crossmatch_near_partition_edges(source, written):
    import lsdb

    rng = np.random.default_rng(1)
    margin = pa.concat_tables(pq.read_table(p.path) for p in partition_files(written[1].layout.margin))
    anchors = np.r_[margin["detectid"].to_numpy(), rng.choice(source["detectid"].to_numpy(), 100)]
    by_id = {d: i for i, d in enumerate(source["detectid"].to_numpy())}
    rows = np.array([by_id[a] for a in anchors])
    offset = rng.uniform(0, 4.0, len(rows)) / 3600
    angle = rng.uniform(0, 2 * np.pi, len(rows))
    dec = np.clip(source["dec"].to_numpy()[rows] + offset * np.sin(angle), -90, 90)
    ra = (
        source["ra"].to_numpy()[rows] + offset * np.cos(angle) / np.cos(np.radians(np.minimum(np.abs(dec), 89.99)))
    ) % 360
    left_frame = pa.table({"lid": np.arange(len(rows)), "ra": ra, "dec": dec}).to_pandas()

    radius = 4.5
    cat_vectors = sky_vectors(source["ra"].to_numpy(), source["dec"].to_numpy())
    expected = set()
    for lid, vector in enumerate(sky_vectors(ra, dec)):
        for j in np.flatnonzero(separation_arcsec(cat_vectors, vector) <= radius):
            expected.add((lid, int(source["detectid"][j].as_py())))

    def pairs(right):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            left = lsdb.from_dataframe(left_frame, ra_column="ra", dec_column="dec", margin_threshold=None)
            result = left.crossmatch(
                right, radius_arcsec=radius, n_neighbors=50, suffixes=("_l", "_r"), suffix_method="all_columns"
            ).compute()
        return set(zip(result["lid_l"].astype(int), result["detectid_r"].astype(int)))

    assert pairs(lsdb.open_catalog(written[1].layout.collection)) == expected
    # Without the margin, pairs straddling partition edges are lost: the data exercise the edges.
    assert pairs(lsdb.open_catalog(written[1].layout.catalog)) < expected


def test_margin_holds_exactly_the_rows_near_each_tile(source, written, catalog_rows):
    """Oracle: sample discs around every row on a 0.25" grid and see which tiles the samples land in."""
    layout = written[1].layout
    step = 0.25
    partitions = [(p.order, p.pixel) for p in partition_files(layout.catalog)]
    margin_tiles = [(p.order, p.pixel) for p in partition_files(layout.margin)]
    tiles = sorted(set(partitions) | set(margin_tiles), key=lambda t: t[1] << (2 * (29 - t[0])))
    starts = np.array([p << (2 * (29 - o)) for o, p in tiles])
    stops = np.array([(p + 1) << (2 * (29 - o)) for o, p in tiles])
    tile_index = {t: i for i, t in enumerate(tiles)}

    margin_pairs = set()
    for o, p in margin_tiles:
        part = pq.read_table(next(q.path for q in partition_files(layout.margin) if (q.order, q.pixel) == (o, p)))
        margin_pairs |= {(int(d), tile_index[(o, p)]) for d in part["detectid"].to_numpy()}

    ra, dec = np.radians(catalog_rows["ra"].to_numpy()), np.radians(catalog_rows["dec"].to_numpy())
    own = np.searchsorted(starts, catalog_rows["_healpix_29"].to_numpy(), side="right") - 1
    ids = catalog_rows["detectid"].to_numpy()
    # The writer widens the margin by how far pixel edges bow from straight chords: up to 1.6" for the
    # order-13 pixels that touch a pole, so rows there may be included from a little further away.
    polar = np.abs(np.degrees(dec)) > 89.9
    must, may = set(), set()
    for selected, outer in ((~polar, MARGIN_ARCSEC + 3 * step), (polar, MARGIN_ARCSEC + 3 * step + 3.5)):
        grid = np.arange(-outer, outer + step / 2, step)
        dx, dy = (g.ravel() for g in np.meshgrid(grid, grid))
        radius = np.hypot(dx, dy)
        dx, dy, inner = dx[radius <= outer], dy[radius <= outer], radius[radius <= outer] <= MARGIN_ARCSEC - step
        for chunk in np.array_split(np.flatnonzero(selected), 8):
            v = sky_vectors(np.degrees(ra[chunk]), np.degrees(dec[chunk]))
            east = np.c_[-np.sin(ra[chunk]), np.cos(ra[chunk]), np.zeros(len(chunk))]
            north = np.cross(v, east)
            offsets = np.radians(1 / 3600) * (dx[None, :, None] * east[:, None] + dy[None, :, None] * north[:, None])
            samples = v[:, None] + offsets
            samples /= np.linalg.norm(samples, axis=2, keepdims=True)
            pixels = hp.vec2pix(2**29, *np.moveaxis(samples, 2, 0), nest=True)
            tile = np.searchsorted(starts, pixels, side="right") - 1
            in_tile = (tile >= 0) & (pixels < stops[np.maximum(tile, 0)])
            assert in_tile[:, inner].all(), "a row lies near a tile that has no margin partition"
            foreign = in_tile & (tile != own[chunk][:, None])
            rows = np.broadcast_to(ids[chunk][:, None], tile.shape)
            may |= set(zip(rows[foreign].tolist(), tile[foreign].tolist()))
            sure = foreign & inner[None, :]
            must |= set(zip(rows[sure].tolist(), tile[sure].tolist()))
    assert must, "no row lies within the margin threshold of a foreign tile"
    assert must <= margin_pairs <= may
    assert written[1].margin_rows == len(margin_pairs)


def test_margin_members_near_the_pole_where_pixel_edges_curve_most():
    """Tiles that shrink towards the north pole down to order 13, whose edges there stray up to 1.6" from
    straight chords. Oracle: distances to true edges sampled every 0.05" (healpy.boundaries) and, for
    base pixels 1-3, which meet base pixel 0 along meridians, exact formulas."""
    from scipy.spatial import cKDTree

    finest = margin_search_order(MARGIN_ARCSEC)
    assert finest == 13
    tiles, pixel = [], 0  # nested child 3 is the northern one, so this chain ends at the pole
    for order in range(finest):
        tiles += [(order + 1, 4 * pixel + child) for child in range(3)]
        pixel = 4 * pixel + 3
    tiles += [(finest, pixel)] + [(0, base) for base in range(1, 12)]
    tiling = SkyTiling.from_pixels(*zip(*tiles))

    rng = np.random.default_rng(2)
    healpix = np.sort(healpix29(rng.uniform(0.01, 89.99, 6000), 90 - rng.uniform(0, 60, 6000) / 3600))
    ra, dec = hp.pix2ang(2**29, healpix, nest=True, lonlat=True)
    own = tiling.locate(healpix)
    found = set()
    for tile in np.unique(own):
        rows = np.flatnonzero(own == tile)
        members, targets = margin_members(healpix[rows], ra[rows], dec[rows], tiling, finest, MARGIN_ARCSEC)
        found |= set(zip(rows[members].tolist(), targets.tolist()))

    colatitude, phi = np.radians(90 - dec), np.radians(ra)
    distances = {  # arcsec from every row to each tile near the pole
        tiling.locate(np.array([base << 58]))[0]: np.degrees(np.arcsin(value)) * 3600
        for base, value in (
            (1, np.sin(colatitude) * np.cos(phi)),
            (2, np.sin(colatitude)),
            (3, np.sin(colatitude) * np.sin(phi)),
        )
    }
    points = sky_vectors(ra, dec)
    for index, (order, pixel) in enumerate(zip(tiling.orders, tiling.pixels)):
        if order >= 9:  # coarser chain tiles end arcminutes from these rows
            step = int(hp.nside2resol(2**order, arcmin=True) * 60 / 0.05) + 1
            chord, _ = cKDTree(hp.boundaries(2**order, int(pixel), step=step, nest=True).T).query(points)
            distances[index] = np.degrees(2 * np.arcsin(chord / 2)) * 3600
    must, may = set(), set()
    for index, distance in distances.items():
        outside = own != index
        must |= {(r, index) for r in np.flatnonzero(outside & (distance <= MARGIN_ARCSEC - 0.05))}
        may |= {(r, index) for r in np.flatnonzero(outside & (distance <= MARGIN_ARCSEC + 3.4))}  # 2 x 1.6" bow
    assert len(must) > 1000
    assert must <= found <= may


def test_id_indexes_find_partitions(source, written, catalog_rows):
    import hats

    layout = written[1].layout
    index = pq.read_table(layout.indexes["detectid"] / "dataset" / "index.parquet")
    assert index.column_names == ["detectid", "Norder", "Npix", "_healpix_29"]
    assert index.num_rows == source.num_rows
    assert np.all(np.diff(index["detectid"].to_numpy()) > 0)
    located = ("Norder", "Npix", "_healpix_29")
    expected = {d: rest for d, *rest in zip(*(catalog_rows[c].to_numpy() for c in ("detectid", *located)))}
    assert all(expected[d] == rest for d, *rest in zip(*(index[c].to_numpy() for c in index.column_names)))

    some = source["detectid"].to_numpy()[:5]
    found = hats.read_hats(layout.indexes["detectid"]).loc_partitions(some)
    assert {(p.order, p.pixel) for p in found} == {tuple(expected[d][:2]) for d in some}

    names = pq.read_table(layout.indexes["source_name"] / "dataset" / "index.parquet")
    name_rows = catalog_rows.select(["source_name", *located]).group_by(["source_name", *located]).aggregate([])
    assert names.num_rows == name_rows.num_rows
    assert names["source_name"].to_pylist() == sorted(names["source_name"].to_pylist())


def test_same_rows_give_identical_files(source, written, tmp_path):
    shuffled = source.take(np.random.default_rng(3).permutation(source.num_rows))
    write_catalog(batches_of(shuffled, rows=333), SPEC, tmp_path, workers=2, sort_buffer_bytes=4 << 20)
    first = sha256_tree(written[1].layout.collection)
    assert sha256_tree(tmp_path / "dets") == first
    assert any(name.endswith(".parquet") for name in first)


def test_failed_run_keeps_the_published_catalog(source, tmp_path):
    small = source.slice(0, 1200)
    write_catalog(batches_of(small), SPEC, tmp_path, workers=1)
    before = sha256_tree(tmp_path / "dets")

    def failing():
        yield from list(batches_of(source, rows=500))[:2]
        raise OSError("input file vanished")

    with pytest.raises(OSError, match="vanished"):
        write_catalog(failing(), SPEC, tmp_path, workers=2)
    assert sha256_tree(tmp_path / "dets") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".dets.lock", "dets"]


def test_killed_run_is_cleaned_up_by_the_next_run(source, tmp_path):
    small = source.slice(0, 600)
    write_catalog(batches_of(small), SPEC, tmp_path, workers=1)
    before = sha256_tree(tmp_path / "dets")
    sentinel = tmp_path / "started"
    script = textwrap.dedent(
        f"""
        import time, sys
        from pathlib import Path
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_hats_writer import SPEC, make_source, batches_of
        from dexdb.ingest.hats_writer import write_catalog

        def stalls():
            yield from batches_of(make_source(), rows=700)
            Path({str(sentinel)!r}).touch()
            time.sleep(600)

        write_catalog(stalls(), SPEC, Path({str(tmp_path)!r}), workers=1)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 30
        while not sentinel.exists():
            assert child.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert (tmp_path / ".dets.staging").exists() and (tmp_path / ".dets.spill").exists()
    assert sha256_tree(tmp_path / "dets") == before

    write_catalog(batches_of(small), SPEC, tmp_path, workers=1)
    assert sha256_tree(tmp_path / "dets") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".dets.lock", "dets", "started"]


def test_publish_interrupted_between_renames_is_restored(source, tmp_path):
    small = source.slice(0, 600)
    write_catalog(batches_of(small), SPEC, tmp_path, workers=1)
    before = sha256_tree(tmp_path / "dets")
    os.rename(tmp_path / "dets", tmp_path / ".dets.old")  # as if killed after renaming the old one aside

    with pytest.raises(ValueError, match="no rows"):
        write_catalog(iter([]), SPEC, tmp_path)
    assert sha256_tree(tmp_path / "dets") == before


def test_rejects_bad_input(source, tmp_path):
    with pytest.raises(ValueError, match="_healpix_29"):
        write_catalog([source.append_column("_healpix_29", source["detectid"])], SPEC, tmp_path)
    bad_dec = source.set_column(2, "dec", pa.array(np.full(source.num_rows, np.nan)))
    with pytest.raises(ValueError, match="finite"):
        write_catalog([bad_dec], SPEC, tmp_path)
    with pytest.raises(ValueError, match="unknown columns"):
        write_catalog([source], dataclasses.replace(SPEC, column_compression={"nope": "zstd"}), tmp_path)
    assert not (tmp_path / "dets").exists()
