"""Device profiles: `edge-convert profiles` lists them all, and an installed wheel finds them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from convert_helpers import ROOT, run_cli

from edge_agent.profiles import all_profiles

BOARDS = {"rpi3", "rpi4", "rpi5", "rpi-zero2w", "jetson-nano", "jetson-orin-nano",
          "coral-devboard", "coral-usb", "generic-x86_64"}


def test_profiles_command_lists_every_board() -> None:
    r = run_cli("profiles")
    assert r.returncode == 0 and r.stderr == ""
    for name in BOARDS:
        assert name in r.stdout
    r = run_cli("profiles", "--json")
    doc = json.loads(r.stdout)
    assert {p["name"] for p in doc} == BOARDS
    assert {p["name"]: p["io_dtype"] for p in doc}["coral-usb"] == "uint8"


def test_every_profile_loads_with_a_consistent_runtime_setup() -> None:
    profs = {p.name: p for p in all_profiles()}
    assert set(profs) == BOARDS
    for p in profs.values():
        assert p.runtimes and 1 <= p.default_threads <= p.cores and p.memory_budget_mb > 0
        if p.delegate == "edgetpu":
            assert p.io_dtype == "uint8" and p.supported_ops and p.delegate_library


@pytest.fixture(scope="session")
def installed_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project built as a wheel and installed into a bare target directory."""
    d = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                        "--no-build-isolation", "-q", "-w", str(d / "dist"), str(ROOT)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    wheels = list((d / "dist").glob("edge_inference-*.whl"))
    assert len(wheels) == 1, wheels
    target = d / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q",
                        "--target", str(target), str(wheels[0])],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return target


def _bare_env(target: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "EDGE_PROFILES_DIR", "PYTHONHOME")}
    env["PYTHONPATH"] = str(target)
    return env


def test_installed_wheel_finds_all_profiles_inside_itself(installed_wheel: Path,
                                                          tmp_path: Path) -> None:
    # -S: no site-packages, so neither the editable install nor the source tree is reachable.
    code = ("import json, edge_agent\n"
            "from edge_agent.profiles import all_profiles\n"
            "print(json.dumps({'pkg': edge_agent.__file__,"
            " 'profiles': {p.name: p.source for p in all_profiles()}}))")
    r = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, capture_output=True,
                       text=True, env=_bare_env(installed_wheel), timeout=60)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    target = str(installed_wheel.resolve())
    assert doc["pkg"].startswith(target)
    assert set(doc["profiles"]) == BOARDS
    for name, src in doc["profiles"].items():
        assert src.startswith(target), (name, src)
        assert Path(src).parent.name == "device_profiles"


def test_installed_wheel_cli_lists_profiles(installed_wheel: Path, tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "converter.cli", "profiles", "--json"],
                       cwd=tmp_path, capture_output=True, text=True,
                       env=_bare_env(installed_wheel), timeout=60)
    assert r.returncode == 0, r.stderr
    profs = json.loads(r.stdout)
    assert {p["name"] for p in profs} == BOARDS
    assert all(p["source"].startswith(str(installed_wheel.resolve())) for p in profs)
