"""What a component may ask of the agent: identity, snapshots and one reload action.

Components never hold the :class:`~edge_agent.app.Agent` itself (no service locator):
the wiring (:mod:`edge_agent.wiring`) hands each one this frozen view, built from
bound methods of the agent, plus the shared services it needs by name and type.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge_agent.profiles import DeviceProfile


@dataclass(frozen=True)
class AgentView:
    """Read-only views of one running agent (each callable is cheap and thread-safe)."""

    device_id: str
    profile: DeviceProfile
    runtime_name: str
    runtime_version: str
    status: Callable[[], dict[str, Any]]  # GET /v1/agent/status body
    reload: Callable[[], list[str]]  # rescan the store; one line per change
    started_at: Callable[[], float | None]  # None until every part has started
    capabilities: Callable[[], list[str]]  # sources, components, delegate, auth
    queue_depth: Callable[[], int]  # requests waiting for an interpreter
    redacted_config: Callable[[], dict[str, Any]]  # secrets masked
