"""The device dashboard at ``/ui/`` (docs/dashboard.md): static files plus a JSON state route.

:mod:`.rings` holds the bounded history (pure, no IO); :mod:`.dashboard` is the HTTP and
hook shell; ``static/`` holds the page (plain HTML/JS/CSS, no build step, no CDN).
"""

from edge_agent.ui.dashboard import Dashboard, DashboardDeps

__all__ = ["Dashboard", "DashboardDeps"]
