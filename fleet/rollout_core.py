"""The pure core of a staged rollout: waves, outcomes, the halt rule, and its saved state.

No MQTT, no files, no clock: the shell (:mod:`fleet.rollout_run`) passes in what it saw and
the time, and persists :class:`RolloutState` (``to_json`` / ``from_json``) atomically
*before* acting on a decision, so a rollout tool killed at any instant resumes with
nothing done twice.

Life of one wave (saved after every step)::

    pending ─► announcing ─► waiting ─► passed        (next wave)
                  │ per device:         └─► halted     (rollout stops; report)
                  │ announced=true after the broker's PUBACK

Device outcomes::

    skipped     not announced yet (a later wave, or the rollout halted first)
    already     its status shows the target version (or newer) active: not announced
    pending     announced, no outcome yet
    committed   the device committed the target version after probation
    failed      the device rejected it, failed a check, or rolled it back
    offline     offline when its wave started, or went offline while we waited:
                counted and reported, not waited for (the announcement is retained,
                so it updates when it returns; a late outcome is still recorded)
    timed_out   online, but no outcome within the wave's wait: counted as a failure

The halt rule (:func:`judge_wave`): failure rate = (failed + timed_out) / the wave's
devices that were announced and not offline. A wave halts as soon as the rate *cannot*
end at or below ``max_failure`` any more (2 of 4 failed at 10 % needs no more waiting),
and passes once nothing is pending and the rate is at or below it.

Size (~400 lines): one pure core on purpose; the wave states, the halt rule and the saved
state they act on are read (and tested) together.
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from edge_agent.errors import BadInputError

STATE_SCHEMA = 1


class RolloutStateError(BadInputError):
    """A rollout state file is unreadable or belongs to another rollout."""


class Outcome(str, enum.Enum):
    SKIPPED = "skipped"
    ALREADY = "already"
    PENDING = "pending"
    COMMITTED = "committed"
    FAILED = "failed"
    OFFLINE = "offline"
    TIMED_OUT = "timed_out"


FINAL = frozenset({Outcome.ALREADY, Outcome.COMMITTED, Outcome.FAILED})


class WaveStatus(str, enum.Enum):
    PENDING = "pending"
    ANNOUNCING = "announcing"
    WAITING = "waiting"
    PASSED = "passed"
    HALTED = "halted"


# --- parsing the operator's numbers ----------------------------------------------------------


@dataclass(frozen=True)
class WaveSize:
    """``"5%"`` (of the fleet, at least one device) or ``"3"`` (devices)."""

    fraction: float | None = None
    count: int | None = None

    def resolve(self, fleet: int) -> int:
        if self.count is not None:
            return max(1, self.count)
        assert self.fraction is not None
        return max(1, math.ceil(self.fraction * fleet - 1e-9))

    def __str__(self) -> str:
        return f"{self.fraction * 100:g}%" if self.fraction is not None else str(self.count)


def parse_wave_size(text: str, what: str) -> WaveSize:
    """``"5%"`` / ``"0.5%"`` / ``"3"``. Raises BadInputError naming ``what``."""
    t = text.strip()
    if t.endswith("%"):
        try:
            pct = float(t[:-1])
        except ValueError:
            pct = -1.0
        if not 0 < pct <= 100:
            raise BadInputError(f"{what}: expected a percentage in (0, 100], got {text!r}")
        return WaveSize(fraction=pct / 100)
    if t.isdigit() and int(t) >= 1:
        return WaveSize(count=int(t))
    raise BadInputError(f"{what}: expected a percentage like 5% or a device count, got {text!r}")


def parse_rate(text: str, what: str) -> float:
    """``"10%"`` or ``"0.1"`` → 0.1. Raises BadInputError."""
    t = text.strip()
    try:
        v = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        v = -1.0
    if not 0 <= v <= 1:
        raise BadInputError(f"{what}: expected a rate like 10% or 0.1 (0..1), got {text!r}")
    return v


_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$")


def parse_duration(text: str, what: str) -> float:
    """``"60s"`` / ``"2m"`` / ``"1.5h"`` / ``"90"`` (seconds) → seconds. Raises BadInputError."""
    m = _DURATION_RE.match(text.strip())
    if not m:
        raise BadInputError(f"{what}: expected a duration like 60s, 2m or 1h, got {text!r}")
    scale = {"ms": 0.001, "s": 1.0, None: 1.0, "m": 60.0, "h": 3600.0}[m.group(2)]
    v = float(m.group(1)) * scale
    if v <= 0:
        raise BadInputError(f"{what}: must be positive, got {text!r}")
    return v


# --- planning ---------------------------------------------------------------------------------


def plan_waves(devices: Iterable[str], canary: WaveSize, step: WaveSize) -> list[list[str]]:
    """Cut the fleet into waves: the canary wave, then ``step``-sized waves until all.

    Devices are ordered by id, so the plan is reproducible from the same inputs (and
    operators can choose canaries by naming). Sizes are taken from the whole fleet:
    ``--canary 5% --step 25%`` on 100 devices is 5, 25, 25, 25, 20.
    """
    ordered = sorted(set(devices))
    n = len(ordered)
    waves: list[list[str]] = []
    i, size = 0, canary.resolve(n)
    while i < n:
        waves.append(ordered[i:i + size])
        i += size
        size = step.resolve(n)
    return waves


@dataclass(frozen=True)
class Target:
    """What is rolled out: a model name and version (and the signed target's sha256)."""

    name: str
    version: int
    sha256: str = ""
    path: str = ""  # TUF target path

    def label(self) -> str:
        return f"{self.name} v{self.version}"


@dataclass(frozen=True)
class Policy:
    canary: str = "5%"
    step: str = "25%"
    max_failure: float = 0.10
    wait_s: float = 60.0
    rollback: bool = False  # on halt, roll the halted wave back with a signed command


# --- what devices tell us -------------------------------------------------------------------


@dataclass(frozen=True)
class Observation:
    """One fact about one device, from its events or its retained status."""

    device: str
    outcome: Outcome | None  # COMMITTED / FAILED / ALREADY / OFFLINE, or None (progress)
    detail: str = ""  # e.g. "rolled_back: probation: error rate 40% ..." / "downloading"
    online: bool | None = None


# --- the saved state ------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceRecord:
    outcome: Outcome = Outcome.SKIPPED
    announced: bool = False  # the broker acknowledged the announcement to this device
    detail: str = ""
    at: float = 0.0
    from_version: int | None = None  # active before the rollout (target of a wave rollback)


@dataclass(frozen=True)
class Wave:
    index: int
    devices: tuple[str, ...]
    status: WaveStatus = WaveStatus.PENDING
    started_at: float | None = None  # when announcing began; the wait counts from here
    decided_at: float | None = None
    verdict: str = ""


@dataclass(frozen=True)
class WaveVerdict:
    decided: bool
    passed: bool
    total: int
    committed: int
    failed: int
    timed_out: int
    offline: int
    already: int
    pending: int
    rate: float
    reason: str


def judge_wave(outcomes: Sequence[Outcome], max_failure: float, *,
               wait_over: bool) -> WaveVerdict:
    """Decide a wave from its devices' outcomes (see the module docstring).

    With ``wait_over``, pending devices count as timed out.
    """
    counts = {o: 0 for o in Outcome}
    for o in outcomes:
        counts[Outcome.TIMED_OUT if (wait_over and o == Outcome.PENDING) else o] += 1
    bad = counts[Outcome.FAILED] + counts[Outcome.TIMED_OUT]
    base = len(outcomes) - counts[Outcome.OFFLINE] - counts[Outcome.ALREADY] \
        - counts[Outcome.SKIPPED]
    pending = counts[Outcome.PENDING]
    rate = bad / base if base else 0.0
    best_rate = rate  # pending devices can only succeed from here
    args = (len(outcomes), counts[Outcome.COMMITTED], counts[Outcome.FAILED],
            counts[Outcome.TIMED_OUT], counts[Outcome.OFFLINE], counts[Outcome.ALREADY],
            pending, rate)
    if best_rate > max_failure + 1e-12:
        return WaveVerdict(True, False, *args,
                           f"failure rate {rate:.0%} ({bad} of {base}) is over the "
                           f"{max_failure:.0%} threshold")
    if pending == 0:
        return WaveVerdict(True, True, *args,
                           f"failure rate {rate:.0%} ({bad} of {base}) within "
                           f"{max_failure:.0%}")
    return WaveVerdict(False, True, *args, f"waiting for {pending} device(s)")


@dataclass(frozen=True)
class RolloutState:
    """Everything a restarted rollout needs; saved as JSON after every change."""

    rollout_id: str
    target: Target
    policy: Policy
    scope: str  # "group:<g>" or "devices:<n>"
    waves: tuple[Wave, ...]
    devices: Mapping[str, DeviceRecord]
    created_at: float
    status: str = "running"  # running | completed | halted
    finished_at: float | None = None
    rolled_back: tuple[str, ...] = ()  # devices sent a signed rollback command
    chunks_published: bool = False  # the target's retained chunks are on the broker
    group_announced: bool = False  # after the last wave: retained on the group topic too
    schema: int = STATE_SCHEMA
    notes: tuple[str, ...] = field(default=())

    # -- queries --

    def current_wave(self) -> Wave | None:
        """The first wave not passed (None when all passed or the rollout halted)."""
        if self.status != "running":
            return None
        for w in self.waves:
            if w.status != WaveStatus.PASSED:
                return w
        return None

    def outcomes(self, wave: Wave) -> list[Outcome]:
        return [self.devices[d].outcome for d in wave.devices]

    # -- changes (each returns a new state) --

    def with_device(self, device: str, **changes: Any) -> RolloutState:
        devs = dict(self.devices)
        devs[device] = replace(devs[device], **changes)
        return replace(self, devices=devs)

    def with_wave(self, wave: Wave) -> RolloutState:
        waves = list(self.waves)
        waves[wave.index] = wave
        return replace(self, waves=tuple(waves))

    def observe(self, obs: Observation, now: float) -> RolloutState:
        """Fold in one observation; returns ``self`` when nothing changed.

        Final outcomes (committed, failed, already) are kept once recorded; a device
        that was offline or timed out may still report late. Offline only matters for
        devices that were announced and have not decided yet.
        """
        rec = self.devices.get(obs.device)
        if rec is None or obs.outcome is None:
            return self
        if rec.outcome in FINAL:
            return self
        if obs.outcome == Outcome.OFFLINE:
            if rec.outcome != Outcome.PENDING:
                return self
        elif obs.outcome in (Outcome.COMMITTED, Outcome.FAILED) and not rec.announced:
            return self  # not ours (an outcome of someone else's announcement)
        if rec.outcome == obs.outcome and rec.detail == obs.detail:
            return self
        return self.with_device(obs.device, outcome=obs.outcome, detail=obs.detail, at=now)

    def to_json(self) -> str:
        d = asdict(self)
        d["policy"] = asdict(self.policy)
        d["waves"] = [{**asdict(w), "status": w.status.value} for w in self.waves]
        d["devices"] = {k: {**asdict(v), "outcome": v.outcome.value}
                        for k, v in sorted(self.devices.items())}
        return json.dumps(d, indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "rollout state") -> RolloutState:
        """Parse a saved state. Raises RolloutStateError naming ``source``."""
        try:
            d = json.loads(text)
            if d.get("schema") != STATE_SCHEMA:
                raise RolloutStateError(f"{source}: state schema {d.get('schema')!r}, this "
                                        f"tool reads {STATE_SCHEMA}")
            return cls(
                rollout_id=d["rollout_id"], target=Target(**d["target"]),
                policy=Policy(**d["policy"]), scope=d["scope"],
                waves=tuple(Wave(index=w["index"], devices=tuple(w["devices"]),
                                 status=WaveStatus(w["status"]), started_at=w["started_at"],
                                 decided_at=w["decided_at"], verdict=w["verdict"])
                            for w in d["waves"]),
                devices={k: DeviceRecord(Outcome(v["outcome"]), bool(v["announced"]),
                                         str(v["detail"]), float(v["at"]),
                                         v.get("from_version"))
                         for k, v in d["devices"].items()},
                created_at=float(d["created_at"]), status=d["status"],
                finished_at=d.get("finished_at"), rolled_back=tuple(d.get("rolled_back", ())),
                chunks_published=bool(d.get("chunks_published", False)),
                group_announced=bool(d.get("group_announced", False)),
                notes=tuple(d.get("notes", ())))
        except RolloutStateError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise RolloutStateError(f"{source}: not a rollout state file ({e!r})") from e


def new_state(rollout_id: str, target: Target, policy: Policy, scope: str,
              devices: Iterable[str], already: Mapping[str, str], now: float, *,
              from_versions: Mapping[str, int | None] | None = None) -> RolloutState:
    """A fresh plan. ``already`` maps devices whose status shows the target (or newer)
    active to a detail; they are planned in their wave but never announced.
    ``from_versions``: each device's active version now (what a wave rollback restores)."""
    waves = plan_waves(devices, parse_wave_size(policy.canary, "--canary"),
                       parse_wave_size(policy.step, "--step"))
    prev = from_versions or {}
    recs = {d: DeviceRecord(Outcome.ALREADY, False, already[d], now, prev.get(d))
            if d in already else DeviceRecord(from_version=prev.get(d))
            for w in waves for d in w}
    return RolloutState(rollout_id, target, policy, scope,
                        tuple(Wave(i, tuple(w)) for i, w in enumerate(waves)), recs, now)


def rollout_id(target: Target, scope: str) -> str:
    """Same release to the same scope → the same id (and state file): runs are idempotent."""
    return f"{target.name}-v{target.version}-{scope.replace(':', '-')}"


def summary(state: RolloutState) -> dict[str, Any]:
    """The report: per wave and in total, counts by outcome, failures with reasons."""
    by_outcome = {o.value: 0 for o in Outcome}
    for rec in state.devices.values():
        by_outcome[rec.outcome.value] += 1
    waves = []
    for w in state.waves:
        counts = {o.value: 0 for o in Outcome}
        for d in w.devices:
            counts[state.devices[d].outcome.value] += 1
        waves.append({"wave": w.index, "devices": len(w.devices), "status": w.status.value,
                      "verdict": w.verdict,
                      **{k: v for k, v in counts.items() if v}})
    problems = {d: {"outcome": r.outcome.value, "detail": r.detail}
                for d, r in sorted(state.devices.items())
                if r.outcome in (Outcome.FAILED, Outcome.TIMED_OUT, Outcome.OFFLINE)}
    return {"rollout": state.rollout_id, "target": state.target.label(),
            "scope": state.scope, "status": state.status, "devices": len(state.devices),
            "outcomes": {k: v for k, v in by_outcome.items() if v}, "waves": waves,
            "problems": problems, "rolled_back": list(state.rolled_back),
            "notes": list(state.notes)}
