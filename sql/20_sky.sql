-- Sky geometry: angular distance, HEALPix nested indexing, cone search, cross-match, cube coverage.
--
--   ang_dist_arcsec(ra1, dec1, ra2, dec2)       great-circle distance in arcsec; NULL in, NULL out
--   healpix_nest(order, ra, dec)                healpy.ang2pix(2**order, ra, dec, nest=True, lonlat=True)
--   cone(catalog, ra, dec, radius_arcsec)       the catalog's rows within the radius and dist_arcsec,
--                                               nearest first
--   cone_in_files(files, ra, dec, radius_arcsec)
--                                               the same over a list of the catalog's partition files
--   xmatch(tbl, catalog, radius_arcsec, nearest := false)
--                                               tbl's rows, each with every catalog row within the
--                                               radius (or only the nearest) and dist_arcsec
--   cubes_at(ra, dec)                           ifu_index rows (path, url, ...) of the cubes whose
--                                               footprint contains the position, and dist_arcsec
--   cubes_covering(tbl)                         the same for every row of tbl
--
-- Degrees unless a name says arcsec; radius_arcsec lies in (0, 36000] (10 deg). `catalog` is a view
-- name of 10_views.sql, which is also its directory: the catalog macros read its
-- partition_bounds.parquet (cone) or partition_info.csv (xmatch) and join its hive columns Norder
-- and Npix. Positions are the columns ra/dec (any case; RA/DEC of sources) or, in ifu_index,
-- ra_cen/dec_cen. `tbl` names a table, view, CTE or file with columns ra and dec. cone and cubes_at take constants; xmatch and cubes_covering are the
-- ways to search for many positions. Bad arguments raise an error that names the macro and argument.
--
-- Conventions: macros named _sky_* are building blocks, and so are the columns and CTEs named _sky_*
-- (a name the user's tables cannot take by accident). Parameter names avoid `dec` (DuckDB 1.5 refuses
-- it as a macro parameter) and catalog column names, which a parameter would shadow. Lambdas use
-- `lambda x: ...`, the only form DuckDB 2.0 accepts. Float constants carry an exponent so that they
-- are DOUBLE, not DECIMAL.

-- ---------------------------------------------------------------------------------------------------
-- Argument checks. Each _sky_*_error is 0 for a valid value (or NULL) and raises an error naming the
-- argument otherwise; macros add it to their result rather than wrapping their arithmetic in it,
-- because DuckDB does not share the common subexpressions of a CASE. For constants it folds to 0.

CREATE OR REPLACE TEMP MACRO _sky_null_error(value, name) AS
CASE WHEN value IS NULL THEN error(name || ' must not be NULL') ELSE 0 END;

CREATE OR REPLACE TEMP MACRO _sky_dec_error(value, name) AS
CASE
    WHEN isnan(value::DOUBLE) THEN error(name || ' must be a number of degrees, got NaN')
    WHEN abs(value::DOUBLE) > 90 THEN error(name || ' must lie in [-90, 90] degrees, got ' || value::VARCHAR)
    ELSE 0
END;

CREATE OR REPLACE TEMP MACRO _sky_ra_error(value, name) AS
CASE
    WHEN isnan(value::DOUBLE) THEN error(name || ' must be a number of degrees, got NaN')
    WHEN isinf(value::DOUBLE) THEN error(name || ' must be finite, got ' || value::VARCHAR)
    ELSE 0
END;

CREATE OR REPLACE TEMP MACRO _sky_position_error(ra_deg, dec_deg, caller) AS
_sky_null_error(ra_deg, caller || ': ra') + _sky_ra_error(ra_deg, caller || ': ra')
+ _sky_null_error(dec_deg, caller || ': dec') + _sky_dec_error(dec_deg, caller || ': dec');

-- Radii above 10 deg would read most of a catalog: refused rather than left to run for minutes.
CREATE OR REPLACE TEMP MACRO max_radius_arcsec() AS 36000e0;

CREATE OR REPLACE TEMP MACRO _sky_radius_error(value, caller) AS
CASE
    WHEN value IS NULL OR isnan(value::DOUBLE) THEN error(caller || ': radius_arcsec must be a number, got '
                                                          || coalesce(value::VARCHAR, 'NULL'))
    WHEN value <= 0 OR value > max_radius_arcsec() THEN
        error(caller || ': radius_arcsec must lie in (0, 36000] arcsec (10 deg), got ' || value::VARCHAR)
    ELSE 0
END;

-- value once the error terms are 0. Unlike value + terms, a NULL constant value cannot fold the terms away.
CREATE OR REPLACE TEMP MACRO _sky_checked(value, error_terms) AS CASE WHEN error_terms = 0 THEN value END;

-- '' once the error terms are 0. The catalog macros append it to the partition table's path: table
-- function arguments are evaluated while the query is bound, so a bad constant argument fails there,
-- before anything is read, and no optimisation of an empty result can skip the check.
CREATE OR REPLACE TEMP MACRO _sky_checked_at_bind(error_terms) AS _sky_checked('', error_terms);

-- ---------------------------------------------------------------------------------------------------
-- Angular distance: Vincenty's formula, accurate from 0 to 180 deg (the haversine loses digits near 180).

CREATE OR REPLACE TEMP MACRO _sky_dist_arcsec(ra1, dec1, ra2, dec2) AS
degrees(atan2(
    sqrt(pow(cos(radians(dec2)) * sin(radians(ra2 - ra1)), 2)
         + pow(cos(radians(dec1)) * sin(radians(dec2))
               - sin(radians(dec1)) * cos(radians(dec2)) * cos(radians(ra2 - ra1)), 2)),
    sin(radians(dec1)) * sin(radians(dec2))
        + cos(radians(dec1)) * cos(radians(dec2)) * cos(radians(ra2 - ra1)))) * 3600;

CREATE OR REPLACE TEMP MACRO ang_dist_arcsec(ra1, dec1, ra2, dec2) AS
_sky_dist_arcsec(ra1::DOUBLE, dec1::DOUBLE, ra2::DOUBLE, dec2::DOUBLE)
+ _sky_ra_error(ra1, 'ang_dist_arcsec: ra1') + _sky_dec_error(dec1, 'ang_dist_arcsec: dec1')
+ _sky_ra_error(ra2, 'ang_dist_arcsec: ra2') + _sky_dec_error(dec2, 'ang_dist_arcsec: dec2');

-- ---------------------------------------------------------------------------------------------------
-- HEALPix, nested scheme (Gorski et al. 2005). An order-k pixel is face * 4^k + interleave(x, y), x in
-- the even bits. The arithmetic repeats healpy's operation by operation (radians, theta = pi/2 - lat,
-- the |z| = 2/3 split, the sin(theta) form within 0.01 rad of a pole) so that boundary points fall in
-- the same pixel. It runs at order 29 only: every product by nside = 2^k is exact, so the order-k x, y
-- and pixel are those of order 29 shifted right, which is also how _healpix_29 is used everywhere.

-- One step of moving bit i of v to bit 2i (masks 0x0000FFFF0000FFFF, 0x00FF00FF00FF00FF, ..., 0x5555...).
-- The lambda binds v once: a macro would copy v's expression into both operands, 32 times over five
-- steps, and such expression trees take long to plan.
CREATE OR REPLACE TEMP MACRO _sky_spread_step(v, shift, mask) AS
list_transform([v], lambda a: (a | (a << shift)) & mask)[1];

CREATE OR REPLACE TEMP MACRO _sky_spread_bits(v) AS
_sky_spread_step(_sky_spread_step(_sky_spread_step(_sky_spread_step(_sky_spread_step(
    v, 16, 281470681808895), 8, 71777214294589695), 4, 1085102592571150095), 2, 3689348814741910323),
    1, 6148914691236517205);

CREATE OR REPLACE TEMP MACRO _sky_xyf2nest(order_k, face, x, y) AS
(face << (2 * order_k)) | _sky_spread_bits(x) | (_sky_spread_bits(y) << 1);

-- theta = pi/2 - lat and phi in radians, as healpy's lonlat conversion computes them. Clamping keeps
-- out-of-range input, NaN included, from failing inside the arithmetic before the argument checks
-- report it; the factor keeps NULL NULL (least and greatest skip NULLs, and NaN = NaN in DuckDB).
CREATE OR REPLACE TEMP MACRO _sky_clamp(v, low, high) AS least(high, greatest(low, v::DOUBLE)) * (v = v)::INTEGER;
CREATE OR REPLACE TEMP MACRO _sky_theta(lat) AS 1.5707963267948966e0 - _sky_clamp(lat, -9e1, 9e1) * 1.7453292519943295e-2;
CREATE OR REPLACE TEMP MACRO _sky_phi(lon) AS _sky_clamp(lon, -1e300, 1e300) * 1.7453292519943295e-2;
CREATE OR REPLACE TEMP MACRO _sky_near_pole(theta) AS theta < 1e-2 OR theta > 3.14159e0 - 1e-2;

-- tt = phi / (pi/2) reduced to [0, 4) as healpy's fmodulo does it. C's fmod is exact and DuckDB's is
-- not; v - 4 trunc(v / 4) is exact for |v| < 2^54. Negative v wrap to v + 4, or to 0 where that rounds to 4.
CREATE OR REPLACE TEMP MACRO _sky_wrap4(r) AS r + 4 * (r < 0)::INTEGER;
CREATE OR REPLACE TEMP MACRO _sky_tt(phi) AS
_sky_wrap4(phi * 6.366197723675814e-1 - 4 * trunc(phi * 6.366197723675814e-1 / 4))
- 4 * (_sky_wrap4(phi * 6.366197723675814e-1 - 4 * trunc(phi * 6.366197723675814e-1 / 4)) >= 4)::INTEGER;

-- Below, z = cos(theta), s = sin(theta), near = _sky_near_pole(theta). Both the equatorial-belt and
-- the polar-cap formulas are evaluated for every point and one is picked by multiplying with 0/1
-- flags: each is finite everywhere, and unlike CASE branches they then share their common terms.

-- Edge-line indices at order 29, jp along the ascending and jm along the descending lines: in the belt
-- from (tt, z), in a cap from the distance to the pole and the position within face column ntt.
CREATE OR REPLACE TEMP MACRO _sky_belt_jp(z, tt) AS
floor(536870912e0 * (5e-1 + tt) - 536870912e0 * (z * 7.5e-1))::BIGINT;
CREATE OR REPLACE TEMP MACRO _sky_belt_jm(z, tt) AS
floor(536870912e0 * (5e-1 + tt) + 536870912e0 * (z * 7.5e-1))::BIGINT;

-- nside sqrt(3 (1 - |z|)), near a pole the better conditioned nside s / sqrt((1 + |z|) / 3).
CREATE OR REPLACE TEMP MACRO _sky_cap_use_s(z, near) AS (abs(z) >= 9.9e-1 AND near)::INTEGER;
CREATE OR REPLACE TEMP MACRO _sky_cap_scale(z, s, near) AS
(1 - _sky_cap_use_s(z, near)) * (536870912e0 * sqrt(3 * (1 - abs(z))))
+ _sky_cap_use_s(z, near) * (536870912e0 * s / sqrt((1e0 + abs(z)) / 3e0));
CREATE OR REPLACE TEMP MACRO _sky_cap_ntt(tt) AS least(3e0, trunc(tt));
CREATE OR REPLACE TEMP MACRO _sky_cap_jp(z, s, tt, near) AS
least(floor((tt - _sky_cap_ntt(tt)) * _sky_cap_scale(z, s, near)), 536870911e0)::BIGINT;
CREATE OR REPLACE TEMP MACRO _sky_cap_jm(z, s, tt, near) AS
least(floor((1e0 - (tt - _sky_cap_ntt(tt))) * _sky_cap_scale(z, s, near)), 536870911e0)::BIGINT;

CREATE OR REPLACE TEMP MACRO _sky_in_belt(z) AS (abs(z) <= 6.666666666666666e-1)::BIGINT;
CREATE OR REPLACE TEMP MACRO _sky_in_north_cap(z) AS (abs(z) > 6.666666666666666e-1 AND z > 0)::BIGINT;
CREATE OR REPLACE TEMP MACRO _sky_in_south_cap(z) AS (abs(z) > 6.666666666666666e-1 AND z <= 0)::BIGINT;

-- Belt faces: 4..7 between lines of the same index, else 0..3 (north) or 8..11 (south).
CREATE OR REPLACE TEMP MACRO _sky_belt_face(jp, jm) AS
(jp >> 29 = jm >> 29)::BIGINT * ((jp >> 29) | 4)
+ (jp >> 29 < jm >> 29)::BIGINT * (jp >> 29)
+ (jp >> 29 > jm >> 29)::BIGINT * ((jm >> 29) + 8);

-- Face, x and y at order 29 from the belt lines (bjp, bjm) and the cap lines (cjp, cjm).
CREATE OR REPLACE TEMP MACRO _sky_face(z, tt, bjp, bjm) AS
_sky_in_belt(z) * _sky_belt_face(bjp, bjm)
+ _sky_in_north_cap(z) * _sky_cap_ntt(tt)::BIGINT
+ _sky_in_south_cap(z) * (_sky_cap_ntt(tt)::BIGINT + 8);

CREATE OR REPLACE TEMP MACRO _sky_x29(z, bjm, cjp, cjm) AS
_sky_in_belt(z) * (bjm & 536870911) + _sky_in_north_cap(z) * (536870911 - cjm) + _sky_in_south_cap(z) * cjp;

CREATE OR REPLACE TEMP MACRO _sky_y29(z, bjp, cjp, cjm) AS
_sky_in_belt(z) * (536870911 - (bjp & 536870911)) + _sky_in_north_cap(z) * (536870911 - cjp) + _sky_in_south_cap(z) * cjm;

CREATE OR REPLACE TEMP MACRO _sky_nest29(z, s, tt, near) AS
_sky_xyf2nest(29,
    _sky_face(z, tt, _sky_belt_jp(z, tt), _sky_belt_jm(z, tt)),
    _sky_x29(z, _sky_belt_jm(z, tt), _sky_cap_jp(z, s, tt, near), _sky_cap_jm(z, s, tt, near)),
    _sky_y29(z, _sky_belt_jp(z, tt), _sky_cap_jp(z, s, tt, near), _sky_cap_jm(z, s, tt, near)));

CREATE OR REPLACE TEMP MACRO healpix_nest(order_k, ra_deg, dec_deg) AS
(_sky_nest29(cos(_sky_theta(dec_deg)), sin(_sky_theta(dec_deg)), _sky_tt(_sky_phi(ra_deg)), _sky_near_pole(_sky_theta(dec_deg)))
 >> (2 * (29 - least(29, greatest(0, order_k::BIGINT)))))
+ CASE
      WHEN order_k <> trunc(order_k) OR order_k < 0 OR order_k > 29 THEN
          error('healpix_nest: order must be an integer in [0, 29], got ' || order_k::VARCHAR)
      ELSE 0
  END
+ _sky_ra_error(ra_deg, 'healpix_nest: ra') + _sky_dec_error(dec_deg, 'healpix_nest: dec');

-- ---------------------------------------------------------------------------------------------------
-- Pixel neighbourhoods. Within a face the 8 neighbours of (x, y) are (x +- 1, y +- 1); a step off the
-- face (x or y outside [0, nside)) lands on the face across that edge or corner. In the nested frame +x
-- points north-east and +y north-west on every face; faces 0-3 are the north cap, 4-7 the belt, 8-11
-- the south cap, and face f + 1 of a row lies east of face f.

-- Per face row (0 north, 1 belt, 2 south) and off-face step (xo, yo in -1..1): the face reached,
-- face_base + ((f + col_shift) & 3), and how (x, y) continue there: 'wrap' (x mod nside, y mod nside)
-- where faces meet side by side, 'swap' (mirror(y), mirror(x)) across an edge between two faces of a
-- cap, 'mirror' (mirror(x), mirror(y)) across a pole; mirror reflects an off-face coordinate back onto
-- the face. Absent steps have no neighbour: the face corners where only three faces meet.
CREATE OR REPLACE TEMP MACRO _sky_neighbour_rules() AS TABLE
SELECT * FROM (VALUES
    (0, 0, 0, 0, 0, 'wrap'), (0, 1, 0, 0, 1, 'swap'), (0, 0, 1, 0, 3, 'swap'), (0, -1, 0, 4, 0, 'wrap'),
    (0, 0, -1, 4, 1, 'wrap'), (0, 1, 1, 0, 2, 'mirror'), (0, -1, -1, 8, 0, 'wrap'),
    (1, 0, 0, 4, 0, 'wrap'), (1, 1, 0, 0, 0, 'wrap'), (1, 0, 1, 0, 3, 'wrap'), (1, -1, 0, 8, 3, 'wrap'),
    (1, 0, -1, 8, 0, 'wrap'), (1, 1, -1, 4, 1, 'wrap'), (1, -1, 1, 4, 3, 'wrap'),
    (2, 0, 0, 8, 0, 'wrap'), (2, 1, 0, 4, 1, 'wrap'), (2, 0, 1, 4, 0, 'wrap'), (2, -1, 0, 8, 3, 'swap'),
    (2, 0, -1, 8, 1, 'swap'), (2, 1, 1, 0, 0, 'wrap'), (2, -1, -1, 8, 2, 'mirror')
) AS rules(face_row, xo, yo, face_base, col_shift, transition);

CREATE OR REPLACE TEMP MACRO _sky_mirror(v, nside) AS
CASE WHEN v < 0 THEN -1 - v WHEN v >= nside THEN 2 * nside - 1 - v ELSE v END;

CREATE OR REPLACE TEMP MACRO _sky_off_face(v, nside) AS (v >= nside)::INTEGER - (v < 0)::INTEGER;

-- Every row of relation `points` (DOUBLE columns _sky_ra, _sky_dec) once per order_k pixel that is its
-- own or a neighbour of it (9 rows, 8 at the face corners where three faces meet), in _sky_cell. Every
-- point within 0.68 nside2resol(order_k) of the point lies in these pixels (the narrowest place is at
-- pixel corners near the poles); callers keep radii at most 0.5 of it. The stages let each formula be
-- planned and evaluated once.
CREATE OR REPLACE TEMP MACRO _sky_cells(points, order_k) AS TABLE
WITH _sky_unit AS (
    SELECT *, cos(_sky_theta(_sky_dec)) AS _sky_cell_z, sin(_sky_theta(_sky_dec)) AS _sky_cell_s,
           _sky_tt(_sky_phi(_sky_ra)) AS _sky_cell_tt, _sky_near_pole(_sky_theta(_sky_dec)) AS _sky_cell_near
    FROM query_table(points)
), _sky_lines AS (
    SELECT *,
           _sky_belt_jp(_sky_cell_z, _sky_cell_tt) AS _sky_cell_bjp,
           _sky_belt_jm(_sky_cell_z, _sky_cell_tt) AS _sky_cell_bjm,
           _sky_cap_jp(_sky_cell_z, _sky_cell_s, _sky_cell_tt, _sky_cell_near) AS _sky_cell_cjp,
           _sky_cap_jm(_sky_cell_z, _sky_cell_s, _sky_cell_tt, _sky_cell_near) AS _sky_cell_cjm
    FROM _sky_unit
), _sky_steps AS (
    SELECT p.*,
           _sky_face(p._sky_cell_z, p._sky_cell_tt, p._sky_cell_bjp, p._sky_cell_bjm) AS _sky_cell_face,
           (_sky_x29(p._sky_cell_z, p._sky_cell_bjm, p._sky_cell_cjp, p._sky_cell_cjm) >> (29 - order_k)) + step.dx
               AS _sky_cell_nx,
           (_sky_y29(p._sky_cell_z, p._sky_cell_bjp, p._sky_cell_cjp, p._sky_cell_cjm) >> (29 - order_k)) + step.dy
               AS _sky_cell_ny
    FROM _sky_lines p,
         (VALUES (0, 0), (1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1)) AS step(dx, dy)
)
SELECT s.* EXCLUDE (_sky_cell_z, _sky_cell_s, _sky_cell_tt, _sky_cell_near, _sky_cell_bjp, _sky_cell_bjm,
                    _sky_cell_cjp, _sky_cell_cjm, _sky_cell_face, _sky_cell_nx, _sky_cell_ny),
       _sky_xyf2nest(order_k,
           r.face_base + ((s._sky_cell_face + r.col_shift) & 3),
           CASE r.transition
               WHEN 'wrap' THEN s._sky_cell_nx & ((1 << order_k) - 1)
               WHEN 'swap' THEN _sky_mirror(s._sky_cell_ny, 1 << order_k)
               ELSE _sky_mirror(s._sky_cell_nx, 1 << order_k) END,
           CASE r.transition
               WHEN 'wrap' THEN s._sky_cell_ny & ((1 << order_k) - 1)
               WHEN 'swap' THEN _sky_mirror(s._sky_cell_nx, 1 << order_k)
               ELSE _sky_mirror(s._sky_cell_ny, 1 << order_k) END) AS _sky_cell
FROM _sky_steps s
JOIN _sky_neighbour_rules() r
  ON r.face_row = s._sky_cell_face >> 2
 AND r.xo = _sky_off_face(s._sky_cell_nx, 1 << order_k)
 AND r.yo = _sky_off_face(s._sky_cell_ny, 1 << order_k);

-- The order whose pixels are at least twice as wide as the radius (211076.285" = nside2resol(1)).
CREATE OR REPLACE TEMP MACRO _sky_cell_order(radius_arcsec) AS
least(29, greatest(0, floor(log2(211076.28514206142e0 / (2 * radius_arcsec::DOUBLE)))))::BIGINT;

-- ---------------------------------------------------------------------------------------------------
-- Cone search. Pruning: partitions through the RA/Dec boxes of partition_bounds.parquet, a small
-- table joined on the view's hive columns, so DuckDB opens no other partition file; Parquet row
-- groups through a Dec band and an RA window on the rows, which fold to constants and meet the row
-- groups' statistics (rows are sorted by _healpix_29, so a row group covers a compact patch). The RA
-- window opens to all RA when the cone reaches a pole, and its copies shifted by +-360 deg cover RA
-- 0/360. The 1e-9 deg slack keeps rows at exactly the radius inside despite rounding. No HEALPix
-- arithmetic: a cone takes a few milliseconds to plan.

CREATE OR REPLACE TEMP MACRO _sky_ra_half_width(dec_deg, radius_arcsec) AS
CASE
    WHEN abs(dec_deg::DOUBLE) + radius_arcsec / 3600e0 >= 90 THEN 180e0
    ELSE degrees(asin(least(1e0, sin(radians(radius_arcsec / 3600e0)) / cos(radians(dec_deg::DOUBLE))))) + 1e-9
END;
CREATE OR REPLACE TEMP MACRO _sky_ra_0_360(ra_deg) AS ra_deg::DOUBLE - 360 * floor(ra_deg::DOUBLE / 360);
CREATE OR REPLACE TEMP MACRO _sky_ra_low(ra_deg, dec_deg, radius_arcsec) AS
_sky_ra_0_360(ra_deg) - _sky_ra_half_width(dec_deg, radius_arcsec);
CREATE OR REPLACE TEMP MACRO _sky_ra_high(ra_deg, dec_deg, radius_arcsec) AS
_sky_ra_0_360(ra_deg) + _sky_ra_half_width(dec_deg, radius_arcsec);

-- Whether [low, high] (RA in deg, possibly beyond 0..360) meets [first, last] or its copies shifted by 360.
CREATE OR REPLACE TEMP MACRO _sky_ra_overlaps(first, last, low, high) AS
(last >= low AND first <= high) OR (last >= low + 360 AND first <= high + 360)
OR (last >= low - 360 AND first <= high - 360);

-- The cone's Dec band, and whether the box [ra_first, ra_last] x [dec_first, dec_last] meets the
-- RA/Dec window [ra_low, ra_high] x [dec_low, dec_high] of a cone.
CREATE OR REPLACE TEMP MACRO _sky_dec_low(dec_deg, radius_arcsec) AS dec_deg - radius_arcsec / 3600e0 - 1e-9;
CREATE OR REPLACE TEMP MACRO _sky_dec_high(dec_deg, radius_arcsec) AS dec_deg + radius_arcsec / 3600e0 + 1e-9;
CREATE OR REPLACE TEMP MACRO _sky_box_meets_window(ra_first, ra_last, dec_first, dec_last, ra_low, ra_high, dec_low, dec_high) AS
dec_last >= dec_low AND dec_first <= dec_high AND _sky_ra_overlaps(ra_first, ra_last, ra_low, ra_high);

-- Whether the box [ra_first, ra_last] x [dec_first, dec_last] meets the cone's RA/Dec window.
CREATE OR REPLACE TEMP MACRO _sky_box_meets_cone(ra_first, ra_last, dec_first, dec_last, ra_deg, dec_deg, radius_arcsec) AS
_sky_box_meets_window(ra_first, ra_last, dec_first, dec_last,
                      _sky_ra_low(ra_deg, dec_deg, radius_arcsec), _sky_ra_high(ra_deg, dec_deg, radius_arcsec),
                      _sky_dec_low(dec_deg, radius_arcsec), _sky_dec_high(dec_deg, radius_arcsec));

-- The partitions (Norder, Npix) of `catalog` whose box meets the cone of radius_arcsec around a row
-- of relation `points` (columns _sky_ra, _sky_dec). Joined on the view's hive columns, they let
-- DuckDB skip every other partition file without opening it. `checks` is _sky_checked_at_bind(...).
-- The points are first gathered into 0.1 x 0.1 deg RA/Dec patches, each taken as a cone around its
-- centre widened by 300" (more than its half-diagonal, 255"), whose window is computed once per patch:
-- the join with the boxes then compares numbers.
CREATE OR REPLACE TEMP MACRO _sky_partitions(catalog, points, radius_arcsec, checks) AS TABLE
WITH _sky_patches AS (
    SELECT DISTINCT (floor(_sky_ra * 10) + 5e-1) / 10 AS _sky_patch_ra,
                    least(9e1, (floor(_sky_dec * 10) + 5e-1) / 10) AS _sky_patch_dec
    FROM query_table(points)
), _sky_windows AS (
    SELECT _sky_ra_low(_sky_patch_ra, _sky_patch_dec, radius_arcsec + 3e2) AS ra_low,
           _sky_ra_high(_sky_patch_ra, _sky_patch_dec, radius_arcsec + 3e2) AS ra_high,
           _sky_dec_low(_sky_patch_dec, radius_arcsec + 3e2) AS dec_low,
           _sky_dec_high(_sky_patch_dec, radius_arcsec + 3e2) AS dec_high
    FROM _sky_patches
)
SELECT DISTINCT b.Norder, b.Npix
FROM read_parquet(catalog || '/' || catalog || '/partition_bounds.parquet' || checks) b
JOIN _sky_windows w ON _sky_box_meets_window(b.ra_min, b.ra_max, b.dec_min, b.dec_max, w.ra_low, w.ra_high, w.dec_low, w.dec_high);

-- The rows of relation `source` (a catalog's rows, or some of its partitions) within the cone, with
-- dist_arcsec, nearest first: the RA/Dec window meets the row groups' statistics, then the distance
-- decides.
CREATE OR REPLACE TEMP MACRO _sky_cone_rows(source, ra_deg, dec_deg, radius_arcsec) AS TABLE
WITH _sky_rows AS (
    SELECT *, COLUMNS('(?i)^(ra|ra_cen)$')::DOUBLE AS _sky_row_ra, COLUMNS('(?i)^(dec|dec_cen)$')::DOUBLE AS _sky_row_dec
    FROM query_table(source)
), _sky_window AS (
    SELECT r.*, _sky_dist_arcsec(ra_deg::DOUBLE, dec_deg::DOUBLE, r._sky_row_ra, r._sky_row_dec) AS dist_arcsec
    FROM _sky_rows r
    WHERE _sky_box_meets_cone(r._sky_row_ra, r._sky_row_ra, r._sky_row_dec, r._sky_row_dec, ra_deg, dec_deg, radius_arcsec)
)
SELECT * EXCLUDE (_sky_row_ra, _sky_row_dec)
FROM _sky_window
WHERE dist_arcsec <= radius_arcsec
ORDER BY dist_arcsec;

CREATE OR REPLACE TEMP MACRO _sky_cone(catalog, ra_deg, dec_deg, radius_arcsec, caller) AS TABLE
WITH _sky_parts AS (
    SELECT Norder, Npix
    FROM read_parquet(catalog || '/' || catalog || '/partition_bounds.parquet' || _sky_checked_at_bind(
        _sky_position_error(ra_deg, dec_deg, caller) + _sky_radius_error(radius_arcsec, caller)))
    WHERE _sky_box_meets_cone(ra_min, ra_max, dec_min, dec_max, ra_deg, dec_deg, radius_arcsec)
), _sky_cone_source AS (
    SELECT c.* FROM query_table(catalog) c JOIN _sky_parts p ON c.Norder = p.Norder AND c.Npix = p.Npix
)
SELECT * FROM _sky_cone_rows('_sky_cone_source', ra_deg, dec_deg, radius_arcsec);

CREATE OR REPLACE TEMP MACRO cone(catalog, ra_deg, dec_deg, radius_arcsec) AS TABLE
SELECT * FROM _sky_cone(catalog, ra_deg, dec_deg, radius_arcsec, 'cone');

-- cone over partition files chosen by the caller (the Python API picks them with healpy's query_disc):
-- no glob and no partition table to bind. Array columns come back as Parquet stores them (FLOAT[]).
CREATE OR REPLACE TEMP MACRO cone_in_files(files, ra_deg, dec_deg, radius_arcsec) AS TABLE
WITH _sky_cone_source AS (
    SELECT * FROM read_parquet(list_transform(files, lambda f: f || _sky_checked_at_bind(
        _sky_position_error(ra_deg, dec_deg, 'cone_in_files') + _sky_radius_error(radius_arcsec, 'cone_in_files'))),
        hive_partitioning = true)
)
SELECT * FROM _sky_cone_rows('_sky_cone_source', ra_deg, dec_deg, radius_arcsec);

-- ---------------------------------------------------------------------------------------------------
-- Cross-match. The partitions read are those whose box meets a cone around some row of tbl. Each row
-- of tbl meets the catalog rows of its cells (its pixel and the 8 around it, at an order twice as
-- wide as the radius) through the catalog's _healpix_29 >> 2 (29 - order): pixels rather than RA/Dec
-- boxes, so partition boundaries, RA 0/360 and the poles need no special case.
-- Output: tbl's columns, the catalog's (a name already taken gets DuckDB's suffix _1, e.g. RA_1) and
-- dist_arcsec, by tbl row then distance. _sky_ra/_sky_dec carry tbl's position to cubes_covering.

CREATE OR REPLACE TEMP MACRO _sky_xmatch(tbl, catalog, radius_arcsec, nearest, caller) AS TABLE
WITH _sky_user_columns AS (
    SELECT *, COLUMNS('(?i)^ra$')::DOUBLE AS _sky_ra, COLUMNS('(?i)^dec$')::DOUBLE AS _sky_dec
    FROM query_table(tbl)
), _sky_user AS (
    SELECT * REPLACE (
               _sky_checked(_sky_ra, _sky_null_error(_sky_ra, caller || ': ' || tbl || '.ra')
                                     + _sky_ra_error(_sky_ra, caller || ': ' || tbl || '.ra')) AS _sky_ra,
               _sky_checked(_sky_dec, _sky_null_error(_sky_dec, caller || ': ' || tbl || '.dec')
                                      + _sky_dec_error(_sky_dec, caller || ': ' || tbl || '.dec')) AS _sky_dec),
           row_number() OVER () AS _sky_user_row
    FROM _sky_user_columns
), _sky_user_cells AS (
    SELECT * FROM _sky_cells('_sky_user', _sky_cell_order(radius_arcsec))
), _sky_parts AS (
    SELECT * FROM _sky_partitions(catalog, '_sky_user', radius_arcsec,
                                  _sky_checked_at_bind(_sky_radius_error(radius_arcsec, caller)))
), _sky_rows AS (
    SELECT c.*, COLUMNS('(?i)^(ra|ra_cen)$')::DOUBLE AS _sky_row_ra, COLUMNS('(?i)^(dec|dec_cen)$')::DOUBLE AS _sky_row_dec,
           c._healpix_29 AS _sky_row_hpx, c._healpix_29 >> (2 * (29 - _sky_cell_order(radius_arcsec))) AS _sky_row_cell
    FROM query_table(catalog) c JOIN _sky_parts p ON c.Norder = p.Norder AND c.Npix = p.Npix
), _sky_pairs AS (
    SELECT u.*, r.*, _sky_dist_arcsec(u._sky_ra, u._sky_dec, r._sky_row_ra, r._sky_row_dec) AS dist_arcsec
    FROM _sky_user_cells u JOIN _sky_rows r ON r._sky_row_cell = u._sky_cell
)
SELECT * EXCLUDE (_sky_cell, _sky_user_row, _sky_row_ra, _sky_row_dec, _sky_row_hpx, _sky_row_cell)
FROM _sky_pairs
WHERE dist_arcsec <= radius_arcsec
QUALIFY NOT nearest OR row_number() OVER (PARTITION BY _sky_user_row ORDER BY dist_arcsec, _sky_row_hpx) = 1
ORDER BY _sky_user_row, dist_arcsec, _sky_row_hpx;

CREATE OR REPLACE TEMP MACRO xmatch(tbl, catalog, radius_arcsec, nearest := false) AS TABLE
SELECT * EXCLUDE (_sky_ra, _sky_dec) FROM _sky_xmatch(tbl, catalog, radius_arcsec, nearest, 'xmatch');

-- ---------------------------------------------------------------------------------------------------
-- Cube coverage. A cube's footprint is the square of its 104 x 104 spaxels, rotated with the shot:
-- ifu_index.corner_ra/corner_dec, in order around it. Its edges are straight in the cube's TAN
-- projection, hence great circles: a position is inside when it lies on the same side of all four
-- edge planes (an edge counts as inside). Candidates are the IFUs whose centre lies within 37"; the
-- corners are 36.8" from the stored centre.

CREATE OR REPLACE TEMP MACRO _sky_unit_vector(ra_deg, dec_deg) AS
[cos(radians(dec_deg)) * cos(radians(ra_deg)), cos(radians(dec_deg)) * sin(radians(ra_deg)), sin(radians(dec_deg))];

-- (a x b) . p: positive when p lies left of the great circle from a to b.
CREATE OR REPLACE TEMP MACRO _sky_triple(a, b, p) AS
(a[2] * b[3] - a[3] * b[2]) * p[1] + (a[3] * b[1] - a[1] * b[3]) * p[2] + (a[1] * b[2] - a[2] * b[1]) * p[3];

CREATE OR REPLACE TEMP MACRO _sky_in_quad(ra_deg, dec_deg, corner_ra, corner_dec) AS
list_transform(
    [list_transform(range(1, 5), lambda i: _sky_triple(
        _sky_unit_vector(corner_ra[i], corner_dec[i]),
        _sky_unit_vector(corner_ra[i % 4 + 1], corner_dec[i % 4 + 1]),
        _sky_unit_vector(ra_deg, dec_deg)))],
    lambda turns: list_min(turns) >= 0 OR list_max(turns) <= 0)[1];

-- requires: ifu_index
CREATE OR REPLACE TEMP MACRO cubes_at(ra_deg, dec_deg) AS TABLE
SELECT * FROM _sky_cone('ifu_index', ra_deg, dec_deg, 37, 'cubes_at')
WHERE _sky_in_quad(ra_deg::DOUBLE, dec_deg::DOUBLE, corner_ra, corner_dec)
ORDER BY dist_arcsec;

-- requires: ifu_index
CREATE OR REPLACE TEMP MACRO cubes_covering(tbl) AS TABLE
SELECT * EXCLUDE (_sky_ra, _sky_dec)
FROM _sky_xmatch(tbl, 'ifu_index', 37, false, 'cubes_covering')
WHERE _sky_in_quad(_sky_ra, _sky_dec, corner_ra, corner_dec);
