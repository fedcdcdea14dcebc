"""The pure parts: announcement envelope, state recovery and persistence, probation
verdicts, config. (Trust, chunks and policy: test_trust_core.py, test_policy_core.py.)"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from edge_agent.errors import ConfigError
from edge_agent.hooks import Hooks, PredictionRecord
from edge_agent.update.config import UpdateConfig
from edge_agent.update.errors import BadAnnouncementError
from edge_agent.update.probation import (
    ProbationMonitor,
    ProbationPolicy,
    WindowStats,
    judge,
)
from edge_agent.update.state import (
    PRE_SWAP,
    Outcome,
    Phase,
    Recovery,
    StateFile,
    UpdateState,
    recover,
)
from edge_agent.update.wire import Announcement, parse_announcement


def test_announcement_round_trips() -> None:
    ann = Announcement("models/d/d-2.tar", {"metadata/timestamp.json": b"{}"}, True,
                       ("https://m/",), 1.0)
    back = parse_announcement(ann.to_bytes(), 1 << 20)
    assert (back.target, back.files, back.chunks, back.mirrors) == (
        ann.target, ann.files, True, ("https://m/",))


def _announcement(**change: Any) -> bytes:
    d = json.loads(Announcement("models/d/d-2.tar", {"metadata/timestamp.json": b"{}"}, True,
                                ("https://m/",), 1.0).to_bytes())
    d.update(change)
    return json.dumps(d).encode()


def test_announcement_with_a_path_traversal_target_is_refused() -> None:
    with pytest.raises(BadAnnouncementError, match="not a valid target"):
        parse_announcement(_announcement(target="../etc/passwd"), 1 << 20)


def test_announcement_file_outside_metadata_and_targets_is_refused() -> None:
    with pytest.raises(BadAnnouncementError, match="'/abs' is not allowed"):
        parse_announcement(_announcement(files={"/abs": "AA=="}), 1 << 20)


def test_announcement_mirror_that_is_not_http_is_refused() -> None:
    with pytest.raises(BadAnnouncementError, match=r"http\(s\) URLs"):
        parse_announcement(_announcement(mirrors=["file:///x"]), 1 << 20)


def test_announcement_of_an_unknown_schema_is_refused() -> None:
    with pytest.raises(BadAnnouncementError, match="schema 9 not supported"):
        parse_announcement(_announcement(schema=9), 1 << 20)


def test_announcement_over_the_size_cap_is_refused() -> None:
    with pytest.raises(BadAnnouncementError, match="cap is 10"):
        parse_announcement(_announcement(), 10)


def test_announcement_that_is_not_json_is_refused() -> None:
    with pytest.raises(BadAnnouncementError, match="not JSON"):
        parse_announcement(b"\xff{", 1 << 20)


# Chunk authentication and the device policy have one test per attack in
# test_trust_core.py and test_policy_core.py.


@pytest.mark.parametrize("phase", PRE_SWAP, ids=lambda p: p.value)
def test_a_crash_before_the_swap_resumes(phase: Phase) -> None:
    assert recover(UpdateState(phase=phase), 2, 0).action == Recovery.RESUME


def test_an_update_that_keeps_crashing_before_the_swap_is_abandoned() -> None:
    assert recover(UpdateState(phase=Phase.GOLDEN, crashes=3), 2, 0).action == Recovery.ABANDON


def test_a_crash_while_swapping_before_active_json_moved_resumes() -> None:
    sw = UpdateState(phase=Phase.SWAPPING, name="digits", version=3)
    assert recover(sw, 2, 0).action == Recovery.RESUME  # active.json still says v2


def test_a_crash_while_swapping_after_active_json_moved_starts_probation() -> None:
    sw = UpdateState(phase=Phase.SWAPPING, name="digits", version=3)
    assert recover(sw, 3, 0).action == Recovery.PROBATION


def test_a_crash_in_probation_beyond_the_tolerance_rolls_back() -> None:
    pr = UpdateState(phase=Phase.PROBATION, name="digits", version=3)
    assert recover(pr, 3, 0).action == Recovery.ROLLBACK


def test_a_crash_in_probation_within_the_tolerance_continues_probation() -> None:
    pr = UpdateState(phase=Phase.PROBATION, name="digits", version=3)
    assert recover(pr, 3, 1).action == Recovery.PROBATION


def test_an_orderly_stop_in_probation_is_not_counted_as_a_crash() -> None:
    assert recover(UpdateState(phase=Phase.PROBATION, clean_stop=True), 3, 0).action == \
        Recovery.PROBATION


def test_a_crash_while_rolling_back_finishes_the_rollback() -> None:
    assert recover(UpdateState(phase=Phase.ROLLING_BACK), 3, 0).action == Recovery.ROLLBACK


def test_state_file_round_trips_and_quarantines_corruption(tmp_path: Path) -> None:
    f = StateFile(tmp_path / "state.json")
    st = UpdateState(blocked=("digits@3",)).to(Phase.NOTIFIED, announce_digest="ab")
    f.save(st)
    back = f.load()
    assert back == st
    done = back.finish(Outcome("committed", "ok", "fine"))
    assert done.phase == Phase.IDLE and done.settled == ("ab",)
    (tmp_path / "state.json").write_text("{not json")
    assert f.load().last.result == "abandoned"  # type: ignore[union-attr]
    assert list(tmp_path.glob("state.corrupt-*"))


POL = ProbationPolicy(window_s=10, min_requests=10, max_error_rate=0.05,
                      max_latency_ratio=3.0, latency_floor_ms=1.0)


BASE = WindowStats(100, 0, 0.001)


def test_probation_waits_for_enough_requests() -> None:
    assert not judge(WindowStats(5, 0, 0.001), BASE, POL, window_over=False).decided


def test_probation_fails_at_once_on_a_high_error_rate() -> None:
    v = judge(WindowStats(20, 20, None), BASE, POL, window_over=False)
    assert v.decided and not v.ok and "error rate 100%" in v.reason


def test_probation_judges_errors_against_the_old_models_baseline() -> None:
    noisy = WindowStats(100, 30, 0.001)  # clients already failing 30% on the old model
    assert judge(WindowStats(20, 6, 0.001), noisy, POL, window_over=True).ok


def test_probation_fails_a_genuinely_slower_model_on_interleaved_timings() -> None:
    pairs = tuple((0.004, 0.020) for _ in range(30))  # same inputs, same host: 5x slower
    slow = judge(WindowStats(50, 0, 0.020, pairs=pairs), BASE, POL, window_over=False)
    assert slow.decided and not slow.ok and "5.0x the old version's" in slow.reason


def test_host_load_slowing_both_versions_does_not_fail_probation() -> None:
    """The 500-device bench: a starved host made a good v2 look 7000x slower than an old
    p95 measured before the load. Paired timings slow down on both sides alike."""
    loaded = tuple((3.0 + 0.1 * (i % 3), 3.05 + 0.1 * (i % 2)) for i in range(40))
    new = WindowStats(200, 0, 3.1, pairs=loaded)  # new p95 3 s vs the old one's 1 ms
    assert not judge(new, BASE, POL, window_over=False).decided
    assert judge(new, BASE, POL, window_over=True).ok


def test_probation_does_not_judge_latency_on_too_few_pairs() -> None:
    few = tuple((0.004, 0.040) for _ in range(POL.min_pairs - 1))
    assert not judge(WindowStats(50, 0, 0.04, pairs=few), BASE, POL, window_over=False).decided


def test_probation_needs_enough_distinct_clients_before_it_fails() -> None:
    pol = replace(POL, min_clients=3)
    one_client = WindowStats(40, 40, None, clients=1)
    assert not judge(one_client, BASE, pol, window_over=False).decided
    assert judge(one_client, BASE, pol, window_over=True).decided
    assert not judge(replace(one_client, clients=3), BASE, pol, window_over=False).ok


def test_client_input_errors_never_count_against_the_new_version() -> None:
    hooks = Hooks()
    mon = ProbationMonitor(hooks)
    mon.start("digits", 2, old_shape=(1, 8, 8, 1), new_shape=(1, 8, 8, 1))
    for i in range(50):
        hooks.emit_prediction(PredictionRecord("digits", 2, "rest", False, 0.0, 0,
                                               fault="client", client=f"10.0.0.{i}",
                                               input_shape=(1, 8, 8, 1)))
    w = mon.window()
    assert (w.requests, w.errors, w.refused) == (0, 0, 50)
    assert judge(w, BASE, POL, window_over=True).ok
    mon.close()


def test_a_changed_input_shape_refusing_the_old_shape_is_the_releases_fault() -> None:
    hooks = Hooks()
    mon = ProbationMonitor(hooks)
    mon.start("digits", 3, old_shape=(1, 8, 8, 1), new_shape=(1, 16, 16, 1))
    for shape in ((1, 8, 8, 1), (1, 3, 3, 1), None):
        hooks.emit_prediction(PredictionRecord("digits", 3, "test", False, 0.0, 0,
                                               fault="client", input_shape=shape))
    w = mon.window()
    assert (w.requests, w.errors, w.refused) == (1, 1, 2)
    mon.close()


def test_probation_with_no_traffic_passes_when_the_window_ends() -> None:
    assert judge(WindowStats(0, 0, None), BASE, POL, window_over=True).ok


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    src = str(tmp_path / "agent.toml")
    cfg = UpdateConfig.from_section({"root_file": "root.json", "keep_versions": 2}, src)
    assert cfg.root_file == tmp_path / "root.json" and cfg.keep_versions == 2
    for raw, key in (({}, "update.root_file"), ({"root_file": "r", "transport": "x"},
                                                 "update.transport"),
                     ({"root_file": "r", "probation_s": "1"}, "update.probation_s"),
                     ({"root_file": "r", "nope": 1}, "update.nope")):
        with pytest.raises(ConfigError, match=key):
            UpdateConfig.from_section(raw, src)
