"""Agent configuration: ``agent.toml`` → env overrides → flags → frozen, validated dataclasses.

Precedence, later wins::

    built-in defaults  <  agent.toml  <  EDGE_AGENT__<SECTION>__<KEY>=value  <  command-line flags

Env values are parsed as TOML values (``8080`` is an int, ``true`` a bool, ``["a", "b"]`` a
list) and fall back to a plain string (``127.0.0.1``). Overrides are applied to the raw
mapping *before* validation, so every error names the key and where the value came from::

    agent.toml: http.port: expected int 1..65535, got 'x'
    env EDGE_AGENT__HTTP__PORT: http.port: expected int 1..65535, got 'x'

The agent owns ``[agent]``, ``[http]``, ``[[models]]``, ``[watch]``, ``[camera]`` and
``[mqtt_requests]``. Every other table (``[mqtt]``, ``[telemetry]``, ``[update]``, …) is
kept unvalidated in :attr:`AgentConfig.sections` (after env overrides); the packages owning
them parse it with their ``from_section(raw, source)``.

Relative paths in the file are resolved against the file's directory; relative paths from
env or flags against the working directory.

Raises :class:`~edge_agent.errors.ConfigError` (and nothing else) for bad configuration.
"""

from __future__ import annotations

import copy
import os
import re
import socket
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from edge_agent.errors import ConfigError, ProfileError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (JetPack 6)
    import tomli as tomllib

ENV_PREFIX = "EDGE_AGENT__"
OWN_SECTIONS = ("agent", "http", "models", "watch", "camera", "mqtt_requests")
FOREIGN_SECTIONS = ("mqtt", "telemetry", "update")  # always present in ``sections``
from edge_agent.protocol.kinds import RUNTIME_CHOICES as RUNTIMES  # noqa: E402 (one list)

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # safe in MQTT topics and paths
COMPONENT_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
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
    workers: int = 1  # interpreters per model version = requests served in parallel
    groups: tuple[str, ...] = ()
    log_format: str = "text"  # text | json
    log_level: str = "info"
    delegate_fallback: str = "cpu"  # when the profile's delegate is missing: cpu | fail
    verify_golden: bool = True  # check each bundle's golden vectors before serving it
    probe_runtime: bool = True  # try the runtime in a child process first (crash-safe)
    max_image_pixels: int = 12_000_000  # larger images are refused before decoding
    max_loaded_versions: int = 2  # per model name, kept in memory for instant rollback
    components: tuple[str, ...] | None = None  # "module:factory" list; None = the defaults


@dataclass(frozen=True)
class HttpSettings:
    """``[http]``: the TF-Serving-compatible REST endpoint."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8501  # TF Serving's REST port; 0 picks a free port (tests)
    token: str | None = field(default=None, repr=False)  # bearer token (or from token_file)
    token_file: Path | None = None
    max_body_bytes: int = 8 * MIB
    queue_size: int = 16  # requests waiting for an interpreter beyond the busy workers
    max_batch: int = 64  # instances per request
    max_connections: int = 64  # open client connections (each holds a thread)
    idle_timeout_s: float = 30.0  # a keep-alive connection idle this long is closed
    retry_after_s: int = 1  # Retry-After sent with 503 when the queue is full


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
    max_payload_bytes: int = 4 * MIB
    queue_size: int = 16
    top_k: int = 5


@dataclass(frozen=True)
class AgentConfig:
    """The whole validated configuration; foreign sections stay raw in ``sections``."""

    agent: AgentSettings
    http: HttpSettings = field(default_factory=HttpSettings)
    models: tuple[ModelSpec, ...] = ()
    watch: WatchSettings = field(default_factory=WatchSettings)
    camera: CameraSettings = field(default_factory=CameraSettings)
    mqtt_requests: MqttRequestsSettings = field(default_factory=MqttRequestsSettings)
    sections: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    source: str = "<defaults>"

    def redacted(self) -> dict[str, Any]:
        """Everything as plain JSON-able data with secrets masked (for a 'get config')."""
        out: dict[str, Any] = {
            "source": self.source,
            "agent": _plain(asdict(self.agent)),
            "http": _plain(asdict(self.http)),
            "models": [_plain(asdict(m)) for m in self.models],
            "watch": _plain(asdict(self.watch)),
            "camera": _plain(asdict(self.camera)),
            "mqtt_requests": _plain(asdict(self.mqtt_requests)),
        }
        if out["http"]["token"] is not None:
            out["http"]["token"] = "***"
        for name, raw in self.sections.items():
            out[name] = _mask(raw)
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
        return {k: _mask(x, str(k)) for k, x in v.items()}
    if isinstance(v, list):
        return [_mask(x, key) for x in v]
    if _SECRET_RE.search(key.lower()) and v not in (None, ""):
        return "***"
    return _plain(v)


# ----------------------------------------------------------------------------- raw layer


class _Ctx:
    """Where each raw value came from, so errors can name the file, env var or flag."""

    def __init__(self, source: str, base_dir: Path) -> None:
        self.source = source
        self.base_dir = base_dir
        self.origin: dict[str, str] = {}  # dotted key → "env NAME" / "command line"

    def where(self, key: str) -> str:
        k = key
        while True:
            if k in self.origin:
                return self.origin[k]
            if "." not in k and "[" not in k:
                return self.source
            shorter = re.sub(r"(\.[^.\[]*|\[\d+\])$", "", k)
            if shorter == k:
                return self.source
            k = shorter

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(message, source=self.where(key), key=key)

    def resolve(self, key: str, p: Path) -> Path:
        p = p.expanduser()
        if p.is_absolute():
            return p
        from_file = self.where(key) == self.source and self.source != "<defaults>"
        return (self.base_dir / p) if from_file else (Path.cwd() / p)


def parse_env_value(text: str) -> Any:
    """A TOML value (``8080``, ``true``, ``["a"]``, ``"x"``), else the text itself."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _set_path(raw: dict[str, Any], parts: list[str], value: Any, label: str, ctx: _Ctx) -> None:
    node = raw
    for i, p in enumerate(parts[:-1]):
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"cannot set {'.'.join(parts)}: {'.'.join(parts[:i + 1])} is not "
                              "a table", source=label)
        node = nxt
    node[parts[-1]] = value
    ctx.origin[".".join(parts)] = label


def _apply_env(raw: dict[str, Any], env: Mapping[str, str], ctx: _Ctx) -> None:
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX):].split("__")]
        if not all(parts):
            raise ConfigError(f"expected {ENV_PREFIX}<SECTION>__<KEY>, got {name!r}",
                              source=f"env {name}")
        _set_path(raw, parts, parse_env_value(env[name]), f"env {name}", ctx)


def _apply_overrides(raw: dict[str, Any], overrides: Mapping[str, Any], ctx: _Ctx) -> None:
    """Dotted keys (``http.port``); ``None`` values are skipped; ``models`` entries append."""
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "models":
            existing = raw.get("models", [])
            if not isinstance(existing, list):
                raise ctx.error("models", f"expected an array of tables, got {existing!r}")
            raw["models"] = [*existing, *value]
            for i in range(len(existing), len(raw["models"])):
                ctx.origin[f"models[{i}]"] = "command line"
            continue
        _set_path(raw, key.split("."), value, "command line", ctx)


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config file ({e.strerror or e})", source=str(path)) from e
    except UnicodeDecodeError as e:
        raise ConfigError("config file is not UTF-8 text", source=str(path)) from e
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"invalid TOML: {e}", source=str(path)) from e


# ----------------------------------------------------------------------------- validation


class _Table:
    """Typed reads from one raw table; ``finish()`` rejects keys nobody read (typos)."""

    def __init__(self, raw: Any, prefix: str, ctx: _Ctx) -> None:
        if not isinstance(raw, dict):
            raise ctx.error(prefix, f"expected a table, got {type(raw).__name__} {raw!r}")
        self.raw, self.prefix, self.ctx = raw, prefix, ctx
        self.seen: set[str] = set()

    def key(self, k: str) -> str:
        return f"{self.prefix}.{k}"

    def _take(self, k: str) -> Any:
        self.seen.add(k)
        return self.raw.get(k)

    def err(self, k: str, msg: str) -> ConfigError:
        return self.ctx.error(self.key(k), msg)

    def integer(self, k: str, default: int | None, lo: int, hi: int | None = None,
            *, allow: tuple[int, ...] = ()) -> int | None:
        v = self._take(k)
        if v is None:
            return default
        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.err(k, f"expected int {rng}, got {v!r}")
        if v not in allow and (v < lo or (hi is not None and v > hi)):
            raise self.err(k, f"expected int {rng}, got {v!r}")
        return v

    def number(self, k: str, default: float | None, lo: float, *,
              exclusive: bool = True) -> float | None:
        v = self._take(k)
        if v is None:
            return default
        op = ">" if exclusive else ">="
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.err(k, f"expected a number {op} {lo:g}, got {v!r}")
        if (v <= lo) if exclusive else (v < lo):
            raise self.err(k, f"expected a number {op} {lo:g}, got {v!r}")
        return float(v)

    def flag(self, k: str, default: bool) -> bool:
        v = self._take(k)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise self.err(k, f"expected true or false, got {v!r}")
        return v

    def text(self, k: str, default: str | None, *, choices: tuple[str, ...] = (),
            pattern: re.Pattern[str] | None = None) -> str | None:
        v = self._take(k)
        if v is None:
            return default
        if isinstance(v, int) and not isinstance(v, bool) and pattern is not None:
            v = str(v)  # e.g. device_id = 42 from an env var
        if not isinstance(v, str) or not v:
            raise self.err(k, f"expected a non-empty string, got {v!r}")
        if choices and v not in choices:
            raise self.err(k, f"expected one of {', '.join(choices)}, got {v!r}")
        if pattern is not None and not pattern.match(v):
            raise self.err(k, f"expected a name matching {pattern.pattern}, got {v!r}")
        return v

    def path(self, k: str, default: Path | None) -> Path | None:
        v = self._take(k)
        if v is None:
            return default
        if not isinstance(v, str) or not v:
            raise self.err(k, f"expected a path string, got {v!r}")
        return self.ctx.resolve(self.key(k), Path(v))

    def texts(self, k: str, default: tuple[str, ...]) -> tuple[str, ...]:
        v = self._take(k)
        if v is None:
            return default
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
            raise self.err(k, f"expected a list of strings, got {v!r}")
        return tuple(v)

    def finish(self) -> None:
        for k in self.raw:
            if k not in self.seen:
                known = ", ".join(sorted(self.seen))
                raise self.err(k, f"unknown key (known: {known})")


def default_device_id() -> str:
    """The host name made safe for MQTT topics and paths."""
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()).strip(".-_") or "edge"
    return host[:64]


def _agent(raw: Any, ctx: _Ctx) -> AgentSettings:
    t = _Table(raw, "agent", ctx)
    profile = t.text("profile", "auto")
    assert profile is not None
    if profile != "auto":
        from edge_agent.profiles import load_profile

        try:
            load_profile(profile)
        except ProfileError as e:
            raise t.err("profile", str(e)) from e
    threads = t.integer("threads", None, 1, 256)
    s = AgentSettings(
        device_id=t.text("device_id", None, pattern=ID_RE) or default_device_id(),
        profile=profile,
        store_dir=t.path("store_dir", AgentSettings.store_dir) or AgentSettings.store_dir,
        runtime=t.text("runtime", "auto", choices=RUNTIMES) or "auto",
        threads=threads,
        workers=t.integer("workers", 1, 1, 64) or 1,
        groups=t.texts("groups", ()),
        log_format=t.text("log_format", "text", choices=("text", "json")) or "text",
        log_level=t.text("log_level", "info",
                        choices=("debug", "info", "warning", "error")) or "info",
        delegate_fallback=t.text("delegate_fallback", "cpu", choices=("cpu", "fail")) or "cpu",
        verify_golden=t.flag("verify_golden", True),
        probe_runtime=t.flag("probe_runtime", True),
        max_image_pixels=t.integer("max_image_pixels", 12_000_000, 1) or 12_000_000,
        max_loaded_versions=t.integer("max_loaded_versions", 2, 1, 16) or 2,
        components=_components(t),
    )
    for g in s.groups:
        if not ID_RE.match(g):
            raise t.err("groups", f"group names must match {ID_RE.pattern}, got {g!r}")
    t.finish()
    return s


def _components(t: _Table) -> tuple[str, ...] | None:
    if t.raw.get("components") is None:
        t.seen.add("components")
        return None
    specs = t.texts("components", ())
    for spec in specs:
        if not COMPONENT_RE.match(spec):
            raise t.err("components", f"expected 'package.module:factory' entries, got {spec!r}")
    return specs


def _http(raw: Any, ctx: _Ctx) -> HttpSettings:
    t = _Table(raw, "http", ctx)
    d = HttpSettings()
    token = t.text("token", None)
    token_file = t.path("token_file", None)
    if token is not None and token_file is not None:
        raise t.err("token_file", "set http.token or http.token_file, not both")
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise t.err("token_file", f"cannot read {token_file} ({e})") from e
        if not token:
            raise t.err("token_file", f"{token_file} is empty")
    s = HttpSettings(
        enabled=t.flag("enabled", True),
        host=t.text("host", d.host) or d.host,
        port=t.integer("port", d.port, 1, 65535, allow=(0,)) or 0,
        token=token,
        token_file=token_file,
        max_body_bytes=t.integer("max_body_bytes", d.max_body_bytes, 1024) or d.max_body_bytes,
        queue_size=t.integer("queue_size", d.queue_size, 0, 100_000) or 0,
        max_batch=t.integer("max_batch", d.max_batch, 1, 100_000) or d.max_batch,
        max_connections=t.integer("max_connections", d.max_connections, 1, 10_000) or 1,
        idle_timeout_s=t.number("idle_timeout_s", d.idle_timeout_s, 0.0) or d.idle_timeout_s,
        retry_after_s=t.integer("retry_after_s", d.retry_after_s, 1, 3600) or 1,
    )
    t.finish()
    return s


def _models(raw: Any, ctx: _Ctx) -> tuple[ModelSpec, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ctx.error("models", f"expected [[models]] tables, got {raw!r}")
    out = []
    for i, entry in enumerate(raw):
        if isinstance(entry, str):
            entry = {"bundle": entry}
        t = _Table(entry, f"models[{i}]", ctx)
        bundle = t.path("bundle", None)
        if bundle is None:
            raise t.err("bundle", "missing required key (path to a bundle directory or .tar)")
        out.append(ModelSpec(bundle=bundle, activate=t.flag("activate", False)))
        t.finish()
    return tuple(out)


def _watch(raw: Any, ctx: _Ctx) -> WatchSettings:
    t = _Table(raw, "watch", ctx)
    d = WatchSettings()
    folder = t.path("dir", None)
    enabled = t.flag("enabled", folder is not None)
    model = t.text("model", None, pattern=ID_RE)
    if enabled and folder is None:
        raise t.err("dir", "missing required key (the folder to watch)")
    if enabled and model is None:
        raise t.err("model", "missing required key (the model that classifies the files)")
    exts = tuple(e.lower() if e.startswith(".") else f".{e.lower()}"
                 for e in t.texts("extensions", d.extensions))
    s = WatchSettings(
        enabled=enabled, dir=folder, model=model,
        version=t.integer("version", None, 1),
        extensions=exts,
        jsonl=t.path("jsonl", folder / "results.jsonl" if folder else None),
        publish_mqtt=t.flag("publish_mqtt", False),
        done_dir=t.path("done_dir", folder / "done" if folder else None),
        failed_dir=t.path("failed_dir", folder / "failed" if folder else None),
        journal=t.path("journal", folder / ".journal.sqlite3" if folder else None),
        poll_interval_s=t.number("poll_interval_s", d.poll_interval_s, 0.0) or d.poll_interval_s,
        settle_s=t.number("settle_s", d.settle_s, 0.0, exclusive=False) or 0.0,
        top_k=t.integer("top_k", d.top_k, 1, 1000) or d.top_k,
        max_file_bytes=t.integer("max_file_bytes", d.max_file_bytes, 1) or d.max_file_bytes,
    )
    t.finish()
    return s


def _camera(raw: Any, ctx: _Ctx) -> CameraSettings:
    t = _Table(raw, "camera", ctx)
    d = CameraSettings()
    model = t.text("model", None, pattern=ID_RE)
    enabled = t.flag("enabled", False)
    if enabled and model is None:
        raise t.err("model", "missing required key (the model that classifies the frames)")
    device = t._take("device")
    if isinstance(device, bool) or (device is not None and not isinstance(device, (str, int))):
        raise t.err("device", f"expected a camera index, path or 'synthetic', got {device!r}")
    s = CameraSettings(
        enabled=enabled, model=model,
        device=str(device) if device is not None else d.device,
        interval_s=t.number("interval_s", d.interval_s, 0.0, exclusive=False) or 0.0,
        width=t.integer("width", None, 1, 16384), height=t.integer("height", None, 1, 16384),
        top_k=t.integer("top_k", d.top_k, 1, 1000) or d.top_k,
        jsonl=t.path("jsonl", None),
        publish_mqtt=t.flag("publish_mqtt", d.publish_mqtt),
        max_frames=t.integer("max_frames", None, 1),
    )
    t.finish()
    return s


def _mqtt_requests(raw: Any, ctx: _Ctx) -> MqttRequestsSettings:
    t = _Table(raw, "mqtt_requests", ctx)
    d = MqttRequestsSettings()
    s = MqttRequestsSettings(
        enabled=t.flag("enabled", True),
        qos=t.integer("qos", d.qos, 0, 2) or 0,
        max_payload_bytes=t.integer("max_payload_bytes", d.max_payload_bytes, 64) or 64,
        queue_size=t.integer("queue_size", d.queue_size, 1, 100_000) or 1,
        top_k=t.integer("top_k", d.top_k, 1, 1000) or d.top_k,
    )
    t.finish()
    return s


def load_config(path: Path | None, overrides: Mapping[str, Any] | None = None, *,
                env: Mapping[str, str] | None = None) -> AgentConfig:
    """Read ``path`` (or only defaults), apply env then ``overrides``, validate everything.

    ``overrides`` maps dotted keys to values (``{"http.port": 8080, "mqtt.url": "…"}``);
    ``None`` values are ignored and a ``models`` list is appended to the file's [[models]].
    ``env`` defaults to ``os.environ``. Raises ConfigError naming the source and the key.
    """
    source = str(path) if path is not None else "<defaults>"
    base = Path(path).resolve().parent if path is not None else Path.cwd()
    ctx = _Ctx(source, base)
    raw = _read_file(Path(path)) if path is not None else {}
    raw = copy.deepcopy(raw)
    _apply_env(raw, os.environ if env is None else env, ctx)
    _apply_overrides(raw, overrides or {}, ctx)
    sections: dict[str, dict[str, Any]] = {name: {} for name in FOREIGN_SECTIONS}
    for name, value in raw.items():
        if name in OWN_SECTIONS:
            continue
        if not isinstance(value, dict):
            raise ctx.error(name, f"unknown top-level key (expected a [{name}] table, "
                                  f"got {value!r})")
        sections[name] = value
    return AgentConfig(
        agent=_agent(raw.get("agent", {}), ctx),
        http=_http(raw.get("http", {}), ctx),
        models=_models(raw.get("models"), ctx),
        watch=_watch(raw.get("watch", {}), ctx),
        camera=_camera(raw.get("camera", {}), ctx),
        mqtt_requests=_mqtt_requests(raw.get("mqtt_requests", {}), ctx),
        sections=MappingProxyType(sections),
        source=source,
    )
