-- Spectra by id: calibrated 1-D spectra of detections (detection_spectra, spec = spec1d / 2 / wdcor)
-- and of HPSC2 source-observations (source_spectra, as released), 1e-17 erg/s/cm^2/Angstrom on wave_array().
--
--   spectra_by_detectid([id, ...])        ord, detectid, wave, spec, spec_err: one row per list element
--                                         in list order (ord = position), NULL arrays for unknown ids
--   spectra_rows_by_detectid([id, ...])   ord, detectid, k, wave, flux, err: 1036 rows per element
--                                         whose id is known, ordered by ord and k
--   spectrum_by_detectid(id)              detectid, wave, spec, spec_err: one row
--   spectrum_rows_by_detectid(id)         detectid, k, wave, flux, err: 1036 rows, ready to plot
--   ... and the same four for source_id (source_spectra).
--
-- A table of ids goes in as a list: spectra_by_detectid((SELECT list(detectid) FROM my_ids)).
-- Each lookup first reads the id index, then only the partitions and row groups it names: the filter
-- `Npix IN (subquery)` is applied to the hive directories before any file is opened, and
-- `_healpix_29 IN (subquery)` reaches the row groups' statistics as a range. Npix alone (without
-- Norder) and the pixel alone (many rows may share it) are enough for that: the id condition keeps
-- the result exact.

-- The spectra of `catalog` for a list of ids, through its id index `index`; `id_column` names the id
-- in both, `caller` the public macro in error messages. Output column _spectra_id, renamed by the caller.
CREATE OR REPLACE TEMP MACRO _spectra_by_id(ids, index, catalog, id_column, caller) AS TABLE
WITH wanted AS MATERIALIZED (
    SELECT checked_id(id, caller || ': ' || id_column) AS _spectra_id, ord
    FROM unnest(CASE WHEN ids IS NULL THEN error(caller || ': ' || id_column || 's is NULL')
                     ELSE ids END) WITH ORDINALITY AS given(id, ord)
),
located AS MATERIALIZED (
    SELECT Npix, _healpix_29 FROM query_table(index)
    WHERE COLUMNS('^' || id_column || '$') IN (SELECT _spectra_id FROM wanted)
),
found AS (
    SELECT COLUMNS('^' || id_column || '$') AS _spectra_id, spec, spec_err
    FROM query_table(catalog)
    WHERE Npix IN (SELECT Npix FROM located)
      AND _healpix_29 IN (SELECT _healpix_29 FROM located)
      AND COLUMNS('^' || id_column || '$') IN (SELECT _spectra_id FROM wanted)
)
SELECT wanted.ord, wanted._spectra_id, wave_array() AS wave, found.spec, found.spec_err
FROM wanted LEFT JOIN found USING (_spectra_id)
ORDER BY wanted.ord;

-- requires: detection_spectra
CREATE OR REPLACE TEMP MACRO spectra_by_detectid(detectids) AS TABLE
SELECT ord, _spectra_id AS detectid, wave, spec, spec_err
FROM _spectra_by_id(detectids, 'detection_spectra_detectid_index', 'detection_spectra', 'detectid', 'spectra_by_detectid');

-- requires: detection_spectra
CREATE OR REPLACE TEMP MACRO spectra_rows_by_detectid(detectids) AS TABLE
SELECT ord, detectid, unnest(range(1036)) AS k, unnest(wave) AS wave, unnest(spec) AS flux,
       unnest(spec_err) AS err
FROM spectra_by_detectid(detectids)
WHERE spec IS NOT NULL
ORDER BY ord, k;

-- requires: detection_spectra
CREATE OR REPLACE TEMP MACRO spectrum_by_detectid(id) AS TABLE
SELECT detectid, wave, spec, spec_err FROM spectra_by_detectid([id]);

-- requires: detection_spectra
CREATE OR REPLACE TEMP MACRO spectrum_rows_by_detectid(id) AS TABLE
SELECT detectid, k, wave, flux, err FROM spectra_rows_by_detectid([id]);

-- requires: source_spectra
CREATE OR REPLACE TEMP MACRO spectra_by_source_id(source_ids) AS TABLE
SELECT ord, _spectra_id AS source_id, wave, spec, spec_err
FROM _spectra_by_id(source_ids, 'source_spectra_source_id_index', 'source_spectra', 'source_id', 'spectra_by_source_id');

-- requires: source_spectra
CREATE OR REPLACE TEMP MACRO spectra_rows_by_source_id(source_ids) AS TABLE
SELECT ord, source_id, unnest(range(1036)) AS k, unnest(wave) AS wave, unnest(spec) AS flux,
       unnest(spec_err) AS err
FROM spectra_by_source_id(source_ids)
WHERE spec IS NOT NULL
ORDER BY ord, k;

-- requires: source_spectra
CREATE OR REPLACE TEMP MACRO spectrum_by_source_id(id) AS TABLE
SELECT source_id, wave, spec, spec_err FROM spectra_by_source_id([id]);

-- requires: source_spectra
CREATE OR REPLACE TEMP MACRO spectrum_rows_by_source_id(id) AS TABLE
SELECT source_id, k, wave, flux, err FROM spectra_rows_by_source_id([id]);
