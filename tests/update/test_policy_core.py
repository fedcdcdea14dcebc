"""One test per decision of the pure device policy and the update state machine.

:mod:`edge_agent.update.policy` decides, from signed metadata alone, whether *this*
device takes *this* target; :data:`edge_agent.update.state.TRANSITIONS` decides which
phase may follow which. No IO, no clock: each test names the attack or rule it pins,
asserts the error class and its ``code``, and that the state it started from is unchanged.
"""

from __future__ import annotations

import json
import re

import pytest

from edge_agent.bundle import Manifest, Preprocessing, TensorSpec
from edge_agent.update.errors import (
    BundleRejectedError,
    CommandExpiredError,
    CommandRejectedError,
    CommandReplayedError,
    CommandVersionError,
    InsufficientSpaceError,
    NotForDeviceError,
    TargetMismatchError,
    UpdateError,
    VersionNotNewerError,
)
from edge_agent.update.policy import (
    DeviceIdentity,
    check_audience,
    check_command,
    check_free_space,
    check_manifest,
    check_model_target,
)
from edge_agent.update.state import (
    PRE_SWAP,
    TRANSITIONS,
    IllegalTransition,
    Outcome,
    Phase,
    UpdateState,
)
from edge_agent.update.wire import (
    Audience,
    Command,
    TargetSpec,
    parse_command,
    parse_target_spec,
)

ME = DeviceIdentity("dev1", ("line-3",), "generic-x86_64")
FOR_ME = Audience(("dev1",), ())
PATH = "models/digits/digits-3.tar"


def spec(version: int = 3, *, profiles: tuple[str, ...] = ("generic-x86_64",),
         audience: Audience = FOR_ME, name: str = "digits") -> TargetSpec:
    return TargetSpec("model", audience, name, version, profiles, None)


def check(s: TargetSpec, *, installed: int | None = 2, blocked: tuple[str, ...] = (),
          length: int = 10, max_bytes: int = 100) -> None:
    check_model_target(s, path=PATH, length=length, me=ME, installed=installed,
                       blocked=blocked, max_bytes=max_bytes)


def refused(err: type[UpdateError], code: str, message: str) -> pytest.RaisesContext:  # type: ignore[type-arg]
    """``pytest.raises`` for ``err`` naming ``message``; the caller checks ``code`` too."""
    assert err.code == code, (err, err.code)
    return pytest.raises(err, match=re.escape(message))


# --- audience and profile --------------------------------------------------------------------


def test_model_signed_for_this_device_is_accepted() -> None:
    check(spec())


def test_model_signed_for_one_of_this_devices_groups_is_accepted() -> None:
    check(spec(audience=Audience((), ("line-3",))))


def test_announcement_for_another_device_is_refused() -> None:
    with refused(NotForDeviceError, "audience", "signed for devices ['dev2']"):
        check(spec(audience=Audience(("dev2",), ())))


def test_announcement_for_another_group_is_refused() -> None:
    with refused(NotForDeviceError, "audience", "groups ['line-4']; this is device 'dev1'"):
        check(spec(audience=Audience((), ("line-4",))))


def test_announcement_with_an_empty_audience_is_refused() -> None:
    with refused(NotForDeviceError, "audience", "signed for devices [] / groups []"):
        check(spec(audience=Audience()))


def test_command_for_another_device_is_refused() -> None:
    cmd = TargetSpec("command", Audience(("dev2",), ()))
    with refused(NotForDeviceError, "audience", "commands/rb-1.json is signed for devices"):
        check_audience(cmd, ME, "commands/rb-1.json")


def test_model_for_another_profile_is_refused() -> None:
    with refused(NotForDeviceError, "audience",
                 "digits v3 is signed for profiles ['rpi4']; this device is 'generic-x86_64'"):
        check(spec(profiles=("rpi4",)))


# --- versions -------------------------------------------------------------------------------


def test_version_rollback_is_refused() -> None:
    with refused(VersionNotNewerError, "version",
                 "digits v1 is not newer than the installed v2 (rollback refused)"):
        check(spec(1))


def test_same_version_as_installed_is_refused() -> None:
    with refused(VersionNotNewerError, "version", "v2 is not newer than the installed v2"):
        check(spec(2))


def test_first_install_takes_any_version() -> None:
    check(spec(1), installed=None)


def test_version_rolled_back_on_this_device_is_refused_again() -> None:
    with refused(BundleRejectedError, "bundle", "digits v3 is blocked on this device"):
        check(spec(3), blocked=("digits@3",))


def test_a_block_on_another_model_does_not_apply() -> None:
    check(spec(3), blocked=("other@3",))


# --- what the target is, and its size --------------------------------------------------------


def test_command_offered_as_a_model_is_refused() -> None:
    with refused(BundleRejectedError, "bundle", f"{PATH} is a command, not a model"):
        check(TargetSpec("command", FOR_ME))


def test_target_over_the_size_cap_is_refused() -> None:
    with refused(TargetMismatchError, "mismatch",
                 f"{PATH} is 101 bytes, over this device's cap of 100"):
        check(spec(), length=101)


def test_target_at_the_size_cap_is_accepted() -> None:
    check(spec(), length=100)


def test_not_enough_free_disk_is_refused() -> None:
    with refused(InsufficientSpaceError, "disk",
                 "needs 101 bytes free (2 x 40 + reserve 21), have 100"):
        check_free_space(free=100, length=40, reserve=21)


def test_exactly_enough_free_disk_is_accepted() -> None:
    check_free_space(free=100, length=40, reserve=20)


# --- the signed entry itself -----------------------------------------------------------------


def test_signed_entry_without_an_edge_section_is_refused() -> None:
    with refused(BundleRejectedError, "bundle", "has no 'custom.edge' entry"):
        parse_target_spec({"other": {}}, 10, PATH)


def test_signed_entry_of_an_unknown_kind_is_refused() -> None:
    with refused(BundleRejectedError, "bundle", "unknown kind 'firmware'"):
        parse_target_spec({"edge": {"kind": "firmware"}}, 10, PATH)


def test_signed_entry_with_a_boolean_version_is_refused() -> None:
    with refused(BundleRejectedError, "bundle", "'version' must be a positive int"):
        parse_target_spec({"edge": {"kind": "model", "name": "d", "version": True}}, 10, PATH)


def test_signed_chunk_list_not_covering_the_length_is_refused() -> None:
    edge = {"kind": "model", "name": "d", "version": 3, "chunk_size": 4, "chunks": ["0" * 64]}
    with refused(BundleRejectedError, "bundle", "1 chunk hashes for 10 bytes in 4-byte chunks"):
        parse_target_spec({"edge": edge}, 10, PATH)


# --- the verified bundle must agree with its signed entry --------------------------------------


def manifest(name: str = "digits", version: int = 3,
             profiles: tuple[str, ...] = ("generic-x86_64",)) -> Manifest:
    t = TensorSpec("x", (1, 4), "float32")
    return Manifest(name, version, "2024-01-01T00:00:00Z", "0" * 64, 10, (t,), (t,),
                    Preprocessing(), "int8", target_profiles=profiles)


def test_manifest_agreeing_with_its_signed_entry_is_accepted() -> None:
    check_manifest(manifest(), spec(), ME)


def test_manifest_naming_another_model_is_refused() -> None:
    with refused(BundleRejectedError, "bundle",
                 "bundle manifest says other v3, its signed entry says digits v3"):
        check_manifest(manifest(name="other"), spec(), ME)


def test_manifest_with_another_version_is_refused() -> None:
    with refused(BundleRejectedError, "bundle",
                 "bundle manifest says digits v9, its signed entry says digits v3"):
        check_manifest(manifest(version=9), spec(), ME)


def test_manifest_converted_for_another_profile_is_refused() -> None:
    with refused(NotForDeviceError, "audience",
                 "bundle was converted for profiles ['rpi4']; this device is 'generic-x86_64'"):
        check_manifest(manifest(profiles=("rpi4",)), spec(), ME)


# --- the transition table ---------------------------------------------------------------------

AT = {p: UpdateState(phase=p, name="digits", version=3, from_version=2) for p in Phase}


def illegal(start: Phase, to: Phase) -> None:
    s = AT[start]
    with pytest.raises(IllegalTransition, match=f"{start.value} → {to.value} is not allowed"):
        s.to(to)
    assert s == AT[start] and s.phase == start  # nothing moved


def test_the_table_names_every_phase() -> None:
    assert set(TRANSITIONS) == set(Phase)


def test_the_pipeline_runs_in_order() -> None:
    s = AT[Phase.IDLE]
    for p in (Phase.NOTIFIED, Phase.DOWNLOADING, Phase.VERIFYING, Phase.TEST_LOADING,
              Phase.GOLDEN, Phase.SWAPPING, Phase.PROBATION, Phase.IDLE):
        s = s.to(p)
    assert s.phase == Phase.IDLE


def test_idle_cannot_jump_to_probation() -> None:
    illegal(Phase.IDLE, Phase.PROBATION)


def test_idle_cannot_start_downloading_without_an_announcement() -> None:
    illegal(Phase.IDLE, Phase.DOWNLOADING)


def test_verification_cannot_be_skipped() -> None:
    illegal(Phase.DOWNLOADING, Phase.TEST_LOADING)


def test_golden_vectors_cannot_be_skipped() -> None:
    illegal(Phase.TEST_LOADING, Phase.SWAPPING)


def test_probation_cannot_start_without_a_swap() -> None:
    illegal(Phase.GOLDEN, Phase.PROBATION)


def test_probation_cannot_go_back_to_downloading() -> None:
    illegal(Phase.PROBATION, Phase.NOTIFIED)


def test_rolling_back_ends_only_in_idle() -> None:
    assert TRANSITIONS[Phase.ROLLING_BACK] == {Phase.IDLE}


@pytest.mark.parametrize("phase", PRE_SWAP, ids=lambda p: p.value)
def test_every_pre_swap_phase_can_give_up_to_idle(phase: Phase) -> None:
    assert Phase.IDLE in TRANSITIONS[phase]


@pytest.mark.parametrize("phase", PRE_SWAP[1:], ids=lambda p: p.value)
def test_every_later_pre_swap_phase_can_resume_from_notified(phase: Phase) -> None:
    assert Phase.NOTIFIED in TRANSITIONS[phase]


def test_no_pre_swap_phase_can_roll_back_but_notified() -> None:
    """Before the swap nothing is serving that could be rolled back (a signed rollback
    command starts from notified)."""
    assert [p for p in PRE_SWAP if Phase.ROLLING_BACK in TRANSITIONS[p]] == [Phase.NOTIFIED]


# --- finishing ----------------------------------------------------------------------------------


def test_finishing_settles_the_announcement() -> None:
    s = UpdateState().to(Phase.NOTIFIED, announce_digest="ab")
    done = s.finish(Outcome("rejected", "audience", "not for me"))
    assert (done.phase, done.settled, done.announce_digest) == (Phase.IDLE, ("ab",), None)


def test_a_transient_failure_leaves_the_announcement_unsettled() -> None:
    s = UpdateState().to(Phase.NOTIFIED, announce_digest="ab")
    assert s.finish(Outcome("failed", "transport", "stalled"), remember=False).settled == ()


def test_the_settled_list_keeps_the_last_64() -> None:
    s = UpdateState(settled=tuple(f"d{i}" for i in range(64)))
    done = s.to(Phase.NOTIFIED, announce_digest="new").finish(Outcome("noop", "x", "y"))
    assert len(done.settled) == 64 and done.settled[-1] == "new" and "d0" not in done.settled


def test_finishing_keeps_the_blocked_versions() -> None:
    s = UpdateState(blocked=("digits@3",)).to(Phase.NOTIFIED, announce_digest="ab")
    assert s.finish(Outcome("rejected", "bundle", "x")).blocked == ("digits@3",)


# --- signed commands: bound to a from-version, an expiry and a single use ------------------

_CMD = Command("rollback", "digits", 1, "c0ffee", from_version=2, expires_at=1000.0, release=7)


def test_a_replayed_command_id_is_rejected() -> None:
    with pytest.raises(CommandReplayedError) as e:
        check_command(_CMD, active=2, executed=("c0ffee",), now=10.0)
    assert e.value.code == "command_replayed"


def test_an_expired_command_is_rejected() -> None:
    with pytest.raises(CommandExpiredError) as e:
        check_command(_CMD, active=2, executed=(), now=1000.0)
    assert e.value.code == "command_expired"


def test_a_command_signed_against_another_version_is_rejected() -> None:
    with pytest.raises(CommandVersionError) as e:
        check_command(_CMD, active=3, executed=(), now=10.0)
    assert e.value.code == "command_version" and "serves v3" in str(e.value)


def test_a_fresh_command_for_the_serving_version_is_accepted() -> None:
    check_command(_CMD, active=2, executed=("other",), now=999.0)
    assert parse_command(_CMD.to_bytes()) == _CMD


@pytest.mark.parametrize("drop", ["from_version", "expires_at"])
def test_an_unbound_command_is_rejected(drop: str) -> None:
    d = json.loads(_CMD.to_bytes())
    del d[drop]
    with pytest.raises(CommandRejectedError, match=drop):
        parse_command(json.dumps(d).encode())
