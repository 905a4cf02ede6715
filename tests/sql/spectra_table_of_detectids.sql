-- A table of ids goes in as a list.
SELECT count(*) AS n, count(spec) AS found, round(sum(list_sum(spec)), 1) AS spec_sum
FROM spectra_by_detectid((SELECT list(detectid ORDER BY detectid) FROM detections WHERE shotid = 20170904003))
