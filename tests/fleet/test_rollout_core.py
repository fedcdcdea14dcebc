"""The pure rollout core: wave plans, the halt rule, observations, saved state."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.errors import BadInputError
from fleet.rollout_core import (
    Observation,
    Outcome,
    Policy,
    RolloutState,
    RolloutStateError,
    Target,
    WaveSize,
    WaveStatus,
    judge_wave,
    new_state,
    parse_duration,
    parse_rate,
    parse_wave_size,
    plan_waves,
    summary,
)
from fleet.rollout_observe import observe_event, observe_status

T = Target("digits", 2, "ab" * 32, "models/digits/digits-2.tar")


def test_canary_5_percent_then_25_percent_steps_on_100_devices() -> None:
    devs = [f"d{i:03d}" for i in range(100)]
    waves = plan_waves(devs, parse_wave_size("5%", "c"), parse_wave_size("25%", "s"))
    assert [len(w) for w in waves] == [5, 25, 25, 25, 20]
    assert waves[0] == devs[:5]


def test_a_percentage_of_a_tiny_fleet_is_at_least_one_device() -> None:
    assert [len(w) for w in plan_waves(["a", "b", "c"], WaveSize(0.05), WaveSize(0.25))] \
        == [1, 1, 1]


@given(st.sets(st.text("abcdef0123", min_size=1, max_size=6), max_size=60),
       st.integers(1, 100), st.integers(1, 100))
def test_every_device_is_in_exactly_one_wave(devs: set[str], c: int, s: int) -> None:
    waves = plan_waves(devs, WaveSize(c / 100), WaveSize(s / 100))
    flat = [d for w in waves for d in w]
    assert sorted(flat) == sorted(devs)
    assert all(waves)


@pytest.mark.parametrize("text", ["0%", "101%", "x%", "-3", "0", "abc", ""])
def test_bad_wave_sizes_are_refused(text: str) -> None:
    with pytest.raises(BadInputError, match="--canary"):
        parse_wave_size(text, "--canary")


@pytest.mark.parametrize(("text", "rate"), [("10%", 0.1), ("0.25", 0.25)])
def test_rates_parse_as_percent_or_fraction(text: str, rate: float) -> None:
    assert parse_rate(text, "r") == pytest.approx(rate)


@pytest.mark.parametrize(("text", "seconds"), [("60s", 60.0), ("2m", 120.0), ("90", 90.0),
                                               ("500ms", 0.5)])
def test_durations_parse_with_units(text: str, seconds: float) -> None:
    assert parse_duration(text, "w") == seconds


def test_a_rate_over_100_percent_is_refused_naming_the_flag() -> None:
    with pytest.raises(BadInputError, match="--max-failure"):
        parse_rate("150%", "--max-failure")


def test_a_duration_without_a_number_is_refused_naming_the_flag() -> None:
    with pytest.raises(BadInputError, match="--wait"):
        parse_duration("soon", "--wait")


def test_two_failures_of_four_halt_at_once_without_waiting() -> None:
    v = judge_wave([Outcome.FAILED, Outcome.FAILED, Outcome.PENDING, Outcome.PENDING], 0.10,
                   wait_over=False)
    assert v.decided and not v.passed
    assert v.failed == 2 and v.pending == 2
    assert "over the 10% threshold" in v.reason


def test_a_wave_waits_while_failures_could_still_stay_under_the_threshold() -> None:
    outs = [Outcome.COMMITTED] * 9 + [Outcome.PENDING] * 10 + [Outcome.FAILED]
    v = judge_wave(outs, 0.10, wait_over=False)
    assert not v.decided


def test_a_wave_passes_when_all_decided_within_the_threshold() -> None:
    outs = [Outcome.COMMITTED] * 9 + [Outcome.FAILED]
    v = judge_wave(outs, 0.10, wait_over=False)
    assert v.decided and v.passed and v.rate == pytest.approx(0.1)


def test_offline_and_already_devices_are_not_in_the_denominator_nor_waited_for() -> None:
    outs = [Outcome.COMMITTED, Outcome.OFFLINE, Outcome.OFFLINE, Outcome.ALREADY]
    v = judge_wave(outs, 0.0, wait_over=False)
    assert v.decided and v.passed and v.offline == 2 and v.rate == 0


def test_pending_devices_time_out_as_failures_when_the_wait_is_over() -> None:
    outs = [Outcome.COMMITTED] * 3 + [Outcome.PENDING]
    assert not judge_wave(outs, 0.10, wait_over=False).decided
    v = judge_wave(outs, 0.10, wait_over=True)
    assert v.decided and not v.passed and v.timed_out == 1


def test_an_all_offline_wave_passes_with_nothing_to_judge() -> None:
    v = judge_wave([Outcome.OFFLINE] * 3, 0.10, wait_over=False)
    assert v.decided and v.passed and v.rate == 0


def test_a_committed_event_for_the_target_is_committed() -> None:
    assert observe_event("a", "update.committed", {"name": "digits", "version": 2}, T) \
        == Observation("a", Outcome.COMMITTED, "committed")


def test_a_rolled_back_event_is_a_failure_naming_its_code() -> None:
    o = observe_event("a", "update.rolled_back",
                      {"name": "digits", "version": 2, "code": "probation",
                       "reason": "error rate 40%"}, T)
    assert o is not None and o.outcome == Outcome.FAILED and "probation" in o.detail


def test_a_version_rejection_means_the_device_already_has_it_or_newer() -> None:
    o = observe_event("a", "update.rejected", {"name": "digits", "version": 2,
                                               "code": "version"}, T)
    assert o is not None and o.outcome == Outcome.ALREADY


@pytest.mark.parametrize(("kind", "data"), [
    ("update.committed", {"name": "digits", "version": 3}),
    ("update.committed", {"name": "other", "version": 2}),
    ("model.loaded", {"name": "digits", "version": 2}),
], ids=["other-version", "other-model", "not-an-update-event"])
def test_events_about_another_target_are_ignored(kind: str, data: dict[str, object]) -> None:
    assert observe_event("a", kind, data, T) is None


def test_a_transient_failure_is_not_an_outcome_the_device_retries() -> None:
    transient = observe_event("a", "update.failed", {"name": "digits", "version": 2,
                                                     "code": "transport"}, T)
    assert transient is not None and transient.outcome is None


def test_progress_events_are_not_an_outcome() -> None:
    progress = observe_event("a", "update.downloading", {"name": "digits", "version": 2}, T)
    assert progress is not None and progress.outcome is None


DONE = {"state": "online", "models": [{"name": "digits", "active": 2}],
        "update": {"phase": "idle"}}


def test_an_offline_status_is_offline() -> None:
    assert observe_status("a", {"state": "offline"}, T).outcome == Outcome.OFFLINE


def test_a_device_still_downloading_is_online_without_an_outcome() -> None:
    on = {"state": "online", "models": [{"name": "digits", "active": 1}],
          "update": {"phase": "downloading"}}
    o = observe_status("a", on, T)
    assert o.online and o.outcome is None


def test_an_idle_device_serving_the_target_has_committed() -> None:
    assert observe_status("a", DONE, T).outcome == Outcome.COMMITTED


def test_a_device_serving_the_target_on_probation_has_no_outcome_yet() -> None:
    assert observe_status("a", {**DONE, "update": {"phase": "probation"}}, T).outcome is None


def test_a_device_that_ignored_the_target_as_installed_is_already() -> None:
    noop = {**DONE, "update": {"phase": "idle", "last": {"result": "noop", "name": "digits",
                                                          "version": 2, "code": "installed"}}}
    assert observe_status("a", noop, T).outcome == Outcome.ALREADY


def test_a_device_serving_a_newer_version_is_already() -> None:
    newer = {**DONE, "models": [{"name": "digits", "active": 3}]}
    assert observe_status("a", newer, T).outcome == Outcome.ALREADY


def test_a_device_that_rolled_the_target_back_has_failed() -> None:
    rolled = {"state": "online", "models": [{"name": "digits", "active": 1}],
              "update": {"phase": "idle", "last": {"result": "rolled_back", "name": "digits",
                                                   "version": 2, "code": "probation"}}}
    assert observe_status("a", rolled, T).outcome == Outcome.FAILED


def _state() -> RolloutState:
    devs = [f"d{i:02d}" for i in range(8)]
    return new_state("digits-v2-group-all", T, Policy("25%", "50%", 0.1, 30.0), "group:all",
                     devs, {"d07": "active v2"}, now=100.0)


def test_a_new_plan_marks_devices_that_already_run_the_target() -> None:
    s = _state()
    assert [len(w.devices) for w in s.waves] == [2, 4, 2]
    assert s.devices["d07"].outcome == Outcome.ALREADY
    assert s.current_wave() == s.waves[0]


def test_outcomes_are_only_recorded_for_announced_devices_and_final_ones_stick() -> None:
    s = _state()
    assert s.observe(Observation("d00", Outcome.COMMITTED), 1.0) is s  # not announced
    s = s.with_device("d00", announced=True, outcome=Outcome.PENDING)
    s = s.observe(Observation("d00", Outcome.FAILED, "rolled_back"), 2.0)
    assert s.devices["d00"].outcome == Outcome.FAILED
    assert s.observe(Observation("d00", Outcome.COMMITTED), 3.0) is s
    assert s.observe(Observation("d00", Outcome.OFFLINE), 3.0) is s
    assert s.observe(Observation("zz", Outcome.FAILED), 3.0) is s


def test_a_late_result_replaces_offline_or_timed_out() -> None:
    s = _state().with_device("d01", announced=True, outcome=Outcome.OFFLINE)
    s = s.observe(Observation("d01", Outcome.COMMITTED), 5.0)
    assert s.devices["d01"].outcome == Outcome.COMMITTED


def test_state_round_trips_through_json() -> None:
    s = _state().with_device("d00", announced=True, outcome=Outcome.PENDING)
    w = s.waves[0]

    s = s.with_wave(replace(w, status=WaveStatus.WAITING, started_at=101.0))
    again = RolloutState.from_json(s.to_json())
    assert again == s
    assert again.to_json() == s.to_json()


@pytest.mark.parametrize("text", ["", "{}", "[]", '{"schema": 99}', "not json"])
def test_a_foreign_or_broken_state_file_is_refused_with_its_name(text: str) -> None:
    with pytest.raises(RolloutStateError, match=r"state\.json"):
        RolloutState.from_json(text, "state.json")


def test_summary_counts_outcomes_and_lists_problems() -> None:
    s = _state().with_device("d00", announced=True, outcome=Outcome.FAILED, detail="probation")
    rep = summary(s)
    assert rep["outcomes"] == {"skipped": 6, "already": 1, "failed": 1}
    assert rep["problems"] == {"d00": {"outcome": "failed", "detail": "probation"}}
    assert rep["waves"][0]["failed"] == 1


def test_a_failed_shadow_is_a_failed_device_for_the_wave_and_passing_it_is_not_yet_success(
        ) -> None:
    # rollout --require-shadow: the device rejects the release when its shadow fails ...
    o = observe_event("a", "update.rejected", {"name": "digits", "version": 2,
                                               "code": "shadow_gate",
                                               "reason": "agreement 0.17"}, T)
    assert o is not None and o.outcome == Outcome.FAILED and "shadow_gate" in o.detail
    # ... and a passed shadow only lets it go on to probation: the wave waits for commit
    assert observe_event("a", "shadow.passed", {"name": "digits", "version": 2}, T) is None
