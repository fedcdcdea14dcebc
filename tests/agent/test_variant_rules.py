"""The failover rules of model variants (edge_agent.variant_rules, pure): which invoke
failures switch at once, which are counted, and the invoke watchdog's limit."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.config import AgentSettings, load_config
from edge_agent.errors import ConfigError, InvalidRequestError, InvokeHangError, VariantFaultError
from edge_agent.profiles import load_profile
from edge_agent.variant_rules import (
    Decision,
    ErrorWindow,
    FailoverRules,
    Failure,
    classify,
    decide,
    watchdog_limit_s,
)
from edge_agent.variants import failover_rules

RULES = FailoverRules(fail_errors=3, fail_window_s=10.0)


@pytest.mark.parametrize("error, kind", [
    (InvalidRequestError("bad shape"), Failure.CLIENT),
    (InvokeHangError("no answer"), Failure.HANG),
    (VariantFaultError("injected"), Failure.DELEGATE),
    (RuntimeError("Node number 3 (EdgeTpuDelegateForCustomOp) failed to invoke."),
     Failure.DELEGATE),
    (RuntimeError("Failed to open USB device"), Failure.DELEGATE),
    (RuntimeError("tensorflow/lite/kernels/conv.cc:343 bad state"), Failure.TRANSIENT),
    (MemoryError(), Failure.TRANSIENT),
])
def test_each_error_is_classified_by_who_failed(error: BaseException, kind: Failure) -> None:
    assert classify(error) is kind


def test_a_delegate_error_switches_at_once_and_the_request_fails() -> None:
    w = ErrorWindow(RULES)
    assert decide(Failure.DELEGATE, w, 0.0, has_next=True) is Decision.SWITCH_AND_FAIL


def test_a_hang_switches_at_once_and_the_request_is_retried() -> None:
    w = ErrorWindow(RULES)
    assert decide(Failure.HANG, w, 0.0, has_next=True) is Decision.SWITCH_AND_RETRY


def test_bad_input_never_counts_against_the_variant() -> None:
    w = ErrorWindow(RULES)
    for t in range(10):
        assert decide(Failure.CLIENT, w, float(t), has_next=True) is Decision.FAIL
    assert len(w) == 0


def test_the_nth_transient_error_within_the_window_switches() -> None:
    w = ErrorWindow(RULES)
    assert decide(Failure.TRANSIENT, w, 0.0, has_next=True) is Decision.FAIL
    assert decide(Failure.TRANSIENT, w, 1.0, has_next=True) is Decision.FAIL
    assert decide(Failure.TRANSIENT, w, 2.0, has_next=True) is Decision.SWITCH_AND_FAIL
    assert len(w) == 0  # a switch starts the next variant's count afresh


def test_transient_errors_further_apart_than_the_window_never_switch() -> None:
    w = ErrorWindow(RULES)
    for t in range(20):
        assert decide(Failure.TRANSIENT, w, t * 5.1, has_next=True) is Decision.FAIL
    assert len(w) <= 2


def test_the_last_variant_has_nothing_to_switch_to() -> None:
    w = ErrorWindow(RULES)
    for f in (Failure.DELEGATE, Failure.HANG):
        assert decide(f, w, 0.0, has_next=False) is Decision.FAIL
    for t in range(5):
        assert decide(Failure.TRANSIENT, w, float(t), has_next=False) is Decision.FAIL


def test_the_watchdog_limit_is_latency_times_factor_per_slice_with_a_floor() -> None:
    r = FailoverRules(watchdog_factor=20, watchdog_floor_s=0.5)
    assert watchdog_limit_s(0.001, 1, r) == 0.5  # the floor
    assert watchdog_limit_s(0.1, 1, r) == pytest.approx(2.0)
    assert watchdog_limit_s(0.1, 4, r) == pytest.approx(8.0)  # a batch of 4 model batches


@pytest.mark.parametrize("bad", [dict(fail_errors=0), dict(fail_window_s=0),
                                 dict(watchdog_factor=-1), dict(watchdog_floor_s=0),
                                 dict(max_abandoned=0)])
def test_inconsistent_rules_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="inconsistent failover rules"):
        FailoverRules(**bad)  # type: ignore[arg-type]


@given(n=st.integers(1, 6), window=st.floats(0.5, 60),
       gaps=st.lists(st.floats(0, 30), min_size=1, max_size=40))
def test_a_switch_happens_exactly_when_n_errors_fall_within_the_window(
        n: int, window: float, gaps: list[float]) -> None:
    rules = FailoverRules(fail_errors=n, fail_window_s=window)
    w = ErrorWindow(rules)
    now, since_switch = 0.0, []  # the error times since the last switch: the model
    for g in gaps:
        now += g
        since_switch.append(now)
        recent = [t for t in since_switch if now - t <= window]
        d = decide(Failure.TRANSIENT, w, now, has_next=True)
        assert (d is Decision.SWITCH_AND_FAIL) == (len(recent) >= n)
        if d is Decision.SWITCH_AND_FAIL:
            since_switch = []


def _agent_settings(tmp_path: Path, toml: str) -> AgentSettings:
    p = tmp_path / "agent.toml"
    p.write_text(f"[agent]\n{toml}")
    return load_config(p, {}, env={}).agent


def test_the_watchdog_floor_defaults_to_the_profiles_and_the_config_key_wins(
        tmp_path: Path) -> None:
    a = _agent_settings(tmp_path, "")
    assert failover_rules(a, load_profile("generic-x86_64")).watchdog_floor_s == 1.0
    assert failover_rules(a, load_profile("rpi3")).watchdog_floor_s == 3.0
    a = _agent_settings(tmp_path, "variant_watchdog_floor_s = 0.25\nvariant_fail_errors = 5\n")
    r = failover_rules(a, load_profile("rpi3"))
    assert (r.watchdog_floor_s, r.fail_errors) == (0.25, 5)


@pytest.mark.parametrize("line, key", [("variant_fail_errors = 0", "variant_fail_errors"),
                                       ("variant_fail_window_s = -1", "variant_fail_window_s"),
                                       ("variant_watchdog_factor = -2",
                                        "variant_watchdog_factor"),
                                       ("variant_watchdog_floor_s = 0",
                                        "variant_watchdog_floor_s"),
                                       ("variant_max_abandoned = 0", "variant_max_abandoned")])
def test_a_bad_failover_key_is_refused_naming_the_file_and_the_key(
        tmp_path: Path, line: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"agent\.toml: agent\.{key}: "):
        _agent_settings(tmp_path, line + "\n")
