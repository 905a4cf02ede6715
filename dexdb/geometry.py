"""Sky geometry shared by the mock, ingest and the cube module: IFU frames and cube orientation."""

from __future__ import annotations

import numpy as np

from dexdb.constants import SYSTEM_ROTATION


def cube_rotation_deg(pa: float) -> float:
    """Rotation angle rho of a cube's pixel grid for a shot position angle (deg)."""
    return 360.0 - (90.0 + pa + SYSTEM_ROTATION)


def pc_matrix(pa: float) -> np.ndarray:
    """The PC matrix that astropy emits for CROTA2 = rho with CDELT1 = -CDELT2."""
    rho = np.deg2rad(cube_rotation_deg(pa))
    c, s = np.cos(rho), np.sin(rho)
    return np.array([[c, s], [-s, c]])


def frame_to_radec(ra0, dec0, pa, dx_arcsec, dy_arcsec):
    """Sky position of offsets (dx, dy) in arcsec along a cube's pixel axes around (ra0, dec0).

    The offsets are gnomonic (TAN) intermediate coordinates: x runs along +pixel x
    (CDELT1 < 0, so towards decreasing RA when rho = 0), y along +pixel y. All arguments
    broadcast, so many frames (one per row of ra0/dec0/pa) convert at once.
    """
    dx = np.asarray(dx_arcsec, dtype=np.float64) / 3600.0
    dy = np.asarray(dy_arcsec, dtype=np.float64) / 3600.0
    rho = np.deg2rad(cube_rotation_deg(np.asarray(pa, dtype=np.float64)))
    c, s = np.cos(rho), np.sin(rho)
    # intermediate world coordinates (deg): diag(CDELT) . PC . pixel offset, CDELT1 = -CDELT2
    xi = -(c * dx + s * dy)
    eta = -s * dx + c * dy
    return tan_deproject(ra0, dec0, np.deg2rad(xi), np.deg2rad(eta))


#: Half the side of a cube's 104 x 104 grid of 0.5" spaxels, to the outer pixel edges (arcsec).
CUBE_HALF_SIDE_ARCSEC = 26.0


def cube_footprint(ra_cen, dec_cen, pa) -> np.ndarray:
    """Outer corners (n, 4, 2) RA/Dec of cube grids, at pixel edges (x, y) = (-0.5, -0.5),
    (103.5, -0.5), (103.5, 103.5), (-0.5, 103.5): the boundary a position must fall inside."""
    h = CUBE_HALF_SIDE_ARCSEC
    dx, dy = np.array([-h, h, h, -h]), np.array([-h, -h, h, h])
    col = lambda v: np.asarray(v, dtype=np.float64).reshape(-1, 1)  # noqa: E731
    ra, dec = frame_to_radec(col(ra_cen), col(dec_cen), col(pa), dx, dy)
    return np.stack([ra, dec], axis=-1)


def radec_to_frame(ra0, dec0, pa, ra, dec):
    """Inverse of :func:`frame_to_radec`: offsets in arcsec along the cube's pixel axes."""
    xi, eta = tan_project(ra0, dec0, ra, dec)
    xi, eta = np.rad2deg(xi), np.rad2deg(eta)
    inv = np.linalg.inv(pc_matrix(pa))
    dx = inv[0, 0] * -xi + inv[0, 1] * eta
    dy = inv[1, 0] * -xi + inv[1, 1] * eta
    return dx * 3600.0, dy * 3600.0


def tan_project(ra0, dec0, ra, dec):
    """Gnomonic projection (radians) of (ra, dec) about (ra0, dec0), all in degrees."""
    a0, d0 = np.deg2rad(ra0), np.deg2rad(dec0)
    a, d = np.deg2rad(np.asarray(ra, dtype=np.float64)), np.deg2rad(np.asarray(dec, dtype=np.float64))
    cosc = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(a - a0)
    xi = np.cos(d) * np.sin(a - a0) / cosc
    eta = (np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(a - a0)) / cosc
    return xi, eta


def tan_deproject(ra0, dec0, xi, eta):
    """Inverse gnomonic projection: (xi, eta) in radians about (ra0, dec0) -> (ra, dec) degrees."""
    a0, d0 = np.deg2rad(ra0), np.deg2rad(dec0)
    rho = np.hypot(xi, eta)
    c = np.arctan(rho)
    with np.errstate(invalid="ignore", divide="ignore"):
        dec = np.where(
            rho == 0,
            d0,
            np.arcsin(np.cos(c) * np.sin(d0) + eta * np.sin(c) * np.cos(d0) / np.where(rho == 0, 1, rho)),
        )
    ra = a0 + np.arctan2(xi * np.sin(c), rho * np.cos(d0) * np.cos(c) - eta * np.sin(d0) * np.sin(c))
    return np.rad2deg(ra) % 360.0, np.rad2deg(dec)


def angular_separation_arcsec(ra1, dec1, ra2, dec2):
    """Great-circle distance (Vincenty form, stable at small and large separations)."""
    a1, d1, a2, d2 = (np.deg2rad(np.asarray(v, dtype=np.float64)) for v in (ra1, dec1, ra2, dec2))
    dra = a2 - a1
    num = np.hypot(np.cos(d2) * np.sin(dra), np.cos(d1) * np.sin(d2) - np.sin(d1) * np.cos(d2) * np.cos(dra))
    den = np.sin(d1) * np.sin(d2) + np.cos(d1) * np.cos(d2) * np.cos(dra)
    return np.rad2deg(np.arctan2(num, den)) * 3600.0
