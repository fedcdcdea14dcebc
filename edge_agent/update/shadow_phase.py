"""Set up the shadow of a verified candidate against the version that serves (for the flow).

:func:`prepare` checks that the candidate can be compared with the active version (there
is one, and both take the same inputs) and builds the :class:`~edge_agent.shadow.runner.
ShadowRun`; :meth:`UpdateFlow._shadow <edge_agent.update.flow.UpdateFlow._shadow>` runs
it and promotes or discards. Raises ModelRejectedError (``shadow_incompatible``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edge_agent.detection import CLASSES, SCORES
from edge_agent.errors import NotFoundError
from edge_agent.hooks import Hooks
from edge_agent.registry import ModelRegistry, ServedModel
from edge_agent.shadow.runner import ShadowRun, ShadowSetup
from edge_agent.shadow.stats import Heads
from edge_agent.update.check import CheckLimits, CheckSetup
from edge_agent.update.config import UpdateConfig
from edge_agent.update.errors import ModelRejectedError


def prepare(registry: ModelRegistry, hooks: Hooks, cfg: UpdateConfig, setup: CheckSetup,
            limits: CheckLimits, candidate: ServedModel, *, busy: Callable[[], bool] | None,
            emit: Callable[..., None], device_key: Path | None = None) -> ShadowRun:
    name = candidate.name
    version = registry.active_version(name)
    try:
        active = registry.get(name, version) if version is not None else None
    except NotFoundError:
        active = None
    if active is None:
        raise ModelRejectedError(f"shadow release of {name} v{candidate.version}: no active "
                                 "version serves here to compare it with",
                                 code="shadow_incompatible")
    if [(s.name, s.shape[1:]) for s in active.input_specs] != \
            [(s.name, s.shape[1:]) for s in candidate.input_specs]:
        raise ModelRejectedError(
            f"shadow release of {name} v{candidate.version}: its inputs "
            f"{[(s.name, s.shape) for s in candidate.input_specs]} differ from the active "
            f"v{active.version}'s {[(s.name, s.shape) for s in active.input_specs]}",
            code="shadow_incompatible")
    shadow = ShadowSetup(setup.runtime, setup.threads, setup.delegate_library,
                         memory_mb=limits.memory_mb, queue_size=cfg.shadow_queue,
                         invoke_timeout_s=cfg.shadow_invoke_timeout_s, device_key=device_key)
    return ShadowRun(hooks=hooks, name=name, active_version=active.version,
                     candidate_version=candidate.version, input_specs=active.input_specs,
                     output_specs=active.output_specs, heads=heads_of(active), setup=shadow,
                     busy=loaded(active, busy), emit=emit)


def loaded(active: ServedModel, busy: Callable[[], bool] | None) -> Callable[[], bool]:
    """When the shadow sheds its copy: requests wait for an interpreter (``busy``), or
    more than half of the active version's interpreters are taken."""
    def check() -> bool:
        taken = active.workers - active.free_interpreters()
        return 2 * taken > active.workers or (busy is not None and busy())
    return check


def heads_of(served: ServedModel) -> Heads:
    """What the shadow compares by: the class head, or a detection model's scores (and
    classes) heads (edge_agent.detection), by output position; else every output."""
    roles = {served.manifest.head(n): i for i, n in enumerate(served.output_names)}
    if served.manifest.task == "detection" and SCORES in roles:
        return Heads(None, roles[SCORES], roles.get(CLASSES))
    return Heads(served.class_position)
