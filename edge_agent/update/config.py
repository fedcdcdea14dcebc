"""The ``[update]`` config section as one frozen, validated dataclass.

Example (TOML)::

    [update]
    root_file = "/etc/edge/root.json"    # the provisioned TUF root: the device's trust anchor
    dir = "/var/lib/edge/update"         # trusted metadata, staging, state.json
    groups = ["line-3"]                  # group announcements this device follows
    transport = "auto"                   # auto (MQTT chunks, else HTTP mirror) | mqtt | http
    keep_versions = 3                    # installed versions kept (active + previous always)
    probation_s = 60                     # serve the new model this long before committing

:meth:`UpdateConfig.from_section` validates once at start and raises
:class:`~edge_agent.errors.ConfigError` naming the file and ``update.<key>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from edge_agent.errors import ConfigError

TRANSPORTS = ("auto", "mqtt", "http")


@dataclass(frozen=True)
class UpdateConfig:
    """Everything the update flow needs; units are in the names."""

    root_file: Path
    dir: Path | None = None  # default: <store root>/update
    enabled: bool = True
    groups: tuple[str, ...] = ()
    transport: str = "auto"
    keep_versions: int = 3
    max_bundle_bytes: int = 512 << 20  # refuse larger targets even when signed
    min_free_bytes: int = 32 << 20  # disk that must stay free after staging + install
    max_announcement_bytes: int = 1 << 20
    chunk_window: int = 8  # MQTT chunk topics subscribed at once (flow control)
    download_timeout_s: float = 900.0  # whole download, across broker restarts
    stall_timeout_s: float = 120.0  # no new chunk/byte for this long → give up (retried later)
    http_timeout_s: float = 20.0  # per request / socket read
    http_retries: int = 5  # resumed (Range) attempts after a dropped connection
    http_ca_file: Path | None = None  # for https mirrors (default: system CAs)
    mirror_allowlist: tuple[str, ...] = ()  # URL prefixes mirrors must start with (empty: any)
    probation_s: float = 60.0
    probation_min_requests: int = 20  # fewer requests than this: judged on errors only
    probation_max_error_rate: float = 0.05
    probation_max_latency_ratio: float = 3.0  # p95 new / p95 old before the swap
    probation_latency_floor_ms: float = 50.0  # p95 under this is never "too slow"
    probation_max_crashes: int = 0  # agent restarts during probation tolerated
    retry_backoff_s: float = 30.0  # transport failure → retry the announcement after this
    source: str = field(default="", compare=False)

    @classmethod
    def from_section(cls, raw: Any, source: str) -> UpdateConfig:
        """Validate the raw ``[update]`` mapping; relative paths resolve against ``source``'s dir.

        Raises ConfigError naming ``update.<key>`` and the file.
        """
        if not isinstance(raw, dict):
            raise ConfigError("expected a table", source=source, key="update")
        known = {f.name for f in fields(cls)} - {"source"}
        for k in raw:
            if k not in known:
                raise ConfigError(f"unknown key (known: {', '.join(sorted(known))})",
                                  source=source, key=f"update.{k}")
        r = _Reader(raw, source)
        base = Path(source).parent if source and not source.startswith("<") else Path.cwd()
        root = r.path("root_file", base)
        if root is None:
            raise ConfigError("missing required key: the provisioned TUF root.json",
                              source=source, key="update.root_file")
        transport = r.str_("transport", "auto")
        if transport not in TRANSPORTS:
            raise ConfigError(f"expected one of {', '.join(TRANSPORTS)}, got {transport!r}",
                              source=source, key="update.transport")
        groups = raw.get("groups", [])
        if not isinstance(groups, list) or not all(isinstance(g, str) and g for g in groups):
            raise ConfigError("expected a list of group names", source=source,
                              key="update.groups")
        allow = raw.get("mirror_allowlist", [])
        if not isinstance(allow, list) or not all(
                isinstance(u, str) and u.startswith(("http://", "https://")) for u in allow):
            raise ConfigError("expected a list of http(s):// URL prefixes", source=source,
                              key="update.mirror_allowlist")
        rate = r.num("probation_max_error_rate", 0.05, 0.0)
        if rate > 1.0:
            raise ConfigError(f"must be within 0..1, got {rate}", source=source,
                              key="update.probation_max_error_rate")
        return cls(
            root_file=root,
            dir=r.path("dir", base),
            enabled=r.bool_("enabled", True),
            groups=tuple(groups),
            transport=transport,
            keep_versions=r.int_("keep_versions", 3, 1),
            max_bundle_bytes=r.int_("max_bundle_bytes", 512 << 20, 1),
            min_free_bytes=r.int_("min_free_bytes", 32 << 20, 0),
            max_announcement_bytes=r.int_("max_announcement_bytes", 1 << 20, 1024),
            chunk_window=r.int_("chunk_window", 8, 1),
            download_timeout_s=r.num("download_timeout_s", 900.0, 0.1),
            stall_timeout_s=r.num("stall_timeout_s", 120.0, 0.1),
            http_timeout_s=r.num("http_timeout_s", 20.0, 0.1),
            http_retries=r.int_("http_retries", 5, 0),
            http_ca_file=r.path("http_ca_file", base),
            mirror_allowlist=tuple(allow),
            probation_s=r.num("probation_s", 60.0, 0.0),
            probation_min_requests=r.int_("probation_min_requests", 20, 1),
            probation_max_error_rate=rate,
            probation_max_latency_ratio=r.num("probation_max_latency_ratio", 3.0, 1.0),
            probation_latency_floor_ms=r.num("probation_latency_floor_ms", 50.0, 0.0),
            probation_max_crashes=r.int_("probation_max_crashes", 0, 0),
            retry_backoff_s=r.num("retry_backoff_s", 30.0, 0.0),
            source=source,
        )


class _Reader:
    """Typed getters that raise ConfigError naming ``update.<key>``."""

    def __init__(self, raw: dict[str, Any], source: str) -> None:
        self.raw = raw
        self.source = source

    def _bad(self, key: str, expected: str) -> ConfigError:
        v = self.raw[key]
        return ConfigError(f"expected {expected}, got {type(v).__name__} {v!r}",
                           source=self.source, key=f"update.{key}")

    def str_(self, key: str, default: str) -> str:
        v = self.raw.get(key, default)
        if not isinstance(v, str):
            raise self._bad(key, "a string")
        return v

    def bool_(self, key: str, default: bool) -> bool:
        v = self.raw.get(key, default)
        if not isinstance(v, bool):
            raise self._bad(key, "true or false")
        return v

    def path(self, key: str, base: Path) -> Path | None:
        v = self.raw.get(key)
        if v is None:
            return None
        if not isinstance(v, str) or not v:
            raise self._bad(key, "a path")
        p = Path(v).expanduser()
        return p if p.is_absolute() else base / p

    def int_(self, key: str, default: int, lo: int) -> int:
        v = self.raw.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int):
            raise self._bad(key, "an integer")
        if v < lo:
            raise ConfigError(f"must be >= {lo}, got {v}", source=self.source,
                              key=f"update.{key}")
        return v

    def num(self, key: str, default: float, lo: float) -> float:
        v = self.raw.get(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self._bad(key, "a number")
        if v < lo:
            raise ConfigError(f"must be >= {lo}, got {v}", source=self.source,
                              key=f"update.{key}")
        return float(v)
