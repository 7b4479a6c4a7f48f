"""One image file to one 2-D float array in [0, 1], whatever its layout.

- :mod:`~lensing.data.readers.image`: ``read_image`` (every accepted layout, normalization,
  resampling) and ``find_images``;
- :mod:`~lensing.data.readers.npy`: ``.npy`` with a restricted unpickler;
- :mod:`~lensing.data.readers.fits`: FITS, its header checked before its data;
- :mod:`~lensing.data.readers.checks`: ``ImageError`` and the file checks they share.
"""

from lensing.core.lazy import lazy_exports

_EXPORTS = {
    "read_image": "image",
    "find_images": "image",
    "ImageRead": "image",
    "ACCEPTED_SUFFIXES": "image",
    "ImageError": "checks",
    "read_npy": "npy",
    "read_fits_image": "fits",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
