-- Every catalog view and id index is there, over all partitions.
SELECT 'ifu_index' AS view, count(*) AS n_rows FROM ifu_index
UNION ALL SELECT 'sources', count(*) FROM sources
UNION ALL SELECT 'source_spectra', count(*) FROM source_spectra
UNION ALL SELECT 'detinfo', count(*) FROM detinfo
UNION ALL SELECT 'detections', count(*) FROM detections
UNION ALL SELECT 'detection_spectra', count(*) FROM detection_spectra
UNION ALL SELECT 'fibers', count(*) FROM fibers
UNION ALL SELECT 'detect_index', count(*) FROM detect_index
UNION ALL SELECT 'source_groups', count(*) FROM source_groups
UNION ALL SELECT 'source_group_members', count(*) FROM source_group_members
UNION ALL SELECT 'source_spectra_source_id_index', count(*) FROM source_spectra_source_id_index
UNION ALL SELECT 'detection_spectra_detectid_index', count(*) FROM detection_spectra_detectid_index
ORDER BY view
