-- fof_groups on the sources view: the nine epochs of the COSMOS AGN (150.23189, 2.363963) form one
-- group named by their smallest source_id.
WITH cosmos AS (
    SELECT source_id, shotid, RA, DEC FROM sources
    WHERE abs(DEC - 2.363963) < 0.01 AND abs(RA - 150.23189) < 0.01
)
SELECT group_id, group_size, count(*) AS n_rows, count(DISTINCT shotid) AS n_epochs
FROM fof_groups('cosmos', 1.5)
GROUP BY ALL
ORDER BY group_id
