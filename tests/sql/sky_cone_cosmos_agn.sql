-- cone on sources: the epochs of the COSMOS AGN (150.23189, 2.363963) within 1.5", nearest first.
SELECT source_id, shotid, round(dist_arcsec, 4) AS dist_arcsec
FROM cone('sources', 150.23189, 2.363963, 1.5)
ORDER BY dist_arcsec, source_id
