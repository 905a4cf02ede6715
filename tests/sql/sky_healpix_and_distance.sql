-- healpix_nest (equal to healpy) at the COSMOS AGN and the north pole, and a distance across RA 0/360.
SELECT healpix_nest(29, 150.23189, 2.363963) AS cosmos_agn_29,
       healpix_nest(10, 150.23189, 2.363963) AS cosmos_agn_10,
       healpix_nest(0, 0, 90) AS north_pole_0,
       round(ang_dist_arcsec(359.9999, 0, 0.0001, 0), 6) AS across_ra_0
