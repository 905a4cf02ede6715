"""HEALPix arithmetic shared by the HATS writer and the SQL layer.

Everything here uses the nested scheme. A pixel ``p`` of order ``k`` covers the order-29 index range
``[p << 2(29-k), (p+1) << 2(29-k))``, so the order-``k`` pixel of a row is ``_healpix_29 >> 2(29-k)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import healpy as hp
import numpy as np

HEALPIX_COLUMN = "_healpix_29"
HEALPIX_ORDER = 29
N_BASE_PIXELS = 12
ARCSEC = np.pi / (180.0 * 3600.0)

# Margin distances are measured to great-circle chords between pixel corners, widened by how far each
# pixel's true edges bow away from its chords (measured at EDGE_SAMPLES points per edge): below 0.001"
# for 26" pixels at |dec| < 60 deg, up to 1.6" for those touching a pole. The slack covers the bow
# between samples and rounding.
EDGE_SAMPLES = 16
EDGE_SLACK_ARCSEC = 0.01


def healpix29(ra, dec) -> np.ndarray:
    """The int64 nested order-29 HEALPix index of each (ra, dec) in degrees (the ``_healpix_29`` value)."""
    ra = np.asarray(ra, dtype=np.float64)
    dec = np.asarray(dec, dtype=np.float64)
    if not (np.isfinite(ra).all() and np.isfinite(dec).all()):
        raise ValueError("ra/dec must be finite (no NaN, inf or null)")
    if np.abs(dec).max(initial=0.0) > 90.0:
        raise ValueError("dec must lie in [-90, 90] degrees")
    return hp.ang2pix(1 << HEALPIX_ORDER, ra, dec, nest=True, lonlat=True).astype(np.int64)


def pixel_range(order: int, pixel: int) -> tuple[int, int]:
    """The half-open ``_healpix_29`` range covered by a pixel."""
    shift = 2 * (HEALPIX_ORDER - order)
    return pixel << shift, (pixel + 1) << shift


def margin_search_order(threshold_arcsec: float) -> int:
    """The order at which margin candidates are found among the 8 neighbours of a row's pixel.

    Every point within the threshold of a pixel must lie in that pixel's immediate neighbours, which holds
    while the threshold is well below the narrowest pixel width. hats estimates that width as the mean
    pixel size / 1.6; asking for 3x the threshold adds a factor ~2 for the distorted pixels near the
    base-pixel corners. Partitions cannot be finer than this order.
    """
    sizes = np.array([hp.nside2resol(1 << k, arcmin=True) * 60.0 for k in range(HEALPIX_ORDER + 1)])
    fitting = np.flatnonzero(sizes >= 3.0 * threshold_arcsec)
    if len(fitting) == 0:
        raise ValueError(f"margin threshold {threshold_arcsec} arcsec is larger than a base pixel")
    return int(fitting[-1])


@dataclass(frozen=True)
class SkyTiling:
    """Disjoint pixels, sorted in nested order, that cover the whole sphere (partitions and empty pixels)."""

    orders: np.ndarray
    pixels: np.ndarray
    starts: np.ndarray

    @classmethod
    def from_pixels(cls, orders, pixels) -> SkyTiling:
        orders = np.asarray(orders, dtype=np.int64)
        pixels = np.asarray(pixels, dtype=np.int64)
        starts = pixels << (2 * (HEALPIX_ORDER - orders))
        by_start = np.argsort(starts)
        return cls(orders[by_start], pixels[by_start], starts[by_start])

    def locate(self, healpix_29: np.ndarray) -> np.ndarray:
        """Index of the tile that contains each order-29 index."""
        return np.searchsorted(self.starts, healpix_29, side="right") - 1


def margin_members(
    healpix_29: np.ndarray,
    ra: np.ndarray,
    dec: np.ndarray,
    tiling: SkyTiling,
    search_order: int,
    threshold_arcsec: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of one tile that lie within the threshold of another tile, and which tile that is.

    ``healpix_29`` must be sorted and all rows must lie in the same tile. A row belongs to the margin of
    tile T when its angular distance to T is at most the threshold. The nearest point of T then lies in
    a neighbour (at ``search_order``) of the row's own pixel, so only those neighbours are measured.
    Returns ``(row_index, tile_index)`` pairs sorted by tile then row.
    """
    shift = 2 * (HEALPIX_ORDER - search_order)
    fine = healpix_29 >> shift
    row_starts = np.flatnonzero(np.r_[True, fine[1:] != fine[:-1]])
    row_counts = np.diff(np.r_[row_starts, len(fine)])
    unique_fine = fine[row_starts]
    own_tile = tiling.locate(healpix_29[:1])[0]

    # Only pixels on the edge of the tile have neighbours outside it.
    edge = np.flatnonzero(on_parent_edge(unique_fine, search_order, search_order - int(tiling.orders[own_tile])))
    neighbours = hp.get_all_neighbours(1 << search_order, unique_fine[edge], nest=True).T  # (edge pixels, 8)
    neighbour_tiles = tiling.locate(np.where(neighbours >= 0, neighbours, 0) << shift)
    foreign = (neighbours >= 0) & (neighbour_tiles != own_tile)
    edge_index, slot = np.nonzero(foreign)
    if len(edge_index) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    pixel_index = edge[edge_index]

    # One candidate per (row, foreign neighbour pixel).
    repeats = row_counts[pixel_index]
    first_row = np.repeat(row_starts[pixel_index], repeats)
    offset_in_pixel = np.arange(repeats.sum()) - np.repeat(np.cumsum(repeats) - repeats, repeats)
    rows = first_row + offset_in_pixel
    target_pixel = np.repeat(neighbours[edge_index, slot], repeats)
    target_tile = np.repeat(neighbour_tiles[edge_index, slot], repeats)

    distinct_pixels, which = np.unique(target_pixel, return_inverse=True)
    corners, bows = _corners_and_bows(search_order, distinct_pixels)
    points = hp.ang2vec(ra[rows], dec[rows], lonlat=True).reshape(-1, 3)
    distance = _distance_to_quad(points, corners[which])
    near = distance <= (threshold_arcsec + EDGE_SLACK_ARCSEC) * ARCSEC + bows[which]

    key = np.unique(target_tile[near] * len(healpix_29) + rows[near])
    return key % len(healpix_29), key // len(healpix_29)


def on_parent_edge(pixels: np.ndarray, order: int, levels: int) -> np.ndarray:
    """Whether each nested order-``order`` pixel lies on the edge of its ancestor ``levels`` orders up,
    i.e. has a grid neighbour outside that ancestor: its (x, y) within the ancestor (the low ``levels``
    bits of healpy's face coordinates) is 0 or 2**levels - 1."""
    x, y, _ = hp.pix2xyf(1 << order, pixels, nest=True)
    last = (1 << levels) - 1
    x, y = x & last, y & last
    return (x == 0) | (x == last) | (y == 0) | (y == last)


def _corners_and_bows(order: int, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Corner unit vectors (n, 4, 3) of pixels, and how far (rad) their edges stray from the chords."""
    samples = np.moveaxis(hp.boundaries(1 << order, pixels, step=EDGE_SAMPLES, nest=True), 1, 2)
    corners = samples[:, ::EDGE_SAMPLES]
    bows = np.zeros(len(pixels))
    for edge in range(4):
        normal = np.cross(corners[:, edge], corners[:, (edge + 1) % 4])
        normal /= np.linalg.norm(normal, axis=1, keepdims=True)
        stop = (edge + 1) * EDGE_SAMPLES
        along = samples[:, edge * EDGE_SAMPLES : stop] if edge < 3 else samples[:, 3 * EDGE_SAMPLES :]
        off_chord = np.abs(np.einsum("ijk,ik->ij", along, normal)).max(axis=1)
        bows = np.maximum(bows, np.arcsin(np.minimum(off_chord, 1.0)))
    return corners, bows


def _distance_to_quad(points: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """Angular distance (rad) from unit vectors ``points`` (n, 3) to the edges of quads ``corners`` (n, 4, 3)."""
    best = np.full(len(points), np.inf)
    for edge in range(4):
        a = corners[:, edge]
        b = corners[:, (edge + 1) % 4]
        normal = np.cross(a, b)
        normal /= np.linalg.norm(normal, axis=1, keepdims=True)
        height = np.einsum("ij,ij->i", points, normal)
        foot = points - height[:, None] * normal
        within_arc = (np.einsum("ij,ij->i", np.cross(a, foot), normal) >= 0) & (
            np.einsum("ij,ij->i", np.cross(foot, b), normal) >= 0
        )
        to_arc = np.arcsin(np.minimum(np.abs(height), 1.0))
        to_ends = np.minimum(_chord_angle(points, a), _chord_angle(points, b))
        best = np.minimum(best, np.where(within_arc, to_arc, to_ends))
    return best


def _chord_angle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Angle between unit vectors, accurate for tiny angles."""
    return 2.0 * np.arcsin(np.minimum(np.linalg.norm(u - v, axis=1) / 2.0, 1.0))


def cone_pixels(order: int, ra: float, dec: float, radius_arcsec: float) -> np.ndarray:
    """The order-``order`` pixels that may overlap a cone: a superset, by at most ~1/8 of the radius.

    healpy's inclusive query over-includes by a quarter of a pixel of the order it is asked at, which
    for a coarse partition is degrees; so the query runs at an order whose pixels match the radius.
    """
    query_order = max(order, int(np.clip(np.log2(np.sqrt(np.pi / 3) / (radius_arcsec * ARCSEC)), 0, HEALPIX_ORDER)))
    vector = hp.ang2vec(ra, dec, lonlat=True)
    fine = hp.query_disc(1 << query_order, vector, radius_arcsec * ARCSEC, inclusive=True, nest=True)
    return np.unique(fine >> (2 * (query_order - order)))
