"""Model store → registry: which versions load at start, on reload and on install.

At start each model's serving version is loaded (its previous version if that fails, with
a ``model.fallback`` warning), then older versions up to ``max_loaded_versions`` are
loaded inactive so ``/versions/{v}`` answers and a rollback is instant. Every failure is
a ``model.load_failed`` error event and is remembered per version (status shows it); the
model's other versions keep serving.

Raises from :meth:`ModelLoader.install` only (the update path wants the reason); every
other method turns an :class:`~edge_agent.errors.EdgeError` into an event.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from edge_agent.bundle import Bundle
from edge_agent.config import ModelSpec
from edge_agent.errors import EdgeError, ModelLoadError
from edge_agent.hooks import Hooks
from edge_agent.protocol.kinds import EventKind
from edge_agent.registry import ModelRegistry, ServedModel
from edge_agent.store import ModelStore
from edge_agent.variants import servable

EDGETPU_OP = b"edgetpu-custom-op"
VariantProbe = Callable[[Bundle, Sequence[str]], dict[str, str]]  # → failed: name → why


class ModelLoader:
    """Loads bundles from the store into the registry (callers hold the agent's lock)."""

    def __init__(self, store: ModelStore, registry: ModelRegistry, hooks: Hooks, *,
                 verify_golden: bool, max_loaded_versions: int,
                 delegate_error: str | None = None, describe: str = "",
                 variant_probe: VariantProbe | None = None) -> None:
        self.store, self.registry, self.hooks = store, registry, hooks
        self.verify_golden = verify_golden
        self.max_loaded_versions = max_loaded_versions
        self.delegate_error = delegate_error  # the accelerator's delegate did not load
        self.describe = describe  # runtime and threads, for the model.loaded message
        self.failures: dict[str, dict[int, str]] = {}
        # a bundle with variants: each variant it would serve, probed in a child first
        self.variant_probe = variant_probe

    def failures_of(self, name: str) -> dict[int, str]:
        """Versions of ``name`` that failed to load, with the reason (for metadata)."""
        return dict(self.failures.get(name, {}))

    def failures_json(self) -> dict[str, dict[str, str]]:
        return {n: {str(v): m for v, m in f.items()} for n, f in self.failures.items() if f}

    def _load(self, bundle: Bundle, *, activate: bool = True) -> ServedModel:
        if self.delegate_error and EDGETPU_OP in bundle.model_bytes:
            raise ModelLoadError(f"{bundle.name} v{bundle.version} is compiled for the Edge TPU "
                                 f"but its delegate is unavailable: {self.delegate_error}")
        exclude = None
        if bundle.manifest.variants and self.variant_probe is not None:
            names, _ = servable(self.registry, bundle)
            exclude = self.variant_probe(bundle, names)  # edge_agent.runtime.variant_probe
        served = self.registry.load(bundle, activate=activate,
                                    verify=self.verify_golden, exclude=exclude)
        self.failures.get(bundle.name, {}).pop(bundle.version, None)
        self.hooks.emit_event("info", EventKind.MODEL_LOADED,
                              f"{bundle.name} v{bundle.version} loaded in "
                              f"{served.load_time_s * 1000:.0f} ms ({self.describe}, "
                              f"{self.registry.workers} workers)",
                              model=bundle.name, version=bundle.version,
                              sha256=bundle.manifest.model_sha256, active=activate)
        return served

    def _failed(self, name: str, version: int | None, e: BaseException) -> None:
        if version is not None:
            self.failures.setdefault(name, {})[version] = str(e)
        self.hooks.emit_event("error", EventKind.MODEL_LOAD_FAILED,
                              f"{name} v{version} not loaded: {e}", model=name,
                              version=version, error=type(e).__name__, reason=str(e))

    def _load_from_store(self, name: str, versions: Sequence[int | None]) -> ServedModel | None:
        """Try versions in order (serving, then previous); the first that loads is active."""
        for i, v in enumerate(versions):
            if v is None:
                continue
            try:
                served = self._load(self.store.load(name, v), activate=True)
            except EdgeError as e:
                self._failed(name, v, e)
                continue
            if i > 0:
                self.hooks.emit_event("warning", EventKind.MODEL_FALLBACK,
                                      f"{name}: serving v{v} because v{versions[0]} failed",
                                      model=name, version=v, failed=versions[0])
            return served
        return None

    def _load_extra_versions(self, name: str) -> None:
        """Also load older versions (previous first) up to ``max_loaded_versions``, inactive.

        They answer ``/versions/{v}`` requests and make a rollback instant.
        """
        limit = self.max_loaded_versions
        prev = self.store.previous_version(name)
        others = sorted(self.store.versions(name), reverse=True)
        for v in list(dict.fromkeys([prev, *others])):
            if len(self.registry.versions(name)) >= limit:
                return
            if v is None or v in self.failures.get(name, {}) or v in {
                    sm.version for sm in self.registry.versions(name)}:
                continue
            try:
                self._load(self.store.load(name, v), activate=False)
            except EdgeError as e:
                self._failed(name, v, e)

    def install(self, bundle: Bundle | str | Path, *, activate: bool = True) -> ServedModel:
        """Install into the store and load (serving it if ``activate``). Raises on failure."""
        b = bundle if isinstance(bundle, Bundle) else self.store.read(bundle)
        self.store.install(b)
        try:
            served = self._load(b, activate=activate)
        except EdgeError as e:
            self._failed(b.name, b.version, e)
            raise
        if activate:
            self.store.set_active(b.name, b.version)
        return served

    def install_configured(self, specs: Sequence[ModelSpec]) -> None:
        """``[[models]]`` bundles into the store (served when first, or ``activate``)."""
        for spec in specs:
            try:
                b = self.store.read(spec.bundle)
                self.store.install(b)
                if spec.activate:
                    self.store.set_active(b.name, b.version)
            except (EdgeError, OSError) as e:
                self._failed(str(spec.bundle), None, e)

    def load_store(self) -> None:
        """Every model in the store: serving version (else previous), then extra versions."""
        for name in self.store.names():
            try:
                versions = [self.store.serving_version(name), self.store.previous_version(name)]
            except EdgeError as e:
                self._failed(name, None, e)
                continue
            if self._load_from_store(name, list(dict.fromkeys(versions))) is not None:
                self._load_extra_versions(name)

    def reload(self) -> list[str]:
        """Rescan the store: load new or changed serving versions, drop removed models.

        A version that fails keeps the current one serving (``model.load_failed`` event).
        Returns one line per change.
        """
        changes: list[str] = []
        names = self.store.names()
        for name in names:
            v = None
            try:
                v = self.store.serving_version(name)
                if v is None:
                    continue
                want = self.store.load(name, v)
            except EdgeError as e:
                self._failed(name, v, e)
                continue
            loaded = {sm.version: sm for sm in self.registry.versions(name)}
            cur = loaded.get(v)
            if cur is not None and cur.manifest.model_sha256 == want.manifest.model_sha256:
                if self.registry.active_version(name) != v:
                    self.registry.activate(name, v)
                    changes.append(f"{name}: activated v{v}")
                continue
            try:
                self._load(want, activate=True)
                changes.append(f"{name}: loaded v{v}")
            except EdgeError as e:
                self._failed(name, v, e)
        for name in self.registry.names():
            if name not in names:
                self.registry.unload(name)
                changes.append(f"{name}: unloaded (no longer in the store)")
        for c in changes:
            self.hooks.emit_event("info", EventKind.AGENT_RELOADED, c)
        return changes
