SELECT source_id, len(spec) AS n, round(spec[1], 4) AS spec0, round(spec_err[1], 4) AS err0,
       round(list_sum(spec), 2) AS spec_sum
FROM spectrum_by_source_id(2100000003)
