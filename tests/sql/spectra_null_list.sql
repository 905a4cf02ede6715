SELECT * FROM spectra_by_source_id(NULL)
