"""The agent's threads carry their names down to the OS (``top -H``, ``ps -L``)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from edge_agent.threadname import NamedThread, NamedTimer, name_this_thread


def _comm(native_id: int) -> str:
    return Path(f"/proc/self/task/{native_id}/comm").read_text().strip()


def test_a_named_thread_shows_its_name_to_the_os_cut_to_15_bytes() -> None:
    seen: list[str] = []
    for name in ("telemetry", "mqtt-requests-12345"):
        t = NamedThread(target=lambda: seen.append(_comm(threading.get_native_id())),
                        name=name)
        t.start()
        t.join(5)
    assert seen == ["telemetry", "mqtt-requests-1"]


def test_pool_threads_take_their_python_names() -> None:
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="http-worker",
                            initializer=name_this_thread) as pool:
        assert pool.submit(lambda: _comm(threading.get_native_id())).result(5) == \
            "http-worker_0"


def test_a_named_timer_shows_its_name_when_it_fires() -> None:
    seen: list[str] = []
    t = NamedTimer(0.01, lambda: seen.append(_comm(threading.get_native_id())))
    t.name = "variant-backoff"
    t.start()
    t.join(5)
    assert seen == ["variant-backoff"]
