SELECT ord, detectid, count(*) AS n, min(k) AS k0, max(k) AS k1, round(sum(flux), 2) AS flux_sum
FROM spectra_rows_by_detectid([3000000054, 12, 3000000001])
GROUP BY ord, detectid
ORDER BY ord
