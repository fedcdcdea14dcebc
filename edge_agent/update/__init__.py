"""Signed model updates: TUF-verified metadata, resumable delivery, proven swap, rollback.

Public surface (everything else is an implementation detail)::

    UpdateConfig      the validated [update] section
    UpdateService     the agent component (create(agent) in edge_agent.update.service)
    UpdateFlow        the persisted state machine behind it
    Phase, Outcome    state machine phases; how an attempt ended
    errors            UpdateError subclasses, each with a short ``code``

Rooms: ``wire`` (announcement/chunk/target formats), ``policy`` and ``state`` and
``probation.judge`` (pure decisions), ``trust`` (python-tuf ngclient), ``fetchers``
(MQTT chunks, HTTP mirrors), ``staging``, ``check`` + ``check_child`` (test-load and
golden vectors in a limited child process), ``swap``, ``flow``, ``service``.
See docs/security.md for the threat model and how each guarantee is enforced.
"""

from typing import Any

from edge_agent.update import errors
from edge_agent.update.config import UpdateConfig
from edge_agent.update.state import Outcome, Phase

__all__ = ["Outcome", "Phase", "UpdateConfig", "UpdateFlow", "UpdateService", "errors"]


def __getattr__(name: str) -> Any:
    """UpdateFlow / UpdateService pull in tuf + cryptography: import them on first use, so an
    agent without an [update] section does not pay their memory."""
    if name == "UpdateFlow":
        from edge_agent.update.flow import UpdateFlow

        return UpdateFlow
    if name == "UpdateService":
        from edge_agent.update.service import UpdateService

        return UpdateService
    raise AttributeError(name)
