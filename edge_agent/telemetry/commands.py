"""Operator commands over MQTT: ``edge/<device>/cmd/<name>`` → a reply.

Request payload (all optional; an empty payload is fine)::

    {"id": "op-42", "args": {}}

Reply on the MQTT 5 response topic of the request (with its correlation data) if it has
one, else on ``edge/<device>/reply/<name>``::

    {"schema": 1, "device": "pi-17", "seq": 812, "ts": …, "command": "ping", "id": "op-42",
     "ok": true, "result": {"pong": true, "uptime_s": 81.2}}
    {"…": "…", "ok": false, "error": {"type": "InvalidRequestError", "message": "…"}}

Commands: ``ping``, ``status``, ``models`` (list models), ``config`` (redacted), ``reload``.
There is deliberately no install/rollback command: what runs changes only through the
signed update path. Unknown or malformed commands get an error reply (with the request's
``id`` when it has one) and then raise :class:`~edge_agent.errors.InvalidRequestError` so the
MQTT layer also reports a (rate-limited) event.

Commands run on one worker thread (a reload must not stall the MQTT dispatch thread); at
most ``max_pending`` wait, the rest are answered "busy".
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from edge_agent.agent_view import AgentView
from edge_agent.errors import EdgeError, InvalidRequestError
from edge_agent.mqtt.dispatch import Message
from edge_agent.mqtt.payloads import parse_json
from edge_agent.mqtt.topics import Topics
from edge_agent.protocol.messages import CommandReply, CommandRequest, ErrorInfo
from edge_agent.threadname import NamedThread

log = logging.getLogger(__name__)

Reply = Callable[[str, dict[str, Any], bytes | None], None]  # (topic, body, correlation)


def request_id(payload: bytes) -> str | int | None:
    """The ``id`` of a request that failed validation, if it has a usable one (so the
    error reply can still be matched to it)."""
    try:
        doc = parse_json(payload, "command")
    except InvalidRequestError:
        return None
    rid = doc.get("id") if isinstance(doc, dict) else None
    return rid if isinstance(rid, (str, int)) and not isinstance(rid, bool) else None


class CommandHandler:
    """Parses, dispatches and answers commands for one agent."""

    def __init__(self, agent: AgentView, models: Callable[[], Any],
                 reply_topic: Callable[[str], str], reply: Reply, *,
                 max_pending: int = 16) -> None:
        self.agent = agent
        self.models = models
        self.reply_topic = reply_topic
        self.reply = reply
        self.commands: dict[str, Callable[[dict[str, Any]], Any]] = {
            "ping": self._ping, "status": self._status, "models": self._models,
            "config": self._config, "reload": self._reload,
        }
        self._q: queue.Queue[tuple[Callable[[], None] | None]] = queue.Queue(max_pending)
        self._thread: threading.Thread | None = None

    def add(self, name: str, fn: Callable[[dict[str, Any]], Any]) -> None:
        """Another component's command (``capture_list``); its errors are answered too."""
        self.commands[name] = fn

    def start(self) -> None:
        if self._thread is None:
            self._thread = NamedThread(target=self._work, daemon=True, name="mqtt-cmd")
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            try:
                self._q.put((None,), timeout=2)
            except queue.Full:
                pass
            self._thread.join(5)
            self._thread = None

    def _work(self) -> None:
        while True:
            (job,) = self._q.get()
            if job is None:
                return
            try:
                job()
            except Exception:
                log.exception("command failed")

    def handle(self, msg: Message) -> None:
        """MQTT handler for ``edge/<device>/cmd/+``. Raises InvalidRequestError after
        replying when the command is unknown or malformed."""
        name = Topics.last_level(msg.topic)
        topic = msg.response_topic or self.reply_topic(name)
        corr = msg.correlation_data
        if "+" in topic or "#" in topic:
            raise InvalidRequestError(f"command {name!r}: response topic {topic!r} has "
                                      "wildcards")
        try:
            req = CommandRequest.parse(msg.payload, name)
        except InvalidRequestError as e:
            self._answer(topic, name, request_id(msg.payload), corr, error=e)
            raise
        cid, args = req.id, dict(req.args)
        fn = self.commands.get(name)
        if fn is None:
            unknown = InvalidRequestError(
                f"unknown command {name!r} (available: {', '.join(sorted(self.commands))}; "
                "installs and rollbacks go only through the signed update path)")
            self._answer(topic, name, cid, corr, error=unknown)
            raise unknown

        def job() -> None:
            try:
                result = fn(args)
            except EdgeError as e:
                self._answer(topic, name, cid, corr, error=e)
            except Exception as e:  # a bug: answer, log, keep serving
                log.exception("command %s failed", name)
                self._answer(topic, name, cid, corr, error=e)
            else:
                self._answer(topic, name, cid, corr, result=result)

        try:
            self._q.put_nowait((job,))
        except queue.Full:
            self._answer(topic, name, cid, corr,
                         error=InvalidRequestError("busy: too many commands waiting"))

    def _answer(self, topic: str, name: str, cid: Any, corr: bytes | None, *,
                result: Any = None, error: BaseException | None = None) -> None:
        body = CommandReply(name, cid, error is None, result,
                            None if error is None else ErrorInfo.of(error)).to_dict()
        try:
            self.reply(topic, body, corr)
        except Exception:
            log.exception("cannot send reply to %s", topic)

    # ---- the commands ------------------------------------------------------------------

    def _ping(self, _args: dict[str, Any]) -> dict[str, Any]:
        started = self.agent.started_at()
        return {"pong": True, "time": round(time.time(), 3),
                "uptime_s": round(time.time() - started, 3) if started else None}

    def _status(self, _args: dict[str, Any]) -> Any:
        return self.agent.status()

    def _models(self, _args: dict[str, Any]) -> Any:
        return self.models()

    def _config(self, _args: dict[str, Any]) -> Any:
        return self.agent.redacted_config()

    def _reload(self, _args: dict[str, Any]) -> Any:
        result = self.agent.reload()
        return {"reloaded": True, "result": result if isinstance(result, (dict, list)) else None,
                "models": self.models()}
