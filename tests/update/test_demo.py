"""The README demo step (fleet.update_demo) against the real agent and broker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from update_helpers import DEVICE, Bundles, DeviceFactory

from fleet import update_demo


def test_demo_swaps_signed_v2_and_refuses_forged_v3(tmp_path: Path, bundles: Bundles,
                                                    start_device: DeviceFactory,
                                                    mosquitto: Any) -> None:
    lines: list[str] = []
    root = update_demo.setup(tmp_path / "demo", out=lines.append)
    dev = start_device(root_file=str(root))
    rc = update_demo.run(tmp_path / "demo", broker=mosquitto.url, device=DEVICE, v2=bundles.v2,
                         v3=bundles.v3, timeout_s=30, out=lines.append)
    text = "\n".join(lines)
    assert rc == 0, text
    assert "update.activated" in text and "update.committed" in text
    assert "update.rejected" in text and "targets was signed by 0/1 keys" in text
    assert dev.serving() == 2 and dev.on_disk() == 2
