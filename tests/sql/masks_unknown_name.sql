SELECT mask_has(3, 'BADPIXEL')
