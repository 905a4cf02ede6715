SELECT * FROM spectrum_by_detectid('nan'::DOUBLE)
