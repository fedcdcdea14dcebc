"""Every edge-fleet command reaches a TLS + password + ACL broker with the same flags
(fleet.broker): the real CLI (``python -m fleet.cli``) against a real Mosquitto that wants a
CA-verified server, a client certificate, a password and obeys fleet.acl's ACL."""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from fleet_helpers import Workstation
from waiting import wait_for

from edge_agent.errors import ConfigError
from fleet.acl import ADMIN_USER, mosquitto_acl
from fleet.broker import add_broker_args, broker_config, client_config
from fleet.cli import main as fleet_main
from fleet.sim_agents import SimFleet, SimSpec

ROOT = Path(__file__).resolve().parents[2]
PASSWORDS = {ADMIN_USER: "ops-pw", "sec-1": "one-pw", "sec-2": "two-pw"}
INVENTORY = {"sec-1": ["line-1"], "sec-2": ["line-2"]}


def _certs() -> ModuleType:
    """tests/telemetry/telemetry_certs.py (the test CA), loaded by path."""
    path = ROOT / "tests" / "telemetry" / "telemetry_certs.py"
    spec = importlib.util.spec_from_file_location("_fleet_telemetry_certs", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@dataclass(frozen=True)
class SecureBroker:
    url: str
    ca: Path
    ops_cert: Path
    ops_key: Path
    device_cert: Path
    device_key: Path
    ops_password_file: Path

    def flags(self, *, password: bool = True) -> list[str]:
        """The operator's broker flags for any edge-fleet command."""
        return ["--broker", self.url, "--ca-file", str(self.ca), "--cert-file",
                str(self.ops_cert), "--key-file", str(self.ops_key), "--username", ADMIN_USER,
                *(["--password-file", str(self.ops_password_file)] if password else [])]

    def device_config(self, device: str) -> dict[str, Any]:
        return {"mqtt.ca_file": str(self.ca), "mqtt.cert_file": str(self.device_cert),
                "mqtt.key_file": str(self.device_key), "mqtt.username": device,
                "mqtt.password": PASSWORDS[device]}


@pytest.fixture
def secure_broker(mosquitto: Any, tmp_path: Path) -> SecureBroker:
    """The per-test Mosquitto restarted with TLS (client certificate required), passwords
    and the generated ACL."""
    certs = _certs()
    d = tmp_path / "pki"
    d.mkdir()
    ca = certs.CA(d, "fleet-ca")
    server = ca.issue("broker", server=True)
    ops, device = ca.issue(ADMIN_USER, server=False), ca.issue("device", server=False)
    pw = d / "passwd"
    for i, (user, secret) in enumerate(PASSWORDS.items()):
        subprocess.run(["mosquitto_passwd", *(["-c"] if i == 0 else []), "-b", str(pw), user,
                        secret], check=True, capture_output=True)
    acl = d / "acl"
    acl.write_text(mosquitto_acl(INVENTORY))
    ops_pw = d / "ops.pass"
    ops_pw.write_text(PASSWORDS[ADMIN_USER] + "\n")
    mosquitto.stop()
    conf = mosquitto.conf.read_text().replace("allow_anonymous true", "allow_anonymous false")
    mosquitto.conf.write_text(
        conf + f"password_file {pw}\nacl_file {acl}\ncafile {ca.pair.cert}\n"
        f"certfile {server.cert}\nkeyfile {server.key}\nrequire_certificate true\n")
    mosquitto.start()
    return SecureBroker(f"mqtts://127.0.0.1:{mosquitto.port}", ca.pair.cert, ops.cert,
                        ops.key, device.cert, device.key, ops_pw)


@pytest.fixture
def start_secure_device(secure_broker: SecureBroker, workstation: Workstation, digits: Any,
                        tmp_path: Path) -> Iterator[Any]:
    """One simulated device per call, authenticated as its own id (the ACL wants that)."""
    fleets: list[SimFleet] = []

    def start(device: str) -> SimFleet:
        spec = SimSpec(broker_url=secure_broker.url, root_file=workstation.root_file,
                       bundle=digits.bundle, workdir=tmp_path / device, devices=(device,),
                       groups=tuple(INVENTORY[device]), probation_s=1.0, rps=5.0,
                       extra=secure_broker.device_config(device))
        sim = SimFleet(spec)
        fleets.append(sim)
        sim.start()
        assert sim.wait_connected(20), f"{device} did not connect over TLS"
        return sim

    yield start
    for f in reversed(fleets):
        f.stop()


def _edge_fleet(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "EDGE_FLEET_PASSPHRASE"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "fleet.cli", *args], capture_output=True,
                          text=True, check=False, cwd=ROOT, env=env, timeout=180)


def test_publish_and_rollout_reach_a_tls_password_acl_broker(
        secure_broker: SecureBroker, start_secure_device: Any, workstation: Workstation,
        digits: Any) -> None:
    one, two = start_secure_device("sec-1"), start_secure_device("sec-2")
    repo = ["--repo", str(workstation.repo.path), *workstation.key_args()]

    r = _edge_fleet("publish", str(digits.bundle_v2), *repo, "--device", "sec-1",
                    "--chunk-size", "16384", *secure_broker.flags())
    assert r.returncode == 0, r.stderr
    wait_for(lambda: one.active_versions("digits") == {"sec-1": 2}, 30, "v2 on sec-1")

    r = _edge_fleet("rollout", str(digits.bundle_v2), *repo, "--group", "line-2",
                    "--canary", "1", "--wait", "30s", "--discover", "2s",
                    "--chunk-size", "16384", "--client-id", "ops-rollout",
                    *secure_broker.flags())
    assert r.returncode == 0, r.stderr + r.stdout
    assert "completed" in r.stdout and "committed 1" in r.stdout, r.stdout
    assert two.active_versions("digits") == {"sec-2": 2}


def test_without_the_password_file_the_broker_refuses_the_command(
        secure_broker: SecureBroker) -> None:
    r = _edge_fleet("status", "--duration", "0.2", *secure_broker.flags(password=False))
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("edge-fleet: error:") and "Not authorized" in last, r.stderr
    assert "Traceback" not in r.stderr


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_broker_args(p)
    return p.parse_args(argv)


def test_the_flags_become_one_validated_config(tmp_path: Path) -> None:
    pw = tmp_path / "pass"
    pw.write_text("s3cret\n")
    cfg = broker_config(_args("--broker", "mqtt://h:1884", "--username", "ops",
                              "--password-file", str(pw), "--client-id", "me",
                              "--prefix", "plant"))
    assert (cfg.host, cfg.port, cfg.tls, cfg.username, cfg.password, cfg.client_id,
            cfg.topic_prefix) == ("h", 1884, False, "ops", "s3cret", "me", "plant")


@pytest.mark.parametrize(("argv", "flag"), [
    (("--broker", "mqtt://h:1883", "--ca-file", "/ca.pem"), "--ca-file"),
    (("--broker", "mqtts://h:8883", "--ca-file", "/nonexistent/ca.pem"), "--ca-file"),
    (("--broker", "http://h"), "--broker"),
    (("--broker", "mqtt://h", "--password-file", "/etc/hostname"), "--password-file"),
    (("--broker", "mqtt://h", "--prefix", "a/b"), "--prefix"),
])
def test_a_bad_flag_is_named_in_the_error(argv: tuple[str, ...], flag: str) -> None:
    with pytest.raises(ConfigError) as ei:
        broker_config(_args(*argv))
    assert ei.value.key == flag and str(ei.value).startswith(f"command line: {flag}: ")


def test_a_bad_flag_exits_2_before_any_key_is_opened(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    rc = fleet_main(["publish", str(tmp_path / "b.tar"), "--repo", str(tmp_path), "--key",
                     str(tmp_path / "no.key"), "--device", "d", "--broker", "mqtt://h",
                     "--ca-file", str(tmp_path / "ca.pem")])
    assert rc == 2
    assert "command line: --ca-file: TLS files need an mqtts:// URL" in capsys.readouterr().err


def test_simultaneous_connections_get_their_own_client_ids() -> None:
    given = broker_config(_args("--broker", "mqtt://h", "--client-id", "ops"))
    assert client_config(given, "announce").client_id == "ops-announce"
    plain = broker_config(_args("--broker", "mqtt://h"))
    assert client_config(plain, "announce") is plain  # the caller's unique default id
