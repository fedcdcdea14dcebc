"""The broker options of every ``edge-fleet`` command, in one place.

::

    --broker URL[,URL…]     mqtt[s]://[user[:password]@]host[:port]; several (cluster
                            nodes) are tried in order, failing over to the next
    --protocol P            auto (MQTT 5, falling back to 3.1.1) | 5 | 3.1.1
    --ca-file FILE          mqtts: the CA that signed the broker (default: the system store)
    --cert-file FILE        mqtts: client certificate (mTLS) ...
    --key-file FILE         ... and its key
    --username USER         e.g. fleet-ops (the operator of fleet.acl's ACL)
    --password-file FILE    the password, first line of FILE (never on the command line)
    --client-id ID          MQTT client id (default: one per connection, unique)
    --prefix PREFIX         topic prefix (default edge)

:func:`add_broker_args` puts them on a subcommand's parser; :func:`broker_config` turns the
parsed flags into one validated :class:`~edge_agent.mqtt.config.MqttConfig` (the same
checks as the agent's ``[mqtt]`` section), so every command reaches a TLS, password or
ACL broker the same way. A command holding several connections at once (``rollout``:
its observer, chunks, announcements, rollbacks) gives each one :func:`client_config`,
since a broker closes the older of two connections with the same client id.

Raises :class:`~edge_agent.errors.ConfigError` naming the flag (``command line: --ca-file:
no such file: …``).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace

from edge_agent.errors import ConfigError
from edge_agent.mqtt.client import MqttClient
from edge_agent.mqtt.config import PROTOCOLS, MqttConfig

SOURCE = "command line"
# MqttConfig key → the flag that sets it (``password`` only comes from a URL)
FLAGS = {"url": "--broker", "brokers": "--broker", "password": "--broker",
         "protocol": "--protocol", "ca_file": "--ca-file",
         "cert_file": "--cert-file", "key_file": "--key-file", "username": "--username",
         "password_file": "--password-file", "client_id": "--client-id",
         "topic_prefix": "--prefix"}
OPTIONAL = ("ca_file", "cert_file", "key_file", "username", "password_file", "client_id")


def add_broker_args(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    """Add the broker flags (see the module docstring) to ``p``, in their own help group."""
    g = p.add_argument_group("broker", "how to reach the MQTT broker (docs/fleet.md)")
    g.add_argument("--broker", required=required, metavar="URL",
                   help="mqtt[s]://[user[:password]@]host[:port]; several, comma separated, "
                        "are tried in order (failover)")
    g.add_argument("--protocol", default="auto", choices=PROTOCOLS,
                   help="MQTT version: auto (5, falling back to 3.1.1), 5 or 3.1.1")
    g.add_argument("--ca-file", metavar="FILE",
                   help="mqtts: CA that signed the broker (default: system store)")
    g.add_argument("--cert-file", metavar="FILE", help="mqtts: client certificate (mTLS)")
    g.add_argument("--key-file", metavar="FILE", help="mqtts: the client certificate's key")
    g.add_argument("--username", metavar="USER", help="broker user (e.g. fleet-ops)")
    g.add_argument("--password-file", metavar="FILE",
                   help="file holding the broker password (first line)")
    g.add_argument("--client-id", metavar="ID",
                   help="MQTT client id (default: a unique one per connection)")
    g.add_argument("--prefix", default="edge", metavar="PREFIX", help="topic prefix")


def broker_config(a: argparse.Namespace) -> MqttConfig:
    """The validated connection settings from :func:`add_broker_args`' flags.

    Raises ConfigError naming the flag: unreadable files, TLS files on an ``mqtt://`` URL,
    a certificate without its key, a password file without a user name, a bad URL.
    """
    urls = [u.strip() for u in str(a.broker).split(",") if u.strip()]
    raw: dict[str, object] = {"topic_prefix": a.prefix,
                              "protocol": getattr(a, "protocol", None) or "auto"}
    if len(urls) > 1:
        raw["brokers"] = urls
    else:
        raw["url"] = urls[0] if urls else a.broker
    for key in OPTIONAL:
        value = getattr(a, key, None)
        if value:  # an empty flag counts as not given
            raw[key] = value
    try:
        return MqttConfig.from_section(raw, SOURCE)
    except ConfigError as e:
        raise _naming_the_flag(e, password_file=raw.get("password_file") is not None) from e


def client_config(config: MqttConfig, role: str) -> MqttConfig:
    """``config`` for one of several simultaneous connections of one command.

    A ``--client-id`` gets ``-<role>`` appended (two connections with one id would take
    each other's session over); without one, ``config`` is returned as it is and the
    caller's own unique default id is used.
    """
    if config.client_id is None:
        return config
    return replace(config, client_id=f"{config.client_id}-{role}")


def as_config(broker: MqttConfig | str) -> MqttConfig:
    """A config as it is, or a plain broker URL (tools and tests) made into one."""
    return broker if isinstance(broker, MqttConfig) else MqttConfig.from_url(broker)


def _naming_the_flag(e: ConfigError, *, password_file: bool) -> ConfigError:
    """The same error with ``mqtt.<key>`` replaced by the flag that set it."""
    key = (e.key or "").removeprefix("mqtt.")
    head = f"{e.source}: {e.key}: " if e.source and e.key else ""
    message = str(e).removeprefix(head)
    for k in sorted(FLAGS, key=len, reverse=True):  # "… as mqtt.username" → "… as --username"
        message = message.replace(f"mqtt.{k}", FLAGS[k])
    flag = "--password-file" if key == "password" and password_file else FLAGS.get(key, e.key)
    return ConfigError(message, source=SOURCE, key=flag)


def connect_once(client: MqttClient) -> None:
    """``client.connect()`` whose failure is reported once, by the raised
    MqttConnectError (the command's one-line error), not also by the client's
    "retrying with backoff" warning; later reconnects still warn as usual."""
    mqtt_log = logging.getLogger("edge_agent.mqtt.client")
    level = mqtt_log.level
    mqtt_log.setLevel(max(level, logging.ERROR))
    try:
        client.connect()
    finally:
        mqtt_log.setLevel(level)
