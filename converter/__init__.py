"""converter: the workstation part — Keras/SavedModel → int8 TFLite model bundles."""

__version__ = "0.1.0"
__all__ = ["__version__"]
