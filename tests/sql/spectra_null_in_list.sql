SELECT * FROM spectra_by_detectid([3000000001, NULL])
