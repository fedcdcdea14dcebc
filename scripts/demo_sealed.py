"""The encrypted-update step of the demo (issue 15 part 3), through the commands an
operator types: the board's key (``edge-agent keygen``), the fleet's device-key registry
(``edge-fleet device-keys add``), a release sealed for another board only (refused here:
``not_for_this_device``), then the same release sealed for the group this board is in
(committed; installed encrypted, no plaintext model on disk).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

WINDOW = 64  # bytes: a window of the plaintext model that must be nowhere on disk


def _plaintext_hits(root: Path, model: bytes) -> list[Path]:
    probes = [model[i:i + WINDOW] for i in (0, len(model) // 2, len(model) - WINDOW)]
    return [p for p in sorted(root.rglob("*")) if p.is_file()
            and any(w in p.read_bytes() for w in probes)]


def step_encrypted(out: Path, run: Callable[..., Any], bin_: Path, repo: Path, v3: Path,
                   cfg: Path, base: str, tap: Any, broker: str, device: str,
                   say: Callable[[str], None], http: Callable[..., Any],
                   wait_for: Callable[..., Any], signing: list[Any]) -> None:
    from edge_agent.bundle import read_bundle

    say("7c. Encrypted update: a key on the board, v3 sealed for another board (refused), "
        "then sealed for this board's group (committed, encrypted at rest)")
    store = out / "store"
    registry = out / "device-keys.json"
    registry.unlink(missing_ok=True)  # the demo's store (and so the board's key) is fresh
    (out / "pi-2.key").unlink(missing_ok=True)
    r = run(bin_ / "edge-agent", "keygen", "--config", cfg, quiet=True)
    print(r.stdout.rstrip())
    mine = next(ln.split()[-1] for ln in r.stdout.splitlines() if ln.startswith("public"))
    r = run(bin_ / "edge-agent", "keygen", "--key", out / "pi-2.key", quiet=True)
    theirs = next(ln.split()[-1] for ln in r.stdout.splitlines() if ln.startswith("public"))
    print(f"(a second board, {device}-2, made its own key: public {theirs[:16]}…)")
    for dev, k in ((device, mine), (f"{device}-2", theirs)):
        run(bin_ / "edge-fleet", "device-keys", "add", dev, k, "--group", "line-1",
            "--device-keys", registry)
    _, st = http("GET", f"{base}/v1/agent/status")
    print(f"GET /v1/agent/status → device_key {st['device_key']}")

    def publish(to: str) -> dict[str, Any]:
        n = len(tap.find("/events"))
        run(bin_ / "edge-fleet", "publish", v3, "--repo", repo, *signing, "--broker", broker,
            "--device", device, "--encrypt-to", to, "--device-keys", registry)
        final = ("update.committed", "update.rejected", "update.rolled_back", "update.failed")
        ev: dict[str, Any] = wait_for(lambda: [e for e in tap.find("/events")[n:]
                                               if e.get("kind") in final], 60,
                                      "sealed update outcome")[0]
        return ev

    ev = publish(f"device:{device}-2")
    print(f"outcome: {ev['kind']}: {ev.get('message', '')[:150]}…")
    t0 = time.monotonic()
    ev = publish("group:line-1")
    print(f"outcome: {ev['kind']} after {time.monotonic() - t0:.1f} s: "
          f"{ev.get('message', '')[:120]}")
    _, doc = http("GET", f"{base}/v1/models/digits")
    print("serving: " + ", ".join(f"v{s['version']} {s['state']}"
                                  for s in doc["model_version_status"]))
    v3_dir = store / "models" / "digits" / "3"
    files = sorted(p.name for p in v3_dir.iterdir()) if v3_dir.is_dir() else []
    sealed = v3_dir / "bundle.sealed"
    head = sealed.read_bytes()[:8] if sealed.is_file() else b""
    print(f"store {v3_dir.relative_to(out.parent)}: {files} (starts {head!r})")
    plain = {p.parent for p in (store / "models").glob("*/*/model.tflite")}  # v1, v2
    hits = [p for p in _plaintext_hits(store, read_bundle(v3).model_bytes)
            if not plain.intersection(p.parents)]
    shown = ", ".join(sorted(f"{d.parent.name}/{d.name}" for d in plain))
    print(f"files under {store.relative_to(out.parent)} (but the plaintext versions {shown}) "
          f"holding a 64-byte window of v3's model: {len(hits)}")
