"""The update flow end to end: publish → verify → test-load → golden → swap → probation."""

from __future__ import annotations

from update_helpers import DEVICE, Bundles, DeviceFactory, Fleet


def test_signed_update_is_swapped_in_and_committed(fleet: Fleet, bundles: Bundles,
                                                    start_device: DeviceFactory) -> None:
    dev = start_device()
    assert dev.serving() == 1
    n = dev.mark()
    fleet.publish(bundles.v2)
    out = dev.outcome(n)
    assert (out.result, out.version) == ("committed", 2), out
    assert dev.serving() == 2 and dev.on_disk() == 2
    kinds = [e.kind for e in dev.events if e.kind.startswith("update.")]
    for k in ("update.notified", "update.downloaded", "update.verified", "update.test_loaded",
              "update.golden_ok", "update.activated", "update.probation", "update.committed"):
        assert k in kinds, kinds
    assert dev.trusted() == {"root": 1, "timestamp": 1, "snapshot": 1, "targets": 1}
    st = dev.svc.status()
    assert st["phase"] == "idle" and st["last"]["result"] == "committed"
    assert f"edge/{DEVICE}/update/announce" in st["topics"]
