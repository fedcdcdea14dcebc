"""The systemd side: unit + installer under a root prefix, sd_notify, watchdog, logs, checks.

sd_notify is tested against a real AF_UNIX datagram socket standing in for systemd's, and
the notifier component against a real Agent.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from waiting import wait_for

from edge_agent.cli_service import check_config
from edge_agent.config import load_config
from edge_agent.errors import ConfigError
from edge_agent.logs import JournalFormatter, JsonLinesFormatter
from edge_agent.systemd import (
    DEFAULT_CONFIG,
    ServiceOptions,
    SystemdNotifier,
    Watchdog,
    install_service,
    render_unit,
    sd_notify,
    watchdog_interval_s,
)

ROOT = Path(__file__).resolve().parents[2]
AGENT = [sys.executable, "-m", "edge_agent.cli"]


class NotifySocket:
    """A datagram socket where systemd's would be; ``messages`` are what arrived."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)

    def drain(self, wait_s: float = 0.0) -> list[str]:
        out, deadline = [], time.monotonic() + wait_s
        while True:
            try:
                out.append(self.sock.recv(4096).decode())
            except TimeoutError:
                if time.monotonic() >= deadline:
                    return out


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    s = NotifySocket(tmp_path / "notify.sock")
    yield s
    s.sock.close()


def test_install_under_a_root_prefix_writes_everything_and_runs_nothing(tmp_path: Path) -> None:
    ran: list[list[str]] = []
    opts = ServiceOptions(exec_path=Path("/opt/edge-agent/bin/edge-agent"), notify=True)
    rep = install_service(opts, root=tmp_path, enable=True, runner=ran.append)
    unit = (tmp_path / "etc/systemd/system/edge-agent.service").read_text()
    assert unit == render_unit(opts)
    for line in ("User=edge-agent", "Restart=on-failure", "StateDirectory=edge-agent",
                 "Type=notify", "WatchdogSec=60s",
                 "ExecStart=/opt/edge-agent/bin/edge-agent run --config "
                 "/etc/edge-agent/agent.toml"):
        assert line in unit.splitlines()
    assert (tmp_path / "etc/sysusers.d/edge-agent.conf").read_text().startswith("u edge-agent ")
    cfg = tmp_path / "etc/edge-agent/agent.toml"
    assert cfg.read_text() == DEFAULT_CONFIG and oct(cfg.stat().st_mode & 0o777) == "0o640"
    assert (tmp_path / "var/lib/edge-agent").is_dir()
    assert ran == [] and rep.commands == []  # no user, no systemctl outside the host root


def test_without_the_notifier_component_the_unit_does_not_wait_for_ready() -> None:
    unit = render_unit(ServiceOptions(notify=False)).splitlines()
    assert "Type=exec" in unit and "Type=notify" not in unit
    assert not any(ln.startswith("WatchdogSec=") for ln in unit)


def test_install_keeps_an_existing_config(tmp_path: Path) -> None:
    cfg = tmp_path / "etc/edge-agent/agent.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("[agent]\ndevice_id = 'mine'\n")
    rep = install_service(ServiceOptions(), root=tmp_path)
    assert cfg.read_text() == "[agent]\ndevice_id = 'mine'\n" and str(cfg) in rep.kept


def test_on_the_host_the_install_creates_the_user_and_reloads_systemd() -> None:
    rep = install_service(ServiceOptions(user="edge-agent-test-nobody"), root=Path("/"),
                          start=True, dry_run=True)
    first = rep.commands[0]
    assert first[0] in ("systemd-sysusers", "useradd")
    assert ["systemctl", "daemon-reload"] in rep.commands
    assert rep.commands[-1] == ["systemctl", "enable", "--now", "edge-agent.service"]


def test_on_the_host_the_install_makes_the_service_users_device_key() -> None:
    """Sealed bundles: the key is made by the service user (0600, its owner), once."""
    opts = ServiceOptions(user="edge-agent-test-nobody")
    rep = install_service(opts, root=Path("/"), dry_run=True)
    assert ["runuser", "-u", "edge-agent-test-nobody", "--", str(opts.exec_path), "keygen",
            "--key", "/var/lib/edge-agent/device.key"] in rep.commands


def test_the_shipped_unit_is_the_rendered_unit() -> None:
    """Regenerate: edge-agent install-service --print-unit --exec /opt/edge-agent/bin/edge-agent
    > packaging/systemd/edge-agent.service (the unit changes when the agent loads the notifier).
    """
    shipped = (ROOT / "packaging/systemd/edge-agent.service").read_text()
    assert shipped == render_unit(ServiceOptions(exec_path=Path("/opt/edge-agent/bin/edge-agent")))


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = tmp_path / "edge-agent.service"
    unit.write_text(render_unit(ServiceOptions(exec_path=Path(sys.executable),
                                               watchdog_s=30, notify=True)))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                       check=False)
    assert r.returncode == 0, r.stderr
    assert "edge-agent.service:" not in r.stderr, r.stderr  # no warning about our unit


def test_options_refuse_relative_paths() -> None:
    with pytest.raises(ConfigError, match="absolute"):
        ServiceOptions(exec_path=Path("bin/edge-agent"))


def test_the_starter_config_passes_check_config(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(DEFAULT_CONFIG.replace('profile = "auto"', 'profile = "rpi4"'))
    lines = check_config(cfg)
    assert lines[0].startswith(f"device {load_config(cfg).agent.device_id}, profile rpi4")


def test_check_config_names_the_file_and_key_and_exits_2(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text('[agent]\nprofile = "rpi4"\n[http]\nport = "x"\n')
    r = subprocess.run([*AGENT, "check-config", "--config", str(cfg)], capture_output=True,
                       text=True, check=False, cwd=ROOT)
    assert r.returncode == 2
    err = r.stderr.strip()
    assert str(cfg) in err and "http.port" in err and len(err.splitlines()) == 1


def test_check_config_opens_the_bundles_it_would_serve(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    (tmp_path / "empty").mkdir()  # exists, so it passes load_config, but is no bundle
    cfg.write_text(f'[agent]\nprofile = "rpi4"\n[[models]]\nbundle = "{tmp_path}/empty"\n')
    r = subprocess.run([*AGENT, "check-config", "--config", str(cfg)], capture_output=True,
                       text=True, check=False, cwd=ROOT)
    assert r.returncode == 2 and "empty: missing model.tflite" in r.stderr, r.stderr
    ok = subprocess.run([*AGENT, "check-config", "--config", str(cfg), "--no-models"],
                        capture_output=True, text=True, check=False, cwd=ROOT)
    assert ok.returncode == 0 and ": OK" in ok.stdout


def test_install_service_command_dry_run_prints_the_plan(tmp_path: Path) -> None:
    r = subprocess.run([*AGENT, "install-service", "--root", str(tmp_path), "--dry-run"],
                       capture_output=True, text=True, check=False, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert f"would write {tmp_path}/etc/systemd/system/edge-agent.service" in r.stdout
    assert not (tmp_path / "etc").exists()


def test_sd_notify_sends_to_a_path_socket(notify: NotifySocket) -> None:
    assert sd_notify("READY=1", {"NOTIFY_SOCKET": str(notify.path)})
    assert notify.drain(0.5) == ["READY=1"]


def test_sd_notify_sends_to_an_abstract_socket() -> None:
    name = f"edge-agent-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        s.settimeout(2)
        assert sd_notify("WATCHDOG=1", {"NOTIFY_SOCKET": "@" + name})
        assert s.recv(100) == b"WATCHDOG=1"


def test_sd_notify_outside_systemd_does_nothing(tmp_path: Path) -> None:
    assert not sd_notify("READY=1", {})
    assert not sd_notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})


def test_watchdog_interval_is_for_this_process_only() -> None:
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "nope"}) is None
    assert watchdog_interval_s({}) is None


def test_the_watchdog_pings_only_while_healthy(notify: NotifySocket) -> None:
    healthy = [True]
    wd = Watchdog(0.2, lambda: healthy[0], {"NOTIFY_SOCKET": str(notify.path)})
    wd.start()
    try:
        assert notify.drain(0.55).count("WATCHDOG=1") >= 3
        healthy[0] = False
        time.sleep(0.3)  # a ping decided before the flip may still be on its way
        notify.drain()
        assert notify.drain(0.5) == []  # wedged: systemd will restart us
    finally:
        wd.stop()


def test_the_notifier_tells_systemd_when_a_real_agent_is_ready_and_stopping(
        notify: NotifySocket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_agent.app import Agent

    monkeypatch.setenv("NOTIFY_SOCKET", str(notify.path))
    monkeypatch.setenv("WATCHDOG_USEC", "300000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    cfg = load_config(None, {"http.enabled": False, "agent.store_dir": str(tmp_path / "store"),
                             "agent.profile": "generic-x86_64", "agent.device_id": "svc-test"},
                      env={})
    agent = Agent(cfg, components=["systemd"])
    agent.start()
    try:
        got = notify.drain(0.5)
        assert got[0] == "READY=1\nSTATUS=serving no models"
        assert "WATCHDOG=1" in got
    finally:
        agent.stop()
    assert "STOPPING=1" in notify.drain(0.3)


def test_a_request_that_never_returns_on_the_http_loop_stops_the_watchdog_pings(
        notify: NotifySocket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A hung request on the event loop (a first, inline probe of a route that blocks, as a
    hung invoke would) stalls every connection; the watchdog sees the loop stuck in one
    turn past its period, stops pinging and says why, so systemd restarts the agent. Once
    the turn ends, pings resume."""
    from edge_agent.app import Agent

    monkeypatch.setenv("NOTIFY_SOCKET", str(notify.path))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # pings every 0.2 s
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    cfg = load_config(None, {"http.port": 0, "agent.store_dir": str(tmp_path / "store"),
                             "agent.profile": "generic-x86_64", "agent.device_id": "svc-stall"},
                      env={})
    agent = Agent(cfg, components=["systemd"])
    gate = threading.Event()

    def hang(_req: object) -> tuple[int, object]:
        gate.wait(10)
        return 200, {"hung": False}
    assert agent.http is not None
    agent.http.add_route("GET", "/test-hang", hang, name="test-hang", auth=False, inline=True)
    agent.start()
    client = None
    try:
        assert notify.drain(0.7).count("WATCHDOG=1") >= 2  # idle in select: healthy
        host, port = agent.http.address
        client = socket.create_connection((host, port), timeout=5)
        client.sendall(b"GET /test-hang HTTP/1.1\r\nHost: x\r\n\r\n")
        with caplog.at_level(logging.ERROR, logger="edge_agent.systemd"):
            deadline = time.monotonic() + 5
            while agent.http.stalled_s() < 0.2 and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.25)  # a ping decided before the stall may still be on its way
            notify.drain()
            assert notify.drain(0.6) == []
        stalls = [r.getMessage() for r in caplog.records if "one turn" in r.getMessage()]
        assert len(stalls) == 1 and "not pinging the systemd watchdog" in stalls[0]
        gate.set()
        assert client.recv(4096).startswith(b"HTTP/1.1 200")
        http = agent.http  # the loop ends its turn just after the send the client reads
        wait_for(lambda: http.stalled_s() < 0.2, what="the loop back in select", timeout_s=5)
        assert notify.drain(0.7).count("WATCHDOG=1") >= 2
    finally:
        gate.set()
        if client is not None:
            client.close()
        agent.stop()


def test_the_notifier_reports_its_status_line_and_pings_while_healthy(
        notify: NotifySocket) -> None:
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "200000"}
    n = SystemdNotifier(health=lambda: True, status=lambda: "serving digits", env=env)
    n.start()
    try:
        got = notify.drain(0.5)
        assert got[0] == "READY=1\nSTATUS=serving digits" and "WATCHDOG=1" in got
    finally:
        n.stop()
    assert "STOPPING=1" in notify.drain(0.3)


def test_the_notifier_without_a_status_sends_only_ready(notify: NotifySocket) -> None:
    n = SystemdNotifier(health=lambda: True, env={"NOTIFY_SOCKET": str(notify.path)})
    n.start()
    n.stop()
    assert notify.drain(0.3) == ["READY=1", "STOPPING=1"]
    assert n.watchdog is None  # no $WATCHDOG_USEC: no pings


def test_json_lines_formatter_is_one_object_per_line() -> None:
    rec = logging.LogRecord("edge_agent.x", logging.WARNING, __file__, 1, "queue %d full",
                            (3,), None)
    rec.model = "digits"
    d = json.loads(JsonLinesFormatter().format(rec))
    assert (d["level"], d["logger"], d["msg"], d["model"]) == ("warning", "edge_agent.x",
                                                              "queue 3 full", "digits")
    assert d["ts"].endswith("+00:00") and d["pid"] == os.getpid()
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        rec.exc_info = sys.exc_info()
    line = JsonLinesFormatter().format(rec)
    assert "\n" not in line and "boom" in json.loads(line)["exc"]


def test_journal_formatter_prefixes_every_line_with_its_priority() -> None:
    rec = logging.LogRecord("edge_agent", logging.ERROR, __file__, 1, "a\nb", (), None)
    assert JournalFormatter().format(rec) == "<3>edge_agent: a\n<3>b"
