"""systemd integration (temporary re-export; see edge_agent.service)."""

from edge_agent.service import SystemdNotifier

__all__ = ["SystemdNotifier"]
