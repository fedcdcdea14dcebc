"""Agent configuration: ``agent.toml`` → env overrides → flags → one frozen, validated tree.

Precedence, later wins::

    built-in defaults  <  agent.toml  <  EDGE_AGENT__<SECTION>__<KEY>=value  <  command-line flags

Env values are parsed as TOML values (``8080`` is an int, ``true`` a bool, ``["a", "b"]`` a
list) and fall back to a plain string (``127.0.0.1``). Overrides are applied to the raw
mapping *before* validation, so every error names the key and where the value came from::

    agent.toml: http.port: expected int 1..65535, got 'x'
    env EDGE_AGENT__MQTT__KEEPALIVE_S: mqtt.keepalive_s: expected int 5..65535, got 1

:func:`load_config` validates **every** section at start — ``[agent]``, ``[http]``,
``[[models]]``, ``[watch]``, ``[camera]``, ``[mqtt_requests]`` here, and ``[mqtt]``,
``[telemetry]``, ``[update]`` through their rooms' ``parse(table)`` — all through the one
reader (:mod:`edge_agent.config_reader`). An unknown section or key is an error.

Relative paths in the file are resolved against the file's directory; relative paths from
env or flags against the working directory.

Raises :class:`~edge_agent.errors.ConfigError` (and nothing else) for bad configuration.

Size: over ~400 lines on purpose: each of the agent's own six sections keeps its frozen
dataclass beside its parser, so a key is read, validated and documented in one place; the
generic reader is :mod:`edge_agent.config_reader` and rooms with their own sections
(mqtt, telemetry, update) keep theirs.
"""

from __future__ import annotations

import copy
import os
import re
import socket
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.bundle import MAX_BUNDLE_BYTES
from edge_agent.capture.config import CaptureConfig
from edge_agent.config_reader import (
    COMMAND_LINE,
    DEFAULTS,
    ENV_PREFIX,
    Origins,
    Table,
    parse_env_value,
    read_toml,
)
from edge_agent.errors import ConfigError, ProfileError
from edge_agent.grpc.config import GrpcConfig
from edge_agent.homeassistant.config import HomeAssistantConfig
from edge_agent.mqtt.config import MqttConfig
from edge_agent.mqtt.topics import DEFAULT_REPLY_PREFIX, check_reply_prefix
from edge_agent.protocol.kinds import RUNTIME_CHOICES as RUNTIMES
from edge_agent.telemetry.config import TelemetryConfig
from edge_agent.tflite_file import is_tflite_file
from edge_agent.update.config import UpdateConfig

__all__ = [
    "ENV_PREFIX", "AgentConfig", "AgentSettings", "CameraSettings", "ConfigError",
    "HttpSettings", "ModelSpec", "MqttRequestsSettings", "WatchSettings", "default_device_id",
    "load_config", "parse_env_value",
]

SECTIONS = ("agent", "http", "models", "watch", "camera", "mqtt_requests", "mqtt",
            "telemetry", "update", "grpc", "capture", "homeassistant")
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # safe in MQTT topics and paths
LABEL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,63}$")  # a version label: never a number
COMPONENTS = ("telemetry", "capture", "update", "homeassistant", "systemd",
              "dashboard")  # in start order
LEGACY_COMPONENTS = {"edge_agent.telemetry.service:create": "telemetry",
                     "edge_agent.update.service:create": "update",
                     "edge_agent.service:create": "systemd",
                     "edge_agent.systemd:create": "systemd"}
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_SECRET_RE = re.compile(r"(^|_)(password|passphrase|token|secret|psk|api_key|private_key)$")
MIB = 1024 * 1024


@dataclass(frozen=True)
class AgentSettings:
    """``[agent]``: identity, board profile, model store and the runtime's resources."""

    device_id: str
    profile: str = "auto"  # a profile name, a path to a profile .toml, or auto
    store_dir: Path = Path("/var/lib/edge-agent")
    runtime: str = "auto"  # auto (the profile's candidates in order) or one runtime name
    threads: int | None = None  # interpreter threads; None = profile default capped by cores
    workers: int | None = None  # interpreters per model version; None = profile default
    groups: tuple[str, ...] = ()
    log_format: str = "text"  # text | json
    log_level: str = "info"
    delegate_fallback: str = "cpu"  # when the profile's delegate is missing: cpu | fail
    verify_golden: bool = True  # check each bundle's golden vectors before serving it
    probe_runtime: bool = True  # try the runtime in a child process first (crash-safe)
    max_image_pixels: int = 12_000_000  # larger images are refused before decoding
    max_image_factor: int = 64  # decoded pixels per model-input pixel; more: refused (413)
    max_loaded_versions: int = 2  # per model name, kept in memory for instant rollback
    max_bundle_bytes: int = MAX_BUNDLE_BYTES  # read from one bundle on disk (store, --model)
    # bundles with variants (edge_agent.variants): after a failover, the better variant is
    # retried after variant_backoff_s, doubling to variant_backoff_max_s; each retry's
    # golden vectors must finish within variant_check_timeout_s
    variant_backoff_s: float = 1.0
    variant_backoff_max_s: float = 300.0
    variant_check_timeout_s: float = 10.0
    # failover rules (edge_agent.variant_rules): variant_fail_errors runtime errors within
    # variant_fail_window_s switch; an invoke longer than variant_watchdog_factor × the
    # variant's measured latency (never under variant_watchdog_floor_s; None: the
    # profile's invoke_watchdog_floor_s) is a hang (factor 0: no watchdog); past
    # variant_max_abandoned hung interpreters a variant stays failed until restart
    variant_fail_errors: int = 3
    variant_fail_window_s: float = 10.0
    variant_watchdog_factor: float = 20.0
    variant_watchdog_floor_s: float | None = None
    variant_max_abandoned: int = 8
    components: tuple[str, ...] | None = None  # names from COMPONENTS; None = all that apply
    device_key: Path | None = None  # X25519 key for sealed bundles; None: <store_dir>/device.key

    @property
    def device_key_path(self) -> Path:
        """``[agent] device_key``, by default ``<store_dir>/device.key`` (docs/config.md)."""
        return self.device_key or self.store_dir / "device.key"


@dataclass(frozen=True)
class HttpSettings:
    """``[http]``: the TF-Serving-compatible REST endpoint."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8501  # TF Serving's REST port; 0 picks a free port (tests)
    token: str | None = field(default=None, repr=False)  # bearer token (or from token_file)
    token_file: Path | None = None
    # admin actions (dashboard rollback); None: they are refused (403) for everyone
    admin_token: str | None = field(default=None, repr=False)
    ui: bool = True  # the device dashboard at /ui/ (docs/dashboard.md)
    max_body_bytes: int = 8 * MIB
    queue_size: int = 16  # requests waiting for an interpreter beyond the busy workers
    max_batch: int = 64  # instances per request
    max_connections: int = 64  # open client connections (each holds a thread)
    max_connections_per_client: int = 16  # open connections from one peer IP address
    idle_timeout_s: float = 30.0  # a keep-alive connection idle this long is closed
    head_timeout_s: float = 10.0  # whole request head, from its first byte (else 408)
    body_timeout_s: float = 60.0  # whole request body, from the end of the head (else 408)
    retry_after_s: int = 1  # Retry-After sent with 503 when the queue is full
    # /v1/models/{m}/labels/{label}: model → label → version (``stable`` defaults to the
    # active version; the update flow may add ``canary`` during probation)
    version_labels: tuple[tuple[str, tuple[tuple[str, int], ...]], ...] = ()


@dataclass(frozen=True)
class ModelSpec:
    """One ``[[models]]`` entry: a bundle (directory or .tar) installed into the store at start.

    It is served when its model has no active version yet (first install); an installed
    update stays active across restarts unless ``activate = true`` forces this version.
    """

    bundle: Path
    activate: bool = False  # True: serve this version at every start (over any update)


@dataclass(frozen=True)
class WatchSettings:
    """``[watch]``: image files dropped in ``dir`` are classified, then moved."""

    enabled: bool = False
    dir: Path | None = None
    model: str | None = None
    version: int | None = None  # None = the active version
    extensions: tuple[str, ...] = IMAGE_EXTENSIONS
    jsonl: Path | None = None  # results as JSON lines; default <dir>/results.jsonl
    publish_mqtt: bool = False  # also publish to edge/<device>/results/<model>
    done_dir: Path | None = None  # default <dir>/done
    failed_dir: Path | None = None  # default <dir>/failed
    journal: Path | None = None  # SQLite journal; default <dir>/.journal.sqlite3
    poll_interval_s: float = 0.5
    settle_s: float = 0.2  # a file must be unchanged this long (still being written?)
    top_k: int = 3
    max_file_bytes: int = 32 * MIB


@dataclass(frozen=True)
class CameraSettings:
    """``[camera]``: classify frames from a camera (OpenCV) or a synthetic source."""

    enabled: bool = False
    model: str | None = None
    device: str = "0"  # OpenCV index or path/URL, or "synthetic"
    interval_s: float = 1.0  # time between classified frames
    width: int | None = None
    height: int | None = None
    top_k: int = 3
    jsonl: Path | None = None
    publish_mqtt: bool = True
    max_frames: int | None = None  # stop after this many frames (demos, tests)


@dataclass(frozen=True)
class MqttRequestsSettings:
    """``[mqtt_requests]``: requests on ``edge/<device>/infer/<model>`` (needs an MQTT link)."""

    enabled: bool = True
    qos: int = 1
    max_payload_bytes: int = 4 * MIB  # the subscription's own limit (replies 413 above it)
    queue_size: int = 16
    top_k: int = 5
    # "reply_to" / MQTT 5 response topics must lie below this (outside edge/<device>/)
    reply_prefix: str = DEFAULT_REPLY_PREFIX


@dataclass(frozen=True)
class AgentConfig:
    """The whole validated configuration: one typed field per section."""

    agent: AgentSettings
    http: HttpSettings = field(default_factory=HttpSettings)
    models: tuple[ModelSpec, ...] = ()
    watch: WatchSettings = field(default_factory=WatchSettings)
    camera: CameraSettings = field(default_factory=CameraSettings)
    mqtt_requests: MqttRequestsSettings = field(default_factory=MqttRequestsSettings)
    mqtt: MqttConfig | None = None  # None: no [mqtt] url, no broker
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    update: UpdateConfig | None = None  # None: no [update] section
    grpc: GrpcConfig = field(default_factory=GrpcConfig)  # [grpc]: off by default
    capture: CaptureConfig = field(default_factory=CaptureConfig)  # off by default
    homeassistant: HomeAssistantConfig = field(default_factory=HomeAssistantConfig)
    source: str = DEFAULTS

    def wants(self, component: str) -> bool:
        """Is ``component`` allowed by ``[agent] components`` (all are by default)?"""
        allowed = self.agent.components
        return allowed is None or component in allowed

    def redacted(self) -> dict[str, Any]:
        """Everything as plain JSON-able data with secrets masked (for a 'get config')."""
        out: dict[str, Any] = {"source": self.source}
        for name in SECTIONS:
            value = getattr(self, name)
            if isinstance(value, tuple):
                out[name] = [_mask(asdict(v)) for v in value]
            else:
                out[name] = _mask(asdict(value)) if value is not None else {}
        return out


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, Path):
        return str(v)
    return v


def _mask(v: Any, key: str = "") -> Any:
    if isinstance(v, dict):
        return {k: _mask(x, str(k)) for k, x in v.items() if k != "source"}
    if isinstance(v, list):
        return [_mask(x, key) for x in v]
    if _SECRET_RE.search(key.lower()) and v not in (None, ""):
        return "***"
    return _plain(v)


# ----------------------------------------------------------------------------- sections


def default_device_id() -> str:
    """The host name made safe for MQTT topics and paths."""
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()).strip(".-_") or "edge"
    return host[:64]


def _agent(t: Table) -> AgentSettings:
    d = AgentSettings
    profile = t.text("profile", "auto")
    if profile != "auto":
        from edge_agent.profiles import load_profile

        try:
            load_profile(profile)
        except ProfileError as e:
            raise t.err("profile", str(e)) from e
    s = AgentSettings(
        device_id=t.opt_text("device_id", pattern=ID_RE) or default_device_id(),
        profile=profile,
        store_dir=t.path("store_dir") or d.store_dir,
        runtime=t.text("runtime", "auto", choices=RUNTIMES),
        threads=t.opt_integer("threads", 1, 256),
        workers=t.opt_integer("workers", 1, 64),
        groups=t.texts("groups", (), pattern=ID_RE, what="group names"),
        log_format=t.text("log_format", "text", choices=("text", "json")),
        log_level=t.text("log_level", "info", choices=("debug", "info", "warning", "error")),
        delegate_fallback=t.text("delegate_fallback", "cpu", choices=("cpu", "fail")),
        verify_golden=t.flag("verify_golden", True),
        probe_runtime=t.flag("probe_runtime", True),
        max_image_pixels=t.integer("max_image_pixels", d.max_image_pixels, 1),
        max_image_factor=t.integer("max_image_factor", d.max_image_factor, 1, 1 << 20),
        max_loaded_versions=t.integer("max_loaded_versions", d.max_loaded_versions, 1, 16),
        max_bundle_bytes=t.integer("max_bundle_bytes", d.max_bundle_bytes, 1 << 16),
        variant_backoff_s=t.number("variant_backoff_s", d.variant_backoff_s, 0, 3600),
        variant_backoff_max_s=t.number("variant_backoff_max_s", d.variant_backoff_max_s, 0,
                                       86400),
        variant_check_timeout_s=t.number("variant_check_timeout_s",
                                         d.variant_check_timeout_s, 0, 3600),
        variant_fail_errors=t.integer("variant_fail_errors", d.variant_fail_errors, 1, 10_000),
        variant_fail_window_s=t.number("variant_fail_window_s", d.variant_fail_window_s, 0,
                                       86400),
        variant_watchdog_factor=t.number("variant_watchdog_factor", d.variant_watchdog_factor,
                                         0, 1e6, exclusive=False),
        variant_watchdog_floor_s=t.opt_number("variant_watchdog_floor_s", 0),
        variant_max_abandoned=t.integer("variant_max_abandoned", d.variant_max_abandoned, 1,
                                        1024),
        components=_components(t),
        device_key=t.path("device_key"),
    )
    t.finish()
    return s


def _components(t: Table) -> tuple[str, ...] | None:
    """``[agent] components``: which built-in components run (None = all that apply).

    Names are ``telemetry``, ``update``, ``homeassistant``, ``systemd``, ``dashboard``. The old
    ``module:factory`` spelling of the first three is accepted with a deprecation warning.
    """
    if t.raw.get("components") is None:
        t.take("components")
        return None
    out = []
    for spec in t.texts("components", ()):
        name = LEGACY_COMPONENTS.get(spec, spec)
        if name not in COMPONENTS:
            raise t.err("components", f"expected component names from "
                                      f"{', '.join(COMPONENTS)}, got {spec!r}")
        if name != spec:
            warnings.warn(f"{t.origins.where(t.key('components'))}: agent.components entry "
                          f"{spec!r} is deprecated; write {name!r}", DeprecationWarning,
                          stacklevel=2)
        out.append(name)
    return tuple(dict.fromkeys(out))


def _admin_token(t: Table, token: str | None) -> str | None:
    """``http.admin_token`` / ``http.admin_token_file``: must differ from the data token."""
    admin = t.opt_text("admin_token")
    admin_file = t.path("admin_token_file")
    if admin is not None and admin_file is not None:
        raise t.err("admin_token_file", "set http.admin_token or http.admin_token_file, not both")
    if admin_file is not None:
        admin = t.read_secret("admin_token_file", admin_file)
    if admin is not None and admin == token:
        raise t.err("admin_token", "must differ from http.token (data-plane clients must not "
                    "reach admin actions)")
    return admin


def _http(t: Table) -> HttpSettings:
    d = HttpSettings
    token = t.opt_text("token")
    token_file = t.path("token_file")
    if token is not None and token_file is not None:
        raise t.err("token_file", "set http.token or http.token_file, not both")
    if token_file is not None:
        token = t.read_secret("token_file", token_file)
    s = HttpSettings(
        enabled=t.flag("enabled", True),
        host=t.text("host", d.host),
        port=t.integer("port", d.port, 1, 65535, allow=(0,)),
        token=token,
        token_file=token_file,
        admin_token=_admin_token(t, token),
        ui=t.flag("ui", True),
        max_body_bytes=t.integer("max_body_bytes", d.max_body_bytes, 1024),
        queue_size=t.integer("queue_size", d.queue_size, 0, 100_000),
        max_batch=t.integer("max_batch", d.max_batch, 1, 100_000),
        max_connections=t.integer("max_connections", d.max_connections, 1, 10_000),
        max_connections_per_client=t.integer("max_connections_per_client",
                                             d.max_connections_per_client, 1, 10_000),
        idle_timeout_s=t.number("idle_timeout_s", d.idle_timeout_s, 0.0),
        head_timeout_s=t.number("head_timeout_s", d.head_timeout_s, 0.0, 3600.0),
        body_timeout_s=t.number("body_timeout_s", d.body_timeout_s, 0.0, 3600.0),
        retry_after_s=t.integer("retry_after_s", d.retry_after_s, 1, 3600),
        version_labels=_version_labels(t),
    )
    t.finish()
    return s


def _version_labels(t: Table) -> tuple[tuple[str, tuple[tuple[str, int], ...]], ...]:
    """``[http.version_labels.<model>]`` tables of ``<label> = <version>``."""
    raw = t.take("version_labels")
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise t.err("version_labels", "expected a table of models, each a table of "
                                      f"label = version, got {raw!r}")
    out = []
    for model, labels in raw.items():
        where = f"version_labels.{model}"
        if not isinstance(model, str) or not ID_RE.match(model):
            raise t.err(where, f"expected a model name matching {ID_RE.pattern}")
        if not isinstance(labels, dict):
            raise t.err(where, f"expected a table of label = version, got {labels!r}")
        pairs = []
        for label, version in labels.items():
            if not LABEL_RE.match(label):
                raise t.err(f"{where}.{label}", "expected a label matching "
                                                f"{LABEL_RE.pattern}")
            if isinstance(version, bool) or not isinstance(version, int) or version < 1:
                raise t.err(f"{where}.{label}", f"expected a version (int >= 1), got "
                                                f"{version!r}")
            pairs.append((label, version))
        out.append((model, tuple(pairs)))
    return tuple(out)


def _models(raw: Any, origins: Origins) -> tuple[ModelSpec, ...]:
    """The ``[[models]]`` entries (and ``--model`` flags, appended as entries).

    A bundle path that does not exist is refused here, at start, naming the path and the
    flag or key that gave it: an agent started with a typo would otherwise serve nothing.
    So is a bare ``.tflite`` (the ``TFL3`` flatbuffer identifier), with the command that
    wraps it: it has no name, version, golden vectors or drift reference to serve by.
    """
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise origins.error("models", f"expected [[models]] tables, got {raw!r}")
    out = []
    for i, entry in enumerate(raw):
        if isinstance(entry, str):
            entry = {"bundle": entry}
        t = Table(entry, f"models[{i}]", origins)
        bundle = t.path("bundle")
        if bundle is None:
            raise t.err("bundle", "missing required key (path to a bundle directory or .tar)")
        flag = "--model " if origins.where(f"models[{i}]") == COMMAND_LINE else ""
        if not bundle.exists():
            raise t.err("bundle", f"{flag}{bundle}: no such bundle directory or .tar")
        if bundle.suffix == ".tflite" or is_tflite_file(bundle):  # a bare model, no manifest
            raise t.err("bundle", f"{flag}{bundle} is a bare .tflite model, not a bundle; wrap "
                        f"it first: edge-convert bundle {bundle} --name NAME --version 1 "
                        f"-o {bundle.with_suffix('')}-bundle")
        out.append(ModelSpec(bundle=bundle, activate=t.flag("activate", False)))
        t.finish()
    return tuple(out)


def _watch(t: Table) -> WatchSettings:
    d = WatchSettings
    folder = t.path("dir")
    enabled = t.flag("enabled", folder is not None)
    model = t.opt_text("model", pattern=ID_RE)
    if enabled and folder is None:
        raise t.err("dir", "missing required key (the folder to watch)")
    if enabled and model is None:
        raise t.err("model", "missing required key (the model that classifies the files)")
    exts = tuple(e.lower() if e.startswith(".") else f".{e.lower()}"
                 for e in t.texts("extensions", d.extensions))

    def under(k: str, name: str) -> Path | None:
        return t.path(k) or (folder / name if folder else None)

    s = WatchSettings(
        enabled=enabled, dir=folder, model=model,
        version=t.opt_integer("version", 1),
        extensions=exts,
        jsonl=under("jsonl", "results.jsonl"),
        publish_mqtt=t.flag("publish_mqtt", False),
        done_dir=under("done_dir", "done"),
        failed_dir=under("failed_dir", "failed"),
        journal=under("journal", ".journal.sqlite3"),
        poll_interval_s=t.number("poll_interval_s", d.poll_interval_s, 0.0),
        settle_s=t.number("settle_s", d.settle_s, 0.0, exclusive=False),
        top_k=t.integer("top_k", d.top_k, 1, 1000),
        max_file_bytes=t.integer("max_file_bytes", d.max_file_bytes, 1),
    )
    t.finish()
    return s


def _camera(t: Table) -> CameraSettings:
    d = CameraSettings
    model = t.opt_text("model", pattern=ID_RE)
    enabled = t.flag("enabled", False)
    if enabled and model is None:
        raise t.err("model", "missing required key (the model that classifies the frames)")
    device = t.take("device")
    if isinstance(device, bool) or (device is not None and not isinstance(device, (str, int))):
        raise t.err("device", f"expected a camera index, path or 'synthetic', got {device!r}")
    s = CameraSettings(
        enabled=enabled, model=model,
        device=str(device) if device is not None else d.device,
        interval_s=t.number("interval_s", d.interval_s, 0.0, exclusive=False),
        width=t.opt_integer("width", 1, 16384), height=t.opt_integer("height", 1, 16384),
        top_k=t.integer("top_k", d.top_k, 1, 1000),
        jsonl=t.path("jsonl"),
        publish_mqtt=t.flag("publish_mqtt", d.publish_mqtt),
        max_frames=t.opt_integer("max_frames", 1),
    )
    t.finish()
    return s


def _mqtt_requests(t: Table) -> MqttRequestsSettings:
    d = MqttRequestsSettings
    s = MqttRequestsSettings(
        enabled=t.flag("enabled", True),
        qos=t.integer("qos", d.qos, 0, 2),
        max_payload_bytes=t.integer("max_payload_bytes", d.max_payload_bytes, 64),
        queue_size=t.integer("queue_size", d.queue_size, 1, 100_000),
        top_k=t.integer("top_k", d.top_k, 1, 1000),
        reply_prefix=t.text("reply_prefix", d.reply_prefix),
    )
    try:
        check_reply_prefix(s.reply_prefix)
    except ConfigError as e:
        raise t.err("reply_prefix", str(e)) from e
    t.finish()
    return s


def _apply_overrides(raw: dict[str, Any], overrides: Mapping[str, Any],
                     origins: Origins) -> None:
    """Dotted keys (``http.port``); ``None`` values are skipped; ``models`` entries append."""
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "models":
            existing = raw.get("models", [])
            if not isinstance(existing, list):
                raise origins.error("models", f"expected an array of tables, got {existing!r}")
            raw["models"] = [*existing, *value]
            for i in range(len(existing), len(raw["models"])):
                origins.origin[f"models[{i}]"] = COMMAND_LINE
            continue
        origins.set(raw, key.split("."), value, COMMAND_LINE)


def load_config(path: Path | None, overrides: Mapping[str, Any] | None = None, *,
                env: Mapping[str, str] | None = None) -> AgentConfig:
    """Read ``path`` (or only defaults), apply env then ``overrides``, validate everything.

    ``overrides`` maps dotted keys to values (``{"http.port": 8080, "mqtt.url": "…"}``);
    ``None`` values are ignored and a ``models`` list is appended to the file's [[models]].
    ``env`` defaults to ``os.environ``. Every section is validated here, so a bad value fails
    at start. Raises ConfigError naming the file or environment variable and the key.
    """
    source = str(path) if path is not None else DEFAULTS
    base = Path(path).resolve().parent if path is not None else Path.cwd()
    origins = Origins(source, base)
    raw = copy.deepcopy(read_toml(Path(path))) if path is not None else {}
    origins.apply_env(raw, os.environ if env is None else env)
    _apply_overrides(raw, overrides or {}, origins)
    for name, value in raw.items():
        if name not in SECTIONS:
            raise origins.error(name, f"unknown section (known: {', '.join(SECTIONS)}; "
                                      f"got {value!r})")

    def table(name: str) -> Table:
        return Table(raw.get(name), name, origins)

    http = _http(table("http"))
    return AgentConfig(
        agent=_agent(table("agent")),
        http=http,
        models=_models(raw.get("models"), origins),
        watch=_watch(table("watch")),
        camera=_camera(table("camera")),
        mqtt_requests=_mqtt_requests(table("mqtt_requests")),
        mqtt=MqttConfig.parse(table("mqtt")),
        telemetry=TelemetryConfig.parse(table("telemetry")),
        update=UpdateConfig.parse(table("update")),
        grpc=GrpcConfig.parse(table("grpc"), http_token=http.token),
        capture=CaptureConfig.parse(table("capture")),
        homeassistant=HomeAssistantConfig.parse(table("homeassistant")),
        source=source,
    )
