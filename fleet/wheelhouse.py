"""Offline wheelhouse: every wheel a board needs, fetched on a workstation with ``pip download``.

A board often has no route to PyPI, and the wheels it needs are not the workstation's:
``pip download --only-binary=:all: --platform … --python-version … --implementation cp
--abi …`` resolves the agent's dependencies *for the target* — aarch64 + CPython 3.11 +
glibc 2.36 for Raspberry Pi OS bookworm, aarch64 + 3.10 + glibc 2.35 for JetPack 6 — and
our own wheel (``pip wheel --no-deps --no-build-isolation .``) goes in beside them. On the
board::

    python3 -m venv /opt/edge-agent
    /opt/edge-agent/bin/pip install --no-index --find-links DIR edge-inference

pip does not widen ``--platform manylinux_2_36_aarch64`` to the older manylinux tags a
glibc 2.36 system also accepts, so :meth:`Target.platform_tags` lists them all
(``manylinux_2_36`` … ``manylinux_2_17``, ``manylinux2014``).

Each target pins its runtime where it must: ``qemu-aarch64`` takes ai-edge-litert 2.1.6
because 2.2.0 and 2.3.0 crash under qemu-user; ``rpi-bookworm-fallback`` adds
tflite-runtime 2.14.0 (and so numpy<2) as the candidate the agent's runtime probe falls
back to. ``DIR/wheelhouse.json`` records the target, the files with sha256 and the install
command; it also marks DIR as ours: ``--out`` may name a new or empty directory or one
holding only a wheelhouse written before (replaced whole, only once the new one is
complete), never a directory with other files (refused, exit 2, nothing deleted).

    python -m fleet.wheelhouse rpi-bookworm --out wheelhouse/rpi-bookworm
    python -m fleet.wheelhouse --list

Raises :class:`~edge_agent.errors.BadInputError` (unknown target, no wheel for the target)
and :class:`~edge_agent.errors.TransportError` (pip could not download).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.errors import BadInputError, TransportError
from edge_agent.fsutil import atomic_write_text, staged_dir

PROJECT = "edge-inference"
ROOT = Path(__file__).resolve().parents[1]
MIN_MANYLINUX = 17  # manylinux_2_17 == manylinux2014, the oldest tag our wheels use
MANIFEST = "wheelhouse.json"  # marks a directory this module wrote (and may replace)
PipRunner = Callable[[str, Sequence[str], str], None]  # (python, pip args, what) -> None


@dataclass(frozen=True)
class Target:
    """A kind of board: CPU, CPython version, glibc, and the runtime wheels it gets."""

    name: str
    description: str
    machine: str  # aarch64 | x86_64
    python: str  # "3.11"
    glibc: tuple[int, int]
    runtime: tuple[str, ...]  # requirements added to the agent's own, e.g. a pin
    install_extra: tuple[str, ...] = ()  # names to install besides edge-inference
    notes: str = ""

    @property
    def abi(self) -> str:
        return "cp" + self.python.replace(".", "")

    def platform_tags(self) -> list[str]:
        """Every manylinux tag this glibc accepts, newest first (pip does not widen them)."""
        major, minor = self.glibc
        if major != 2 or minor < MIN_MANYLINUX:
            raise BadInputError(f"target {self.name}: glibc {major}.{minor} is older than "
                                f"2.{MIN_MANYLINUX}, which no runtime wheel supports")
        tags = [f"manylinux_2_{m}_{self.machine}" for m in range(minor, MIN_MANYLINUX - 1, -1)]
        tags.append(f"manylinux2014_{self.machine}")
        return tags

    def pip_target_args(self) -> list[str]:
        args = ["--only-binary=:all:", "--implementation", "cp", "--python-version",
                self.python, "--abi", self.abi, "--abi", "abi3", "--abi", "none"]
        for tag in self.platform_tags():
            args += ["--platform", tag]
        return args


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("rpi-bookworm", "Raspberry Pi OS (64-bit) bookworm: Pi 3/4/5, Zero 2 W",
           "aarch64", "3.11", (2, 36), ("ai-edge-litert>=2.1",)),
    Target("rpi-bookworm-fallback",
           "Raspberry Pi OS bookworm with tflite-runtime 2.14 as the probe's fallback",
           "aarch64", "3.11", (2, 36), ("ai-edge-litert>=2.1", "tflite-runtime==2.14.0",
                                        "numpy<2"), install_extra=("tflite-runtime",),
           notes="tflite-runtime needs numpy<2 and lacks int8 XNNPACK: a fallback only"),
    Target("qemu-aarch64", "Debian bookworm arm64 under qemu-user (the CI emulation check)",
           "aarch64", "3.11", (2, 36), ("ai-edge-litert==2.1.6",),
           notes="ai-edge-litert 2.2.0/2.3.0 crash (SIGSEGV) under qemu-user; 2.1.6 works"),
    Target("jetpack6", "NVIDIA Jetson Orin, JetPack 6 (Ubuntu 22.04, Python 3.10)",
           "aarch64", "3.10", (2, 35), ("ai-edge-litert>=2.1",)),
    Target("jetpack5", "NVIDIA Jetson Xavier/Orin, JetPack 5 (Ubuntu 20.04) with a "
           "Python 3.11 from deadsnakes", "aarch64", "3.11", (2, 31), ("ai-edge-litert>=2.1",),
           notes="JetPack 5's own Python 3.8 is too old for the agent (needs >= 3.10)"),
    Target("x86_64", "x86_64 Linux, glibc >= 2.28 (Debian 10+, Ubuntu 20.04+), Python 3.11",
           "x86_64", "3.11", (2, 28), ("ai-edge-litert>=2.1",)),
)}


@dataclass(frozen=True)
class Wheelhouse:
    """A finished wheel directory."""

    dir: Path
    target: Target
    own_wheel: str
    files: tuple[str, ...]
    size_bytes: int
    requirements: tuple[str, ...] = field(default=())

    def install_args(self) -> list[str]:
        return ["install", "--no-index", "--find-links", str(self.dir), PROJECT,
                *self.target.install_extra]

    def install_command(self, pip: str = "pip") -> str:
        return " ".join([pip, *self.install_args()])

    def as_dict(self, files_in: Path | None = None) -> dict[str, Any]:
        """The ``wheelhouse.json`` record; hashes the files in ``files_in`` (default: dir)."""
        where = files_in or self.dir
        return {"target": self.target.name, "description": self.target.description,
                "machine": self.target.machine, "python": self.target.python,
                "glibc": ".".join(map(str, self.target.glibc)),
                "requirements": list(self.requirements), "own_wheel": self.own_wheel,
                "size_bytes": self.size_bytes, "install": self.install_command(),
                "files": {f: _sha256(where / f) for f in self.files}}


def _sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _pip(python: str, args: Sequence[str], what: str) -> None:
    proc = subprocess.run([python, "-m", "pip", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, check=False)
    if proc.returncode == 0:
        return
    errs = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip().startswith("ERROR")]
    why = "; ".join(errs[-3:]) or (proc.stderr.strip().splitlines() or ["?"])[-1]
    if any("No matching distribution" in e or "Could not find a version" in e or
           "ResolutionImpossible" in e for e in errs):
        raise BadInputError(f"{what}: no wheel for this target ({why})")
    raise TransportError(f"{what}: pip failed with exit status {proc.returncode} ({why})")


def build_own_wheel(out_dir: Path, *, project_root: Path = ROOT,
                    python: str = sys.executable, run_pip: PipRunner | None = None) -> Path:
    """``pip wheel --no-deps --no-build-isolation .`` (needs hatchling in ``python``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".own-") as tmp:
        (run_pip or _pip)(python, ["wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                                   tmp, str(project_root)], "building the edge-inference wheel")
        built = sorted(Path(tmp).glob("edge_inference-*.whl"))
        if len(built) != 1:
            raise TransportError(f"expected one edge_inference wheel, pip made {built}")
        dest = out_dir / built[0].name
        os.replace(built[0], dest)
    return dest


def check_out_dir(out: Path) -> Path:
    """The absolute wheelhouse directory, or BadInputError if replacing it could lose data.

    ``out`` may be missing, empty, or a wheelhouse written before (its ``wheelhouse.json``
    lists every file in it); anything else is refused, as ``edge-convert -o`` does, and
    so is the current directory or one holding it (the shell would be left in a removed
    directory). Runs before any build or download.
    """
    out = Path(os.path.abspath(out))
    cwd = Path.cwd()
    if out == cwd or out in cwd.parents:
        raise BadInputError(f"--out {out}: is the current directory or holds it; pass a "
                            "new directory such as --out wheelhouse/TARGET")
    if not out.exists():
        return out
    if not out.is_dir():
        raise BadInputError(f"--out {out}: exists and is not a directory")
    present = {p.name for p in out.iterdir()}
    ours: set[str] = set()
    if MANIFEST in present:
        try:
            ours = {MANIFEST, "requirements.txt",
                    *json.loads((out / MANIFEST).read_text())["files"]}
        except (OSError, ValueError, KeyError, TypeError):
            ours = set()
    foreign = sorted(present - ours)
    if foreign:
        raise BadInputError(f"--out {out}: exists and holds files that are not a wheelhouse "
                            f"written by edge-fleet ({', '.join(foreign[:3])}"
                            f"{', …' if len(foreign) > 3 else ''}); refusing to replace it")
    return out


def build_wheelhouse(target: Target | str, out: Path, *, own_wheel: Path | None = None,
                     extra: Sequence[str] = (), python: str = sys.executable,
                     project_root: Path = ROOT, run_pip: PipRunner | None = None) -> Wheelhouse:
    """Download the agent and its dependencies for ``target`` into ``out``.

    ``own_wheel``: a prebuilt edge-inference wheel (default: built now). ``extra``: more
    requirements (e.g. ``pytest`` for a test venv). ``out`` must pass :func:`check_out_dir`
    (checked before anything is built); the wheelhouse is built in a temp directory
    beside it and swapped in only when complete, so a failed build leaves ``out`` as it
    was. ``run_pip``: the pip seam (tests inject faults; default runs ``python -m pip``).
    """
    t = TARGETS.get(target) if isinstance(target, str) else target
    if t is None:
        raise BadInputError(f"unknown wheelhouse target {target!r} (known: "
                            f"{', '.join(TARGETS)})")
    if own_wheel is not None and not own_wheel.is_file():
        raise BadInputError(f"--wheel {own_wheel}: no such file")
    final = check_out_dir(out)
    pip = run_pip or _pip
    with staged_dir(final) as tmp:
        if own_wheel is None:
            own = build_own_wheel(tmp, project_root=project_root, python=python, run_pip=pip)
        else:
            own = tmp / own_wheel.name
            shutil.copy2(own_wheel, own)
        reqs = (str(own), *target_marker_requirements(own, t), *t.runtime, *extra)
        pip(python, ["download", "-q", "--progress-bar=off", "-d", str(tmp),
                     *t.pip_target_args(), *reqs],
            f"downloading wheels for {t.name} ({t.machine}, CPython {t.python})")
        files = tuple(sorted(p.name for p in tmp.glob("*.whl")))
        size = sum((tmp / f).stat().st_size for f in files)
        reqs_pinned = (f"{PROJECT}=={own.name.split('-')[1]}", *t.runtime, *extra)
        atomic_write_text(tmp / "requirements.txt", "\n".join(reqs_pinned) + "\n")
        wh = Wheelhouse(final, t, own.name, files, size, reqs_pinned)
        atomic_write_text(tmp / MANIFEST, json.dumps(wh.as_dict(tmp), indent=1) + "\n")
    return wh


def target_marker_requirements(wheel: Path, target: Target) -> list[str]:
    """Our wheel's dependencies whose markers hold on ``target`` but not here.

    ``pip download --python-version 3.10`` still evaluates markers against the running
    Python, so ``tomli; python_version < '3.11'`` would be left out of a JetPack 6 (3.10)
    wheelhouse built on 3.11. Such requirements are passed to pip explicitly.
    """
    from packaging.requirements import InvalidRequirement, Requirement

    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta).decode("utf-8")
    env = {"python_version": target.python, "python_full_version": target.python + ".0",
           "platform_machine": target.machine, "sys_platform": "linux",
           "platform_system": "Linux", "os_name": "posix", "implementation_name": "cpython",
           "platform_python_implementation": "CPython", "extra": ""}
    out = []
    for line in text.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        try:
            req = Requirement(line.split(":", 1)[1].strip())
        except InvalidRequirement:
            continue
        if req.marker is None or not req.marker.evaluate(env) or req.marker.evaluate():
            continue
        req.marker = None
        out.append(str(req))
    return out


def _human(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _cmd(a: argparse.Namespace) -> int:
    if a.list or not a.target:
        for t in TARGETS.values():
            print(f"{t.name:24} {t.machine:8} py{t.python:5} glibc {t.glibc[0]}.{t.glibc[1]:<3} "
                  f"{' '.join(t.runtime):45} {t.description}")
        return 0
    out = Path(a.out or Path("wheelhouse") / a.target)
    wh = build_wheelhouse(a.target, out, own_wheel=Path(a.wheel) if a.wheel else None,
                          extra=a.extra or ())
    print(f"wheelhouse {wh.target.name}: {len(wh.files)} wheels, {_human(wh.size_bytes)} "
          f"({wh.size_bytes} bytes) in {wh.dir}")
    for f in wh.files:
        print(f"  {f}")
    print(f"install on the board: {wh.install_command()}")
    return 0


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``wheelhouse`` to an argparse subparsers object (``edge-fleet wheelhouse``)."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "wheelhouse", help="download every wheel a board needs (offline install)",
        description=__doc__.split("\n\n")[0] if __doc__ else None)
    _arguments(p)
    p.set_defaults(func=_cmd)
    return p


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", nargs="?", choices=sorted(TARGETS), help="kind of board")
    p.add_argument("--out", help="wheel directory (default: wheelhouse/TARGET): new, empty "
                   "or a wheelhouse written before, which is replaced; anything else is refused")
    p.add_argument("--wheel", help="prebuilt edge-inference wheel (default: build it now)")
    p.add_argument("--extra", action="append", metavar="REQ",
                   help="another requirement to include (repeatable), e.g. pytest")
    p.add_argument("--list", action="store_true", help="list the targets")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fleet.wheelhouse",
                                description=__doc__.split("\n\n")[0] if __doc__ else None)
    _arguments(p)
    a = p.parse_args(argv)
    try:
        return _cmd(a)
    except (BadInputError, TransportError) as e:
        print(f"wheelhouse: error: {e}", file=sys.stderr)
        return 2 if isinstance(e, BadInputError) else 1


if __name__ == "__main__":
    sys.exit(main())
