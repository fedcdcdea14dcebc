"""Converter errors; all derive from :class:`edge_agent.errors.EdgeError`.

::

    ConverterError
    ├── ModelSourceError     MODEL is missing, corrupt, or not a Keras file / SavedModel
    ├── DatasetError         DATA is missing, empty, undecodable, or the wrong shape
    ├── OptionError          flags contradict each other or the device profile
    ├── UnsupportedOpsError  the requested quantization is impossible: names the ops
    ├── OutputError          the output path cannot be written, or would destroy data
    └── ConverterEnvironmentError  TensorFlow (the [converter] extra) is not installed
"""

from __future__ import annotations

from edge_agent.errors import BadInputError, EdgeError


class ConverterError(EdgeError):
    """Root of converter failures; the CLI prints the message as one line."""


class ModelSourceError(ConverterError, BadInputError):
    """The model path is missing, corrupt, or not a model."""


class DatasetError(ConverterError, BadInputError):
    """A dataset is missing, empty, undecodable, or does not match the model input."""


class OptionError(ConverterError, BadInputError):
    """A flag is out of range, or contradicts another flag or the device profile."""


class UnsupportedOpsError(ConverterError):
    """The requested quantization cannot be done; ``ops`` names the culprits."""

    def __init__(self, message: str, ops: list[str]):
        self.ops = ops
        super().__init__(message)


class OutputError(ConverterError, BadInputError):
    """The output path is not writable."""


class ConverterEnvironmentError(ConverterError):
    """This machine lacks what the converter needs (TensorFlow); not the input's fault."""
