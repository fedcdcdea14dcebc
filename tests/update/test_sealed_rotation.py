"""Device key rotation (issue 15 part 3): ``edge-agent keygen --rotate`` on the device, the
old key kept as ``<key>.previous`` until a release sealed for the new key commits (or
``keygen --retire``), installed versions re-wrapped for the new key first so they keep
opening; on a real ``edge-agent run``, Mosquitto and LiteRT.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import test_bundle_bounds as bounds
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from test_sealed_bundles import header_of, plaintext_on_disk, sealed_v, windows
from test_sealed_demo import Tap
from update_agentproc import AgentProcess
from update_helpers import CHUNK, DEVICE, Bundles, Fleet
from waiting import wait_for

from edge_agent.crypto import retire_after_commit
from edge_agent.crypto.device_key import DeviceKeys, generate, open_sealed
from edge_agent.crypto.sealed import (
    SealedBundleError,
    fingerprint,
    open_files,
    public_bytes,
    rewrap,
)

ROOT = Path(__file__).resolve().parents[2]
agent_proc = bounds.agent_proc  # a real `edge-agent run` (the same fixture)


def keygen(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_agent.cli", "keygen",
                           *map(str, args)], capture_output=True, text=True, check=False,
                          cwd=ROOT)


def recipients(path: Path) -> set[str]:
    return {r["id"] for r in header_of(path.read_bytes())[0]["recipients"]}


# --- the envelope (pure) --------------------------------------------------------------------


def test_rewrap_replaces_one_recipient_and_leaves_the_ciphertext_untouched(
        bundles: Bundles) -> None:
    old, new, other = (X25519PrivateKey.generate() for _ in range(3))
    data = sealed_v(bundles, 3, old.public_key(), other.public_key())
    out = rewrap(data, old, new.public_key(), max_bytes=len(data))
    _, body = header_of(data)
    _, body2 = header_of(out)
    assert out[body2:] == data[body:]  # the encrypted parts, byte for byte
    assert open_files(out, new, max_bytes=len(out))[1] == open_files(
        data, old, max_bytes=len(data))[1]
    assert open_files(out, other, max_bytes=len(out))[1]  # the other device still opens it
    with pytest.raises(SealedBundleError) as ei:
        open_files(out, old, max_bytes=len(out))
    assert ei.value.code == "not_for_this_device"


def test_rewrap_needs_a_key_the_release_is_for(bundles: Bundles) -> None:
    data = sealed_v(bundles, 3, X25519PrivateKey.generate().public_key())
    with pytest.raises(SealedBundleError) as ei:
        rewrap(data, X25519PrivateKey.generate(), X25519PrivateKey.generate().public_key(),
               max_bytes=len(data))
    assert ei.value.code == "not_for_this_device"


def test_a_second_rotation_is_refused_while_the_previous_key_is_kept(tmp_path: Path) -> None:
    key = tmp_path / "device.key"
    generate(key)
    generate(key, rotate=True)
    kept = [key.read_bytes(), (tmp_path / "device.key.previous").read_bytes()]
    r = keygen("--key", key, "--rotate")
    assert r.returncode == 2 and "--retire" in r.stderr, r.stderr
    assert [key.read_bytes(), (tmp_path / "device.key.previous").read_bytes()] == kept


def test_keygen_retire_rewraps_installed_versions_then_removes_the_old_key(
        tmp_path: Path, bundles: Bundles) -> None:
    """The operator's explicit end of the grace: what only the old key opens is re-wrapped
    for the new one; a version for neither key is named and left alone."""
    store = tmp_path / "store"
    key = store / "device.key"
    old = generate(key)
    v2 = store / "models" / "digits" / "2" / "bundle.sealed"
    v3 = store / "models" / "digits" / "3" / "bundle.sealed"
    for p, data in ((v2, sealed_v(bundles, 2, old)),
                    (v3, sealed_v(bundles, 3, X25519PrivateKey.generate().public_key()))):
        p.parent.mkdir(parents=True)
        p.write_bytes(data)
    foreign = v3.read_bytes()
    r = keygen("--key", key, "--rotate")
    assert r.returncode == 0 and "rotated" in r.stdout, r.stderr
    new = DeviceKeys(key).current()
    r = keygen("--key", key, "--retire")
    assert r.returncode == 0, r.stderr
    assert f"re-wrapped {v2}" in r.stdout and f"left as it is (opens with neither key): {v3}" \
        in r.stdout and f"retired {fingerprint(old)}" in r.stdout, r.stdout
    assert not (store / "device.key.previous").exists()
    assert recipients(v2) == {new} and v3.read_bytes() == foreign
    assert open_sealed(v2.read_bytes(), DeviceKeys(key), "t").version == 2
    again = keygen("--key", key, "--retire")
    assert again.returncode == 0 and "nothing to retire" in again.stdout


def test_a_failed_retirement_is_logged_and_keeps_the_old_key(
        tmp_path: Path, bundles: Bundles, caplog: pytest.LogCaptureFixture) -> None:
    """The update flow's hook never raises: when retiring fails (here the kept key file
    does not parse) the old key and the installed version stay exactly as they were."""
    store = tmp_path / "store"
    key = store / "device.key"
    generate(key)
    v3 = store / "models" / "digits" / "3"
    v3.mkdir(parents=True)
    (v3 / "bundle.sealed").write_bytes(sealed_v(bundles, 3, generate(tmp_path / "k2")))
    (tmp_path / "k2").replace(key)  # v3 is sealed for the current key
    prev = store / "device.key.previous"
    prev.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    before = (v3 / "bundle.sealed").read_bytes()
    assert retire_after_commit(key, store, v3) is None
    assert prev.is_file() and (v3 / "bundle.sealed").read_bytes() == before
    assert "retiring device.key.previous failed" in caplog.text
    assert retire_after_commit(key, store, v3 / "missing") is None  # not sealed: no-op
    assert retire_after_commit(None, store, v3) is None


# --- black-box: a real agent ---------------------------------------------------------------


def commit(a: AgentProcess, fleet: Fleet, bundle: Path, version: int, to: str,
           registry: Path) -> str:
    """``edge-fleet publish BUNDLE --encrypt-to TO --device-keys REGISTRY`` (the CLI, real
    keys, real broker); it must commit. Returns the ``update.committed`` message."""
    from fleet.cli import main as fleet_main
    keys = [a for k in ("targets-a", "targets-b", "snapshot", "timestamp")
            for a in ("--key", str(fleet.keys[k].path))]
    assert fleet_main(["publish", str(bundle), "--repo", str(fleet.repo.path), *keys,
                       "--broker", fleet.broker_url, "--device", DEVICE, "--chunk-size",
                       str(CHUNK), "--encrypt-to", to, "--device-keys", str(registry)]) == 0
    ev = wait_for(lambda: next((e for e in a.get("/v1/agent/status")["recent_events"]
                                if e["kind"] in ("update.committed", "update.rejected",
                                                 "update.rolled_back", "update.failed")
                                and f"v{version}" in e["message"]), None),
                  90, f"v{version} to be decided")
    assert ev["kind"] == "update.committed", ev
    assert a.serving() == version
    return str(ev["message"])


def test_rotation_keeps_the_old_key_until_a_release_for_the_new_key_commits(
        agent_proc: AgentProcess, fleet: Fleet, bundles: Bundles, tmp_path: Path,
        request: pytest.FixtureRequest) -> None:
    """Through the commands an operator types: the device's key in the fleet's registry
    (``device-keys add``, group ``lab``), v2 published ``--encrypt-to group:lab`` commits;
    on the device ``keygen --rotate`` (K2, K1 kept), here ``device-keys rotate``; v3
    published for the group commits → K1 is retired and v2, the rollback target, is
    re-wrapped for K2 (it opens with K2 alone, across a restart); no plaintext on disk."""
    from fleet.cli import main as fleet_main
    a = agent_proc
    tap = Tap(fleet.broker_url)  # the MQTT events, as a fleet observer sees them
    request.addfinalizer(tap.close)
    key, reg = a.store / "device.key", tmp_path / "device-keys.json"
    k1 = generate(key)
    other = X25519PrivateKey.generate().public_key()  # another member of the group
    assert fleet_main(["device-keys", "add", DEVICE, public_bytes(k1).hex(), "--group", "lab",
                       "--device-keys", str(reg)]) == 0
    assert fleet_main(["device-keys", "add", "pi-b", public_bytes(other).hex(), "--group",
                       "lab", "--device-keys", str(reg)]) == 0
    a.start()
    bounds.serving_v1(a)
    commit(a, fleet, bundles.v2, 2, "group:lab", reg)
    installed_v2 = a.store / "models" / "digits" / "2" / "bundle.sealed"
    assert recipients(installed_v2) == {fingerprint(k1), fingerprint(other)}

    r = keygen("--key", key, "--rotate")  # on the device, while the agent runs
    assert r.returncode == 0, r.stderr
    k2_fp = DeviceKeys(key).current()
    assert k2_fp is not None and k2_fp != fingerprint(k1)
    assert a.get("/v1/agent/status")["device_key"]["fingerprints"] == [k2_fp, fingerprint(k1)]
    assert len(a.predict(bounds.X)["predictions"]) == 1 and a.serving() == 2
    hexkey = next(ln.split()[-1] for ln in r.stdout.splitlines() if ln.startswith("public"))
    assert fleet_main(["device-keys", "rotate", DEVICE, hexkey, "--device-keys", str(reg)]) == 0

    msg = commit(a, fleet, bundles.v3, 3, "group:lab", reg)
    assert f"device key {fingerprint(k1)} retired" in msg, msg
    committed = wait_for(lambda: [e for e in tap.find("/events")
                                  if e.get("kind") == "update.committed"
                                  and e["data"].get("version") == 3], 10,
                         "v3's update.committed over MQTT")
    assert committed[0]["data"]["device_key_retired"] == fingerprint(k1), committed
    assert not (a.store / "device.key.previous").exists()
    assert recipients(a.store / "models" / "digits" / "3" / "bundle.sealed") == {
        k2_fp, fingerprint(other)}  # the fleet sealed for the new key, not the old
    assert recipients(installed_v2) == {k2_fp, fingerprint(other)}  # re-wrapped on the device
    assert open_sealed(installed_v2.read_bytes(), DeviceKeys(key), "t").version == 2
    assert a.get("/v1/agent/status")["device_key"]["fingerprints"] == [k2_fp]

    a.stop()
    a.start()
    assert a.serving() == 3 and len(a.predict(bounds.X)["predictions"]) == 1
    hits = plaintext_on_disk(a.store, windows(bundles.v2) + windows(bundles.v3))
    v1_dir = str(a.store / "models" / "digits" / "1")  # installed plain from [[models]]
    assert all(h.startswith(v1_dir) for h in hits), hits
    assert "Traceback" not in a.log.read_text()
