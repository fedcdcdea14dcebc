"""Runtime layer: one small interface over ai-edge-litert, tflite-runtime and tf.lite."""

from edge_agent.runtime.backends import Runtime, available_runtimes, select_runtime
from edge_agent.runtime.model import LoadedModel, verify_golden

__all__ = ["LoadedModel", "Runtime", "available_runtimes", "select_runtime", "verify_golden"]
