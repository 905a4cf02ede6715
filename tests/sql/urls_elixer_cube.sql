SELECT pdr1_base_url() AS base, elixer_url(3000000001) AS elixer, cube_url(20190405020, 34) AS cube_int,
       cube_url(20190405020, '034') AS cube_text
