"""The serving data plane every protocol shares: model lookup, admission, version status.

TF Serving REST (:mod:`edge_agent.serving.api`), TF Serving gRPC and KServe v2 gRPC
(:mod:`edge_agent.grpc`) decode their requests, then call into one :class:`DataPlane`, so
no protocol resolves a version label, counts an overload or words a "not found" its own
way. The prediction itself is :meth:`~edge_agent.registry.ServedModel.predict` (hooks:
metrics, telemetry, drift, probation). Nothing here changes the control plane.

Raises NotFoundError (unknown model or version, TF Serving's words), InvalidRequestError
(an unknown version label) and Overloaded (the model's admission queue is full).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TypeVar

from edge_agent.errors import InvalidRequestError, NotFoundError
from edge_agent.registry import ModelRegistry, ServedModel
from edge_agent.serving.admission import Admission, Overloaded
from edge_agent.serving.metrics import Metrics

T = TypeVar("T")
StatusRow = tuple[int, str, str, str]  # (version, state, error_code, error_message)


class DataPlane:
    """The registry, the admission gate and metrics, as every protocol reaches them."""

    def __init__(self, registry: ModelRegistry, admission: Admission, metrics: Metrics, *,
                 failures: Callable[[str], Mapping[int, str]] | None = None) -> None:
        self.registry = registry
        self.admission = admission
        self.metrics = metrics
        self._failures = failures or (lambda name: {})

    def version_of(self, name: str, version: int | None, label: str | None) -> int | None:
        """The version a request names by number or label (None: the active one)."""
        if label is not None:
            return self.registry.label_version(name, label)
        return version

    def served(self, name: str, version: int | None) -> ServedModel:
        """That model version. Raises NotFoundError in TF Serving's words."""
        try:
            return self.registry.get(name, version)
        except NotFoundError as e:
            what = f"Latest({name})" if version is None else f"Specific({name}, {version})"
            raise NotFoundError(f"Servable not found for request: {what}: {e}") from e

    @contextmanager
    def admit(self, model: str) -> Iterator[None]:
        """One admission slot for ``model``; a refusal is counted. Raises Overloaded."""
        try:
            with self.admission.slot(model):
                yield
        except Overloaded:
            self.metrics.reject(model, "queue_full")
            raise

    def decode(self, served: ServedModel, decode: Callable[[], T], *, size: int, source: str,
               request_id: str | None, client: str | None) -> T:
        """``decode()`` (a request becoming the model's inputs) under one of the ``workers``
        decode permits, as REST decodes; a request that does not fit the model is recorded
        as the client's fault. Raises what ``decode`` raises, and Overloaded when no permit
        frees up in time."""
        with self.admission.decoding(size):
            try:
                return decode()
            except InvalidRequestError as e:
                served.record_rejected(e, source=source, request_id=request_id, client=client)
                raise

    def status_rows(self, name: str, version: int | None) -> list[StatusRow]:
        """``GetModelStatusResponse`` rows, newest first; failed loads show as END with
        their error. Raises NotFoundError when nothing matches."""
        loaded = {sm.version: sm for sm in self.registry.versions(name)}
        failed = dict(self._failures(name))
        rows = [(v, sm.state.value, "OK", "") for v, sm in loaded.items()]
        rows += [(v, "END", "UNKNOWN", msg) for v, msg in failed.items() if v not in loaded]
        if version is not None:
            rows = [r for r in rows if r[0] == version]
        if not rows:
            self.registry.get(name, version)  # raises the standard NotFoundError message
            raise NotFoundError(f"model {name!r} version {version} not found")
        return sorted(rows, key=lambda r: -r[0])
