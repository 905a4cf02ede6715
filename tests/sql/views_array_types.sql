-- Parquet gives FLOAT[] / DOUBLE[]: the views restore the fixed sizes.
SELECT table_name, column_name, data_type
FROM duckdb_columns()
WHERE table_name IN ('ifu_index', 'source_spectra', 'detection_spectra', 'fibers') AND data_type LIKE '%[%]'
ORDER BY table_name, column_name
