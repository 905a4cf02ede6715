-- cubes_at: the IFU cubes whose rotated footprint contains the COSMOS AGN, with path and URL.
SELECT shotid, ifuslot, path, url, round(dist_arcsec, 3) AS dist_arcsec
FROM cubes_at(150.23189, 2.363963)
ORDER BY shotid
