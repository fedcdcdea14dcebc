"""JSON payloads: the envelope every device message carries, and strict incoming parsing.

Every message a device publishes is a JSON object with::

    {"schema": 1, "device": "pi-17", "seq": 4211, "ts": 1718000000.123, ...body}

``seq`` is the device's durable sequence number (see :mod:`edge_agent.mqtt.outbox`):
messages that travel through the outbox (telemetry, events, results) each take the next
one; live messages (status, command replies) carry the latest number allocated without
taking one. ``ts`` is the device's wall clock (seconds since the epoch, UTC).

Incoming payloads (commands, feedback) are parsed by :func:`parse_object`, which raises
:class:`~edge_agent.errors.InvalidRequestError` saying what was expected and what was got.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import numpy as np

from edge_agent.errors import InvalidRequestError
from edge_agent.protocol.messages import SCHEMA_VERSION, Header

__all__ = ["SCHEMA_VERSION", "clean", "decode", "envelope", "parse_json", "parse_object"]


def clean(value: Any) -> Any:
    """Make ``value`` JSON-safe: numpy scalars/arrays → Python, NaN/inf → None."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return clean(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def envelope(device: str, seq: int, body: dict[str, Any], ts: float | None = None) -> bytes:
    """Encode ``body`` with the schema version, device id, sequence number and timestamp."""
    doc = Header(device, seq, time.time() if ts is None else ts, SCHEMA_VERSION).to_dict()
    doc.update(clean(body))
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode("utf-8")


def parse_object(payload: bytes, what: str) -> dict[str, Any]:
    """``payload`` as a JSON object (an empty payload is ``{}``). Raises InvalidRequestError."""
    value = parse_json(payload, what)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequestError(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value


def parse_json(payload: bytes, what: str) -> Any:
    """Any JSON value (None for an empty payload). Raises InvalidRequestError."""
    if not payload.strip():
        return None
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidRequestError(f"{what}: payload is not UTF-8 text ({e.reason} at byte "
                                  f"{e.start})") from e
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        # ValueError covers JSONDecodeError and Python's int-digits limit (a 5000-digit
        # literal): both are bad input, never a crash
        raise InvalidRequestError(f"{what}: payload is not JSON ({e})") from e


def decode(payload: bytes) -> dict[str, Any] | None:
    """Best-effort decode of a device message for watchers: the object, or None."""
    try:
        v = json.loads(payload.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError, JSONDecodeError, int digits
        return None
    return v if isinstance(v, dict) else None
