"""The ``[update]`` config section as one frozen, validated dataclass.

Example (TOML)::

    [update]
    root_file = "/etc/edge/root.json"    # the provisioned TUF root: the device's trust anchor
    dir = "/var/lib/edge/update"         # trusted metadata, staging, state.json
    groups = ["line-3"]                  # group announcements this device follows
    transport = "auto"                   # auto (MQTT chunks, else HTTP mirror) | mqtt | http
    download_timeout_s = 900             # all downloads of one attempt, abandoned mid-read
    mirror_allowlist = ["https://updates.example/"]  # default []: only signed mirrors
    keep_versions = 3                    # installed versions kept (active + previous always)
    probation_s = 60                     # serve the new model this long before committing
    check_timeout_s = 60                 # candidate check in a child: time limit
    check_memory_mb = 0                  # … and memory limit (0: profile memory_budget_mb)

:meth:`UpdateConfig.parse` is called by :func:`edge_agent.config.load_config` (validated
once at start, through the one config reader) and raises
:class:`~edge_agent.errors.ConfigError` naming the file or environment variable and
``update.<key>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.config_reader import Table, section
from edge_agent.errors import ConfigError

TRANSPORTS = ("auto", "mqtt", "http")
GROUP_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # an MQTT topic level


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
    # no chunk for this long → ask the fleet tools for them (edge/<device>/update/want),
    # again every chunk_want_after_s; for clusters whose retained index is per node
    chunk_want_after_s: float = 2.0
    # every download of one attempt (metadata + target, inline/MQTT/HTTP), enforced inside
    # the read loops: a dripping source is abandoned mid-read (update.failed, "deadline")
    download_timeout_s: float = 900.0
    metadata_timeout_s: float = 60.0  # each metadata file, within download_timeout_s
    stall_timeout_s: float = 120.0  # no new chunk for this long → give up (retried later)
    http_timeout_s: float = 20.0  # per socket operation: connect, TLS handshake, one receive
    http_retries: int = 5  # resumed (Range) attempts after a dropped connection
    http_ca_file: Path | None = None  # for https mirrors (default: system CAs)
    # URL prefixes (path boundary) of mirrors this device trusts for metadata and targets;
    # empty: only mirrors the target's signed entry names (never the announcement's own)
    mirror_allowlist: tuple[str, ...] = ()
    probation_s: float = 60.0
    probation_min_requests: int = 20  # judged requests before errors may fail probation
    probation_min_clients: int = 1  # distinct clients among them (REST peer address, source)
    probation_max_error_rate: float = 0.05
    probation_max_latency_ratio: float = 3.0  # median new/old of interleaved paired timings
    probation_latency_floor_ms: float = 50.0  # paired new p95 under this is never "too slow"
    probation_max_crashes: int = 0  # agent restarts during probation tolerated
    retry_backoff_s: float = 30.0  # transport failure → retry the announcement after this,
    retry_backoff_max_s: float = 3600.0  # doubling per failure of the same one, up to this
    # the candidate check (test-load + golden vectors) runs in a child process with limits
    check_timeout_s: float = 60.0  # wall clock for the child: start, load, golden vectors
    check_memory_mb: int = 0  # the child's RLIMIT_DATA; 0: the profile's memory_budget_mb
    # shadow releases (docs/update.md#shadow-evaluation): copies of live requests queued
    # for the candidate (drop-newest beyond), the longest a shadow may run, one answer's limit
    shadow_queue: int = 32
    shadow_timeout_s: float = 3600.0
    shadow_invoke_timeout_s: float = 10.0
    source: str = field(default="", compare=False)

    @classmethod
    def from_section(cls, raw: Any, source: str) -> UpdateConfig:
        """Validate a raw ``[update]`` mapping on its own (tests, tools). Raises ConfigError."""
        cfg = cls.parse(section(raw, "update", source))
        if cfg is None:
            raise ConfigError("missing required key: the provisioned TUF root.json",
                              source=source, key="update.root_file")
        return cfg

    @classmethod
    def parse(cls, t: Table) -> UpdateConfig | None:
        """Validate the ``[update]`` table; None when the section is empty (updates off).

        Relative paths resolve against the config file's directory (or the working directory
        for env/flag values). Raises ConfigError naming ``update.<key>`` and where it was set.
        """
        empty = not t.raw
        d = cls
        root = t.path("root_file")
        kw: dict[str, Any] = dict(
            dir=t.path("dir"),
            enabled=t.flag("enabled", d.enabled),
            groups=t.texts("groups", (), pattern=GROUP_RE, what="group names"),
            transport=t.text("transport", d.transport, choices=TRANSPORTS),
            keep_versions=t.integer("keep_versions", d.keep_versions, 1),
            max_bundle_bytes=t.integer("max_bundle_bytes", d.max_bundle_bytes, 1),
            min_free_bytes=t.integer("min_free_bytes", d.min_free_bytes, 0),
            max_announcement_bytes=t.integer("max_announcement_bytes",
                                             d.max_announcement_bytes, 1024),
            chunk_window=t.integer("chunk_window", d.chunk_window, 1),
            chunk_want_after_s=t.number("chunk_want_after_s", d.chunk_want_after_s, 0.1,
                                        exclusive=False),
            download_timeout_s=t.number("download_timeout_s", d.download_timeout_s, 0.1,
                                        exclusive=False),
            metadata_timeout_s=t.number("metadata_timeout_s", d.metadata_timeout_s, 0.1,
                                        exclusive=False),
            stall_timeout_s=t.number("stall_timeout_s", d.stall_timeout_s, 0.1,
                                     exclusive=False),
            http_timeout_s=t.number("http_timeout_s", d.http_timeout_s, 0.1, exclusive=False),
            http_retries=t.integer("http_retries", d.http_retries, 0),
            http_ca_file=t.path("http_ca_file"),
            mirror_allowlist=t.texts("mirror_allowlist", (), what="URL prefixes",
                                     prefixes=("http://", "https://")),
            probation_s=t.number("probation_s", d.probation_s, 0.0, exclusive=False),
            probation_min_requests=t.integer("probation_min_requests",
                                             d.probation_min_requests, 1),
            probation_min_clients=t.integer("probation_min_clients", d.probation_min_clients, 1),
            probation_max_error_rate=t.number("probation_max_error_rate",
                                              d.probation_max_error_rate, 0.0, 1.0,
                                              exclusive=False),
            probation_max_latency_ratio=t.number("probation_max_latency_ratio",
                                                 d.probation_max_latency_ratio, 1.0,
                                                 exclusive=False),
            probation_latency_floor_ms=t.number("probation_latency_floor_ms",
                                                d.probation_latency_floor_ms, 0.0,
                                                exclusive=False),
            probation_max_crashes=t.integer("probation_max_crashes", d.probation_max_crashes, 0),
            retry_backoff_s=t.number("retry_backoff_s", d.retry_backoff_s, 0.0, exclusive=False),
            retry_backoff_max_s=t.number("retry_backoff_max_s", d.retry_backoff_max_s, 0.0,
                                         exclusive=False),
        )
        kw.update(  # the candidate check's limits (edge_agent.update.check)
            check_timeout_s=t.number("check_timeout_s", d.check_timeout_s, 0.5, 3600.0,
                                     exclusive=False),
            check_memory_mb=t.integer("check_memory_mb", d.check_memory_mb, 64, allow=(0,)),
        )
        kw.update(  # shadow evaluation (edge_agent.shadow)
            shadow_queue=t.integer("shadow_queue", d.shadow_queue, 1, 4096),
            shadow_timeout_s=t.number("shadow_timeout_s", d.shadow_timeout_s, 1.0, 7 * 86400.0,
                                      exclusive=False),
            shadow_invoke_timeout_s=t.number("shadow_invoke_timeout_s",
                                             d.shadow_invoke_timeout_s, 0.1, 600.0,
                                             exclusive=False),
        )
        t.finish()
        if empty:
            return None
        if root is None:
            raise t.err("root_file", "missing required key: the provisioned TUF root.json")
        return cls(root_file=root, source=t.source, **kw)
