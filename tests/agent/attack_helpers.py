"""Attackers for the agent's network surfaces (issue 19): slowloris sockets, hostile PNGs,
and an ``edge-agent run`` child process to measure. Used by tests/agent/test_rest_attacks.py and
bench/slowloris.py. Every socket goes to 127.0.0.0/8 only; every loop is bounded.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

HEAD_IP, BODY_IPS = "127.0.0.2", ("127.0.0.3", "127.0.0.4")  # the attackers' peer addresses


@cache
def hostile_png(width: int = 3464, height: int = 3464) -> bytes:
    """A 16-bit RGBA PNG of ``width × height`` zero pixels: 93 KB on the wire, 48 MB decoded
    (12 MP: under the default 12,000,000-pixel limit)."""
    row = b"\x00" + b"\x00" * (width * 8)
    co = zlib.compressobj(9)
    idat = b"".join(co.compress(row) for _ in range(height)) + co.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 16, 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))


class Slowloris:
    """``heads`` sockets dripping a request head and ``bodies`` sockets dripping a body, one
    byte per socket every ``interval_s``; a socket the server closes is opened again.

    Head sockets come from :data:`HEAD_IP`, body sockets are spread over :data:`BODY_IPS`
    (so the per-client cap does not stop them: they reach the body phase). Counts the
    connections the server cut (``cut``).
    """

    def __init__(self, host: str, port: int, *, heads: int = 200, bodies: int = 17,
                 path: str = "/v1/models/digits:predict", interval_s: float = 0.5) -> None:
        self.addr = (host, port)
        self.path = path
        self.interval_s = interval_s
        self.slots = [("head", HEAD_IP)] * heads + [
            ("body", BODY_IPS[i % len(BODY_IPS)]) for i in range(bodies)]
        self.socks: list[socket.socket | None] = [None] * len(self.slots)
        self.cut = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slowloris", daemon=True)

    def __enter__(self) -> Slowloris:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        for s in self.socks:
            if s is not None:
                s.close()

    def _open(self, kind: str, ip: str) -> socket.socket | None:
        try:
            s = socket.create_connection(self.addr, timeout=1, source_address=(ip, 0))
            head = f"POST {self.path} HTTP/1.1\r\nHost: x\r\n"
            if kind == "body":
                head += "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
            s.sendall(head.encode())
            s.setblocking(False)
            return s
        except OSError:
            return None

    def _drip(self, s: socket.socket, kind: str) -> bool:
        """One more byte; False when the server has closed (or answered) the connection."""
        try:
            if s.recv(4096) == b"":
                return False
            return False  # an answer (408/503): the server is done with it
        except BlockingIOError:
            pass
        except OSError:
            return False
        try:
            s.send(b"1" if kind == "body" else b"X")
            return True
        except OSError:
            return False

    def _run(self) -> None:
        deadline = time.monotonic() + 600  # a bounded loop, whatever the caller does
        while not self._stop.is_set() and time.monotonic() < deadline:
            for i, (kind, ip) in enumerate(self.slots):
                s = self.socks[i]
                if s is not None and not self._drip(s, kind):
                    s.close()
                    s, self.cut = None, self.cut + 1
                if s is None:
                    s = self._open(kind, ip)
                self.socks[i] = s
            self._stop.wait(self.interval_s)


@dataclass
class AgentProcess:
    proc: subprocess.Popen[str]
    host: str
    port: int
    lines: list[str]

    def peak_rss_mb(self) -> float:
        """The child's peak resident set size so far (VmHWM), in MiB."""
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        m = re.search(r"VmHWM:\s+(\d+) kB", text)
        assert m is not None
        return int(m.group(1)) / 1024

    def rss_mb(self) -> float:
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        m = re.search(r"VmRSS:\s+(\d+) kB", text)
        assert m is not None
        return int(m.group(1)) / 1024


@contextlib.contextmanager
def agent_process(tmp: Path, bundle: Path, *more: Path, toml: str = "",
                  profile: str = "generic-x86_64", timeout_s: float = 60
                  ) -> Iterator[AgentProcess]:
    """``python -m edge_agent.cli run`` serving ``bundle`` (and ``more`` bundles) on a free
    port; stopped at exit."""
    cfg = tmp / "agent.toml"
    cfg.write_text(f'[agent]\nprofile = "{profile}"\nthreads = 1\nprobe_runtime = false\n'
                   f"{toml}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_agent.cli", "run", "--config", str(cfg), "--model",
         str(bundle), *map(str, more), "--http", "127.0.0.1:0", "--store", str(tmp / "store"),
         "--device-id", "attacked"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    try:
        ready = None
        while ready is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                break
            lines.append(line)
            ready = re.search(r"edge-agent: ready: .* on http://([\d.]+):(\d+)", line)
        if ready is None:
            raise AssertionError("agent did not become ready:\n" + "".join(lines))
        threading.Thread(target=lambda: lines.extend(proc.stderr or ()), daemon=True).start()
        yield AgentProcess(proc, ready.group(1), int(ready.group(2)), lines)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
