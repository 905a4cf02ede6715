-- Multi-epoch grouping: friends-of-friends (FoF) regrouping of any table of positions.
--
--   fof_groups(tbl, linking_arcsec := 1.5)
--
-- tbl names a table, view, CTE or Parquet file with columns source_id (unique, not NULL), ra and dec
-- (degrees; any case, so the RA/DEC of sources do). Rows at most linking_arcsec apart are friends,
-- transitively. Returns every row of tbl with group_id (the smallest source_id of its group: the rule
-- of the ingest's source_groups, independent of row order) and group_size. An input column already
-- named group_id or group_size stays, and DuckDB suffixes the new one with _1. The whole HPSC2 at 1.5"
-- is materialised at ingest (source_groups, source_group_members); this regroups a cone or a user
-- table with another linking length, e.g.
--
--   WITH cone AS (SELECT * FROM sources WHERE ...) FROM fof_groups('cone', 3.0);
--
-- Exact on the sphere and free of RA-wrap and pole cases: points are unit vectors, friends are pairs
-- whose chord is at most 2 sin(linking / 2), the same test as the ingest's cKDTree. Candidate pairs
-- come from an equi-join on a 3-d grid of cells slightly larger than that chord (a point's friends lie
-- in its own or one of the 26 adjacent cells), so the join stays a hash join. Components: min-label
-- propagation in a recursive CTE keyed by source_id; only nodes whose label dropped are revisited,
-- so the rounds are as many as the most hops from a member to its group's smallest id (a 1,000-link
-- chain: ~0.25 s). The CTEs are named fof_*: tbl must not be one of those names.

CREATE OR REPLACE TEMP MACRO fof_groups(tbl, linking_arcsec := 1.5) AS TABLE
WITH RECURSIVE
    fof_linking AS MATERIALIZED (
        SELECT CASE
            WHEN linking_arcsec IS NULL OR isnan(linking_arcsec::DOUBLE)
                OR linking_arcsec::DOUBLE <= 0 OR linking_arcsec::DOUBLE > 60
            THEN error('fof_groups: linking_arcsec must lie in (0, 60] arcsec, got '
                       || coalesce(linking_arcsec::VARCHAR, 'NULL'))
            ELSE 2 * sin(radians(linking_arcsec::DOUBLE / 3600) / 2)
        END AS chord
    ),
    fof_checked AS (
        SELECT
            CASE WHEN source_id IS NULL THEN error('fof_groups: ' || tbl || ' has a NULL source_id')
                 ELSE source_id END AS id,
            CASE WHEN ra IS NULL OR NOT isfinite(ra::DOUBLE)
                 THEN error('fof_groups: ' || tbl || '.ra is NULL or not finite for source_id ' || source_id)
                 ELSE radians(ra::DOUBLE) END AS lon,
            CASE WHEN "dec" IS NULL OR NOT abs("dec"::DOUBLE) <= 90
                 THEN error('fof_groups: ' || tbl || '.dec must lie in [-90, 90], got '
                            || coalesce("dec"::VARCHAR, 'NULL') || ' for source_id ' || source_id)
                 ELSE radians("dec"::DOUBLE) END AS lat
        FROM query_table(tbl)
    ),
    fof_points AS MATERIALIZED (
        SELECT
            id,
            cos(lat) * cos(lon) AS x,
            cos(lat) * sin(lon) AS y,
            sin(lat) AS z,
            chord,
            -- cells 1e-6 wider than the chord: rounding never puts friends two cells apart
            floor(x / (chord * (1 + 1e-6)))::BIGINT AS cx,
            floor(y / (chord * (1 + 1e-6)))::BIGINT AS cy,
            floor(z / (chord * (1 + 1e-6)))::BIGINT AS cz
        FROM fof_checked, fof_linking
    ),
    fof_unique_ids AS MATERIALIZED (
        SELECT CASE WHEN count(*) <> count(DISTINCT id)
                    THEN error('fof_groups: source_id is not unique in ' || tbl) END AS ok
        FROM fof_points
    ),
    fof_neighbour_cells AS (
        SELECT id, x, y, z, chord, cx + dx AS cx, cy + dy AS cy, cz + dz AS cz
        FROM fof_points, range(-1, 2) AS tx(dx), range(-1, 2) AS ty(dy), range(-1, 2) AS tz(dz)
    ),
    fof_friends AS MATERIALIZED (
        SELECT a.id AS id, b.id AS friend
        FROM fof_neighbour_cells AS a
        JOIN fof_points AS b ON b.cx = a.cx AND b.cy = a.cy AND b.cz = a.cz
        WHERE a.id <> b.id
          AND (a.x - b.x) * (a.x - b.x) + (a.y - b.y) * (a.y - b.y) + (a.z - b.z) * (a.z - b.z)
              <= a.chord * a.chord
    ),
    fof_labels(id, label) USING KEY (id) AS (
        SELECT id, least(id, min(friend)) FROM fof_friends GROUP BY id
        UNION ALL
        SELECT f.friend, min(l.label)
        FROM fof_labels AS l
        JOIN fof_friends AS f ON f.id = l.id
        JOIN recurring.fof_labels AS current ON current.id = f.friend
        GROUP BY f.friend, current.label
        HAVING min(l.label) < current.label
    ),
    fof_grouped AS (
        SELECT t.*, coalesce(fof_labels.label, t.source_id) AS group_id,
               count(*) OVER (PARTITION BY coalesce(fof_labels.label, t.source_id)) AS group_size
        FROM query_table(tbl) AS t
        LEFT JOIN fof_labels ON fof_labels.id = t.source_id
        WHERE (SELECT ok IS NULL FROM fof_unique_ids)
    )
SELECT * FROM fof_grouped;
