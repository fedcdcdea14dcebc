"""On-device data capture (docs/capture.md): opt-in, bounded, never on the serving path."""
