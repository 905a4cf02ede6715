-- xmatch of a table of positions against detections at 3", nearest only: a position without a
-- detection nearby has no row; the catalog's ra/dec come back as ra_1/dec_1.
WITH targets AS (
    SELECT * FROM (VALUES ('cosmos agn', 150.23189, 2.363963), ('empty sky', 10.0, -50.0)) AS t(target, ra, "dec")
)
SELECT target, detectid, round(ra_1, 5) AS detection_ra, round(dist_arcsec, 4) AS dist_arcsec
FROM xmatch('targets', 'detections', 3, nearest := true)
ORDER BY target
