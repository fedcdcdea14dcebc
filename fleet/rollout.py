"""``edge-fleet rollout``: announce a signed model to waves of devices; halt when they fail.

::

    edge-fleet rollout BUNDLE --repo REPO --key K… --broker URL (--group G | --device ID…)
        [--canary 5%] [--step 25%] [--max-failure 10%] [--wait 60s] [--rollback]
        [--state FILE] [--http-url URL] [--chunk-size BYTES] [--discover 3s]
        [--dry-run] [--restart] [--json]

1. **Plan.** Members of ``--group`` are read from the devices' retained statuses
   (``edge/<device>/status`` carries ``groups``, also when offline); devices whose status
   already shows the target version are marked ``already``. The waves
   (:func:`fleet.rollout_core.plan_waves`) and everything that happens later are kept in
   a state file (default ``REPO/rollouts/<name>-v<version>-<scope>.json``), written
   atomically before each step is acted on.
2. **Sign once.** The bundle is signed for the whole group (or device list) — the
   signature's audience is the security boundary; waves only decide *when* a device
   hears of it. The announcement bytes are kept beside the state file so a resumed
   rollout announces exactly the same bytes (devices settle an announcement by digest).
   Chunks are published once, retained.
3. **Waves.** The announcement is published, retained, on each wave device's own topic
   ``edge/<device>/update/announce`` (never on the group topic while waves run). The
   tool then folds ``update.*`` events and retained statuses into device outcomes until
   :func:`fleet.rollout_core.judge_wave` decides: pass → next wave; halt → stop. On a
   halt no later wave hears of the update; the wave's offline devices lose their
   retained announcement (they would otherwise install it when they return); its
   in-flight devices are watched until they decide or the wave's wait ends; with
   ``--rollback`` the wave's devices that committed get a signed rollback command to the
   version they ran before; the report is printed and the exit code is 1. Offline
   devices are counted and not waited for; an online device with no outcome after
   ``--wait`` counts as a failure.
4. **Done.** After the last wave the announcement is also retained on the group topic,
   so devices that join the group later (or were unknown) update too.

Killed at any point, the same command resumes from the state file: announced waves are
not announced again, a wave's wait still counts from when it started, and outcomes that
arrived meanwhile are read from the retained statuses. Re-running a finished rollout
publishes nothing and prints its report (exit 0 completed, 1 halted); ``--restart``
discards the state file and starts over.

Raises BadInputError (exit 2) for bad arguments or a state file of another rollout,
TransportError when the broker is unreachable.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from securesystemslib.signer import Signer

from edge_agent.bundle import read_bundle, tar_bytes
from edge_agent.errors import BadInputError, TransportError
from edge_agent.fsutil import atomic_write_bytes, atomic_write_text
from edge_agent.mqtt.client import MqttClient
from edge_agent.mqtt.config import MqttConfig
from edge_agent.mqtt.payloads import decode
from edge_agent.update.wire import Announcement, Audience, announce_topic, group_announce_topic
from fleet import keys
from fleet.publish import DEFAULT_CHUNK, Broker, publish_chunks, rollback, sign_bundle
from fleet.repo import FleetRepo
from fleet.rollout_core import (
    Outcome,
    Policy,
    RolloutState,
    RolloutStateError,
    Target,
    Wave,
    WaveStatus,
    active_version,
    judge_wave,
    new_state,
    observe_event,
    observe_status,
    parse_duration,
    parse_rate,
    parse_wave_size,
    rollout_id,
    summary,
)

log = logging.getLogger(__name__)

SAVE_EVERY_S = 0.2  # at most this often while outcomes stream in (always on wave changes)
# Incoming messages buffered for our handlers: a fleet's burst of retained statuses and
# update events must not overflow it (the client drops, and counts, what does not fit).
DISPATCH_QUEUE = 200_000


# --- what the broker tells us ----------------------------------------------------------------


class FleetObserver:
    """Latest retained status per device, and every status/event message in arrival order.

    Handlers run on the MQTT dispatch thread and only queue; the rollout thread drains.
    """

    def __init__(self, client: MqttClient, prefix: str = "edge") -> None:
        self.prefix = prefix
        self.statuses: dict[str, dict[str, Any]] = {}
        self._q: queue.Queue[tuple[str, str, dict[str, Any]]] = queue.Queue()
        self._lock = threading.Lock()
        self._last_status = time.monotonic()
        client.subscribe(f"{prefix}/+/status", self._on_status, qos=1)
        client.subscribe(f"{prefix}/+/events", self._on_event, qos=1)

    def _device(self, topic: str) -> str | None:
        parts = topic.split("/")
        return parts[1] if len(parts) == 3 and parts[0] == self.prefix else None

    def _on_status(self, topic: str, payload: bytes) -> None:
        device, doc = self._device(topic), decode(payload)
        if device is None or doc is None:
            return
        with self._lock:
            self.statuses[device] = doc
            self._last_status = time.monotonic()
        self._q.put((device, "status", doc))

    def _on_event(self, topic: str, payload: bytes) -> None:
        device, doc = self._device(topic), decode(payload)
        if device is not None and doc is not None:
            self._q.put((device, "event", doc))

    def settle(self, max_s: float, quiet_s: float = 0.5) -> None:
        """Wait for the retained statuses to arrive: until none came for ``quiet_s``."""
        deadline = time.monotonic() + max_s
        start = time.monotonic()
        while time.monotonic() < deadline:
            with self._lock:
                last = self._last_status
            if time.monotonic() - max(last, start) >= quiet_s:
                return
            time.sleep(0.05)

    def drain(self) -> list[tuple[str, str, dict[str, Any]]]:
        out = []
        while True:
            try:
                out.append(self._q.get_nowait())
            except queue.Empty:
                return out

    def members(self, group: str) -> list[str]:
        with self._lock:
            return sorted(d for d, doc in self.statuses.items()
                          if isinstance(doc.get("groups"), list) and group in doc["groups"])

    def status(self, device: str) -> dict[str, Any] | None:
        with self._lock:
            return self.statuses.get(device)


# --- the rollout ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RolloutRequest:
    """Everything the operator asked for (the CLI flags, validated)."""

    bundle: Path
    repo: Path
    broker_url: str
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
        self.tar = tar_bytes(bundle)
        sha = hashlib.sha256(self.tar).hexdigest()
        self.target = Target(bundle.name, bundle.version, sha)
        self.id = rollout_id(self.target, req.scope)
        self.path = req.state_path or req.repo / "rollouts" / f"{self.id}.json"
        self.ann_path = self.path.with_suffix(".announce.json")
        self.config = MqttConfig.from_url(req.broker_url)
        self.prefix = self.config.topic_prefix
        self.state: RolloutState | None = None
        self._saved: RolloutState | None = None
        self._saved_at = 0.0

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
        client = MqttClient(config=self.config,
                            client_id=f"edge-fleet-rollout-{os.getpid()}-{time.time_ns() % 10**6}",
                            dispatch_queue=DISPATCH_QUEUE)
        obs = FleetObserver(client, self.prefix)
        client.connect()
        try:
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
            doc = obs.status(d) or {}
            before[d] = active_version(doc, self.target.name)
            o = observe_status(d, doc, self.target)
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
                                        chunk_size=self.req.chunk_size)
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
                f"{p.wait_s:g} s per wave")

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
                self._publish([group_announce_topic(self.req.group, self.prefix)], payload)
            self._set(replace(st, status="completed", finished_at=time.time(),
                              group_announced=self.req.group is not None))
            self.say(f"rollout {self.id}: completed")
        return self.state  # type: ignore[return-value]

    def _publish_chunks(self) -> None:
        st = self.state
        assert st is not None
        ann = json.loads(self._announcement())
        if ann.get("chunks"):
            from edge_agent.update.wire import ChunkPlan

            plan = ChunkPlan.for_data(self.tar, self.req.chunk_size)
            broker = Broker(self.req.broker_url, client_id=f"edge-fleet-chunks-{os.getpid()}")
            try:
                publish_chunks(broker, self.tar, plan, self.target.sha256, self.prefix)
            finally:
                broker.close()
        self._set(replace(st, chunks_published=True))

    def _publish(self, topics: Sequence[str], payload: bytes, attempts: int = 5) -> None:
        """Retained QoS 1 publishes, each acknowledged by the broker (retried on drops)."""
        err: TransportError | None = None
        for _ in range(attempts):
            try:
                broker = Broker(self.req.broker_url,
                                client_id=f"edge-fleet-announce-{os.getpid()}")
            except TransportError as e:
                err = e
                time.sleep(1.0)
                continue
            try:
                for t in topics:
                    broker.publish(t, payload, retain=True)
                broker.flush(60.0)
                return
            except TransportError as e:
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
        offline = [d for d in todo if (obs.status(d) or {}).get("state") != "online"]
        self.say(f"wave {wave.index}: announcing to {len(todo)} device(s)"
                 f"{f' ({len(offline)} offline: counted, not waited for)' if offline else ''}")
        self._publish([announce_topic(d, self.prefix) for d in todo], payload)
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
        for device, kind, doc in obs.drain():
            if kind == "status":
                st = st.observe(observe_status(device, doc, st.target), now)
            else:
                raw = doc.get("data")
                data: dict[str, Any] = raw if isinstance(raw, dict) else {}
                o = observe_event(device, str(doc.get("kind", "")), data, st.target)
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
            self._publish([announce_topic(d, self.prefix) for d in offline], b"")
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
                         to_version=prev, broker_url=self.req.broker_url)
            st = replace(st, rolled_back=tuple(sorted({*st.rolled_back, *committed})))
            self.say(f"wave {wave.index}: signed rollback sent to {len(committed)} device(s)")
        self._set(replace(st, status="halted", finished_at=time.time()))


# --- report and CLI ----------------------------------------------------------------------------


def render_report(rep: dict[str, Any]) -> str:
    """The summary as text: totals, one line per wave, then each problem device."""
    lines = [f"rollout {rep['rollout']} ({rep['target']}, {rep['scope']}): {rep['status']} — "
             + ", ".join(f"{k} {v}" for k, v in rep["outcomes"].items())]
    for w in rep["waves"]:
        counts = ", ".join(f"{k} {v}" for k, v in w.items()
                           if k not in ("wave", "devices", "status", "verdict"))
        lines.append(f"  wave {w['wave']}: {w['status']:<8} {w['devices']:>4} devices  "
                     f"{counts}{'  — ' + w['verdict'] if w['verdict'] else ''}")
    for d, p in rep["problems"].items():
        lines.append(f"  {d}: {p['outcome']}{': ' + p['detail'] if p['detail'] else ''}")
    if rep["rolled_back"]:
        lines.append(f"  signed rollback sent to: {', '.join(rep['rolled_back'])}")
    return "\n".join(lines)


def request_from_args(a: argparse.Namespace) -> RolloutRequest:
    policy = Policy(canary=a.canary, step=a.step,
                    max_failure=parse_rate(a.max_failure, "--max-failure"),
                    wait_s=parse_duration(a.wait, "--wait"), rollback=a.rollback)
    return RolloutRequest(
        bundle=a.bundle, repo=a.repo, broker_url=a.broker, group=a.group,
        devices=tuple(a.device or ()), policy=policy, state_path=a.state,
        http_url=a.http_url, chunk_size=a.chunk_size,
        discover_s=parse_duration(a.discover, "--discover"), restart=a.restart,
        dry_run=a.dry_run)


def cmd_rollout(a: argparse.Namespace) -> int:
    req = request_from_args(a)
    signers = [] if a.dry_run else keys.load_signers([Path(k) for k in a.key],
                                                     keys.passphrase(a))
    quiet = a.json
    ro = Rollout(req, signers, say=(lambda _m: None) if quiet else
                 (lambda m: print(m, flush=True)))
    st = ro.run()
    rep = summary(st)
    print(json.dumps(rep, indent=1) if a.json else render_report(rep), flush=True)
    return 1 if st.status == "halted" else 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("rollout", help="staged rollout in waves; halts on failures",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", type=Path, help="bundle directory or .tar")
    p.add_argument("--repo", type=Path, required=True, help="repository directory")
    p.add_argument("--key", action="append", default=[], metavar="KEY",
                   help="private key file (repeat: targets, snapshot, timestamp keys)")
    p.add_argument("--broker", required=True, metavar="URL", help="mqtt[s]://host:port")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--group", metavar="G", help="devices whose status lists group G")
    who.add_argument("--device", nargs="+", metavar="ID", help="explicit device ids")
    p.add_argument("--canary", default="5%", help="first wave: %% of devices or a count")
    p.add_argument("--step", default="25%", help="later waves: %% of devices or a count")
    p.add_argument("--max-failure", default="10%", help="halt above this failure rate")
    p.add_argument("--wait", default="60s", help="per wave, for online devices to report")
    p.add_argument("--rollback", action="store_true",
                   help="on halt, sign a rollback for devices of the wave that committed")
    p.add_argument("--state", type=Path, help="state file (default REPO/rollouts/<id>.json)")
    p.add_argument("--http-url", metavar="URL", help="HTTP mirror of the repository")
    p.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK, metavar="BYTES")
    p.add_argument("--discover", default="3s", help="max time to gather retained statuses")
    p.add_argument("--dry-run", action="store_true", help="print the waves; publish nothing")
    p.add_argument("--restart", action="store_true", help="discard the state file first")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    keys.add_passphrase_args(p)
    p.set_defaults(func=cmd_rollout)


if __name__ == "__main__":  # pragma: no cover
    from fleet.cli import main
    sys.exit(main(["rollout", *sys.argv[1:]]))
