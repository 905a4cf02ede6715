"""An independent, straightforward implementation of the dexcube aperture extraction
(data model section 6), used by tests as the reference the mock cubes must satisfy."""

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales
from photutils.aperture import CircularAperture


def extract_spectrum(path, ra: float, dec: float, radius_arcsec: float = 3.5, padding: int = 2):
    """Section 6 aperture extraction with the default bit selection (only MASK == 0 used).

    Returns wave, spectrum, error and apcor as section 6 defines them, plus the weighted
    fraction of the aperture holding MASK == 0 voxels (apcor without the |DATA| >= 1e-8 rule).
    """
    with fits.open(path) as hdul:
        header = hdul["DATA"].header
        wcs = WCS(header)
        x, y = wcs.celestial.world_to_pixel(SkyCoord(ra, dec, unit="deg"))
        r = radius_arcsec / (proj_plane_pixel_scales(wcs.celestial)[0] * 3600)
        nx, ny = header["NAXIS1"], header["NAXIS2"]
        x_lo = max(int(np.floor(x - r)) - padding, 0)
        x_hi = min(int(np.ceil(x + r)) + padding + 1, nx)
        y_lo = max(int(np.floor(y - r)) - padding, 0)
        y_hi = min(int(np.ceil(y + r)) + padding + 1, ny)
        window = (slice(None), slice(y_lo, y_hi), slice(x_lo, x_hi))
        data = hdul["DATA"].section[window].astype(np.float32)
        error = hdul["ERROR"].section[window].astype(np.float32)
        mask = hdul["MASK"].section[window]
        spec_bw = header.get("SPECBW", 2.0)
        wave = wcs.spectral.pixel_to_world(np.arange(header["NAXIS3"])).to_value(u.AA)
    aperture = CircularAperture((x - x_lo, y - y_lo), r)
    weights = aperture.to_mask(method="exact").to_image(data.shape[1:]).astype(np.float32)
    total_weight = weights.sum()
    good = mask == 0
    has_data = good & (error != 0) & (np.abs(data) >= 1e-8)
    apcor = ((weights * has_data).sum(axis=(1, 2)) / total_weight).astype(np.float32)
    good_fraction = (weights * good).sum(axis=(1, 2)) / total_weight
    flux = np.nansum(np.where(good, weights * data, np.nan), axis=(1, 2))
    variance = np.nansum(np.where(good, weights**2 * error**2, np.nan), axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        spectrum = flux / apcor / spec_bw
        spectrum_err = np.sqrt(variance) / apcor / spec_bw
    low = ~(apcor >= 0.2)
    spectrum[low] = spectrum_err[low] = apcor[low] = np.nan
    return {
        "wave": wave, "spectrum": spectrum, "error": spectrum_err, "apcor": apcor,
        "good_fraction": good_fraction,
    }  # fmt: skip
