"""The bottom layer: pieces every other layer uses and that use nothing of the package.

- :mod:`~lensing.core.constants`: classes, image size, folders, layer groups, defaults;
- :mod:`~lensing.core.runtime`: device, precision, autocast, state dicts;
- :mod:`~lensing.core.distributed`: torchrun ranks and their collectives;
- :mod:`~lensing.core.rng`: seeding and the random state a checkpoint carries;
- :mod:`~lensing.core.metrics`: AUC, accuracy, the bootstrap interval;
- :mod:`~lensing.core.image_stats`: per-image statistics (sky, centre, ring, count scale);
- :mod:`~lensing.core.atomic`: files written whole or not at all;
- :mod:`~lensing.core.progress`: progress bars and status lines;
- :mod:`~lensing.core.lazy`: a package's public names imported on first use.
"""
