"""The data: image files of every layout, the dataset and its cache, batches, augmentation.

- :mod:`~lensing.data.readers`: one image file (``.npy`` of any layout, FITS) to an array;
- :mod:`~lensing.data.dataset`: ``LensingDataset`` (discovery, cache, balance, the test
  split, provenance) and ``load_splits``;
- :mod:`~lensing.data.ood`: the training images' profile, stored in checkpoints, and the
  check that flags inputs that do not look like them;
- :mod:`~lensing.data.batches`: in-memory and DataLoader batches;
- :mod:`~lensing.data.augment`: batched augmentation and the D4 symmetries;
- :mod:`~lensing.data.stretch`: the input stretch applied before the network;
- :mod:`~lensing.data.download`, :mod:`~lensing.data.archive`: the real set's download and
  its safe extraction.
"""

from lensing.core.lazy import lazy_exports

_EXPORTS = {
    "LensingDataset": "dataset",
    "load_splits": "dataset",
    "provenance": "dataset",
    "DataWarning": "dataset",
    "read_image": "readers",
    "find_images": "readers",
    "ImageError": "readers",
    "d4_views": "augment",
    "augment_batch": "augment",
    "apply_stretch": "stretch",
    "download": "download",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
