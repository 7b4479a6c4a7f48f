"""Evaluation: a trained model's predictions, metrics, calibration, explanations, figures.

- :mod:`~lensing.evaluation.inference`: ``predict_split`` (with D4 averaging) and
  ``load_trained_model``;
- :mod:`~lensing.evaluation.metrics`: AUCs, the bootstrap interval, the confusion matrix;
- :mod:`~lensing.evaluation.verdict`: whether a model has learned the classes, in words;
- :mod:`~lensing.evaluation.calibration`: ECE and temperature scaling;
- :mod:`~lensing.evaluation.saliency`: Grad-CAM maps (captum);
- :mod:`~lensing.evaluation.evaluate`: checkpoint -> metrics.json -> figures;
- :mod:`~lensing.evaluation.classify`: new image files -> a table of predictions;
- :mod:`~lensing.evaluation.ood`: the training images' profile, stored in checkpoints, and the
  check that flags inputs that do not look like them;
- :mod:`~lensing.evaluation.figures`: every figure, and showing one in a notebook.
"""

from lensing import lazy_exports

_EXPORTS = {
    "evaluate_checkpoint": "evaluate",
    "format_markdown": "evaluate",
    "classify_files": "classify",
    "training_profile": "ood",
    "check_inputs": "ood",
    "predict_split": "inference",
    "load_trained_model": "inference",
    "compute_metrics": "metrics",
    "fit_temperature": "calibration",
    "expected_calibration_error": "calibration",
    "saliency_maps": "saliency",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
