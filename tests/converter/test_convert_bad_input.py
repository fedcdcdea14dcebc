"""Bad input, through the real CLI in a subprocess: one line naming the problem, non-zero
exit, no traceback, and nothing (not even a temp directory) left at the output path."""

from __future__ import annotations

import os
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from convert_helpers import assert_nothing_written, assert_one_line_error, run_cli

from converter.digits import write_image_folder

Setup = Callable[[Path, object], tuple[list[object], tuple[str, ...]]]
CASES: dict[str, Setup] = {}


def case(name: str) -> Callable[[Setup], Setup]:
    def register(fn: Setup) -> Setup:
        CASES[name] = fn
        return fn
    return register


def std_args(model: object, rep: object, *extra: object) -> list[object]:
    return [model, "--representative", rep, "--profile", "generic-x86_64",
            "--latency-runs", 0, *extra]


def _folder(tmp: Path, n: int = 12) -> Path:
    rng = np.random.default_rng(0)
    return write_image_folder(rng.uniform(0, 1, (n, 8, 8, 1)), np.arange(n) % 3, tmp / "imgs")


@case("missing model")
def _(tmp, d):
    return std_args(tmp / "nope.keras", d.calib_npz), ("nope.keras", "no such model")


@case("corrupt .keras: random bytes")
def _(tmp, d):
    (tmp / "m.keras").write_bytes(os.urandom(4096))
    return std_args(tmp / "m.keras", d.calib_npz), ("m.keras", "corrupt")


@case("corrupt .keras: truncated archive")
def _(tmp, d):
    data = Path(d.keras).read_bytes()
    (tmp / "m.keras").write_bytes(data[: len(data) // 2])
    return std_args(tmp / "m.keras", d.calib_npz), ("m.keras", "cannot load keras model")


@case("corrupt .keras: a zip that is no model")
def _(tmp, d):
    with zipfile.ZipFile(tmp / "m.keras", "w") as z:
        z.writestr("hello.txt", "not a model")
    return std_args(tmp / "m.keras", d.calib_npz), ("m.keras", "cannot load keras model")


@case("corrupt .h5")
def _(tmp, d):
    (tmp / "m.h5").write_bytes(b"\x00" * 2048)
    return std_args(tmp / "m.h5", d.calib_npz), ("m.h5", "corrupt .h5")


@case("model of unknown kind")
def _(tmp, d):
    (tmp / "m.onnx").write_bytes(b"x")
    return std_args(tmp / "m.onnx", d.calib_npz), ("m.onnx", ".keras or .h5")


@case("directory that is not a SavedModel")
def _(tmp, d):
    (tmp / "notsm").mkdir()
    (tmp / "notsm" / "weights.bin").write_bytes(b"x")
    return std_args(tmp / "notsm", d.calib_npz), ("notsm", "not a SavedModel")


@case("SavedModel with a corrupt saved_model.pb")
def _(tmp, d):
    (tmp / "sm" / "variables").mkdir(parents=True)
    (tmp / "sm" / "saved_model.pb").write_bytes(os.urandom(512))
    return std_args(tmp / "sm", d.calib_npz), ("sm", "cannot load SavedModel")


@case("missing data")
def _(tmp, d):
    return std_args(d.keras, tmp / "none.npz"), ("none.npz", "no such file")


@case("empty data folder")
def _(tmp, d):
    (tmp / "empty").mkdir()
    return std_args(d.keras, tmp / "empty"), ("empty", "no class subfolders")


@case("class folders without images")
def _(tmp, d):
    (tmp / "data" / "cat").mkdir(parents=True)
    (tmp / "data" / "cat" / "notes.txt").write_text("hi")
    return std_args(d.keras, tmp / "data"), ("data", "no image files")


@case("undecodable image")
def _(tmp, d):
    folder = _folder(tmp)
    (folder / "1" / "zz-bad.png").write_bytes(b"this is not a png" * 10)
    return std_args(d.keras, folder, "--samples", 100), ("zz-bad.png", "cannot decode image")


@case("truncated jpeg")
def _(tmp, d):
    from PIL import Image

    folder = _folder(tmp)
    noise = np.random.default_rng(1).integers(0, 255, (64, 64), dtype=np.uint8)
    Image.fromarray(noise, "L").save(folder / "0" / "big.jpg", quality=95)
    data = (folder / "0" / "big.jpg").read_bytes()
    (folder / "0" / "big.jpg").write_bytes(data[: len(data) // 3])
    return std_args(d.keras, folder, "--samples", 100), ("big.jpg", "cannot decode image")


@case("unreadable image")
def _(tmp, d):
    folder = _folder(tmp)
    bad = folder / "2" / "locked.png"
    if os.geteuid() == 0:  # root reads any file; /proc/self/mem refuses reads at offset 0
        bad.symlink_to("/proc/self/mem")
    else:
        shutil.copy(next((folder / "2").iterdir()), bad)
        bad.chmod(0)
    return std_args(d.keras, folder, "--samples", 100), ("locked.png", "cannot read image")


@case("data shape does not match the model input")
def _(tmp, d):
    np.savez(tmp / "small.npz", x=np.zeros((10, 7, 7, 1), np.float32))
    return std_args(d.keras, tmp / "small.npz"), ("small.npz", "[7, 7, 1]", "[8, 8, 1]")


@case("npz without x")
def _(tmp, d):
    np.savez(tmp / "wrong.npz", images=np.zeros((10, 8, 8, 1), np.float32))
    return std_args(d.keras, tmp / "wrong.npz"), ("wrong.npz", "no 'x'")


@case("eval data without labels")
def _(tmp, d):
    np.savez(tmp / "nolabels.npz", x=np.zeros((10, 8, 8, 1), np.float32))
    return (std_args(d.keras, d.calib_npz, "--eval", tmp / "nolabels.npz"),
            ("nolabels.npz", "needs labels"))


@case("data with NaN")
def _(tmp, d):
    x = np.zeros((10, 8, 8, 1), np.float32)
    x[3, 2, 2, 0] = np.nan
    np.savez(tmp / "nan.npz", x=x)
    return std_args(d.keras, tmp / "nan.npz"), ("nan.npz", "NaN")


@case("eval folder with fewer classes and no labels")
def _(tmp, d):
    return (std_args(d.keras, d.calib_npz, "--eval", _folder(tmp)),
            ("imgs", "3 class folders", "--labels"))


@case("unknown profile")
def _(tmp, d):
    return (["convert", d.keras, "--representative", d.calib_npz, "--profile", "rpi9"],
            ("unknown device profile 'rpi9'", "rpi4"))


@case("output path below a regular file")
def _(tmp, d):
    (tmp / "file").write_text("x")
    return std_args(d.keras, d.calib_npz), ("file", "not a directory")


@case("output in a read-only directory")
def _(tmp, d):
    if os.geteuid() == 0:  # root writes anywhere chmod allows; sysfs refuses new files
        return std_args(d.keras, d.calib_npz), ("/sys", "cannot write here")
    (tmp / "ro").mkdir()
    (tmp / "ro").chmod(0o555)
    return std_args(d.keras, d.calib_npz), ("ro", "cannot write here")


@case("output is a folder of other files")
def _(tmp, d):
    (tmp / "mine").mkdir()
    (tmp / "mine" / "thesis.tex").write_text("precious")
    return std_args(d.keras, d.calib_npz), ("mine", "refusing to replace")


@case("mode the profile cannot run")
def _(tmp, d):
    return (["convert", d.keras, "--representative", d.calib_npz, "--profile", "coral-usb",
             "--mode", "float16"], ("coral-usb", "full-integer"))


@case("unknown mode flag")
def _(tmp, d):
    return (std_args(d.keras, d.calib_npz, "--mode", "int4"), ("--mode", "int4"))


OUTPUTS = {
    "output path below a regular file": lambda tmp: tmp / "file" / "bundle",
    "output in a read-only directory": lambda tmp: (
        Path("/sys/edge-convert-test-bundle") if os.geteuid() == 0 else tmp / "ro" / "bundle"),
    "output is a folder of other files": lambda tmp: tmp / "mine",
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_error_and_leaves_nothing(name: str, digits, tmp_path: Path):
    out = OUTPUTS.get(name, lambda tmp: tmp / "out" / "bundle")(tmp_path)
    args, words = CASES[name](tmp_path, digits)
    if args[0] != "convert":
        args = ["convert", *args]
    if "-o" not in args:
        args = [*args, "-o", out]
    r = run_cli(*args)
    assert_one_line_error(r, *words, code=2)
    assert r.stdout == ""
    if name == "output is a folder of other files":
        assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]  # untouched
    else:
        assert_nothing_written(out)
        assert not (tmp_path / "out").exists()  # not even the parent was created


def test_write_failure_at_the_end_leaves_no_partial_bundle(digits, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch):
    """Fault injection: the final rename fails (disk full); the staged temp dir is removed."""
    import errno

    from converter import build
    from converter.errors import OutputError
    from edge_agent import fsutil
    from edge_agent.bundle import read_bundle

    bundle = read_bundle(digits.bundle)

    def full(*_a: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fsutil.os, "replace", full)
    for out in (tmp_path / "b", tmp_path / "b.tar"):
        with pytest.raises(OutputError, match="No space left"):
            build.write_output(bundle, out)
        assert_nothing_written(out)
    assert list(tmp_path.iterdir()) == []


BLOCK = (
    "import sys\n"
    "class Block:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in ('tensorflow', 'keras', 'rich'):\n"
    "            raise ImportError(f'{name} is not installed (blocked by the test)')\n"
    "sys.meta_path.insert(0, Block())\n"
    "from converter.cli import main\n"
    "raise SystemExit(main(sys.argv[1:]))\n"
)


def test_agent_only_install_gets_one_line_error_for_convert_and_plain_profiles(
        digits, tmp_path: Path) -> None:
    """`edge-convert` is on PATH even without the [converter] extra: no traceback there."""
    import subprocess
    import sys

    out = tmp_path / "b"
    r = subprocess.run([sys.executable, "-c", BLOCK, "convert", str(digits.keras),
                        "--representative", str(digits.calib_npz), "--profile", "rpi4",
                        "-o", str(out)], capture_output=True, text=True, timeout=120)
    assert_one_line_error(r, "TensorFlow is not importable", "edge-inference[converter]", code=4)
    assert_nothing_written(out)
    r = subprocess.run([sys.executable, "-c", BLOCK, "profiles"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and r.stderr == ""
    assert len(r.stdout.splitlines()) == 9 and "coral-usb" in r.stdout
