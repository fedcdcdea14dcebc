"""Turning connection failures into one clear line that names the config key to fix.

Pure functions (no sockets): :mod:`edge_agent.mqtt.client` calls them with what it saw —
an exception from the TCP/TLS connect, a refusing CONNACK, or paho's error log when the
broker closed the link before CONNACK (TLS 1.3 reports a rejected client certificate only
after the handshake, as an alert on the first read).
"""

from __future__ import annotations

import ssl

from edge_agent.mqtt.config import MqttConfig
from edge_agent.mqtt.errors import MqttConnectError

# CONNACK codes meaning "I don't speak this protocol version" (3.1.1 rc 1, MQTT 5 0x84)
BAD_PROTOCOL = frozenset({1, 0x84})
# bad user name or password / not authorized / bad authentication method (3.1.1 and 5)
AUTH = frozenset({4, 5, 0x86, 0x87, 0x8C})


def connect_failure(e: OSError, cfg: MqttConfig) -> MqttConnectError:
    """The TCP connect or the TLS handshake raised ``e``."""
    if isinstance(e, ssl.SSLCertVerificationError):
        return MqttConnectError(
            f"TLS: cannot verify the broker {cfg.url}: {e.verify_message} (is mqtt.ca_file "
            f"the CA that signed the broker's certificate, and does the certificate name "
            f"{cfg.host!r}?)", kind="tls")
    if isinstance(e, ssl.SSLError):
        return MqttConnectError(f"TLS handshake with {cfg.url} failed: {e.reason or e}",
                                kind="tls")
    return MqttConnectError(f"cannot reach {cfg.url}: {e.strerror or e}", kind="socket")


def connack_refusal(code: int, reason: str, cfg: MqttConfig) -> MqttConnectError:
    """The broker answered CONNECT with a failure reason code."""
    if code in BAD_PROTOCOL:
        kind = "protocol"
    elif code in AUTH:
        kind = "auth"
    else:
        kind = "refused"
    hint = " (check mqtt.username / mqtt.password)" if kind == "auth" else ""
    return MqttConnectError(f"{cfg.url} refused the connection: {reason}{hint}", kind=kind,
                            rc=code)


def closed_before_connack(detail: str, cfg: MqttConfig, *, tried_mqtt5_auto: bool
                          ) -> MqttConnectError:
    """The link went down (or stayed silent) before any CONNACK; ``detail`` is paho's log."""
    detail = detail or "connection closed"
    low = detail.lower()
    if ("alert" in low or "certificate" in low) and cfg.cert_file is None:
        return MqttConnectError(
            f"TLS: the broker {cfg.url} requires a client certificate; set mqtt.cert_file "
            f"and mqtt.key_file ({detail})", kind="tls")
    if "alert" in low or "certificate" in low:
        return MqttConnectError(
            f"TLS: the broker {cfg.url} rejected our client certificate (mqtt.cert_file / "
            f"mqtt.key_file): {detail}", kind="tls")
    if tried_mqtt5_auto:
        return MqttConnectError(f"{cfg.url} closed the connection before CONNACK (no MQTT 5?): "
                                f"{detail}", kind="protocol")
    return MqttConnectError(f"{cfg.url} closed the connection before CONNACK: {detail}",
                            kind="refused")
