"""edge_agent: the on-device part of the edge inference runtime (never imports TensorFlow)."""

__version__ = "0.1.0"
__all__ = ["__version__"]
