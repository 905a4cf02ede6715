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

-- requires: detection_spectra
CREATE OR REPLACE TEMP MACRO spectra_by_detectid(detectids) AS TABLE
WITH wanted AS MATERIALIZED (
    SELECT checked_id(id, 'spectra_by_detectid: detectid') AS detectid, ord
    FROM unnest(CASE WHEN detectids IS NULL THEN error('spectra_by_detectid: detectids is NULL')
                     ELSE detectids END) WITH ORDINALITY AS given(id, ord)
),
located AS MATERIALIZED (
    SELECT Npix, _healpix_29 FROM detection_spectra_detectid_index WHERE detectid IN (SELECT detectid FROM wanted)
),
found AS (
    SELECT detectid, spec, spec_err
    FROM detection_spectra
    WHERE Npix IN (SELECT Npix FROM located)
      AND _healpix_29 IN (SELECT _healpix_29 FROM located)
      AND detectid IN (SELECT detectid FROM wanted)
)
SELECT wanted.ord, wanted.detectid, wave_array() AS wave, found.spec, found.spec_err
FROM wanted LEFT JOIN found USING (detectid)
ORDER BY wanted.ord;

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
WITH wanted AS MATERIALIZED (
    SELECT checked_id(id, 'spectra_by_source_id: source_id') AS source_id, ord
    FROM unnest(CASE WHEN source_ids IS NULL THEN error('spectra_by_source_id: source_ids is NULL')
                     ELSE source_ids END) WITH ORDINALITY AS given(id, ord)
),
located AS MATERIALIZED (
    SELECT Npix, _healpix_29 FROM source_spectra_source_id_index WHERE source_id IN (SELECT source_id FROM wanted)
),
found AS (
    SELECT source_id, spec, spec_err
    FROM source_spectra
    WHERE Npix IN (SELECT Npix FROM located)
      AND _healpix_29 IN (SELECT _healpix_29 FROM located)
      AND source_id IN (SELECT source_id FROM wanted)
)
SELECT wanted.ord, wanted.source_id, wave_array() AS wave, found.spec, found.spec_err
FROM wanted LEFT JOIN found USING (source_id)
ORDER BY wanted.ord;

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
