"""Running under systemd: the unit, its installer, and sd_notify + watchdog.

* :func:`render_unit` / :func:`install_service` — ``edge-agent.service`` for a dedicated
  ``edge-agent`` user, ``Restart=on-failure``, state in ``/var/lib/edge-agent``
  (``StateDirectory=``), config in ``/etc/edge-agent/agent.toml``, ``Type=notify`` with an
  optional ``WatchdogSec=``. ``install_service(root=…)`` writes under a root prefix, so the
  whole install is testable without touching the host; only with ``root=/`` does it create
  the user and call ``systemctl``.
* :func:`sd_notify` — the notify protocol over a datagram socket (``$NOTIFY_SOCKET``; no
  libsystemd). :class:`Watchdog` pings ``WATCHDOG=1`` at half ``$WATCHDOG_USEC`` *only while
  a health check answers*, so a wedged agent is restarted by systemd.
  :class:`SystemdNotifier` is the agent component: READY=1 once serving, the watchdog,
  STOPPING=1 on stop; :func:`create` builds it from the agent (``None`` outside systemd).

Journald-fit log formatting is :mod:`edge_agent.logs`; the ``install-service`` and
``check-config`` commands are :mod:`edge_agent.cli_service`.

Raises :class:`~edge_agent.errors.ConfigError` (bad options) and ``OSError``.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from edge_agent.errors import ConfigError
from edge_agent.fsutil import atomic_write_text
from edge_agent.threadname import NamedThread

log = logging.getLogger(__name__)

UNIT_NAME = "edge-agent.service"
USER = "edge-agent"
CONFIG_PATH = Path("/etc/edge-agent/agent.toml")
STATE_DIR = Path("/var/lib/edge-agent")
DEFAULT_CONFIG = """\
# /etc/edge-agent/agent.toml — see docs/install.md. Env overrides: EDGE_AGENT__<SECTION>__<KEY>.
[agent]
# device_id = "pi-kitchen-1"        # default: the host name
profile = "auto"                    # rpi4, rpi5, jetson-orin-nano, ... (auto: from the board)
store_dir = "/var/lib/edge-agent"   # the model store (systemd StateDirectory)

[http]
host = "127.0.0.1"                  # 0.0.0.0 to serve the network (then set a token)
port = 8501

# [mqtt]
# url = "mqtt://broker.local:1883"
"""



@dataclass(frozen=True)
class ServiceOptions:
    """What goes into the unit. ``watchdog_s = 0`` leaves the watchdog off.

    ``notify`` selects ``Type=notify`` + ``WatchdogSec`` (the agent starts the
    :class:`SystemdNotifier` last, so ``READY=1`` means it is serving); without it the unit
    is ``Type=exec`` and has no watchdog, since nothing would send ``READY=1``.
    """

    exec_path: Path = field(default_factory=lambda: Path(sys.prefix) / "bin" / "edge-agent")
    user: str = USER
    config_path: Path = CONFIG_PATH
    watchdog_s: int = 60
    restart_sec_s: int = 5
    start_timeout_s: int = 300  # probe + golden vectors of every model on a slow board
    supplementary_groups: tuple[str, ...] = ()  # e.g. video (camera), plugdev (Coral USB)
    notify: bool = True

    def __post_init__(self) -> None:
        if not self.exec_path.is_absolute() or not self.config_path.is_absolute():
            raise ConfigError("exec and config paths must be absolute (systemd requires it)")
        if self.watchdog_s < 0 or self.restart_sec_s < 0 or self.start_timeout_s <= 0:
            raise ConfigError("watchdog, restart and start timeouts must be positive seconds")


def render_unit(o: ServiceOptions) -> str:
    """The ``edge-agent.service`` text for these options."""
    groups = f"SupplementaryGroups={' '.join(o.supplementary_groups)}\n" \
        if o.supplementary_groups else ""
    watchdog = f"WatchdogSec={o.watchdog_s}s\n" if o.watchdog_s and o.notify else ""
    kind = "Type=notify\nNotifyAccess=main" if o.notify else "Type=exec"
    return f"""\
[Unit]
Description=Edge inference agent (LiteRT models over TF-Serving REST and MQTT)
Wants=network-online.target
After=network-online.target
# A runtime that crashes at every start is probed and skipped by the agent; this stops
# any other restart loop after 5 failures in 5 minutes.
StartLimitIntervalSec=300
StartLimitBurst=5

[Service]
{kind}
User={o.user}
Group={o.user}
{groups}ExecStart={o.exec_path} run --config {o.config_path}
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec={o.restart_sec_s}s
TimeoutStartSec={o.start_timeout_s}s
TimeoutStopSec=30s
{watchdog}StateDirectory=edge-agent
StateDirectoryMode=0750
ConfigurationDirectory=edge-agent
Environment=PYTHONUNBUFFERED=1
SyslogIdentifier=edge-agent
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
ProtectControlGroups=yes
ProtectKernelModules=yes
RestrictSUIDSGID=yes
LockPersonality=yes

[Install]
WantedBy=multi-user.target
"""


def render_sysusers(user: str = USER) -> str:
    return f'u {user} - "Edge inference agent" {STATE_DIR} /usr/sbin/nologin\n'


@dataclass
class InstallReport:
    """What :func:`install_service` wrote and ran (or would have, with ``dry_run``)."""

    written: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # existing files left alone (config)
    commands: list[list[str]] = field(default_factory=list)


Runner = Callable[[list[str]], None]


def _run(cmd: list[str]) -> None:
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as e:
        raise OSError(f"{' '.join(cmd)} failed: {(e.stderr or '').strip()[-300:]}") from e


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def install_service(options: ServiceOptions | None = None, *, root: Path = Path("/"),
                    enable: bool = False, start: bool = False, dry_run: bool = False,
                    runner: Runner = _run) -> InstallReport:
    """Write the unit, the sysusers entry, a starter config (never overwritten), the state dir.

    With ``root`` = ``/`` (and not ``dry_run``) also create the user, ``daemon-reload`` and,
    if asked, ``enable`` / ``start``. Raises OSError (unwritable root, failed command).
    """
    o = options or ServiceOptions()
    rep = InstallReport()
    on_host = root.resolve() == Path("/")

    def put(rel: Path, text: str, mode: int) -> None:
        p = root / rel.relative_to("/")
        if not dry_run:
            p.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(p, text, mode=mode)
        rep.written.append(str(p))

    put(Path("/etc/systemd/system") / UNIT_NAME, render_unit(o), 0o644)
    put(Path("/etc/sysusers.d/edge-agent.conf"), render_sysusers(o.user), 0o644)
    cfg = root / o.config_path.relative_to("/")
    if cfg.exists():
        rep.kept.append(str(cfg))
    else:
        put(o.config_path, DEFAULT_CONFIG, 0o640)
    state = root / STATE_DIR.relative_to("/")
    if not dry_run:
        state.mkdir(parents=True, exist_ok=True, mode=0o750)
    cmds: list[list[str]] = []
    if on_host:
        if not _user_exists(o.user):
            cmds.append(["systemd-sysusers", "/etc/sysusers.d/edge-agent.conf"]
                        if shutil.which("systemd-sysusers") else
                        ["useradd", "--system", "--user-group", "--home-dir", str(STATE_DIR),
                         "--no-create-home", "--shell", "/usr/sbin/nologin", o.user])
        cmds.append(["chown", f"root:{o.user}", str(o.config_path)])
        if not (state / "device.key").exists():  # sealed bundles: the service user's key
            cmds.append(["chown", f"{o.user}:{o.user}", str(STATE_DIR)])
            cmds.append(["runuser", "-u", o.user, "--", str(o.exec_path), "keygen", "--key",
                         str(STATE_DIR / "device.key")])
        cmds.append(["systemctl", "daemon-reload"])
        if enable or start:
            cmds.append(["systemctl", "enable", *(["--now"] if start else []), UNIT_NAME])
    for c in cmds:
        if not dry_run:
            runner(c)
        rep.commands.append(c)
    return rep


# ---------------------------------------------------------------------------- sd_notify


def sd_notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (``"READY=1"``, ``"WATCHDOG=1"``…) to systemd; False if not under it."""
    path = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    if not path or path[0] not in "@/":
        return False
    addr = "\0" + path[1:] if path[0] == "@" else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall(state.encode())
    except OSError as e:
        log.debug("sd_notify(%r) to %s failed: %s", state, path, e)
        return False
    return True


def watchdog_interval_s(env: Mapping[str, str] | None = None) -> float | None:
    """``$WATCHDOG_USEC`` in seconds when it is meant for this process, else None."""
    e = os.environ if env is None else env
    try:
        usec = int(e.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = e.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 1e6


class Watchdog:
    """Pings ``WATCHDOG=1`` every ``interval_s / 2`` while ``health()`` returns true and
    ``stalled()`` (seconds the HTTP event loop has spent in one turn) is under that period:
    a request that never returns on the loop stops the pings, and systemd restarts us."""

    def __init__(self, interval_s: float, health: Callable[[], bool],
                 env: Mapping[str, str] | None = None,
                 stalled: Callable[[], float] | None = None) -> None:
        self.period_s = interval_s / 2
        self.health = health
        self.stalled = stalled
        self.env = env
        self.pings = 0
        self._stall_logged = False
        self._stop = threading.Event()
        self._thread = NamedThread(target=self._loop, name="sd-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.period_s + 1)

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            if self.healthy() and sd_notify("WATCHDOG=1", self.env):
                self.pings += 1

    def healthy(self) -> bool:
        """Whether to ping now (logs why not, a stall once per stall)."""
        stalled = self.stalled() if self.stalled is not None else 0.0
        if stalled >= self.period_s:
            if not self._stall_logged:
                log.error("the HTTP event loop has been in one turn for %.1f s (a request "
                          "on the loop that does not return): not pinging the systemd "
                          "watchdog, which restarts the agent", stalled)
                self._stall_logged = True
            return False
        self._stall_logged = False
        try:
            return bool(self.health())
        except Exception:
            log.exception("watchdog health check failed: not pinging")
            return False


class SystemdNotifier:
    """READY=1 once serving, the watchdog while ``health()`` answers, STOPPING=1 on stop.

    ``health``: true while the agent can answer (it may block if the agent is wedged: then
    no ping goes out and systemd restarts us). ``status``: the ``STATUS=`` line sent with
    READY=1 (e.g. ``"serving digits"``). ``env``: the environment to read
    ``$NOTIFY_SOCKET`` / ``$WATCHDOG_USEC`` from (default: ``os.environ``). ``stalled``:
    seconds the HTTP event loop has been in one turn (:class:`Watchdog`).
    """

    def __init__(self, *, health: Callable[[], bool], status: Callable[[], str] | None = None,
                 env: Mapping[str, str] | None = None,
                 stalled: Callable[[], float] | None = None) -> None:
        self.health = health
        self.status = status
        self.env = env
        interval = watchdog_interval_s(env)
        self.watchdog = Watchdog(interval, health, env, stalled) if interval else None

    def start(self) -> None:
        ready = "READY=1" if self.status is None else f"READY=1\nSTATUS={self.status()}"
        sd_notify(ready, self.env)
        if self.watchdog:
            self.watchdog.start()

    def stop(self) -> None:
        sd_notify("STOPPING=1", self.env)
        if self.watchdog:
            self.watchdog.stop()
