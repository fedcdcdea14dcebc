"""Encrypted, device-bound bundles (issue 15 part 3): the envelope, then black-box on a
real ``edge-agent run``, a real Mosquitto and real LiteRT.

Pure tests: every file of the bundle round-trips for each recipient; each refusal of
:mod:`edge_agent.crypto.sealed` has its code. Black-box: a sealed release is committed on
the device it is sealed for and restarts from the store still sealed (a scan of the
whole store and staging finds no 64-byte window of the plaintext model or manifest);
each bad input — another device's key, a ciphertext tampered and re-signed, a truncated
wrapped key, an unknown envelope version, no device key — is an ``update.rejected`` with
its code while v1 keeps serving and nothing else moves (``test_bundle_bounds``'s
``release_rejected``); a ciphertext tampered but not re-signed is refused by TUF's
hashes before any decryption.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import test_bundle_bounds as bounds
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from update_agentproc import AgentProcess
from update_forge import announce, signed_tar_release
from update_helpers import CHUNK, DEVICE, ME, Bundles, Fleet
from waiting import wait_for

from edge_agent.bundle import read_bundle
from edge_agent.crypto.device_key import DeviceKeys, generate, open_sealed
from edge_agent.crypto.sealed import SealedBundleError, fingerprint, open_files, seal_files
from edge_agent.update.wire import announce_topic
from fleet.seal import seal_bundle

WINDOW = 64  # bytes of plaintext that must appear nowhere on the device's disk


def sealed_v(bundles: Bundles, version: int, *keys: Any) -> bytes:
    path = {2: bundles.v2, 3: bundles.v3}[version]
    return seal_bundle(path, list(keys))


def header_of(data: bytes) -> tuple[dict[str, Any], int]:
    _, _, hlen = struct.unpack_from(">8sBI", data)
    return json.loads(data[13:13 + hlen]), 13 + hlen


def repack(data: bytes, edit: Callable[[dict[str, Any]], None], version: int = 1) -> bytes:
    """The envelope with its clear header edited (what a broker or a mirror could do)."""
    h, body = header_of(data)
    edit(h)
    raw = json.dumps(h).encode()
    return struct.pack(">8sBI", b"EDGESEAL", version, len(raw)) + raw + data[body:]


def code_of(data: bytes, key: X25519PrivateKey) -> str:
    with pytest.raises(SealedBundleError) as ei:
        open_files(data, key, max_bytes=len(data))
    return ei.value.code


# --- the envelope (pure) --------------------------------------------------------------------


def test_every_file_round_trips_for_each_recipient_under_one_content_key(
        bundles: Bundles) -> None:
    a, b = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    v3 = read_bundle(bundles.v3)
    files = {**v3.files(), "model_cpu.tflite": v3.model_bytes[::-1]}  # a second variant
    data = seal_files(files, name="digits", version=3, target_profiles=("generic-x86_64",),
                      recipients=[a.public_key(), b.public_key()])
    for k in (a, b):
        h, got = open_files(data, k, max_bytes=len(data))
        assert got == files
        assert {r.id for r in h.recipients} == {fingerprint(a.public_key()),
                                                 fingerprint(b.public_key())}
    h, _ = header_of(data)
    assert sorted(h) == ["name", "parts", "recipients", "target_profiles", "version"]
    assert v3.model_bytes[:WINDOW] not in data and b'"golden"' not in data


def test_another_devices_key_is_not_for_this_device(bundles: Bundles) -> None:
    data = sealed_v(bundles, 3, X25519PrivateKey.generate().public_key())
    assert code_of(data, X25519PrivateKey.generate()) == "not_for_this_device"


def test_a_flipped_ciphertext_byte_fails_the_tag(bundles: Bundles) -> None:
    k = X25519PrivateKey.generate()
    data = bytearray(sealed_v(bundles, 3, k.public_key()))
    data[-100] ^= 1
    assert code_of(bytes(data), k) == "sealed_bad_tag"


def test_a_header_moved_to_another_release_fails_the_tag(bundles: Bundles) -> None:
    """The AAD binds the wrapped key and every part to name, version and profiles."""
    k = X25519PrivateKey.generate()
    data = sealed_v(bundles, 2, k.public_key())
    assert code_of(repack(data, lambda h: h.update(version=3)), k) == "sealed_bad_tag"
    assert code_of(repack(data, lambda h: h.update(target_profiles=["rpi4"])), k) \
        == "sealed_bad_tag"


def test_parts_swapped_between_file_slots_fail_the_tag(bundles: Bundles) -> None:
    k = X25519PrivateKey.generate()
    data = sealed_v(bundles, 3, k.public_key())

    def swap(h: dict[str, Any]) -> None:
        p = h["parts"]
        p[0]["file"], p[1]["file"] = p[1]["file"], p[0]["file"]
    assert code_of(repack(data, swap), k) == "sealed_bad_tag"


def test_a_truncated_wrapped_key_is_refused_before_any_decryption(bundles: Bundles) -> None:
    k = X25519PrivateKey.generate()
    data = sealed_v(bundles, 3, k.public_key())

    def cut(h: dict[str, Any]) -> None:
        r = h["recipients"][0]
        r["wrapped"] = base64.b64encode(base64.b64decode(r["wrapped"])[:40]).decode()
    assert code_of(repack(data, cut), k) == "sealed_truncated"
    assert code_of(data[:-1], k) == "sealed_truncated"
    assert code_of(data[:10], k) == "sealed_truncated"


def test_an_unknown_envelope_version_is_refused(bundles: Bundles) -> None:
    k = X25519PrivateKey.generate()
    data = repack(sealed_v(bundles, 3, k.public_key()), lambda h: None, version=2)
    assert code_of(data, k) == "sealed_version"


def test_a_device_without_a_key_refuses_naming_the_key_path(tmp_path: Path,
                                                            bundles: Bundles) -> None:
    data = sealed_v(bundles, 3, X25519PrivateKey.generate().public_key())
    with pytest.raises(SealedBundleError) as ei:
        open_sealed(data, DeviceKeys(tmp_path / "device.key"), "t")
    assert ei.value.code == "device_key_missing"
    assert str(tmp_path / "device.key") in str(ei.value)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_a_device_key_others_can_read_is_refused_naming_the_fix(
        tmp_path: Path, bundles: Bundles, mode: int) -> None:
    """A careless copy (``cp`` under umask 022, a restored backup) leaves the private key
    readable by others; like ssh, the device refuses to use it rather than open
    releases with a key that is no longer its own secret. It was used silently."""
    key = tmp_path / "device.key"
    pub = generate(key)
    data = sealed_v(bundles, 3, pub)
    key.chmod(mode)
    with pytest.raises(SealedBundleError) as ei:
        open_sealed(data, DeviceKeys(key), "t")
    assert ei.value.code == "device_key_unsafe"
    assert f"mode {mode:o}" in str(ei.value) and f"chmod 600 {key}" in str(ei.value)
    key.chmod(0o600)  # fixed: the same release opens
    assert open_sealed(data, DeviceKeys(key), "t").version == 3


def test_keygen_writes_0600_refuses_to_overwrite_and_rotation_keeps_the_old_key(
        tmp_path: Path, bundles: Bundles) -> None:
    key = tmp_path / "k" / "device.key"
    old = generate(key)
    assert key.stat().st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError):
        generate(key)
    sealed_old = sealed_v(bundles, 3, old)
    new = generate(key, rotate=True)
    assert DeviceKeys(key).fingerprints() == [fingerprint(new), fingerprint(old)]
    assert open_sealed(sealed_old, DeviceKeys(key), "t").version == 3  # still opens


# --- black-box: a real agent ---------------------------------------------------------------


agent_proc = bounds.agent_proc  # a real `edge-agent run` (the same fixture)


def device_key(a: AgentProcess) -> Any:
    """``edge-agent keygen``'s default place: ``<store_dir>/device.key``."""
    return generate(a.store / "device.key")


def plaintext_on_disk(root: Path, secrets: list[bytes]) -> list[str]:
    hits = []
    for p in sorted(root.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            hits += [f"{p}: window {i}" for i, s in enumerate(secrets) if s in data]
    return hits


def windows(bundle: Path) -> list[bytes]:
    """64-byte windows of the model (start, middle, end) and of the golden vectors."""
    b = read_bundle(bundle)
    m = b.model_bytes
    gold = json.dumps(json.loads(b.manifest.to_json())["golden"][0]["input"]["b64"]).encode()
    return [m[:WINDOW], m[len(m) // 2:len(m) // 2 + WINDOW], m[-WINDOW:], gold[1:1 + WINDOW]]


def test_sealed_release_is_committed_on_its_device_and_stays_encrypted_at_rest(
        agent_proc: AgentProcess, fleet: Fleet, bundles: Bundles, tmp_path: Path) -> None:
    a = agent_proc
    pub = device_key(a)
    other = X25519PrivateKey.generate().public_key()  # a second device of the group
    sealed = tmp_path / "digits-v2.sealed"
    sealed.write_bytes(sealed_v(bundles, 2, pub, other))
    a.start()
    bounds.serving_v1(a)
    assert a.get("/v1/agent/status")["device_key"]["fingerprints"] == [fingerprint(pub)]
    fleet.publish(sealed)
    st = wait_for(lambda: (s := a.update_status()).get("last") and s["phase"] == "idle" and s,
                  90, "the sealed release to be decided")
    assert (st["last"]["result"], st["last"]["code"]) == ("committed", "ok"), st["last"]
    assert a.serving() == 2
    assert len(a.predict(bounds.X)["predictions"]) == 1
    assert (a.store / "models" / "digits" / "2" / "bundle.sealed").is_file()
    assert not (a.store / "models" / "digits" / "2" / "model.tflite").exists()
    secrets = windows(bundles.v2)
    v1_dir = str(a.store / "models" / "digits" / "1")

    def scan() -> None:
        """The scan finds the windows in v1, installed in plaintext from [[models]] (the
        same weights): so it can fail; and nowhere else (v2, staging, update state)."""
        hits = plaintext_on_disk(a.store, secrets)
        assert hits and all(h.startswith(v1_dir) for h in hits), hits
    scan()
    a.stop()
    a.start()  # decrypted again from the store at start-up
    assert a.serving() == 2
    assert len(a.predict(bounds.X)["predictions"]) == 1
    scan()
    assert "Traceback" not in a.log.read_text()


@pytest.mark.parametrize("bad", ["not_for_this_device", "sealed_bad_tag", "sealed_truncated",
                                 "sealed_version", "device_key_missing"])
def test_a_bad_sealed_release_is_rejected_with_its_code_and_nothing_moves(
        bad: str, agent_proc: AgentProcess, fleet: Fleet, bundles: Bundles) -> None:
    a = agent_proc
    pub = device_key(a) if bad != "device_key_missing" else \
        X25519PrivateKey.generate().public_key()
    data = sealed_v(bundles, 3, pub)
    if bad == "not_for_this_device":
        data = sealed_v(bundles, 3, X25519PrivateKey.generate().public_key())
    elif bad == "sealed_bad_tag":  # tampered, then re-signed: TUF passes it, GCM does not
        b = bytearray(data)
        b[len(b) // 2] ^= 0x55
        data = bytes(b)
    elif bad == "sealed_truncated":
        def cut(h: dict[str, Any]) -> None:
            r = h["recipients"][0]
            r["wrapped"] = base64.b64encode(base64.b64decode(r["wrapped"])[:47]).decode()
        data = repack(data, cut)
    elif bad == "sealed_version":
        data = repack(data, lambda h: None, version=9)
    a.start()
    bounds.serving_v1(a)
    last, _ = bounds.release_rejected(a, fleet, data, bad)
    assert last["reason"], last


def test_a_tampered_ciphertext_not_re_signed_is_refused_by_tuf_before_decryption(
        agent_proc: AgentProcess, fleet: Fleet, bundles: Bundles) -> None:
    """The signed sha256 of every chunk is checked before a byte is staged: the device
    never gets as far as opening the envelope (no sealed_* code, no decryption)."""
    a = agent_proc
    data = sealed_v(bundles, 3, device_key(a))
    a.start()
    before = a.snapshot()
    path, chunks, files = signed_tar_release(
        fleet.repo, fleet.signers(), data, name="digits", version=3,
        profiles=("generic-x86_64",), audience=ME, chunk_size=CHUNK)
    evil = bytearray(chunks[-1])
    evil[-5] ^= 0x55
    announce(fleet.broker_url, announce_topic(DEVICE), path, files,
             chunks=[*chunks[:-1], bytes(evil)], sha256=hashlib.sha256(data).hexdigest())
    wait_for(lambda: any(e["kind"] in ("update.rejected", "update.failed")
                         for e in a.get("/v1/agent/status")["recent_events"]), 60,
             "the tampered chunk to be refused")
    events = a.get("/v1/agent/status")["recent_events"]
    refused = [e for e in events if e["kind"] in ("update.rejected", "update.failed")]
    assert not any("sealed" in e["message"] or "not_for_this_device" in e["message"]
                   for e in refused), refused
    assert not any(e["kind"] == "update.verified" for e in events), events
    assert a.installed() == before.installed and a.serving() == 1
    bounds.serving_v1(a)


def test_keygen_and_encrypt_commands_seal_a_bundle_the_device_opens(
        tmp_path: Path, bundles: Bundles, capsys: pytest.CaptureFixture[str]) -> None:
    """``edge-agent keygen`` prints the key ``edge-fleet encrypt --to`` takes; a second
    keygen refuses (exit 2) and leaves the key as it was."""
    import subprocess
    import sys

    from fleet.cli import main as fleet_main
    key = tmp_path / "device.key"
    cmd = [sys.executable, "-m", "edge_agent.cli", "keygen", "--key", str(key)]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False,
                       cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 0, r.stderr
    hexkey = next(ln.split()[-1] for ln in r.stdout.splitlines() if ln.startswith("public"))
    assert key.stat().st_mode & 0o777 == 0o600
    before = key.read_bytes()
    again = subprocess.run(cmd, capture_output=True, text=True, check=False,
                           cwd=Path(__file__).resolve().parents[2])
    assert again.returncode == 2 and "--force" in again.stderr and key.read_bytes() == before
    out = tmp_path / "v3.sealed"
    assert fleet_main(["encrypt", str(bundles.v3), "--to", hexkey, "-o", str(out)]) == 0
    assert "1 recipient(s)" in capsys.readouterr().out
    b = open_sealed(out.read_bytes(), DeviceKeys(key), str(out))
    assert b.files() == read_bundle(bundles.v3).files()
    assert fleet_main(["encrypt", str(bundles.v3), "--to", "nonsense", "-o",
                       str(tmp_path / "x")]) == 2
    assert "--to: 'nonsense'" in capsys.readouterr().err


def test_publish_encrypt_to_seals_for_the_group_and_only_its_members_commit(
        tmp_path: Path, fleet: Fleet, bundles: Bundles, start_device: Any,
        x_digits: Any) -> None:
    """``edge-fleet publish --encrypt-to`` (the CLI, real keys, real broker) to a group of
    two keys: the device holding one of them commits; the repository holds only the
    ciphertext."""
    from fleet.cli import main as fleet_main
    from fleet.repo import target_path_for_model
    pub = generate(tmp_path / "store" / "device.key")
    dev = start_device()
    n = dev.mark()
    keys = [a for k in ("targets-a", "targets-b", "snapshot", "timestamp")
            for a in ("--key", str(fleet.keys[k].path))]
    assert fleet_main(["publish", str(bundles.v2), "--repo", str(fleet.repo.path), *keys,
                       "--broker", fleet.broker_url, "--device", DEVICE, "--chunk-size",
                       str(CHUNK), "--encrypt-to", fingerprint_hex(pub),
                       fingerprint_hex(X25519PrivateKey.generate().public_key())]) == 0
    out = dev.outcome(n, 60)
    assert (out.result, out.code) == ("committed", "ok"), out
    assert dev.predict_version(x_digits) == 2
    target = fleet.repo.path / "targets" / target_path_for_model("digits", 2)
    stored = [p.read_bytes() for p in target.parent.glob(f"*{target.name}")]
    assert stored and all(s.startswith(b"EDGESEAL") for s in stored), target
    assert not plaintext_on_disk(fleet.repo.path, windows(bundles.v2)[:3])


def fingerprint_hex(pub: Any) -> str:
    """The raw public key in hex, as ``edge-agent keygen`` prints it."""
    from edge_agent.crypto.sealed import public_bytes
    return public_bytes(pub).hex()


def test_a_sealed_models_entry_is_served_and_installed_sealed(
        tmp_path: Path, bundles: Bundles, start_device: Any, x_digits: Any) -> None:
    """``[[models]]`` / ``run --model`` take a sealed file like a bundle: opened in memory
    with the device key, installed as ``bundle.sealed``."""
    pub = generate(tmp_path / "store" / "device.key")
    sealed = tmp_path / "digits-v3.sealed"
    sealed.write_bytes(sealed_v(bundles, 3, pub))
    dev = start_device(models=(bundles.v1, sealed))
    assert dev.serving() == 3 and dev.predict_version(x_digits) == 3
    assert (tmp_path / "store" / "models" / "digits" / "3" / "bundle.sealed").is_file()
    assert not (tmp_path / "store" / "models" / "digits" / "3" / "model.tflite").exists()
    assert dev.agent.registry.get("digits").bundle.sealed is None  # no envelope kept in RAM
