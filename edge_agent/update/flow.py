"""The update flow: one announcement through every phase, persisted before each step.

``notified → downloading → verifying → test_loading → golden → swapping → probation →
commit | rolling_back``; see :mod:`edge_agent.update.state` for recovery after a crash.
Runs on the update service's single worker thread. Every outcome is an ``update.*``
event on the agent's hooks; every rejection before the swap leaves the serving model
and ``active.json`` untouched, and names its reason.

Disk trouble (ENOSPC, EDQUOT, EROFS, EIO) never wedges the machine: a phase is entered
only once ``state.json`` says so (:meth:`UpdateFlow._set`; if it cannot be written the
attempt fails instead), while the end of an attempt always happens in memory and
reaches the disk if it can (:meth:`UpdateFlow._settle`), after the staged download was
freed. The failure is an ``update.failed`` with code ``disk_full`` / ``read_only`` /
``io_error``, retried like a transport failure.

Size (~450 lines): the phases stay in one module on purpose; each one persists its state
before the next step, and reading that ordering end to end is the point of the file (the
checks it calls are already elsewhere: policy, check, swap, fetchers, probation, trust).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.bundle import Bundle
from edge_agent.crypto import retire_after_commit
from edge_agent.errors import (
    BundleError,
    EdgeError,
    ModelError,
    NoRunnableVariantError,
    NotFoundError,
    TransportError,
)
from edge_agent.hooks import Hooks
from edge_agent.mqtt.topics import Topics
from edge_agent.protocol.kinds import EventKind, UpdateResult
from edge_agent.registry import ModelRegistry, ServedModel
from edge_agent.shadow.gate import parse_gate
from edge_agent.shadow.runner import ShadowRun
from edge_agent.store import ModelStore
from edge_agent.update import check, faults, policy, shadow_phase, swap
from edge_agent.update.config import UpdateConfig
from edge_agent.update.errors import (
    SPACE_CODES,
    BadAnnouncementError,
    BundleRejectedError,
    CommandRejectedError,
    InternalUpdateError,
    ModelRejectedError,
    UpdateError,
    UpdateTransportError,
    disk_code,
    error_code,
    from_bundle,
)
from edge_agent.update.fetchers import AnnouncementFetcher, Cancelled, MqttChunks, PubSub
from edge_agent.update.mirror_http import HttpMirrors
from edge_agent.update.probation import (
    ProbationMonitor,
    ProbationPolicy,
    WindowStats,
    time_pair,
    wait_verdict,
)
from edge_agent.update.staging import Staging
from edge_agent.update.state import (
    MAX_DONE_COMMANDS,
    Outcome,
    Phase,
    Recovery,
    StateFile,
    UpdateState,
    recover,
)
from edge_agent.update.trust import TrustStore
from edge_agent.update.wire import (
    SHA256_RE,
    Announcement,
    ShadowTerms,
    TargetSpec,
    parse_announcement,
    parse_command,
    parse_target_spec,
)
from edge_agent.variants import check_requires, servable

if TYPE_CHECKING:
    from tuf.api.metadata import TargetFile
    from tuf.ngclient import Updater

log = logging.getLogger(__name__)

_DONE_COMMANDS = MAX_DONE_COMMANDS  # executed command ids remembered; expiry bounds the rest


@dataclass(frozen=True)
class FlowDeps:
    """What the flow needs from the agent (an Agent provides all of it)."""

    registry: ModelRegistry
    store: ModelStore
    hooks: Hooks
    identity: policy.DeviceIdentity
    config: UpdateConfig
    update_dir: Path
    client: PubSub | None = None
    topic_prefix: str = "edge"
    check_setup: check.CheckSetup | None = None  # default: the registry's runtime, threads
    busy: Callable[[], bool] | None = None  # requests wait for an interpreter: shed the shadow


CANARY = "canary"  # the version label of the version on probation (docs/update.md)


def blocked_key(name: str, version: int) -> str:
    return f"{name}@{version}"


class UpdateFlow:
    """State machine runner (see the module docstring). Not thread-safe: one worker."""

    def __init__(self, deps: FlowDeps, stop: threading.Event) -> None:
        self.d = deps
        self.cfg = deps.config
        self.stop = stop
        self.state_file = StateFile(deps.update_dir / "state.json")
        self.state = self.state_file.load()
        self.trust = TrustStore(deps.update_dir / "metadata", self.cfg.root_file)
        self.staging = Staging(deps.update_dir / "staging")
        self.monitor = ProbationMonitor(deps.hooks)
        self.progress: dict[str, Any] = {}
        self._last_progress = 0.0
        self._rejected_digests: list[str] = []
        self._unsaved: OSError | None = None  # why the state in memory is not on disk
        ctx = ssl.create_default_context(cafile=str(self.cfg.http_ca_file)) \
            if self.cfg.http_ca_file else None
        self._ssl = ctx
        self.check_setup = deps.check_setup or check.CheckSetup(
            deps.registry.runtime.name, deps.registry.num_threads)
        self.check_limits = check.CheckLimits.resolve(self.cfg, self.check_setup)
        self.shadow: ShadowRun | None = None  # the current or last shadow run

    # --- plumbing ---------------------------------------------------------------------------

    def close(self) -> None:
        self.monitor.close()

    def _set(self, state: UpdateState) -> None:
        """Persist first, then act on it: a crash after this line resumes from ``state``.

        Raises OSError when ``state.json`` cannot be written: nothing moved then, and
        the caller fails the attempt (:meth:`_fail`) rather than start the phase.
        """
        self.state_file.save(state)
        self.state = state
        self._unsaved = None
        faults.point(state.phase.value)

    def _settle(self, state: UpdateState) -> None:
        """Move to ``state`` in memory whatever the disk does; persist it if possible.

        For the end of an attempt, and for rolling back (the safe direction): neither
        may wait for a write. A failed write is logged, named in the following events
        and the status (``state_error``), and written again before the next attempt
        (:meth:`_flush`); a restart before that recovers from the previous phase, as
        after a crash (:func:`~edge_agent.update.state.recover`).
        """
        self.state = state
        try:
            self.state_file.save(state, use_reserve=True)
        except OSError as e:
            self._unsaved = e
            log.error("update: state.json not written (%s); %s in memory only", e,
                      state.phase.value)
        else:
            self._unsaved = None
        faults.point(state.phase.value)

    def _flush(self) -> None:
        """Write the state a failed write left in memory only (once the disk allows)."""
        if self._unsaved is None:
            return
        try:
            self.state_file.save(self.state, use_reserve=True)
        except OSError as e:
            self._unsaved = e
            return
        self._unsaved = None
        log.info("update: state.json written again (%s)", self.state.phase.value)

    def _event(self, level: str, kind: EventKind, message: str, **data: Any) -> None:
        s = self.state
        data.setdefault("name", s.name)
        data.setdefault("version", s.version)
        if self._unsaved is not None:
            data.setdefault("state_error", f"state.json not written: {self._unsaved}")
        self.d.hooks.emit_event(level, kind, message, **data)

    def _finish(self, result: UpdateResult, code: str, reason: str, *, remember: bool = True,
                keep_staging: bool = False, block: str | None = None) -> Outcome:
        """End the attempt; never raises for disk trouble.

        The staged download goes first (on a full disk it holds the space the state
        write needs), then the machine is idle — in memory always, on disk if it can be
        written. Stored announcements are pruned only once idle is on disk (until then a
        restart resumes from them).
        """
        s = self.state
        out = Outcome(result, code, reason, s.name, s.version, time.time())
        self.progress = {}
        freed = self.staging.cleanup({s.target_sha256} if keep_staging and s.target_sha256
                                     else set())
        if freed:
            log.info("update: %d bytes of staging freed", freed)
        self._settle(s.finish(out, remember=remember, block=block))
        if self._unsaved is None:
            self.state_file.prune_announcements(set())
        return out

    # --- entry points -------------------------------------------------------------------------

    def handle(self, payload: bytes, topic: str) -> Outcome | None:
        """Process one announcement payload; None when it was already settled."""
        self._flush()
        try:
            ann = parse_announcement(payload, self.cfg.max_announcement_bytes)
        except BadAnnouncementError as e:
            digest = hashlib.sha256(payload).hexdigest()
            if digest in self._rejected_digests:
                return None
            self._rejected_digests = [*self._rejected_digests[-63:], digest]
            self.d.hooks.emit_event("warning", EventKind.UPDATE_REJECTED,
                                    f"announcement on {topic} rejected: {e}", code=e.code,
                                    reason=str(e), topic=topic)
            return Outcome(UpdateResult.REJECTED, e.code, str(e), at=time.time())
        if ann.digest in self.state.settled or ann.digest in self._rejected_digests:
            return None
        if self.state.phase != Phase.IDLE:
            log.warning("update: %s arrived while %s; ignored", ann.target,
                        self.state.phase.value)
            return None
        try:
            self.state_file.store_announcement(ann.digest, payload)
            self._set(self.state.to(Phase.NOTIFIED, announce_digest=ann.digest,
                                    announce_topic=topic))
        except OSError as e:  # the disk refuses: a transient failure, retried
            return self._fail(e)
        self._event("info", EventKind.UPDATE_NOTIFIED, f"announcement of {ann.target} on {topic}",
                    target=ann.target, topic=topic)
        return self._run(ann)

    def resume(self) -> Outcome | None:
        """Called once at start: finish or abandon whatever ``state.json`` says was going on."""
        s = self.state
        active = self.d.store.active_version(s.name) if s.name else None
        plan = recover(s, active, self.cfg.probation_max_crashes)
        if plan.action == Recovery.NOTHING:
            self.staging.cleanup(set())
            return None
        self._event("warning", EventKind.UPDATE_RESUMED, f"restarted in {s.phase.value}: "
                    f"{plan.reason}", phase=s.phase.value, action=plan.action.value)
        if plan.action == Recovery.ROLLBACK:
            self._settle(s.to(Phase.ROLLING_BACK, crashes=plan.crashes))
            return self._rollback(plan.reason, code="crash")
        if plan.action == Recovery.PROBATION:
            assert s.name is not None and s.version is not None
            try:  # the crash count must be on disk before the new version runs again
                self._set(replace(s, crashes=plan.crashes, probation_until=None,
                                  clean_stop=False))
            except OSError as e:
                return self._rollback(f"probation restart {plan.crashes} could not be "
                                      f"recorded: {e}", code=error_code(e))
            swap.ensure_serving(self.d.registry, self.d.store, s.name, s.version)
            return self._probation(None)
        if plan.action == Recovery.ABANDON:
            return self._reject(ModelRejectedError(plan.reason, code="crash_loop"),
                                block=blocked_key(s.name, s.version)
                                if s.name and s.version else None)
        payload = self.state_file.announcement(s.announce_digest or "")
        if payload is None:
            return self._finish(UpdateResult.ABANDONED, "state", "stored announcement is missing")
        try:
            ann = parse_announcement(payload, self.cfg.max_announcement_bytes)
        except BadAnnouncementError as e:
            return self._finish(UpdateResult.ABANDONED, e.code, str(e))
        try:  # the crash-loop guard counts this restart on disk first
            self._set(self.state.to(Phase.NOTIFIED, crashes=plan.crashes))
        except OSError as e:
            return self._fail(e)
        return self._run(ann)

    # --- the flow -------------------------------------------------------------------------------

    def _run(self, ann: Announcement) -> Outcome:
        swapped = False
        try:
            fetcher = self._fetcher(ann)
            updater = self.trust.updater(fetcher)
            info = self.trust.target_info(updater, ann.target)
            spec = parse_target_spec(info.custom, info.length, info.path)
            sha = info.hashes.get("sha256", "")
            if not SHA256_RE.match(sha):  # it names staging files: never trust its shape
                raise BundleRejectedError(f"{info.path}: signed entry has no valid sha256")
            if spec.kind == "command":
                return self._command(updater, fetcher, info, spec)
            installed = self.d.store.serving_version(spec.name)
            if installed == spec.version and blocked_key(spec.name, spec.version) \
                    not in self.state.blocked:
                return self._noop(f"{spec.name} v{spec.version} is already installed")
            policy.check_model_target(
                spec, path=info.path, length=info.length, me=self.d.identity,
                installed=installed, blocked=self.state.blocked,  # and the store must read it
                max_bytes=min(self.cfg.max_bundle_bytes, self.d.store.max_bundle_bytes))
            if installed is not None and self.d.store.active_version(spec.name) is None:
                # pin what serves now: with no active.json the store would serve the
                # highest installed version, i.e. the new one before it is proven
                self.d.store.set_active(spec.name, installed)
            terms = spec.probation
            self._set(self.state.to(Phase.DOWNLOADING, target=info.path, target_sha256=sha,
                                    name=spec.name, version=spec.version,
                                    from_version=installed,
                                    probation_min_requests=terms.min_requests if terms else 0,
                                    probation_min_clients=terms.min_clients if terms else 0))
            policy.check_free_space(free=self.staging.free_bytes(), length=info.length,
                                    reserve=self.cfg.min_free_bytes)
            bundle = self._download_and_verify(updater, fetcher, info, spec)
            served = self._test_load(bundle)
            self._golden(served)
            if spec.shadow is not None:
                stopped = self._shadow(spec.shadow, served)
                if stopped is not None:
                    return stopped
            base = self.d.registry.active_version(spec.name)
            baseline = self.monitor.baseline(spec.name, base)
            self._set(self.state.to(Phase.SWAPPING, crashes=0))
            t0 = time.perf_counter()
            swap.install_and_activate(self.d.registry, self.d.store, bundle, served)
            swapped = True
            was = f"was v{installed}" if installed is not None else "first install"
            self._event("info", EventKind.UPDATE_ACTIVATED,
                        f"{spec.name} v{spec.version} is serving ({was})", previous=installed,
                        swap_ms=round((time.perf_counter() - t0) * 1000, 2))
            return self._probation(baseline)
        except Cancelled as e:
            return Outcome(UpdateResult.INTERRUPTED, "stopping", str(e), self.state.name,
                           self.state.version, time.time())
        except UpdateTransportError as e:
            return self._fail(e)
        except (UpdateError, BundleError, ModelError) as e:
            if swapped:
                return self._rollback(f"after the swap: {e}", code=error_code(e))
            return self._reject(e)
        except (TransportError, OSError) as e:
            if swapped:
                return self._rollback(f"after the swap: {e}", code=error_code(e))
            return self._fail(e)
        except EdgeError as e:
            if swapped:
                return self._rollback(f"after the swap: {e}", code="error")
            return self._reject(e)
        except Exception as e:  # a bug, not an attack: never leave the machine mid-phase
            log.exception("update: internal error")
            if swapped:
                return self._rollback(f"internal error after the swap: {e!r}", code="internal")
            return self._reject(InternalUpdateError(f"internal error: {e!r}"))

    def _fetcher(self, ann: Announcement) -> AnnouncementFetcher:
        """The attempt's transports; its deadline (download_timeout_s) starts now."""
        want = Topics(self.d.identity.device, self.d.topic_prefix).update_want
        mqtt = MqttChunks(self.d.client, self.d.topic_prefix, self.cfg.chunk_window,
                          want_topic=want, want_after_s=self.cfg.chunk_want_after_s) \
            if self.d.client is not None else None
        http = HttpMirrors(timeout_s=self.cfg.http_timeout_s, retries=self.cfg.http_retries,
                           ssl_context=self._ssl)
        return AnnouncementFetcher(ann, staging=self.staging, mqtt=mqtt, http=http,
                                   transport=self.cfg.transport,
                                   stall_s=self.cfg.stall_timeout_s,
                                   timeout_s=self.cfg.download_timeout_s, stop=self.stop,
                                   allowlist=self.cfg.mirror_allowlist,
                                   metadata_timeout_s=self.cfg.metadata_timeout_s,
                                   progress=self._on_progress)

    def _on_progress(self, have: int, total: int, source: str) -> None:
        self.progress = {"chunks": have, "of": total, "source": source}
        now = time.monotonic()
        if have == total or now - self._last_progress >= 1.0:
            self._last_progress = now
            self._event("info", EventKind.UPDATE_PROGRESS, f"{have}/{total} chunks via {source}",
                        chunks=have, of=total, source=source)

    def _download_and_verify(self, updater: Updater, fetcher: AnnouncementFetcher,
                             info: TargetFile,
                             spec: TargetSpec) -> Bundle:
        sha = info.hashes["sha256"]
        dest = self.staging.final(sha, info.path)
        t0 = time.perf_counter()
        if updater.find_cached_target(info, str(dest)) is None:
            fetcher.expect_target(info, spec.chunks, spec.mirrors)
            ignored = fetcher.ignored_mirrors
            self._event("info", EventKind.UPDATE_DOWNLOADING, f"{info.path}: {info.length} bytes"
                        + (f" (ignored mirrors, neither allowlisted nor signed: "
                           f"{', '.join(ignored)})" if ignored else ""),
                        bytes=info.length, mirrors=list(fetcher.target_mirrors),
                        ignored_mirrors=list(ignored))
            self.trust.download(updater, info, dest)
            self.staging.part(sha).unlink(missing_ok=True)
        secs = time.perf_counter() - t0
        self._event("info", EventKind.UPDATE_DOWNLOADED, f"{info.length} bytes in {secs:.2f} s "
                    f"({fetcher.resumed_chunks} chunks resumed from staging, "
                    f"{fetcher.written} received)",
                    bytes=info.length, seconds=round(secs, 3),
                    resumed_chunks=fetcher.resumed_chunks, written_chunks=fetcher.written,
                    sources=fetcher.sources)
        self._set(self.state.to(Phase.VERIFYING))
        try:  # bounded by the signed length, member by member (edge_agent.bundle)
            bundle = self.d.store.read_target(dest, source=info.path,
                                              max_bytes=spec.uncompressed_length or info.length)
        except BundleError as e:
            raise from_bundle(e) from e
        policy.check_manifest(bundle.manifest, spec, self.d.identity)
        # before any load: a model its runtime cannot run (int4 weights on tflite-runtime)
        check_requires(bundle, delegate=self.d.registry.delegate, runtime=self.d.registry.runtime)
        self._event("info", EventKind.UPDATE_VERIFIED, f"{spec.name} v{spec.version}: signatures, "
                    "threshold, expiry, version, sha256, length and profile verified",
                    sha256=sha)
        return bundle

    def _test_load(self, bundle: Bundle) -> ServedModel:
        """Prove the candidate in a child under time and memory limits (:mod:`check`), then
        load it here. A candidate that hung, crashed or exhausted the child is blocked."""
        self._set(self.state.to(Phase.TEST_LOADING))
        sha = self.state.target_sha256 or ""
        staged = self.staging.final(sha, self.state.target or "")
        try:
            if bundle.manifest.variants:  # one check child per variant (edge_agent.variants)
                names, unmet = servable(self.d.registry, bundle)
                proof = check.check_variants(staged, bundle.manifest, self.check_setup,
                                             self.check_limits, sha256=sha, variants=names,
                                             unmet=unmet, stop=self.stop,
                                             device_key=self.d.store.device_key)
            else:
                proof = check.check_candidate(staged, bundle.manifest, self.check_setup,
                                              self.check_limits, sha256=sha, stop=self.stop,
                                              device_key=self.d.store.device_key)
        except ModelRejectedError as e:
            if e.code in check.BLOCKING or e.blocking:
                self._block()
            raise
        try:
            served = (self.d.registry.build_checked(bundle, verify=True,
                                                    exclude=dict(proof.variants_failed))
                      if bundle.manifest.variants else self.d.registry.build(bundle))
        except NoRunnableVariantError as e:  # edge_agent.variants
            raise ModelRejectedError(str(e), code=e.code) from e
        except EdgeError as e:
            raise ModelRejectedError(f"test-load failed: {e}", code="load_failed") from e
        self._event("info", EventKind.UPDATE_TEST_LOADED,
                    f"proven in a check process in {proof.duration_s * 1000:.0f} ms "
                    f"({proof.vectors} golden vectors, max diff {proof.max_abs_diff:g}; limits "
                    f"{self.check_limits.describe()}), then loaded in "
                    f"{served.load_time_s * 1000:.0f} ms on {self.d.registry.runtime}"
                    + "".join(f"; variant {n!r} skipped: {why}"
                              for n, why in proof.variants_failed),
                    check_ms=round(proof.duration_s * 1000, 1),
                    check_peak_rss_mb=proof.peak_rss_mb, check_reused=proof.reused,
                    **({"variants_failed": dict(proof.variants_failed)}
                       if proof.variants_failed else {}))
        return served

    def _golden(self, served: ServedModel) -> None:
        """Again on the interpreter that will serve: the child proved it terminates, within
        the limits, on these bytes with this setup; this proves this very instance."""
        self._set(self.state.to(Phase.GOLDEN))
        try:
            res = served.verify_golden()
        except EdgeError as e:
            raise ModelRejectedError(f"golden vectors failed: {e}", code="golden_mismatch") from e
        self._event("info", EventKind.UPDATE_GOLDEN_OK, f"{res.vectors} golden vectors match "
                    f"(max diff {res.max_abs_diff:g})")

    def _shadow(self, terms: ShadowTerms, served: ServedModel) -> Outcome | None:
        """Run the verified, inactive candidate on copies of live requests (in its own child
        process) until the signed gate can be judged. Returns None when it passed (promote:
        the swap follows), an interrupted Outcome when stopping; raises ModelRejectedError
        (blocked) when it failed, so the candidate is discarded and the active one serves."""
        self._set(self.state.to(Phase.SHADOW))
        gate = parse_gate(terms.gate)  # parsed at the spec already: cannot fail here
        run = shadow_phase.prepare(self.d.registry, self.d.hooks, self.cfg, self.check_setup,
                                   self.check_limits, served, busy=self.d.busy,
                                   emit=self._event, device_key=self.d.store.device_key)
        self.shadow = run
        what = f"{terms.duration_s:g} s" if terms.duration_s is not None \
            else f"{terms.min_requests} requests"
        self._event("info", EventKind.SHADOW_STARTED, f"v{served.version} in the shadow of "
                    f"v{run.active_version} for {what}, gate {gate.text()}", gate=gate.text(),
                    min_requests=terms.min_requests, duration_s=terms.duration_s,
                    active_version=run.active_version)
        res = run.run(self.staging.final(self.state.target_sha256 or ""), gate,
                      min_requests=terms.min_requests, duration_s=terms.duration_s,
                      timeout_s=self.cfg.shadow_timeout_s, stop=self.stop)
        if res.code == "stopping":
            return Outcome(UpdateResult.INTERRUPTED, "stopping", res.reason, self.state.name,
                           self.state.version, time.time())
        if res.passed:
            self._event("info", EventKind.SHADOW_PASSED, res.reason, shadow=res.summary,
                        active_version=run.active_version)
            return None
        self._event("error", EventKind.SHADOW_FAILED, f"v{served.version} discarded: "
                    f"{res.reason}", code=res.code, reason=res.reason, shadow=res.summary,
                    active_version=run.active_version)
        if res.code != "shadow_failed":  # not this device's trouble: never again here
            self._block()
        raise ModelRejectedError(f"shadow: {res.reason}", code=res.code)

    def _block(self) -> None:
        """Never try this version again here (rolled back, or it hung/crashed its check)."""
        s = self.state
        assert s.name is not None and s.version is not None
        self._set(replace(s, blocked=(*s.blocked, blocked_key(s.name, s.version))[-256:]))

    def _probation(self, baseline: WindowStats | None) -> Outcome:
        s = self.state
        assert s.name is not None and s.version is not None
        until = time.time() + self.cfg.probation_s
        old, new = self._loaded(s.name, s.from_version), self._loaded(s.name, s.version)
        self.monitor.start(s.name, s.version,
                           old_shape=old.input_spec.shape if old else None,
                           new_shape=new.input_spec.shape if new else None)
        self._set(s.to(Phase.PROBATION, probation_until=until))
        self.d.registry.set_label(s.name, CANARY, s.version)  # /labels/canary reaches it
        # the signed release may demand more evidence; the device's config is the floor
        pol = ProbationPolicy(self.cfg.probation_s,
                              max(self.cfg.probation_min_requests, s.probation_min_requests),
                              self.cfg.probation_max_error_rate,
                              self.cfg.probation_max_latency_ratio,
                              self.cfg.probation_latency_floor_ms,
                              min_clients=max(self.cfg.probation_min_clients,
                                              s.probation_min_clients))
        self._event("info", EventKind.UPDATE_PROBATION, f"watching v{s.version} for "
                    f"{self.cfg.probation_s:g} s", until=until, min_requests=pol.min_requests,
                    min_clients=pol.min_clients)
        # latency: the same inputs on both versions, interleaved, on this host right now
        pair = functools.partial(time_pair, old, new) \
            if old and new and old.input_specs == new.input_specs else None
        verdict = wait_verdict(self.monitor, baseline, pol, until, self.stop, pair=pair)
        self.monitor.stop()
        self.d.registry.set_label(s.name, CANARY, None)  # committed, rolled back or stopping
        if not verdict.decided:
            self._set(replace(self.state, clean_stop=True))
            return Outcome(UpdateResult.INTERRUPTED, "stopping", "agent stopping during probation",
                           s.name, s.version, time.time())
        if not verdict.ok:
            return self._rollback(f"probation failed: {verdict.reason}", code="probation")
        faults.point("committing")
        out = self._finish(UpdateResult.COMMITTED, "ok",
                           f"v{s.version} committed: {verdict.reason}")
        faults.point("committed")
        try:
            removed = self.d.store.prune(s.name, self.cfg.keep_versions)
        except OSError as e:
            log.warning("update: pruning old versions of %s failed: %s", s.name, e)
            removed = []
        retired = retire_after_commit(self.d.store.device_key, self.d.store.root,
                                      self.d.store.version_dir(s.name, s.version))
        self._event("info", EventKind.UPDATE_COMMITTED,
                    out.reason + (f"; device key {retired} retired" if retired else ""),
                    name=s.name, version=s.version, pruned=removed,
                    **({"device_key_retired": retired} if retired else {}))
        return out

    def _loaded(self, name: str, version: int | None) -> ServedModel | None:
        """``version`` of ``name`` if it is loaded in the registry (for paired timings)."""
        if version is None:
            return None
        try:
            return self.d.registry.get(name, version)
        except NotFoundError:
            return None

    def _rollback(self, reason: str, *, code: str) -> Outcome:
        s = self.state
        if s.phase != Phase.ROLLING_BACK:
            self._settle(s.to(Phase.ROLLING_BACK))  # the safe direction: never held back
            s = self.state
        assert s.name is not None and s.version is not None
        self.d.registry.set_label(s.name, CANARY, None)
        unsaved = swap.restore(self.d.registry, self.d.store, s.name, s.from_version,
                               s.version)
        out = self._finish(UpdateResult.ROLLED_BACK, code, reason,
                           block=blocked_key(s.name, s.version))
        extra = {"active_error": f"active.json not written: {unsaved}"} if unsaved else {}
        self._event("error", EventKind.UPDATE_ROLLED_BACK, f"{s.name} v{s.version} rolled back to "
                    f"v{s.from_version}: {reason}", name=s.name, version=s.version,
                    restored=s.from_version, code=code, reason=reason, **extra)
        return out

    def _noop(self, reason: str) -> Outcome:
        """A re-announcement of what already serves (refreshed timestamp, group + device)."""
        out = self._finish(UpdateResult.NOOP, "installed", reason)
        self._event("info", EventKind.UPDATE_IGNORED, reason, code="installed")
        return out

    def _reject(self, e: Exception, *, block: str | None = None) -> Outcome:
        code = error_code(e)
        s = self.state
        what = f"{s.name} v{s.version}" if s.name else "update"
        out = self._finish(UpdateResult.REJECTED, code, str(e), block=block)
        self._event("error", EventKind.UPDATE_REJECTED, f"{what} rejected ({code}): {e}",
                    name=s.name, version=s.version, code=code, reason=str(e))
        return out

    def _fail(self, e: Exception) -> Outcome:
        """Transient: the announcement stays unsettled so the service retries it.

        The staged download is kept for resuming, except when space ran out: then its
        bytes are freed first (the retry starts the download over).
        """
        s = self.state
        code = error_code(e)
        reason = str(e)
        if disk_code(e) is not None:  # name where and what the disk refused
            step = s.phase.value if s.phase != Phase.IDLE else "storing the announcement"
            what = f" of {s.name} v{s.version}" if s.name else ""
            reason = f"disk error ({step}{what}) in {self.d.update_dir}: {e}"
        out = self._finish(UpdateResult.FAILED, code, reason, remember=False,
                           keep_staging=code not in SPACE_CODES)
        self._event("warning", EventKind.UPDATE_FAILED, f"update failed ({code}), will retry: "
                    f"{reason}", name=s.name, version=s.version, code=code, reason=reason)
        return out

    def _command(self, updater: Updater, fetcher: AnnouncementFetcher, info: TargetFile,
                 spec: TargetSpec) -> Outcome:
        policy.check_audience(spec, self.d.identity, info.path)
        dest = self.staging.final(info.hashes["sha256"])
        self.staging.ensure()
        self.trust.download(updater, info, dest)
        cmd = parse_command(dest.read_bytes())
        name = cmd.name
        active = self.d.store.serving_version(name)
        # replayed, expired or signed against another version: rejected, nothing changes
        policy.check_command(cmd, active=active, executed=self.state.done_commands,
                             now=time.time())
        done = (*self.state.done_commands, cmd.id)[-_DONE_COMMANDS:]
        to = cmd.to_version or self.d.store.previous_version(name)
        if active is None or to is None or to not in self.d.store.versions(name):
            e = CommandRejectedError(f"rollback of {name} to v{to}: that version is not "
                                     f"installed here (installed: {self.d.store.versions(name)})")
            self._set(replace(self.state, done_commands=done))
            return self._reject(e)
        self._set(self.state.to(Phase.ROLLING_BACK, name=name, version=active,
                                from_version=to, target=info.path, done_commands=done))
        self._event("warning", EventKind.UPDATE_ROLLBACK_COMMAND, f"signed rollback of {name} from "
                    f"v{active} to v{to} (command {cmd.id})", command=cmd.id)
        return self._rollback(f"signed rollback command {cmd.id}", code="command")

    # --- status -------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        s = self.state
        d: dict[str, Any] = {"phase": s.phase.value, "name": s.name, "version": s.version,
                             "from_version": s.from_version, "target": s.target,
                             "progress": dict(self.progress), "trusted": self.trust.versions(),
                             "blocked": list(s.blocked)}
        if s.phase == Phase.PROBATION:
            w = self.monitor.window()
            d["probation"] = {"until": s.probation_until, "requests": w.requests,
                              "errors": w.errors}
        if self._unsaved is not None:
            d["state_error"] = f"state.json not written: {self._unsaved}"
        if self.shadow is not None:
            d["shadow"] = self.shadow.status()
        if s.last:
            d["last"] = {"result": s.last.result, "code": s.last.code, "reason": s.last.reason,
                         "name": s.last.name, "version": s.last.version, "at": s.last.at}
        return d

