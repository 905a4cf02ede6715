-- The rows form joins back to the catalog by id.
SELECT s.detectid, r.k, r.wave, round(r.flux, 4) AS flux
FROM spectrum_rows_by_source_id(2100000001) AS r JOIN sources AS s USING (source_id)
WHERE r.k = 500
