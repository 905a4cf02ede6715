SELECT mask, mask_bit_names(mask) AS names, mask_has(mask, 'badcal') AS badcal, mask_has(mask, 'Main') AS main
FROM (VALUES (0), (1), (2049), (8192), (16383), (NULL)) AS t(mask)
ORDER BY mask NULLS LAST
