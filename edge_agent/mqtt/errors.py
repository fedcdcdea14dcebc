"""MQTT transport errors, all under :class:`~edge_agent.errors.TransportError`.

::

    TransportError
    └── MqttError                 anything the MQTT link did wrong (not the data's fault)
        └── MqttConnectError      the broker could not be reached or refused us; carries
                                  ``reason`` (one line for humans) and ``rc`` (MQTT reason
                                  code or ``None`` for socket/TLS failures)

Bad configuration is a :class:`~edge_agent.errors.ConfigError` (the user's fault), raised
when the config is parsed, never later.
"""

from __future__ import annotations

from edge_agent.errors import TransportError


class MqttError(TransportError):
    """The MQTT link failed."""


class MqttConnectError(MqttError):
    """Connecting failed: socket, TLS handshake, or a CONNACK refusal.

    ``kind`` is one of ``socket``, ``tls``, ``auth``, ``protocol``, ``refused``, ``timeout``
    so callers (and tests) can tell a wrong CA from a wrong password without parsing text.
    """

    def __init__(self, message: str, *, kind: str, rc: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.rc = rc
        self.reason = message
