"""Evaluation: a trained model's predictions, metrics, calibration, explanations, figures.

- :mod:`~lensing.evaluation.verdict`: whether a model has learned the classes, in words;
- :mod:`~lensing.evaluation.calibration`: ECE and temperature scaling;
- :mod:`~lensing.evaluation.saliency`: Grad-CAM maps (captum);
- :mod:`~lensing.evaluation.evaluate`: checkpoint -> metrics.json -> figures;
- :mod:`~lensing.evaluation.predict`: new image files -> a table of predictions;
- :mod:`~lensing.evaluation.figures`: every figure, and showing one in a notebook.

Re-exported from lower layers: ``predict_split``, ``load_trained_model``
(:mod:`lensing.model.inference`), ``compute_metrics`` (:mod:`lensing.core.metrics`),
``training_profile``, ``check_inputs`` (:mod:`lensing.data.ood`).
"""

from lensing.core.lazy import lazy_exports

_EXPORTS = {
    "evaluate_checkpoint": "evaluate",
    "format_markdown": "evaluate",
    "predict_files": "predict",
    "training_profile": "lensing.data.ood",
    "check_inputs": "lensing.data.ood",
    "predict_split": "lensing.model.inference",
    "load_trained_model": "lensing.model.inference",
    "compute_metrics": "lensing.core.metrics",
    "fit_temperature": "calibration",
    "expected_calibration_error": "calibration",
    "saliency_maps": "saliency",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
