-- Datacube MASK bits (data model 5.4) and the release's public URLs (data model 0 and 7).
--
--   mask_bit_names(mask)      -> VARCHAR[] of the bits set, lowest bit first; [] for 0 (good)
--   mask_has(mask, name)      -> BOOLEAN, name case-insensitive; an unknown name is an error
--   mask_bits()               table: bit, value, name
--   elixer_url(detectid)      ELiXer report image of a detection
--   cube_url(shotid, ifuslot) IFU datacube FITS file; ifuslot as '034' or 34
--   pdr1_base_url()           root of the public release

-- The bit names in bit order: the position in this list is the bit number + 1.
CREATE OR REPLACE TEMP MACRO mask_names() AS
['MAIN', 'FTF', 'CHI2FIB', 'BADPIX', 'BADAMP', 'LARGEGAL', 'METEOR', 'BADSHOT', 'THROUGHPUT', 'BADFIB',
 'SAT', 'BADCAL', 'PIXMASK', 'BADDET'];

CREATE OR REPLACE TEMP MACRO mask_bits() AS TABLE
SELECT (i - 1)::INTEGER AS bit, (1 << (i - 1))::INTEGER AS value, mask_names()[i] AS name
FROM range(1, len(mask_names()) + 1) AS bits(i);

-- A MASK value as BIGINT, or an error: bits above BADDET are not defined in PDR1. NULL stays NULL
-- (a missing mask is data, not a caller mistake).
CREATE OR REPLACE TEMP MACRO checked_mask(mask, caller) AS
CASE
    WHEN mask IS NULL THEN NULL
    WHEN coalesce(integer_or_null(mask) BETWEEN 0 AND (1 << len(mask_names())) - 1, false) THEN integer_or_null(mask)
    ELSE error(caller || ': mask must be an integer in 0..' || ((1 << len(mask_names())) - 1)
               || ' (PDR1 MASK bits), got ' || mask::VARCHAR)
END;

CREATE OR REPLACE TEMP MACRO mask_bit_names(mask) AS
CASE
    WHEN mask IS NULL THEN NULL
    ELSE list_filter(mask_names(), lambda name, i: (checked_mask(mask, 'mask_bit_names') >> (i - 1)) & 1 = 1)
END;

CREATE OR REPLACE TEMP MACRO mask_has(mask, name) AS
CASE
    WHEN name IS NULL OR list_position(mask_names(), upper(name)) IS NULL
    THEN error('mask_has: unknown mask bit name ' || coalesce('''' || name || '''', 'NULL')
               || '; known: ' || array_to_string(mask_names(), ', '))
    ELSE (checked_mask(mask, 'mask_has') >> (list_position(mask_names(), upper(name)) - 1)) & 1 = 1
END;

CREATE OR REPLACE TEMP MACRO pdr1_base_url() AS
'https://web.corral.tacc.utexas.edu/hetdex/HETDEX/pdr/pdr1';

-- detect/elixer/<first 5 digits of detectid>/<detectid>.jpg
CREATE OR REPLACE TEMP MACRO elixer_url(detectid) AS
CASE
    WHEN coalesce(integer_or_null(detectid) BETWEEN 1000000000 AND 9999999999, false)
    THEN pdr1_base_url() || '/detect/elixer/' || left(integer_or_null(detectid)::VARCHAR, 5) || '/'
         || integer_or_null(detectid) || '.jpg'
    ELSE error('elixer_url: detectid must be a 10-digit integer, got ' || coalesce(detectid::VARCHAR, 'NULL'))
END;

-- datacubes/<shotid>/dex_cube_<shotid>_<ifuslot 3 digits>.fits
CREATE OR REPLACE TEMP MACRO cube_url(shotid, ifuslot) AS
CASE
    WHEN NOT coalesce(integer_or_null(shotid) BETWEEN 10000000000 AND 99999999999, false)
    THEN error('cube_url: shotid must be an 11-digit integer (YYYYMMDD and 3-digit obsid), got '
               || coalesce(shotid::VARCHAR, 'NULL'))
    WHEN NOT coalesce(integer_or_null(ifuslot) BETWEEN 0 AND 999, false)
    THEN error('cube_url: ifuslot must be a number of up to 3 digits, got '
               || coalesce('''' || ifuslot::VARCHAR || '''', 'NULL'))
    ELSE pdr1_base_url() || '/datacubes/' || integer_or_null(shotid) || '/dex_cube_' || integer_or_null(shotid)
         || '_' || lpad(integer_or_null(ifuslot)::VARCHAR, 3, '0') || '.fits'
END;
