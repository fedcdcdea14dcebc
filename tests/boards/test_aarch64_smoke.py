"""The agent on an emulated Raspberry Pi 4 (Debian bookworm arm64, qemu-user, Cortex-A72).

``scripts/aarch64_smoke.sh`` builds the root filesystem, installs the agent from the aarch64
wheelhouse into two venvs inside it (``/opt/edge-agent``: ai-edge-litert 2.1.6;
``/opt/fallback``: ai-edge-litert 2.3.0 + tflite-runtime 2.14.0) and runs this file with
their paths in the environment. Here the emulated ``edge-agent`` is a real process on the
host's loopback: it loads a bundle, verifies its golden vectors, answers a REST predict
and one TF Serving gRPC Predict (grpcio + protobuf aarch64 wheels, the ``grpc`` extra),
and publishes its birth to a Mosquitto on the host. Every test names the runtime it ran
(``EDGE_AARCH64_REPORT`` collects them for the CI log).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest

from edge_agent.bundle import read_bundle

pytestmark = pytest.mark.emulation

ROOTFS = os.environ.get("EDGE_AARCH64_ROOTFS", "")
VENV = Path(os.environ.get("EDGE_AARCH64_VENV", "/nonexistent"))
FALLBACK = Path(os.environ.get("EDGE_AARCH64_FALLBACK_VENV", "/nonexistent"))
EXPECT = os.environ.get("EDGE_AARCH64_EXPECT", "ai-edge-litert 2.1.6")
START_TIMEOUT_S = 240.0  # emulation is ~50x slower; a cold start takes ~10 s here

if not ROOTFS:
    pytest.skip("run scripts/aarch64_smoke.sh (it builds the emulated board)",
                allow_module_level=True)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["QEMU_CPU"] = os.environ.get("QEMU_CPU", "cortex-a72")
    return env


def report(key: str, value: Any) -> None:
    """Record what ran (runtime, versions, timings) for the CI log."""
    path = os.environ.get("EDGE_AARCH64_REPORT")
    if not path:
        return
    p = Path(path)
    doc = json.loads(p.read_text()) if p.exists() else {}
    doc[key] = value
    p.write_text(json.dumps(doc, indent=1) + "\n")


def emulated(venv: Path, code: str, *args: str, cwd: Path, timeout_s: float = 600) -> Any:
    r = subprocess.run([str(venv / "bin" / "python"), "-c", code, *args], capture_output=True,
                       text=True, cwd=cwd, env=_env(), timeout=timeout_s, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def bundles() -> dict[str, Path]:
    return {k: Path(v) for k, v in
            json.loads(Path(os.environ["EDGE_MATRIX_BUNDLES"]).read_text()).items()}


def test_the_emulated_board_is_bookworm_arm64_on_cortex_a72(tmp_path: Path) -> None:
    # HWCAP bit 8 (LSE atomics, ARMv8.1) is absent on a Cortex-A72 (ARMv8.0) but present on
    # qemu's default "max" CPU: it shows QEMU_CPU=cortex-a72 took effect.
    info = emulated(VENV, "import ctypes, json, platform, sys\n"
                          "hwcap = ctypes.CDLL(None).getauxval(16)\n"
                          "print(json.dumps({'machine': platform.machine(),"
                          " 'python': platform.python_version(),"
                          " 'glibc': platform.libc_ver()[1], 'prefix': sys.prefix,"
                          " 'hwcap': hwcap}))", cwd=tmp_path)
    report("platform", info)
    assert info["machine"] == "aarch64" and info["glibc"] == "2.36"
    assert info["python"].startswith("3.11.")
    assert info["prefix"].endswith("/opt/edge-agent")
    assert info["hwcap"] & 0x2 and not info["hwcap"] & (1 << 8)  # ASIMD yes, LSE atomics no


def test_the_install_guide_verification_steps_run_on_the_board(bundles: dict[str, Path],
                                                               tmp_path: Path) -> None:
    r = subprocess.run([str(VENV / "bin" / "python"), "-m", "edge_agent.runtime.probe",
                        "--bundle", str(bundles["digits"]), "--state-dir", str(tmp_path / "p")],
                       capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=300,
                       check=False)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["selected"] == EXPECT
    agent = str(VENV / "bin" / "edge-agent")
    r = subprocess.run([agent, "install-service", "--root", str(tmp_path / "root"),
                        "--exec", "/opt/edge-agent/bin/edge-agent"], capture_output=True,
                       text=True, env=_env(), cwd=tmp_path, timeout=300, check=False)
    assert r.returncode == 0, r.stderr
    unit = (tmp_path / "root/etc/systemd/system/edge-agent.service").read_text()
    assert "ExecStart=/opt/edge-agent/bin/edge-agent run --config /etc/edge-agent/agent.toml" \
        in unit
    # No device tree under qemu-user: name the board's profile like an env override would.
    r = subprocess.run([agent, "check-config", "--config",
                        str(tmp_path / "root/etc/edge-agent/agent.toml")], capture_output=True,
                       text=True, env={**_env(), "EDGE_AGENT__AGENT__PROFILE": "rpi4"},
                       cwd=tmp_path, timeout=300, check=False)
    assert r.returncode == 0 and "profile rpi4" in r.stdout, r.stderr


def test_golden_vectors_are_bit_exact_under_emulation(bundles: dict[str, Path],
                                                     tmp_path: Path) -> None:
    code = ("import json, sys, time\n"
            "from edge_agent.bundle import read_bundle\n"
            "from edge_agent.runtime import select_runtime, verify_golden\n"
            "rt = select_runtime(); out = {'runtime': str(rt)}\n"
            "for p in sys.argv[1:]:\n"
            "    b = read_bundle(p); t = time.monotonic(); g = verify_golden(b, rt)\n"
            "    out[b.name] = {'vectors': g.vectors, 'max_abs_diff': g.max_abs_diff,\n"
            "                   'seconds': round(time.monotonic() - t, 2)}\n"
            "print(json.dumps(out))")
    res = emulated(VENV, code, str(bundles["digits"]), str(bundles["mobilenet_v2"]),
                   cwd=tmp_path)
    report("golden", res)
    assert res["runtime"] == EXPECT
    for name in ("digits", "mobilenet_v2"):
        assert res[name]["vectors"] >= 1 and res[name]["max_abs_diff"] == 0.0, res


class Birth:
    """Collects the retained status messages of one device from the host's broker."""

    def __init__(self, host: str, port: int, device: str) -> None:
        self.got: list[dict[str, Any]] = []
        self.cond = threading.Condition()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="aarch64-smoke")
        self.c.on_message = self._on
        self.c.connect(host, port)
        self.c.subscribe(f"edge/{device}/status", qos=1)
        self.c.loop_start()

    def _on(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self.cond:
            self.got.append(json.loads(msg.payload))
            self.cond.notify_all()

    def wait_for(self, state: str, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while True:
                hit = next((m for m in self.got if m.get("state") == state), None)
                if hit is not None:
                    return hit
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {state!r} status within {timeout_s} s: {self.got}")
                self.cond.wait(left)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


@pytest.fixture
def agent(bundles: dict[str, Path], mosquitto: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """``edge-agent run`` inside the emulated venv, as the install guide starts it."""
    birth = Birth(mosquitto.host, mosquitto.port, "qemu-pi4")
    err = tmp_path / "agent.err"
    cmd = [str(VENV / "bin" / "edge-agent"), "run", "--model", str(bundles["digits"]),
           "--http", "127.0.0.1:0", "--profile", "rpi4", "--store", str(tmp_path / "store"),
           "--device-id", "qemu-pi4", "--mqtt", mosquitto.url, "--grpc", "127.0.0.1:0"]
    t0 = time.monotonic()
    with open(err, "w") as errf:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errf, cwd=tmp_path,
                                env=_env())
    url = grpc_at = None
    while time.monotonic() - t0 < START_TIMEOUT_S and proc.poll() is None:
        m = re.search(r"ready: .* on (http://127\.0\.0\.1:\d+).*grpc on (127\.0\.0\.1:\d+)",
                      err.read_text())
        if m:
            url, grpc_at = m.group(1), m.group(2)
            break
        time.sleep(0.2)
    try:
        assert url, f"agent not ready (exit {proc.poll()}):\n{err.read_text()[-3000:]}"
        yield {"url": url, "grpc": grpc_at, "birth": birth, "proc": proc,
               "ready_s": time.monotonic() - t0, "stderr": err}
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        birth.close()


def _http(url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return dict(json.loads(r.read()))


def test_the_agent_serves_rest_and_publishes_its_birth_on_emulated_pi4(
        agent: dict[str, Any], bundles: dict[str, Path]) -> None:
    b = read_bundle(bundles["digits"])
    spec_in, spec_out = b.manifest.inputs[0], b.manifest.outputs[0]
    g = b.manifest.golden[0]
    x = (g.input.decode().astype(np.float32) - spec_in.zero_point) * spec_in.scale
    t0 = time.monotonic()
    res = _http(f"{agent['url']}/v1/models/digits:predict", {"instances": x.tolist()})
    predict_s = time.monotonic() - t0
    got = np.asarray(res["predictions"], dtype=np.float32)
    want = (g.output.decode().astype(np.float32) - spec_out.zero_point) * spec_out.scale
    assert got.shape == want.shape
    assert np.max(np.abs(got - want)) <= g.atol * spec_out.scale + 1e-6
    assert int(got.argmax()) == int(want.argmax())

    # one TF Serving gRPC Predict from the host (raw tensor_content, the agent's own protos)
    import grpc

    from edge_agent.grpc import tensors
    from edge_agent.grpc.protos import tfs_apis_pb2
    from edge_agent.runtime.backends import select_runtime
    from edge_agent.runtime.model import LoadedModel
    from edge_agent.serving.json_encode import signature_keys

    key_in = signature_keys(LoadedModel(select_runtime(), b.model_bytes,
                                        num_threads=1).input_specs)[0].name
    req = tfs_apis_pb2.PredictRequest()
    req.model_spec.name = "digits"
    tensors.to_tensor_proto(x.astype(np.float32), req.inputs[key_in])
    t0 = time.monotonic()
    with grpc.insecure_channel(agent["grpc"]) as ch:
        stub = ch.unary_unary("/tensorflow.serving.PredictionService/Predict",
                              request_serializer=tfs_apis_pb2.PredictRequest.SerializeToString,
                              response_deserializer=tfs_apis_pb2.PredictResponse.FromString)
        resp = stub(req, timeout=120)
    grpc_predict_s = time.monotonic() - t0
    (key, out), = resp.outputs.items()
    got_grpc = tensors.from_tensor_proto(out, key, max_elements=10**6)
    assert isinstance(got_grpc, np.ndarray)
    assert resp.model_spec.name == "digits" and resp.model_spec.version.value == b.version
    np.testing.assert_array_equal(got_grpc.reshape(got.shape), got)  # same answer as REST

    birth = agent["birth"].wait_for("online", 60)
    assert birth["device"] == "qemu-pi4" and birth["profile"] == "rpi4"
    assert f"{birth['runtime']['name']} {birth['runtime']['version']}" == EXPECT
    assert [m["name"] for m in birth["models"]] == ["digits"]

    with urllib.request.urlopen(f"{agent['url']}/readyz", timeout=30) as r:
        assert r.status == 200
    status = _http(f"{agent['url']}/v1/agent/status")
    probes = status["runtime"]["probes"]["probes"]
    assert probes[0]["outcome"] == "ok" and probes[0]["machine"] == "aarch64"
    report("agent", {"runtime": EXPECT, "ready_s": round(agent["ready_s"], 1),
                     "rest_predict_s": round(predict_s, 3),
                     "grpc_predict_s": round(grpc_predict_s, 3),
                     "birth_runtime": birth["runtime"], "notes":
                     status["runtime"]["capabilities"]["notes"]})

    agent["proc"].terminate()
    assert agent["proc"].wait(60) == 0
    assert agent["birth"].wait_for("offline", 30)["state"] == "offline"


def test_a_runtime_that_segfaults_under_emulation_is_probed_and_skipped(
        bundles: dict[str, Path], tmp_path: Path) -> None:
    """ai-edge-litert 2.3.0 really crashes under qemu-user; the agent falls back."""
    state = tmp_path / "state"
    cmd = [str(FALLBACK / "bin" / "python"), "-m", "edge_agent.runtime.probe", "--bundle",
           str(bundles["digits"]), "--state-dir", str(state), "--runtime", "ai-edge-litert",
           "--runtime", "tflite-runtime"]
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=_env(),
                       timeout=600, check=False)
    first_s = time.monotonic() - t0
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    crashed, ok = doc["probes"]
    assert (crashed["runtime"], crashed["outcome"], crashed["signal"], crashed["stage"]) == (
        "ai-edge-litert", "crashed", "SIGSEGV", "create"), crashed
    assert ok["runtime"] == "tflite-runtime" and ok["outcome"] == "ok"
    assert doc["selected"] == "tflite-runtime 2.14.0" and doc["fell_back"]
    # Second start: the crash verdict is cached; the crashing runtime is not touched again.
    r2 = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=_env(),
                        timeout=600, check=False)
    doc2 = json.loads(r2.stdout)
    assert doc2["probes"][0]["cached"] and doc2["probes"][0]["outcome"] == "crashed"
    report("fallback", {"crashed": f"ai-edge-litert {crashed['version']}",
                        "signal": crashed["signal"], "selected": doc["selected"],
                        "probe_s": round(first_s, 1)})
