"""System figures: psutil on this machine, board sensors from a directory of sysfs-like
files (the profile's paths are parameters, so a fake sysfs tree is a seam, not a mock)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.errors import ConfigError
from edge_agent.profiles import load_profile
from edge_agent.telemetry.config import TelemetryConfig
from edge_agent.telemetry.system import SystemSampler, parse_throttled


def test_sample_has_every_figure_on_this_machine(tmp_path: Path) -> None:
    s = SystemSampler(tmp_path).sample()
    assert 0 <= s["cpu_percent"] <= 100
    assert s["rss_bytes"] > 1 << 20 and s["mem_available_bytes"] > 0
    assert s["disk_free_bytes"] > 0 and len(s["load"]) == 3
    assert s["throttled"] is None  # no throttling path on a generic profile


def test_missing_store_dir_reports_free_space_of_its_parent(tmp_path: Path) -> None:
    assert SystemSampler(tmp_path / "not" / "yet").sample()["disk_free_bytes"] > 0


@pytest.mark.parametrize("text, flags", [
    ("0x0", set()),
    ("throttled=0x50005", {"under_voltage", "throttled", "under_voltage_occurred",
                           "throttled_occurred"}),
    ("80008", {"soft_temp_limit", "soft_temp_limit_occurred"}),
])
def test_raspberry_pi_throttling_bits(text: str, flags: set[str]) -> None:
    got = parse_throttled(text)
    assert got is not None
    assert {k for k, v in got.items() if v is True} == flags


def test_garbled_throttling_file_is_none() -> None:
    assert parse_throttled("n/a") is None


def _zone(root: Path, i: int, kind: str, milli: int) -> None:
    z = root / f"thermal_zone{i}"
    z.mkdir(parents=True)
    (z / "type").write_text(kind + "\n")
    (z / "temp").write_text(f"{milli}\n")


def test_jetson_thermal_zones_and_cpu_temperature(tmp_path: Path) -> None:
    root = tmp_path / "thermal"
    for i, (kind, t) in enumerate([("AO-therm", 40500), ("CPU-therm", 45000),
                                   ("GPU-therm", 43500), ("PMIC-Die", 100000)]):
        _zone(root, i, kind, t)
    s = SystemSampler(tmp_path, thermal_root=root).sample()
    assert s["thermal_zones"] == {"AO-therm": 40.5, "CPU-therm": 45.0, "GPU-therm": 43.5,
                                  "PMIC-Die": 100.0}
    assert s["cpu_temp_c"] == 45.0


def test_profile_thermal_path_and_throttling_file_are_used(tmp_path: Path) -> None:
    prof = load_profile("rpi4")
    temp = tmp_path / "temp"
    temp.write_text("61234\n")
    thr = tmp_path / "get_throttled"
    thr.write_text("50000\n")
    s = SystemSampler(tmp_path, thermal_paths=(str(temp),), throttling_path=str(thr),
                      thermal_root=tmp_path / "none").sample()
    assert s["cpu_temp_c"] == 61.2
    assert s["throttled"]["under_voltage_occurred"] and not s["throttled"]["under_voltage"]
    assert prof.thermal_paths and prof.throttling_path  # the real profile names such files


def test_unreadable_sensors_are_none_not_errors(tmp_path: Path) -> None:
    s = SystemSampler(tmp_path, thermal_paths=(str(tmp_path / "gone"),),
                      throttling_path=str(tmp_path / "gone2"),
                      thermal_root=tmp_path / "none").sample()
    assert s["cpu_temp_c"] is None and s["throttled"] is None and s["thermal_zones"] is None


def test_interval_defaults_to_the_profile_and_can_be_overridden() -> None:
    assert TelemetryConfig.from_section({}, "a.toml", default_interval_s=15).interval_s == 15
    assert TelemetryConfig.from_section({"interval_s": 2}, "a.toml",
                                        default_interval_s=15).interval_s == 2.0


@pytest.mark.parametrize("raw, key", [
    ({"interval_s": 0}, "telemetry.interval_s"), ({"enabled": "yes"}, "telemetry.enabled"),
    ({"quality_window": 0}, "telemetry.quality_window"), ({"nope": 1}, "telemetry.nope"),
    ({"drift_threshold": True}, "telemetry.drift_threshold"),
])
def test_bad_telemetry_keys_are_named(raw, key) -> None:
    with pytest.raises(ConfigError) as ei:
        TelemetryConfig.from_section(raw, "a.toml", default_interval_s=15)
    assert ei.value.key == key
