"""A real two-node clustered MQTT broker on loopback: ejabberd 23.01's ``mod_mqtt``.

Why ejabberd (Debian ``ejabberd``): it clusters over Erlang distribution + Mnesia, speaks
MQTT 5 and 3.1.1, and a two-node cluster keeps serving when one node dies. (Debian's
RabbitMQ 3.10 MQTT plugin speaks only 3.1.1 and needs a Raft quorum of nodes for client
id tracking: a two-node cluster refuses MQTT connections once a node is gone.)

What the cluster replicates, as measured with this fixture (docs/scale.md):

* live messages are routed between nodes (a device on A hears a publish made on B, and a
  Last Will fired by A reaches a subscriber on B);
* retained messages are stored in a replicated Mnesia table, but each node answers a
  subscription from its own in-memory topic index, which only holds topics published on
  that node (or present when it started): a retained message published on B is *not*
  delivered to a new subscriber on A until A restarts;
* sessions live on the node that holds the connection (devices use clean sessions).

Each node gets its own data dir, log, MQTT port and Erlang node name; both share a private
cookie and a private ``epmd`` (``ERL_EPMD_PORT``), so nothing outside the test is touched.
:meth:`Cluster.stop` ends every process it started, by PID. ``mod_mqtt`` authenticates
every connection: the nodes use the ``anonymous`` backend, any user name and password
(clients must send one: :data:`USERNAME`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from waiting import port_accepts

ERL = shutil.which("erl") or "/usr/bin/erl"
EPMD = shutil.which("epmd") or "/usr/bin/epmd"
ERL_LIBS = "/usr/lib/x86_64-linux-gnu"  # where Debian puts ejabberd and its p1_* deps
USERNAME, PASSWORD = "fleet", "anonymous"


def installed() -> bool:
    return Path(ERL).exists() and any(Path(ERL_LIBS).glob("ejabberd-*/ebin/mod_mqtt.beam"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


CONFIG = """\
hosts:
  - localhost
loglevel: warning
log_rotate_count: 0
certfiles: []
auth_method: [anonymous]
anonymous_protocol: login_anon
allow_multiple_connections: true
listen:
  -
    port: {port}
    ip: "127.0.0.1"
    module: mod_mqtt
    backlog: 1024
modules:
  mod_mqtt:
    max_queue: 100000
    access_subscribe:
      "#": [{{allow: all}}]
    access_publish:
      "#": [{{allow: all}}]
"""


# true once ejabberd_app:start/2 has returned (config loaded, listeners and modules up)
STARTED = "lists:keymember(ejabberd, 1, application:which_applications())"


def rpc(node: Node, expr: str, *, expect: str | None = None) -> str:
    """Evaluate an Erlang expression on ``node`` (a hidden control node); its value."""
    ctl = f"i18ctl-{secrets.token_hex(3)}@localhost"
    code = (f"R = rpc:call('{node.name}', erlang, apply, "
            f"[fun() -> {expr} end, []], 60000), io:format(\"~w~n\", [R]), halt().")
    out = subprocess.run([ERL, "-sname", ctl, "-hidden", "-noinput", "-eval", code],
                         env=node.env, capture_output=True, timeout=90, check=False)
    got = out.stdout.decode(errors="replace").strip()
    if expect is not None and got != expect:
        raise RuntimeError(f"{expr} on {node.name}: expected {expect}, got {got!r} "
                           f"{out.stderr.decode(errors='replace')[-500:]}")
    return got


@dataclass
class Node:
    name: str  # Erlang node name, e.g. i18a-41233@localhost
    port: int  # MQTT port
    root: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{USERNAME}:{PASSWORD}@127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        """The URL without credentials (as the agent logs it)."""
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self, timeout_s: float = 30.0) -> None:
        """Boot the node (``erl -s ejabberd``) and wait until its MQTT port accepts and the
        node itself says the ejabberd application has started. (A port that accepts is not
        proof: CI once joined a node whose options table was created but not yet filled,
        i.e. still loading its config, before any listener; a TCP self-connect or another
        process on a port ``free_port`` handed out would look the same.)"""
        (self.root / "spool").mkdir(parents=True, exist_ok=True)
        log = open(self.root / "erl.out", "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [ERL, "-sname", self.name, "-noinput", "-noshell",
             "-mnesia", "dir", f'"{self.root / "spool"}"', "-s", "ejabberd"],
            cwd=self.root, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout_s
        listening = False
        while time.monotonic() < deadline:
            listening = listening or port_accepts("127.0.0.1", self.port)
            if listening and rpc(self, STARTED) == "true":
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"ejabberd node {self.name} exited: {self.log_tail()}")
            time.sleep(0.1)
        raise RuntimeError(f"ejabberd node {self.name} did not start (listening on "
                           f"{self.port}: {listening}): {self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: the node dies at once (no clean close of its MQTT connections)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self) -> str:
        parts = []
        for f in (self.root / "erl.out", self.root / "ejabberd.log"):
            if f.exists():
                parts.append(f.read_text(errors="replace")[-1500:])
        return "\n".join(parts)


@dataclass
class Cluster:
    """Two ejabberd nodes joined into one cluster (``a`` first, then ``b`` joins it)."""

    root: Path
    a: Node = field(init=False)
    b: Node = field(init=False)
    epmd_port: int = field(init=False)
    cookie: str = field(default_factory=lambda: secrets.token_hex(16))
    _epmd: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.epmd_port = free_port()
        tag = f"{os.getpid()}-{secrets.token_hex(3)}"
        self.a = self._node(f"i18a-{tag}")
        self.b = self._node(f"i18b-{tag}")

    @property
    def urls(self) -> str:
        """Both nodes, A first (``[mqtt] brokers`` / ``--broker`` as one string)."""
        return f"{self.a.url},{self.b.url}"

    def _node(self, name: str) -> Node:
        root = self.root / name
        root.mkdir(parents=True)
        port = free_port()
        (root / "ejabberd.yml").write_text(CONFIG.format(port=port))
        home = root / "home"
        home.mkdir()
        cookie = home / ".erlang.cookie"
        cookie.write_text(self.cookie)
        cookie.chmod(0o400)
        env = {**os.environ, "HOME": str(home), "ERL_LIBS": ERL_LIBS,
               "ERL_EPMD_PORT": str(self.epmd_port), "ERL_CRASH_DUMP_BYTES": "0",
               "EJABBERD_CONFIG_PATH": str(root / "ejabberd.yml"),
               "EJABBERD_LOG_PATH": str(root / "ejabberd.log")}
        return Node(f"{name}@localhost", port, root, env)

    def start(self) -> None:
        self._epmd = subprocess.Popen([EPMD, "-port", str(self.epmd_port)],
                                      env=self.a.env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True)
        self.a.start()
        self.b.start()
        self.rpc(self.b, f'ejabberd_admin:join_cluster(<<"{self.a.name}">>)', expect="ok")
        self.rpc(self.a, "length(ejabberd_cluster:get_nodes())", expect="2")

    def rpc(self, node: Node, expr: str, *, expect: str | None = None) -> str:
        return rpc(node, expr, expect=expect)

    def stop(self) -> None:
        for n in (self.b, self.a):
            n.stop()
        if self._epmd is not None and self._epmd.poll() is None:
            self._epmd.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._epmd.wait(5)
            if self._epmd.poll() is None:
                self._epmd.kill()
        self._epmd = None
