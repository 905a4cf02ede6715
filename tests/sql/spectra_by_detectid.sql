-- One row of arrays: a line detection (HDR3) and a continuum detection (HDR4).
SELECT detectid, len(wave) AS n, wave[1] AS wave0, round(spec[1], 4) AS spec0, round(spec[700], 4) AS spec699,
       round(spec_err[700], 4) AS err699, round(list_sum(spec), 2) AS spec_sum
FROM spectrum_by_detectid(3000000001)
UNION ALL
SELECT detectid, len(wave), wave[1], round(spec[1], 4), round(spec[700], 4), round(spec_err[700], 4),
       round(list_sum(spec), 2)
FROM spectrum_by_detectid(4090000001)
