"""Foundation promises: the agent imports without TensorFlow; profiles load and validate."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import edge_agent
from edge_agent.errors import ProfileError
from edge_agent.profiles import all_profiles, load_profile, load_profile_file

ROOT = Path(__file__).resolve().parents[1]
BOARDS = {"rpi3", "rpi4", "rpi5", "rpi-zero2w", "jetson-nano", "jetson-orin-nano",
          "coral-devboard", "coral-usb", "generic-x86_64"}


def test_every_agent_module_imports_without_tensorflow() -> None:
    mods = [m.name for m in pkgutil.walk_packages(edge_agent.__path__, "edge_agent.")]
    code = (
        "import sys, importlib\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'tensorflow' or name.startswith('tensorflow.') or name == 'keras':\n"
        "            raise ImportError('tensorflow is blocked in this test')\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for m in {mods!r}:\n"
        "    importlib.import_module(m)\n"
        "assert 'tensorflow' not in sys.modules\n"
        "print(len(sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert len(mods) >= 5


def test_all_board_profiles_load() -> None:
    names = {p.name for p in all_profiles()}
    assert names >= BOARDS
    rpi4 = load_profile("rpi4")
    assert rpi4.arch == "aarch64" and rpi4.delegate == "xnnpack" and rpi4.io_dtype == "int8"
    assert load_profile("coral-usb").io_dtype == "uint8"
    assert load_profile("coral-usb").requires_full_integer


@pytest.mark.parametrize(("mutate", "key"), [
    (lambda s: s.replace('arch = "aarch64"', 'arch = "sparc"'), "arch"),
    (lambda s: s.replace("default_threads = 4", "default_threads = 9"), "default_threads"),
    (lambda s: s.replace("cores = 4", 'cores = "four"'), "cores"),
    (lambda s: s.replace('delegate = "xnnpack"', 'delegate = "npu"'), "delegate"),
    (lambda s: "bogus = 1\n" + s, "bogus"),
    (lambda s: s + "fan = 'x'\n", "sensors.fan"),
    (lambda s: s.replace("memory_budget_mb = 512\n", ""), "memory_budget_mb"),
])
def test_bad_profile_names_file_and_key(tmp_path: Path, mutate, key: str) -> None:
    src = (ROOT / "device_profiles" / "rpi4.toml").read_text()
    p = tmp_path / "rpi4.toml"
    p.write_text(mutate(src))
    with pytest.raises(ProfileError) as e:
        load_profile_file(p)
    assert str(p) in str(e.value) and key in str(e.value)


def test_unknown_profile_lists_known() -> None:
    with pytest.raises(ProfileError, match=r"unknown device profile 'rpi9'.*rpi4"):
        load_profile("rpi9")


def test_invalid_toml_names_file(tmp_path: Path) -> None:
    p = tmp_path / "x.toml"
    p.write_text("name = [unclosed")
    with pytest.raises(ProfileError, match="invalid TOML"):
        load_profile_file(p)
