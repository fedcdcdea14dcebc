"""The one reader for every configuration table: raw layers in, typed values out.

Every section of ``agent.toml`` (``[agent]``, ``[http]``, ``[mqtt]``, ``[telemetry]``,
``[update]``, …) is read through :class:`Table`, so every error has the same wording and
names where the value came from — the file, the environment variable or the command line —
and the dotted key::

    agent.toml: http.port: expected int 1..65535, got 'x'
    env EDGE_AGENT__MQTT__KEEPALIVE_S: mqtt.keepalive_s: expected int 5..65535, got 1

:class:`Origins` remembers, per dotted key, which layer set it (see
:func:`edge_agent.config.load_config` for the precedence), and resolves relative paths:
against the config file's directory for values from the file, against the working
directory for values from env or flags.

Pure: no file is read here except by :func:`read_toml`. Raises
:class:`~edge_agent.errors.ConfigError` (and nothing else).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from edge_agent.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (JetPack 6)
    import tomli as tomllib

T = TypeVar("T")
ENV_PREFIX = "EDGE_AGENT__"
DEFAULTS = "<defaults>"
COMMAND_LINE = "command line"


class Origins:
    """Where each raw value came from, so errors can name the file, env var or flag."""

    def __init__(self, source: str, base_dir: Path | None = None, *,
                 error: type[ConfigError] = ConfigError) -> None:
        self.source = source
        self.error_type = error  # ProfileError for device profiles
        if base_dir is None:
            src = Path(source)
            base_dir = src.parent if src.suffix == ".toml" else Path.cwd()
        self.base_dir = base_dir
        self.origin: dict[str, str] = {}  # dotted key → "env NAME" / "command line"

    def where(self, key: str) -> str:
        """The layer that set ``key`` or its closest parent table; else the file."""
        k = key
        while True:
            if k in self.origin:
                return self.origin[k]
            shorter = re.sub(r"(\.[^.\[]*|\[\d+\])$", "", k)
            if shorter == k:
                return self.source
            k = shorter

    def error(self, key: str, message: str) -> ConfigError:
        return self.error_type(message, source=self.where(key), key=key)

    def resolve(self, key: str, p: Path) -> Path:
        p = p.expanduser()
        if p.is_absolute():
            return p
        from_file = self.where(key) == self.source and not self.source.startswith("<")
        return (self.base_dir / p) if from_file else (Path.cwd() / p)

    def set(self, raw: dict[str, Any], parts: list[str], value: Any, label: str) -> None:
        """Set ``raw[parts…] = value`` (creating tables) and remember ``label`` for it."""
        node = raw
        for i, p in enumerate(parts[:-1]):
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"cannot set {'.'.join(parts)}: "
                                  f"{'.'.join(parts[:i + 1])} is not a table", source=label)
            node = nxt
        node[parts[-1]] = value
        self.origin[".".join(parts)] = label

    def apply_env(self, raw: dict[str, Any], env: Mapping[str, str]) -> None:
        """``EDGE_AGENT__<SECTION>__<KEY>=value`` → ``raw[section][key]`` (a TOML value)."""
        for name in sorted(env):
            if not name.startswith(ENV_PREFIX):
                continue
            parts = [p.lower() for p in name[len(ENV_PREFIX):].split("__")]
            if not all(parts):
                raise ConfigError(f"expected {ENV_PREFIX}<SECTION>__<KEY>, got {name!r}",
                                  source=f"env {name}")
            self.set(raw, parts, parse_env_value(env[name]), f"env {name}")


def parse_env_value(text: str) -> Any:
    """A TOML value (``8080``, ``true``, ``["a"]``, ``"x"``), else the text itself."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a UTF-8 TOML file. Raises ConfigError naming the file."""
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


class Table:
    """Typed reads from one raw table; :meth:`finish` rejects keys nobody read (typos).

    ``prefix`` is the table's dotted name (``mqtt``, ``models[2]``); every error names
    ``<prefix>.<key>`` and the layer the value came from.
    """

    def __init__(self, raw: Any, prefix: str, origins: Origins) -> None:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise origins.error(prefix, f"expected a table, got {type(raw).__name__} {raw!r}")
        self.raw: dict[str, Any] = raw
        self.prefix = prefix
        self.origins = origins
        self.seen: set[str] = set()

    @property
    def source(self) -> str:
        """The file (or ``<defaults>``/``<args>``) this table was loaded from."""
        return self.origins.source

    def key(self, k: str) -> str:
        return f"{self.prefix}.{k}" if self.prefix else k

    def take(self, k: str) -> Any:
        """The raw value (None when absent), marked as known."""
        self.seen.add(k)
        return self.raw.get(k)

    def present(self, k: str) -> bool:
        return self.raw.get(k) is not None

    def err(self, k: str, msg: str) -> ConfigError:
        return self.origins.error(self.key(k), msg)

    def integer(self, k: str, default: int, lo: int, hi: int | None = None,
                *, allow: tuple[int, ...] = ()) -> int:
        v = self.opt_integer(k, lo, hi, allow=allow)
        return default if v is None else v

    def opt_integer(self, k: str, lo: int, hi: int | None = None,
                    *, allow: tuple[int, ...] = ()) -> int | None:
        v = self.take(k)
        if v is None:
            return None
        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        if isinstance(v, bool) or not isinstance(v, int) or (
                v not in allow and (v < lo or (hi is not None and v > hi))):
            raise self.err(k, f"expected int {rng}, got {v!r}")
        return v

    def number(self, k: str, default: float, lo: float, hi: float | None = None, *,
               exclusive: bool = True) -> float:
        v = self.take(k)
        if v is None:
            return default
        op = ">" if exclusive else ">="
        want = f"a number {op} {lo:g}" + (f" and <= {hi:g}" if hi is not None else "")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:  # NaN
            raise self.err(k, f"expected {want}, got {v!r}")
        if ((v <= lo) if exclusive else (v < lo)) or (hi is not None and v > hi):
            raise self.err(k, f"expected {want}, got {v!r}")
        return float(v)

    def opt_number(self, k: str, lo: float, *, exclusive: bool = True) -> float | None:
        return None if not self.present(k) else self.number(k, 0.0, lo, exclusive=exclusive)

    def flag(self, k: str, default: bool) -> bool:
        v = self.take(k)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise self.err(k, f"expected true or false, got {v!r}")
        return v

    def text(self, k: str, default: str, *, choices: tuple[str, ...] = (),
             pattern: re.Pattern[str] | None = None) -> str:
        v = self.opt_text(k, choices=choices, pattern=pattern)
        return default if v is None else v

    def opt_text(self, k: str, *, choices: tuple[str, ...] = (),
                 pattern: re.Pattern[str] | None = None) -> str | None:
        v = self.take(k)
        if v is None:
            return None
        if isinstance(v, int) and not isinstance(v, bool) and (pattern is not None
                                                               or str(v) in choices):
            v = str(v)  # device_id = 42, protocol = 5 from an env var
        if not isinstance(v, str) or not v:
            raise self.err(k, f"expected a non-empty string, got {v!r}")
        if choices and v not in choices:
            raise self.err(k, f"expected one of {', '.join(choices)}, got {v!r}")
        if pattern is not None and not pattern.match(v):
            raise self.err(k, f"expected a name matching {pattern.pattern}, got {v!r}")
        return v

    def path(self, k: str) -> Path | None:
        v = self.take(k)
        if v is None:
            return None
        if not isinstance(v, str) or not v:
            raise self.err(k, f"expected a path string, got {v!r}")
        return self.origins.resolve(self.key(k), Path(v))

    def texts(self, k: str, default: tuple[str, ...] = (), *,
              pattern: re.Pattern[str] | None = None, what: str = "strings",
              prefixes: tuple[str, ...] = ()) -> tuple[str, ...]:
        v = self.take(k)
        if v is None:
            return default
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
            raise self.err(k, f"expected a list of {what}, got {v!r}")
        for x in v:
            if pattern is not None and not pattern.match(x):
                raise self.err(k, f"expected {what} matching {pattern.pattern}, got {x!r}")
            if prefixes and not x.startswith(prefixes):
                raise self.err(k, f"expected {what} starting with {' or '.join(prefixes)}, "
                                  f"got {x!r}")
        return tuple(v)

    def read_secret(self, k: str, path: Path) -> str:
        """The stripped text of a ``*_file`` key's file (a token, a password)."""
        try:
            text = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise self.err(k, f"cannot read {path} ({getattr(e, 'strerror', None) or e})") from e
        if not text:
            raise self.err(k, f"{path} is empty")
        return text

    def required(self, k: str, value: T | None) -> T:
        """``value`` (a typed read of ``k``), or "missing required key" naming ``k``."""
        if value is None:
            raise self.err(k, "missing required key")
        return value

    def finish(self) -> None:
        for k in self.raw:
            if k not in self.seen:
                known = ", ".join(sorted(self.seen))
                raise self.err(k, f"unknown key (known: {known})")


def section(raw: Any, prefix: str, source: str) -> Table:
    """A table read on its own (fleet tools, tests): ``section({"url": u}, "mqtt", "<args>")``."""
    return Table(raw, prefix, Origins(source))
