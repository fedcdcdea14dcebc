"""A failed ``edge-fleet publish`` leaves the repository as it was, or pending and resumable.

Issue 19 item 16: signing happens in memory, delivery before commit (fleet/staged.py).
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from update_helpers import DEVICE, ME, Bundles, Fleet

from edge_agent.errors import TransportError
from edge_agent.mqtt.config import MqttConfig
from fleet.cli import main as fleet_main
from fleet.publish import Broker, publish


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tree(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _keys(fleet: Fleet, *names: str) -> list[str]:
    return [a for n in names for a in ("--key", str(fleet.keys[n].path))]


def _cli_publish(fleet: Fleet, bundle: Path, broker: str, *keys: str) -> int:
    return fleet_main(["publish", str(bundle), "--repo", str(fleet.repo.path),
                       *_keys(fleet, *(keys or ("targets-a", "targets-b", "snapshot",
                                                "timestamp"))),
                       "--broker", broker, "--device", DEVICE, "--chunk-size", "16384"])


def test_publish_without_the_timestamp_key_exits_2_and_leaves_the_repo_byte_identical(
        fleet: Fleet, bundles: Bundles, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli_publish(fleet, bundles.v2, fleet.broker_url) == 0
    before = _tree(fleet.repo.path)
    rc = _cli_publish(fleet, bundles.v3, fleet.broker_url, "targets-a", "targets-b", "snapshot")
    assert rc == 2
    assert "timestamp v2 needs 1 signature" in capsys.readouterr().err
    assert _tree(fleet.repo.path) == before  # no targets, no snapshot, no blob written


def test_publish_to_an_unreachable_broker_leaves_the_repo_unchanged_and_a_later_publish_works(
        fleet: Fleet, bundles: Bundles, capsys: pytest.CaptureFixture[str]) -> None:
    before = _tree(fleet.repo.path)
    assert _cli_publish(fleet, bundles.v2, f"mqtt://127.0.0.1:{free_port()}") != 0
    assert "127.0.0.1" in capsys.readouterr().err
    assert _tree(fleet.repo.path) == before
    assert fleet.repo.pending() is None
    assert _cli_publish(fleet, bundles.v2, fleet.broker_url) == 0
    assert [fleet.repo.latest_version(r) for r in ("targets", "snapshot", "timestamp")] == \
        [1, 1, 1]  # the failed attempt used no version number
    assert fleet_main(["repo", "status", str(fleet.repo.path)]) == 0
    assert "no publish pending" in capsys.readouterr().out


class AnnounceFails:
    """A real broker connection whose announcements are lost (the broker dies mid-publish)."""

    def __init__(self, broker: MqttConfig | str) -> None:
        self.inner = Broker(broker)
        self.config = self.inner.config

    def publish(self, topic: str, payload: bytes, *, retain: bool = True) -> None:
        if "/update/announce" in topic:
            raise TransportError(f"broker {self.config.url}: connection lost (injected)")
        self.inner.publish(topic, payload, retain=retain)

    def flush(self, timeout_s: float = 120.0) -> None:
        self.inner.flush(timeout_s)

    def close(self) -> None:
        self.inner.close()


def test_publish_cut_off_while_announcing_is_pending_and_rerunning_it_finishes(
        fleet: Fleet, bundles: Bundles, mosquitto: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _tree(fleet.repo.path)
    with pytest.raises(TransportError, match="pending"):
        publish(fleet.repo, bundles.v2, fleet.signers(), audience=ME, broker=fleet.broker_url,
                connect=AnnounceFails)
    assert {k: v for k, v in _tree(fleet.repo.path).items()
            if k.startswith("metadata/")} == {k: v for k, v in before.items()
                                              if k.startswith("metadata/")}
    pending = fleet.repo.pending()
    assert pending is not None and pending.targets_version == 1
    assert fleet_main(["repo", "status", str(fleet.repo.path)]) == 1
    assert "PENDING: models/digits/digits-2.tar" in capsys.readouterr().out
    # the same publish resumes it: same signed bytes, no new version, then committed
    assert _cli_publish(fleet, bundles.v2, fleet.broker_url) == 0
    assert fleet.repo.pending() is None
    assert (fleet.repo.meta_dir / "timestamp.json").read_bytes() == \
        pending.metadata["timestamp.json"]
    assert fleet_main(["repo", "status", str(fleet.repo.path)]) == 0


def test_a_public_key_passed_as_key_is_told_to_pass_the_key_file(
        fleet: Fleet, bundles: Bundles, capsys: pytest.CaptureFixture[str]) -> None:
    before = _tree(fleet.repo.path)
    pub = fleet.keys["targets-a"].path.with_suffix(".pub")
    rc = fleet_main(["publish", str(bundles.v2), "--repo", str(fleet.repo.path), "--key",
                     str(pub), "--broker", fleet.broker_url, "--device", DEVICE])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.strip() == (f"edge-fleet: error: {pub}: this is a public key; pass the .key "
                           "file (targets-a.key) to sign")
    assert "chmod" not in err and _tree(fleet.repo.path) == before


def test_a_root_key_where_a_targets_key_is_needed_names_both_roles(
        fleet: Fleet, bundles: Bundles, capsys: pytest.CaptureFixture[str]) -> None:
    before = _tree(fleet.repo.path)
    rc = _cli_publish(fleet, bundles.v2, fleet.broker_url, "root-a", "snapshot", "timestamp")
    err = capsys.readouterr().err
    assert rc == 2
    root_a = fleet.keys["root-a"].public.keyid[:12]
    assert "targets v1 needs 2 signature(s)" in err
    assert f"key {root_a} is a root key, not a targets key" in err
    assert "pass targets key files with --key" in err
    assert _tree(fleet.repo.path) == before
    assert "is a snapshot key" not in err and "is a timestamp key" not in err
