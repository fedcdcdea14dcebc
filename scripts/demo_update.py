"""The signed-update half of the demo: keys and repository, v2 swapped in, a forged v3
refused, an incompatible v4 rolled back automatically during probation.

Driven through ``edge-fleet`` (keygen, repo init, publish) like an operator would; the
forged release is built by :func:`fleet.update_demo.forge` — what an attacker who owns
the broker, but not the keys, can publish.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROLES = ("root", "targets", "snapshot", "timestamp")


def prepare_repository(out: Path, run: Callable[..., Any], bin_: Path) -> Path:
    """Keys (one per role) and a TUF repository; returns the repository directory."""
    repo, keys = out / "repo", out / "keys"
    if not (repo / "metadata" / "1.root.json").exists():
        run(bin_ / "edge-fleet", "keygen", "--out", keys, *ROLES)
        run(bin_ / "edge-fleet", "repo", "init", repo,
            *[a for r in ROLES for a in (f"--{r}", keys / f"{r}.pub")],
            "--key", keys / "root.key")
    return repo


def update_section(repo: Path) -> str:
    """The agent's [update] table: trust the repository's root v1; short probation."""
    return (f'[update]\nroot_file = "{repo / "metadata" / "1.root.json"}"\n'
            "probation_s = 6\nprobation_min_requests = 10\n")


def build_extra_bundles(out: Path, run: Callable[..., Any], bin_: Path) -> dict[str, Path]:
    """digits v3 (to forge) and a 16x16-input v4 (incompatible with 8x8 clients)."""
    b = {}
    v3 = out / "bundles" / "digits-v3"
    if not (v3 / "manifest.json").exists():
        run(bin_ / "edge-convert", "convert", out / "digits.keras", "--representative",
            out / "calib.npz", "--profile", "generic-x86_64", "--name", "digits",
            "--version", "3", "-o", v3, "--json", quiet=True)
    b["v3"] = v3
    wide = out / "wide"
    v4 = out / "bundles" / "digits-v4-16x16"
    if not (v4 / "manifest.json").exists():
        run(bin_ / "python", "-m", "converter.digits", wide, "--upsample", "2", quiet=True)
        run(bin_ / "edge-convert", "convert", wide / "digits.keras", "--representative",
            wide / "calib.npz", "--eval", wide / "eval.npz", "--profile", "generic-x86_64",
            "--name", "digits", "--version", "4", "-o", v4, "--json", quiet=True)
    b["v4"] = v4
    return b


def forge(repo: Path, bundle: Path, out: Path, broker: str, device: str) -> None:
    """Publish ``bundle`` as an attacker would: valid-looking metadata, rogue targets key."""
    from edge_agent.update.wire import Audience
    from fleet import keys as fkeys
    from fleet.repo import FleetRepo
    from fleet.update_demo import _forge

    rogue = out / "attacker" / "rogue.key"
    if not rogue.exists():
        fkeys.generate(out / "attacker", "rogue")
    print(f"$ (attacker) publish {bundle.name} signed by {rogue.relative_to(out.parent)}")
    # The attacker owns the broker but none of the repository's keys.
    _forge(FleetRepo(repo), bundle, fkeys.load_signer(rogue), [], Audience((device,), ()),
           broker)


def signing_args(out: Path) -> list[Any]:
    """``--key`` arguments of the online roles (what ``publish`` signs with)."""
    return [a for r in ROLES[1:] for a in ("--key", out / "keys" / f"{r}.key")]


def step_update(out: Path, run: Callable[..., Any], bin_: Path, repo: Path,
                bundles: dict[str, Path], base: str, tap: Any, broker: str, device: str,
                say: Callable[[str], None], http: Callable[..., Any],
                wait_for: Callable[..., Any]) -> None:
    signing = signing_args(out)
    extra = build_extra_bundles(out, run, bin_)

    def outcome(after: int) -> dict[str, Any]:
        final = ("update.committed", "update.rejected", "update.rolled_back", "update.failed")
        evs = wait_for(lambda: [e for e in tap.find("/events")[after:]
                                if e.get("kind") in final], 60, "update outcome")
        return evs[0]  # type: ignore[no-any-return]

    def serving() -> str:
        _, st = http("GET", f"{base}/v1/models/digits")
        return ", ".join(f"v{s['version']} {s['state']}" for s in st["model_version_status"])

    say("5. Signed update: publish digits v2 over MQTT → verify → golden → swap → probation")
    n = len(tap.find("/events"))
    t0 = time.monotonic()
    run(bin_ / "edge-fleet", "publish", bundles["v2"], "--repo", repo, *signing,
        "--broker", broker, "--device", device)
    ev = outcome(n)
    for e in tap.find("/events")[n:]:
        if str(e.get("kind", "")).startswith("update.") and e.get("kind") != "update.progress":
            print(f"  event {e['kind']:<24} {e.get('message', '')[:110]}")
    print(f"outcome: {ev['kind']} after {time.monotonic() - t0:.1f} s; serving: {serving()}")

    say("6. A forged v3 (signed with a key the device's root does not know) is refused")
    n = len(tap.find("/events"))
    forge(repo, extra["v3"], out, broker, device)
    ev = outcome(n)
    print(f"outcome: {ev['kind']}: {ev.get('message', '')}")
    print(f"still serving: {serving()}")

    say("7. A signed but incompatible v4 (16x16 input) fails probation → automatic rollback")
    ev_x = np.load(out / "eval.npz")["x"][:1]
    stop = threading.Event()
    codes: list[int] = []

    def client() -> None:  # an existing client, still sending 8x8 digits
        body = json.dumps({"instances": ev_x.tolist()}).encode()
        while not stop.is_set():
            codes.append(http("POST", f"{base}/v1/models/digits:predict", body)[0])
            time.sleep(0.05)

    t = threading.Thread(target=client, daemon=True)
    t.start()
    n = len(tap.find("/events"))
    try:
        run(bin_ / "edge-fleet", "publish", extra["v4"], "--repo", repo, *signing,
            "--broker", broker, "--device", device)
        ev = outcome(n)
    finally:
        stop.set()
        t.join()
    bad = sum(c != 200 for c in codes)
    print(f"outcome: {ev['kind']}: {ev.get('message', '')}")
    print(f"client saw {len(codes)} responses, {bad} errors while v4 was on probation; "
          f"serving now: {serving()}")


def step_shadow(out: Path, run: Callable[..., Any], bin_: Path, repo: Path,
                bundles: dict[str, Path], base: str, tap: Any, broker: str, device: str,
                say: Callable[[str], None], http: Callable[..., Any],
                wait_for: Callable[..., Any]) -> None:
    """A signed v5 that disagrees with v2 runs in the shadow of v2 and is blocked."""
    from fleet.update_demo import disagreeing

    say("7b. Shadow evaluation: a signed v5 that disagrees with v2 is judged on copies of live "
        "requests and blocked")
    signing = signing_args(out)
    bad = out / "bundles" / "digits-v5-disagrees"
    if not (bad / "manifest.json").exists():
        disagreeing(bundles["v2"], bad, version=5)
    xs = np.load(out / "eval.npz")["x"][:64]
    stop = threading.Event()
    versions: list[str] = []

    name = http("GET", f"{base}/v2/models/digits")[1]["inputs"][0]["name"]

    def client() -> None:  # clients keep asking (KServe v2: it names the version answering)
        i = 0
        while not stop.is_set():
            x = xs[i % len(xs)][None]
            body = json.dumps({"inputs": [{"name": name, "shape": list(x.shape),
                                           "datatype": "FP32",
                                           "data": x.ravel().tolist()}]}).encode()
            st, doc = http("POST", f"{base}/v2/models/digits/infer", body)
            if st == 200:
                versions.append(str(doc.get("model_version")))
            i += 1
            time.sleep(0.01)

    n = len(tap.find("/events"))
    t = threading.Thread(target=client, daemon=True)
    t.start()
    try:
        run(bin_ / "edge-fleet", "publish", bad, "--repo", repo, *signing, "--broker", broker,
            "--device", device, "--shadow", "40",
            "--gate", "agreement>=0.98,p99_ms<=1.5x,errors==0")
        final = ("update.committed", "update.rejected", "update.failed")
        ev = wait_for(lambda: [e for e in tap.find("/events")[n:]
                               if e.get("kind") in final], 60, "shadow outcome")[0]
    finally:
        stop.set()
        t.join()
    for e in tap.find("/events")[n:]:
        if str(e.get("kind", "")).startswith("shadow.") and e.get("kind") != "shadow.progress":
            print(f"  event {e['kind']:<24} {e.get('message', '')[:120]}")
    print(f"outcome: {ev['kind']}: {ev.get('message', '')[:160]}")
    print(f"clients got {len(versions)} answers during the shadow, from versions "
          f"{sorted(set(versions))}")
