"""The SQLite outbox: order, persistence, the cap, and sequence numbers that never go back."""

from __future__ import annotations

import json
from pathlib import Path

from edge_agent.mqtt.outbox import Outbox
from edge_agent.mqtt.payloads import envelope


def _put(ob: Outbox, n: int, topic: str = "t") -> list[int]:
    return [ob.put(topic, lambda s: envelope("d", s, {"i": s})) for _ in range(n)]


def test_rows_come_out_in_order_with_their_sequence_number(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db")
    assert _put(ob, 5) == [1, 2, 3, 4, 5]
    rows = ob.peek(0, 10)
    assert [r.seq for r in rows] == [1, 2, 3, 4, 5]
    assert [json.loads(r.payload)["seq"] for r in rows] == [1, 2, 3, 4, 5]
    assert [r.seq for r in ob.peek(3, 10)] == [4, 5]


def test_rows_and_sequence_survive_reopen(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db")
    _put(ob, 3)
    ob.remove([1])
    ob.close()
    ob2 = Outbox(tmp_path / "o.db")
    assert [r.seq for r in ob2.peek(0, 10)] == [2, 3]
    assert ob2.stats().depth == 2
    assert _put(ob2, 1) == [4]  # continues, never reuses a number


def test_sequence_never_goes_back_even_when_everything_was_delivered(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db")
    _put(ob, 3)
    ob.remove([1, 2, 3])
    ob.close()
    ob2 = Outbox(tmp_path / "o.db")
    assert ob2.last_seq() == 3 and _put(ob2, 1) == [4]


def test_cap_drops_the_oldest_and_counts_them(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", max_messages=10)
    _put(ob, 25)
    st = ob.stats()
    assert st.depth == 10 and st.dropped == 15
    assert [r.seq for r in ob.peek(0, 100)] == list(range(16, 26))
    ob.close()
    assert Outbox(tmp_path / "o.db", max_messages=10).stats().dropped == 15  # persisted


def test_byte_cap_drops_the_oldest(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db", max_bytes=2048)
    for _ in range(10):
        ob.put("t", lambda s: b"x" * 500)
    st = ob.stats()
    assert st.bytes <= 2048 and st.depth == 4 and st.dropped == 6
    assert [r.seq for r in ob.peek(0, 100)] == [7, 8, 9, 10]


def test_refused_rows_are_removed_and_counted(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db")
    _put(ob, 2)
    ob.remove([1], refused=1)
    st = ob.stats()
    assert st.depth == 1 and st.refused == 1 and st.dropped == 0


def test_a_failing_payload_builder_stores_nothing_and_uses_no_number(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db")

    def boom(_s: int) -> bytes:
        raise ValueError("boom")

    try:
        ob.put("t", boom)
    except ValueError:
        pass
    assert ob.stats().depth == 0 and _put(ob, 1) == [1]


def test_corrupt_database_is_replaced_and_numbers_still_go_up(tmp_path: Path) -> None:
    p = tmp_path / "o.db"
    ob = Outbox(p)
    _put(ob, 3)
    ob.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{p}{suffix}").unlink(missing_ok=True)
    p.write_bytes(b"this is not a database" * 100)
    ob2 = Outbox(p)
    assert ob2.reset_reason is not None
    assert list(tmp_path.glob("o.db.corrupt-*"))
    assert _put(ob2, 1)[0] > 3
