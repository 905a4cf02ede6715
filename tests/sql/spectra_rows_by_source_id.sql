SELECT ord, source_id, count(*) AS n, round(sum(flux), 2) AS flux_sum, round(max(err), 4) AS err_max
FROM spectra_rows_by_source_id([2100000009, 2100000001, 999])
GROUP BY ord, source_id
ORDER BY ord
