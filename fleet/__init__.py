"""fleet: workstation tooling — keys, signing, publishing, rollouts, fleet status."""

__version__ = "0.1.0"
__all__ = ["__version__"]
