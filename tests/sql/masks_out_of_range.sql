SELECT mask_bit_names(16384)
