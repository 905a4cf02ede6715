-- Views over the published catalogs, argument checks shared by later files, the wavelength grid.
--
-- Paths name catalogs (`detections/detections/dataset/...`) relative to file_search_path: `connect()`
-- and the `dexdb-shell` launcher set it to the version that OUT/current names when the session opens,
-- so that a query never mixes two versions while an ingest publishes; `cd OUT && duckdb -init
-- dexdb.sql` resolves them against OUT, through the links OUT/<catalog> -> current/<catalog>.
-- Parquet gives fixed-size spectra back as FLOAT[]; the views restore the fixed sizes.
-- Definitions are TEMP: they belong to the session, never to a database file the user has attached.
-- A statement marked `-- requires: <catalog>` is skipped when OUT lacks that catalog.

-- requires: ifu_index
CREATE OR REPLACE TEMP VIEW ifu_index AS
SELECT * REPLACE (corner_ra::DOUBLE[4] AS corner_ra, corner_dec::DOUBLE[4] AS corner_dec)
FROM read_parquet('ifu_index/ifu_index/dataset/*/*/*/*.parquet', hive_partitioning = true);

-- requires: sources
CREATE OR REPLACE TEMP VIEW sources AS
SELECT * FROM read_parquet('sources/sources/dataset/*/*/*/*.parquet', hive_partitioning = true);

-- requires: source_spectra
CREATE OR REPLACE TEMP VIEW source_spectra AS
SELECT * REPLACE (spec::FLOAT[1036] AS spec, spec_err::FLOAT[1036] AS spec_err)
FROM read_parquet('source_spectra/source_spectra/dataset/*/*/*/*.parquet', hive_partitioning = true);

-- requires: detinfo
CREATE OR REPLACE TEMP VIEW detinfo AS
SELECT * FROM read_parquet('detinfo/detinfo/dataset/*/*/*/*.parquet', hive_partitioning = true);

-- requires: detections
CREATE OR REPLACE TEMP VIEW detections AS
SELECT * FROM read_parquet('detections/detections/dataset/*/*/*/*.parquet', hive_partitioning = true);

-- requires: detection_spectra
CREATE OR REPLACE TEMP VIEW detection_spectra AS
SELECT * REPLACE (
    wave1d::FLOAT[1036] AS wave1d,
    spec1d::FLOAT[1036] AS spec1d,
    spec1d_err::FLOAT[1036] AS spec1d_err,
    counts1d::FLOAT[1036] AS counts1d,
    counts1d_err::FLOAT[1036] AS counts1d_err,
    apsum_counts::FLOAT[1036] AS apsum_counts,
    apsum_counts_err::FLOAT[1036] AS apsum_counts_err,
    apcor::FLOAT[1036] AS apcor,
    flag_pix::FLOAT[1036] AS flag_pix,
    spec1d_ffsky::FLOAT[1036] AS spec1d_ffsky,
    spec1d_nc::FLOAT[1036] AS spec1d_nc,
    spec1d_nc_err::FLOAT[1036] AS spec1d_nc_err,
    spec::FLOAT[1036] AS spec,
    spec_err::FLOAT[1036] AS spec_err
)
FROM read_parquet('detection_spectra/detection_spectra/dataset/*/*/*/*.parquet', hive_partitioning = true);

-- requires: fibers
CREATE OR REPLACE TEMP VIEW fibers AS
SELECT * REPLACE (ADC::FLOAT[5] AS ADC)
FROM read_parquet('fibers/fibers/dataset/*/*/*/*.parquet', hive_partitioning = true);

-- requires: detect_index
CREATE OR REPLACE TEMP VIEW detect_index AS
SELECT * FROM read_parquet('detect_index/detect_index/dataset/*/*/*/*.parquet', hive_partitioning = true);

-- requires: source_groups
CREATE OR REPLACE TEMP VIEW source_groups AS
SELECT * FROM read_parquet('source_groups/source_groups/dataset/*/*/*/*.parquet', hive_partitioning = true);

-- requires: source_group_members
CREATE OR REPLACE TEMP VIEW source_group_members AS
SELECT * FROM read_parquet('source_group_members/source_group_members/dataset/*/*/*/*.parquet', hive_partitioning = true);

-- Id indexes (HATS index catalogs): id -> (Norder, Npix, _healpix_29) of the row. Joining them before
-- the catalog lets DuckDB open only the partitions that hold the wanted ids, and decode only the row
-- groups whose _healpix_29 range holds them.

-- requires: source_spectra
CREATE OR REPLACE TEMP VIEW source_spectra_source_id_index AS
SELECT * FROM read_parquet('source_spectra/source_spectra_source_id_index/dataset/index.parquet');

-- requires: detection_spectra
CREATE OR REPLACE TEMP VIEW detection_spectra_detectid_index AS
SELECT * FROM read_parquet('detection_spectra/detection_spectra_detectid_index/dataset/index.parquet');

-- Argument checks shared by the macros of later files.

-- x as BIGINT if it is an integer of any numeric type or as text ('034', 3000000001.0), else NULL
-- (NaN, 3.5, '3.5', 'abc'). Integer types take the first branch, which costs nothing; other values
-- are decided on their text form, since numeric casts would round 3.5 to 4.
CREATE OR REPLACE TEMP MACRO integer_or_null(x) AS
CASE
    WHEN typeof(x) IN ('TINYINT', 'SMALLINT', 'INTEGER', 'BIGINT', 'UTINYINT', 'USMALLINT', 'UINTEGER')
    THEN x::BIGINT
    WHEN regexp_full_match(x::VARCHAR, '\s*[-+]?[0-9]+(\.0*)?\s*')
    THEN TRY_CAST(regexp_extract(x::VARCHAR, '[-+]?[0-9]+') AS BIGINT)
END;

-- An id argument as BIGINT, or an error naming the macro argument: NULL, NaN, fractions and text
-- that is not an integer are caller mistakes, not missing data.
CREATE OR REPLACE TEMP MACRO checked_id(id, argument) AS
CASE
    WHEN integer_or_null(id) IS NOT NULL THEN integer_or_null(id)
    ELSE error(argument || ' must be an integer id, got ' || coalesce(id::VARCHAR, 'NULL'))
END;

-- Wavelength grid of every HETDEX spectrum: 3470 + 2k Angstrom (air), k = 0..1035.

CREATE OR REPLACE TEMP MACRO wave_at(k) AS
CASE
    WHEN coalesce(integer_or_null(k) BETWEEN 0 AND 1035, false) THEN (3470 + 2 * integer_or_null(k))::FLOAT
    ELSE error('wave_at: k must be an integer in 0..1035, got ' || coalesce(k::VARCHAR, 'NULL'))
END;

CREATE OR REPLACE TEMP MACRO wave_grid() AS TABLE
SELECT k, wave_at(k) AS wave FROM range(1036) AS grid(k);

-- A scalar subquery: DuckDB computes it once per query, not once per row that shows it.
CREATE OR REPLACE TEMP MACRO wave_array() AS
(SELECT list(wave ORDER BY k) FROM wave_grid())::FLOAT[1036];
