"""Link faults for simulated devices: a TCP relay between one device and the broker.

A device that should "drop its link" or "be slow" connects to its own
:class:`LinkProxy` instead of the broker. The proxy relays bytes unchanged, so the
MQTT client, the broker and the update flow see a real network fault, not a fake:

* :meth:`LinkProxy.cut` closes the live connection (the broker then publishes the
  device's Last Will) and refuses new ones for ``for_s`` seconds;
* ``latency_s`` / ``rate_bytes_per_s`` delay every relayed read in both directions
  (a long, thin link — a cellular modem, a congested site uplink).

Two threads per relayed connection plus one accepting; used only by
:mod:`fleet.sim_agents`. Raises ``OSError`` when the listening socket cannot be opened.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

READ_BYTES = 16 * 1024


class LinkProxy:
    """A one-device TCP relay with injectable faults (see the module docstring)."""

    def __init__(self, upstream: tuple[str, int], *, latency_s: float = 0.0,
                 rate_bytes_per_s: float | None = None, name: str = "") -> None:
        self.upstream = upstream
        self.latency_s = latency_s
        self.rate_bytes_per_s = rate_bytes_per_s
        self.name = name
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._blocked_until = 0.0
        self._closed = threading.Event()
        self.cuts = 0  # connections closed by cut()
        self.refused = 0  # connection attempts refused while cut
        self._thread = threading.Thread(target=self._accept, daemon=True,
                                        name=f"link-proxy-{name}")
        self._thread.start()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def cut(self, for_s: float) -> None:
        """Drop the link now and keep it down for ``for_s`` seconds."""
        with self._lock:
            self._blocked_until = time.monotonic() + for_s
            conns, self._conns = self._conns, []
        for c in conns:
            self.cuts += 1
            _close(c)

    def close(self) -> None:
        self._closed.set()
        _close(self._sock)
        self.cut(0.0)
        self._thread.join(2)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                down, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                blocked = time.monotonic() < self._blocked_until
            if blocked:
                self.refused += 1
                _close(down)
                continue
            try:
                up = socket.create_connection(self.upstream, timeout=5)
                up.settimeout(None)
            except OSError:
                _close(down)
                continue
            for s in (down, up):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._conns += [down, up]
            for src, dst in ((down, up), (up, down)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True,
                                 name=f"link-pump-{self.name}").start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(READ_BYTES)
                if not data:
                    break
                delay = self.latency_s
                if self.rate_bytes_per_s:
                    delay += len(data) / self.rate_bytes_per_s
                if delay:
                    time.sleep(delay)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                _close(s)
            with self._lock:
                self._conns = [c for c in self._conns if c not in (src, dst)]


def _close(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        s.close()
