SELECT * FROM mask_bits() ORDER BY bit
