"""The rollout engine behind ``edge-fleet rollout`` (see :mod:`fleet.rollout` for what it
does): the IO shell around :mod:`fleet.rollout_core`.

:class:`FleetObserver` turns the broker's retained statuses and ``update.*`` events into a
queue; :class:`Rollout` plans, signs once, announces wave by wave, folds observations into
the :class:`~fleet.rollout_core.RolloutState` and persists it atomically before acting on
each decision, so a killed run resumes where it stopped.

Size (~410 lines): :class:`Rollout` stays whole because its steps share one rule (save the
state, then act) that is easiest to check in one place; the decisions are already in
:mod:`fleet.rollout_core`, the reading of device messages in
:mod:`fleet.rollout_observe` and :mod:`fleet.observer`.

Raises BadInputError / RolloutStateError (bad request, foreign state file) and
TransportError (broker unreachable).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from securesystemslib.signer import Signer

from edge_agent.bundle import read_bundle
from edge_agent.errors import BadInputError, TransportError
from edge_agent.fsutil import atomic_write_bytes, atomic_write_text
from edge_agent.mqtt.client import MqttClient
from edge_agent.mqtt.config import MqttConfig
from edge_agent.mqtt.topics import FleetTopics
from edge_agent.protocol import Status
from edge_agent.update.wire import Announcement, Audience, ChunkPlan, ShadowTerms
from fleet.broker import as_config, client_config
from fleet.chunk_server import ChunkServer
from fleet.observer import FleetObserver
from fleet.publish import (
    DEFAULT_CHUNK,
    Broker,
    publish_chunks,
    rollback,
    sign_bundle,
    target_bytes,
)
from fleet.repo import FleetRepo
from fleet.rollout_core import (
    Outcome,
    Policy,
    RolloutState,
    RolloutStateError,
    Target,
    Wave,
    WaveStatus,
    judge_wave,
    new_state,
    parse_wave_size,
    rollout_id,
    summary,
)
from fleet.rollout_observe import active_version, observe_event, observe_status

log = logging.getLogger(__name__)

SAVE_EVERY_S = 0.2  # at most this often while outcomes stream in (always on wave changes)
# Incoming messages buffered for our handlers: a fleet's burst of retained statuses and
# update events must not overflow it (the client drops, and counts, what does not fit).
DISPATCH_QUEUE = 200_000
PROGRESS_FLUSH_S = 5.0  # at exit, wait at most this long for the last progress PUBACK


def _online(status: Status | None) -> bool:
    return status is not None and status.online


# --- the rollout ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RolloutRequest:
    """Everything the operator asked for (the CLI flags, validated)."""

    bundle: Path
    repo: Path
    broker: MqttConfig | str  # validated settings (fleet.broker.broker_config) or a URL
    group: str | None = None
    devices: tuple[str, ...] = ()
    policy: Policy = field(default_factory=Policy)
    state_path: Path | None = None
    http_url: str | None = None
    chunk_size: int = DEFAULT_CHUNK
    discover_s: float = 3.0
    restart: bool = False
    dry_run: bool = False
    poll_s: float = 0.05
    # signed shadow terms: each device promotes only after its shadow passed; a failed
    # shadow is a rejected update, i.e. a failed device for the wave's budget
    shadow: ShadowTerms | None = None

    def __post_init__(self) -> None:
        if (self.group is None) == (not self.devices):
            raise BadInputError("give exactly one of --group or --device")
        parse_wave_size(self.policy.canary, "--canary")
        parse_wave_size(self.policy.step, "--step")

    @property
    def scope(self) -> str:
        if self.group is not None:
            return f"group:{self.group}"
        ids = ",".join(sorted(set(self.devices)))
        return f"devices:{hashlib.sha256(ids.encode()).hexdigest()[:10]}"


class Rollout:
    """One rollout run (see the module docstring); ``run()`` returns the final state."""

    def __init__(self, req: RolloutRequest, signers: Sequence[Signer], *,
                 say: Callable[[str], None] = print) -> None:
        self.req = req
        self.signers = list(signers)
        self.say = say
        bundle = read_bundle(req.bundle)
        # what devices download: the tar, or for a .tar.zst the zstd frame (signed so)
        self.tar, self.raw_length = target_bytes(req.bundle, bundle)
        sha = hashlib.sha256(self.tar).hexdigest()
        self.target = Target(bundle.name, bundle.version, sha)
        self.id = rollout_id(self.target, req.scope)
        self.path = req.state_path or req.repo / "rollouts" / f"{self.id}.json"
        self.ann_path = self.path.with_suffix(".announce.json")
        self.config = as_config(req.broker)
        self.prefix = self.config.topic_prefix
        self.state: RolloutState | None = None
        self._saved: RolloutState | None = None
        self._saved_at = 0.0
        self._client: MqttClient | None = None  # while run() holds a connection
        self._progress_acked = threading.Event()

    # -- persistence --

    def _save(self, force: bool = False) -> None:
        st = self.state
        if st is None or st is self._saved:
            return
        if not force and time.monotonic() - self._saved_at < SAVE_EVERY_S:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, st.to_json())
        self._saved, self._saved_at = st, time.monotonic()
        self._progress(st)

    def _progress(self, st: RolloutState) -> None:
        """Retain the report on ``<prefix>/rollouts/<id>/progress`` (the dashboard's view),
        each time the state is saved: best effort, the state file stays the truth."""
        if self._client is None or self.req.dry_run:
            return
        doc = {**summary(st), "created_at": st.created_at, "finished_at": st.finished_at,
               "updated_at": time.time(), "wait_s": st.policy.wait_s,
               "wave_started_at": [w.started_at for w in st.waves]}
        acked = threading.Event()
        if self._client.publish(FleetTopics(self.prefix).rollout_progress(st.rollout_id),
                                json.dumps(doc, separators=(",", ":")), 1, True,
                                on_ack=lambda _rc: acked.set()):
            self._progress_acked = acked
        else:
            log.warning("rollout %s: progress not published (disconnected)", st.rollout_id)

    def _set(self, st: RolloutState, *, save: bool = True) -> None:
        self.state = st
        if save:
            self._save(force=True)

    def _load(self) -> RolloutState | None:
        if self.req.restart:
            self.path.unlink(missing_ok=True)
            self.ann_path.unlink(missing_ok=True)
            return None
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        st = RolloutState.from_json(text, str(self.path))
        if st.rollout_id != self.id or st.target.sha256 != self.target.sha256:
            raise RolloutStateError(
                f"{self.path}: holds rollout {st.rollout_id} of {st.target.label()} "
                f"(sha256 {st.target.sha256[:12]}…), not {self.id} (sha256 "
                f"{self.target.sha256[:12]}…); pass --restart or another --state")
        return st

    # -- the run --

    def run(self) -> RolloutState:
        st = self._load()
        if st is not None and st.status != "running":
            self.say(f"rollout {self.id} already {st.status}; nothing to do")
            self.state = st
            return st
        client = MqttClient(config=client_config(self.config, "rollout"),
                            client_id=f"edge-fleet-rollout-{os.getpid()}-{time.time_ns() % 10**6}",
                            dispatch_queue=DISPATCH_QUEUE)
        obs = FleetObserver(client, self.prefix)
        plan = ChunkPlan.for_data(self.tar, self.req.chunk_size)
        chunks = ChunkServer(client, self.prefix, self.target.sha256, self.tar, plan)
        client.connect()
        self._client = client
        try:
            if self.req.group is not None:  # statuses retained on another cluster node
                obs.ask(self.req.group)
            obs.settle(self.req.discover_s)
            if st is None:
                st = self._plan(obs)
                if self.req.dry_run:
                    self.say(self._plan_line(st) + " (dry run: nothing published)")
                    for w in st.waves:
                        self.say(f"  wave {w.index}: {', '.join(w.devices)}")
                    self.state = st
                    return st
                self.say(self._plan_line(st))
                st = self._sign(st)
            else:
                self.say(f"resuming rollout {self.id} from {self.path}")
            self.state = st
            return self._drive(obs)
        finally:
            self._save(force=True)
            chunks.close()
            if chunks.wants:
                self.say(f"rollout {self.id}: answered {chunks.wants} chunk request(s) with "
                         f"{chunks.served} chunk publish(es)")
            self._client = None
            self._progress_acked.wait(PROGRESS_FLUSH_S)  # the final report reaches the broker
            client.stop()

    def _members(self, obs: FleetObserver) -> list[str]:
        if self.req.group is not None:
            found = obs.members(self.req.group)
            if not found:
                raise BadInputError(f"no device reports group {self.req.group!r} in its "
                                    f"retained status on {self.config.url}")
            return found
        return sorted(set(self.req.devices))

    def _plan(self, obs: FleetObserver) -> RolloutState:
        devices = self._members(obs)
        already: dict[str, str] = {}
        before: dict[str, int | None] = {}
        for d in devices:
            doc = obs.status(d)
            before[d] = active_version(doc, self.target.name)
            o = observe_status(d, doc if doc is not None else {}, self.target)
            if o.outcome in (Outcome.ALREADY, Outcome.COMMITTED):
                already[d] = f"v{before[d]} already active"
        return new_state(self.id, self.target, self.req.policy, self.req.scope, devices,
                         already, time.time(), from_versions=before)

    def _sign(self, st: RolloutState) -> RolloutState:
        """Sign for the whole audience once; keep the announcement beside the state."""
        audience = Audience(groups=(self.req.group,)) if self.req.group is not None \
            else Audience(devices=tuple(sorted(st.devices)))
        path, _data, spec = sign_bundle(FleetRepo(self.req.repo), self.req.bundle,
                                        self.signers, audience=audience,
                                        chunk_size=self.req.chunk_size,
                                        mirrors=(self.req.http_url,) if self.req.http_url
                                        else (), shadow=self.req.shadow)
        files = FleetRepo(self.req.repo).announce_files()
        ann = Announcement(path, files, chunks=spec.chunks is not None,
                           mirrors=(self.req.http_url,) if self.req.http_url else (),
                           published_at=time.time())
        self.ann_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.ann_path, ann.to_bytes())
        st = replace(st, target=replace(self.target, path=path))
        self._set(st)
        return st

    def _plan_line(self, st: RolloutState) -> str:
        p = st.policy
        return (f"rollout {st.rollout_id}: {st.target.label()} to {len(st.devices)} devices in "
                f"{len(st.waves)} waves {[len(w.devices) for w in st.waves]} (canary "
                f"{p.canary}, step {p.step}), halt over {p.max_failure:.0%} failures, wait "
                f"{p.wait_s:g} s per wave; {self.size_text()}")

    def size_text(self) -> str:
        """What devices download: ``N bytes`` (tar) or ``N bytes zstd of M raw``."""
        if self.raw_length is None:
            return f"{len(self.tar)} bytes"
        return f"{len(self.tar)} bytes zstd of {self.raw_length} raw"

    def _announcement(self) -> bytes:
        try:
            return self.ann_path.read_bytes()
        except OSError as e:
            raise RolloutStateError(f"{self.ann_path}: the signed announcement of this "
                                    f"rollout is missing ({e.strerror}); pass --restart") from e

    def _drive(self, obs: FleetObserver) -> RolloutState:
        payload = self._announcement()
        self._fold(obs)
        st = self.state
        assert st is not None
        if not st.chunks_published:
            self._publish_chunks()
        while True:
            st = self.state
            assert st is not None
            wave = st.current_wave()
            if wave is None:
                break
            if wave.status in (WaveStatus.PENDING, WaveStatus.ANNOUNCING):
                self._announce(wave, payload, obs)
            elif wave.status == WaveStatus.WAITING:
                self._wait(obs)
            elif wave.status == WaveStatus.HALTED:
                self._halt(wave, obs)
        st = self.state
        assert st is not None
        if st.status == "running":
            if self.req.group is not None and not st.group_announced:
                self._publish([FleetTopics(self.prefix).group_announce(self.req.group)], payload)
            self._set(replace(st, status="completed", finished_at=time.time(),
                              group_announced=self.req.group is not None))
            self.say(f"rollout {self.id}: completed")
        return self.state  # type: ignore[return-value]

    def _publish_chunks(self) -> None:
        st = self.state
        assert st is not None
        ann = json.loads(self._announcement())
        if ann.get("chunks"):
            plan = ChunkPlan.for_data(self.tar, self.req.chunk_size)
            self._with_broker("chunks", lambda broker: publish_chunks(
                broker, self.tar, plan, self.target.sha256, self.prefix))
        self._set(replace(st, chunks_published=True))

    def _publish(self, topics: Sequence[str], payload: bytes) -> None:
        """Retained QoS 1 publishes, each acknowledged by the broker (retried on drops)."""
        def send(broker: Broker) -> None:
            for t in topics:
                broker.publish(t, payload, retain=True)
            broker.flush(60.0)
        self._with_broker("announce", send)

    def _with_broker(self, role: str, send: Callable[[Broker], None], attempts: int = 5
                     ) -> None:
        """Run ``send`` on a fresh acknowledged-publish connection; again, on a new one, when
        it could not connect or lost its connection before every PUBACK came (a cluster
        node dying mid-publish). Retained publishes are idempotent."""
        err: TransportError | None = None
        for _ in range(attempts):
            try:
                broker = Broker(client_config(self.config, role),
                                client_id=f"edge-fleet-{role}-{os.getpid()}")
            except TransportError as e:
                err = e
                time.sleep(1.0)
                continue
            try:
                send(broker)
                return
            except TransportError as e:
                log.warning("rollout: %s publish failed (%s); retrying", role, e)
                err = e
            finally:
                broker.close()
        assert err is not None
        raise err

    def _announce(self, wave: Wave, payload: bytes, obs: FleetObserver) -> None:
        st = self.state
        assert st is not None
        if wave.status == WaveStatus.PENDING:
            wave = replace(wave, status=WaveStatus.ANNOUNCING, started_at=time.time())
            self._set(st.with_wave(wave))
        recs = self.state.devices if self.state else {}
        todo = [d for d in wave.devices
                if not recs[d].announced and recs[d].outcome != Outcome.ALREADY]
        offline = [d for d in todo if not _online(obs.status(d))]
        self.say(f"wave {wave.index}: announcing to {len(todo)} device(s)"
                 f"{f' ({len(offline)} offline: counted, not waited for)' if offline else ''}")
        self._publish([FleetTopics(self.prefix).announce(d) for d in todo], payload)
        st = self.state
        assert st is not None
        now = time.time()
        for d in todo:
            st = st.with_device(d, announced=True, at=now,
                                outcome=Outcome.OFFLINE if d in offline else Outcome.PENDING,
                                detail="offline when announced" if d in offline else "")
        self._set(st.with_wave(replace(wave, status=WaveStatus.WAITING)))

    def _fold(self, obs: FleetObserver) -> None:
        """Apply every queued status and event to the state (save is throttled)."""
        st = self.state
        assert st is not None
        now = time.time()
        for device, msg in obs.drain():
            if isinstance(msg, Status):
                st = st.observe(observe_status(device, msg, st.target), now)
            else:
                o = observe_event(device, msg.kind, msg.data, st.target)
                if o is not None:
                    st = st.observe(o, now)
        self.state = st
        self._save()

    def _wait(self, obs: FleetObserver) -> None:
        while True:
            self._fold(obs)
            st = self.state
            assert st is not None
            wave = st.current_wave()
            if wave is None or wave.status != WaveStatus.WAITING:
                return
            over = time.time() >= (wave.started_at or 0.0) + st.policy.wait_s
            v = judge_wave(st.outcomes(wave), st.policy.max_failure, wait_over=over)
            if not v.decided:
                time.sleep(self.req.poll_s)
                continue
            if over:
                for d in wave.devices:
                    if st.devices[d].outcome == Outcome.PENDING:
                        st = st.with_device(d, outcome=Outcome.TIMED_OUT, at=time.time(),
                                            detail=f"no outcome within {st.policy.wait_s:g} s")
            done = replace(wave, decided_at=time.time(), verdict=v.reason,
                           status=WaveStatus.PASSED if v.passed else WaveStatus.HALTED)
            counts = (f"{v.committed} committed, {v.failed} failed, {v.timed_out} timed out, "
                      f"{v.offline} offline, {v.already} already")
            if v.passed:
                self._set(st.with_wave(done))
                self.say(f"wave {wave.index}: passed ({counts}) — {v.reason}")
                return
            self._set(st.with_wave(done))
            self.say(f"wave {wave.index}: HALTED ({counts}) — {v.reason}")
            return

    def _halt(self, wave: Wave, obs: FleetObserver) -> None:
        """Stop the rollout at ``wave``: no later wave hears of it; the wave's offline
        devices lose their retained announcement; its in-flight devices are watched until
        they decide (or the wave's wait ends), so the report and ``--rollback`` see them."""
        st = self.state
        assert st is not None
        offline = [d for d in wave.devices if st.devices[d].outcome == Outcome.OFFLINE]
        if offline:  # an empty retained message deletes the retained announcement
            self._publish([FleetTopics(self.prefix).announce(d) for d in offline], b"")
            self.say(f"wave {wave.index}: announcement retracted from {len(offline)} offline "
                     "device(s)")
        deadline = (wave.started_at or 0.0) + st.policy.wait_s
        pending = [d for d in wave.devices if st.devices[d].outcome == Outcome.PENDING]
        if pending:
            self.say(f"wave {wave.index}: waiting for {len(pending)} in-flight device(s) to "
                     "finish")
        while pending and time.time() < deadline:
            time.sleep(self.req.poll_s)
            self._fold(obs)
            st = self.state
            assert st is not None
            pending = [d for d in pending if st.devices[d].outcome == Outcome.PENDING]
        for d in pending:
            st = st.with_device(d, outcome=Outcome.TIMED_OUT, at=time.time(),
                                detail=f"no outcome within {st.policy.wait_s:g} s")
        self._set(st)
        committed = [d for d in wave.devices if st.devices[d].outcome == Outcome.COMMITTED
                     and d not in st.rolled_back]
        if st.policy.rollback and committed:
            by_prev: dict[int | None, list[str]] = {}
            for d in committed:  # one signed command per version to return to
                by_prev.setdefault(st.devices[d].from_version, []).append(d)
            for prev, devs in sorted(by_prev.items(), key=lambda kv: kv[0] or 0):
                rollback(FleetRepo(self.req.repo), self.signers,
                         audience=Audience(devices=tuple(devs)), name=st.target.name,
                         to_version=prev, broker=client_config(self.config, "rollback"),
                         from_version=st.target.version)
            st = replace(st, rolled_back=tuple(sorted({*st.rolled_back, *committed})))
            self.say(f"wave {wave.index}: signed rollback sent to {len(committed)} device(s)")
        self._set(replace(st, status="halted", finished_at=time.time()))
