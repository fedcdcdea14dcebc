"""The invoke watchdog and the N-errors rule of model variants (issue 15 part 2) on a real
``edge-agent run`` with real LiteRT and REST clients, the faults injected by the runtime
fault seam (``EDGE_RUNTIME_FAULT=hang@…`` / ``error@…``): a hung delegate is given up on
and the requests are answered by the CPU variant; too many abandoned interpreters retire
the variant until restart; N transient errors in the window switch, fewer do not."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from agent_helpers import Client
from attack_helpers import agent_process
from model_fixtures import TwoHeads
from variant_helpers import gauge, serving
from variant_helpers import variant_bundle as variant_bundle
from waiting import wait_for

from edge_agent.bundle import read_bundle
from edge_agent.errors import InvokeHangError
from edge_agent.hooks import Hooks
from edge_agent.invoke_watchdog import Watchdog
from edge_agent.manifest import Requires
from edge_agent.registry import ModelRegistry
from edge_agent.runtime import fault_seam
from edge_agent.runtime.backends import select_runtime
from edge_agent.runtime.model import LoadedModel
from edge_agent.variant_rules import FailoverRules
from edge_agent.variants import FailoverPolicy

FLOOR_S = 0.3  # the watchdog limit here: the floor (the variant's invoke takes ~50 µs)
WATCH = (f"variant_watchdog_floor_s = {FLOOR_S}\nvariant_backoff_s = 0.5\n"
         "variant_backoff_max_s = 1\nvariant_check_timeout_s = 0.5\n")


@contextmanager
def faulty_agent(tmp_path: Path, bundle: Path, monkeypatch: pytest.MonkeyPatch, action: str,
                 toml: str) -> Iterator[tuple[Path, Any, Client]]:
    """A real agent whose ``fast`` variant fails with ``action`` while the returned file
    exists (the runtime fault seam), and a REST client to it."""
    fault = tmp_path / f"fault-{action}"
    monkeypatch.setenv("EDGE_RUNTIME_FAULT", f"{action}@fast:{fault}")
    with agent_process(tmp_path, bundle, timeout_s=120, toml=toml) as proc:
        c = Client(proc.host, proc.port)
        yield fault, proc, c
        c.close()


class Stream:
    """``n`` REST clients predicting in a loop; every answer with its status, latency and
    the monotonic time it ended."""

    def __init__(self, host: str, port: int, x: list[Any], n: int) -> None:
        self.results: list[tuple[int, float, float, Any]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(host, port, x), daemon=True)
                         for _ in range(n)]
        for t in self._threads:
            t.start()

    def _run(self, host: str, port: int, x: list[Any]) -> None:
        c = Client(host, port)
        while not self._stop.is_set():
            t0 = time.monotonic()
            r = c.post("/v1/models/two:predict", {"instances": x})
            t1 = time.monotonic()
            self.results.append((r.status, t1 - t0, t1, r.json()))
        c.close()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)


@pytest.mark.serial
def test_a_hung_delegate_is_given_up_on_and_its_requests_answered_by_the_cpu_variant(
        variant_bundle: Path, two_heads: TwoHeads, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    with faulty_agent(tmp_path, variant_bundle, monkeypatch, "hang", WATCH) as (fault, proc, c):
        assert serving(c)["variant"] == "fast"
        s = Stream(proc.host, proc.port, two_heads.x[:1].tolist(), 2)
        wait_for(lambda: len(s.results) > 50, timeout_s=30)
        t_fault = time.monotonic()
        fault.touch()  # every invoke of the delegate variant hangs from now on
        wait_for(lambda: serving(c)["degraded"] is True, timeout_s=10, poll_s=0.01)
        switched_s = time.monotonic() - t_fault
        v = serving(c)
        assert v["variant"] == "default" and v["variant_index"] == 1
        assert "hang" in v["variant_reasons"]["fast"], v
        assert v["variants_abandoned"]["fast"] >= 1, v
        assert gauge(c, "edge_agent_model_degraded") == 1.0
        n = len(s.results)
        wait_for(lambda: len(s.results) > n + 50, timeout_s=30)  # the CPU variant serves
        assert serving(c)["variant"] == "default"  # the retries hang too: still degraded
        fault.unlink()  # the accelerator is back
        wait_for(lambda: serving(c)["variant"] == "fast", timeout_s=30)
        n = len(s.results)
        wait_for(lambda: len(s.results) > n + 50, timeout_s=30)
        s.stop()
        assert serving(c)["degraded"] is False and "variant_reasons" not in serving(c)
        after = [r for r in s.results if r[2] > t_fault]
        failed = [r for r in s.results if r[0] != 200]
        slow = [r for r in after if r[1] > FLOOR_S * 0.8]
        assert failed == [], failed[:3]  # a hang is retried, not failed
        # the request that detected it, plus at most the other client's one in flight
        assert 1 <= len(slow) <= 2, sorted(r[1] for r in after)[-5:]
        assert max(r[1] for r in after) < FLOOR_S + 1.0
        want = int(np.argmax(two_heads.want_class[0]))
        assert all(int(np.argmax(r[3]["predictions"][0]["class"])) == want for r in s.results)
        log = "".join(proc.lines)
        assert "invoke did not return within" in log, log[-3000:]
        print(f"\nhang → degraded seen after {switched_s * 1000:.0f} ms; slowest request "
              f"{max(r[1] for r in after) * 1000:.0f} ms; {len(slow)} slow, 0 failed of "
              f"{len(s.results)}")


@pytest.mark.serial  # a latency bound (/healthz under a quarter of the floor)
def test_a_hung_variant_invoke_never_stalls_the_event_loop(
        variant_bundle: Path, two_heads: TwoHeads, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Quick predicts run on the HTTP event loop (serving/inline.py); a watched variant's
    invoke waits on its invoker thread, so one that hung there held every connection for
    the whole watchdog limit (``/healthz`` took 2.0 s with a 2 s floor; 3 s on a Pi 3).
    On the loop a watched invoke is WouldBlock: it runs on the pool, the loop serves on."""
    floor_s = 2.0
    toml = (f"variant_watchdog_floor_s = {floor_s}\nvariant_backoff_s = 30\n"
            "variant_backoff_max_s = 60\nvariant_check_timeout_s = 0.5\n")
    with faulty_agent(tmp_path, variant_bundle, monkeypatch, "hang", toml) as (fault, proc, c):
        s = Stream(proc.host, proc.port, two_heads.x[:1].tolist(), 1)
        wait_for(lambda: len(s.results) > 100, timeout_s=30)  # quick: measured inline
        health: list[float] = []
        stop = threading.Event()

        def poll() -> None:
            h = Client(proc.host, proc.port)
            while not stop.is_set():
                t0 = time.monotonic()
                assert h.get("/healthz").status == 200
                health.append(time.monotonic() - t0)
                time.sleep(0.01)
            h.close()
        t = threading.Thread(target=poll, daemon=True)
        t.start()
        time.sleep(0.5)
        fault.touch()
        wait_for(lambda: serving(c)["degraded"] is True, timeout_s=20, poll_s=0.05)
        n = len(health)
        wait_for(lambda: len(health) > n + 10, timeout_s=10)
        stop.set()
        t.join(10)
        s.stop()
        slowest = max(r[1] for r in s.results)
        assert floor_s * 0.9 < slowest < floor_s + 1.0  # the hang was real, and given up on
        assert {r[0] for r in s.results} == {200}
        assert max(health) < floor_s / 4, f"/healthz waited {max(health):.2f} s on the hang"


def test_past_max_abandoned_the_hung_variant_stays_failed_until_restart(
        variant_bundle: Path, two_heads: TwoHeads, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    x = {"instances": two_heads.x[:1].tolist()}
    with faulty_agent(tmp_path, variant_bundle, monkeypatch, "hang",
                      WATCH + "variant_max_abandoned = 2\n") as (fault, _, c):
        fault.touch()
        assert c.post("/v1/models/two:predict", x).status == 200  # retried on the CPU variant
        # the first retry of `fast` hangs too: its interpreter is the second abandoned
        wait_for(lambda: serving(c).get("variants_abandoned", {}).get("fast") == 2,
                 timeout_s=20)
        fault.unlink()  # too late: retired
        time.sleep(3)  # several backoffs: no retry any more
        v = serving(c)
        assert v["variant"] == "default" and v["degraded"] is True
        assert "retired" in v["variant_reasons"]["fast"], v
        assert v["variants_abandoned"]["fast"] == 2  # no more interpreters were risked
        assert c.post("/v1/models/two:predict", x).status == 200


def test_n_transient_errors_within_the_window_switch_and_fewer_do_not(
        variant_bundle: Path, two_heads: TwoHeads, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    x = {"instances": two_heads.x[:1].tolist()}
    with faulty_agent(tmp_path, variant_bundle, monkeypatch, "error",
                      "variant_fail_errors = 3\nvariant_fail_window_s = 60\n"
                      "variant_backoff_s = 30\n") as (fault, _, c):
        fault.touch()
        first = [c.post("/v1/models/two:predict", x) for _ in range(2)]
        assert [r.status for r in first] == [500, 500], [r.body[:200] for r in first]
        assert "RuntimeError" in first[0].json()["error"]  # a runtime error, not bad input
        assert serving(c)["variant"] == "fast"  # two errors: counted, no switch
        fault.unlink()
        assert c.post("/v1/models/two:predict", x).status == 200  # still on `fast`
        assert serving(c)["variant"] == "fast"
        fault.touch()
        third = c.post("/v1/models/two:predict", x)  # the third within 60 s
        assert third.status == 500
        v = serving(c)
        assert v["variant"] == "default" and v["degraded"] is True
        assert v["variant_reasons"]["fast"].startswith("transient:"), v
        after = [c.post("/v1/models/two:predict", x).status for _ in range(20)]
        assert after == [200] * 20  # the CPU variant serves


@pytest.mark.serial
def test_the_last_variant_hanging_fails_its_request_and_keeps_its_pool(
        variant_bundle: Path, two_heads: TwoHeads, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process (real LiteRT): `fast` needs an Edge TPU, so `default` is the only variant
    and has nothing to fail over to: a hang fails its request with InvokeHangError at the
    limit instead of holding it, and a fresh interpreter replaces the abandoned one."""
    fault = tmp_path / "hangs"
    monkeypatch.setattr(fault_seam, "_SPECS", {"default": ("hang", fault)})
    b = read_bundle(variant_bundle)
    b = replace(b, manifest=replace(b.manifest, variants=(replace(
        b.manifest.variants[0], requires=Requires(delegate="edgetpu")),)))
    reg = ModelRegistry(select_runtime(), Hooks())
    reg.failover_policy = FailoverPolicy(rules=FailoverRules(watchdog_floor_s=FLOOR_S))
    sm = reg.load(b)
    assert sm.variant == "default" and sm.watchdog is not None
    x = two_heads.x[:1].astype(np.float32)
    fault.touch()
    t0 = time.monotonic()
    with pytest.raises(InvokeHangError, match=r"did not return within 0\.3 s"):
        sm.predict(x)
    assert FLOOR_S <= time.monotonic() - t0 < FLOOR_S + 1.0
    assert sm.watchdog.abandoned == 1
    fault.unlink()
    assert sm.predict(x).outputs[0].shape[0] == 1  # a fresh interpreter serves
    assert reg.get("two").variant == "default"


def test_an_idle_invoker_thread_ends_and_the_next_invoke_starts_another(
        two_heads: TwoHeads) -> None:
    """So the interpreters of an unloaded version are not kept alive by their threads."""
    rt = select_runtime()
    m = LoadedModel(rt, read_bundle(two_heads.bundle).model_bytes)
    wd = Watchdog(label="idle-test", latency_s=0.001, fixed_batch=1,
                  rules=FailoverRules(), idle_s=0.2)
    x = m.coerce(two_heads.x[:1].astype(np.float32))
    given: list[LoadedModel] = []

    def threads() -> int:
        return sum(t.name == "invoke-idle-test" for t in threading.enumerate())

    want = m.invoke_raw(x)
    for _ in range(3):
        got = wd.invoke(m, x, given.append)
        assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))
        assert threads() == 1
        wait_for(lambda: threads() == 0, timeout_s=5)
    assert given == [m, m, m] and wd.abandoned == 0
