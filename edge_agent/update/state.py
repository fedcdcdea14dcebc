"""The update state machine: phases, legal transitions, restart recovery, atomic persistence.

::

    idle → notified → downloading → verifying → test_loading → golden → swapping → probation
              └───────────┴─── rejected / failed (old model untouched) ──┘          │    │
                                                                  idle ← commit ←────┘    │
                                                                  idle ← rolling_back ←───┘

The pure part (:data:`TRANSITIONS`, :func:`recover`) decides; :class:`StateFile` writes
``state.json`` atomically (temp file + ``os.replace``) *before* the work of a phase
starts, so a crash at any instant leaves a phase whose recovery is defined. A write
that fails (disk full, read-only, I/O error) leaves the previous file whole; the flow
then refuses to start the phase, or — when the attempt is ending anyway — keeps the
end state in memory and says that it is not on disk (:mod:`edge_agent.update.flow`).
A stale phase left that way is recovered like a crash at the next start. So that the
end of an attempt still reaches the disk when something else filled it, ``state.json``
stays small (bounded lists: under 45 KB with 64-character names) and keeps
:data:`RESERVE_BYTES` of room of its own (``state.reserve``), given up on ENOSPC for the
write that ends an attempt (never to start one on a full disk).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from edge_agent.errors import InvalidRequestError
from edge_agent.fsutil import atomic_write_bytes
from edge_agent.protocol.kinds import UpdatePhase, UpdateResult
from edge_agent.protocol.messages import UpdateOutcome
from edge_agent.update import faults

log = logging.getLogger(__name__)

Phase = UpdatePhase  # the phases are part of the status: defined in edge_agent.protocol


PRE_SWAP = (Phase.NOTIFIED, Phase.DOWNLOADING, Phase.VERIFYING, Phase.TEST_LOADING,
            Phase.GOLDEN, Phase.SHADOW)

# ``→ notified`` from a later pre-swap phase is the resume edge after a restart.
TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.IDLE: frozenset({Phase.NOTIFIED, Phase.ROLLING_BACK}),
    Phase.NOTIFIED: frozenset({Phase.DOWNLOADING, Phase.IDLE, Phase.ROLLING_BACK}),
    Phase.DOWNLOADING: frozenset({Phase.VERIFYING, Phase.IDLE, Phase.NOTIFIED}),
    Phase.VERIFYING: frozenset({Phase.TEST_LOADING, Phase.IDLE, Phase.NOTIFIED}),
    Phase.TEST_LOADING: frozenset({Phase.GOLDEN, Phase.IDLE, Phase.NOTIFIED}),
    Phase.GOLDEN: frozenset({Phase.SWAPPING, Phase.SHADOW, Phase.IDLE, Phase.NOTIFIED}),
    Phase.SHADOW: frozenset({Phase.SWAPPING, Phase.IDLE, Phase.NOTIFIED}),
    Phase.SWAPPING: frozenset({Phase.PROBATION, Phase.ROLLING_BACK, Phase.IDLE,
                               Phase.NOTIFIED}),
    Phase.PROBATION: frozenset({Phase.IDLE, Phase.ROLLING_BACK}),
    Phase.ROLLING_BACK: frozenset({Phase.IDLE}),
}


class IllegalTransition(RuntimeError):
    """A programming error: the flow tried a transition the table does not allow."""


# Bounds that keep state.json small (see RESERVE_BYTES): the newest entries are kept.
MAX_SETTLED = 64  # announcement digests
MAX_BLOCKED = 256  # name@version rolled back or abandoned here
MAX_DONE_COMMANDS = 256  # executed command ids; their signed expiry bounds the rest
MAX_REASON_CHARS = 500  # the last outcome's reason

# How an attempt ended (result: committed | rejected | failed | rolled_back | abandoned |
# noop | interrupted — see UpdateResult); shown in the status and events.
Outcome = UpdateOutcome


@dataclass(frozen=True)
class UpdateState:
    """Everything needed to resume or abandon after a crash; stored as ``state.json``."""

    phase: Phase = Phase.IDLE
    announce_digest: str | None = None  # the stored announcement being processed
    announce_topic: str | None = None
    target: str | None = None  # TUF target path
    target_sha256: str | None = None
    name: str | None = None
    version: int | None = None
    from_version: int | None = None  # what was active before the swap
    phase_at: float = 0.0
    probation_until: float | None = None
    probation_min_requests: int = 0  # signed in the release (the config value is the floor)
    probation_min_clients: int = 0
    crashes: int = 0  # agent restarts seen during this update (crash-loop guard)
    clean_stop: bool = False  # probation interrupted by an orderly shutdown (not a crash)
    last: Outcome | None = None
    blocked: tuple[str, ...] = ()  # target sha256 rolled back on this device: never again
    done_commands: tuple[str, ...] = ()  # executed signed command ids (replay guard)
    settled: tuple[str, ...] = ()  # announcement digests already decided (no re-run)

    def to(self, phase: Phase, **changes: Any) -> UpdateState:
        """The next state; raises IllegalTransition for an edge missing from TRANSITIONS."""
        if phase != self.phase and phase not in TRANSITIONS[self.phase]:
            raise IllegalTransition(f"{self.phase.value} → {phase.value} is not allowed")
        return replace(self, phase=phase, phase_at=time.time(), **changes)

    def finish(self, outcome: Outcome, *, remember: bool = True,
               block: str | None = None) -> UpdateState:
        """Back to idle with ``outcome``; the announcement is marked settled if ``remember``,
        ``block`` (``name@version``) is added to the versions never to install again."""
        settled = self.settled
        if remember and self.announce_digest and self.announce_digest not in settled:
            settled = (*settled, self.announce_digest)[-MAX_SETTLED:]
        blocked = self.blocked
        if block is not None and block not in blocked:
            blocked = (*blocked, block)[-MAX_BLOCKED:]
        if len(outcome.reason) > MAX_REASON_CHARS:  # state.json stays small
            outcome = replace(outcome, reason=outcome.reason[:MAX_REASON_CHARS - 1] + "…")
        return replace(self.to(Phase.IDLE), announce_digest=None, announce_topic=None,
                       target=None, target_sha256=None, name=None, version=None,
                       from_version=None, probation_until=None, probation_min_requests=0,
                       probation_min_clients=0, crashes=0, clean_stop=False,
                       last=outcome, settled=settled, blocked=blocked)

    def to_json(self) -> str:
        d = asdict(self)
        d["phase"] = self.phase.value
        return json.dumps(d, indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> UpdateState:
        d = json.loads(text)
        last = d.pop("last", None)
        for k in ("blocked", "done_commands", "settled"):
            d[k] = tuple(d.get(k, ()))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known and k not in ("phase",)},
                   phase=Phase(d.get("phase", "idle")),
                   last=Outcome.from_dict(last, "state.json: last")
                   if isinstance(last, dict) else None)


class Recovery(str, enum.Enum):
    NOTHING = "nothing"
    RESUME = "resume"  # re-run from the stored announcement; the download resumes from staging
    PROBATION = "probation"  # the new version is active: (re)start its probation window
    ROLLBACK = "rollback"  # restore from_version
    ABANDON = "abandon"  # give the update up (it keeps crashing the agent before the swap)


@dataclass(frozen=True)
class RecoveryPlan:
    action: Recovery
    reason: str
    crashes: int = 0


# restarts in pre-swap phases before an update is abandoned: the agent gives up at its 4th
# start, one before the systemd unit's StartLimitBurst=5 stops restarting it
MAX_RESUMES = 2


def recover(state: UpdateState, active_version: int | None, max_crashes: int) -> RecoveryPlan:
    """What to do with a state found on disk at start (pure).

    Nothing before ``swapping`` has touched the serving model, so those phases resume
    (every check re-runs). In ``swapping``, ``active.json`` tells whether the swap
    persisted (start probation) or not (resume). A restart in ``probation`` that was not
    an orderly shutdown counts as a crash of the new model; more than ``max_crashes``
    of them roll back. An update that keeps dying before the swap (a model that crashes
    the runtime at test-load, say) is abandoned after MAX_RESUMES restarts.
    """
    p = state.phase
    if p == Phase.IDLE:
        return RecoveryPlan(Recovery.NOTHING, "idle")
    if p in PRE_SWAP:
        n = state.crashes + 1
        if n > MAX_RESUMES:
            return RecoveryPlan(Recovery.ABANDON, f"agent restarted {n}x while {p.value}; "
                                "giving this update up", n)
        return RecoveryPlan(Recovery.RESUME, f"interrupted while {p.value}", n)
    if p == Phase.ROLLING_BACK:
        return RecoveryPlan(Recovery.ROLLBACK, "interrupted while rolling back", state.crashes)
    if p == Phase.SWAPPING:
        if active_version != state.version:
            return RecoveryPlan(Recovery.RESUME, "interrupted before the swap persisted",
                                state.crashes + 1)
        return RecoveryPlan(Recovery.PROBATION, "the swap persisted just before the restart",
                            state.crashes)
    if state.clean_stop:
        return RecoveryPlan(Recovery.PROBATION, "probation interrupted by a shutdown",
                            state.crashes)
    crashes = state.crashes + 1
    if crashes > max_crashes:
        return RecoveryPlan(Recovery.ROLLBACK, f"agent restarted {crashes}x while "
                            f"v{state.version} was on probation (max {max_crashes})", crashes)
    return RecoveryPlan(Recovery.PROBATION, f"restart {crashes} of {max_crashes} tolerated "
                        "during probation", crashes)


RESERVE_BYTES = 64 * 1024  # room kept for state.json (under 45 KB at its largest)
_FULL = (errno.ENOSPC, errno.EDQUOT)


@dataclass
class StateFile:
    """``state.json`` plus the stored announcement, both written atomically."""

    path: Path
    announce_dir: Path = field(init=False)
    reserve: Path = field(init=False)

    def __post_init__(self) -> None:
        self.announce_dir = self.path.parent / "announcements"
        self.reserve = self.path.parent / "state.reserve"

    def load(self) -> UpdateState:
        """The persisted state; a missing file is idle. A corrupt one is quarantined."""
        try:
            return UpdateState.from_json(self.path.read_text())
        except FileNotFoundError:
            return UpdateState()
        except (OSError, ValueError, TypeError, KeyError, InvalidRequestError):
            bad = self.path.with_suffix(f".corrupt-{int(time.time())}")
            self.path.replace(bad)
            return UpdateState(last=Outcome(UpdateResult.ABANDONED, "state",
                                            f"state file was unreadable; kept as {bad.name}",
                                            at=time.time()))

    def save(self, state: UpdateState, *, use_reserve: bool = False) -> None:
        """Replace ``state.json`` atomically. With ``use_reserve`` (the end of an attempt,
        which must reach the disk; never for starting a phase on a full disk), ENOSPC or
        EDQUOT gives the reserve up to make room and the write is tried once more.

        Raises OSError when it fails; the previous ``state.json`` is then intact.
        """
        data = state.to_json().encode("utf-8")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._write(data)
        except OSError as e:
            if not use_reserve or e.errno not in _FULL or not self._release_reserve():
                raise
            log.warning("update: disk full; state.json written into its reserve (%s)", e)
            self._write(data)
        else:
            self._keep_reserve()

    def _write(self, data: bytes) -> None:
        faults.disk_error("state", self.path)
        atomic_write_bytes(self.path, data)

    def _release_reserve(self) -> bool:
        try:
            self.reserve.unlink()
        except OSError:
            return False
        return True

    def _keep_reserve(self) -> None:
        """Recreate the reserve if it is missing, once the disk has room again (at least
        4 reserves free: it never takes the last bytes). Best effort, never raises."""
        try:
            if self.reserve.stat().st_size >= RESERVE_BYTES:
                return
        except FileNotFoundError:
            pass
        except OSError:
            return
        try:
            if shutil.disk_usage(self.reserve.parent).free < 4 * RESERVE_BYTES:
                return
        except OSError:
            return
        tmp = self.reserve.with_name(f".{self.reserve.name}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.posix_fallocate(fd, 0, RESERVE_BYTES)
            finally:
                os.close(fd)
            os.replace(tmp, self.reserve)
        except OSError as e:
            log.debug("update: no room for the state reserve: %s", e)
            with contextlib.suppress(OSError):
                tmp.unlink()

    def store_announcement(self, digest: str, payload: bytes) -> None:
        """Keep the announcement being processed (resumed from after a restart).
        Raises OSError (disk full, read-only)."""
        self.announce_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.announce_dir / f"{digest}.json", payload)

    def announcement(self, digest: str) -> bytes | None:
        try:
            return (self.announce_dir / f"{digest}.json").read_bytes()
        except OSError:
            return None

    def prune_announcements(self, keep: set[str]) -> None:
        """Remove stored announcements not in ``keep`` (best effort: never raises)."""
        try:
            stored = list(self.announce_dir.glob("*.json"))
        except OSError:
            return
        for p in stored:
            if p.stem not in keep:
                with contextlib.suppress(OSError):
                    p.unlink()
