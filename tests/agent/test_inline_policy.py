"""Issue 17: which requests the HTTP loop serves itself (edge_agent/serving/inline.py, pure)."""

from __future__ import annotations

from edge_agent.serving.inline import InlinePolicy

K = "POST /v1/models/digits:predict"


def test_a_new_kind_is_probed_inline_then_its_times_decide() -> None:
    p = InlinePolicy(max_s=0.001)
    assert p.inline(K, 100, pool_busy=0)  # the probe
    p.observe(K, 0.0002)
    assert p.inline(K, 100, pool_busy=0)
    slow = "POST /v1/models/mobilenet_v2:predict"
    assert p.inline(slow, 100, pool_busy=0)
    p.observe(slow, 0.030)
    assert not p.inline(slow, 100, pool_busy=0)
    assert p.inline(K, 100, pool_busy=0)  # the other kind did not move


def test_big_bodies_and_a_busy_pool_go_to_the_pool() -> None:
    p = InlinePolicy(max_s=0.001, max_body_bytes=1000)
    p.observe(K, 0.0001)
    assert p.inline(K, 1000, pool_busy=0)
    assert not p.inline(K, 1001, pool_busy=0)
    assert not p.inline(K, 10, pool_busy=1)  # it could wait behind the pooled request


def test_one_preempted_request_does_not_send_a_fast_kind_to_the_pool() -> None:
    p = InlinePolicy(max_s=0.001, window=8)
    for t in (0.0002, 0.0002, 0.025, 0.0002):  # 25 ms: descheduled on a loaded board
        p.observe(K, t)
    assert p.inline(K, 100, pool_busy=0)
    assert p.fastest_s(K) == 0.0002


def test_a_kind_that_became_slow_goes_to_the_pool_within_the_window() -> None:
    p = InlinePolicy(max_s=0.001, window=4)
    for _ in range(4):
        p.observe(K, 0.0002)
    for i in range(4):  # a slow new version under the same path
        assert p.inline(K, 100, pool_busy=0), i
        p.observe(K, 0.040)
    assert not p.inline(K, 100, pool_busy=0)
    p.observe(K, 0.0003)  # measured fast again (on the pool): back to inline
    assert p.inline(K, 100, pool_busy=0)


def test_at_most_max_kinds_are_tracked_and_others_go_to_the_pool() -> None:
    p = InlinePolicy(max_kinds=2)
    p.observe("GET /a", 0.0001)
    p.observe("GET /b", 0.0001)
    assert not p.inline("GET /c", 10, pool_busy=0)
    p.observe("GET /c", 0.0001)
    assert p.fastest_s("GET /c") is None
    assert p.inline("GET /a", 10, pool_busy=0)


def test_a_held_kind_goes_to_the_pool_for_its_next_requests_then_is_probed_again() -> None:
    """A lasting WouldBlock (a watched variant): no wasted decode on the loop per request,
    one per ``hold_requests``; other kinds keep being served inline."""
    p = InlinePolicy(max_s=0.001, hold_requests=3)
    p.observe(K, 0.0002)  # fast on the pool, but it cannot run on the loop
    p.hold(K)
    assert [p.inline(K, 100, pool_busy=0) for _ in range(4)] == [False, False, False, True]
    assert p.inline("GET /healthz", 10, pool_busy=0)
    p.hold(K)
    assert not p.inline(K, 100, pool_busy=0)


def test_at_most_max_kinds_are_held() -> None:
    p = InlinePolicy(max_kinds=1, hold_requests=5)
    p.hold("GET /a")
    p.hold("GET /b")  # not tracked: it is simply tried (and handed over) each time
    assert not p.inline("GET /a", 10, pool_busy=0)
    assert p.inline("GET /b", 10, pool_busy=0)


def test_a_request_whose_work_takes_every_core_gets_the_larger_budget() -> None:
    """Past the plain budget (slower than max_s or a bigger body), a request whose invoke
    takes every core anyway runs inline up to cores_max_s / cores_max_body_bytes."""
    p = InlinePolicy(max_s=0.001, max_body_bytes=1000, cores_max_s=0.1,
                     cores_max_body_bytes=200_000)
    asked: list[int] = []

    def cores() -> bool:
        asked.append(1)
        return True
    mnv2 = "POST /v1/models/mobilenet_v2:predict"
    assert p.inline(mnv2, 150_528, pool_busy=0, takes_cores=cores)  # the probe, 150 KB
    p.observe(mnv2, 0.004)
    assert p.inline(mnv2, 150_528, pool_busy=0, takes_cores=cores)
    assert not p.inline(mnv2, 150_528, pool_busy=0)  # no hint: the pool
    assert not p.inline(mnv2, 150_528, pool_busy=0, takes_cores=lambda: False)
    assert not p.inline(mnv2, 200_001, pool_busy=0, takes_cores=cores)  # too big a body
    assert not p.inline(mnv2, 100, pool_busy=1, takes_cores=cores)  # the pool is busy
    p.observe(K, 0.0002)
    n = len(asked)
    assert p.inline(K, 100, pool_busy=0, takes_cores=cores) and len(asked) == n  # not asked
    slow = "POST /v1/models/big:predict"
    p.observe(slow, 0.150)  # even with every core taken, 150 ms would stall the loop
    assert not p.inline(slow, 100, pool_busy=0, takes_cores=cores)
