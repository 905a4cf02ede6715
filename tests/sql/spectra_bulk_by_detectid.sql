-- One row per list element in list order: duplicates kept, unknown ids with NULL arrays.
SELECT ord, detectid, spec IS NULL AS unknown, round(list_sum(spec), 2) AS spec_sum,
       round(list_sum(spec_err), 2) AS err_sum
FROM spectra_by_detectid([3000000054, 12, 3000000001, 5000000014, 3000000054])
