"""Shared fixtures: a real trained+converted digits bundle, and a real Mosquitto broker.

Expensive artefacts (TF training/conversion) are session-scoped and cached under
``.cache/test-artifacts`` keyed by the converter's source hash, so a second run of
the suite does not retrain.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from build_lock import cached_build
from det_models import SquareBundle, square_bundle_at
from model_fixtures import KeywordSpotter, TwoHeads, keyword_spotter_at, raw_variant, two_heads_at
from waiting import port_accepts

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "test-artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _source_key(*dirs: str) -> str:
    h = hashlib.sha256()
    for d in dirs:
        for p in sorted((ROOT / d).rglob("*.py")):
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class DigitsArtifacts:
    dir: Path
    keras: Path
    calib_npz: Path
    eval_npz: Path
    bundle: Path  # digits v1 bundle directory (int8, profile generic-x86_64)
    bundle_v2: Path  # same model, version 2


def _build_digits(out: Path) -> None:
    from converter.build import ConvertOptions, convert_to_bundle
    from converter.digits import load_split, train_cnn, write_npz

    split = load_split()
    train_cnn(split, out / "digits.keras")
    calib, ev = write_npz(split, out)
    for version in (1, 2):
        convert_to_bundle(ConvertOptions(
            model=out / "digits.keras", representative=calib, eval_data=ev,
            profile="generic-x86_64", name="digits", version=version,
            output=out / f"digits-v{version}"))


@pytest.fixture(scope="session")
def digits() -> DigitsArtifacts:
    """A digits CNN trained on sklearn's load_digits and converted to full int8 (cached)."""
    out = CACHE / f"digits-{_source_key('converter', 'edge_agent/bundle.py')}"
    cached_build(out, "digits-v2/manifest.json", _build_digits)
    return DigitsArtifacts(out, out / "digits.keras", out / "calib.npz", out / "eval.npz",
                           out / "digits-v1", out / "digits-v2")


@pytest.fixture(scope="session")
def two_heads() -> TwoHeads:
    """A tabular Keras model with a class head and a regression head, converted (cached)."""
    return two_heads_at(CACHE / f"two-heads-{_source_key('converter', 'edge_agent/bundle.py')}")


@pytest.fixture(scope="session")
def kws() -> KeywordSpotter:
    """A 1-D audio keyword spotter (Conv1D on [1600] clips, 3 tones), converted (cached)."""
    return keyword_spotter_at(CACHE / f"kws-{_source_key('converter', 'edge_agent/bundle.py')}")


@pytest.fixture(scope="session")
def square_detector() -> SquareBundle:
    """A Keras detector (``boxes``, ``scores``) trained on synthetic squares, converted with
    ``--task detection`` (cached)."""
    key = _source_key("converter", "edge_agent/bundle.py", "edge_agent/manifest.py",
                      "edge_agent/detection.py")
    return square_bundle_at(CACHE / f"squares-{key}")


@pytest.fixture(scope="session")
def digits_raw(digits: DigitsArtifacts, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits model as a model without a class head (task ``raw``, ``digits-raw``)."""
    return raw_variant(digits.bundle, tmp_path_factory.mktemp("raw"))


@dataclass
class Broker:
    host: str
    port: int
    proc: subprocess.Popen[bytes] | None
    conf: Path
    log: Path

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def start(self) -> None:
        """(Re)start mosquitto with the same config and port; waits until it accepts."""
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=open(self.log, "ab"))  # noqa: SIM115
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if port_accepts(self.host, self.port):
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening")


def start_mosquitto(tmp: Path, extra_conf: str = "", port: int | None = None) -> Broker:
    """Start a private Mosquitto on a free loopback port (persistence on, for QoS 1 tests)."""
    if not (shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists()):
        pytest.fail("mosquitto is not installed (apt-get install mosquitto); .ci/run installs it")
    port = port or free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    conf = tmp / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        f"persistence true\npersistence_location {tmp}/\n"
        "max_queued_messages 100000\n"
        "message_size_limit 0\n"
        "log_type error\nlog_type warning\n"
        # as root, mosquitto drops to user 'mosquitto', which cannot write pytest's 0700
        # temp dirs: retained messages would be lost across Broker.stop()/start()
        + ("user root\n" if os.geteuid() == 0 else "") + extra_conf)
    b = Broker("127.0.0.1", port, None, conf, tmp / "mosquitto.log")
    b.start()
    return b


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    """A real Mosquitto broker on a free port, private to one test."""
    b = start_mosquitto(tmp_path / "broker")
    yield b
    b.stop()


@pytest.fixture(scope="session")
def mosquitto_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One broker shared by tests that do not stop or reconfigure it."""
    b = start_mosquitto(tmp_path_factory.mktemp("broker"))
    yield b
    b.stop()


@pytest.fixture
def python_exe() -> str:
    return sys.executable
