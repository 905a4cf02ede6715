-- 1036 rows ready to plot; the first and last three.
SELECT detectid, k, wave, round(flux, 4) AS flux, round(err, 4) AS err
FROM spectrum_rows_by_detectid(3000000017)
WHERE k < 3 OR k > 1032
ORDER BY k
