"""sagefit: export a compiled Keras model for native Go training on SageMaker."""

from sagefit.export import ExportError, export, fingerprint
from sagefit.weights import load_weights

__all__ = ["export", "ExportError", "fingerprint", "load_weights"]
__version__ = "0.1.0"
