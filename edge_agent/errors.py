"""The project's error tree, split by who is at fault.

::

    EdgeError                       root of everything this project raises on purpose
    ├── BadInputError               the caller / user gave us something wrong (4xx, exit 2)
    │   ├── ConfigError             a config file or flag: names the file and the key
    │   ├── ProfileError            a device profile: names the file and the key
    │   ├── BundleError             a model bundle is malformed (missing file, hash mismatch)
    │   │   ├── ManifestError       manifest.json breaks a rule: names the field path
    │   │   └── BundleMemberError   the tar breaks a layout rule: names the member and rule
    │   ├── InvalidRequestError     a prediction request (shape, dtype, JSON, image bytes)
    │   │   └── ShapeMismatchError  its tensor has another shape than the model's input
    │   └── NotFoundError           an unknown model, version or route (404)
    ├── ModelError                  a model does not do what its bundle promises
    │   ├── ModelLoadError          the runtime refused to load it
    │   │   ├── NoRunnableVariantError  no variant of the bundle runs here (each reason)
    │   │   └── RuntimeRequirementError  its manifest's ``requires`` rule this runtime out
    │   ├── VariantFaultError       the serving variant's delegate failed at invoke
    │   ├── InvokeHangError         an invoke exceeded its watchdog limit (abandoned)
    │   └── GoldenMismatchError     it loads but does not reproduce its golden vectors
    ├── RuntimeUnavailableError     no usable LiteRT runtime / delegate on this machine
    ├── UpdateError                 a bad or malicious update (edge_agent.update.errors)
    └── TransportError              MQTT / HTTP / disk transport failed (not the data's fault)

Messages say what was expected and what was got; they are shown to users as one line.
"""

from __future__ import annotations


class EdgeError(Exception):
    """Root of every exception this project raises deliberately."""


class BadInputError(EdgeError):
    """Input from a user or client is wrong; never becomes a traceback or a 5xx."""


class ConfigError(BadInputError):
    """A configuration value is invalid; the message names the file and the key."""

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None):
        self.source = source
        self.key = key
        where = ""
        if source and key:
            where = f"{source}: {key}: "
        elif source:
            where = f"{source}: "
        elif key:
            where = f"{key}: "
        super().__init__(f"{where}{message}")


class ProfileError(ConfigError):
    """A device profile TOML file is invalid or unknown."""


class BundleError(BadInputError):
    """A model bundle is malformed: missing files, bad manifest, hash mismatch."""


class ManifestError(BundleError):
    """``manifest.json`` breaks a rule. ``field`` is the path of the offending value
    (``manifest.golden[2].atol``); the message names it and what was expected and got."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


class BundleMemberError(BundleError):
    """A bundle's tar breaks a layout rule (sparse, duplicate, unexpected or non-regular
    member, over a size bound, compressed, truncated). ``member`` and ``rule`` name it."""

    def __init__(self, message: str, *, member: str, rule: str) -> None:
        super().__init__(message)
        self.member = member
        self.rule = rule


class InvalidRequestError(BadInputError):
    """A prediction request is malformed (JSON, shape, dtype, undecodable image)."""


class ShapeMismatchError(InvalidRequestError):
    """A request tensor's shape differs from the model input's; ``shape`` is what was sent
    (probation tells a client's mistake from a release that changed its input shape)."""

    def __init__(self, message: str, *, shape: tuple[int, ...]) -> None:
        super().__init__(message)
        self.shape = shape


class NotFoundError(BadInputError):
    """An unknown model name or version (HTTP 404)."""


class ModelError(EdgeError):
    """A model does not behave as its bundle promises."""


class ModelLoadError(ModelError):
    """The runtime refused to load the model (corrupt file, unsupported op)."""


class NoRunnableVariantError(ModelLoadError):
    """No variant of the bundle passes this device's requirements, load and golden vectors
    (update code ``no_runnable_variant``); the message names each variant's reason."""

    code = "no_runnable_variant"


class RuntimeRequirementError(ModelLoadError):
    """The bundle's ``requires`` (manifest) rule out this device's runtime or delegate for
    every model it carries, e.g. int4 weights on tflite-runtime (update code
    ``runtime_unsupported``: refused before any load, the active version keeps serving)."""

    code = "runtime_unsupported"


class VariantFaultError(ModelError):
    """The runtime or delegate of the serving variant failed at invoke (injected by
    :mod:`edge_agent.runtime.fault_seam` in tests)."""


class InvokeHangError(ModelError):
    """An invoke of a variant exceeded its watchdog limit (edge_agent.variant_rules): its
    interpreter is abandoned (a native invoke cannot be interrupted) and the request is
    retried on the next variant."""


class GoldenMismatchError(ModelError):
    """The model loads but its outputs differ from the golden vectors in the manifest."""


class RuntimeUnavailableError(EdgeError):
    """No usable LiteRT runtime or requested delegate on this machine."""


class UpdateError(EdgeError):
    """A model update was refused: bad, malicious, or failed on this device."""


class TransportError(EdgeError):
    """A transport (MQTT, HTTP, disk) failed; not the fault of the data."""
