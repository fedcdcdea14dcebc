"""The wheelhouse's target logic (the real downloads run in scripts/aarch64_smoke.sh)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from edge_agent.errors import BadInputError, TransportError
from fleet.wheelhouse import TARGETS, Wheelhouse, build_wheelhouse, target_marker_requirements

ROOT = Path(__file__).resolve().parents[2]


def test_a_glibc_2_36_board_accepts_every_older_manylinux_tag() -> None:
    tags = TARGETS["rpi-bookworm"].platform_tags()
    assert tags[0] == "manylinux_2_36_aarch64" and tags[-1] == "manylinux2014_aarch64"
    # tflite-runtime 2.14 (2_34), ai-edge-litert (2_27) and numpy 2 (2_28) all fit.
    assert {"manylinux_2_34_aarch64", "manylinux_2_28_aarch64",
            "manylinux_2_27_aarch64", "manylinux_2_17_aarch64"} <= set(tags)
    assert "manylinux_2_37_aarch64" not in tags


def test_jetpack5s_glibc_excludes_wheels_built_for_newer_systems() -> None:
    tags = TARGETS["jetpack5"].platform_tags()
    assert "manylinux_2_31_aarch64" in tags and "manylinux_2_34_aarch64" not in tags


def test_a_glibc_older_than_any_wheel_is_refused() -> None:
    with pytest.raises(BadInputError, match=r"older than 2\.17"):
        replace(TARGETS["x86_64"], glibc=(2, 12)).platform_tags()


def test_the_pip_arguments_name_the_target_not_this_machine() -> None:
    args = TARGETS["jetpack6"].pip_target_args()
    assert args[:1] == ["--only-binary=:all:"]
    assert args[args.index("--python-version") + 1] == "3.10"
    assert "cp310" in args and "manylinux_2_35_aarch64" in args


def _wheel_with(tmp_path: Path, requires: list[str]) -> Path:
    whl = tmp_path / "edge_inference-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr("edge_inference-0.1.0.dist-info/METADATA",
                   "Metadata-Version: 2.1\nName: edge-inference\nVersion: 0.1.0\n"
                   + "".join(f"Requires-Dist: {r}\n" for r in requires))
    return whl


def test_markers_true_only_for_the_target_python_are_passed_explicitly(tmp_path: Path) -> None:
    whl = _wheel_with(tmp_path, ["numpy>=1.23", "tomli>=2; python_version < '3.11'",
                                 "foo; platform_machine == 'aarch64'", "bar; extra == 'dev'"])
    jp6 = target_marker_requirements(whl, TARGETS["jetpack6"])  # Python 3.10, aarch64
    assert "tomli>=2" in jp6 and "numpy>=1.23" not in jp6 and "bar" not in jp6
    assert ("foo" in jp6) == (sys.platform == "linux" and not _host_is_aarch64())
    assert "tomli>=2" not in target_marker_requirements(whl, TARGETS["rpi-bookworm"])


def _host_is_aarch64() -> bool:
    import platform

    return platform.machine() == "aarch64"


def test_the_board_install_command_is_the_documented_one(tmp_path: Path) -> None:
    wh = Wheelhouse(tmp_path, TARGETS["qemu-aarch64"], "x.whl", (), 0)
    assert wh.install_command() == f"pip install --no-index --find-links {tmp_path} " \
                                   "edge-inference"
    fb = Wheelhouse(tmp_path, TARGETS["rpi-bookworm-fallback"], "x.whl", (), 0)
    assert fb.install_command().endswith("edge-inference tflite-runtime")
    board = Wheelhouse(Path("~/wheelhouse"), TARGETS["rpi-bookworm"], "x.whl", (), 0)
    docs = (ROOT / "docs" / "install.md").read_text()
    assert board.install_command("/opt/edge-agent/bin/pip") in docs


def _script_commands() -> str:
    """scripts/aarch64_smoke.sh with its emulation paths mapped to the board's."""
    s = (ROOT / "scripts" / "aarch64_smoke.sh").read_text().replace("\\\n", " ")
    for emu, board in (('"$PYTHON3"', "python3"), ('"$ROOTFS/opt/fallback/bin/pip"',
                                                   "/opt/edge-agent/bin/pip"),
                       ('"$ROOTFS/opt/', "/opt/"), ('"$WH/qemu-aarch64"', "~/wheelhouse"),
                       ('"$WH/rpi-bookworm-fallback"', "~/wheelhouse"), ("pipq ", "")):
        s = s.replace(emu, board)
    return " ".join(s.replace('"', "").split())


@pytest.mark.parametrize("cmd", [
    "python3 -m venv /opt/edge-agent",
    "/opt/edge-agent/bin/pip install --no-index --find-links ~/wheelhouse edge-inference",
    "/opt/edge-agent/bin/pip install --no-index --find-links ~/wheelhouse edge-inference "
    "tflite-runtime",
])
def test_the_install_guide_commands_are_the_ones_the_emulation_check_runs(cmd: str) -> None:
    docs = " ".join((ROOT / "docs" / "install.md").read_text().split())
    assert cmd in docs
    assert cmd in _script_commands()


def test_an_unknown_target_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="unknown wheelhouse target 'pi9'"):
        build_wheelhouse("pi9", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_edge_fleet_wheelhouse_lists_the_targets() -> None:
    r = subprocess.run([sys.executable, "-m", "fleet.cli", "wheelhouse", "--list"],
                       capture_output=True, text=True, cwd=ROOT, check=False)
    assert r.returncode == 0, r.stderr
    for name in TARGETS:
        assert name in r.stdout


# --- --out never destroys what it did not write (issue 19 item 15) ----------------------------


class FakePip:
    """The pip seam: writes wheels where pip would, or fails; records every call."""

    def __init__(self, *, fail_download: bool = False) -> None:
        self.calls: list[str] = []
        self.fail_download = fail_download

    def __call__(self, python: str, args: Sequence[str], what: str) -> None:
        self.calls.append(args[0])
        if args[0] == "wheel":
            _wheel_with(Path(args[args.index("-w") + 1]), ["numpy>=1.23"])
        elif self.fail_download:
            raise TransportError(f"{what}: pip failed (injected)")
        else:
            (Path(args[args.index("-d") + 1]) / "numpy-2.0-cp311-none-any.whl").write_bytes(b"np")


def _tree(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_wheelhouse_out_holding_a_foreign_file_is_refused_before_any_download(
        tmp_path: Path) -> None:
    out = tmp_path / "wh"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    r = subprocess.run([sys.executable, "-m", "fleet.cli", "wheelhouse", "x86_64", "--out",
                        str(out)], capture_output=True, text=True, cwd=tmp_path, check=False,
                       env={**os.environ, "PIP_NO_INDEX": "1", "PIP_INDEX_URL":
                            "http://127.0.0.1:9/"})  # were pip reached, it fails at once
    assert r.returncode == 2, r.stderr
    assert "notes.txt" in r.stderr and "refusing to replace it" in r.stderr
    assert "Traceback" not in r.stderr
    assert _tree(out) == {"notes.txt": b"mine"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wh"]  # no temp dir left beside it


def test_wheelhouse_out_dot_refuses_and_the_current_directory_keeps_its_files(
        tmp_path: Path) -> None:
    (tmp_path / "project.py").write_text("x = 1\n")
    pip = FakePip()
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(BadInputError, match="is the current directory"):
            build_wheelhouse("x86_64", Path("."), run_pip=pip)
    finally:
        os.chdir(old)
    assert pip.calls == [] and _tree(tmp_path) == {"project.py": b"x = 1\n"}


def test_a_previous_wheelhouse_is_replaced_whole_and_a_failed_rebuild_keeps_it(
        tmp_path: Path) -> None:
    out = tmp_path / "wh"
    first = build_wheelhouse("x86_64", out, run_pip=FakePip())
    assert set(first.files) == {"edge_inference-0.1.0-py3-none-any.whl",
                                "numpy-2.0-cp311-none-any.whl"}
    before = _tree(out)
    assert json.loads(before["wheelhouse.json"])["install"] == first.install_command()
    with pytest.raises(TransportError, match="injected"):
        build_wheelhouse("x86_64", out, run_pip=FakePip(fail_download=True))
    assert _tree(out) == before  # the failed rebuild left the old wheelhouse as it was
    build_wheelhouse("x86_64", out, run_pip=FakePip())  # ours: replaced, not refused
    assert _tree(out).keys() == before.keys()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wh"]
    (out / "extra.txt").write_text("added by hand")
    with pytest.raises(BadInputError, match=r"extra\.txt"):
        build_wheelhouse("x86_64", out, run_pip=FakePip())
    assert (out / "extra.txt").read_text() == "added by hand"


def test_the_install_instructions_never_install_from_an_index_that_lacks_the_package() -> None:
    """edge-inference is not on PyPI: every documented install names a clone, git or a wheel."""
    for doc in ("README.md", "docs/install.md"):
        text = (ROOT / doc).read_text()
        for line in text.splitlines():
            for bare in ("`pip install edge-inference`", "`pip install 'edge-inference[",
                         "\npip install edge-inference"):
                if bare in line and "not" not in line and "fails" not in line:
                    pytest.fail(f"{doc}: {line.strip()}")
        assert "pip wheel --no-deps -w dist ." in text
    assert "pip install '.[converter,fleet]'" in (ROOT / "docs/install.md").read_text()
