"""Model quality on the device: prediction distributions, drift (PSI) and label feedback.

Pure numpy, no transport: :mod:`edge_agent.telemetry.service` feeds it predictions from
the hooks and publishes what it reports.
"""
