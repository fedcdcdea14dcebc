"""A zero-setup MQTT broker for the demo: amqtt (pure Python, MQTT 3.1.1) in a thread.

Not for production: no persistence, no ACLs. The agent's client falls back from MQTT 5
to 3.1.1 automatically when it meets this broker. amqtt is an optional dependency
(``pip install edge-inference[demo]``).

Raises :class:`~edge_agent.errors.TransportError` when amqtt is missing or the port is taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from dataclasses import dataclass
from typing import Any

from edge_agent.errors import TransportError
from edge_agent.threadname import NamedThread

log = logging.getLogger(__name__)


@dataclass
class EmbeddedBroker:
    """A running amqtt broker; :meth:`stop` shuts it down and joins its thread."""

    host: str
    port: int
    _loop: asyncio.AbstractEventLoop
    _broker: Any
    _thread: threading.Thread

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def stop(self, timeout_s: float = 5.0) -> None:
        if not self._thread.is_alive():
            return
        fut = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop)
        with contextlib.suppress(Exception):
            fut.result(timeout_s)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout_s)


def start_embedded_broker(host: str = "127.0.0.1", port: int = 1883,
                          timeout_s: float = 10.0) -> EmbeddedBroker:
    """Start amqtt listening on ``host:port`` (anonymous access) and wait until it accepts."""
    try:
        from amqtt.broker import Broker
    except ImportError as e:
        raise TransportError("the embedded demo broker needs amqtt "
                             "(pip install 'edge-inference[demo]')") from e
    for name in ("amqtt", "transitions"):
        logging.getLogger(name).setLevel(logging.WARNING)
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box: dict[str, Any] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)

        async def boot() -> None:
            try:
                broker = Broker(config, loop=loop)
                await broker.start()
                box["broker"] = broker
            except Exception as e:  # port taken, bad config
                box["error"] = e
            finally:
                started.set()

        box["task"] = loop.create_task(boot())
        loop.run_forever()
        with contextlib.suppress(Exception):
            loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    t = NamedThread(target=run, daemon=True, name="amqtt-broker")
    t.start()
    if not started.wait(timeout_s) or "error" in box:
        loop.call_soon_threadsafe(loop.stop)
        t.join(2)
        raise TransportError(f"embedded MQTT broker could not listen on {host}:{port}: "
                             f"{box.get('error', 'timed out')}") from box.get("error")
    log.info("embedded MQTT broker (amqtt) listening on %s:%d", host, port)
    return EmbeddedBroker(host, port, loop, box["broker"], t)
