"""The ``[mqtt]`` config section as one frozen, validated dataclass.

Example (TOML)::

    [mqtt]
    url = "mqtts://broker.example:8883"   # mqtt:// (1883) or mqtts:// (8883)
    # or a list, tried in order; the client fails over to the next when one is unreachable:
    # brokers = ["mqtt://node-a:1883", "mqtt://node-b:1883"]
    ca_file = "/etc/edge/ca.pem"           # mqtts: CA that signed the broker (default: system)
    cert_file = "/etc/edge/device.pem"     # optional client certificate (mTLS) ...
    key_file = "/etc/edge/device.key"      # ... and its key
    username = "pi-17"
    password_file = "/etc/edge/mqtt.pass"  # or password = "..." (redacted in 'get config')
    keepalive_s = 30
    protocol = "auto"                      # auto (MQTT 5, falls back to 3.1.1) | 5 | 3.1.1
    outbox_max_messages = 20000            # store-and-forward cap (oldest dropped past it)

:meth:`MqttConfig.parse` is called by :func:`edge_agent.config.load_config` (validated once
at start, through the one config reader) and raises :class:`~edge_agent.errors.ConfigError`
naming the file or environment variable and the key; :meth:`MqttConfig.from_section` /
:meth:`MqttConfig.from_url` validate a section on its own for fleet tools and tests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from edge_agent.config_reader import Table, section
from edge_agent.errors import ConfigError

if TYPE_CHECKING:
    import ssl

SEGMENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
PROTOCOLS = ("auto", "5", "3.1.1")
MAX_BROKERS = 16


@dataclass(frozen=True)
class Broker:
    """One broker address of ``[mqtt] url`` / ``brokers`` (credentials live in MqttConfig)."""

    host: str
    port: int
    tls: bool = False

    @property
    def url(self) -> str:
        """``mqtt[s]://host:port`` (no credentials: safe to log)."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


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
    # every broker to try, in order; () means just (host, port, tls). host/port/tls are
    # always the broker a connection attempt is for (see :meth:`at`).
    brokers: tuple[Broker, ...] = ()

    @property
    def url(self) -> str:
        """The broker URL without credentials (safe to log)."""
        return Broker(self.host, self.port, self.tls).url

    @property
    def broker_list(self) -> tuple[Broker, ...]:
        """Every broker to try, in order (at least one)."""
        return self.brokers or (Broker(self.host, self.port, self.tls),)

    @property
    def urls(self) -> str:
        """All broker URLs, comma separated (for logs and errors)."""
        return ", ".join(b.url for b in self.broker_list)

    def at(self, index: int) -> MqttConfig:
        """This config aimed at broker ``index`` (modulo the list): one connection attempt."""
        b = self.broker_list[index % len(self.broker_list)]
        return replace(self, host=b.host, port=b.port, tls=b.tls)

    @classmethod
    def from_url(cls, url: str, **kw: Any) -> MqttConfig:
        """Shortcut for tools and tests: ``MqttConfig.from_url("mqtt://h:1883", keepalive_s=5)``."""
        return cls.from_section({"url": url, **kw}, "<args>")

    @classmethod
    def from_section(cls, raw: dict[str, Any], source: str) -> MqttConfig:
        """Validate a raw ``[mqtt]`` mapping on its own (fleet tools). Raises ConfigError."""
        cfg = cls.parse(section(raw, "mqtt", source))
        if cfg is None:
            raise ConfigError("missing required key (a broker URL like mqtt://host:1883)",
                              source=source, key="mqtt.url")
        return cfg

    @classmethod
    def parse(cls, t: Table) -> MqttConfig | None:
        """Validate the ``[mqtt]`` table; None when it has no ``url`` (MQTT off).

        Raises ConfigError naming ``mqtt.<key>`` and the file or environment variable.
        """
        url = t.opt_text("url")
        urls = _url_list(t)
        username = t.opt_text("username")
        password = t.take("password")
        if password is not None and not isinstance(password, str):
            raise t.err("password", f"expected a string, got {type(password).__name__}")
        pw_file = t.path("password_file")
        ca, cert, key = t.path("ca_file"), t.path("cert_file"), t.path("key_file")
        client_id = t.opt_text("client_id")
        protocol = t.text("protocol", "auto", choices=PROTOCOLS)
        prefix = t.text("topic_prefix", "edge", pattern=SEGMENT_RE)
        d = cls
        kw: dict[str, Any] = dict(
            keepalive_s=t.integer("keepalive_s", d.keepalive_s, 5, 65535),
            connect_timeout_s=t.number("connect_timeout_s", d.connect_timeout_s, 0.1,
                                       exclusive=False),
            reconnect_min_s=t.number("reconnect_min_s", d.reconnect_min_s, 0.01,
                                     exclusive=False),
            reconnect_max_s=t.number("reconnect_max_s", d.reconnect_max_s, 0.01,
                                     exclusive=False),
            max_incoming_bytes=t.integer("max_incoming_bytes", d.max_incoming_bytes, 1024),
            max_inflight=t.integer("max_inflight", d.max_inflight, 1, 65535),
            outbox_path=t.path("outbox_path"),
            outbox_max_messages=t.integer("outbox_max_messages", d.outbox_max_messages, 1),
            outbox_max_bytes=t.integer("outbox_max_bytes", d.outbox_max_bytes, 1024),
        )
        t.finish()
        if url is not None and urls:
            raise t.err("brokers", "give either mqtt.url or mqtt.brokers, not both")
        if url is None and not urls:
            return None
        ukey = "url" if url is not None else "brokers"
        parsed = [_parse_url(u, t, ukey) for u in ([url] if url is not None else urls)]
        creds = {(p[3], p[4]) for p in parsed if p[3] is not None}
        if len(creds) > 1:
            raise t.err(ukey, "the broker URLs carry different user names or passwords")
        if creds:
            url_user, url_pass = creds.pop()
            if username is not None:
                raise t.err(ukey, "user name given both in the URL and as mqtt.username")
            username, password = url_user, url_pass if password is None else password
        brokers = tuple(Broker(h, p, tl) for h, p, tl, _u, _p in parsed)
        if len(set(brokers)) != len(brokers):
            raise t.err(ukey, "the same broker is listed twice")
        host, port, tls = brokers[0].host, brokers[0].port, brokers[0].tls
        any_tls = any(b.tls for b in brokers)
        if pw_file is not None:
            if password is not None:
                raise t.err("password_file", "give either password or password_file, not both")
            password = t.read_secret("password_file", pw_file)
        if password is not None and username is None:
            raise t.err("password", "a password needs a username")
        if not any_tls:
            for k, v in (("ca_file", ca), ("cert_file", cert), ("key_file", key)):
                if v is not None:
                    raise t.err(k, "TLS files need an mqtts:// URL")
        if (cert is None) != (key is None):
            raise t.err("cert_file" if cert is None else "key_file",
                        "a client certificate needs both cert_file and key_file")
        for k, v in (("ca_file", ca), ("cert_file", cert), ("key_file", key)):
            if v is not None and not v.is_file():
                raise t.err(k, f"no such file: {v}")
        if client_id is not None and not 1 <= len(client_id) <= 128:
            raise t.err("client_id", "must be 1..128 characters")
        cfg = cls(host=host, port=port, tls=tls, ca_file=ca, cert_file=cert, key_file=key,
                  username=username, password=password, client_id=client_id,
                  protocol=protocol, topic_prefix=prefix, source=t.source,
                  brokers=brokers if len(brokers) > 1 else (), **kw)
        if cfg.reconnect_max_s < cfg.reconnect_min_s:
            raise t.err("reconnect_max_s", f"must be >= reconnect_min_s "
                                           f"({cfg.reconnect_min_s:g})")
        if any_tls:
            cfg.ssl_context()  # fail at start, naming the key, not at the first connect
        return cfg

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context: verify the broker (CA file or system store) and host name.

        Raises ConfigError naming the key when a CA, certificate or key cannot be loaded.
        """
        import ssl  # here: an agent without TLS never loads libssl

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


def _url_list(t: Table) -> list[str]:
    """``mqtt.brokers``: a non-empty list of URL strings, or [] when absent."""
    raw = t.take("brokers")
    if raw is None:
        return []
    if not isinstance(raw, list) or not raw or not all(isinstance(u, str) and u for u in raw):
        raise t.err("brokers", f"expected a non-empty list of broker URLs like "
                               f"[\"mqtt://a:1883\", \"mqtt://b:1883\"], got {raw!r}")
    if len(raw) > MAX_BROKERS:
        raise t.err("brokers", f"at most {MAX_BROKERS} brokers, got {len(raw)}")
    return list(raw)


def _parse_url(url: str, t: Table, key: str = "url"
               ) -> tuple[str, int, bool, str | None, str | None]:
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError as e:
        raise t.err(key, f"not a broker URL: {url!r} ({e})") from e
    if u.scheme not in ("mqtt", "mqtts"):
        raise t.err(key, f"expected mqtt:// or mqtts://, got {url!r}")
    if not u.hostname:
        raise t.err(key, f"no host in {url!r}")
    if u.path not in ("", "/") or u.query or u.fragment:
        raise t.err(key, f"a broker URL has no path or query, got {url!r}")
    tls = u.scheme == "mqtts"
    user = unquote(u.username) if u.username else None
    pw = unquote(u.password) if u.password is not None else None
    return u.hostname, port or (8883 if tls else 1883), tls, user, pw
