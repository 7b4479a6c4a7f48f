"""Classify strong-lensing images by dark-matter substructure (no / sphere / vort)."""

from lensing.config import CLASSES, DATA_DIR, MODELS_DIR, PROJECT_ROOT, REPORTS_DIR

__version__ = "0.1.0"
__all__ = ["CLASSES", "DATA_DIR", "MODELS_DIR", "PROJECT_ROOT", "REPORTS_DIR", "__version__"]
