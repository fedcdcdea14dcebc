"""The ``[mqtt]`` config section as one frozen, validated dataclass.

Example (TOML)::

    [mqtt]
    url = "mqtts://broker.example:8883"   # mqtt:// (1883) or mqtts:// (8883)
    ca_file = "/etc/edge/ca.pem"           # mqtts: CA that signed the broker (default: system)
    cert_file = "/etc/edge/device.pem"     # optional client certificate (mTLS) ...
    key_file = "/etc/edge/device.key"      # ... and its key
    username = "pi-17"
    password_file = "/etc/edge/mqtt.pass"  # or password = "..." (redacted in 'get config')
    keepalive_s = 30
    protocol = "auto"                      # auto (MQTT 5, falls back to 3.1.1) | 5 | 3.1.1
    outbox_max_messages = 20000            # store-and-forward cap (oldest dropped past it)

:func:`MqttConfig.from_section` validates once at start and raises
:class:`~edge_agent.errors.ConfigError` naming the file and the key.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from edge_agent.errors import ConfigError

SEGMENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
PROTOCOLS = ("auto", "5", "3.1.1")


@dataclass(frozen=True)
class MqttConfig:
    """Everything needed to open (and keep open) one MQTT connection."""

    host: str
    port: int
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    client_id: str | None = None  # default: the device id
    keepalive_s: int = 30
    protocol: str = "auto"
    connect_timeout_s: float = 10.0
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    max_incoming_bytes: int = 1 << 20  # larger incoming payloads are refused before parsing
    max_inflight: int = 50  # unacknowledged QoS 1 publishes on the wire
    topic_prefix: str = "edge"
    outbox_path: Path | None = None  # default: <store root>/telemetry/outbox.sqlite3
    outbox_max_messages: int = 20_000
    outbox_max_bytes: int = 64 << 20
    source: str = field(default="", compare=False)

    @property
    def url(self) -> str:
        """The broker URL without credentials (safe to log)."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    @classmethod
    def from_url(cls, url: str, **kw: Any) -> MqttConfig:
        """Shortcut for tools and tests: ``MqttConfig.from_url("mqtt://h:1883", keepalive_s=5)``."""
        return cls.from_section({"url": url, **kw}, "<args>")

    @classmethod
    def from_section(cls, raw: dict[str, Any], source: str) -> MqttConfig:
        """Validate the raw ``[mqtt]`` mapping. Raises ConfigError naming ``mqtt.<key>``."""
        if not isinstance(raw, dict):
            raise ConfigError("expected a table", source=source, key="mqtt")
        known = {f.name for f in fields(cls)} - {"host", "port", "tls", "source"}
        known |= {"url", "password_file"}
        for k in raw:
            if k not in known:
                raise ConfigError(f"unknown key (known: {', '.join(sorted(known))})",
                                  source=source, key=f"mqtt.{k}")
        r = _Reader(raw, source)
        url = r.str_("url")
        if not url:
            raise ConfigError("missing required key (a broker URL like mqtt://host:1883)",
                              source=source, key="mqtt.url")
        host, port, tls, url_user, url_pass = _parse_url(url, source)
        username = r.opt_str("username")
        password = r.opt_str("password")
        pw_file = r.opt_path("password_file")
        if url_user is not None:
            if username is not None:
                raise ConfigError("user name given both in the URL and as mqtt.username",
                                  source=source, key="mqtt.url")
            username, password = url_user, url_pass if password is None else password
        if pw_file is not None:
            if password is not None:
                raise ConfigError("give either password or password_file, not both",
                                  source=source, key="mqtt.password_file")
            try:
                password = pw_file.read_text(encoding="utf-8").strip()
            except OSError as e:
                raise ConfigError(f"cannot read {pw_file}: {e.strerror}", source=source,
                                  key="mqtt.password_file") from e
        if password is not None and username is None:
            raise ConfigError("a password needs a username", source=source, key="mqtt.password")
        ca, cert, key = r.opt_path("ca_file"), r.opt_path("cert_file"), r.opt_path("key_file")
        if not tls:
            for k, v in (("ca_file", ca), ("cert_file", cert), ("key_file", key)):
                if v is not None:
                    raise ConfigError("TLS files need an mqtts:// URL", source=source,
                                      key=f"mqtt.{k}")
        if (cert is None) != (key is None):
            raise ConfigError("a client certificate needs both cert_file and key_file",
                              source=source, key="mqtt.cert_file" if cert is None
                              else "mqtt.key_file")
        for k, v in (("ca_file", ca), ("cert_file", cert), ("key_file", key)):
            if v is not None and not v.is_file():
                raise ConfigError(f"no such file: {v}", source=source, key=f"mqtt.{k}")
        client_id = r.opt_str("client_id")
        if client_id is not None and not 1 <= len(client_id) <= 128:
            raise ConfigError("must be 1..128 characters", source=source, key="mqtt.client_id")
        protocol = str(raw.get("protocol", "auto"))
        if protocol not in PROTOCOLS:
            raise ConfigError(f"expected one of {', '.join(PROTOCOLS)}, got {protocol!r}",
                              source=source, key="mqtt.protocol")
        prefix = r.str_("topic_prefix", "edge")
        if not SEGMENT_RE.match(prefix):
            raise ConfigError(f"must match {SEGMENT_RE.pattern}", source=source,
                              key="mqtt.topic_prefix")
        cfg = cls(
            host=host, port=port, tls=tls, ca_file=ca, cert_file=cert, key_file=key,
            username=username, password=password, client_id=client_id,
            keepalive_s=r.int_("keepalive_s", 30, lo=5, hi=65535),
            protocol=protocol,
            connect_timeout_s=r.num("connect_timeout_s", 10.0, lo=0.1),
            reconnect_min_s=r.num("reconnect_min_s", 0.5, lo=0.01),
            reconnect_max_s=r.num("reconnect_max_s", 30.0, lo=0.01),
            max_incoming_bytes=r.int_("max_incoming_bytes", 1 << 20, lo=1024),
            max_inflight=r.int_("max_inflight", 50, lo=1, hi=65535),
            topic_prefix=prefix,
            outbox_path=r.opt_path("outbox_path"),
            outbox_max_messages=r.int_("outbox_max_messages", 20_000, lo=1),
            outbox_max_bytes=r.int_("outbox_max_bytes", 64 << 20, lo=1024),
            source=source)
        if cfg.reconnect_max_s < cfg.reconnect_min_s:
            raise ConfigError(f"must be >= reconnect_min_s ({cfg.reconnect_min_s:g})",
                              source=source, key="mqtt.reconnect_max_s")
        if cfg.tls:
            cfg.ssl_context()  # fail at start, naming the key, not at the first connect
        return cfg

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context: verify the broker (CA file or system store) and host name.

        Raises ConfigError naming the key when a CA, certificate or key cannot be loaded.
        """
        try:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                             cafile=str(self.ca_file) if self.ca_file else None)
        except (ssl.SSLError, OSError) as e:
            raise ConfigError(f"cannot load CA certificates from {self.ca_file}: {e}",
                              source=self.source, key="mqtt.ca_file") from e
        if self.cert_file and self.key_file:
            try:
                ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
            except (ssl.SSLError, OSError) as e:
                raise ConfigError(f"cannot load client certificate {self.cert_file} with key "
                                  f"{self.key_file}: {e}", source=self.source,
                                  key="mqtt.cert_file") from e
        return ctx


def _parse_url(url: str, source: str) -> tuple[str, int, bool, str | None, str | None]:
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError as e:
        raise ConfigError(f"not a broker URL: {url!r} ({e})", source=source, key="mqtt.url") from e
    if u.scheme not in ("mqtt", "mqtts"):
        raise ConfigError(f"expected mqtt:// or mqtts://, got {url!r}", source=source,
                          key="mqtt.url")
    if not u.hostname:
        raise ConfigError(f"no host in {url!r}", source=source, key="mqtt.url")
    if u.path not in ("", "/") or u.query or u.fragment:
        raise ConfigError(f"a broker URL has no path or query, got {url!r}", source=source,
                          key="mqtt.url")
    tls = u.scheme == "mqtts"
    user = unquote(u.username) if u.username else None
    pw = unquote(u.password) if u.password is not None else None
    return u.hostname, port or (8883 if tls else 1883), tls, user, pw


class _Reader:
    """Typed getters that name ``mqtt.<key>`` in every error."""

    def __init__(self, raw: dict[str, Any], source: str) -> None:
        self.raw, self.source = raw, source
        src = Path(source)
        self.base_dir = src.parent if src.suffix == ".toml" else Path.cwd()

    def _bad(self, key: str, expected: str) -> ConfigError:
        v = self.raw[key]
        return ConfigError(f"expected {expected}, got {type(v).__name__} {v!r}",
                           source=self.source, key=f"mqtt.{key}")

    def str_(self, key: str, default: str = "") -> str:
        v = self.raw.get(key, default)
        if not isinstance(v, str):
            raise self._bad(key, "a string")
        return v

    def opt_str(self, key: str) -> str | None:
        return None if self.raw.get(key) is None else self.str_(key)

    def opt_path(self, key: str) -> Path | None:
        v = self.opt_str(key)
        if not v:
            return None
        p = Path(v).expanduser()
        return p if p.is_absolute() else self.base_dir / p  # relative to the config file

    def int_(self, key: str, default: int, lo: int, hi: int | None = None) -> int:
        v = self.raw.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int):
            raise self._bad(key, "an integer")
        if v < lo or (hi is not None and v > hi):
            raise ConfigError(f"must be within {lo}..{hi if hi is not None else '∞'}, got {v}",
                              source=self.source, key=f"mqtt.{key}")
        return v

    def num(self, key: str, default: float, lo: float) -> float:
        v = self.raw.get(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self._bad(key, "a number")
        if v < lo:
            raise ConfigError(f"must be >= {lo:g}, got {v}", source=self.source,
                              key=f"mqtt.{key}")
        return float(v)
