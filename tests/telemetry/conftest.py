"""Fixtures for the telemetry tests (helpers live in telemetry_helpers.py)."""

from __future__ import annotations

from typing import Any

import pytest
from telemetry_helpers import Recorder


@pytest.fixture
def recorder(mosquitto: Any) -> Any:
    r = Recorder(mosquitto.url)
    yield r
    r.close()
