"""Multi-epoch grouping of the HPSC2 ``sources``: friends-of-friends (FoF), materialised at ingest.

``sources`` holds one row per source *observation*: a source seen in N shots has N rows with different
``source_id``, ``shotid``, positions jittered by ~0.3" and often different ``source_name``. Two rows are
friends when their separation is at most the linking length (1.5" by default); a group is a connected
component of that relation, so friendship is transitive (A-B 1.4" and B-C 1.4" put A and C in one group
even 2.8" apart).

Group id: the smallest ``source_id`` among the members. It depends only on the set of members, so it is
the same in every run, for any row order and any algorithm, and it is the ``source_id`` of a real row.
The SQL macro ``fof_groups`` (``sql/50_groups.sql``) regroups with another linking length by the same
rule and the same distance test.

Friends are found exactly on the sphere: rows become unit vectors and two rows are friends when their
chord is at most 2 sin(linking / 2), which a cKDTree answers with no RA-wrap or pole special case.

Two HATS collections are written next to ``sources``:

``source_groups``: one row per group, singletons included: ``group_id``, ``n_members``, ``n_epochs``
(distinct shotids; below ``n_members`` when one shot saw two friends), ``ra`` / ``dec`` (float64 deg,
the normalised mean of the members' unit vectors, so RA 0/360 and the poles average correctly),
``radius_arcsec`` (the largest member distance from that mean: large values flag chains),
``source_ids`` and ``shotids`` (list<int64> sorted by source_id, aligned element by element).

``source_group_members``: one row per ``sources`` row: ``source_id``, ``group_id``, ``shotid`` and the
row's own ``RA`` / ``DEC`` (float32, as in ``sources``). Membership is a catalog rather than a list
column because finding the group of a few rows then is a plain BIGINT equi-join
(``sources JOIN source_group_members USING (source_id)``, hashed on the smaller side), and the members
are partitioned and sorted by position like ``sources``, so a cone prunes both; a list column would
have to be unnested over every group. It has a ``source_id`` index, ``source_groups`` a ``group_id`` one.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from dexdb.ingest.hats_layout import COLLECTION_PROPERTIES, CollectionLayout, partition_files
from dexdb.ingest.hats_writer import CatalogSpec
from dexdb.ingest.product import Product

GROUPS = "source_groups"
MEMBERS = "source_group_members"
LINKING_ARCSEC = 1.5
MAX_LINKING_ARCSEC = 60.0  # the SQL macro's bound too: beyond it FoF merges unrelated sources
ARCSEC = np.pi / (180.0 * 3600.0)

# The provenance of sources (its FITS inputs and their digests) carried into the derived catalogs.
_INHERITED_METADATA = ("hpsc2_version", "source_files", "sha256", "unhashed_files")


def chord_of(linking_arcsec: float) -> float:
    """The unit-vector distance of two points ``linking_arcsec`` apart on the sphere."""
    if not 0 < linking_arcsec <= MAX_LINKING_ARCSEC:
        raise ValueError(f"linking_arcsec must lie in (0, {MAX_LINKING_ARCSEC:g}] arcsec, got {linking_arcsec!r}")
    return 2.0 * np.sin(linking_arcsec * ARCSEC / 2.0)


def unit_vectors(ra_deg, dec_deg) -> np.ndarray:
    ra = np.radians(np.asarray(ra_deg, dtype=np.float64))
    dec = np.radians(np.asarray(dec_deg, dtype=np.float64))
    cos_dec = np.cos(dec)
    return np.column_stack((cos_dec * np.cos(ra), cos_dec * np.sin(ra), np.sin(dec)))


def fof_group_ids(ra_deg, dec_deg, source_id, linking_arcsec: float = LINKING_ARCSEC) -> np.ndarray:
    """The group id (smallest ``source_id`` of its friends-of-friends group) of every row."""
    return _group_ids(unit_vectors(ra_deg, dec_deg), np.asarray(source_id, dtype=np.int64), linking_arcsec)


def _group_ids(xyz: np.ndarray, source_id: np.ndarray, linking_arcsec: float) -> np.ndarray:
    chord = chord_of(linking_arcsec)
    ordered = np.sort(source_id)  # np.unique is ~50x slower on 1M ids (numpy 2.4)
    if (ordered[1:] == ordered[:-1]).any():
        raise ValueError("source_id must be unique: it names the groups")
    n = source_id.size
    pairs = cKDTree(xyz).query_pairs(chord, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    n_groups, component = connected_components(graph, directed=False)
    smallest = np.full(n_groups, np.iinfo(np.int64).max)
    np.minimum.at(smallest, component, source_id)
    return smallest[component]


def read_positions(sources_catalog: Path | str) -> pa.Table:
    """``source_id``, ``shotid``, ``RA``, ``DEC`` of every row of a written ``sources`` catalog (the
    collection or its catalog directory); only these columns are read, never the spectra."""
    columns = ["source_id", "shotid", "RA", "DEC"]
    return pa.concat_tables(pq.ParquetFile(f.path).read(columns=columns) for f in partition_files(sources_catalog))


def group_tables(positions: pa.Table, linking_arcsec: float = LINKING_ARCSEC) -> tuple[pa.Table, pa.Table]:
    """The ``source_groups`` and ``source_group_members`` rows of ``positions`` (as read by
    :func:`read_positions`), groups in ``group_id`` order."""
    source_id = positions["source_id"].to_numpy()
    shotid = positions["shotid"].to_numpy()
    xyz = unit_vectors(positions["RA"].to_numpy(), positions["DEC"].to_numpy())
    group_id = _group_ids(xyz, source_id, linking_arcsec)

    # Members of a group contiguous, by source_id: the first of each run is the group id.
    order = np.lexsort((source_id, group_id))
    starts = np.flatnonzero(np.r_[True, group_id[order][1:] != group_id[order][:-1]])
    n_members = np.diff(np.r_[starts, order.size])

    xyz = xyz[order]
    mean = np.add.reduceat(xyz, starts, axis=0)
    mean /= np.linalg.norm(mean, axis=1)[:, None]
    mean_ra = np.degrees(np.arctan2(mean[:, 1], mean[:, 0])) % 360.0
    mean_ra[mean_ra == 360.0] = 0.0  # a tiny negative angle rounds up to 360
    mean_dec = np.degrees(np.arctan2(mean[:, 2], np.hypot(mean[:, 0], mean[:, 1])))
    offset_chord = np.linalg.norm(xyz - np.repeat(mean, n_members, axis=0), axis=1)
    radius_arcsec = 2.0 * np.arcsin(np.maximum.reduceat(offset_chord, starts) / 2.0) / ARCSEC

    # Same group order with members by shotid: count the shotid changes within each group.
    by_shot = np.lexsort((shotid, group_id))
    group_by_shot, shot_sorted = group_id[by_shot], shotid[by_shot]
    new_shot = np.r_[True, (group_by_shot[1:] != group_by_shot[:-1]) | (shot_sorted[1:] != shot_sorted[:-1])]
    n_epochs = np.add.reduceat(new_shot.astype(np.int64), starts)

    offsets = pa.array(np.r_[0, np.cumsum(n_members)], pa.int32())
    groups = pa.table({
        "group_id": source_id[order][starts],
        "n_members": n_members.astype(np.int64),
        "n_epochs": n_epochs,
        "ra": mean_ra,
        "dec": mean_dec,
        "radius_arcsec": radius_arcsec,
        "source_ids": pa.ListArray.from_arrays(offsets, source_id[order]),
        "shotids": pa.ListArray.from_arrays(offsets, shotid[order]),
    })  # fmt: skip
    members = pa.table({
        "source_id": source_id, "group_id": group_id, "shotid": shotid,
        "RA": positions["RA"], "DEC": positions["DEC"],
    })  # fmt: skip
    return groups, members


def products_from_sources(sources_catalog: Path | str, linking_arcsec: float = LINKING_ARCSEC) -> list[Product]:
    """``source_groups`` and ``source_group_members`` of a written ``sources`` catalog, computed now and
    ready for :func:`~dexdb.ingest.hats_writer.write_catalog` (the pipeline writes them after ``sources``)."""
    sources_catalog = Path(sources_catalog)
    groups, members = group_tables(read_positions(sources_catalog), linking_arcsec)
    inherited = _inherited_metadata(sources_catalog)
    rule = (
        f"Friends-of-friends over sources, linking length {linking_arcsec:g} arcsec (transitive; separation "
        "<= linking length, exact on the sphere). group_id = the smallest source_id of the group."
    )
    group_notes = [
        rule,
        (
            "One row per group, singletons included. n_epochs counts distinct shotids. ra/dec: normalised mean "
            "of the members' unit vectors. radius_arcsec: largest member distance from it (large = chained). "
            "source_ids and shotids are sorted by source_id and aligned element by element."
        ),
    ]
    member_notes = [rule, "One row per sources row; RA/DEC are the row's own position, as in sources."]
    units = {GROUPS: {"ra": "deg", "dec": "deg", "radius_arcsec": "arcsec"}, MEMBERS: {"RA": "deg", "DEC": "deg"}}
    specs = {
        GROUPS: {"ra_column": "ra", "dec_column": "dec", "sort_tiebreak": "group_id", "id_columns": ("group_id",)},
        MEMBERS: {"ra_column": "RA", "dec_column": "DEC", "sort_tiebreak": "source_id", "id_columns": ("source_id",)},
    }
    found = []
    for name, table, notes in ((GROUPS, groups, group_notes), (MEMBERS, members, member_notes)):
        metadata = inherited | {
            "units": json.dumps(units[name]),
            "notes": json.dumps(notes),
            "derived_from": "sources",
            "linking_arcsec": f"{linking_arcsec:g}",
        }
        spec = CatalogSpec(name=name, metadata=metadata, **specs[name])
        found.append(Product(spec, [sources_catalog], lambda table=table: iter([table]), table.num_rows, notes=notes))
    return found


def _inherited_metadata(sources_catalog: Path) -> dict[str, str]:
    if (sources_catalog / COLLECTION_PROPERTIES).exists():
        sources_catalog = CollectionLayout.read(sources_catalog).catalog
    stored = pq.read_schema(sources_catalog / "dataset" / "_common_metadata").metadata or {}
    return {key: stored[key.encode()].decode() for key in _INHERITED_METADATA if key.encode() in stored}
