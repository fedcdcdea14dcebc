"""System figures for telemetry: psutil plus the board's sensors from its device profile.

Everything is best effort: a sensor that is missing or unreadable is ``None`` (or left
out), never an exception, because a board without a fan sensor must still report.
The sysfs root is a parameter so tests can point it at a directory of fake files.

* CPU temperature: the profile's ``sensors.thermal`` files (millidegrees), else the first
  thermal zone whose type looks like a CPU, else the first zone.
* Thermal zones (Jetson has a dozen): every ``thermal_zone*/type`` → °C.
* Raspberry Pi throttling: the profile's ``sensors.throttling`` file (the firmware's
  ``get_throttled`` bit mask, e.g. ``0x50005``) decoded into named flags.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

import psutil

# bit → name, from the Raspberry Pi firmware documentation of ``vcgencmd get_throttled``
THROTTLE_BITS = {
    0: "under_voltage", 1: "freq_capped", 2: "throttled", 3: "soft_temp_limit",
    16: "under_voltage_occurred", 17: "freq_capped_occurred", 18: "throttled_occurred",
    19: "soft_temp_limit_occurred",
}
_CPU_ZONE_HINTS = ("cpu", "x86_pkg_temp", "soc", "coretemp")


def parse_throttled(text: str) -> dict[str, Any] | None:
    """``"50005"``, ``"0x50005"`` or ``"throttled=0x50005"`` → named flags (None if garbled).

    Example: ``{"raw": "0x50005", "under_voltage": True, "throttled": True, …}``.
    """
    s = text.strip().split("=")[-1].strip()
    try:
        value = int(s, 0) if s.lower().startswith("0x") else int(s, 16)
    except ValueError:
        return None
    flags: dict[str, Any] = {"raw": hex(value)}
    flags.update({name: bool(value >> bit & 1) for bit, name in THROTTLE_BITS.items()})
    return flags


def _read_millideg(path: Path) -> float | None:
    try:
        v = float(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return round(v / 1000.0 if abs(v) > 200 else v, 1)  # some drivers report °C already


class SystemSampler:
    """Takes one system sample per call; CPU % is measured since the previous call."""

    def __init__(self, store_path: Path | None, *, thermal_paths: tuple[str, ...] = (),
                 throttling_path: str | None = None,
                 thermal_root: Path = Path("/sys/class/thermal")) -> None:
        self.store_path = store_path
        self.thermal_paths = tuple(Path(p) for p in thermal_paths)
        self.throttling_path = Path(throttling_path) if throttling_path else None
        self.thermal_root = thermal_root
        self._proc = psutil.Process()
        psutil.cpu_percent(None)  # prime: the first call has no reference point
        self._proc.cpu_percent(None)
        self.started = time.time()

    def thermal_zones(self) -> dict[str, float]:
        zones: dict[str, float] = {}
        with contextlib.suppress(OSError):
            for z in sorted(self.thermal_root.glob("thermal_zone*")):
                t = _read_millideg(z / "temp")
                if t is None:
                    continue
                try:
                    name = (z / "type").read_text().strip() or z.name
                except OSError:
                    name = z.name
                if name in zones:
                    name = f"{name}.{z.name}"
                zones[name] = t
        return zones

    def cpu_temp(self, zones: dict[str, float]) -> float | None:
        for p in self.thermal_paths:
            t = _read_millideg(p)
            if t is not None:
                return t
        for name, t in zones.items():
            if any(h in name.lower() for h in _CPU_ZONE_HINTS):
                return t
        return next(iter(zones.values()), None)

    def throttled(self) -> dict[str, Any] | None:
        if self.throttling_path is None:
            return None
        try:
            return parse_throttled(self.throttling_path.read_text())
        except OSError:
            return None

    def _disk_free(self) -> int | None:
        p = self.store_path
        while p is not None:
            with contextlib.suppress(OSError):
                return int(psutil.disk_usage(str(p)).free)
            p = p.parent if p.parent != p else None
        return None

    def sample(self) -> dict[str, Any]:
        vm = psutil.virtual_memory()
        try:
            load = [round(x, 2) for x in os.getloadavg()]
        except OSError:
            load = None
        with self._proc.oneshot():
            rss = self._proc.memory_info().rss
            proc_cpu = self._proc.cpu_percent(None)
            threads = self._proc.num_threads()
        zones = self.thermal_zones()
        out: dict[str, Any] = {
            "cpu_percent": psutil.cpu_percent(None),
            "process_cpu_percent": round(proc_cpu, 1),
            "load": load,
            "rss_bytes": rss,
            "threads": threads,
            "mem_available_bytes": int(vm.available),
            "mem_total_bytes": int(vm.total),
            "disk_free_bytes": self._disk_free(),
            "cpu_temp_c": self.cpu_temp(zones),
            "thermal_zones": zones or None,
            "throttled": self.throttled(),
        }
        return out


def context_switches(pid: int | str = "self", proc: Path = Path("/proc")) -> dict[int, int]:
    """Voluntary + involuntary context switches of every thread of ``pid``, by thread id
    (Linux ``/proc/<pid>/task/*/status``; empty elsewhere). Each switch is one wake-up or
    preemption: sampled twice, the difference over the interval is how often the process
    woke up. A thread that ends between reads is skipped."""
    out: dict[int, int] = {}
    with contextlib.suppress(OSError):
        for task in (proc / str(pid) / "task").iterdir():
            n = 0
            with contextlib.suppress(OSError, ValueError):
                for line in (task / "status").read_text().splitlines():
                    if "ctxt_switches:" in line:
                        n += int(line.split(":", 1)[1])
                out[int(task.name)] = n
    return out
