"""Inference requests over MQTT: ``edge/<device>/infer/<model>`` → a reply with the same id.

Request payload (JSON object)::

    {"id": "r-17",                      required: echoed in the reply (string or number)
     "instances": [...] | "inputs": ... TF Serving predict body (see docs/rest.md), or
     "b64": "<base64 image>",           one encoded image to classify (with optional "k")
     "version": 2,                      optional: a loaded version instead of the active one
     "reply_to": "replies/app-7"}       optional: reply topic (else the MQTT 5 Response Topic,
                                        else edge/<device>/results/<model>)

Reply: ``{"id", "model", "version", "predictions"|"outputs"|"labels"+"scores"+"top_k"}`` or
``{"id", "model", "error", "code"}`` with ``code`` the HTTP status the REST API would give.

A requested reply topic (``reply_to`` or the MQTT 5 Response Topic) must lie below
``[mqtt_requests] reply_prefix`` (default ``replies/``, outside every device's namespace):
otherwise an inference client could make the device publish *as itself* on its own
``cmd/reload``, ``status``, ``telemetry`` or ``events``. Such a request is not run; it is
answered with code 403 on the default topic, and reported as a rate-limited
``mqtt.bad_message`` event.

Work is bounded: the subscription refuses payloads over ``max_payload_bytes`` unparsed and
answers them with code 413; the MQTT client's callback only enqueues (never runs the model
on the network thread); when the queue is full the request is answered at once with 503.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from edge_agent.config import MqttRequestsSettings
from edge_agent.errors import ConfigError, EdgeError, InvalidRequestError, NotFoundError
from edge_agent.hooks import Hooks
from edge_agent.mqtt.dispatch import Message
from edge_agent.mqtt.error_events import ErrorEvents, hook_events
from edge_agent.mqtt.payloads import parse_json
from edge_agent.mqtt.topics import ReplyRefusedError, Topics
from edge_agent.protocol.kinds import EventKind
from edge_agent.registry import ModelRegistry
from edge_agent.serving import codec
from edge_agent.serving.http import status_for
from edge_agent.sources.base import MessageLink, top_k_result
from edge_agent.threadname import NamedThread

log = logging.getLogger(__name__)
_STOP = object()


class MqttRequestSource:
    """Subscribes to ``edge/<device>/infer/+`` and answers each request on a reply topic."""

    name = "mqtt_requests"

    def __init__(self, link: MessageLink, registry: ModelRegistry, device_id: str,
                 settings: MqttRequestsSettings | None = None, *, max_batch: int = 64,
                 max_image_pixels: int = 12_000_000, threads: int = 1,
                 prefix: str = "edge", hooks: Hooks | None = None,
                 events: ErrorEvents | None = None) -> None:
        self.link = link
        self.registry = registry
        self.device_id = device_id
        self.settings = settings or MqttRequestsSettings()
        self.max_batch = max_batch
        self.max_image_pixels = max_image_pixels
        self.hooks = hooks
        self.prefix = prefix
        self.topics = Topics(device_id, prefix)
        self.reply_prefix = self.topics.check_reply_prefix(self.settings.reply_prefix)
        self.events = events or (hook_events(device_id, hooks) if hooks is not None else None)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=self.settings.queue_size)
        self._threads = [NamedThread(target=self._work, name=f"mqtt-requests-{i}",
                                          daemon=True) for i in range(max(1, threads))]
        self._stopped = threading.Event()
        self._unsubscribe: Callable[[], None] | None = None
        self.handled = 0

    @property
    def topic_filter(self) -> str:
        return self.topics.infer_filter

    def start(self) -> None:
        for t in self._threads:
            t.start()
        # the whole message: an MQTT 5 Response Topic is where the answer goes; the
        # subscription's own limit (not the transport's default), answered 413 above it
        self._unsubscribe = self.link.subscribe_message(
            self.topic_filter,
            lambda m: self.on_message(m.topic, m.payload, response_topic=m.response_topic),
            max_bytes=self.settings.max_payload_bytes, on_oversize=self._too_large)

    def stop(self) -> None:
        self._stopped.set()
        if self._unsubscribe is not None:
            try:
                self._unsubscribe()
            except Exception:
                log.warning("could not unsubscribe from %s", self.topic_filter)
        for _ in self._threads:
            try:
                self._queue.put(_STOP, timeout=1.0)
            except queue.Full:
                break
        for t in self._threads:
            if t.is_alive():
                t.join(timeout=5.0)

    def queue_depth(self) -> int:
        return self._queue.qsize()

    def on_message(self, topic: str, payload: bytes, response_topic: str | None = None,
                   **_: Any) -> None:
        """The link's callback: validate size, enqueue, or answer 503 at once."""
        if self._stopped.is_set():
            return
        if len(payload) > self.settings.max_payload_bytes:
            self._too_large(Message(topic, payload, 1, False, response_topic))
            return
        try:
            self._queue.put_nowait((topic, payload, response_topic))
        except queue.Full:
            doc = _try_json(payload)
            self._answer(topic, doc, response_topic, None, EdgeError(
                "busy: the request queue is full; retry later"), code=503)

    def _too_large(self, m: Message) -> None:
        """A payload over ``max_payload_bytes``: answered 413 (unparsed, so without an id)."""
        self._answer(m.topic, None, m.response_topic, None, InvalidRequestError(
            f"request of {len(m.payload)} bytes is over the limit of "
            f"{self.settings.max_payload_bytes} bytes ([mqtt_requests] max_payload_bytes)"),
            code=413)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            try:
                self.handle(*item)
            except Exception:
                log.exception("MQTT request failed unexpectedly")

    def handle(self, topic: str, payload: bytes, response_topic: str | None = None) -> None:
        """Run one request and publish its reply (errors are replies too)."""
        try:
            doc = parse_json(payload, "request")
        except InvalidRequestError as e:
            self._answer(topic, None, response_topic, None, e)
            return
        try:
            self._destination(topic, doc, response_topic)
        except ConfigError:
            pass  # _answer logs it: there is nowhere to answer
        except InvalidRequestError as e:  # not run: answered on the default topic
            self._answer(topic, doc, response_topic, None, e)
            return
        try:
            reply = self._predict(topic, doc)
        except EdgeError as e:
            self._answer(topic, doc, response_topic, None, e)
            return
        except Exception as e:  # a bug, not the request: still answered, never silent
            log.exception("MQTT request on %s failed unexpectedly", topic)
            self._answer(topic, doc, response_topic, None,
                         EdgeError(f"internal error: {type(e).__name__}"), code=500)
            return
        self._answer(topic, doc, response_topic, reply, None)

    def _destination(self, topic: str, doc: Any, response_topic: str | None) -> str:
        """Where the reply goes: the requested topic if it lies below the reply prefix,
        else the default ``edge/<device>/results/<model>``. Raises ConfigError (a model
        name that cannot be a topic level), InvalidRequestError / ReplyRefusedError (a
        requested topic that is malformed / outside the prefix)."""
        asked = doc["reply_to"] if isinstance(doc, dict) and "reply_to" in doc \
            else response_topic
        if asked is None:
            return self.topics.results(Topics.last_level(topic))
        return self.topics.requested_reply(asked, self.reply_prefix)

    def _predict(self, topic: str, doc: Any) -> dict[str, Any]:
        model = Topics.last_level(topic)
        if not isinstance(doc, dict):
            raise InvalidRequestError("request must be a JSON object with an \"id\"")
        rid = doc.get("id")
        if not isinstance(rid, (str, int)) or isinstance(rid, bool) or rid == "":
            raise InvalidRequestError('request needs an "id" (string or number) to match the '
                                      "reply")
        version = doc.get("version")
        if version is not None and (not isinstance(version, int) or isinstance(version, bool)
                                    or version < 1):
            raise InvalidRequestError(f"version must be a positive integer, got {version!r}")
        served = self.registry.get(model, version)
        if "b64" in doc:
            if not isinstance(doc["b64"], str):
                raise InvalidRequestError('"b64" must be a base64 string of an image')
            try:
                data = base64.b64decode(doc["b64"], validate=True)
            except (binascii.Error, ValueError) as e:
                raise InvalidRequestError(f"b64: invalid base64 ({e})") from e
            k = doc.get("k", self.settings.top_k)
            if not isinstance(k, int) or isinstance(k, bool) or k < 1:
                raise InvalidRequestError(f"k must be a positive integer, got {k!r}")
            if served.class_position is None:
                raise InvalidRequestError(f"model {model!r} has no class head (task "
                                          f"{served.manifest.task!r}); send \"instances\"")
            x = codec.image_batch(served, [data], self.max_image_pixels)
            pred = served.predict(x, source="mqtt", request_id=str(rid))
            return top_k_result(served, pred, k)
        body = {key: v for key, v in doc.items() if key in ("instances", "inputs",
                                                               "signature_name")}
        xs, fmt = codec.decode_predict(body, served, max_batch=self.max_batch,
                                       max_image_pixels=self.max_image_pixels)
        pred = served.predict(xs, source="mqtt", request_id=str(rid))
        return {"model": served.name, "version": served.version,
                **codec.encode_predict(pred, served, fmt)}

    def _answer(self, topic: str, doc: Any, response_topic: str | None,
                reply: dict[str, Any] | None, error: EdgeError | None, *,
                code: int | None = None) -> None:
        model = Topics.last_level(topic)
        rid = doc.get("id") if isinstance(doc, dict) else None
        try:
            try:
                to = self._destination(topic, doc, response_topic)
            except InvalidRequestError as e:
                to, error, reply = self.topics.results(model), e, None
                if isinstance(e, ReplyRefusedError):
                    code = 403
                    if self.events is not None:
                        self.events.report(EventKind.MQTT_BAD_MESSAGE,
                                           f"request on {topic} refused: {e}", topic=topic,
                                           error=type(e).__name__)
        except ConfigError:  # a model name that cannot be a topic level: nowhere to answer
            log.warning("MQTT request on %s: no reply topic for model %r", topic, model)
            return
        if error is not None:
            status = code or status_for(error)
            out: dict[str, Any] = {"id": rid, "model": model, "error": str(error),
                                   "code": status}
        else:
            out = {"id": rid, **(reply or {})}
        if isinstance(error, NotFoundError):
            log.info("MQTT request for unknown model: %s", error)
        try:
            self.link.publish(to, json.dumps(out, separators=(",", ":")).encode(),
                              self.settings.qos)
            self.handled += 1
        except Exception:
            log.exception("could not publish the reply to %s", to)


def _try_json(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except (ValueError, RecursionError):
        return None
