SELECT count(*) AS n, min(k) AS k0, max(k) AS k1, min(wave) AS wave0, max(wave) AS wave1,
       sum(wave)::BIGINT AS wave_sum, wave_at(517) AS wave517, wave_array()[518] AS array518,
       typeof(wave_array()) AS array_type
FROM wave_grid()
