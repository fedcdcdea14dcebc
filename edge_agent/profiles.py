"""Device profiles: one TOML file per board, loaded into one validated dataclass.

Profiles are searched, in order, in ``$EDGE_PROFILES_DIR`` (if set), in the
``device_profiles`` folder shipped inside the installed wheel, and in the source
tree's ``device_profiles/``. Every validation error names the file and the key.

Raises :class:`~edge_agent.errors.ProfileError`.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.config_reader import Origins, Table
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
    default_workers: int = 1  # interpreters per model version unless [agent] workers says
    # the floor of the invoke watchdog of bundles with variants (edge_agent.variant_rules)
    invoke_watchdog_floor_s: float = 1.0
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


def default_split(profile: DeviceProfile, cpus: int | None) -> tuple[int, int]:
    """(workers, threads) an agent on ``profile`` runs without ``[agent] workers`` /
    ``threads``: ``default_workers``, and ``default_threads`` capped at the ``cpus`` the
    machine has (docs/agent.md#tuning-workers-and-threads)."""
    return profile.default_workers, max(1, min(profile.default_threads, cpus or 1))


def parse_profile(data: dict[str, Any], source: str) -> DeviceProfile:
    """Validate a parsed TOML mapping into a :class:`DeviceProfile` (the one config reader,
    raising ProfileError naming the file and the key)."""
    origins = Origins(source, error=ProfileError)
    t = Table(data, "", origins)  # a profile's keys are top-level
    cores = t.required("cores", t.opt_integer("cores", 1, 1024))
    threads = t.required("default_threads", t.opt_integer("default_threads", 1, 1024))
    if threads > cores:
        raise t.err("default_threads", f"must be within 1..cores ({cores}), got {threads}")
    workers = t.opt_integer("default_workers", 1, 64) or 1
    if workers * threads > cores:
        raise t.err("default_workers", f"default_workers x default_threads must be within "
                                       f"cores ({cores}), got {workers} x {threads}")
    raw_rt = t.take("runtimes")
    if not isinstance(raw_rt, list) or not raw_rt:
        raise t.err("runtimes", "must list at least one runtime ([[runtimes]] tables)")
    runtimes = []
    for i, r in enumerate(raw_rt):
        rt = Table(r, f"runtimes[{i}]", origins)
        runtimes.append(RuntimeCandidate(
            rt.required("name", rt.opt_text("name", choices=RUNTIME_NAMES)),
            rt.required("min_version", rt.opt_text("min_version"))))
        rt.finish()
    sensors = Table(t.take("sensors"), "sensors", origins)
    thermal = sensors.texts("thermal", (), what="paths")
    throttling = sensors.opt_text("throttling")
    sensors.finish()
    prof = DeviceProfile(
        name=t.required("name", t.opt_text("name")),
        description=t.required("description", t.opt_text("description")),
        arch=t.required("arch", t.opt_text("arch", choices=ARCHES)),
        cores=cores,
        default_threads=threads,
        runtimes=tuple(runtimes),
        delegate=t.required("delegate", t.opt_text("delegate", choices=DELEGATES)),
        io_dtype=t.required("io_dtype", t.opt_text("io_dtype", choices=IO_DTYPES)),
        memory_budget_mb=t.required("memory_budget_mb",
                                    t.opt_integer("memory_budget_mb", 1)),
        telemetry_interval_s=t.required("telemetry_interval_s",
                                        t.opt_number("telemetry_interval_s", 0.0)),
        thermal_paths=thermal,
        throttling_path=throttling,
        delegate_library=t.opt_text("delegate_library"),
        supported_ops=t.texts("supported_ops", (), what="op names"),
        default_workers=workers,
        invoke_watchdog_floor_s=t.number("invoke_watchdog_floor_s", 1.0, 0.001, 3600),
        source=source,
    )
    t.finish()
    return prof


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


# /proc/device-tree/model prefix → profile (boards without a device tree: x86_64 only)
BOARD_MODELS = (("Raspberry Pi 5", "rpi5"), ("Raspberry Pi 4", "rpi4"),
                ("Raspberry Pi 3", "rpi3"), ("Raspberry Pi Zero 2", "rpi-zero2w"),
                ("NVIDIA Jetson Nano", "jetson-nano"),
                ("NVIDIA Jetson Orin Nano", "jetson-orin-nano"),
                ("Freescale i.MX8MQ Phanbell", "coral-devboard"))


def detect_profile(model_file: Path = Path("/proc/device-tree/model")) -> str:
    """The profile for this machine: device-tree model on boards, generic on x86_64.

    Raises ConfigError (key ``agent.profile``) on a board we cannot recognise.
    """
    from edge_agent.errors import ConfigError

    try:
        model = model_file.read_text(errors="replace").strip("\x00\n ")
    except OSError:
        model = ""
    for prefix, name in BOARD_MODELS:
        if model.startswith(prefix):
            return name
    if platform.machine() in ("x86_64", "AMD64"):
        return "generic-x86_64"
    raise ConfigError(f"cannot pick a device profile for this {platform.machine()} board "
                      f"({model or 'no device-tree model'}); set agent.profile",
                      key="agent.profile")
