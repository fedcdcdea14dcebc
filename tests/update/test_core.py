"""The pure parts: wire formats, policy, state recovery, probation verdicts, config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_agent.errors import ConfigError
from edge_agent.update.config import UpdateConfig
from edge_agent.update.errors import (
    BadAnnouncementError,
    NotForDeviceError,
    TargetMismatchError,
    VersionNotNewerError,
)
from edge_agent.update.policy import DeviceIdentity, check_free_space, check_model_target
from edge_agent.update.probation import ProbationPolicy, WindowStats, judge
from edge_agent.update.state import (
    IllegalTransition,
    Outcome,
    Phase,
    Recovery,
    StateFile,
    UpdateState,
    recover,
)
from edge_agent.update.wire import (
    Announcement,
    Audience,
    ChunkPlan,
    TargetSpec,
    decode_chunk,
    encode_chunk,
    parse_announcement,
)

ME = DeviceIdentity("dev1", ("line-3",), "generic-x86_64")
DEV1 = Audience(("dev1",), ())


def spec(version: int = 3, profiles: tuple[str, ...] = ("generic-x86_64",),
         audience: Audience = DEV1) -> TargetSpec:
    return TargetSpec("model", audience, "digits", version, profiles, None)


def test_announcement_round_trips_and_malformed_ones_say_why() -> None:
    ann = Announcement("models/d/d-2.tar", {"metadata/timestamp.json": b"{}"}, True,
                       ("https://m/",), 1.0)
    back = parse_announcement(ann.to_bytes(), 1 << 20)
    assert (back.target, back.files, back.chunks, back.mirrors) == (
        ann.target, ann.files, True, ("https://m/",))
    bad = json.loads(ann.to_bytes())
    for change, msg in ((lambda d: d.update(target="../etc/passwd"), "not a valid target"),
                        (lambda d: d["files"].update({"/abs": "AA=="}), "not allowed"),
                        (lambda d: d.update(mirrors=["file:///x"]), r"http\(s\) URLs"),
                        (lambda d: d.update(schema=9), "schema 9 not supported")):
        d = json.loads(json.dumps(bad))
        change(d)
        with pytest.raises(BadAnnouncementError, match=msg):
            parse_announcement(json.dumps(d).encode(), 1 << 20)
    with pytest.raises(BadAnnouncementError, match="cap is 10"):
        parse_announcement(ann.to_bytes(), 10)


def test_chunks_are_checked_against_the_signed_plan() -> None:
    data = bytes(range(256)) * 10
    plan = ChunkPlan.for_data(data, 1000)
    assert plan.count == 3 and plan.span(2) == (2000, 560)
    assert decode_chunk(encode_chunk(2, 3, len(data), data[2000:]), 2, plan) == data[2000:]
    with pytest.raises(TargetMismatchError, match="header says index 1"):
        decode_chunk(encode_chunk(1, 3, len(data), data[1000:2000]), 2, plan)
    with pytest.raises(TargetMismatchError, match="tampered"):
        decode_chunk(encode_chunk(0, 3, len(data), b"x" * 1000), 0, plan)
    with pytest.raises(TargetMismatchError, match="own header hash"):
        good = encode_chunk(0, 3, len(data), data[:1000])
        decode_chunk(good[:-1] + b"!", 0, plan)


def test_policy_names_what_differs() -> None:
    kw = {"path": "p", "length": 10, "me": ME, "blocked": (), "max_bytes": 100}
    check_model_target(spec(), installed=2, **kw)  # type: ignore[arg-type]
    with pytest.raises(VersionNotNewerError, match="v2 is not newer than the installed v2"):
        check_model_target(spec(2), installed=2, **kw)  # type: ignore[arg-type]
    with pytest.raises(NotForDeviceError, match="profiles \\['rpi4'\\]"):
        check_model_target(spec(profiles=("rpi4",)), installed=2, **kw)  # type: ignore[arg-type]
    check_model_target(spec(audience=Audience((), ("line-3",))), installed=2,
                       **kw)  # type: ignore[arg-type]
    with pytest.raises(NotForDeviceError, match="groups \\['line-4'\\]"):
        check_model_target(spec(audience=Audience((), ("line-4",))), installed=2,
                           **kw)  # type: ignore[arg-type]
    with pytest.raises(TargetMismatchError, match="over this device's cap"):
        check_model_target(spec(), installed=2, **{**kw, "max_bytes": 5})  # type: ignore[arg-type]
    check_free_space(free=100, length=40, reserve=20)
    with pytest.raises(Exception, match="needs 101 bytes free"):
        check_free_space(free=100, length=40, reserve=21)


def test_recovery_after_a_crash_in_each_phase() -> None:
    s = UpdateState(name="digits", version=3, from_version=2)
    for p in (Phase.NOTIFIED, Phase.DOWNLOADING, Phase.VERIFYING, Phase.TEST_LOADING,
              Phase.GOLDEN):
        assert recover(UpdateState(phase=p), 2, 0).action == Recovery.RESUME
    assert recover(UpdateState(phase=Phase.GOLDEN, crashes=3), 2, 0).action == Recovery.ABANDON
    sw = UpdateState(phase=Phase.SWAPPING, name="digits", version=3)
    assert recover(sw, 2, 0).action == Recovery.RESUME  # active.json still says v2
    assert recover(sw, 3, 0).action == Recovery.PROBATION
    pr = UpdateState(phase=Phase.PROBATION, name="digits", version=3)
    assert recover(pr, 3, 0).action == Recovery.ROLLBACK
    assert recover(pr, 3, 1).action == Recovery.PROBATION
    assert recover(UpdateState(phase=Phase.PROBATION, clean_stop=True), 3, 0).action == \
        Recovery.PROBATION
    assert recover(UpdateState(phase=Phase.ROLLING_BACK), 3, 0).action == Recovery.ROLLBACK
    with pytest.raises(IllegalTransition):
        s.to(Phase.PROBATION)


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


def test_probation_verdicts() -> None:
    base = WindowStats(100, 0, 0.001)
    assert not judge(WindowStats(5, 0, 0.001), base, POL, window_over=False).decided
    v = judge(WindowStats(20, 20, None), base, POL, window_over=False)
    assert v.decided and not v.ok and "error rate 100%" in v.reason
    noisy = WindowStats(100, 30, 0.001)  # clients already failing 30% on the old model
    assert judge(WindowStats(20, 6, 0.001), noisy, POL, window_over=True).ok
    slow = judge(WindowStats(50, 0, 0.010), base, POL, window_over=False)
    assert slow.decided and not slow.ok and "p95 latency" in slow.reason
    assert judge(WindowStats(0, 0, None), base, POL, window_over=True).ok


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
