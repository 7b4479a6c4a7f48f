"""Every figure the project draws, each written as a PNG and returned.

- :mod:`~lensing.evaluation.figures.plots`: samples, training history, ROC curves, confusion
  matrix, the search heatmap;
- :mod:`~lensing.evaluation.figures.explain`: reliability, saliency and mistakes;
- :mod:`~lensing.evaluation.figures.inline`: showing a figure in a notebook.
"""

from lensing.core.lazy import lazy_exports

_EXPORTS = {
    "plot_samples": "plots",
    "plot_history": "plots",
    "plot_roc": "plots",
    "plot_confusion": "plots",
    "plot_search_heatmap": "plots",
    "write_explanations": "explain",
    "show": "inline",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
