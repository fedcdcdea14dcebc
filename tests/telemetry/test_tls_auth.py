"""TLS (server verification and client certificates) and password auth against a real
Mosquitto configured with a test CA: the right credentials connect; a wrong CA, a wrong
client certificate, no certificate and a wrong password are each refused, clearly."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from telemetry_certs import CA, Pair
from telemetry_helpers import Recorder, create, make_agent, start_mosquitto
from waiting import wait_for

from edge_agent.mqtt import MqttClient, MqttConfig, MqttConnectError


@dataclass
class Pki:
    ca: CA
    rogue: CA
    client: Pair
    rogue_client: Pair
    broker: Any


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("pki")
    ca, rogue = CA(d, "test-ca"), CA(d, "rogue-ca")
    server = ca.issue("broker", server=True)
    pw = d / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(pw), "dev-1", "s3cret"], check=True,
                   capture_output=True)
    conf = (f"allow_anonymous false\npassword_file {pw}\n"
            f"cafile {ca.pair.cert}\ncertfile {server.cert}\nkeyfile {server.key}\n"
            "require_certificate true\n")
    b = start_mosquitto(d / "broker", conf)
    yield Pki(ca, rogue, ca.issue("dev-1", server=False), rogue.issue("dev-1", server=False), b)
    b.stop()


def _cfg(pki: Pki, *, ca: Path | None = None, pair: Pair | None = None,
         password: str = "s3cret", cert: bool = True) -> MqttConfig:
    p = pair or pki.client
    raw = {"url": f"mqtts://127.0.0.1:{pki.broker.port}",
           "ca_file": str(ca or pki.ca.pair.cert), "username": "dev-1", "password": password,
           "reconnect_min_s": 0.05, "reconnect_max_s": 0.2, "connect_timeout_s": 3}
    if cert:
        raw |= {"cert_file": str(p.cert), "key_file": str(p.key)}
    return MqttConfig.from_section(raw, "agent.toml")


def _connect_error(cfg: MqttConfig) -> MqttConnectError:
    c = MqttClient(config=cfg, client_id="dev-1")
    try:
        with pytest.raises(MqttConnectError) as ei:
            c.connect(8)
        assert not c.is_connected
        return ei.value
    finally:
        c.stop()


def test_right_ca_certificate_and_password_connect(pki: Pki) -> None:
    c = MqttClient(config=_cfg(pki), client_id="dev-1")
    got: list[bytes] = []
    c.subscribe("edge/dev-1/x", lambda _t, p: got.append(p))
    try:
        c.connect(8)
        assert c.protocol == "5"
        c.publish("edge/dev-1/x", b"over tls")
        wait_for(lambda: got == [b"over tls"])
    finally:
        c.stop()


def test_wrong_ca_is_refused_naming_the_ca_file(pki: Pki) -> None:
    e = _connect_error(_cfg(pki, ca=pki.rogue.pair.cert))
    assert e.kind == "tls"
    assert "cannot verify the broker" in str(e) and "mqtt.ca_file" in str(e)


def test_client_certificate_from_another_ca_is_refused(pki: Pki) -> None:
    e = _connect_error(_cfg(pki, pair=pki.rogue_client))
    assert e.kind == "tls" and "client certificate" in str(e), str(e)


def test_missing_client_certificate_is_refused(pki: Pki) -> None:
    e = _connect_error(_cfg(pki, cert=False))
    assert e.kind == "tls" and "requires a client certificate" in str(e), str(e)


def test_wrong_password_is_refused_as_an_auth_error(pki: Pki) -> None:
    e = _connect_error(_cfg(pki, password="wrong"))
    assert e.kind == "auth" and e.rc in (0x86, 0x87, 4, 5), (e.kind, e.rc)
    assert "mqtt.password" in str(e)


def test_unknown_user_is_refused(pki: Pki) -> None:
    cfg = _cfg(pki)
    cfg = MqttConfig.from_section({"url": cfg.url, "ca_file": str(cfg.ca_file),
                                   "cert_file": str(cfg.cert_file),
                                   "key_file": str(cfg.key_file), "username": "mallory",
                                   "password": "s3cret"}, "agent.toml")
    assert _connect_error(cfg).kind == "auth"


def test_telemetry_component_works_over_mutual_tls(pki: Pki, tmp_path: Path) -> None:
    cfg = _cfg(pki)
    section = {"ca_file": str(cfg.ca_file), "cert_file": str(cfg.cert_file),
               "key_file": str(cfg.key_file), "username": "dev-1", "password": "s3cret"}
    agent = make_agent(tmp_path, cfg.url, **section)
    svc = create(agent)
    assert svc is not None
    rec = Recorder(MqttConfig.from_section(section | {"url": cfg.url}, "t"))
    svc.start()
    try:
        assert rec.wait("/status", lambda d: d["state"] == "online")["device"] == "dev-1"
        rec.wait("/telemetry")
    finally:
        svc.stop()
        rec.close()
