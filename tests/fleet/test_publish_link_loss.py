"""A workstation publish whose connection drops before the PUBACKs (a cluster node dying
mid-publish) fails at once, so the rollout re-publishes on a new connection, instead of
waiting out its 60–120 s flush timeout for acknowledgements that can never come."""

from __future__ import annotations

import time
from typing import Any

import pytest

from edge_agent.errors import TransportError
from fleet.publish import Broker
from fleet.sim_net import LinkProxy


@pytest.mark.serial
def test_a_connection_lost_before_the_pubacks_fails_the_flush_at_once(mosquitto: Any) -> None:
    proxy = LinkProxy((mosquitto.host, mosquitto.port), latency_s=0.3, name="ops")
    b = Broker(proxy.url, client_id="ops-link-loss")
    try:
        b.publish("edge/blobs/x/0", b"chunk", retain=False)  # PUBACK ≥ 0.3 s away
        proxy.cut(30.0)
        t0 = time.monotonic()
        with pytest.raises(TransportError, match="connection lost with 1 publishes"):
            b.flush(60.0)
        assert time.monotonic() - t0 < 5.0
    finally:
        b.close()
        proxy.close()
