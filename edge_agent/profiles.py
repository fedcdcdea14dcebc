"""Device profiles: one TOML file per board, loaded into one validated dataclass.

Profiles are searched, in order, in ``$EDGE_PROFILES_DIR`` (if set), in the
``device_profiles`` folder shipped inside the installed wheel, and in the source
tree's ``device_profiles/``. Every validation error names the file and the key.

Raises :class:`~edge_agent.errors.ProfileError`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.errors import ProfileError
from edge_agent.protocol.kinds import RUNTIME_NAMES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (JetPack 6)
    import tomli as tomllib

ARCHES = ("aarch64", "armv7l", "x86_64")
DELEGATES = ("xnnpack", "edgetpu", "gpu", "none")
IO_DTYPES = ("int8", "uint8", "float32")


@dataclass(frozen=True)
class RuntimeCandidate:
    """A runtime this board can use, in preference order, with its minimum version."""

    name: str
    min_version: str


@dataclass(frozen=True)
class DeviceProfile:
    """What the converter and the agent need to know about one kind of board."""

    name: str
    description: str
    arch: str
    cores: int
    default_threads: int
    runtimes: tuple[RuntimeCandidate, ...]
    delegate: str
    io_dtype: str
    memory_budget_mb: int
    telemetry_interval_s: float
    thermal_paths: tuple[str, ...] = ()
    throttling_path: str | None = None
    delegate_library: str | None = None
    supported_ops: tuple[str, ...] = ()
    source: str = field(default="", compare=False)

    @property
    def requires_full_integer(self) -> bool:
        """EdgeTPU-style accelerators run nothing but quantized ops."""
        return self.delegate == "edgetpu"


def _search_dirs() -> list[Path]:
    dirs: list[Path] = []
    env = os.environ.get("EDGE_PROFILES_DIR")
    if env:
        dirs.append(Path(env))
    here = Path(__file__).resolve().parent
    dirs.append(here / "device_profiles")  # inside an installed wheel
    dirs.append(here.parent / "device_profiles")  # source checkout
    return [d for d in dirs if d.is_dir()]


def profile_paths() -> dict[str, Path]:
    """Map profile name to its TOML file; earlier search dirs win."""
    found: dict[str, Path] = {}
    for d in _search_dirs():
        for p in sorted(d.glob("*.toml")):
            found.setdefault(p.stem, p)
    return found


def _req(data: dict[str, Any], key: str, typ: type | tuple[type, ...], src: str) -> Any:
    if key not in data:
        raise ProfileError("missing required key", source=src, key=key)
    val = data[key]
    if isinstance(val, bool) and typ is not bool:
        raise ProfileError(f"expected {_tname(typ)}, got bool {val!r}", source=src, key=key)
    if not isinstance(val, typ):
        raise ProfileError(
            f"expected {_tname(typ)}, got {type(val).__name__} {val!r}", source=src, key=key
        )
    return val


def _tname(typ: type | tuple[type, ...]) -> str:
    if isinstance(typ, tuple):
        return " or ".join(t.__name__ for t in typ)
    return typ.__name__


def _choice(val: str, allowed: tuple[str, ...], src: str, key: str) -> str:
    if val not in allowed:
        raise ProfileError(f"expected one of {', '.join(allowed)}, got {val!r}",
                           source=src, key=key)
    return val


def parse_profile(data: dict[str, Any], source: str) -> DeviceProfile:
    """Validate a parsed TOML mapping into a :class:`DeviceProfile`."""
    known = {
        "name", "description", "arch", "cores", "default_threads", "runtimes", "delegate",
        "io_dtype", "memory_budget_mb", "telemetry_interval_s", "sensors", "delegate_library",
        "supported_ops",
    }
    for key in data:
        if key not in known:
            raise ProfileError("unknown key", source=source, key=key)
    name = _req(data, "name", str, source)
    cores = _req(data, "cores", int, source)
    threads = _req(data, "default_threads", int, source)
    if cores < 1:
        raise ProfileError(f"must be >= 1, got {cores}", source=source, key="cores")
    if not 1 <= threads <= cores:
        raise ProfileError(f"must be within 1..cores ({cores}), got {threads}",
                           source=source, key="default_threads")
    raw_rt = _req(data, "runtimes", list, source)
    if not raw_rt:
        raise ProfileError("must list at least one runtime", source=source, key="runtimes")
    runtimes = []
    for i, r in enumerate(raw_rt):
        k = f"runtimes[{i}]"
        if not isinstance(r, dict):
            raise ProfileError("expected a table", source=source, key=k)
        rname = _choice(_req(r, "name", str, f"{source} {k}"), RUNTIME_NAMES, source, f"{k}.name")
        runtimes.append(RuntimeCandidate(rname, _req(r, "min_version", str, f"{source} {k}")))
    mem = _req(data, "memory_budget_mb", int, source)
    if mem <= 0:
        raise ProfileError(f"must be > 0, got {mem}", source=source, key="memory_budget_mb")
    interval = float(_req(data, "telemetry_interval_s", (int, float), source))
    if interval <= 0:
        raise ProfileError(f"must be > 0, got {interval}", source=source,
                           key="telemetry_interval_s")
    sensors = data.get("sensors", {})
    if not isinstance(sensors, dict):
        raise ProfileError("expected a table", source=source, key="sensors")
    for key in sensors:
        if key not in ("thermal", "throttling"):
            raise ProfileError("unknown key", source=source, key=f"sensors.{key}")
    thermal = sensors.get("thermal", [])
    if not isinstance(thermal, list) or not all(isinstance(t, str) for t in thermal):
        raise ProfileError("expected a list of paths", source=source, key="sensors.thermal")
    throttling = sensors.get("throttling")
    if throttling is not None and not isinstance(throttling, str):
        raise ProfileError("expected a path", source=source, key="sensors.throttling")
    ops = data.get("supported_ops", [])
    if not isinstance(ops, list) or not all(isinstance(o, str) for o in ops):
        raise ProfileError("expected a list of op names", source=source, key="supported_ops")
    lib = data.get("delegate_library")
    if lib is not None and not isinstance(lib, str):
        raise ProfileError("expected a string", source=source, key="delegate_library")
    return DeviceProfile(
        name=name,
        description=_req(data, "description", str, source),
        arch=_choice(_req(data, "arch", str, source), ARCHES, source, "arch"),
        cores=cores,
        default_threads=threads,
        runtimes=tuple(runtimes),
        delegate=_choice(_req(data, "delegate", str, source), DELEGATES, source, "delegate"),
        io_dtype=_choice(_req(data, "io_dtype", str, source), IO_DTYPES, source, "io_dtype"),
        memory_budget_mb=mem,
        telemetry_interval_s=interval,
        thermal_paths=tuple(thermal),
        throttling_path=throttling,
        delegate_library=lib,
        supported_ops=tuple(ops),
        source=source,
    )


def load_profile_file(path: Path) -> DeviceProfile:
    """Load and validate one profile file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ProfileError(f"cannot read: {e.strerror}", source=str(path)) from e
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"invalid TOML: {e}", source=str(path)) from e
    prof = parse_profile(data, str(path))
    if prof.name != path.stem:
        raise ProfileError(f"must match the file name {path.stem!r}, got {prof.name!r}",
                           source=str(path), key="name")
    return prof


def load_profile(name_or_path: str) -> DeviceProfile:
    """Load a profile by name (``rpi4``) or by path to a TOML file."""
    p = Path(name_or_path)
    if p.suffix == ".toml" and p.exists():
        return load_profile_file(p)
    paths = profile_paths()
    if name_or_path not in paths:
        known = ", ".join(sorted(paths)) or "none found"
        raise ProfileError(f"unknown device profile {name_or_path!r} (known: {known})")
    return load_profile_file(paths[name_or_path])


def all_profiles() -> list[DeviceProfile]:
    """Every profile found, validated, sorted by name."""
    return [load_profile_file(p) for _, p in sorted(profile_paths().items())]
