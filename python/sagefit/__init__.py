"""sagefit: export a compiled Keras model for native Go training on SageMaker."""

from sagefit.export import ExportError, export, fingerprint

__all__ = ["export", "ExportError", "fingerprint"]
__version__ = "0.1.0"
