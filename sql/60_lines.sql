-- Emission-line classification: the line table, line hypotheses for an observed wavelength, and the
-- multi-line solutions of `dexdb classify` (dexdb/lines/). Both catalogs are published by
-- `dexdb classify`; the table's rows come from the package's one line table (dexdb/lines/lines.csv).
--
--   line_table                view: name, label, rest_wave (Angstrom), medium, weight, classify,
--                             stellar_absorption, note
--   line_hypotheses(wave)     one row per line that the observed wavelength `wave` (Angstrom) could
--                             be: line, rest_wave, z = wave / rest_wave - 1 (z >= 0 only), and
--                             other_lines: every other classification line that would then fall in
--                             3470-5540 Angstrom (bounds included), as a list of
--                             {line, rest_wave, wave} in wavelength order ([] when none does)
--   line_solutions            view of the catalog (columns in dexdb/lines/classify.py), e.g.
--                             SELECT detectid, solution, z, score_fraction FROM line_solutions WHERE accepted
--
--   FROM line_hypotheses(4300.0);
--   SELECT d.detectid, h.* FROM detections AS d, line_hypotheses(d.wave) AS h WHERE d.detectid = 3000000001;
--
-- The classifier (dexdb/lines/solutions.py) computes the same positions in numpy for millions of
-- detections at once; a test checks that both agree.

-- requires: line_table
CREATE OR REPLACE TEMP VIEW line_table AS
SELECT * FROM read_parquet('line_table/line_table.parquet');

-- requires: line_table
CREATE OR REPLACE TEMP MACRO line_hypotheses(wave) AS TABLE
WITH observed AS MATERIALIZED (
    SELECT CASE
        WHEN wave IS NULL OR TRY_CAST(wave AS DOUBLE) IS NULL OR NOT isfinite(TRY_CAST(wave AS DOUBLE))
             OR TRY_CAST(wave AS DOUBLE) <= 0
        THEN error('line_hypotheses: wave must be a positive wavelength in Angstrom, got '
                   || coalesce(wave::VARCHAR, 'NULL'))
        ELSE wave::DOUBLE
    END AS wave
),
hypotheses AS (
    SELECT t.name AS line, t.rest_wave, o.wave / t.rest_wave - 1 AS z
    FROM line_table AS t, observed AS o
    WHERE t.classify AND o.wave / t.rest_wave - 1 >= 0
)
SELECT h.line, h.rest_wave, h.z,
       coalesce(list({'line': t.name, 'rest_wave': t.rest_wave, 'wave': t.rest_wave * (1 + h.z)}
                     ORDER BY t.rest_wave) FILTER (WHERE t.name IS NOT NULL), []) AS other_lines
FROM hypotheses AS h
LEFT JOIN line_table AS t
    ON t.classify AND t.name <> h.line AND t.rest_wave * (1 + h.z) BETWEEN 3470 AND 5540
GROUP BY h.line, h.rest_wave, h.z
ORDER BY h.rest_wave;

-- requires: line_solutions
CREATE OR REPLACE TEMP VIEW line_solutions AS
SELECT * FROM read_parquet('line_solutions/line_solutions/dataset/*/*/*/*.parquet', hive_partitioning = true);
