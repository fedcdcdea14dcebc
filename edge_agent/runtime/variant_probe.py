"""The crash-safe probe, per variant: before the agent loads a bundle with variants into its
own process, each variant it would serve is run with its own golden vectors in a child
process (:func:`edge_agent.runtime.probe.run_probe` with ``--variant``).

A variant whose child crashes, hangs or fails its golden vectors is skipped with the reason
(:func:`edge_agent.variants.build_variants` ``exclude``) and never loaded in the agent, so
a delegate that segfaults on one variant cannot crash-loop the agent at start; the other
variants still serve. The update path proves variants the same way, in its check child
(:mod:`edge_agent.update.check`), before the swap.

Verdicts are cached in ``<state_dir>/variant-probes.json`` per runtime version, machine,
Python and variant model sha256 (atomic write), so each variant is probed once; a bundle
whose source is not a file or folder on disk (nothing for a child to read) is not probed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from edge_agent.bundle import Bundle
from edge_agent.fsutil import atomic_write_text
from edge_agent.runtime.backends import Runtime
from edge_agent.runtime.probe import DEFAULT_TIMEOUT_S, cache_key, run_probe

__all__ = ["STATE_FILE", "probe_variants"]

log = logging.getLogger(__name__)

STATE_FILE = "variant-probes.json"
CACHED = ("ok", "crashed", "timeout", "load-failed", "golden-mismatch")  # verdicts on the model


def _sha(bundle: Bundle, name: str) -> str:
    for v in bundle.manifest.variants:
        if v.name == name:
            return v.sha256
    return bundle.manifest.model_sha256


def _load(path: Path) -> dict[str, dict[str, str]]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return {str(k): {"outcome": str(v["outcome"]), "detail": str(v["detail"])}
                for k, v in doc.items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        log.warning("%s: ignoring unreadable variant probe cache (%s)", path, e)
        return {}


def probe_variants(bundle: Bundle, names: Sequence[str], *, runtime: Runtime,
                   state_dir: Path, device_key: Path | None = None,
                   timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[str, str]:
    """The variants among ``names`` that fail their probe: name → why. Never raises for
    what a child does."""
    src = Path(bundle.source)
    if not bundle.source or not src.exists():
        return {}
    cache_file = state_dir / STATE_FILE
    cache = _load(cache_file)
    failed: dict[str, str] = {}
    changed = False
    for name in names:
        sha = _sha(bundle, name)
        key = f"{cache_key(runtime.name, runtime.version)}|{sha}"
        hit = cache.get(key)
        if hit is None:
            v = run_probe(runtime.name, runtime.version, src, timeout_s=timeout_s,
                          variant=name, variant_sha256=sha, device_key=device_key)
            hit = {"outcome": v.outcome, "detail": v.detail}
            if v.outcome in CACHED:
                cache[key], changed = hit, True
        if hit["outcome"] != "ok":
            failed[name] = f"probe {hit['outcome']}: {hit['detail']}"[:300]
    if changed:
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(cache_file, json.dumps(cache, indent=1, sort_keys=True) + "\n")
        except OSError as e:
            log.warning("%s: cannot cache the variant probes (%s)", cache_file, e)
    return failed
